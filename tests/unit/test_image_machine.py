"""Disk-image machines without booting: QEMU's argv, image checks, the lab copy,
and the script the SSH channel runs."""

from __future__ import annotations

import asyncio
import io
import re
import socket
import subprocess
import tarfile
from pathlib import Path

import pytest

import vmlab.guest
from vmlab.errors import BootError, UsageError
from vmlab.guest.channel import Command, User
from vmlab.guest.ssh import ssh_script
from vmlab.machine.image_machine import (
    USER_MAC,
    DiskBoot,
    ImageMachine,
    build_image_argv,
    check_port,
    free_port,
    image_cmdline,
    image_format,
    lab_tarball,
)
from vmlab.machine.kernel import BootableKernel, Kernel, KernelFormat
from vmlab.machine.lab_keys import LabKey, lab_key
from vmlab.machine.spec import Accel, DiskSpec, MachineSpec
from vmlab.watch.console import Console


def _spec(tmp_path: Path, **disk: object) -> MachineSpec:
    return MachineSpec(
        name="db",
        memory_mib=1024,
        disk=DiskSpec(image=tmp_path / "base.qcow2", lab_dir=tmp_path, **disk),  # type: ignore[arg-type]
    )


def _boot(tmp_path: Path, *, kernel: bool = True, modules_disk: Path | None = None) -> DiskBoot:
    key = LabKey(tmp_path / "id", "ssh-ed25519 AAAA test")
    vmlinux = tmp_path / "vmlinux"
    bootable = BootableKernel(
        Kernel(vmlinux, KernelFormat.ELF, "6.1.0-test", "0" * 64), vmlinux, True
    )
    return DiskBoot(
        tmp_path / "base.qcow2",
        "qcow2",
        bootable if kernel else None,
        tmp_path / "initrd" if kernel else None,
        Accel.TCG,
        None,
        key,
        modules_disk,
    )


def _value(argv: list[str], option: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == option]


def test_argv_boots_an_overlay_with_a_readonly_seed_and_a_loopback_ssh_forward(
    tmp_path: Path,
) -> None:
    runtime = tmp_path / "run"
    argv = build_image_argv(
        "qemu", _boot(tmp_path), _spec(tmp_path), runtime, 40022, tmp_path / "con.log"
    )
    drives = _value(argv, "-drive")
    assert drives[0].startswith(f"file={runtime / 'disk.qcow2'},") and "format=qcow2" in drives[0]
    assert str(tmp_path / "base.qcow2") not in " ".join(argv)  # the base is never opened rw
    assert "readonly=on" in drives[1] and "seed.iso" in drives[1]
    (netdev,) = _value(argv, "-netdev")
    assert "hostfwd=tcp:127.0.0.1:40022-:22" in netdev and "restrict=on" in netdev
    assert f"mac={USER_MAC}" in " ".join(_value(argv, "-device"))
    (chardev,) = _value(argv, "-chardev")
    assert "server=on" in chardev and f"logfile={tmp_path / 'con.log'}" in chardev
    assert _value(argv, "-kernel") == [str(tmp_path / "vmlinux")]
    assert _value(argv, "-m") == ["1024M"]
    assert "-no-reboot" in argv


def test_internet_lifts_the_restriction_and_firmware_boot_has_no_kernel(tmp_path: Path) -> None:
    argv = build_image_argv(
        "qemu",
        _boot(tmp_path, kernel=False),
        _spec(tmp_path, internet=True),
        tmp_path,
        40022,
        tmp_path / "con.log",
    )
    assert "restrict=on" not in " ".join(argv)
    assert "-kernel" not in argv and "-append" not in argv


def test_the_host_kernels_modules_come_on_a_readonly_disk_the_initramfs_finds(
    tmp_path: Path,
) -> None:
    disk = tmp_path / "modules.ext4"
    argv = build_image_argv(
        "qemu", _boot(tmp_path, modules_disk=disk), _spec(tmp_path), tmp_path, 1, tmp_path / "l"
    )
    drives = _value(argv, "-drive")
    assert len(drives) == 3
    assert drives[2].startswith(f"file={disk},") and "readonly=on" in drives[2]
    assert "format=raw" in drives[2]  # read-only raw: savevm leaves it out
    assert "virtio-blk-pci,drive=modules,serial=vmlab-modules" in _value(argv, "-device")
    init = (Path(vmlab.guest.__file__).parent / "image_init.sh").read_text()
    assert "= vmlab-modules ]" in init  # the serial image_init.sh looks for
    plain = build_image_argv("qemu", _boot(tmp_path), _spec(tmp_path), tmp_path, 1, tmp_path / "l")
    assert len(_value(plain, "-drive")) == 2


async def test_a_seed_cloud_init_did_not_find_is_named_in_the_boot_error(tmp_path: Path) -> None:
    vm = ImageMachine(_spec(tmp_path))
    vm._death = asyncio.get_running_loop().create_future()
    vm.console = Console(tmp_path / "console.log", record=False)
    for line in (
        "[   20.1] systemd[1]: Starting cloud-init.service",
        "[   34.4] cloud-init[337]: Cloud-init v. 22.4.2 finished. Datasource DataSourceNone.",
        "[   34.5] cloud-init[337]: cc_final_message.py[WARNING]: Used fallback datasource",
        "vmlab login:",
    ):
        vm.console.feed(line.encode() + b"\n")
    ready = re.compile("VMLAB-READY x")
    with pytest.raises(BootError, match="cloud-init did not find vmlab's NoCloud seed"):
        await vm._wait_ready(ready, "VMLAB-READY x", 0.2)


