"""The virtio-serial channel: commands over dedicated ports, never the console.

The guest side is vmlab/guest/agent.sh; its header documents the protocol.
Each command's stdout and stderr end with a random nonce the agent writes
after the command exits, so the host knows it has every byte of both streams
before it reports the exit status.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import os
import secrets
import shlex
import struct
import termios
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from vmlab.errors import CommandNotFound, GuestError, InfraError
from vmlab.guest.channel import EXEC_PATH, Command, CommandResult, OutputSink, Stdin

AGENT_DIR = "/run/vmlab"
SETPRIV = "/usr/bin/setpriv"
# Sets $found to where PATH ($2) finds command $1, as execvp would.
_FIND_IN_PATH = (
    'case $1 in */*) found=$1; [ -f "$1" ] && [ -x "$1" ]; return;; esac; '
    "local IFS=:; for d in $2; do found=${d:-.}/$1; "
    '[ -f "$found" ] && [ -x "$found" ] && return 0; done; return 1;'
)
T = TypeVar("T")


def job_script(command: Command) -> str:
    """The busybox-sh script the agent runs for `command`.

    Shell builtins only until the final exec: under TCG every exec of a
    dynamically linked program costs tens of milliseconds, so the script
    clears the agent's environment itself rather than through env(1).
    """
    q = shlex.quote
    cwd = command.cwd or "/"
    lines = [
        f"cd {q(cwd)} 2>/dev/null || {{ echo nocwd >{AGENT_DIR}/why; exit 126; }}",
        # Unexport everything the agent had: `export -p` to a file, not through
        # $(...), which would fork. A value's continuation lines unset nothing
        # that matters: the command's own variables are set after.
        f"export -p >{AGENT_DIR}/job.env",
        # (A bad name would end the shell: unset is a special builtin.)
        'while read -r word name; do [ "$word" = export ] || continue; name=${name%%=*}; '
        'case $name in ""|[0-9]*|*[!A-Za-z0-9_]*) ;; *) unset "$name" ;; esac; '
        f"done <{AGENT_DIR}/job.env",
    ]
    if command.env:
        lines.append("export " + " ".join(q(f"{k}={v}") for k, v in sorted(command.env.items())))
    setpriv: list[str] = []
    if command.user is not None and command.user.uid != 0:
        user = command.user
        groups = f"--groups={','.join(map(str, user.groups))}" if user.groups else "--clear-groups"
        setpriv = [SETPRIV, f"--reuid={user.uid}", f"--regid={user.gid}", groups, "--"]
    if command.shell is not None:
        lines.append("exec " + " ".join([*setpriv, "/bin/sh", "-c", q(command.shell)]))
        return "\n".join(lines) + "\n"
    # Found by a PATH walk, not `command -v`: busybox's shell would name its
    # own applets (ls, cat, ...) where the host's programs are meant.
    path = command.env.get("PATH", EXEC_PATH)
    argv0, args = command.argv[0], " ".join(map(q, command.argv[1:]))
    lines.append(f"vmlab_find() {{ {_FIND_IN_PATH} }}")
    lines.append(
        f"vmlab_find {q(argv0)} {q(path)} || {{ echo notfound >{AGENT_DIR}/why; exit 127; }}"
    )
    if setpriv:  # setpriv looks argv[0] up in PATH itself, as env(1) would
        lines.append("exec " + " ".join([*setpriv, q(argv0), args]).rstrip())
    else:
        lines.append(f'exec -a {q(argv0)} "$found" {args}'.rstrip())
    return "\n".join(lines) + "\n"


class _Demux:
    """One output port: routes bytes to the running command until its nonce."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._buf = b""
        self._nonce = b""
        self._sink: OutputSink | None = None
        self._done: asyncio.Future[None] | None = None

    def begin(self, nonce: bytes, sink: OutputSink) -> asyncio.Future[None]:
        self._nonce, self._sink = nonce, sink
        self._done = _future(asyncio.get_running_loop())
        self._flush()
        return self._done

    def feed(self, data: bytes) -> None:
        self._buf += data
        self._flush()

    def _flush(self) -> None:
        if self._sink is None or self._done is None:
            # Between commands only a finished command's background processes
            # write here; that output belongs to no command: drop it.
            self._buf = b""
            return
        index = self._buf.find(self._nonce)
        if index >= 0:
            if index:
                self._sink(self._buf[:index])
            self._buf = b""  # whatever follows the nonce is late output too
            self._sink = None
            if not self._done.done():
                self._done.set_result(None)
            return
        hold = 0  # keep back a tail that may be the start of the nonce
        for k in range(min(len(self._nonce) - 1, len(self._buf)), 0, -1):
            if self._buf.endswith(self._nonce[:k]):
                hold = k
                break
        emit = self._buf[: len(self._buf) - hold]
        if emit:
            self._sink(emit)
        self._buf = self._buf[len(self._buf) - hold :]

    def fail(self, exc: BaseException) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_exception(exc)


Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def _future(loop: asyncio.AbstractEventLoop) -> asyncio.Future[T]:
    """A future whose failure nobody needs to retrieve: when the VM dies, its
    waiters learn that from the machine, not from each pending future."""
    future: asyncio.Future[T] = loop.create_future()
    future.add_done_callback(lambda f: f.cancelled() or f.exception())
    return future


