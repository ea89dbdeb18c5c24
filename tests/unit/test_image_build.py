"""Image builds without building: the cache key, mmdebstrap's errors (real
captured output in tests/data/images/), the boot modules' subset, the
filesystem size check (real mkfs.ext4 on a small tree), and the cache's
find/list/remove/sweep on entries made here."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from vmlab.errors import ExitCode, HostError, InfraError, UsageError
from vmlab.machine import image_build
from vmlab.machine.image_build import (
    BASE_PACKAGES,
    IMAGE_BOOT_MODULES,
    BuiltImage,
    build_image,
    check_spec,
    copy_boot_modules,
    find_image,
    image_key,
    image_manifest,
    list_images,
    make_filesystem,
    mmdebstrap_error,
    remove_image,
    size_needed_mib,
)
from vmlab.machine.spec import ImageSpec

DATA = Path(__file__).resolve().parents[1] / "data" / "images"


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("VMLAB_CACHE_DIR", str(cache))
    return cache


def files_spec(tmp_path: Path) -> ImageSpec:
    (tmp_path / "motd").write_text("hello\n")
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "run.sh").write_text("#!/bin/sh\n")
    (tree / "sub" / "run.sh").chmod(0o755)
    (tree / "link").symlink_to("sub/run.sh")
    return ImageSpec(
        name="base",
        packages=("nfs-common", "python3"),
        files=(("/etc/motd", tmp_path / "motd"), ("/opt/tree", tree)),
        script="echo hi > /root/hi\n",
    )


# ------------------------------------------------------------------ the key


def test_key_is_stable_and_ignores_what_does_not_change_the_image(tmp_path: Path) -> None:
    spec = files_spec(tmp_path)
    key = image_key(spec)
    assert key == image_key(spec)
    assert len(key) == 64 and int(key, 16) >= 0
    same = dataclasses.replace(
        spec,
        name="other",
        description="words",
        where="vmlab.toml:3",
        packages=("python3", "nfs-common", "python3"),  # order and repeats
        files=tuple(reversed(spec.files)),
        mirror=spec.mirror + "/",
    )
    assert image_key(same) == key
    manifest = image_manifest(spec)
    assert manifest["packages"] == ["nfs-common", "python3"]
    assert manifest["base"] == list(BASE_PACKAGES)
    assert manifest["format"] == image_build.FORMAT
    assert json.loads(json.dumps(manifest)) == manifest


def test_key_changes_with_every_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = files_spec(tmp_path)
    key = image_key(spec)
    variants = [
        dataclasses.replace(spec, distro="debian:trixie"),
        dataclasses.replace(spec, packages=(*spec.packages, "less")),
        dataclasses.replace(spec, size_mib=4096),
        dataclasses.replace(spec, script=spec.script + "true\n"),
        dataclasses.replace(spec, mirror="http://ftp.de.debian.org/debian"),
        dataclasses.replace(spec, files=(("/etc/issue", tmp_path / "motd"), *spec.files[1:])),
        dataclasses.replace(spec, files=spec.files[:1]),
    ]
    keys = {image_key(variant) for variant in variants}
    assert key not in keys
    assert len(keys) == len(variants)

    # a file's content, a mode or a symlink deep in a copied tree
    (tmp_path / "motd").write_text("hello again\n")
    changed = image_key(spec)
    assert changed != key
    (tmp_path / "tree" / "sub" / "run.sh").chmod(0o644)
    assert image_key(spec) != changed
    changed = image_key(spec)
    (tmp_path / "tree" / "link").unlink()
    (tmp_path / "tree" / "link").symlink_to("sub")
    assert image_key(spec) != changed
    changed = image_key(spec)

    # the recipe: its format version and the base packages
    monkeypatch.setattr(image_build, "FORMAT", image_build.FORMAT + 1)
    assert image_key(spec) != changed
    monkeypatch.setattr(image_build, "BASE_PACKAGES", (*BASE_PACKAGES, "vim"))
    assert image_key(spec) != changed


def test_key_of_a_missing_file_is_a_one_line_error(tmp_path: Path) -> None:
    spec = dataclasses.replace(files_spec(tmp_path), where="vmlab.toml:4")
    (tmp_path / "motd").unlink()
    with pytest.raises(UsageError, match=r"^vmlab.toml:4: image.base.files: .*motd does not exist"):
        image_key(spec)


def test_check_spec_rejects_what_the_loader_would() -> None:
    with pytest.raises(UsageError) as caught:
        check_spec(ImageSpec(name="x", distro="ubuntu:noble"))
    assert caught.value.message == (
        "image.x.distro: 'ubuntu:noble' is not supported (supported: debian:bookworm)"
    )
    with pytest.raises(UsageError, match="'Bad Name' is not a package name"):
        check_spec(ImageSpec(name="x", packages=("Bad Name",)))
    with pytest.raises(UsageError, match="not a valid image name"):
        check_spec(ImageSpec(name="../x"))


# ------------------------------------------------------- mmdebstrap's errors


def error_for(log: str, spec: ImageSpec | None = None) -> Exception:
    spec = spec or ImageSpec(name="base", where="vmlab.toml:7")
    lines = (DATA / log).read_text().splitlines()
    return mmdebstrap_error(spec, 25, lines, Path("/state/base.log"))


def test_missing_packages_are_named() -> None:
    error = error_for("missing-package.log")
    assert isinstance(error, UsageError)
    assert error.exit_code is ExitCode.USAGE
    assert error.message == (
        "vmlab.toml:7: image.base.packages: no packages 'nosuchpkg-vmlab', 'another-bogus-pkg' "
        "in debian:bookworm at http://deb.debian.org/debian "
        "(check the spelling: https://packages.debian.org/bookworm/)"
    )
    assert "E: Unable to locate package nosuchpkg-vmlab" in error.details


def test_one_missing_package() -> None:
    lines = ["Reading package lists...", "E: Unable to locate package nfs-kernel-servr"]
    error = mmdebstrap_error(ImageSpec(name="nfs"), 25, lines, Path("x.log"))
    assert error.message.startswith(
        "image.nfs.packages: no package 'nfs-kernel-servr' in debian:bookworm"
    )


@pytest.mark.parametrize(
    ("log", "reason"),
    [
        ("mirror-unresolvable.log", "Could not resolve 'nonexistent.invalid'"),
        (
            "mirror-refused.log",
            "Could not connect to 127.0.0.1:9 (127.0.0.1). - connect (111: Connection refused)",
        ),
        ("mirror-bad-path.log", "400 Bad Request"),
    ],
)
def test_an_unreachable_mirror_is_a_host_error(log: str, reason: str) -> None:
    spec = ImageSpec(name="base", mirror="http://m/debian", where="vmlab.toml:7")
    error = error_for(log, spec)
    assert isinstance(error, HostError)
    assert error.message == (
        f"vmlab.toml:7: image.base.mirror: cannot fetch from http://m/debian: {reason} "
        "(check the mirror's URL and this host's network)"
    )


def test_a_failing_script_is_blamed_before_anything_else() -> None:
    error = error_for("script-failed.log")
    assert isinstance(error, UsageError)
    assert error.message == (
        "vmlab.toml:7: image.base.script: failed with exit status 1 "
        "(its output is in /state/base.log; -v shows the end)"
    )
    assert "building things" in error.details


def test_anything_else_is_an_infra_error_with_the_first_error_line() -> None:
    lines = [
        "I: running apt-get update...",
        "E: dpkg was interrupted",
        "E: mmdebstrap failed to run",
    ]
    error = mmdebstrap_error(ImageSpec(name="b"), 25, lines, Path("/l.log"))
    assert isinstance(error, InfraError)
    assert error.message == (
        "image b: mmdebstrap failed (exit 25): dpkg was interrupted (log: /l.log)"
    )
    full = ["E: write (28: No space left on device)"]
    assert isinstance(mmdebstrap_error(ImageSpec(name="b"), 25, full, Path("/l")), HostError)


def test_stages_are_mmdebstrap_info_lines() -> None:
    stage = image_build._stage
    assert stage("I: running apt-get update...") == "running apt-get update"
    assert stage("I: vmlab: copying 2 file(s) in") == "copying 2 file(s) in"
    assert stage("I: running --customize-hook in shell: sh -c 'x' exec /r") is None
    assert stage("I: main() received signal PIPE: waiting for setup...") is None
    assert stage("Get:1 http://deb.debian.org/debian bookworm InRelease") is None
    assert stage("E: Unable to locate package x") is None


# ------------------------------------------------------- filesystem and modules


async def test_a_rootfs_that_does_not_fit_says_the_size_it_needs(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    (rootfs / "big").write_bytes(os.urandom(12 << 20))
    used = image_build.tree_usage(rootfs)
    assert used >= 12 << 20
    mkfs = shutil.which("mkfs.ext4", path="/usr/sbin:/sbin:" + os.environ["PATH"])
    assert mkfs is not None, "e2fsprogs is part of make setup"
    spec = ImageSpec(name="tiny", size_mib=8, where="vmlab.toml:2")
    with pytest.raises(UsageError) as caught:
        await make_filesystem(spec, mkfs, rootfs, tmp_path / "disk.raw", used)
    assert caught.value.message == (
        "vmlab.toml:2: image.tiny.size: the root filesystem (12M of files) does not fit "
        f'in 8M: it needs about {size_needed_mib(used)}M (set size = "256M")'
    )
    assert "Could not allocate block" in caught.value.details

    fits = dataclasses.replace(spec, size_mib=size_needed_mib(used))
    await make_filesystem(fits, mkfs, rootfs, tmp_path / "disk.raw", used)
    with (tmp_path / "disk.raw").open("rb") as disk:
        disk.seek(1024 + 0x78)  # the superblock's s_volume_name
        label = disk.read(16).rstrip(b"\0").decode()
    assert label == "vmlab-root"


def test_size_needed_leaves_room_for_ext4() -> None:
    assert size_needed_mib(0) == 64
    assert size_needed_mib(700 << 20) == 896  # ~the base set: +10% +64M, to a multiple of 64M
    assert size_needed_mib(700 << 20) % 64 == 0


def fake_modules(root: Path) -> Path:
    """A modules tree shaped like Debian 6.1's for the boot modules."""
    modules = root / "6.1.0-99-amd64"
    dep = {
        "kernel/drivers/virtio/virtio_pci.ko": [
            "kernel/drivers/virtio/virtio_pci_modern_dev.ko",
            "kernel/drivers/virtio/virtio.ko",
        ],
        "kernel/drivers/virtio/virtio_pci_modern_dev.ko": [],
        "kernel/drivers/virtio/virtio.ko": [],
        "kernel/drivers/block/virtio_blk.ko": ["kernel/drivers/virtio/virtio.ko"],
        "kernel/drivers/char/virtio_console.ko": ["kernel/drivers/virtio/virtio.ko"],
        "kernel/drivers/net/virtio_net.ko": [
            "kernel/drivers/net/net_failover.ko",
            "kernel/net/core/failover.ko",
            "kernel/drivers/virtio/virtio.ko",
        ],
        "kernel/drivers/net/net_failover.ko": ["kernel/net/core/failover.ko"],
        "kernel/net/core/failover.ko": [],
        "kernel/crypto/crc32c_generic.ko": [],
        "kernel/fs/ext4/ext4.ko": ["kernel/lib/crc16.ko", "kernel/fs/jbd2/jbd2.ko"],
        "kernel/lib/crc16.ko": [],
        "kernel/fs/jbd2/jbd2.ko": [],
        "kernel/fs/nfsd/nfsd.ko": [],
    }
    for path in dep:
        (modules / path).parent.mkdir(parents=True, exist_ok=True)
        (modules / path).write_bytes(f"ELF {path}".encode())
    lines = [f"{target}: {' '.join(deps)}".rstrip() for target, deps in dep.items()]
    (modules / "modules.dep").write_text("\n".join(lines) + "\n")
    (modules / "modules.builtin").write_text("kernel/drivers/virtio/virtio_ring.ko\n")
    (modules / "modules.alias").write_text("alias crc32c crc32c_generic\n")
    (modules / "modules.softdep").write_text("softdep ext4 pre: crc32c\n")
    (modules / "modules.dep.bin").write_bytes(b"\x00")
    return modules


