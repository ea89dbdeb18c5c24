"""`[network.NAME]` and a machine's `networks` in the lab file: what they resolve
to, and one FILE:LINE line for each kind of mistake."""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from vmlab.config import load_lab
from vmlab.net.addresses import POOL, default_subnets, mac_address

from .test_config import REPO, error_of, write_lab

A = IPv4Address


def test_networks_resolve_into_specs_and_nics(tmp_path: Path) -> None:
    lab = load_lab(
        write_lab(
            tmp_path,
            """
            [lab]
            name = "nfs"

            [network.lan]
            description = "clients and server"
            subnet = "10.77.0.0/24"

            [network.backup]

            [machine.server]
            networks = ["lan", { name = "backup" }]

            [machine.client2]
            networks = ["lan"]

            [machine.client1]
            networks = [{ name = "lan" }]

            [machine.alone]
            """,
        )
    )
    lan = lab.networks["lan"]
    assert lan.subnet == IPv4Network("10.77.0.0/24")
    assert lan.description == "clients and server"
    assert lan.where == f"{tmp_path / 'vmlab.toml'}:4"
    # from .10 in machine-name order
    assert lan.hosts() == {
        "client1": A("10.77.0.10"),
        "client2": A("10.77.0.11"),
        "server": A("10.77.0.12"),
    }
    backup = lab.networks["backup"]
    assert backup.subnet == default_subnets("nfs", ["backup"], [lan.subnet])["backup"]
    assert backup.subnet.subnet_of(POOL)

    server = lab.machines["server"].spec
    assert [nic.network for nic in server.nics] == ["lan", "backup"]  # the machine's order
    lan_nic, backup_nic = server.nics
    assert (lan_nic.address, lan_nic.prefix) == (A("10.77.0.12"), 24)
    assert lan_nic.mac == mac_address("nfs", "lan", "server")
    assert dict(lan_nic.hosts) == lan.hosts()
    assert backup_nic.address == backup.subnet.network_address + 10
    assert backup_nic.mac != lan_nic.mac
    assert lab.machines["alone"].spec.nics == ()


def test_an_explicit_address_in_a_default_subnet(tmp_path: Path) -> None:
    subnet = default_subnets("l", ["lan"])["lan"]
    explicit = subnet.network_address + 99
    lab = load_lab(
        write_lab(
            tmp_path,
            f"""
            [lab]
            name = "l"
            [network.lan]
            [machine.a]
            networks = [{{ name = "lan", address = "{explicit}" }}]
            [machine.b]
            networks = ["lan"]
            """,
        )
    )
    assert lab.networks["lan"].hosts() == {"a": explicit, "b": subnet.network_address + 10}


def test_the_documented_example_loads_as_documented(tmp_path: Path) -> None:
    doc = (REPO / "docs" / "lab-file.md").read_text()
    section = doc.split("### `[network.NAME]`", 1)[1]
    match = re.search(r"```toml\n(.*?)```", section, re.DOTALL)
    assert match is not None
    lab = load_lab(write_lab(tmp_path, match.group(1)))
    assert lab.networks["lan"].hosts() == {
        "client1": A("10.77.0.10"),
        "client2": A("10.77.0.11"),
        "server": A("10.77.0.2"),
    }
    assert lab.networks["backup"].subnet.subnet_of(POOL)
    assert lab.networks["backup"].hosts() == {
        "server": lab.networks["backup"].subnet.network_address + 10
    }
    assert [nic.network for nic in lab.machines["server"].spec.nics] == ["lan", "backup"]
    assert "ping server" in section


