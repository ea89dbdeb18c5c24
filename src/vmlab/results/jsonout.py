"""results.json: a run in the seeds' result schema, for tools and dashboards.

The document::

    {
      "schema": "vmlab-results/1",
      "run": {"id", "start", "end", "status", "host", "accel", "qemu_version",
              "kernel", "kernel_config_hash", "command_line", "git_commit", "lab_hash"},
      "environment": {"NAME": "value", ...},
      "tests": [
        {"test_id": "suite/sub/test", "suite", "domain", "level", "safety", "machine",
         "vm_specs": {"memory": "512M", "cpus": 1, "kernel": "6.1.0-28-amd64"},
         "execution": {"start_time": ISO 8601, "duration": seconds, "status": outcome,
                       "attempt": 1},
         "metrics": {"name": number}, "artifacts": {"name": "path"},
         "message": "...", "crash": null or {"title", "kind", "signature", "report"},
         "output_tail": "...", "extra": {}}
      ],
      "summary": {
        "domains": {"DOMAIN": {"tests", "passed", "failed", "errors", "skipped",
                               "duration_ms", "outcomes": {"passed": n, ...}}},
        "total": {same keys}
      }
    }

Times are ISO 8601 in UTC; `duration` is in seconds, `duration_ms` an integer.
`failed` counts FAILED, TIMEOUT, HANG and CRASH; `errors` counts ERROR (the lab or
the infrastructure failed), as JUnit does; `outcomes` has every outcome's count.
`command_line` is one shell-quoted string. Metrics that are not finite numbers
are written as null (JSON has no NaN) and read back as NaN.

`read_results_json` turns such a file back into the `RunRecord` it came from.
"""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

from vmlab.errors import UsageError
from vmlab.results._files import atomic_write
from vmlab.results.model import (
    Outcome,
    RunRecord,
    RunStatus,
    TestResult,
    count_outcomes,
)
from vmlab.units import format_mib, parse_size_mib

SCHEMA: Final = "vmlab-results/1"
_FAILED: Final = (Outcome.FAILED, Outcome.TIMEOUT, Outcome.HANG, Outcome.CRASH)


def write_results_json(run: RunRecord, path: Path) -> None:
    """Write `run` as results.json to `path`, atomically."""
    text = json.dumps(results_document(run), indent=2, ensure_ascii=False, allow_nan=False)
    atomic_write(Path(path), (text + "\n").encode())


def results_document(run: RunRecord) -> dict[str, Any]:
    """`run` as the results.json object."""
    return {
        "schema": SCHEMA,
        "run": {
            "id": run.run_id,
            "start": run.start.isoformat(),
            "end": None if run.end is None else run.end.isoformat(),
            "status": run.status.value,
            "host": run.host,
            "accel": run.accel,
            "qemu_version": run.qemu_version,
            "kernel": run.kernel_release,
            "kernel_config_hash": run.kernel_config_hash,
            "command_line": shlex.join(run.command_line),
            "git_commit": run.git_commit,
            "lab_hash": run.lab_hash,
        },
        "environment": dict(run.environment),
        "tests": [_test(r) for r in run.results],
        "summary": summary(run.results),
    }


def summary(results: Iterable[TestResult]) -> dict[str, Any]:
    """Counts and durations per domain (in order of first appearance) and in total."""
    every = list(results)
    domains = dict.fromkeys(r.domain for r in every)
    return {
        "domains": {d: _counts([r for r in every if r.domain == d]) for d in domains},
        "total": _counts(every),
    }


def read_results_json(path: Path) -> RunRecord:
    """The run a results.json file describes (UsageError when it is not one)."""
    path = Path(path)
    try:
        data = json.loads(path.read_bytes())
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise ValueError(f'no "schema": "{SCHEMA}" at the top')
        return _run(data)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UsageError as exc:
        raise UsageError(f"{path}: not a vmlab results file: {exc.message}") from exc
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UsageError(f"{path}: not a vmlab results file: {exc}") from exc


def _counts(results: list[TestResult]) -> dict[str, Any]:
    outcomes = count_outcomes(results)
    return {
        "tests": len(results),
        "passed": outcomes[Outcome.PASSED],
        "failed": sum(outcomes[o] for o in _FAILED),
        "errors": outcomes[Outcome.ERROR],
        "skipped": outcomes[Outcome.SKIPPED],
        "duration_ms": round(sum(r.duration_s for r in results) * 1000),
        "outcomes": {o.value: n for o, n in outcomes.items()},
    }


def _test(result: TestResult) -> dict[str, Any]:
    crash = result.crash
    return {
        "test_id": result.test_id,
        "suite": result.suite,
        "domain": result.domain,
        "level": result.level,
        "safety": result.safety,
        "machine": result.machine,
        "vm_specs": {
            "memory": format_mib(result.vm.memory_mib),
            "cpus": result.vm.cpus,
            "kernel": result.vm.kernel,
        },
        "execution": {
            "start_time": result.start.isoformat(),
            "duration": result.duration_s,
            "status": result.outcome.value,
            "attempt": result.attempt,
        },
        "metrics": {k: v if math.isfinite(v) else None for k, v in result.metrics.items()},
        "artifacts": dict(result.artifacts),
        "message": result.message,
        "crash": None
        if crash is None
        else {
            "title": crash.title,
            "kind": crash.kind,
            "signature": crash.signature,
            "report": crash.report,
        },
        "output_tail": result.output_tail,
        "extra": dict(result.extra),
    }


def _run(data: Mapping[str, Any]) -> RunRecord:
    """Rebuild the model's own dict form and let it check the types."""
    run = data["run"]
    tests = data.get("tests", [])
    if not isinstance(tests, list):
        raise ValueError('"tests" is not a list')
    return RunRecord.from_dict(
        {
            "run_id": run["id"],
            "start": run["start"],
            "end": run.get("end"),
            "status": RunStatus(run["status"]).value,
            "host": run["host"],
            "accel": run["accel"],
            "qemu_version": run["qemu_version"],
            "kernel_release": run["kernel"],
            "kernel_config_hash": run["kernel_config_hash"],
            "lab_hash": run["lab_hash"],
            "git_commit": run.get("git_commit"),
            "command_line": shlex.split(run.get("command_line") or ""),
            "environment": data.get("environment", {}),
            "results": [_result_dict(t) for t in tests],
        }
    )


def _result_dict(test: Mapping[str, Any]) -> dict[str, Any]:
    specs = test["vm_specs"]
    execution = test["execution"]
    memory = specs["memory"]
    return {
        "test_id": test["test_id"],
        "suite": test["suite"],
        "domain": test["domain"],
        "level": test["level"],
        "safety": test["safety"],
        "machine": test["machine"],
        "vm": {
            "memory_mib": memory if isinstance(memory, int) else parse_size_mib(memory),
            "cpus": specs["cpus"],
            "kernel": specs["kernel"],
        },
        "start": execution["start_time"],
        "duration_s": execution["duration"],
        "outcome": execution["status"],
        "message": test.get("message", ""),
        "output_tail": test.get("output_tail", ""),
        "artifacts": test.get("artifacts", {}),
        "metrics": {
            k: math.nan if v is None else v for k, v in (test.get("metrics") or {}).items()
        },
        "crash": test.get("crash"),
        "attempt": execution.get("attempt", 1),
        "extra": test.get("extra", {}),
    }
