"""QemuMachine: one host-root VM from launch to the last byte of cleanup.

    async with QemuMachine(MachineSpec(memory_mib=512)) as vm:
        result = await vm.run(Command(argv=("uname", "-r")))

Everything a VM uses lives in a private runtime directory (sockets, QEMU's
stderr) that is removed when the machine stops: no fixed ports, paths or CIDs,
so any number of machines run side by side. QEMU connects to sockets vmlab
listens on, so no byte of console or output is lost before vmlab attaches.
The QEMU process gets PDEATHSIG=SIGKILL and its own session: it never
outlives vmlab, and a Ctrl-C reaches vmlab, which then stops it in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, Self, TypeVar

from vmlab.errors import (
    BootError,
    CommandTimeout,
    GuestCrashed,
    GuestHung,
    HostError,
    InfraError,
    UsageError,
)
from vmlab.guest.channel import Command, CommandResult, MachineChannel, OutputSink, Stdin
from vmlab.guest.copying import Copied, CopyingChannel, guest_absolute, host_absolute
from vmlab.guest.serial import VirtioSerialChannel
from vmlab.machine.initramfs import build_initramfs
from vmlab.machine.kernel import BootableKernel, bootable, find_default_kernel, inspect_kernel
from vmlab.machine.probes import choose_accel, qemu_binary
from vmlab.machine.qemu_options import option_path
from vmlab.machine.qmp import send_sysrq, set_link
from vmlab.machine.spec import Accel, MachineSpec, Share
from vmlab.machine.subprocess_util import kill_on_parent_death, pid_exists
from vmlab.net.qemu_nic import boot_lines, find_nic, netdev_id, nic_argv, nic_modules

if TYPE_CHECKING:
    from vmlab.watch.console import Console

T = TypeVar("T")

# The ports the agent uses; QEMU connects to each (vmlab listens) except `in`,
# which QEMU serves so that vmlab can hang up to signal EOF and dial again.
CLIENT_PORTS = ("ctl", "sys", "out", "err")
BOOT_TIMEOUT = {Accel.KVM: 20.0, Accel.TCG: 60.0}
STOP_GRACE = 5.0
HEARTBEAT_INTERVAL = 5.0
DEATH_GRACE = 5.0  # how long a lost agent may wait for the VM's death to show
HEARTBEAT_TIMEOUT = 20.0  # generous: a busy TCG host can be slow to schedule the agent
OWNER_FILE = "owner.pid"


class QemuProcess(Protocol):
    """What a machine needs of its QEMU process: an asyncio child, or a QEMU that
    another vmlab started (`vmlab up`; vmlab.machine.records.AdoptedProcess)."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...

    def send_signal(self, sig: int) -> None: ...

    def kill(self) -> None: ...


class MachineState(enum.Enum):
    NEW = "new"
    BOOTING = "booting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    DEAD = "dead"  # crashed or QEMU exited on its own


@dataclass(frozen=True)
class BootImage:
    """Everything resolved that a boot needs, shared by retries."""

    kernel: BootableKernel
    modules_root: Path
    initrd: Path
    accel: Accel
    accel_notice: str | None


# Socket paths must fit sockaddr_un (108 bytes): BASE/vmlab-XXXXXXXX/con.sock.
_MAX_BASE = 80


def runtime_base() -> Path:
    """Where runtime directories go: $XDG_RUNTIME_DIR, else $TMPDIR, else /tmp,
    the first that is writable and short enough for unix socket paths."""
    candidates = [os.environ.get("XDG_RUNTIME_DIR"), tempfile.gettempdir(), "/tmp"]
    for candidate in candidates:
        if candidate and len(candidate) <= _MAX_BASE and os.access(candidate, os.W_OK):
            return Path(candidate)
    raise HostError("no writable runtime directory: set XDG_RUNTIME_DIR or TMPDIR to a short path")


