"""Boot-time benchmark: the bare limit against `vmlab run -- true` (and virtme-ng).

    .venv/bin/python bench/boot.py [-n 5] [--accel tcg] [--with-virtme-ng]

One run, side by side, on the same kernel and accel:
- bare: QEMU + the same PVH vmlinux + an initramfs whose init powers off at
  once (busybox only), with vmlab's machine options;
- vmlab: `vmlab run -- true`, the whole command (Python start included);
- virtme-ng: `vng -r KERNEL -- true`, installed into its own venv when asked.
Runs are interleaved so that noise on this shared machine hits all alike.
Prints medians, min/max and ratios, and the host RSS of an idle 512M guest.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from vmlab.machine.initramfs import CpioWriter, find_busybox
from vmlab.machine.kernel import bootable, find_default_kernel, inspect_kernel
from vmlab.machine.probes import qemu_binary
from vmlab.machine.qemu import QemuMachine, kernel_cmdline
from vmlab.machine.spec import Accel, MachineSpec

ROOT = Path(__file__).resolve().parent.parent
VMLAB = ROOT / ".venv" / "bin" / "vmlab"

BARE_INIT = b"#!/bin/busybox sh\n/bin/busybox poweroff -f\n"


def bare_initramfs(directory: Path) -> Path:
    cpio = CpioWriter()
    for name in ("bin", "dev", "proc", "sys"):
        cpio.directory(name)
    cpio.char_device("dev/console", 5, 1)
    cpio.file("bin/busybox", find_busybox().read_bytes(), 0o755)
    cpio.file("init", BARE_INIT, 0o755)
    path = directory / "bare.cpio"
    path.write_bytes(cpio.finish())
    return path


def bare_argv(vmlinux: Path, initrd: Path, accel: Accel) -> list[str]:
    cpu = (
        ["-accel", "kvm", "-cpu", "host"]
        if accel is Accel.KVM
        else ["-accel", "tcg", "-cpu", "max"]
    )
    return [
        qemu_binary(), "-M", "pc", *cpu, "-m", "512M", "-smp", "1",
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-serial", "null", "-kernel", str(vmlinux), "-initrd", str(initrd),
        "-append", kernel_cmdline(MachineSpec()),
    ]  # fmt: skip


def timed(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    start = time.monotonic()
    done = subprocess.run(
        argv,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=600,
        check=False,
        env=env,
    )
    elapsed = time.monotonic() - start
    if done.returncode != 0:
        sys.exit(f"bench: {argv[0]} failed ({done.returncode}): {done.stderr.decode()[-400:]}")
    return elapsed


def install_virtme_ng(directory: Path) -> Path:
    venv = directory / "vng-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([venv / "bin" / "pip", "install", "-q", "virtme-ng"], check=True)
    return venv / "bin" / "vng"


async def idle_rss_mib(accel: Accel) -> float:
    async with QemuMachine(MachineSpec(accel=accel, memory_mib=512)) as vm:
        await asyncio.sleep(2)
        assert vm.pid is not None
        status = await asyncio.to_thread(Path(f"/proc/{vm.pid}/status").read_text)
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("-n", type=int, default=5, help="runs of each (default 5)")
    parser.add_argument("--accel", choices=["tcg", "kvm"], default="tcg")
    parser.add_argument("--with-virtme-ng", action="store_true", help="also time virtme-ng")
    args = parser.parse_args()
    accel = Accel(args.accel)

    kernel = inspect_kernel(find_default_kernel())
    vmlinux = bootable(kernel).boot_path
    with tempfile.TemporaryDirectory(prefix="vmlab-bench-") as tmp:
        work = Path(tmp)
        cases: dict[str, Callable[[], float]] = {}
        initrd = bare_initramfs(work)
        cases["bare QEMU + PVH vmlinux, init powers off"] = lambda: timed(
            bare_argv(vmlinux, initrd, accel), work
        )
        vmlab_argv = [str(VMLAB), "run", "--accel", accel.value, "--", "true"]
        timed(vmlab_argv, work)  # warm the caches (vmlinux, initramfs)
        cases["vmlab run -- true"] = lambda: timed(vmlab_argv, work)
        if args.with_virtme_ng:
            vng = install_virtme_ng(work)
            vng_argv = [str(vng), "-r", str(kernel.path), "--disable-kvm", "--", "true"]
            if accel is Accel.KVM:
                vng_argv.remove("--disable-kvm")
            # vng runs virtme-run from PATH: put its venv first.
            vng_env = {**os.environ, "PATH": f"{vng.parent}:{os.environ.get('PATH', '')}"}
            cases["virtme-ng (vng -r KERNEL -- true)"] = lambda: timed(vng_argv, work, vng_env)

        samples: dict[str, list[float]] = {name: [] for name in cases}
        for i in range(args.n):
            for name, case in cases.items():
                samples[name].append(case())
            print(f"round {i + 1}/{args.n} done", file=sys.stderr)
        rss = asyncio.run(idle_rss_mib(accel))

    medians = {name: statistics.median(values) for name, values in samples.items()}
    bare = next(iter(medians.values()))
    print(f"\nkernel {kernel.release}, accel {accel.value}, {args.n} runs each (median, min-max)\n")
    print(f"| {'case':<40} | {'median s':>8} | {'min-max s':>11} | {'x bare':>6} |")
    print(f"|{'-' * 42}|{'-' * 10}|{'-' * 13}|{'-' * 8}|")
    for name, values in samples.items():
        spread = f"{min(values):.2f}-{max(values):.2f}"
        print(
            f"| {name:<40} | {medians[name]:>8.2f} | {spread:>11} | {medians[name] / bare:>6.2f} |"
        )
    if args.with_virtme_ng:
        vng_median = medians["virtme-ng (vng -r KERNEL -- true)"]
        print(f"\nvmlab run / virtme-ng: {medians['vmlab run -- true'] / vng_median:.2f}")
    print(f"host RSS of an idle 512M guest's QEMU: {rss:.0f} MiB")


if __name__ == "__main__":
    main()
