"""Console capture: every byte to a log file, complete lines to the watchers.

The kernel console is the guest's serial port. It is never mixed with command
output (that travels on virtio-serial ports); it is kept for the user and for
crash detection.
"""

from __future__ import annotations

import asyncio
import collections
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from vmlab.watch.crashes import Crash, CrashScanner

LineWatcher = Callable[[str], None]

_PANIC = re.compile(r"Kernel panic - not syncing: ?(.*)$")
# The first line of the reports that mean the guest is (or was) stuck.
_HANG = re.compile(
    r"BUG: soft lockup - CPU#|INFO: task \S.* blocked for more than \d+ seconds"
    r"|rcu: INFO: rcu_\w+ (self-)?detected stalls?|INFO: rcu_\w+ (self-)?detected stalls?"
    r"|Watchdog detected hard LOCKUP|BUG: workqueue lockup"
)


class Console:
    """Reads a guest's serial console until it closes."""

    def __init__(
        self,
        log_path: Path,
        *,
        echo: BinaryIO | None = None,
        keep: int = 200,
        record: bool = True,
    ) -> None:
        """`record=False`: someone else (QEMU) writes `log_path`; `follow_file`
        reads it from there."""
        self.log_path = log_path
        self._echo = echo
        self._log = log_path.open("ab", buffering=0) if record else None
        self._reader: BinaryIO | None = None
        self._tail: collections.deque[str] = collections.deque(maxlen=keep)
        self._partial = b""
        self._watchers: list[LineWatcher] = []
        self.last_output = time.monotonic()
        self.panic: str | None = None
        self.panicked = asyncio.Event()
        self.crashes: list[Crash] = []  # complete crash reports, in order
        self._scanner = CrashScanner()
        self.hang: str | None = None  # the first line of the latest lockup report
        self.hung = asyncio.Event()

    def watch(self, watcher: LineWatcher) -> None:
        self._watchers.append(watcher)

    def tail(self, lines: int = 20) -> list[str]:
        return list(self._tail)[-lines:]

    async def follow(self, reader: asyncio.StreamReader) -> None:
        try:
            while data := await reader.read(1 << 16):
                self.feed(data)
        finally:
            if self._partial:
                self._line(self._partial)
                self._partial = b""
            self.close()

    async def follow_file(self, path: Path, *, offset: int = 0, poll: float = 0.1) -> None:
        """Feed what a writer appends to `path` (from `offset`), until cancelled;
        `drain_file()` feeds what is left at once (the writer has exited)."""
        with path.open("rb") as log:
            log.seek(offset)
            self._reader = log
            try:
                while True:
                    if not self.drain_file():
                        await asyncio.sleep(poll)
            finally:
                self._reader = None

    def drain_file(self) -> bool:
        """Feed everything `follow_file`'s file has now; False when nothing."""
        fed = False
        while self._reader is not None and (data := self._reader.read(1 << 16)):
            self.feed(data)
            fed = True
        return fed

    def close(self) -> None:
        if self._log is not None:
            self._log.close()

    def flush_crashes(self) -> list[Crash]:
        """Every crash report so far, including one still open (the VM is gone)."""
        self.crashes.extend(self._scanner.finish())
        return self.crashes

    @property
    def reporting(self) -> bool:
        """True while a crash report is being printed (started, not ended)."""
        return self._scanner.reporting

    async def settle(
        self, *, since: float | None = None, quiet: float = 0.5, limit: float = 5.0
    ) -> None:
        """Wait until the console has printed something after `since` (when
        given; at most 3 s) and then been quiet for `quiet` s, at most `limit` s
        in all: a report or a SysRq dump being printed then arrives whole."""
        now = time.monotonic()
        deadline = now + limit
        if since is not None:
            started = min(deadline, now + 3.0)
            while time.monotonic() < started and self.last_output <= since:
                await asyncio.sleep(0.05)
        while time.monotonic() < deadline and time.monotonic() - self.last_output < quiet:
            await asyncio.sleep(0.05)

    def feed(self, data: bytes) -> None:
        self.last_output = time.monotonic()
        if self._log is not None and not self._log.closed:
            self._log.write(data)
        if self._echo is not None:
            self._echo.write(data)
            self._echo.flush()
        *lines, self._partial = (self._partial + data).split(b"\n")
        for raw in lines:
            self._line(raw)

    def _line(self, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").rstrip("\r")
        self._tail.append(line)
        self.crashes.extend(self._scanner.feed(line))
        if _HANG.search(line):
            self.hang = line.strip()
            self.hung.set()
        match = _PANIC.search(line)
        if match and self.panic is None:
            self.panic = f"kernel panic: {match.group(1).strip()}"
            self.panicked.set()
        for watcher in self._watchers:
            watcher(line)
