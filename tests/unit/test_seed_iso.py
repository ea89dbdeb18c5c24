"""The cloud-init seed ISO writer, read back by real tools: blkid (as cloud-init
finds the seed), isoinfo from genisoimage (both directory trees, every byte)
and a loop mount by the host kernel when it has iso9660 (the real-kernel mount
inside a guest is tests/vm/test_seed_iso_guest.py)."""

from __future__ import annotations

import datetime
import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from vmlab.errors import UsageError
from vmlab.machine.seed_iso import SECTOR, seed_iso_bytes, write_seed_iso


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is needed (apt-get install genisoimage util-linux; make setup)"
    return path


def _run(*argv: str) -> subprocess.CompletedProcess[bytes]:
    done = subprocess.run(argv, capture_output=True, check=False, timeout=30)
    assert done.returncode == 0, f"{argv}: exit {done.returncode}: {done.stderr!r}"
    return done


def _sample() -> dict[str, bytes]:
    """A seed's files plus the awkward cases: binary, > 1 sector, exactly 1 sector, empty."""
    return {
        "user-data": b"#cloud-config\nusers: []\n",
        "meta-data": b"instance-id: i-1\nlocal-hostname: db\n",
        "network-config": bytes(range(256)) * 13 + b"tail",  # 3332 bytes: two sectors
        "vendor-data": b"",
        "exact": b"x" * SECTOR,
    }


def _isoinfo_listing(iso: Path, *, joliet: bool) -> dict[str, tuple[int, int]]:
    """name -> (size, extent) from `isoinfo [-J] -l`, the dot entries left out."""
    argv = [_tool("isoinfo"), *(["-J"] if joliet else []), "-l", "-i", str(iso)]
    out = _run(*argv).stdout.decode()
    found: dict[str, tuple[int, int]] = {}
    for line in out.splitlines():
        match = re.match(
            r"^-[-rwx]{9}.*?\s(\d+) \w{3}\s+\d+ \d{4} \[\s*(\d+) 00\]\s+(.+?)\s*$", line
        )
        if match:
            found[match.group(3)] = (int(match.group(1)), int(match.group(2)))
    return found


def _extract(iso: Path, name: str, *, joliet: bool = True) -> bytes:
    argv = [_tool("isoinfo"), *(["-J"] if joliet else []), "-x", f"/{name}", "-i", str(iso)]
    return _run(*argv).stdout


@pytest.fixture
def iso(tmp_path: Path) -> Path:
    path = tmp_path / "seed.iso"
    write_seed_iso(path, _sample())
    return path


def test_blkid_sees_an_iso9660_labelled_cidata(iso: Path) -> None:
    out = _run(_tool("blkid"), "-p", "-o", "export", str(iso)).stdout.decode()
    fields = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    assert fields["TYPE"] == "iso9660"
    assert fields["LABEL"] == "cidata"
    # cloud-init's own query: find devices by label.
    found = _run(_tool("blkid"), "-t", "LABEL=cidata", "-o", "device", str(iso))
    assert found.stdout.decode().strip() == str(iso)


def test_isoinfo_describes_the_volume(iso: Path) -> None:
    out = _run(_tool("isoinfo"), "-d", "-i", str(iso)).stdout.decode()
    assert "CD-ROM is in ISO 9660 format" in out
    assert re.search(r"^Volume id: CIDATA$", out, re.M), out
    assert re.search(r"^Logical block size is: 2048$", out, re.M), out
    assert "Joliet with UCS level 3 found" in out
    size = int(re.search(r"^Volume size is: (\d+)$", out, re.M).group(1))  # type: ignore[union-attr]
    assert size * SECTOR == iso.stat().st_size


def test_joliet_tree_has_the_exact_names_and_bytes(iso: Path) -> None:
    files = _sample()
    listing = _isoinfo_listing(iso, joliet=True)
    assert sorted(listing) == sorted(files)
    for name, data in files.items():
        assert listing[name][0] == len(data), name
        assert _extract(iso, name) == data, name


def test_primary_tree_has_unique_8_3_names_over_the_same_data(iso: Path) -> None:
    files = _sample()
    listing = _isoinfo_listing(iso, joliet=False)
    assert sorted(listing) == sorted(
        ["USER_DAT.;1", "META_DAT.;1", "NETWORK_.;1", "VENDOR_D.;1", "EXACT.;1"]
    )
    assert _extract(iso, "USER_DAT.;1", joliet=False) == files["user-data"]
    assert _extract(iso, "NETWORK_.;1", joliet=False) == files["network-config"]
    joliet = _isoinfo_listing(iso, joliet=True)
    assert listing["USER_DAT.;1"] == joliet["user-data"]  # one copy of the data


