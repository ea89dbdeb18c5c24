"""Host services with real processes: readiness by tcp, log and cmd; early exits,
timeouts, SIGTERM then SIGKILL, capability order, and nothing left running.

No VM boots here. The container path itself cannot run on this machine (no
podman, and a docker client without a daemon), so only its error without a
runtime and its argv are tested.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from vmlab.errors import ConfigError, HostError, ServiceError
from vmlab.service_spec import CmdReady, LogReady, ServiceSpec, TcpReady, needed_services
from vmlab.services import (
    HostService,
    ServiceEvent,
    ServiceGroup,
    ServiceReady,
    ServiceStarted,
    ServiceState,
    ServiceStopped,
    container_argv,
)


def spec(name: str, command: str | list[str], cwd: Path, **fields: Any) -> ServiceSpec:
    argv = ("/bin/sh", "-c", command) if isinstance(command, str) else tuple(command)
    for key in ("requires", "provides"):
        if key in fields:
            fields[key] = frozenset(fields[key])
    return ServiceSpec(name=name, argv=argv, cwd=cwd, **fields)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of group `pgid`, read from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != b"Z":
            members.append(int(entry.name))
    return members


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :].split()[0] != b"Z"


def state_of(service: HostService) -> ServiceState:
    """`service.state`, which mypy would keep narrowed across an `async with`."""
    return service.state


def kinds(events: list[ServiceEvent]) -> list[tuple[str, str]]:
    return [(type(e).__name__, e.service) for e in events]


# ------------------------------------------------------------------ readiness


async def test_tcp_ready_with_a_real_http_server(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "hello.txt").write_text("hello from the host\n")
    web = spec(
        "web",
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        tmp_path,
        ready=TcpReady(port),
    )
    events: list[ServiceEvent] = []
    async with HostService(web, tmp_path / "logs", emit=events.append) as service:
        assert service.state is ServiceState.READY
        pid = service.pid
        assert pid is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /hello.txt HTTP/1.0\r\n\r\n")
        answer = await reader.read()
        writer.close()
        assert answer.startswith(b"HTTP/1.0 200")
        assert answer.endswith(b"hello from the host\n")

    assert state_of(service) is ServiceState.STOPPED
    assert not pid_alive(pid)
    assert group_members(pid) == []
    assert kinds(events) == [
        ("ServiceStarted", "web"),
        ("ServiceReady", "web"),
        ("ServiceStopped", "web"),
    ]
    ready = events[1]
    assert isinstance(ready, ServiceReady)
    assert ready.check == f"tcp 127.0.0.1:{port}"
    stopped = events[2]
    assert isinstance(stopped, ServiceStopped)
    assert (stopped.how, stopped.status) == ("stopped", -signal.SIGTERM)
    # stderr is in the artifact log too: http.server logs each request there
    assert '"GET /hello.txt HTTP/1.0" 200' in (tmp_path / "logs" / "web.log").read_text()


async def test_log_ready_matches_a_line_of_its_output(tmp_path: Path) -> None:
    command = "echo starting; sleep 0.2; echo 'listening on port 1234' >&2; exec sleep 600"
    chatty = spec("chatty", command, tmp_path, ready=LogReady(r"listening on port \d+"))
    async with HostService(chatty, tmp_path) as service:
        assert service.tail()[-2:] == ["starting", "listening on port 1234"]
        pid = service.pid
        assert pid is not None and pid_alive(pid)
    assert group_members(pid) == []
    assert (tmp_path / "chatty.log").read_text() == "starting\nlistening on port 1234\n"


async def test_cmd_ready_polls_a_host_command(tmp_path: Path) -> None:
    command = "sleep 0.3; touch ready.flag; exec sleep 600"
    slow = spec("slow", command, tmp_path, ready=CmdReady("test -e ready.flag"))
    async with HostService(slow, tmp_path / "logs") as service:
        assert (tmp_path / "ready.flag").exists()  # cwd is the spec's
        pid = service.pid
        assert pid is not None
    assert group_members(pid) == []


async def test_env_is_added_to_the_environment(tmp_path: Path) -> None:
    command = 'echo "greeting=$GREETING home=${HOME:+set}"; exec sleep 600'
    greeter = spec(
        "greeter", command, tmp_path, env=(("GREETING", "hi"),), ready=LogReady("greeting=")
    )
    async with HostService(greeter, tmp_path) as service:
        assert service.tail() == ["greeting=hi home=set"]


# ------------------------------------------------------------------ failures


@pytest.mark.parametrize("kind", ["tcp", "log", "cmd"])
async def test_never_ready_is_one_line_naming_the_check_and_leaves_nothing(
    tmp_path: Path, kind: str
) -> None:
    port = free_port()
    ready = {"tcp": TcpReady(port), "log": LogReady("never printed"), "cmd": CmdReady("false")}
    # a child in the background: the whole group must go, not just the leader
    stuck = spec(
        "stuck",
        "echo waiting; sleep 600 & exec sleep 600",
        tmp_path,
        ready=ready[kind],
        ready_timeout_s=1.0,
        stop_timeout_s=2.0,
    )
    service = HostService(stuck, tmp_path)
    with pytest.raises(ServiceError) as caught:
        await service.start()
    message = caught.value.message
    assert "\n" not in message
    check = {
        "tcp": f"tcp 127.0.0.1:{port}: connection refused",
        "log": "log line matching 'never printed': no line matched",
        "cmd": "cmd 'false': exit status 1",
    }[kind]
    assert message == (
        f"service stuck: not ready after 1s: {check}; last line: 'waiting' "
        f"(log: {tmp_path / 'stuck.log'})"
    )
    assert "waiting" in caught.value.details
    assert service.state is ServiceState.FAILED
    assert service.pid is not None
    assert not pid_alive(service.pid)
    assert group_members(service.pid) == []


async def test_exit_before_ready_names_status_check_and_last_lines(tmp_path: Path) -> None:
    port = free_port()
    broken = spec(
        "broken",
        "echo reading config; echo 'fatal: no such file: server.conf' >&2; exit 3",
        tmp_path,
        ready=TcpReady(port),
    )
    events: list[ServiceEvent] = []
    with pytest.raises(ServiceError) as caught:
        async with HostService(broken, tmp_path, emit=events.append):
            raise AssertionError("not reached")
    assert caught.value.message == (
        f"service broken: exited (exit status 3) before it was ready (tcp 127.0.0.1:{port}); "
        f"last line: 'fatal: no such file: server.conf' (log: {tmp_path / 'broken.log'})"
    )
    assert "  reading config\n  fatal: no such file: server.conf" in caught.value.details
    assert kinds(events) == [("ServiceStarted", "broken"), ("ServiceStopped", "broken")]


async def test_a_command_that_does_not_exist(tmp_path: Path) -> None:
    missing = spec("missing", ["/nonexistent/server"], tmp_path)
    with pytest.raises(
        ServiceError, match=r"^service missing: cannot start '/nonexistent/server': "
    ):
        await HostService(missing, tmp_path).start()


async def test_a_port_already_taken_is_an_error_before_start(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        late = spec("late", "exec sleep 600", tmp_path, ready=TcpReady(port))
        service = HostService(late, tmp_path)
        with pytest.raises(ServiceError, match="already accepts connections before the service"):
            await service.start()
    assert service.pid is None  # nothing was started


async def test_sigterm_ignored_means_sigkill_after_stop_timeout(tmp_path: Path) -> None:
    # SIG_IGN survives exec: sleep ignores SIGTERM too
    stubborn = spec(
        "stubborn",
        "trap '' TERM; echo up; exec sleep 600",
        tmp_path,
        ready=LogReady("^up$"),
        stop_timeout_s=0.5,
    )
    events: list[ServiceEvent] = []
    async with HostService(stubborn, tmp_path, emit=events.append) as service:
        pid = service.pid
        assert pid is not None
    stopped = events[-1]
    assert isinstance(stopped, ServiceStopped)
    assert stopped.how == "killed after 0.5s (SIGTERM ignored)"
    assert stopped.status == -signal.SIGKILL
    assert group_members(pid) == []


async def test_cancelled_while_waiting_leaves_nothing_running(tmp_path: Path) -> None:
    events: list[ServiceEvent] = []
    waiting = spec("waiting", "sleep 600 & exec sleep 600", tmp_path, ready=CmdReady("false"))
    service = HostService(waiting, tmp_path, emit=events.append)
    task = asyncio.create_task(service.start())
    while not events:
        await asyncio.sleep(0.02)
    started = events[0]
    assert isinstance(started, ServiceStarted)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert group_members(started.pid) == []
    assert service.state is ServiceState.FAILED


_HOLDER = """
import asyncio, sys
from pathlib import Path
from vmlab.service_spec import LogReady, ServiceSpec
from vmlab.services import HostService

