"""A cloud image the user brings (`image = "x.qcow2"`, `kernel` left at "image"),
booted for real under TCG: SeaBIOS, the image's MBR and syslinux, its own
kernel and initramfs-tools initrd, systemd, cloud-init from vmlab's NoCloud
seed, then commands over SSH, a snapshot, and a kernel crash.

The image is made on the host by tests/image/brought_image.py (cached; a cold
build takes a minute or two) since none can be downloaded here.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from vmlab.errors import CommandNotFound, GuestCrashed
from vmlab.guest.channel import Command
from vmlab.guest.ssh import SshChannel
from vmlab.machine.image_machine import ImageMachine
from vmlab.machine.spec import DiskSpec, KernelSource

from .brought_image import BroughtImage, ensure_brought_image
from .images import booted

pytestmark = [pytest.mark.vm, pytest.mark.timeout(1200)]

NAME = "brought"


@pytest.fixture(scope="module")
def brought() -> BroughtImage:
    return ensure_brought_image()


@pytest.fixture(scope="module")
def lab_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lab")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def vm(brought: BroughtImage, lab_dir: Path) -> AsyncIterator[ImageMachine]:
    disk = DiskSpec(image=brought.path, lab_dir=lab_dir, kernel=KernelSource.IMAGE)
    async with booted(NAME, disk) as machine:
        yield machine


@pytest.mark.asyncio(loop_scope="module")
async def test_it_boots_through_firmware_and_its_own_bootloader_kernel_and_initrd(
    vm: ImageMachine, brought: BroughtImage
) -> None:
    assert "-kernel" not in vm.argv and "-initrd" not in vm.argv
    result = await vm.run(Command(shell="uname -r; cat /proc/1/comm; cat /proc/cmdline"))
    release, init, cmdline = result.stdout.decode().splitlines()
    assert release == brought.release
    assert init == "systemd"
    # syslinux.cfg's command line (syslinux adds BOOT_IMAGE= and initrd=), not vmlab's.
    words = cmdline.split()
    assert words[0] == "BOOT_IMAGE=/vmlinuz" and "initrd=/initrd.img" in words
    assert set(brought.cmdline.split()) <= set(words)
    assert not any(word.startswith(("vmlab.", "rdinit=")) for word in words)
    log = vm.console_log_path
    assert log is not None
    console = log.read_text(errors="replace")
    assert "SYSLINUX" in console  # the bootloader printed on the serial console
    assert "Linux version" in console
    # The image's initramfs-tools initrd mounted the root partition.
    assert "Begin: Mounting root file system" in console
    root = await vm.run(Command(shell="findmnt -no SOURCE /"))
    assert root.stdout == b"/dev/vda2\n"


@pytest.mark.asyncio(loop_scope="module")
async def test_cloud_init_provisioned_it_from_vmlabs_seed(vm: ImageMachine) -> None:
    result = await vm.run(
        Command(shell="hostname; cloud-init status; cat /run/cloud-init/result.json")
    )
    hostname, status, *rest = result.stdout.decode().splitlines()
    assert hostname == NAME
    assert status == "status: done", result.stdout.decode()  # no module failed
    assert "NoCloud" in json.loads("\n".join(rest))["v1"]["datasource"]
    state = await vm.run(Command(shell="systemctl is-system-running --wait"), timeout=300)
    assert state.stdout == b"running\n", (await vm.run(Command(shell="systemctl --failed"))).stdout
    # vmlab's user logs in with the lab key and has passwordless sudo.
    assert vm.key_path is not None and vm.ssh_port is not None
    user = await SshChannel.connect(
        "127.0.0.1", vm.ssh_port, user="vmlab", key=vm.key_path, timeout=30
    )
    try:
        who = await user.run(Command(shell="id -u vmlab; cat /proc/self/loginuid; echo; id -u"))
    finally:
        await user.close()
    uid, login, root = who.stdout.decode().split()
    assert uid == login != "0" and root == "0"


@pytest.mark.asyncio(loop_scope="module")
async def test_commands_run_over_ssh_with_status_and_both_streams(vm: ImageMachine) -> None:
    result = await vm.run(
        Command(shell="tr a-z A-Z; echo to-stderr >&2; exit 3"), stdin=b"hello\n" * 1000
    )
    assert result.status == 3
    assert result.stdout == b"HELLO\n" * 1000
    assert result.stderr == b"to-stderr\n"
    with pytest.raises(CommandNotFound):
        await vm.run(Command(argv=("no-such-program-here",)))


@pytest.mark.asyncio(loop_scope="module")
async def test_a_snapshot_comes_back_and_a_kernel_crash_is_seen_on_the_console(
    vm: ImageMachine,
) -> None:
    await vm.run(Command(shell="echo before >/root/marker"))
    await vm.save_snapshot()
    await vm.run(Command(shell="echo after >/root/marker"))
    await vm.restore_snapshot()
    assert (await vm.run(Command(shell="cat /root/marker"))).stdout == b"before\n"

    with pytest.raises(GuestCrashed) as crashed:
        await vm.run(Command(shell="echo x >/root/new; sync; echo c >/proc/sysrq-trigger"))
    assert "sysrq" in crashed.value.message.lower()
    await vm.restore_snapshot()  # the crashed QEMU is replaced by one that resumes the snapshot
    after = await vm.run(Command(shell="cat /root/marker; test -e /root/new; echo $?"))
    assert after.stdout == b"before\n1\n"
