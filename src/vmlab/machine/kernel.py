"""Kernels: find them, tell a bzImage from a vmlinux, and extract vmlinux for PVH.

An uncompressed vmlinux with a PVH entry note boots straight into 64-bit code,
which skips the decompressor: under TCG that is seconds saved on every boot. The
extracted vmlinux is cached under ~/.cache/vmlab/kernels/, keyed by the
kernel's content hash.
"""

from __future__ import annotations

import bz2
import enum
import hashlib
import lzma
import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vmlab.cache import cache_dir, write_atomic
from vmlab.errors import HostError, UsageError

_XEN_ELFNOTE_PHYS32_ENTRY = 18  # the PVH entry point note (include/xen/interface/elfnote.h)
_ELF_MAGIC = b"\x7fELF"


class KernelFormat(enum.StrEnum):
    BZIMAGE = "bzImage"
    ELF = "vmlinux"


@dataclass(frozen=True)
class Kernel:
    """A kernel image as found on disk."""

    path: Path
    format: KernelFormat
    release: str  # `uname -r` of the kernel, e.g. 6.1.0-26-amd64
    sha256: str


@dataclass(frozen=True)
class BootableKernel:
    """What QEMU's -kernel gets: the PVH vmlinux when there is one."""

    kernel: Kernel
    boot_path: Path
    pvh: bool


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"kernel {path} does not exist (pass --kernel PATH)") from None
    except IsADirectoryError:
        raise UsageError(f"kernel {path} is a directory, not a kernel image") from None
    except PermissionError:
        raise UsageError(
            f"cannot read kernel {path}: permission denied "
            f"(Debian installs kernels mode 0600: run as root, or `chmod 0644 {path}`)"
        ) from None


def _release_from_banner(data: bytes) -> str | None:
    match = re.search(rb"Linux version (\S+) \(", data)
    return match.group(1).decode("ascii", "replace") if match else None


def _memo_path(path: Path) -> Path | None:
    """Where the verdict on `path` is kept while the file stays the same."""
    try:
        st = path.stat()
    except OSError:
        return None
    key = f"{path.resolve()}:{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"
    return cache_dir("kernels") / "by-stat" / hashlib.sha256(key.encode()).hexdigest()[:32]


def inspect_kernel(path: Path) -> Kernel:
    """Identify `path` as a bzImage or an ELF vmlinux and read its release.

    Hashing a kernel costs tens of ms on every run, so the result is
    remembered for as long as the file's inode, size and mtime stay the same.
    """
    memo = _memo_path(path)
    if memo is not None and memo.exists():
        fmt, release, digest = memo.read_text().split()
        return Kernel(path, KernelFormat(fmt), release, digest)
    kernel = _inspect(path)
    if memo is not None:
        write_atomic(memo, f"{kernel.format.value} {kernel.release} {kernel.sha256}\n".encode())
    return kernel


def _inspect(path: Path) -> Kernel:
    data = _read(path)
    digest = hashlib.sha256(data).hexdigest()
    if len(data) > 0x210 and data[0x202:0x206] == b"HdrS":
        (version_ptr,) = struct.unpack_from("<H", data, 0x20E)
        start = 0x200 + version_ptr
        end = data.find(b"\0", start, start + 256)
        release = data[start:end].split(b" ", 1)[0].decode("ascii", "replace")
        return Kernel(path, KernelFormat.BZIMAGE, release, digest)
    if data.startswith(_ELF_MAGIC):
        banner = _release_from_banner(data)
        if banner is None:
            raise UsageError(f"{path} is an ELF file but not a Linux kernel (no version banner)")
        return Kernel(path, KernelFormat.ELF, banner, digest)
    raise UsageError(
        f"{path} is not a Linux kernel (neither a bzImage nor an ELF vmlinux); "
        "pass --kernel with arch/x86/boot/bzImage or vmlinux"
    )


