"""What a `[service.NAME]` resolves to: a host process that tests rely on.

`vmlab.config` builds a frozen `ServiceSpec` for each service of the lab file
(`Lab.services`); `vmlab.services` runs them. This module is plain data and pure
functions: which services a run needs (`needed_services`) and which services each
one waits for (`service_graph`). Services start before any test, so a service
can only require what another service provides.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from vmlab.errors import ConfigError

DEFAULT_READY_TIMEOUT_S = 30.0
DEFAULT_STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class TcpReady:
    """Ready once `host:port` accepts a TCP connection."""

    port: int
    host: str = "127.0.0.1"

    def describe(self) -> str:
        return f"tcp {self.host}:{self.port}"


@dataclass(frozen=True)
class LogReady:
    """Ready once a line of the service's stdout or stderr matches `pattern` (re.search)."""

    pattern: str

    def describe(self) -> str:
        return f"log line matching {self.pattern!r}"


@dataclass(frozen=True)
class CmdReady:
    """Ready once the host shell command `command` exits with status 0."""

    command: str

    def describe(self) -> str:
        return f"cmd {self.command!r}"


ReadyCheck = TcpReady | LogReady | CmdReady


@dataclass(frozen=True)
class ServiceSpec:
    """A host service, resolved.

    `argv` is what runs: `("/bin/sh", "-c", TEXT)` for a command written as a
    string, the array itself otherwise. With `container`, `argv` runs inside that
    image (empty: the image's own command). `ready` None means ready as soon as
    the process has started.
    """

    name: str
    argv: tuple[str, ...]
    cwd: Path  # absolute; the lab's directory unless the lab file says otherwise
    env: tuple[tuple[str, str], ...] = ()  # added to vmlab's environment
    ready: ReadyCheck | None = None
    ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S
    stop_timeout_s: float = DEFAULT_STOP_TIMEOUT_S
    requires: frozenset[str] = frozenset()
    provides: frozenset[str] = frozenset()
    container: str | None = None  # an image run with podman (else docker)
    cwd_given: bool = False  # the lab file set cwd: a container gets it mounted as its workdir
    description: str = ""
    where: str = ""  # FILE:LINE of its table

    def __post_init__(self) -> None:
        if not self.argv and self.container is None:
            raise ValueError(f"service {self.name}: a command, or a container image")
        if not self.cwd.is_absolute():
            raise ValueError(f"service {self.name}: cwd {self.cwd} is not absolute")


def provided_by(services: Iterable[ServiceSpec]) -> frozenset[str]:
    """Every capability some service provides (present from the run's start)."""
    return frozenset(cap for service in services for cap in service.provides)


def service_graph(services: Iterable[ServiceSpec]) -> dict[str, frozenset[str]]:
    """Service name -> names of the services it starts after: the providers of
    what it requires. A requirement no service provides is a ConfigError."""
    services = tuple(services)
    providers: dict[str, list[str]] = {}
    for service in services:
        for capability in service.provides:
            providers.setdefault(capability, []).append(service.name)
    graph: dict[str, frozenset[str]] = {}
    for service in services:
        needs: set[str] = set()
        for capability in sorted(service.requires):
            if capability not in providers:
                raise ConfigError(
                    f"{service.where or '<lab>'}: service.{service.name}: requires "
                    f"{capability!r}, which no service provides"
                )
            needs.update(providers[capability])
        graph[service.name] = frozenset(needs)
    return graph


def needed_services(
    services: Iterable[ServiceSpec], required: Iterable[str]
) -> tuple[ServiceSpec, ...]:
    """The services a run starts, in the lab's order: those that provide a
    capability in `required` (what the run's tests require), those that provide
    nothing at all (they serve the whole lab), and what these require, transitively."""
    services = tuple(services)
    graph = service_graph(services)
    wanted = set(required)
    chosen = {s.name for s in services if not s.provides or s.provides & wanted}
    todo = list(chosen)
    while todo:
        for dependency in graph[todo.pop()]:
            if dependency not in chosen:
                chosen.add(dependency)
                todo.append(dependency)
    return tuple(s for s in services if s.name in chosen)
