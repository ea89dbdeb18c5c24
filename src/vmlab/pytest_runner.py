"""Run a lab's host-side pytest file against a machine that vmlab's session owns.

A lab test `pytest = "tests/test_x.py"` runs on the host, in a pytest
subprocess, and drives the suite's running machine through the `vm` fixture
of `vmlab.pytest_plugin`. The session calls `run_pytest` with two callables
of its own: one that returns the machine to use now, one that replaces it
with a freshly booted and set-up machine. `run_pytest` serves them on a
private unix socket (`vmlab.guest.rpc`), starts pytest with
`VMLAB_VM_SOCKET` pointing at it, kills pytest's whole process group when it
outlives its timeout, and returns its status, output and JUnit XML (one
testcase per pytest test).

    run = await run_pytest(
        test.pytest, get_vm=..., reboot_vm=..., timeout_s=test.timeout_s,
        workdir=run_dir / "pytest" / name, lab_dir=lab.root,
        guest_env=dict(test.env), guest_cwd=str(test.cwd),
    )
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from vmlab.config_specs import MachineConfig
from vmlab.errors import CommandTimeout, GuestCrashed, InfraError
from vmlab.guest.channel import Command
from vmlab.guest.rpc import BASE_ENV, MachineSource, VmRpcServer
from vmlab.machine.qemu import BootImage, QemuMachine
from vmlab.machine.subprocess_util import kill_on_parent_death

PLUGIN_MODULE = "vmlab.pytest_plugin"
SOCKET_ENV = "VMLAB_VM_SOCKET"
JUNIT_FILE = "pytest-junit.xml"
_MAX_SOCKET_PATH = 100  # a unix socket path holds at most 107 bytes
_DRAIN_TIMEOUT = 5.0  # seconds to read pytest's last output once its group is dead
SETUP_TIMEOUT = 600.0  # seconds for each modules_load / setup step


@dataclass(frozen=True)
class PytestRun:
    """What one pytest run left.

    `status` is pytest's exit status (0 all passed, 1 some failed, 2
    interrupted, 3 internal error, 4 usage error, 5 nothing collected;
    negative: killed by that signal). `junit_xml` is "" when pytest wrote
    none (a usage error, or killed). `crashes` are the guest kernel crashes
    the tests ran into (each also failed the test that hit it).
    """

    status: int
    junit_xml: str
    output: bytes
    timed_out: bool
    crashes: tuple[GuestCrashed, ...] = ()
    duration_s: float = 0.0


def plugin_name() -> str:
    """How `-p` names the vmlab plugin: its `pytest11` entry point when vmlab is
    installed with one (naming the module as well would register it twice,
    which pytest refuses), else the module."""
    for entry in importlib.metadata.entry_points(group="pytest11"):
        if entry.value.split(":")[0].strip() == PLUGIN_MODULE:
            return entry.name
    return PLUGIN_MODULE


def lab_dir_of(test_file: Path) -> Path:
    """The directory of the nearest vmlab.toml above `test_file`, else its own."""
    for parent in test_file.parents:
        if (parent / "vmlab.toml").is_file():
            return parent
    return test_file.parent


def pytest_argv(test_file: Path, junit: Path, extra_args: Sequence[str] = ()) -> list[str]:
    return [
        sys.executable, "-m", "pytest", str(test_file),
        "-p", plugin_name(),
        "-p", "no:cacheprovider",  # no .pytest_cache in the lab
        f"--junitxml={junit}",
        "-q",
        *extra_args,
    ]  # fmt: skip


def _private_dir(workdir: Path) -> Path:
    """A 0700 directory for the socket: in `workdir` when the path is short
    enough for a unix socket, else in the runtime directory."""
    base = workdir
    if len(os.fsencode(workdir)) + len("/vmlab-pytest-XXXXXXXX/vm.sock") > _MAX_SOCKET_PATH:
        xdg = os.environ.get("XDG_RUNTIME_DIR")
        base = Path(xdg) if xdg and os.access(xdg, os.W_OK) else Path(tempfile.gettempdir())
    return Path(tempfile.mkdtemp(prefix="vmlab-pytest-", dir=base))


async def run_pytest(
    test_file: Path,
    *,
    get_vm: MachineSource,
    reboot_vm: MachineSource,
    timeout_s: float,
    workdir: Path,
    extra_args: Sequence[str] = (),
    lab_dir: Path | None = None,
    guest_env: Mapping[str, str] | None = None,
    guest_cwd: str | None = None,
) -> PytestRun:
    """Run `test_file`'s tests in a pytest subprocess bound to the caller's machine.

    pytest starts in `lab_dir` (default: the nearest directory above the file
    with a vmlab.toml) and writes its JUnit XML to `workdir/pytest-junit.xml`.
    Guest commands of the tests get `guest_env` on top of the defaults and run
    in `guest_cwd` (default: `lab_dir`) unless a test says otherwise. Past
    `timeout_s`, pytest and everything it started is killed and `timed_out`
    is set. A failing test is a result, not an exception; InfraError means
    pytest could not even start.
    """
    paths = await asyncio.to_thread(_prepare, test_file, lab_dir, workdir)
    private = _private_dir(workdir)  # here, not in the thread: a cancel must not leak it
    socket_path = private / "vm.sock"
    env = {
        **os.environ,
        SOCKET_ENV: str(socket_path),
        "PYTHONDONTWRITEBYTECODE": "1",  # no __pycache__ in the lab either
    }
    started = time.monotonic()
    try:
        async with VmRpcServer(
            socket_path, get_vm, reboot_vm, env=guest_env, cwd=guest_cwd or str(paths.lab)
        ) as server:
            status, output, timed_out = await _run_process(
                pytest_argv(paths.test_file, paths.junit, extra_args),
                cwd=paths.lab,
                env=env,
                timeout_s=timeout_s,
            )
        xml = await asyncio.to_thread(_read_junit, paths.junit)
        return PytestRun(
            status=status,
            junit_xml=xml,
            output=output,
            timed_out=timed_out,
            crashes=tuple(server.crashes),
            duration_s=time.monotonic() - started,
        )
    finally:
        shutil.rmtree(private, ignore_errors=True)


@dataclass(frozen=True)
class _Paths:
    test_file: Path
    lab: Path
    junit: Path


def _prepare(test_file: Path, lab_dir: Path | None, workdir: Path) -> _Paths:
    test_file = Path(os.path.abspath(test_file))
    lab = Path(os.path.abspath(lab_dir)) if lab_dir is not None else lab_dir_of(test_file)
    workdir.mkdir(parents=True, exist_ok=True)
    junit = Path(os.path.abspath(workdir / JUNIT_FILE))
    junit.unlink(missing_ok=True)  # a stale one must not pass for this run's
    return _Paths(test_file, lab, junit)


def _read_junit(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""


async def _run_process(
    argv: list[str], *, cwd: Path, env: Mapping[str, str], timeout_s: float
) -> tuple[int, bytes, bool]:
    """Run argv in its own process group: (status, stdout+stderr, timed out).

    Whatever is left of the group when pytest ends (or times out, or this task
    is cancelled) is killed, so nothing it started outlives it.
    """
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=dict(env),
            start_new_session=True,
            preexec_fn=kill_on_parent_death,
        )
    except OSError as exc:
        raise InfraError(f"cannot start pytest ({argv[0]}): {exc.strerror or exc}") from exc
    chunks: list[bytes] = []

    async def collect() -> None:
        assert proc.stdout is not None
        while data := await proc.stdout.read(1 << 16):
            chunks.append(data)

    reader = asyncio.create_task(collect(), name="vmlab-pytest-output")
    timed_out = False
    try:
        try:
            await asyncio.wait_for(proc.wait(), timeout_s)
        except TimeoutError:
            timed_out = True
    finally:
        _kill_group(proc.pid)
        try:
            if proc.returncode is None:
                await proc.wait()
            # The pipe ends when the last process holding it does; one that left
            # the group (setsid) must not hold vmlab up.
            await asyncio.wait({reader}, timeout=_DRAIN_TIMEOUT)
        finally:
            if not reader.done():
                reader.cancel()
                await asyncio.wait({reader})
    assert proc.returncode is not None
    return proc.returncode, b"".join(chunks), timed_out


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


class MachineSlot:
    """A lab machine that nobody else owns, for `run_pytest` and the plugin's
    plain-pytest mode: booted on first use, set up (`modules_load`, then
    `setup`, in `cwd`), replaced on `reboot_vm()`, stopped by `close()`.

        slot = MachineSlot(lab.machines["fs"], console_dir=tmp, cwd=lab.root)
        try:
            await run_pytest(path, get_vm=slot.get_vm, reboot_vm=slot.reboot_vm, ...)
        finally:
            await slot.close()

    Console logs go to `console_dir/console-N.log`, N counting boots.
    """

    def __init__(self, machine: MachineConfig, *, console_dir: Path, cwd: Path | None = None):
        self.machine = machine
        self.console_dir = console_dir
        self.cwd = cwd
        self.boots = 0
        self.vm: QemuMachine | None = None
        self._image: BootImage | None = None

    async def get_vm(self) -> QemuMachine:
        if self.vm is None:
            return await self._boot()
        return self.vm

    async def reboot_vm(self) -> QemuMachine:
        await self.close()
        return await self._boot()

    async def close(self) -> None:
        vm, self.vm = self.vm, None
        if vm is not None:
            await vm.stop()

    async def _boot(self) -> QemuMachine:
        self.boots += 1
        log = self.console_dir / f"console-{self.boots}.log"
        vm = QemuMachine(self.machine.spec, console_log=log, image=self._image)
        try:
            await vm.start()
            self._image = vm.image  # resolved once: later boots skip the kernel work
            await self._setup(vm)
        except BaseException:
            await vm.stop()
            raise
        self.vm = vm
        return vm

    async def _setup(self, vm: QemuMachine) -> None:
        """modules_load, then setup; a failing step is an InfraError that names it."""
        machine = self.machine
        steps = [f"modprobe {name}" for name in machine.modules_load] + list(machine.setup)
        env = {**BASE_ENV, **dict(machine.spec.env)}
        cwd = str(self.cwd) if self.cwd is not None else None
        for step in steps:
            try:
                result = await vm.run(Command(shell=step, env=env, cwd=cwd), timeout=SETUP_TIMEOUT)
            except CommandTimeout:
                raise InfraError(f"setup of {machine.name}: `{step}` timed out") from None
            if result.status != 0:
                output = (result.stderr or result.stdout).decode("utf-8", "replace").strip()
                last = output.splitlines()[-1] if output else ""
                raise InfraError(
                    f"setup of {machine.name}: `{step}` exited {result.status}"
                    + (f": {last[:200]}" if last else ""),
                    details=output[-4000:],
                )
