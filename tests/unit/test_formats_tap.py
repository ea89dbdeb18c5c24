"""TAP parsing against real producer output (Perl, prove, node) and hand-written streams."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from vmlab.results import formats
from vmlab.results.formats import ParsedOutput, SubOutcome, SubResult, parse

DATA = Path(__file__).resolve().parent.parent / "data" / "formats" / "tap"

P, F, S, T, E = (
    SubOutcome.PASSED,
    SubOutcome.FAILED,
    SubOutcome.SKIPPED,
    SubOutcome.TODO_FAILED,
    SubOutcome.ERROR,
)


def _load(name: str) -> ParsedOutput:
    return parse((DATA / name).read_text(), "tap")


def _summary(parsed: ParsedOutput) -> list[tuple[str, SubOutcome, str]]:
    return [(i, r.outcome, r.message) for i, r in formats.test_ids("fs/t", parsed)]


def _by_path(parsed: ParsedOutput, *path: str) -> SubResult:
    [found] = [r for r in parsed.results if r.path == path]
    return found


# Test::More 1.302 (Perl 5.36) running a .t file, stdout and stderr together.
PERL = [
    ("fs/t/module_loads", P, ""),
    ("fs/t/read_back_what_was_written", P, ""),
    ("fs/t/size_after_truncate", F, "Failed test 'size after truncate'"),
    ("fs/t/test_4", S, "no xattr support in this kernel"),
    ("fs/t/rename_over_open_file", T, "rename over open file not implemented"),
    ("fs/t/remount/umount", P, ""),
    ("fs/t/remount/mount_again", P, ""),
    ("fs/t/remount/files_survive", F, "Failed test 'files survive'"),
    ("fs/t/hard_links", S, "tinyfs has no hard links"),
]


def test_perl_test_more() -> None:
    parsed = _load("perl_test_more.tap")
    assert _summary(parsed) == PERL
    assert parsed.planned == 7
    assert parsed.problems == ()
    assert not parsed.bailed_out
    failed = _by_path(parsed, "size after truncate")
    assert failed.diagnostics == (
        "#   Failed test 'size after truncate'\n"
        "#   at t/tinyfs.t line 11.\n"
        "#          got: '3'\n"
        "#     expected: '4'"
    )
    assert _by_path(parsed, "read back what was written").metrics == {
        "write_mb_s": 812.5,
        "files_per_s": 15230.0,
    }
    assert _by_path(parsed, "module loads").metrics == {}
    assert all(r.duration_s is None for r in parsed.results)


def test_prove_verbose_output_with_harness_chatter() -> None:
    # prove -v: stderr diagnostics first, "t/tinyfs.t .. ", then the summary report.
    parsed = _load("prove_verbose.txt")
    # The failure diagnostics went to stderr before the stream, so they are nobody's.
    expected = [(i, o, "" if o is F else m) for i, o, m in PERL]
    assert _summary(parsed) == expected
    assert parsed.planned == 7
    assert parsed.problems == ()


def test_node_test_runner_tap13_with_yaml_and_subtests() -> None:
    parsed = _load("node_tap13_yaml.tap")
    assert _summary(parsed) == [
        ("fs/t/nfs_export/lists_the_export", P, ""),
        ("fs/t/nfs_export/mounts_read-write", P, ""),
        ("fs/t/nfs_export/keeps_mtime_after_write", F, "Expected values to be strictly equal:"),
        ("fs/t/nfs_export/locks_across_clients", S, "lockd not running"),
        ("fs/t/nfs_export/handles_stale_handles", T, "server restart not scripted"),
        ("fs/t/nfs_export/large_files/writes_1_GiB", P, ""),
        ("fs/t/nfs_export/large_files/reads_it_back", P, ""),
        ("fs/t/server_survives_restart", P, ""),
    ]
    assert parsed.planned == 2
    assert parsed.problems == ()
    first = _by_path(parsed, "nfs export", "lists the export")
    assert first.duration_s == pytest.approx(0.000555819)
    assert first.diagnostics == "  ---\n  duration_ms: 0.555819\n  ..."
    failed = _by_path(parsed, "nfs export", "keeps mtime after write")
    assert failed.diagnostics.startswith("  ---\n  duration_ms: 0.87843\n")
    assert "\n  error: |-\n    Expected values" in failed.diagnostics
    assert "\n    + '2024-01-01'\n    - '2024-01-02'\n" in failed.diagnostics
    assert failed.diagnostics.endswith("\n  ...")


def test_tap14_subtests_yaml_escapes_and_directives() -> None:
    parsed = _load("tap14_subtests.tap")
    assert _summary(parsed) == [
        ("fs/t/export_table/parses_%2Fetc%2Fexports", P, ""),
        ("fs/t/export_table/rejects_a_bad_option_%23_with_an_escaped_hash", P, ""),
        ("fs/t/export_table/squashes_root", S, "no_root_squash build"),
        ("fs/t/client_mounts/mount_v4.2", P, ""),
        ("fs/t/client_mounts/mount_v3", F, "mount.nfs: Protocol not supported"),
        ("fs/t/client_mounts/test_3/lock_and_unlock", P, ""),
        ("fs/t/server_restart", P, "passed although marked TODO: grace period not honoured"),
        ("fs/t/throughput", P, ""),
    ]
    assert parsed.planned == 4
    assert parsed.problems == ()
    assert _by_path(parsed, "export table", "rejects a bad option # with an escaped hash")
    assert _by_path(parsed, "client mounts", "mount v3").duration_s == pytest.approx(0.51225)
    throughput = _by_path(parsed, "throughput")
    assert throughput.metrics == {"write_mb_s": 241.7, "read_mb_s": 612.0}
    assert throughput.duration_s == pytest.approx(3.0045)


def test_bail_out_stops_everything() -> None:
    parsed = _load("shell_bail_out.tap")
    assert _summary(parsed) == [
        ("fs/t/tinyfs_module_loads", P, ""),
        ("fs/t/mkfs_creates_a_filesystem", P, ""),
        ("fs/t/mount_succeeds", F, "(in test file test/mount.bats, line 14)"),
    ]
    assert parsed.bailed_out
    assert parsed.planned == 5
    # The bail out explains the missing tests; no separate plan complaint.
    assert parsed.problems == ("bail out: /mnt is not mounted, the remaining tests cannot run",)
    assert "wrong fs type" in _by_path(parsed, "mount succeeds").diagnostics
    assert not parsed.ok


def test_output_cut_short_without_a_plan_is_a_problem() -> None:
    parsed = _load("truncated_no_plan.tap")
    assert _summary(parsed) == [
        ("fs/t/create_1000_files", P, ""),
        ("fs/t/stat_them_all", P, ""),
        ("fs/t/writer_1_checksum", P, ""),
        ("fs/t/writer_2_chec", F, ""),
    ]
    assert parsed.planned is None
    assert parsed.problems == ("no TAP plan",)
    stat = _by_path(parsed, "stat them all")
    assert stat.duration_s == pytest.approx(0.0881)
    assert stat.diagnostics.endswith("# starting 4 concurrent writers")


# --- rules, one by one ---------------------------------------------------------


def _tap(*lines: str) -> ParsedOutput:
    return parse("\n".join(lines) + "\n", "tap")


def test_plan_at_the_end_is_fine_in_the_middle_is_not() -> None:
    assert _tap("ok 1", "ok 2", "1..2").problems == ()
    assert _tap("ok 1", "1..2", "ok 2").problems == ("the plan is in the middle of the tests",)


def test_fewer_tests_than_planned() -> None:
    parsed = _tap("1..5", "ok 1 - a", "ok 2 - b", "ok 3 - c")
    assert parsed.problems == ("planned 5 tests, saw 3",)
    assert [r.outcome for r in parsed.results] == [P, P, P]
    assert _tap("1..1", "ok 1", "ok 2").problems == ("planned 1 test, saw 2",)


def test_two_plans_and_a_plan_not_starting_at_one() -> None:
    assert _tap("1..1", "ok 1", "1..1").problems == ("line 3: a second plan '1..1'",)
    assert _tap("2..3", "ok 1", "ok 2").problems == ("line 1: plan '2..3' does not start at 1",)


def test_no_output_at_all() -> None:
    parsed = parse("", "tap")
    assert parsed.results == ()
    assert parsed.problems == ("no TAP plan",)


def test_skip_all_is_one_skipped_result_for_the_whole_command() -> None:
    parsed = _tap("TAP version 13", "1..0 # SKIP no network in this guest")
    assert parsed.planned == 0
    assert parsed.problems == ()
    assert parsed.results == (SubResult(path=(), outcome=S, message="no network in this guest"),)
    assert formats.test_ids("net/t", parsed) == [("net/t", parsed.results[0])]


@pytest.mark.parametrize(
    ("line", "outcome", "message"),
    [
        ("ok 1 - a # SKIP no disk", S, "no disk"),
        ("ok 1 - a # skip no disk", S, "no disk"),
        ("ok 1 - a # Skipped: no disk", S, "no disk"),
        ("not ok 1 - a # SKIP no disk", S, "no disk"),
        ("not ok 1 - a # TODO later", T, "later"),
        ("not ok 1 - a # todo later", T, "later"),
        ("ok 1 - a # TODO later", P, "passed although marked TODO: later"),
        ("not ok 1 - a # exit=3", F, "exit=3"),
        ("ok 1 - a # rcode=0", P, ""),
        ("not ok 1 - a # TIMEOUT 30 seconds", F, "timed out: 30 seconds"),
        ("ok 1 - a # XFAIL known bug", T, "known bug"),
        ("not ok 1 - a # ERROR no such device", E, "no such device"),
        ("not ok 1 - a # error opening the file", F, "error opening the file"),
    ],
)
def test_directives(line: str, outcome: SubOutcome, message: str) -> None:
    [result] = _tap("1..1", line).results
    assert (result.path, result.outcome, result.message) == (("a",), outcome, message)


def test_test_points_without_numbers_or_descriptions() -> None:
    parsed = _tap("ok", "not ok", "ok - named", "ok 4 also named", "1..4")
    assert [(r.path, r.outcome) for r in parsed.results] == [
        (("test 1",), P),
        (("test 2",), F),
        (("named",), P),
        (("also named",), P),
    ]
    assert parsed.problems == ()


def test_numbers_out_of_sequence() -> None:
    parsed = _tap("1..4", "ok 1", "ok 2", "ok 4", "ok 5")
    # One problem for the jump, not one for every test after it.
    assert parsed.problems == ("line 4: test 4 out of sequence (expected 3)",)


@pytest.mark.parametrize(
    "noise",
    [
        "okay, starting the server",
        "OK",
        "mount: /mnt: mounted",
        "not a test line",
        "[ 12.5] something from the kernel",
        "---",
        "pragma +strict",
    ],
)
def test_other_output_is_ignored(noise: str) -> None:
    parsed = _tap("1..2", "ok 1 - a", noise, "ok 2 - b")
    assert parsed.problems == ()
    assert [r.path for r in parsed.results] == [("a",), ("b",)]


@pytest.mark.parametrize(
    "broken",
    ["ok1 - a", "not ok2 - b", "notok 2 - b", "not  ok 2 - b", "1..", "1..x", "TAP version x"],
)
def test_lines_that_look_like_broken_tap_are_problems(broken: str) -> None:
    parsed = _tap("1..1", "ok 1 - a", broken)
    assert parsed.problems == (f"line 3: malformed TAP line {broken!r}",)


def test_unsupported_version() -> None:
    assert _tap("TAP version 15", "1..1", "ok 1").problems == (
        "line 1: unsupported 'TAP version 15'",
    )


def test_bail_out_without_a_reason_and_inside_a_subtest() -> None:
    parsed = _tap("1..2", "# Subtest: s", "    1..2", "    ok 1 - x", "    Bail out!", "ok 1 - s")
    assert parsed.bailed_out
    assert parsed.problems == ("bail out",)
    # What finished before the bail out is kept; the open subtest gets no extra result.
    assert [(r.path, r.outcome) for r in parsed.results] == [(("s", "x"), P)]


def test_yaml_block_without_its_end() -> None:
    parsed = _tap("1..2", "not ok 1 - a", "  ---", "  message: boom", "ok 2 - b")
    assert parsed.problems == ("line 3: YAML block not terminated by '...'",)
    assert [(r.path, r.outcome, r.message) for r in parsed.results] == [
        (("a",), F, "boom"),
        (("b",), P, ""),
    ]


def test_failing_parent_with_passing_children_gets_its_own_result() -> None:
    parsed = _tap(
        "TAP version 14",
        "# Subtest: cleanup",
        "    1..2",
        "    ok 1 - unmount",
        "    ok 2 - rmmod",
        "not ok 1 - cleanup",
        "# 3 inodes leaked",
        "1..1",
    )
    assert [(r.path, r.outcome, r.message) for r in parsed.results] == [
        (("cleanup", "unmount"), P, ""),
        (("cleanup", "rmmod"), P, ""),
        (("cleanup",), F, "3 inodes leaked"),
    ]
    ids = [i for i, _ in formats.test_ids("fs/t", parsed)]
    assert ids == ["fs/t/cleanup/unmount", "fs/t/cleanup/rmmod", "fs/t/cleanup"]


def test_failing_parent_with_a_failing_child_adds_nothing() -> None:
    parsed = _tap("# Subtest: s", "    1..1", "    not ok 1 - x", "not ok 1 - s", "1..1")
    assert [(r.path, r.outcome) for r in parsed.results] == [(("s", "x"), F)]


def test_todo_parent_makes_its_failing_children_expected_failures() -> None:
    parsed = _tap(
        "# Subtest: s",
        "    1..2",
        "    not ok 1 - x",
        "    ok 2 - y",
        "not ok 1 - s # TODO locking is unfinished",
        "1..1",
    )
    assert [(r.path, r.outcome, r.message) for r in parsed.results] == [
        (("s", "x"), T, "locking is unfinished"),
        (("s", "y"), P, ""),
    ]


def test_subtest_without_a_plan_or_a_result_line() -> None:
    parsed = _tap("1..1", "# Subtest: s", "    ok 1 - x", "    not ok 2 - y")
    assert parsed.problems == (
        "subtest 's': the output ended inside it",
        "planned 1 test, saw 0",
        "s: no TAP plan",
    )
    assert [(r.path, r.outcome) for r in parsed.results] == [
        (("s", "x"), P),
        (("s", "y"), F),
        (("s",), E),
    ]
    assert parsed.results[-1].message == (
        "the output ended before its result line (2 subtests reported)"
    )


def test_bad_metric_values_are_problems_and_not_metrics() -> None:
    parsed = _tap("1..1", "ok 1 - w", "# metric mb_s=fast", "# metric ops=nan", "# metric ok=2 x")
    assert parsed.results[0].metrics == {"ok": 2.0}
    assert parsed.problems == (
        "w: metric mb_s: 'fast' is not a number",
        "w: metric ops: 'nan' is not a finite number",
    )


def test_crlf_and_trailing_spaces() -> None:
    parsed = parse("1..2\r\nok 1 - a  \r\nnot ok 2 - b\r\n", "tap")
    assert [(r.path, r.outcome) for r in parsed.results] == [(("a",), P), (("b",), F)]
    assert parsed.problems == ()


def test_absurd_nesting_is_a_problem_not_a_crash() -> None:
    parsed = parse("\n".join(" " * i + "ok 1 - x" for i in range(2000)), "tap")
    assert any("nested deeper than" in p for p in parsed.problems)
    assert not parsed.ok


_VOCABULARY = [
    "TAP version 13",
    "TAP version 14",
    "KTAP version 1",
    "1..3",
    "1..0 # SKIP nothing",
    "ok",
    "ok 1 - a",
    "not ok 2 - b # TODO t",
    "ok 3 # skip s",
    "# Subtest: sub",
    "# Subtest",
    "# diag",
    "# metric x=1",
    "  ---",
    "  message: m",
    "  ...",
    "Bail out! enough",
    "random output",
    "ok1",
    "",
]


@pytest.mark.parametrize("seed", range(200))
@pytest.mark.parametrize("fmt", ["tap", "ktap"])
def test_random_streams_never_raise_and_ids_stay_unique(seed: int, fmt: str) -> None:
    rng = random.Random(seed)
    lines = [
        " " * rng.choice([0, 0, 2, 4, 4, 8]) + rng.choice(_VOCABULARY)
        for _ in range(rng.randint(0, 40))
    ]
    parsed = parse("\n".join(lines), fmt)
    ids = [i for i, _ in formats.test_ids("s/t", parsed)]
    assert len(ids) == len(set(ids))
    assert all(isinstance(r.outcome, SubOutcome) for r in parsed.results)
    assert all(p and "\n" not in p for p in parsed.problems)
