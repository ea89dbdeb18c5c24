"""A tiny ISO 9660 writer for cloud-init NoCloud seeds (no genisoimage needed).

cloud-init finds a NoCloud seed by the filesystem label `cidata` (blkid) and
reads `user-data`, `meta-data`, `network-config` and `vendor-data` from its
root. Plain ISO 9660 cannot spell those names (its d-characters are A-Z, 0-9
and `_`), so the image carries two directory trees over the same file data:

- the primary one (ECMA-119, interchange level 1: `USER_DAT.;1`), for readers
  that know nothing else;
- a Joliet one (a Supplementary Volume Descriptor whose names are UCS-2
  big-endian), which Linux's isofs and blkid prefer: `user-data` as written.

Layout, in 2048-byte logical sectors::

    0-15   system area (zeros)
    16     Primary Volume Descriptor
    17     Joliet Supplementary Volume Descriptor
    18     Volume Descriptor Set Terminator
    19-22  path tables: primary L (little-endian), M (big-endian); Joliet L, M
    23...  primary root directory, then the Joliet root directory
    ...    file data, each file from the start of a sector

Only a flat root directory is supported: that is all a seed needs. The output
depends only on the files, the label and the timestamp, so the same input
gives the same bytes.
"""

from __future__ import annotations

import datetime
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from vmlab.cache import write_atomic
from vmlab.errors import UsageError

SECTOR = 2048
# Recorded as every date in the image unless the caller gives another.
FIXED_TIME = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)

_FIRST_DESCRIPTOR = 16  # sectors 0-15 are the system area
_PATH_TABLES = 19  # first sector after the three volume descriptors
_ROOT_DIRS = 23  # after the four one-sector path tables
_D_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
# Characters the Joliet specification forbids in names (besides controls).
_JOLIET_FORBIDDEN = frozenset("*/:;?\\")
_JOLIET_MAX_NAME = 64  # UCS-2 characters
_JOLIET_MAX_LABEL = 16  # the 32-byte volume identifier field, in UCS-2


# ------------------------------------------------------------- number formats
# ECMA-119 7.2/7.3: "both-byte orders" fields hold the value little-endian,
# then again big-endian.


def _both16(value: int) -> bytes:
    return struct.pack("<H", value) + struct.pack(">H", value)


def _both32(value: int) -> bytes:
    return struct.pack("<I", value) + struct.pack(">I", value)


