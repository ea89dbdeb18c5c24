"""The lab file's shape: pydantic models, and their errors as one readable phrase.

This is the edge of house rule 2: these models check types and shapes only; the
loader in `vmlab.config` checks meaning (machines that exist, files that exist,
capabilities) and resolves everything into frozen specs.
"""

from __future__ import annotations

import datetime
import difflib
import re
import types
import typing
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    TypeAdapter,
)
from pydantic_core import ErrorDetails

from vmlab.config_toml import KeyPath
from vmlab.errors import UsageError
from vmlab.units import parse_size_mib

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_DURATION_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

# Keys that later parts of vmlab will accept; until then, say so instead of "unknown".
NOT_YET: dict[str, str] = {}


def _size(value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"expected a size like 512M or 2G, got {describe(value)}")
    try:
        return parse_size_mib(value, what="size")
    except UsageError as exc:
        raise ValueError(exc.message.removeprefix("size: ")) from None


def parse_duration(value: object) -> float:
    """Seconds from `90`, `1.5`, `"90s"`, `"5m"`, `"1h30m"` or `"500ms"`."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().replace(" ", "")
        pieces = list(_DURATION.finditer(text))
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            seconds = float(text)
        elif pieces and "".join(p.group() for p in pieces) == text:
            seconds = sum(float(p.group(1)) * _DURATION_SECONDS[p.group(2)] for p in pieces)
        else:
            raise ValueError(f"{value!r} is not a duration (try 90s, 5m or 1h)")
    else:
        raise ValueError(f"expected a duration like 90s or 5m, got {describe(value)}")
    if seconds <= 0:
        raise ValueError(f"{value!r} is not a positive duration (try 90s, 5m or 1h)")
    return seconds


def _share(value: object) -> object:
    """`"HOST[:GUEST][:rw]"` -> the table form; tables pass through."""
    if not isinstance(value, str):
        return value
    parts = value.split(":")
    mode = parts.pop() if len(parts) > 1 and parts[-1] in ("rw", "ro") else "ro"
    if len(parts) > 2 or not parts[0]:
        raise ValueError(
            f"{value!r} is not a share (write 'HOST[:GUEST][:rw]', or a table "
            "{host = ..., guest = ...} for paths with ':')"
        )
    table: dict[str, object] = {"host": parts[0], "rw": mode == "rw"}
    if len(parts) == 2:
        table["guest"] = parts[1]
    return table


def _one_or_many(value: object) -> object:
    return [value] if isinstance(value, str) else value


def _network_join(value: object) -> object:
    """`"lan"` -> `{name = "lan"}`; tables pass through."""
    if isinstance(value, str):
        return {"name": value}
    if isinstance(value, dict):
        return value
    raise ValueError(
        f'expected a network name or a table {{ name = "lan", address = "10.77.0.10" }}, '
        f"got {describe(value)}"
    )


def _level(value: int) -> int:
    if value not in (1, 2, 3):
        raise ValueError(f"{value} is not a level (1 smoke, 2 integration, 3 stress)")
    return value


def _positive(value: int) -> int:
    if value < 1:
        raise ValueError(f"{value} is too small (at least 1)")
    return value


Size = Annotated[int, BeforeValidator(_size)]
Seconds = Annotated[float, BeforeValidator(parse_duration)]
Level = Annotated[int, AfterValidator(_level)]
Count = Annotated[int, AfterValidator(_positive)]
Lines = Annotated[list[str], BeforeValidator(_one_or_many)]
SafetyName = Literal["safe", "monitored", "risky", "dangerous"]
FormatName = Literal["exit", "tap", "ktap", "junit"]
AccelName = Literal["auto", "kvm", "tcg"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class DefaultsModel(_Model):
    """`[lab.defaults]`."""

    machine: str | None = None
    timeout: Seconds | None = None
    safety: SafetyName | None = None


class LabModel(_Model):
    """`[lab]`."""

    name: str | None = None
    description: str = ""
    defaults: DefaultsModel = DefaultsModel()


class ShareModel(_Model):
    """One entry of `machine.NAME.shares` (a string is turned into this first)."""

    host: str
    guest: str | None = None
    rw: bool = False


class PlaybookModel(_Model):
    """`setup = { playbook = "site.yml" }`: an Ansible playbook run from the host."""

    playbook: str


_COMMANDS: TypeAdapter[list[str]] = TypeAdapter(list[str], config=ConfigDict(strict=True))


def _setup(value: object) -> list[str] | PlaybookModel:
    """`setup`: a command, an array of commands, or `{ playbook = "site.yml" }`
    (their errors keep their place: `setup[1]`, `setup.playbook`)."""
    if isinstance(value, dict):
        return PlaybookModel.model_validate(value)
    if isinstance(value, str | list):
        return _COMMANDS.validate_python(_one_or_many(value))
    raise ValueError(
        f'expected a shell command, an array of them, or {{ playbook = "site.yml" }}, '
        f"got {describe(value)}"
    )


class NetworkModel(_Model):
    """`[network.NAME]`: a private L2 network between machines."""

    description: str = ""
    subnet: str | None = None  # default: a /24 picked from the lab's and network's names


class NetworkJoinModel(_Model):
    """One entry of `machine.NAME.networks` (a string is turned into this first)."""

    name: str
    address: str | None = None  # default: the next free one from .10 in machine-name order


class MachineModel(_Model):
    """`[machine.NAME]`."""

    description: str = ""
    kernel: str | None = None
    modules: str | None = None
    memory: Size = 512
    cpus: Count = 1
    accel: AccelName = "auto"
    boot_timeout: Seconds | None = None
    append: Lines = Field(default_factory=list)
    shares: list[Annotated[ShareModel, BeforeValidator(_share)]] = Field(default_factory=list)
    modules_load: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    setup: Annotated[list[str] | PlaybookModel, PlainValidator(_setup)] = Field(
        default_factory=list
    )  # shell commands, or { playbook = "site.yml" } (disk-image machines)
    networks: list[Annotated[NetworkJoinModel, BeforeValidator(_network_join)]] = Field(
        default_factory=list
    )
    # Disk-image machines (any of these makes one; `image` is required then).
    image: str | None = None  # an [image.NAME], or a qcow2/raw file the user brings
    root: str | None = None  # the root filesystem when vmlab boots the kernel itself
    user: str | None = None  # the user cloud-init creates (vmlab logs in as root)
    user_data: str | dict[str, Any] | None = None  # a #cloud-config file, or inline
    internet: bool | None = None  # a route out through user networking
    ssh_port: int | None = Field(default=None, ge=1024, le=65535)
    provides: list[str] = Field(default_factory=list)  # up for the whole run: a server


class TestModel(_Model):
    """One `[[suite.NAME.test]]`."""

    __test__ = False  # not a pytest class

    name: str
    description: str = ""
    run: str | None = None
    format: FormatName | None = None
    pytest: str | None = None
    cwd: str | None = None
    level: Level | None = None
    timeout: Seconds | None = None
    safety: SafetyName | None = None
    requires: list[str] = Field(default_factory=list)
    provides: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)


class ModuleCyclesModel(_Model):
    """`[suite.NAME.module_cycles]`: a load/unload cycle check of one module."""

    module: str  # a .ko path (relative to the lab) or a module name
    params: list[str] = Field(default_factory=list)  # PARAM=VALUE given to every load
    cycles: int = Field(default=10, ge=2, le=10000)
    slab_tolerance_kib: int = Field(default=256, ge=0)  # unreclaimable slab growth allowed
    timeout: Seconds | None = None


class SuiteModel(_Model):
    """`[suite.NAME]`."""

    description: str = ""
    domain: str | None = None
    machine: str | None = None
    level: Level = 1
    cwd: str | None = None
    timeout: Seconds | None = None
    safety: SafetyName | None = None
    requires: list[str] = Field(default_factory=list)
    provides: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    test: list[TestModel] = Field(default_factory=list)
    module_cycles: ModuleCyclesModel | None = None


def _port(value: int) -> int:
    if not 1 <= value <= 65535:
        raise ValueError(f"{value} is not a TCP port (1 to 65535)")
    return value


def _command(value: object) -> object:
    """A service's command: a string (run by /bin/sh -c) or an array of strings."""
    if isinstance(value, str) or (
        isinstance(value, list) and all(isinstance(item, str) for item in value)
    ):
        return value
    if isinstance(value, list):
        bad = next(item for item in value if not isinstance(item, str))
        raise ValueError(f"expected an array of strings, got {describe(bad)} in it")
    raise ValueError(f"expected a string or an array of strings, got {describe(value)}")


