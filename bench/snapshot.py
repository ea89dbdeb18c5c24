"""Snapshot benchmark: a disk-image machine's fresh boot against a restore.

    .venv/bin/python bench/snapshot.py [--boots 2] [--restores 5] [--accel tcg]

One run, side by side, on the same built image (Debian bookworm with systemd,
sshd and cloud-init; built once and cached under ~/.cache/vmlab/images):
- fresh boot to ready: QEMU start, kernel, systemd, cloud-init's ready line,
  SSH answering, and a first command (`true`) run over SSH;
- restore to ready: `loadvm` of the snapshot taken once the machine was ready,
  a new SSH connection, and the same first command;
- restore after a crash: the guest's kernel panics and QEMU exits; a new QEMU
  on the same overlay with -loadvm, SSH, the first command.
Prints medians, min/max and the ratios (target: restore <= 1/3 of a boot).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

from vmlab.errors import GuestCrashed
from vmlab.guest.channel import Command
from vmlab.machine.image_build import build_image
from vmlab.machine.image_machine import DiskBoot, ImageMachine, prepare_disk_boot
from vmlab.machine.spec import Accel, DiskSpec, ImageSpec, MachineSpec

TRUE = Command(argv=("true",))


async def fresh_boot(spec: MachineSpec, boot: DiskBoot) -> float:
    started = time.monotonic()
    async with ImageMachine(spec, disk_boot=boot) as vm:
        await vm.run(TRUE)
        return time.monotonic() - started


async def restores(spec: MachineSpec, boot: DiskBoot, count: int) -> tuple[list[float], float]:
    """`count` live restores, then one restore after a crash."""
    times = []
    async with ImageMachine(spec, disk_boot=boot) as vm:
        await vm.save_snapshot()
        for _ in range(count):
            await vm.run(Command(shell="echo dirty >/root/dirty"))
            started = time.monotonic()
            await vm.restore_snapshot()
            await vm.run(TRUE)
            times.append(time.monotonic() - started)
        with contextlib.suppress(GuestCrashed):
            await vm.run(Command(shell="echo c >/proc/sysrq-trigger"))
        started = time.monotonic()
        await vm.restore_snapshot()
        await vm.run(TRUE)
        after_crash = time.monotonic() - started
        left = await vm.run(Command(shell="test -e /root/dirty"))
        if left.status == 0:
            raise SystemExit("bench: a file written after the snapshot survived a restore")
    return times, after_crash


def row(name: str, values: list[float], base: float) -> str:
    median = statistics.median(values)
    return (
        f"| {name} | {median:.2f} | {min(values):.2f}-{max(values):.2f} | "
        f"{len(values)} | {median / base:.3f} |"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boots", type=int, default=2)
    parser.add_argument("--restores", type=int, default=5)
    parser.add_argument("--accel", choices=[a.value for a in Accel], default="auto")
    args = parser.parse_args()
    print("bench: building (or finding) the image...", flush=True)
    image = ImageSpec(name="bench")
    await build_image(image)
    with tempfile.TemporaryDirectory(prefix="vmlab-bench-") as lab:
        spec = MachineSpec(
            name="bench",
            memory_mib=1024,
            accel=Accel(args.accel),
            disk=DiskSpec(image=image, lab_dir=Path(lab)),
        )
        boot = await prepare_disk_boot(spec)
        boots = []
        for i in range(args.boots):
            boots.append(await fresh_boot(spec, boot))
            print(f"bench: fresh boot {i + 1}: {boots[-1]:.1f} s", flush=True)
        live, after_crash = await restores(spec, boot, args.restores)
    base = statistics.median(boots)
    print(f"\naccel: {boot.accel.value}; image: bench (Debian bookworm, systemd, cloud-init)\n")
    print("| case | median s | min-max s | n | x fresh boot |")
    print("|---|---|---|---|---|")
    print(row("fresh boot to ready (+ first SSH command)", boots, base))
    print(row("restore to ready (loadvm + SSH + command)", live, base))
    print(row("restore after a crash (new QEMU -loadvm)", [after_crash], base))
    print(f"\nrestore / fresh boot: {statistics.median(live) / base:.3f} (target <= 0.333)")


if __name__ == "__main__":
    asyncio.run(main())
