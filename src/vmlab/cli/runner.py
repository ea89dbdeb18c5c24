"""The one place that turns async work into an exit status (house rule 4).

SIGINT and SIGTERM cancel the work, so every `finally` and `async with`
below runs (QEMU stopped, runtime directories removed); vmlab then exits
130 or 143. Errors become one line on stderr, never a traceback.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from vmlab.errors import ExitCode, VmlabError

_SIGNAL_EXIT = {signal.SIGINT: ExitCode.INTERRUPTED, signal.SIGTERM: ExitCode.TERMINATED}
_SIGNAL_WORD = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}


def error_line(message: str) -> None:
    print(f"vmlab: {message}", file=sys.stderr, flush=True)


def _report(exc: VmlabError, *, verbose: bool) -> int:
    """One line on stderr (the evidence too with --verbose); the error's exit code."""
    error_line(exc.message)
    if verbose and exc.details:
        print(exc.details, file=sys.stderr)
    return int(exc.exit_code)


def run_async(
    work: Coroutine[Any, Any, int],
    *,
    verbose: bool = False,
    on_signal: str = "the VM was stopped and its files removed",
) -> int:
    """Run `work` to an exit status, turning signals and VmlabErrors into codes.
    `on_signal`: what the line printed after SIGINT/SIGTERM adds ("" for nothing)."""
    received: list[signal.Signals] = []

    async def main() -> int:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()

        def on_signal(sig: signal.Signals) -> None:
            received.append(sig)
            task.cancel()

        for sig in _SIGNAL_EXIT:
            loop.add_signal_handler(sig, on_signal, sig)
        try:
            return await work
        finally:
            for sig in _SIGNAL_EXIT:
                loop.remove_signal_handler(sig)

    try:
        return asyncio.run(main())
    except VmlabError as exc:
        return _report(exc, verbose=verbose)
    except (asyncio.CancelledError, KeyboardInterrupt):
        sig = received[0] if received else signal.SIGINT
        error_line(_SIGNAL_WORD[sig] + (f"; {on_signal}" if on_signal else ""))
        return int(_SIGNAL_EXIT[sig])


def run_sync(work: Callable[[], int]) -> int:
    """Run a synchronous command, turning VmlabErrors into one line and a code."""
    try:
        return work()
    except VmlabError as exc:
        return _report(exc, verbose=False)
    except KeyboardInterrupt:
        error_line("interrupted")
        return int(ExitCode.INTERRUPTED)
