"""The `vm` fixture end to end: the RPC against real guests, `run_pytest` as the
session calls it, and the plugin under a plain `pytest` (TCG guests here).

The lab is tests/data/pytest_lab: `check_guest.py` has 7 passing tests and one
that fails on purpose; `slow_guest.py` hangs in the guest (timeouts, Ctrl-C).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from copy_trees import make_tree, snapshot, without_specials
from vmlab.config import MachineConfig, load_lab
from vmlab.errors import CommandNotFound, CommandTimeout, GuestCrashed, GuestError, UsageError
from vmlab.guest.channel import Command
from vmlab.guest.rpc import CommandFailed, VmClient, VmRpcServer, encode_message
from vmlab.machine.spec import Accel, MachineSpec, Share
from vmlab.pytest_runner import MachineSlot, plugin_name, run_pytest

pytestmark = [pytest.mark.vm]

LAB = Path(__file__).resolve().parents[1] / "data" / "pytest_lab"
PLAIN = MachineConfig("plain", MachineSpec(memory_mib=256, accel=Accel.TCG, name="plain"))


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path (unix sockets hold at most 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="rpc-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def served(
    short_dir: Path, tmp_path: Path
) -> AsyncIterator[tuple[VmRpcServer, VmClient, MachineSlot]]:
    slot = MachineSlot(PLAIN, console_dir=tmp_path)
    try:
        await slot.get_vm()
        async with VmRpcServer(short_dir / "vm.sock", slot.get_vm, slot.reboot_vm) as server:
            client = await asyncio.to_thread(VmClient, server.path)
            try:
                yield server, client, slot
            finally:
                client.close()
    finally:
        await slot.close()


def lab_machine() -> MachineConfig:
    """The lab's machine with the lab shared writable, as vmlab's session boots it."""
    lab = load_lab(LAB)
    machine = lab.machines["box"]
    share = Share(lab.root, lab.root, writable=True)
    return replace(machine, spec=replace(machine.spec, shares=(*machine.spec.shares, share)))


def junit_counts(xml: str) -> tuple[dict[str, int], dict[str, str]]:
    """(totals, {test name: outcome}) of a pytest JUnit XML report."""
    root = ET.fromstring(xml)
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    assert suite is not None
    totals = {key: int(suite.get(key, "0")) for key in ("tests", "failures", "errors", "skipped")}
    outcomes = {}
    for case in suite.iter("testcase"):
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        outcomes[case.get("name", "")] = kinds[0] if kinds else "passed"
    return totals, outcomes


def qemu_using(path: Path) -> list[int]:
    """Pids of processes whose command line mentions `path` (QEMUs, pytests left behind)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if os.fsencode(path) in cmdline and int(entry.name) != os.getpid():
                pids.append(int(entry.name))
    return pids


