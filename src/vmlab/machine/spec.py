"""What a machine is, resolved: frozen specs the machine layer boots from.

Nothing past the config layer looks strings up; it gets these.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any


class Accel(enum.StrEnum):
    """How QEMU runs the guest's CPU."""

    AUTO = "auto"  # KVM when a bounded probe proves it works, else TCG
    KVM = "kvm"
    TCG = "tcg"


@dataclass(frozen=True)
class Share:
    """A host directory mounted in the guest over 9p."""

    host: Path
    guest: Path
    writable: bool = False


@dataclass(frozen=True)
class NicSpec:
    """A machine's NIC on a private network (`[network.NAME]`, see vmlab.net).

    `hosts` names every machine on the network (this one too) with its address,
    for the guest's /etc/hosts. `switch` and `port` are the network's switch
    socket and this NIC's own socket (QEMU binds it); they are set when the
    network runs (`vmlab.net.networks`), and a machine cannot boot without them.
    """

    network: str
    mac: str  # "02:xx:xx:xx:xx:xx", locally administered
    address: IPv4Address
    prefix: int
    hosts: tuple[tuple[str, IPv4Address], ...] = ()
    switch: Path | None = None
    port: Path | None = None


@dataclass(frozen=True)
class MachineSpec:
    """A host-root machine: a kernel booted over the host's root filesystem.

    `kernel=None` means the newest /boot/vmlinuz-* whose modules are installed;
    `modules=None` means /lib/modules/RELEASE of that kernel.
    """

    kernel: Path | None = None
    modules: Path | None = None
    memory_mib: int = 512
    cpus: int = 1
    shares: tuple[Share, ...] = ()
    append: tuple[str, ...] = ()
    accel: Accel = Accel.AUTO
    boot_timeout: float | None = None  # None: a default that suits the accel
    name: str = "vm"
    env: tuple[tuple[str, str], ...] = field(default=())
    nics: tuple[NicSpec, ...] = ()  # private networks (vmlab.net)
    disk: DiskSpec | None = None  # a disk-image machine; None: host root


class KernelSource(enum.StrEnum):
    """Which kernel a disk-image machine boots."""

    IMAGE = (
        "image"  # the image's own: extracted at build (built images), firmware+bootloader (brought)
    )
    HOST = "host"  # the host-root path's kernel (MachineSpec.kernel / the newest installed)


@dataclass(frozen=True)
class DiskSpec:
    """What makes a machine a disk-image machine (MachineSpec.disk).

    `image` is a built image's spec (`[image.NAME]`) or a disk image the user
    brings (qcow2 or raw). The machine boots from a throwaway qcow2 overlay on
    it, is provisioned by cloud-init from a NoCloud seed, and is reached over
    SSH on a loopback-only forwarded port.
    """

    image: ImageSpec | Path
    lab_dir: Path  # where .vmlab/ (keys, state) lives
    kernel: KernelSource = KernelSource.IMAGE
    root: str = "/dev/vda"  # the root filesystem, when vmlab boots the kernel directly
    user: str = "vmlab"
    user_data: Mapping[str, Any] | Path | None = None
    internet: bool = False  # user networking without `restrict=on`: a route out
    ssh_port: int | None = None  # None: a free port picked at start


# The distributions `[image.NAME]` can build, and the mmdebstrap suite of each.
IMAGE_DISTROS: dict[str, str] = {"debian:bookworm": "bookworm"}
DEFAULT_IMAGE_DISTRO = "debian:bookworm"
DEFAULT_IMAGE_MIRROR = "http://deb.debian.org/debian"
DEFAULT_IMAGE_SIZE_MIB = 2048
MIN_IMAGE_SIZE_MIB = 512  # the base set alone is ~700M of files
# Debian policy's package names (no versions, no releases: `pkg=1.2` is not taken).
IMAGE_PACKAGE_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+")


@dataclass(frozen=True)
class ImageSpec:
    """A disk image that `vmlab image build` makes with mmdebstrap (`[image.NAME]`).

    `packages` come on top of the base set (vmlab.machine.image_build.BASE_PACKAGES);
    `files` are (absolute guest path, absolute host path) pairs copied in, then
    `script` runs in the root filesystem (chroot, `sh -e`). The build is cached
    by content (vmlab.machine.image_build.image_key), not by name.
    """

    name: str
    distro: str = DEFAULT_IMAGE_DISTRO
    packages: tuple[str, ...] = ()
    size_mib: int = DEFAULT_IMAGE_SIZE_MIB
    files: tuple[tuple[str, Path], ...] = ()
    script: str = ""
    mirror: str = DEFAULT_IMAGE_MIRROR
    description: str = ""
    where: str = ""  # FILE:LINE of its table ("" when made in code)
