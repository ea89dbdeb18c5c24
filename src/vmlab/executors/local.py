"""The local executor: run a plan's jobs on this machine, `workers` at a time.

A job starts once every job it depends on has finished (capability order);
among those ready, the plan's order (longest first) decides. Two jobs of a
machine that is on a private network never run at once: the copies would
share its address and MAC. Cancelling the
executor cancels every running session, whose `finally` stops its VM.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

from vmlab.plan import Job, Plan
from vmlab.results.model import TestResult
from vmlab.session import Session, SessionContext


async def execute(plan: Plan, ctx: SessionContext, workers: int) -> list[TestResult]:
    """Run every job of `plan`; return the results in the order they finished."""
    pending: list[Job] = list(plan.jobs)
    finished: set[str] = set()
    running: dict[asyncio.Task[list[TestResult]], Job] = {}
    results: list[TestResult] = []
    try:
        while pending or running:
            for job in list(pending):
                if len(running) >= max(1, workers):
                    break
                if job.depends_on <= finished and not _collides(job, running.values()):
                    pending.remove(job)
                    task = asyncio.create_task(Session(job, ctx).run(), name=f"job-{job.id}")
                    running[task] = job
            if not running:  # nothing can start: the plan's dependencies are broken
                raise RuntimeError(f"jobs wait on jobs that never ran: {[j.id for j in pending]}")
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                job = running.pop(task)
                finished.add(job.id)
                results.extend(task.result())
    finally:
        for task in running:
            task.cancel()
        for task in running:
            with contextlib.suppress(BaseException):
                await task
    return results


def _collides(job: Job, running: Iterable[Job]) -> bool:
    """Whether `job` would boot a second copy of a networked machine."""
    return bool(job.machine.spec.nics) and any(
        other.machine.name == job.machine.name for other in running
    )
