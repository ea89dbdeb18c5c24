"""A machine's NICs on private networks, as QEMU arguments and guest boot lines.

Each NIC is a virtio-net device on a `dgram` netdev over unix sockets (QEMU 7.2
and later):

    -netdev dgram,id=net-lan,local.type=unix,local.path=PORT.sock,
            remote.type=unix,remote.path=SWITCH.sock
    -device virtio-net-pci,netdev=net-lan,mac=02:..,romfile=

QEMU binds `local.path` (unlinking a stale socket of an earlier boot first) and
sends every frame to `remote.path`, the network's switch (`vmlab.net.switch`).
The netdev id is `net-NETWORK`: QMP `set_link` takes it (`QemuMachine.link`).

In a host-root guest, init (guest/init.sh) loads virtio_net when the machine
has NICs, and the boot script calls its `vmlab_nic MAC ADDRESS/PREFIX` for each
one (the interface is found by its MAC), then adds every machine of the
networks to /etc/hosts.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from vmlab.errors import UsageError
from vmlab.machine.qemu_options import option_path
from vmlab.machine.spec import NicSpec
from vmlab.net.addresses import hosts_map

# What a guest needs for its NICs (their dependencies come from modules.dep:
# net_failover, failover).
NET_MODULES: tuple[str, ...] = ("virtio_net",)


def nic_modules(nics: Sequence[NicSpec]) -> tuple[str, ...]:
    """Extra initramfs modules for these NICs: none without NICs, so that the
    default boot stays as small and fast as it is."""
    return NET_MODULES if nics else ()


def netdev_id(network: str) -> str:
    return f"net-{network}"


def find_nic(nics: Sequence[NicSpec], network: str, machine: str = "") -> NicSpec:
    for nic in nics:
        if nic.network == network:
            return nic
    on = ", ".join(nic.network for nic in nics) or "none"
    who = f"machine {machine}" if machine else "the machine"
    raise UsageError(f"{who} is not on network {network!r} (its networks: {on})")


def nic_argv(nics: Sequence[NicSpec], machine: str = "") -> list[str]:
    """`-netdev`/`-device` pairs for every NIC; each must be attached to a
    running switch (`switch` and `port` set)."""
    argv: list[str] = []
    for nic in nics:
        if nic.switch is None or nic.port is None:
            who = f"machine {machine}" if machine else "a machine"
            raise UsageError(
                f"{who} is on network {nic.network!r}, but no switch runs for it "
                "(start the lab's networks with vmlab.net.networks.LabNetworks and attach the spec)"
            )
        ident = netdev_id(nic.network)
        argv += [
            "-netdev",
            f"dgram,id={ident},local.type=unix,local.path={option_path(nic.port)},"
            f"remote.type=unix,remote.path={option_path(nic.switch)}",
            "-device",
            f"virtio-net-pci,netdev={ident},mac={nic.mac},romfile=",
        ]
    return argv


def boot_lines(nics: Sequence[NicSpec]) -> list[str]:
    """Lines of the host-root boot script (sourced by guest/init.sh before it
    switches root): loopback up, each NIC configured, names in /etc/hosts."""
    if not nics:
        return []
    lines = ["$BB ip link set lo up"]
    for nic in nics:
        lines.append(f"vmlab_nic {nic.mac} {nic.address}/{nic.prefix}")
    entries = [f"{address} {name}" for name, address in hosts_map(nics).items()]
    quoted = " ".join(shlex.quote(entry) for entry in ["# vmlab networks", *entries])
    lines.append(f"printf '%s\\n' {quoted} >>/newroot/etc/hosts")
    return lines
