"""ImageMachine: a disk-image VM, provisioned by cloud-init, reached over SSH.

    async with ImageMachine(spec) as vm:          # spec.disk is set
        await vm.run(Command(argv=("systemctl", "is-system-running")))
        await vm.save_snapshot()
        ...                                       # something destructive
        await vm.restore_snapshot()               # back in ~2 s, not a new boot

It boots from a throwaway qcow2 overlay on the image (the base is never
written); a built image's own kernel is booted directly through PVH with a
tiny initramfs that mounts the root disk and hands over to systemd (no
bootloader, no distribution initrd). An image the user brings boots through
SeaBIOS and its own bootloader. With the host's kernel (`kernel = "host"`),
that kernel's modules come along on a read-only disk (modules_disk.py). A
NoCloud seed ISO carries the lab's key and the ready marker; ready means that
marker on the console and then SSH answering, each stage bounded. QEMU
writes the console log itself (so the log is whole even with nobody
attached); vmlab follows the file.

Snapshots are QEMU internal snapshots in the overlay (savevm/loadvm). They
survive QEMU: after a crash, `restore_snapshot` starts a new QEMU on the same
overlay with -loadvm.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import shlex
import socket
import subprocess
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from vmlab.errors import BootError, GuestCrashed, HostError, InfraError, UsageError, VmlabError
from vmlab.guest.ssh import SshChannel
from vmlab.machine.cloud_config import Nic, Seed, SeedRequest, build_seed, ready_marker
from vmlab.machine.initramfs import build_initramfs
from vmlab.machine.kernel import BootableKernel, bootable, inspect_kernel
from vmlab.machine.lab_keys import LabKey, lab_key
from vmlab.machine.modules_disk import SERIAL as MODULES_SERIAL
from vmlab.machine.modules_disk import modules_disk
from vmlab.machine.qemu import (
    OWNER_FILE,
    MachineState,
    QemuMachine,
    prepare_boot,
)
from vmlab.machine.qemu_options import option_path
from vmlab.machine.qmp import human
from vmlab.machine.records import (
    AdoptedProcess,
    MachineInUse,
    MachineRecord,
    read_record,
    write_record,
)
from vmlab.machine.seed_iso import write_seed_iso
from vmlab.machine.spec import Accel, ImageSpec, KernelSource, MachineSpec
from vmlab.net.addresses import hosts_map
from vmlab.net.qemu_nic import nic_argv
from vmlab.watch.console import Console

BOOT_TIMEOUT = {Accel.KVM: 120.0, Accel.TCG: 300.0}  # kernel + systemd + cloud-init
SSH_TIMEOUT = 60.0  # after the ready marker: sshd is up by then, normally at once
RESTORE_TIMEOUT = 60.0
SNAPSHOT = "vmlab-ready"
USER_MAC = "52:54:00:12:34:56"  # the user-networking NIC (its own segment: no clash)


@dataclass(frozen=True)
class DiskBoot:
    """What every boot of one disk-image machine shares."""

    base: Path
    base_format: str  # "qcow2" or "raw"
    kernel: BootableKernel | None  # None: firmware and the image's bootloader
    initrd: Path | None
    accel: Accel
    accel_notice: str | None
    key: LabKey
    # kernel = "host": that kernel's modules as a read-only disk (modules_disk.py),
    # mounted at /lib/modules/RELEASE in the image by the image initramfs
    modules_disk: Path | None = None


def image_format(path: Path) -> str:
    """qcow2 or raw, from `qemu-img info`; UsageError for anything else."""
    if not path.is_file():
        raise UsageError(f"image {path} does not exist (fix `image` in the lab file)")
    try:
        out = subprocess.run(
            ["qemu-img", "info", "--output=json", str(path)],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
    except FileNotFoundError:
        raise HostError("qemu-img is not installed (apt-get install qemu-utils)") from None
    except subprocess.CalledProcessError as exc:
        raise UsageError(f"image {path} cannot be read: {exc.stderr.strip()}") from None
    fmt = str(json.loads(out).get("format", ""))
    if fmt not in ("qcow2", "raw"):
        raise UsageError(f"image {path} is {fmt or 'not a disk image'} (use qcow2 or raw)")
    if fmt == "raw" and not _looks_like_disk(path):
        raise UsageError(f"image {path} is not a disk image (no partition table or filesystem)")
    return fmt


def _looks_like_disk(path: Path) -> bool:
    """A raw file with an MBR/GPT signature or an ext2/3/4 superblock."""
    with path.open("rb") as f:
        head = f.read(2048)
    return head[510:512] == b"\x55\xaa" or head[1080:1082] == b"\x53\xef"


async def prepare_disk_boot(spec: MachineSpec) -> DiskBoot:
    """Resolve the image (building it when needed), the kernel and the accel."""
    from vmlab.machine.image_build import build_image  # noqa: PLC0415  (imports mmdebstrap bits)

    disk = spec.disk
    assert disk is not None
    # The host-root resolution gives the host kernel and the accel verdict.
    host = await prepare_boot(replace(spec, disk=None, nics=(), shares=()))
    kernel: BootableKernel | None
    modules_root: Path | None
    if isinstance(disk.image, ImageSpec):
        built = await build_image(disk.image)
        base, fmt = built.base, "qcow2"
        modules_root = built.modules
        if disk.kernel is KernelSource.IMAGE:
            kernel = await asyncio.to_thread(
                bootable, await asyncio.to_thread(inspect_kernel, built.vmlinuz)
            )
        else:
            kernel, modules_root = host.kernel, host.modules_root
    else:
        base = disk.image
        fmt = await asyncio.to_thread(image_format, base)
        kernel, modules_root = (
            (host.kernel, host.modules_root) if disk.kernel is KernelSource.HOST else (None, None)
        )
    initrd = None
    if kernel is not None and modules_root is not None:
        initrd = await asyncio.to_thread(build_initramfs, modules_root, (), for_image=True)
    modules = None
    if disk.kernel is KernelSource.HOST:
        # The image has no modules for the host's kernel: bring them along.
        modules = await asyncio.to_thread(modules_disk, host.modules_root)
    key = await asyncio.to_thread(lab_key, disk.lab_dir)
    return DiskBoot(base, fmt, kernel, initrd, host.accel, host.accel_notice, key, modules)


def image_cmdline(spec: MachineSpec) -> str:
    """The kernel command line of a directly booted image (see kernel_cmdline in
    qemu.py for the shared options). systemd.show_status=error keeps systemd's
    status lines off the slow UART, except failures."""
    assert spec.disk is not None
    base = [
        "console=ttyS0", "panic=-1", "oops=panic", "rdinit=/init", "8250.nr_uarts=1",
        "acpi=noirq", "sysrq_always_enabled", "loglevel=6", "systemd.show_status=error",
        f"vmlab.root={spec.disk.root}",
    ]  # fmt: skip
    return " ".join([*base, *spec.append])


def build_image_argv(
    qemu: str, boot: DiskBoot, spec: MachineSpec, runtime: Path, ssh_port: int, console_log: Path
) -> list[str]:
    """QEMU's command line for a disk-image machine (pure; unit tested)."""
    assert spec.disk is not None
    accel = (
        ["-accel", "kvm", "-cpu", "host"]
        if boot.accel is Accel.KVM
        else ["-accel", "tcg", "-cpu", "max"]
    )
    restrict = "" if spec.disk.internet else ",restrict=on"
    argv = [
        qemu, "-name", f"vmlab-{spec.name}", "-M", "pc", *accel,
        "-m", f"{spec.memory_mib}M", "-smp", str(spec.cpus),
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-chardev",
        f"socket,id=con,path={option_path(runtime / 'console.sock')},server=on,wait=off,"
        f"logfile={option_path(console_log)},logappend=on",
        "-serial", "chardev:con",
        "-qmp", f"unix:{option_path(runtime / 'qmp.sock')},server=on,wait=off",
        "-drive",
        f"file={option_path(runtime / 'disk.qcow2')},if=none,id=root,format=qcow2,cache=unsafe",
        "-device", "virtio-blk-pci,drive=root",
        "-drive",
        f"file={option_path(runtime / 'seed.iso')},if=none,id=seed,format=raw,readonly=on",
        "-device", "virtio-blk-pci,drive=seed",
        "-netdev", f"user,id=user0{restrict},hostfwd=tcp:127.0.0.1:{ssh_port}-:22",
        "-device", f"virtio-net-pci,netdev=user0,mac={USER_MAC}",
    ]  # fmt: skip
    if boot.modules_disk is not None:  # read-only: savevm leaves it out, as the seed
        argv += [
            "-drive",
            f"file={option_path(boot.modules_disk)},if=none,id=modules,format=raw,readonly=on",
            "-device", f"virtio-blk-pci,drive=modules,serial={MODULES_SERIAL}",
        ]  # fmt: skip
    if boot.kernel is not None and boot.initrd is not None:
        argv += [
            "-kernel", str(boot.kernel.boot_path), "-initrd", str(boot.initrd),
            "-append", image_cmdline(spec),
        ]  # fmt: skip
    argv += nic_argv(spec.nics, spec.name)
    return argv


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def check_port(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            raise UsageError(
                f"ssh_port {port} on 127.0.0.1 is in use (pick another, or leave "
                "ssh_port out for a free one)"
            ) from None


class ImageMachine(QemuMachine):
    """A disk-image VM. `run()`, `dump_tasks()` and crash/hang watching behave
    as on host-root machines; commands travel over SSH."""

    def __init__(
        self,
        spec: MachineSpec,
        *,
        console_log: Path | None = None,
        console_echo: BinaryIO | None = None,
        disk_boot: DiskBoot | None = None,
        background: bool = False,
    ) -> None:
        """`background` (`vmlab up`): QEMU may outlive vmlab (no PDEATHSIG) and
        owns its runtime directory (owner.pid is QEMU's pid, so the stale sweep
        leaves it alone); `detach()` then leaves it running."""
        if spec.disk is None:
            raise ValueError("ImageMachine needs a MachineSpec with `disk`")
        super().__init__(spec, console_log=console_log, console_echo=console_echo)
        self.disk_boot = disk_boot
        self.ssh_port: int | None = None
        self.snapshot: str | None = None  # the tag of a saved snapshot
        self.background = background
        # A machine `vmlab up` started (see attach()): stop() only detaches.
        self.keep_running = False
        self.key_path: Path | None = None
        self.started: datetime | None = None  # when QEMU was started (UTC)
        self._in_use: MachineInUse | None = None
        self._qemu = ""

    # vmlab logs in as root with the lab key (the seed allows it): commands run
    # as root, like on the host-root path, without depending on sudo.
    ssh_user = "root"

    async def _prepare(self) -> float:
        if self.disk_boot is None:
            self.disk_boot = await prepare_disk_boot(self.spec)
        return self.spec.boot_timeout or BOOT_TIMEOUT[self.disk_boot.accel]

    async def _boot_once(self, qemu: str, timeout: float) -> None:
        boot, disk = self.disk_boot, self.spec.disk
        assert boot is not None and disk is not None
        started = time.monotonic()
        runtime = self._new_runtime()
        self._qemu = qemu
        await _run_tool(
            "qemu-img", "create", "-q", "-f", "qcow2", "-F", boot.base_format,
            "-b", str(boot.base.resolve()), str(runtime / "disk.qcow2"),
        )  # fmt: skip
        seed = await asyncio.to_thread(self._write_seed, runtime)
        if disk.ssh_port is not None:
            check_port(disk.ssh_port)
        self.ssh_port = disk.ssh_port or free_port()
        log = self.console_log_path or runtime / "console.log"
        log.touch()
        offset = log.stat().st_size
        self.argv = build_image_argv(qemu, boot, self.spec, runtime, self.ssh_port, log)
        self.key_path = boot.key.private_path
        await self._spawn(qemu, detach=self.background)
        self._spawned()
        self._follow_log(log, offset)
        await self._wait_ready(seed.ready, seed.ready_text, timeout - (time.monotonic() - started))
        await self._connect(SSH_TIMEOUT)
        self.boot_seconds = time.monotonic() - started
        self.state = MachineState.RUNNING

    def _write_seed(self, runtime: Path) -> Seed:
        boot, disk = self.disk_boot, self.spec.disk
        assert boot is not None and disk is not None
        request = SeedRequest(
            hostname=self.spec.name,
            instance_id=f"vmlab-{self.spec.name}-{secrets.token_hex(4)}",
            public_key=boot.key.public_openssh,
            marker=ready_marker(secrets.token_hex(6)),
            user=disk.user,
            user_data=disk.user_data,
            nics=(
                Nic(USER_MAC),
                *(Nic(nic.mac, f"{nic.address}/{nic.prefix}") for nic in self.spec.nics),
            ),
            # Its own name too: a service bound to the machine's name listens on
            # its lab address, not on 127.0.1.1.
            hosts=hosts_map(self.spec.nics),
        )
        seed = build_seed(request)
        write_seed_iso(runtime / "seed.iso", seed.files)
        return seed

    def _follow_log(self, log: Path, offset: int) -> None:
        self.console = Console(log, echo=self._console_echo, record=False)
        console = self.console

        async def follow() -> None:
            assert self._death is not None
            follow = asyncio.create_task(console.follow_file(log, offset=offset))
            panic = asyncio.create_task(console.panicked.wait())
            try:
                await asyncio.wait({follow, panic}, return_when=asyncio.FIRST_COMPLETED)
                if console.panic is not None and not self._death.done():
                    self._death.set_result("panic")
                await follow
            finally:
                follow.cancel()
                panic.cancel()

        self._tasks.append(asyncio.create_task(follow(), name="vmlab-console"))

    async def _wait_ready(self, ready: re.Pattern[str], ready_text: str, timeout: float) -> None:
        """Stage 1: the kernel prints; stage 2: cloud-init prints the marker."""
        assert self.console is not None
        seen = asyncio.Event()
        self.console.watch(lambda line: seen.set() if ready.search(line) else None)
        try:
            await self._guard(seen.wait(), timeout=max(timeout, 1.0))
        except TimeoutError:
            tail = self.console.tail(15)
            if not tail:
                stage = "the kernel printed nothing on the console"
                if self.disk_boot is not None and self.disk_boot.kernel is None:
                    stage += " (an image you bring needs console=ttyS0 on its kernel command line)"
            elif not any("systemd" in line or "cloud-init" in line for line in tail):
                stage = "the image's init did not start"
            elif any("Used fallback datasource" in line for line in self.console.tail(200)):
                stage = (
                    "cloud-init did not find vmlab's NoCloud seed (an ISO 9660 disk "
                    "labelled cidata: does the kernel have iso9660?)"
                )
            else:
                stage = f"cloud-init did not print its ready line ({ready_text!r})"
            raise BootError(
                f"{self.spec.name}: {stage} within {timeout:.0f} s", details="\n".join(tail)
            ) from None

    async def _connect(self, timeout: float) -> None:
        """Stage 3: SSH answers with the lab key (retried until `timeout`)."""
        assert self.key_path is not None and self.ssh_port is not None
        deadline = time.monotonic() + timeout
        last: InfraError | None = None
        while time.monotonic() < deadline:
            try:
                self.channel = await self._guard(
                    SshChannel.connect(
                        "127.0.0.1",
                        self.ssh_port,
                        user=self.ssh_user,
                        key=self.key_path,
                        timeout=min(15.0, max(deadline - time.monotonic(), 1.0)),
                    ),
                    timeout=None,
                )
                return
            except InfraError as exc:
                if self._death is not None and self._death.done():
                    raise
                last = exc
                await asyncio.sleep(0.5)
        raise BootError(
            f"{self.spec.name}: SSH on 127.0.0.1:{self.ssh_port} did not answer within "
            f"{timeout:.0f} s after cloud-init was done" + (f" ({last.message})" if last else ""),
            details="\n".join(self.console.tail(15) if self.console else ()),
        )

    # -- snapshots -----------------------------------------------------------

    async def save_snapshot(self, tag: str = SNAPSHOT) -> None:
        """Save the running VM (memory and disk) in its overlay."""
        if self.state is not MachineState.RUNNING or self._runtime is None:
            raise InfraError(f"machine {self.spec.name} is not running ({self.state.value})")
        out = await human(self._runtime / "qmp.sock", f"savevm {tag}")
        if out.strip():
            raise InfraError(f"{self.spec.name}: savevm failed: {out.strip()}")
        self.snapshot = tag

    async def restore_snapshot(self) -> None:
        """Back to the saved snapshot: loadvm in the running QEMU, or a new QEMU
        on the same overlay with -loadvm when the old one is gone (a crash)."""
        if self.snapshot is None or self._runtime is None:
            raise InfraError(f"machine {self.spec.name} has no snapshot to restore")
        if isinstance(self.channel, SshChannel):
            self.channel.abort()
        self.channel = None
        alive = self._proc is not None and self._proc.returncode is None
        if alive and self.state is not MachineState.DEAD:
            out = await human(self._runtime / "qmp.sock", f"loadvm {self.snapshot}")
            if out.strip():
                raise InfraError(f"{self.spec.name}: loadvm failed: {out.strip()}")
        else:
            await self._respawn_from_snapshot()
        if self.console is not None:
            self.console.hung.clear()
        await self._connect(RESTORE_TIMEOUT)
        self.state = MachineState.RUNNING

    async def _respawn_from_snapshot(self) -> None:
        """A new QEMU on the kept overlay, resuming the snapshot (-loadvm)."""
        assert self._runtime is not None and self.snapshot is not None
        if self._proc is not None and self._proc.returncode is None:
            self._proc.kill()
            await self._proc.wait()
        await self._cancel_tasks()
        self._death = asyncio.get_running_loop().create_future()
        log = self.console.log_path if self.console is not None else self._runtime / "console.log"
        offset = log.stat().st_size if log.exists() else 0
        if "-loadvm" not in self.argv:
            self.argv += ["-loadvm", self.snapshot]
        if not (self._runtime / "disk.qcow2").is_file():
            raise InfraError(
                f"{self.spec.name}: the overlay with the snapshot is gone ({self._runtime})"
                + (f" (vmlab down {self.spec.name}, then vmlab up)" if self.keep_running else "")
            )
        await self._spawn(self._qemu, detach=self.background)
        self._spawned()
        self._follow_log(log, offset)

    def describe(self) -> str:
        return f"{self.ssh_user}@127.0.0.1:{self.ssh_port}"

    # -- leaving it running (`vmlab up`) and using it again (`vmlab test`) -----

    def _spawned(self) -> None:
        """After QEMU started: a background QEMU owns its runtime directory and
        is recorded at once (so that `vmlab down` finds it even if this vmlab
        is killed before the boot ends)."""
        self.started = datetime.now(UTC)
        if not self.background:
            return
        assert self._runtime is not None and self._proc is not None
        (self._runtime / OWNER_FILE).write_text(f"{self._proc.pid}\n")
        write_record(self.record())

    def record(self) -> MachineRecord:
        """What `vmlab status`, `ssh`, `console`, `down` and `test` need to find
        this running machine again (`.vmlab/machines/NAME.json`)."""
        disk, proc, runtime = self.spec.disk, self._proc, self._runtime
        assert disk is not None and proc is not None and runtime is not None
        assert self.ssh_port is not None and self.key_path is not None
        return MachineRecord(
            name=self.spec.name,
            lab_dir=disk.lab_dir,
            pid=proc.pid,
            argv=tuple(self.argv),
            started=self.started or datetime.now(UTC),
            runtime_dir=runtime,
            qmp_socket=runtime / "qmp.sock",
            console_socket=runtime / "console.sock",
            console_log=self.console_log_path or runtime / "console.log",
            ssh_port=self.ssh_port,
            ssh_user=self.ssh_user,
            key_path=self.key_path,
            memory_mib=self.spec.memory_mib,
            cpus=self.spec.cpus,
            snapshot=self.snapshot,
            networks=tuple(nic.network for nic in self.spec.nics),
        )

    async def detach(self) -> MachineRecord | None:
        """Close vmlab's side (SSH, the console follower) and leave QEMU running
        (its runtime directory too). Writes the machine's record and returns it;
        None when QEMU is gone already (then nothing is written: the old record
        says dead, and `vmlab down` cleans up)."""
        proc = self._proc
        alive = proc is not None and proc.returncode is None and self._runtime is not None
        record = self.record() if alive else None
        try:
            if record is not None:
                await asyncio.to_thread(write_record, record)
            if isinstance(self.channel, SshChannel):
                await self.channel.close()
            if self.console is not None:
                self.console.close()
            await self._cancel_tasks()
        finally:
            if isinstance(proc, AdoptedProcess):
                proc.close()
            if self._in_use is not None:
                self._in_use.release()
            self._tasks.clear()
            self._proc = None
            self._runtime = None
            self.channel = None
            self.state = MachineState.STOPPED
        return record

    async def stop(self) -> None:
        """Stop QEMU and remove its files, or only detach from a machine that is
        up (`keep_running`: it is the user's). A machine that is up and crashed
        or hung is first restored to its snapshot, so that it stays up."""
        if not self.keep_running:
            await super().stop()
            return
        try:
            gone = self._proc is None or self._proc.returncode is not None
            if self.snapshot is not None and (gone or self.state is MachineState.DEAD):
                with contextlib.suppress(VmlabError):
                    await self.restore_snapshot()
        finally:
            await self.detach()

    @classmethod
    async def attach(cls, spec: MachineSpec) -> ImageMachine:
        """Use the machine `vmlab up` left running for `spec` (its record in the
        lab's `.vmlab/machines/`): a new SSH connection on its port, the console
        followed from the current end of its log, QMP at its socket. One user at
        a time (this waits while another `vmlab test` has it). `stop()` only
        detaches; after a crash the record's snapshot is restored by a new QEMU
        that outlives vmlab too (else the machine stays dead, for `vmlab down`).
        """
        disk = spec.disk
        assert disk is not None
        name = spec.name
        again = f"vmlab down {name}, then vmlab up {name}"
        in_use = MachineInUse(disk.lab_dir, name)
        await in_use.acquire()
        try:
            try:
                record = await asyncio.to_thread(read_record, disk.lab_dir, name)
            except ValueError as exc:
                raise InfraError(f"machine {name}: {exc} ({again})") from None
            if record is None:
                raise InfraError(f"machine {name} is not up anymore (vmlab up {name})")
            proc = AdoptedProcess.adopt(record.pid, record.argv)
            if proc is None:
                raise InfraError(
                    f"machine {name} was started by `vmlab up`, but its QEMU "
                    f"(pid {record.pid}) is gone ({again})"
                )
            vm = cls(spec, console_log=record.console_log, background=True)
            vm.keep_running = True
            vm._in_use = in_use
            vm._proc, vm._runtime, vm.argv = proc, record.runtime_dir, list(record.argv)
            vm._qemu = record.argv[0]
            vm.ssh_port, vm.key_path = record.ssh_port, record.key_path
            vm.snapshot, vm.started = record.snapshot, record.started
            vm.state = MachineState.BOOTING
            vm._death = asyncio.get_running_loop().create_future()
            vm._tasks.append(asyncio.create_task(vm._watch_process(), name="vmlab-qemu"))
            log = record.console_log
            vm._follow_log(log, log.stat().st_size if log.exists() else 0)
        except BaseException:
            in_use.release()
            raise
        try:
            await vm._connect(SSH_TIMEOUT)
        except BaseException:
            await vm.detach()
            raise
        vm.state = MachineState.RUNNING
        return vm

    async def _death_error(self) -> InfraError | GuestCrashed:
        error = await super()._death_error()
        if isinstance(self._proc, AdoptedProcess) and type(error) is InfraError:
            # vmlab is not its parent: its exit status is unknown
            stderr = self._qemu_stderr()
            return InfraError(
                f"{self.spec.name}: QEMU (pid {self._proc.pid}, started by `vmlab up`) exited"
                + (f": {stderr.splitlines()[-1]}" if stderr else "")
                + f" (vmlab down {self.spec.name}, then vmlab up {self.spec.name})",
                details=error.details,
            )
        return error


async def _run_tool(*argv: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise InfraError(f"{shlex.join(argv)} failed: {err.decode(errors='replace').strip()}")


_NOT_COPIED = frozenset({".vmlab", ".git", ".venv", "__pycache__", ".mypy_cache", ".pytest_cache"})


def lab_tarball(lab: Path) -> bytes:
    """The lab directory as an uncompressed tar (vmlab's own state and VCS
    directories left out), for copying into a disk-image machine."""
    import io  # noqa: PLC0415
    import tarfile  # noqa: PLC0415

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        return None if Path(info.name).name in _NOT_COPIED else info

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for child in sorted(lab.iterdir()):
            tar.add(child, arcname=child.name, filter=keep)
    return buffer.getvalue()
