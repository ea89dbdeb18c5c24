"""`vmlab test`: run a lab's suites, store every result, write JUnit and JSON.

The lab's host services that the selected tests need (`needed_services`) start
before the first job and stop after the last; their logs are kept in the run's
directory, `services/NAME.log`. A service that fails to start or become ready
ends the run (exit 125) before any test runs.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import platform
import socket
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from vmlab import __version__
from vmlab.cli.image_cmd import build_machine_images
from vmlab.cli.live import LiveView, Progress
from vmlab.cli.runner import error_line
from vmlab.config import load_lab
from vmlab.config_specs import Lab
from vmlab.errors import ExitCode, UsageError
from vmlab.executors.local import execute
from vmlab.machine.probes import qemu_version
from vmlab.machine.qemu import BootImage, prepare_boot
from vmlab.net.lab_switches import running_switches
from vmlab.net.networks import LabNetworks
from vmlab.plan import Plan, make_plan
from vmlab.results.jsonout import write_results_json
from vmlab.results.junit import write_junit
from vmlab.results.model import Outcome, RunRecord, RunStatus, TestResult, VmSpec, new_run_id
from vmlab.results.store import Store
from vmlab.servers import ServerMachines, needed_servers
from vmlab.service_spec import needed_services
from vmlab.services import ServiceEvent, ServiceGroup
from vmlab.session import Event, SessionContext, TestFinished


@dataclass(frozen=True)
class TestOptions:
    __test__ = False

    lab: Path
    level: int
    suites: tuple[str, ...]
    keyword: str | None
    jobs: int | None
    db: str | None
    out: Path | None
    allow_dangerous: bool


def default_jobs(memory_mib: int) -> int:
    """One VM per core, as far as memory allows (the VM's memory plus QEMU's own)."""
    cores = os.cpu_count() or 1
    try:
        pages = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return cores
    per_vm = (memory_mib + 300) << 20
    return max(1, min(cores, pages // per_vm))


def _git_commit(directory: Path) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _config_hash(release: str) -> str:
    config = Path("/boot") / f"config-{release}"
    try:
        return hashlib.sha256(config.read_bytes()).hexdigest()[:16]
    except OSError:
        return ""


def _skipped_results(plan: Plan, lab: Lab) -> list[TestResult]:
    now = datetime.now(UTC)
    results = []
    for skipped in plan.skipped:
        test = skipped.test
        spec = lab.machines[test.machine].spec
        results.append(
            TestResult(
                test_id=test.test_id, suite=test.suite, domain=test.domain or test.suite,
                level=test.level, safety=test.safety.value, machine=test.machine,
                vm=VmSpec(spec.memory_mib, spec.cpus, str(spec.kernel or "default")),
                start=now, duration_s=0.0, outcome=Outcome.SKIPPED, message=skipped.reason,
            )
        )  # fmt: skip
    return results


def exit_status(results: list[TestResult]) -> int:
    worst = Outcome.worst(*(r.outcome for r in results))
    if worst.ok:
        return int(ExitCode.OK)
    return int(ExitCode.INFRA if worst is Outcome.ERROR else ExitCode.FAILED)


async def run_tests(opts: TestOptions) -> int:
    lab = await asyncio.to_thread(load_lab, opts.lab)
    if opts.level not in (1, 2, 3):
        raise UsageError(f"--level {opts.level}: levels are 1 (smoke), 2 (integration), 3 (stress)")
    store = await asyncio.to_thread(Store.open, opts.db)
    try:
        return await _run(lab, opts, store)
    finally:
        store.close()


async def _run(lab: Lab, opts: TestOptions, store: Store) -> int:
    past = await asyncio.to_thread(store.past_durations, [t.test_id for t in lab.tests])
    biggest = max((m.spec.memory_mib for m in lab.machines.values()), default=512)
    workers = opts.jobs or default_jobs(biggest)
    if workers < 1:
        raise UsageError(f"--jobs {workers}: needs at least 1")
    plan = make_plan(
        lab, level=opts.level, suites=opts.suites, keyword=opts.keyword,
        allow_dangerous=opts.allow_dangerous, jobs=workers, past_durations=past,
    )  # fmt: skip
    if not plan.jobs and not plan.skipped:
        raise UsageError("no test selected (check --level, --suite and -k)")

    required = {capability for test in plan.tests for capability in test.requires}
    servers = needed_servers(lab.machines.values(), required)
    await build_machine_images([*(job.machine for job in plan.jobs), *servers], stderr=True)
    images: dict[str, BootImage] = {}
    for job in plan.jobs:
        if job.machine.name not in images:
            images[job.machine.name] = await prepare_boot(job.machine.spec)
    first = next(iter(images.values()), None)
    if first is not None and first.accel_notice:
        error_line(first.accel_notice)

    run_id = new_run_id()
    out_dir = (opts.out or Path(".vmlab") / "runs" / run_id).absolute()
    out_dir.mkdir(parents=True, exist_ok=True)
    services = needed_services(lab.services, required)

    def on_service(event: ServiceEvent) -> None:
        view.on_event(event)  # the live view below exists by the time a service starts

    # Checked before anything starts: requirements, cycles, podman/docker for containers.
    group = ServiceGroup(services, out_dir / "services", emit=on_service)
    release = first.kernel.kernel.release if first else ""
    record = RunRecord(
        run_id=run_id, start=datetime.now(UTC), host=socket.gethostname(),
        accel=first.accel.value if first else "", qemu_version=qemu_version(),
        kernel_release=release, kernel_config_hash=_config_hash(release), lab_hash=lab.sha256,
        command_line=tuple(sys.argv), git_commit=_git_commit(lab.root),
        environment={
            "vmlab": __version__, "python": platform.python_version(),
            "lab": str(lab.path), "level": str(opts.level), "jobs": str(workers),
        },
    )  # fmt: skip
    await asyncio.to_thread(store.begin_run, record)
    skipped = _skipped_results(plan, lab)
    for result in skipped:
        store.add_result(run_id, result)

    progress = Progress(total=len(plan.skipped) + sum(len(j.tests) for j in plan.jobs),
                        estimate_s=plan.estimate_s)  # fmt: skip
    results: list[TestResult] = list(skipped)
    status = RunStatus.FAILED
    with LiveView(progress) as view:

        def on_event(event: Event) -> None:
            view.on_event(event)
            if isinstance(event, TestFinished):
                results.append(event.result)
                store.add_result(run_id, event.result)

        for result in skipped:
            view.on_event(TestFinished("plan", result))
        # Networks whose switch `vmlab up` left running (its machines are on it):
        # the machines this run boots join that switch, and it stays up.
        networks = LabNetworks(lab.networks.values(), running_switches(lab.root))
        ctx = SessionContext(
            run_dir=out_dir, emit=on_event, image_for=lambda m: images.get(m.name),
            failed_capabilities={}, lab_root=lab.root, attach=networks.attach,
        )  # fmt: skip
        try:
            async with group, networks, ServerMachines(servers, ctx):
                await execute(plan, ctx, workers)
            status = RunStatus.COMPLETED
        except asyncio.CancelledError:
            status = RunStatus.INTERRUPTED
            raise
        finally:
            await asyncio.to_thread(_finish, store, run_id, status, out_dir)
    print(f"results: {out_dir} (junit.xml, results.json); run id {run_id}")
    return exit_status(results)


def _finish(store: Store, run_id: str, status: RunStatus, out_dir: Path) -> None:
    """Close the run in the store and write the reports from what was stored."""
    store.finish_run(run_id, status, datetime.now(UTC))
    stored = store.get_run(run_id)
    write_junit(stored, out_dir / "junit.xml")
    write_results_json(stored, out_dir / "results.json")
