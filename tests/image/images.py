"""The standard test image, shared by the image tests and the disk-image VM tests.

`TEST_IMAGE_SPEC` is built once into the real cache (~/.cache/vmlab/images, or
$VMLAB_CACHE_DIR) and found there by every later run, so only the first run on
a host pays for the build (a minute or two). Change it only with a reason: any
change is a new cache key, hence a new cold build.

From another test directory (tests/ is on sys.path)::

    from image.images import ensure_test_image
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from vmlab.machine.image_build import BuiltImage, build_image
from vmlab.machine.image_machine import ImageMachine
from vmlab.machine.spec import Accel, DiskSpec, ImageSpec, MachineSpec

TEST_IMAGE_SPEC = ImageSpec(
    name="vmlab-test",
    # On top of the base set: an NFS server and client for the multi-VM tests.
    packages=("nfs-kernel-server", "nfs-common", "python3"),
    size_mib=2048,
)


def ensure_test_image(progress: Callable[[str], None] | None = None) -> BuiltImage:
    """The built TEST_IMAGE_SPEC, building it first when the cache lacks it."""
    return asyncio.run(build_image(TEST_IMAGE_SPEC, progress=progress))


def image_table(name: str = "base") -> str:
    """An `[image.NAME]` table of a lab file with TEST_IMAGE_SPEC's recipe, so
    that the lab's image is the cached test image."""
    packages = ", ".join(f'"{p}"' for p in TEST_IMAGE_SPEC.packages)
    return f'[image.{name}]\npackages = [{packages}]\nsize = "{TEST_IMAGE_SPEC.size_mib}M"\n'


@contextlib.asynccontextmanager
async def booted(
    name: str, disk: DiskSpec, *, memory_mib: int = 1024
) -> AsyncIterator[ImageMachine]:
    """A disk-image machine under TCG, its console logged in the lab directory;
    once stopped, nothing of it may be left (no runtime dir, no QEMU)."""
    spec = MachineSpec(name=name, memory_mib=memory_mib, accel=Accel.TCG, disk=disk)
    machine = ImageMachine(spec, console_log=disk.lab_dir / "console.log")
    async with machine:
        yield machine
    assert machine.pid is None and machine.runtime_dir is None
    left = [
        pid for pid in os.listdir("/proc") if pid.isdigit() and f"vmlab-{name}\0" in _cmdline(pid)
    ]
    assert not left, f"QEMU of {name} left running: {left}"


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""
