"""Server machines: lab machines that provide capabilities by being up.

An NFS server, a database, a peer: `[machine.NAME] provides = ["nfs.server"]`.
`vmlab test` boots and sets up the server machines that the selected tests
require, all at once, before any test starts, and stops them after the last
test, like host services. A server that cannot boot or be set up ends the run
before any test, naming the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence
from types import TracebackType

from vmlab.config_specs import MachineConfig
from vmlab.session import Session, SessionContext


def needed_servers(machines: Iterable[MachineConfig], required: set[str]) -> list[MachineConfig]:
    """The machines that provide something a selected test requires."""
    return [m for m in machines if set(m.provides) & required]


class ServerMachines:
    """Boots server machines on enter (concurrently), stops them on exit."""

    def __init__(self, machines: Sequence[MachineConfig], ctx: SessionContext) -> None:
        self._sessions = [
            Session.for_machine(machine, ctx, f"server:{machine.name}") for machine in machines
        ]

    @property
    def sessions(self) -> list[Session]:
        return list(self._sessions)

    async def __aenter__(self) -> ServerMachines:
        try:
            await asyncio.gather(*(session.ensure_vm() for session in self._sessions))
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def stop(self) -> None:
        for session in self._sessions:
            with contextlib.suppress(Exception):
                await session.close()
