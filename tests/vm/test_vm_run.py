"""`vmlab run` as users run it (the real CLI, a real guest under TCG): output and
exit status, stdin, the overlay and shares, arguments, environment, the
invoking user, --timeout, a kernel panic, a missing command."""

from __future__ import annotations

import hashlib
import os
import pty
import random
import re
import secrets
import tempfile
from pathlib import Path

import pytest

from vmlab.machine.kernel import extract_vmlinux, find_default_kernel, inspect_kernel

from .vmtools import RUN, VmEnv, cli, one_error_line

pytestmark = [pytest.mark.vm]

# Arguments a shell would mangle if vmlab ever let one interpret them.
NASTY_ARGS = [
    "two words",
    "",
    " leading and trailing ",
    "'single'",
    '"double"',
    "it's",
    "$HOME",
    "${PATH}",
    "`id`",
    "$(id -u)",
    "line1\nline2",
    "\n",
    "tab\there",
    "back\\slash",
    "*",
    "?",
    "[a-z]",
    ";",
    "&&",
    "|",
    ">created-by-redirect",
    "#not-a-comment",
    "~",
    "!",
    "a=b",
    "-v",
    "--",
    "--timeout",
    "\u00e9t\u00e9 \u2713",
]

CONSOLE_LOG = re.compile(r"console log:? (/\S+)\)$")


@pytest.mark.timeout(120)
def test_stdout_stderr_and_status_are_the_commands_and_never_kernel_messages(
    tmp_path: Path,
) -> None:
    log = tmp_path / "console.log"
    script = (
        "echo out1; echo err1 >&2; "
        # Kernel messages while the command runs: they go to the console only.
        "echo '<2>vmlab-kmsg-marker' >/dev/kmsg; echo h >/proc/sysrq-trigger; "
        "echo out2; printf 'err2 without newline' >&2; exit 7"
    )
    result = cli(*RUN, "--console-log", str(log), "--", "sh", "-c", script, cwd=tmp_path)
    assert result.returncode == 7, result.stderr
    assert result.stdout == b"out1\nout2\n"
    assert result.stderr == b"err1\nerr2 without newline"
    console = log.read_text(errors="replace")
    assert "vmlab-kmsg-marker" in console  # the kernel did print it, to the console
    assert "sysrq: HELP" in console
    assert "Linux version" in console


