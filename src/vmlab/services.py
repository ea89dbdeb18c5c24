"""Host services: processes on the host that tests rely on (`[service.NAME]`).

`HostService` runs one `ServiceSpec` as an async context manager::

    async with HostService(spec, log_dir) as service:
        ...  # the service is ready here

It starts the command in its own session (its own process group) with
PDEATHSIG=SIGKILL, and a guard process that SIGKILLs the whole group once vmlab
is gone, so the service and what it forks die with vmlab however vmlab dies (a
process that leaves the group with setsid is beyond reach); stdout and stderr go,
merged, to `log_dir/NAME.log`; it waits until the readiness check passes (a TCP
connect, a log line matching a regex, or a host command exiting 0, polled every
100 ms) for at most `ready_timeout_s`, and fails early, naming the check, the
exit status and the log's last lines, when the process exits first. Stopping
sends SIGTERM to the whole process group, waits `stop_timeout_s` for every
process of the group to go, then sends SIGKILL; the SIGKILL is in `finally`, so
a cancelled stop (a second Ctrl-C) still leaves nothing running.

A service with `container = IMAGE` runs `podman run` (else `docker run`) with
host networking, so its readiness checks work as on the host; it is removed
with `rm -f` when it stops. Without podman or docker on PATH it is a HostError,
never a silent run on the host. A SIGKILLed vmlab cannot remove it (docker's
daemon or podman's conmon keeps it running); it carries the label
`vmlab.service=NAME` for `podman rm -f $(podman ps -q --filter label=vmlab.service)`.

`ServiceGroup` starts several services in capability order (a service starts
once every service that provides what it requires is ready; independent ones
start concurrently) and stops them in the reverse order. `vmlab test` wraps its
executor in one (see `vmlab.cli.test_cmd`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from vmlab.config_specs import capability_cycle, format_cycle
from vmlab.errors import ConfigError, HostError, ServiceError
from vmlab.machine.subprocess_util import kill_on_parent_death
from vmlab.service_spec import CmdReady, LogReady, ServiceSpec, TcpReady, service_graph

POLL_S = 0.1  # between two tcp or cmd checks
TAIL_LINES = 20  # of a service's log, kept for error messages
KILL_WAIT_S = 5.0  # for the group to go after SIGKILL
DRAIN_S = 1.0  # for the output pipe to end once the process is gone
CONTAINER_RM_S = 30.0
CONTAINER_RUNTIMES = ("podman", "docker")
_MAX_LINE = 1 << 16  # a longer line is cut into pieces for the log check


# ------------------------------------------------------------------ events


@dataclass(frozen=True)
class ServiceStarted:
    service: str
    pid: int
    log: Path


@dataclass(frozen=True)
class ServiceReady:
    service: str
    check: str  # what said it is ready ("tcp 127.0.0.1:8080"; "started" without a check)
    seconds: float


@dataclass(frozen=True)
class ServiceStopped:
    service: str
    status: int | None  # the process's exit status (negative: killed by that signal)
    how: str  # "stopped", "killed after 10s (SIGTERM ignored)", "had exited by itself ..."


ServiceEvent = ServiceStarted | ServiceReady | ServiceStopped
ServiceSink = Callable[[ServiceEvent], None]


class ServiceState(enum.StrEnum):
    NEW = "new"
    STARTING = "starting"  # running, not ready yet
    READY = "ready"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"  # did not become ready (and was stopped)


def _ignore(event: ServiceEvent) -> None:
    del event


# ------------------------------------------------------------------ containers


def find_container_runtime() -> str | None:
    """The path of podman, else docker, on PATH; None when neither is there."""
    for name in CONTAINER_RUNTIMES:
        path = shutil.which(name)
        if path is not None:
            return path
    return None


def container_argv(spec: ServiceSpec, runtime: str, name: str) -> list[str]:
    """`RUNTIME run` of `spec.container` with host networking and `spec.env`;
    `spec.cwd` is mounted at its own path as the workdir when the lab set it."""
    assert spec.container is not None
    argv = [runtime, "run", "--rm", "--name", name, "--label", f"vmlab.service={spec.name}"]
    argv += ["--network", "host"]
    for key, value in spec.env:
        argv += ["--env", f"{key}={value}"]
    if spec.cwd_given:
        argv += ["--volume", f"{spec.cwd}:{spec.cwd}", "--workdir", str(spec.cwd)]
    return [*argv, spec.container, *spec.argv]


def _no_runtime(spec: ServiceSpec) -> HostError:
    return HostError(
        f"service {spec.name}: container = {spec.container!r} needs podman or docker, and "
        "neither is on PATH (install podman, or drop container to run the command on the host)"
    )


# ------------------------------------------------------------------ process groups


def _group_alive(pgid: int) -> bool:
    """Whether a process of group `pgid` is still running (zombies do not count)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as file:
                stat = file.read()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != b"Z":
            return True
    return False


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def _wait_group_gone(pgid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while _group_alive(pgid):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def describe_status(status: int | None) -> str:
    if status is None:
        return "no exit status"
    if status < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-status).name}"
        return f"killed by signal {-status}"
    return f"exit status {status}"


