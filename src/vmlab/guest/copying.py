"""File copies between the host and a guest: what every transport shares.

The rules, those of `cp -r`, scp and `docker cp`:

- SRC is a regular file or a directory; a symlink given as SRC is followed.
  Inside a directory, files and directories are copied recursively, symlinks
  as symlinks, and other kinds (devices, FIFOs, sockets) are skipped.
- DST names the copy, unless it is an existing directory or ends in `/`: then
  the copy goes inside it, under SRC's name. A directory copied onto an
  existing directory is merged into it (its files replaced, the rest kept); a
  directory never replaces a non-directory, nor the other way round.
- Modes (with the setuid, setgid and sticky bits) and modification times are
  kept; owners are not: a copy belongs to whoever writes it (root in a guest,
  vmlab's user on the host).
- Nothing half-written is ever visible: the copy is made in a staging
  directory beside its target (`.vmlab-cp-XXXXXXXXXXXX`, private) and renamed
  into place, a new tree at once and a merged one entry by entry; any failure
  removes the staging directory.

Transports: SFTP when the machine is reached over SSH (vmlab.guest.sftp_copy),
otherwise a tar stream through the command channel (vmlab.guest.tar_copy).
`LocalTree` here is the host's side of both.
"""

from __future__ import annotations

import contextlib
import enum
import os
import posixpath
import secrets
import shutil
import stat
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from vmlab.errors import UsageError, VmlabError

STAGE_PREFIX = ".vmlab-cp-"
STAGED = "x"  # the copy's name inside its staging directory


@dataclass(frozen=True)
class Copied:
    """What a copy did: where the copy is (a guest path for copy_to, a host path
    for copy_from), and how many regular files of how many bytes it wrote."""

    path: str
    files: int
    bytes: int


@runtime_checkable
class CopyingChannel(Protocol):
    """A channel that copies files itself (vmlab.guest.ssh.SshChannel, over SFTP);
    paths are absolute."""

    @property
    def sftp_ok(self) -> bool: ...

    async def copy_to(self, src: Path, dst: str) -> Copied: ...

    async def copy_from(self, src: str, dst: str) -> Copied: ...


class Kind(enum.Enum):
    DIR = "directory"
    FILE = "file"
    OTHER = "other"  # a symlink (not followed), a device, a FIFO, a socket


def kind_of(mode: int) -> Kind:
    if stat.S_ISDIR(mode):
        return Kind.DIR
    if stat.S_ISREG(mode):
        return Kind.FILE
    return Kind.OTHER


class Tree(Protocol):
    """One side's filesystem, as the staging and placing steps need it. Each
    operation raises the side's own VmlabError naming the path."""

    async def kind(self, path: str, *, follow: bool) -> Kind | None:
        """What is at `path` (None: nothing)."""
        ...

    async def listdir(self, path: str) -> list[str]: ...

    async def rename(self, src: str, dst: str) -> None:
        """Move `src` to `dst`, replacing a non-directory there atomically."""
        ...

    async def make_stage(self, parent: str) -> str:
        """A new private staging directory in `parent`; its path."""
        ...

    async def unlock(self, path: str) -> None:
        """Let entries be moved out of the staged directory `path`."""
        ...

    async def remove(self, path: str) -> None:
        """Remove a staging directory and everything in it (errors ignored)."""
        ...

    def write_error(self, path: str, why: str) -> VmlabError: ...


def stage_path(parent: str) -> str:
    return posixpath.join(parent, STAGE_PREFIX + secrets.token_hex(6))


async def resolve_target(tree: Tree, dst: str, name: str) -> str:
    """Where a copy of something called `name` goes for the destination `dst`:
    inside `dst` when it is a directory or ends in `/`, else `dst` itself. Its
    parent directory must exist."""
    if dst.endswith("/"):
        directory = dst.rstrip("/") or "/"
        if await tree.kind(directory, follow=True) is not Kind.DIR:
            raise tree.write_error(dst, "no such directory")
        return posixpath.join(directory, name)
    target = posixpath.join(dst, name) if await tree.kind(dst, follow=True) is Kind.DIR else dst
    parent = posixpath.dirname(target) or "."
    if await tree.kind(parent, follow=True) is not Kind.DIR:
        raise tree.write_error(target, f"no such directory {parent}")
    return target


async def place(tree: Tree, staged: str, target: str) -> None:
    """Move the staged copy to `target`: a rename, or a merge into an existing
    directory (entry by entry, each a rename)."""
    kind = await tree.kind(staged, follow=False)
    there = await tree.kind(target, follow=True)
    if kind is Kind.DIR and there is Kind.DIR:
        await tree.unlock(staged)
        for name in sorted(await tree.listdir(staged)):
            await place(tree, posixpath.join(staged, name), posixpath.join(target, name))
        return
    if there is Kind.DIR:
        raise tree.write_error(target, "it is a directory, and the source is not")
    if kind is Kind.DIR and (there is not None or await tree.kind(target, follow=False)):
        raise tree.write_error(target, "it exists and is not a directory, and the source is one")
    await tree.rename(staged, target)


