"""From a lab and a selection to a plan: which tests run, in which VMs, in what order.

Pure: no I/O, no clock. The rules (docs/lab-file.md explains them to users):

- Selection: tests of level <= `level`, of the named suites (all when none are
  named), whose id matches `-k` (`keyword_matcher`). A selected test brings along
  the tests that provide what it requires, whatever their level or name.
- Skips: a dangerous test without `allow_dangerous` is skipped, and so is every
  test that needs a capability from a skipped test.
- Jobs: a job is one machine running a sequence of tests; the executor boots a VM
  for it and boots a fresh one after each test in `fresh_vm_after`. Safe and
  monitored tests of a suite share a VM (a SESSION job); risky tests run after
  them in the same job and get the VM replaced after them; a dangerous test runs
  alone in a VM of its own (an ALONE job).
- Order: tests sit at a *stage* (0 if they require nothing, else one more than the
  deepest stage they need). A job holds tests of one suite and one stage. Tests of
  a later stage continue an earlier job of their suite (saving a boot) when all
  they need is done before that job starts and no other test waits for that job
  (with one worker the last condition is moot). A job lists the jobs it must wait
  for in `depends_on`.
- Balance: estimates are past durations, else timeouts. A suite's stage is split
  into as many jobs (VMs) as it needs so that none is longer than an even share
  of the total over `jobs` workers, tests dealt longest first to the least loaded.
  `Plan.jobs` is in the order a list scheduler starts them (longest path to the
  end first), and `Plan.estimate_s` is that schedule's length.
"""

from __future__ import annotations

import enum
import heapq
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from graphlib import TopologicalSorter
from typing import NamedTuple

from vmlab.config import (
    Lab,
    MachineConfig,
    Safety,
    TestSpec,
    capability_cycle,
    dependency_graph,
    format_cycle,
)
from vmlab.errors import ConfigError, UsageError
from vmlab.machine.spec import MachineSpec
from vmlab.service_spec import provided_by

DANGEROUS_REASON = "dangerous: pass --allow-dangerous"


class JobKind(enum.StrEnum):
    SESSION = "session"  # a suite's tests in a shared VM (replaced after risky tests)
    ALONE = "alone"  # one dangerous test in a fresh VM of its own


@dataclass(frozen=True)
class Job:
    """Tests that run one after another on one machine, in one worker."""

    id: str  # "SUITE#N"
    kind: JobKind
    machine: MachineConfig
    tests: tuple[TestSpec, ...]
    fresh_vm_after: frozenset[str]  # test ids after which the VM is thrown away
    depends_on: frozenset[str]  # ids of jobs that must finish before this one starts
    estimate_s: float

    @property
    def machine_name(self) -> str:
        return self.machine.name

    @property
    def spec(self) -> MachineSpec:
        return self.machine.spec


class Skipped(NamedTuple):
    test: TestSpec
    reason: str


@dataclass(frozen=True)
class Plan:
    jobs: tuple[Job, ...]  # in a good start order; see the module's docstring
    skipped: tuple[Skipped, ...]  # in the lab's order
    estimate_s: float  # the whole run's length with `workers` workers
    workers: int

    @property
    def tests(self) -> tuple[TestSpec, ...]:
        return tuple(test for job in self.jobs for test in job.tests)