async def test_a_brought_image_silent_on_the_serial_console_is_told_to_add_it(
    tmp_path: Path,
) -> None:
    vm = ImageMachine(_spec(tmp_path), disk_boot=_boot(tmp_path, kernel=False))
    vm._death = asyncio.get_running_loop().create_future()
    vm.console = Console(tmp_path / "console.log", record=False)
    with pytest.raises(BootError, match=r"printed nothing .*needs console=ttyS0"):
        await vm._wait_ready(re.compile("VMLAB-READY x"), "VMLAB-READY x", 0.2)


def test_cmdline_names_the_root_and_keeps_the_crash_options(tmp_path: Path) -> None:
    spec = _spec(tmp_path, root="LABEL=cloudimg-rootfs")
    line = image_cmdline(spec).split()
    assert "vmlab.root=LABEL=cloudimg-rootfs" in line
    for option in ("console=ttyS0", "panic=-1", "oops=panic", "rdinit=/init"):
        assert option in line


def test_image_format_accepts_qcow2_and_refuses_what_is_not_an_image(tmp_path: Path) -> None:
    qcow2 = tmp_path / "a.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(qcow2), "64M"], check=True)
    assert image_format(qcow2) == "qcow2"
    text = tmp_path / "notes.txt"
    text.write_text("not a disk\n" * 100)
    with pytest.raises(UsageError, match="is not a disk image"):
        image_format(text)
    with pytest.raises(UsageError, match="does not exist"):
        image_format(tmp_path / "missing.qcow2")


def test_a_busy_ssh_port_is_a_clear_error() -> None:
    port = free_port()
    check_port(port)  # free: no error
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        with pytest.raises(UsageError, match=f"ssh_port {port} on 127.0.0.1 is in use"):
            check_port(port)


def test_lab_tarball_leaves_out_vmlab_state_and_vcs(tmp_path: Path) -> None:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "t.sh").write_text("#!/bin/sh\n")
    (tmp_path / "tests" / "t.sh").chmod(0o755)
    (tmp_path / ".vmlab" / "ssh").mkdir(parents=True)
    (tmp_path / ".vmlab" / "ssh" / "id_ed25519").write_text("secret")
    (tmp_path / ".git").mkdir()
    (tmp_path / "vmlab.toml").write_text("[lab]\n")
    with tarfile.open(fileobj=io.BytesIO(lab_tarball(tmp_path))) as tar:
        names = sorted(tar.getnames())
        mode = tar.getmember("tests/t.sh").mode
    assert names == ["tests", "tests/t.sh", "vmlab.toml"]
    assert mode & 0o111


def test_ssh_script_runs_in_a_new_group_with_exact_env_cwd_and_user(tmp_path: Path) -> None:
    command = Command(
        argv=("printenv", "X"), env={"X": "a b", "PATH": "/usr/bin:/bin"}, cwd=str(tmp_path)
    )
    script = ssh_script(command, "job1")
    assert "setsid --wait" in script and "job.job1" in script
    out = subprocess.run(
        ["sh", "-c", script.replace("/run/vmlab", str(tmp_path))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (out.returncode, out.stdout) == (0, "a b\n")
    assert not (tmp_path / "job.job1").exists()  # its pid file is gone afterwards


def test_ssh_script_reports_a_missing_command_and_a_missing_cwd(tmp_path: Path) -> None:
    def run(command: Command) -> subprocess.CompletedProcess[str]:
        script = ssh_script(command, "j").replace("/run/vmlab", str(tmp_path))
        return subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=False)

    missing = run(Command(argv=("no-such-command-xyz",)))
    assert missing.returncode == 127 and "vmlab:notfound" in missing.stderr
    # Without PATH in its env, a program is looked up where `env -i` will look
    # when it execs (/usr/bin:/bin), as on host-root machines: modprobe, in
    # /usr/sbin, is not found there; with a PATH that has /usr/sbin it is.
    sbin = run(Command(argv=("modprobe", "--version")))
    assert sbin.returncode == 127 and "vmlab:notfound" in sbin.stderr
    found = run(Command(argv=("modprobe", "--version"), env={"PATH": "/usr/sbin:/usr/bin"}))
    assert found.returncode == 0 and "kmod" in found.stdout
    nocwd = run(Command(shell="true", cwd=str(tmp_path / "nope")))
    assert nocwd.returncode == 126 and "vmlab:nocwd" in nocwd.stderr
    user = ssh_script(Command(shell="id -u", user=User(1000, 1000)), "j")
    assert "setpriv --reuid=1000 --regid=1000 --clear-groups" in user


async def test_ssh_that_never_answers_is_a_boot_error_naming_the_stage(tmp_path: Path) -> None:
    """A port that accepts connections but never speaks SSH (a hung sshd)."""
    held: list[asyncio.StreamWriter] = []

    async def silent(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # keep it open, say nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    try:
        vm = ImageMachine(_spec(tmp_path))
        vm._death = asyncio.get_running_loop().create_future()
        vm.ssh_port = server.sockets[0].getsockname()[1]
        vm.key_path = lab_key(tmp_path).private_path
        with pytest.raises(
            BootError, match=r"db: SSH on 127\.0\.0\.1:\d+ did not answer within 2 s"
        ):
            await vm._connect(2.0)
    finally:
        server.close()
        for writer in held:
            writer.close()
