"""File copies through the command channel: a tar stream on a command's stdin
or stdout (host-root machines; the rules are in vmlab.guest.copying).

To the guest, the host packs the source (owned by root in the archive, special
files left out) and a guest shell script unpacks it into a staging directory
beside the target, then renames it into place or merges it in; from the guest,
`tar -c` streams the source to the host, which unpacks it into a staging
directory beside the target. The guest needs `tar` (GNU tar, or busybox's) and
`mv -T` (coreutils); the archive to the guest is held in memory.
"""

from __future__ import annotations

import asyncio
import io
import os
import posixpath
import secrets
import tarfile
import tempfile
from pathlib import Path
from typing import BinaryIO, Protocol

from vmlab.errors import CommandTimeout, GuestPathError, InfraError, UsageError
from vmlab.guest.channel import GUEST_PATH, Command, CommandResult, OutputSink, Stdin
from vmlab.guest.copying import (
    STAGE_PREFIX,
    STAGED,
    Copied,
    HostSource,
    Kind,
    LocalTree,
    guest_name,
    host_source,
    into_place,
    quietly,
    resolve_target,
)

ENV = {"PATH": GUEST_PATH, "LC_ALL": "C"}
MARK = "\x1e"  # starts the script's own error line: MARK path MARK why
CLEANUP_TIMEOUT = 30.0

# $1 put|clean, $2 destination, $3 the source's name, $4 the staging name.
PUT_SCRIPT = r"""
say() { printf '\036%s\036%s\n' "$1" "$2" >&2; exit 3; }
nl='
'
dst=$2 name=$3
case $dst in
*/) d=${dst%/}; [ -n "$d" ] || d=/
    [ -d "$d" ] || say "$dst" "no such directory"
    t=${d%/}/$name ;;
*) if [ -d "$dst" ]; then t=${dst%/}/$name; else t=$dst; fi ;;
esac
p=${t%/*}; [ -n "$p" ] || p=/
[ -d "$p" ] || say "$t" "no such directory $p"
s=${p%/}/$4
if [ "$1" = clean ]; then rm -rf -- "$s"; exit 0; fi
command -v tar >/dev/null || say "$t" "tar is not installed in the guest"
why=$(mkdir -m 700 -- "$s" 2>&1) || say "${p%/}/" "${why##*: }"
trap 'rm -rf -- "$s"' EXIT
full() { [ "$(stat -f -c %a -- "$s" 2>/dev/null)" = 0 ]; }  # tar may say "Wrote only ..."
why=$(tar -x -f - -C "$s" 2>&1) || {
  why=${why%%"$nl"*}; why=${why##*: }; ! full || why="No space left on device"; say "$t" "$why"
}
place() {
  if [ -d "$1" ] && [ ! -h "$1" ] && [ -d "$2" ]; then
    chmod u+w -- "$1"
    for e in "$1"/* "$1"/.[!.]* "$1"/..?*; do
      if [ -e "$e" ] || [ -h "$e" ]; then place "$e" "$2/${e##*/}"; fi
    done
    return
  fi
  if [ -d "$2" ]; then say "$2" "it is a directory, and the source is not"; fi
  if [ -d "$1" ] && [ ! -h "$1" ] && { [ -e "$2" ] || [ -h "$2" ]; }; then
    say "$2" "it exists and is not a directory, and the source is one"
  fi
  why=$(mv -fT -- "$1" "$2" 2>&1) || say "$2" "${why##*: }"
}
place "$s/x" "$t"
printf '%s\n' "$t"
"""

# $1 the source.
GET_SCRIPT = r"""
say() { printf '\036%s\n' "$1" >&2; exit 3; }
[ -e "$1" ] || say "No such file or directory"
command -v tar >/dev/null || say "tar is not installed in the guest"
r=$(readlink -f -- "$1") || say "cannot resolve its path"
if [ -d "$r" ]; then
  cd -- "$r" || say "cannot enter it"
  exec tar -c -f - .
elif [ -f "$r" ]; then
  cd -- "${r%/*}/" || say "cannot enter its directory"
  exec tar -c -f - -- "${r##*/}"
fi
say "not a regular file or directory"
"""


class Runner(Protocol):
    """What runs a command in the guest: `QemuMachine.run`."""

    async def __call__(
        self,
        command: Command,
        *,
        stdin: Stdin = None,
        on_stdout: OutputSink | None = None,
        on_stderr: OutputSink | None = None,
        capture: bool = True,
        timeout: float | None = None,
    ) -> CommandResult: ...


async def copy_to(run: Runner, src: Path, dst: str, *, timeout: float | None = None) -> Copied:
    """Copy the host path `src` to the guest path `dst` (absolute)."""
    source = host_source(src)
    archive, files, size = await asyncio.to_thread(pack, source)
    stage = STAGE_PREFIX + secrets.token_hex(6)

    def command(mode: str) -> Command:
        return Command(
            argv=("sh", "-c", PUT_SCRIPT, "vmlab-cp", mode, dst, source.name, stage), env=ENV
        )

    try:
        result = await run(command("put"), stdin=archive, timeout=timeout)
    except CommandTimeout:
        # The script was killed before its own cleanup: remove what it staged.
        await quietly(run(command("clean"), timeout=CLEANUP_TIMEOUT))
        raise
    if result.status != 0:
        where, why = _error(result.stderr, dst)
        raise GuestPathError(f"cannot write {where} in the guest: {why}")
    return Copied(result.stdout.decode("utf-8", "replace").rstrip("\n"), files, size)


