"""The fast path's tiny initramfs: busybox, the guest scripts and a few modules.

Exactly the modules needed to reach the host root (virtio PCI, 9p, overlayfs)
and the command ports (virtio-serial) are packed, in load order, resolved from
the kernel's modules.dep; modules built into the kernel are left out. The
archive is cached under ~/.cache/vmlab/initramfs/, keyed by what goes in it.
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from vmlab.cache import cache_dir, write_atomic
from vmlab.errors import HostError, UsageError

# What the guest init needs, by module name, in load order; dependencies come
# from modules.dep. virtio_console goes first: its ports come up through a few
# round trips with QEMU, which then overlap with loading the rest.
REQUIRED_MODULES: tuple[str, ...] = (
    "virtio_pci",
    "virtio_console",
    "9pnet_virtio",
    "9p",
    "overlay",
)
# What a disk-image machine's init needs to mount its root disk, plus the NIC
# driver so that SSH works even when the image has no modules for the booted
# kernel (kernel = "host"); the image's own udev loads everything else. ext4
# needs a crc32c implementation that modules.dep does not list (a soft dependency).
IMAGE_MODULES: tuple[str, ...] = (
    "virtio_pci",
    "virtio_blk",
    "crc32c_generic",
    "ext4",
    "virtio_net",
)

# Kernel options behind each required module, for the error when one is missing.
_CONFIG_OF = {
    "virtio_pci": "CONFIG_VIRTIO_PCI",
    "9pnet_virtio": "CONFIG_NET_9P_VIRTIO",
    "9p": "CONFIG_9P_FS",
    "overlay": "CONFIG_OVERLAY_FS",
    "virtio_console": "CONFIG_VIRTIO_CONSOLE",
    "virtio_blk": "CONFIG_VIRTIO_BLK",
    "ext4": "CONFIG_EXT4_FS",
}

BUSYBOX_CANDIDATES = (Path("/bin/busybox"), Path("/usr/bin/busybox"))


def module_name(path: str) -> str:
    """`kernel/net/9p/9pnet-virtio.ko.xz` -> `9pnet_virtio`."""
    name = path.rsplit("/", 1)[-1]
    name = name.split(".ko", 1)[0]
    return name.replace("-", "_")


@dataclass(frozen=True)
class ModuleIndex:
    """A kernel's modules.dep and modules.builtin, by module name."""

    root: Path
    paths: dict[str, str]  # name -> path relative to root
    deps: dict[str, tuple[str, ...]]  # name -> names it needs
    builtin: frozenset[str]

    @classmethod
    def load(cls, root: Path) -> ModuleIndex:
        dep_file = root / "modules.dep"
        try:
            text = dep_file.read_text()
        except FileNotFoundError:
            raise UsageError(
                f"no kernel modules at {root} (modules.dep missing): install the modules "
                "of this kernel, or pass --modules DIR"
            ) from None
        paths: dict[str, str] = {}
        deps: dict[str, tuple[str, ...]] = {}
        for line in text.splitlines():
            if ":" not in line:
                continue
            target, _, needed = line.partition(":")
            name = module_name(target)
            paths[name] = target
            deps[name] = tuple(module_name(d) for d in needed.split())
        builtin_file = root / "modules.builtin"
        builtin = (
            frozenset(module_name(line) for line in builtin_file.read_text().split())
            if builtin_file.exists()
            else frozenset()
        )
        return cls(root, paths, deps, builtin)

    def load_order(self, wanted: Iterable[str]) -> list[str]:
        """Module names to insmod, dependencies first; built-in ones left out."""
        order: list[str] = []
        seen: set[str] = set()

        def visit(name: str, needed_by: str | None) -> None:
            if name in seen or name in self.builtin:
                return
            seen.add(name)
            if name not in self.paths:
                config = _CONFIG_OF.get(name, "")
                hint = f" ({config})" if config else ""
                who = f", needed by {needed_by}" if needed_by else ""
                raise UsageError(
                    f"kernel modules at {self.root} lack {name}{hint}{who}: "
                    "vmlab boots need virtio, 9p and overlayfs (disk images: virtio_blk, ext4)"
                )
            for dep in self.deps[name]:
                visit(dep, name)
            order.append(name)

        for name in wanted:
            visit(name, None)
        return order


