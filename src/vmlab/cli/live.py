"""The run's progress: a Rich live view on a terminal, plain lines elsewhere.

It only listens to session events; it never drives anything.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from vmlab.results.model import Outcome
from vmlab.services import ServiceEvent, ServiceReady, ServiceStarted, ServiceStopped
from vmlab.session import Event, JobFinished, MachineBooting, TestFinished, TestStarted

_STYLE = {
    Outcome.PASSED: "green",
    Outcome.SKIPPED: "yellow",
    Outcome.FAILED: "red",
    Outcome.TIMEOUT: "red",
    Outcome.HANG: "red",
    Outcome.CRASH: "bold red",
    Outcome.ERROR: "magenta",
}


@dataclass
class Progress:
    """Counts and what each job is doing, fed by events."""

    total: int
    estimate_s: float
    started: float = field(default_factory=time.monotonic)
    counts: dict[Outcome, int] = field(default_factory=lambda: dict.fromkeys(Outcome, 0))
    doing: dict[str, str] = field(default_factory=dict)  # job -> "machine: test"
    done_tests: set[str] = field(default_factory=set)

    def apply(self, event: Event) -> None:
        if isinstance(event, MachineBooting):
            self.doing[event.job] = f"{event.machine}: booting"
        elif isinstance(event, TestStarted):
            self.doing[event.job] = f"{event.machine}: {event.test_id}"
        elif isinstance(event, JobFinished):
            self.doing.pop(event.job, None)
        elif isinstance(event, TestFinished):
            self.counts[event.result.outcome] += 1
            # Subtests share their plan test's id prefix "suite/test".
            self.done_tests.add("/".join(event.result.test_id.split("/")[:2]))

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def eta(self) -> float | None:
        done = len(self.done_tests)
        if done == 0:
            return self.estimate_s or None
        return max(0.0, self.elapsed / done * (self.total - done))

    def summary(self) -> Text:
        text = Text()
        for outcome, count in self.counts.items():
            if count:
                text.append(f"{count} {outcome.value}  ", style=_STYLE[outcome])
        eta = self.eta()
        text.append(f"elapsed {self.elapsed:.0f}s")
        if eta is not None:
            text.append(f"  eta {eta:.0f}s")
        return text


class LiveView:
    """Shows progress; use as a context manager and pass `on_event` to sessions."""

    def __init__(self, progress: Progress, stream: TextIO | None = None) -> None:
        self.progress = progress
        self.stream = stream or sys.stdout
        self.console = Console(file=self.stream)
        self._live: Live | None = None

    def __enter__(self) -> LiveView:
        if self.console.is_terminal:
            self._live = Live(self._render(), console=self.console, refresh_per_second=4)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.update(self._render())
            self._live.__exit__(None, None, None)

    def on_event(self, event: Event | ServiceEvent) -> None:
        if isinstance(event, ServiceStarted | ServiceReady | ServiceStopped):
            self._print(_service_line(event))
            return
        self.progress.apply(event)
        if isinstance(event, TestFinished):
            result = event.result
            line = Text(f"{result.outcome.value.upper():8} ", style=_STYLE[result.outcome])
            line.append(f"{result.test_id} ({result.duration_s:.1f}s)")
            if result.message and not result.outcome.ok:
                line.append(f"  {result.message}", style="dim")
            self._print(line)
        if self._live is not None:
            self._live.update(self._render())

    def _print(self, line: Text) -> None:
        if self._live is not None:
            self._live.console.print(line)
        else:
            self.console.print(line, highlight=False, soft_wrap=True)

    def _render(self) -> Group:
        table = Table.grid(padding=(0, 2))
        for job, doing in sorted(self.progress.doing.items()):
            table.add_row(Text(job, style="bold"), Text(doing))
        return Group(table, self.progress.summary())


def _service_line(event: ServiceEvent) -> Text:
    """`SERVICE  nfs: ready (tcp 127.0.0.1:2049, 0.4s)`, and the like."""
    text = Text(f"{'SERVICE':8} ", style="cyan")
    if isinstance(event, ServiceStarted):
        text.append(f"{event.service}: started (pid {event.pid}, log {event.log})")
    elif isinstance(event, ServiceReady):
        text.append(f"{event.service}: ready ({event.check}, {event.seconds:.1f}s)")
    else:
        text.append(f"{event.service}: {event.how}")
    return text
