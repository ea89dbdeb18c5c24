"""Fixtures shared by the unit tests."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest

from vmlab.machine.records import cmdline_of


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A live process standing in for a machine's QEMU (once it has exec'd
    sleep): liveness compares /proc/PID/cmdline with the recorded argv,
    whatever the program is."""
    proc = subprocess.Popen(["sleep", "300"])
    deadline = time.monotonic() + 10
    while cmdline_of(proc.pid) != ("sleep", "300") and time.monotonic() < deadline:
        time.sleep(0.01)
    yield proc
    proc.kill()
    proc.wait()
