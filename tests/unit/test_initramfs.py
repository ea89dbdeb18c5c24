"""The fast path's initramfs: module resolution from modules.dep/modules.builtin,
the newc cpio writer (read back by a small reader here and by GNU cpio), and the
archive build (fake module trees made here; this machine's real modules too)."""

from __future__ import annotations

import gzip
import lzma
import shutil
import stat
import subprocess
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pytest

from vmlab.errors import ExitCode, UsageError
from vmlab.machine.initramfs import (
    REQUIRED_MODULES,
    CpioWriter,
    ModuleIndex,
    build_initramfs,
    find_busybox,
    module_name,
)
from vmlab.machine.kernel import find_default_kernel, inspect_kernel

# A modules.dep shaped like Debian 6.1's: each line lists every module the
# target needs (transitively). virtio_ring is built in (modules.builtin).
FAKE_DEP = {
    "kernel/drivers/virtio/virtio_pci.ko.xz": [
        "kernel/drivers/virtio/virtio_pci_legacy_dev.ko",
        "kernel/drivers/virtio/virtio_pci_modern_dev.ko.gz",
        "kernel/drivers/virtio/virtio.ko.xz",
        "kernel/drivers/virtio/virtio_ring.ko",
    ],
    "kernel/drivers/virtio/virtio_pci_legacy_dev.ko": [],
    "kernel/drivers/virtio/virtio_pci_modern_dev.ko.gz": [],
    "kernel/drivers/virtio/virtio.ko.xz": ["kernel/drivers/virtio/virtio_ring.ko"],
    "kernel/drivers/char/virtio_console.ko": [
        "kernel/drivers/virtio/virtio.ko.xz",
        "kernel/drivers/virtio/virtio_ring.ko",
    ],
    "kernel/net/9p/9pnet.ko.gz": [],
    "kernel/net/9p/9pnet_virtio.ko": [
        "kernel/net/9p/9pnet.ko.gz",
        "kernel/drivers/virtio/virtio.ko.xz",
        "kernel/drivers/virtio/virtio_ring.ko",
    ],
    "kernel/fs/netfs/netfs.ko": [],
    "kernel/fs/fscache/fscache.ko": ["kernel/fs/netfs/netfs.ko"],
    "kernel/fs/9p/9p.ko.xz": [
        "kernel/net/9p/9pnet.ko.gz",
        "kernel/fs/fscache/fscache.ko",
        "kernel/fs/netfs/netfs.ko",
    ],
    "kernel/fs/overlayfs/overlay.ko": [],
    "kernel/drivers/block/unrelated.ko": ["kernel/fs/netfs/netfs.ko"],
}
FAKE_BUILTIN = ["kernel/drivers/virtio/virtio_ring.ko", "kernel/fs/ext4/ext4.ko"]
FAKE_ORDER = [
    "virtio_pci_legacy_dev",
    "virtio_pci_modern_dev",
    "virtio",
    "virtio_pci",
    "virtio_console",  # first after its bus: its ports come up while the rest load
    "9pnet",
    "9pnet_virtio",
    "netfs",
    "fscache",
    "9p",
    "overlay",
]


def fake_module_bytes(name: str) -> bytes:
    return b"\x7fELF fake module " + name.encode() + b"\n" * 7


def make_modules(
    root: Path,
    dep: dict[str, list[str]] | None = None,
    builtin: list[str] | None = None,
) -> Path:
    """A modules directory: modules.dep, modules.builtin and the module files,
    compressed as their names say."""
    dep = FAKE_DEP if dep is None else dep
    root.mkdir(parents=True, exist_ok=True)
    (root / "modules.dep").write_text(
        "".join(f"{target}: {' '.join(needs)}\n" for target, needs in dep.items())
    )
    (root / "modules.builtin").write_text("".join(f"{b}\n" for b in (builtin or FAKE_BUILTIN)))
    for target in dep:
        data = fake_module_bytes(module_name(target))
        if target.endswith(".xz"):
            data = lzma.compress(data)
        elif target.endswith(".gz"):
            data = gzip.compress(data)
        (root / target).parent.mkdir(parents=True, exist_ok=True)
        (root / target).write_bytes(data)
    return root


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("VMLAB_CACHE_DIR", str(cache))
    return cache


# -- module names and resolution ---------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("kernel/net/9p/9pnet_virtio.ko.xz", "9pnet_virtio"),
        ("kernel/fs/9p/9p.ko", "9p"),
        ("kernel/drivers/virtio/virtio-pci.ko.zst", "virtio_pci"),
        ("kernel/fs/overlayfs/overlay.ko.gz", "overlay"),
        ("overlay.ko", "overlay"),
    ],
)
def test_module_name(path: str, name: str) -> None:
    assert module_name(path) == name


