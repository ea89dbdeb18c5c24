"""A seed ISO from vmlab's own writer, mounted by a real Linux kernel: the guest
of `vmlab run` (the host's kernel may lack iso9660, and it is what cloud-init's
kernel will do anyway). blkid on the loop device as cloud-init runs it, the
Joliet tree with its exact names and bytes, and the plain ISO 9660 tree."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from vmlab.machine.seed_iso import SECTOR, write_seed_iso

from .vmtools import RUN, cli

pytestmark = [pytest.mark.vm]

FILES = {
    "user-data": b"#cloud-config\nusers: []\n",
    "meta-data": b"instance-id: i-guest\nlocal-hostname: db\n",
    "network-config": bytes(range(256)) * 20,  # 5120 bytes: three sectors
    "vendor-data": b"",
    "exact": b"y" * SECTOR,
}

SCRIPT = r"""
set -e
modprobe -a loop isofs
dev=$(losetup --find --show --read-only seed.iso)
blkid -p -o export "$dev" | sed 's/^/blkid /'
mkdir -p /run/seed
mount -t iso9660 -o ro "$dev" /run/seed
grep ' /run/seed ' /proc/mounts | sed 's/^/mount /'
cd /run/seed
for f in *; do echo "joliet $f $(sha256sum <"$f" | cut -d' ' -f1)"; done
cd /
umount /run/seed
mount -t iso9660 -o ro,nojoliet "$dev" /run/seed
for f in /run/seed/*; do echo "plain ${f#/run/seed/} $(sha256sum <"$f" | cut -d' ' -f1)"; done
umount /run/seed
losetup -d "$dev"
"""


@pytest.mark.timeout(120)
def test_a_guest_kernel_mounts_the_seed_with_exact_names_and_bytes(tmp_path: Path) -> None:
    write_seed_iso(tmp_path / "seed.iso", FILES)
    result = cli(*RUN, "--", "sh", "-c", SCRIPT, cwd=tmp_path)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    lines = result.stdout.decode().splitlines()
    blkid = dict(
        line.removeprefix("blkid ").split("=", 1) for line in lines if line[:6] == "blkid "
    )
    assert blkid["TYPE"] == "iso9660"
    assert blkid["LABEL"] == "cidata"
    mount = [line for line in lines if line.startswith("mount ")]
    assert len(mount) == 1 and " iso9660 " in mount[0], lines

    def sha(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    joliet = {line.split()[1]: line.split()[2] for line in lines if line.startswith("joliet ")}
    assert joliet == {name: sha(data) for name, data in FILES.items()}
    # Without Joliet, Linux shows the 8.3 names in lower case, version dropped.
    plain = {line.split()[1]: line.split()[2] for line in lines if line.startswith("plain ")}
    assert plain == {
        "user_dat": sha(FILES["user-data"]),
        "meta_dat": sha(FILES["meta-data"]),
        "network_": sha(FILES["network-config"]),
        "vendor_d": sha(b""),
        "exact": sha(FILES["exact"]),
    }