def sweep_stale_runtime_dirs() -> None:
    """Remove runtime directories whose vmlab was killed (SIGKILL runs no
    `finally`; PDEATHSIG took its QEMU down, this takes its files)."""
    for directory in runtime_base().glob("vmlab-*"):
        try:
            pid = int((directory / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # not ours, or being created right now
        if not pid_exists(pid):
            shutil.rmtree(directory, ignore_errors=True)


def kernel_cmdline(spec: MachineSpec) -> str:
    # panic=-1 with -no-reboot: a panic ends QEMU at once; oops=panic: an oops
    # leaves the kernel untrustworthy, so it ends the VM too. acpi=noirq: PCI
    # interrupts routed without ACPI's interrupt links, whose AML costs ~0.1 s
    # per device under TCG (virtio uses MSI-X anyway). sysrq_always_enabled:
    # SysRq from the emulated keyboard (QMP) even where the distribution masks it.
    # loglevel=6: notices and worse on the console while the kernel boots (the
    # banner, the command line, any crash report), not the ~24 KB of boot info
    # that costs a syscall per byte on the serial port; init raises it to 7 for
    # the rest (SysRq task dumps print at info). `dmesg` in the guest has it all.
    base = [
        "console=ttyS0", "panic=-1", "oops=panic", "rdinit=/init", "8250.nr_uarts=1",
        "acpi=noirq", "sysrq_always_enabled", "loglevel=6",
    ]  # fmt: skip
    return " ".join([*base, *spec.append])


def build_argv(qemu: str, image: BootImage, spec: MachineSpec, runtime: Path) -> list[str]:
    """QEMU's command line for a host-root machine (pure; unit tested)."""
    accel = (
        ["-accel", "kvm", "-cpu", "host"]
        if image.accel is Accel.KVM
        else ["-accel", "tcg", "-cpu", "max"]
    )
    argv = [
        qemu, "-name", f"vmlab-{spec.name}", "-M", "pc", *accel,
        "-m", f"{spec.memory_mib}M", "-smp", str(spec.cpus),
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-kernel", str(image.kernel.boot_path), "-initrd", str(image.initrd),
        "-append", kernel_cmdline(spec),
        "-chardev", f"socket,id=con,path={option_path(runtime / 'con.sock')}",
        "-serial", "chardev:con",
        "-qmp", f"unix:{option_path(runtime / 'qmp.sock')},server=on,wait=off",
        "-device", "virtio-serial-pci,id=vser",
        "-chardev", f"socket,id=in,path={option_path(runtime / 'in.sock')},server=on,wait=off",
        "-device", "virtserialport,bus=vser.0,chardev=in,name=vmlab.in",
    ]  # fmt: skip
    for port in CLIENT_PORTS:
        argv += [
            "-chardev", f"socket,id={port},path={option_path(runtime / (port + '.sock'))}",
            "-device", f"virtserialport,bus=vser.0,chardev={port},name=vmlab.{port}",
        ]  # fmt: skip
    shares = [Share(Path("/"), Path("/"), writable=False), *spec.shares]
    for index, share in enumerate(shares):
        tag = "hostroot" if index == 0 else f"vmlab{index}"
        readonly = "" if share.writable else ",readonly=on"
        argv += [
            "-fsdev",
            f"local,id=fs{index},path={option_path(share.host)},security_model=none,multidevs=remap{readonly}",
            "-device", f"virtio-9p-pci,fsdev=fs{index},mount_tag={tag}",
        ]  # fmt: skip
    argv += nic_argv(spec.nics, spec.name)  # private networks (vmlab.net)
    return argv


def boot_script(spec: MachineSpec) -> str:
    """The shell snippet init sources before switching root: the shares."""
    lines = []
    for index, share in enumerate(spec.shares, start=1):
        target = shlex.quote(f"/newroot{share.guest}")
        mode = "rw,cache=mmap" if share.writable else "ro,cache=loose"
        lines.append(f"$BB mkdir -p {target}")
        lines.append(
            f"$BB mount -t 9p -o trans=virtio,version=9p2000.L,{mode},msize=512000 "
            f"vmlab{index} {target} || fail 'cannot mount share {share.host}'"
        )
    lines += boot_lines(spec.nics)  # private networks (vmlab.net)
    lines.append(f"$BB hostname {shlex.quote(spec.name)}")
    return "\n".join(lines) + "\n"


def check_shares(shares: Sequence[Share]) -> None:
    for share in shares:
        if not share.host.is_dir():
            what = "does not exist" if not share.host.exists() else "is not a directory"
            raise UsageError(f"share {share.host} {what} (fix the --share path)")
        if not share.guest.is_absolute():
            raise UsageError(f"share {share.host}: guest path {share.guest} must be absolute")


async def prepare_boot(spec: MachineSpec) -> BootImage:
    """Resolve kernel, modules, initramfs and accel (blocking work in a thread)."""
    check_shares(spec.shares)
    kernel_path = spec.kernel
    if kernel_path is None:
        kernel_path = await asyncio.to_thread(find_default_kernel)
    kernel = await asyncio.to_thread(inspect_kernel, kernel_path)
    boot = await asyncio.to_thread(bootable, kernel)
    modules_root = spec.modules or Path("/lib/modules") / kernel.release
    initrd = await asyncio.to_thread(build_initramfs, modules_root, nic_modules(spec.nics))
    choice = await choose_accel(spec.accel, boot.boot_path, kernel.sha256, initrd)
    return BootImage(boot, modules_root, initrd, choice.accel, choice.notice)


def _outcome_seen(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


class QemuMachine:
    """A host-root VM. Use as `async with`; `run()` commands while it is up."""

    def __init__(
        self,
        spec: MachineSpec,
        *,
        console_log: Path | None = None,
        console_echo: BinaryIO | None = None,
        image: BootImage | None = None,
    ) -> None:
        self.spec = spec
        self.state = MachineState.NEW
        self.image = image
        self.console_log_path = console_log
        self._console_echo = console_echo
        self.console: Console | None = None
        self.channel: MachineChannel | None = None
        self.boot_seconds: float | None = None
        self._proc: QemuProcess | None = None
        self._runtime: Path | None = None
        self._servers: list[asyncio.Server] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._death: asyncio.Future[str] | None = None
        self.argv: list[str] = []

    # -- lifecycle -----------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Boot. A boot that stalls, or whose init gives up, is retried once,
        then raises BootError; on any failure nothing of the VM is left."""
        qemu = qemu_binary()
        timeout = await self._prepare()
        if self.console_log_path is not None:
            self.console_log_path.write_bytes(b"")  # both attempts append to it
        for attempt in (1, 2):
            try:
                await self._boot_once(qemu, timeout)
                return
            except BootError as exc:
                await self.stop()
                if attempt == 2:
                    raise BootError(
                        f"the guest did not boot, twice: {exc.message}", details=exc.details
                    ) from None
                self.state = MachineState.NEW
            except BaseException:
                await self.stop()
                raise

    async def _prepare(self) -> float:
        """Resolve what every boot attempt shares; return the boot timeout."""
        if self.image is None:
            self.image = await prepare_boot(self.spec)
        if self.spec.modules is not None and self.spec.modules != Path("/lib/modules") / (
            self.image.kernel.kernel.release
        ):
            self.spec = _with_modules_share(self.spec, self.image)
        return self.spec.boot_timeout or BOOT_TIMEOUT[self.image.accel]

    def _new_runtime(self) -> Path:
        """A fresh private runtime directory, owned by this process."""
        self.state = MachineState.BOOTING
        sweep_stale_runtime_dirs()
        self._runtime = Path(tempfile.mkdtemp(prefix="vmlab-", dir=runtime_base()))
        (self._runtime / OWNER_FILE).write_text(f"{os.getpid()}\n")
        self._death = asyncio.get_running_loop().create_future()
        return self._runtime

    async def _spawn(self, qemu: str, *, detach: bool = False) -> None:
        """Start QEMU with `self.argv`, its stderr to the runtime directory.
        `detach`: it may outlive vmlab (no PDEATHSIG); it still gets its own session."""
        assert self._runtime is not None
        stderr = (self._runtime / "qemu.stderr").open("wb")
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
                preexec_fn=None if detach else kill_on_parent_death,
            )
        except OSError as exc:
            raise InfraError(f"cannot start QEMU ({qemu}): {exc.strerror}") from exc
        finally:
            stderr.close()
        self._tasks.append(asyncio.create_task(self._watch_process(), name="vmlab-qemu"))

    async def _boot_once(self, qemu: str, timeout: float) -> None:
        assert self.image is not None
        started = time.monotonic()
        self._new_runtime()
        assert self._runtime is not None and self._death is not None
        connections: dict[
            str, asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]]
        ] = {}
        for name in ("con", *CLIENT_PORTS):
            connections[name] = asyncio.get_running_loop().create_future()
            self._servers.append(
                await asyncio.start_unix_server(
                    _accept_once(connections[name]), path=str(self._runtime / f"{name}.sock")
                )
            )
        self.argv = build_argv(qemu, self.image, self.spec, self._runtime)
        await self._spawn(qemu)
        # Imported only now: the crash patterns take ~25 ms to compile, which
        # QEMU's own start-up (~0.3 s before the kernel prints) hides.
        from vmlab.watch.console import Console  # noqa: PLC0415

        self.console = Console(
            self.console_log_path or self._runtime / "console.log", echo=self._console_echo
        )

        try:
            streams = await self._guard(asyncio.gather(*connections.values()), timeout=30)
        except TimeoutError:
            raise InfraError("QEMU did not open its devices within 30 s") from None
        for server in self._servers:
            server.close()
        self._servers.clear()
        named = dict(zip(connections, streams, strict=True))
        self._tasks.append(
            asyncio.create_task(self._follow_console(named["con"][0]), name="vmlab-con")
        )
        channel = VirtioSerialChannel(
            named["ctl"], named["sys"], named["out"], named["err"], self._runtime / "in.sock"
        )
        self.channel = channel
        try:
            await self._guard(channel.boot(boot_script(self.spec)), timeout=timeout)
        except TimeoutError:
            raise BootError(
                f"the guest did not reach its agent within {timeout:g} s",
                details="\n".join(self.console.tail(15)),
            ) from None
        except InfraError as exc:
            if self._proc is not None and self._proc.returncode not in (0, None):
                raise  # QEMU itself failed: retrying would fail the same way
            # The guest powered off (init gave up) or hung up: say why, retry once.
            reason = next(
                (line for line in reversed(self.console.tail(30)) if "vmlab-init:" in line),
                exc.message,
            )
            raise BootError(reason, details="\n".join(self.console.tail(15))) from None
        self.boot_seconds = time.monotonic() - started
        self.state = MachineState.RUNNING

    async def _follow_console(self, reader: asyncio.StreamReader) -> None:
        assert self.console is not None and self._death is not None
        panic = asyncio.create_task(self.console.panicked.wait())
        follow = asyncio.create_task(self.console.follow(reader))
        try:
            await asyncio.wait({panic, follow}, return_when=asyncio.FIRST_COMPLETED)
            if self.console.panic is not None and not self._death.done():
                self._death.set_result("panic")
            await follow
        finally:
            panic.cancel()
            follow.cancel()

    async def _watch_process(self) -> None:
        assert self._proc is not None and self._death is not None
        await self._proc.wait()
        if not self._death.done():
            self._death.set_result("exit")

    async def _guard(self, awaitable: Awaitable[T], *, timeout: float | None) -> T:
        """Await `awaitable` unless the VM dies first (then raise why) or time runs out."""
        assert self._death is not None
        task = asyncio.ensure_future(awaitable)
        waiters: set[asyncio.Future[Any]] = {task, self._death}
        try:
            done, _ = await asyncio.wait(
                waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        except BaseException:
            task.cancel()
            # Nobody awaits it now: mark its outcome seen, or asyncio logs
            # "exception was never retrieved" on our one-line exit.
            task.add_done_callback(_outcome_seen)
            raise
        if task in done:
            if isinstance(task.exception(), InfraError) and not self._death.done():
                # The guest hung up: most likely the VM is dying (a panic), and
                # its console or exit has not been seen yet. Give them a moment.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self._death), DEATH_GRACE)
            if isinstance(task.exception(), InfraError) and self._death.done():
                raise await self._death_error()
            return task.result()
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        if self._death.done():
            raise await self._death_error()
        raise TimeoutError

    async def _death_error(self) -> InfraError | GuestCrashed:
        """Why the VM died, with evidence; waits briefly for the end of a panic."""
        assert self._proc is not None and self.console is not None
        self.state = MachineState.DEAD
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._proc.wait(), 3)
        # The console's last lines (a panic) may still be in flight: on its
        # socket (a follower task's turn) or in a log file QEMU wrote itself.
        await asyncio.sleep(0)
        self.console.drain_file()
        tail = "\n".join(self.console.tail(30))
        if self.console.panic is not None:
            crashes = self.console.flush_crashes()
            crash = crashes[0] if crashes else None
            title = crash.title if crash is not None else self.console.panic
            return GuestCrashed(
                f"the guest kernel crashed: {title}{self._log_note()}",
                title=title,
                details=crash.report if crash is not None else tail,
                crash=crash,
            )
        stderr = self._qemu_stderr()
        code = self._proc.returncode
        return InfraError(
            f"QEMU exited unexpectedly with status {code}"
            + (f": {stderr.splitlines()[-1]}" if stderr else "")
            + self._log_note(),
            details=f"argv: {shlex.join(self.argv)}\nstderr:\n{stderr}\nconsole:\n{tail}",
        )

    def _log_note(self) -> str:
        """` (console log: PATH)` when the log outlives the VM (it was asked for)."""
        return f" (console log: {self.console_log_path})" if self.console_log_path else ""

    def _qemu_stderr(self) -> str:
        if self._runtime is None:
            return ""
        with contextlib.suppress(OSError):
            return (self._runtime / "qemu.stderr").read_text(errors="replace").strip()
        return ""

    async def stop(self) -> None:
        """Stop QEMU (SIGTERM, then SIGKILL) and remove every runtime file.

        Safe to call twice, and on any path: the synchronous part in `finally`
        runs even when this task is cancelled mid-way.
        """
        if self.state in (MachineState.STOPPED, MachineState.NEW) and self._proc is None:
            return
        if self.state is not MachineState.DEAD:
            self.state = MachineState.STOPPING
        proc = self._proc
        try:
            if proc is not None and proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), STOP_GRACE)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    await proc.wait()
            if self.channel is not None:
                await self.channel.close()
            if self.console is not None:
                self.console.close()
            await self._cancel_tasks()
        finally:
            if proc is not None and proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            for server in self._servers:
                server.close()
            if self._runtime is not None:
                shutil.rmtree(self._runtime, ignore_errors=True)
            self._servers.clear()
            self._tasks.clear()
            self._runtime = None
            self._proc = None
            self.channel = None
            if self.state is not MachineState.DEAD:
                self.state = MachineState.STOPPED

    async def _cancel_tasks(self) -> None:
        """Cancel the machine's background tasks and wait until each has ended."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        self._tasks.clear()

    # -- commands ------------------------------------------------------------

    async def run(
        self,
        command: Command,
        *,
        stdin: Stdin = None,
        on_stdout: OutputSink | None = None,
        on_stderr: OutputSink | None = None,
        capture: bool = True,
        timeout: float | None = None,
    ) -> CommandResult:
        """Run a command in the guest.

        A crash of the guest raises GuestCrashed. A lockup report on the console
        (soft lockup, hung task, RCU stall) or a guest that stops answering the
        heartbeat raises GuestHung, after the guest's tasks were dumped to the
        console. Outliving `timeout` dumps the tasks, kills the command and
        raises CommandTimeout; the machine stays usable after that one.
        """
        if self.state is not MachineState.RUNNING or self.channel is None:
            raise InfraError(f"machine {self.spec.name} is not running ({self.state.value})")
        assert self.console is not None
        channel, console = self.channel, self.console
        console.hung.clear()
        crashes_before = len(console.crashes)
        work = asyncio.ensure_future(
            channel.run(
                command, stdin=stdin, on_stdout=on_stdout, on_stderr=on_stderr, capture=capture
            )
        )
        hang = asyncio.ensure_future(self._watch_for_hang(channel, console))
        try:
            return await self._guard(_first_of(asyncio.shield(work), hang), timeout=timeout)
        except TimeoutError:
            await self.dump_tasks()
            with contextlib.suppress(Exception):
                await channel.interrupt()
                await asyncio.wait_for(asyncio.shield(work), 5)
            where = f" to the console log {self.console_log_path}" if self.console_log_path else ""
            raise CommandTimeout(
                f"command timed out after {timeout:g} s: {command.describe()} "
                f"(task states dumped{where})"
            ) from None
        except _Hang as exc:
            raise await self._hang_error(exc.reason, crashes_before) from None
        finally:
            for task in (work, hang):
                if not task.done():
                    task.cancel()
                with contextlib.suppress(BaseException):
                    await task  # retrieve its outcome: the VM's fate already explains it

    # -- file copies (the rules: vmlab.guest.copying) -----------------------------

    async def copy_to(
        self, src: str | os.PathLike[str], dst: str, *, timeout: float | None = None
    ) -> Copied:
        """Copy a host file, or a directory with everything in it, into the guest.

        A `dst` that is a directory, or ends in `/`, receives it under its own
        name; a directory onto a directory is merged. Modes and times are kept;
        nothing half-written is ever left. A relative `dst` starts at /. Over
        SFTP where the channel is SSH, else a tar stream through `run()`. Raises
        UsageError for a bad host path, GuestPathError for a bad guest one,
        CommandTimeout past `timeout`. Returns where the copy is in the guest.
        """
        channel = self._copy_channel()
        target = guest_absolute(dst)
        if channel is None:
            from vmlab.guest import tar_copy  # noqa: PLC0415 (tarfile: only when copying)

            return await tar_copy.copy_to(self.run, Path(src), target, timeout=timeout)
        return await self._copying(channel.copy_to(Path(src), target), timeout, f"{src} {dst}")

    async def copy_from(
        self, src: str, dst: str | os.PathLike[str], *, timeout: float | None = None
    ) -> Copied:
        """Copy a guest file, or a directory with everything in it, to the host;
        the mirror of `copy_to` (a relative `src` starts at /, a relative `dst` in
        the current directory). Returns where the copy is on the host."""
        channel = self._copy_channel()
        source, target = guest_absolute(src), host_absolute(dst)
        if channel is None:
            from vmlab.guest import tar_copy  # noqa: PLC0415

            return await tar_copy.copy_from(self.run, source, target, timeout=timeout)
        return await self._copying(channel.copy_from(source, target), timeout, f"{src} {dst}")

    def _copy_channel(self) -> CopyingChannel | None:
        """The channel when it copies by itself (SFTP), None for `run()` and tar."""
        if self.state is not MachineState.RUNNING or self.channel is None:
            raise InfraError(f"machine {self.spec.name} is not running ({self.state.value})")
        channel = self.channel
        return channel if isinstance(channel, CopyingChannel) and channel.sftp_ok else None

    async def _copying(self, work: Awaitable[Copied], timeout: float | None, what: str) -> Copied:
        """A copy raced against the VM's death (then raise why) and `timeout`."""
        try:
            return await self._guard(work, timeout=timeout)
        except TimeoutError:
            if timeout is None:  # not ours
                raise
            raise CommandTimeout(f"copy timed out after {timeout:g} s: {what}") from None

    async def _watch_for_hang(self, channel: MachineChannel, console: Console) -> str:
        """Return why the guest counts as hung: a lockup report on the console,
        or no answer to the heartbeat. Runs beside every command."""
        report = asyncio.ensure_future(console.hung.wait())
        beat = asyncio.ensure_future(_heartbeat(channel))
        try:
            done, _ = await asyncio.wait({report, beat}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (report, beat):
                task.cancel()
        if report in done:
            return console.hang or "a lockup report on the console"
        return beat.result()

    async def _hang_error(self, reason: str, crashes_before: int) -> GuestHung:
        """Name the hang from what the guest printed, then dump its tasks."""
        assert self.console is not None
        # Let the lockup report finish and close it before the dumps follow it,
        # so that they are never read as part of it.
        await self.console.settle(quiet=0.5, limit=5)
        crashes = self.console.flush_crashes()[crashes_before:]
        await self.dump_tasks("wlt", agent_first=False)
        hang = next((c for c in crashes if c.is_hang), None)
        title = hang.title if hang is not None else reason
        self.state = MachineState.DEAD  # never trusted again
        return GuestHung(
            f"the guest hung: {title}{self._log_note()}",
            title=title,
            details=hang.report if hang is not None else "\n".join(self.console.tail(40)),
            crash=hang,
        )

    def console_log_display(self) -> str:
        return str(self.console.log_path) if self.console is not None else "(none)"

    async def dump_tasks(self, letters: str = "t", *, agent_first: bool = True) -> None:
        """Ask the guest kernel for task states via SysRq (t: every task with its
        stack; w: blocked tasks; l: what each CPU runs) and let the console
        print each dump whole. The agent is
        asked first when the guest answers; the emulated keyboard (QMP) works
        even when no guest process can run."""
        if self.console is None or self._runtime is None:
            return
        if agent_first and self.channel is not None:
            with contextlib.suppress(Exception):  # the keyboard path below is the fallback
                for letter in letters:
                    asked = time.monotonic()
                    await self.channel.sysrq(letter, timeout=3)
                    await self.console.settle(since=asked)
                return
        for letter in letters:
            asked = time.monotonic()
            with contextlib.suppress(Exception):
                await send_sysrq(self._runtime / "qmp.sock", letter)
            await self.console.settle(since=asked)

    # -- private networks (vmlab.net) ---------------------------------------

    async def link(self, network: str, *, up: bool) -> None:
        """Plug (`up=True`) or pull the cable of this machine's NIC on `network`
        (QMP set_link on its netdev): while down, QEMU drops its frames both
        ways and the guest sees no carrier."""
        if self.state is not MachineState.RUNNING or self._runtime is None:
            raise InfraError(f"machine {self.spec.name} is not running ({self.state.value})")
        find_nic(self.spec.nics, network, self.spec.name)
        await set_link(self._runtime / "qmp.sock", netdev_id(network), up)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def runtime_dir(self) -> Path | None:
        return self._runtime


class _Hang(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def _first_of(work: Awaitable[T], hang: asyncio.Future[str]) -> T:
    """`work`'s result, unless `hang` finishes first: then raise _Hang."""
    task = asyncio.ensure_future(work)
    waiters: set[asyncio.Future[Any]] = {task, hang}
    try:
        done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()  # also when we are cancelled: nothing may be left pending
    if task in done:
        return task.result()
    raise _Hang(hang.result())


async def _heartbeat(channel: MachineChannel) -> str:
    """Ping the agent's control loop until it stops answering; say for how long."""
    while True:
        await asyncio.sleep(HEARTBEAT_INTERVAL)
        try:
            await channel.ping(timeout=HEARTBEAT_TIMEOUT)
        except TimeoutError:
            return f"the guest stopped answering for {HEARTBEAT_TIMEOUT:g} s"


def _accept_once(
    future: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]],
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if future.done():
            writer.close()
        else:
            future.set_result((reader, writer))

    return on_connect


def _with_modules_share(spec: MachineSpec, image: BootImage) -> MachineSpec:
    """Show --modules DIR at /lib/modules/RELEASE in the guest, for modprobe."""
    from dataclasses import replace  # noqa: PLC0415

    guest = Path("/lib/modules") / image.kernel.kernel.release
    share = Share(image.modules_root, guest, writable=False)
    return replace(spec, shares=(*spec.shares, share))