def make_plan(
    lab: Lab,
    *,
    level: int,
    suites: Sequence[str] = (),
    keyword: str | None = None,
    allow_dangerous: bool,
    jobs: int,
    past_durations: Mapping[str, float],
) -> Plan:
    """Select, order and partition `lab`'s tests (see the module's docstring)."""
    if jobs < 1:
        raise UsageError(f"--jobs {jobs}: at least 1")
    if level < 1:
        raise UsageError(f"--level {level}: levels start at 1 (1 smoke, 2 integration, 3 stress)")
    known = [suite.name for suite in lab.suites]
    for name in suites:
        if name not in known:
            raise UsageError(f"--suite {name}: no such suite (known: {', '.join(known) or 'none'})")
    matches = keyword_matcher(keyword) if keyword and keyword.strip() else None

    tests = lab.tests
    by_id = {test.test_id: test for test in tests}
    # Services and server machines are there from the start.
    from_start = {
        *provided_by(lab.services),
        *(c for m in lab.machines.values() for c in m.provides),
    }
    needs = dependency_graph(tests, from_start)
    if cycle := capability_cycle(needs):
        raise ConfigError(f"{lab.path}: {format_cycle(cycle)}")

    chosen = {
        test.test_id
        for test in tests
        if (not suites or test.suite in suites)
        and test.level <= level
        and (matches is None or matches(test.test_id))
    }
    todo = list(chosen)
    while todo:
        for provider in needs[todo.pop()]:
            if provider not in chosen:
                chosen.add(provider)
                todo.append(provider)

    reasons: dict[str, str] = {}
    for test_id in TopologicalSorter({t: needs[t] for t in chosen}).static_order():
        test = by_id[test_id]
        lost = sorted(provider for provider in needs[test_id] if provider in reasons)
        if test.safety is Safety.DANGEROUS and not allow_dangerous:
            reasons[test_id] = DANGEROUS_REASON
        elif lost:
            capability = sorted(test.requires & by_id[lost[0]].provides)[0]
            reasons[test_id] = f"needs {capability!r} from skipped {lost[0]}"

    runnable = [t for t in tests if t.test_id in chosen and t.test_id not in reasons]
    estimates = {t.test_id: past_durations.get(t.test_id, t.timeout_s) for t in runnable}
    drafts = _partition(lab, runnable, needs, estimates, jobs)
    ordered, length = _schedule(drafts, jobs)
    return Plan(
        jobs=ordered,
        skipped=tuple(Skipped(t, reasons[t.test_id]) for t in tests if t.test_id in reasons),
        estimate_s=length,
        workers=jobs,
    )


# ----------------------------------------------------------------- partitioning


@dataclass
class _Draft:
    """A job while it is being filled."""

    id: str
    kind: JobKind
    suite: str
    machine: MachineConfig
    tests: list[TestSpec] = field(default_factory=list)
    depends_on: set[str] = field(default_factory=set)
    estimate_s: float = 0.0

    def freeze(self) -> Job:
        return Job(
            id=self.id,
            kind=self.kind,
            machine=self.machine,
            tests=tuple(self.tests),
            fresh_vm_after=frozenset(t.test_id for t in self.tests if not t.safety.shares_vm),
            depends_on=frozenset(self.depends_on),
            estimate_s=self.estimate_s,
        )


