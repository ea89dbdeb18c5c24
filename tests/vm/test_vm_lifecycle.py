"""`vmlab run` lifecycles: several at once, Ctrl-C and SIGTERM, bad input, boot
failures, and --accel auto. After each test the `vm_env` fixture (conftest.py)
also checks that no QEMU process and no runtime directory is left; the tests
here check it again at the moment vmlab exits, where that is the point."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from vmlab.errors import ExitCode
from vmlab.machine.kernel import find_default_kernel

from .vmtools import (
    RUN,
    VMLAB,
    VmEnv,
    cli,
    one_error_line,
    popen,
    runtime_dirs,
    tagged_processes,
    vmlab_qemus,
)

pytestmark = [pytest.mark.vm]


def _wait_until(condition: str, check: Callable[[], object], *, seconds: float = 120.0) -> None:
    """Poll `check()` until true; a bounded wait for an event, not a timing check."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {condition}")
        time.sleep(0.05)


# -- several at once ---------------------------------------------------------------


@pytest.mark.timeout(300)
def test_four_runs_at_once_each_get_their_own_output_status_and_files(
    tmp_path: Path, vm_env: VmEnv
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    procs = []
    for i in range(4):
        work = tmp_path / f"w{i}"
        work.mkdir()
        # Each command says it is up, then waits for `go`: so all four VMs are
        # provably alive at the same moment.
        script = (
            f'echo "out {i}"; echo "err {i}" >&2; echo {i} >mine; touch {shared}/ready-{i}; '
            f"n=0; until [ -e {shared}/go ]; do n=$((n + 1)); [ $n -gt 1500 ] && exit 99; "
            f"sleep 0.2; done; exit $((10 + {i}))"
        )
        procs.append(popen(*RUN, "--share", f"{shared}:rw", "--", "sh", "-c", script, cwd=work))
    try:

        def all_ready() -> bool:
            for proc in procs:
                if proc.poll() is not None:
                    _, err = proc.communicate()
                    raise AssertionError(f"a run ended early ({proc.returncode}): {err!r}")
            return all((shared / f"ready-{i}").exists() for i in range(4))

        _wait_until("four guests to be up", all_ready, seconds=240)
        qemus = vmlab_qemus(vm_env.tag)
        assert len(qemus) == 4, [q.describe() for q in qemus]
        dirs = runtime_dirs(vm_env.runtime)
        assert len(dirs) == 4, dirs  # four private runtime directories
        (shared / "go").touch()
        for i, proc in enumerate(procs):
            out, err = proc.communicate(timeout=120)
            assert (proc.returncode, out, err) == (
                10 + i,
                f"out {i}\n".encode(),
                f"err {i}\n".encode(),
            )
            assert (tmp_path / f"w{i}" / "mine").read_text() == f"{i}\n"
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert runtime_dirs(vm_env.runtime) == []


# -- signals -----------------------------------------------------------------------


@pytest.mark.timeout(150)
@pytest.mark.parametrize(
    ("sig", "code", "word", "runtime"),
    [
        (signal.SIGINT, ExitCode.INTERRUPTED, "interrupted", "xdg"),
        # SIGTERM with no usable $XDG_RUNTIME_DIR: the runtime dir goes to $TMPDIR.
        (signal.SIGTERM, ExitCode.TERMINATED, "terminated", "tmpdir"),
    ],
)
def test_signal_mid_command_stops_the_vm_and_removes_its_files(
    tmp_path: Path, vm_env: VmEnv, sig: signal.Signals, code: ExitCode, word: str, runtime: str
) -> None:
    env = {"XDG_RUNTIME_DIR": ""} if runtime == "tmpdir" else {}
    base = vm_env.tmpdir if runtime == "tmpdir" else vm_env.runtime
    proc = popen(*RUN, "--", "sh", "-c", "echo started; exec sleep 600", cwd=tmp_path, env=env)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"started\n"
        assert len(runtime_dirs(base)) == 1  # the runtime dir is where we look
        assert len(vmlab_qemus(vm_env.tag)) == 1
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code
    assert out == b""
    assert word in one_error_line(err)
    # vmlab stops its QEMU before it exits: nothing is left at this moment.
    assert vmlab_qemus(vm_env.tag) == []
    assert runtime_dirs(vm_env.runtime, vm_env.tmpdir) == []


@pytest.mark.timeout(150)
def test_sigterm_during_boot_stops_the_vm_and_removes_its_files(
    tmp_path: Path, vm_env: VmEnv
) -> None:
    proc = popen(*RUN, "--", "sleep", "600", cwd=tmp_path)
    try:
        # QEMU is up and the guest is booting (which takes seconds under TCG).
        _wait_until("QEMU to start", lambda: vmlab_qemus(vm_env.tag))
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == ExitCode.TERMINATED
    assert "terminated" in one_error_line(err)
    assert runtime_dirs(vm_env.runtime) == [], "the runtime directory outlived vmlab"
    assert vmlab_qemus(vm_env.tag) == []


@pytest.mark.timeout(150)
def test_sigint_while_stdin_is_an_open_pipe_exits_130_with_one_line(
    tmp_path: Path, vm_env: VmEnv
) -> None:
    # `producer | vmlab run -- CMD`, then Ctrl-C.
    read_end, write_end = os.pipe()
    proc = subprocess.Popen(
        [str(VMLAB), *RUN, "--", "sh", "-c", "echo started; exec cat"],
        cwd=tmp_path,
        stdin=read_end,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    os.close(read_end)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"started\n"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        os.close(write_end)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == ExitCode.INTERRUPTED, err
    assert "interrupted" in one_error_line(err)


# -- bad input ---------------------------------------------------------------------

# (id, arguments before `--`, environment, exit status, words the line must contain)
BAD_INPUT = [
    ("nonexistent-kernel", ["--kernel", "/nonexistent/vmlinuz"], {}, ExitCode.USAGE,
     "/nonexistent/vmlinuz"),
    ("not-a-kernel", ["--kernel", "{tmp}/notes.txt"], {}, ExitCode.USAGE, "not a Linux kernel"),
    ("kernel-is-a-directory", ["--kernel", "{tmp}"], {}, ExitCode.USAGE, "directory"),
    ("kernel-without-modules", ["--kernel", "{kernel}", "--modules", "{tmp}/empty"], {},
     ExitCode.USAGE, "{tmp}/empty"),
    ("bad-memory", ["--memory", "1X"], {}, ExitCode.USAGE, "'1X' is not a size"),
    ("zero-memory", ["--memory", "0"], {}, ExitCode.USAGE, "--memory"),
    ("missing-share", ["--share", "/nonexistent/dir"], {}, ExitCode.USAGE, "/nonexistent/dir"),
    ("share-is-a-file", ["--share", "{tmp}/notes.txt"], {}, ExitCode.USAGE, "not a directory"),
    ("bad-env", ["--env", "NO_EQUALS_SIGN"], {}, ExitCode.USAGE, "--env"),
    ("zero-timeout", ["--timeout", "0"], {}, ExitCode.USAGE, "--timeout"),
    ("zero-cpus", ["--cpus", "0"], {}, ExitCode.USAGE, "--cpus"),
    ("qemu-not-installed", [], {"VMLAB_QEMU": "/nonexistent/qemu"}, ExitCode.HOST,
     "/nonexistent/qemu"),
]  # fmt: skip


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("args", "env", "code", "words"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD_INPUT],
)
def test_bad_input_gives_one_line_and_a_documented_status(
    tmp_path: Path,
    vm_env: VmEnv,
    args: list[str],
    env: dict[str, str],
    code: ExitCode,
    words: str,
) -> None:
    (tmp_path / "notes.txt").write_text("not a kernel at all\n")
    (tmp_path / "empty").mkdir()
    fill = {"tmp": str(tmp_path), "kernel": str(find_default_kernel())}
    argv = [a.format(**fill) for a in args]
    result = cli(*RUN, *argv, "--", "true", cwd=tmp_path, env=env)
    assert result.returncode == code, result.stderr
    assert result.stdout == b""
    assert words.format(**fill) in one_error_line(result.stderr)
    assert runtime_dirs(vm_env.runtime, vm_env.tmpdir) == []
    assert tagged_processes(vm_env.tag) == []


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("args", "env"),
    [
        pytest.param(["--cpus", "1000"], {}, id="qemu-rejects-the-machine"),
        pytest.param([], {"VMLAB_QEMU": "/bin/false"}, id="qemu-exits-at-once"),
    ],
)
def test_qemu_failing_to_start_gives_one_line_and_leaves_nothing(
    tmp_path: Path, vm_env: VmEnv, args: list[str], env: dict[str, str]
) -> None:
    result = cli(*RUN, *args, "--", "true", cwd=tmp_path, env=env)
    line = one_error_line(result.stderr)
    assert result.returncode in (ExitCode.USAGE, ExitCode.HOST, ExitCode.INFRA), line
    assert runtime_dirs(vm_env.runtime) == []


