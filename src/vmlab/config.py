"""The lab file (`vmlab.toml`): load it, check it, and resolve it into frozen specs.

`load_lab(path)` is the entry. It reads TOML (`vmlab.config_toml`), checks the
shape with pydantic (`vmlab.config_schema`), then checks the meaning here (machines
that exist, files that exist, capabilities that someone provides, no capability
cycles) and returns a `Lab` of the frozen specs in `vmlab.config_specs`, which this
module re-exports: import them from here. Every mistake is one
`ConfigError` line, `FILE:LINE: dotted.key: what is wrong (hint)`. The keys are
documented in docs/lab-file.md.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import replace
from importlib import resources
from ipaddress import IPv4Address
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, NoReturn

from pydantic import ValidationError

from vmlab.config_schema import (
    ImageModel,
    LabFileModel,
    MachineModel,
    NetworkModel,
    PlaybookModel,
    ReadyModel,
    ServiceModel,
    ShareModel,
    SuiteModel,
    TestModel,
)
from vmlab.config_schema import explain as _explain
from vmlab.config_specs import (
    DEFAULT_MACHINE,
    DEFAULT_TIMEOUT_S,
    LAB_FILE,
    Lab,
    MachineConfig,
    Safety,
    SuiteSpec,
    TestFormat,
    TestSpec,
    capability_cycle,
    dependency_graph,
    format_cycle,
)
from vmlab.config_toml import KeyIndex, KeyPath, dotted, parse_toml
from vmlab.errors import ConfigError, UsageError
from vmlab.machine.spec import (
    DEFAULT_IMAGE_MIRROR,
    IMAGE_DISTROS,
    IMAGE_PACKAGE_NAME,
    MIN_IMAGE_SIZE_MIB,
    Accel,
    DiskSpec,
    ImageSpec,
    KernelSource,
    MachineSpec,
    Share,
)
from vmlab.net.addresses import (
    AddressError,
    NetworkMember,
    NetworkSpec,
    assign_addresses,
    assign_macs,
    check_overlaps,
    check_subnet,
    default_subnets,
    parse_address,
    parse_subnet,
)
from vmlab.service_spec import (
    DEFAULT_READY_TIMEOUT_S,
    DEFAULT_STOP_TIMEOUT_S,
    CmdReady,
    LogReady,
    ReadyCheck,
    ServiceSpec,
    TcpReady,
    provided_by,
    service_graph,
)

__all__ = [
    "DEFAULT_MACHINE",
    "DEFAULT_TIMEOUT_S",
    "LAB_FILE",
    "Lab",
    "MachineConfig",
    "Safety",
    "SuiteSpec",
    "TestFormat",
    "TestSpec",
    "capability_cycle",
    "dependency_graph",
    "format_cycle",
    "load_lab",
]

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_CAPABILITY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:/+-]*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MODULE = re.compile(r"[A-Za-z0-9_-]+")
_HOSTNAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def load_lab(path: Path) -> Lab:
    """Read, check and resolve a lab file (or the `vmlab.toml` in a directory)."""
    file = path / LAB_FILE if path.is_dir() else path
    display = str(file)
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{display}: no such lab file (see docs/lab-file.md)") from None
    except OSError as exc:
        raise UsageError(f"{display}: cannot read the lab file: {exc.strerror}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{display}:{line}: not UTF-8 text (save it as UTF-8)") from None
    data = parse_toml(text, display)
    index = KeyIndex(text)
    try:
        model = LabFileModel.model_validate(data)
    except ValidationError as exc:
        # all of them, in the file's order: the first is the message, all are details
        errors = sorted(exc.errors(), key=lambda error: index.line_of(error["loc"]))
        lines = [
            f"{display}:{index.line_of(e['loc'])}: {dotted(e['loc'])}: {_explain(e)}"
            for e in errors
        ]
        raise ConfigError(lines[0], details="\n".join(lines)) from None
    resolver = _Resolver(Path(os.path.abspath(file)), display, index)
    return resolver.lab(model, hashlib.sha256(raw).hexdigest())


class _Resolver:
    """Checks a validated model's meaning and builds the frozen specs."""

    def __init__(self, file: Path, display: str, index: KeyIndex) -> None:
        self.file = file
        self.root = file.parent
        self.display = display
        self.index = index
        self.origin: dict[str, tuple[str, int]] = {}  # test id -> (suite, index)

    def fail(self, at: KeyPath, problem: str) -> NoReturn:
        raise ConfigError(f"{self.where(at)}: {dotted(at)}: {problem}")

    def where(self, at: KeyPath) -> str:
        return f"{self.display}:{self.index.line_of(at)}"

    def lab(self, model: LabFileModel, sha256: str) -> Lab:
        images = {name: self.image(name, image) for name, image in model.image.items()}
        machines = self.machines(model.machine, images)
        networks = self.networks(model.network, model.machine, model.lab.name or self.root.name)
        for name, machine in model.machine.items():
            joined = [join.name for join in machine.networks]
            machines[name] = _with_nics(machines[name], [networks[n] for n in joined])
        default = model.lab.defaults.machine
        if default is not None and default not in machines:
            self.fail(("lab", "defaults", "machine"), _no_such("machine", default, machines))
        provided = {cap for machine in model.machine.values() for cap in machine.provides}
        provided |= {cap for suite in model.suite.values() for cap in suite.provides}
        provided |= {c for s in model.suite.values() for t in s.test for c in t.provides}
        services = self.services(model.service, provided)
        provided |= provided_by(services)
        suites = tuple(
            self.suite(name, suite, model, machines, provided)
            for name, suite in model.suite.items()
        )
        lab = Lab(
            path=self.file,
            name=model.lab.name or self.root.name,
            description=model.lab.description,
            machines=MappingProxyType(machines),
            suites=suites,
            images=MappingProxyType(images),
            sha256=sha256,
            services=services,
            networks=MappingProxyType(networks),
        )
        self.check_cycles(lab, model)
        return lab

    def machines(
        self, models: Mapping[str, MachineModel], images: Mapping[str, ImageSpec]
    ) -> dict[str, MachineConfig]:
        if not models:
            spec = MachineSpec(name=DEFAULT_MACHINE)
            return {DEFAULT_MACHINE: MachineConfig(DEFAULT_MACHINE, spec, where=self.display)}
        return {name: self.machine(name, model, images) for name, model in models.items()}

    def disk(
        self, model: MachineModel, at: KeyPath, images: Mapping[str, ImageSpec]
    ) -> tuple[DiskSpec | None, str | None]:
        """A disk-image machine's `DiskSpec` (None for host-root ones), and the
        `kernel` key left for the host-root meaning (a path) if any."""
        disk_keys = ("root", "user", "user_data", "internet", "ssh_port")
        if model.image is None:
            for key in disk_keys:
                if getattr(model, key) is not None:
                    self.fail((*at, key), "only disk-image machines take this (add `image = ...`)")
            return None, model.kernel
        image: ImageSpec | Path
        if model.image in images:
            image = images[model.image]
        elif "/" in model.image or "." in model.image:
            image = self.path(model.image, (*at, "image"), "file")
        else:
            self.fail((*at, "image"), _no_such("image", model.image, images))
        if model.shares:
            self.fail((*at, "shares"), "disk-image machines have no 9p shares (copy files in)")
        if not _HOSTNAME.fullmatch(str(at[-1])):
            self.fail(at, "a disk-image machine's name is its host name: use a-z, 0-9 and -")
        kernel = KernelSource.IMAGE
        path_kernel = None
        if model.kernel in ("image", "host"):
            kernel = KernelSource(model.kernel)
        elif model.kernel is not None:
            self.fail((*at, "kernel"), "a disk-image machine boots kernel 'image' or 'host'")
        user_data: Mapping[str, Any] | Path | None = None
        if isinstance(model.user_data, str):
            user_data = self.path(model.user_data, (*at, "user_data"), "file")
        elif model.user_data is not None:
            user_data = MappingProxyType(dict(model.user_data))
        return (
            DiskSpec(
                image=image,
                lab_dir=self.root,
                kernel=kernel,
                root=model.root or "/dev/vda",
                user=model.user or "vmlab",
                user_data=user_data,
                internet=bool(model.internet),
                ssh_port=model.ssh_port,
            ),
            path_kernel,
        )

    def machine(
        self, name: str, model: MachineModel, images: Mapping[str, ImageSpec]
    ) -> MachineConfig:
        at: KeyPath = ("machine", name)
        self.check_name(name, at, "machine")
        for i, module in enumerate(model.modules_load):
            if not _MODULE.fullmatch(module):
                self.fail((*at, "modules_load", i), f"{module!r} is not a module name")
        commands, playbook = self.setup(model, at)
        disk, kernel = self.disk(model, at, images)
        spec = MachineSpec(
            kernel=self.path(kernel, (*at, "kernel"), "file") if kernel else None,
            modules=self.path(model.modules, (*at, "modules"), "dir") if model.modules else None,
            memory_mib=model.memory,
            cpus=model.cpus,
            shares=tuple(self.share(s, (*at, "shares", i)) for i, s in enumerate(model.shares)),
            append=tuple(model.append),
            accel=Accel(model.accel),
            boot_timeout=model.boot_timeout,
            name=name,
            env=self.env(model.env, (*at, "env")),
            disk=disk,
        )
        return MachineConfig(
            name=name,
            spec=spec,
            setup=commands,
            playbook=playbook,
            modules_load=tuple(model.modules_load),
            description=model.description,
            where=self.where(at),
            provides=tuple(model.provides),
        )

    def setup(self, model: MachineModel, at: KeyPath) -> tuple[tuple[str, ...], Path | None]:
        """A machine's setup commands, or its Ansible playbook (disk-image machines)."""
        if isinstance(model.setup, PlaybookModel):
            where = (*at, "setup", "playbook")
            if model.image is None:
                self.fail(where, "a playbook needs a disk-image machine (add `image = ...`)")
            return (), self.path(model.setup.playbook, where, "file")
        for i, command in enumerate(model.setup):
            if not command.strip():
                self.fail((*at, "setup", i), "empty command")
        return tuple(model.setup), None

    def networks(
        self, models: Mapping[str, NetworkModel], machines: Mapping[str, MachineModel], lab: str
    ) -> dict[str, NetworkSpec]:
        """`[network.NAME]` tables and the machines' `networks`: subnets, then
        each machine's address and MAC on each network it joins."""
        explicit = {}
        for name, model in models.items():
            at: KeyPath = ("network", name)
            self.check_name(name, at, "network")
            if model.subnet is not None:
                try:
                    subnet = parse_subnet(model.subnet)
                except ValueError as exc:
                    self.fail((*at, "subnet"), str(exc))
                if problem := check_subnet(subnet):
                    self.fail((*at, "subnet"), problem)
                explicit[name] = subnet
        if clash := check_overlaps(explicit):
            first, second = sorted(clash, key=lambda n: self.index.line_of(("network", n)))
            line = self.index.line_of(("network", first, "subnet"))
            self.fail(
                ("network", second, "subnet"),
                f"{explicit[second]} overlaps {explicit[first]} of network {first} (line {line})",
            )
        pending = [name for name in models if name not in explicit]
        subnets = {**default_subnets(lab, pending, explicit.values()), **explicit}
        requests: dict[str, list[tuple[str, IPv4Address | None]]] = {n: [] for n in models}
        where: dict[tuple[str, str], KeyPath] = {}
        for machine, machine_model in machines.items():
            joined: dict[str, int] = {}
            for i, join in enumerate(machine_model.networks):
                at = ("machine", machine, "networks", i)
                if join.name not in models:
                    self.fail(at, _no_such("network", join.name, models))
                if join.name in joined:
                    self.fail(
                        at, f"joins network {join.name} twice (also networks[{joined[join.name]}])"
                    )
                joined[join.name] = i
                address = None
                if join.address is not None:
                    try:
                        address = parse_address(join.address)
                    except ValueError as exc:
                        self.fail((*at, "address"), str(exc))
                requests[join.name].append((machine, address))
                where[join.name, machine] = (*at, "address") if address is not None else at
        pairs = [(network, machine) for network, machine in where]
        macs = assign_macs(lab, pairs)
        networks = {}
        for name, network_model in models.items():
            try:
                addresses = assign_addresses(subnets[name], requests[name])
            except AddressError as exc:
                assert exc.machine is not None
                problem = exc.problem
                if exc.other is not None:
                    problem += f" (line {self.index.line_of(where[name, exc.other])})"
                self.fail(where[name, exc.machine], problem)
            members = tuple(
                NetworkMember(machine, addresses[machine], macs[name, machine])
                for machine in sorted(addresses)
            )
            networks[name] = NetworkSpec(
                name=name,
                subnet=subnets[name],
                members=members,
                description=network_model.description,
                where=self.where(("network", name)),
            )
        return networks

    def share(self, model: ShareModel, at: KeyPath) -> Share:
        host = self.path(model.host, at, "dir")
        guest = Path(model.guest) if model.guest else host
        if not guest.is_absolute():
            self.fail(at, f"guest path {model.guest!r} is not absolute (try /mnt/...)")
        return Share(host=host, guest=guest, writable=model.rw)

    def image(self, name: str, model: ImageModel) -> ImageSpec:
        at: KeyPath = ("image", name)
        self.check_name(name, at, "image")
        if model.distro not in IMAGE_DISTROS:
            supported = ", ".join(IMAGE_DISTROS)
            self.fail(
                (*at, "distro"), f"{model.distro!r} is not supported (supported: {supported})"
            )
        for i, package in enumerate(model.packages):
            if not IMAGE_PACKAGE_NAME.fullmatch(package):
                self.fail(
                    (*at, "packages", i),
                    f"{package!r} is not a Debian package name (lowercase letters, digits, + - .)",
                )
        if model.size < MIN_IMAGE_SIZE_MIB:
            self.fail((*at, "size"), f"{model.size}M is too small for an image (at least 512M)")
        files = []
        for guest, host in model.files.items():
            where: KeyPath = (*at, "files", guest)
            parts = guest.split("/")
            if not guest.startswith("/") or guest.rstrip("/") == "" or ".." in parts:
                self.fail(where, f"{guest!r} is not an absolute path in the guest (like /etc/motd)")
            path = Path(os.path.abspath(self.root / Path(host).expanduser()))
            if not path.exists():
                relative = (
                    "" if Path(host).is_absolute() else " (relative to the lab file's directory)"
                )
                self.fail(where, f"no such file or directory: {path}{relative}")
            files.append(("/" + "/".join(p for p in parts if p not in ("", ".")), path))
        mirror = model.mirror
        if mirror is not None and not re.fullmatch(r"(https?|file)://[^\s,]+", mirror):
            self.fail(
                (*at, "mirror"), f"{mirror!r} is not a mirror URL (like {DEFAULT_IMAGE_MIRROR})"
            )
        return ImageSpec(
            name=name,
            distro=model.distro,
            packages=tuple(model.packages),
            size_mib=model.size,
            files=tuple(files),
            script=model.script,
            mirror=mirror or DEFAULT_IMAGE_MIRROR,
            description=model.description,
            where=self.where(at),
        )

    def suite(
        self,
        name: str,
        model: SuiteModel,
        lab: LabFileModel,
        machines: Mapping[str, MachineConfig],
        provided: set[str],
    ) -> SuiteSpec:
        at: KeyPath = ("suite", name)
        self.check_name(name, at, "suite")
        machine = model.machine or lab.lab.defaults.machine
        if model.machine is not None and model.machine not in machines:
            self.fail((*at, "machine"), _no_such("machine", model.machine, machines))
        if machine is None:
            if len(machines) > 1:
                self.fail(at, f"no machine (set machine = one of: {', '.join(machines)})")
            machine = next(iter(machines))
        if model.domain is not None and not model.domain.strip():
            self.fail((*at, "domain"), "empty domain (leave it out to use the suite's name)")
        self.check_caps(model.requires, (*at, "requires"), provided, f"suite {name}")
        self.check_caps(model.provides, (*at, "provides"), None, "")
        if not model.test and model.module_cycles is None:
            self.fail(at, f"no tests (add a [[suite.{name}.test]] table)")
        seen: dict[str, int] = {}
        tests = []
        for i, test in enumerate(model.test):
            tests.append(
                self.test(
                    suite_name=name,
                    suite=model,
                    i=i,
                    model=test,
                    lab=lab,
                    machine=machine,
                    provided=provided,
                    seen=seen,
                )
            )
        if model.module_cycles is not None:
            tests.append(self.module_cycles(name, model, lab, machine, seen))
        return SuiteSpec(
            name=name,
            machine=machine,
            tests=tuple(tests),
            domain=model.domain or name,
            level=model.level,
            description=model.description,
            requires=frozenset(model.requires),
            provides=frozenset(model.provides),
            where=self.where(at),
        )

    def test(
        self,
        *,
        suite_name: str,
        suite: SuiteModel,
        i: int,
        model: TestModel,
        lab: LabFileModel,
        machine: str,
        provided: set[str],
        seen: dict[str, int],
    ) -> TestSpec:
        at: KeyPath = ("suite", suite_name, "test", i)
        self.check_name(model.name, (*at, "name"), "test")
        if model.name in seen:
            self.fail(
                (*at, "name"),
                f"duplicate test name {model.name!r} (also on line {seen[model.name]})",
            )
        seen[model.name] = self.index.line_of((*at, "name"))
        if model.run is not None and model.pytest is not None:
            self.fail((*at, "pytest"), "a test has run or pytest, not both")
        if model.run is None and model.pytest is None:
            self.fail(at, 'no run or pytest (run = "./check.sh" or pytest = "tests/test_x.py")')
        if model.pytest is not None and model.format is not None:
            self.fail((*at, "format"), "format is for run tests (pytest reports its own results)")
        if model.run is not None and not model.run.strip():
            self.fail((*at, "run"), "empty command")
        test_id = f"{suite_name}/{model.name}"
        self.check_caps(model.requires, (*at, "requires"), provided, test_id)
        self.check_caps(model.provides, (*at, "provides"), None, "")
        self.origin[test_id] = (suite_name, i)
        if model.cwd is not None:
            cwd = self.path(model.cwd, (*at, "cwd"), "dir")
        elif suite.cwd is not None:
            cwd = self.path(suite.cwd, ("suite", suite_name, "cwd"), "dir")
        else:
            cwd = self.root
        defaults = lab.lab.defaults
        suite_env = self.env(suite.env, ("suite", suite_name, "env"))
        return TestSpec(
            suite=suite_name,
            name=model.name,
            run=model.run,
            format=TestFormat(model.format or "exit"),
            pytest=self.path(model.pytest, (*at, "pytest"), "file") if model.pytest else None,
            domain=suite.domain or suite_name,
            machine=machine,
            level=model.level or suite.level,
            safety=Safety(model.safety or suite.safety or defaults.safety or "safe"),
            timeout_s=model.timeout or suite.timeout or defaults.timeout or DEFAULT_TIMEOUT_S,
            requires=frozenset(suite.requires) | frozenset(model.requires),
            provides=frozenset(suite.provides) | frozenset(model.provides),
            env=tuple({**dict(suite_env), **dict(self.env(model.env, (*at, "env")))}.items()),
            cwd=cwd,
            description=model.description,
            where=self.where(at),
        )

    def module_cycles(
        self, suite_name: str, suite: SuiteModel, lab: LabFileModel, machine: str,
        seen: dict[str, int],
    ) -> TestSpec:  # fmt: skip
        """The suite's load/unload cycle check, as one more (monitored) TAP test."""
        check = suite.module_cycles
        assert check is not None
        at: KeyPath = ("suite", suite_name, "module_cycles")
        name = "module-cycles"
        if name in seen:
            self.fail(at, f"a test is already named {name!r} (rename it to use module_cycles)")
        module = check.module
        if module.endswith(".ko") or "/" in module:
            # Relative to the lab; it need not exist yet (a test may build it).
            module = os.path.abspath(self.root / Path(module).expanduser())
        # The script travels inline: the guest may not see where vmlab is installed.
        script = resources.files("vmlab.guest").joinpath("module_cycles.sh").read_text()
        run = " ".join(
            shlex.quote(part)
            for part in (
                "sh",
                "-c",
                script,
                "module_cycles",
                module,
                str(check.cycles),
                str(check.slab_tolerance_kib),
                *check.params,
            )
        )
        defaults = lab.lab.defaults
        return TestSpec(
            suite=suite_name,
            name=name,
            run=run,
            format=TestFormat.TAP,
            domain=suite.domain or suite_name,
            machine=machine,
            level=suite.level,
            safety=Safety.MONITORED,
            timeout_s=check.timeout or suite.timeout or defaults.timeout or DEFAULT_TIMEOUT_S,
            requires=frozenset(suite.requires),
            env=self.env(suite.env, ("suite", suite_name, "env")),
            cwd=self.root,
            description=f"{check.cycles} load/unload cycles of {check.module}; slab growth",
            where=self.where(at),
        )

    def check_cycles(self, lab: Lab, model: LabFileModel) -> None:
        from_start = {
            *provided_by(lab.services),
            *(c for m in lab.machines.values() for c in m.provides),
        }
        cycle = capability_cycle(dependency_graph(lab.tests, from_start))
        if cycle is None:
            return
        first = next(t for t in lab.tests if t.test_id == cycle[0])
        second = next(t for t in lab.tests if t.test_id == cycle[1])
        capability = sorted(first.requires & second.provides)[0]
        suite_name, i = self.origin[first.test_id]
        suite = model.suite[suite_name]
        test_requires = suite.test[i].requires
        if capability in test_requires:
            at: KeyPath = ("suite", suite_name, "test", i, "requires")
            at = (*at, test_requires.index(capability))
        else:
            at = ("suite", suite_name, "requires", suite.requires.index(capability))
        self.fail(at, format_cycle(cycle))

    def services(
        self, models: Mapping[str, ServiceModel], test_provided: set[str]
    ) -> tuple[ServiceSpec, ...]:
        """`[service.NAME]` tables. They start before any test, so a service can
        require only what another service provides."""
        for_services = {cap for model in models.values() for cap in model.provides}
        services = tuple(
            self.service(name, model, for_services, test_provided) for name, model in models.items()
        )
        by_name = {service.name: service for service in services}
        cycle = capability_cycle(service_graph(services))
        if cycle is not None:
            first, second = by_name[cycle[0]], by_name[cycle[1]]
            capability = sorted(first.requires & second.provides)[0]
            at: KeyPath = ("service", first.name, "requires")
            at = (*at, models[first.name].requires.index(capability))
            if first is second:
                self.fail(at, f"service {first.name} provides {capability!r} itself")
            self.fail(at, format_cycle([f"service.{name}" for name in cycle]))
        return services

    def service(
        self, name: str, model: ServiceModel, for_services: set[str], test_provided: set[str]
    ) -> ServiceSpec:
        at: KeyPath = ("service", name)
        self.check_name(name, at, "service")
        if model.command is None and model.container is None:
            self.fail(at, 'no command (command = "./server --port 8080", or container = "IMAGE")')
        if isinstance(model.command, str):
            if not model.command.strip():
                self.fail((*at, "command"), "empty command")
            argv: tuple[str, ...] = ("/bin/sh", "-c", model.command)
        else:
            argv = tuple(model.command or ())
            if model.command is not None and (not argv or not argv[0]):
                self.fail((*at, "command"), "empty command (the array starts with a program)")
        if model.container is not None and not model.container.strip():
            self.fail((*at, "container"), "empty image name")
        self.check_caps(model.provides, (*at, "provides"), None, "")
        self.check_caps(model.requires, (*at, "requires"), None, "")
        for i, capability in enumerate(model.requires):
            if capability in for_services:
                continue
            if capability in test_provided:
                self.fail(
                    (*at, "requires", i),
                    f"{capability!r} is provided by a test, and services start before any "
                    "test (only another service can provide what a service requires)",
                )
            close = difflib.get_close_matches(capability, sorted(for_services), n=1)
            hint = (
                f"did you mean {close[0]!r}?"
                if close
                else f"add provides = [{capability!r}] to the service that sets it up"
            )
            self.fail(
                (*at, "requires", i),
                f"nothing provides {capability!r}, which service {name} needs ({hint})",
            )
        cwd = self.path(model.cwd, (*at, "cwd"), "dir") if model.cwd is not None else self.root
        return ServiceSpec(
            name=name,
            argv=argv,
            cwd=cwd,
            env=self.env(model.env, (*at, "env")),
            ready=self.ready(model.ready, (*at, "ready")),
            ready_timeout_s=model.ready_timeout or DEFAULT_READY_TIMEOUT_S,
            stop_timeout_s=model.stop_timeout or DEFAULT_STOP_TIMEOUT_S,
            requires=frozenset(model.requires),
            provides=frozenset(model.provides),
            container=model.container,
            cwd_given=model.cwd is not None,
            description=model.description,
            where=self.where(at),
        )

    def ready(self, model: ReadyModel | None, at: KeyPath) -> ReadyCheck | None:
        if model is None:
            return None
        given = {"tcp": model.tcp, "log": model.log, "cmd": model.cmd}
        kinds = [kind for kind, value in given.items() if value is not None]
        if not kinds:
            self.fail(at, 'no check (write { tcp = PORT }, { log = "REGEX" } or { cmd = "..." })')
        if len(kinds) > 1:
            self.fail((*at, kinds[1]), f"one check only, not {' and '.join(kinds)}")
        if model.host is not None and model.tcp is None:
            self.fail((*at, "host"), "host goes with tcp ({ tcp = PORT, host = ADDRESS })")
        if model.tcp is not None:
            host = "127.0.0.1" if model.host is None else model.host.strip()
            if not host:
                self.fail((*at, "host"), "empty host (leave it out for 127.0.0.1)")
            return TcpReady(port=model.tcp, host=host)
        if model.log is not None:
            if not model.log:
                self.fail((*at, "log"), "empty pattern (it would match any line)")
            try:
                re.compile(model.log)
            except re.error as exc:
                self.fail((*at, "log"), f"{model.log!r} is not a regular expression: {exc.msg}")
            return LogReady(model.log)
        assert model.cmd is not None
        if not model.cmd.strip():
            self.fail((*at, "cmd"), "empty command")
        return CmdReady(model.cmd)

    def check_caps(
        self, names: list[str], at: KeyPath, provided: set[str] | None, needed_by: str
    ) -> None:
        for i, name in enumerate(names):
            if not _CAPABILITY.fullmatch(name):
                self.fail((*at, i), f"{name!r} is not a capability name (like 'tinyfs.loaded')")
            if provided is not None and name not in provided:
                close = difflib.get_close_matches(name, sorted(provided), n=1)
                hint = (
                    f"did you mean {close[0]!r}?"
                    if close
                    else f"add provides = [{name!r}] to the test or suite that sets it up"
                )
                self.fail((*at, i), f"nothing provides {name!r}, which {needed_by} needs ({hint})")

    def check_name(self, name: str, at: KeyPath, what: str) -> None:
        if not _NAME.fullmatch(name):
            self.fail(at, f"{name!r} is not a valid {what} name (use letters, digits, _ - .)")

    def env(self, env: Mapping[str, str], at: KeyPath) -> tuple[tuple[str, str], ...]:
        for name in env:
            if not _ENV_NAME.fullmatch(name):
                self.fail((*at, name), f"{name!r} is not an environment variable name")
        return tuple(env.items())

    def path(self, value: str, at: KeyPath, kind: Literal["file", "dir"]) -> Path:
        given = Path(value).expanduser()
        path = Path(os.path.abspath(self.root / given))
        if path.is_file() if kind == "file" else path.is_dir():
            return path
        what = "file" if kind == "file" else "directory"
        relative = "" if given.is_absolute() else " (relative to the lab file's directory)"
        self.fail(at, f"no such {what}: {path}{relative}")


def _with_nics(config: MachineConfig, networks: Iterable[NetworkSpec]) -> MachineConfig:
    """The machine with a NIC on each of `networks` (its `networks`, in order)."""
    nics = tuple(network.nic(config.name) for network in networks)
    if not nics:
        return config
    return replace(config, spec=replace(config.spec, nics=nics))


def _no_such(what: str, name: str, known: Iterable[str]) -> str:
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        hint = f"did you mean {close[0]!r}?"
    elif known:
        hint = f"known: {', '.join(known)}"
    else:
        hint = f"declare [{what}.{name}]" if what in ("image", "network") else "none declared"
    return f"no {what} named {name!r} ({hint})"