def test_boot_modules_subset_is_the_closure_and_the_indexes(tmp_path: Path) -> None:
    source = fake_modules(tmp_path / "src")
    target = tmp_path / "out" / "6.1.0-99-amd64"
    order = copy_boot_modules(source, target)

    assert order == [
        "virtio_pci_modern_dev", "virtio", "virtio_pci", "virtio_blk", "virtio_console",
        "failover", "net_failover", "virtio_net", "crc32c_generic", "crc16", "jbd2", "ext4",
    ]  # fmt: skip
    copied = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    kos = [p for p in copied if p.endswith(".ko")]
    assert len(kos) == len(order)
    assert "kernel/fs/nfsd/nfsd.ko" not in copied
    assert {"modules.dep", "modules.builtin", "modules.alias", "modules.softdep"} <= set(copied)
    assert "modules.dep.bin" in copied
    assert (target / "kernel/fs/ext4/ext4.ko").read_bytes() == b"ELF kernel/fs/ext4/ext4.ko"
    assert set(order) >= set(IMAGE_BOOT_MODULES)


def test_boot_modules_built_in_or_absent_are_left_out(tmp_path: Path) -> None:
    source = fake_modules(tmp_path / "src")
    (source / "modules.builtin").write_text("kernel/fs/ext4/ext4.ko\nkernel/fs/jbd2/jbd2.ko\n")
    (source / "kernel/crypto/crc32c_generic.ko").unlink()
    dep = (source / "modules.dep").read_text().splitlines()
    kept = [line for line in dep if "ext4" not in line and "crc32c" not in line]
    (source / "modules.dep").write_text("\n".join(kept) + "\n")
    order = copy_boot_modules(source, tmp_path / "out")
    assert "ext4" not in order
    assert "crc32c_generic" not in order
    assert "virtio_blk" in order


