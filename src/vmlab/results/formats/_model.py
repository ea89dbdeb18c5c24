"""The records every format parser returns, and the small helpers they share."""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field


class SubOutcome(enum.StrEnum):
    """How one test inside a guest command's output ended."""

    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"
    # An expected failure: TAP `not ok # TODO`, KTAP/kselftest `# XFAIL`, pytest
    # xfail, node's todo. It counts as passed, with the reason as a note.
    TODO_FAILED = "todo_failed"
    ERROR = "error"  # the test could not run or never reported (see the message)

    @property
    def ok(self) -> bool:
        """True for outcomes that do not fail the guest test (passed, skipped, todo)."""
        return self in (SubOutcome.PASSED, SubOutcome.SKIPPED, SubOutcome.TODO_FAILED)


@dataclass(frozen=True)
class SubResult:
    """One test found in a guest command's output."""

    path: tuple[str, ...]  # names from the outermost to this test; () = the whole command
    outcome: SubOutcome
    message: str = ""  # one line: skip/todo reason, failure diagnostic, or ""
    diagnostics: str = ""  # the YAML block / '#' lines / failure text attached to it, verbatim
    metrics: dict[str, float] = field(default_factory=dict)
    duration_s: float | None = None


@dataclass(frozen=True)
class ParsedOutput:
    """Everything a parser found in one guest command's output."""

    results: tuple[SubResult, ...]  # leaves only, in output order
    planned: int | None  # the top-level plan (TAP/KTAP) or declared tests= (JUnit)
    problems: tuple[str, ...]  # things wrong with the output itself, one line each
    bailed_out: bool = False

    @property
    def ok(self) -> bool:
        """True when the output is sound and every result is ok."""
        return not self.problems and not self.bailed_out and all(r.outcome.ok for r in self.results)


# `# metric NAME=VALUE [UNIT]`, also with KUnit's `# test_name: ` in front of it.
METRIC_LINE = re.compile(
    r"^\s*#?\s*(?:\S+:\s+)?metric\s+(?P<name>[A-Za-z_][\w.:-]*)\s*=\s*(?P<value>\S+)"
    r"(?:\s+(?P<unit>\S.*?))?\s*$"
)


def metrics_from_lines(lines: Iterable[str], where: str, problems: list[str]) -> dict[str, float]:
    """Metrics from `# metric NAME=VALUE [UNIT]` lines; a bad value becomes a problem.

    The unit is not kept (results hold plain floats); the line itself stays in the
    diagnostics. A later line with the same name wins.
    """
    metrics: dict[str, float] = {}
    for line in lines:
        m = METRIC_LINE.match(line)
        if m is None:
            continue
        name, raw = m["name"], m["value"]
        try:
            value = float(raw)
        except ValueError:
            problems.append(f"{where}: metric {name}: {raw!r} is not a number")
            continue
        if not math.isfinite(value):
            problems.append(f"{where}: metric {name}: {raw!r} is not a finite number")
            continue
        metrics[name] = value
    return metrics


def one_line(text: str, limit: int = 300) -> str:
    """The first non-empty line of `text`, stripped and cut to `limit` characters."""
    for raw in text.splitlines():
        line = raw.strip()
        if line:
            return line if len(line) <= limit else line[: limit - 3] + "..."
    return ""
