"""Disk-image machine keys and server machines in the lab file."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmlab.config import load_lab
from vmlab.machine.spec import ImageSpec, KernelSource
from vmlab.plan import make_plan

from .test_config import error_of, write_lab


def test_a_machine_on_a_built_image_resolves_to_a_disk_spec(tmp_path: Path) -> None:
    lab = load_lab(
        write_lab(
            tmp_path,
            """
            [image.deb]
            packages = ["nfs-common"]

            [machine.client]
            image = "deb"
            kernel = "host"
            user = "alice"
            user_data = { packages = ["htop"] }
            internet = true
            ssh_port = 40022
            """,
        )
    )
    disk = lab.machines["client"].spec.disk
    assert disk is not None
    assert isinstance(disk.image, ImageSpec) and disk.image.packages == ("nfs-common",)
    assert disk.kernel is KernelSource.HOST
    assert (disk.user, disk.internet, disk.ssh_port) == ("alice", True, 40022)
    assert dict(disk.user_data or {}) == {"packages": ["htop"]}  # type: ignore[arg-type]
    assert disk.lab_dir == tmp_path
    assert lab.machines["client"].spec.kernel is None


def test_a_brought_image_and_a_user_data_file_are_paths_of_the_lab(tmp_path: Path) -> None:
    lab = load_lab(
        write_lab(
            tmp_path,
            """
            [machine.old]
            image = "images/old.qcow2"
            user_data = "cloud.yaml"
            root = "/dev/vda1"
            """,
            files=("images/old.qcow2", "cloud.yaml"),
        )
    )
    disk = lab.machines["old"].spec.disk
    assert disk is not None
    assert disk.image == tmp_path / "images" / "old.qcow2"
    assert disk.user_data == tmp_path / "cloud.yaml"
    assert (disk.kernel, disk.root) == (KernelSource.IMAGE, "/dev/vda1")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[machine.a]\nuser = "bob"\n',
            "vmlab.toml:2: machine.a.user: only disk-image machines take this (add `image = ...`)",
        ),
        (
            '[image.deb]\n[machine.a]\nimage = "deb"\nkernel = "/boot/vmlinuz"\n',
            "vmlab.toml:4: machine.a.kernel: a disk-image machine boots kernel 'image' or 'host'",
        ),
        (
            '[image.deb]\n[machine.a]\nimage = "deb"\nshares = ["/tmp"]\n',
            "vmlab.toml:4: machine.a.shares: disk-image machines have no 9p shares (copy files in)",
        ),
        (
            '[image.deb]\n[machine.db_1]\nimage = "deb"\n',
            "vmlab.toml:2: machine.db_1: a disk-image machine's name is its host name: "
            "use a-z, 0-9 and -",
        ),
        (
            '[machine.a]\nimage = "gone.qcow2"\n',
            "vmlab.toml:2: machine.a.image: no such file:",
        ),
        (
            '[image.deb]\n[machine.a]\nimage = "deb"\nssh_port = 22\n',
            "vmlab.toml:4: machine.a.ssh_port:",
        ),
    ],
)
def test_bad_disk_keys(tmp_path: Path, text: str, expected: str) -> None:
    assert error_of(tmp_path, text).startswith(expected)


def test_a_capability_of_a_server_machine_is_there_from_the_start(tmp_path: Path) -> None:
    lab = load_lab(
        write_lab(
            tmp_path,
            """
            [image.deb]
            [machine.server]
            image = "deb"
            provides = ["nfs.server"]
            [machine.client]
            image = "deb"
            [suite.posix]
            machine = "client"
            requires = ["nfs.server"]
            [[suite.posix.test]]
            name = "v3"
            run = "true"
            """,
        )
    )
    assert lab.machines["server"].provides == ("nfs.server",)
    plan = make_plan(lab, level=1, jobs=1, allow_dangerous=False, past_durations={})
    assert [t.test_id for job in plan.jobs for t in job.tests] == ["posix/v3"]
    assert all(not job.depends_on for job in plan.jobs)