def _partition(
    lab: Lab,
    tests: Sequence[TestSpec],
    needs: Mapping[str, frozenset[str]],
    estimates: Mapping[str, float],
    workers: int,
) -> list[_Draft]:
    position = {test.test_id: i for i, test in enumerate(tests)}
    stage = _stages([t.test_id for t in tests], needs)
    share = sum(estimates.values()) / workers  # an even share of the work per worker
    drafts: dict[str, _Draft] = {}
    job_of: dict[str, str] = {}  # test id -> job id
    numbers: dict[str, int] = {}

    def new_job(kind: JobKind, test: TestSpec) -> _Draft:
        numbers[test.suite] = numbers.get(test.suite, 0) + 1
        job_id = f"{test.suite}#{numbers[test.suite]}"
        draft = _Draft(job_id, kind, test.suite, lab.machines[test.machine])
        drafts[draft.id] = draft
        return draft

    def add(draft: _Draft, chunk: Sequence[TestSpec]) -> None:
        for test in chunk:
            draft.tests.append(test)
            draft.estimate_s += estimates[test.test_id]
            job_of[test.test_id] = draft.id

    def ancestors(job_id: str) -> set[str]:
        seen: set[str] = set()
        todo = [job_id]
        while todo:
            for parent in drafts[todo.pop()].depends_on - seen:
                seen.add(parent)
                todo.append(parent)
        return seen

    dependents: dict[str, set[str]] = {}  # test id -> ids of the tests that need it
    for test in tests:
        for provider in needs[test.test_id]:
            dependents.setdefault(provider, set()).add(test.test_id)

    # groups: (stage, suite) -> its tests, in the lab's order
    groups: dict[tuple[int, str], list[TestSpec]] = {}
    for test in tests:
        groups.setdefault((stage[test.test_id], test.suite), []).append(test)

    for (_, suite), group in sorted(groups.items(), key=lambda item: item[0][0]):
        sessions = [t for t in group if t.safety is not Safety.DANGEROUS]
        taken: set[str] = set()  # jobs already holding part of this group
        # One VM at a time for a machine on a private network (its address is its own).
        networked = bool(sessions) and bool(lab.machines[sessions[0].machine].spec.nics)
        count = 1 if networked else _how_many(sessions, estimates, share, workers)
        for chunk in _deal(sessions, count, estimates):
            chunk.sort(key=lambda t: (not t.safety.shares_vm, position[t.test_id]))
            waits = {job_of[p] for t in chunk for p in needs[t.test_id]}
            members = {t.test_id for t in chunk}
            # Continue an earlier job of the suite (one boot less) when all that the
            # chunk needs is done before that job starts, and no test outside the two
            # waits for that job: it would wait for the chunk too. With one worker,
            # everything runs in turn anyway.
            hosts = [
                d
                for d in drafts.values()
                if d.suite == suite
                and d.kind is JobKind.SESSION
                and d.id not in taken
                and waits <= ancestors(d.id) | {d.id}
                and (workers == 1 or _only_waited_on_by(d, members, dependents))
            ]
            if hosts:
                draft = min(hosts, key=lambda d: d.estimate_s)
            else:
                draft = new_job(JobKind.SESSION, chunk[0])
                draft.depends_on = waits
            taken.add(draft.id)
            add(draft, chunk)
        for test in group:
            if test.safety is Safety.DANGEROUS:
                draft = new_job(JobKind.ALONE, test)
                draft.depends_on = {job_of[p] for p in needs[test.test_id]}
                add(draft, [test])
    return list(drafts.values())


def _only_waited_on_by(
    draft: _Draft, members: set[str], dependents: Mapping[str, set[str]]
) -> bool:
    """Whether only `draft`'s own tests and `members` need tests of `draft`."""
    inside = members | {test.test_id for test in draft.tests}
    return all(dependents.get(test.test_id, set()) <= inside for test in draft.tests)


def _stages(test_ids: Sequence[str], needs: Mapping[str, frozenset[str]]) -> dict[str, int]:
    """Test id -> 0 when it needs nothing, else 1 + the deepest stage it needs."""
    sorter = TopologicalSorter({t: needs[t] for t in test_ids})
    sorter.prepare()
    stages: dict[str, int] = {}
    depth = 0
    while sorter.is_active():
        ready = sorter.get_ready()
        for test_id in ready:
            stages[test_id] = depth
        sorter.done(*ready)
        depth += 1
    return stages


def _how_many(
    tests: Sequence[TestSpec], estimates: Mapping[str, float], share: float, workers: int
) -> int:
    """How many VMs a group gets: enough that none holds more than an even share."""
    total = sum(estimates[t.test_id] for t in tests)
    wanted = math.ceil(total / share - 1e-9) if share > 0 else 1
    return max(1, min(wanted, workers, len(tests)))


def _deal(
    tests: Sequence[TestSpec], count: int, estimates: Mapping[str, float]
) -> list[list[TestSpec]]:
    """Longest first, each to the least loaded of `count` piles."""
    piles: list[list[TestSpec]] = [[] for _ in range(count)]
    loads = [0.0] * count
    for test in sorted(tests, key=lambda t: -estimates[t.test_id]):
        lightest = min(range(count), key=lambda i: loads[i])
        piles[lightest].append(test)
        loads[lightest] += estimates[test.test_id]
    return [pile for pile in piles if pile]


