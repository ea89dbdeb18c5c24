"""A learning L2 switch for one private network, over unix datagram sockets.

Each port is one machine's NIC: QEMU binds the port's socket (`port_path(NAME)`)
and sends every frame its guest transmits to the switch's socket
(`socket_path`); the switch knows the port by the sender's address. The switch
learns source MACs and forwards each frame: unicast to the port that owns the
destination MAC, broadcast, multicast and unknown unicast to every other port
(flooding); never back out of the port it came in on. A disabled port (a pulled
cable: `set_port(NAME, False)`) neither sends nor receives; link faults (loss,
delay) will live here too.

Frames to a machine leave through a socket connected to its port, so the
kernel tells the switch when the machine's queue is full (unix datagram queues
are short: net.unix.max_dgram_qlen, 10 here) and the switch waits for room
instead of losing the frame; up to QUEUE_FRAMES wait per port, beyond that a
frame is dropped, as a real switch's buffer would. QEMU in turn waits while the
switch's own queue is full, so nothing is lost between a guest and the switch.

Two ways to run it, one data path:

- in vmlab's event loop (`vmlab test`): `async with Switch(["a", "b"]) as sw:`,
  then `sw.set_port("a", False)`, `sw.stats()`;
- as a detached process that outlives vmlab (`vmlab up`):
  `await SwitchProcess.spawn(["a", "b"], name="lan")` starts
  `python -m vmlab.net.switch --dir DIR --name lan --port a --port b --detach`;
  `SwitchProcess.attach(DIR)` finds it again from its state file, and
  `set_port()`, `stats()` and `stop()` talk to it over DIR/control.sock
  (one JSON object per line each way).

Everything lives in one private directory (mode 0700): `switch.sock`, the
ports' sockets `p0.sock`, `p1.sock`, ... (by index: socket paths are limited to
108 bytes), and for a process `control.sock`, `switch.json` (name, pid, paths)
and `switch.log` (its stderr). `owner.pid` names the process that owns the
directory, so that vmlab's sweep of stale runtime directories removes it once
that process is gone (SIGKILL runs no cleanup). A switch removes what it made
when it stops.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import tempfile
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

SWITCH_SOCKET = "switch.sock"
CONTROL_SOCKET = "control.sock"
STATE_FILE = "switch.json"
LOG_FILE = "switch.log"
OWNER_FILE = "owner.pid"  # as in vmlab.machine.qemu: the stale-directory sweep reads it
DIR_PREFIX = "vmlab-net-"
FRAME_MAX = 65536  # QEMU's dgram netdev sends at most this much per frame
ETH_HEADER = 14
# Frames that may wait for room at one port before drops. Enough for a whole
# TCP window of a default Linux receiver (tcp_rmem's 6 MiB, about half of it
# advertised: ~2200 full frames), so a single flow into a slow guest never
# loses a frame here; with 256, a 4 MiB transfer between two TCG guests lost
# ~50-70 now and then (TCP recovered). At most ~6 MB queued per port.
QUEUE_FRAMES = 4096
BATCH = 64  # frames read per wake-up, so that one busy sender cannot starve the loop
SPAWN_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


class SwitchError(Exception):
    """The switch could not start, or a detached one did not answer."""


@dataclass
class PortStats:
    """Counters of one port. rx: frames the machine sent into the switch; tx:
    frames the switch delivered to the machine; dropped: frames from or to it
    that were dropped (port disabled, machine not running, queue full)."""

    rx_frames: int = 0
    rx_bytes: int = 0
    tx_frames: int = 0
    tx_bytes: int = 0
    dropped: int = 0


class _Port:
    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        self.path = path
        self.enabled = True
        self.stats = PortStats()
        self.queue: deque[bytes] = deque()  # frames waiting for room at the machine
        self.sock: socket.socket | None = None  # connected to `path`


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def check_port_names(ports: Sequence[str]) -> None:
    if len(set(ports)) != len(ports):
        raise ValueError(f"duplicate port names in {list(ports)}")
    for port in ports:
        if not port or "\n" in port or "/" in port:
            raise ValueError(f"{port!r} is not a port name")


class Switch:
    """One network's switch in the running event loop. `directory=None` makes a
    private runtime directory (and removes it on stop); a given directory must
    exist and is only cleaned of the switch's own files."""

    def __init__(
        self, ports: Iterable[str], *, name: str = "net", directory: Path | None = None
    ) -> None:
        names = list(ports)
        check_port_names(names)
        self.name = name
        self._names = tuple(names)
        self._directory = directory
        self._own_directory = directory is None
        self._ports: dict[str, _Port] = {}
        self._by_path: dict[str, _Port] = {}
        self._table: dict[bytes, _Port] = {}  # learned: source MAC -> port
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.unknown_senders = 0  # frames from a socket that is no port

    # -- where things are -----------------------------------------------------

    @property
    def directory(self) -> Path:
        if self._directory is None:
            raise SwitchError(f"switch {self.name} is not running")
        return self._directory

    @property
    def socket_path(self) -> Path:
        """Where QEMU sends its frames (the netdev's `remote.path`)."""
        return self.directory / SWITCH_SOCKET

    def port_path(self, port: str) -> Path:
        """The socket QEMU binds for this port (the netdev's `local.path`)."""
        return self.directory / port_file(self._names.index(port))

    @property
    def ports(self) -> tuple[str, ...]:
        return self._names

    # -- lifecycle --------------------------------------------------------------

    async def __aenter__(self) -> Switch:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    async def start(self) -> None:
        if self._sock is not None:
            raise SwitchError(f"switch {self.name} is already running")
        self._loop = asyncio.get_running_loop()
        if self._directory is None:
            from vmlab.machine.qemu import runtime_base  # noqa: PLC0415  (not in the switch process)

            self._directory = Path(tempfile.mkdtemp(prefix=DIR_PREFIX, dir=runtime_base()))
            (self._directory / OWNER_FILE).write_text(f"{os.getpid()}\n")
        try:
            self._ports = {n: _Port(n, self.port_path(n)) for n in self._names}
            self._by_path = {str(port.path): port for port in self._ports.values()}
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock = sock
            sock.setblocking(False)
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()
            sock.bind(str(self.socket_path))
            self._loop.add_reader(sock.fileno(), self._on_readable)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stop forwarding and remove the switch's files (synchronous: safe in
        `finally` and on any path; twice is fine)."""
        loop = self._loop
        if self._sock is not None:
            if loop is not None and not loop.is_closed():
                loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        for port in self._ports.values():
            self._disconnect(port)
            port.queue.clear()
        if self._directory is not None:
            remove_switch_files(self._directory, len(self._names), rmdir=self._own_directory)
            if self._own_directory:
                self._directory = None

    async def stop(self) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return self._sock is not None

    # -- control ------------------------------------------------------------------

    def set_port(self, port: str, enabled: bool) -> None:
        """Plug (True) or pull (False) a machine's cable: a disabled port neither
        sends nor receives, and what the switch learned about it is forgotten."""
        target = self._port(port)
        target.enabled = enabled
        if not enabled:
            target.stats.dropped += len(target.queue)
            target.queue.clear()
            self._table = {mac: p for mac, p in self._table.items() if p is not target}

    def port_enabled(self, port: str) -> bool:
        return self._port(port).enabled

    def stats(self) -> dict[str, PortStats]:
        """A copy of every port's counters."""
        return {name: PortStats(**asdict(port.stats)) for name, port in self._ports.items()}

    def mac_table(self) -> dict[str, str]:
        """What the switch learned: {MAC: port name}."""
        return {_mac(mac): port.name for mac, port in self._table.items()}

    def _port(self, name: str) -> _Port:
        try:
            return self._ports[name]
        except KeyError:
            known = ", ".join(self._names)
            raise KeyError(f"switch {self.name} has no port {name!r} (ports: {known})") from None

    # -- the data path -----------------------------------------------------------

    def _on_readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        for _ in range(BATCH):
            try:
                frame, sender = sock.recvfrom(FRAME_MAX)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # nothing to do about it; the next wake-up tries again
            port = self._by_path.get(sender) if isinstance(sender, str) else None
            if port is None:
                self.unknown_senders += 1
                continue
            self._forward(port, frame)

    def _forward(self, source: _Port, frame: bytes) -> None:
        source.stats.rx_frames += 1
        source.stats.rx_bytes += len(frame)
        if not source.enabled or len(frame) < ETH_HEADER:
            source.stats.dropped += 1
            return
        destination, origin = frame[0:6], frame[6:12]
        if not origin[0] & 1:  # a unicast source MAC: learn where it lives
            self._table[origin] = source
        if not destination[0] & 1:
            known = self._table.get(destination)
            if known is source:
                return  # it is on the segment it came from: no hairpin
            if known is not None:
                self._deliver(known, frame)
                return
        for port in self._ports.values():  # broadcast, multicast, unknown: flood
            if port is not source:
                self._deliver(port, frame)

    def _deliver(self, port: _Port, frame: bytes) -> None:
        if not port.enabled:
            port.stats.dropped += 1
        elif port.queue:  # already waiting for room: keep the order
            if len(port.queue) >= QUEUE_FRAMES:
                port.stats.dropped += 1
            else:
                port.queue.append(frame)
        elif not self._send(port, frame):
            port.queue.append(frame)
            self._wait_for_room(port)

    def _send(self, port: _Port, frame: bytes) -> bool:
        """Send now; False if the machine's queue is full (the frame waits).
        A frame for a machine that is not running is dropped (True)."""
        for _attempt in (1, 2):  # a restarted QEMU binds anew: reconnect once
            sock = port.sock or self._connect(port)
            if sock is None:
                break
            try:
                sock.send(frame)
            except (BlockingIOError, InterruptedError):
                return False
            except OSError:  # ECONNREFUSED: that QEMU is gone
                self._disconnect(port)
                continue
            port.stats.tx_frames += 1
            port.stats.tx_bytes += len(frame)
            return True
        port.stats.dropped += 1
        return True

    def _connect(self, port: _Port) -> socket.socket | None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        sock.setblocking(False)
        try:
            sock.connect(str(port.path))
        except OSError:  # not bound (yet): the machine is not running
            sock.close()
            return None
        port.sock = sock
        return sock

    def _disconnect(self, port: _Port) -> None:
        if port.sock is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_writer(port.sock.fileno())
            port.sock.close()
            port.sock = None

    def _wait_for_room(self, port: _Port) -> None:
        assert self._loop is not None and port.sock is not None
        self._loop.add_writer(port.sock.fileno(), self._on_room, port)

    def _on_room(self, port: _Port) -> None:
        assert self._loop is not None
        if port.sock is not None:
            self._loop.remove_writer(port.sock.fileno())
        while port.queue:
            if not self._send(port, port.queue[0]):
                self._wait_for_room(port)
                return
            port.queue.popleft()


