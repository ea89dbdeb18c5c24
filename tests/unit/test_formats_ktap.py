"""KTAP parsing: KUnit from dmesg and a console, kselftest, nesting, crashes."""

from __future__ import annotations

import re
from pathlib import Path

from vmlab.results import formats
from vmlab.results.formats import ParsedOutput, SubOutcome, SubResult, parse

DATA = Path(__file__).resolve().parent.parent / "data" / "formats" / "ktap"

P, F, S, T, E = (
    SubOutcome.PASSED,
    SubOutcome.FAILED,
    SubOutcome.SKIPPED,
    SubOutcome.TODO_FAILED,
    SubOutcome.ERROR,
)
_PRINTK = re.compile(r"^\[\s*\d+\.\d+\](\[\s*[TC]\d+\])? ?", re.MULTILINE)


def _text(name: str) -> str:
    return (DATA / name).read_text()


def _summary(parsed: ParsedOutput) -> list[tuple[str, SubOutcome, str]]:
    return [(i, r.outcome, r.message) for i, r in formats.test_ids("km/kunit", parsed)]


def _by_path(parsed: ParsedOutput, *path: str) -> SubResult:
    [found] = [r for r in parsed.results if r.path == path]
    return found


MODPROBE = [
    ("km/kunit/tinyfs_cycles/load_unload", P, ""),
    ("km/kunit/tinyfs_cycles/refcount_balanced", P, ""),
    ("km/kunit/tinyfs_cycles/alloc_sizes/4096_bytes", P, ""),
    ("km/kunit/tinyfs_cycles/alloc_sizes/65536_bytes", P, ""),
    ("km/kunit/tinyfs_cycles/alloc_sizes/1048576_bytes", S, "needs CONFIG_TINYFS_LARGE"),
    (
        "km/kunit/tinyfs_cycles/leak_check",
        F,
        "leak_check: EXPECTATION FAILED at fs/tinyfs/tinyfs_test.c:141",
    ),
    ("km/kunit/tinyfs_xattr/xattr_set_get", S, "tinyfs built without xattr support"),
    ("km/kunit/tinyfs_xattr/xattr_list", S, "tinyfs built without xattr support"),
]


def test_kunit_module_from_dmesg() -> None:
    parsed = parse(_text("kunit_modprobe_dmesg.log"), "ktap")
    assert _summary(parsed) == MODPROBE
    assert parsed.planned == 2
    assert parsed.problems == ()
    assert not parsed.bailed_out
    leak = _by_path(parsed, "tinyfs_cycles", "leak_check")
    assert leak.diagnostics == (
        "# leak_check: EXPECTATION FAILED at fs/tinyfs/tinyfs_test.c:141\n"
        "Expected inodes_after == inodes_before, but\n"
        "    inodes_after == 17 (0x11)\n"
        "    inodes_before == 16 (0x10)"
    )
    load = _by_path(parsed, "tinyfs_cycles", "load_unload")
    assert load.metrics == {"cycle_us": 182.4}
    assert load.diagnostics == "# load_unload: metric cycle_us=182.4 us"
    # A kernel message printed while a test ran belongs to that test.
    refcount = _by_path(parsed, "tinyfs_cycles", "refcount_balanced")
    assert refcount.diagnostics == "tinyfs: mounted ram disk (16 inodes)"
    assert not any("[" in r.diagnostics for r in parsed.results)


def test_printk_prefixes_change_nothing() -> None:
    with_prefixes = _text("kunit_modprobe_dmesg.log")
    without = _PRINTK.sub("", with_prefixes)
    assert without != with_prefixes
    assert parse(without, "ktap") == parse(with_prefixes, "ktap")