def test_a_lab_without_networks_has_none(tmp_path: Path) -> None:
    lab = load_lab(write_lab(tmp_path, "[machine.a]\n"))
    assert dict(lab.networks) == {}
    assert lab.machines["a"].spec.nics == ()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            """
            [network.lan]
            subnet = "10.77.0.1/24"
            """,
            "vmlab.toml:2: network.lan.subnet: '10.77.0.1/24' has host bits set "
            "(did you mean 10.77.0.0/24?)",
        ),
        (
            """
            [network.lan]
            subnet = "10.77.0.0"
            """,
            "vmlab.toml:2: network.lan.subnet: '10.77.0.0' is not a subnet "
            "(write it with a prefix, like 10.77.0.0/24)",
        ),
        (
            """
            [network.lan]
            subnet = "10.0.0.0/8"
            """,
            "vmlab.toml:2: network.lan.subnet: 10.0.0.0/8 overlaps 10.0.2.0/24, QEMU's user "
            "network of image machines (pick another, like 10.77.0.0/24)",
        ),
        (
            """
            [network.lan]
            subnet = "10.77.0.0/31"
            """,
            "vmlab.toml:2: network.lan.subnet: 10.77.0.0/31 is too small for two machines "
            "(use a /30 or larger, like /24)",
        ),
        (
            """
            [network.lan]
            subnet = "10.77.0.0/24"

            [network.wan]
            subnet = "10.77.0.128/25"
            """,
            "vmlab.toml:5: network.wan.subnet: 10.77.0.128/25 overlaps 10.77.0.0/24 of network "
            "lan (line 2)",
        ),
        (
            """
            [network.lan]
            subnet = 24
            """,
            'vmlab.toml:2: network.lan.subnet: expected a string, got integer 24 (quote it: "24")',
        ),
        (
            """
            [network.lan]
            subnett = "10.77.0.0/24"
            """,
            "vmlab.toml:2: network.lan.subnett: unknown key (did you mean 'subnet'?)",
        ),
        (
            """
            [network."my lan"]
            """,
            "vmlab.toml:1: network.\"my lan\": 'my lan' is not a valid network name "
            "(use letters, digits, _ - .)",
        ),
        (
            """
            [network.lan]

            [machine.a]
            networks = ["lam"]
            """,
            "vmlab.toml:4: machine.a.networks[0]: no network named 'lam' (did you mean 'lan'?)",
        ),
        (
            """
            [network.lan]

            [machine.a]
            networks = ["lan", { name = "lan" }]
            """,
            "vmlab.toml:4: machine.a.networks[1]: joins network lan twice (also networks[0])",
        ),
        (
            """
            [network.lan]
            subnet = "10.77.0.0/24"

            [machine.a]
            networks = [{ name = "lan", address = "10.78.0.10" }]
            """,
            "vmlab.toml:5: machine.a.networks[0].address: 10.78.0.10 is not in the network's "
            "subnet 10.77.0.0/24",
        ),
        (
            """
            [network.lan]
            subnet = "10.77.0.0/24"

            [machine.a]
            networks = [{ name = "lan", address = "10.77.0.255" }]
            """,
            "vmlab.toml:5: machine.a.networks[0].address: 10.77.0.255 is the broadcast "
            "address of 10.77.0.0/24",
        ),
        (
            """
            [network.lan]
            subnet = "10.77.0.0/24"

            [machine.a]
            networks = [{ name = "lan", address = "10.77.0.20" }]

            [machine.b]
            networks = [
              "lan",
            ]

            [machine.c]
            networks = [{ name = "lan", address = "10.77.0.20" }]
            """,
            "vmlab.toml:13: machine.c.networks[0].address: 10.77.0.20 is already the address "
            "of machine a (line 5)",
        ),
        (
            """
            [network.lan]
            subnet = "10.77.0.0/30"

            [machine.a]
            networks = ["lan"]

            [machine.b]
            networks = ["lan"]

            [machine.c]
            networks = ["lan"]
            """,
            "vmlab.toml:11: machine.c.networks[0]: no free address left in 10.77.0.0/30 for "
            "machine c",
        ),
        (
            """
            [network.lan]

            [machine.a]
            networks = [{ name = "lan", address = "10.77.0.300" }]
            """,
            "vmlab.toml:4: machine.a.networks[0].address: '10.77.0.300' is not an IPv4 address "
            "(like 10.77.0.10)",
        ),
        (
            """
            [network.lan]

            [machine.a]
            networks = [{ name = "lan", adress = "10.77.0.3" }]
            """,
            "vmlab.toml:4: machine.a.networks[0].adress: unknown key (did you mean 'address'?)",
        ),
        (
            """
            [network.lan]

            [machine.a]
            networks = [3]
            """,
            "vmlab.toml:4: machine.a.networks[0]: expected a network name or a table "
            '{ name = "lan", address = "10.77.0.10" }, got integer 3',
        ),
        (
            """
            [network.lan]

            [machine.a]
            networks = "lan"
            """,
            "vmlab.toml:4: machine.a.networks: expected an array, got string 'lan' "
            '(write ["lan"])',
        ),
    ],
)
def test_mistakes(tmp_path: Path, text: str, expected: str) -> None:
    assert error_of(tmp_path, text) == expected
