"""Results: one model (model.py), the store (store.py) and the report writers.

Everything here reads `RunRecord`/`TestResult`; nothing reads a live session.
"""

from vmlab.results.model import (
    CrashInfo,
    Outcome,
    RunRecord,
    RunStatus,
    TestResult,
    VmSpec,
    count_outcomes,
    new_run_id,
)

__all__ = [
    "CrashInfo",
    "Outcome",
    "RunRecord",
    "RunStatus",
    "TestResult",
    "VmSpec",
    "count_outcomes",
    "new_run_id",
]