def _module_bytes(path: Path) -> bytes:
    """A module file's ELF, decompressed when the distribution compressed it."""
    data = path.read_bytes()
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(data)
    if path.name.endswith(".ko.gz"):
        return gzip.decompress(data)
    if path.name.endswith(".ko.zst"):
        try:
            import zstandard  # type: ignore[import-not-found,unused-ignore]  # noqa: PLC0415
        except ImportError:
            raise HostError(f"{path} is zstd-compressed: .venv/bin/pip install zstandard") from None
        out: bytes = zstandard.ZstdDecompressor().decompress(data, max_output_size=64 << 20)
        return out
    return data


class CpioWriter:
    """A minimal newc ("070701") cpio archive, as the kernel unpacks initramfs."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._ino = 1

    def _entry(
        self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)
    ) -> None:
        encoded = name.encode() + b"\0"
        fields = (
            self._ino,
            mode,
            0,
            0,
            1,
            0,
            len(data),
            0,
            0,
            rdev[0],
            rdev[1],
            len(encoded),
            0,
        )
        self._ino += 1
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        self._parts.append(header + encoded + b"\0" * (-(110 + len(encoded)) % 4))
        self._parts.append(data + b"\0" * (-len(data) % 4))

    def directory(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def char_device(self, name: str, major: int, minor: int) -> None:
        self._entry(name, stat.S_IFCHR | 0o600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return b"".join(self._parts)


def find_busybox() -> Path:
    for candidate in BUSYBOX_CANDIDATES:
        if candidate.exists():
            return candidate
    raise HostError("busybox is not installed (apt-get install busybox-static)")


def _guest_script(name: str) -> bytes:
    return resources.files("vmlab.guest").joinpath(name).read_bytes()


def _stat_key(path: Path) -> str:
    st = path.stat()
    return f"{path}:{st.st_size}:{st.st_mtime_ns}"


def build_initramfs(
    modules_root: Path, extra_modules: Iterable[str] = (), *, for_image: bool = False
) -> Path:
    """Return the path of a cached initramfs for the kernel whose modules are at
    `modules_root`, building it on first use. `for_image`: the init that mounts
    a disk image's root and hands over to its own init, instead of the host-root
    init with the agent."""
    index = ModuleIndex.load(modules_root)
    required = IMAGE_MODULES if for_image else REQUIRED_MODULES
    order = index.load_order((*required, *extra_modules))
    busybox = find_busybox()
    if for_image:
        init, agent = _guest_script("image_init.sh"), b""
    else:
        init, agent = _guest_script("init.sh"), _guest_script("agent.sh")
    key = hashlib.sha256()
    for part in (
        init,
        agent,
        _stat_key(busybox).encode(),
        *(_stat_key(modules_root / index.paths[name]).encode() for name in order),
    ):
        key.update(hashlib.sha256(part).digest())
    target = cache_dir("initramfs") / f"{key.hexdigest()[:32]}.cpio"
    if target.exists():
        return target

    cpio = CpioWriter()
    directories = ["bin", "dev", "proc", "sys", "lib", "lib/modules"]
    if agent:  # the host-root init's mount points
        directories += ["lower", "rw", "newroot"]
    for directory in directories:
        cpio.directory(directory)
    cpio.char_device("dev/console", 5, 1)
    cpio.file("bin/busybox", busybox.read_bytes(), 0o755)
    cpio.symlink("bin/sh", "busybox")
    cpio.file("init", init, 0o755)
    if agent:
        cpio.file("agent.sh", agent, 0o755)
    names = []
    for name in order:
        filename = f"{name}.ko"
        cpio.file(f"lib/modules/{filename}", _module_bytes(modules_root / index.paths[name]))
        names.append(filename)
    cpio.file("modules.order", "".join(f"{n}\n" for n in names).encode())
    # For both inits' one `modprobe -a` (listed in load order, so no
    # dependencies are needed here).
    cpio.file("lib/modules/modules.dep", "".join(f"{n}:\n" for n in names).encode())
    write_atomic(target, cpio.finish())
    return target
