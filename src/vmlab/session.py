"""One machine session: boot a job's machine, set it up, run its tests, recover.

A session runs one `Job` of the plan. It boots the job's machine (loading
`modules_load`, running `setup`), runs each test, turns what happened into
`TestResult`s, and boots a fresh VM whenever the old one can no longer be
trusted: after a crash, a timeout, an infrastructure error, and after every
risky or dangerous test. A test's failure never stops the session.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import shlex
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from vmlab.config_specs import MachineConfig, Safety, TestFormat, TestSpec
from vmlab.errors import CommandTimeout, GuestCrashed, GuestHung, VmlabError
from vmlab.guest.channel import ROOT_ENV, Command
from vmlab.machine.ansible import InventoryHost, failure_line, run_playbook
from vmlab.machine.image_machine import DiskBoot, ImageMachine, lab_tarball
from vmlab.machine.qemu import BootImage, QemuMachine
from vmlab.machine.records import console_log_path, record_path
from vmlab.machine.spec import MachineSpec, Share
from vmlab.plan import Job, JobKind
from vmlab.pytest_runner import run_pytest
from vmlab.results.formats import ParsedOutput, SubOutcome, parse, test_ids
from vmlab.results.model import CrashInfo, Outcome, TestResult, VmSpec
from vmlab.watch.aftermath import Aftermath, Probe, judge, parse_probe, probe_command
from vmlab.watch.crashes import Crash

TAIL_BYTES = 4000
# A kernel warning fails a `monitored` test (the first line of a WARN_ON report).
_KERNEL_WARNING = re.compile(r"(WARNING: CPU: \d+ PID: \d+ at |------------\[ cut here \]|BUG: )")


@dataclass(frozen=True)
class TestStarted:
    job: str
    test_id: str
    machine: str


@dataclass(frozen=True)
class TestFinished:
    job: str
    result: TestResult


@dataclass(frozen=True)
class MachineBooting:
    job: str
    machine: str


@dataclass(frozen=True)
class JobFinished:
    job: str


Event = TestStarted | TestFinished | MachineBooting | JobFinished
EventSink = Callable[[Event], None]


class SetupFailed(VmlabError):
    """A machine's modules_load or setup command failed: every test it would
    have run is an ERROR that names the command."""


def _safe_name(test_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", test_id.replace("/", "__"))


def _output_file(run_dir: Path, test_id: str) -> Path:
    """Where a test's guest (or pytest) output is kept."""
    path = run_dir / "output" / f"{_safe_name(test_id)}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _tail(data: bytes) -> str:
    return data[-TAIL_BYTES:].decode("utf-8", "replace")


def _last_line(data: bytes) -> str:
    lines = [line for line in data.decode("utf-8", "replace").splitlines() if line.strip()]
    return lines[-1].strip()[:200] if lines else ""


@dataclass
class SessionContext:
    """What every session of a run shares."""

    run_dir: Path
    emit: EventSink
    image_for: Callable[[MachineConfig], BootImage | None]
    failed_capabilities: dict[str, str]  # capability -> the failed test that provides it
    lab_root: Path
    # Binds a machine's NICs to the run's network switches (vmlab.net.networks).
    attach: Callable[[MachineSpec], MachineSpec] = lambda spec: spec
    # `vmlab up`: disk-image machines boot in the background (QEMU outlives
    # vmlab; ImageMachine.detach), their console log in .vmlab/machines/.
    background: bool = False


