"""Addresses on private networks: subnets, static IPv4 addresses, MACs, names.

Pure functions of the lab (its name, its networks, who joins which), so that a
lab boots the same addresses every time and two labs rarely share any:

- a network without `subnet` gets a /24 from 10.64.0.0/10 picked by a hash of
  the lab's and the network's names (never QEMU's user network 10.0.2.0/24,
  never a subnet another network of the lab uses);
- machines without an explicit address get one in machine-name order from host
  number 10 upward (then 1 to 9 on tiny subnets), skipping explicit ones;
- each (lab, network, machine) gets a locally administered unicast MAC
  `02:xx:xx:xx:xx:xx` from a hash, unique within the lab;
- every machine on a network can resolve every other by its name.

Mistakes raise AddressError naming the machine (or None for the network
itself); the config loader turns that into a FILE:LINE error.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from vmlab.machine.spec import NicSpec

POOL = IPv4Network("10.64.0.0/10")  # default subnets are /24s from here
USER_NETWORK = IPv4Network("10.0.2.0/24")  # QEMU's user networking (image machines)
DEFAULT_PREFIX = 24
FIRST_HOST = 10  # automatic addresses start at .10
MAX_PREFIX = 30  # a /30 holds two machines; /31 and /32 hold none


class AddressError(ValueError):
    """A network or address that cannot work; `machine` is whose entry is wrong
    (None: the network's own `subnet`), `other` the machine it clashes with."""

    def __init__(self, problem: str, machine: str | None = None, other: str | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.machine = machine
        self.other = other


@dataclass(frozen=True)
class NetworkMember:
    """One machine on a network."""

    machine: str
    address: IPv4Address
    mac: str


@dataclass(frozen=True)
class NetworkSpec:
    """A private network, resolved: its subnet and its machines (by name)."""

    name: str
    subnet: IPv4Network
    members: tuple[NetworkMember, ...] = ()  # in machine-name order
    description: str = ""
    where: str = ""  # FILE:LINE of its table

    @property
    def machines(self) -> tuple[str, ...]:
        return tuple(member.machine for member in self.members)

    def hosts(self) -> dict[str, IPv4Address]:
        """{machine name: address} of every machine on the network."""
        return {member.machine: member.address for member in self.members}

    def member(self, machine: str) -> NetworkMember:
        for member in self.members:
            if member.machine == machine:
                return member
        raise KeyError(machine)

    def nic(self, machine: str) -> NicSpec:
        """The NIC of `machine` on this network (not yet attached to a switch)."""
        member = self.member(machine)
        return NicSpec(
            network=self.name,
            mac=member.mac,
            address=member.address,
            prefix=self.subnet.prefixlen,
            hosts=tuple(self.hosts().items()),
        )


def _digest(*parts: str) -> bytes:
    return hashlib.sha256("\0".join(parts).encode()).digest()


def check_subnet(subnet: IPv4Network) -> str | None:
    """Why `subnet` cannot be a network's subnet, or None."""
    if subnet.prefixlen > MAX_PREFIX:
        return f"{subnet} is too small for two machines (use a /{MAX_PREFIX} or larger, like /24)"
    if subnet.overlaps(USER_NETWORK):
        return (
            f"{subnet} overlaps {USER_NETWORK}, QEMU's user network of image machines "
            "(pick another, like 10.77.0.0/24)"
        )
    return None


def parse_subnet(text: str) -> IPv4Network:
    """`"10.77.0.0/24"` -> the network; ValueError with a hint otherwise."""
    if "/" not in text:
        raise ValueError(f"{text!r} is not a subnet (write it with a prefix, like 10.77.0.0/24)")
    try:
        return IPv4Network(text, strict=True)
    except ValueError:
        try:
            loose = IPv4Network(text, strict=False)
        except ValueError:
            raise ValueError(f"{text!r} is not an IPv4 subnet (like 10.77.0.0/24)") from None
        raise ValueError(f"{text!r} has host bits set (did you mean {loose}?)") from None


def parse_address(text: str) -> IPv4Address:
    try:
        return IPv4Address(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an IPv4 address (like 10.77.0.10)") from None


def default_subnets(
    lab: str, networks: Iterable[str], taken: Iterable[IPv4Network] = ()
) -> dict[str, IPv4Network]:
    """A /24 from POOL for each of `networks`, by a hash of lab and network name;
    none overlaps another or any of `taken` (the lab's explicit subnets)."""
    used = list(taken)
    count = 1 << (DEFAULT_PREFIX - POOL.prefixlen)
    base = int(POOL.network_address)
    out: dict[str, IPv4Network] = {}
    for name in sorted(networks):
        start = int.from_bytes(_digest("subnet", lab, name)[:4], "big") % count
        for step in range(count):
            index = (start + step) % count
            candidate = IPv4Network((base + (index << (32 - DEFAULT_PREFIX)), DEFAULT_PREFIX))
            if not any(candidate.overlaps(other) for other in used):
                break
        else:  # pragma: no cover - 16384 subnets
            raise AddressError(f"no free /24 left in {POOL} for network {name!r}")
        used.append(candidate)
        out[name] = candidate
    return out


def check_overlaps(subnets: Mapping[str, IPv4Network]) -> tuple[str, str] | None:
    """The first two networks (in name order) whose subnets overlap, or None."""
    names = sorted(subnets)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            if subnets[first].overlaps(subnets[second]):
                return first, second
    return None


def mac_address(lab: str, network: str, machine: str, salt: int = 0) -> str:
    """A locally administered unicast MAC, `02:` and five bytes of a hash."""
    parts = ("mac", lab, network, machine) + ((str(salt),) if salt else ())
    tail = _digest(*parts)[:5]
    return ":".join(f"{b:02x}" for b in (0x02, *tail))


def assign_macs(lab: str, nics: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """{(network, machine): MAC}, unique within the lab (a collision of the
    40-bit hash is resolved deterministically, in sorted order)."""
    out: dict[tuple[str, str], str] = {}
    seen: set[str] = set()
    for network, machine in sorted(set(nics)):
        salt = 0
        while (mac := mac_address(lab, network, machine, salt)) in seen:
            salt += 1
        seen.add(mac)
        out[network, machine] = mac
    return out


def assign_addresses(
    subnet: IPv4Network, requests: Sequence[tuple[str, IPv4Address | None]]
) -> dict[str, IPv4Address]:
    """{machine: address} on `subnet`.

    `requests` are (machine, explicit address or None) in the lab file's order;
    explicit addresses are checked in that order (the later of two duplicates
    is the mistake), then the others get free host addresses in machine-name
    order, from host number FIRST_HOST upward, then the low ones.
    """
    out: dict[str, IPv4Address] = {}
    owner: dict[IPv4Address, str] = {}
    for machine, address in requests:
        if address is None:
            continue
        if address not in subnet:
            raise AddressError(f"{address} is not in the network's subnet {subnet}", machine)
        if subnet.prefixlen < 32 and address in (subnet.network_address, subnet.broadcast_address):
            what = "network" if address == subnet.network_address else "broadcast"
            raise AddressError(f"{address} is the {what} address of {subnet}", machine)
        if address in owner:
            other = owner[address]
            raise AddressError(
                f"{address} is already the address of machine {other}", machine, other
            )
        owner[address] = machine
        out[machine] = address
    base = int(subnet.network_address)
    size = subnet.num_addresses
    offsets = [*range(FIRST_HOST, size - 1), *range(1, min(FIRST_HOST, size - 1))]
    free = (IPv4Address(base + offset) for offset in offsets)
    for machine in sorted(m for m, address in requests if address is None):
        for candidate in free:
            if candidate not in owner:
                owner[candidate] = machine
                out[machine] = candidate
                break
        else:
            raise AddressError(f"no free address left in {subnet} for machine {machine}", machine)
    return out


def hosts_map(nics: Iterable[NicSpec]) -> dict[str, IPv4Address]:
    """{name: address} of every machine reachable over `nics` (one machine's
    NICs): what its /etc/hosts needs. A name on several networks resolves to
    its address on the first of them."""
    out: dict[str, IPv4Address] = {}
    for nic in nics:
        for name, address in nic.hosts:
            out.setdefault(name, address)
    return out
