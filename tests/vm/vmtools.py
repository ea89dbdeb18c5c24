"""Helpers for the real-VM tests: the `vmlab` command as users run it, and a
census of what vmlab leaves behind (QEMU processes, runtime directories).

Another vmlab (a developer's, a benchmark) may run on the same host at the same
time, so the census only counts what this test session started: every test runs
with VMLAB_TEST_TAG=<a token of this session> in its environment, which vmlab and
its QEMU inherit, and with private $XDG_RUNTIME_DIR and $TMPDIR directories, where
vmlab makes its runtime directories.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

TAG_VAR = "VMLAB_TEST_TAG"

# `.venv/bin/vmlab`, next to the interpreter that runs pytest.
VMLAB = Path(sys.executable).with_name("vmlab")

# `vmlab run` under TCG: every VM test runs under TCG on these hosts.
RUN = ("run", "--accel", "tcg")

CLI_TIMEOUT = 180.0


@dataclass(frozen=True)
class VmEnv:
    """What a VM test runs with (see conftest.py)."""

    tag: str
    runtime: Path  # $XDG_RUNTIME_DIR
    tmpdir: Path  # $TMPDIR (vmlab's fallback when XDG_RUNTIME_DIR is unusable)
    state: Path  # $XDG_STATE_HOME (default console logs)


@dataclass(frozen=True)
class Proc:
    pid: int
    argv: tuple[str, ...]

    @property
    def is_vmlab_qemu(self) -> bool:
        """A `qemu-system-* -name vmlab-...` process."""
        if not self.argv or not Path(self.argv[0]).name.startswith("qemu-system"):
            return False
        args = list(self.argv)
        return any(
            flag == "-name" and value.startswith("vmlab-")
            for flag, value in itertools.pairwise(args)
        )

    def describe(self) -> str:
        return f"pid {self.pid}: {' '.join(self.argv)[:200]}"


def tagged_processes(tag: str) -> list[Proc]:
    """Live processes (not zombies) whose environment carries this session's tag,
    other than this pytest process."""
    needle = f"{TAG_VAR}={tag}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue  # gone meanwhile
        if needle in environ and cmdline:
            argv = tuple(a.decode(errors="replace") for a in cmdline.rstrip(b"\0").split(b"\0"))
            found.append(Proc(int(entry.name), argv))
    return found


def vmlab_qemus(tag: str) -> list[Proc]:
    return [p for p in tagged_processes(tag) if p.is_vmlab_qemu]


def runtime_dirs(*bases: Path) -> list[Path]:
    return sorted(d for base in bases for d in base.glob("vmlab-*"))


def cli(
    *args: str,
    cwd: Path,
    input: bytes | None = None,
    stdin: int | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = CLI_TIMEOUT,
) -> subprocess.CompletedProcess[bytes]:
    """Run `vmlab ARGS...` as a user does; stdin is /dev/null unless given."""
    full_env = {**os.environ, **(env or {})}
    if input is None and stdin is None:
        stdin = subprocess.DEVNULL
    return subprocess.run(
        [str(VMLAB), *args],
        cwd=cwd,
        input=input,
        stdin=stdin,
        capture_output=True,
        env=full_env,
        timeout=timeout,
        check=False,
    )


def popen(*args: str, cwd: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start `vmlab ARGS...` in the background, stdout and stderr piped."""
    return subprocess.Popen(
        [str(VMLAB), *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )


def one_error_line(stderr: bytes) -> str:
    """vmlab's own errors: exactly one line, `vmlab: ...`, never a traceback."""
    text = stderr.decode(errors="replace")
    assert "Traceback" not in text, text
    lines = text.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{text}"
    assert lines[0].startswith("vmlab: "), text
    return lines[0]