# ------------------------------------------------------------------ one service


class HostService:
    """One host service; see the module's docstring."""

    def __init__(
        self,
        spec: ServiceSpec,
        log_dir: Path,
        *,
        emit: ServiceSink | None = None,
        runtime: str | None = None,
    ) -> None:
        self.spec = spec
        self.log_path = log_dir / f"{spec.name}.log"
        self.state = ServiceState.NEW
        self._emit = emit or _ignore
        if spec.container is not None:
            runtime = runtime or find_container_runtime()
            if runtime is None:
                raise _no_runtime(spec)
            self._container: str | None = f"vmlab-{spec.name}-{secrets.token_hex(4)}"
            self._argv = container_argv(spec, runtime, self._container)
            self._runtime = runtime
        else:
            self._container = None
            self._argv = list(spec.argv)
            self._runtime = ""
        self._pattern = re.compile(spec.ready.pattern) if isinstance(spec.ready, LogReady) else None
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._log: BinaryIO | None = None
        self._tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._partial = b""
        self._matched = asyncio.Event()
        self._gone = False  # no process of its group is left
        self._problem = ""  # why the last readiness check failed
        self._container_removed = False
        self._guard: asyncio.subprocess.Process | None = None
        self._guard_fd: int | None = None  # the only writer of the guard's stdin

    @property
    def pid(self) -> int | None:
        """The service's process id, which is also its process group's id."""
        return self._proc.pid if self._proc is not None else None

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc is not None else None

    def tail(self, lines: int = TAIL_LINES) -> list[str]:
        """The last lines the service printed (stdout and stderr)."""
        return list(self._tail)[-lines:]

    async def __aenter__(self) -> HostService:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- start --------------------------------------------------------------

    async def start(self) -> None:
        """Start the service and wait until it is ready; on any failure (and on
        cancellation) it is stopped before the error propagates."""
        if self.state is not ServiceState.NEW:
            raise RuntimeError(f"service {self.spec.name} was already started")
        self.state = ServiceState.STARTING
        began = time.monotonic()
        try:
            await self._refuse_taken_port()
            self._open_log()
            try:
                self._proc = await asyncio.create_subprocess_exec(
                    *self._argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    cwd=self.spec.cwd,
                    env={**os.environ, **dict(self.spec.env)},
                    start_new_session=True,
                    preexec_fn=kill_on_parent_death,
                )
            except OSError as exc:
                raise ServiceError(
                    f"service {self.spec.name}: cannot start {self._argv[0]!r}: "
                    f"{exc.strerror or exc}",
                    details=f"argv: {self._argv}\ncwd: {self.spec.cwd}",
                ) from exc
            assert self._proc.stdout is not None
            self._reader = asyncio.create_task(
                self._follow(self._proc.stdout), name=f"vmlab-service-{self.spec.name}"
            )
            await self._start_guard(self._proc.pid)
            self._emit(ServiceStarted(self.spec.name, self._proc.pid, self.log_path))
            await self._wait_ready()
        except BaseException:
            try:
                await self.stop()
            finally:
                self.state = ServiceState.FAILED
            raise
        self.state = ServiceState.READY
        check = self.spec.ready.describe() if self.spec.ready else "started"
        self._emit(ServiceReady(self.spec.name, check, time.monotonic() - began))

    def _open_log(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("wb", buffering=0)

    async def _refuse_taken_port(self) -> None:
        """A tcp check on a port that already answers would pass at once, whatever
        the service does: that is an error, before anything starts."""
        ready = self.spec.ready
        if isinstance(ready, TcpReady) and await self._connects(ready):
            raise ServiceError(
                f"service {self.spec.name}: {ready.host}:{ready.port} already accepts "
                "connections before the service starts (another process holds the port; "
                "stop it or choose another port)"
            )

    async def _wait_ready(self) -> None:
        ready = self.spec.ready
        if ready is None:
            return
        assert self._proc is not None
        exited = asyncio.create_task(self._proc.wait())
        probe = asyncio.create_task(self._probe())
        try:
            done, _ = await asyncio.wait(
                {exited, probe},
                timeout=self.spec.ready_timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for task in (exited, probe):
                task.cancel()
            await asyncio.gather(exited, probe, return_exceptions=True)
        if probe in done and not probe.cancelled():
            probe.result()  # an unexpected error in the check itself propagates
            return
        what = f"service {self.spec.name}"
        if exited in done:
            await self._drain()
            status = describe_status(self._proc.returncode)
            raise ServiceError(
                f"{what}: exited ({status}) before it was ready ({ready.describe()})"
                f"{self._last_line()} (log: {self.log_path})",
                details=self._evidence(),
            )
        raise ServiceError(
            f"{what}: not ready after {self.spec.ready_timeout_s:g}s: {ready.describe()}: "
            f"{self._problem or 'no answer'}{self._last_line()} (log: {self.log_path})",
            details=self._evidence(),
        )

    async def _probe(self) -> None:
        """Return once the readiness check passes; `_problem` says why it has not."""
        ready = self.spec.ready
        if isinstance(ready, LogReady):
            self._problem = "no line matched"
            await self._matched.wait()
        elif isinstance(ready, TcpReady):
            while not await self._connects(ready):
                await asyncio.sleep(POLL_S)
        elif isinstance(ready, CmdReady):
            while not await self._command_passes(ready):
                await asyncio.sleep(POLL_S)

    async def _connects(self, ready: TcpReady) -> bool:
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(ready.host, ready.port), timeout=1.0
            )
        except TimeoutError:
            self._problem = "connection timed out"
            return False
        except OSError as exc:
            # asyncio's own strerror ("Connect call failed ...") hides the errno's words
            self._problem = (os.strerror(exc.errno) if exc.errno else str(exc)).lower()
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    async def _command_passes(self, ready: CmdReady) -> bool:
        """Run the check once, in the service's cwd and environment; its process
        group is killed if it is still there when the check ends or is cancelled."""
        try:
            proc = await asyncio.create_subprocess_exec(
                "/bin/sh",
                "-c",
                ready.command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                cwd=self.spec.cwd,
                env={**os.environ, **dict(self.spec.env)},
                start_new_session=True,
                preexec_fn=kill_on_parent_death,
            )
        except OSError as exc:
            self._problem = f"cannot run it: {exc.strerror or exc}"
            return False
        try:
            output, _ = await proc.communicate()
        finally:
            _signal_group(proc.pid, signal.SIGKILL)
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        if proc.returncode == 0:
            return True
        lines = output.decode("utf-8", "replace").strip().splitlines()
        self._problem = describe_status(proc.returncode) + (
            f", printed {lines[-1].strip()[:200]!r}" if lines else ""
        )
        return False

    # -- output -------------------------------------------------------------

    async def _follow(self, stream: asyncio.StreamReader) -> None:
        try:
            while data := await stream.read(1 << 16):
                self._feed(data)
        finally:
            if self._partial:
                self._line(self._partial)
                self._partial = b""

    def _feed(self, data: bytes) -> None:
        if self._log is not None and not self._log.closed:
            self._log.write(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        for raw in lines:
            self._line(raw)
        if len(self._partial) > _MAX_LINE:
            self._line(self._partial)
            self._partial = b""

    def _line(self, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").rstrip("\r")
        self._tail.append(line)
        if self._pattern is not None and self._pattern.search(line):
            self._matched.set()

    async def _drain(self) -> None:
        """Let the reader take what is left in the pipe (bounded: a process that
        left the group may hold it open)."""
        if self._reader is not None and not self._reader.done():
            await asyncio.wait({self._reader}, timeout=DRAIN_S)

    def _last_line(self) -> str:
        lines = [line.strip() for line in self._tail if line.strip()]
        return f"; last line: {lines[-1][:200]!r}" if lines else "; it printed nothing"

    def _evidence(self) -> str:
        return "\n".join(
            [
                f"argv: {self._argv}",
                f"cwd: {self.spec.cwd}",
                f"log: {self.log_path}",
                f"last {len(self._tail)} lines of its output:",
                *(f"  {line}" for line in self._tail),
            ]
        )

    # -- stop ---------------------------------------------------------------

    async def stop(self) -> None:
        """SIGTERM to the process group, SIGKILL after `stop_timeout_s`; safe to
        call twice, and on any path."""
        proc = self._proc
        if proc is None or self.state in (ServiceState.STOPPED, ServiceState.FAILED):
            self._close()
            if self.state is not ServiceState.FAILED:
                self.state = ServiceState.STOPPED
            return
        was_ready = self.state is ServiceState.READY
        self.state = ServiceState.STOPPING
        how = "stopped"
        pgid = proc.pid
        try:
            if proc.returncode is not None and was_ready:
                how = f"had exited by itself ({describe_status(proc.returncode)}) during the run"
            if _group_alive(pgid):
                _signal_group(pgid, signal.SIGTERM)
                if not await _wait_group_gone(pgid, self.spec.stop_timeout_s):
                    how = f"killed after {self.spec.stop_timeout_s:g}s (SIGTERM ignored)"
                    _signal_group(pgid, signal.SIGKILL)
                    await _wait_group_gone(pgid, KILL_WAIT_S)
            self._gone = not _group_alive(pgid)
            if self._gone:
                await self._end_guard()
            if proc.returncode is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), KILL_WAIT_S)
            await self._drain()
            if self._container is not None:
                await self._remove_container()
        finally:
            self.kill_now()
            self.state = ServiceState.STOPPED
        self._emit(ServiceStopped(self.spec.name, proc.returncode, how))

    def kill_now(self) -> None:
        """Synchronously: SIGKILL whatever is left of the service, release its
        files, and have its container removed. A no-op once it is stopped."""
        proc = self._proc
        if proc is not None and not self._gone:
            _signal_group(proc.pid, signal.SIGKILL)
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            self._gone = True
        if self._guard is not None and self._guard.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._guard.kill()
        if self._guard_fd is not None:
            os.close(self._guard_fd)
            self._guard_fd = None
        if self._container is not None and not self._container_removed:
            self._container_removed = True
            with contextlib.suppress(OSError):
                # not waited for: it must finish even when vmlab is on its way out
                subprocess.Popen(
                    [self._runtime, "rm", "-f", self._container],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
        self._close()

    async def _remove_container(self) -> None:
        assert self._container is not None
        try:
            proc = await asyncio.create_subprocess_exec(
                self._runtime,
                "rm",
                "-f",
                self._container,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=kill_on_parent_death,
            )
        except OSError:
            return
        try:
            await asyncio.wait_for(proc.wait(), CONTAINER_RM_S)
            self._container_removed = True
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()

    async def _start_guard(self, pgid: int) -> None:
        """PDEATHSIG reaches the service's own process only, not what it forks. The
        guard, a shell in a session of its own, kills the whole group once its
        stdin ends: when vmlab is gone, however it went (the pipe's write end is
        vmlab's alone: Python's fds are not inherited)."""
        read_fd, self._guard_fd = os.pipe()
        try:
            self._guard = await asyncio.create_subprocess_exec(
                "/bin/sh",
                "-c",
                f"read _; kill -s KILL -- -{pgid}",
                stdin=read_fd,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            raise ServiceError(
                f"service {self.spec.name}: cannot start its guard (/bin/sh): {exc.strerror or exc}"
            ) from exc
        finally:
            os.close(read_fd)

    async def _end_guard(self) -> None:
        """The group is gone: the guard goes first, without acting, then its pipe."""
        guard = self._guard
        if guard is not None and guard.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                guard.kill()
            await guard.wait()
        if self._guard_fd is not None:
            os.close(self._guard_fd)
            self._guard_fd = None

    def _close(self) -> None:
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()
        if self._log is not None:
            self._log.close()


# ------------------------------------------------------------------ several


class ServiceGroup:
    """Several services, started in capability order and stopped in reverse.

    A service starts once every service that provides a capability it requires
    is ready; services that do not depend on each other start concurrently. A
    requirement that no service provides, and a cycle, are ConfigErrors, and a
    container service without podman or docker a HostError, all raised here,
    before anything starts. If one service fails, the others are stopped and
    its ServiceError propagates.
    """

    def __init__(
        self, services: Sequence[ServiceSpec], log_dir: Path, *, emit: ServiceSink | None = None
    ) -> None:
        self.graph = service_graph(services)
        if cycle := capability_cycle(self.graph):
            where = next(s.where for s in services if s.name == cycle[0]) or "<lab>"
            raise ConfigError(f"{where}: {format_cycle([f'service.{n}' for n in cycle])}")
        runtime = None
        if containers := [s for s in services if s.container is not None]:
            runtime = find_container_runtime()
            if runtime is None:
                raise _no_runtime(containers[0])
        self.services = tuple(
            HostService(s, log_dir, emit=emit, runtime=runtime if s.container else None)
            for s in services
        )
        self._started: list[HostService] = []  # in the order they began to start

    @property
    def started(self) -> tuple[HostService, ...]:
        return tuple(self._started)

    async def __aenter__(self) -> ServiceGroup:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        ready = {service.spec.name: asyncio.Event() for service in self.services}

        async def bring_up(service: HostService) -> None:
            for dependency in sorted(self.graph[service.spec.name]):
                await ready[dependency].wait()
            self._started.append(service)
            await service.start()
            ready[service.spec.name].set()

        tasks = [
            asyncio.create_task(bring_up(s), name=f"vmlab-start-{s.spec.name}")
            for s in self.services
        ]
        try:
            if tasks:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in tasks:  # the lab's order decides which failure is reported
                if task.done() and not task.cancelled() and task.exception() is not None:
                    task.result()
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop every started service, the last started first."""
        started = list(self._started)
        try:
            for service in reversed(started):
                await service.stop()
        finally:
            for service in started:
                service.kill_now()
