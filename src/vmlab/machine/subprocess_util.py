"""Child processes that can never outlive vmlab."""

from __future__ import annotations

import ctypes
import os
import signal

_PR_SET_PDEATHSIG = 1


def pid_exists(pid: int) -> bool:
    """Whether process `pid` exists (another user's counts; a zombie too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_on_parent_death() -> None:
    """preexec_fn: SIGKILL this child when the vmlab process dies, however it
    dies (even by SIGKILL, when no `finally` runs)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)
