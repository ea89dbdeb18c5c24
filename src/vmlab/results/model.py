"""The one result model: what a test did, and what a run was.

Everything downstream of a session (the store, JUnit, JSON, HTML, metrics) reads
these records and nothing else. They are frozen, hold only JSON-safe values and
survive `from_json(to_json())` exactly, because results cross a Dask cluster.

Times are timezone-aware UTC `datetime`s; a naive one is refused, since nobody
could tell later which clock it came from.
"""

from __future__ import annotations

import enum
import json
import math
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Self


class Outcome(enum.StrEnum):
    """How a test ended, in order of severity: when several apply, the worst wins.

    PASSED < SKIPPED < FAILED < TIMEOUT < HANG < CRASH < ERROR. A crash outranks a
    plain failure because it explains it; ERROR (the lab or the infrastructure
    broke, not the code under test) outranks everything because nothing about
    the test can be trusted then.
    """

    PASSED = "passed"
    SKIPPED = "skipped"
    FAILED = "failed"  # the test said no
    TIMEOUT = "timeout"  # the test outlived its timeout
    HANG = "hang"  # the guest stopped making progress (watchdog, silence)
    CRASH = "crash"  # the guest kernel oopsed or panicked during the test
    ERROR = "error"  # the lab or infrastructure failed, not the code under test

    @property
    def severity(self) -> int:
        """0 for PASSED, growing with how bad the outcome is."""
        return _SEVERITY[self]

    @property
    def ok(self) -> bool:
        """True for outcomes that do not fail a run (PASSED, SKIPPED)."""
        return self in (Outcome.PASSED, Outcome.SKIPPED)

    @classmethod
    def worst(cls, *outcomes: Outcome) -> Outcome:
        """The most severe of `outcomes`; PASSED when there are none."""
        return max(outcomes, key=_SEVERITY.__getitem__, default=Outcome.PASSED)


_SEVERITY: dict[Outcome, int] = {outcome: rank for rank, outcome in enumerate(Outcome)}


class RunStatus(enum.StrEnum):
    """How a run ended. RUNNING while it goes on (or when vmlab was killed)."""

    RUNNING = "running"
    COMPLETED = "completed"  # every selected test ran (whatever their outcomes)
    INTERRUPTED = "interrupted"  # Ctrl-C or SIGTERM: what finished is kept
    FAILED = "failed"  # vmlab itself gave up (infrastructure), see the results


@dataclass(frozen=True)
class VmSpec:
    """The machine a test ran on, as far as its result needs to say."""

    memory_mib: int
    cpus: int
    kernel: str  # the kernel release (or the path booted when unknown)


@dataclass(frozen=True)
class CrashInfo:
    """A guest kernel crash pinned to a test (filled in by crash detection)."""

    title: str  # one line: "BUG: kernel NULL pointer dereference, address: 0000000000000000"
    kind: str  # oops, panic, bug, warning, lockdep, kasan, ...
    signature: str  # stable across runs: the same bug gives the same signature
    report: str = ""  # the console lines of the crash report