async def copy_from(run: Runner, src: str, dst: str, *, timeout: float | None = None) -> Copied:
    """Copy the guest path `src` (absolute) to the host path `dst` (absolute)."""
    tree = LocalTree()
    target = await resolve_target(tree, dst, guest_name(src))
    with tempfile.TemporaryFile(prefix="vmlab-cp-") as spool:
        errors: list[bytes] = []

        def save(data: bytes) -> None:
            spool.write(data)

        result = await run(
            Command(argv=("sh", "-c", GET_SCRIPT, "vmlab-cp", src), env=ENV),
            on_stdout=save,
            on_stderr=errors.append,
            capture=False,
            timeout=timeout,
        )
        stderr = b"".join(errors)
        # tar's 1: "some files changed as they were read", the archive is whole
        if result.status not in (0, 1) or MARK.encode() in stderr:
            _, why = _error(stderr, src)
            raise GuestPathError(f"cannot read {src} in the guest: {why}")
        spool.seek(0)

        async def fill(staged: str) -> tuple[int, int]:
            return await asyncio.to_thread(unpack, spool, staged)

        return await into_place(tree, target, fill)


def _error(stderr: bytes, default_path: str) -> tuple[str, str]:
    """(path, why) from the script's error line, or from tar's first complaint."""
    text = stderr.decode("utf-8", "replace")
    for line in reversed(text.split("\n")):  # not splitlines(): it splits at MARK too
        if line.startswith(MARK):
            parts = line.split(MARK)
            return (parts[1], parts[2]) if len(parts) > 2 else (default_path, parts[1])
    lines = [line for line in text.split("\n") if line.strip()]
    first = next((line for line in lines if line.startswith("tar: ")), lines[-1] if lines else "")
    return default_path, first.rsplit(": ", 1)[-1].strip() or "(no message)"


# -- the host's side of the archives ------------------------------------------


def pack(source: HostSource) -> tuple[bytes, int, int]:
    """`source` as an uncompressed tar whose top entry is `STAGED`: owned by root,
    special files left out; (archive, files, bytes)."""
    counts = [0, 0]

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        if not (info.isreg() or info.isdir() or info.issym() or info.islnk()):
            return None
        if info.isreg():
            counts[0] += 1
            counts[1] += info.size
        return info.replace(uid=0, gid=0, uname="root", gname="root", deep=False)

    buffer = io.BytesIO()
    top = os.path.realpath(source.path)  # a symlink given as the source is followed
    try:
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
            tar.add(top, arcname=STAGED, recursive=source.kind is Kind.DIR, filter=keep)
    except OSError as exc:
        raise UsageError(
            f"cannot read {exc.filename or source.path}: {exc.strerror or exc}"
        ) from None
    return buffer.getvalue(), counts[0], counts[1]


def unpack(spool: BinaryIO, staged: str) -> tuple[int, int]:
    """Unpack what `GET_SCRIPT` sent so that the copy is at `staged`: a directory
    (members under `.`) or one file; (files, bytes)."""
    try:
        with tarfile.open(fileobj=spool, mode="r:") as tar:
            members = tar.getmembers()
            if not members:
                raise InfraError("the guest sent an empty archive")
            if posixpath.normpath(members[0].name) == ".":
                os.mkdir(staged, 0o700)
                destination = staged
            else:
                if len(members) != 1 or not members[0].isreg():
                    raise InfraError("the guest sent an archive of more than the one file")
                members = [members[0].replace(name=STAGED, deep=False)]
                destination = os.path.dirname(staged)
            tar.extractall(destination, members, numeric_owner=True, filter=_host_member)
    except tarfile.TarError as exc:
        raise InfraError(f"the guest sent a broken archive: {exc}") from None
    except OSError as exc:
        raise UsageError(f"cannot write {exc.filename or staged}: {exc.strerror or exc}") from None
    regular = [m for m in members if m.isreg()]
    return len(regular), sum(m.size for m in regular)


def _host_member(member: tarfile.TarInfo, _destination: str) -> tarfile.TarInfo | None:
    """Files, directories and links only, inside the destination, owned by the
    user who runs vmlab, with their modes and times as they are."""
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        return None
    names = [member.name, member.linkname] if member.islnk() else [member.name]
    for name in names:
        normal = posixpath.normpath(name)
        if normal.startswith("/") or normal == ".." or normal.startswith("../"):
            raise InfraError(f"the guest sent an archive with a path outside the copy: {name}")
    return member.replace(uid=os.getuid(), gid=os.getgid(), uname="", gname="", deep=False)