async def main() -> None:
    spec = ServiceSpec(
        name="forks", argv=("/bin/sh", "-c", "sleep 600 & echo up; exec sleep 600"),
        cwd=Path(sys.argv[1]), ready=LogReady("up"),
    )
    async with HostService(spec, Path(sys.argv[1])) as service:
        print(service.pid, flush=True)
        await asyncio.sleep(600)

asyncio.run(main())
"""


async def test_nothing_outlives_a_sigkilled_vmlab(tmp_path: Path) -> None:
    """PDEATHSIG covers the service's own process; its guard covers what it forked."""
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _HOLDER, str(tmp_path), stdout=asyncio.subprocess.PIPE
    )
    assert holder.stdout is not None
    line = await asyncio.wait_for(holder.stdout.readline(), 60)
    pgid = int(line)
    assert len(group_members(pgid)) == 2  # the service and the sleep it forked
    holder.kill()
    await holder.wait()
    for _ in range(100):  # a bound, not a timing assertion: the guard acts at once
        if not group_members(pgid):
            break
        await asyncio.sleep(0.05)
    assert group_members(pgid) == []


async def test_exited_during_the_run_is_said_when_stopping(tmp_path: Path) -> None:
    events: list[ServiceEvent] = []
    brief = spec("brief", "echo up; sleep 0.2; exit 7", tmp_path, ready=LogReady("up"))
    async with HostService(brief, tmp_path, emit=events.append) as service:
        assert service.pid is not None
        while pid_alive(service.pid):
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.1)  # the exit status reaches asyncio's watcher
    stopped = events[-1]
    assert isinstance(stopped, ServiceStopped)
    assert stopped.status == 7
    assert stopped.how == "had exited by itself (exit status 7) during the run"


