"""Real image builds: mmdebstrap, mkfs.ext4 and qemu-img against the Debian mirror.

The standard test image is built once into the real cache (`built_image`), so
later runs, and the disk-image VM tests, find it at once. Checks read the
result back with qemu-img and debugfs, never by booting it (the VM tests do).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
from pathlib import Path

import pytest

from vmlab.errors import ExitCode, UsageError
from vmlab.machine import image_build
from vmlab.machine.image_build import BuiltImage, build_image, find_image
from vmlab.machine.initramfs import ModuleIndex
from vmlab.machine.spec import ImageSpec

from .conftest import BUILD_TIMEOUT_S
from .images import TEST_IMAGE_SPEC

pytestmark = pytest.mark.vm


def debugfs(raw: Path, request: str) -> str:
    result = subprocess.run(
        ["/sbin/debugfs", "-R", request, str(raw)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return result.stdout  # stderr: its banner, and "not found" errors


@pytest.fixture(scope="module")
def raw_disk(built_image: BuiltImage, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test image's disk as a raw file, for debugfs."""
    raw = tmp_path_factory.mktemp("raw") / "disk.raw"
    subprocess.run(
        ["qemu-img", "convert", "-O", "raw", str(built_image.base), str(raw)],
        check=True,
        timeout=300,
    )
    return raw


@pytest.mark.timeout(BUILD_TIMEOUT_S)
def test_the_image_is_a_qcow2_of_the_requested_size(built_image: BuiltImage) -> None:
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", str(built_image.base)],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
    )
    assert info["format"] == "qcow2"
    assert info["virtual-size"] == TEST_IMAGE_SPEC.size_mib << 20
    assert "backing-filename" not in info
    assert built_image.key == image_build.image_key(TEST_IMAGE_SPEC)
    assert built_image.directory == image_build.images_dir() / built_image.key
    assert "vmlab-test" in built_image.names
    assert built_image.packages == ("nfs-common", "nfs-kernel-server", "python3")
    assert built_image.disk_bytes == built_image.base.stat().st_size
    recorded = json.loads((built_image.directory / "image.json").read_text())
    assert recorded["manifest"] == image_build.image_manifest(TEST_IMAGE_SPEC)


@pytest.mark.timeout(BUILD_TIMEOUT_S)
def test_the_root_filesystem_holds_the_system(raw_disk: Path) -> None:
    with raw_disk.open("rb") as disk:
        disk.seek(1024 + 0x78)  # the ext4 superblock's volume name
        assert disk.read(16).rstrip(b"\0") == b"vmlab-root"
    for path in (
        "/usr/sbin/sshd", "/usr/bin/cloud-init", "/usr/bin/sudo", "/usr/sbin/rpc.nfsd",
        "/sbin/dhclient",
    ):  # fmt: skip
        assert "Type: regular" in debugfs(raw_disk, f"stat {path}"), path
    assert "Type: symlink" in debugfs(raw_disk, "stat /sbin/init")  # systemd-sysv
    fstab = debugfs(raw_disk, "cat /etc/fstab")
    assert "/dev/vda / ext4 rw" in fstab
    assert debugfs(raw_disk, "cat /etc/hostname").strip() == "vmlab"
    assert "Size: 0" in debugfs(raw_disk, "stat /etc/machine-id")
    assert "source /etc/network/interfaces.d/*" in debugfs(raw_disk, "cat /etc/network/interfaces")
    # initramfs-tools was kept from building an initrd, then put back
    boot = debugfs(raw_disk, "ls -l /boot")
    assert "vmlinuz-" in boot
    assert "initrd.img" not in boot
    assert "Type: regular" in debugfs(raw_disk, "stat /usr/sbin/update-initramfs")
    # owned by root, not by whoever ran the build
    assert "User:     0   Group:     0" in debugfs(raw_disk, "stat /etc/ssh/sshd_config")


@pytest.mark.timeout(BUILD_TIMEOUT_S)
def test_the_kernel_and_the_boot_modules_subset(built_image: BuiltImage) -> None:
    assert built_image.vmlinuz.read_bytes()[0x202:0x206] == b"HdrS"  # a bzImage
    assert built_image.modules.name == built_image.release
    assert (built_image.modules / "modules.dep").is_file()
    assert (built_image.modules / "modules.builtin").is_file()
    index = ModuleIndex.load(built_image.modules)
    closure = index.load_order(["virtio_blk", "ext4", "virtio_net", "crc32c_generic"])
    assert "virtio_blk" in closure and "ext4" in closure and "jbd2" in closure
    for name in closure:
        assert (built_image.modules / index.paths[name]).is_file(), name
    assert list(built_image.boot_modules) == index.load_order(
        name for name in image_build.IMAGE_BOOT_MODULES if name in index.paths
    )
    kos = [p for p in built_image.modules.rglob("*.ko*") if p.is_file()]
    assert len(kos) == len(built_image.boot_modules)  # a subset, not the 400 MB tree


@pytest.mark.timeout(BUILD_TIMEOUT_S)
async def test_a_second_build_is_the_cached_image(built_image: BuiltImage) -> None:
    seen: list[str] = []
    again = await build_image(TEST_IMAGE_SPEC, progress=seen.append)
    assert again.key == built_image.key
    assert again.base == built_image.base
    assert len(seen) == 1, seen
    assert seen[0].startswith("cached: "), seen  # no mmdebstrap stage at all
    assert find_image(TEST_IMAGE_SPEC) == again


def leftovers() -> list[str]:
    """Build directories of this process, and mounts under the cache."""
    mine = f"-{os.getpid()}-"
    found = [p.name for p in image_build.images_dir().iterdir() if mine in p.name]
    with open("/proc/self/mountinfo") as f:
        found += [line for line in f if str(image_build.images_dir()) in line]
    return found


def processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue  # gone meanwhile
        if text in argv:
            found.append(f"{cmdline.parent.name}: {argv}")
    return found


@pytest.mark.timeout(300)
async def test_a_package_that_does_not_exist_is_named() -> None:
    spec = ImageSpec(name="vmlab-test-bogus", packages=("nfs-common", "vmlab-no-such-package"))
    with pytest.raises(UsageError) as caught:
        await build_image(spec)
    assert caught.value.exit_code is ExitCode.USAGE
    assert caught.value.message == (
        "image.vmlab-test-bogus.packages: no package 'vmlab-no-such-package' in "
        "debian:bookworm at http://deb.debian.org/debian "
        "(check the spelling: https://packages.debian.org/bookworm/)"
    )
    assert "E: Unable to locate package vmlab-no-such-package" in caught.value.details
    assert find_image(spec) is None
    assert leftovers() == []


@pytest.mark.timeout(300)
async def test_cancelling_a_build_leaves_nothing_behind() -> None:
    # A script no other run has: a new key, so this really starts mmdebstrap.
    spec = ImageSpec(name="vmlab-test-cancel", script=f"true {secrets.token_hex(8)}\n")
    in_chroot = asyncio.Event()

    def progress(stage: str) -> None:
        if stage.startswith("installing essential packages"):
            in_chroot.set()  # dpkg runs in the chroot, /proc and /dev mounted in it

    task = asyncio.create_task(build_image(spec, progress=progress))
    waiter = asyncio.create_task(in_chroot.wait())
    done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    assert task not in done, task.result()
    await asyncio.sleep(2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert leftovers() == []
    assert find_image(spec) is None
    build_dir = f".build-{image_build.image_key(spec)[:16]}-{os.getpid()}-"
    assert processes_mentioning(build_dir) == []  # mmdebstrap, apt, dpkg: all gone