def test_kunit_module_without_a_top_level_header() -> None:
    # Kernels before the header was printed for modules: suites only, no plan.
    lines = _PRINTK.sub("", _text("kunit_modprobe_dmesg.log")).splitlines()
    headerless = [line for line in lines if line not in ("KTAP version 1", "1..2")]
    parsed = parse("\n".join(headerless), "ktap")
    assert _summary(parsed) == MODPROBE
    assert parsed.planned is None
    assert parsed.problems == ()


def test_older_kunit_tap14_console_with_caller_ids() -> None:
    parsed = parse(_text("kunit_tap14_console.log"), "ktap")
    assert _summary(parsed) == [
        ("km/kunit/tinyfs_inode/inode_alloc", P, ""),
        (
            "km/kunit/tinyfs_inode/inode_free",
            F,
            "inode_free: EXPECTATION FAILED at fs/tinyfs/inode_test.c:52",
        ),
        ("km/kunit/tinyfs_inode/inode_times", S, "no clocksource yet"),
        ("km/kunit/tinyfs_dir", F, "tinyfs_dir:     # failed to initialize (-12)"),
        ("km/kunit/tinyfs_mount/mount_options/size=1M", P, ""),
        ("km/kunit/tinyfs_mount/mount_options/size=64M,mode=0700", P, ""),
        (
            "km/kunit/tinyfs_mount/mount_options/size=0",
            F,
            "mount_options: EXPECTATION FAILED at fs/tinyfs/mount_test.c:77",
        ),
    ]
    assert parsed.planned == 3
    assert parsed.problems == ()
    assert _by_path(parsed, "tinyfs_mount", "mount_options", "size=0").diagnostics == (
        "# mount_options: EXPECTATION FAILED at fs/tinyfs/mount_test.c:77\n"
        "Expected ret == -22, but\n"
        "    ret == 0 (0x0)"
    )


def test_panic_in_the_middle_of_a_suite() -> None:
    parsed = parse(_text("kunit_panic_truncated.log"), "ktap")
    assert _summary(parsed) == [
        ("km/kunit/tinyfs_rename/rename_simple", P, ""),
        (
            "km/kunit/tinyfs_rename",
            E,
            "the output ended before its result line (1 of 3 subtests reported)",
        ),
    ]
    assert parsed.planned == 1
    assert parsed.problems == (
        "subtest 'tinyfs_rename': the output ended inside it",
        "planned 1 test, saw 0",
        "tinyfs_rename: planned 3 tests, saw 1",
    )
    crashed = _by_path(parsed, "tinyfs_rename")
    assert crashed.diagnostics.startswith("BUG: kernel NULL pointer dereference")
    assert "\n#PF: error_code(0x0000) - not-present page\n" in crashed.diagnostics
    assert "\n <TASK>\n rename_over_open_test+0x88/0x140 [tinyfs_test]\n" in crashed.diagnostics
    assert crashed.diagnostics.endswith("---[ end Kernel panic - not syncing: Fatal exception ]---")
    assert not parsed.ok


def test_two_space_nesting_and_ktap_directives() -> None:
    parsed = parse(_text("ktap_two_space_nesting.ktap"), "ktap")
    assert _summary(parsed) == [
        ("km/kunit/tinyfs_ops/vfs_ops/open_close", P, ""),
        ("km/kunit/tinyfs_ops/vfs_ops/read_after_unlink", F, "read_after_unlink: read returned -5"),
        ("km/kunit/tinyfs_ops/fsync_durability", T, "journal replay not implemented"),
        ("km/kunit/tinyfs_ops/quota_enforced", F, "timed out: 30 seconds"),
        ("km/kunit/tinyfs_env/check_exit_status", P, ""),
        ("km/kunit/tinyfs_env/debugfs_present", E, "debugfs not mounted"),
        ("km/kunit/tinyfs_leaks/mount_umount", P, ""),
        (
            "km/kunit/tinyfs_leaks",
            F,
            "tinyfs_leaks: 3 inodes still allocated after suite exit",
        ),
    ]
    assert parsed.planned == 3
    assert parsed.problems == ()


