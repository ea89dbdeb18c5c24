"""`vmlab up | status | ssh | console | down | clean | inventory`: disk-image
machines that stay running between vmlab commands.

`vmlab up` boots a lab's disk-image machines (concurrently), sets them up as
`vmlab test` would (the lab copied in, modules_load, setup, a snapshot), and
leaves QEMU running in the background; `vmlab test` then uses them instead of
booting its own, and `vmlab down` stops them. The switches of their private
networks stay up with them (vmlab.net.lab_switches). What is up is known from
the lab's `.vmlab/machines/` and `.vmlab/networks/` only
(vmlab.machine.records), so labs in different directories never see each
other's machines.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import fcntl
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from vmlab.cli.image_cmd import build_machine_images
from vmlab.cli.runner import error_line
from vmlab.config_specs import LAB_FILE, Lab, MachineConfig
from vmlab.errors import ExitCode, HostError, InfraError, UsageError, VmlabError
from vmlab.guest.channel import ROOT_ENV
from vmlab.machine.ansible import InventoryHost, inventory_yaml
from vmlab.machine.records import (
    AdoptedProcess,
    Entry,
    MachineInUse,
    MachineRecord,
    MachineStatus,
    console_log_path,
    format_duration,
    list_records,
    machines_dir,
    record_path,
    rss_mib,
    status_of,
    terminate,
    uptime,
)
from vmlab.net.lab_switches import LabSwitches, ensure_switches, list_switches, stop_unused
from vmlab.net.networks import attach
from vmlab.net.switch import SwitchProcess

CONSOLE_TAIL_LINES = 50
DETACH_KEY = b"\x1d"  # Ctrl-], as in telnet


# -- the lab and its machines -------------------------------------------------


def lab_dir_of(path: Path) -> Path:
    """The directory of the lab file `path` (a vmlab.toml or its directory)."""
    file = path / LAB_FILE if path.is_dir() else path
    if not file.is_file():
        raise UsageError(
            f"{file}: no such lab file (run in the lab's directory, or pass --lab PATH)"
        )
    return Path(os.path.abspath(file)).parent


def _lab_machine_names(lab_dir: Path) -> list[str]:
    """The lab file's machine names, for suggestions (none if it does not load:
    `down` and `status` still work on what is recorded)."""
    from vmlab.config import load_lab  # noqa: PLC0415

    try:
        return list(load_lab(lab_dir).machines)
    except VmlabError:
        return []


def unknown_machine(name: str, known: Iterable[str]) -> UsageError:
    known = sorted(set(known))
    close = difflib.get_close_matches(name, known, n=2)
    if close:
        hint = "did you mean " + " or ".join(repr(c) for c in close) + "?"
    elif known:
        hint = f"known: {', '.join(known)}"
    else:
        hint = "the lab has none"
    return UsageError(f"no machine named {name!r} ({hint})")


def select_entries(lab_dir: Path, names: Sequence[str]) -> list[Entry]:
    """The recorded machines `names` (all recorded ones when empty)."""
    entries = list_records(lab_dir)
    if not names:
        return entries
    by_name = {entry.name: entry for entry in entries}
    chosen = []
    for name in dict.fromkeys(names):
        if name in by_name:
            chosen.append(by_name[name])
            continue
        lab_names = _lab_machine_names(lab_dir)
        if name in lab_names:
            raise UsageError(f"machine {name} is not up (vmlab up {name})")
        raise unknown_machine(name, [*lab_names, *by_name])
    return chosen


def running_record(lab_dir: Path, name: str) -> MachineRecord:
    """The record of `name`, which must be up and running."""
    (entry,) = select_entries(lab_dir, [name])
    if entry.record is None:
        raise UsageError(f"machine {name}: {entry.problem} (vmlab down {name})")
    if status_of(entry) is not MachineStatus.RUNNING:
        raise InfraError(
            f"machine {name} is not running: its QEMU (pid {entry.record.pid}) is gone "
            f"(vmlab down {name}, then vmlab up {name})"
        )
    return entry.record


# -- up -------------------------------------------------------------------------


def say(line: str) -> None:
    print(line, flush=True)


def _disk_machines(lab: Lab, names: Sequence[str]) -> list[MachineConfig]:
    if not names:
        chosen = [m for m in lab.machines.values() if m.spec.disk is not None]
        if not chosen:
            raise UsageError(
                f"{lab.path}: no disk-image machine to start (vmlab up starts machines "
                "with `image = ...`; host-root machines run inside vmlab run and vmlab test)"
            )
    else:
        chosen = []
        for name in dict.fromkeys(names):
            if name not in lab.machines:
                raise unknown_machine(name, lab.machines)
            chosen.append(lab.machines[name])
    for machine in chosen:
        if machine.spec.disk is None:
            raise UsageError(
                f"machine {machine.name} boots the host's root, which has no background "
                "mode (vmlab up starts disk-image machines: `image = ...`)"
            )
    return chosen


async def up(lab_path: Path, names: Sequence[str]) -> int:
    from vmlab.config import load_lab  # noqa: PLC0415

    lab = await asyncio.to_thread(load_lab, lab_path)
    machines = _disk_machines(lab, names)
    todo = []
    for machine in machines:
        entry = next((e for e in list_records(lab.root) if e.name == machine.name), None)
        if entry is not None and status_of(entry) is MachineStatus.RUNNING:
            assert entry.record is not None
            say(f"{machine.name}: already up (ssh {entry.record.address})")
            continue
        if entry is not None:
            removed = remove_machine_files(lab.root, entry, keep_log=False)
            say(f"{machine.name}: its earlier QEMU is gone; removed {', '.join(removed)}")
        todo.append(machine)
    # Machines that are up get their network back if its switch died.
    switches = await _start_switches(lab, machines)
    try:
        if not todo:
            return 0
        await build_machine_images(todo, stderr=False)
        machines_dir(lab.root).mkdir(parents=True, exist_ok=True)
        notices: set[str] = set()
        outcomes = await asyncio.gather(
            *(_up_one(lab, machine, notices, switches.switches) for machine in todo),
            return_exceptions=True,
        )
    finally:  # a switch started for machines none of which came up does not stay
        in_use = networks_in_use(lab.root)
        for line in await stop_unused(lab.root, in_use, only=switches.started):
            say(line)
    status = 0
    for machine, outcome in zip(todo, outcomes, strict=True):
        if isinstance(outcome, VmlabError):
            message = outcome.message
            if not message.startswith(f"{machine.name}:"):
                message = f"{machine.name}: {message}"
            error_line(message)
            status = status or int(outcome.exit_code)
        elif isinstance(outcome, BaseException):
            raise outcome
    return status


def _running(lab_dir: Path, name: str) -> MachineRecord | None:
    entry = next((e for e in list_records(lab_dir) if e.name == name), None)
    if entry is not None and status_of(entry) is MachineStatus.RUNNING:
        return entry.record
    return None


async def _start_switches(lab: Lab, machines: Sequence[MachineConfig]) -> LabSwitches:
    """The detached switches of the networks these machines are on: those that
    run already (other machines of the lab are up on them), dead ones started
    again, or new ones."""
    names = sorted({nic.network for machine in machines for nic in machine.spec.nics})
    if not names:
        return LabSwitches({})
    found = await ensure_switches(lab.root, [lab.networks[n] for n in names])
    for name in found.started:
        say(f"network {name}: switch started ({lab.networks[name].subnet})")
    for name in found.restarted:
        say(f"network {name}: its switch was gone; started again where its machines send")
    return found


def networks_in_use(lab_dir: Path) -> set[str]:
    """The networks of the lab's running machines (their switches must stay)."""
    return {
        network
        for entry in list_records(lab_dir)
        if entry.record is not None and status_of(entry) is MachineStatus.RUNNING
        for network in entry.record.networks
    }


