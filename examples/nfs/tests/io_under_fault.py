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


class LinkDrop:
    """The link fault, as a helper process started *before* the writer opens its
    file: a process that forks while it holds a file open for writing on NFS
    hangs, because the child's exec closes that descriptor, and closing an NFS
    file flushes its dirty pages to the server, which is out of reach while the
    link is down. So `ip link set up` would never run."""

    def __init__(self) -> None:
        self.interface = lab_interface()
        script = 'read go; ip link set "$1" down; sleep "$2"; ip link set "$1" up'
        self.helper = subprocess.Popen(
            ["sh", "-c", script, "link-drop", self.interface, str(LINK_DOWN_S)],
            stdin=subprocess.PIPE,
        )

    def __call__(self) -> str:
        assert self.helper.stdin is not None
        self.helper.stdin.write(b"go\n")
        self.helper.stdin.close()
        if self.helper.wait(timeout=LINK_DOWN_S + 60) != 0:
            raise RuntimeError(f"ip link set {self.interface} down/up failed")
        return f"{self.interface} was down for {LINK_DOWN_S:g} s"

    def cancel(self) -> None:
        if self.helper.poll() is None:
            self.helper.kill()
            self.helper.wait()


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

    link_drop = LinkDrop() if fault == "link" else None
    print("TAP version 13")
    print("1..3")
    thread = threading.Thread(target=writer)
    started = time.monotonic()
    thread.start()
    while progress["written"] < CHUNKS // 3 and thread.is_alive():
        time.sleep(0.05)
    faulted = False
    try:
        what = link_drop() if link_drop is not None else restart_server()
        print("ok 1 - fault")
        print(f"# {what}, at MiB {progress['written']} of {CHUNKS}")
        faulted = True
    except Exception as exc:  # the fault itself could not be made: say so
        print("not ok 1 - fault")
        print(f"# the fault could not be made: {exc!r}")
    finally:
        if link_drop is not None:
            link_drop.cancel()
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
