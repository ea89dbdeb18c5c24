"""Crash parser quality and speed over every fixture in tests/data/crashes/.

Run: .venv/bin/python bench/crash_parse.py [--runs N]

Per log: crash reports found / expected (from NAME.json), whether the first title
is exactly the expected one, false positives in clean logs (clean_*.log), and the
median parse time over N runs. Then totals, and the time for one large log made of
all fixtures back to back. Prints numbers only; it asserts nothing (house rule 11).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from vmlab.watch.crashes import parse_log, read_log

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "crashes"


def _median_ms(text: str, runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        parse_log(text)
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21, help="timing runs per log")
    args = parser.parse_args()

    rows: list[tuple[str, int, int, str, str, int, float]] = []
    expected_total = detected_total = titled = titled_ok = fp_logs = clean_logs = 0
    texts: list[str] = []
    for log in sorted(DATA.glob("*.log")):
        text = read_log(log)
        texts.append(text)
        expected = json.loads(log.with_suffix(".json").read_text())
        found = parse_log(text)
        clean = log.stem.startswith("clean_")
        first_ok = "-"
        if expected:
            titled += 1
            ok = bool(found) and found[0].title == expected[0]["title"]
            titled_ok += ok
            first_ok = "yes" if ok else "NO"
        fp = "-"
        if clean:
            clean_logs += 1
            fp_logs += bool(found)
            fp = str(len(found))
        expected_total += len(expected)
        want = {(e["start_line"], e["title"]) for e in expected}
        detected_total += sum((c.start_line, c.title) in want for c in found)
        lines = text.count("\n")
        rows.append(
            (log.stem, len(found), len(expected), first_ok, fp, lines, _median_ms(text, args.runs))
        )

    name_w = max(len(r[0]) for r in rows)
    print(
        f"{'log':<{name_w}}  found/exp  first title  clean FP  lines  median ms ({args.runs} runs)"
    )
    for name, found_n, exp_n, first_ok, fp, lines, ms in rows:
        print(
            f"{name:<{name_w}}  {found_n:>5}/{exp_n:<3}  {first_ok:^11}  {fp:^8}  {lines:>5}"
            f"  {ms:9.2f}"
        )
    times = [r[6] for r in rows]
    big = "\n".join(texts)
    big_lines = big.count("\n")
    big_ms = _median_ms(big, max(3, args.runs // 7))
    print()
    print(f"logs: {len(rows)} ({clean_logs} clean), expected crash reports: {expected_total}")
    print(
        f"detection rate (start line and title exact): {detected_total}/{expected_total}"
        f" = {100 * detected_total / max(1, expected_total):.1f}%"
    )
    print(f"first-title accuracy: {titled_ok}/{titled} = {100 * titled_ok / max(1, titled):.1f}%")
    print(f"clean logs with false positives: {fp_logs}/{clean_logs}")
    print(f"parse time per log: median {statistics.median(times):.2f} ms, max {max(times):.2f} ms")
    print(
        f"all logs as one: {big_lines} lines in {big_ms:.1f} ms"
        f" ({big_lines / max(big_ms, 1e-9):.0f} lines/ms)"
    )


if __name__ == "__main__":
    main()
