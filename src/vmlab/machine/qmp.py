"""QMP requests to a running QEMU, for what must work when the guest does not:
SysRq through the emulated keyboard, and the VM's run state."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

QMP_TIMEOUT = 5.0


async def _execute(socket: Path, command: str, arguments: dict[str, Any] | None = None) -> Any:
    from qemu.qmp import QMPClient  # noqa: PLC0415  (only on this rare path)

    client = QMPClient("vmlab")
    await asyncio.wait_for(client.connect(str(socket)), QMP_TIMEOUT)
    try:
        return await asyncio.wait_for(client.execute(command, arguments), QMP_TIMEOUT)
    finally:
        await client.disconnect()


async def send_sysrq(socket: Path, letter: str) -> None:
    """Alt+SysRq+LETTER on the guest's PS/2 keyboard: the kernel handles it in
    interrupt context, so it works while a CPU spins with preemption off."""
    keys = [{"type": "qcode", "data": key} for key in ("alt", "sysrq", letter)]
    await _execute(socket, "send-key", {"keys": keys, "hold-time": 50})


async def run_state(socket: Path) -> str:
    """QEMU's view of the VM: running, paused, guest-panicked, internal-error, ..."""
    status = await _execute(socket, "query-status")
    return str(status["status"])