async def into_place(
    tree: Tree, target: str, fill: Callable[[str], Awaitable[tuple[int, int]]]
) -> Copied:
    """Stage a copy beside `target` (`fill(path)` writes it at `path` and returns
    its files and bytes), then place it; the staging directory never stays."""
    stage = await tree.make_stage(posixpath.dirname(target) or ".")
    try:
        staged = posixpath.join(stage, STAGED)
        files, size = await fill(staged)
        await place(tree, staged, target)
    finally:
        await quietly(tree.remove(stage))
    return Copied(target, files, size)


async def quietly(work: Awaitable[object]) -> None:
    """Await cleanup work, whatever happens to it (also in a cancelled task)."""
    with contextlib.suppress(Exception):
        await work


# -- sources and names --------------------------------------------------------


@dataclass(frozen=True)
class HostSource:
    path: Path  # as given (a symlink is followed when read)
    name: str  # the copy's name when it goes inside a directory
    kind: Kind


def host_source(src: str | os.PathLike[str]) -> HostSource:
    """Check a host path to copy from: a regular file or a directory."""
    path = Path(src)
    try:
        info = os.stat(path)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    kind = kind_of(info.st_mode)
    if kind is Kind.OTHER:
        raise UsageError(f"cannot read {path}: not a regular file or directory")
    name = Path(os.path.abspath(path)).name
    if not name:
        raise UsageError("cannot copy / as a whole (name a directory below it)")
    return HostSource(path, name, kind)


def guest_name(src: str) -> str:
    """The name a copy of the guest path `src` takes inside a directory."""
    name = posixpath.basename(posixpath.normpath(src))
    if name in ("", "/", ".", ".."):
        raise UsageError(f"cannot copy {src} as a whole (name a directory below it)")
    return name


def guest_absolute(path: str, cwd: str = "/") -> str:
    """`path` made absolute against the guest directory `cwd`; a trailing `/`
    (copy into this directory) is kept."""
    if not path:
        raise UsageError("an empty guest path (name a file or directory)")
    return posixpath.join(cwd, path)


def host_absolute(path: str | os.PathLike[str]) -> str:
    """`path` made absolute in the current directory, a trailing `/` kept."""
    text = os.fspath(path)
    if not text:
        raise UsageError("an empty host path (name a file or directory)")
    absolute = os.path.abspath(text)
    return absolute + "/" if text.endswith("/") and absolute != "/" else absolute


# -- the host's side ----------------------------------------------------------


class LocalTree:
    """The host's filesystem as a `Tree`."""

    async def kind(self, path: str, *, follow: bool) -> Kind | None:
        try:
            info = os.stat(path) if follow else os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise self.write_error(path, exc.strerror or str(exc)) from None
        return kind_of(info.st_mode)

    async def listdir(self, path: str) -> list[str]:
        with self._errors(path):
            return os.listdir(path)

    async def rename(self, src: str, dst: str) -> None:
        with self._errors(dst):
            os.replace(src, dst)

    async def make_stage(self, parent: str) -> str:
        path = stage_path(parent)
        with self._errors(posixpath.join(parent, "")):
            os.mkdir(path, 0o700)
        return path

    async def unlock(self, path: str) -> None:
        with self._errors(path):
            mode = stat.S_IMODE(os.lstat(path).st_mode)
            if mode & 0o300 != 0o300:
                os.chmod(path, mode | 0o300)

    async def remove(self, path: str) -> None:
        remove_host_tree(path)

    def write_error(self, path: str, why: str) -> VmlabError:
        return UsageError(f"cannot write {path}: {why}")

    @contextlib.contextmanager
    def _errors(self, path: str) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise self.write_error(path, exc.strerror or str(exc)) from None


def remove_host_tree(path: str) -> None:
    """Remove a staging directory, also where its copied modes forbid writes."""

    def retry(function: object, failed: str, _exc: object) -> None:
        with contextlib.suppress(OSError):
            parent = os.path.dirname(failed)
            os.chmod(parent, stat.S_IMODE(os.lstat(parent).st_mode) | 0o700)
            if os.path.isdir(failed) and not os.path.islink(failed):
                os.chmod(failed, 0o700)
                shutil.rmtree(failed, ignore_errors=True)
            else:
                os.unlink(failed)

    if os.path.lexists(path):
        shutil.rmtree(path, onerror=retry)