@pytest.mark.timeout(120)
def test_panic_during_boot_exits_120_with_one_line_and_leaves_nothing(
    tmp_path: Path, vm_env: VmEnv
) -> None:
    # No initramfs init: the kernel panics before the guest agent ever runs.
    log = tmp_path / "console.log"
    result = cli(
        *RUN, "--append", "rdinit=/nonexistent", "--console-log", str(log), "--", "true",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == ExitCode.GUEST_CRASH, result.stderr
    line = one_error_line(result.stderr)
    assert "crashed" in line
    assert f"(console log: {log})" in line
    assert "Kernel panic" in log.read_text(errors="replace")
    assert runtime_dirs(vm_env.runtime) == []


@pytest.mark.timeout(120)
def test_a_long_runtime_directory_path_works_or_gives_one_line(
    tmp_path: Path, vm_env: VmEnv
) -> None:
    # Unix socket paths are limited to 108 bytes; $XDG_RUNTIME_DIR can be long.
    long_dir = vm_env.runtime / ("d" * 90)
    long_dir.mkdir(mode=0o700)
    result = cli(*RUN, "--", "echo", "ok", cwd=tmp_path, env={"XDG_RUNTIME_DIR": str(long_dir)})
    if result.returncode != 0:
        one_error_line(result.stderr)
        assert result.returncode == ExitCode.HOST
    else:
        assert result.stdout == b"ok\n"
    assert runtime_dirs(long_dir, vm_env.runtime, vm_env.tmpdir) == []


# -- accel -------------------------------------------------------------------------


@pytest.mark.timeout(240)
def test_accel_auto_picks_tcg_here_with_a_notice(tmp_path: Path) -> None:
    # A fresh cache: the KVM probe really runs (and the kernel is extracted and
    # the initramfs built from scratch). On these hosts /dev/kvm exists but
    # guests cannot run under it, so auto must fall back to TCG, not hang.
    script = "dmesg | grep -c 'Hypervisor detected: KVM' || true"
    result = cli(
        "run", "--", "sh", "-c", script, cwd=tmp_path,
        env={"VMLAB_CACHE_DIR": str(tmp_path / "cache")},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"0\n"  # the guest did not run under KVM
    line = one_error_line(result.stderr)
    assert line.startswith("vmlab: using TCG (slow): ")
