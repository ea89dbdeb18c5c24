"""pytest plugin: a `vm` fixture that drives a vmlab machine from host-side tests.

A lab test `pytest = "tests/test_fs.py"` is an ordinary pytest file whose
tests take a `vm` fixture (a `vmlab.guest.rpc.VmClient`)::

    def test_mount(vm, tmp_path):
        vm.run("mount -t tinyfs none /mnt", check=True)
        vm.copy_to(tmp_path / "input", "/mnt/input")
        result = vm.run(["cat", "/mnt/input"], timeout=10)
        assert result.status == 0
        vm.copy_from("/var/log/out.log", tmp_path)
        assert "BUG" not in "\\n".join(vm.console_tail(200))

Under `vmlab test`, `vm` is the suite's running machine: vmlab starts pytest
with `VMLAB_VM_SOCKET` set and serves the machine there. Under a plain
`pytest` run the plugin boots a machine of its own, once per session::

    pytest -p vmlab.pytest_plugin --vmlab-lab path/to/vmlab.toml --vmlab-machine fs tests/

`--vmlab-lab` (a lab file or its directory) and `--vmlab-machine` pick the
machine: its spec, `modules_load` and `setup`, with the lab's directory shared
writable at the same path and used as the default working directory, as
`vmlab test` does. `--vmlab-machine` may be left out when the lab has one
machine; without either option the machine is the host's kernel over the
host's root (`MachineSpec(accel=auto)`). The machine runs in a background
thread with its own event loop and is served over a private socket, so the
fixture is the same `VmClient` either way; it is stopped, and its files
removed, when the session ends (failures and Ctrl-C included).

`vm_fresh` is `vm` rebooted just before the test (about one boot's time):
for tests that must not see what earlier ones left. A failing test that used
either gets the last lines of the guest's console in its report.

In a lab file (docs/lab-file.md), each pytest file is one test whose pytest
tests become results of their own::

    [[suite.filesystem.test]]
    name = "crud"
    pytest = "tests/fs/test_crud.py"   # relative to the lab file
    timeout = "5m"                     # for the whole file

The plugin is inert until a test asks for `vm`: no vmlab module beyond this
one is imported and nothing boots.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from vmlab.config_specs import MachineConfig
    from vmlab.guest.rpc import VmClient

SOCKET_ENV = "VMLAB_VM_SOCKET"
STOP_TIMEOUT = 60.0  # seconds to wait for the machine's thread at the end


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("vmlab", "vmlab: tests against a virtual machine (the vm fixture)")
    group.addoption(
        "--vmlab-lab",
        metavar="PATH",
        default=None,
        help="lab file (or its directory) whose machine the vm fixture boots",
    )
    group.addoption(
        "--vmlab-machine",
        metavar="NAME",
        default=None,
        help="machine of the lab to boot (default: the lab's only machine)",
    )


@pytest.fixture(scope="session")
def vm(request: pytest.FixtureRequest) -> Iterator[VmClient]:
    """The machine under test, as a `vmlab.guest.rpc.VmClient`."""
    from vmlab.errors import VmlabError  # noqa: PLC0415 (inert until used)
    from vmlab.guest.rpc import VmClient  # noqa: PLC0415

    host: _VmHost | None = None
    try:
        path = os.environ.get(SOCKET_ENV)
        if not path:
            host = _VmHost(*_machine_from_options(request.config))
            path = str(host.start())
        client = VmClient(path)
    except VmlabError as exc:
        if host is not None:
            host.stop()
        pytest.fail(f"vmlab: {exc.message}", pytrace=False)
    except BaseException:
        if host is not None:
            host.stop()
        raise
    try:
        yield client
    finally:
        client.close()
        if host is not None:
            host.stop()


@pytest.fixture
def vm_fresh(vm: VmClient) -> VmClient:
    """`vm`, rebooted (and set up again) just before the test."""
    from vmlab.errors import VmlabError  # noqa: PLC0415

    try:
        vm.reboot()
    except VmlabError as exc:
        pytest.fail(f"vmlab: reboot failed: {exc.message}", pytrace=False)
    return vm


CONSOLE_LINES = 30  # console lines added to a failing test's report


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call" and report.failed:
        funcargs = getattr(item, "funcargs", {})
        client = funcargs.get("vm_fresh") or funcargs.get("vm")
        if client is not None:
            try:
                lines = client.console_tail(CONSOLE_LINES)
            except Exception:  # the machine or the server is gone: nothing to add
                lines = []
            if lines:
                title = f"vmlab console (last {CONSOLE_LINES} lines)"
                report.sections.append((title, "\n".join(lines)))
    return report


def _machine_from_options(config: pytest.Config) -> tuple[MachineConfig, Path | None]:
    """The machine the options name, with the lab's directory (None: no lab)."""
    from dataclasses import replace  # noqa: PLC0415

    from vmlab.config import MachineConfig, load_lab  # noqa: PLC0415
    from vmlab.errors import UsageError  # noqa: PLC0415
    from vmlab.machine.spec import Accel, MachineSpec, Share  # noqa: PLC0415

    lab_option: str | None = config.getoption("vmlab_lab")
    name: str | None = config.getoption("vmlab_machine")
    if lab_option is None and name is None:
        return MachineConfig("vm", MachineSpec(accel=Accel.AUTO)), None
    where = config.invocation_params.dir
    lab = load_lab(where / lab_option if lab_option else where)
    if name is None:
        if len(lab.machines) != 1:
            raise UsageError(
                f"{lab.path}: {len(lab.machines)} machines ({', '.join(lab.machines)}): "
                "choose one with --vmlab-machine"
            )
        name = next(iter(lab.machines))
    if name not in lab.machines:
        raise UsageError(
            f"{lab.path}: no machine {name!r} (the lab has: {', '.join(lab.machines)})"
        )
    machine = lab.machines[name]
    spec = machine.spec
    if all(share.guest != lab.root for share in spec.shares):
        spec = replace(spec, shares=(*spec.shares, Share(lab.root, lab.root, writable=True)))
    return replace(machine, spec=spec), lab.root