def test_load_order_puts_dependencies_first_and_skips_builtins(tmp_path: Path) -> None:
    index = ModuleIndex.load(make_modules(tmp_path / "m"))
    order = index.load_order(REQUIRED_MODULES)
    assert order == FAKE_ORDER
    assert "virtio_ring" not in order  # built in
    assert "unrelated" not in order  # not needed


def test_load_order_respects_every_dependency_whatever_the_line_order(tmp_path: Path) -> None:
    reversed_dep = {target: list(reversed(needs)) for target, needs in reversed(FAKE_DEP.items())}
    index = ModuleIndex.load(make_modules(tmp_path / "m", reversed_dep))
    order = index.load_order(REQUIRED_MODULES)
    assert sorted(order) == sorted(FAKE_ORDER)
    _assert_dependencies_first(index, order)


def _assert_dependencies_first(index: ModuleIndex, order: list[str]) -> None:
    assert len(set(order)) == len(order), "a module is loaded twice"
    for position, name in enumerate(order):
        for dep in index.deps[name]:
            if dep not in index.builtin:
                assert dep in order[:position], f"{dep} must load before {name}"


def test_a_required_module_built_in_is_not_needed_in_modules_dep(tmp_path: Path) -> None:
    dep = {k: v for k, v in FAKE_DEP.items() if "overlay" not in k}
    root = make_modules(tmp_path / "m", dep, [*FAKE_BUILTIN, "kernel/fs/overlayfs/overlay.ko"])
    assert "overlay" not in ModuleIndex.load(root).load_order(REQUIRED_MODULES)


def test_a_missing_module_names_its_kernel_option(tmp_path: Path) -> None:
    dep = {k: v for k, v in FAKE_DEP.items() if "overlay" not in k}
    index = ModuleIndex.load(make_modules(tmp_path / "m", dep))
    with pytest.raises(UsageError) as info:
        index.load_order(REQUIRED_MODULES)
    assert "overlay" in info.value.message
    assert "CONFIG_OVERLAY_FS" in info.value.message
    assert str(tmp_path / "m") in info.value.message
    assert info.value.exit_code == ExitCode.USAGE


def test_a_missing_dependency_names_who_needs_it(tmp_path: Path) -> None:
    dep = {k: v for k, v in FAKE_DEP.items() if "modern_dev" not in k}
    index = ModuleIndex.load(make_modules(tmp_path / "m", dep))
    with pytest.raises(UsageError, match="virtio_pci_modern_dev, needed by virtio_pci"):
        index.load_order(REQUIRED_MODULES)


def test_no_modules_dep(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match=r"modules\.dep missing") as info:
        ModuleIndex.load(tmp_path / "empty")
    assert "--modules" in info.value.message


def test_the_real_modules_of_this_machine() -> None:
    release = inspect_kernel(find_default_kernel()).release
    index = ModuleIndex.load(Path("/lib/modules") / release)
    order = index.load_order(REQUIRED_MODULES)
    for name in REQUIRED_MODULES:
        assert name in order or name in index.builtin
    _assert_dependencies_first(index, order)
    for name in order:
        assert (index.root / index.paths[name]).is_file()


# -- the cpio writer ------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    name: str
    mode: int
    data: bytes
    rdev: tuple[int, int]
    ino: int


