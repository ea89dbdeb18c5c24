"""The per-user cache (~/.cache/vmlab) and atomic file writes.

Several vmlab processes may fill the cache at once: every write goes to a
temporary file first and is renamed into place, so a reader sees a whole file
or none, and two writers of the same entry just do the work twice.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def cache_root() -> Path:
    """$VMLAB_CACHE_DIR, else $XDG_CACHE_HOME/vmlab, else ~/.cache/vmlab."""
    explicit = os.environ.get("VMLAB_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "vmlab"


def cache_dir(name: str) -> Path:
    path = cache_root() / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def state_dir(name: str) -> Path:
    """$XDG_STATE_HOME/vmlab/NAME (~/.local/state/vmlab/NAME): logs kept for the user."""
    xdg = os.environ.get("XDG_STATE_HOME")
    path = (Path(xdg) if xdg else Path.home() / ".local" / "state") / "vmlab" / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write `data` to `path` so that no reader ever sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
