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
from collections.abc import Callable

from vmlab.machine.image_build import BuiltImage, build_image
from vmlab.machine.spec import ImageSpec

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
