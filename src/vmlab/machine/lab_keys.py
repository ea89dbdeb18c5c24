"""The lab's SSH key pair: how vmlab (and ansible, or `ssh -i`) logs in to its
disk-image machines.

One ed25519 key per lab, made on first use under `<lab dir>/.vmlab/ssh/`:

    .vmlab/ssh/            mode 0700
        id_ed25519         the private key, OpenSSH format, mode 0600
        id_ed25519.pub     the public key, for people and tools
        .gitignore         `*`: the key never lands in the lab's repository

The private key file is the one truth; the public key is derived from it on
every call. Two vmlab processes (or threads) that start a lab at once do not
clobber each other: each writes its new key to a private temporary file and
hard-links it into place, which fails if the name exists, so the first one
wins and the other reads the winner's key. Nothing here prints or logs the
private key; errors name the file only.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from vmlab.cache import write_atomic
from vmlab.errors import HostError, UsageError

KEY_DIR = Path(".vmlab") / "ssh"
PRIVATE_NAME = "id_ed25519"


@dataclass(frozen=True)
class LabKey:
    """Where the lab's private key is, and its public half (one OpenSSH line, no newline)."""

    private_path: Path
    public_openssh: str


def lab_key(lab_dir: Path) -> LabKey:
    """The lab's key pair, created under `lab_dir/.vmlab/ssh/` on first use."""
    if not lab_dir.is_dir():
        raise UsageError(f"lab directory {lab_dir} does not exist")
    key_dir = lab_dir / KEY_DIR
    private = key_dir / PRIVATE_NAME
    try:
        _make_private_dir(key_dir)
        if not private.exists():
            _create(private)
        _tighten(private, 0o600)  # ssh refuses a key others can read
        public = _public_of(private)
        pub_file = private.with_name(PRIVATE_NAME + ".pub")
        if not pub_file.exists() or pub_file.read_text() != public + "\n":
            write_atomic(pub_file, (public + "\n").encode(), mode=0o644)
    except PermissionError as exc:
        raise HostError(
            f"cannot keep the lab's SSH key in {key_dir}: {exc.strerror} "
            f"(make {lab_dir} writable by this user)"
        ) from None
    except OSError as exc:
        raise HostError(
            f"cannot keep the lab's SSH key in {key_dir}: {exc.strerror} ({exc.filename})"
        ) from None
    return LabKey(private_path=private, public_openssh=public)


def _make_private_dir(key_dir: Path) -> None:
    key_dir.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        key_dir.mkdir(mode=0o700)
    _tighten(key_dir, 0o700)
    ignore = key_dir / ".gitignore"
    if not ignore.exists():
        write_atomic(ignore, b"# vmlab: the lab's SSH key stays out of version control\n*\n")


def _tighten(path: Path, mode: int) -> None:
    """Take away group and other access (umask or an old copy may have left some)."""
    current = stat.S_IMODE(path.stat().st_mode)
    if current & 0o077:
        os.chmod(path, mode)


def _create(private: Path) -> None:
    """A new key at `private`, unless another process or thread makes one first."""
    # Imported here: asyncssh takes ~0.15 s to import, and only image machines need it.
    import asyncssh  # noqa: PLC0415

    key = asyncssh.generate_private_key("ssh-ed25519", comment=f"vmlab@{_lab_name(private)}")
    fd, tmp = tempfile.mkstemp(prefix=f".{PRIVATE_NAME}.", dir=private.parent)  # mode 0600
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(key.export_private_key("openssh"))
            out.flush()
            os.fsync(out.fileno())
        # link() never replaces: if another process won the race, keep its key.
        with contextlib.suppress(FileExistsError):
            os.link(tmp, private)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _lab_name(private: Path) -> str:
    """The lab directory's name, for the key's comment (`vmlab@LAB`)."""
    name = private.parent.parent.parent.resolve().name
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "lab"


def _public_of(private: Path) -> str:
    import asyncssh  # noqa: PLC0415

    try:
        key = asyncssh.read_private_key(private)
    except (asyncssh.KeyImportError, ValueError):
        raise UsageError(
            f"{private} is not an unencrypted OpenSSH private key "
            "(remove it, and vmlab makes a new one on next use)"
        ) from None
    comment = key.get_comment() or f"vmlab@{_lab_name(private)}"
    algorithm_and_data = key.export_public_key("openssh").decode().split()[:2]
    return " ".join([*algorithm_and_data, comment])
