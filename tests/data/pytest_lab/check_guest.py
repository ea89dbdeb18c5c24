"""Host-side tests of the pytest lab: 7 pass, 1 fails on purpose (test_reports_failure)."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from vmlab.errors import CommandNotFound, CommandTimeout
from vmlab.guest.rpc import CommandFailed, VmClient

LAB = Path(__file__).resolve().parent


def test_run_argv_and_shell(vm: VmClient) -> None:
    result = vm.run(["uname", "-s"])
    assert result.status == 0
    assert result.stdout == b"Linux\n"
    assert vm.run("echo $LAB_GREETING; echo oops >&2; exit 3").status == 3
    shell = vm.run("echo $LAB_GREETING; echo oops >&2")
    assert (shell.stdout, shell.stderr) == (b"hello from the lab\n", b"oops\n")
    assert vm.run("cat /srv/lab/state").stdout == b"ready\n"  # the machine's setup ran
    assert vm.run("pwd").stdout.decode().strip() == str(LAB)  # the lab's directory
    assert vm.run(["cat"], stdin=b"from stdin").stdout == b"from stdin"
    assert vm.run("echo $X", env={"X": "y"}, cwd="/tmp").stdout == b"y\n"
    vm.run("echo leftover > /tmp/leftover", check=True)


def test_errors(vm: VmClient) -> None:
    with pytest.raises(CommandNotFound):
        vm.run(["vmlab-no-such-command"])
    with pytest.raises(CommandTimeout):
        vm.run("sleep 30", timeout=1)
    with pytest.raises(CommandFailed) as failed:
        vm.run("echo bad news >&2; exit 4", check=True)
    assert failed.value.result.status == 4
    assert "bad news" in failed.value.message
    assert vm.run("true").ok  # still usable after the timeout


def test_copy_both_ways(vm: VmClient, tmp_path: Path) -> None:
    data = os.urandom(300_000) + b"\n\x00end"
    src = tmp_path / "payload.bin"
    src.write_bytes(data)
    src.chmod(0o750)
    assert vm.copy_to(src, "/tmp/") == "/tmp/payload.bin"
    guest = vm.run(["sha256sum", "/tmp/payload.bin"], check=True).stdout.split()[0]
    assert guest.decode() == hashlib.sha256(data).hexdigest()
    assert vm.run(["stat", "-c", "%a", "/tmp/payload.bin"]).stdout == b"750\n"
    vm.run("printf more >> /tmp/payload.bin", check=True)
    back = vm.copy_from("/tmp/payload.bin", tmp_path / "back.bin")
    assert back.read_bytes() == data + b"more"
    assert back.stat().st_mode & 0o777 == 0o750


def test_console(vm: VmClient) -> None:
    path = vm.console_path()
    assert "Linux version" in path.read_text(errors="replace")  # the whole boot is there
    vm.run("echo vmlab-console-mark > /dev/kmsg", check=True)
    deadline = time.monotonic() + 10  # the console is read asynchronously
    while not any("vmlab-console-mark" in line for line in vm.console_tail(50)):
        assert time.monotonic() < deadline, vm.console_tail(5)
        time.sleep(0.1)
    assert len(vm.console_tail(3)) == 3


def test_reports_failure(vm: VmClient) -> None:
    assert vm.run("echo one").stdout == b"two\n"  # fails on purpose


def test_fresh_machine(vm_fresh: VmClient) -> None:
    assert vm_fresh.run("test -e /tmp/leftover").status == 1  # a new boot
    assert vm_fresh.run("cat /srv/lab/state").stdout == b"ready\n"  # set up again


def test_console_after_reboot(vm: VmClient) -> None:
    assert vm.console_path().is_file()


def test_big_output(vm: VmClient) -> None:
    result = vm.run("head -c 6000000 /dev/zero | tr '\\0' x", check=True)
    assert result.stdout == b"x" * 6_000_000
