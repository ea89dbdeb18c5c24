"""A directory tree with every kind of entry a copy must handle, and a snapshot
of a tree to compare copies by (shared by the copy tests in unit/, vm/ and
image/; tests/ is on sys.path).
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from vmlab.errors import GuestPathError, UsageError, VmlabError
from vmlab.guest.channel import Command
from vmlab.guest.copying import Copied
from vmlab.machine.qemu import QemuMachine

OLD = 1_500_000_000  # a fixed mtime (2017), far from "now"
BINARY = bytes(range(256)) * 1200 + b"\n\x00\r\nend"


def make_tree(parent: Path, name: str = "tree") -> Path:
    """parent/name: files of several modes (setuid too), binary and empty ones,
    a hidden one, a name with spaces and quotes, nested and empty directories,
    a read-only directory, relative and absolute symlinks, and a FIFO (which
    copies skip). Every file and directory has the mtime OLD."""
    root = parent / name
    files = {
        "bin.dat": (BINARY, 0o640),
        "run.sh": (b"#!/bin/sh\necho ran\n", 0o755),
        "empty": (b"", 0o600),
        ".hidden": (b"hidden\n", 0o644),
        "it's a name with spaces": (b"spaces\n", 0o644),
        "suid": (b"x", 0o4755),
        "sub/deep/f.txt": (b"deep\n", 0o644),
        "ro/r.txt": (b"read-only\n", 0o444),
    }
    for relative, (data, mode) in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(mode)
    (root / "emptydir").mkdir()
    os.symlink("../bin.dat", root / "sub" / "link")
    os.symlink("/etc/hostname", root / "sub" / "abs")
    os.mkfifo(root / "pipe")
    modes = {"": 0o755, "sub": 0o750, "sub/deep": 0o700, "emptydir": 0o775, "ro": 0o555}
    for directory, mode in modes.items():
        (root / directory).chmod(mode)
    for path in sorted(root.rglob("*"), key=lambda p: -len(p.parts)):
        if not path.is_symlink() and not stat.S_ISFIFO(path.lstat().st_mode):
            os.utime(path, (OLD, OLD))
    os.utime(root, (OLD, OLD))
    return root


def snapshot(root: Path, *, times: bool = True) -> dict[str, tuple[object, ...]]:
    """Every entry below `root` (and `root` itself as "."): kind, mode, content
    digest or link target, and (with `times`) the mtime in whole seconds."""
    entries: dict[str, tuple[object, ...]] = {}
    for directory, names, files in os.walk(root):
        for name in [".", *names, *files]:
            path = Path(directory) / name
            if name == "." and Path(directory) != root:
                continue
            info = path.lstat()
            when = (int(info.st_mtime),) if times else ()
            relative = os.path.relpath(path, root)
            mode = stat.S_IMODE(info.st_mode)
            if stat.S_ISLNK(info.st_mode):
                entries[relative] = ("link", os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                entries[relative] = ("dir", oct(mode), *when)
            elif stat.S_ISREG(info.st_mode):
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                entries[relative] = ("file", oct(mode), digest, *when)
            else:
                entries[relative] = ("special", oct(mode))
    return entries


def without_specials(entries: dict[str, tuple[object, ...]]) -> dict[str, tuple[object, ...]]:
    """What a copy of a tree with `entries` holds: special files are skipped."""
    return {name: entry for name, entry in entries.items() if entry[0] != "special"}


def staging_leftovers(*roots: Path) -> list[Path]:
    """Any `.vmlab-cp-*` staging directory under `roots`."""
    return [path for root in roots for path in root.rglob(".vmlab-cp-*")]


async def check_bad_paths(vm: QemuMachine, tmp_path: Path, home: str) -> None:
    """Bad paths both ways, on a running machine: each is a one-line error of
    the right kind, a full disk keeps the old file whole, and no copy leaves a
    staging directory (`home`: a writable guest directory)."""
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(2 << 20))
    await _out(
        vm,
        "mkdir -p /mnt/full /mnt/ro && mount -t tmpfs -o size=1m tmpfs /mnt/full"
        " && mount -t tmpfs -o ro tmpfs /mnt/ro && echo keep > /mnt/full/big.bin",
    )
    cases: list[tuple[Callable[[], Awaitable[Copied]], type[VmlabError], str]] = [
        (lambda: vm.copy_to(tmp_path / "nope", f"{home}/"), UsageError, r"read .*/nope: No such"),
        (
            lambda: vm.copy_to(big, "/mnt/full/big.bin"),
            GuestPathError,
            "cannot write /mnt/full/big.bin in the guest: No space left on device",
        ),
        (
            lambda: vm.copy_to(big, "/mnt/ro/"),
            GuestPathError,
            "cannot write /mnt/ro/ in the guest: Read-only file system",
        ),
        (
            lambda: vm.copy_to(big, "/proc/nope/f"),
            GuestPathError,
            "cannot write /proc/nope/f in the guest: no such directory /proc/nope",
        ),
        (
            lambda: vm.copy_from("/nowhere", tmp_path),
            GuestPathError,
            "cannot read /nowhere in the guest: No such file or directory",
        ),
        (
            lambda: vm.copy_from("/dev/null", tmp_path),
            GuestPathError,
            "cannot read /dev/null in the guest: not a regular file or directory",
        ),
        (
            lambda: vm.copy_from("/etc/hostname", tmp_path / "no" / "dir" / "x"),
            UsageError,
            f"cannot write {tmp_path}/no/dir/x: no such directory {tmp_path}/no/dir",
        ),
    ]
    for work, kind, message in cases:
        with pytest.raises(kind, match=message) as raised:
            await work()
        assert "\n" not in raised.value.message
    assert await _out(vm, "cat /mnt/full/big.bin") == "keep\n"  # the old file, whole
    leftovers = f"find {home} /mnt -name '.vmlab-cp-*'; ls -A /mnt/full /mnt/ro"
    assert await _out(vm, leftovers) == "/mnt/full:\nbig.bin\n\n/mnt/ro:\n"


async def check_tree_in_guest(vm: QemuMachine, path: str) -> None:
    """make_tree's tree, copied to `path` in the guest, as the guest sees it:
    modes, owner root, mtimes, a symlink kept, the FIFO skipped, a script runs."""
    listing = await _out(vm, f"cd {path} && stat -c '%n %a %U %Y' run.sh suid ro sub/deep")
    assert listing.split("\n")[:-1] == [
        f"run.sh 755 root {OLD}", f"suid 4755 root {OLD}", f"ro 555 root {OLD}",
        f"sub/deep 700 root {OLD}",
    ]  # fmt: skip
    links = f"readlink {path}/sub/link; test -e {path}/pipe || echo no-pipe"
    assert await _out(vm, links) == "../bin.dat\nno-pipe\n"
    assert await _out(vm, f"{path}/run.sh") == "ran\n"


async def _out(vm: QemuMachine, script: str) -> str:
    command = Command(argv=("sh", "-c", script), env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    result = await vm.run(command)
    assert result.status == 0, result.stderr
    return result.stdout.decode()