# ------------------------------------------------------------------ several services


async def test_group_starts_in_capability_order_and_stops_in_reverse(tmp_path: Path) -> None:
    # a becomes ready only once c has run: if independent services did not start
    # concurrently (a before c), a would never be ready.
    services = [
        spec("b", "echo b-up; exec sleep 600", tmp_path, requires={"a.up"}, ready=LogReady("b-up")),
        spec(
            "a",
            "exec sleep 600",
            tmp_path,
            provides={"a.up"},
            ready=CmdReady("test -e c.flag"),
            ready_timeout_s=10.0,
        ),
        spec("c", "touch c.flag; exec sleep 600", tmp_path),
    ]
    events: list[ServiceEvent] = []
    async with ServiceGroup(services, tmp_path / "services", emit=events.append) as group:
        pids = {s.spec.name: s.pid for s in group.started}
        assert all(s.state is ServiceState.READY for s in group.services)
    order = kinds(events)
    assert order.index(("ServiceReady", "a")) < order.index(("ServiceStarted", "b"))
    stops = [name for kind, name in order if kind == "ServiceStopped"]
    assert stops.index("b") < stops.index("a")
    assert stops == [s.spec.name for s in reversed(group.started)]
    for name in ("a", "b", "c"):
        assert (tmp_path / "services" / f"{name}.log").exists()
        pid = pids[name]
        assert pid is not None and group_members(pid) == []


