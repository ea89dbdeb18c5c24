"""Drive a VM that lives in one process from another: JSON lines over a unix socket.

vmlab's session owns its machines in its event loop; a pytest process that it
starts for a `pytest = "tests/test_x.py"` lab test reaches the suite's machine
through this RPC. `VmRpcServer` serves a machine in the loop that owns it;
`VmClient` is the synchronous side (stdlib sockets only) that the pytest
plugin's `vm` fixture hands to tests.

The protocol: one request, then one reply, each a JSON object on one line
(bytes travel base64-encoded, so a line never holds a raw newline).

    {"op": "run", "argv": [...] | "shell": "...", "env": {...}, "cwd": "...",
     "stdin": B64 | null, "timeout": 5.0}
        -> {"result": {"status": 0, "stdout": B64, "stderr": B64, "duration": 0.01}}
    {"op": "copy_to", "src": HOST_PATH, "dst": GUEST_PATH}
        -> {"result": {"path": GUEST_PATH, "files": 3, "bytes": 4096}}
    {"op": "copy_from", "src": GUEST_PATH, "dst": HOST_PATH}
        -> {"result": {"path": HOST_PATH, "files": 3, "bytes": 4096}}
    {"op": "console", "lines": 20}  -> {"result": {"path": ..., "lines": [...]}}
    {"op": "reboot"}  -> {"result": {"boot_s": 2.5}}
    {"op": "hello"}  -> {"result": {"protocol": 1}}
    any failure  -> {"error": "CommandTimeout", "message": "...", "details": "..."}

`error` names the nearest class of `vmlab.errors`, and the client raises that
class again with the message. Host paths are absolute (the client resolves
them in its own working directory), relative guest paths start at the
server's `cwd`. Copies (files, or directories recursively) are
`QemuMachine.copy_to`/`copy_from`: the server reads and writes host files
itself, so file contents never cross the socket.

A client that hangs up while its command runs (a pytest process killed on
timeout, say) gets the command interrupted in the guest. A machine that died
(a kernel crash) is replaced through `reboot_vm` before the next request; the
crash itself is kept in `VmRpcServer.crashes` for the session to report.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import posixpath
import shlex
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from vmlab.errors import (
    BootError,
    CommandNotFound,
    CommandTimeout,
    ConfigError,
    GuestCrashed,
    GuestError,
    GuestPathError,
    HostError,
    InfraError,
    UsageError,
    VmlabError,
)
from vmlab.guest.channel import ROOT_ENV, Command, CommandResult
from vmlab.guest.copying import host_absolute, host_source

if TYPE_CHECKING:
    from vmlab.machine.qemu import QemuMachine

PROTOCOL = 1
MAX_REQUEST = 512 << 20  # bytes in one request line (stdin travels in it)
BASE_ENV: Mapping[str, str] = ROOT_ENV
INTERRUPT_GRACE = 5.0  # seconds a command gets to end after its client hung up

JsonObject = dict[str, Any]
MachineSource = Callable[[], Awaitable["QemuMachine"]]


class CommandFailed(GuestError):
    """`VmClient.run(..., check=True)`: the command exited non-zero; `result` has it."""

    def __init__(self, message: str, *, result: CommandResult, details: str = "") -> None:
        super().__init__(message, details=details)
        self.result = result


# Every class a reply may name; anything else travels as its nearest base here.
_ERRORS: dict[str, type[VmlabError]] = {
    cls.__name__: cls
    for cls in (
        VmlabError,
        UsageError,
        ConfigError,
        HostError,
        InfraError,
        BootError,
        GuestError,
        GuestPathError,
        CommandNotFound,
        CommandTimeout,
        GuestCrashed,
        CommandFailed,
    )
}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise UsageError(f"vmlab rpc: {what} must be base64 text")
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise UsageError(f"vmlab rpc: {what} is not valid base64") from None


def encode_message(message: JsonObject) -> bytes:
    """One protocol line: compact JSON (ASCII, so no raw newline) plus a newline."""
    return json.dumps(message, separators=(",", ":")).encode("ascii") + b"\n"


def error_reply(exc: VmlabError) -> JsonObject:
    """The reply for a failure: the nearest class the client knows, message, details."""
    kind = next(cls.__name__ for cls in type(exc).__mro__ if _ERRORS.get(cls.__name__) is cls)
    reply: JsonObject = {"error": kind, "message": exc.message, "details": exc.details}
    if isinstance(exc, GuestCrashed):
        reply["title"] = exc.title
    return reply


def error_from_reply(reply: Mapping[str, Any]) -> VmlabError:
    """The exception a failure reply describes (the inverse of `error_reply`)."""
    cls = _ERRORS.get(str(reply.get("error")), VmlabError)
    message = str(reply.get("message", "")) or "the vmlab VM server reported an error"
    details = str(reply.get("details", ""))
    if cls is GuestCrashed:
        return GuestCrashed(message, title=str(reply.get("title", "")), details=details)
    if cls is CommandFailed:  # only raised client-side; never sent, but be total
        return GuestError(message, details=details)
    return cls(message, details=details)


# -- server --------------------------------------------------------------------


class _Disconnected(Exception):
    """The client hung up (or broke the protocol) while its request ran."""


class _Lines:
    """Reads newline-terminated requests; can also watch for the client's EOF
    while a request runs without losing bytes a client sends early."""

    def __init__(self, reader: asyncio.StreamReader, limit: int) -> None:
        self._reader = reader
        self._limit = limit
        self._buffer = bytearray()
        self._scanned = 0  # no newline in _buffer[:_scanned]
        self.eof = False

    async def fill(self) -> bool:
        """Read more; False at EOF. Raises _Disconnected on an overlong line."""
        if self.eof:
            return False
        data = await self._reader.read(1 << 16)
        if not data:
            self.eof = True
            return False
        self._buffer += data
        if len(self._buffer) > self._limit and b"\n" not in self._buffer:
            raise _Disconnected(f"a request longer than {self._limit} bytes")
        return True

    async def next_line(self) -> bytes | None:
        """The next request line, or None when the client hung up."""
        while True:
            index = self._buffer.find(b"\n", self._scanned)
            if index >= 0:
                line = bytes(self._buffer[:index])
                del self._buffer[: index + 1]
                self._scanned = 0
                return line
            self._scanned = len(self._buffer)
            if not await self.fill():
                return None


class VmRpcServer:
    """Serves one machine slot over a unix socket, in the loop that owns it.

    `get_vm()` returns the machine to use now; `reboot_vm()` replaces it with
    a freshly booted (and set up) one and returns that. Both are the owner's:
    the server never starts or stops a machine itself. `env` and `cwd` are the
    defaults for commands (on top of a root login's PATH/HOME and the
    machine's own env). Requests from all connections run one at a time.

        async with VmRpcServer(path, get_vm=..., reboot_vm=...) as server:
            ...  # clients connect to `path`
    """

    def __init__(
        self,
        path: Path,
        get_vm: MachineSource,
        reboot_vm: MachineSource,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> None:
        self.path = path
        self._get_vm = get_vm
        self._reboot_vm = reboot_vm
        self._env = dict(env or {})
        self._cwd = cwd
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self._lock = asyncio.Lock()
        self._running: asyncio.Task[Any] | None = None  # the request holding the lock
        self._running_vm: QemuMachine | None = None  # the machine it uses
        self.crashes: list[GuestCrashed] = []  # guest crashes seen while serving

    async def __aenter__(self) -> VmRpcServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        if len(os.fsencode(self.path)) >= 108:
            raise UsageError(f"socket path too long for a unix socket: {self.path}")
        try:
            self._server = await asyncio.start_unix_server(self._accept, path=os.fspath(self.path))
            os.chmod(self.path, 0o600)  # it runs commands and copies host files
        except OSError as exc:
            await self.close()
            raise InfraError(f"cannot listen on {self.path}: {exc.strerror or exc}") from exc

    async def close(self) -> None:
        """Stop listening, drop every client (interrupting their commands), remove
        the socket. Safe to call twice."""
        server, self._server = self._server, None
        try:
            if server is not None:
                server.close()
            for task in list(self._handlers):
                task.cancel()
            if self._handlers:
                await asyncio.wait(list(self._handlers))
            if server is not None:
                await server.wait_closed()
        finally:
            if server is not None:  # only the socket this server made
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()

    # -- connections ---------------------------------------------------------

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A task of our own (not asyncio's client task, whose done-callback
        # chokes on a cancelled task in 3.11): close() may cancel it.
        task = asyncio.get_running_loop().create_task(
            self._serve(reader, writer), name="vmlab-rpc-client"
        )
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        lines = _Lines(reader, MAX_REQUEST)
        try:
            while (line := await lines.next_line()) is not None:
                reply = await self._answer(line, lines)
                writer.write(encode_message(reply))
                await writer.drain()
        except (_Disconnected, ConnectionError):
            pass
        finally:
            writer.close()

    async def _answer(self, line: bytes, lines: _Lines) -> JsonObject:
        op = "?"
        try:
            request = _parse_request(line)
            op = str(request.get("op"))
            handler = self._handler(op)
            work = asyncio.ensure_future(self._locked(handler, request))
            return {"result": await self._unless_hung_up(work, lines)}
        except VmlabError as exc:
            return error_reply(exc)
        except _Disconnected:
            raise
        except Exception as exc:
            # a bug here must not take the server down: tell the client
            error = InfraError(f"vmlab rpc: {op} failed: {type(exc).__name__}: {exc}")
            return error_reply(error)

    def _handler(self, op: str) -> Callable[[JsonObject], Awaitable[JsonObject]]:
        handlers: dict[str, Callable[[JsonObject], Awaitable[JsonObject]]] = {
            "hello": self._op_hello,
            "run": self._op_run,
            "copy_to": self._op_copy_to,
            "copy_from": self._op_copy_from,
            "console": self._op_console,
            "reboot": self._op_reboot,
        }
        if op not in handlers:
            raise UsageError(f"vmlab rpc: unknown request {op!r} (known: {', '.join(handlers)})")
        return handlers[op]

    async def _locked(
        self, handler: Callable[[JsonObject], Awaitable[JsonObject]], request: JsonObject
    ) -> JsonObject:
        async with self._lock:
            self._running = asyncio.current_task()
            try:
                return await handler(request)
            except GuestCrashed as exc:
                self.crashes.append(exc)
                raise
            finally:
                self._running = self._running_vm = None

    async def _unless_hung_up(self, work: asyncio.Future[JsonObject], lines: _Lines) -> JsonObject:
        """`work`'s result; if the client hangs up first, interrupt and drop it."""
        watch: asyncio.Task[bool] | None = None
        try:
            while True:
                if watch is None:
                    watch = asyncio.ensure_future(lines.fill())
                waiting: set[asyncio.Future[Any]] = {work, watch}
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if work.done():
                    return work.result()
                if watch.exception() is not None or not watch.result():
                    raise _Disconnected("the client hung up")
                watch = None  # it sent more (early): keep it buffered, keep watching
        finally:
            if watch is not None and not watch.done():
                watch.cancel()
                await asyncio.wait({watch})
            if not work.done():
                await self._abandon(work)

    async def _abandon(self, work: asyncio.Future[JsonObject]) -> None:
        vm = self._running_vm if self._running is work else None  # not someone else's
        try:
            if vm is not None and vm.channel is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(vm.channel.interrupt(), INTERRUPT_GRACE)
                await asyncio.wait({work}, timeout=INTERRUPT_GRACE)
        finally:
            if not work.done():
                work.cancel()
                await asyncio.wait({work})
            if not work.cancelled():
                work.exception()  # retrieved: nobody is left to tell

    # -- requests ------------------------------------------------------------

    async def _vm(self) -> QemuMachine:
        from vmlab.machine.qemu import MachineState  # noqa: PLC0415 (clients skip QEMU)

        vm = await self._get_vm()
        if vm.state is MachineState.DEAD:  # crashed: its test was told; go on fresh
            vm = await self._reboot_vm()
        self._running_vm = vm
        return vm

    def _command_env(self, vm: QemuMachine, extra: Mapping[str, str]) -> dict[str, str]:
        return {**BASE_ENV, **dict(vm.spec.env), **self._env, **extra}

    async def _op_hello(self, request: JsonObject) -> JsonObject:
        return {"protocol": PROTOCOL}

    async def _op_run(self, request: JsonObject) -> JsonObject:
        argv = request.get("argv")
        shell = request.get("shell")
        if shell is not None and not isinstance(shell, str):
            raise UsageError("vmlab rpc: run: shell must be a string")
        if argv is not None and not (
            isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)
        ):
            raise UsageError("vmlab rpc: run: argv must be a non-empty list of strings")
        if (argv is None) == (shell is None):
            raise UsageError("vmlab rpc: run takes exactly one of argv and shell")
        env = _string_map(request.get("env"), "env")
        cwd = _optional_str(request.get("cwd"), "cwd") or self._cwd
        timeout = _optional_float(request.get("timeout"), "timeout")
        stdin = request.get("stdin")
        data = None if stdin is None else _unb64(stdin, "stdin")
        vm = await self._vm()
        command = Command(
            argv=tuple(argv or ()), shell=shell, env=self._command_env(vm, env), cwd=cwd
        )
        result = await vm.run(command, stdin=data, timeout=timeout)
        return {
            "status": result.status,
            "stdout": _b64(result.stdout),
            "stderr": _b64(result.stderr),
            "duration": result.duration_s,
        }

    async def _op_copy_to(self, request: JsonObject) -> JsonObject:
        src = _host_path(request.get("src"), "src")
        dst = _guest_path(request.get("dst"), "dst")
        with _told_as("copy_to"):
            host_source(src)  # a bad host path needs no machine to be told
        vm = await self._vm()
        with _told_as("copy_to"):
            copied = await vm.copy_to(src, posixpath.join(self._cwd or "/", dst))
        return {"path": copied.path, "files": copied.files, "bytes": copied.bytes}

    async def _op_copy_from(self, request: JsonObject) -> JsonObject:
        src = _guest_path(request.get("src"), "src")
        dst = _host_path(request.get("dst"), "dst")
        vm = await self._vm()
        with _told_as("copy_from"):
            copied = await vm.copy_from(posixpath.join(self._cwd or "/", src), dst)
        return {"path": copied.path, "files": copied.files, "bytes": copied.bytes}

    async def _op_console(self, request: JsonObject) -> JsonObject:
        count = request.get("lines", 20)
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise UsageError("vmlab rpc: console: lines must be a count >= 0")
        vm = await self._get_vm()  # a dead machine's console is still worth reading
        if vm.console is None:
            raise InfraError(f"machine {vm.spec.name} has no console yet")
        path = vm.console.log_path
        lines = await asyncio.to_thread(_tail_file, path, count)
        return {"path": str(path), "lines": lines}

    async def _op_reboot(self, request: JsonObject) -> JsonObject:
        vm = await self._reboot_vm()
        return {"boot_s": vm.boot_seconds}