def has_pvh_note(elf: bytes) -> bool:
    """True when a 64-bit ELF carries the PVH entry note QEMU boots through."""
    if not elf.startswith(_ELF_MAGIC) or elf[4] != 2:  # ELFCLASS64 only
        return False
    (e_phoff,) = struct.unpack_from("<Q", elf, 0x20)
    e_phentsize, e_phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(e_phnum):
        base = e_phoff + i * e_phentsize
        (p_type,) = struct.unpack_from("<I", elf, base)
        if p_type != 4:  # PT_NOTE
            continue
        (p_offset,) = struct.unpack_from("<Q", elf, base + 8)
        (p_filesz,) = struct.unpack_from("<Q", elf, base + 32)
        pos, end = p_offset, p_offset + p_filesz
        while pos + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", elf, pos)
            name = elf[pos + 12 : pos + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and ntype == _XEN_ELFNOTE_PHYS32_ENTRY:
                return True
            pos += 12 + ((namesz + 3) & ~3) + ((descsz + 3) & ~3)
    return False


def _zstd(payload: bytes) -> bytes:
    try:
        import zstandard  # type: ignore[import-not-found,unused-ignore]  # noqa: PLC0415
    except ImportError:
        raise HostError(
            "this kernel is zstd-compressed; install the `zstandard` Python package "
            "(.venv/bin/pip install zstandard) or pass the uncompressed vmlinux"
        ) from None
    out: bytes = zstandard.ZstdDecompressor().decompressobj().decompress(payload)
    return out


def _xz(payload: bytes) -> bytes:
    return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(payload)


def _lzma(payload: bytes) -> bytes:
    return lzma.LZMADecompressor(format=lzma.FORMAT_ALONE).decompress(payload)


def _gzip(payload: bytes) -> bytes:
    return zlib.decompressobj(wbits=31).decompress(payload)


def _bzip2(payload: bytes) -> bytes:
    return bz2.BZ2Decompressor().decompress(payload)


# Magic numbers of the payload compressions a bzImage may carry (CONFIG_KERNEL_*).
_DECOMPRESSORS: tuple[tuple[bytes, str, Callable[[bytes], bytes]], ...] = (
    (b"\xfd7zXZ\x00", "xz", _xz),
    (b"\x28\xb5\x2f\xfd", "zstd", _zstd),
    (b"\x1f\x8b\x08", "gzip", _gzip),
    (b"BZh", "bzip2", _bzip2),
    (b"\x5d\x00\x00", "lzma", _lzma),
)


def extract_vmlinux(bzimage: bytes, path: Path) -> bytes:
    """Decompress the vmlinux ELF inside a bzImage."""
    setup_sects = bzimage[0x1F1] or 4
    payload_offset, payload_length = struct.unpack_from("<II", bzimage, 0x248)
    start = (setup_sects + 1) * 512 + payload_offset
    payload = bzimage[start : start + payload_length]
    for magic, name, decompress in _DECOMPRESSORS:
        if payload.startswith(magic):
            try:
                elf = decompress(payload)
            except (lzma.LZMAError, zlib.error, OSError, EOFError, ValueError) as exc:
                raise UsageError(f"{path}: cannot decompress its {name} payload: {exc}") from exc
            if not elf.startswith(_ELF_MAGIC):
                raise UsageError(f"{path}: its {name} payload is not an ELF vmlinux")
            return elf
    raise UsageError(
        f"{path}: unknown payload compression (magic {payload[:6].hex()}); "
        "pass the uncompressed vmlinux with --kernel"
    )


def bootable(kernel: Kernel) -> BootableKernel:
    """Return the fastest image QEMU can boot for `kernel` (a cached PVH vmlinux)."""
    entry = cache_dir("kernels") / kernel.sha256[:32]
    if kernel.format is KernelFormat.ELF:
        # A vmlinux is tens of MB: read it for its notes once per content, not per boot.
        checked = entry / "elf-has-pvh"
        if not checked.exists():
            if not has_pvh_note(_read(kernel.path)):
                raise UsageError(
                    f"{kernel.path} is a vmlinux without a PVH entry point (CONFIG_PVH=n); "
                    "pass its bzImage instead"
                )
            write_atomic(checked, b"")
        return BootableKernel(kernel, kernel.path, pvh=True)
    cached = entry / "vmlinux"
    if cached.exists():
        return BootableKernel(kernel, cached, pvh=True)
    no_pvh = cached.with_name("no-pvh")
    if no_pvh.exists():
        return BootableKernel(kernel, kernel.path, pvh=False)
    elf = extract_vmlinux(_read(kernel.path), kernel.path)
    if not has_pvh_note(elf):
        write_atomic(no_pvh, b"")
        return BootableKernel(kernel, kernel.path, pvh=False)
    write_atomic(cached, elf)
    return BootableKernel(kernel, cached, pvh=True)


def _version_key(release: str) -> tuple[tuple[int, int | str], ...]:
    parts = re.split(r"[.\-+~]", release)
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts)


def find_default_kernel(
    boot: Path = Path("/boot"), modules_root: Path = Path("/lib/modules")
) -> Path:
    """The newest /boot/vmlinuz-* whose modules are installed."""
    candidates = []
    for image in boot.glob("vmlinuz-*"):
        release = image.name.removeprefix("vmlinuz-")
        if (modules_root / release / "modules.dep").exists():
            candidates.append((_version_key(release), image))
    if not candidates:
        raise HostError(
            f"no kernel in {boot} with modules in {modules_root} "
            "(apt-get install linux-image-amd64, or pass --kernel and --modules)"
        )
    return max(candidates)[1]
