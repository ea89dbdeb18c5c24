"""`QemuMachine.copy_to/copy_from` on a real disk-image machine: the same API as
on host-root machines (tests/vm/test_copy.py), over SFTP on the machine's SSH
connection (OpenSSH's sftp-server in the guest). One boot for the module.

It checks whole trees both ways (modes, times, symlinks, binary content, a
merge), an 8 MiB file (timed against the tar stream through SSH commands, the
host-root transport, on the same machine: printed, never asserted), and the
one-line errors of bad paths, a full disk and a read-only one, with nothing
half-written left behind.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from copy_trees import (
    check_bad_paths,
    check_tree_in_guest,
    make_tree,
    snapshot,
    staging_leftovers,
    without_specials,
)
from vmlab.guest import tar_copy
from vmlab.guest.channel import Command
from vmlab.guest.ssh import SshChannel
from vmlab.machine.image_build import BuiltImage
from vmlab.machine.image_machine import ImageMachine
from vmlab.machine.spec import DiskSpec

from .images import TEST_IMAGE_SPEC, booted

pytestmark = [pytest.mark.vm, pytest.mark.timeout(900)]

BIG = 8 << 20


@pytest.fixture(scope="module")
def lab_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("copylab")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def vm(built_image: BuiltImage, lab_dir: Path) -> AsyncIterator[ImageMachine]:
    assert built_image.base.exists()
    disk = DiskSpec(image=TEST_IMAGE_SPEC, lab_dir=lab_dir)
    async with booted("copytest", disk, memory_mib=512) as machine:
        yield machine


async def out(vm: ImageMachine, script: str) -> str:
    result = await vm.run(Command(argv=("sh", "-c", script), env={"PATH": "/usr/bin:/bin"}))
    assert result.status == 0, result.stderr
    return result.stdout.decode()


@pytest.mark.asyncio(loop_scope="module")
async def test_trees_go_both_ways_over_sftp(vm: ImageMachine, tmp_path: Path) -> None:
    assert isinstance(vm.channel, SshChannel) and vm.channel.sftp_ok  # SFTP, not tar
    tree = make_tree(tmp_path)
    copied = await vm.copy_to(tree, "/root/")
    assert (copied.path, copied.files) == ("/root/tree", 8)
    await check_tree_in_guest(vm, "/root/tree")

    back = await vm.copy_from("/root/tree", tmp_path / "back")
    assert (back.path, back.files) == (str(tmp_path / "back"), 8)
    assert snapshot(tmp_path / "back") == without_specials(snapshot(tree))

    await out(vm, "echo mine > /root/tree/sub/mine; echo old > /root/tree/run.sh")
    await vm.copy_to(tree, "/root")  # merged into the existing tree
    merged = await out(vm, "cat /root/tree/sub/mine /root/tree/run.sh")
    assert merged == "mine\n#!/bin/sh\necho ran\n"
    assert await out(vm, "find /root -name '.vmlab-cp-*'") == ""
    assert staging_leftovers(tmp_path) == []


@pytest.mark.asyncio(loop_scope="module")
async def test_8_mib_both_ways_over_sftp_and_through_ssh_commands(
    vm: ImageMachine, tmp_path: Path
) -> None:
    data = os.urandom(BIG)
    (tmp_path / "big.bin").write_bytes(data)
    (tmp_path / "sftp").mkdir()
    (tmp_path / "tar").mkdir()
    digest = hashlib.sha256(data).hexdigest() + "  -\n"
    timings = {}
    for way in ("sftp", "tar"):
        started = time.monotonic()
        if way == "sftp":
            up = await vm.copy_to(tmp_path / "big.bin", f"/root/{way}.bin")
        else:
            up = await tar_copy.copy_to(vm.run, tmp_path / "big.bin", f"/root/{way}.bin")
        middle = time.monotonic()
        assert up.bytes == BIG
        assert await out(vm, f"sha256sum < /root/{way}.bin") == digest
        middle_end = time.monotonic()
        if way == "sftp":
            down = await vm.copy_from(f"/root/{way}.bin", tmp_path / way)
        else:
            down = await tar_copy.copy_from(vm.run, f"/root/{way}.bin", f"{tmp_path / way}/")
        timings[way] = (middle - started, time.monotonic() - middle_end)
        assert down.path == str(tmp_path / way / f"{way}.bin")
        assert (tmp_path / way / f"{way}.bin").read_bytes() == data
    for way, (to, back) in timings.items():
        print(f"8 MiB {way} on a disk-image machine: to the guest {to:.2f}s, back {back:.2f}s")


@pytest.mark.asyncio(loop_scope="module")
async def test_bad_paths_are_one_line_errors_and_leave_nothing_half_written(
    vm: ImageMachine, tmp_path: Path
) -> None:
    await check_bad_paths(vm, tmp_path, "/root")
    assert (await vm.copy_to(tmp_path / "big.bin", "/root/")).path == "/root/big.bin"  # still fine
    assert staging_leftovers(tmp_path) == []
