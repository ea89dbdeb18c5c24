"""The Python API the test engine builds on: `async with QemuMachine(...)`, several
`run()` calls in one VM, timeouts, crashes, cancellation, and the accel probe."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from vmlab.errors import (
    CommandNotFound,
    CommandTimeout,
    ExitCode,
    GuestCrashed,
    GuestError,
    InfraError,
)
from vmlab.guest.channel import Command, User
from vmlab.machine.probes import choose_accel
from vmlab.machine.qemu import MachineState, QemuMachine, prepare_boot
from vmlab.machine.spec import Accel, MachineSpec, Share

from .vmtools import VmEnv, runtime_dirs, vmlab_qemus

pytestmark = [pytest.mark.vm]

PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"


def sh(script: str, *, cwd: str | None = None, user: User | None = None) -> Command:
    return Command(argv=("sh", "-c", script), env={"PATH": PATH}, cwd=cwd, user=user)


def state(vm: QemuMachine) -> MachineState:
    return vm.state  # read afresh (mypy would narrow `vm.state` across awaits)


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting to be reaped does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def _until(what: str, check: Callable[[], object], seconds: float = 120.0) -> None:
    """Poll `check()` until true: a bounded wait for an event, not a timing check."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.mark.timeout(240)
async def test_one_machine_runs_many_commands(tmp_path: Path, vm_env: VmEnv) -> None:
    (tmp_path / "data").write_text("shared\n")
    spec = MachineSpec(
        accel=Accel.TCG, name="api", shares=(Share(tmp_path, Path("/mnt/t"), writable=True),)
    )
    vm = QemuMachine(spec)
    async with vm:
        assert state(vm) is MachineState.RUNNING
        # The census of the leak check sees exactly this VM (so it can fail).
        assert [q.pid for q in vmlab_qemus(vm_env.tag)] == [vm.pid]
        runtime = vm.runtime_dir
        assert runtime is not None
        assert runtime_dirs(vm_env.runtime) == [runtime]

        result = await vm.run(Command(argv=("echo", "hello"), env={"PATH": PATH}))
        assert (result.status, result.stdout, result.stderr) == (0, b"hello\n", b"")
        assert result.ok

        for code in (1, 42, 255):
            assert (await vm.run(sh(f"echo {code} >&2; exit {code}"))).status == code
        assert (await vm.run(sh("kill -KILL $$"))).status == 128 + 9

        result = await vm.run(Command(argv=("wc", "-c"), env={"PATH": PATH}), stdin=b"abc" * 1000)
        assert result.stdout == b"3000\n"

        out: list[bytes] = []
        err: list[bytes] = []
        result = await vm.run(
            sh("echo a; echo b >&2; echo c"),
            on_stdout=out.append,
            on_stderr=err.append,
            capture=False,
        )
        assert (result.stdout, result.stderr) == (b"", b"")
        assert (b"".join(out), b"".join(err)) == (b"a\nc\n", b"b\n")

        result = await vm.run(
            Command(
                argv=("sh", "-c", 'pwd; echo "A=$A"; env | grep -c ^ ; hostname'),
                env={"PATH": PATH, "A": "x y"},
                cwd="/mnt/t",
            )
        )
        # env is the whole environment: PATH and A, and what sh itself adds (PWD...).
        lines = result.stdout.decode().splitlines()
        assert lines[:2] == ["/mnt/t", "A=x y"]
        assert int(lines[2]) <= 5
        assert lines[3] == "api"

        result = await vm.run(sh("cat /mnt/t/data; echo back >/mnt/t/out"))
        assert result.stdout == b"shared\n"
        assert (tmp_path / "out").read_text() == "back\n"

        nobody = User(65534, 65534, (65534, 100))
        result = await vm.run(sh("id -u; id -g; id -G", user=nobody))
        assert result.stdout == b"65534\n65534\n65534 100\n"
        result = await vm.run(sh("id -G", user=User(65534, 65534)))
        assert result.stdout == b"65534\n"  # no supplementary groups kept from root

        with pytest.raises(CommandNotFound) as not_found:
            await vm.run(Command(argv=("no-such-command-vmlab",), env={"PATH": PATH}))
        assert not_found.value.exit_code == ExitCode.NOT_FOUND
        with pytest.raises(GuestError, match="/nonexistent"):
            await vm.run(sh("true", cwd="/nonexistent"))

        # Concurrent callers are served one at a time, each with its own output.
        results = await asyncio.gather(*(vm.run(sh(f"echo {i}; exit {i}")) for i in range(3)))
        assert [(r.status, r.stdout) for r in results] == [(i, f"{i}\n".encode()) for i in range(3)]

        pid = vm.pid
        assert pid is not None
    assert state(vm) is MachineState.STOPPED
    assert (vm.pid, vm.runtime_dir) == (None, None)
    assert not runtime.exists()
    assert not _alive(pid)
    await vm.stop()  # a second stop is harmless
    assert state(vm) is MachineState.STOPPED


