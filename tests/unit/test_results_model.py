"""The result model: outcome severity, and exact JSON round trips (results cross Dask)."""

from __future__ import annotations

import json
import pickle
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from vmlab.results import (
    CrashInfo,
    Outcome,
    RunRecord,
    RunStatus,
    TestResult,
    VmSpec,
    count_outcomes,
    new_run_id,
)

T0 = datetime(2026, 11, 21, 3, 1, 2, 123456, tzinfo=UTC)


def make_result(test_id: str = "fs/basic/create", **changes: object) -> TestResult:
    result = TestResult(
        test_id=test_id,
        suite="fs",
        domain="filesystem",
        level=1,
        safety="safe",
        machine="vm1",
        vm=VmSpec(memory_mib=512, cpus=2, kernel="6.1.0-28-amd64"),
        start=T0,
        duration_s=1.5,
        outcome=Outcome.PASSED,
    )
    return replace(result, **changes)  # type: ignore[arg-type]


def make_run(*results: TestResult, **changes: object) -> RunRecord:
    run = RunRecord(
        run_id="20261121-030102-ab12",
        start=T0,
        host="builder",
        accel="tcg",
        qemu_version="7.2.15",
        kernel_release="6.1.0-28-amd64",
        kernel_config_hash="sha256:cc",
        lab_hash="sha256:aa",
        command_line=("vmlab", "test", "a b", ""),
        environment={"LANG": "C.UTF-8"},
        results=results,
    )
    return replace(run, **changes)  # type: ignore[arg-type]


CRASHED = make_result(
    "kmod/load/cycle",
    outcome=Outcome.CRASH,
    duration_s=0.1 + 0.2,
    message="oops",
    output_tail="line \u2603\n\ttabbed \x1b[31m red\n",
    artifacts={"output": "kmod/load/cycle.out"},
    metrics={"load_ms": 1 / 3, "big": 1.7976931348623157e308, "neg": -0.0},
    crash=CrashInfo(title="BUG: oops", kind="oops", signature="f+0x1", report="r1\nr2"),
    attempt=3,
    extra={"k": "v"},
)


def test_outcomes_in_order_of_severity() -> None:
    order = [o for o in sorted(Outcome, key=lambda o: o.severity)]
    assert order == [
        Outcome.PASSED,
        Outcome.SKIPPED,
        Outcome.FAILED,
        Outcome.TIMEOUT,
        Outcome.HANG,
        Outcome.CRASH,
        Outcome.ERROR,
    ]


@pytest.mark.parametrize(
    ("outcomes", "worst"),
    [
        ((), Outcome.PASSED),
        ((Outcome.SKIPPED,), Outcome.SKIPPED),
        ((Outcome.PASSED, Outcome.SKIPPED), Outcome.SKIPPED),
        ((Outcome.FAILED, Outcome.PASSED, Outcome.TIMEOUT), Outcome.TIMEOUT),
        ((Outcome.CRASH, Outcome.HANG, Outcome.FAILED), Outcome.CRASH),
        ((Outcome.ERROR, Outcome.CRASH), Outcome.ERROR),
    ],
)
def test_the_worst_outcome_wins(outcomes: tuple[Outcome, ...], worst: Outcome) -> None:
    assert Outcome.worst(*outcomes) is worst
    assert Outcome.worst(*reversed(outcomes)) is worst


def test_only_passed_and_skipped_are_ok() -> None:
    assert {o for o in Outcome if o.ok} == {Outcome.PASSED, Outcome.SKIPPED}
    assert str(Outcome.TIMEOUT) == "timeout"


def test_a_result_round_trips_through_json() -> None:
    for result in (make_result(), CRASHED):
        text = result.to_json()
        back = TestResult.from_json(text)
        assert back == result
        assert back.to_json() == text
        assert isinstance(back.outcome, Outcome)
        assert back.start.tzinfo is UTC
    assert json.loads(CRASHED.to_json())["metrics"]["load_ms"] == 1 / 3


def test_a_run_round_trips_through_json_and_pickle() -> None:
    for run in (
        make_run(),
        make_run(make_result(), CRASHED, end=T0 + timedelta(seconds=30), git_commit="abc"),
        make_run(CRASHED, status=RunStatus.INTERRUPTED, end=T0),
    ):
        back = RunRecord.from_json(run.to_json())
        assert back == run
        assert back.to_json() == run.to_json()
        assert pickle.loads(pickle.dumps(run)) == run


def test_other_timezones_are_stored_as_utc() -> None:
    local = T0.astimezone(timezone(timedelta(hours=-5)))
    result = make_result(start=local)
    assert result.start == T0 and result.start.tzinfo is UTC
    assert result.start.isoformat() == "2026-11-21T03:01:02.123456+00:00"
    assert result.end == T0 + timedelta(seconds=1.5)


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="naive datetime"):
        make_result(start=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="naive datetime"):
        make_run(end=datetime(2026, 1, 1))


def test_negative_durations_are_refused() -> None:
    with pytest.raises(ValueError, match="duration_s"):
        make_result(duration_s=-1.0)


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (lambda d: d.pop("test_id"), "missing field 'test_id'"),
        (lambda d: d.update(level="1"), "field 'level': expected an integer"),
        (lambda d: d.update(level=True), "field 'level': expected an integer"),
        (lambda d: d.update(outcome="exploded"), "unknown outcome 'exploded'"),
        (lambda d: d.update(start="yesterday"), "'yesterday' is not ISO 8601"),
        (lambda d: d.update(start="2026-11-21T03:01:02"), "naive datetime"),
        (lambda d: d.update(metrics={"x": "1"}), "field 'metrics': expected an object of numbers"),
        (lambda d: d["vm"].pop("cpus"), r"test result\.vm: missing field 'cpus'"),
    ],
)
def test_bad_result_json_names_the_field(mutate: object, words: str) -> None:
    data = json.loads(CRASHED.to_json())
    mutate(data)  # type: ignore[operator]
    with pytest.raises(ValueError, match=words):
        TestResult.from_json(json.dumps(data))


def test_json_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(ValueError, match="expected an object"):
        RunRecord.from_json("[]")
    with pytest.raises(ValueError, match="not JSON"):
        RunRecord.from_json("{")


def test_run_ids_sort_by_time() -> None:
    first = new_run_id(T0)
    later = new_run_id(T0 + timedelta(seconds=1))
    assert first.startswith("20261121-030102-") and len(first) == 20
    assert first < later
    assert new_run_id() > later  # now is after 2026-11-21, unless the clock is wrong
    assert len({new_run_id(T0) for _ in range(50)}) > 40


def test_run_counts_and_outcome() -> None:
    run = make_run(
        make_result("a"), make_result("b", outcome=Outcome.FAILED), CRASHED, make_result("c")
    )
    assert run.counts()[Outcome.PASSED] == 2
    assert run.counts()[Outcome.ERROR] == 0
    assert run.outcome is Outcome.CRASH
    assert make_run().outcome is Outcome.PASSED
    assert count_outcomes([]) == dict.fromkeys(Outcome, 0)
    assert make_run(end=T0 + timedelta(seconds=2)).duration_s == 2.0