async def _up_one(
    lab: Lab, machine: MachineConfig, notices: set[str], switches: Mapping[str, SwitchProcess]
) -> MachineRecord:
    """Boot and set up one machine in the background, then leave it running."""
    from vmlab.machine.image_machine import ImageMachine  # noqa: PLC0415
    from vmlab.session import Session, SessionContext  # noqa: PLC0415

    name = machine.name
    in_use = MachineInUse(lab.root, name)  # a `vmlab test` waits until it is ready
    await in_use.acquire()
    try:
        running = _running(lab.root, name)
        if running is not None:  # another `vmlab up` was quicker
            say(f"{name}: already up (ssh {running.address})")
            return running
        disk = machine.spec.disk
        assert disk is not None
        say(f"{name}: booting ({disk.image.name}, {machine.spec.memory_mib}M)")
        started = time.monotonic()
        ctx = SessionContext(
            run_dir=machines_dir(lab.root), emit=lambda _event: None,
            image_for=lambda _machine: None, failed_capabilities={}, lab_root=lab.root,
            background=True, attach=lambda spec: attach(spec, switches),
        )  # fmt: skip
        session = Session.for_machine(machine, ctx, f"up:{name}")
        try:
            vm = await session.ensure_vm()  # boot, lab copied in, setup, snapshot
            assert isinstance(vm, ImageMachine)
            notice = vm.disk_boot.accel_notice if vm.disk_boot is not None else None
            record = await vm.detach()
        except BaseException:
            await session.close()  # nothing is left running ...
            record_path(lab.root, name).unlink(missing_ok=True)  # ... or recorded
            raise
        if record is None:
            log = console_log_path(lab.root, name)
            raise InfraError(f"{name}: QEMU exited right after the boot (console log: {log})")
        if notice and notice not in notices:
            notices.add(notice)
            error_line(notice)
        say(
            f"{name}: up in {time.monotonic() - started:.0f}s: ssh {record.address} "
            f"(vmlab ssh {name})"
        )
        return record
    finally:
        in_use.release()


