"""The lab's SSH key pair: made once, private (0600 in a 0700 directory),
reused, one key when many threads or processes make it at once, and usable by
OpenSSH's own tools (ssh-keygen reads it, and refuses keys others can read)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncssh
import pytest

from vmlab.errors import HostError, UsageError
from vmlab.machine.lab_keys import LabKey, lab_key


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _ssh_keygen() -> str:
    path = shutil.which("ssh-keygen")
    assert path, "ssh-keygen is needed (apt-get install openssh-client)"
    return path


def test_first_use_makes_a_private_key_only_this_user_can_read(tmp_path: Path) -> None:
    key = lab_key(tmp_path)
    key_dir = tmp_path / ".vmlab" / "ssh"
    assert key.private_path == key_dir / "id_ed25519"
    assert _mode(key_dir) == 0o700
    assert _mode(key.private_path) == 0o600
    assert key.private_path.read_bytes().startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----\n")
    assert (key_dir / "id_ed25519.pub").read_text() == key.public_openssh + "\n"
    assert (key_dir / ".gitignore").read_text().splitlines()[-1] == "*"
    kind, blob, comment = key.public_openssh.split(" ")
    assert kind == "ssh-ed25519" and blob.startswith("AAAAC3NzaC1lZDI1NTE5")
    assert comment == f"vmlab@{tmp_path.name}"
    assert sorted(os.listdir(key_dir)) == [".gitignore", "id_ed25519", "id_ed25519.pub"]


def test_openssh_reads_the_private_key_and_derives_the_same_public_key(tmp_path: Path) -> None:
    key = lab_key(tmp_path)
    derived = subprocess.run(
        [_ssh_keygen(), "-y", "-f", str(key.private_path)],
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout.decode()
    assert derived.split()[:2] == key.public_openssh.split()[:2]
    listed = subprocess.run(
        [_ssh_keygen(), "-l", "-f", str(key.private_path.with_suffix(".pub"))],
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout.decode()
    assert listed.startswith("256 SHA256:") and listed.rstrip().endswith("(ED25519)")
    parsed = asyncssh.import_public_key(key.public_openssh)
    assert parsed.algorithm == b"ssh-ed25519"


def test_the_second_call_reuses_the_key(tmp_path: Path) -> None:
    first = lab_key(tmp_path)
    before = first.private_path.read_bytes()
    second = lab_key(tmp_path)
    assert second == first
    assert first.private_path.read_bytes() == before
    assert lab_key(tmp_path / ".").public_openssh == first.public_openssh


def test_another_lab_gets_another_key(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert lab_key(tmp_path / "a").public_openssh != lab_key(tmp_path / "b").public_openssh


def test_loose_permissions_are_tightened_and_a_lost_pub_file_comes_back(tmp_path: Path) -> None:
    key = lab_key(tmp_path)
    os.chmod(key.private_path, 0o644)
    os.chmod(key.private_path.parent, 0o755)
    key.private_path.with_suffix(".pub").unlink()
    again = lab_key(tmp_path)
    assert again == key
    assert _mode(key.private_path) == 0o600
    assert _mode(key.private_path.parent) == 0o700
    assert key.private_path.with_suffix(".pub").read_text() == key.public_openssh + "\n"


def test_a_umask_does_not_loosen_anything(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        key = lab_key(tmp_path)
    finally:
        os.umask(old)
    assert _mode(key.private_path) == 0o600
    assert _mode(key.private_path.parent) == 0o700


def test_threads_creating_at_once_get_one_key(tmp_path: Path) -> None:
    barrier = threading.Barrier(12)

    def make() -> LabKey:
        barrier.wait()
        return lab_key(tmp_path)

    with ThreadPoolExecutor(12) as pool:
        keys = list(pool.map(lambda _: make(), range(12)))
    assert len({k.public_openssh for k in keys}) == 1
    assert lab_key(tmp_path) == keys[0]
    assert sorted(os.listdir(tmp_path / ".vmlab" / "ssh")) == [
        ".gitignore",
        "id_ed25519",
        "id_ed25519.pub",
    ]


def test_a_lost_race_keeps_the_winners_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every thread makes its own key and only then links it into place (a
    barrier in link() forces it): exactly one link wins, all return its key."""
    threads = 4
    barrier = threading.Barrier(threads)
    real_link = os.link
    outcomes: list[str] = []

    def link_after_everyone(src: str, dst: str) -> None:
        barrier.wait(timeout=30)
        try:
            real_link(src, dst)
            outcomes.append("won")
        except FileExistsError:
            outcomes.append("lost")
            raise

    monkeypatch.setattr(os, "link", link_after_everyone)
    with ThreadPoolExecutor(threads) as pool:
        keys = list(pool.map(lambda _: lab_key(tmp_path), range(threads)))
    assert sorted(outcomes) == ["lost"] * (threads - 1) + ["won"]
    assert len({k.public_openssh for k in keys}) == 1
    assert sorted(os.listdir(tmp_path / ".vmlab" / "ssh")) == [
        ".gitignore",
        "id_ed25519",
        "id_ed25519.pub",
    ]


_CHILD = """
import sys, time
from pathlib import Path
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.001)
from vmlab.machine.lab_keys import lab_key
print(lab_key(Path(sys.argv[1])).public_openssh)
"""


def test_processes_creating_at_once_get_one_key(tmp_path: Path) -> None:
    lab = tmp_path / "lab"
    lab.mkdir()
    go = tmp_path / "go"
    # asyncssh imported first, so the processes race on the key itself.
    code = "import asyncssh\n" + _CHILD
    children = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(lab), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(6)
    ]
    time.sleep(1.0)  # let them all reach the starting line
    go.touch()
    outputs = []
    for child in children:
        out, err = child.communicate(timeout=60)
        assert child.returncode == 0, err.decode()
        outputs.append(out.decode().strip())
    assert len(set(outputs)) == 1
    assert outputs[0] == lab_key(lab).public_openssh
    assert sorted(os.listdir(lab / ".vmlab" / "ssh")) == [
        ".gitignore",
        "id_ed25519",
        "id_ed25519.pub",
    ]


def test_a_damaged_key_file_is_named_and_never_shown(tmp_path: Path) -> None:
    key = lab_key(tmp_path)
    secret = key.private_path.read_bytes()
    key.private_path.write_bytes(secret[: len(secret) // 2])
    with pytest.raises(UsageError) as info:
        lab_key(tmp_path)
    message = info.value.message
    assert str(key.private_path) in message and "remove it" in message
    assert "PRIVATE KEY" not in message and "\n" not in message


def test_a_missing_lab_directory(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        lab_key(tmp_path / "nope")


def test_an_unwritable_lab_directory(tmp_path: Path) -> None:
    (tmp_path / ".vmlab").write_text("a file where the directory should be")
    with pytest.raises(HostError, match="cannot keep the lab's SSH key"):
        lab_key(tmp_path)
