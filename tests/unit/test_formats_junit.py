"""JUnit XML input: real pytest and node reports, Go and Surefire style, broken XML."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmlab.results import formats
from vmlab.results.formats import ParsedOutput, SubOutcome, SubResult, parse

DATA = Path(__file__).resolve().parent.parent / "data" / "formats" / "junit"

P, F, S, T, E = (
    SubOutcome.PASSED,
    SubOutcome.FAILED,
    SubOutcome.SKIPPED,
    SubOutcome.TODO_FAILED,
    SubOutcome.ERROR,
)


def _load(name: str) -> ParsedOutput:
    return parse((DATA / name).read_text(), "junit")


def _summary(parsed: ParsedOutput) -> list[tuple[str, SubOutcome, str]]:
    return [(i, r.outcome, r.message) for i, r in formats.test_ids("py/t", parsed)]


def _by_name(parsed: ParsedOutput, name: str) -> SubResult:
    [found] = [r for r in parsed.results if r.path[-1] == name]
    return found


PYTEST = [
    ("py/t/tests.test_tinyfs/test_mount", P, ""),
    ("py/t/tests.test_tinyfs/test_write_read[0]", P, ""),
    (
        "py/t/tests.test_tinyfs/test_write_read[4096]",
        F,
        "AssertionError: short read: got 4000 bytes",
    ),
    ("py/t/tests.test_tinyfs/test_write_read[1048576]", P, ""),
    ("py/t/tests.test_tinyfs/test_xattr", S, "no xattr support in this kernel"),
    ("py/t/tests.test_tinyfs/test_rename_open", T, "rename over open file not implemented"),
    ("py/t/tests.test_tinyfs.TestRemount/test_umount", P, ""),
    ("py/t/tests.test_tinyfs.TestRemount/test_data_survives", P, ""),
    (
        "py/t/tests.test_tinyfs/test_loop_device",
        E,
        'failed on setup with "RuntimeError: cannot create loop device"',
    ),
]


def test_pytest_junitxml() -> None:
    parsed = _load("pytest_junitxml.xml")
    assert _summary(parsed) == PYTEST
    assert parsed.planned == 9
    assert parsed.problems == ()
    assert not parsed.bailed_out
    assert _by_name(parsed, "test_mount").duration_s == pytest.approx(0.021)
    survives = _by_name(parsed, "test_data_survives")
    assert survives.metrics == {"files_checked": 128.0, "remount_ms": 41.5}
    assert "metric files_checked=128" in survives.diagnostics
    failed = _by_name(parsed, "test_write_read[4096]")
    assert failed.diagnostics.startswith("size = 4096\n")
    assert "E       assert 4096 != 4096\n\ntests/test_tinyfs.py:12: AssertionError" in (
        failed.diagnostics
    )
    assert parsed.results[2].path == ("tests.test_tinyfs", "test_write_read[4096]")


def test_pytest_junitxml_on_stdout_among_its_terminal_output() -> None:
    parsed = _load("pytest_stdout_mixed.txt")
    assert _summary(parsed) == PYTEST
    assert parsed.problems == ()
    assert _by_name(parsed, "test_data_survives").metrics == {"remount_ms": 41.5}


def test_node_report_with_nested_suites_and_a_bare_testcase() -> None:
    parsed = _load("node_nested.xml")
    assert _summary(parsed) == [
        ("py/t/nfs_export/lists_the_export", P, ""),
        ("py/t/nfs_export/mounts_read-write", P, ""),
        (
            "py/t/nfs_export/keeps_mtime_after_write",
            F,
            "Expected values to be strictly equal:+ actual - expected+ '2024-01-01'- "
            "'2024-01-02'            ^",
        ),
        ("py/t/nfs_export/locks_across_clients", S, "lockd not running"),
        ("py/t/nfs_export/handles_stale_handles", T, "server restart not scripted"),
        ("py/t/nfs_export/large_files/writes_1_GiB", P, ""),
        ("py/t/nfs_export/large_files/reads_it_back", P, ""),
        ("py/t/server_survives_restart", P, ""),
    ]
    assert parsed.planned is None  # the root does not say, and a bare testcase is in it
    assert parsed.problems == ()


def test_go_junit_report() -> None:
    parsed = _load("go_junit_report.xml")
    assert _summary(parsed) == [
        ("py/t/example.com%2Fnfslab%2Fexportd/TestParseExports", P, ""),
        ("py/t/example.com%2Fnfslab%2Fexportd/TestParseExports%2Froot_squash", P, ""),
        ("py/t/example.com%2Fnfslab%2Fexportd/TestMountV4", F, "Failed"),
        (
            "py/t/example.com%2Fnfslab%2Fexportd/TestKerberos",
            S,
            "exportd_test.go:102: no KDC configured",
        ),
        ("py/t/example.com%2Fnfslab%2Flockd/TestGrant", P, ""),
        ("py/t/example.com%2Fnfslab%2Flockd/TestGrantTimeout", P, ""),
        ("py/t/example.com%2Fnfslab%2Flockd/TestRecovery", F, "Runtime error"),
    ]
    assert parsed.planned == 7
    assert parsed.problems == ()
    timeout = _by_name(parsed, "TestGrantTimeout")
    assert timeout.metrics == {"grant_latency_ms": 12.5, "grants": 40.0}
    assert timeout.duration_s == pytest.approx(2.004)
    assert _by_name(parsed, "TestMountV4").diagnostics == (
        "    exportd_test.go:88: mount 10.0.2.15:/srv/nfs: permission denied"
    )
    assert "goroutine 23 [running]:" in _by_name(parsed, "TestRecovery").diagnostics


def test_maven_surefire_report() -> None:
    parsed = _load("maven_surefire.xml")
    assert _summary(parsed) == [
        ("py/t/org.example.nfs.ExportTest/listsExports", P, ""),
        ("py/t/org.example.nfs.ExportTest/mountReadWrite", F, "expected: <0> but was: <13>"),
        ("py/t/org.example.nfs.ExportTest/lockRecovery", S, "lockd not available in this image"),
        ("py/t/org.example.nfs.ExportTest/staleHandle", E, "Connection refused"),
        ("py/t/org.example.nfs.ExportTest/exportOptions(String)[1]", P, ""),
    ]
    assert parsed.planned == 5
    assert parsed.problems == ()
    mount = _by_name(parsed, "mountReadWrite")
    assert mount.metrics == {"mount_ms": 1204.0}
    assert mount.duration_s == pytest.approx(1.204)
    stale = _by_name(parsed, "staleHandle")
    assert stale.diagnostics.startswith("java.net.ConnectException: Connection refused\n\tat ")
    assert stale.diagnostics.endswith("WARN  NfsClient - server 10.0.2.15 not answering, retrying")


def test_report_cut_off_mid_testcase_keeps_what_completed() -> None:
    parsed = _load("pytest_truncated.xml")
    assert _summary(parsed) == PYTEST[:4]
    assert parsed.problems == ("malformed JUnit XML at line 17, column 95: unclosed token",)
    assert parsed.planned is None
    assert not parsed.ok


# --- rules -------------------------------------------------------------------


def _junit(xml: str) -> ParsedOutput:
    return parse(xml, "junit")


def test_no_xml_at_all() -> None:
    parsed = _junit("collected 0 items\n\n==== no tests ran in 0.01s ====\n")
    assert parsed.results == ()
    assert parsed.problems == ("no JUnit XML in the output",)


def test_xml_that_is_not_junit() -> None:
    parsed = _junit('<?xml version="1.0"?><html><body>502 Bad Gateway</body></html>')
    assert parsed.problems == ("not JUnit XML: the root element is <html>",)


def test_malformed_xml_is_a_problem_with_the_line_of_the_whole_output() -> None:
    parsed = _junit("progress...\nmore\n<testsuite name='s'>\n<testcase name='a'>\n</testsuite>\n")
    assert parsed.problems == ("malformed JUnit XML at line 5, column 2: mismatched tag",)
    assert parsed.results == ()


def test_text_after_the_root_is_ignored() -> None:
    parsed = _junit("<testsuite tests='1'><testcase name='a'/></testsuite>\n<b>1 passed</b>\n&&")
    assert parsed.problems == ()
    assert [(r.path, r.outcome) for r in parsed.results] == [(("a",), P)]


def test_worst_of_failure_and_error_wins_and_xfail_wins_over_both() -> None:
    parsed = _junit(
        "<testsuite name='s'>"
        "<testcase classname='c' name='both'><failure message='f'/><error message='e'/></testcase>"
        "<testcase classname='c' name='x'><failure message='f'/>"
        "<skipped type='xfail' message='known'/></testcase>"
        "<testcase classname='c' name='text'><failure>line one\nline two</failure></testcase>"
        "</testsuite>"
    )
    assert [(r.path, r.outcome, r.message) for r in parsed.results] == [
        (("s", "c", "both"), E, "e"),
        (("s", "c", "x"), T, "known"),
        (("s", "c", "text"), F, "line one"),
    ]


def test_path_mapping() -> None:
    parsed = _junit(
        "<testsuites name='all'>"
        "<testsuite name='outer'><testsuite name='inner'>"
        "<testcase classname='pkg.Mod' name='t1'/>"
        "</testsuite></testsuite>"
        "<testsuite name='pkg'><testcase classname='pkg.Mod' name='t2'/></testsuite>"
        "<testsuite name='pytest'><testcase classname='' name='t3'/></testsuite>"
        "<testsuite name='same'><testcase classname='same' name='t4'/></testsuite>"
        "<testsuite name=''><testcase classname='test' name='t5'/></testsuite>"
        "<testsuite name='n'><testcase classname='t6' name='t6'/></testsuite>"
        "<testsuite name='n2'><testcase/></testsuite>"
        "</testsuites>"
    )
    assert [r.path for r in parsed.results] == [
        ("outer", "inner", "pkg.Mod", "t1"),
        ("pkg.Mod", "t2"),  # the suite is the classname's package
        ("t3",),  # pytest's default suite name, no classname
        ("same", "t4"),
        ("t5",),  # node's default classname
        ("n", "t6"),
        ("n2", "unnamed"),
    ]


def test_namespaced_xml() -> None:
    parsed = _junit(
        "<testsuite xmlns='urn:example:junit' name='s' tests='1'>"
        "<testcase name='a' time='0.5'><skipped message='later'/></testcase>"
        "</testsuite>"
    )
    assert [(r.path, r.outcome, r.message, r.duration_s) for r in parsed.results] == [
        (("s", "a"), S, "later", 0.5)
    ]
    assert parsed.planned == 1


def test_bad_numbers_are_problems() -> None:
    parsed = _junit(
        "<testsuite name='s' tests='many'>"
        "<testcase name='a' time='soon'><properties>"
        "<property name='metric.rate' value='high'/><property name='other' value='x'/>"
        "</properties></testcase>"
        "<testcase name='b' time='-1'/>"
        "<testcase name='c' time='1,234.5'/>"
        "</testsuite>"
    )
    assert parsed.problems == (
        "<testsuite> tests='many' is not a number",
        "s/a: metric rate: 'high' is not a number",
        "s/a: time 'soon' is not a number",
        "s/b: time '-1' is negative",
    )
    assert [r.duration_s for r in parsed.results] == [None, None, 1234.5]
    assert parsed.results[0].metrics == {}


@pytest.mark.parametrize("cut", [*range(0, 3100, 61), 3105])
def test_any_truncation_is_reported_never_raised(cut: int) -> None:
    text = (DATA / "pytest_junitxml.xml").read_text()
    assert cut < len(text.rstrip())
    parsed = parse(text[:cut], "junit")
    assert len(parsed.problems) == 1
    assert parsed.problems[0].startswith(("malformed JUnit XML", "no JUnit XML"))
    assert len(parsed.results) <= len(PYTEST)
