"""A cloud image as a user would bring one (`image = "x.qcow2"`), made on the host.

No distribution cloud image can be downloaded here, so this makes one the way
they are made: a Debian bookworm system (its cloud kernel, an initramfs-tools
initrd, systemd, cloud-init with the NoCloud datasource, openssh-server) on a
partitioned disk with a bootloader, as one qcow2 file. Nothing is mounted:

1. mmdebstrap (root mode, in a private mount namespace) installs `PACKAGES`
   into a directory; the kernel's postinst builds the initrd there.
2. The boot partition is FAT (`mkfs.vfat` into a file, the kernel, the initrd
   and syslinux.cfg copied in with mtools, `syslinux --install` on the file);
   the root partition is `mkfs.ext4 -d` of the directory, with a fixed UUID
   that the kernel command line and /etc/fstab name.
3. `sfdisk` writes an MBR table into a sparse raw disk, both filesystems are
   copied in at their partitions' offsets, syslinux's MBR code goes in front,
   and `qemu-img convert` makes the qcow2.

vmlab boots it through SeaBIOS -> MBR -> syslinux -> the image's kernel and
initrd -> systemd, as any image it did not build.

The result is cached in ~/.cache/vmlab-tests/brought-image/KEY/ (KEY: a hash of
`recipe()`), so only the first run on a host pays for the build; a build in
progress lives in a `.build-*` directory that is removed on any failure.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vmlab.machine.subprocess_util import kill_on_parent_death, pid_exists

# Bump when the builder changes in a way `recipe()` does not show.
RECIPE_VERSION = 2

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# What a Debian cloud image has that matters here (on top of minbase).
PACKAGES = (
    "linux-image-cloud-amd64",  # the image's own kernel (not the host's flavour)
    "initramfs-tools",  # the kernel's postinst builds a real initrd with it
    "systemd-sysv",
    "udev",
    "cloud-init",
    "openssh-server",
    "ifupdown",  # cloud-init 22.4 renders its network config for ifupdown
    "isc-dhcp-client",
    "iproute2",
    "sudo",
    "kmod",
    "procps",
)
# The kernel command line a cloud image has: console on the serial port (where
# vmlab reads the boot and any crash), root by UUID, mounted read-only first.
CMDLINE = "ro console=tty0 console=ttyS0,115200n8"
DISK_MIB = 2048
BOOT_START_MIB = 1
BOOT_MIB = 128
ROOT_LABEL = "cloudimg-rootfs"

SYSLINUX_MBR = Path("/usr/lib/syslinux/mbr/mbr.bin")
_SECTOR = 512
_MIB = 1 << 20

# program -> the Debian package that has it (scripts/setup-host.sh installs them)
HOST_TOOLS = {
    "mmdebstrap": "mmdebstrap",
    "unshare": "util-linux",
    "mkfs.ext4": "e2fsprogs",
    "mkfs.vfat": "dosfstools",
    "mcopy": "mtools",
    "syslinux": "syslinux",
    "sfdisk": "fdisk",
    "qemu-img": "qemu-utils",
}


class BuildFailed(RuntimeError):
    """The brought image could not be made (one line; the log's path in it)."""


@dataclass(frozen=True)
class BroughtImage:
    path: Path  # the qcow2 a user would name in `image`
    release: str  # `uname -r` of the image's kernel
    cmdline: str  # the kernel command line in syslinux.cfg
    build_seconds: float


def recipe() -> dict[str, Any]:
    """Everything the image depends on: the cache key's input."""
    return {
        "version": RECIPE_VERSION,
        "suite": SUITE,
        "mirror": MIRROR,
        "packages": list(PACKAGES),
        "cmdline": CMDLINE,
        "disk_mib": DISK_MIB,
        "boot": [BOOT_START_MIB, BOOT_MIB],
        "root_label": ROOT_LABEL,
    }


def recipe_key() -> str:
    text = json.dumps(recipe(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def cache_root() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "vmlab-tests" / "brought-image"


def ensure_brought_image() -> BroughtImage:
    """The cached image, built first when the cache lacks it."""
    key = recipe_key()
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    found = _load(root / key)
    if found is not None:
        return found
    tools = _host_tools()
    with _lock(root / f".{key[:16]}.lock"):
        found = _load(root / key)  # built by another run meanwhile
        if found is not None:
            return found
        _sweep(root)
        work = root / f".build-{key[:16]}-{os.getpid()}-{secrets.token_hex(4)}"
        work.mkdir()
        try:
            _build(key, work, tools, root / "last-build.log")
            os.rename(work / "out", root / key)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    image = _load(root / key)
    if image is None:
        raise BuildFailed(f"{root / key} is not a complete image after its build")
    return image


def _load(entry: Path) -> BroughtImage | None:
    try:
        info = json.loads((entry / "info.json").read_text())
        path = entry / "image.qcow2"
        if not path.is_file():
            return None
        return BroughtImage(
            path, str(info["release"]), str(info["cmdline"]), float(info["build_seconds"])
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _sweep(root: Path) -> None:
    """Remove the build directories of runs that were killed (no `finally` ran)."""
    for entry in root.glob(".build-*"):
        match = re.fullmatch(r"\.build-[0-9a-f]+-(\d+)-[0-9a-f]+", entry.name)
        if match and not pid_exists(int(match.group(1))):
            shutil.rmtree(entry, ignore_errors=True)


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    with path.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _host_tools() -> dict[str, str]:
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    found: dict[str, str] = {}
    for program, package in HOST_TOOLS.items():
        path = shutil.which(program, path=search)
        if path is None:
            raise BuildFailed(
                f"{program} is not installed; the brought-image fixture needs it "
                f"(apt-get install {package}, or scripts/setup-host.sh)"
            )
        found[program] = path
    if not SYSLINUX_MBR.is_file():
        raise BuildFailed(f"{SYSLINUX_MBR} is missing (apt-get install syslinux-common)")
    if os.geteuid() != 0:
        raise BuildFailed("building the brought image needs root (mmdebstrap in root mode)")
    return found


def _build(key: str, work: Path, tools: dict[str, str], log: Path) -> None:
    started = time.monotonic()
    rootfs = work / "rootfs"
    root_uuid = str(uuid.UUID(key[:32]))
    with log.open("w") as out:
        _mmdebstrap(tools, rootfs, root_uuid, out)
        release, vmlinuz, initrd = _kernel_files(rootfs)

        boot = work / "boot.raw"
        cfg = work / "syslinux.cfg"
        cfg.write_text(
            "SERIAL 0 115200\nDEFAULT linux\nPROMPT 0\nTIMEOUT 0\n"
            "LABEL linux\n  LINUX /vmlinuz\n  INITRD /initrd.img\n"
            f"  APPEND root=UUID={root_uuid} {CMDLINE}\n"
        )
        boot_start = BOOT_START_MIB * _MIB // _SECTOR
        _run(
            [tools["mkfs.vfat"], "-C", "-n", "BOOT", "-i", key[:8], "-h", str(boot_start),
             str(boot), str(BOOT_MIB * 1024)],
            out,
        )  # fmt: skip
        for source, name in ((vmlinuz, "vmlinuz"), (initrd, "initrd.img"), (cfg, "syslinux.cfg")):
            _run([tools["mcopy"], "-i", str(boot), str(source), f"::{name}"], out)
        _run([tools["syslinux"], "--install", str(boot)], out)

        root_start = BOOT_START_MIB + BOOT_MIB
        root = work / "root.raw"
        root_mib = DISK_MIB - root_start
        _run(
            [tools["mkfs.ext4"], "-q", "-F", "-L", ROOT_LABEL, "-U", root_uuid,
             "-E", "root_owner=0:0", "-d", str(rootfs), str(root), f"{root_mib}M"],
            out,
        )  # fmt: skip
        shutil.rmtree(rootfs)

        disk = work / "disk.raw"
        with disk.open("wb") as f:
            f.truncate(DISK_MIB * _MIB)
        table = (
            f"label: dos\nlabel-id: 0x{key[8:16]}\nunit: sectors\n"
            f"start={boot_start}, size={BOOT_MIB * _MIB // _SECTOR}, type=e, bootable\n"
            f"start={root_start * _MIB // _SECTOR}, type=83\n"
        )
        _run([tools["sfdisk"], "-q", "--no-reread", "--no-tell-kernel", str(disk)], out, table)
        _splice(boot, disk, BOOT_START_MIB * _MIB)
        _splice(root, disk, root_start * _MIB)
        with disk.open("r+b") as f:
            f.write(SYSLINUX_MBR.read_bytes()[:440])  # boot code only: the table stays
        boot.unlink()
        root.unlink()

        result = work / "out"
        result.mkdir()
        _run(
            [tools["qemu-img"], "convert", "-O", "qcow2", str(disk), str(result / "image.qcow2")],
            out,
        )
        disk.unlink()
        info = {
            "recipe": recipe(),
            "release": release,
            "cmdline": f"root=UUID={root_uuid} {CMDLINE}",
            "build_seconds": round(time.monotonic() - started, 1),
        }
        (result / "info.json").write_text(json.dumps(info, indent=2) + "\n")


def _mmdebstrap(tools: dict[str, str], rootfs: Path, root_uuid: str, out: Any) -> None:
    configure = (
        'set -e; root="$1"; '
        f"echo 'UUID={root_uuid} / ext4 rw,discard,errors=remount-ro 0 1' >\"$root/etc/fstab\"; "
        'echo localhost >"$root/etc/hostname"; '
        "printf '127.0.0.1\\tlocalhost\\n::1\\tlocalhost ip6-localhost ip6-loopback\\n' "
        '>"$root/etc/hosts"; '
        'rm -f "$root/etc/resolv.conf"; : >"$root/etc/resolv.conf"'
    )
    argv = [
        tools["unshare"], "--mount", "--propagation", "private", "--",
        tools["mmdebstrap"], "--mode=root", "--variant=minbase", "--format=directory",
        f"--include={','.join(PACKAGES)}",
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        f"--customize-hook=/bin/sh -c {shlex.quote(configure)} sh \"$1\"",
        SUITE, str(rootfs), MIRROR,
    ]  # fmt: skip
    _run(argv, out)


def _kernel_files(rootfs: Path) -> tuple[str, Path, Path]:
    kernels = sorted((rootfs / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1:
        raise BuildFailed(f"expected one kernel in the image's /boot, found {kernels}")
    release = kernels[0].name.removeprefix("vmlinuz-")
    initrd = rootfs / "boot" / f"initrd.img-{release}"
    if not initrd.is_file():
        raise BuildFailed(f"the kernel's postinst built no initrd ({initrd} is missing)")
    return release, kernels[0], initrd


def _splice(source: Path, target: Path, offset: int) -> None:
    """Copy `source` into `target` at `offset`, leaving zero blocks as holes."""
    zero = bytes(_MIB)
    with source.open("rb") as src, target.open("r+b") as dst:
        position = offset
        while block := src.read(_MIB):
            if block != zero[: len(block)]:
                dst.seek(position)
                dst.write(block)
            position += len(block)


def _run(argv: list[str], out: Any, stdin: str | None = None) -> None:
    """Run a build step, its output to the build log; BuildFailed on failure.
    Its whole process group is killed if this is interrupted."""
    out.write(f"# {shlex.join(argv)}\n")
    out.flush()
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        preexec_fn=kill_on_parent_death,  # noqa: PLW1509  (pytest's main thread)
        env={**os.environ, "LC_ALL": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"},
    )
    try:
        proc.communicate(stdin)
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if proc.returncode != 0:
        program = argv[argv.index("--") + 1] if "--" in argv else argv[0]  # not unshare
        raise BuildFailed(
            f"{Path(program).name} failed with exit status {proc.returncode} "
            f"(the build log: {out.name})"
        )
