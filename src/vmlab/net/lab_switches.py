"""The switches that `vmlab up` leaves running for a lab's private networks.

A machine that stays up keeps its NICs, so its networks' switches must stay up
too: each runs as a detached `python -m vmlab.net.switch` (`SwitchProcess`)
with a port for every machine of the network in the lab file, and is recorded
in the lab's own directory, like the machines::

    <lab dir>/.vmlab/networks/
        NAME.json       {"version": 1, "network": NAME, "directory": DIR}
                        (DIR holds the switch's sockets and its switch.json)
        .lock           flock()ed while switches are started or stopped

`vmlab up` starts the switches its machines need (`ensure_switches`), or uses
the ones already running; `vmlab test` attaches the machines it boots to them
(so they share the network with the machines that are up); `vmlab down` and
`vmlab clean` stop every switch that no running machine uses anymore
(`stop_unused`).
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vmlab.cache import write_atomic
from vmlab.errors import InfraError, UsageError
from vmlab.machine.records import FileLock
from vmlab.net.addresses import NetworkSpec
from vmlab.net.switch import DIR_PREFIX, SwitchError, SwitchProcess

NETWORKS_DIR = Path(".vmlab") / "networks"
RECORD_VERSION = 1


def networks_dir(lab_dir: Path) -> Path:
    return lab_dir / NETWORKS_DIR


def network_record_path(lab_dir: Path, name: str) -> Path:
    return networks_dir(lab_dir) / f"{name}.json"


@dataclass(frozen=True)
class SwitchEntry:
    """A recorded switch: the running process, or why there is none."""

    network: str
    directory: Path | None
    switch: SwitchProcess | None  # None: not running (see `problem`)
    problem: str = ""
    ports: tuple[str, ...] = ()  # a dead switch's ports, from the state it left

    @property
    def running(self) -> bool:
        return self.switch is not None


def _read_entry(path: Path) -> SwitchEntry:
    network = path.name.removesuffix(".json")
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or data.get("version") != RECORD_VERSION:
            raise ValueError("not a version 1 network record")
        directory = Path(str(data["directory"]))
    except (OSError, ValueError, KeyError) as exc:
        return SwitchEntry(network, None, None, f"unreadable record {path}: {exc}")
    try:
        switch = SwitchProcess.attach(directory)
    except SwitchError:
        return SwitchEntry(network, directory, None, "its switch is gone")
    if not switch.alive():
        problem = f"its switch (pid {switch.pid}) is gone"
        return SwitchEntry(network, directory, None, problem, switch.ports)
    return SwitchEntry(network, directory, switch)


def list_switches(lab_dir: Path) -> list[SwitchEntry]:
    """Every recorded switch of the lab, by network name."""
    return [_read_entry(path) for path in sorted(networks_dir(lab_dir).glob("*.json"))]


def running_switches(lab_dir: Path) -> dict[str, SwitchProcess]:
    """The lab's networks whose switch runs detached, and their switches."""
    return {
        entry.network: entry.switch for entry in list_switches(lab_dir) if entry.switch is not None
    }


def _lock(lab_dir: Path) -> FileLock:
    return FileLock(networks_dir(lab_dir) / ".lock")


def _forget(lab_dir: Path, entry: SwitchEntry) -> None:
    """Remove a dead switch's record and what its process left (never anything
    but a switch directory)."""
    directory = entry.directory
    if directory is not None and directory.name.startswith(DIR_PREFIX) and directory.is_dir():
        shutil.rmtree(directory, ignore_errors=True)
    network_record_path(lab_dir, entry.network).unlink(missing_ok=True)


@dataclass(frozen=True)
class LabSwitches:
    """What `ensure_switches` found or started."""

    switches: dict[str, SwitchProcess]
    started: tuple[str, ...] = ()  # new switches
    restarted: tuple[str, ...] = ()  # dead ones started again in their directory


async def ensure_switches(lab_dir: Path, networks: Sequence[NetworkSpec]) -> LabSwitches:
    """A running detached switch for each of `networks`: the recorded one; a
    dead one started again in its own directory with its own ports, so that
    the machines still running on it (their QEMU sends to that directory's
    socket) have their network back; or a new one, recorded."""
    lock = _lock(lab_dir)
    await lock.acquire()
    switches: dict[str, SwitchProcess] = {}
    started: list[str] = []
    restarted: list[str] = []
    try:
        existing = {entry.network: entry for entry in list_switches(lab_dir)}
        for network in networks:
            entry = existing.get(network.name)
            switch = entry.switch if entry is not None else None
            if switch is None and entry is not None:
                switch = await _restart(entry)
                if switch is None:
                    _forget(lab_dir, entry)
                else:
                    restarted.append(network.name)
            if switch is None:
                switch = await _start(lab_dir, network)
                started.append(network.name)
            switches[network.name] = switch
            missing = [m for m in network.machines if m not in switch.ports]
            if missing:
                raise UsageError(
                    f"network {network.name}: its running switch has no port for "
                    f"{', '.join(missing)}, which joined it in the lab file since "
                    f"(vmlab down, then vmlab up)"
                )
        return LabSwitches(switches, tuple(started), tuple(restarted))
    except BaseException:  # all or nothing: the switches started here go again
        for name in started:
            with contextlib.suppress(SwitchError):
                await switches[name].stop()
            network_record_path(lab_dir, name).unlink(missing_ok=True)
        raise
    finally:
        lock.release()


async def _start(lab_dir: Path, network: NetworkSpec) -> SwitchProcess:
    try:
        switch = await SwitchProcess.spawn(network.machines, name=network.name)
    except SwitchError as exc:
        raise InfraError(f"network {network.name}: {exc}") from None
    record = {"version": RECORD_VERSION, "network": network.name}
    record["directory"] = str(switch.directory)
    write_atomic(
        network_record_path(lab_dir, network.name),
        (json.dumps(record, indent=2) + "\n").encode(),
    )
    return switch


async def _restart(entry: SwitchEntry) -> SwitchProcess | None:
    """The dead switch of `entry` started again in its directory (None when
    that is gone, or the switch does not start there)."""
    directory = entry.directory
    if directory is None or not entry.ports or not directory.is_dir():
        return None
    try:
        return await SwitchProcess.spawn(entry.ports, name=entry.network, directory=directory)
    except SwitchError:
        return None


async def stop_unused(
    lab_dir: Path, in_use: Iterable[str], *, only: Iterable[str] | None = None
) -> list[str]:
    """Stop (or forget, when dead) every recorded switch whose network is not
    in `in_use` (of those in `only`, when given); returns a line for each,
    saying what happened."""
    keep = set(in_use)
    chosen = None if only is None else set(only)
    if chosen is not None and not chosen:
        return []
    if not networks_dir(lab_dir).is_dir():
        return []
    lock = _lock(lab_dir)
    await lock.acquire()
    try:
        said = []
        for entry in list_switches(lab_dir):
            if entry.network in keep or (chosen is not None and entry.network not in chosen):
                continue
            if entry.switch is not None:
                with contextlib.suppress(SwitchError):
                    await entry.switch.stop()
                network_record_path(lab_dir, entry.network).unlink(missing_ok=True)
                said.append(f"network {entry.network}: switch stopped")
            else:
                _forget(lab_dir, entry)
                said.append(f"network {entry.network}: removed ({entry.problem})")
        return said
    finally:
        lock.release()