def test_kselftest_runner_diagnostics_come_before_the_result() -> None:
    parsed = parse(_text("kselftest_runner.log"), "ktap")
    assert _summary(parsed) == [
        ("km/kunit/selftests:_tinyfs:_mount.sh", P, ""),
        ("km/kunit/selftests:_tinyfs:_xattr.sh", S, ""),
        ("km/kunit/selftests:_tinyfs:_stress.sh", F, "exit=1"),
    ]
    stress = _by_path(parsed, "selftests: tinyfs: stress.sh")
    assert stress.diagnostics == (
        "# timeout set to 45\n"
        "# selftests: tinyfs: stress.sh\n"
        "# writer 3: checksum mismatch at offset 1048576"
    )
    # Read as TAP, the same lines belong to the test before them instead.
    as_tap = parse(_text("kselftest_runner.log"), "tap")
    assert [r.outcome for r in as_tap.results] == [P, S, F]
    assert "checksum mismatch" not in as_tap.results[2].diagnostics


# --- rules -------------------------------------------------------------------


def _ktap(*lines: str) -> ParsedOutput:
    return parse("\n".join(lines) + "\n", "ktap")


def test_nested_stream_without_its_result_line_before_the_parent_goes_on() -> None:
    parsed = _ktap(
        "KTAP version 1",
        "1..1",
        "    KTAP version 1",
        "    # Subtest: suite",
        "    1..1",
        "        KTAP version 1",
        "        # Subtest: params",
        "        ok 1 p1",
        "not ok 1 suite",
    )
    assert parsed.problems == (
        "suite: subtest 'params': no result line",
        "suite: planned 1 test, saw 0",
    )
    assert [(r.path, r.outcome) for r in parsed.results] == [
        (("suite", "params", "p1"), P),
        (("suite", "params"), E),
    ]


def test_top_level_version_without_a_plan() -> None:
    parsed = _ktap("KTAP version 1", "ok 1 a")
    assert parsed.problems == ("no KTAP plan",)


def test_nothing_at_all() -> None:
    assert parse("[    0.000000] Linux version 6.1.0\n", "ktap").problems == (
        "no KTAP results found",
    )


def test_unknown_lines_are_allowed_anywhere() -> None:
    parsed = _ktap("KTAP version 1", "1..1", "ok1 garbage", "1..x", "ok 1 a")
    assert parsed.problems == ()
    assert parsed.results[0].diagnostics == "ok1 garbage\n1..x"


def test_version_line_in_the_middle_and_unsupported_versions() -> None:
    assert _ktap("KTAP version 1", "1..1", "KTAP version 1", "ok 1 a").problems == (
        "line 3: unexpected version line 'KTAP version 1'",
    )
    assert _ktap("KTAP version 2", "1..1", "ok 1 a").problems == (
        "line 1: unsupported 'KTAP version 2'",
    )


def test_headerless_output_does_not_check_numbers() -> None:
    # Suites of a module loaded while an earlier one is still loaded number on.
    parsed = _ktap("    KTAP version 1", "    1..1", "    ok 1 t", "ok 3 second_module_suite")
    assert parsed.problems == ()
    assert [r.path for r in parsed.results] == [("second_module_suite", "t")]


def test_kernel_log_prefix_variants() -> None:
    parsed = parse(
        "<6>[    3.000001] KTAP version 1\n"
        "<6>[    3.000002] 1..1\n"
        "Jan  5 10:11:12 guest kernel:     KTAP version 1\n"
        "Jan  5 10:11:12 guest kernel:     # Subtest: s\n"
        "Jan  5 10:11:12 guest kernel:     1..1\n"
        "[    3.000004][  T101]     ok 1 t\n"
        "[    3.000005] ok 1 s\n",
        "ktap",
    )
    assert parsed.problems == ()
    assert [(r.path, r.outcome) for r in parsed.results] == [(("s", "t"), P)]
