"""Machines that `vmlab up` left running: state records, liveness, inventory.

A lab's running machines are known from files in its own directory only, so
two labs in different directories never see each other's machines::

    <lab dir>/.vmlab/machines/
        NAME.json           the record (written atomically): QEMU's pid and argv,
                            the runtime dir, sockets, console log, SSH port and key
        NAME.console.log    the serial console, written by QEMU itself
        NAME.lock           flock()ed while a `vmlab test` uses the machine

The sockets, the overlay and the seed stay in the machine's runtime directory
under `runtime_base()` (unix socket paths must stay short), whose `owner.pid`
is QEMU's own pid: the stale sweep leaves it alone while QEMU lives.

A record's QEMU counts as alive only if its pid exists AND /proc/PID/cmdline
is exactly the recorded argv: a pid reused by another process counts as dead.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import fcntl
import json
import os
import signal
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vmlab.cache import write_atomic

MACHINES_DIR = Path(".vmlab") / "machines"
RECORD_VERSION = 1
STOP_GRACE = 10.0  # seconds QEMU gets to quit on SIGTERM before SIGKILL


class MachineStatus(enum.StrEnum):
    """What `vmlab status` says about a recorded machine."""

    RUNNING = "running"  # QEMU is alive (pid and command line match)
    DEAD = "dead"  # QEMU is gone; its runtime files are still there
    STALE = "stale"  # QEMU and its runtime files are gone (or the record is unreadable)


@dataclass(frozen=True)
class MachineRecord:
    """One machine left running by `vmlab up` (`.vmlab/machines/NAME.json`)."""

    name: str
    lab_dir: Path
    pid: int
    argv: tuple[str, ...]
    started: datetime  # UTC, when QEMU was started
    runtime_dir: Path
    qmp_socket: Path
    console_socket: Path
    console_log: Path
    ssh_port: int
    ssh_user: str
    key_path: Path
    memory_mib: int
    cpus: int = 1
    snapshot: str | None = None  # a savevm tag in the overlay, to restore after a crash
    networks: tuple[str, ...] = ()  # the private networks it is on (their switches run detached)

    @property
    def address(self) -> str:
        return f"{self.ssh_user}@127.0.0.1:{self.ssh_port}"

    def to_json(self) -> str:
        data: dict[str, Any] = {"version": RECORD_VERSION, **asdict(self)}
        for key, value in data.items():
            if isinstance(value, Path):
                data[key] = str(value)
        data["argv"] = list(self.argv)
        data["networks"] = list(self.networks)
        data["started"] = self.started.isoformat()
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> MachineRecord:
        """The record in `text`; ValueError when it is not one."""
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.get("version") != RECORD_VERSION:
                raise ValueError("not a version 1 machine record")
            argv = data["argv"]
            if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
                raise ValueError("argv is not a list of strings")
            snapshot = data.get("snapshot")
            networks = data.get("networks", [])
            if not isinstance(networks, list) or not all(isinstance(n, str) for n in networks):
                raise ValueError("networks is not a list of names")
            started = datetime.fromisoformat(str(data["started"]))
            return cls(
                name=_str(data, "name"),
                lab_dir=Path(_str(data, "lab_dir")),
                pid=_int(data, "pid"),
                argv=tuple(argv),
                started=started if started.tzinfo else started.replace(tzinfo=UTC),
                runtime_dir=Path(_str(data, "runtime_dir")),
                qmp_socket=Path(_str(data, "qmp_socket")),
                console_socket=Path(_str(data, "console_socket")),
                console_log=Path(_str(data, "console_log")),
                ssh_port=_int(data, "ssh_port"),
                ssh_user=_str(data, "ssh_user"),
                key_path=Path(_str(data, "key_path")),
                memory_mib=_int(data, "memory_mib"),
                cpus=_int(data, "cpus"),
                snapshot=str(snapshot) if snapshot is not None else None,
                networks=tuple(networks),
            )
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a machine record: {exc}") from None


def _str(data: dict[str, Any], key: str) -> str:
    value = data[key]
    if not isinstance(value, str):
        raise ValueError(f"{key} is not a string")
    return value


def _int(data: dict[str, Any], key: str) -> int:
    value = data[key]
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{key} is not an integer")
    return value


# -- files -----------------------------------------------------------------


def machines_dir(lab_dir: Path) -> Path:
    return lab_dir / MACHINES_DIR


def record_path(lab_dir: Path, name: str) -> Path:
    return machines_dir(lab_dir) / f"{name}.json"


def console_log_path(lab_dir: Path, name: str) -> Path:
    return machines_dir(lab_dir) / f"{name}.console.log"


def write_record(record: MachineRecord) -> Path:
    """Write (or replace) `record` atomically; return its path."""
    path = record_path(record.lab_dir, record.name)
    write_atomic(path, record.to_json().encode())
    return path


def read_record(lab_dir: Path, name: str) -> MachineRecord | None:
    """The record of `name`, None if there is none; ValueError if it is unreadable."""
    path = record_path(lab_dir, name)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ValueError(f"{path}: {exc.strerror}") from None
    try:
        return MachineRecord.from_json(text)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


@dataclass(frozen=True)
class Entry:
    """A recorded machine: its record, or why the record cannot be read."""

    name: str
    record: MachineRecord | None
    problem: str = ""


def list_records(lab_dir: Path) -> list[Entry]:
    """Every record of the lab, by name."""
    entries = []
    for path in sorted(machines_dir(lab_dir).glob("*.json")):
        name = path.name.removesuffix(".json")
        try:
            entries.append(Entry(name, read_record(lab_dir, name)))
        except ValueError as exc:
            entries.append(Entry(name, None, str(exc)))
    return [entry for entry in entries if entry.record is not None or entry.problem]


# -- liveness --------------------------------------------------------------


def cmdline_of(pid: int) -> tuple[str, ...] | None:
    """The argv of process `pid` (None: no such process, or a zombie)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    if not raw:
        return None  # a zombie, or a kernel thread
    return tuple(part.decode(errors="surrogateescape") for part in raw.split(b"\0")[:-1])


