"""The results store against real SQLite and real PostgreSQL (`db_url` runs each twice)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from vmlab.errors import UsageError
from vmlab.results.model import (
    CrashInfo,
    Outcome,
    RunRecord,
    RunStatus,
    TestResult,
    VmSpec,
)
from vmlab.results.store import MIGRATIONS_DIR, Base, Store

T0 = datetime(2026, 11, 21, 3, 1, 2, 123456, tzinfo=UTC)


def make_result(test_id: str = "fs/basic/create", **changes: object) -> TestResult:
    result = TestResult(
        test_id=test_id,
        suite=test_id.split("/", maxsplit=1)[0],
        domain="filesystem",
        level=1,
        safety="safe",
        machine="vm1",
        vm=VmSpec(memory_mib=512, cpus=2, kernel="6.1.0-28-amd64"),
        start=T0,
        duration_s=1.25,
        outcome=Outcome.PASSED,
    )
    return replace(result, **changes)  # type: ignore[arg-type]


def make_run(run_id: str = "20261121-030102-ab12", **changes: object) -> RunRecord:
    run = RunRecord(
        run_id=run_id,
        start=T0,
        host="builder",
        accel="tcg",
        qemu_version="7.2.15",
        kernel_release="6.1.0-28-amd64",
        kernel_config_hash="sha256:" + "c" * 64,
        lab_hash="sha256:" + "a" * 64,
        command_line=("vmlab", "test", "--level", "1", "it's quoted"),
        environment={"LANG": "C.UTF-8", "CI": "1"},
        git_commit="0123456789abcdef0123456789abcdef01234567",
    )
    return replace(run, **changes)  # type: ignore[arg-type]


RICH = make_result(
    "kmod/load/cycle",
    domain="kernel_module",
    suite="kmod",
    level=2,
    safety="risky",
    outcome=Outcome.CRASH,
    duration_s=0.1 + 0.2,  # not a short decimal: floats must survive exactly
    message="kernel crashed",
    output_tail="insmod ramfs2.ko\n\u00e9t\u00e9 \u2603 ok\n",
    artifacts={"output": "kmod/load/cycle.out", "console": "console-vm1.log"},
    metrics={"load_ms": 12.5, "refcount_delta": 0.0, "tiny": 1e-300},
    crash=CrashInfo(
        title="BUG: kernel NULL pointer dereference, address: 0000000000000000",
        kind="oops",
        signature="ramfs2_fill_super+0x12",
        report="[   12.3] BUG: kernel NULL pointer dereference\n[   12.3] RIP: ...",
    ),
    attempt=2,
    extra={"tap": "not ok 3 - cycle"},
)


def test_open_migrates_an_empty_database_to_head(db_url: str) -> None:
    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    with Store.open(db_url) as store:
        assert store.schema_revision() == head
        tables = set(sa.inspect(store.engine).get_table_names())
    assert {"runs", "test_results", "metrics", "crashes", "artifacts"} <= tables


def test_the_migrations_build_exactly_the_mapped_schema(db_url: str) -> None:
    with Store.open(db_url) as store, store.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_opening_again_keeps_the_data(db_url: str) -> None:
    with Store.open(db_url) as store:
        store.begin_run(make_run(results=(make_result(),)))
    with Store.open(db_url) as store:
        assert len(store.get_run("20261121-030102-ab12").results) == 1


def test_a_run_round_trips_exactly(db_url: str) -> None:
    run = make_run()
    plain = make_result("fs/basic/create")
    skipped = make_result("fs/basic/big", outcome=Outcome.SKIPPED, message="dangerous")
    end = T0 + timedelta(minutes=3, microseconds=7)
    with Store.open(db_url) as store:
        store.begin_run(run)
        for result in (plain, RICH, skipped):
            store.add_result(run.run_id, result)
        store.finish_run(run.run_id, RunStatus.COMPLETED, end)
        got = store.get_run(run.run_id)
    expected = replace(run, end=end, status=RunStatus.COMPLETED, results=(plain, RICH, skipped))
    assert got == expected
    assert got.to_json() == expected.to_json()
    assert got.start.tzinfo is UTC and got.results[1].start.tzinfo is UTC


def test_begin_run_stores_the_results_it_holds(db_url: str) -> None:
    run = make_run(results=(make_result(), RICH), status=RunStatus.COMPLETED, end=T0)
    with Store.open(db_url) as store:
        store.begin_run(run)
        assert store.get_run(run.run_id) == run


def test_an_interrupted_run_keeps_what_finished(db_url: str) -> None:
    run = make_run()
    store = Store.open(db_url)
    store.begin_run(run)
    store.add_result(run.run_id, make_result("fs/a"))
    store.add_result(run.run_id, make_result("fs/b", outcome=Outcome.FAILED))
    store.close()  # vmlab dies here: no finish_run

    with Store.open(db_url) as store:
        got = store.get_run(run.run_id)
        assert got.status is RunStatus.RUNNING and got.end is None
        assert [r.test_id for r in got.results] == ["fs/a", "fs/b"]
        store.finish_run(run.run_id, RunStatus.INTERRUPTED, T0 + timedelta(seconds=9))
        got = store.get_run(run.run_id)
    assert got.status is RunStatus.INTERRUPTED
    assert got.duration_s == 9.0
    assert len(got.results) == 2


def test_results_added_from_many_threads_all_arrive(db_url: str) -> None:
    run = make_run()
    with Store.open(db_url) as store:
        store.begin_run(run)
        ids = [f"fs/t{i:02d}" for i in range(24)]
        barrier = threading.Barrier(4)

        def add(test_id: str) -> None:
            if test_id in ids[:4]:
                barrier.wait(timeout=10)  # start together
            store.add_result(run.run_id, make_result(test_id, metrics={"i": float(len(test_id))}))

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(add, ids))
        got = store.get_run(run.run_id)
    assert sorted(r.test_id for r in got.results) == ids


def test_a_run_id_is_found_by_prefix_or_as_latest(db_url: str) -> None:
    with Store.open(db_url) as store:
        store.begin_run(make_run("20261120-010101-aaaa"))
        store.begin_run(make_run("20261121-010101-bbbb", start=T0 + timedelta(days=1)))
        store.begin_run(make_run("20261121-020202-cccc", start=T0 + timedelta(days=2)))
        assert store.get_run("20261120").run_id == "20261120-010101-aaaa"
        assert store.get_run("20261121-01").run_id == "20261121-010101-bbbb"
        assert store.get_run("latest").run_id == "20261121-020202-cccc"
        with pytest.raises(UsageError, match=r"ambiguous: 20261121-010101-bbbb, 20261121-020202"):
            store.get_run("20261121")
        with pytest.raises(UsageError) as caught:
            store.get_run("2025")
        message = caught.value.message
        assert "no run '2025'" in message and "vmlab runs" in message and "\n" not in message
        with pytest.raises(UsageError, match="no run"):
            store.get_run("2026112_")  # LIKE wildcards are taken literally


def test_unknown_runs_are_usage_errors(db_url: str) -> None:
    with Store.open(db_url) as store:
        with pytest.raises(UsageError, match=r"no runs in .* yet"):
            store.get_run("latest")
        with pytest.raises(UsageError, match="no run nope"):
            store.add_result("nope", make_result())
        with pytest.raises(UsageError, match="no run nope"):
            store.finish_run("nope", RunStatus.COMPLETED)
        store.begin_run(make_run())
        with pytest.raises(UsageError, match="already exists"):
            store.begin_run(make_run())


def test_list_runs_newest_first_with_counts(db_url: str) -> None:
    with Store.open(db_url) as store:
        for day in range(4):
            run = make_run(f"2026112{day}-000000-0000", start=T0 + timedelta(days=day))
            store.begin_run(run)
            for i in range(day):
                outcome = Outcome.FAILED if i == 1 else Outcome.PASSED
                store.add_result(run.run_id, make_result(f"fs/t{i}", outcome=outcome))
        store.finish_run(
            "20261123-000000-0000", RunStatus.COMPLETED, T0 + timedelta(days=3, seconds=5)
        )
        summaries = store.list_runs(limit=3)
    assert [s.run_id for s in summaries] == [
        "20261123-000000-0000",
        "20261122-000000-0000",
        "20261121-000000-0000",
    ]
    newest = summaries[0]
    assert newest.total == 3
    assert newest.counts[Outcome.PASSED] == 2 and newest.counts[Outcome.FAILED] == 1
    assert newest.counts[Outcome.ERROR] == 0
    assert newest.outcome is Outcome.FAILED
    assert newest.status is RunStatus.COMPLETED and newest.duration_s == 5.0
    assert summaries[2].total == 1 and summaries[2].outcome is Outcome.PASSED
    assert summaries[1].status is RunStatus.RUNNING and summaries[1].duration_s is None


def test_past_durations_are_medians_of_the_last_passing_runs(db_url: str) -> None:
    # durations of fs/a, oldest first; the failure and the oldest passes must not count
    history = [
        (100.0, Outcome.PASSED),
        (1.0, Outcome.PASSED),
        (2.0, Outcome.PASSED),
        (50.0, Outcome.FAILED),
        (4.0, Outcome.PASSED),
        (3.0, Outcome.PASSED),
        (7.0, Outcome.PASSED),
    ]
    with Store.open(db_url) as store:
        for n, (duration, outcome) in enumerate(history):
            run = make_run(f"20261121-0000{n:02d}-0000", start=T0 + timedelta(hours=n))
            store.begin_run(run)
            start = T0 + timedelta(hours=n)
            store.add_result(
                run.run_id,
                make_result("fs/a", start=start, duration_s=duration, outcome=outcome),
            )
            store.add_result(run.run_id, make_result("fs/b", start=start, duration_s=10.0 + n))
            store.add_result(
                run.run_id, make_result("fs/never", start=start, outcome=Outcome.TIMEOUT)
            )
        many = [f"fs/unknown{i}" for i in range(1200)]  # more than one IN (...) chunk
        durations = store.past_durations(["fs/a", "fs/b", "fs/never", *many, "fs/b"], last=4)
        assert store.past_durations([]) == {}
        assert store.past_durations(["fs/a"], last=1) == {"fs/a": 7.0}
    # fs/a's last four passes: 2, 4, 3, 7 -> median 3.5; fs/b's: 13..16 -> 14.5
    assert durations == {"fs/a": 3.5, "fs/b": 14.5}


def test_crash_counts_by_signature(db_url: str) -> None:
    crash = RICH.crash
    assert crash is not None
    other = replace(crash, signature="ext4_fill_super+0x99")
    with Store.open(db_url) as store:
        for n in range(3):
            run = make_run(f"20261121-00000{n}-0000")
            store.begin_run(run)
            store.add_result(run.run_id, RICH)
            if n == 0:
                store.add_result(run.run_id, replace(RICH, test_id="kmod/other", crash=other))
            store.add_result(run.run_id, make_result())
        assert store.crash_counts(crash.signature) == {crash.signature: 3}
        assert store.crash_counts("never-seen") == {"never-seen": 0}
        assert store.crash_counts() == {crash.signature: 3, other.signature: 1}


def test_nul_characters_become_replacement_characters(db_url: str) -> None:
    result = make_result(output_tail="before\x00after", message="a\x00b")
    with Store.open(db_url) as store:
        store.begin_run(make_run())
        store.add_result("20261121-030102-ab12", result)
        got = store.get_run("20261121-030102-ab12").results[0]
    assert got.output_tail == "before\ufffdafter"
    assert got.message == "a\ufffdb"


def test_deleting_a_run_cascades(db_url: str, tmp_path: Path) -> None:
    with Store.open(db_url) as store:
        store.begin_run(make_run(results=(RICH,)))
        with store.engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM runs"))
            for table in ("test_results", "metrics", "artifacts", "crashes"):
                count = conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()
                assert count == 0, table
