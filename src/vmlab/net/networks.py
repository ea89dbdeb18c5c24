"""Running a lab's networks, and attaching machine specs to their switches.

    async with LabNetworks(lab.networks.values()) as nets:
        spec = nets.attach(lab.machines["a"].spec)     # NICs now name their sockets
        async with QemuMachine(spec) as vm: ...
        nets.switch("lan").set_port("a", False)        # pull a's cable at the switch

For machines that outlive vmlab (`vmlab up`), each network's switch runs as a
detached `SwitchProcess`, recorded in the lab's directory
(vmlab.net.lab_switches); `attach(spec, processes)` attaches a spec to them, and
`LabNetworks(networks, running=processes)` uses them instead of starting its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Protocol

from vmlab.errors import UsageError
from vmlab.machine.spec import MachineSpec
from vmlab.net.addresses import NetworkSpec
from vmlab.net.switch import Switch


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
        try:
            port = switch.port_path(spec.name)
        except (KeyError, ValueError):
            raise UsageError(
                f"machine {spec.name} has no port on network {nic.network}'s running switch: "
                f"it joined the network after `vmlab up` started the switch (vmlab down, "
                "then vmlab up)"
            ) from None
        nics.append(replace(nic, switch=switch.socket_path, port=port))
    return replace(spec, nics=tuple(nics))


class LabNetworks:
    """One in-loop `Switch` per network; all stopped (and their files removed)
    when the block ends, on any path. Networks in `running` already have a
    switch (`vmlab up` left it running: vmlab.net.lab_switches): machines are
    attached to that one instead, and it is left running."""

    def __init__(
        self,
        networks: Iterable[NetworkSpec],
        running: Mapping[str, SwitchEndpoints] | None = None,
    ) -> None:
        self.running = dict(running or {})
        self.networks = {n.name: n for n in networks if n.name not in self.running}
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
        return attach(spec, {**self.running, **self.switches})
