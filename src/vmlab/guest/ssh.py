"""The SSH channel: commands in a disk-image machine over asyncssh.

Disk-image machines run their own init and sshd; vmlab reaches them on a port
that QEMU's user networking forwards from 127.0.0.1 only. Each command runs in
a session of its own, in a new process group (setsid) whose id goes to a file,
so that `interrupt()` can kill the whole group like the virtio-serial agent does.
The host key is not checked: the port is loopback-only and the guest was made
from the lab's own image a moment ago (there is no earlier key to compare with).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shlex
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncssh

from vmlab.errors import CommandNotFound, GuestError, InfraError
from vmlab.guest import sftp_copy
from vmlab.guest.channel import EXEC_PATH, Command, CommandResult, OutputSink, Stdin
from vmlab.guest.copying import Copied
from vmlab.guest.serial import _once, _threaded_reader

JOB_DIR = "/run/vmlab"
_NOT_FOUND = "\x1evmlab:notfound\x1e"
_NO_CWD = "\x1evmlab:nocwd\x1e"


def ssh_script(command: Command, job: str) -> str:
    """The POSIX sh script sshd runs for `command`: its own process group whose id
    is kept in JOB_DIR/job.<job>, the exact environment, cwd and user."""
    q = shlex.quote
    env = [q(f"{k}={v}") for k, v in sorted(command.env.items())]
    prefix = ["env", "-i", *env]
    if command.user is not None and command.user.uid != 0:
        user = command.user
        groups = f"--groups={','.join(map(str, user.groups))}" if user.groups else "--clear-groups"
        prefix += ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", groups, "--"]
    if command.shell is not None:
        target = " ".join([*prefix, "/bin/sh", "-c", q(command.shell)])
        check = ""
    else:
        # Looked up as `env -i` will when it execs: the command's PATH, else execvp's.
        path = command.env.get("PATH", EXEC_PATH)
        check = (
            f"PATH={q(path)} command -v {q(command.argv[0])} >/dev/null 2>&1 || "
            f"{{ printf %s {q(_NOT_FOUND)} >&2; exit 127; }}; "
        )
        target = " ".join([*prefix, *map(q, command.argv)])
    cwd = q(command.cwd or "/")
    inner = (
        f"echo $$ >{JOB_DIR}/job.{job}; "
        f"cd {cwd} 2>/dev/null || {{ printf %s {q(_NO_CWD)} >&2; exit 126; }}; "
        f"{check}exec {target}"
    )
    # setsid --wait: the job leads a new process group and session; its exit
    # status comes back through setsid.
    return (
        f"mkdir -p {JOB_DIR}; setsid --wait /bin/sh -c {q(inner)}; "
        f"status=$?; rm -f {JOB_DIR}/job.{job}; exit $status"
    )


class SshChannel:
    """Runs commands in one guest over one SSH connection, one at a time."""

    def __init__(self, conn: asyncssh.SSHClientConnection, *, sudo: bool) -> None:
        """`sudo`: the login user is not root; commands become root with `sudo -n`
        (and then any Command.user with setpriv), as on the host-root path."""
        self._conn = conn
        self._sudo = sudo
        self._lock = asyncio.Lock()
        self._job: str | None = None
        self._closed = False

    @classmethod
    async def connect(
        cls, host: str, port: int, *, user: str, key: Path, timeout: float
    ) -> SshChannel:
        """One connection attempt, bounded by `timeout`."""
        try:
            conn = await asyncio.wait_for(
                asyncssh.connect(
                    host,
                    port,
                    username=user,
                    client_keys=[str(key)],
                    known_hosts=None,
                    agent_path=None,
                    config=None,
                    keepalive_interval=10,
                    login_timeout=timeout,
                ),
                timeout,
            )
        except TimeoutError:
            raise InfraError(f"ssh {user}@{host}:{port}: no answer within {timeout:g} s") from None
        except (OSError, asyncssh.Error) as exc:
            raise InfraError(f"ssh {user}@{host}:{port}: {exc}") from exc
        return cls(conn, sudo=user != "root")

    def _as_root(self, script: str) -> str:
        return f"sudo -n /bin/sh -c {shlex.quote(script)}" if self._sudo else script

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
            if self._closed:
                raise InfraError("the guest channel is closed")
            job = secrets.token_hex(6)
            self._job = job
            try:
                return await self._run(command, job, stdin, on_stdout, on_stderr, capture)
            finally:
                self._job = None

    async def _run(
        self,
        command: Command,
        job: str,
        stdin: Stdin,
        on_stdout: OutputSink | None,
        on_stderr: OutputSink | None,
        capture: bool,
    ) -> CommandResult:
        chunks: tuple[list[bytes], list[bytes]] = ([], [])
        started = time.monotonic()
        try:
            process = await self._conn.create_process(
                self._as_root(ssh_script(command, job)), encoding=None, stdin=asyncssh.PIPE
            )
        except (OSError, asyncssh.Error) as exc:
            raise InfraError(f"the guest's sshd refused a session: {exc}") from exc

        async def pump(stream: Any, index: int, user: OutputSink | None) -> None:
            while data := await stream.read(1 << 16):
                if capture or index == 1:
                    chunks[index].append(data)
                if user is not None:
                    user(data)

        async def feed() -> None:
            if stdin is not None:
                source: Callable[[], Awaitable[bytes]] = (
                    _once(stdin) if isinstance(stdin, bytes) else _threaded_reader(stdin)
                )
                with contextlib.suppress(OSError, asyncssh.Error, BrokenPipeError):
                    while chunk := await source():
                        process.stdin.write(chunk)
                        await process.stdin.drain()
            with contextlib.suppress(OSError, asyncssh.Error):
                process.stdin.write_eof()

        feeder = asyncio.create_task(feed(), name="vmlab-ssh-stdin")
        try:
            await asyncio.gather(
                pump(process.stdout, 0, on_stdout), pump(process.stderr, 1, on_stderr)
            )
            completed = await process.wait()
        except (OSError, asyncssh.Error) as exc:
            raise InfraError(f"the SSH session to the guest broke: {exc}") from exc
        finally:
            feeder.cancel()
            with contextlib.suppress(BaseException):
                await feeder
            process.close()
        stderr = b"".join(chunks[1])
        if _NOT_FOUND.encode() in stderr:
            assert command.argv
            raise CommandNotFound(
                f"command {command.argv[0]!r} not found in the guest "
                "(install it in the image: add it to the image's packages)"
            )
        if _NO_CWD.encode() in stderr:
            raise GuestError(f"working directory {command.cwd} does not exist in the guest")
        if completed.exit_signal is not None:
            status = 128 + _signal_number(completed.exit_signal[0])
        else:
            status = completed.exit_status if completed.exit_status is not None else 255
        duration = time.monotonic() - started
        return CommandResult(status, b"".join(chunks[0]), stderr if capture else b"", duration)

    async def _side(self, script: str, *, timeout: float) -> int:
        """A short root command on its own session beside the running one."""
        result = await asyncio.wait_for(self._conn.run(self._as_root(script), check=False), timeout)
        return result.exit_status if result.exit_status is not None else 255

    async def interrupt(self) -> None:
        job = self._job
        if job is not None:
            await self._side(
                f"pgid=$(cat {JOB_DIR}/job.{job} 2>/dev/null) && kill -KILL -- -$pgid", timeout=5
            )

    async def sysrq(self, letters: str, *, timeout: float = 5) -> None:
        """Trigger magic SysRq `letters` (e.g. "wt") in the guest."""
        script = "; ".join(f"echo {shlex.quote(c)} >/proc/sysrq-trigger" for c in letters)
        await self._side(script, timeout=timeout)

    async def ping(self, *, timeout: float) -> None:
        await self._side("true", timeout=timeout)

    # -- file copies (SFTP; the rules are in vmlab.guest.copying) ---------------

    @property
    def sftp_ok(self) -> bool:
        """Whether copies can go over SFTP, which acts as the login user: only
        when that is root (a sudo login would copy with the user's rights)."""
        return not self._sudo

    async def copy_to(self, src: Path, dst: str) -> Copied:
        """Copy the host file or directory `src` to the absolute guest path `dst`."""
        async with self._sftp() as sftp:
            return await sftp_copy.upload(sftp, src, dst)

    async def copy_from(self, src: str, dst: str) -> Copied:
        """Copy the absolute guest path `src` to the absolute host path `dst`."""
        async with self._sftp() as sftp:
            return await sftp_copy.download(sftp, src, dst)

    @contextlib.asynccontextmanager
    async def _sftp(self) -> AsyncIterator[asyncssh.SFTPClient]:
        """An SFTP session of its own on the connection, for one copy."""
        if self._closed:
            raise InfraError("the guest channel is closed")
        try:
            sftp = await self._conn.start_sftp_client()
        except (OSError, asyncssh.Error) as exc:
            raise InfraError(f"the guest's sshd refused an SFTP session: {exc}") from exc
        try:
            yield sftp
        except (OSError, asyncssh.Error) as exc:  # the connection, not a path
            raise InfraError(f"the SFTP session to the guest broke: {exc}") from exc
        finally:
            sftp.exit()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sftp.wait_closed(), 5)

    async def close(self) -> None:
        self._closed = True
        self._conn.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._conn.wait_closed(), 2)

    def abort(self) -> None:
        """Drop the connection at once (the guest is being restored or killed)."""
        self._closed = True
        self._conn.abort()


def _signal_number(name: str) -> int:
    with contextlib.suppress(KeyError):
        return int(signal.Signals[f"SIG{name}"])
    return 0
