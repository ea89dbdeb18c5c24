"""A real disk-image machine under TCG: one boot (about a minute here), then
commands over SSH, a timeout, snapshots and a crash, on that same machine.

The machine boots the standard test image (tests/image/images.py) with its own
kernel, is provisioned by cloud-init from vmlab's seed, and is reached over
SSH on a forwarded loopback port.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from vmlab.errors import CommandNotFound, CommandTimeout, GuestCrashed
from vmlab.guest.channel import Command
from vmlab.machine.image_build import BuiltImage
from vmlab.machine.image_machine import ImageMachine
from vmlab.machine.spec import DiskSpec

from .images import TEST_IMAGE_SPEC, booted

pytestmark = [pytest.mark.vm, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def lab_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lab")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def vm(built_image: BuiltImage, lab_dir: Path) -> AsyncIterator[ImageMachine]:
    assert built_image.base.exists()
    disk = DiskSpec(image=TEST_IMAGE_SPEC, lab_dir=lab_dir)
    async with booted("imgtest", disk) as machine:
        yield machine


@pytest.mark.asyncio(loop_scope="module")
async def test_the_guest_runs_the_images_own_kernel_and_systemd(
    vm: ImageMachine, built_image: BuiltImage
) -> None:
    result = await vm.run(Command(shell="uname -r; cat /proc/1/comm; id -u; hostname"))
    assert result.stdout.decode().split() == [built_image.release, "systemd", "0", "imgtest"]
    assert vm.console is not None
    assert any("Linux version" in line for line in vm.console.tail(200)) or (
        "Linux version" in (vm.console.log_path.read_text(errors="replace"))
    )
    key = (await vm.run(Command(shell="cat /home/vmlab/.ssh/authorized_keys"))).stdout.decode()
    assert vm.disk_boot is not None and vm.disk_boot.key.public_openssh.split()[1] in key


@pytest.mark.asyncio(loop_scope="module")
async def test_output_status_stdin_and_errors_travel_over_ssh(vm: ImageMachine) -> None:
    result = await vm.run(
        Command(shell="tr a-z A-Z; echo to-stderr >&2; exit 7"), stdin=b"hello\n" * 50_000
    )
    assert result.status == 7
    assert result.stdout == b"HELLO\n" * 50_000
    assert result.stderr == b"to-stderr\n"
    env = await vm.run(
        Command(argv=("printenv", "A"), env={"A": "x y", "PATH": "/usr/bin:/bin"}, cwd="/tmp")
    )
    assert env.stdout == b"x y\n"
    with pytest.raises(CommandNotFound):
        await vm.run(Command(argv=("no-such-program-here",)))


PROBE = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5).close()
    print("connected")
except OSError as exc:
    print(type(exc).__name__)
"""


@pytest.mark.asyncio(loop_scope="module")
async def test_user_networking_has_no_way_out_without_internet(vm: ImageMachine) -> None:
    # A listener on the host's loopback: user networking's gateway (10.0.2.2)
    # leads there unless the network is restricted, as it is without `internet`.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        port = listener.getsockname()[1]
        probe = Command(argv=("python3", "-c", PROBE, "10.0.2.2", str(port)))
        result = await vm.run(probe, timeout=60)
        assert result.status == 0, result.stderr
        verdict = result.stdout.decode().strip()
        assert verdict in {"TimeoutError", "ConnectionRefusedError", "OSError"}, verdict
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing arrived from the guest


@pytest.mark.asyncio(loop_scope="module")
async def test_a_timeout_kills_the_command_and_the_machine_stays_usable(vm: ImageMachine) -> None:
    with pytest.raises(CommandTimeout):
        await vm.run(Command(shell="sleep 300 & sleep 300"), timeout=3)
    left = await vm.run(Command(shell="pgrep -x sleep || true"))
    assert left.stdout == b""  # the whole process group was killed
    assert (await vm.run(Command(shell="echo alive"))).stdout == b"alive\n"


@pytest.mark.asyncio(loop_scope="module")
async def test_restore_brings_back_the_snapshot_even_after_a_crash(vm: ImageMachine) -> None:
    await vm.run(Command(shell="echo before >/root/marker"))
    await vm.save_snapshot()
    await vm.run(Command(shell="echo after >/root/marker; echo x >/root/new"))
    await vm.restore_snapshot()
    marker = await vm.run(Command(shell="cat /root/marker; test -e /root/new; echo $?"))
    assert marker.stdout == b"before\n1\n"

    with pytest.raises(GuestCrashed) as crashed:
        await vm.run(Command(shell="echo x >/root/new; sync; echo c >/proc/sysrq-trigger"))
    assert "sysrq" in crashed.value.message.lower()
    await vm.restore_snapshot()  # QEMU is gone: a new one resumes the snapshot
    after = await vm.run(Command(shell="cat /root/marker; test -e /root/new; echo $?"))
    assert after.stdout == b"before\n1\n"
