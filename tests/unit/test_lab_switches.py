"""The switches `vmlab up` leaves running for a lab's networks, with real
detached switch processes (no VM): started once and recorded, used again,
kept while a running machine is on the network, stopped with the last one,
and a killed switch noticed, replaced and cleaned up.

A `sleep` process plays the part of a running machine's QEMU (liveness
compares /proc/PID/cmdline with the recorded argv).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from vmlab.cli import lifecycle_cmd
from vmlab.errors import UsageError
from vmlab.machine.records import MachineRecord, write_record
from vmlab.machine.spec import MachineSpec, NicSpec
from vmlab.machine.subprocess_util import pid_exists
from vmlab.net.addresses import NetworkMember, NetworkSpec
from vmlab.net.lab_switches import (
    ensure_switches,
    list_switches,
    network_record_path,
    running_switches,
    stop_unused,
)
from vmlab.net.networks import LabNetworks, attach


def _network(name: str, machines: tuple[str, ...]) -> NetworkSpec:
    members = tuple(
        NetworkMember(m, IPv4Address(f"10.9.0.{i + 10}"), f"02:00:00:00:00:{i + 10:02x}")
        for i, m in enumerate(machines)
    )
    return NetworkSpec(name=name, subnet=IPv4Network("10.9.0.0/24"), members=members)


B_ON_LAN = MachineSpec(
    name="b", nics=(NicSpec("lan", "02:00:00:00:00:0b", IPv4Address("10.9.0.11"), 24),)
)


@pytest.fixture
def lab(tmp_path: Path) -> Path:
    root = tmp_path / "lab"
    root.mkdir()
    (root / "vmlab.toml").write_text("[lab]\nname = 'x'\n")
    return root


@pytest.fixture
async def cleanup(lab: Path) -> AsyncIterator[None]:
    yield
    await stop_unused(lab, in_use=())


def _machine_on(lab: Path, name: str, pid: int, networks: tuple[str, ...]) -> MachineRecord:
    runtime = lab.parent / f"vmlab-{name}"
    runtime.mkdir(exist_ok=True)
    record = MachineRecord(
        name=name, lab_dir=lab, pid=pid, argv=("sleep", "300"), started=datetime.now(UTC),
        runtime_dir=runtime, qmp_socket=runtime / "qmp.sock",
        console_socket=runtime / "console.sock", console_log=runtime / "console.log",
        ssh_port=40022, ssh_user="root", key_path=lab / "key", memory_mib=512,
        networks=networks,
    )  # fmt: skip
    write_record(record)
    return record


@pytest.mark.usefixtures("cleanup")
async def test_a_switch_is_started_once_recorded_and_used_again(lab: Path) -> None:
    lan = _network("lan", ("a", "b"))
    found = await ensure_switches(lab, [lan])
    assert found.started == ("lan",) and found.restarted == ()
    first = found.switches["lan"]
    assert first.alive() and first.ports == ("a", "b")
    record = json.loads(network_record_path(lab, "lan").read_text())
    assert record == {"version": 1, "network": "lan", "directory": str(first.directory)}
    again = await ensure_switches(lab, [lan])
    assert again.started == () and again.switches["lan"].pid == first.pid
    assert set(running_switches(lab)) == {"lan"}


@pytest.mark.usefixtures("cleanup")
async def test_a_machine_added_to_the_network_since_is_a_clear_error(lab: Path) -> None:
    await ensure_switches(lab, [_network("lan", ("a",))])
    with pytest.raises(
        UsageError, match=r"network lan: .*no port for b.*vmlab down, then vmlab up"
    ):
        await ensure_switches(lab, [_network("lan", ("a", "b"))])
    with pytest.raises(UsageError, match=r"machine b has no port on network lan's running switch"):
        attach(B_ON_LAN, running_switches(lab))


@pytest.mark.usefixtures("cleanup")
async def test_vmlab_tests_networks_use_the_running_switch_and_leave_it_running(
    lab: Path,
) -> None:
    switches = (await ensure_switches(lab, [_network("lan", ("a", "b"))])).switches
    nets = LabNetworks([_network("lan", ("a", "b")), _network("san", ("b",))], switches)
    async with nets:
        assert set(nets.switches) == {"san"}  # only the network nobody left running
        (nic,) = nets.attach(B_ON_LAN).nics
        assert nic.switch == switches["lan"].socket_path
        assert nic.port == switches["lan"].port_path("b")
    assert switches["lan"].alive()


@pytest.mark.usefixtures("cleanup")
async def test_down_keeps_a_switch_a_running_machine_is_on_and_stops_it_with_the_last(
    lab: Path, sleeper: subprocess.Popen[bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    switches = (await ensure_switches(lab, [_network("lan", ("a", "b"))])).switches
    pid = switches["lan"].pid
    _machine_on(lab, "a", sleeper.pid, ("lan",))
    assert await stop_unused(lab, lifecycle_cmd.networks_in_use(lab)) == []
    assert lifecycle_cmd.status(lab, as_json=False) == 0
    out = capsys.readouterr().out
    assert f"network lan: switch running (pid {pid}; a, b)" in out
    assert await lifecycle_cmd.down(lab, ("a",)) == 0
    out = capsys.readouterr().out
    assert "a: stopped" in out and "network lan: switch stopped" in out
    deadline = time.monotonic() + 10
    while pid_exists(pid) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not pid_exists(pid)
    assert list_switches(lab) == []
    assert not switches["lan"].directory.exists()


@pytest.mark.usefixtures("cleanup")
async def test_a_killed_switch_is_shown_gone_and_started_again_where_its_machines_send(
    lab: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lan = _network("lan", ("a", "b"))
    killed = (await ensure_switches(lab, [lan])).switches["lan"]
    _kill(killed.pid)
    (entry,) = list_switches(lab)
    assert not entry.running and "is gone" in entry.problem and entry.ports == ("a", "b")
    assert running_switches(lab) == {}
    lifecycle_cmd.status(lab, as_json=False)
    assert f"network lan: its switch (pid {killed.pid}) is gone" in capsys.readouterr().out

    # A machine's QEMU sends to the switch socket of that directory: the new
    # switch serves the same paths, so the machines have their network back.
    found = await ensure_switches(lab, [lan])
    assert found.restarted == ("lan",) and found.started == ()
    again = found.switches["lan"]
    assert again.pid != killed.pid and again.alive()
    assert again.directory == killed.directory and again.socket_path == killed.socket_path
    assert again.port_path("b") == killed.port_path("b")

    _kill(again.pid)
    assert await lifecycle_cmd.clean(lab) == 0
    assert "network lan: removed (its switch" in capsys.readouterr().out
    assert list_switches(lab) == [] and not again.directory.exists()


@pytest.mark.usefixtures("cleanup")
async def test_a_dead_switch_whose_directory_is_gone_is_replaced(lab: Path) -> None:
    lan = _network("lan", ("a",))
    killed = (await ensure_switches(lab, [lan])).switches["lan"]
    _kill(killed.pid)
    shutil.rmtree(killed.directory)
    found = await ensure_switches(lab, [lan])
    assert found.started == ("lan",) and found.switches["lan"].directory != killed.directory


def _kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pid_exists(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


async def test_a_lab_without_networks_gets_no_networks_directory(lab: Path) -> None:
    assert await stop_unused(lab, in_use=()) == []
    assert not (lab / ".vmlab").exists()


@pytest.mark.usefixtures("cleanup")
async def test_starting_is_all_or_nothing(lab: Path) -> None:
    bad = NetworkSpec(
        name="san",
        subnet=IPv4Network("10.9.1.0/24"),
        members=(NetworkMember("../x", IPv4Address("10.9.1.10"), "02:00:00:00:01:10"),),
    )
    with pytest.raises(ValueError):
        await ensure_switches(lab, [_network("lan", ("a",)), bad])
    assert list_switches(lab) == []  # lan's switch, started first, went again


@pytest.mark.usefixtures("cleanup")
async def test_only_the_named_switches_are_stopped(lab: Path) -> None:
    both = [_network("lan", ("a",)), _network("san", ("a",))]
    switches = (await ensure_switches(lab, both)).switches
    assert await stop_unused(lab, in_use=(), only=()) == []
    assert await stop_unused(lab, in_use=(), only=("san",)) == ["network san: switch stopped"]
    assert set(running_switches(lab)) == {"lan"} and switches["lan"].alive()