class Session:
    """Runs one job's tests on (a succession of) VMs of its machine."""

    def __init__(self, job: Job, ctx: SessionContext) -> None:
        self.job = job
        self.ctx = ctx
        self.vm: QemuMachine | None = None
        self.boots = 0
        self._stale = False  # self.vm must be restored to its snapshot before use
        self._disk_boot: DiskBoot | None = None
        self.current_test: str | None = None
        self._warnings: list[str] = []
        self._broken: VmlabError | None = None
        self.results: list[TestResult] = []

    @classmethod
    def for_machine(cls, machine: MachineConfig, ctx: SessionContext, job_id: str) -> Session:
        """A session with no tests, only to bring `machine` up (`ensure_vm`) and
        down (`close`): server machines, and `vmlab up`."""
        job = Job(
            id=job_id, kind=JobKind.SESSION, machine=machine, tests=(),
            fresh_vm_after=frozenset(), depends_on=frozenset(), estimate_s=0.0,
        )  # fmt: skip
        return cls(job, ctx)

    @property
    def machine(self) -> MachineConfig:
        return self.job.machine

    def _vm_spec(self) -> VmSpec:
        spec = self.machine.spec
        kernel = str(spec.kernel) if spec.kernel else "default"
        image = self.ctx.image_for(self.machine)
        disk_kernel = self._disk_boot.kernel if self._disk_boot is not None else None
        if disk_kernel is not None:  # a disk image's own kernel (or the host's)
            kernel = disk_kernel.kernel.release
        elif image is not None and spec.disk is None:
            kernel = image.kernel.kernel.release
        return VmSpec(memory_mib=spec.memory_mib, cpus=spec.cpus, kernel=kernel)

    async def run(self) -> list[TestResult]:
        try:
            for test in self.job.tests:
                await self._run_one(test)
        finally:
            await self._discard_vm(keep_snapshot=False)
            self.ctx.emit(JobFinished(self.job.id))
        return self.results

    # -- VMs -----------------------------------------------------------------

    async def ensure_vm(self) -> QemuMachine:
        """The session's machine, booted and set up (for server machines)."""
        return await self._ensure_vm()

    async def close(self) -> None:
        """Stop the machine for good."""
        await self._discard_vm(keep_snapshot=False)

    async def _ensure_vm(self) -> QemuMachine:
        if self.vm is not None and self._stale:
            await self._restore()
        if self.vm is not None:
            return self.vm
        if (
            self.machine.spec.disk is not None
            and not self.ctx.background
            and await asyncio.to_thread(record_path(self.ctx.lab_root, self.machine.name).exists)
        ):
            return await self._attach()
        self.boots += 1
        self.ctx.emit(MachineBooting(self.job.id, self.machine.name))
        spec = self.ctx.attach(replace(self.machine.spec, name=self.machine.name))
        lab = self.ctx.lab_root
        log = self.ctx.run_dir / "console" / f"{_safe_name(self.job.id)}-{self.boots}.log"
        if self.ctx.background and spec.disk is not None:
            log = console_log_path(lab, self.machine.name)
        log.parent.mkdir(parents=True, exist_ok=True)
        vm: QemuMachine
        if spec.disk is not None:
            vm = ImageMachine(
                spec, console_log=log, disk_boot=self._disk_boot, background=self.ctx.background
            )
        else:
            if all(share.guest != lab for share in spec.shares):
                spec = replace(spec, shares=(*spec.shares, Share(lab, lab, writable=True)))
            vm = QemuMachine(spec, console_log=log, image=self.ctx.image_for(self.machine))
        try:
            await vm.start()
        except BaseException:
            await vm.stop()
            raise
        self.vm = vm
        assert vm.console is not None
        vm.console.watch(self._on_console_line)
        try:
            if isinstance(vm, ImageMachine):
                self._disk_boot = vm.disk_boot  # resolved once: later boots skip it
                await self._copy_lab(vm)
            await self._setup(vm)
            if isinstance(vm, ImageMachine):
                await vm.save_snapshot()  # later "fresh VMs" are restores of this
        except BaseException:
            await self._discard_vm(keep_snapshot=False)
            raise
        return vm

    async def _attach(self) -> QemuMachine:
        """The machine `vmlab up` left running, instead of a new boot: it was set
        up then; the lab is copied in again (it may have changed). It is not
        stopped at the end (see ImageMachine.attach)."""
        vm = await ImageMachine.attach(replace(self.machine.spec, name=self.machine.name))
        self.vm = vm
        assert vm.console is not None
        vm.console.watch(self._on_console_line)
        try:
            await self._copy_lab(vm)
        except BaseException:
            await self._discard_vm(keep_snapshot=False)
            raise
        return vm

    async def _copy_lab(self, vm: ImageMachine) -> None:
        """A disk image does not see the host: copy the lab directory in, at the
        same path, so tests and setup find their files where the lab file says."""
        lab = self.ctx.lab_root
        tarball = await asyncio.to_thread(lab_tarball, lab)
        quoted = shlex.quote(str(lab))
        result = await vm.run(
            Command(shell=f"mkdir -p {quoted} && tar -x -C {quoted}", env=self._env(())),
            stdin=tarball,
            timeout=300,
        )
        if result.status != 0:
            raise SetupFailed(
                f"copying the lab into {self.machine.name} failed: {_last_line(result.stderr)}"
            )

    async def _restore(self) -> None:
        """Back to the snapshot taken after setup; a fresh boot if that fails."""
        vm = self.vm
        assert isinstance(vm, ImageMachine)
        self._stale = False
        self.ctx.emit(MachineBooting(self.job.id, self.machine.name))
        try:
            await vm.restore_snapshot()
        except VmlabError:
            await self._discard_vm(keep_snapshot=False)

    async def _setup(self, vm: QemuMachine) -> None:
        env = self._env(())
        steps = [f"modprobe {name}" for name in self.machine.modules_load]
        steps += list(self.machine.setup)
        for step in steps:
            command = Command(shell=step, env=env, cwd=str(self.ctx.lab_root))
            try:
                result = await vm.run(command, timeout=600)
            except CommandTimeout:
                raise SetupFailed(f"setup of {self.machine.name}: `{step}` timed out") from None
            if result.status != 0:
                output = _last_line(result.stderr) or _last_line(result.stdout)
                raise SetupFailed(
                    f"setup of {self.machine.name}: `{step}` exited {result.status}"
                    + (f": {output}" if output else ""),
                    details=_tail(result.stdout + result.stderr),
                )
        if self.machine.playbook is not None:
            assert isinstance(vm, ImageMachine)  # the config takes playbooks only there
            await self._playbook(vm, self.machine.playbook)

    async def _playbook(self, vm: ImageMachine, playbook: Path) -> None:
        """`setup = { playbook = ... }`: ansible-playbook on the host, this machine only."""
        assert vm.ssh_port is not None and vm.key_path is not None
        host = InventoryHost(self.machine.name, vm.ssh_port, vm.ssh_user, vm.key_path)
        run = await run_playbook(playbook, host, cwd=self.ctx.lab_root)
        what = f"setup of {self.machine.name}: ansible-playbook {playbook.name}"
        if run.status == -1:
            raise SetupFailed(f"{what} timed out")
        if run.status != 0:
            line = failure_line(run.output)
            raise SetupFailed(
                f"{what} exited {run.status}" + (f": {line}" if line else ""),
                details=_tail(run.output),
            )

    async def _discard_vm(self, *, keep_snapshot: bool = True) -> None:
        """Never run another test in the current VM. A disk-image machine with a
        snapshot is restored (before it is next needed) instead of booted again."""
        vm = self.vm
        if keep_snapshot and isinstance(vm, ImageMachine) and vm.snapshot is not None:
            self._stale = True
            return
        self.vm, self._stale = None, False
        if vm is not None:
            await vm.stop()

    def _on_console_line(self, line: str) -> None:
        if self.current_test is not None and _KERNEL_WARNING.search(line):
            self._warnings.append(line.strip())

    def _env(self, test_env: tuple[tuple[str, str], ...]) -> dict[str, str]:
        env = dict(ROOT_ENV)
        env.update(dict(self.machine.spec.env))
        env.update(dict(test_env))
        return env

    # -- tests ---------------------------------------------------------------

    def _result(
        self, test: TestSpec, start: datetime, duration: float, outcome: Outcome, **kw: object
    ) -> TestResult:
        return TestResult(
            test_id=str(kw.pop("test_id", test.test_id)),
            suite=test.suite,
            domain=test.domain or test.suite,
            level=test.level,
            safety=test.safety.value,
            machine=self.machine.name,
            vm=self._vm_spec(),
            start=start,
            duration_s=duration,
            outcome=outcome,
            **kw,  # type: ignore[arg-type]
        )

    def _record(self, result: TestResult) -> None:
        self.results.append(result)
        self.ctx.emit(TestFinished(self.job.id, result))
        if not result.outcome.ok:
            root = result.test_id.split("/")[:2]
            owner = "/".join(root)
            for test in self.job.tests:
                if test.test_id == owner:
                    for capability in test.provides:
                        self.ctx.failed_capabilities.setdefault(capability, owner)

    async def _run_one(self, test: TestSpec) -> None:
        start = datetime.now(UTC)
        blocked = sorted(c for c in test.requires if c in self.ctx.failed_capabilities)
        if blocked:
            cap = blocked[0]
            self._record(
                self._result(
                    test, start, 0.0, Outcome.SKIPPED,
                    message=f"needs '{cap}' from failed {self.ctx.failed_capabilities[cap]}",
                )
            )  # fmt: skip
            return
        self.ctx.emit(TestStarted(self.job.id, test.test_id, self.machine.name))
        began = time.monotonic()
        try:
            if self._broken is not None:
                raise self._broken
            vm = await self._ensure_vm()
        except VmlabError as exc:
            # A machine that cannot boot or be set up fails every test it would
            # have run the same way: do not boot it again for each of them.
            self._broken = exc
            self._record(
                self._result(
                    test, start, time.monotonic() - began, Outcome.ERROR, message=exc.message,
                    output_tail=exc.details[-TAIL_BYTES:],
                )
            )  # fmt: skip
            return
        if test.format is TestFormat.PYTEST:
            await self._run_pytest_test(test, start)
        else:
            await self._run_command_test(vm, test, start)
        if test.test_id in self.job.fresh_vm_after or test.safety in (
            Safety.RISKY,
            Safety.DANGEROUS,
        ):
            await self._discard_vm()

    async def _probe(self, vm: QemuMachine, *, after: bool) -> Probe | None:
        """The kernel's taint and memory (and kmemleak, after): None if unreadable."""
        command = Command(shell=probe_command(after=after), env=self._env(()), cwd="/")
        try:
            result = await vm.run(command, timeout=120)
        except VmlabError:
            return None
        return parse_probe(result.stdout.decode("utf-8", "replace"))

    async def _aftermath(
        self, vm: QemuMachine, before: Probe | None, crashes_before: int
    ) -> Aftermath:
        """Judge what the test left: reports printed while it ran, new taint,
        memory deltas, kmemleak reports."""
        assert vm.console is not None
        if vm.console.reporting:
            await vm.console.settle()
        crashes = vm.console.flush_crashes()[crashes_before:]
        after = await self._probe(vm, after=True) if before is not None else None
        return judge(before, after, crashes)

    async def _run_command_test(self, vm: QemuMachine, test: TestSpec, start: datetime) -> None:
        assert test.run is not None and vm.console is not None
        before = await self._probe(vm, after=False)
        crashes_before = len(vm.console.crashes)
        self.current_test = test.test_id
        self._warnings = []
        out_path = _output_file(self.ctx.run_dir, test.test_id)
        command = Command(shell=test.run, env=self._env(test.env), cwd=str(test.cwd))
        began = time.monotonic()
        artifacts: dict[str, str] = {"output": str(out_path)}
        try:
            with out_path.open("wb") as out:

                def keep(data: bytes) -> None:
                    out.write(data)

                try:
                    result = await vm.run(
                        command, on_stdout=keep, on_stderr=keep, timeout=test.timeout_s
                    )
                except CommandTimeout:
                    await self._discard_vm()
                    self._record(
                        self._result(
                            test, start, time.monotonic() - began, Outcome.TIMEOUT,
                            message=f"timed out after {test.timeout_s:g} s",
                            artifacts={**artifacts, "console": vm.console_log_display()},
                        )
                    )  # fmt: skip
                    return
                except (GuestCrashed, GuestHung) as exc:
                    await self._discard_vm()
                    artifacts["console"] = vm.console_log_display()
                    self._record(self._crash_result(test, start, began, exc, artifacts))
                    return
                except VmlabError as exc:
                    await self._discard_vm()
                    self._record(
                        self._result(
                            test, start, time.monotonic() - began, Outcome.ERROR,
                            message=exc.message, artifacts=artifacts,
                        )
                    )  # fmt: skip
                    return
        finally:
            self.current_test = None
        duration = time.monotonic() - began
        aftermath = await self._aftermath(vm, before, crashes_before)
        if self._warnings and test.safety is Safety.MONITORED and not aftermath.problems:
            # A warning line that is no full report (a parsed WARNING is a problem already).
            aftermath.problems.append(f"kernel warning during the test: {self._warnings[0]}")
        if aftermath.crash is not None:
            artifacts["console"] = vm.console_log_display()
            await self._discard_vm()  # the kernel reported a bug: never trust it again
        both = result.stdout + result.stderr
        if test.format is TestFormat.EXIT:
            self._record_exit(test, start, duration, result.status, both, artifacts, aftermath)
            return
        parsed = parse(result.stdout.decode("utf-8", "replace"), test.format.value)
        self._record_parsed(
            test, start, duration, result.status, parsed, both, artifacts, aftermath
        )

    def _record_exit(
        self, test: TestSpec, start: datetime, duration: float, status: int, output: bytes,
        artifacts: Mapping[str, str], aftermath: Aftermath,
    ) -> None:  # fmt: skip
        outcome = Outcome.PASSED if status == 0 else Outcome.FAILED
        message = "" if status == 0 else f"exit status {status}: {_last_line(output)}"
        if aftermath.problems:
            outcome, message = Outcome.FAILED, "; ".join(aftermath.problems)[:500]
        crash = None
        if aftermath.crash is not None:
            outcome, message = Outcome.CRASH, aftermath.crash.title
            crash = _crash_info(aftermath.crash.title, aftermath.crash)
        self._record(
            self._result(
                test, start, duration, outcome, message=message, output_tail=_tail(output),
                artifacts=dict(artifacts), metrics=aftermath.metrics, crash=crash,
            )
        )  # fmt: skip

    async def _reboot(self) -> QemuMachine:
        await self._discard_vm()
        return await self._ensure_vm()

    async def _run_pytest_test(self, test: TestSpec, start: datetime) -> None:
        """Host-side pytest with a `vm` fixture bound to this session's machine."""
        assert test.pytest is not None
        began = time.monotonic()
        self.current_test = test.test_id
        self._warnings = []
        workdir = self.ctx.run_dir / "pytest" / _safe_name(test.test_id)
        try:
            run = await run_pytest(
                test.pytest, get_vm=self._ensure_vm, reboot_vm=self._reboot,
                timeout_s=test.timeout_s, workdir=workdir, lab_dir=self.ctx.lab_root,
                guest_env=dict(test.env), guest_cwd=str(test.cwd),
            )  # fmt: skip
        finally:
            self.current_test = None
        out_path = _output_file(self.ctx.run_dir, test.test_id)
        out_path.write_bytes(run.output)
        artifacts = {"output": str(out_path)}
        duration = time.monotonic() - began
        if run.timed_out:
            await self._discard_vm()
            self._record(
                self._result(
                    test, start, duration, Outcome.TIMEOUT,
                    message=f"timed out after {test.timeout_s:g} s",
                    output_tail=_tail(run.output), artifacts=artifacts,
                )
            )  # fmt: skip
            return
        if run.crashes:
            first = run.crashes[0]
            self._record(self._crash_result(test, start, began, first, artifacts))
        if run.status in (2, 3, 4) or not run.junit_xml.strip():
            self._record(
                self._result(
                    test, start, duration, Outcome.ERROR,
                    message=f"pytest exited {run.status}: {_last_line(run.output)}",
                    output_tail=_tail(run.output), artifacts=artifacts,
                )
            )  # fmt: skip
            return
        parsed = parse(run.junit_xml, "junit")
        aftermath = Aftermath()
        if self._warnings and test.safety is Safety.MONITORED:
            aftermath.problems.append(f"kernel warning during the test: {self._warnings[0]}")
        self._record_parsed(test, start, duration, 0, parsed, run.output, artifacts, aftermath)

    def _record_parsed(
        self,
        test: TestSpec,
        start: datetime,
        duration: float,
        status: int,
        parsed: ParsedOutput,
        output: bytes,
        artifacts: Mapping[str, str],
        aftermath: Aftermath,
    ) -> None:
        outcome_of = {
            SubOutcome.PASSED: Outcome.PASSED,
            SubOutcome.TODO_FAILED: Outcome.PASSED,
            SubOutcome.SKIPPED: Outcome.SKIPPED,
            SubOutcome.FAILED: Outcome.FAILED,
            SubOutcome.ERROR: Outcome.ERROR,
        }
        pairs = test_ids(test.test_id, parsed)
        share = duration / max(1, len(pairs))
        for test_id, sub in pairs:
            self._record(
                self._result(
                    test, start, sub.duration_s if sub.duration_s is not None else share,
                    outcome_of[sub.outcome], test_id=test_id, message=sub.message[:500],
                    output_tail=sub.diagnostics[-TAIL_BYTES:], metrics=dict(sub.metrics),
                    artifacts=dict(artifacts),
                )
            )  # fmt: skip
        # The command as a whole is a result too (SUITE/TEST): its exit status, the
        # stream's problems, what it left in the kernel, its real duration and
        # the command's metrics (memory deltas).
        problems = list(parsed.problems)
        if status != 0 and all(outcome_of[sub.outcome].ok for _, sub in pairs):
            problems.append(f"exit status {status}")
        if not pairs and not problems:
            problems.append(f"no {test.format.value} results in the output")
        problems += aftermath.problems
        outcome = Outcome.FAILED if problems else Outcome.PASSED
        message = "; ".join(problems)[:500]
        crash = None
        if aftermath.crash is not None:
            outcome, message = Outcome.CRASH, aftermath.crash.title
            crash = _crash_info(aftermath.crash.title, aftermath.crash)
        if any(test_id == test.test_id for test_id, _ in pairs):
            return  # a whole-command skip (1..0 # SKIP) is already this result
        self._record(
            self._result(
                test, start, duration, outcome, message=message,
                output_tail=_tail(output), artifacts=dict(artifacts),
                metrics=aftermath.metrics, crash=crash,
            )
        )  # fmt: skip

    def _crash_result(
        self, test: TestSpec, start: datetime, began: float, exc: GuestCrashed | GuestHung,
        artifacts: Mapping[str, str],
    ) -> TestResult:  # fmt: skip
        crash = exc.crash if isinstance(exc.crash, Crash) else None
        outcome = Outcome.HANG if isinstance(exc, GuestHung) else Outcome.CRASH
        return self._result(
            test, start, time.monotonic() - began, outcome, message=exc.title,
            output_tail=exc.details[-TAIL_BYTES:], artifacts=dict(artifacts),
            crash=_crash_info(exc.title, crash, exc.details),
        )  # fmt: skip


def _crash_info(title: str, crash: Crash | None, report: str = "") -> CrashInfo:
    """The stored form of a crash; without a parsed report, the title is all."""
    if crash is None:  # a panic or a silent hang the parser could not name
        kind = "HANG" if title.startswith("the guest stopped answering") else "PANIC"
        signature = hashlib.sha256(title.encode()).hexdigest()[:16]
        return CrashInfo(title=title, kind=kind, signature=signature, report=report)
    return CrashInfo(title=title, kind=str(crash.kind), signature=crash.signature,
                     report=crash.report)  # fmt: skip
