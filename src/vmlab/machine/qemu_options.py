"""Values inside QEMU's comma-separated option lists."""

from __future__ import annotations

from pathlib import Path


def option_path(path: Path) -> str:
    """A path inside a QEMU option list, where `,` must be written `,,`."""
    return str(path).replace(",", ",,")
