"""What a test leaves in the kernel: taint, memory deltas, kmemleak, reports."""

from __future__ import annotations

from pathlib import Path

from vmlab.watch.aftermath import describe_taint, judge, parse_probe, taint_letters
from vmlab.watch.crashes import parse_log, read_log

CRASHES = Path(__file__).resolve().parents[1] / "data" / "crashes"
MEMINFO = "MemAvailable:    400000 kB\nSlab:   20000 kB\nSUnreclaim:   9000 kB\n"


def probe_text(taint: int, available: int = 400000, unreclaimable: int = 9000) -> str:
    return (
        f"{taint}\nMemAvailable:    {available} kB\nSlab:   20000 kB\n"
        f"SUnreclaim:   {unreclaimable} kB\n"
    )


def test_parse_probe_reads_taint_and_meminfo() -> None:
    probe = parse_probe(probe_text(4608))
    assert probe is not None
    assert probe.taint == 4608
    assert probe.meminfo_kib == {"MemAvailable": 400000, "Slab": 20000, "SUnreclaim": 9000}
    assert probe.leaks == ()


def test_parse_probe_refuses_other_output() -> None:
    assert parse_probe("sh: cat: not found\n") is None


def test_taint_letters_follow_the_kernel_bits() -> None:
    assert taint_letters(0) == ""
    assert taint_letters(1 << 9) == "W"
    assert taint_letters((1 << 12) | (1 << 13)) == "OE"
    assert taint_letters((1 << 7) | (1 << 14)) == "DL"
    assert describe_taint("W") == "W (kernel warning)"


def test_new_warning_taint_fails_but_out_of_tree_modules_do_not() -> None:
    before = parse_probe(probe_text(0))
    module_loaded = parse_probe(probe_text((1 << 12) | (1 << 13)))
    assert judge(before, module_loaded, []).problems == []
    warned = parse_probe(probe_text((1 << 12) | (1 << 9)))
    assert judge(before, warned, []).problems == [
        "kernel tainted during the test: W (kernel warning)"
    ]
    # A taint present before the test is not the test's doing.
    assert judge(warned, warned, []).problems == []


def test_memory_deltas_become_metrics() -> None:
    before = parse_probe(probe_text(0, available=400000, unreclaimable=9000))
    after = parse_probe(probe_text(0, available=396000, unreclaimable=9500))
    metrics = judge(before, after, []).metrics
    assert metrics == {"mem_available_delta_kib": -4000.0, "slab_unreclaimable_delta_kib": 500.0}


def test_kmemleak_reports_fail_the_test() -> None:
    leak = read_log(CRASHES / "memory_leak_debugfs.log")
    after = parse_probe(probe_text(0) + "---kmemleak---\n" + leak)
    assert after is not None and after.leaks
    problems = judge(parse_probe(probe_text(0)), after, []).problems
    assert problems and all(p.startswith("BUG: memory leak") for p in problems)


def test_reports_printed_during_the_test_are_classified() -> None:
    warning = parse_log(read_log(CRASHES / "warning.log"))
    kasan = parse_log(read_log(CRASHES / "kasan.log"))
    result = judge(None, None, [*warning, *kasan])
    assert result.problems == [warning[0].title]
    assert result.crash == kasan[0]