def _runtime_base() -> Path:
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    return Path(xdg) if xdg and os.access(xdg, os.W_OK) else Path(tempfile.gettempdir())


class _VmHost:
    """One machine in a background thread (its own event loop: the plugin's
    `asyncio.run`), served by a `VmRpcServer` on a socket in a private
    directory. `start()` returns once it is booted and set up; `stop()`
    stops it and removes every file, from any state."""

    def __init__(self, machine: MachineConfig, lab_root: Path | None) -> None:
        self._machine = machine
        self._lab_root = lab_root
        self.dir: Path | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # -- the test's thread ---------------------------------------------------

    def start(self) -> Path:
        self.dir = Path(tempfile.mkdtemp(prefix="vmlab-pytest-", dir=_runtime_base()))
        socket_path = self.dir / "vm.sock"
        self._thread = threading.Thread(
            target=self._thread_main, args=(socket_path,), name="vmlab-vm", daemon=True
        )
        try:
            self._thread.start()
            self._ready.wait()
        except BaseException:
            self.stop()
            raise
        if self._error is not None:
            error = self._error
            self.stop()
            raise error
        return socket_path

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            loop, task = self._loop, self._task
        thread = self._thread
        try:
            if loop is not None and task is not None:
                with contextlib.suppress(RuntimeError):  # the loop is gone already
                    loop.call_soon_threadsafe(task.cancel)
            if thread is not None:
                thread.join(STOP_TIMEOUT)
        finally:
            if self.dir is not None:
                shutil.rmtree(self.dir, ignore_errors=True)
                self.dir = None

    # -- the machine's thread ------------------------------------------------

    def _thread_main(self, socket_path: Path) -> None:
        try:
            asyncio.run(self._main(socket_path))
        except BaseException as exc:  # CancelledError too: stop() ends it that way
            if not self._stopping:
                self._error = exc
        finally:
            self._ready.set()

    async def _main(self, socket_path: Path) -> None:
        from vmlab.guest.rpc import VmRpcServer  # noqa: PLC0415
        from vmlab.pytest_runner import MachineSlot  # noqa: PLC0415

        with self._lock:
            self._loop = asyncio.get_running_loop()
            self._task = asyncio.current_task()
            if self._stopping:
                return
        assert self.dir is not None
        slot = MachineSlot(self._machine, console_dir=self.dir, cwd=self._lab_root)
        try:
            await slot.get_vm()  # boot now: a broken machine fails the fixture
            cwd = str(self._lab_root) if self._lab_root is not None else None
            async with VmRpcServer(socket_path, slot.get_vm, slot.reboot_vm, cwd=cwd):
                self._ready.set()
                await asyncio.Event().wait()  # until stop() cancels this task
        finally:
            await slot.close()
