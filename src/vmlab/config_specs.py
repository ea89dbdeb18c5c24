"""What a lab file resolves to: frozen specs, and the capability graph over tests.

`vmlab.config.load_lab` builds these; everything after the config layer (the
planner, executors, sessions, reporters) reads them and never the lab file.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter
from pathlib import Path
from typing import ClassVar

from vmlab.errors import ConfigError
from vmlab.machine.spec import ImageSpec, MachineSpec
from vmlab.net.addresses import NetworkSpec
from vmlab.service_spec import ServiceSpec

LAB_FILE = "vmlab.toml"
DEFAULT_MACHINE = "default"  # the machine of a lab that declares none
DEFAULT_TIMEOUT_S = 300.0


class Safety(enum.StrEnum):
    """How much a test may break its VM; `rank` orders them, worst last."""

    SAFE = "safe"  # shares its suite's VM
    MONITORED = "monitored"  # shares it too; any kernel warning during the test fails it
    RISKY = "risky"  # the VM is replaced after it
    DANGEROUS = "dangerous"  # alone in a fresh VM, only with --allow-dangerous

    @property
    def rank(self) -> int:
        return list(Safety).index(self)

    @property
    def shares_vm(self) -> bool:
        """Whether later tests may run in the VM this test ran in."""
        return self in (Safety.SAFE, Safety.MONITORED)


class TestFormat(enum.StrEnum):
    """How a test reports its results."""

    __test__ = False  # not a pytest class

    EXIT = "exit"  # the command's exit status: 0 passes
    TAP = "tap"  # TAP on stdout; each test point is a result
    KTAP = "ktap"  # KTAP (nested too), as kselftest and KUnit print it
    JUNIT = "junit"  # JUnit XML on stdout; each testcase is a result
    PYTEST = "pytest"  # a host-side pytest file with a `vm` fixture


@dataclass(frozen=True)
class MachineConfig:
    """A lab machine: what to boot (`spec`) plus what to do once it is up."""

    name: str
    spec: MachineSpec
    setup: tuple[str, ...] = ()  # shell commands run once after every boot, in order
    playbook: Path | None = None  # an Ansible playbook run from the host after every boot
    modules_load: tuple[str, ...] = ()  # kernel modules loaded at boot (before setup)
    description: str = ""
    where: str = ""  # FILE:LINE of its table
    # Capabilities it provides by being up (an NFS server): such a machine is
    # booted and set up before the tests that require them, and runs until the end.
    provides: tuple[str, ...] = ()


@dataclass(frozen=True)
class TestSpec:
    """One test, resolved: exactly one of `run` and `pytest` is set."""

    __test__: ClassVar[bool] = False  # not a pytest class

    suite: str
    name: str
    run: str | None = None  # shell command run in the guest
    format: TestFormat = TestFormat.EXIT  # PYTEST exactly when `pytest` is set
    pytest: Path | None = None  # absolute path of a host-side pytest file
    domain: str = ""  # "" -> the suite's name
    machine: str = DEFAULT_MACHINE
    level: int = 1
    safety: Safety = Safety.SAFE
    timeout_s: float = DEFAULT_TIMEOUT_S
    requires: frozenset[str] = frozenset()  # the test's own and its suite's
    provides: frozenset[str] = frozenset()  # the test's own and its suite's
    env: tuple[tuple[str, str], ...] = ()  # the suite's, then the test's
    cwd: Path = field(default_factory=Path.cwd)  # where `run` starts (the lab's directory)
    description: str = ""
    where: str = ""  # FILE:LINE of its table

    def __post_init__(self) -> None:
        if self.pytest is not None and self.format is TestFormat.EXIT:
            object.__setattr__(self, "format", TestFormat.PYTEST)
        if (self.run is None) == (self.pytest is None):
            raise ValueError(f"test {self.test_id}: exactly one of run and pytest")
        if (self.format is TestFormat.PYTEST) != (self.pytest is not None):
            raise ValueError(f"test {self.test_id}: format pytest goes with pytest only")
        if not self.domain:
            object.__setattr__(self, "domain", self.suite)

    @property
    def test_id(self) -> str:
        return f"{self.suite}/{self.name}"


@dataclass(frozen=True)
class SuiteSpec:
    """A suite: tests of one domain on one machine."""

    name: str
    machine: str
    tests: tuple[TestSpec, ...]
    domain: str = ""
    level: int = 1
    description: str = ""
    requires: frozenset[str] = frozenset()
    provides: frozenset[str] = frozenset()
    where: str = ""


@dataclass(frozen=True)
class Lab:
    """A loaded lab file. `machines` is read-only; suites keep the file's order."""

    path: Path  # the lab file, absolute
    name: str
    machines: Mapping[str, MachineConfig]
    suites: tuple[SuiteSpec, ...]
    images: Mapping[str, ImageSpec] = field(default_factory=dict)  # [image.NAME]
    description: str = ""
    sha256: str = ""  # of the lab file's bytes
    services: tuple[ServiceSpec, ...] = ()  # host services, in the file's order
    networks: Mapping[str, NetworkSpec] = field(default_factory=dict)  # [network.NAME]

    @property
    def root(self) -> Path:
        """The lab file's directory: relative paths in it start here."""
        return self.path.parent

    @property
    def tests(self) -> tuple[TestSpec, ...]:
        return tuple(test for suite in self.suites for test in suite.tests)

    def suite(self, name: str) -> SuiteSpec:
        for suite in self.suites:
            if suite.name == name:
                return suite
        raise KeyError(name)


def dependency_graph(
    tests: Iterable[TestSpec], available: Iterable[str] = ()
) -> dict[str, frozenset[str]]:
    """Test id -> ids of the tests it runs after: all providers of what it requires.

    A capability is ready when every test that provides it has run; one in
    `available` (what host services provide) is there from the start unless a test
    provides it too. A requirement that nothing provides is a ConfigError (the
    loader reports it with its line first).
    """
    available = frozenset(available)
    tests = tuple(tests)
    providers: dict[str, list[str]] = {}
    for test in tests:
        for capability in test.provides:
            providers.setdefault(capability, []).append(test.test_id)
    graph: dict[str, frozenset[str]] = {}
    for test in tests:
        needs: set[str] = set()
        for capability in sorted(test.requires):
            if capability not in providers:
                if capability in available:
                    continue
                raise ConfigError(
                    f"{test.where or '<lab>'}: suite.{test.suite}: test {test.name} "
                    f"requires {capability!r}, which nothing provides"
                )
            needs.update(providers[capability])
        graph[test.test_id] = frozenset(needs)
    return graph


def capability_cycle(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    """A cycle in a `dependency_graph`, as `[a, b, a]` where a needs b; else None."""
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as exc:
        # graphlib lists each node before the nodes that need it
        return list(reversed(exc.args[1]))
    return None


def format_cycle(cycle: list[str]) -> str:
    if len(cycle) == 2:
        return (
            f"capability cycle: {cycle[0]} -> {cycle[1]} "
            "(a test cannot require what it or its suite provides)"
        )
    return (
        f"capability cycle: {' -> '.join(cycle)} "
        "(each needs a capability that the next one provides)"
    )