# -- status, inventory ----------------------------------------------------------


@dataclass(frozen=True)
class Row:
    machine: str
    state: MachineStatus
    record: MachineRecord | None
    problem: str = ""

    def as_json(self) -> dict[str, object]:
        record = self.record
        alive = record is not None and self.state is MachineStatus.RUNNING
        rss = rss_mib(record.pid) if alive and record is not None else None
        return {
            "machine": self.machine,
            "state": self.state.value,
            "address": f"ssh {record.address}" if record else None,
            "pid": record.pid if record else None,
            "ssh_port": record.ssh_port if record else None,
            "ssh_user": record.ssh_user if record else None,
            "key": str(record.key_path) if record else None,
            "started": record.started.isoformat() if record else None,
            "uptime_s": round(uptime(record)) if alive and record else None,
            "rss_mib": round(rss) if rss is not None else None,
            "memory_mib": record.memory_mib if record else None,
            "snapshot": record.snapshot if record else None,
            "networks": list(record.networks) if record else [],
            "console_log": str(record.console_log) if record else None,
            "runtime_dir": str(record.runtime_dir) if record else None,
            "problem": self.problem or None,
        }

    def cells(self) -> list[str]:
        record = self.record
        if record is None:
            return [self.machine, self.state.value, "-", "-", "-"]
        if self.state is MachineStatus.RUNNING:
            rss = rss_mib(record.pid)
            memory = f"{rss:.0f}M / {record.memory_mib}M" if rss is not None else "-"
            when = format_duration(uptime(record))
        else:
            memory, when = f"- / {record.memory_mib}M", "-"
        state = self.state.value + (" (QEMU gone)" if self.state is MachineStatus.DEAD else "")
        return [self.machine, state, f"ssh {record.address}", when, memory]


def status_rows(lab_dir: Path) -> list[Row]:
    return [
        Row(entry.name, status_of(entry), entry.record, entry.problem)
        for entry in list_records(lab_dir)
    ]


HEADERS = ("machine", "state", "address", "uptime", "memory (RSS / size)")


