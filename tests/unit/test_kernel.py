"""Kernels: bzImage and vmlinux recognition, vmlinux extraction, the PVH note,
the default kernel; on small kernels built here byte by byte (their layout is
checked with binutils' readelf) and on this machine's real /boot/vmlinuz-*."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import importlib.util
import lzma
import re
import shutil
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from vmlab.errors import ExitCode, HostError, UsageError
from vmlab.machine.kernel import (
    KernelFormat,
    bootable,
    extract_vmlinux,
    find_default_kernel,
    has_pvh_note,
    inspect_kernel,
)

RELEASE = "6.9.9-vmlabtest"
BANNER = f"Linux version {RELEASE} (builder@host) (gcc 12) #1 SMP PREEMPT_DYNAMIC\n".encode()
XEN_ELFNOTE_PHYS32_ENTRY = 18
GNU_BUILD_ID = 3


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The extracted-vmlinux cache and the stat memo go to a fresh directory."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("VMLAB_CACHE_DIR", str(cache))
    return cache


def _note(name: bytes, ntype: int, desc: bytes) -> bytes:
    name0 = name + b"\0"
    return (
        struct.pack("<III", len(name0), len(desc), ntype)
        + name0.ljust((len(name0) + 3) & ~3, b"\0")
        + desc.ljust((len(desc) + 3) & ~3, b"\0")
    )


def make_elf(
    notes: list[tuple[bytes, int, bytes]], *, banner: bytes = BANNER, elf_class: int = 2
) -> bytes:
    """A little-endian x86-64 ELF: a PT_LOAD, then a PT_NOTE with `notes`, then
    `banner` (the kernel's `Linux version` string) in the loaded bytes."""
    phnum, ehsize, phentsize = 2, 64, 56
    notes_blob = b"".join(_note(*n) for n in notes)
    notes_off = ehsize + phnum * phentsize
    body_off = notes_off + len(notes_blob)
    body = banner + b"\0" * 64
    ident = b"\x7fELF" + bytes([elf_class, 1, 1, 0]) + bytes(8)
    ehdr = ident + struct.pack(
        "<HHIQQQIHHHHHH", 2, 0x3E, 1, 0x1000000, ehsize, 0, 0, ehsize, phentsize, phnum, 0, 0, 0
    )
    load = struct.pack(
        "<IIQQQQQQ", 1, 5, body_off, 0x1000000, 0x1000000, len(body), len(body), 0x1000
    )
    note = struct.pack("<IIQQQQQQ", 4, 4, notes_off, 0, 0, len(notes_blob), len(notes_blob), 4)
    return ehdr + load + note + notes_blob + body


PVH_ELF = make_elf([(b"GNU", GNU_BUILD_ID, b"\x11" * 20), (b"Xen", XEN_ELFNOTE_PHYS32_ENTRY,
                    struct.pack("<I", 0x1000200))])  # fmt: skip
PLAIN_ELF = make_elf([(b"GNU", GNU_BUILD_ID, b"\x11" * 20)])


def make_bzimage(
    payload: bytes, *, release: str = RELEASE, setup_sects: int = 3, payload_offset: int = 0x2C4
) -> bytes:
    """A bzImage as the x86 boot protocol lays it out: setup sectors with the
    `HdrS` header, then the protected-mode part holding the compressed payload."""
    setup = bytearray(((setup_sects or 4) + 1) * 512)
    setup[0x1F1] = setup_sects
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", setup, 0x206, 0x020F)  # boot protocol 2.15
    version_ptr = 0x300  # kernel_version: offset from 0x200
    version = f"{release} (builder@host) #1 SMP PREEMPT_DYNAMIC Debian\0".encode()
    setup[0x200 + version_ptr : 0x200 + version_ptr + len(version)] = version
    struct.pack_into("<H", setup, 0x20E, version_ptr)
    struct.pack_into("<II", setup, 0x248, payload_offset, len(payload))
    assert len(setup) == ((setup_sects or 4) + 1) * 512, "the version string must fit the setup"
    # The decompressor's code sits before the payload; its size word after.
    return bytes(setup) + b"\x90" * payload_offset + payload + struct.pack("<I", 0xDEADBEEF)


COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "xz": lambda b: lzma.compress(b, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32),
    "gzip": lambda b: gzip.compress(b, mtime=0),
    "bzip2": bz2.compress,
    "lzma": lambda b: lzma.compress(b, format=lzma.FORMAT_ALONE),
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# -- the fakes are what they claim to be ---------------------------------------------


def test_the_fake_elf_carries_its_notes_for_readelf(tmp_path: Path) -> None:
    assert shutil.which("readelf"), "binutils' readelf is needed to check the fake kernels"
    notes = subprocess.run(
        ["readelf", "--notes", str(_write(tmp_path / "vmlinux", PVH_ELF))],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "NT_GNU_BUILD_ID" in notes
    assert "Build ID: " + "11" * 20 in notes
    assert re.search(r"Xen\s+0x00000004\s+Unknown note type: \(0x00000012\)", notes), notes


# -- the PVH note ----------------------------------------------------------------------


def test_pvh_note_found_among_other_notes() -> None:
    assert has_pvh_note(PVH_ELF)


@pytest.mark.parametrize(
    "elf",
    [
        pytest.param(PLAIN_ELF, id="no-xen-note"),
        pytest.param(make_elf([(b"Xen", 17, b"\0" * 8)]), id="xen-note-of-another-type"),
        pytest.param(make_elf([(b"Linux", XEN_ELFNOTE_PHYS32_ENTRY, b"\0" * 4)]), id="not-xen"),
        pytest.param(make_elf([]), id="empty-note-segment"),
        pytest.param(
            make_elf([(b"Xen", XEN_ELFNOTE_PHYS32_ENTRY, b"\0" * 4)], elf_class=1), id="elf32"
        ),
        pytest.param(b"MZ" + bytes(200), id="not-elf"),
    ],
)
def test_no_pvh_note(elf: bytes) -> None:
    assert not has_pvh_note(elf)


# -- bzImage: release and extraction -----------------------------------------------------


@pytest.mark.parametrize("compression", sorted(COMPRESSORS))
def test_bzimage_release_and_extraction(tmp_path: Path, compression: str) -> None:
    data = make_bzimage(COMPRESSORS[compression](PVH_ELF))
    path = _write(tmp_path / "bzImage", data)
    kernel = inspect_kernel(path)
    assert (kernel.path, kernel.format, kernel.release) == (path, KernelFormat.BZIMAGE, RELEASE)
    assert kernel.sha256 == hashlib.sha256(data).hexdigest()
    assert extract_vmlinux(data, path) == PVH_ELF


@pytest.mark.parametrize("setup_sects", [0, 2, 4, 39])
def test_setup_sects_place_the_payload(tmp_path: Path, setup_sects: int) -> None:
    # setup_sects 0 means 4 (boot protocol).
    data = make_bzimage(COMPRESSORS["xz"](PVH_ELF), setup_sects=setup_sects, payload_offset=0)
    assert extract_vmlinux(data, tmp_path / "bzImage") == PVH_ELF


def test_zstd_payload(tmp_path: Path) -> None:
    # Debian's kernels are xz; a zstd one needs the optional `zstandard` package.
    if importlib.util.find_spec("zstandard") is None:
        payload = b"\x28\xb5\x2f\xfd" + bytes(64)
        with pytest.raises(HostError, match="zstandard"):
            extract_vmlinux(make_bzimage(payload), tmp_path / "bzImage")
        return
    import zstandard  # type: ignore[import-not-found,unused-ignore]  # noqa: PLC0415

    payload = zstandard.ZstdCompressor().compress(PVH_ELF)
    assert extract_vmlinux(make_bzimage(payload), tmp_path / "bzImage") == PVH_ELF


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        pytest.param(b"\xfd7zXZ\x00" + b"garbage" * 20, "cannot decompress its xz", id="bad-xz"),
        pytest.param(b"\x1f\x8b\x08" + b"garbage" * 20, "cannot decompress its gzip", id="bad-gz"),
        pytest.param(b"PK\x03\x04" + bytes(60), "unknown payload compression", id="unknown"),
        pytest.param(gzip.compress(b"not an elf"), "not an ELF vmlinux", id="not-elf-inside"),
    ],
)
def test_bad_payload_is_a_usage_error(tmp_path: Path, payload: bytes, words: str) -> None:
    path = tmp_path / "bzImage"
    with pytest.raises(UsageError, match=words) as info:
        extract_vmlinux(make_bzimage(payload), path)
    assert str(path) in info.value.message
    assert "\n" not in info.value.message