def _schedule(drafts: Sequence[_Draft], workers: int) -> tuple[tuple[Job, ...], float]:
    """Simulate `workers` workers; return jobs in start order and the total length."""
    jobs = [draft.freeze() for draft in drafts]
    after: dict[str, list[str]] = {job.id: [] for job in jobs}
    for job in jobs:
        for parent in job.depends_on:
            after[parent].append(job.id)
    estimate = {job.id: job.estimate_s for job in jobs}
    tail: dict[str, float] = {}  # the longest path from a job's start to the end
    for job_id in reversed(
        list(TopologicalSorter({j.id: j.depends_on for j in jobs}).static_order())
    ):
        tail[job_id] = estimate[job_id] + max((tail[c] for c in after[job_id]), default=0.0)

    waiting = list(jobs)
    started: list[Job] = []
    running: list[tuple[float, int, str]] = []  # (end, sequence, job id)
    finished: set[str] = set()
    clock = 0.0
    while waiting:
        ready = sorted(
            (job for job in waiting if job.depends_on <= finished), key=lambda j: -tail[j.id]
        )
        for job in ready[: workers - len(running)]:
            waiting.remove(job)
            started.append(job)
            heapq.heappush(running, (clock + job.estimate_s, len(started), job.id))
        if not running:
            raise AssertionError("jobs wait for each other")  # dependency_graph has no cycles
        clock, _, job_id = heapq.heappop(running)
        finished.add(job_id)
    if running:
        clock = max(end for end, _, _ in running)
    return tuple(started), clock


# -------------------------------------------------------------------- -k EXPR

_TOKEN = re.compile(r"\(|\)|[^\s()]+")
_KEYWORDS = frozenset({"and", "or", "not"})


def keyword_matcher(expression: str) -> Callable[[str], bool]:
    """Compile a pytest-like `-k` expression into a test-id predicate.

    Words match as case-insensitive substrings of the test id (`suite/name`);
    `not` binds tighter than `and`, `and` tighter than `or`; parentheses group.
    """
    return _KeywordParser(expression).parse()


class _KeywordParser:
    """Recursive descent over: or := and ('or' and)*; and := not ('and' not)*;
    not := 'not' not | '(' or ')' | WORD."""

    def __init__(self, expression: str) -> None:
        self.expression = expression
        self.tokens = _TOKEN.findall(expression)
        self.pos = 0

    def fail(self, problem: str) -> UsageError:
        return UsageError(f"-k {self.expression!r}: {problem}")

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str | None:
        token = self.peek()
        self.pos += 1
        return token

    def parse(self) -> Callable[[str], bool]:
        if not self.tokens:
            raise self.fail("empty expression")
        predicate = self.any_of()
        if self.peek() is not None:
            raise self.fail(f"unexpected {self.peek()!r} (join words with and, or, not)")
        return predicate

    def any_of(self) -> Callable[[str], bool]:
        parts = [self.all_of()]
        while self.peek() == "or":
            self.take()
            parts.append(self.all_of())
        return parts[0] if len(parts) == 1 else lambda text: any(p(text) for p in parts)

    def all_of(self) -> Callable[[str], bool]:
        parts = [self.negation()]
        while self.peek() == "and":
            self.take()
            parts.append(self.negation())
        return parts[0] if len(parts) == 1 else lambda text: all(p(text) for p in parts)

    def negation(self) -> Callable[[str], bool]:
        token = self.take()
        if token == "not":
            inner = self.negation()
            return lambda text: not inner(text)
        if token == "(":
            inner = self.any_of()
            if self.take() != ")":
                raise self.fail("missing ')'")
            return inner
        if token is None:
            raise self.fail("it ends where a word should follow")
        if token in _KEYWORDS or token == ")":
            raise self.fail(f"unexpected {token!r} where a word should be")
        word = token.lower()
        return lambda text: word in text.lower()
