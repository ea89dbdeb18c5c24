"""results.json: the seeds' schema, its summary numbers, and reading it back."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from vmlab.errors import UsageError
from vmlab.results import CrashInfo, Outcome, RunRecord, RunStatus, TestResult, VmSpec
from vmlab.results.jsonout import read_results_json, write_results_json

T0 = datetime(2026, 11, 21, 3, 1, 2, 123456, tzinfo=UTC)


def make_result(
    test_id: str,
    outcome: Outcome = Outcome.PASSED,
    domain: str = "filesystem",
    duration_s: float = 0.5,
    **changes: object,
) -> TestResult:
    result = TestResult(
        test_id=test_id,
        suite=test_id.split("/", maxsplit=1)[0],
        domain=domain,
        level=1,
        safety="safe",
        machine="vm1",
        vm=VmSpec(memory_mib=2048, cpus=2, kernel="6.1.0-28-amd64"),
        start=T0,
        duration_s=duration_s,
        outcome=outcome,
    )
    return replace(result, **changes)  # type: ignore[arg-type]


RESULTS = (
    make_result("fs/a", duration_s=1.2346),
    make_result("fs/b", Outcome.FAILED, duration_s=0.1),
    make_result("fs/c", Outcome.SKIPPED, duration_s=0.0, message="dangerous"),
    make_result("fs/d", Outcome.TIMEOUT, duration_s=60.0),
    make_result(
        "kmod/cycle",
        Outcome.CRASH,
        domain="kernel_module",
        duration_s=3.0,
        crash=CrashInfo(title="BUG: x", kind="oops", signature="f+0x1", report="trace"),
        artifacts={"output": "kmod/cycle.out"},
    ),
    make_result("kmod/setup", Outcome.ERROR, domain="kernel_module", duration_s=0.0006),
    make_result(
        "perf/tput",
        domain="performance",
        duration_s=10.0,
        vm=VmSpec(memory_mib=1536, cpus=4, kernel="6.1.0-28-amd64"),
        metrics={"mb_per_s": 812.5, "ops_per_s": 12000.0},
        start=T0 + timedelta(seconds=5),
    ),
)

RUN = RunRecord(
    run_id="20261121-030102-ab12",
    start=T0,
    end=T0 + timedelta(seconds=80),
    status=RunStatus.COMPLETED,
    host="builder",
    accel="tcg",
    qemu_version="7.2.15",
    kernel_release="6.1.0-28-amd64",
    kernel_config_hash="sha256:cc",
    lab_hash="sha256:aa",
    command_line=("vmlab", "test", "-k", "not slow and 'quoted'", ""),
    environment={"LANG": "C.UTF-8", "PATH": "/usr/bin"},
    git_commit=None,
    results=RESULTS,
)


def test_the_document_has_the_seeds_shape(tmp_path: Path) -> None:
    path = tmp_path / "runs" / RUN.run_id / "results.json"
    write_results_json(RUN, path)
    data = json.loads(path.read_text())
    assert set(data) == {"schema", "run", "environment", "tests", "summary"}
    assert data["run"] == {
        "id": RUN.run_id,
        "start": "2026-11-21T03:01:02.123456+00:00",
        "end": "2026-11-21T03:02:22.123456+00:00",
        "status": "completed",
        "host": "builder",
        "accel": "tcg",
        "qemu_version": "7.2.15",
        "kernel": "6.1.0-28-amd64",
        "kernel_config_hash": "sha256:cc",
        "command_line": "vmlab test -k 'not slow and '\"'\"'quoted'\"'\"'' ''",
        "git_commit": None,
        "lab_hash": "sha256:aa",
    }
    assert data["environment"] == {"LANG": "C.UTF-8", "PATH": "/usr/bin"}
    perf = data["tests"][-1]
    assert perf["test_id"] == "perf/tput"
    assert perf["domain"] == "performance"
    assert perf["vm_specs"] == {"memory": "1536M", "cpus": 4, "kernel": "6.1.0-28-amd64"}
    assert perf["execution"] == {
        "start_time": "2026-11-21T03:01:07.123456+00:00",
        "duration": 10.0,
        "status": "passed",
        "attempt": 1,
    }
    assert perf["metrics"] == {"mb_per_s": 812.5, "ops_per_s": 12000.0}
    assert data["tests"][0]["vm_specs"]["memory"] == "2G"
    crash = data["tests"][4]
    assert crash["crash"]["signature"] == "f+0x1"
    assert crash["artifacts"] == {"output": "kmod/cycle.out"}


def test_summary_numbers(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    write_results_json(RUN, path)
    summary = json.loads(path.read_text())["summary"]
    assert list(summary["domains"]) == ["filesystem", "kernel_module", "performance"]
    fs = summary["domains"]["filesystem"]
    assert {k: fs[k] for k in ("tests", "passed", "failed", "errors", "skipped")} == {
        "tests": 4,
        "passed": 1,
        "failed": 2,
        "errors": 0,
        "skipped": 1,
    }
    assert fs["duration_ms"] == 61335  # 1.2346 + 0.1 + 0 + 60 s, rounded
    kmod = summary["domains"]["kernel_module"]
    assert (kmod["failed"], kmod["errors"], kmod["duration_ms"]) == (1, 1, 3001)
    assert kmod["outcomes"]["crash"] == 1 and kmod["outcomes"]["error"] == 1
    total = summary["total"]
    assert {k: total[k] for k in ("tests", "passed", "failed", "errors", "skipped")} == {
        "tests": 7,
        "passed": 2,
        "failed": 3,
        "errors": 1,
        "skipped": 1,
    }
    assert total["duration_ms"] == 74335
    assert sum(total["outcomes"].values()) == total["tests"]


@pytest.mark.parametrize("run", [RUN, replace(RUN, results=(), end=None)])
def test_reading_it_back_gives_the_same_run(tmp_path: Path, run: RunRecord) -> None:
    path = tmp_path / "results.json"
    write_results_json(run, path)
    assert read_results_json(path) == run


def test_non_finite_metrics_are_null(tmp_path: Path) -> None:
    result = make_result("perf/x", metrics={"nan": math.nan, "inf": math.inf, "ok": 1.0})
    path = tmp_path / "results.json"
    write_results_json(replace(RUN, results=(result,)), path)
    assert json.loads(path.read_text())["tests"][0]["metrics"] == {
        "nan": None,
        "inf": None,
        "ok": 1.0,
    }
    back = read_results_json(path).results[0].metrics
    assert math.isnan(back["nan"]) and math.isnan(back["inf"]) and back["ok"] == 1.0


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("{", "not a vmlab results file"),
        ('{"run": {}}', 'no "schema"'),
        ('{"schema": "vmlab-results/1", "run": {"id": "x"}}', "'start'"),
    ],
)
def test_a_bad_file_is_one_usage_error(tmp_path: Path, content: str, words: str) -> None:
    path = tmp_path / "results.json"
    path.write_text(content)
    with pytest.raises(UsageError, match=words) as caught:
        read_results_json(path)
    assert "\n" not in caught.value.message
    with pytest.raises(UsageError, match="cannot read"):
        read_results_json(tmp_path / "missing.json")


def test_a_bad_memory_size_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    write_results_json(RUN, path)
    data = json.loads(path.read_text())
    data["tests"][0]["vm_specs"]["memory"] = "lots"
    path.write_text(json.dumps(data))
    with pytest.raises(UsageError, match=r"not a vmlab results file: .*'lots' is not a size"):
        read_results_json(path)


def test_writing_replaces_the_old_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text("old" * 100000)
    write_results_json(replace(RUN, results=()), path)
    assert json.loads(path.read_text())["summary"]["total"]["tests"] == 0
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]