@pytest.mark.timeout(120)
def test_verbose_shows_the_console_on_stderr_and_keeps_stdout_clean(tmp_path: Path) -> None:
    script = "echo '<2>vmlab-verbose-marker' >/dev/kmsg; echo payload"
    result = cli(*RUN, "-v", "--", "sh", "-c", script, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"payload\n"
    assert b"Linux version" in result.stderr
    assert b"vmlab-verbose-marker" in result.stderr


@pytest.mark.timeout(120)
def test_arguments_arrive_intact(tmp_path: Path) -> None:
    result = cli(*RUN, "--", "printf", "%s\\0", *NASTY_ARGS, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split(b"\0")[:-1] == [a.encode() for a in NASTY_ARGS]
    assert result.stderr == b""
    assert not (tmp_path / "created-by-redirect").exists()


@pytest.mark.timeout(120)
def test_environment_user_and_working_directory(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    host_path = os.environ["PATH"]
    script = (
        'id -u; id -g; pwd; echo "HOME=$HOME"; echo "PATH=$PATH"; echo "LANG=$LANG"; '
        'echo "X=$VMLAB_X"; echo "Y=$VMLAB_Y"; '
        'echo "SECRET=${VMLAB_SECRET-unset}"; echo "RUNTIME=${XDG_RUNTIME_DIR-unset}"'
    )
    result = cli(
        *RUN,
        "--env",
        "VMLAB_X=1",
        "--env",
        "VMLAB_Y=a b $c 'q' x=y",
        "--",
        "sh",
        "-c",
        script,
        cwd=tmp_path,
        env={"HOME": str(home), "LANG": "C.UTF-8", "VMLAB_SECRET": "must-not-leak"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().splitlines() == [
        str(os.getuid()),  # the invoking user: root on these hosts
        str(os.getgid()),
        str(tmp_path),  # the cwd is the command's cwd
        f"HOME={home}",
        f"PATH={host_path}",
        "LANG=C.UTF-8",
        "X=1",
        "Y=a b $c 'q' x=y",
        "SECRET=unset",  # only the basics pass, not the whole host environment
        "RUNTIME=unset",
    ]


@pytest.mark.timeout(120)
def test_memory_cpus_and_append_reach_the_guest(tmp_path: Path) -> None:
    script = "nproc; grep MemTotal /proc/meminfo; cat /proc/cmdline"
    result = cli(
        *RUN, "--memory", "384M", "--cpus", "2", "--append", "vmlab.test=x1", "--append", "quiet",
        "--", "sh", "-c", script, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    nproc, meminfo, cmdline = result.stdout.decode().splitlines()
    assert nproc == "2"
    mem_kib = int(meminfo.split()[1])
    assert 256 * 1024 < mem_kib <= 384 * 1024
    assert cmdline.endswith(" vmlab.test=x1 quiet")


@pytest.mark.timeout(120)
def test_an_uncompressed_vmlinux_boots_too(tmp_path: Path) -> None:
    bzimage = find_default_kernel()
    release = inspect_kernel(bzimage).release
    vmlinux = tmp_path / "vmlinux"
    vmlinux.write_bytes(extract_vmlinux(bzimage.read_bytes(), bzimage))
    result = cli(*RUN, "--kernel", str(vmlinux), "--", "uname", "-r", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == f"{release}\n"


@pytest.mark.timeout(120)
def test_a_cwd_with_a_comma_in_its_path(tmp_path: Path) -> None:
    work = tmp_path / "proj,v2"
    work.mkdir()
    (work / "f").write_text("found\n")
    result = cli(*RUN, "--", "sh", "-c", "pwd; cat f", cwd=work)
    assert result.stdout.decode() == f"{work}\nfound\n", result.stderr
    assert result.returncode == 0


@pytest.mark.timeout(120)
def test_host_root_is_read_only_under_an_overlay_and_the_cwd_is_shared_rw(
    tmp_path: Path,
) -> None:
    token = secrets.token_hex(6)
    etc_file = Path(f"/etc/vmlab-test-{token}")
    (tmp_path / "from-host.txt").write_text("host data\n")
    fd, name = tempfile.mkstemp(prefix="vmlab-test-", dir="/var/tmp")
    host_file = Path(name)
    try:
        os.write(fd, b"host original\n")
        os.close(fd)
        script = (
            f"echo guest >{etc_file} && cat {etc_file}; "
            f"cat {host_file}; rm {host_file} && echo removed; "
            f"echo replaced >{host_file}; cat {host_file}; "
            "cat from-host.txt; echo guest data >from-guest.txt"
        )
        result = cli(*RUN, "--", "sh", "-c", script, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        # Inside, the guest can write anywhere...
        assert result.stdout == b"guest\nhost original\nremoved\nreplaced\nhost data\n"
        # ...but nothing reaches the host except the shared cwd.
        assert not etc_file.exists()
        assert host_file.read_bytes() == b"host original\n"
        assert (tmp_path / "from-guest.txt").read_text() == "guest data\n"
    finally:
        host_file.unlink(missing_ok=True)
        etc_file.unlink(missing_ok=True)


@pytest.mark.timeout(120)
def test_shares_are_read_only_unless_rw(tmp_path: Path) -> None:
    ro, rw, work = tmp_path / "ro", tmp_path / "rw", tmp_path / "work"
    for directory in (ro, rw, work):
        directory.mkdir()
    (ro / "hello").write_text("read me\n")
    (rw / "existing").write_text("rw data\n")
    script = (
        f"cat {ro}/hello; echo new >{ro}/new; echo ro-status=$?; "
        "cat /mnt/data/existing; echo written >/mnt/data/new; echo rw-status=$?"
    )
    result = cli(
        *RUN, "--share", str(ro), "--share", f"{rw}:/mnt/data:rw", "--", "sh", "-c", script,
        cwd=work,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert lines[0] == "read me"
    assert lines[1] != "ro-status=0"
    assert lines[2:] == ["rw data", "rw-status=0"]
    assert b"Read-only file system" in result.stderr
    assert not (ro / "new").exists()
    assert (rw / "new").read_text() == "written\n"


@pytest.mark.timeout(120)
def test_stdin_reaches_the_command(tmp_path: Path) -> None:
    result = cli(*RUN, "--", "cat", cwd=tmp_path, input=b"x\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"x\n"


@pytest.mark.timeout(180)
def test_large_stdin_arrives_intact(tmp_path: Path) -> None:
    data = random.Random(2).randbytes(4 << 20)  # includes every byte value, \x1e too
    result = cli(*RUN, "--", "sh", "-c", "sha256sum; echo done >&2", cwd=tmp_path, input=data)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().split()[0] == hashlib.sha256(data).hexdigest()
    assert result.stderr == b"done\n"


@pytest.mark.timeout(180)
def test_large_binary_stdout_arrives_intact(tmp_path: Path) -> None:
    data = random.Random(3).randbytes(4 << 20)
    (tmp_path / "blob").write_bytes(data)
    result = cli(*RUN, "--", "cat", "blob", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout) == len(data)
    assert result.stdout == data


@pytest.mark.timeout(120)
def test_stdin_the_command_never_reads_does_not_hang(tmp_path: Path) -> None:
    # More than the socket buffers hold: vmlab must not wait for the guest to
    # take bytes that the command will never read.
    result = cli(*RUN, "--", "sh", "-c", "exit 5", cwd=tmp_path, input=b"z" * (4 << 20), timeout=60)
    assert result.returncode == 5, result.stderr
    assert result.stderr == b""


@pytest.mark.timeout(120)
def test_stdin_pipe_left_open_does_not_change_the_exit(tmp_path: Path) -> None:
    # `slow-producer | vmlab run -- CMD`: CMD ends while the producer still
    # holds the pipe open; vmlab exits with CMD's status, and says nothing.
    read_end, write_end = os.pipe()
    try:
        result = cli(*RUN, "--", "echo", "hi", cwd=tmp_path, stdin=read_end, timeout=60)
    finally:
        os.close(read_end)
        os.close(write_end)
    assert result.stdout == b"hi\n"
    assert result.stderr == b""
    assert result.returncode == 0


@pytest.mark.timeout(120)
def test_a_terminal_on_stdin_is_not_forwarded(tmp_path: Path) -> None:
    # With a tty on stdin, `cat` must not wait for the user: it sees EOF.
    controller, terminal = pty.openpty()
    try:
        result = cli(*RUN, "--", "sh", "-c", "cat; echo eof", cwd=tmp_path, stdin=terminal)
    finally:
        os.close(terminal)
        os.close(controller)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"eof\n"


@pytest.mark.timeout(120)
def test_background_process_holding_stdout_does_not_keep_vmlab_waiting(tmp_path: Path) -> None:
    result = cli(*RUN, "--", "sh", "-c", "sleep 1000 & echo hi", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"hi\n"


@pytest.mark.timeout(150)
def test_timeout_dumps_tasks_kills_the_vm_and_exits_124(tmp_path: Path, vm_env: VmEnv) -> None:
    result = cli(*RUN, "--timeout", "3", "--", "sh", "-c", "echo begun; exec sleep 600",
                 cwd=tmp_path)  # fmt: skip
    assert result.returncode == 124, result.stderr
    assert result.stdout == b"begun\n"
    line = one_error_line(result.stderr)
    assert "timed out" in line
    match = CONSOLE_LOG.search(line)
    assert match, line
    log = Path(match.group(1))
    assert log.is_relative_to(vm_env.state)  # the default: ~/.local/state/vmlab/console
    console = log.read_text(errors="replace")
    assert "sysrq: Show State" in console
    assert "task:sleep" in console


@pytest.mark.timeout(90)
def test_kernel_panic_exits_120_with_one_line_naming_it_and_the_log(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    # The `sleep 600` after the crash: only a crash that ends the run passes
    # within the test's timeout.
    script = "echo before; echo c >/proc/sysrq-trigger; sleep 600"
    result = cli(*RUN, "--console-log", str(log), "--", "sh", "-c", script, cwd=tmp_path)
    assert result.returncode == 120, result.stderr
    assert result.stdout == b"before\n"
    assert result.stderr.decode() == (
        "vmlab: the guest kernel crashed: kernel panic: sysrq triggered crash "
        f"(console log: {log})\n"
    )
    assert "Kernel panic - not syncing: sysrq triggered crash" in log.read_text(errors="replace")


@pytest.mark.timeout(120)
def test_missing_command_exits_127_with_one_line(tmp_path: Path) -> None:
    result = cli(*RUN, "--", "no-such-command-vmlab", "arg", cwd=tmp_path)
    assert result.returncode == 127
    assert result.stdout == b""
    line = one_error_line(result.stderr)
    assert "'no-such-command-vmlab' not found" in line
