"""End-to-end tests of `vmlab test`: real labs, real VMs (TCG), real stores."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_TESTS = str(Path(__file__).resolve().parent.parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)  # for the pg helper, whatever pytest's import mode

from lab.helpers import RUNTIME, vmlab_qemus  # noqa: E402
from pg import pg_server, pg_url  # noqa: E402

__all__ = ["pg_server", "pg_url"]


@pytest.fixture(autouse=True)
def no_qemu_left() -> Iterator[None]:
    yield
    left = vmlab_qemus()
    for line in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(line.split()[0]), signal.SIGKILL)
    assert not left, f"QEMU left running: {left}"
    dirs = list(RUNTIME.glob("vmlab-*"))
    for directory in dirs:
        shutil.rmtree(directory, ignore_errors=True)
    assert not dirs, f"runtime directories left: {dirs}"


def pytest_sessionfinish() -> None:
    shutil.rmtree(RUNTIME, ignore_errors=True)