def test_names_that_collide_in_8_3_stay_apart(tmp_path: Path) -> None:
    files = {"user-data": b"one", "user-data2": b"two", "USER_DATA": b"three"}
    path = tmp_path / "seed.iso"
    write_seed_iso(path, files)
    primary = _isoinfo_listing(path, joliet=False)
    assert len(primary) == 3
    assert all(re.fullmatch(r"[A-Z0-9_]{1,8}\.;1", name) for name in primary), primary
    for name, data in files.items():
        assert _extract(path, name) == data


def test_a_directory_longer_than_one_sector(tmp_path: Path) -> None:
    """Records never straddle a sector: 40 long Joliet names need three sectors."""
    files = {f"file-{i:02d}-" + "n" * 50: f"content {i}\n".encode() for i in range(40)}
    path = tmp_path / "many.iso"
    write_seed_iso(path, files)
    listing = _isoinfo_listing(path, joliet=True)
    assert sorted(listing) == sorted(files)
    for name in ("file-00-" + "n" * 50, "file-39-" + "n" * 50, "file-17-" + "n" * 50):
        assert _extract(path, name) == files[name]
    assert len(_isoinfo_listing(path, joliet=False)) == 40


def test_output_is_deterministic_and_depends_on_the_input() -> None:
    first = seed_iso_bytes(_sample())
    assert seed_iso_bytes(dict(reversed(list(_sample().items())))) == first
    assert seed_iso_bytes({**_sample(), "meta-data": b"instance-id: i-2\n"}) != first
    later = datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.UTC)
    assert seed_iso_bytes(_sample(), when=later) != first
    assert b"2024050607080900" in seed_iso_bytes(_sample(), when=later)


def test_written_atomically_over_an_old_seed(tmp_path: Path) -> None:
    path = tmp_path / "seed.iso"
    path.write_bytes(b"old seed")
    write_seed_iso(path, {"meta-data": b"instance-id: new\n"})
    assert _extract(path, "meta-data") == b"instance-id: new\n"
    assert os.listdir(tmp_path) == ["seed.iso"]  # no temporary file left behind
    with pytest.raises(UsageError):
        write_seed_iso(path, {"bad/name": b""})
    assert _extract(path, "meta-data") == b"instance-id: new\n"  # untouched


@pytest.mark.parametrize(
    "name", ["", ".", "a/b", "semi;1", "star*", "x" * 65, "trailing.", "ctl\x01", "\U0001f600"]
)
def test_names_joliet_cannot_hold_are_refused(name: str) -> None:
    with pytest.raises(UsageError, match="seed file name"):
        seed_iso_bytes({name: b""})


@pytest.mark.parametrize("label", ["", "has space", "x" * 17, "dash-ed"])
def test_bad_labels_are_refused(label: str) -> None:
    with pytest.raises(UsageError, match="label"):
        seed_iso_bytes({"meta-data": b""}, label=label)


def test_another_label(tmp_path: Path) -> None:
    path = tmp_path / "seed.iso"
    write_seed_iso(path, {"meta-data": b""}, label="CIDATA")
    out = _run(_tool("blkid"), "-p", "-o", "export", str(path)).stdout.decode()
    assert "LABEL=CIDATA" in out.splitlines()


def test_loop_mount_on_the_host(iso: Path, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("a loop mount needs root (make test runs as root)")
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    done = subprocess.run(
        ["mount", "-o", "loop,ro", "-t", "iso9660", str(iso), str(mountpoint)],
        capture_output=True,
        check=False,
        timeout=30,
    )
    if done.returncode != 0:
        if b"unknown filesystem type" in done.stderr or b"failed to setup loop" in done.stderr:
            pytest.skip(
                f"the host kernel ({os.uname().release}) cannot loop-mount iso9660 here: "
                f"{done.stderr.decode().strip().splitlines()[0]} (tests/vm/test_seed_iso_guest.py "
                "mounts it in a guest kernel instead)"
            )
        pytest.fail(f"mount failed: {done.stderr!r}")
    try:
        files = _sample()
        assert sorted(os.listdir(mountpoint)) == sorted(files)
        for name, data in files.items():
            got = (mountpoint / name).read_bytes()
            assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest(), name
    finally:
        subprocess.run(["umount", str(mountpoint)], check=False, timeout=30)
