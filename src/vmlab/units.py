"""Parsing of the sizes and durations users type (`512M`, `2G`, `90s`)."""

from __future__ import annotations

import re

from vmlab.errors import UsageError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
_SIZE_SHIFT = {"": 20, "k": 10, "m": 20, "g": 30, "t": 40}


def parse_size_mib(text: str | int, *, what: str = "size") -> int:
    """Return `text` in MiB. A bare number means MiB, as with QEMU's -m.

    >>> parse_size_mib("2G")
    2048
    """
    if isinstance(text, int):
        value, unit = float(text), ""
    else:
        match = _SIZE.match(text)
        if match is None:
            raise UsageError(f"{what}: {text!r} is not a size (try 512M or 2G)")
        value, unit = float(match.group(1)), match.group(2).lower()
    size_bytes = int(value * (1 << _SIZE_SHIFT[unit]))
    mib = size_bytes >> 20
    if mib < 1 or size_bytes % (1 << 20):
        raise UsageError(f"{what}: {text!r} is not a whole number of MiB (try 512M or 2G)")
    return mib


def format_mib(mib: int) -> str:
    """`2048` -> `2G`, `1536` -> `1536M`."""
    return f"{mib >> 10}G" if mib % 1024 == 0 else f"{mib}M"
