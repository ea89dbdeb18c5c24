"""What a test left in the kernel: new taint flags, memory deltas, kmemleak
reports and crash reports printed while it ran. Pure parsing; the session
runs the probe command before and after each test."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from vmlab.watch.crash_patterns import Kind
from vmlab.watch.crashes import Crash, parse_log

_READ_STATE = (
    "cat /proc/sys/kernel/tainted; grep -E '^(MemAvailable|Slab|SUnreclaim):' /proc/meminfo"
)
_KMEMLEAK = (
    "; if [ -w /sys/kernel/debug/kmemleak ]; then echo scan > /sys/kernel/debug/kmemleak; "
    "echo '---kmemleak---'; cat /sys/kernel/debug/kmemleak; "
    "echo clear > /sys/kernel/debug/kmemleak; fi"
)


def probe_command(*, after: bool) -> str:
    """The shell command run before and after each test: the taint mask, three
    meminfo lines and, after the test on kernels with CONFIG_DEBUG_KMEMLEAK, a
    kmemleak scan whose reports are then cleared."""
    return _READ_STATE + (_KMEMLEAK if after else "")


# The kernel's taint bits (kernel/panic.c, Documentation/admin-guide/tainted-kernels.rst).
TAINT_LETTERS = (
    ("P", "proprietary module"), ("F", "module force-loaded"), ("S", "SMP unsafe CPU"),
    ("R", "module force-unloaded"), ("M", "machine check"), ("B", "bad page"),
    ("U", "taint requested by user"), ("D", "kernel died (oops or BUG)"),
    ("A", "ACPI table overridden"), ("W", "kernel warning"), ("C", "staging driver"),
    ("I", "firmware workaround"), ("O", "out-of-tree module"), ("E", "unsigned module"),
    ("L", "soft lockup"), ("K", "live patched"), ("X", "auxiliary"),
    ("T", "struct randomization"), ("N", "in-kernel test"),
)  # fmt: skip
# Taints that a test of an out-of-tree module causes by design, and so do not fail it.
EXPECTED_TAINTS = frozenset("OE")
# Reports after which the kernel goes on as before: they fail the test (FAILED);
# any other report makes it CRASH (lockups never get here: they are HANGs).
NON_FATAL_FAILURES = frozenset({Kind.WARNING, Kind.MEMORY_LEAK})


@dataclass(frozen=True)
class Probe:
    """One reading of the guest kernel's state."""

    taint: int
    meminfo_kib: dict[str, int]
    leaks: tuple[Crash, ...] = ()


def parse_probe(output: str) -> Probe | None:
    """Read the probe command's output; None when it is not what it prints."""
    text, _, leak_text = output.partition("---kmemleak---\n")
    lines = text.split("\n")
    try:
        taint = int(lines[0].strip())
    except (ValueError, IndexError):
        return None
    meminfo = {}
    for line in lines[1:]:
        key, _, rest = line.partition(":")
        if rest.strip().endswith("kB"):
            meminfo[key] = int(rest.split()[0])
    leaks = tuple(parse_log(leak_text)) if leak_text.strip() else ()
    return Probe(taint, meminfo, leaks)


def taint_letters(mask: int) -> str:
    return "".join(letter for bit, (letter, _) in enumerate(TAINT_LETTERS) if mask & (1 << bit))


def describe_taint(letters: str) -> str:
    names = dict(TAINT_LETTERS)
    return ", ".join(f"{letter} ({names[letter]})" for letter in letters)


@dataclass
class Aftermath:
    """What fails a test beyond its own verdict, and the metrics to keep."""

    problems: list[str] = field(default_factory=list)  # each fails the test (FAILED)
    crash: Crash | None = None  # a report that makes the test CRASH
    metrics: dict[str, float] = field(default_factory=dict)


def judge(before: Probe | None, after: Probe | None, crashes: Sequence[Crash]) -> Aftermath:
    """Compare two probes and classify the reports printed in between."""
    result = Aftermath()
    for crash in crashes:
        if crash.kind in NON_FATAL_FAILURES:
            result.problems.append(crash.title)
        elif result.crash is None:
            result.crash = crash
    if before is None or after is None:
        return result
    new = taint_letters(after.taint & ~before.taint)
    bad = "".join(letter for letter in new if letter not in EXPECTED_TAINTS)
    if bad:
        result.problems.append(f"kernel tainted during the test: {describe_taint(bad)}")
    for key, metric in (
        ("MemAvailable", "mem_available_delta_kib"),
        ("SUnreclaim", "slab_unreclaimable_delta_kib"),
    ):
        if key in before.meminfo_kib and key in after.meminfo_kib:
            result.metrics[metric] = float(after.meminfo_kib[key] - before.meminfo_kib[key])
    result.problems += [leak.title for leak in after.leaks]
    return result
