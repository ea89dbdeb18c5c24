"""Engine overhead and parallel speed-up, side by side from one run.

    .venv/bin/python bench/overhead.py [-n 200] [--tests 40] [--work 20000]

1. `true` N times through the engine's `vm.run()` in one running VM, against the
   same through the bare virtio-serial channel (`vm.channel.run()`): medians and
   the engine's overhead per command.
2. A suite of T CPU-bound tests run by `vmlab test --jobs 1` against `--jobs 2`:
   wall time and tests per minute, and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vmlab.guest.channel import Command
from vmlab.machine.qemu import QemuMachine
from vmlab.machine.spec import Accel, MachineSpec

ROOT = Path(__file__).resolve().parent.parent
VMLAB = ROOT / ".venv" / "bin" / "vmlab"
TRUE = Command(argv=("true",), env={"PATH": "/usr/bin:/bin"})


async def per_command(n: int) -> tuple[list[float], list[float]]:
    engine: list[float] = []
    channel: list[float] = []
    async with QemuMachine(MachineSpec(accel=Accel.TCG)) as vm:
        assert vm.channel is not None
        for _ in range(5):  # warm the guest's page cache for /usr/bin/true
            await vm.run(TRUE)
        for _ in range(n):  # interleaved, so drift hits both alike
            start = time.perf_counter()
            await vm.run(TRUE)
            engine.append(time.perf_counter() - start)
            start = time.perf_counter()
            await vm.channel.run(TRUE)
            channel.append(time.perf_counter() - start)
    return engine, channel


LAB = """\
[lab]
name = "overhead"

[machine.vm]
memory = "512M"
accel = "tcg"

[suite.cpu]
level = 1
{tests}
"""

TEST = """
[[suite.cpu.test]]
name = "t{i:02d}"
run = "i=0; while [ $i -lt {work} ]; do i=$((i+1)); done"
"""


def suite_wall_time(lab: Path, jobs: int, work: Path) -> float:
    start = time.monotonic()
    done = subprocess.run(
        [str(VMLAB), "test", str(lab), "--jobs", str(jobs), "--db", str(work / f"j{jobs}.db"),
         "--out", str(work / f"out{jobs}")],
        capture_output=True, text=True, check=False, cwd=work,
    )  # fmt: skip
    if done.returncode != 0:
        sys.exit(f"bench: vmlab test --jobs {jobs} failed:\n{done.stdout[-2000:]}{done.stderr}")
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("-n", type=int, default=200, help="commands of each kind (default 200)")
    parser.add_argument("--tests", type=int, default=40, help="tests in the suite (default 40)")
    parser.add_argument("--work", type=int, default=20000, help="loop count of each test")
    args = parser.parse_args()

    engine, channel = asyncio.run(per_command(args.n))
    with tempfile.TemporaryDirectory(prefix="vmlab-bench-") as tmp:
        work = Path(tmp)
        lab = work / "vmlab.toml"
        tests = "".join(TEST.format(i=i, work=args.work) for i in range(args.tests))
        lab.write_text(LAB.format(tests=tests))
        walls = {jobs: suite_wall_time(lab, jobs, work) for jobs in (1, 2)}

    e_med, c_med = statistics.median(engine), statistics.median(channel)
    print(f"\n{args.n} x `true` in one running VM (TCG), median ms\n")
    print("| path | median ms | p90 ms |")
    print("|---|---|---|")
    for name, values in (("engine vm.run()", engine), ("bare channel.run()", channel)):
        p90 = statistics.quantiles(values, n=10)[-1]
        print(f"| {name} | {statistics.median(values) * 1000:.1f} | {p90 * 1000:.1f} |")
    print(f"\nengine overhead per command: {(e_med - c_med) * 1000:.2f} ms (median difference)")
    print(f"\n{args.tests} CPU-bound tests, `vmlab test` wall time\n")
    print("| jobs | wall s | tests/min |")
    print("|---|---|---|")
    for jobs, wall in walls.items():
        print(f"| {jobs} | {wall:.1f} | {args.tests / wall * 60:.1f} |")
    print(f"\n--jobs 2 / --jobs 1 tests per minute: {walls[1] / walls[2]:.2f}x")


if __name__ == "__main__":
    main()