class VirtioSerialChannel:
    """A `Channel` over the agent's virtio-serial ports."""

    def __init__(
        self, ctl: Stream, sys: Stream, out: Stream, err: Stream, stdin_socket: Path
    ) -> None:
        self._ctl_r, self._ctl_w = ctl
        self._sys_r, self._sys_w = sys
        self._streams = (out, err)
        self._stdin_socket = stdin_socket
        self._out, self._err = _Demux("stdout"), _Demux("stderr")
        self._ready: asyncio.Future[None] = _future(asyncio.get_running_loop())
        self._pending: dict[str, asyncio.Future[tuple[int, str]]] = {}
        self._sys_waiters: dict[str, asyncio.Future[None]] = {}
        self._started: dict[str, asyncio.Event] = {}
        self._lock = asyncio.Lock()
        self._closed = False
        self._current_nonce: str | None = None
        self._tasks = [
            asyncio.create_task(self._read_ctl(), name="vmlab-ctl"),
            asyncio.create_task(self._read_sys(), name="vmlab-sys"),
            asyncio.create_task(self._pump(out[0], self._out), name="vmlab-out"),
            asyncio.create_task(self._pump(err[0], self._err), name="vmlab-err"),
        ]

    # -- readers -------------------------------------------------------------

    async def _read_ctl(self) -> None:
        while line := await self._ctl_r.readline():
            words = line.decode(errors="replace").split()
            if words == ["ready"] and not self._ready.done():
                self._ready.set_result(None)
            elif len(words) == 2 and words[0] == "started":
                started = self._started.get(words[1])
                if started is not None:
                    started.set()
            elif len(words) >= 3 and words[0] == "done":
                waiter = self._pending.pop(words[1], None)
                if waiter is not None and not waiter.done():
                    why = words[3] if len(words) > 3 else ""
                    waiter.set_result((int(words[2]), why))
        self._lost(InfraError("the guest agent hung up (the VM stopped or crashed)"))

    async def _read_sys(self) -> None:
        while line := await self._sys_r.readline():
            words = line.decode(errors="replace").strip().split(maxsplit=1)
            if len(words) == 2:
                waiter = self._sys_waiters.pop(f"{words[0]} {words[1]}", None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)

    async def _pump(self, reader: asyncio.StreamReader, demux: _Demux) -> None:
        while data := await reader.read(1 << 16):
            demux.feed(data)

    def _lost(self, exc: InfraError) -> None:
        futures: list[asyncio.Future[Any]] = [
            self._ready,
            *self._pending.values(),
            *self._sys_waiters.values(),
        ]
        for future in futures:
            if not future.done():
                future.set_exception(exc)
        self._pending.clear()
        self._sys_waiters.clear()
        self._out.fail(exc)
        self._err.fail(exc)

    # -- boot ----------------------------------------------------------------

    async def boot(self, script: str) -> None:
        """Hand init its boot script, then wait until the agent says ready."""
        payload = base64.b64encode(script.encode()).decode()
        await _send(self._ctl_w, f"boot {payload}\n".encode())
        await self._ready

    # -- commands ------------------------------------------------------------

    async def run(
        self,
        command: Command,
        *,
        stdin: Stdin = None,
        on_stdout: OutputSink | None = None,
        on_stderr: OutputSink | None = None,
        capture: bool = True,
    ) -> CommandResult:
        async with self._lock:
            return await self._run(command, stdin, on_stdout, on_stderr, capture)

    async def _run(
        self,
        command: Command,
        stdin: Stdin,
        on_stdout: OutputSink | None,
        on_stderr: OutputSink | None,
        capture: bool,
    ) -> CommandResult:
        if self._closed:
            raise InfraError("the guest channel is closed")
        nonce = f"\x1e{secrets.token_hex(10)}\x1e"
        chunks: tuple[list[bytes], list[bytes]] = ([], [])

        def sink(index: int, user: OutputSink | None) -> OutputSink:
            def take(data: bytes) -> None:
                if capture:
                    chunks[index].append(data)
                if user is not None:
                    user(data)

            return take

        loop = asyncio.get_running_loop()
        status_future: asyncio.Future[tuple[int, str]] = _future(loop)
        key = nonce.strip("\x1e")
        self._pending[key] = status_future
        out_done = self._out.begin(nonce.encode(), sink(0, on_stdout))
        err_done = self._err.begin(nonce.encode(), sink(1, on_stderr))
        feeder: asyncio.Task[None] | None = None
        started = time.monotonic()
        try:
            if stdin is not None:
                self._started[key] = asyncio.Event()
                feeder = await self._start_stdin(stdin, self._started[key])
            job = base64.b64encode(job_script(command).encode()).decode()
            self._current_nonce = key
            await _send(self._ctl_w, f"run {nonce} {int(stdin is not None)} {job}\n".encode())
            status, why = await status_future
            await asyncio.wait_for(asyncio.gather(out_done, err_done), timeout=30)
        except TimeoutError:
            raise InfraError("the guest's output streams did not close after the command") from None
        finally:
            self._current_nonce = None
            self._pending.pop(key, None)
            self._started.pop(key, None)
            if feeder is not None:
                feeder.cancel()
                with contextlib.suppress(BaseException):
                    await feeder
        duration = time.monotonic() - started
        if why == "notfound":
            raise CommandNotFound(
                f"command {command.argv[0]!r} not found in the guest "
                "(the guest sees the host's root: install it there, or --share its directory)"
            )
        if why == "nocwd":
            raise GuestError(f"working directory {command.cwd} does not exist in the guest")
        return CommandResult(status, b"".join(chunks[0]), b"".join(chunks[1]), duration)

    async def _start_stdin(
        self, stdin: bytes | BinaryIO, started: asyncio.Event
    ) -> asyncio.Task[None]:
        """Connect the stdin port and feed it; hanging up is the guest's EOF."""
        reader, writer = await asyncio.open_unix_connection(str(self._stdin_socket))
        del reader
        if isinstance(stdin, bytes):
            source: Callable[[], Awaitable[bytes]] = _once(stdin)
        else:
            source = _threaded_reader(stdin)

        async def feed() -> None:
            try:
                while chunk := await source():
                    writer.write(chunk)
                    await writer.drain()
                # Hanging up before the guest opened the port, or while QEMU
                # still holds unread bytes (SIOCOUTQ > 0), would lose them.
                await started.wait()
                while _unread_bytes(writer) > 0:
                    await asyncio.sleep(0.005)
            except BaseException:
                # The command ended without reading it all: QEMU will never
                # take the rest, so do not wait for it.
                writer.transport.abort()
                raise
            writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await writer.wait_closed()

        return asyncio.create_task(feed(), name="vmlab-stdin")

    async def interrupt(self) -> None:
        key = self._current_nonce
        if key is not None:
            await self._sys_request("kill", key, "killed", timeout=5)

    async def sysrq(self, letters: str, *, timeout: float = 5) -> None:
        """Trigger magic SysRq `letters` (e.g. "wt") through the agent."""
        await self._sys_request("sysrq", letters, "sysrq-ok", timeout=timeout)

    async def ping(self, *, timeout: float) -> None:
        await self._sys_request("ping", secrets.token_hex(4), "pong", timeout=timeout)

    async def _sys_request(self, verb: str, arg: str, answer: str, *, timeout: float) -> None:
        waiter: asyncio.Future[None] = _future(asyncio.get_running_loop())
        self._sys_waiters[f"{answer} {arg}"] = waiter
        await _send(self._sys_w, f"{verb} {arg}\n".encode())
        try:
            await asyncio.wait_for(waiter, timeout)
        finally:
            self._sys_waiters.pop(f"{answer} {arg}", None)

    async def poweroff(self) -> None:
        await _send(self._ctl_w, b"poweroff\n")

    async def close(self) -> None:
        self._closed = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        for _, writer in ((self._ctl_r, self._ctl_w), (self._sys_r, self._sys_w), *self._streams):
            writer.close()