@pytest.mark.timeout(180)
async def test_command_timeout_then_the_same_vm_still_works(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    async with QemuMachine(MachineSpec(accel=Accel.TCG), console_log=log) as vm:
        with pytest.raises(CommandTimeout) as info:
            await vm.run(sh("echo begun; exec sleep 600"), timeout=2)
        assert info.value.exit_code == ExitCode.TIMEOUT
        assert "timed out" in info.value.message
        assert str(log) in info.value.message
        assert state(vm) is MachineState.RUNNING
        count_sleeps = "for c in /proc/[0-9]*/comm; do cat $c; done 2>/dev/null | grep -cx sleep"
        result = await vm.run(sh(f"echo after; {count_sleeps}"))
        assert result.stdout == b"after\n0\n"  # the timed-out command is gone too
    console = log.read_text(errors="replace")
    assert "sysrq: Show State" in console
    assert "task:sleep" in console


@pytest.mark.timeout(180)
async def test_a_crash_raises_guest_crashed_and_the_machine_is_dead(
    tmp_path: Path, vm_env: VmEnv
) -> None:
    log = tmp_path / "console.log"
    async with QemuMachine(MachineSpec(accel=Accel.TCG), console_log=log) as vm:
        assert (await vm.run(sh("true"))).ok
        with pytest.raises(GuestCrashed) as info:
            await vm.run(sh("echo c >/proc/sysrq-trigger; sleep 600"))
        assert info.value.exit_code == ExitCode.GUEST_CRASH
        assert "sysrq triggered crash" in info.value.title
        assert f"(console log: {log})" in info.value.message
        assert state(vm) is MachineState.DEAD
        with pytest.raises(InfraError):
            await vm.run(sh("true"))
    assert "Kernel panic - not syncing: sysrq triggered crash" in log.read_text(errors="replace")
    assert vmlab_qemus(vm_env.tag) == []
    assert runtime_dirs(vm_env.runtime) == []


@pytest.mark.timeout(180)
async def test_output_of_one_command_never_shows_up_in_the_next(tmp_path: Path) -> None:
    # The first command leaves a background process that writes after the
    # command is done; the second command's output must be its own.
    marker = tmp_path / "late-written"
    release = tmp_path / "release"
    script = (
        f"(while [ ! -e {release} ]; do sleep 0.1; done; "
        f"echo late-out; echo late-err >&2; touch {marker}) & echo first"
    )
    spec = MachineSpec(accel=Accel.TCG, shares=(Share(tmp_path, tmp_path, writable=True),))
    async with QemuMachine(spec) as vm:
        first = await vm.run(sh(script, cwd=str(tmp_path)))
        assert (first.stdout, first.stderr) == (b"first\n", b"")
        release.touch()
        await _until("the background writer", marker.exists)
        await asyncio.sleep(0.5)  # let its bytes reach the host: they are stray now
        second = await vm.run(sh("echo second"))
        assert (second.stdout, second.stderr) == (b"second\n", b"")


@pytest.mark.timeout(120)
async def test_cancelling_a_boot_stops_qemu_and_removes_its_files(vm_env: VmEnv) -> None:
    vm = QemuMachine(MachineSpec(accel=Accel.TCG))
    boot = asyncio.create_task(vm.start())
    try:
        await _until("QEMU to start", lambda: vm.pid is not None or boot.done())
        pid = vm.pid
        assert pid is not None and not boot.done()
        boot.cancel()
        with pytest.raises(asyncio.CancelledError):
            await boot
        left = (_alive(pid), runtime_dirs(vm_env.runtime))
        assert left == (False, []), "a cancelled boot left QEMU running or its files"
    finally:
        await vm.stop()


@pytest.mark.timeout(120)
async def test_the_kvm_probe_leaves_no_stray_warnings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The probe boots a guest under KVM with a deadline; on these hosts that
    # guest fails at once or hangs. Either way it must end quietly, so that
    # `vmlab run` prints nothing but its one-line notice. A race between
    # reaping the probe's QEMU and killing it shows only now and then: probe
    # many times (fresh caches), within a bounded time.
    image = await prepare_boot(MachineSpec(accel=Accel.TCG))
    caplog.set_level(logging.WARNING)
    deadline = time.monotonic() + 40
    probes = 0
    while probes < 100 and time.monotonic() < deadline:
        monkeypatch.setenv("VMLAB_CACHE_DIR", str(tmp_path / f"cache{probes}"))
        choice = await choose_accel(
            Accel.AUTO, image.kernel.boot_path, image.kernel.kernel.sha256, image.initrd
        )
        assert choice.accel is Accel.TCG  # /dev/kvm exists, guests cannot run under it
        assert choice.notice
        probes += 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [], f"after {probes} probes"


@pytest.mark.timeout(180)
async def test_control_loop_answers_while_a_command_runs(vm_env: VmEnv) -> None:
    # Heartbeats, SysRq and kill requests travel beside a running command; an
    # answer lost on the way would turn every long test into a false HANG.
    async with QemuMachine(MachineSpec(accel=Accel.TCG)) as vm:
        assert vm.channel is not None
        running = asyncio.ensure_future(vm.run(Command(argv=("sleep", "3"), env={"PATH": PATH})))
        await asyncio.sleep(0.5)
        await vm.channel.ping(timeout=5)
        await vm.channel.sysrq("h", timeout=5)
        assert (await running).status == 0