def port_file(index: int) -> str:
    return f"p{index}.sock"


def remove_switch_files(directory: Path, ports: int, *, rmdir: bool) -> None:
    """Remove what a switch (and its ports' QEMUs) made in `directory`, and the
    directory itself when `rmdir` and nothing else is left in it."""
    names = [SWITCH_SOCKET, CONTROL_SOCKET, STATE_FILE, LOG_FILE, OWNER_FILE]
    names += [port_file(i) for i in range(ports)]
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            (directory / name).unlink()
    if rmdir:
        with contextlib.suppress(OSError):
            directory.rmdir()


# -- a switch in its own process ---------------------------------------------------


class SwitchProcess:
    """A switch in a detached process of its own (for machines that outlive
    vmlab), controlled over its control socket. `spawn()` starts one,
    `attach(DIR)` finds a running one from its state file."""

    def __init__(self, directory: Path, state: dict[str, Any]) -> None:
        self.directory = directory
        self.name: str = state["name"]
        self.pid: int = state["pid"]
        self.socket_path = Path(state["socket"])
        self.control_path = Path(state["control"])
        self._ports: dict[str, Path] = {k: Path(v) for k, v in state["ports"].items()}

    @property
    def ports(self) -> tuple[str, ...]:
        return tuple(self._ports)

    def port_path(self, port: str) -> Path:
        return self._ports[port]

    @classmethod
    def attach(cls, directory: Path) -> SwitchProcess:
        try:
            state = json.loads((directory / STATE_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise SwitchError(f"no switch state in {directory}: {exc}") from None
        return cls(directory, state)

    @classmethod
    async def spawn(
        cls,
        ports: Sequence[str],
        *,
        name: str = "net",
        directory: Path | None = None,
        exit_with: int | None = None,
        timeout: float = SPAWN_TIMEOUT,
    ) -> SwitchProcess:
        """Start `python -m vmlab.net.switch` detached (its own session, not a
        child of this process) and return once it forwards frames. Without
        `directory`, a private runtime directory is made (and the switch
        removes it when it stops). `exit_with=PID`: the switch also stops when
        that process is gone."""
        check_port_names(list(ports))
        if directory is None:
            from vmlab.machine.qemu import runtime_base  # noqa: PLC0415

            directory = Path(tempfile.mkdtemp(prefix=DIR_PREFIX, dir=runtime_base()))
        elif not directory.is_dir():
            raise SwitchError(f"switch {name} did not start: no such directory {directory}")
        argv = [sys.executable, "-m", "vmlab.net.switch", "--dir", str(directory)]
        argv += ["--name", name, "--detach"]
        for port in ports:
            argv += ["--port", port]
        if exit_with is not None:
            argv += ["--exit-with", str(exit_with)]
        with (directory / LOG_FILE).open("ab") as log:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                start_new_session=True,
            )
        assert proc.stdout is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), timeout)
        except TimeoutError:
            line = b""
        finally:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), timeout)  # the first fork exits at once
            with contextlib.suppress(TimeoutError):  # EOF once the switch lets go of it
                await asyncio.wait_for(proc.stdout.read(), timeout)
        if not line.startswith(b"ready "):
            reason = line.decode(errors="replace").strip().removeprefix("error ")
            if not reason:
                with contextlib.suppress(OSError):
                    reason = (directory / LOG_FILE).read_text(errors="replace").strip()
                reason = reason.splitlines()[-1] if reason else f"no answer within {timeout:g} s"
            pid = _state_pid(directory)
            if pid is not None:
                _kill_switch(pid)
            remove_switch_files(directory, len(ports), rmdir=True)
            raise SwitchError(f"switch {name} did not start: {reason}")
        return cls.attach(directory)

    async def request(self, op: str, **arguments: Any) -> dict[str, Any]:
        """One request over the control socket; raises SwitchError when the
        switch does not answer or refuses."""
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(str(self.control_path)), STOP_TIMEOUT
            )
        except (OSError, TimeoutError) as exc:
            who = f"switch {self.name} (pid {self.pid})"
            raise SwitchError(f"{who} does not answer: {exc}") from None
        try:
            writer.write(json.dumps({"op": op, **arguments}).encode() + b"\n")
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), STOP_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            raise SwitchError(f"switch {self.name}: {op} got no answer: {exc}") from None
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        try:
            answer: dict[str, Any] = json.loads(line)
        except ValueError:
            raise SwitchError(f"switch {self.name}: {op} got no answer") from None
        if not answer.get("ok"):
            raise SwitchError(f"switch {self.name}: {answer.get('error', 'refused')}")
        return answer

    async def set_port(self, port: str, enabled: bool) -> None:
        await self.request("set_port", port=port, enabled=enabled)

    async def stats(self) -> dict[str, PortStats]:
        answer = await self.request("stats")
        return {name: PortStats(**counters) for name, counters in answer["ports"].items()}

    def alive(self) -> bool:
        return _alive(self.pid)

    async def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Ask the switch to stop; SIGTERM, then SIGKILL, if it does not go.
        Its files are removed either way."""
        with contextlib.suppress(SwitchError):
            if self.alive():
                await self.request("stop")
        for sig in (signal.SIGTERM, signal.SIGKILL):
            deadline = asyncio.get_running_loop().time() + timeout
            while self.alive() and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.02)
            if not self.alive():
                break
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)
        remove_switch_files(self.directory, len(self._ports), rmdir=True)


def _alive(pid: int) -> bool:
    """True while `pid` is a running switch (not a zombie, not a reused pid)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z" and b"vmlab.net.switch" in cmdline