def _parse_request(line: bytes) -> JsonObject:
    try:
        request = json.loads(line)
    except ValueError:
        raise UsageError("vmlab rpc: a request is not JSON") from None
    if not isinstance(request, dict):
        raise UsageError("vmlab rpc: a request must be a JSON object")
    return request


def _optional_str(value: object, what: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise UsageError(f"vmlab rpc: {what} must be a string")
    return value


def _optional_float(value: object, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise UsageError(f"vmlab rpc: {what} must be a number of seconds > 0")
    return float(value)


def _string_map(value: object, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise UsageError(f"vmlab rpc: {what} must map strings to strings")
    return dict(value)


@contextlib.contextmanager
def _told_as(op: str) -> Iterator[None]:
    """Path errors of a copy start with the request's name (`copy_to: ...`)."""
    try:
        yield
    except (UsageError, GuestPathError) as exc:
        raise type(exc)(f"{op}: {exc.message}", details=exc.details) from None


def _host_path(value: object, what: str) -> Path:
    if not isinstance(value, str) or not os.path.isabs(value):
        raise UsageError(f"vmlab rpc: {what} must be an absolute host path")
    return Path(value)


def _guest_path(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise UsageError(f"vmlab rpc: {what} must be a guest path")
    return value


def _last_line(data: bytes) -> str:
    lines = [line for line in data.decode("utf-8", "replace").splitlines() if line.strip()]
    return lines[-1].strip()[:200] if lines else "(no message)"


def _tail_file(path: Path, count: int) -> list[str]:
    """The last `count` lines of a (growing) text file, read from its end."""
    if count == 0:
        return []
    try:
        with path.open("rb") as file:
            end = file.seek(0, os.SEEK_END)
            data = b""
            start = end
            while start > 0 and data.count(b"\n") <= count:
                start = max(0, start - (64 << 10))
                file.seek(start)
                data = file.read(end - start)
    except FileNotFoundError:
        return []
    lines = data.decode("utf-8", "replace").splitlines()
    if start > 0:
        lines = lines[1:]  # the first one is probably cut
    return [line.rstrip("\r") for line in lines[-count:]]


# -- client --------------------------------------------------------------------


class VmClient:
    """A VM served by a `VmRpcServer`, driven synchronously (what the `vm` fixture is).

        result = vm.run("uname -r", check=True)
        vm.copy_to("build/mod.ko", "/tmp/")
        vm.copy_from("/tmp/out.log", tmp_path)

    Host paths are resolved in this process's working directory. Errors the
    server reports are raised as the matching `vmlab.errors` class. One call at
    a time per client (calls from several threads take turns).
    """

    def __init__(self, path: str | os.PathLike[str], *, connect_timeout: float = 10.0) -> None:
        self.path = Path(path)
        self._connect_timeout = connect_timeout
        self._sock: socket.socket | None = None
        self._reader: Any = None  # the socket's buffered reader (BufferedReader)
        self._lock = threading.Lock()
        self._connect()
        hello = self._call("hello")
        if hello.get("protocol") != PROTOCOL:
            self.close()
            raise InfraError(
                f"the vmlab VM server at {self.path} speaks protocol {hello.get('protocol')}, "
                f"this client {PROTOCOL} (mixed vmlab versions?)"
            )

    def __enter__(self) -> VmClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self._connect_timeout)
            sock.connect(os.fspath(self.path))
            sock.settimeout(None)
        except OSError as exc:
            sock.close()
            raise InfraError(
                f"cannot reach the vmlab VM server at {self.path}: {exc.strerror or exc}"
            ) from None
        self._sock = sock
        self._reader = sock.makefile("rb", buffering=1 << 16)

    def _drop(self) -> None:
        reader, sock = self._reader, self._sock
        self._reader = self._sock = None
        if reader is not None:
            with contextlib.suppress(OSError):
                reader.close()
        if sock is not None:
            sock.close()

    def _call(self, op: str, **args: Any) -> JsonObject:
        message = encode_message({"op": op, **args})
        with self._lock:
            if self._sock is None:
                self._connect()
            assert self._sock is not None
            try:
                self._sock.sendall(message)
                line: bytes = self._reader.readline()
            except OSError as exc:
                self._drop()
                raise InfraError(
                    f"lost the vmlab VM server at {self.path}: {exc.strerror or exc}"
                ) from None
            except BaseException:
                # Interrupted (Ctrl-C, a pytest timeout) mid-call: the reply would be
                # out of step, so hang up; the server interrupts the command.
                self._drop()
                raise
            if not line.endswith(b"\n"):
                self._drop()
                raise InfraError(f"the vmlab VM server at {self.path} hung up (vmlab stopped?)")
        try:
            reply = json.loads(line)
        except ValueError:
            raise InfraError("vmlab rpc: a reply is not JSON") from None
        if "error" in reply:
            raise error_from_reply(reply)
        result: JsonObject = reply["result"]
        return result

    # -- the API -------------------------------------------------------------

    def run(
        self,
        cmd: str | Sequence[str],
        *,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdin: bytes | None = None,
        check: bool = False,
    ) -> CommandResult:
        """Run a command in the guest: a string goes to `sh -c`, a sequence is an argv.

        `env` adds to the guest's defaults (a root login's PATH and HOME, the
        machine's and the suite's env). Raises CommandTimeout past `timeout`,
        CommandNotFound for a missing argv[0], GuestCrashed if the kernel dies;
        with `check`, CommandFailed for a non-zero exit status.
        """
        args: JsonObject = {}
        if isinstance(cmd, str):
            args["shell"] = cmd
        else:
            argv = [os.fspath(part) for part in cmd]
            if not argv:
                raise UsageError("vm.run: empty argv")
            args["argv"] = argv
        args["env"] = dict(env or {})
        args["cwd"] = cwd
        args["timeout"] = timeout
        args["stdin"] = None if stdin is None else _b64(stdin)
        reply = self._call("run", **args)
        result = CommandResult(
            status=int(reply["status"]),
            stdout=base64.b64decode(reply["stdout"]),
            stderr=base64.b64decode(reply["stderr"]),
            duration_s=float(reply["duration"]),
        )
        if check and result.status != 0:
            shown = cmd if isinstance(cmd, str) else shlex.join(args["argv"])
            why = _last_line(result.stderr) if result.stderr.strip() else "no stderr"
            raise CommandFailed(
                f"command exited {result.status}: {shown}: {why}",
                result=result,
                details=(result.stdout + result.stderr).decode("utf-8", "replace")[-4000:],
            )
        return result

    def copy_to(self, src: str | os.PathLike[str], dst: str) -> str:
        """Copy a host file, or a directory with everything in it, into the guest,
        keeping modes and times; returns the guest path of the copy. A `dst` that
        is a guest directory (or ends in /) gets it under its own name; a
        directory onto a directory is merged (vmlab.guest.copying has the rules)."""
        reply = self._call("copy_to", src=host_absolute(src), dst=dst)
        return str(reply["path"])

    def copy_from(self, src: str, dst: str | os.PathLike[str]) -> Path:
        """Copy a guest file, or a directory with everything in it, to the host,
        keeping modes and times; returns the host path of the copy. A `dst` that
        is a host directory (or ends in /) gets it under its own name."""
        reply = self._call("copy_from", src=src, dst=host_absolute(dst))
        return Path(reply["path"])

    def console_tail(self, n: int = 20) -> list[str]:
        """The last `n` lines of the guest's kernel console."""
        return [str(line) for line in self._call("console", lines=n)["lines"]]

    def console_path(self) -> Path:
        """The host file the guest's kernel console is logged to (it changes on reboot)."""
        return Path(self._call("console", lines=0)["path"])

    def reboot(self) -> float | None:
        """Replace the VM with a freshly booted one (set up again); returns its boot time."""
        boot_s = self._call("reboot").get("boot_s")
        return None if boot_s is None else float(boot_s)
