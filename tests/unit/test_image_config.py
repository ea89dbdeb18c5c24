"""`[image.NAME]` in the lab file: resolved into ImageSpecs, one FILE:LINE line per mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmlab.config import load_lab
from vmlab.machine.spec import DEFAULT_IMAGE_MIRROR, ImageSpec

from .test_config import error_of, write_lab


def test_images_resolve_into_specs(tmp_path: Path) -> None:
    lab = load_lab(
        write_lab(
            tmp_path,
            """
            [machine.dev]

            [image.base]

            [image.nfs]
            description = "An NFS server"
            distro = "debian:bookworm"
            packages = ["nfs-kernel-server", "nfs-common"]
            size = "3G"
            files = { "/etc/exports" = "conf/exports", "/opt/tools/" = "tools" }
            script = '''
            systemctl enable nfs-server
            '''
            mirror = "http://ftp.de.debian.org/debian"
            """,
            ("conf/exports", "tools/"),
        )
    )
    assert list(lab.images) == ["base", "nfs"]
    assert lab.images["base"] == ImageSpec(name="base", where=f"{tmp_path / 'vmlab.toml'}:3")
    assert lab.images["base"].size_mib == 2048
    assert lab.images["base"].mirror == DEFAULT_IMAGE_MIRROR
    nfs = lab.images["nfs"]
    assert nfs.packages == ("nfs-kernel-server", "nfs-common")
    assert nfs.size_mib == 3072
    assert nfs.files == (
        ("/etc/exports", tmp_path / "conf" / "exports"),
        ("/opt/tools", tmp_path / "tools"),
    )
    assert nfs.script == "systemctl enable nfs-server\n"
    assert nfs.mirror == "http://ftp.de.debian.org/debian"
    assert nfs.description == "An NFS server"
    assert nfs.where == f"{tmp_path / 'vmlab.toml'}:5"
    assert list(lab.machines) == ["dev"]


def test_a_lab_without_images_has_none(tmp_path: Path) -> None:
    assert dict(load_lab(write_lab(tmp_path, "[machine.dev]\n")).images) == {}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            """
            [image.base]
            distro = "ubuntu:noble"
            """,
            "vmlab.toml:2: image.base.distro: 'ubuntu:noble' is not supported "
            "(supported: debian:bookworm)",
        ),
        (
            """
            [image.base]
            packages = ["vim", "Nfs Common"]
            """,
            "vmlab.toml:2: image.base.packages[1]: 'Nfs Common' is not a Debian package name "
            "(lowercase letters, digits, + - .)",
        ),
        (
            """
            [image.base]
            packages = "vim"
            """,
            """vmlab.toml:2: image.base.packages: expected an array, got string 'vim' """
            """(write ["vim"])""",
        ),
        (
            """
            [image.base]

            size = "2X"
            """,
            "vmlab.toml:3: image.base.size: '2X' is not a size (try 512M or 2G)",
        ),
        (
            """
            [image.base]
            size = "256M"
            """,
            "vmlab.toml:2: image.base.size: 256M is too small for an image (at least 512M)",
        ),
        (
            """
            [image.base]
            files = { "/etc/motd" = "motd.txt" }
            """,
            'vmlab.toml:2: image.base.files."/etc/motd": no such file or directory: '
            "LAB/motd.txt (relative to the lab file's directory)",
        ),
        (
            """
            [image.base]
            files = { "etc/motd" = "present" }
            """,
            'vmlab.toml:2: image.base.files."etc/motd": '
            "'etc/motd' is not an absolute path in the guest (like /etc/motd)",
        ),
        (
            """
            [image.base]
            files = { "/etc/../motd" = "present" }
            """,
            'vmlab.toml:2: image.base.files."/etc/../motd": '
            "'/etc/../motd' is not an absolute path in the guest (like /etc/motd)",
        ),
        (
            """
            [image.base]
            files = { "/etc/motd" = 3 }
            """,
            'vmlab.toml:2: image.base.files."/etc/motd": expected a string, got integer 3 '
            '(quote it: "3")',
        ),
        (
            """
            [image.base]
            mirror = "deb.debian.org"
            """,
            "vmlab.toml:2: image.base.mirror: 'deb.debian.org' is not a mirror URL "
            "(like http://deb.debian.org/debian)",
        ),
        (
            """
            [image.base]
            pakages = ["vim"]
            """,
            "vmlab.toml:2: image.base.pakages: unknown key (did you mean 'packages'?)",
        ),
        (
            """
            [image."my image"]
            """,
            "vmlab.toml:1: image.\"my image\": 'my image' is not a valid image name "
            "(use letters, digits, _ - .)",
        ),
        (
            """
            [image]
            base = 3
            """,
            "vmlab.toml:2: image.base: expected a table, got integer 3",
        ),
    ],
)
def test_image_mistakes(tmp_path: Path, text: str, expected: str) -> None:
    message = error_of(tmp_path, text, ("present",))
    assert message.replace(str(tmp_path), "LAB") == expected
