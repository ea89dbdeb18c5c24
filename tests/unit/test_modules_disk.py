"""The host kernel's modules as a read-only disk for disk-image machines
(`kernel = "host"`): a real mkfs.ext4 of a small modules tree, read back with
debugfs (no mount)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from vmlab.errors import UsageError
from vmlab.machine.modules_disk import LABEL, modules_disk


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VMLAB_CACHE_DIR", str(tmp_path / "cache"))


def _tree(root: Path) -> Path:
    (root / "kernel" / "drivers" / "net").mkdir(parents=True)
    (root / "kernel" / "drivers" / "net" / "dummy.ko").write_bytes(b"\x7fELF" + b"\0" * 5000)
    (root / "modules.dep").write_text("kernel/drivers/net/dummy.ko:\n")
    (root / "build").symlink_to("/usr/src/linux-headers-x")
    return root


def _debugfs(image: Path, request: str) -> str:
    return subprocess.run(
        ["debugfs", "-R", request, str(image)], capture_output=True, text=True, check=True
    ).stdout


def test_the_disk_holds_the_tree_at_its_root_and_is_reused(tmp_path: Path) -> None:
    root = _tree(tmp_path / "6.1.0-test")
    disk = modules_disk(root)
    assert disk.is_file() and disk.parent == tmp_path / "cache" / "modules-disks"
    assert _debugfs(disk, "cat /modules.dep") == "kernel/drivers/net/dummy.ko:\n"
    listing = _debugfs(disk, "stat /kernel/drivers/net/dummy.ko")
    assert "Size: 5004" in listing
    assert 'Fast link dest: "/usr/src/linux-headers-x"' in _debugfs(disk, "stat /build")
    label = subprocess.run(
        ["dumpe2fs", "-h", str(disk)], capture_output=True, text=True, check=True
    ).stdout
    assert f"Filesystem volume name:   {LABEL}" in label
    mtime = disk.stat().st_mtime_ns
    assert modules_disk(root) == disk and disk.stat().st_mtime_ns == mtime  # cached


def test_a_changed_module_makes_a_new_disk_that_replaces_the_old(tmp_path: Path) -> None:
    root = _tree(tmp_path / "6.1.0-test")
    old = modules_disk(root)
    module = root / "kernel" / "drivers" / "net" / "dummy.ko"
    module.write_bytes(b"\x7fELF rebuilt")
    os.utime(module, ns=(1, 1))
    new = modules_disk(root)
    assert new != old and new.is_file() and not old.exists()
    assert "Size: 12" in _debugfs(new, "stat /kernel/drivers/net/dummy.ko")
    assert [p.name for p in new.parent.iterdir()] == [new.name]  # no temporary file left


def test_a_directory_without_modules_dep_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"no kernel modules at .*modules\.dep missing"):
        modules_disk(tmp_path)