def render_plain(rows: Sequence[Row]) -> str:
    table = [list(HEADERS), *(row.cells() for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADERS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in table
    )


def status(lab_path: Path, *, as_json: bool) -> int:
    lab_dir = lab_dir_of(lab_path)
    rows = status_rows(lab_dir)
    if as_json:
        print(json.dumps([row.as_json() for row in rows], indent=2))
        return 0
    switches = network_lines(lab_dir)
    if not rows:
        print("no machine is up (vmlab up starts the lab's disk-image machines)")
        for line in switches:
            print(line)
        return 0
    if sys.stdout.isatty():
        from rich.console import Console  # noqa: PLC0415
        from rich.table import Table  # noqa: PLC0415

        table = Table(*HEADERS)
        color = {MachineStatus.RUNNING: "green", MachineStatus.DEAD: "red"}
        for row in rows:
            cells = row.cells()
            style = color.get(row.state, "yellow")
            table.add_row(cells[0], f"[{style}]{cells[1]}[/]", *cells[2:])
        Console().print(table)
    else:
        print(render_plain(rows))
    for line in switches:
        print(line)
    hints = [row.machine for row in rows if row.state is not MachineStatus.RUNNING]
    if hints:
        print(f"not running: {', '.join(hints)} (vmlab down NAME, or vmlab clean)")
    return 0


def network_lines(lab_dir: Path) -> list[str]:
    """A line per recorded network switch: running, for which machines, or gone."""
    lines = []
    for entry in list_switches(lab_dir):
        if entry.switch is None:
            lines.append(f"network {entry.network}: {entry.problem} (vmlab down, or vmlab clean)")
            continue
        ports = ", ".join(entry.switch.ports)
        lines.append(f"network {entry.network}: switch running (pid {entry.switch.pid}; {ports})")
    return lines


def host_of(record: MachineRecord) -> InventoryHost:
    return InventoryHost(record.name, record.ssh_port, record.ssh_user, record.key_path)


def inventory(lab_path: Path) -> int:
    lab_dir = lab_dir_of(lab_path)
    running = [
        host_of(row.record)
        for row in status_rows(lab_dir)
        if row.state is MachineStatus.RUNNING and row.record is not None
    ]
    sys.stdout.write(inventory_yaml(running))
    return 0


# -- down, clean ----------------------------------------------------------------


def remove_machine_files(lab_dir: Path, entry: Entry, *, keep_log: bool) -> list[str]:
    """Remove what a machine that is not running left: its runtime directory
    (overlay, sockets), record, lock and console log; say what went."""
    record = entry.record
    removed = []
    if record is not None and _is_runtime_dir(record.runtime_dir):
        shutil.rmtree(record.runtime_dir, ignore_errors=True)
        removed.append(f"runtime dir {record.runtime_dir} (overlay, sockets)")
    log = console_log_path(lab_dir, entry.name)
    if not keep_log and log.exists():
        log.unlink(missing_ok=True)
        removed.append("console log")
    path = record_path(lab_dir, entry.name)
    if path.exists():
        path.unlink()
        removed.append("state file")
    _remove_lock(path.with_suffix(".lock"))
    return removed


def _is_runtime_dir(path: Path) -> bool:
    """Only ever remove a vmlab runtime directory (never what a damaged record names)."""
    return path.is_dir() and path.name.startswith("vmlab-") and path.is_absolute()


def _remove_lock(path: Path) -> None:
    """Remove a lock file unless a `vmlab test` holds it right now."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        path.unlink(missing_ok=True)
    except OSError:
        pass
    finally:
        os.close(fd)


async def down(lab_path: Path, names: Sequence[str]) -> int:
    lab_dir = lab_dir_of(lab_path)
    entries = select_entries(lab_dir, names)
    if not entries:
        say("no machine is up")
    await asyncio.gather(*(_down_one(lab_dir, entry) for entry in entries))
    for line in await stop_unused(lab_dir, networks_in_use(lab_dir)):
        say(line)
    return 0


async def _down_one(lab_dir: Path, entry: Entry) -> None:
    record = entry.record
    if record is None:
        removed = remove_machine_files(lab_dir, entry, keep_log=False)
        say(f"{entry.name}: unreadable state ({entry.problem}); removed {', '.join(removed)}")
        return
    proc = AdoptedProcess.adopt(record.pid, record.argv)
    if proc is not None:
        await terminate(proc)
        removed = await asyncio.to_thread(remove_machine_files, lab_dir, entry, keep_log=False)
        say(f"{entry.name}: stopped; removed {', '.join(removed)}")
        return
    removed = await asyncio.to_thread(remove_machine_files, lab_dir, entry, keep_log=True)
    log = f"; its console log is kept: {record.console_log}" if record.console_log.exists() else ""
    what = ", ".join(removed) or "nothing"
    say(f"{entry.name}: was not running (QEMU gone); removed {what}{log}")


async def clean(lab_path: Path) -> int:
    lab_dir = lab_dir_of(lab_path)
    said = await asyncio.to_thread(_clean_machines, lab_dir)
    for line in await stop_unused(lab_dir, networks_in_use(lab_dir)):
        say(line)
        said = True
    if not said:
        say("nothing to clean")
    return 0


def _clean_machines(lab_dir: Path) -> bool:
    said = False
    recorded = set()
    for entry in list_records(lab_dir):
        recorded.add(entry.name)
        if status_of(entry) is MachineStatus.RUNNING:
            continue  # never touch a running machine
        removed = remove_machine_files(lab_dir, entry, keep_log=False)
        if removed:
            say(f"{entry.name}: removed {', '.join(removed)}")
            said = True
    directory = machines_dir(lab_dir)
    for log in sorted(directory.glob("*.console.log")):
        name = log.name.removesuffix(".console.log")
        if name not in recorded:
            log.unlink(missing_ok=True)
            say(f"{name}: removed console log")
            said = True
    for lock in sorted(directory.glob("*.lock")):
        if lock.stem not in recorded:
            _remove_lock(lock)
    return said


# -- ssh, console ----------------------------------------------------------------


def ssh_argv(record: MachineRecord) -> list[str]:
    """The system ssh client's command line for an interactive login."""
    return [
        "ssh", "-i", str(record.key_path), "-p", str(record.ssh_port),
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "LogLevel=ERROR", "-o", "IdentitiesOnly=yes",
        f"{record.ssh_user}@127.0.0.1",
    ]  # fmt: skip


def ssh_login(lab_path: Path, name: str) -> int:
    """Replace vmlab with the system ssh client, logged in to `name`."""
    record = running_record(lab_dir_of(lab_path), name)
    client = shutil.which("ssh")
    if client is None:
        raise HostError("no ssh client on this host (apt-get install openssh-client)")
    sys.stdout.flush()
    os.execv(client, ssh_argv(record))


GUEST_ENV = {
    **ROOT_ENV,
    "LANG": "C.UTF-8",
}


async def ssh_run(lab_path: Path, name: str, command: Sequence[str]) -> int:
    """Run `command` in `name` like `ssh HOST CMD...` (the words joined by spaces,
    run by /bin/sh); stream its output; return its exit status."""
    from vmlab.guest.channel import Command  # noqa: PLC0415
    from vmlab.guest.ssh import SshChannel  # noqa: PLC0415

    record = running_record(lab_dir_of(lab_path), name)
    channel = await SshChannel.connect(
        "127.0.0.1", record.ssh_port, user=record.ssh_user, key=record.key_path, timeout=30
    )
    stdin = None if sys.stdin is None or sys.stdin.isatty() else sys.stdin.buffer
    try:
        result = await channel.run(
            Command(shell=" ".join(command), env=GUEST_ENV, cwd="/root"),
            stdin=stdin,
            on_stdout=_writer(sys.stdout.buffer),
            on_stderr=_writer(sys.stderr.buffer),
            capture=False,
        )
    finally:
        await channel.close()
    return result.status


def _writer(stream: object) -> Callable[[bytes], None]:
    def write(data: bytes) -> None:
        stream.write(data)  # type: ignore[attr-defined]
        stream.flush()  # type: ignore[attr-defined]

    return write


def log_tail(path: Path, lines: int = CONSOLE_TAIL_LINES, *, max_bytes: int = 256 << 10) -> bytes:
    """The last `lines` lines of a log file (read from its end)."""
    try:
        with path.open("rb") as log:
            size = log.seek(0, os.SEEK_END)
            log.seek(max(0, size - max_bytes))
            data = log.read()
    except OSError:
        return b""
    kept = data.split(b"\n")[-lines - 1 :]
    return b"\n".join(kept)


async def console(lab_path: Path, name: str) -> int:
    """Attach the terminal to `name`'s serial console until Ctrl-]."""
    record = running_record(lab_dir_of(lab_path), name)
    out = sys.stdout.buffer
    out.write(log_tail(record.console_log))
    out.flush()
    try:
        reader, writer = await asyncio.open_unix_connection(str(record.console_socket))
    except OSError as exc:
        raise InfraError(f"{name}: cannot attach to the console: {exc.strerror}") from exc
    stdin_fd = sys.stdin.fileno() if sys.stdin is not None else -1
    tty = stdin_fd >= 0 and os.isatty(stdin_fd)
    print(
        f"\r\n[attached to {name}'s console: Ctrl-] detaches; the machine keeps running]\r",
        file=sys.stderr,
        flush=True,
    )
    saved = None
    if tty:
        import termios  # noqa: PLC0415
        import tty as tty_mode  # noqa: PLC0415

        saved = termios.tcgetattr(stdin_fd)
        tty_mode.setraw(stdin_fd)
    try:
        reason = await _pump_console(reader, writer, stdin_fd, out)
    finally:
        if saved is not None:
            import termios  # noqa: PLC0415

            termios.tcsetattr(stdin_fd, termios.TCSADRAIN, saved)
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    if reason == "closed":
        error_line(f"{name}: the console closed: QEMU exited (vmlab status)")
        return int(ExitCode.INFRA)
    print(f"\r\n[detached from {name}'s console]", file=sys.stderr, flush=True)
    return 0


async def _pump_console(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stdin_fd: int, out: object
) -> str:
    """Copy console -> stdout and stdin -> console until Ctrl-] ("detached"),
    the end of a non-terminal stdin ("detached", once the console is quiet)
    or the console closing ("closed")."""
    loop = asyncio.get_running_loop()
    keys: asyncio.Queue[bytes] = asyncio.Queue()
    last_output = [time.monotonic()]

    def on_stdin() -> None:
        try:
            data = os.read(stdin_fd, 4096)
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(stdin_fd)
        keys.put_nowait(data)

    watching = False
    if stdin_fd >= 0:
        try:
            loop.add_reader(stdin_fd, on_stdin)
            watching = True
        except (OSError, ValueError):  # a regular file: epoll refuses it
            keys.put_nowait(await asyncio.to_thread(_read_all, stdin_fd))
            keys.put_nowait(b"")
    else:
        keys.put_nowait(b"")

    async def console_out() -> str:
        while data := await reader.read(4096):
            last_output[0] = time.monotonic()
            out.write(data)  # type: ignore[attr-defined]
            out.flush()  # type: ignore[attr-defined]
        return "closed"

    async def keyboard() -> str:
        while True:
            data = await keys.get()
            if not data:  # end of input: let the answer arrive, then detach
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline and time.monotonic() - last_output[0] < 1:
                    await asyncio.sleep(0.1)
                return "detached"
            if DETACH_KEY in data:
                data = data.split(DETACH_KEY, 1)[0]
                if data:
                    writer.write(data)
                    await writer.drain()
                return "detached"
            writer.write(data)
            await writer.drain()

    tasks = [asyncio.create_task(console_out()), asyncio.create_task(keyboard())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        return next(iter(done)).result()
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        if watching:
            with contextlib.suppress(Exception):
                loop.remove_reader(stdin_fd)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)
