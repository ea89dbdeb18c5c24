"""Addresses on private networks: default subnets, static addresses, MACs, names,
and the QEMU arguments and guest boot lines of a NIC."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from vmlab.errors import UsageError
from vmlab.machine.kernel import BootableKernel, Kernel, KernelFormat
from vmlab.machine.qemu import BootImage, boot_script, build_argv
from vmlab.machine.spec import Accel, MachineSpec, NicSpec
from vmlab.net.addresses import (
    POOL,
    USER_NETWORK,
    AddressError,
    NetworkMember,
    NetworkSpec,
    assign_addresses,
    assign_macs,
    check_overlaps,
    check_subnet,
    default_subnets,
    hosts_map,
    mac_address,
    parse_subnet,
)
from vmlab.net.qemu_nic import boot_lines, find_nic, netdev_id, nic_argv, nic_modules

A = IPv4Address
NET = IPv4Network


# ---------------------------------------------------------------- subnets


def test_default_subnets_are_deterministic_distinct_24s_in_the_pool() -> None:
    names = [f"n{i}" for i in range(50)]
    first = default_subnets("lab", names)
    assert first == default_subnets("lab", reversed(names))
    assert len(set(first.values())) == 50
    for subnet in first.values():
        assert subnet.prefixlen == 24
        assert subnet.subnet_of(POOL)
        assert not subnet.overlaps(USER_NETWORK)
    assert check_overlaps(first) is None


def test_default_subnets_differ_between_labs_and_networks() -> None:
    assert default_subnets("lab1", ["lan"]) != default_subnets("lab2", ["lan"])
    both = default_subnets("lab1", ["lan", "wan"])
    assert both["lan"] != both["wan"]


def test_default_subnets_avoid_taken_ones() -> None:
    natural = default_subnets("lab", ["lan"])["lan"]
    moved = default_subnets("lab", ["lan"], taken=[natural.supernet(new_prefix=20)])["lan"]
    assert not moved.overlaps(natural.supernet(new_prefix=20))


def test_parse_subnet_hints() -> None:
    assert parse_subnet("10.77.0.0/24") == NET("10.77.0.0/24")
    with pytest.raises(ValueError, match=r"did you mean 10\.77\.0\.0/24"):
        parse_subnet("10.77.0.1/24")
    with pytest.raises(ValueError, match="with a prefix"):
        parse_subnet("10.77.0.0")
    with pytest.raises(ValueError, match="not an IPv4 subnet"):
        parse_subnet("lan/24")


def test_check_subnet() -> None:
    assert check_subnet(NET("192.168.5.0/24")) is None
    assert check_subnet(NET("10.77.0.0/30")) is None
    assert "too small" in (check_subnet(NET("10.77.0.0/31")) or "")
    assert "10.0.2.0/24" in (check_subnet(NET("10.0.0.0/16")) or "")


# ---------------------------------------------------------------- addresses


def test_addresses_from_10_in_name_order_around_explicit_ones() -> None:
    subnet = NET("10.77.0.0/24")
    got = assign_addresses(subnet, [("c", None), ("a", A("10.77.0.11")), ("b", None)])
    assert got == {"a": A("10.77.0.11"), "b": A("10.77.0.10"), "c": A("10.77.0.12")}


def test_small_subnets_use_low_host_numbers_too() -> None:
    got = assign_addresses(NET("10.77.0.0/30"), [("a", None), ("b", None)])
    assert got == {"a": A("10.77.0.1"), "b": A("10.77.0.2")}
    with pytest.raises(AddressError, match="no free address left") as caught:
        assign_addresses(NET("10.77.0.0/30"), [("a", None), ("b", None), ("c", None)])
    assert caught.value.machine == "c"


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("10.78.0.5", "10.78.0.5 is not in the network's subnet 10.77.0.0/24"),
        ("10.77.0.0", "10.77.0.0 is the network address of 10.77.0.0/24"),
        ("10.77.0.255", "10.77.0.255 is the broadcast address of 10.77.0.0/24"),
    ],
)
def test_bad_explicit_addresses(address: str, problem: str) -> None:
    with pytest.raises(AddressError) as caught:
        assign_addresses(NET("10.77.0.0/24"), [("a", None), ("b", A(address))])
    assert (caught.value.problem, caught.value.machine) == (problem, "b")


def test_duplicate_addresses_blame_the_later_one() -> None:
    with pytest.raises(AddressError) as caught:
        assign_addresses(NET("10.77.0.0/24"), [("b", A("10.77.0.20")), ("a", A("10.77.0.20"))])
    error = caught.value
    assert (error.machine, error.other) == ("a", "b")
    assert error.problem == "10.77.0.20 is already the address of machine b"


# ---------------------------------------------------------------- MACs


def test_macs_are_locally_administered_unicast_deterministic_and_unique() -> None:
    mac = mac_address("lab", "lan", "a")
    assert mac == mac_address("lab", "lan", "a")
    first = int(mac.split(":")[0], 16)
    assert first & 0b10 and not first & 0b1  # locally administered, unicast
    assert len(mac) == 17
    others = {mac_address(*key) for key in [("lab2", "lan", "a"), ("lab", "wan", "a")]}
    assert mac not in others
    assert mac != mac_address("lab", "lan", "b")
    macs = assign_macs("lab", [(f"n{i % 3}", f"m{i}") for i in range(300)])
    assert len(set(macs.values())) == 300


def test_a_mac_collision_is_resolved_deterministically() -> None:
    salted = mac_address("lab", "lan", "a", salt=1)
    assert salted != mac_address("lab", "lan", "a")
    assert salted.startswith("02:")


# ---------------------------------------------------------------- names


def _network() -> NetworkSpec:
    return NetworkSpec(
        name="lan",
        subnet=NET("10.77.0.0/24"),
        members=(
            NetworkMember("a", A("10.77.0.10"), "02:00:00:00:00:0a"),
            NetworkMember("b", A("10.77.0.11"), "02:00:00:00:00:0b"),
        ),
    )


def test_every_machine_resolves_every_other() -> None:
    net = _network()
    assert net.hosts() == {"a": A("10.77.0.10"), "b": A("10.77.0.11")}
    nic = net.nic("b")
    assert nic == NicSpec(
        network="lan",
        mac="02:00:00:00:00:0b",
        address=A("10.77.0.11"),
        prefix=24,
        hosts=(("a", A("10.77.0.10")), ("b", A("10.77.0.11"))),
    )
    on_wan = (("b", A("10.88.0.10")), ("c", A("10.88.0.11")))
    other = NicSpec("wan", "02:00:00:00:01:0b", A("10.88.0.10"), 24, on_wan)
    # a name on two networks resolves to its address on the first
    assert hosts_map([nic, other]) == {
        "a": A("10.77.0.10"),
        "b": A("10.77.0.11"),
        "c": A("10.88.0.11"),
    }


# ---------------------------------------------------------------- QEMU and guest


def test_nic_argv_and_netdev_ids(tmp_path: Path) -> None:
    nic = _network().nic("a")
    with pytest.raises(UsageError, match="machine a is on network 'lan', but no switch runs"):
        nic_argv([nic], "a")
    attached = replace(nic, switch=tmp_path / "sw,1.sock", port=tmp_path / "p0.sock")
    assert nic_argv([attached], "a") == [
        "-netdev",
        f"dgram,id=net-lan,local.type=unix,local.path={tmp_path}/p0.sock,"
        f"remote.type=unix,remote.path={tmp_path}/sw,,1.sock",
        "-device",
        "virtio-net-pci,netdev=net-lan,mac=02:00:00:00:00:0a,romfile=",
    ]
    assert netdev_id("lan") == "net-lan"
    assert find_nic([attached], "lan") is attached
    with pytest.raises(
        UsageError, match=r"machine a is not on network 'wan' \(its networks: lan\)"
    ):
        find_nic([attached], "wan", "a")


def test_no_nics_no_modules_no_boot_lines() -> None:
    assert nic_modules(()) == ()
    assert boot_lines(()) == []
    assert nic_argv(()) == []


def test_boot_lines_configure_each_nic_by_mac_and_name_everyone() -> None:
    nic = _network().nic("a")
    assert nic_modules([nic]) == ("virtio_net",)
    assert boot_lines([nic]) == [
        "$BB ip link set lo up",
        "vmlab_nic 02:00:00:00:00:0a 10.77.0.10/24",
        "printf '%s\\n' '# vmlab networks' '10.77.0.10 a' '10.77.0.11 b' >>/newroot/etc/hosts",
    ]


def test_a_host_root_machine_gets_its_nics_and_boot_lines(tmp_path: Path) -> None:
    """The hooks in vmlab.machine.qemu: NIC arguments after the other devices,
    NIC lines in the boot script, nothing of either without NICs."""
    kernel = Kernel(Path("/boot/vmlinuz-6.1.0-9-amd64"), KernelFormat.BZIMAGE, "6.1.0-9-amd64", "0")
    image = BootImage(
        kernel=BootableKernel(kernel, Path("/cache/vmlinux"), pvh=True),
        modules_root=Path("/lib/modules/6.1.0-9-amd64"),
        initrd=Path("/cache/initramfs.cpio"),
        accel=Accel.TCG,
        accel_notice=None,
    )
    nic = replace(_network().nic("a"), switch=tmp_path / "switch.sock", port=tmp_path / "p0.sock")
    plain = MachineSpec(name="a")
    spec = replace(plain, nics=(nic,))
    argv = build_argv("qemu", image, spec, tmp_path)
    assert argv[-4:] == nic_argv([nic])
    assert build_argv("qemu", image, plain, tmp_path) == argv[:-4]
    script = boot_script(spec)
    assert script == boot_script(plain).replace(
        "$BB hostname a\n", "\n".join([*boot_lines([nic]), "$BB hostname a\n"])
    )
    with pytest.raises(UsageError, match="no switch runs"):
        build_argv("qemu", image, replace(plain, nics=(_network().nic("a"),)), tmp_path)
