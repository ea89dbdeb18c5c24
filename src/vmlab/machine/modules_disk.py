"""A kernel's modules directory as a read-only ext4 disk, for disk-image
machines that boot the host's kernel (`kernel = "host"`).

The image's root filesystem has modules for its own kernel only, so with the
host's kernel, modprobe, udev and cloud-init (which needs isofs to read its
seed) find none. vmlab attaches the kernel's modules directory as one more
virtio disk (read-only, serial `SERIAL`), and the image initramfs
(guest/image_init.sh) mounts it read-only at /lib/modules/RELEASE in the image
before it hands over to the image's init. A disk rather than a 9p share, as on
the host-root path, because 9p blocks QEMU's migration and so snapshots; a
read-only raw disk is left out of them.

Cached in ~/.cache/vmlab/modules-disks/ by the directory's path and the name,
size, mode and mtime of everything in it (a rebuilt module is a new disk); a
new disk for the same directory replaces the older ones.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import secrets
import shutil
import stat
import subprocess
from pathlib import Path

from vmlab.cache import cache_dir
from vmlab.errors import HostError, InfraError, UsageError
from vmlab.machine.subprocess_util import pid_exists

SERIAL = "vmlab-modules"  # the virtio disk's serial number: image_init.sh looks for it
LABEL = "vmlab-modules"
FORMAT = 1  # bump when the disk's layout changes
_TMP = re.compile(r"\.[0-9a-f]+-[0-9a-f]+\.(\d+)\.[0-9a-f]+\.tmp")


def modules_disk(modules_root: Path) -> Path:
    """The cached disk of `modules_root` (built on first use): a raw ext4 file
    holding the directory's contents at its root."""
    root = modules_root.resolve()
    if not (root / "modules.dep").is_file():
        raise UsageError(
            f"no kernel modules at {modules_root} (modules.dep missing): install the "
            "modules of this kernel, or set the machine's `modules`"
        )
    where = hashlib.sha256(str(root).encode()).hexdigest()[:16]
    content, entries, usage = _survey(root)
    directory = cache_dir("modules-disks")
    target = directory / f"{where}-{content[:32]}.ext4"
    if target.is_file():
        return target
    _sweep(directory)
    tmp = directory / f".{where}-{content[:16]}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        _mkfs(root, tmp, entries, usage)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    for older in directory.glob(f"{where}-*.ext4"):
        if older != target:  # a running QEMU keeps its open file
            older.unlink(missing_ok=True)
    return target


def _survey(root: Path) -> tuple[str, int, int]:
    """(a digest of every entry's name, type, mode, size and mtime; the number
    of entries; the bytes their files take)."""
    digest = hashlib.sha256(f"format {FORMAT}\0".encode())
    entries = usage = 0
    for directory, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted((*dirs, *files)):
            path = os.path.join(directory, name)
            st = os.lstat(path)
            rel = os.path.relpath(path, root)
            entries += 1
            usage += st.st_blocks * 512
            link = os.readlink(path) if stat.S_ISLNK(st.st_mode) else ""
            digest.update(
                f"{rel}\0{st.st_mode:o}\0{st.st_size}\0{st.st_mtime_ns}\0{link}\0".encode()
            )
    return digest.hexdigest(), entries, usage


def _mkfs(root: Path, target: Path, entries: int, usage: int) -> None:
    # Room for the files, the inode tables and the directories, without a
    # journal (it is only ever mounted read-only).
    size_mib = math.ceil((usage * 1.15 + (entries * 256) + (32 << 20)) / (16 << 20)) * 16
    with target.open("wb") as f:
        f.truncate(size_mib << 20)
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    mkfs = shutil.which("mkfs.ext4", path=search)
    if mkfs is None:
        raise HostError(
            'mkfs.ext4 is not installed; kernel = "host" on a disk image needs it '
            "(apt-get install e2fsprogs)"
        )
    argv = [
        mkfs, "-q", "-F", "-L", LABEL, "-O", "^has_journal", "-m", "0",
        "-N", str(entries + 1024), "-E", "root_owner=0:0", "-d", str(root),
        str(target), f"{size_mib}M",
    ]  # fmt: skip
    try:
        # No PDEATHSIG (this runs in a worker thread): mkfs ends by itself, and
        # the temporary file of a killed vmlab is swept by the next build.
        proc = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600, check=False
        )
    except subprocess.TimeoutExpired:
        raise InfraError(f"mkfs.ext4 of {root} took over 10 minutes") from None
    if proc.returncode != 0:
        output = (proc.stdout + proc.stderr).strip()
        if "No space left on device" in output:
            raise HostError(
                f"no space left for the disk of {root}'s modules in {target.parent} "
                "(free some, or set VMLAB_CACHE_DIR to a larger filesystem)",
                details=output,
            )
        last = output.splitlines()[-1] if output else "no output"
        raise InfraError(f"mkfs.ext4 could not make a disk of {root}: {last}", details=output)


def _sweep(directory: Path) -> None:
    """Remove the temporary files of builds whose vmlab was killed."""
    for entry in directory.iterdir():
        match = _TMP.fullmatch(entry.name)
        if match and not pid_exists(int(match.group(1))):
            with contextlib.suppress(OSError):
                entry.unlink()
