"""Facts about the host, each found once and bounded in time.

The KVM probe boots a real guest (the same kernel and initramfs, in a mode
where init prints a marker and powers off at once) under KVM with a deadline,
because on some hosts /dev/kvm exists and answers while guests hang under it.
The verdict is cached per host boot, QEMU binary and kernel.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from vmlab.cache import cache_dir, write_atomic
from vmlab.errors import HostError, UsageError
from vmlab.machine.spec import Accel
from vmlab.machine.subprocess_util import kill_on_parent_death

QEMU_NAMES = ("qemu-system-x86_64",)
KVM_PROBE_TIMEOUT = 8.0
PROBE_MARKER = b"vmlab-probe: ok"


@functools.cache
def qemu_binary() -> str:
    """Path of qemu-system-x86_64 ($VMLAB_QEMU overrides)."""
    explicit = os.environ.get("VMLAB_QEMU")
    if explicit:
        if shutil.which(explicit) is None:
            raise HostError(
                f"VMLAB_QEMU={explicit} is not an executable (unset it or fix the path)"
            )
        return explicit
    for name in QEMU_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise HostError("QEMU is not installed (apt-get install qemu-system-x86)")


@functools.cache
def qemu_version() -> str:
    try:
        out = subprocess.run(
            [qemu_binary(), "--version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise HostError(f"cannot run {qemu_binary()} --version: {exc}") from exc
    match = re.search(r"version (\S+)", out)
    return match.group(1) if match else out.strip()


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def kvm_unavailable_reason() -> str | None:
    """Why KVM cannot even be tried, or None when /dev/kvm is usable."""
    if not os.path.exists("/dev/kvm"):
        return "/dev/kvm does not exist"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "no permission on /dev/kvm (add yourself to the kvm group)"
    return None


@dataclass(frozen=True)
class AccelChoice:
    accel: Accel  # KVM or TCG, never AUTO
    notice: str | None  # one line for the user when auto fell back to TCG


async def _boot_probe(kernel: Path, initrd: Path, timeout: float) -> str | None:
    """None when a guest boots under KVM within `timeout`, else why not."""
    argv = [
        qemu_binary(), "-accel", "kvm", "-cpu", "host", "-M", "pc", "-m", "256M",
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-serial", "stdio", "-kernel", str(kernel), "-initrd", str(initrd),
        "-append", "console=ttyS0 panic=-1 vmlab.probe=1 quiet",
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=kill_on_parent_death,
    )
    assert proc.stdout is not None and proc.stderr is not None
    seen = b""
    try:
        async with asyncio.timeout(timeout):
            while chunk := await proc.stdout.read(4096):
                seen = (seen + chunk)[-4096:]
                if PROBE_MARKER in seen:
                    return None
            # QEMU closed its output: it exited (e.g. it could not set up KVM).
            await proc.wait()
            errors = (await proc.stderr.read()).decode(errors="replace").strip().splitlines()
            return f"QEMU failed under KVM: {errors[-1]}" if errors else "QEMU failed under KVM"
    except TimeoutError:
        return f"a probe guest did not boot under KVM within {timeout:g} s"
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


async def choose_accel(
    requested: Accel, kernel: Path, kernel_sha: str, initrd: Path
) -> AccelChoice:
    """Resolve `auto`, and check that an explicit `kvm` can work at all."""
    if requested is Accel.TCG:
        return AccelChoice(Accel.TCG, None)
    reason = kvm_unavailable_reason()
    if requested is Accel.KVM:
        if reason is not None:
            raise UsageError(f"--accel kvm: {reason} (use --accel tcg or auto)")
        return AccelChoice(Accel.KVM, None)
    if reason is not None:
        return AccelChoice(Accel.TCG, f"using TCG (slow): {reason}")
    key = hashlib.sha256(
        f"{_boot_id()}:{qemu_binary()}:{qemu_version()}:{kernel_sha}".encode()
    ).hexdigest()[:24]
    verdict_file = cache_dir("probes") / f"kvm-{key}.json"
    try:
        problem = json.loads(verdict_file.read_text())["problem"]
    except (OSError, ValueError, KeyError):
        problem = await _boot_probe(kernel, initrd, KVM_PROBE_TIMEOUT)
        write_atomic(verdict_file, json.dumps({"problem": problem}).encode())
    if problem is None:
        return AccelChoice(Accel.KVM, None)
    return AccelChoice(Accel.TCG, f"using TCG (slow): /dev/kvm exists but {problem}")
