"""`vmlab run`: boot a kernel over the host's root and run one command in it."""

from __future__ import annotations

import os
import stat
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from vmlab.cache import state_dir
from vmlab.cli.runner import error_line
from vmlab.errors import UsageError
from vmlab.guest.channel import Command, User
from vmlab.machine.qemu import QemuMachine, prepare_boot
from vmlab.machine.spec import Accel, MachineSpec, Share
from vmlab.units import parse_size_mib

# What the command inherits from the caller's environment.
PASSED_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TERM", "TZ", "SHELL")
KEEP_CONSOLE_LOGS = 50


@dataclass(frozen=True)
class RunOptions:
    command: tuple[str, ...]
    kernel: Path | None
    modules: Path | None
    shares: tuple[str, ...]
    memory: str
    cpus: int
    append: tuple[str, ...]
    timeout: float | None
    console_log: Path | None
    verbose: bool
    accel: Accel
    env: tuple[str, ...]
    boot_timeout: float | None


def parse_share(text: str) -> Share:
    """`HOST[:GUEST][:rw|ro]` -> Share; GUEST defaults to HOST's absolute path."""
    parts = text.split(":")
    writable = False
    if len(parts) > 1 and parts[-1] in ("rw", "ro"):
        writable = parts.pop() == "rw"
    if not parts[0] or len(parts) > 2:
        raise UsageError(f"--share {text!r}: expected HOST[:GUEST][:rw]")
    host = Path(parts[0]).expanduser().absolute()
    guest = Path(parts[1]) if len(parts) == 2 and parts[1] else host
    if not guest.is_absolute():
        raise UsageError(f"--share {text!r}: the guest path must be absolute")
    return Share(host, guest, writable)


def command_env(extra: Sequence[str]) -> dict[str, str]:
    env = {key: os.environ[key] for key in PASSED_ENV if key in os.environ}
    env.update({k: v for k, v in os.environ.items() if k.startswith("LC_")})
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin")
    for item in extra:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--env {item!r}: expected NAME=VALUE")
        env[key] = value
    return env


def default_console_log() -> Path:
    """A new log under ~/.local/state/vmlab/console; only the newest are kept."""
    directory = state_dir("console")
    logs = sorted(directory.glob("run-*.log"))
    for old in logs[: max(0, len(logs) - KEEP_CONSOLE_LOGS + 1)]:
        old.unlink(missing_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return directory / f"run-{stamp}-{os.getpid()}.log"


def machine_spec(opts: RunOptions, cwd: Path) -> MachineSpec:
    if opts.cpus < 1:
        raise UsageError(f"--cpus {opts.cpus}: needs at least 1")
    if opts.timeout is not None and opts.timeout <= 0:
        raise UsageError(f"--timeout {opts.timeout:g}: must be more than 0 seconds")
    shares = [parse_share(s) for s in opts.shares]
    if cwd != Path("/") and all(s.host != cwd for s in shares):
        shares.append(Share(cwd, cwd, writable=True))
    for label, path in (("--kernel", opts.kernel), ("--modules", opts.modules)):
        if path is not None and not path.exists():
            raise UsageError(f"{label} {path} does not exist")
    return MachineSpec(
        kernel=opts.kernel.absolute() if opts.kernel else None,
        modules=opts.modules.absolute() if opts.modules else None,
        memory_mib=parse_size_mib(opts.memory, what="--memory"),
        cpus=opts.cpus,
        shares=tuple(shares),
        append=opts.append,
        accel=opts.accel,
        boot_timeout=opts.boot_timeout,
    )


def _no_input(stream: TextIO | None) -> bool:
    """True when standard input has nothing for the command: closed, a terminal,
    or /dev/null (then the guest's /dev/null serves, without feeding a port)."""
    if stream is None or stream.isatty():
        return True
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError):
        return True
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == os.stat(os.devnull).st_rdev


async def run(opts: RunOptions) -> int:
    if not opts.command:
        raise UsageError("no command given (usage: vmlab run [OPTIONS] -- CMD [ARGS...])")
    cwd = Path.cwd()
    spec = machine_spec(opts, cwd)
    command = Command(
        argv=opts.command,
        env=command_env(opts.env),
        cwd=str(cwd),
        user=User(os.getuid(), os.getgid(), tuple(os.getgroups())),
    )
    image = await prepare_boot(spec)
    if image.accel_notice:
        error_line(image.accel_notice)
    console_log = opts.console_log.absolute() if opts.console_log else default_console_log()
    stdin = None if _no_input(sys.stdin) else sys.stdin.buffer
    out, err = sys.stdout.buffer, sys.stderr.buffer

    def to_stdout(data: bytes) -> None:
        out.write(data)
        out.flush()

    def to_stderr(data: bytes) -> None:
        err.write(data)
        err.flush()

    echo = sys.stderr.buffer if opts.verbose else None
    async with QemuMachine(spec, console_log=console_log, console_echo=echo, image=image) as vm:
        result = await vm.run(
            command,
            stdin=stdin,
            on_stdout=to_stdout,
            on_stderr=to_stderr,
            capture=False,
            timeout=opts.timeout,
        )
    return result.status