# ------------------------------------------------------------------- the cache


def fake_entry(
    cache: Path, key: str, name: str, built_at: str = "2025-01-02T03:04:05+00:00"
) -> Path:
    entry = cache / "images" / key
    (entry / "names").mkdir(parents=True)
    (entry / "names" / name).touch()
    info = {
        "name": name, "distro": "debian:bookworm", "packages": ["less"],
        "release": "6.1.0-99-amd64", "boot_modules": ["virtio"], "size_mib": 2048,
        "rootfs_bytes": 700 << 20, "disk_bytes": 690 << 20, "built_at": built_at,
        "build_seconds": 71.5,
    }  # fmt: skip
    (entry / "image.json").write_text(json.dumps(info))
    return entry


async def test_a_cached_image_is_found_without_building(tmp_path: Path, _cache: Path) -> None:
    spec = ImageSpec(name="base", packages=("less",))
    assert find_image(spec) is None
    entry = fake_entry(_cache, image_key(spec), "base")
    found = find_image(spec)
    assert found is not None
    assert found.base == entry / "base.qcow2"
    assert found.vmlinuz == entry / "vmlinuz"
    assert found.modules == entry / "modules" / "6.1.0-99-amd64"
    assert found.built_at == datetime.datetime(2025, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)

    seen: list[str] = []
    again = await build_image(dataclasses.replace(spec, name="alias"), progress=seen.append)
    assert again.key == found.key
    assert again.names == ("alias", "base")  # remembered under its new name too
    assert len(seen) == 1 and seen[0].startswith("cached: ")