class ReadyModel(_Model):
    """A service's `ready`: one of tcp (with host), log, cmd (the loader checks)."""

    tcp: Annotated[int, AfterValidator(_port)] | None = None
    host: str | None = None
    log: str | None = None
    cmd: str | None = None


class ServiceModel(_Model):
    """`[service.NAME]`."""

    description: str = ""
    command: Annotated[str | list[str], BeforeValidator(_command)] | None = None
    cwd: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    ready: ReadyModel | None = None
    ready_timeout: Seconds | None = None
    stop_timeout: Seconds | None = None
    requires: list[str] = Field(default_factory=list)
    provides: list[str] = Field(default_factory=list)
    container: str | None = None


class ImageModel(_Model):
    """`[image.NAME]`: a disk image that `vmlab image build` makes."""

    description: str = ""
    distro: str = "debian:bookworm"
    packages: list[str] = Field(default_factory=list)
    size: Size = 2048
    files: dict[str, str] = Field(default_factory=dict)  # guest path -> host path
    script: str = ""
    mirror: str | None = None


class LabFileModel(_Model):
    """A whole `vmlab.toml`."""

    lab: LabModel = LabModel()
    machine: dict[str, MachineModel] = Field(default_factory=dict)
    suite: dict[str, SuiteModel] = Field(default_factory=dict)
    image: dict[str, ImageModel] = Field(default_factory=dict)
    service: dict[str, ServiceModel] = Field(default_factory=dict)
    network: dict[str, NetworkModel] = Field(default_factory=dict)


