"""A machine boot's NoCloud seed files: the merged #cloud-config, meta-data,
network-config v2, /etc/hosts, the ready marker, and one-line errors for bad
user_data files. Every document is parsed back with PyYAML (as cloud-init
reads it) and checked by content."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest
import yaml

from vmlab.errors import ConfigError, ExitCode, UsageError
from vmlab.machine.cloud_config import (
    DEFAULT_USER,
    Nic,
    SeedRequest,
    build_seed,
    etc_hosts,
    hosts_config,
    load_user_data,
    ready_marker,
    seed_files,
)

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGm3zTbyXyFw5vU2Kq5mK0x0q1w2e3r4t5y6u7i8o9p0 vmlab-lab"
SUDO = "ALL=(ALL) NOPASSWD:ALL"


def _request(**changes: Any) -> SeedRequest:
    fields: dict[str, Any] = {
        "hostname": "db",
        "instance_id": "vmlab-db-0001",
        "public_key": KEY,
        "marker": ready_marker("tok123"),
    }
    fields.update(changes)
    return SeedRequest(**fields)


def _user_data(req: SeedRequest) -> dict[str, Any]:
    raw = seed_files(req)["user-data"].decode()
    assert raw.startswith("#cloud-config\n")
    doc = yaml.safe_load(raw)
    assert isinstance(doc, dict)
    return doc


def _file(tmp_path: Path, text: str, name: str = "user-data.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ----------------------------------------------------------------- user-data


def test_vmlab_alone_adds_its_user_key_and_marker_and_nothing_that_fetches() -> None:
    doc = _user_data(_request())
    assert doc == {
        "users": [
            {
                "name": DEFAULT_USER,
                "sudo": SUDO,
                "shell": "/bin/bash",
                "lock_passwd": True,
                "ssh_authorized_keys": [KEY],
            }
        ],
        "ssh_authorized_keys": [KEY],  # root's too, with disable_root false
        "disable_root": False,
        "ssh_pwauth": False,
        "locale": False,  # cloud-init's en_US.UTF-8 is not generated in Debian images
        "manage_etc_hosts": "localhost",  # the guest's own name resolves
        "final_message": "VMLAB-READY tok123",
    }
    for fetching in ("package_update", "package_upgrade", "packages", "apt", "snap"):
        assert fetching not in doc


def test_ready_marker_and_pattern() -> None:
    assert ready_marker("abc") == "VMLAB-READY abc"
    seed = build_seed(_request(marker=ready_marker("abc")))
    assert seed.ready_text == "VMLAB-READY abc"
    assert seed.ready.search("[   42.1] cloud-init[512]: VMLAB-READY abc")
    assert not seed.ready.search("VMLAB-READY abd")


def test_another_user_name() -> None:
    doc = _user_data(_request(user="tester"))
    assert [u["name"] for u in doc["users"]] == ["tester"]


def test_users_file_is_merged_and_its_keys_kept(tmp_path: Path) -> None:
    path = _file(
        tmp_path,
        "#cloud-config\n"
        "# the NFS server\n"
        "packages: [nfs-kernel-server]\n"
        "users:\n"
        "  - default\n"
        "  - name: alice\n"
        "    groups: [adm]\n"
        "ssh_authorized_keys: [ssh-rsa AAAAB3Nza alice@laptop]\n"
        "runcmd:\n"
        "  - [exportfs, -ra]\n"
        "ssh_pwauth: true\n",
    )
    doc = _user_data(_request(user_data=path))
    assert doc["packages"] == ["nfs-kernel-server"]  # asked for by the user: kept
    assert doc["runcmd"] == [["exportfs", "-ra"]]
    assert doc["users"][:2] == ["default", {"name": "alice", "groups": ["adm"]}]
    assert doc["users"][2]["name"] == DEFAULT_USER
    assert doc["users"][2]["ssh_authorized_keys"] == [KEY]
    assert doc["ssh_authorized_keys"] == ["ssh-rsa AAAAB3Nza alice@laptop", KEY]
    assert doc["ssh_pwauth"] is True  # the user's choice stands
    assert doc["final_message"] == "VMLAB-READY tok123"


def test_a_user_entry_named_like_vmlabs_gets_the_key_and_keeps_its_settings() -> None:
    inline = {
        "users": [{"name": "vmlab", "shell": "/bin/zsh", "ssh_authorized_keys": ["ssh-rsa AAAA x"]}]
    }
    doc = _user_data(_request(user_data=inline))
    assert doc["users"] == [
        {
            "name": "vmlab",
            "shell": "/bin/zsh",
            "ssh_authorized_keys": ["ssh-rsa AAAA x", KEY],
            "sudo": SUDO,
        }
    ]
    assert inline["users"][0]["ssh_authorized_keys"] == ["ssh-rsa AAAA x"]  # not mutated
    doc = _user_data(_request(user_data={"users": "default, vmlab"}))
    assert doc["users"][0] == "default"
    assert doc["users"][1]["sudo"] == SUDO and doc["users"][1]["ssh_authorized_keys"] == [KEY]
    assert len(doc["users"]) == 2


def test_the_users_final_message_stays_and_becomes_what_to_wait_for() -> None:
    inline = {"final_message": "db up after $UPTIME s (cloud-init ${version})"}
    seed = build_seed(_request(user_data=inline))
    doc = yaml.safe_load(seed.files["user-data"])
    assert doc["final_message"] == inline["final_message"]
    assert seed.ready_text == inline["final_message"]
    assert seed.ready.search("cloud-init[1]: db up after 12.34 s (cloud-init 22.4.2)")
    assert not seed.ready.search("db down after 12.34 s")
    assert not seed.ready.search("VMLAB-READY tok123")


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        ("$uptime ${timestamp}", "no fixed text"),
        ("costs $5 now", r"uses \$5"),
        ("Up $uptime.", r"uses \$uptime\."),  # cloud-init reads a dotted path and fails
        ("ready $hostname", r"uses \$hostname"),
        ("## template: jinja\nready {{uptime}}", "template"),
        (["a list"], "must be a string"),
    ],
)
def test_final_messages_cloud_init_would_not_print_are_refused(
    message: object, problem: str
) -> None:
    with pytest.raises(UsageError, match=f"final_message.*{problem}"):
        build_seed(_request(user_data={"final_message": message}))


def test_an_empty_final_message_means_vmlabs() -> None:
    seed = build_seed(_request(user_data={"final_message": "  "}))
    assert yaml.safe_load(seed.files["user-data"])["final_message"] == "VMLAB-READY tok123"
    assert seed.ready_text == "VMLAB-READY tok123"


def test_a_multi_line_final_message_waits_for_its_first_line() -> None:
    seed = build_seed(_request(user_data={"final_message": "\n  all set on db\nup $uptime s\n"}))
    assert seed.ready_text == "all set on db"
    assert seed.ready.search("all set on db")


def test_hosts_are_written_and_cloud_init_kept_from_rewriting_them() -> None:
    hosts = {"db": "10.0.1.2", "client": ipaddress.ip_address("10.0.1.3")}
    doc = _user_data(_request(hosts=hosts, user_data={"write_files": [{"path": "/etc/motd"}]}))
    assert doc["manage_etc_hosts"] is False
    assert doc["write_files"][0] == {"path": "/etc/motd"}
    written = doc["write_files"][1]
    assert written["path"] == "/etc/hosts"
    lines = written["content"].splitlines()
    assert "10.0.1.2\tdb" in lines and "10.0.1.3\tclient" in lines
    assert "127.0.0.1\tlocalhost" in lines
    assert not any(line.startswith("127.0.1.1") for line in lines)  # db is in hosts


def test_etc_hosts_for_a_machine_outside_the_map_and_the_fragment() -> None:
    text = etc_hosts({"nfs": "192.168.5.1", "v6": "fd00::5"}, hostname="client")
    lines = text.splitlines()
    assert "127.0.1.1\tclient" in lines
    assert lines[-2:] == ["192.168.5.1\tnfs", "fd00::5\tv6"]
    assert text.endswith("\n")
    fragment = hosts_config({"nfs": "192.168.5.1"}, hostname="client")
    assert fragment["manage_etc_hosts"] is False
    assert fragment["write_files"][0]["content"] == etc_hosts(
        {"nfs": "192.168.5.1"}, hostname="client"
    )


@pytest.mark.parametrize(
    ("hosts", "problem"),
    [({"db": "10.0.1.300"}, "not an IP address"), ({"nfs_server": "10.0.1.2"}, "host name")],
)
def test_bad_hosts(hosts: dict[str, str], problem: str) -> None:
    with pytest.raises(UsageError, match=problem):
        seed_files(_request(hosts=hosts))


def test_manage_etc_hosts_true_conflicts_with_lab_hosts() -> None:
    req = _request(hosts={"db": "10.0.1.2"}, user_data={"manage_etc_hosts": True})
    with pytest.raises(UsageError, match="manage_etc_hosts"):
        seed_files(req)
    # Without lab hosts, the user's setting is theirs to make.
    assert _user_data(_request(user_data={"manage_etc_hosts": True}))["manage_etc_hosts"] is True


def test_output_is_deterministic() -> None:
    req = _request(user_data={"runcmd": ["true"]}, hosts={"a": "10.0.0.1"})
    assert seed_files(req) == seed_files(req)


# ------------------------------------------------------- user_data file errors


def test_a_file_without_the_cloud_config_line(tmp_path: Path) -> None:
    path = _file(tmp_path, "#!/bin/sh\necho hi\n")
    with pytest.raises(ConfigError) as info:
        seed_files(_request(user_data=path))
    message = info.value.message
    assert message.startswith(f"{path}:1: ")
    assert "#cloud-config" in message and "\n" not in message
    assert info.value.exit_code == ExitCode.USAGE


def test_invalid_yaml_names_the_file_and_the_line(tmp_path: Path) -> None:
    path = _file(tmp_path, "#cloud-config\nruncmd:\n  - ok\nusers: [a, b\nssh_pwauth: false\n")
    with pytest.raises(ConfigError) as info:
        load_user_data(path)
    message = info.value.message
    assert message.startswith(f"{path}:5: user_data is not valid YAML: ")
    assert message.endswith("(while parsing a flow sequence on line 4)")  # the unclosed [
    assert "\n" not in message


def test_bad_indentation_line(tmp_path: Path) -> None:
    path = _file(tmp_path, "#cloud-config\nusers:\n  - name: a\n groups: x\n")
    with pytest.raises(ConfigError, match=r":4: user_data is not valid YAML"):
        load_user_data(path)


def test_a_list_is_not_a_mapping(tmp_path: Path) -> None:
    path = _file(tmp_path, "#cloud-config\n# comment\n\n- a\n- b\n")
    with pytest.raises(ConfigError) as info:
        load_user_data(path)
    assert info.value.message == (
        f"{path}:4: user_data is a list, not a mapping of cloud-config keys"
    )
    path = _file(tmp_path, "#cloud-config\njust words\n")
    with pytest.raises(ConfigError, match=r":2: user_data is a str, not a mapping"):
        load_user_data(path)


def test_a_missing_file_and_an_empty_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such user_data file"):
        load_user_data(tmp_path / "nope.yaml")
    assert load_user_data(_file(tmp_path, "#cloud-config\n")) == {}
    with pytest.raises(ConfigError, match=r":1: user_data must start"):
        load_user_data(_file(tmp_path, ""))


def test_bad_users_shape() -> None:
    with pytest.raises(UsageError, match="users must be a list"):
        seed_files(_request(user_data={"users": {"alice": {}}}))


# ---------------------------------------------------------------- meta-data


def test_meta_data() -> None:
    doc = yaml.safe_load(seed_files(_request(hostname="nfs-server-1"))["meta-data"])
    assert doc == {"instance-id": "vmlab-db-0001", "local-hostname": "nfs-server-1"}
    other = seed_files(_request(instance_id="vmlab-db-0002"))["meta-data"]
    assert yaml.safe_load(other)["instance-id"] == "vmlab-db-0002"


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"hostname": "bad_name"}, "not a valid host name"),
        ({"hostname": "-x"}, "not a valid host name"),
        ({"instance_id": ""}, "instance id"),
        ({"instance_id": "a b"}, "instance id"),
        ({"public_key": "not a key"}, "public key"),
        ({"public_key": KEY + "\n" + KEY}, "public key"),
        ({"marker": "VMLAB-READY $uptime"}, "ready marker"),
        ({"marker": "two\nlines"}, "ready marker"),
        ({"user": "Root Admin"}, "user name"),
    ],
)
def test_bad_requests(changes: dict[str, Any], problem: str) -> None:
    with pytest.raises(UsageError, match=problem):
        seed_files(_request(**changes))


# ----------------------------------------------------------- network-config


def test_no_nics_no_network_config() -> None:
    assert sorted(seed_files(_request())) == ["meta-data", "user-data"]


def test_network_config_v2_dhcp_first_static_others() -> None:
    nics = (
        Nic("52:54:00:12:34:56"),
        Nic("02:AB:00:00:00:02", "10.0.1.2/24"),
        Nic("02:ab:00:00:00:03", ipaddress.ip_interface("fd00:1::3/64")),
    )
    doc = yaml.safe_load(seed_files(_request(nics=nics))["network-config"])
    assert doc == {
        "version": 2,
        "ethernets": {
            "nic0": {"match": {"macaddress": "52:54:00:12:34:56"}, "dhcp4": True},
            "nic1": {
                "match": {"macaddress": "02:ab:00:00:00:02"},
                "dhcp4": False,
                "addresses": ["10.0.1.2/24"],
            },
            "nic2": {
                "match": {"macaddress": "02:ab:00:00:00:03"},
                "dhcp4": False,
                "addresses": ["fd00:1::3/64"],
            },
        },
    }


@pytest.mark.parametrize(
    ("nics", "problem"),
    [
        ((Nic("52:54:00:12:34"),), "not like"),
        ((Nic("52:54:00:12:34:56"), Nic("52:54:00:12:34:56", "10.0.0.2/24")), "used twice"),
        ((Nic("52:54:00:12:34:56", "10.0.0.300/24"),), "ADDRESS/PREFIX"),
        ((Nic("52:54:00:12:34:56", "10.0.0.2"),), "needs a prefix"),
    ],
)
def test_bad_nics(nics: tuple[Nic, ...], problem: str) -> None:
    with pytest.raises(UsageError, match=problem):
        seed_files(_request(nics=nics))