K1, K2, K3 = "ab" * 32, "abcd" + "00" * 30, "abcd" + "11" * 30


def test_list_is_oldest_first_and_skips_incomplete_entries(_cache: Path) -> None:
    fake_entry(_cache, K1, "base", "2025-01-02T00:00:00+00:00")
    fake_entry(_cache, K2, "nfs", "2025-01-01T00:00:00+00:00")
    fake_entry(_cache, K3, "base", "2025-01-03T00:00:00+00:00")
    (_cache / "images" / ("12" * 32)).mkdir()  # no image.json: not an image (yet)
    assert [(i.name, i.key) for i in list_images()] == [("nfs", K2), ("base", K1), ("base", K3)]


def test_remove_by_name_or_unique_key_prefix(_cache: Path) -> None:
    fake_entry(_cache, K1, "base")
    fake_entry(_cache, K2, "nfs")
    fake_entry(_cache, K3, "base")
    with pytest.raises(UsageError) as caught:
        remove_image("ab")  # too short to be a key prefix
    assert caught.value.message == "no image named or keyed 'ab' (vmlab image list shows them)"
    with pytest.raises(UsageError) as caught:
        remove_image("abcd")
    assert caught.value.message == (
        "'abcd' starts several image keys (abcd00000000, abcd11111111): give more of it"
    )
    assert sorted(image.key for image in remove_image("base")) == [K1, K3]
    assert [image.key for image in remove_image("abcd")] == [K2]
    assert list_images() == []
    assert [p.name for p in (_cache / "images").iterdir()] == []