def _state_pid(directory: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError, KeyError):
        return int(json.loads((directory / STATE_FILE).read_text())["pid"])
    return None


def _kill_switch(pid: int) -> None:
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# -- the process's own side ---------------------------------------------------------


def _write_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    temporary.replace(path)


async def serve(
    directory: Path, name: str, ports: Sequence[str], exit_with: int | None = None
) -> None:
    """Run a switch in `directory` until SIGTERM/SIGINT, a `stop` request, or
    the end of process `exit_with`. Prints `ready PID` once it forwards frames."""
    (directory / OWNER_FILE).write_text(f"{os.getpid()}\n")
    stopping = asyncio.Event()
    switch = Switch(ports, name=name, directory=directory)
    server: asyncio.Server | None = None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, stopping.set)

    async def on_control(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                answer = _control(switch, line, stopping)
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def watch_owner(pid: int) -> None:
        while _process_exists(pid):
            await asyncio.sleep(0.5)
        stopping.set()

    watcher = asyncio.create_task(watch_owner(exit_with)) if exit_with else None
    try:
        await switch.start()
        control = directory / CONTROL_SOCKET
        with contextlib.suppress(FileNotFoundError):
            control.unlink()
        server = await asyncio.start_unix_server(on_control, path=str(control))
        state = {
            "name": name,
            "pid": os.getpid(),
            "socket": str(switch.socket_path),
            "control": str(control),
            "ports": {port: str(switch.port_path(port)) for port in ports},
        }
        _write_atomic(directory / STATE_FILE, json.dumps(state, indent=1) + "\n")
        sys.stdout.write(f"ready {os.getpid()}\n")
        sys.stdout.flush()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)  # the spawner stops reading: never block on or die of it
        os.close(devnull)
        await stopping.wait()
    finally:
        if watcher is not None:
            watcher.cancel()
        if server is not None:
            server.close()
        switch.close()
        remove_switch_files(directory, len(ports), rmdir=True)


