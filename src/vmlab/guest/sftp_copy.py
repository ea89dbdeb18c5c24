"""File copies over SFTP, on a guest's SSH connection (the rules are in
vmlab.guest.copying).

Files travel with asyncssh's parallel block requests; directories are walked
here, so that symlinks stay symlinks, special files are skipped, and a
directory's mode and time are set after its contents (a read-only directory
can still be filled). SFTP acts as the login user: vmlab logs in as root.
"""

from __future__ import annotations

import os
import posixpath
import stat
from pathlib import Path

import asyncssh
from asyncssh import SFTPAttrs, SFTPClient, SFTPError

from vmlab.errors import GuestPathError, InfraError, UsageError, VmlabError
from vmlab.guest.copying import (
    Copied,
    Kind,
    LocalTree,
    guest_name,
    host_source,
    into_place,
    kind_of,
    quietly,
    resolve_target,
    stage_path,
)

ST_RDONLY = 1  # statvfs f_flag

_NO_SUCH = (asyncssh.SFTPNoSuchFile, asyncssh.SFTPNoSuchPath)
_LOST = (asyncssh.SFTPConnectionLost, asyncssh.SFTPNoConnection)


async def upload(sftp: SFTPClient, src: Path, dst: str) -> Copied:
    """Copy the host path `src` to the guest path `dst` (absolute)."""
    source = host_source(src)
    tree = SftpTree(sftp)
    target = await resolve_target(tree, dst, source.name)

    async def fill(staged: str) -> tuple[int, int]:
        try:
            return await _put(sftp, source.path, staged, top=True)
        except SFTPError as exc:  # told while the staged part still fills the disk
            raise await tree.failed(exc, "write", target) from None

    return await into_place(tree, target, fill)


async def download(sftp: SFTPClient, src: str, dst: str) -> Copied:
    """Copy the guest path `src` (absolute) to the host path `dst` (absolute)."""
    name = guest_name(src)
    tree = SftpTree(sftp)
    try:
        attrs = await sftp.stat(src)
    except SFTPError as exc:
        raise await tree.failed(exc, "read", src) from None
    if kind_of(attrs.permissions or 0) is Kind.OTHER:
        raise GuestPathError(f"cannot read {src} in the guest: not a regular file or directory")
    target = await resolve_target(LocalTree(), dst, name)

    async def fill(staged: str) -> tuple[int, int]:
        return await _get(sftp, src, staged, attrs)

    try:
        return await into_place(LocalTree(), target, fill)
    except SFTPError as exc:
        raise await tree.failed(exc, "read", src) from None


async def _put(sftp: SFTPClient, local: Path, remote: str, *, top: bool = False) -> tuple[int, int]:
    """Upload one entry (a whole tree for a directory); (files, bytes)."""
    try:
        info = os.stat(local) if top else os.lstat(local)
        kind = kind_of(info.st_mode)
        names = sorted(os.listdir(local)) if kind is Kind.DIR else []
        link = os.readlink(local) if stat.S_ISLNK(info.st_mode) else None
    except OSError as exc:
        raise UsageError(f"cannot read {local}: {exc.strerror or exc}") from None
    if kind is Kind.FILE:
        try:
            await sftp.put(os.fspath(local), remote, preserve=True, follow_symlinks=True)
        except OSError as exc:  # reading the host file
            raise UsageError(f"cannot read {local}: {exc.strerror or exc}") from None
        return 1, info.st_size
    if link is not None:
        await sftp.symlink(link, remote)
        return 0, 0
    if kind is not Kind.DIR:
        return 0, 0  # a device, FIFO or socket: skipped
    await sftp.mkdir(remote, SFTPAttrs(permissions=0o700))
    files = size = 0
    for name in names:
        more = await _put(sftp, local / name, posixpath.join(remote, name))
        files, size = files + more[0], size + more[1]
    await sftp.setstat(
        remote,
        SFTPAttrs(
            permissions=stat.S_IMODE(info.st_mode),
            atime=int(info.st_atime),
            mtime=int(info.st_mtime),
        ),
    )
    return files, size