# -- ELF vmlinux -----------------------------------------------------------------------


def test_vmlinux_release_comes_from_its_banner(tmp_path: Path) -> None:
    path = _write(tmp_path / "vmlinux", PVH_ELF)
    kernel = inspect_kernel(path)
    assert (kernel.format, kernel.release) == (KernelFormat.ELF, RELEASE)


# -- not a kernel ------------------------------------------------------------------------


def test_an_elf_program_is_not_a_kernel(tmp_path: Path) -> None:
    true = Path(shutil.which("true") or "/bin/true")
    with pytest.raises(UsageError, match="ELF file but not a Linux kernel"):
        inspect_kernel(true)
    with pytest.raises(UsageError, match="ELF file but not a Linux kernel"):
        inspect_kernel(_write(tmp_path / "vmlinux", make_elf([], banner=b"no banner here")))


@pytest.mark.parametrize(
    "data",
    [b"", b"#!/bin/sh\necho hi\n", bytes(4096), b"HdrS" * 10, b"\x7fEL"],
    ids=["empty", "script", "zeros", "short-hdrs", "short-elf"],
)
def test_a_file_that_is_not_a_kernel(tmp_path: Path, data: bytes) -> None:
    path = _write(tmp_path / "not-a-kernel", data)
    with pytest.raises(UsageError, match="is not a Linux kernel") as info:
        inspect_kernel(path)
    assert info.value.exit_code == ExitCode.USAGE
    assert str(path) in info.value.message