# ---------------------------------------------------------------- error messages

_EXPECTED = {
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "string_type": "a string",
    "bool_type": "true or false",
    "list_type": "an array",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
}


def describe(value: object) -> str:
    """A value as the TOML user wrote it: `string 'x'`, `integer 3`, `a table`."""
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, int | float):
        return f"{'integer' if isinstance(value, int) else 'float'} {value}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, datetime.date | datetime.time):
        return f"date/time {value}"
    return type(value).__name__


def explain(error: ErrorDetails) -> str:
    """One pydantic error -> `what is wrong (hint)`, in the lab file's words."""
    kind, value, loc = error["type"], error.get("input"), error["loc"]
    ctx = error.get("ctx") or {}
    key = loc[-1] if loc else ""
    if kind == "extra_forbidden":
        return _unknown_key(loc)
    if kind == "missing":
        return "missing (this key is required)"
    if kind == "value_error" and "error" in ctx:
        return str(ctx["error"])
    if kind == "literal_error":
        choices = str(ctx.get("expected", "")).replace(" or ", ", ").replace("'", "")
        shown = repr(value) if isinstance(value, str) else describe(value)
        return f"{shown} is not one of: {choices}"
    if kind in _EXPECTED:
        message = f"expected {_EXPECTED[kind]}, got {describe(value)}"
        if kind == "string_type" and isinstance(value, int | float | bool):
            text = str(value).lower() if isinstance(value, bool) else str(value)
            return f'{message} (quote it: "{text}")'
        if kind == "list_type" and key == "test" and isinstance(value, dict):
            return f"{message} (write each test as a [[suite.NAME.test]] table)"
        if kind == "list_type" and isinstance(value, str):
            return f'{message} (write ["{value}"])'
        return message
    return str(error["msg"]).lower()


def _unknown_key(loc: tuple[int | str, ...]) -> str:
    key = str(loc[-1])
    if len(loc) == 1 and key in NOT_YET:
        return f"unknown key ({NOT_YET[key]})"
    known = fields_at(LabFileModel, loc[:-1])
    if len(loc) == 3 and loc[0] == "machine" and key in NOT_YET:
        return f"unknown key ({NOT_YET[key]})"
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"unknown key (did you mean {close[0]!r}?)"
    return f"unknown key (known keys: {', '.join(known)})" if known else "unknown key"


def fields_at(model: type[BaseModel], loc: KeyPath) -> list[str]:
    """The keys allowed in the table at `loc` (empty if `loc` is not a table)."""
    annotation: Any = model
    for part in loc:
        annotation = _unwrap(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(str(part))
            if field is None:
                return []
            annotation = field.annotation
        elif typing.get_origin(annotation) in (dict, list):
            annotation = typing.get_args(annotation)[-1]
        else:
            return []
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return list(annotation.model_fields)
    return []


def _unwrap(annotation: Any) -> Any:
    """Strip `Annotated[...]` and `X | None` down to `X`."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation
