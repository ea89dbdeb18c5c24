"""Writing report files so that no reader ever sees half of one."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from vmlab.errors import HostError


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file and `os.replace`.

    Readers see the old file or the whole new one, never a torn one; on any
    failure the temporary file is removed and the old file stays. Creates the
    parent directory. The file gets the usual mode (0666 minus the umask).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        raise HostError(f"cannot write {path}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):
            raise HostError(f"cannot write {path}: {exc.strerror or exc}") from exc
        raise
