"""What a machine is, resolved: frozen specs the machine layer boots from.

Nothing past the config layer looks strings up; it gets these.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path


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
