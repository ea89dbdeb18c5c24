"""A test that hangs in the guest: for timeouts and Ctrl-C (not in vmlab.toml)."""

from __future__ import annotations

import os
from pathlib import Path

from vmlab.guest.rpc import VmClient


def test_hangs(vm: VmClient) -> None:
    marker = os.environ.get("VMLAB_TEST_MARKER")
    if marker:
        Path(marker).write_text("running\n")
    vm.run("sleep 300")