def names(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


def pgrep_sleep(client: VmClient) -> int:
    return client.run(["pgrep", "-x", "sleep"]).status


# -- the RPC against a real guest --------------------------------------------------


@pytest.mark.timeout(180)
async def test_rpc_runs_commands_and_moves_bytes(
    served: tuple[VmRpcServer, VmClient, MachineSlot], tmp_path: Path
) -> None:
    _, vm, _ = served

    def work() -> None:
        assert vm.run(["echo", "a b", "$HOME"]).stdout == b"a b $HOME\n"
        assert vm.run("echo $HOME:$PATH").stdout.startswith(b"/root:/usr/local/sbin:")
        assert vm.run("pwd").stdout == b"/\n"
        assert vm.run("pwd", cwd="/proc").stdout == b"/proc\n"
        # big payloads both ways, each one JSON line
        blob = os.urandom(5 << 20)
        digest = vm.run(["sha256sum"], stdin=blob, check=True).stdout.split()[0]
        assert digest.decode() == hashlib.sha256(blob).hexdigest()
        (tmp_path / "blob").write_bytes(blob)
        assert vm.copy_to(tmp_path / "blob", "/tmp/blob") == "/tmp/blob"
        assert vm.run(["cat", "/tmp/blob"], check=True).stdout == blob
        assert vm.run(["cat"], stdin=b"").stdout == b""
        # copies: directories take the file's name, modes are kept
        script = tmp_path / "tool.sh"
        script.write_text("#!/bin/sh\necho tool ran\n")
        script.chmod(0o755)
        assert vm.copy_to(script, "/usr/local/bin") == "/usr/local/bin/tool.sh"
        assert vm.run(["tool.sh"]).stdout == b"tool ran\n"
        vm.run("mkdir -p /srv/out && echo report > /srv/out/r.txt && chmod 600 /srv/out/r.txt")
        back = vm.copy_from("/srv/out/r.txt", tmp_path)
        assert back == tmp_path / "r.txt"
        assert (back.read_text(), back.stat().st_mode & 0o777) == ("report\n", 0o600)
        # whole directories, both ways; a relative guest path starts at the cwd (/)
        tree = make_tree(tmp_path)
        assert vm.copy_to(tree, "srv/out/") == "/srv/out/tree"
        assert vm.copy_from("/srv/out/tree", tmp_path / "tree-back") == tmp_path / "tree-back"
        assert snapshot(tmp_path / "tree-back") == without_specials(snapshot(tree))

    await asyncio.to_thread(work)


@pytest.mark.timeout(180)
async def test_rpc_errors_come_back_as_vmlab_errors(
    served: tuple[VmRpcServer, VmClient, MachineSlot], tmp_path: Path
) -> None:
    _, vm, _ = served

    def work() -> None:
        with pytest.raises(CommandNotFound, match="not found in the guest"):
            vm.run(["vmlab-no-such-command"])
        started = time.monotonic()
        with pytest.raises(CommandTimeout, match="timed out after 1 s: sleep 60"):
            vm.run("sleep 60", timeout=1)
        assert time.monotonic() - started < 30
        assert pgrep_sleep(vm) == 1  # the command was killed
        with pytest.raises(GuestError, match="does not exist"):
            vm.run("true", cwd="/no/such/dir")
        with pytest.raises(CommandFailed, match=r"command exited \d+: ls /nowhere: .*nowhere"):
            vm.run(["ls", "/nowhere"], check=True)
        with pytest.raises(GuestError, match="copy_from: cannot read /nowhere"):
            vm.copy_from("/nowhere", tmp_path / "x")
        with pytest.raises(GuestError, match="copy_to: cannot write /proc/nope"):
            (tmp_path / "f").write_text("x")
            vm.copy_to(tmp_path / "f", "/proc/nope/f")
        with pytest.raises(UsageError, match="copy_from: cannot write"):
            vm.copy_from("/etc/hostname", tmp_path / "no" / "dir" / "x")
        assert vm.run("true").ok

    await asyncio.to_thread(work)


@pytest.mark.timeout(180)
async def test_a_client_hanging_up_interrupts_its_command(
    served: tuple[VmRpcServer, VmClient, MachineSlot],
) -> None:
    server, vm, _ = served
    _, writer = await asyncio.open_unix_connection(str(server.path))
    writer.write(encode_message({"op": "run", "shell": "sleep 300"}))
    await writer.drain()
    await asyncio.sleep(1)  # let it start
    writer.close()
    started = time.monotonic()
    result = await asyncio.to_thread(vm.run, "echo after", timeout=60)
    assert result.stdout == b"after\n"
    assert time.monotonic() - started < 30  # not 300: the sleep was interrupted
    assert await asyncio.to_thread(pgrep_sleep, vm) == 1
    # A client that hangs up while it waits for its turn leaves the running command be.
    running = asyncio.ensure_future(asyncio.to_thread(vm.run, "sleep 4; echo done"))
    await asyncio.sleep(1)
    _, writer = await asyncio.open_unix_connection(str(server.path))
    writer.write(encode_message({"op": "run", "shell": "true"}))
    await writer.drain()
    await asyncio.sleep(0.5)
    writer.close()
    result = await running
    assert (result.status, result.stdout) == (0, b"done\n")


@pytest.mark.timeout(240)
async def test_console_reboot_and_crash(
    served: tuple[VmRpcServer, VmClient, MachineSlot], tmp_path: Path
) -> None:
    server, vm, slot = served

    def before_crash() -> None:
        first = vm.console_path()
        assert first == tmp_path / "console-1.log"
        assert "Linux version" in first.read_text(errors="replace")
        vm.run("touch /tmp/mark", check=True)
        assert vm.reboot() is not None
        assert vm.console_path() == tmp_path / "console-2.log"
        assert vm.run("test -e /tmp/mark").status == 1
        with pytest.raises(GuestCrashed, match="the guest kernel crashed") as crash:
            vm.run("echo c > /proc/sysrq-trigger", timeout=60)
        assert crash.value.title
        # the dead machine's console is still readable
        assert vm.console_tail(200)

    await asyncio.to_thread(before_crash)
    assert len(server.crashes) == 1
    # the next request gets a replacement machine
    assert (await asyncio.to_thread(vm.run, "echo alive")).stdout == b"alive\n"
    assert slot.boots == 3


# -- run_pytest, as vmlab's session calls it -------------------------------------


@pytest.mark.timeout(300)
async def test_run_pytest_reports_each_test(tmp_path: Path) -> None:
    slot = MachineSlot(lab_machine(), console_dir=tmp_path / "console", cwd=LAB)
    (tmp_path / "console").mkdir()
    workdir = tmp_path / "work"
    before = names(LAB)
    try:
        run = await run_pytest(
            LAB / "check_guest.py",
            get_vm=slot.get_vm,
            reboot_vm=slot.reboot_vm,
            timeout_s=240,
            workdir=workdir,
        )
    finally:
        await slot.close()
    output = run.output.decode(errors="replace")
    assert (run.status, run.timed_out) == (1, False), output
    totals, outcomes = junit_counts(run.junit_xml)
    assert totals == {"tests": 8, "failures": 1, "errors": 0, "skipped": 0}, output
    assert outcomes.pop("test_reports_failure") == "failure"
    assert set(outcomes.values()) == {"passed"}
    assert "1 failed, 7 passed" in output
    assert "vmlab console (last 30 lines)" in output  # in the failure's report
    assert run.crashes == ()
    assert slot.boots == 2  # vm_fresh rebooted it once
    assert names(workdir) == ["pytest-junit.xml"]
    assert names(LAB) == before  # no caches left in the lab


@pytest.mark.timeout(240)
async def test_run_pytest_kills_pytest_on_timeout(tmp_path: Path) -> None:
    slot = MachineSlot(lab_machine(), console_dir=tmp_path, cwd=LAB)
    try:
        await slot.get_vm()  # running already, as in vmlab's session
        started = time.monotonic()
        run = await run_pytest(
            LAB / "slow_guest.py",
            get_vm=slot.get_vm,
            reboot_vm=slot.reboot_vm,
            timeout_s=10,
            workdir=tmp_path / "work",
        )
        assert time.monotonic() - started < 90
        assert run.timed_out
        assert run.status == -signal.SIGKILL
        assert run.junit_xml == ""
        assert names(tmp_path / "work") == []
        # the machine lives on, and the hung command in it was interrupted
        assert slot.vm is not None
        vm = slot.vm
        result = await vm.run(Command(argv=("pgrep", "-x", "sleep")), timeout=30)
        assert result.status == 1
    finally:
        await slot.close()


@pytest.mark.timeout(240)
async def test_cancelling_run_pytest_kills_pytest_and_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "running"
    monkeypatch.setenv("VMLAB_TEST_MARKER", str(marker))  # pytest inherits it
    slot = MachineSlot(lab_machine(), console_dir=tmp_path, cwd=LAB)
    workdir = tmp_path / ("w" * 80)  # too long for a socket: it goes to the runtime dir
    try:
        await slot.get_vm()  # running already, as in vmlab's session
        task = asyncio.ensure_future(
            run_pytest(
                LAB / "slow_guest.py",
                get_vm=slot.get_vm,
                reboot_vm=slot.reboot_vm,
                timeout_s=200,
                workdir=workdir,
            )
        )
        deadline = time.monotonic() + 150
        while not marker.exists():
            assert not task.done(), task.result()
            assert time.monotonic() < deadline, "the test never started"
            await asyncio.sleep(0.2)
        await asyncio.sleep(1)  # into vm.run("sleep 300")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert qemu_using(LAB / "slow_guest.py") == []  # pytest is gone
        assert names(workdir) == []
        runtime = Path(os.environ["XDG_RUNTIME_DIR"])
        assert [name for name in names(runtime) if name.startswith("vmlab-pytest-")] == []
        assert slot.vm is not None
        result = await slot.vm.run(Command(argv=("pgrep", "-x", "sleep")), timeout=30)
        assert result.status == 1  # the hung command was interrupted
    finally:
        await slot.close()


# -- the plugin under a plain pytest ---------------------------------------------------


def plain_pytest(*args: str) -> list[str]:
    """A plain pytest with the plugin (named as pytest finds it once installed)."""
    return [sys.executable, "-m", "pytest", "-p", plugin_name(), "-p", "no:cacheprovider", *args]


def plain_env(runtime: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}
    env.update(XDG_RUNTIME_DIR=str(runtime), PYTHONDONTWRITEBYTECODE="1", **extra)
    env.pop("VMLAB_VM_SOCKET", None)
    return env


@pytest.mark.timeout(300)
def test_plain_pytest_boots_the_labs_machine(tmp_path: Path) -> None:
    runtime = tmp_path / "rt"
    runtime.mkdir()
    junit = tmp_path / "junit.xml"
    argv = plain_pytest("check_guest.py", "--vmlab-lab", str(LAB), f"--junitxml={junit}", "-q")
    done = subprocess.run(
        argv, cwd=LAB, env=plain_env(runtime), capture_output=True, timeout=280, check=False
    )
    output = (done.stdout + done.stderr).decode(errors="replace")
    assert done.returncode == 1, output
    totals, outcomes = junit_counts(junit.read_text())
    assert totals == {"tests": 8, "failures": 1, "errors": 0, "skipped": 0}, output
    assert outcomes["test_reports_failure"] == "failure"
    assert names(runtime) == []  # no QEMU runtime dir, socket or console log
    assert qemu_using(runtime) == []


@pytest.mark.timeout(300)
def test_plain_pytest_without_a_lab_boots_the_host_kernel(tmp_path: Path) -> None:
    runtime = tmp_path / "rt"
    runtime.mkdir()
    (tmp_path / "test_default.py").write_text(
        "def test_default(vm):\n"
        "    assert vm.run('hostname').stdout == b'vm\\n'\n"
        "    assert vm.run(['cat', '/proc/cmdline']).stdout.startswith(b'console=ttyS0')\n"
    )
    done = subprocess.run(
        plain_pytest("test_default.py", "-q"),
        cwd=tmp_path,
        env=plain_env(runtime),
        capture_output=True,
        timeout=280,
        check=False,
    )
    output = (done.stdout + done.stderr).decode(errors="replace")
    assert done.returncode == 0, output
    assert "1 passed" in output
    assert names(runtime) == []


@pytest.mark.timeout(300)
def test_ctrl_c_stops_the_machine_and_removes_its_files(tmp_path: Path) -> None:
    runtime = tmp_path / "rt"
    runtime.mkdir()
    marker = tmp_path / "running"
    proc = subprocess.Popen(
        plain_pytest("slow_guest.py", "--vmlab-lab", str(LAB), "-q"),
        cwd=LAB,
        env=plain_env(runtime, VMLAB_TEST_MARKER=str(marker)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 200
        while not marker.exists():
            assert proc.poll() is None, proc.communicate()[0].decode(errors="replace")
            assert time.monotonic() < deadline, "the test never started"
            time.sleep(0.2)
        assert qemu_using(runtime)  # the machine is up
        time.sleep(1)  # into vm.run("sleep 300")
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=60)[0].decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 2, output  # pytest's "interrupted"
    assert "KeyboardInterrupt" in output
    assert qemu_using(runtime) == []
    assert names(runtime) == []


@pytest.mark.timeout(120)
def test_plugin_is_inert_without_the_fixture(tmp_path: Path) -> None:
    (tmp_path / "test_other.py").write_text(
        "import sys, threading\n"
        "def test_nothing_loaded():\n"
        "    loaded = sorted(m for m in sys.modules if m.startswith('vmlab.'))\n"
        "    assert loaded == ['vmlab.pytest_plugin'], loaded\n"
        "    assert threading.active_count() == 1\n"
    )
    done = subprocess.run(
        plain_pytest("test_other.py", "-q"),
        cwd=tmp_path,
        env=plain_env(tmp_path),
        capture_output=True,
        timeout=60,
        check=False,
    )
    output = (done.stdout + done.stderr).decode(errors="replace")
    assert done.returncode == 0, output
    assert (
        "--vmlab-lab"
        in subprocess.run(
            plain_pytest("--help"),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        ).stdout
    )


@pytest.mark.timeout(120)
def test_a_bad_lab_fails_the_fixture_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "test_x.py").write_text("def test_x(vm):\n    pass\n")
    done = subprocess.run(
        plain_pytest("test_x.py", "--vmlab-lab", "nowhere", "-q"),
        cwd=tmp_path,
        env=plain_env(tmp_path),
        capture_output=True,
        timeout=60,
        check=False,
    )
    output = (done.stdout + done.stderr).decode(errors="replace")
    assert done.returncode == 1, output
    assert f"vmlab: {tmp_path}/nowhere: no such lab file" in output
    assert "Traceback" not in output
    assert "vmlab/pytest_plugin.py" not in output