def test_missing_kernel_and_directory(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        inspect_kernel(tmp_path / "nope")
    with pytest.raises(UsageError, match="directory"):
        inspect_kernel(tmp_path)


def test_rewritten_kernel_is_inspected_again(tmp_path: Path) -> None:
    # The stat memo must not hand out the verdict on the old file.
    path = _write(tmp_path / "bzImage", make_bzimage(COMPRESSORS["xz"](PVH_ELF)))
    assert inspect_kernel(path).release == RELEASE
    new = make_bzimage(COMPRESSORS["gzip"](PVH_ELF), release="6.9.10-rebuilt")
    path.unlink()
    _write(path, new)
    kernel = inspect_kernel(path)
    assert (kernel.release, kernel.sha256) == ("6.9.10-rebuilt", hashlib.sha256(new).hexdigest())


# -- bootable: what QEMU gets ------------------------------------------------------------


def test_bootable_bzimage_with_pvh_is_extracted_once_into_the_cache(
    tmp_path: Path, private_cache: Path
) -> None:
    path = _write(tmp_path / "bzImage", make_bzimage(COMPRESSORS["xz"](PVH_ELF)))
    boot = bootable(inspect_kernel(path))
    assert boot.pvh
    assert boot.boot_path.is_relative_to(private_cache)
    assert boot.boot_path.read_bytes() == PVH_ELF
    again = bootable(inspect_kernel(path))
    assert again.boot_path == boot.boot_path


def test_bootable_bzimage_without_pvh_boots_as_is(tmp_path: Path) -> None:
    path = _write(tmp_path / "bzImage", make_bzimage(COMPRESSORS["gzip"](PLAIN_ELF)))
    for _ in range(2):  # the verdict is cached: the same answer the second time
        boot = bootable(inspect_kernel(path))
        assert (boot.boot_path, boot.pvh) == (path, False)


def test_bootable_vmlinux(tmp_path: Path) -> None:
    path = _write(tmp_path / "vmlinux", PVH_ELF)
    boot = bootable(inspect_kernel(path))
    assert (boot.boot_path, boot.pvh) == (path, True)
    plain = _write(tmp_path / "vmlinux-nopvh", PLAIN_ELF)
    with pytest.raises(UsageError, match="PVH"):
        bootable(inspect_kernel(plain))


# -- the default kernel --------------------------------------------------------------------


def _kernel_tree(tmp_path: Path, images: list[str], with_modules: list[str]) -> tuple[Path, Path]:
    boot, modules = tmp_path / "boot", tmp_path / "modules"
    boot.mkdir()
    modules.mkdir()
    for release in images:
        (boot / f"vmlinuz-{release}").write_bytes(b"x")
    for release in with_modules:
        (modules / release).mkdir()
        (modules / release / "modules.dep").write_text("")
    return boot, modules


def test_default_kernel_is_the_newest_with_modules(tmp_path: Path) -> None:
    boot, modules = _kernel_tree(
        tmp_path,
        ["6.1.0-9-amd64", "6.1.0-10-amd64", "6.2.0-1-amd64", "5.10.0-30-amd64"],
        ["6.1.0-9-amd64", "6.1.0-10-amd64", "5.10.0-30-amd64"],  # no modules for 6.2.0-1
    )
    assert find_default_kernel(boot, modules) == boot / "vmlinuz-6.1.0-10-amd64"


def test_no_default_kernel_is_a_host_error(tmp_path: Path) -> None:
    boot, modules = _kernel_tree(tmp_path, ["6.1.0-9-amd64"], [])
    with pytest.raises(HostError, match="linux-image") as info:
        find_default_kernel(boot, modules)
    assert info.value.exit_code == ExitCode.HOST


# -- this machine's real kernel ------------------------------------------------------------


def test_the_real_kernel_of_this_machine() -> None:
    path = find_default_kernel()
    kernel = inspect_kernel(path)
    assert kernel.format is KernelFormat.BZIMAGE
    assert path.name == f"vmlinuz-{kernel.release}"
    assert (Path("/lib/modules") / kernel.release / "modules.dep").exists()
    elf = extract_vmlinux(path.read_bytes(), path)
    assert elf.startswith(b"\x7fELF")
    assert has_pvh_note(elf)  # Debian builds with CONFIG_PVH=y
    assert f"Linux version {kernel.release} ".encode() in elf