async def test_group_failure_stops_the_services_already_up(tmp_path: Path) -> None:
    services = [
        spec("db", "echo db-up; exec sleep 600", tmp_path, provides={"db"}, ready=LogReady("up")),
        spec("app", "exit 1", tmp_path, requires={"db"}, ready=LogReady("never")),
    ]
    events: list[ServiceEvent] = []
    group = ServiceGroup(services, tmp_path, emit=events.append)
    with pytest.raises(ServiceError, match=r"^service app: exited \(exit status 1\)"):
        await group.start()
    assert [s.state for s in group.services] == [ServiceState.STOPPED, ServiceState.FAILED]
    db_pid = group.services[0].pid
    assert db_pid is not None and group_members(db_pid) == []
    assert kinds(events)[-2:] == [("ServiceStopped", "app"), ("ServiceStopped", "db")]


def test_group_requirements_and_cycles_are_config_errors(tmp_path: Path) -> None:
    lonely = spec("lonely", "true", tmp_path, requires={"nfs.up"}, where="vmlab.toml:3")
    with pytest.raises(ConfigError) as caught:
        ServiceGroup([lonely], tmp_path)
    assert caught.value.message == (
        "vmlab.toml:3: service.lonely: requires 'nfs.up', which no service provides"
    )
    cycle = [
        spec("x", "true", tmp_path, requires={"y.up"}, provides={"x.up"}, where="vmlab.toml:1"),
        spec("y", "true", tmp_path, requires={"x.up"}, provides={"y.up"}, where="vmlab.toml:5"),
    ]
    with pytest.raises(ConfigError, match=r"capability cycle: service\.(x|y) -> service\."):
        ServiceGroup(cycle, tmp_path)


def test_needed_services(tmp_path: Path) -> None:
    services = [
        spec("nfs", "true", tmp_path, provides={"nfs.server"}, requires={"disk"}),
        spec("disk", "true", tmp_path, provides={"disk"}),
        spec("web", "true", tmp_path, provides={"web"}),
        spec("logger", "true", tmp_path),  # provides nothing: serves the whole lab
    ]
    chosen = needed_services(services, {"nfs.server", "tinyfs.built"})
    assert [s.name for s in chosen] == ["nfs", "disk", "logger"]
    assert [s.name for s in needed_services(services, ())] == ["logger"]


# ------------------------------------------------------------------ containers


def test_container_without_podman_or_docker_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This machine has a docker client without a daemon and no podman, so the
    # container path itself cannot run here; an empty PATH hides both.
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    db = ServiceSpec(name="db", argv=(), cwd=tmp_path, container="postgres:16")
    expected = (
        "service db: container = 'postgres:16' needs podman or docker, and neither is on PATH "
        "(install podman, or drop container to run the command on the host)"
    )
    with pytest.raises(HostError) as caught:
        ServiceGroup([spec("host-side", "true", tmp_path), db], tmp_path)
    assert caught.value.message == expected
    with pytest.raises(HostError):
        HostService(db, tmp_path)


def test_container_argv(tmp_path: Path) -> None:
    db = ServiceSpec(
        name="db",
        argv=("/bin/sh", "-c", "exec postgres"),
        cwd=tmp_path,
        env=(("POSTGRES_PASSWORD", "x"),),
        container="postgres:16",
        cwd_given=True,
    )
    assert container_argv(db, "/usr/bin/podman", "vmlab-db-1") == [
        "/usr/bin/podman", "run", "--rm", "--name", "vmlab-db-1", "--label", "vmlab.service=db",
        "--network", "host", "--env", "POSTGRES_PASSWORD=x",
        "--volume", f"{tmp_path}:{tmp_path}", "--workdir", str(tmp_path),
        "postgres:16", "/bin/sh", "-c", "exec postgres",
    ]  # fmt: skip
    plain = ServiceSpec(name="db", argv=(), cwd=tmp_path, container="postgres:16")
    assert container_argv(plain, "docker", "n")[-3:] == ["--network", "host", "postgres:16"]
