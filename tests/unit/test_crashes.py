"""The kernel crash parser against real and hand-written console logs."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from vmlab.watch.crash_frames import (
    guilty,
    is_generic,
    normalize_func,
    parse_frame,
    parse_rip,
)
from vmlab.watch.crash_patterns import PATTERNS, Kind
from vmlab.watch.crashes import (
    Crash,
    CrashScanner,
    format_summary,
    parse_log,
    read_log,
)

DATA = Path(__file__).resolve().parent.parent / "data" / "crashes"
LOGS = sorted(DATA.glob("*.log"))
FIELDS = ("kind", "title", "frame", "corrupted", "start_line", "end_line")


def _load(name: str) -> list[Crash]:
    return parse_log(read_log(DATA / f"{name}.log"))


def _expected(log: Path) -> list[dict[str, object]]:
    data = json.loads(log.with_suffix(".json").read_text())
    assert isinstance(data, list)
    return data


def test_fixtures_exist() -> None:
    assert len(LOGS) >= len(PATTERNS)
    for log in LOGS:
        assert log.with_suffix(".json").is_file(), f"{log.name} has no .json"


def test_every_pattern_has_a_fixture_that_exercises_it() -> None:
    names = [p.name for p in PATTERNS]
    assert len(names) == len(set(names)), "pattern names must be unique"
    for pattern in PATTERNS:
        log = DATA / f"{pattern.name}.log"
        assert log.is_file(), f"pattern {pattern.name!r} has no fixture"
        crashes = parse_log(read_log(log))
        assert crashes, f"{log.name}: nothing found"
        assert crashes[0].kind is pattern.kind, f"{log.name}: {crashes[0]}"


@pytest.mark.parametrize("log", LOGS, ids=lambda p: p.stem)
def test_fixture(log: Path) -> None:
    found = [{k: c.to_json()[k] for k in FIELDS} for c in parse_log(read_log(log))]
    assert found == _expected(log)


@pytest.mark.parametrize("log", LOGS, ids=lambda p: p.stem)
def test_scanner_agrees_with_parse_log(log: Path) -> None:
    text = read_log(log)
    scanner = CrashScanner()
    fed: list[Crash] = []
    for line in text.split("\n")[:-1] if text.endswith("\n") else text.split("\n"):
        fed.extend(scanner.feed(line + "\n"))
    fed.extend(scanner.finish())
    assert sorted(fed, key=lambda c: c.start_line) == parse_log(text)


def test_scanner_reports_before_the_log_ends() -> None:
    """On a live console, a WARNING is reported as soon as the next line arrives."""
    lines = read_log(DATA / "warning.log").split("\n")
    scanner = CrashScanner()
    when = None
    for no, line in enumerate(lines, 1):
        if scanner.feed(line):
            when = no
            break
    assert lines[390].rstrip("\r").endswith("---[ end trace 0000000000000000 ]---")
    assert when == 392  # the line after `end trace` (391) closes the report


def test_clean_logs_have_no_crashes() -> None:
    clean = [log for log in LOGS if log.stem.startswith("clean_")]
    assert len(clean) >= 3
    for log in clean:
        assert parse_log(read_log(log)) == [], log.name
    assert "panic=-1" in read_log(DATA / "clean_debian61_verbose.log")


def test_same_bug_from_two_runs_has_one_signature() -> None:
    (first,) = _load("warning")
    (second,) = _load("messy_same_bug_run2")
    assert first.report != second.report
    assert first.start_line != second.start_line
    assert (first.title, first.signature) == (second.title, second.signature)


def _rewrite_run(text: str) -> str:
    """The same bug as another run would print it: other offsets, addresses, pids,
    CPUs, task names and timestamps."""
    text = re.sub(r"\+0x[0-9a-f]+/0x[0-9a-f]+", "+0x2a/0x1c0", text)
    text = re.sub(r"\b[0-9a-f]{16}\b", "ffff8880deadbe00", text)
    text = re.sub(r"PID: \d+", "PID: 4242", text)
    text = re.sub(r"CPU: \d+", "CPU: 3", text)
    text = re.sub(r"Comm: \S+", "Comm: kworker/3:1", text)
    return re.sub(r"\[\s*\d+\.\d+\]", "[  777.123456]", text)


@pytest.mark.parametrize(
    "name", ["warning", "kasan", "null_deref", "hung_task", "lockdep_circular", "memory_leak"]
)
def test_signature_ignores_addresses_offsets_pids_cpus_tasks_and_time(name: str) -> None:
    original = _load(name)
    rewritten = parse_log(_rewrite_run(read_log(DATA / f"{name}.log")))
    assert [c.signature for c in original] == [c.signature for c in rewritten]
    assert [c.title for c in original] == [c.title for c in rewritten]


def test_different_bugs_have_different_signatures() -> None:
    by_title: dict[str, str] = {}
    for log in LOGS:
        for crash in parse_log(read_log(log)):
            by_title.setdefault(crash.title, crash.signature)
            assert by_title[crash.title] == crash.signature, crash.title
    assert len(by_title) >= 40
    assert len(set(by_title.values())) == len(by_title)
    (warn,) = _load("warning")
    (bug,) = _load("kernel_bug")
    assert warn.signature != bug.signature


def test_repeated_reports_of_one_bug() -> None:
    lockups = _load("soft_lockup")
    hangs = _load("hung_task")
    assert len(lockups) == 2 and len({c.signature for c in lockups}) == 1
    assert len(hangs) == 3 and len({c.signature for c in hangs}) == 1
    leaks = _load("memory_leak_debugfs")
    assert [c.frame for c in leaks] == ["demo_table_add", "demo_table_add", "demo_set_label"]
    assert len({c.signature for c in leaks}) == 2


def test_signature_is_short_hex() -> None:
    for crash in _load("messy_two_reports"):
        assert re.fullmatch(r"[0-9a-f]{16}", crash.signature)


def test_titles_carry_no_run_specific_numbers() -> None:
    for log in LOGS:
        for crash in parse_log(read_log(log)):
            assert not re.search(r"0x[0-9a-f]+|\d{3,}|\[\s*\d", crash.title), crash.title


def test_report_cut_off_before_its_frame_is_corrupted() -> None:
    cut_early, cut_late = _load("messy_reboot_cutoff")
    assert cut_early.corrupted and cut_early.frame is None
    assert cut_early.title == "BUG: kernel NULL pointer dereference in ?"
    assert not cut_late.corrupted and cut_late.frame == "cm_gpf_read"
    (full,) = _load("gpf")
    assert cut_late.signature == full.signature


def test_truncating_an_oops_anywhere() -> None:
    """Cut a real oops after every line: corrupted exactly while RIP is missing."""
    lines = read_log(DATA / "null_deref.log").split("\n")
    (full,) = parse_log("\n".join(lines))
    rip = next(i for i, x in enumerate(lines, 1) if "RIP: 0010:cm_null_deref" in x)
    for end in range(full.start_line, full.end_line + 1):
        (crash,) = parse_log("\n".join(lines[:end]))
        assert crash.start_line == full.start_line
        assert crash.end_line == end
        assert crash.corrupted == (end < rip), end
        if end >= rip:
            assert (crash.title, crash.signature) == (full.title, full.signature)


def test_follow_up_panic_alone_is_corrupted_but_after_an_oops_is_absorbed() -> None:
    (alone,) = _load("panic_follow_up")
    assert alone.corrupted and alone.title == "kernel panic: Fatal exception"
    (oops,) = _load("messy_oops_then_panic")
    assert not oops.corrupted and oops.kind is Kind.PAGE_FAULT
    assert "Kernel panic - not syncing: Fatal exception" in oops.report


def test_interleaved_reports_are_separated_by_caller_id() -> None:
    warning, hung = _load("messy_caller_ids")
    assert warning.title == "WARNING in cm_warn_path"
    assert hung.title == "INFO: task hung in crashmod_init"
    assert "blocked for more than" not in warning.report
    assert "cm_warn_path" not in hung.report
    assert "crng init done" not in warning.report + hung.report
    assert warning.start_line < hung.start_line < warning.end_line < hung.end_line


def test_program_output_inside_a_report_is_skipped() -> None:
    (crash,) = _load("messy_interleaved_output")
    assert "ok 1 - insmod_basic" not in crash.report
    assert "harness" not in crash.report
    assert crash.report.startswith("------------[ cut here ]------------\nkernel BUG at")
    (gpf,) = _load("messy_syslog")
    assert "systemd" not in gpf.report and "sshd" not in gpf.report
    assert "\n crashmod_init+0x9d/0x1000 [crashmod]\n" in gpf.report


def test_prefix_styles_give_the_same_report_text() -> None:
    plain = (
        "WARNING: CPU: 0 PID: 1 at fs/demo.c:12 demo_fn+0x1/0x2 [demo]\n"
        "Call Trace:\n <TASK>\n demo_caller+0x10/0x20 [demo]\n </TASK>\n"
        "---[ end trace 0000000000000000 ]---\n"
    )
    body = plain.splitlines()
    variants = [
        "".join(f"[   12.345678] {x}\n" for x in body),
        "".join(f"[   12.345678][  T123] {x}\n" for x in body),
        "".join(f"[   12.345678] [T123] {x}\n" for x in body),
        "".join(f"<4>[   12.345678] {x}\n" for x in body),
        "".join(f"Nov 21 03:00:00 host kernel: {x}\n" for x in body),
        "".join(f"Nov 21 03:00:00 host kernel: [   12.345678] {x}\n" for x in body),
        "".join(f"2024-11-21T03:00:00.123456+00:00 host kernel: {x}\n" for x in body),
        "".join(f"[Thu Nov 21 03:00:00 2024] {x}\n" for x in body),
        "".join(f"kern  :warn  : [   12.345678] {x}\n" for x in body),
        "".join(f"{x}\r\n" for x in body),
    ]
    expected = parse_log(plain)
    assert [c.title for c in expected] == ["WARNING in demo_fn"]
    for text in variants:
        found = parse_log(text)
        assert [(c.title, c.report, c.start_line, c.end_line) for c in found] == [
            (c.title, c.report, c.start_line, c.end_line) for c in expected
        ], text


def test_unprefixed_lines_do_not_start_reports_once_the_kernel_prefixes_its_lines() -> None:
    text = "[    1.000000] Linux kernel booting\nBUG: printed by a test script\n"
    assert parse_log(text) == []
    assert [c.title for c in parse_log("BUG: workqueue lockup - pool cpus=0 stuck\n")] == [
        "BUG: workqueue lockup"
    ]


def test_to_json_round_trip() -> None:
    for crash in _load("messy_two_reports"):
        data = json.loads(json.dumps(crash.to_json()))
        assert set(data) >= {*FIELDS, "signature", "report"}
        assert Crash.from_json(data) == crash


def test_format_summary() -> None:
    crashes = _load("messy_reboot_cutoff")
    text = format_summary(crashes, "console.log")
    assert text.startswith("console.log: 2 kernel crash reports (2 distinct)")
    assert "#1 BUG: kernel NULL pointer dereference in ?  [corrupted" in text
    assert "lines 367-373" in text and "frame cm_gpf_read" in text
    assert format_summary([], "x.log") == "x.log: no kernel crash reports\n"
    long = format_summary(_load("kasan"), "k", max_report_lines=5)
    assert "more lines)" in long


def test_feed_splits_embedded_newlines() -> None:
    text = read_log(DATA / "divide_error.log")
    scanner = CrashScanner()
    crashes = scanner.feed(text) + scanner.finish()
    assert crashes == parse_log(text)
    assert scanner.lines_seen == text.count("\n")


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ("foo.isra.0", "foo"),
        ("bar.constprop.0.cold", "bar"),
        ("baz.part.3+0x12/0x40 [demo]", "baz"),
        ("qux.cold.12", "qux"),
        ("plain_name", "plain_name"),
    ],
)
def test_normalize_func(raw: str, name: str) -> None:
    assert normalize_func(raw) == name


def test_frames_and_rip_lines() -> None:
    frame = parse_frame(" ? demofs_lookup.isra.0+0x51/0x1a0 [demofs]", 7)
    assert frame is not None and frame.questionable and frame.func == "demofs_lookup"
    assert frame.module == "demofs" and frame.line == 7
    leak = parse_frame("    [<ffffffffc0731077>] demo_table_add+0x37/0xb0 [demo_table]", 1)
    assert leak is not None and leak.func == "demo_table_add" and not leak.questionable
    inline = parse_frame(" __dump_stack lib/dump_stack.c:88 [inline]", 1)
    assert inline is not None and inline.func == "__dump_stack"
    assert parse_frame("crashmod: what=warn", 1) is None
    assert parse_frame(" ? 0xffffffffc0206000", 1) is None
    rip = parse_rip("RIP: 0010:cm_null_deref+0xc/0x13 [crashmod]", 3)
    assert rip is not None and rip.func == "cm_null_deref"
    assert parse_rip("RIP: 0033:0x47fbe9", 3) is None


@pytest.mark.parametrize(
    "func",
    [
        "dump_stack_lvl",
        "__warn",
        "report_bug",
        "kasan_report",
        "__asan_store4",
        "panic",
        "_raw_spin_lock_irqsave",
        "__mutex_lock",
        "down_write",
        "kmalloc_trace",
        "__kmem_cache_free",
        "kfree",
        "memcpy_erms",
        "strlen",
        "_copy_to_user",
        "__sanitizer_cov_trace_pc",
        "do_syscall_64",
        "entry_SYSCALL_64_after_hwframe",
        "fortify_panic",
        "__list_add_valid",
    ],
)
def test_generic_frames(func: str) -> None:
    assert is_generic(func)


@pytest.mark.parametrize(
    "func", ["demofs_lookup", "shutdown_device", "download_fw", "update_stats", "cm_warn_path"]
)
def test_non_generic_frames(func: str) -> None:
    assert not is_generic(func)


def test_guilty_skips_unreliable_and_generic_frames() -> None:
    frames = [
        parse_frame(x, i)
        for i, x in enumerate(
            [
                " dump_stack_lvl+0x44/0x5c",
                " ? demo_a+0x1/0x2",
                " mutex_lock+0x1/0x2",
                " demo_b+0x1/0x2",
            ]
        )
    ]
    found = guilty(f for f in frames if f is not None)
    assert found is not None and found.func == "demo_b"


def test_kinds_used_by_the_table_are_all_documented() -> None:
    used = {p.kind for p in PATTERNS}
    assert used == set(Kind)


def test_back_to_back_warnings_keep_their_cut_here_lines() -> None:
    one = [
        "------------[ cut here ]------------",
        "WARNING: CPU: 0 PID: 7 at fs/demo.c:1 demo_one+0x1/0x2 [demo]",
        "Call Trace:",
        " <TASK>",
        " demo_caller+0x10/0x20 [demo]",
        " </TASK>",
        "---[ end trace 0000000000000000 ]---",
    ]
    two = [x.replace("demo_one", "demo_two").replace("fs/demo.c:1", "fs/demo.c:2") for x in one]
    text = "".join(f"[    3.{i:06d}] {x}\n" for i, x in enumerate(one + two))
    first, second = parse_log(text)
    assert (first.title, first.start_line, first.end_line) == ("WARNING in demo_one", 1, 7)
    assert (second.title, second.start_line, second.end_line) == ("WARNING in demo_two", 8, 14)
    assert first.signature != second.signature


def test_header_merged_with_another_printk_is_corrupted() -> None:
    text = (
        "[    5.000001] BUG: kernel NULL pointer dereference, address: 0000000000000008"
        "[    5.000002] demo: tick\n"
        "[    5.000003] RIP: 0010:demo_tick+0x1/0x2 [demo]\n"
    )
    (crash,) = parse_log(text)
    assert crash.frame == "demo_tick"
    assert crash.corrupted


def test_memory_leak_title_without_a_caller_frame() -> None:
    text = (
        "unreferenced object 0xffff888001234500 (size 64):\n"
        '  comm "swapper/0", pid 1, jiffies 4294892296 (age 8.124s)\n'
        "  backtrace:\n"
        "    [<000000001c2a7b3e>] __kmalloc+0x4e/0x140\n"
        "    [<00000000ab4c2e10>] kmemdup+0x25/0x50\n"
    )
    (leak,) = parse_log(text)
    assert (leak.title, leak.frame, leak.corrupted) == ("BUG: memory leak", None, False)
    (cut,) = parse_log(text.partition("  backtrace:")[0])
    assert (cut.title, cut.corrupted) == ("BUG: memory leak", True)


def test_shuffled_lines_never_break_the_parser() -> None:
    """Fixture lines in a random order: no exception, ranges stay inside the log."""
    rng = random.Random(1234)
    pool = [x for log in LOGS for x in read_log(log).split("\n")]
    for _ in range(20):
        lines = rng.sample(pool, 400)
        crashes = parse_log("\n".join(lines))
        for crash in crashes:
            assert 1 <= crash.start_line <= crash.end_line <= len(lines)
            assert crash.report and crash.title and len(crash.signature) == 16
        assert [c.start_line for c in crashes] == sorted(c.start_line for c in crashes)