def read_newc(archive: bytes) -> list[Entry]:
    """A newc reader, strict about magic, alignment and the trailer."""
    entries: list[Entry] = []
    pos = 0
    while True:
        assert pos % 4 == 0
        assert archive[pos : pos + 6] == b"070701", f"bad magic at {pos}"
        fields = [int(archive[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        ino, mode, _, _, _, _, size, _, _, rmajor, rminor, namesize, check = fields
        assert check == 0
        name_end = pos + 110 + namesize
        assert archive[name_end - 1] == 0
        name = archive[pos + 110 : name_end - 1].decode()
        assert set(archive[name_end : (name_end + 3) & ~3]) <= {0}
        pos = (name_end + 3) & ~3
        data = archive[pos : pos + size]
        assert set(archive[pos + size : (pos + size + 3) & ~3]) <= {0}
        pos = (pos + size + 3) & ~3
        if name == "TRAILER!!!":
            assert pos == len(archive), "bytes after the trailer"
            return entries
        entries.append(Entry(name, mode, data, (rmajor, rminor), ino))


def sample_archive() -> tuple[bytes, dict[str, bytes]]:
    cpio = CpioWriter()
    files = {f"dir/f{n}{'x' * n}": bytes(range(n)) for n in range(6)}  # every padding
    cpio.directory("dir")
    for name, data in files.items():
        cpio.file(name, data)
    cpio.file("dir/run.sh", b"#!/bin/sh\necho hi\n", 0o755)
    cpio.symlink("dir/link", "run.sh")
    cpio.char_device("dir/console", 5, 1)
    return cpio.finish(), files


def test_cpio_reads_back() -> None:
    archive, files = sample_archive()
    entries = {e.name: e for e in read_newc(archive)}
    assert list(entries) == ["dir", *files, "dir/run.sh", "dir/link", "dir/console"]
    assert len({e.ino for e in entries.values()}) == len(entries)  # no hard links by accident
    assert stat.S_ISDIR(entries["dir"].mode)
    for name, data in files.items():
        assert entries[name].data == data
        assert entries[name].mode == stat.S_IFREG | 0o644
    assert entries["dir/run.sh"].mode == stat.S_IFREG | 0o755
    assert entries["dir/link"].mode == stat.S_IFLNK | 0o777
    assert entries["dir/link"].data == b"run.sh"
    assert stat.S_ISCHR(entries["dir/console"].mode)
    assert entries["dir/console"].rdev == (5, 1)


def test_gnu_cpio_reads_it_too(tmp_path: Path) -> None:
    assert shutil.which("cpio"), "Debian's cpio package is needed (apt-get install cpio)"
    archive, files = sample_archive()
    listing = subprocess.run(
        ["cpio", "-t", "--quiet"], input=archive, capture_output=True, check=True
    ).stdout.decode()
    assert listing.splitlines() == ["dir", *files, "dir/run.sh", "dir/link", "dir/console"]
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(  # everything but the device node
        ["cpio", "-i", "-d", "--quiet", "-f", "dir/console"],
        input=archive,
        cwd=out,
        check=True,
    )
    for name, data in files.items():
        assert (out / name).read_bytes() == data
    assert (out / "dir/run.sh").stat().st_mode & 0o777 == 0o755
    assert (out / "dir/link").readlink() == Path("run.sh")


# -- the initramfs ---------------------------------------------------------------------------


def test_build_initramfs_packs_init_agent_busybox_and_modules(
    tmp_path: Path, private_cache: Path
) -> None:
    root = make_modules(tmp_path / "m")
    path = build_initramfs(root)
    assert path.is_relative_to(private_cache)
    entries = {e.name: e for e in read_newc(path.read_bytes())}
    guest = resources.files("vmlab.guest")
    assert entries["init"].data == guest.joinpath("init.sh").read_bytes()
    assert entries["init"].mode & 0o111
    assert entries["agent.sh"].data == guest.joinpath("agent.sh").read_bytes()
    assert entries["bin/busybox"].data == find_busybox().read_bytes()
    assert entries["bin/sh"].data == b"busybox"
    assert stat.S_ISLNK(entries["bin/sh"].mode)
    assert entries["dev/console"].rdev == (5, 1)
    order = entries["modules.order"].data.decode().splitlines()
    assert order == [f"{name}.ko" for name in FAKE_ORDER]
    for name in FAKE_ORDER:  # decompressed, whatever the distribution's compression
        assert entries[f"lib/modules/{name}.ko"].data == fake_module_bytes(name)
    assert not any("virtio_ring" in name or "unrelated" in name for name in entries)


def test_build_initramfs_is_cached_until_a_module_changes(tmp_path: Path) -> None:
    root = make_modules(tmp_path / "m")
    first = build_initramfs(root)
    built = first.stat().st_mtime_ns
    assert build_initramfs(root) == first
    assert first.stat().st_mtime_ns == built  # not rebuilt
    module = root / "kernel/fs/overlayfs/overlay.ko"
    module.write_bytes(b"\x7fELF a rebuilt overlay module, longer than before\n")
    second = build_initramfs(root)
    assert second != first
    entries = {e.name: e for e in read_newc(second.read_bytes())}
    assert entries["lib/modules/overlay.ko"].data == module.read_bytes()


def test_build_initramfs_with_the_real_modules() -> None:
    release = inspect_kernel(find_default_kernel()).release
    path = build_initramfs(Path("/lib/modules") / release)
    entries = {e.name: e for e in read_newc(path.read_bytes())}
    modules = [n for n in entries if n.startswith("lib/modules/") and n.endswith(".ko")]
    assert modules
    for name in modules:
        assert entries[name].data.startswith(b"\x7fELF")
    # modprobe's index: every module, in load order, no dependencies (init
    # loads them in that order).
    order = entries["modules.order"].data.decode().split()
    assert entries["lib/modules/modules.dep"].data.decode().split() == [f"{n}:" for n in order]
    assert sorted(order) == sorted(n.removeprefix("lib/modules/") for n in modules)
    for name in ("init", "agent.sh", "bin/busybox", "lower", "rw", "newroot"):
        assert name in entries