@dataclass(frozen=True)
class TestResult:
    """What one test (or one TAP/KTAP/JUnit subtest) did."""

    __test__ = False  # not a pytest test class

    test_id: str  # "suite/sub/test"
    suite: str
    domain: str  # kernel_module, filesystem, performance, ...
    level: int  # 1 smoke, 2 integration, 3 stress
    safety: str  # safe, monitored, risky, dangerous
    machine: str  # the lab's machine name
    vm: VmSpec
    start: datetime  # UTC
    duration_s: float
    outcome: Outcome
    message: str = ""  # one line: why it failed, skipped or errored
    output_tail: str = ""  # the end of the guest output, for reports
    artifacts: dict[str, str] = field(default_factory=dict)  # name -> file path
    metrics: dict[str, float] = field(default_factory=dict)
    crash: CrashInfo | None = None
    attempt: int = 1
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", _utc(self.start, "start"))
        object.__setattr__(self, "outcome", Outcome(self.outcome))
        object.__setattr__(self, "duration_s", float(self.duration_s))
        object.__setattr__(self, "metrics", {k: float(v) for k, v in self.metrics.items()})
        if self.duration_s < 0 or math.isnan(self.duration_s):
            raise ValueError(f"{self.test_id}: duration_s must be >= 0, not {self.duration_s}")

    @property
    def end(self) -> datetime:
        return self.start + timedelta(seconds=self.duration_s)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict that `from_dict` turns back into an equal result."""
        return {
            "test_id": self.test_id,
            "suite": self.suite,
            "domain": self.domain,
            "level": self.level,
            "safety": self.safety,
            "machine": self.machine,
            "vm": {
                "memory_mib": self.vm.memory_mib,
                "cpus": self.vm.cpus,
                "kernel": self.vm.kernel,
            },
            "start": self.start.isoformat(),
            "duration_s": self.duration_s,
            "outcome": self.outcome.value,
            "message": self.message,
            "output_tail": self.output_tail,
            "artifacts": dict(self.artifacts),
            "metrics": dict(self.metrics),
            "crash": None if self.crash is None else _crash_to_dict(self.crash),
            "attempt": self.attempt,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        r = _Reader(data, "test result")
        vm = _Reader(r.get_mapping("vm"), "test result.vm")
        crash = r.get_optional_mapping("crash")
        return cls(
            test_id=r.get_str("test_id"),
            suite=r.get_str("suite"),
            domain=r.get_str("domain"),
            level=r.get_int("level"),
            safety=r.get_str("safety"),
            machine=r.get_str("machine"),
            vm=VmSpec(
                memory_mib=vm.get_int("memory_mib"),
                cpus=vm.get_int("cpus"),
                kernel=vm.get_str("kernel"),
            ),
            start=r.get_datetime("start"),
            duration_s=r.get_float("duration_s"),
            outcome=r.get_outcome("outcome"),
            message=r.get_str("message", ""),
            output_tail=r.get_str("output_tail", ""),
            artifacts=r.get_str_dict("artifacts"),
            metrics=r.get_float_dict("metrics"),
            crash=None if crash is None else crash_from_dict(crash),
            attempt=r.get_int("attempt", 1),
            extra=r.get_str_dict("extra"),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> Self:
        return cls.from_dict(_load_object(text, "test result"))


@dataclass(frozen=True)
class RunRecord:
    """One `vmlab test` run: where and how it ran, and every result it produced."""

    run_id: str  # sortable, see new_run_id()
    start: datetime  # UTC
    host: str
    accel: str  # kvm or tcg
    qemu_version: str
    kernel_release: str
    kernel_config_hash: str
    lab_hash: str  # hash of the lab file's bytes
    command_line: tuple[str, ...] = ()
    environment: dict[str, str] = field(default_factory=dict)
    git_commit: str | None = None  # of the lab's directory, when it is a git work tree
    end: datetime | None = None
    status: RunStatus = RunStatus.RUNNING
    results: tuple[TestResult, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", _utc(self.start, "start"))
        if self.end is not None:
            object.__setattr__(self, "end", _utc(self.end, "end"))
        object.__setattr__(self, "status", RunStatus(self.status))
        object.__setattr__(self, "command_line", tuple(self.command_line))
        object.__setattr__(self, "results", tuple(self.results))

    @property
    def duration_s(self) -> float | None:
        """Wall time of the run, None while it has no end."""
        return None if self.end is None else (self.end - self.start).total_seconds()

    @property
    def outcome(self) -> Outcome:
        """The worst outcome of all results (PASSED for an empty run)."""
        return Outcome.worst(*(r.outcome for r in self.results))

    def counts(self) -> dict[Outcome, int]:
        """How many results ended with each outcome (every outcome present, maybe 0)."""
        return count_outcomes(self.results)

    def domains(self) -> list[str]:
        """The domains of the results, in order of first appearance."""
        return list(dict.fromkeys(r.domain for r in self.results))

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "start": self.start.isoformat(),
            "end": None if self.end is None else self.end.isoformat(),
            "status": self.status.value,
            "host": self.host,
            "accel": self.accel,
            "qemu_version": self.qemu_version,
            "kernel_release": self.kernel_release,
            "kernel_config_hash": self.kernel_config_hash,
            "lab_hash": self.lab_hash,
            "git_commit": self.git_commit,
            "command_line": list(self.command_line),
            "environment": dict(self.environment),
            "results": [r.to_dict() for r in self.results],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        r = _Reader(data, "run")
        results = r.get_list("results")
        return cls(
            run_id=r.get_str("run_id"),
            start=r.get_datetime("start"),
            end=r.get_optional_datetime("end"),
            status=RunStatus(r.get_str("status")),
            host=r.get_str("host"),
            accel=r.get_str("accel"),
            qemu_version=r.get_str("qemu_version"),
            kernel_release=r.get_str("kernel_release"),
            kernel_config_hash=r.get_str("kernel_config_hash"),
            lab_hash=r.get_str("lab_hash"),
            git_commit=r.get_optional_str("git_commit"),
            command_line=tuple(r.get_str_list("command_line")),
            environment=r.get_str_dict("environment"),
            results=tuple(TestResult.from_dict(_as_mapping(x, "run.results[]")) for x in results),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> Self:
        return cls.from_dict(_load_object(text, "run"))


def new_run_id(now: datetime | None = None) -> str:
    """A run id that sorts by time: `20261121-030102-ab12` (UTC, plus 16 random bits)."""
    when = _utc(now, "now") if now is not None else datetime.now(UTC)
    return f"{when:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def count_outcomes(results: Iterable[TestResult]) -> dict[Outcome, int]:
    """How many of `results` ended with each outcome (every outcome present, maybe 0)."""
    counts = dict.fromkeys(Outcome, 0)
    for result in results:
        counts[result.outcome] += 1
    return counts


def crash_from_dict(data: Mapping[str, Any]) -> CrashInfo:
    c = _Reader(data, "crash")
    return CrashInfo(
        title=c.get_str("title"),
        kind=c.get_str("kind"),
        signature=c.get_str("signature"),
        report=c.get_str("report", ""),
    )


def _crash_to_dict(crash: CrashInfo) -> dict[str, str]:
    return {
        "title": crash.title,
        "kind": crash.kind,
        "signature": crash.signature,
        "report": crash.report,
    }


def _utc(value: datetime, what: str) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"{what}: expected a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what}: naive datetime {value.isoformat()} (give it tzinfo=UTC)")
    return value.astimezone(UTC)


def _load_object(text: str | bytes, what: str) -> Mapping[str, Any]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{what}: not JSON: {exc}") from exc
    return _as_mapping(data, what)


def _as_mapping(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{what}: expected an object, not {type(value).__name__}")
    return value


_MISSING: Any = object()


class _Reader:
    """Typed access to a decoded JSON object, with one-line errors naming the field."""

    def __init__(self, data: Mapping[str, Any], what: str) -> None:
        self._data = data
        self._what = what

    def _get(self, key: str, default: Any) -> Any:
        if key in self._data:
            return self._data[key]
        if default is _MISSING:
            raise ValueError(f"{self._what}: missing field {key!r}")
        return default

    def _bad(self, key: str, expected: str, value: object) -> ValueError:
        return ValueError(
            f"{self._what}: field {key!r}: expected {expected}, not {type(value).__name__}"
        )

    def get_str(self, key: str, default: Any = _MISSING) -> str:
        value = self._get(key, default)
        if not isinstance(value, str):
            raise self._bad(key, "a string", value)
        return value

    def get_optional_str(self, key: str) -> str | None:
        value = self._get(key, None)
        return None if value is None else self.get_str(key)

    def get_int(self, key: str, default: Any = _MISSING) -> int:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._bad(key, "an integer", value)
        return value

    def get_float(self, key: str) -> float:
        value = self._get(key, _MISSING)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._bad(key, "a number", value)
        return float(value)

    def get_datetime(self, key: str) -> datetime:
        text = self.get_str(key)
        try:
            value = datetime.fromisoformat(text)
        except ValueError as exc:
            raise ValueError(f"{self._what}: field {key!r}: {text!r} is not ISO 8601") from exc
        return _utc(value, f"{self._what}.{key}")

    def get_optional_datetime(self, key: str) -> datetime | None:
        return None if self._get(key, None) is None else self.get_datetime(key)

    def get_outcome(self, key: str) -> Outcome:
        text = self.get_str(key)
        try:
            return Outcome(text)
        except ValueError:
            raise ValueError(f"{self._what}: field {key!r}: unknown outcome {text!r}") from None

    def get_mapping(self, key: str) -> Mapping[str, Any]:
        value = self._get(key, _MISSING)
        if not isinstance(value, dict):
            raise self._bad(key, "an object", value)
        return value

    def get_optional_mapping(self, key: str) -> Mapping[str, Any] | None:
        return None if self._get(key, None) is None else self.get_mapping(key)

    def get_list(self, key: str) -> list[Any]:
        value = self._get(key, [])
        if not isinstance(value, list):
            raise self._bad(key, "a list", value)
        return value

    def get_str_list(self, key: str) -> list[str]:
        items = self.get_list(key)
        if not all(isinstance(x, str) for x in items):
            raise self._bad(key, "a list of strings", items)
        return items

    def get_str_dict(self, key: str) -> dict[str, str]:
        value = self._get(key, {})
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise self._bad(key, "an object of strings", value)
        return dict(value)

    def get_float_dict(self, key: str) -> dict[str, float]:
        value = self._get(key, {})
        if not isinstance(value, dict) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value.values()
        ):
            raise self._bad(key, "an object of numbers", value)
        return {k: float(v) for k, v in value.items()}
