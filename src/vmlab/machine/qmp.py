"""QMP requests to a running QEMU, for what must work when the guest does not:
SysRq through the emulated keyboard, and the VM's run state."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

QMP_TIMEOUT = 5.0


async def _execute(
    socket: Path,
    command: str,
    arguments: dict[str, Any] | None = None,
    *,
    timeout: float = QMP_TIMEOUT,
) -> Any:
    from qemu.qmp import QMPClient  # noqa: PLC0415  (only on this rare path)

    client = QMPClient("vmlab")
    await asyncio.wait_for(client.connect(str(socket)), QMP_TIMEOUT)
    try:
        return await asyncio.wait_for(client.execute(command, arguments), timeout)
    finally:
        await client.disconnect()


async def human(socket: Path, command_line: str, *, timeout: float = 120) -> str:
    """An HMP command (savevm, loadvm, ...) through QMP; HMP reports failure as
    text, so any output of these commands is an error message."""
    return str(
        await _execute(
            socket, "human-monitor-command", {"command-line": command_line}, timeout=timeout
        )
    )


async def send_sysrq(socket: Path, letter: str) -> None:
    """Alt+SysRq+LETTER on the guest's PS/2 keyboard: the kernel handles it in
    interrupt context, so it works while a CPU spins with preemption off."""
    keys = [{"type": "qcode", "data": key} for key in ("alt", "sysrq", letter)]
    await _execute(socket, "send-key", {"keys": keys, "hold-time": 50})


async def run_state(socket: Path) -> str:
    """QEMU's view of the VM: running, paused, guest-panicked, internal-error, ..."""
    status = await _execute(socket, "query-status")
    return str(status["status"])


async def set_link(socket: Path, name: str, up: bool) -> None:
    """Carrier of a NIC or netdev (by id) up or down, as if its cable were pulled."""
    await _execute(socket, "set_link", {"name": name, "up": up})