def _padded(text: bytes, size: int, fill: bytes = b" ") -> bytes:
    """`text` then `fill` repeated up to `size` bytes (fill may be 2 bytes wide)."""
    if len(text) > size:
        raise ValueError(f"{text!r} is longer than {size} bytes")
    pad = size - len(text)
    return text + (fill * (pad // len(fill) + 1))[:pad]


def _ucs2(text: str) -> bytes:
    return text.encode("utf-16-be")


def _volume_date(when: datetime.datetime) -> bytes:
    """ECMA-119 8.4.26.1: 16 ASCII digits (to hundredths) + GMT offset byte."""
    return when.strftime("%Y%m%d%H%M%S").encode("ascii") + b"00" + b"\x00"


_UNSET_DATE = b"0" * 16 + b"\x00"  # "not specified" (expiration, effective)


def _record_date(when: datetime.datetime) -> bytes:
    """ECMA-119 9.1.5: years since 1900, month, day, hour, minute, second, GMT offset."""
    return bytes([when.year - 1900, when.month, when.day, when.hour, when.minute, when.second, 0])


# ------------------------------------------------------------------ structure


@dataclass(frozen=True)
class _Entry:
    """One file as both trees see it."""

    iso_id: bytes  # primary tree identifier, `NAME.EXT;1`
    joliet_id: bytes  # Joliet identifier, UCS-2 big-endian
    data: bytes
    sector: int  # where its data starts


def _dir_record(identifier: bytes, sector: int, size: int, when: bytes, *, is_dir: bool) -> bytes:
    """ECMA-119 9.1: one directory record (padded to an even length)."""
    length = 33 + len(identifier) + (1 - len(identifier) % 2)
    record = (
        bytes([length, 0])  # record length; no extended attribute record
        + _both32(sector)
        + _both32(size)
        + when
        + bytes([0x02 if is_dir else 0x00, 0, 0])  # flags; not interleaved
        + _both16(1)  # volume sequence number
        + bytes([len(identifier)])
        + identifier
    )
    return _padded(record, length, b"\x00")


def _directory(records: list[bytes]) -> bytes:
    """Records laid end to end; one that would cross a sector starts the next (6.8.1.1)."""
    out = bytearray()
    for record in records:
        room = SECTOR - len(out) % SECTOR
        if len(record) > room:
            out += bytes(room)
        out += record
    return bytes(out) + bytes(-len(out) % SECTOR)


def _path_table(root_sector: int, *, big_endian: bool) -> bytes:
    """ECMA-119 9.4: the table of directories; ours has the root only."""
    order = ">" if big_endian else "<"
    # identifier length 1, no extended attributes, extent, parent = directory 1 (itself),
    # identifier 0x00, one pad byte (the identifier's length is odd).
    return struct.pack(f"{order}BBIH", 1, 0, root_sector, 1) + b"\x00\x00"


def _volume_descriptor(
    *,
    joliet: bool,
    label: str,
    sectors: int,
    path_table_size: int,
    l_table: int,
    m_table: int,
    root_record: bytes,
    when: datetime.datetime,
) -> bytes:
    """ECMA-119 8.4 (primary) / 8.5 (supplementary, here Joliet) volume descriptor."""
    if joliet:
        # Text fields are UCS-2; "unset" is UCS-2 spaces. The escape sequence
        # `%/E` in the otherwise unused bytes 88-119 says "Joliet level 3".
        def text(value: str, size: int) -> bytes:
            return _padded(_ucs2(value), size, b"\x00 ")

        escapes = _padded(b"%/E", 32, b"\x00")
    else:

        def text(value: str, size: int) -> bytes:
            return _padded(value.encode("ascii"), size)

        escapes = bytes(32)
    stamp = _volume_date(when)
    descriptor = (
        bytes([2 if joliet else 1])  # descriptor type
        + b"CD001"  # standard identifier
        + b"\x01\x00"  # version; flags (unused)
        + text("LINUX", 32)  # system identifier
        + text(label, 32)  # volume identifier: what blkid calls LABEL
        + bytes(8)
        + _both32(sectors)  # volume space size
        + escapes
        + _both16(1)  # volume set size
        + _both16(1)  # volume sequence number
        + _both16(SECTOR)  # logical block size
        + _both32(path_table_size)
        + struct.pack("<I", l_table)
        + struct.pack("<I", 0)  # no optional L table
        + struct.pack(">I", m_table)
        + struct.pack(">I", 0)  # no optional M table
        + root_record  # 34 bytes
        + text("", 128)  # volume set identifier
        + text("", 128)  # publisher
        + text("", 128)  # data preparer
        + text("VMLAB", 128)  # application
        + text("", 36)
        + b" "  # copyright file (37 bytes: 18 UCS-2 characters + 1)
        + text("", 36)
        + b" "  # abstract file
        + text("", 36)
        + b" "  # bibliographic file
        + stamp  # creation
        + stamp  # modification
        + _UNSET_DATE  # expiration
        + _UNSET_DATE  # effective
        + b"\x01\x00"  # file structure version; reserved
    )
    return _padded(descriptor, SECTOR, b"\x00")


def _terminator() -> bytes:
    return _padded(b"\xffCD001\x01", SECTOR, b"\x00")


# ---------------------------------------------------------------------- names


def _check_name(name: str) -> None:
    problem = ""
    if not name or name in (".", ".."):
        problem = "is empty or a dot name"
    elif len(name) > _JOLIET_MAX_NAME:
        problem = f"is longer than {_JOLIET_MAX_NAME} characters"
    elif any(ord(c) < 0x20 or c in _JOLIET_FORBIDDEN or ord(c) > 0xFFFF for c in name):
        problem = "has a character Joliet cannot hold (control, * / : ; ? \\ or beyond UCS-2)"
    elif name.endswith("."):
        problem = "ends with '.', which Linux drops"
    if problem:
        raise UsageError(f"seed file name {name!r} {problem}: use a plain name like 'user-data'")


def _iso_ids(names: list[str]) -> dict[str, bytes]:
    """Primary-tree identifiers (8.3 d-characters, unique) for the Joliet names."""
    ids: dict[str, bytes] = {}
    taken: set[str] = set()
    for name in names:
        stem, dot, ext = name.rpartition(".")
        if not dot or not stem:
            stem, ext = name, ""
        stem = "".join(c if c in _D_CHARS else "_" for c in stem.upper())[:8]
        ext = "".join(c if c in _D_CHARS else "_" for c in ext.upper())[:3]
        candidate, counter = stem, 0
        while f"{candidate}.{ext}" in taken:
            counter += 1
            suffix = str(counter)
            candidate = stem[: 8 - len(suffix)] + suffix
        taken.add(f"{candidate}.{ext}")
        ids[name] = f"{candidate}.{ext};1".encode("ascii")
    return ids


def _iso_order(identifier: bytes) -> tuple[bytes, bytes]:
    """ECMA-119 9.3: sort by name, then extension, each padded with spaces."""
    stem, _, rest = identifier.partition(b".")
    ext = rest.partition(b";")[0]
    return stem.ljust(8), ext.ljust(3)


def _check_label(label: str) -> None:
    if not label or len(label) > _JOLIET_MAX_LABEL or not set(label.upper()) <= _D_CHARS:
        raise UsageError(
            f"seed ISO label {label!r} is not 1-{_JOLIET_MAX_LABEL} letters, digits or "
            "'_' (cloud-init looks for 'cidata')"
        )


# ---------------------------------------------------------------------- image


def seed_iso_bytes(
    files: Mapping[str, bytes], *, label: str = "cidata", when: datetime.datetime = FIXED_TIME
) -> bytes:
    """The ISO 9660 + Joliet image holding `files` (name -> content) in its root.

    The primary volume identifier is the label in capitals (ISO 9660 allows no
    lower case); the Joliet one is the label as given, which blkid reports.
    """
    _check_label(label)
    for name in files:
        _check_name(name)
    if when.tzinfo is None:
        raise ValueError("seed_iso_bytes needs an aware datetime (UTC)")
    when = when.astimezone(datetime.UTC)
    names = sorted(files)
    iso_ids = _iso_ids(names)
    stamp = _record_date(when)

    def records(joliet: bool, own: int, entries: list[_Entry], dir_size: int) -> list[bytes]:
        # "." and ".." (identifiers 0x00 and 0x01) both name the root itself.
        out = [
            _dir_record(b"\x00", own, dir_size, stamp, is_dir=True),
            _dir_record(b"\x01", own, dir_size, stamp, is_dir=True),
        ]
        if joliet:
            ordered = sorted(entries, key=lambda e: e.joliet_id)
        else:
            ordered = sorted(entries, key=lambda e: _iso_order(e.iso_id))
        for entry in ordered:
            identifier = entry.joliet_id if joliet else entry.iso_id
            out.append(_dir_record(identifier, entry.sector, len(entry.data), stamp, is_dir=False))
        return out

    # Directory sizes do not depend on where files go: measure with sector 0.
    drafts = [_Entry(iso_ids[n], _ucs2(n), files[n], 0) for n in names]
    iso_dir_size = len(_directory(records(False, 0, drafts, 0)))
    joliet_dir_size = len(_directory(records(True, 0, drafts, 0)))
    iso_root = _ROOT_DIRS
    joliet_root = iso_root + iso_dir_size // SECTOR
    next_sector = joliet_root + joliet_dir_size // SECTOR

    entries: list[_Entry] = []
    for name in names:
        data = files[name]
        if len(data) >= 1 << 32:
            raise UsageError(f"seed file {name!r} is 4 GiB or more: ISO 9660 cannot hold it")
        # An empty file has no data; it points at sector 0 with length 0.
        entries.append(_Entry(iso_ids[name], _ucs2(name), data, next_sector if data else 0))
        next_sector += -(-len(data) // SECTOR)
    total = next_sector

    iso_dir = _directory(records(False, iso_root, entries, iso_dir_size))
    joliet_dir = _directory(records(True, joliet_root, entries, joliet_dir_size))
    path_table_size = len(_path_table(0, big_endian=False))

    def descriptor(joliet: bool) -> bytes:
        root = joliet_root if joliet else iso_root
        size = joliet_dir_size if joliet else iso_dir_size
        return _volume_descriptor(
            joliet=joliet,
            label=label if joliet else label.upper(),
            sectors=total,
            path_table_size=path_table_size,
            l_table=_PATH_TABLES + (2 if joliet else 0),
            m_table=_PATH_TABLES + (3 if joliet else 1),
            root_record=_dir_record(b"\x00", root, size, stamp, is_dir=True),
            when=when,
        )

    image = bytearray(SECTOR * _FIRST_DESCRIPTOR)
    image += descriptor(joliet=False)
    image += descriptor(joliet=True)
    image += _terminator()
    for root in (iso_root, joliet_root):
        image += _padded(_path_table(root, big_endian=False), SECTOR, b"\x00")
        image += _padded(_path_table(root, big_endian=True), SECTOR, b"\x00")
    assert len(image) == SECTOR * _ROOT_DIRS
    image += iso_dir + joliet_dir
    for entry in entries:
        if entry.data:
            assert len(image) == entry.sector * SECTOR
            image += entry.data + bytes(-len(entry.data) % SECTOR)
    assert len(image) == total * SECTOR
    return bytes(image)


def write_seed_iso(
    path: Path,
    files: Mapping[str, bytes],
    *,
    label: str = "cidata",
    when: datetime.datetime = FIXED_TIME,
) -> None:
    """Write the seed image of `files` to `path` atomically (temporary file + rename)."""
    write_atomic(path, seed_iso_bytes(files, label=label, when=when))
