"""Running a lab's networks, and attaching machine specs to their switches.

    async with LabNetworks(lab.networks.values()) as nets:
        spec = nets.attach(lab.machines["a"].spec)     # NICs now name their sockets
        async with QemuMachine(spec) as vm: ...
        nets.switch("lan").set_port("a", False)        # pull a's cable at the switch

For machines that outlive vmlab (`vmlab up`): `await spawn_detached(networks)`
starts one `SwitchProcess` per network, `attach(spec, processes)` attaches a
spec to them, and `SwitchProcess.attach(DIR)` / `.stop()` find and end them
later (their directories are in `directory`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Protocol

from vmlab.machine.spec import MachineSpec
from vmlab.net.addresses import NetworkSpec
from vmlab.net.switch import Switch, SwitchProcess


class SwitchEndpoints(Protocol):
    """Where a running switch listens, and where each port's QEMU binds."""

    @property
    def socket_path(self) -> Path: ...

    def port_path(self, port: str) -> Path: ...


def attach(spec: MachineSpec, switches: Mapping[str, SwitchEndpoints]) -> MachineSpec:
    """`spec` with every NIC bound to its network's running switch."""
    if not spec.nics:
        return spec
    nics = []
    for nic in spec.nics:
        switch = switches.get(nic.network)
        if switch is None:
            raise KeyError(f"network {nic.network!r} of machine {spec.name} is not running")
        nics.append(replace(nic, switch=switch.socket_path, port=switch.port_path(spec.name)))
    return replace(spec, nics=tuple(nics))


class LabNetworks:
    """One in-loop `Switch` per network; all stopped (and their files removed)
    when the block ends, on any path."""

    def __init__(self, networks: Iterable[NetworkSpec]) -> None:
        self.networks = {network.name: network for network in networks}
        self.switches: dict[str, Switch] = {}

    async def __aenter__(self) -> LabNetworks:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    async def start(self) -> None:
        try:
            for name, network in self.networks.items():
                switch = Switch(network.machines, name=name)
                self.switches[name] = switch
                await switch.start()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for switch in self.switches.values():
            switch.close()
        self.switches.clear()

    def switch(self, network: str) -> Switch:
        return self.switches[network]

    def attach(self, spec: MachineSpec) -> MachineSpec:
        return attach(spec, self.switches)


async def spawn_detached(
    networks: Iterable[NetworkSpec], *, exit_with: int | None = None
) -> dict[str, SwitchProcess]:
    """One detached `SwitchProcess` per network; if one fails to start, the
    ones already started are stopped."""
    started: dict[str, SwitchProcess] = {}
    try:
        for network in networks:
            started[network.name] = await SwitchProcess.spawn(
                network.machines, name=network.name, exit_with=exit_with
            )
    except BaseException:
        for process in started.values():
            with contextlib.suppress(Exception):
                await process.stop()
        raise
    return started