async def _send(writer: asyncio.StreamWriter, data: bytes) -> None:
    """Write a request to the agent; a reset socket means the VM went away."""
    try:
        writer.write(data)
        await writer.drain()
    except (ConnectionError, OSError) as exc:
        raise InfraError(f"the guest agent hung up (the VM stopped or crashed): {exc}") from None


def _unread_bytes(writer: asyncio.StreamWriter) -> int:
    """Bytes sent on a unix socket that the peer has not read yet."""
    sock = writer.get_extra_info("socket")
    buf = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")  # SIOCOUTQ
    return int(struct.unpack("i", buf)[0])


def _once(data: bytes) -> Callable[[], Awaitable[bytes]]:
    chunks = [data[i : i + (1 << 16)] for i in range(0, len(data), 1 << 16)]

    async def next_chunk() -> bytes:
        return chunks.pop(0) if chunks else b""

    return next_chunk


def _threaded_reader(stream: BinaryIO) -> Callable[[], Awaitable[bytes]]:
    """Read a blocking file (a pipe, a tty, a file) in a daemon thread, so an
    idle writer on the other end can never keep vmlab from exiting."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=4)

    fd = stream.fileno()

    def pump() -> None:
        # os.read, not the buffered reader: a thread blocked inside
        # BufferedReader holds its lock, which aborts interpreter shutdown.
        while True:
            try:
                chunk = os.read(fd, 1 << 16)
            except OSError:
                chunk = b""
            future = asyncio.run_coroutine_threadsafe(queue.put(chunk), loop)
            try:
                future.result()
            except BaseException:  # the loop is gone or the command ended
                return
            if not chunk:
                return

    threading.Thread(target=pump, name="vmlab-stdin", daemon=True).start()
    return queue.get
