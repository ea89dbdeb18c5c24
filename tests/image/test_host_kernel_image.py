"""`kernel = "host"` over a built image, booted for real under TCG: the host-root
path's kernel (the newest in /boot) boots directly over the standard test
image's root filesystem, with vmlab's image initramfs built from the host's
modules. The image has no modules for that kernel: vmlab brings them on a
read-only disk (machine/modules_disk.py) that the initramfs mounts at
/lib/modules/RELEASE, so modprobe, udev and cloud-init (isofs, for its seed)
work in the guest.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from vmlab.guest.channel import Command
from vmlab.machine.image_build import BuiltImage
from vmlab.machine.image_machine import ImageMachine
from vmlab.machine.kernel import find_default_kernel
from vmlab.machine.spec import DiskSpec, KernelSource

from .images import TEST_IMAGE_SPEC, booted

pytestmark = [pytest.mark.vm, pytest.mark.timeout(900)]

NAME = "hostkernel"
# A module of the host's kernel that nothing loads at boot (a dummy netdev).
MODULE = "dummy"


@pytest.fixture(scope="module")
def host_release() -> str:
    return find_default_kernel().name.removeprefix("vmlinuz-")


@pytest.fixture(scope="module")
def lab_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lab")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def vm(built_image: BuiltImage, lab_dir: Path) -> AsyncIterator[ImageMachine]:
    assert built_image.base.exists()
    disk = DiskSpec(image=TEST_IMAGE_SPEC, lab_dir=lab_dir, kernel=KernelSource.HOST)
    async with booted(NAME, disk) as machine:
        yield machine


@pytest.mark.asyncio(loop_scope="module")
async def test_the_hosts_kernel_runs_the_images_systemd_and_cloud_init(
    vm: ImageMachine, host_release: str
) -> None:
    result = await vm.run(Command(shell="uname -r; cat /proc/1/comm; hostname; cloud-init status"))
    assert result.stdout.decode().splitlines() == [host_release, "systemd", NAME, "status: done"]
    state = await vm.run(Command(shell="systemctl is-system-running --wait"), timeout=300)
    assert state.stdout == b"running\n", (await vm.run(Command(shell="systemctl --failed"))).stdout


@pytest.mark.asyncio(loop_scope="module")
async def test_modules_of_the_hosts_kernel_load_in_the_guest(
    vm: ImageMachine, host_release: str
) -> None:
    loaded = f"grep -c '^{MODULE} ' /proc/modules"
    before = await vm.run(Command(shell=loaded))
    assert before.stdout == b"0\n"
    load = await vm.run(Command(argv=("modprobe", MODULE), env={"PATH": "/usr/sbin:/usr/bin"}))
    assert load.status == 0, load.stderr.decode()
    after = await vm.run(Command(shell=loaded))
    assert after.stdout == b"1\n"
    # They are the host's, shown read-only.
    where = f"/lib/modules/{host_release}"
    mount = await vm.run(Command(shell=f"findmnt -no OPTIONS {where}; touch {where}/x"))
    assert mount.stdout.decode().split(",")[0] == "ro"
    assert mount.status != 0 and b"Read-only file system" in mount.stderr


@pytest.mark.asyncio(loop_scope="module")
async def test_a_snapshot_works_with_the_modules_disk_attached(vm: ImageMachine) -> None:
    await vm.run(Command(shell="echo before >/root/marker"))
    await vm.save_snapshot()
    await vm.run(Command(shell="echo after >/root/marker"))
    await vm.restore_snapshot()
    result = await vm.run(Command(shell=f"cat /root/marker; grep -c '^{MODULE} ' /proc/modules"))
    assert result.stdout == b"before\n1\n"  # the module was loaded before the snapshot