def qemu_alive(pid: int, argv: Iterable[str]) -> bool:
    """Whether `pid` is alive and is the QEMU started with `argv` (not a reused pid)."""
    return pid > 0 and cmdline_of(pid) == tuple(argv)


def status_of(entry: Entry) -> MachineStatus:
    record = entry.record
    if record is None:
        return MachineStatus.STALE
    if qemu_alive(record.pid, record.argv):
        return MachineStatus.RUNNING
    return MachineStatus.DEAD if record.runtime_dir.is_dir() else MachineStatus.STALE


def rss_mib(pid: int) -> float | None:
    """VmRSS of `pid` in MiB (None when it cannot be read)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


class AdoptedProcess:
    """A QEMU that another vmlab process started (`vmlab up`): what QemuMachine
    needs of its process (pid, returncode, wait, send_signal, kill), through a
    pidfd, so a signal can never reach a process that reused the pid.

    Its exit status cannot be known (vmlab is not its parent): `returncode` is
    -1 once it is gone.
    """

    def __init__(self, pid: int, pidfd: int) -> None:
        self.pid = pid
        self._pidfd: int | None = pidfd
        self.returncode: int | None = None

    @classmethod
    def adopt(cls, pid: int, argv: Iterable[str]) -> AdoptedProcess | None:
        """The live QEMU `pid` started with `argv`; None when it is gone."""
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            return None
        # Checked after the pidfd exists: if it matches now, the pidfd is that QEMU.
        if not qemu_alive(pid, argv):
            os.close(pidfd)
            return None
        return cls(pid, pidfd)

    def _gone(self) -> bool:
        if self.returncode is not None:
            return True
        assert self._pidfd is not None
        try:
            signal.pidfd_send_signal(self._pidfd, 0)
        except ProcessLookupError:
            self._set_gone()
            return True
        return cmdline_of(self.pid) is None and self._set_gone()  # a zombie is gone

    def _set_gone(self) -> bool:
        self.returncode = -1
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        return True

    async def wait(self) -> int:
        """Until the process is gone (a zombie counts as gone)."""
        loop = asyncio.get_running_loop()
        while not self._gone():
            assert self._pidfd is not None
            fd = self._pidfd
            readable = asyncio.Event()
            loop.add_reader(fd, readable.set)
            try:
                # The pidfd becomes readable when the process exits; the timeout
                # notices a zombie that its parent does not reap.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(readable.wait(), 1.0)
            finally:
                loop.remove_reader(fd)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self._gone():
            raise ProcessLookupError(self.pid)
        assert self._pidfd is not None
        signal.pidfd_send_signal(self._pidfd, sig)

    def kill(self) -> None:
        """SIGKILL, unless it is gone already."""
        with contextlib.suppress(ProcessLookupError):
            self.send_signal(signal.SIGKILL)

    def close(self) -> None:
        """Forget the process (it keeps running)."""
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None


async def terminate(proc: AdoptedProcess, *, grace: float = STOP_GRACE) -> None:
    """SIGTERM (QEMU quits cleanly), then SIGKILL after `grace` seconds."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), grace)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


# -- using a machine -------------------------------------------------------


class FileLock:
    """An exclusive flock on `path` (created if missing), waited for without
    blocking the event loop; released by `release()` or when vmlab dies."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    async def acquire(self, *, poll: float = 0.2) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await asyncio.sleep(poll)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


class MachineInUse(FileLock):
    """An exclusive claim on an up machine (flock on NAME.lock), so that the
    jobs of one or several `vmlab test` runs use it one at a time."""

    def __init__(self, lab_dir: Path, name: str) -> None:
        super().__init__(machines_dir(lab_dir) / f"{name}.lock")


# -- small formatting helpers ----------------------------------------------


def uptime(record: MachineRecord, now: datetime | None = None) -> float:
    return max(0.0, ((now or datetime.now(UTC)) - record.started).total_seconds())


def format_duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"