def _control(switch: Switch, line: bytes, stopping: asyncio.Event) -> dict[str, Any]:
    try:
        request = json.loads(line)
        op = request["op"]
        if op == "set_port":
            switch.set_port(str(request["port"]), bool(request["enabled"]))
            return {"ok": True}
        if op == "stats":
            stats = {name: asdict(s) for name, s in switch.stats().items()}
            return {"ok": True, "ports": stats, "macs": switch.mac_table()}
        if op == "stop":
            stopping.set()
            return {"ok": True}
        return {"ok": False, "error": f"unknown op {op!r}"}
    except (ValueError, KeyError, TypeError) as exc:
        return {"ok": False, "error": str(exc).strip("'\"")}


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _alive_any(pid)


def _alive_any(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vmlab.net.switch",
        description="A learning L2 switch for one vmlab network, over unix datagram sockets.",
    )
    parser.add_argument("--dir", type=Path, required=True, help="its directory (must exist)")
    parser.add_argument("--name", default="net", help="the network's name")
    parser.add_argument("--port", action="append", default=[], help="a port (machine) name; repeat")
    parser.add_argument("--exit-with", type=int, help="also stop when this process is gone")
    parser.add_argument(
        "--detach", action="store_true", help="fork into a new session; the first process exits"
    )
    args = parser.parse_args(argv)
    try:
        check_port_names(args.port)
    except ValueError as exc:
        parser.error(str(exc))
    if not args.port:
        parser.error("at least one --port")
    if not args.dir.is_dir():
        parser.error(f"no such directory: {args.dir}")
    if args.detach:
        if os.fork() != 0:
            os._exit(0)  # the spawner reads `ready` from the grandchild
        os.setsid()
    try:
        asyncio.run(serve(args.dir, args.name, args.port, args.exit_with))
    except Exception as exc:
        # On stdout for the spawner, which is still reading it before `ready`.
        with contextlib.suppress(OSError):
            print(f"error {exc}", flush=True)
        print(f"vmlab switch {args.name}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
