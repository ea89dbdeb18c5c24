"""perf_io.py: the measurements of perf.sh, in one process so that no fork is timed.

    perf_io.py throughput DIR MIB REPEAT   -> "WRITE_MBPS READ_MBPS"
    perf_io.py metadata DIR FILES REPEAT   -> "CREATE STAT UNLINK ALL" (operations/s)

Each prints the medians over REPEAT runs on one line, and exits 1 with a message
on stderr when what it reads back is not what it wrote.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

MIB = 1 << 20


def throughput(top: str, mib: int, repeat: int) -> str:
    """Writes MIB MiB in 1 MiB writes, then reads them back in 1 MiB reads."""
    block = bytearray(os.urandom(MIB))
    path = os.path.join(top, "big")
    writes, reads = [], []
    for _ in range(repeat):
        fd = os.open(path, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o644)
        start = time.perf_counter()
        for i in range(mib):
            block[:8] = i.to_bytes(8, "little")  # every MiB differs
            if os.write(fd, block) != MIB:
                sys.exit(f"short write at MiB {i}")
        os.fsync(fd)
        writes.append(mib * MIB / (time.perf_counter() - start) / 1e6)
        os.close(fd)

        buf = bytearray(MIB)
        view = memoryview(buf)
        fd = os.open(path, os.O_RDONLY)
        start = time.perf_counter()
        for i in range(mib):
            if os.readv(fd, [view]) != MIB:
                sys.exit(f"short read at MiB {i}")
        reads.append(mib * MIB / (time.perf_counter() - start) / 1e6)
        if os.read(fd, 1):
            sys.exit("data past the end")
        # check what was read, outside the timing
        os.lseek(fd, 0, os.SEEK_SET)
        for i in range(mib):
            os.readv(fd, [view])
            block[:8] = i.to_bytes(8, "little")
            if buf != block:
                sys.exit(f"MiB {i} reads back wrong")
        os.close(fd)
    if os.stat(path).st_size != mib * MIB:
        sys.exit(f"size {os.stat(path).st_size}, not {mib * MIB}")
    os.unlink(path)
    return f"{statistics.median(writes):.1f} {statistics.median(reads):.1f}"


def metadata(top: str, n: int, repeat: int) -> str:
    """Creates, stats and unlinks N empty files in a fresh directory."""
    rates: dict[str, list[float]] = {"create": [], "stat": [], "unlink": [], "all": []}
    for r in range(repeat):
        d = os.path.join(top, f"meta{r}")
        os.mkdir(d)
        names = [os.path.join(d, f"file{i:06d}") for i in range(n)]
        t0 = time.perf_counter()
        for p in names:
            os.close(os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        t1 = time.perf_counter()
        for p in names:
            st = os.stat(p)
            if st.st_size != 0 or st.st_mode != 0o100644:
                sys.exit(f"{p}: size {st.st_size}, mode {st.st_mode:o}")
        t2 = time.perf_counter()
        if len(os.listdir(d)) != n:
            sys.exit(f"{d} lists {len(os.listdir(d))} entries, not {n}")
        t3 = time.perf_counter()
        for p in names:
            os.unlink(p)
        t4 = time.perf_counter()
        if os.listdir(d):
            sys.exit(f"{d} not empty after unlinking everything")
        os.rmdir(d)
        rates["create"].append(n / (t1 - t0))
        rates["stat"].append(n / (t2 - t1))
        rates["unlink"].append(n / (t4 - t3))
        rates["all"].append(3 * n / ((t1 - t0) + (t2 - t1) + (t4 - t3)))
    return " ".join(
        f"{statistics.median(rates[k]):.0f}" for k in ("create", "stat", "unlink", "all")
    )


if __name__ == "__main__":
    what, top, count, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    print({"throughput": throughput, "metadata": metadata}[what](top, count, repeat))
