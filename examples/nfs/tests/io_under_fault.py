#!/usr/bin/env python3
"""Client I/O through a fault: a writer streams a file onto a hard NFS mount
while the fault happens, then every byte is read back and checked. TAP out.

    python3 io_under_fault.py restart DIR   # the server restarts nfsd mid-write
    python3 io_under_fault.py link DIR      # the client's lab link is down 10 s

A hard mount must make the writer wait out the fault and resume: no error, no
lost or corrupt data.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

CHUNK = 1 << 20
CHUNKS = 48
LINK_DOWN_S = 10.0


def block(index: int) -> bytes:
    return hashlib.sha256(str(index).encode()).digest() * (CHUNK // 32)


def restart_server() -> str:
    request = urllib.request.Request("http://server:8099/restart-nfs", method="POST")
    with urllib.request.urlopen(request, timeout=120) as answer:
        return f"server answered {answer.status}"


def lab_interface() -> str:
    out = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    for line in out.splitlines():
        fields = line.split()
        if fields[3].startswith("10.77.7."):
            return fields[1]
    raise SystemExit("no interface on the lab network 10.77.7.0/24")


def drop_link() -> str:
    interface = lab_interface()
    subprocess.run(["ip", "link", "set", interface, "down"], check=True)
    time.sleep(LINK_DOWN_S)
    subprocess.run(["ip", "link", "set", interface, "up"], check=True)
    return f"{interface} was down for {LINK_DOWN_S:g} s"


def main() -> int:
    fault, directory = sys.argv[1], Path(sys.argv[2])
    path = directory / f"stream-{fault}"
    progress = {"written": 0}
    errors: list[str] = []

    def writer() -> None:
        try:
            with open(path, "wb") as f:
                for i in range(CHUNKS):
                    f.write(block(i))
                    f.flush()
                    os.fsync(f.fileno())
                    progress["written"] = i + 1
        except OSError as exc:
            errors.append(repr(exc))

    print("TAP version 13")
    print("1..3")
    thread = threading.Thread(target=writer)
    started = time.monotonic()
    thread.start()
    while progress["written"] < CHUNKS // 3 and thread.is_alive():
        time.sleep(0.05)
    faulted = False
    try:
        what = restart_server() if fault == "restart" else drop_link()
        print("ok 1 - fault")
        print(f"# {what}, at MiB {progress['written']} of {CHUNKS}")
        faulted = True
    except Exception as exc:  # the fault itself could not be made: say so
        print("not ok 1 - fault")
        print(f"# the fault could not be made: {exc!r}")
    thread.join(600)
    elapsed = time.monotonic() - started
    if thread.is_alive() or errors:
        print("not ok 2 - writer-resumed")
        print(f"# {errors or 'still blocked after 600 s'}")
    else:
        print("ok 2 - writer-resumed")
    print(f"# metric seconds={elapsed:.2f} s")
    data = path.read_bytes()
    good = len(data) == CHUNK * CHUNKS and all(
        data[i * CHUNK : (i + 1) * CHUNK] == block(i) for i in range(CHUNKS)
    )
    print(f"{'ok' if good else 'not ok'} 3 - data-intact")
    path.unlink()
    return 0 if good and faulted and not errors else 1


if __name__ == "__main__":
    sys.exit(main())
