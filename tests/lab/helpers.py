"""Shared by the `vmlab test` end-to-end tests: run the CLI, find leaked VMs."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

VMLAB = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "vmlab"
LABS = Path(__file__).resolve().parents[1] / "data" / "labs"


# Every vmlab these tests start keeps its runtime files here, so that the leak
# check sees only this session's VMs (other test sessions may run beside it).
RUNTIME = Path(tempfile.mkdtemp(prefix="vmlab-labtests-rt-"))
ENV = {**os.environ, "XDG_RUNTIME_DIR": str(RUNTIME)}


def vmlab_qemus() -> list[str]:
    """QEMU processes started by this test session's vmlab runs."""
    out = subprocess.run(["pgrep", "-af", "qemu-system"], capture_output=True, text=True,
                         check=False).stdout  # fmt: skip
    return [line for line in out.splitlines() if str(RUNTIME) in line]


def vmlab(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VMLAB), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL, check=False, env=ENV,
    )  # fmt: skip