async def _get(sftp: SFTPClient, remote: str, local: str, attrs: SFTPAttrs) -> tuple[int, int]:
    """Download one entry (a whole tree for a directory); (files, bytes)."""
    mode = attrs.permissions or 0
    if stat.S_ISREG(mode):
        try:
            await sftp.get(remote, local, preserve=True, follow_symlinks=True)
        except OSError as exc:  # writing the host file
            raise UsageError(f"cannot write {local}: {exc.strerror or exc}") from None
        return 1, attrs.size or 0
    if stat.S_ISLNK(mode):
        target = await sftp.readlink(remote)
        _host(os.symlink, target, local)
        return 0, 0
    if not stat.S_ISDIR(mode):
        return 0, 0  # a device, FIFO or socket: skipped
    _host(os.mkdir, local, 0o700)
    files = size = 0
    entries = [entry async for entry in sftp.scandir(remote)]
    for entry in sorted(entries, key=lambda e: str(e.filename)):
        name = str(entry.filename)
        if name in (".", "..") or "/" in name:
            continue
        more = await _get(
            sftp, posixpath.join(remote, name), os.path.join(local, name), entry.attrs
        )
        files, size = files + more[0], size + more[1]
    _host(os.chmod, local, stat.S_IMODE(mode))
    if attrs.atime is not None and attrs.mtime is not None:
        _host(os.utime, local, (attrs.atime, attrs.mtime))
    return files, size


def _host(function: object, *args: object) -> None:
    """A host filesystem call for a download; its failure is the host's."""
    try:
        function(*args)  # type: ignore[operator]
    except OSError as exc:
        where = exc.filename if exc.filename is not None else args[-1]
        raise UsageError(f"cannot write {where}: {exc.strerror or exc}") from None


class SftpTree:
    """The guest's filesystem over SFTP, as a `vmlab.guest.copying.Tree`."""

    def __init__(self, sftp: SFTPClient) -> None:
        self._sftp = sftp

    async def kind(self, path: str, *, follow: bool) -> Kind | None:
        try:
            attrs = await (self._sftp.stat(path) if follow else self._sftp.lstat(path))
        except _NO_SUCH:
            return None
        except SFTPError as exc:
            raise await self.failed(exc, "write", path) from None
        return kind_of(attrs.permissions or 0)

    async def listdir(self, path: str) -> list[str]:
        try:
            names = await self._sftp.listdir(path)
        except SFTPError as exc:
            raise await self.failed(exc, "write", path) from None
        return [str(name) for name in names if name not in (".", "..")]

    async def rename(self, src: str, dst: str) -> None:
        try:
            await self._sftp.posix_rename(src, dst)
        except SFTPError as exc:
            raise await self.failed(exc, "write", dst) from None

    async def make_stage(self, parent: str) -> str:
        path = stage_path(parent)
        try:
            await self._sftp.mkdir(path, SFTPAttrs(permissions=0o700))
        except SFTPError as exc:
            raise await self.failed(exc, "write", posixpath.join(parent, "")) from None
        except BaseException:  # cancelled with the mkdir sent: the guest may have made it
            await quietly(self.remove(path))
            raise
        return path

    async def unlock(self, path: str) -> None:
        """Nothing to do: SFTP acts as root in the guest."""

    async def remove(self, path: str) -> None:
        await self._sftp.rmtree(path, ignore_errors=True)

    def write_error(self, path: str, why: str) -> VmlabError:
        return GuestPathError(f"cannot write {path} in the guest: {why}")

    async def failed(self, exc: SFTPError, verb: str, path: str) -> VmlabError:
        """The one-line error for an SFTP failure on `path`. SFTP version 3 says
        only "Failure" for most errors: the filesystem's flags tell more."""
        if isinstance(exc, _LOST):
            return InfraError(f"the SFTP session to the guest broke: {exc.reason}")
        why = exc.reason or type(exc).__name__
        if isinstance(exc, _NO_SUCH):
            why = "No such file or directory"
        elif isinstance(exc, asyncssh.SFTPFailure) and verb == "write":
            why = await self._why_not_writable(path) or why
        return GuestPathError(f"cannot {verb} {path} in the guest: {why}")

    async def _why_not_writable(self, path: str) -> str | None:
        directory = path.rstrip("/") or "/"
        while directory != "/":
            try:
                attrs = await self._sftp.statvfs(directory)
                break
            except SFTPError:
                directory = posixpath.dirname(directory)
        else:
            try:
                attrs = await self._sftp.statvfs("/")
            except SFTPError:
                return None
        if attrs.flags & ST_RDONLY:
            return "Read-only file system"
        if attrs.bavail == 0:
            return "No space left on device"
        return None
