"""`vmlab runs`, `vmlab show RUN`, `vmlab export RUN`: read the results store."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from vmlab.errors import UsageError
from vmlab.results.jsonout import write_results_json
from vmlab.results.junit import write_junit
from vmlab.results.model import Outcome
from vmlab.results.store import Store

TAIL_LINES = 15


def list_runs(db: str | None, limit: int) -> int:
    with Store.open(db) as store:
        runs = store.list_runs(limit)
    if not runs:
        print("no runs yet (vmlab test LAB records one)")
        return 0
    table = Table("run", "start (UTC)", "status", "tests", "passed", "failed", "time", "kernel")
    for run in runs:
        failed = run.total - run.counts[Outcome.PASSED] - run.counts[Outcome.SKIPPED]
        duration = f"{run.duration_s:.0f}s" if run.duration_s is not None else "-"
        table.add_row(
            run.run_id, run.start.strftime("%Y-%m-%d %H:%M:%S"), run.status.value,
            str(run.total), str(run.counts[Outcome.PASSED]), str(failed), duration,
            run.kernel_release,
        )  # fmt: skip
    Console(width=max(120, Console().width)).print(table)
    return 0


def show_run(db: str | None, run_id: str) -> int:
    with Store.open(db) as store:
        run = store.get_run(run_id)
    console = Console(highlight=False)
    counts = ", ".join(f"{n} {o.value}" for o, n in run.counts().items() if n)
    console.print(f"run {run.run_id}: {run.status.value}, {counts or 'no tests'}")
    console.print(f"  host {run.host}, accel {run.accel}, kernel {run.kernel_release}, "
                  f"qemu {run.qemu_version}")  # fmt: skip
    if run.end is not None:
        console.print(f"  {run.start:%Y-%m-%d %H:%M:%S} UTC, {run.duration_s:.1f} s")
    failures = [r for r in run.results if not r.outcome.ok]
    crashes: dict[str, list[str]] = {}
    for result in failures:
        if result.crash is not None:
            crashes.setdefault(f"{result.crash.title} [{result.crash.signature}]", []).append(
                result.test_id
            )
    if crashes:
        console.print("\ncrashes by signature:")
        for title, tests in crashes.items():
            console.print(f"  {title}: {len(tests)}x ({', '.join(tests)})", markup=False)
    for result in failures:
        console.print(
            f"\n[bold]{result.outcome.value.upper()}[/] {escape(result.test_id)}: "
            f"{escape(result.message)}"
        )
        tail = result.output_tail.rstrip().splitlines()[-TAIL_LINES:]
        for line in tail:
            console.print(f"  | {line}", markup=False)
        for name, path in sorted(result.artifacts.items()):
            console.print(f"  {name}: {path}", markup=False)
    return 0 if not failures else 1


def export_run(db: str | None, run_id: str, fmt: str, output: Path | None) -> int:
    if fmt not in ("junit", "json"):
        raise UsageError(f"--format {fmt!r}: choose junit or json")
    with Store.open(db) as store:
        run = store.get_run(run_id)
    target = output or Path(f"{run.run_id}.{'xml' if fmt == 'junit' else 'json'}")
    if fmt == "junit":
        write_junit(run, target)
    else:
        write_results_json(run, target)
    print(f"wrote {target}")
    return 0
