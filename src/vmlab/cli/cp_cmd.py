"""`vmlab cp [--lab PATH] SRC DST`: files and directories between the host and a
machine that is up, over SFTP on its SSH port (like scp and `docker cp`).

Exactly one of SRC and DST is `MACHINE:PATH`. As in scp, a word counts as
`MACHINE:` when a colon comes before any `/` (a host path with such a colon is
written `./a:b`). A relative guest PATH starts at /root, where `vmlab ssh` runs
commands; `MACHINE:` alone is /root itself. The rules of the copy (directories
recursively, into an existing directory under their own name, modes and times
kept, nothing half-written) are in vmlab.guest.copying.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from vmlab.cli.lifecycle_cmd import lab_dir_of, running_record
from vmlab.errors import UsageError
from vmlab.guest.copying import Copied, guest_absolute, host_absolute, host_source

GUEST_HOME = "/root"
_REMOTE = re.compile(r"([A-Za-z0-9_][A-Za-z0-9_.-]*):(.*)", re.DOTALL)
EXAMPLE = "vmlab cp ./build web:/tmp/, or vmlab cp web:/var/log/syslog ."


@dataclass(frozen=True)
class CopyRequest:
    """One `vmlab cp`, parsed: which machine, which way, and both paths."""

    machine: str
    to_guest: bool
    host: str  # absolute, a trailing / kept
    guest: str  # absolute, a trailing / kept


def parse(src: str, dst: str) -> CopyRequest:
    """The copy SRC DST asks for; UsageError unless exactly one is MACHINE:PATH."""
    remote_src, remote_dst = _REMOTE.fullmatch(src), _REMOTE.fullmatch(dst)
    if remote_src and remote_dst:
        raise UsageError(
            f"both {src!r} and {dst!r} name a machine: vmlab cp copies between the "
            "host and one machine (copy to a host directory, then from there)"
        )
    remote = remote_src or remote_dst
    if remote is None:
        raise UsageError(
            f"neither {src!r} nor {dst!r} names a machine (write that side as "
            f"MACHINE:PATH: {EXAMPLE})"
        )
    machine, path = remote.group(1), remote.group(2)
    guest = guest_absolute(path, GUEST_HOME) if path else GUEST_HOME + "/"
    host = host_absolute(dst if remote_src else src)
    return CopyRequest(machine, to_guest=remote_dst is not None, host=host, guest=guest)


async def cp(lab_path: Path, src: str, dst: str) -> int:
    """Copy, print where the copy is, return 0 (errors are raised)."""
    from vmlab.guest.ssh import SshChannel  # noqa: PLC0415 (asyncssh: only when copying)

    request = parse(src, dst)
    if request.to_guest:
        host_source(request.host)  # told at once, before connecting
    record = running_record(lab_dir_of(lab_path), request.machine)
    channel = await SshChannel.connect(
        "127.0.0.1", record.ssh_port, user=record.ssh_user, key=record.key_path, timeout=30
    )
    try:
        if request.to_guest:
            copied = await channel.copy_to(Path(request.host), request.guest)
        else:
            copied = await channel.copy_from(request.guest, request.host)
    finally:
        await channel.close()
    print(summary(copied, f"{request.machine}:" if request.to_guest else ""), flush=True)
    return 0


def summary(copied: Copied, prefix: str) -> str:
    """`copied 3 files (8.0 MiB) to web:/tmp/tree`."""
    files = "1 file" if copied.files == 1 else f"{copied.files} files"
    return f"copied {files} ({human_size(copied.bytes)}) to {prefix}{copied.path}"


def human_size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"
