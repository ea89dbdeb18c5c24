#!/usr/bin/env python3
"""POSIX checks on a directory (an NFS mount here); one TAP test point each.

    python3 posix_checks.py DIR

Each check works in its own subdirectory of DIR, compares real contents and
metadata, and prints `ok N - name` or `not ok N - name` with the reason as a
YAML-ish diagnostic. Exits 0 when every check passed.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import multiprocessing
import os
import stat
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

CHECKS: list[tuple[str, Callable[[Path], None]]] = []


def check(name: str) -> Callable[[Callable[[Path], None]], Callable[[Path], None]]:
    def register(fn: Callable[[Path], None]) -> Callable[[Path], None]:
        CHECKS.append((name, fn))
        return fn

    return register


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


@check("create-write-read")
def create_write_read(d: Path) -> None:
    data = os.urandom(100_000)
    fd = os.open(d / "f", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    expect(os.write(fd, data) == len(data), "short write")
    os.close(fd)
    try:
        os.open(d / "f", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        raise AssertionError("O_EXCL on an existing file succeeded")
    except FileExistsError:
        pass
    expect((d / "f").read_bytes() == data, "content differs after write")
    with open(d / "f", "r+b") as f:  # overwrite in the middle
        f.seek(50_000)
        f.write(b"X" * 10)
    got = (d / "f").read_bytes()
    expect(got[50_000:50_010] == b"X" * 10 and got[:50_000] == data[:50_000], "overwrite")
    with open(d / "f", "ab") as f:
        f.write(b"tail")
    expect((d / "f").read_bytes().endswith(b"tail"), "append")
    os.truncate(d / "f", 10)
    expect((d / "f").stat().st_size == 10, "truncate")


@check("rename")
def rename(d: Path) -> None:
    (d / "a").write_bytes(b"A")
    (d / "b").write_bytes(b"B")
    os.rename(d / "a", d / "b")  # replaces atomically
    expect(not (d / "a").exists() and (d / "b").read_bytes() == b"A", "rename over a file")
    (d / "sub").mkdir()
    os.rename(d / "b", d / "sub" / "c")
    expect((d / "sub" / "c").read_bytes() == b"A", "rename across directories")
    os.rename(d / "sub", d / "sub2")
    expect((d / "sub2" / "c").exists(), "rename a directory")


@check("unlink-while-open")
def unlink_while_open(d: Path) -> None:
    (d / "f").write_bytes(b"still here")
    with open(d / "f", "rb") as f:
        os.unlink(d / "f")
        expect(not (d / "f").exists(), "name still there after unlink")
        expect(f.read() == b"still here", "data gone while open")
    # NFS clients silly-rename open files: nothing may be left after close.
    time.sleep(0.5)
    leftovers = [p.name for p in d.iterdir()]
    expect(not leftovers, f"left after close: {leftovers}")


@check("hard-links")
def hard_links(d: Path) -> None:
    (d / "f").write_bytes(b"one")
    os.link(d / "f", d / "g")
    expect((d / "f").stat().st_nlink == 2, "nlink is not 2")
    expect((d / "f").stat().st_ino == (d / "g").stat().st_ino, "different inodes")
    (d / "g").write_bytes(b"two")
    expect((d / "f").read_bytes() == b"two", "a write through one name not seen by the other")
    os.unlink(d / "f")
    expect((d / "g").stat().st_nlink == 1, "nlink after unlink")


@check("symlinks")
def symlinks(d: Path) -> None:
    (d / "target").write_bytes(b"T")
    os.symlink("target", d / "link")
    expect(os.readlink(d / "link") == "target", "readlink")
    expect((d / "link").read_bytes() == b"T", "read through the link")
    expect(stat.S_ISLNK(os.lstat(d / "link").st_mode), "lstat is not a link")
    os.symlink("missing", d / "dangling")
    expect(not (d / "dangling").exists() and os.path.lexists(d / "dangling"), "dangling link")


@check("permissions-and-ownership")
def permissions(d: Path) -> None:
    f = d / "f"
    f.write_bytes(b"x")
    for mode in (0o600, 0o640, 0o755, 0o4755, 0o777):
        os.chmod(f, mode)
        expect(stat.S_IMODE(f.stat().st_mode) == mode, f"mode {mode:o} not kept")
    os.chown(f, 1234, 5678)  # the export has no_root_squash
    st = f.stat()
    expect((st.st_uid, st.st_gid) == (1234, 5678), f"owner {st.st_uid}:{st.st_gid}")
    os.chmod(f, 0o600)
    pid = os.fork()
    if pid == 0:  # as uid 1234: may read its file; as 4321: may not
        os.setgid(5678)
        os.setuid(4321)
        try:
            f.read_bytes()
            os._exit(1)
        except PermissionError:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    expect(os.waitstatus_to_exitcode(status) == 0, "another user could read a 0600 file")


def _try_lock(path: str, start: int, length: int, queue: multiprocessing.Queue[str]) -> None:
    with open(path, "r+b") as f:
        try:
            fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB, length, start)
            queue.put("locked")
        except OSError as exc:
            queue.put("busy" if exc.errno in (errno.EAGAIN, errno.EACCES) else str(exc))


@check("byte-range-locks")
def locks(d: Path) -> None:
    path = d / "f"
    path.write_bytes(b"\0" * 4096)
    ctx = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue[str] = ctx.Queue()

    def other(start: int, length: int) -> str:
        proc = ctx.Process(target=_try_lock, args=(str(path), start, length, queue))
        proc.start()
        proc.join(60)
        return queue.get(timeout=5)

    with open(path, "r+b") as f:
        fcntl.lockf(f, fcntl.LOCK_EX, 100, 0)  # bytes 0-99
        expect(other(50, 10) == "busy", "a conflicting range was granted")
        expect(other(100, 100) == "locked", "a free range was refused")
        fcntl.lockf(f, fcntl.LOCK_UN, 100, 0)
        expect(other(0, 100) == "locked", "a released range was refused")


@check("large-files")
def large_files(d: Path) -> None:
    sparse = d / "sparse"
    with open(sparse, "wb") as f:
        f.seek(1 << 30)
        f.write(b"end")
    st = sparse.stat()
    expect(st.st_size == (1 << 30) + 3, f"sparse size {st.st_size}")
    with open(sparse, "rb") as f:
        expect(f.read(4096) == b"\0" * 4096, "a hole does not read as zeros")
        f.seek(1 << 30)
        expect(f.read() == b"end", "the end of a 1 GiB sparse file")
    dense = d / "dense"
    data = os.urandom(4 << 20)
    dense.write_bytes(data)
    os.sync()
    expect(hashlib.sha256(dense.read_bytes()).digest() == hashlib.sha256(data).digest(), "4 MiB")


@check("big-directory")
def big_directory(d: Path) -> None:
    names = {f"entry-{i:05d}" for i in range(2000)}
    for name in names:
        (d / name).write_bytes(name.encode())
    listed = set(os.listdir(d))
    expect(listed == names, f"listing differs: {len(listed ^ names)} names")
    for name in list(names)[::100]:
        expect((d / name).read_bytes() == name.encode(), f"{name} content")
    for name in names:
        (d / name).unlink()
    expect(not os.listdir(d), "not empty after removing every entry")


def _writer(path: str, index: int, size: int) -> None:
    block = bytes([index]) * size
    fd = os.open(path, os.O_WRONLY)
    os.pwrite(fd, block, index * size)
    os.fsync(fd)
    os.close(fd)


@check("concurrent-writers")
def concurrent_writers(d: Path) -> None:
    writers, size = 8, 256 << 10
    path = d / "shared"
    path.write_bytes(b"\xff" * writers * size)
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(path), i, size)) for i in range(writers)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
        expect(proc.exitcode == 0, f"a writer exited {proc.exitcode}")
    data = path.read_bytes()
    for i in range(writers):
        chunk = data[i * size : (i + 1) * size]
        expect(chunk == bytes([i]) * size, f"writer {i}'s region is wrong")


def main() -> int:
    root = Path(sys.argv[1])
    print("TAP version 13")
    print(f"1..{len(CHECKS)}")
    failed = 0
    for number, (name, fn) in enumerate(CHECKS, start=1):
        work = root / name
        work.mkdir(parents=True)
        started = time.monotonic()
        try:
            fn(work)
        except Exception as exc:  # every failure is a result, not a crash
            failed += 1
            print(f"not ok {number} - {name}")
            print(f"  ---\n  message: {exc!r}")
            for line in traceback.format_exc().splitlines()[-4:]:
                print(f"  # {line}")
            print("  ...")
        else:
            print(f"ok {number} - {name}")
        print(f"# metric seconds={time.monotonic() - started:.3f} s")
        sys.stdout.flush()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