def test_stale_build_directories_of_dead_processes_are_swept(_cache: Path) -> None:
    images = image_build.images_dir()
    child = subprocess.Popen(["true"])
    child.wait()  # a pid that no longer runs
    stale = images / f".build-0123456789abcdef-{child.pid}-00aa11bb"
    removing = images / f".rm-0123456789abcdef-{child.pid}-00aa11bb"
    live = images / f".build-0123456789abcdef-{os.getpid()}-00aa11bb"
    for directory in (stale, removing, live):
        (directory / "rootfs" / "etc").mkdir(parents=True)
    image_build._sweep_stale_builds()
    assert not stale.exists()
    assert not removing.exists()
    assert live.exists()


def test_built_image_paths() -> None:
    image = BuiltImage(
        key="k", directory=Path("/c/k"), name="n", names=("n",), distro="debian:bookworm",
        packages=(), release="6.1.0-1-amd64", boot_modules=(), size_mib=2048,
        rootfs_bytes=1, disk_bytes=1, built_at=datetime.datetime.now(datetime.UTC),
        build_seconds=1.0,
    )  # fmt: skip
    assert (image.base, image.vmlinuz, image.modules) == (
        Path("/c/k/base.qcow2"),
        Path("/c/k/vmlinuz"),
        Path("/c/k/modules/6.1.0-1-amd64"),
    )


async def test_one_build_of_a_key_at_a_time_and_no_lock_file_left(_cache: Path) -> None:
    order: list[str] = []
    first_in = asyncio.Event()
    release = asyncio.Event()

    async def hold(name: str) -> None:
        messages: list[str] = []
        async with image_build._build_lock("ab" * 32, messages.append):
            order.append(f"{name} in")
            first_in.set()
            await release.wait()
            order.append(f"{name} out")
        order.extend(f"{name}: {m}" for m in messages)

    first = asyncio.create_task(hold("first"))
    await first_in.wait()
    second = asyncio.create_task(hold("second"))
    await asyncio.sleep(0.7)  # the second polls every 0.5 s
    assert order == ["first in"]
    release.set()
    await asyncio.gather(first, second)
    assert order == [
        "first in",
        "first out",
        "second in",
        "second out",
        "second: waiting for another vmlab that builds this image",
    ]
    assert list(image_build.images_dir().iterdir()) == []
