"""`QemuMachine.copy_to/copy_from` on real host-root guests: files and whole trees
both ways through the virtio-serial command channel (a tar stream), with modes,
times and binary content intact, an 8 MiB file, and one-line errors that leave
nothing half-written, even when the guest's disk fills up mid-copy.

The guest sees the host's root read-only, so its copies go to its own /tmp and
mounts; copies back land in the test's tmp_path. The same API over SFTP on a
disk-image machine is tests/image/test_copy.py.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from copy_trees import (
    check_bad_paths,
    check_tree_in_guest,
    make_tree,
    snapshot,
    staging_leftovers,
    without_specials,
)
from vmlab.guest.channel import Command
from vmlab.machine.qemu import QemuMachine
from vmlab.machine.spec import Accel, MachineSpec

pytestmark = [pytest.mark.vm]

PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
BIG = 8 << 20


def sh(script: str) -> Command:
    return Command(argv=("sh", "-c", script), env={"PATH": PATH})


async def out(vm: QemuMachine, script: str) -> str:
    result = await vm.run(sh(script))
    assert result.status == 0, result.stderr
    return result.stdout.decode()


def spec(name: str) -> MachineSpec:
    return MachineSpec(accel=Accel.TCG, name=name, memory_mib=512)


@pytest.mark.timeout(300)
async def test_files_and_trees_go_both_ways_whole(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    expected = without_specials(snapshot(tree))
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(BIG))
    (tmp_path / "down").mkdir()
    async with QemuMachine(spec("copy")) as vm:
        # a tree into a directory, and what the guest itself sees of it
        copied = await vm.copy_to(tree, "/tmp/")
        assert (copied.path, copied.files) == ("/tmp/tree", 8)
        await check_tree_in_guest(vm, "/tmp/tree")
        assert await out(vm, "sha256sum < /tmp/tree/bin.dat") == (
            hashlib.sha256((tree / "bin.dat").read_bytes()).hexdigest() + "  -\n"
        )

        # back to the host under a new name: the same tree, modes and times included
        back = await vm.copy_from("/tmp/tree", tmp_path / "back")
        assert back.path == str(tmp_path / "back") and back.files == 8
        assert snapshot(tmp_path / "back") == expected

        # a merge: the guest's own files stay, copied ones are replaced
        await out(vm, "echo mine > /tmp/tree/sub/mine; echo old > /tmp/tree/run.sh")
        await vm.copy_to(tree, "/tmp")
        assert (
            await out(vm, "cat /tmp/tree/sub/mine /tmp/tree/run.sh")
            == "mine\n#!/bin/sh\necho ran\n"
        )

        # a relative guest path starts at /; a file into a directory takes its name
        await out(vm, "mkdir -p /srv/in")
        assert (await vm.copy_to(tree / "empty", "srv/in")).path == "/srv/in/empty"

        # 8 MiB both ways
        started = time.monotonic()
        assert (await vm.copy_to(big, "/tmp/big.bin")).bytes == BIG
        up = time.monotonic() - started
        assert await out(vm, "sha256sum < /tmp/big.bin") == (
            hashlib.sha256(big.read_bytes()).hexdigest() + "  -\n"
        )
        started = time.monotonic()
        again = await vm.copy_from("/tmp/big.bin", f"{tmp_path}/down/")
        down = time.monotonic() - started
        assert again.path == str(tmp_path / "down" / "big.bin")
        assert (tmp_path / "down" / "big.bin").read_bytes() == big.read_bytes()
        print(f"8 MiB over the serial channel (tar): to the guest {up:.2f}s, back {down:.2f}s")
        assert await out(vm, "ls -A /tmp /srv/in | grep -c vmlab-cp || true") == "0\n"
    assert staging_leftovers(tmp_path) == []


@pytest.mark.timeout(300)
async def test_bad_paths_are_one_line_errors_and_leave_nothing_half_written(
    tmp_path: Path,
) -> None:
    async with QemuMachine(spec("copyerr")) as vm:
        await check_bad_paths(vm, tmp_path, "/tmp")
        assert vm.state.value == "running"  # errors did not break the machine
    assert staging_leftovers(tmp_path) == []
