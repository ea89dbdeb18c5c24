"""QEMU's command line, the kernel command line, the boot script and share checks
(pure functions: no QEMU is started here; the VM tests boot the real thing)."""

from __future__ import annotations

import itertools
import shutil
import subprocess
from pathlib import Path

import pytest

from vmlab.errors import UsageError
from vmlab.machine.kernel import BootableKernel, Kernel, KernelFormat
from vmlab.machine.qemu import (
    BootImage,
    boot_script,
    build_argv,
    check_shares,
    kernel_cmdline,
    prepare_boot,
)
from vmlab.machine.spec import Accel, MachineSpec, Share

RUNTIME = Path("/run/user/0/vmlab-abc123")
PORTS = ("in", "ctl", "sys", "out", "err")


def image(accel: Accel) -> BootImage:
    kernel = Kernel(Path("/boot/vmlinuz-6.1.0-9-amd64"), KernelFormat.BZIMAGE, "6.1.0-9-amd64", "0")
    return BootImage(
        kernel=BootableKernel(kernel, Path("/cache/vmlinux"), pvh=True),
        modules_root=Path("/lib/modules/6.1.0-9-amd64"),
        initrd=Path("/cache/initramfs.cpio"),
        accel=accel,
        accel_notice=None,
    )


def options(argv: list[str], flag: str) -> list[str]:
    """Every value given to `flag`, in order."""
    return [value for key, value in itertools.pairwise(argv) if key == flag]


def props(value: str) -> tuple[str, dict[str, str]]:
    """`kind,a=1,b=2` -> ("kind", {"a": "1", "b": "2"}), the way QEMU reads its
    options: a single comma separates, a doubled comma is a literal one."""
    items, current, i = [], "", 0
    while i < len(value):
        if value[i] == ",":
            if value[i + 1 : i + 2] == ",":
                current += ","
                i += 2
                continue
            items.append(current)
            current = ""
        else:
            current += value[i]
        i += 1
    items.append(current)
    kind, *rest = items
    pairs = [item.split("=", 1) for item in rest]
    assert all(len(pair) == 2 for pair in pairs), f"QEMU would reject {value!r}"
    return kind, {key: val for key, val in pairs}


def option(argv: list[str], flag: str) -> str:
    values = options(argv, flag)
    assert len(values) == 1, f"{flag} given {len(values)} times"
    return values[0]


def test_tcg_argv() -> None:
    spec = MachineSpec(accel=Accel.TCG, memory_mib=768, cpus=2, name="db")
    argv = build_argv("/usr/bin/qemu-system-x86_64", image(Accel.TCG), spec, RUNTIME)
    assert argv[0] == "/usr/bin/qemu-system-x86_64"
    assert option(argv, "-accel") == "tcg"
    assert option(argv, "-cpu") == "max"
    assert "kvm" not in " ".join(argv)
    assert option(argv, "-name") == "vmlab-db"
    assert option(argv, "-m") == "768M"
    assert option(argv, "-smp") == "2"
    assert option(argv, "-kernel") == "/cache/vmlinux"  # the PVH vmlinux, not the bzImage
    assert option(argv, "-initrd") == "/cache/initramfs.cpio"
    assert option(argv, "-append") == kernel_cmdline(spec)
    for flag in ("-nodefaults", "-no-user-config", "-no-reboot"):
        assert flag in argv
    assert option(argv, "-display") == "none"


def test_kvm_argv() -> None:
    argv = build_argv("qemu", image(Accel.KVM), MachineSpec(accel=Accel.KVM), RUNTIME)
    assert option(argv, "-accel") == "kvm"
    assert option(argv, "-cpu") == "host"
    assert "tcg" not in argv


def test_every_channel_is_a_unix_socket_in_the_runtime_dir() -> None:
    argv = build_argv("qemu", image(Accel.TCG), MachineSpec(), RUNTIME)
    chardevs = {}
    for value in options(argv, "-chardev"):
        kind, p = props(value)
        assert kind == "socket"
        assert Path(p["path"]).parent == RUNTIME
        assert "host" not in p and "port" not in p  # never TCP
        chardevs[p["id"]] = p
    ports = {}
    for value in options(argv, "-device"):
        kind, p = props(value)
        if kind == "virtserialport":
            ports[p["name"]] = p["chardev"]
    assert ports == {f"vmlab.{name}": name for name in PORTS}
    for name in PORTS:
        assert chardevs[name]["path"] == str(RUNTIME / f"{name}.sock")
    # vmlab listens on every socket except stdin's, which QEMU serves.
    assert chardevs["in"].get("server") == "on"
    for name in ("ctl", "sys", "out", "err", "con"):
        assert "server" not in chardevs[name]
    assert option(argv, "-serial") == "chardev:con"
    assert option(argv, "-qmp").startswith(f"unix:{RUNTIME}/")
    joined = " ".join(argv)
    for fixed in ("guest-cid", "hostfwd", "tcp:", "vnc", "telnet"):
        assert fixed not in joined  # nothing two VMs could collide on


def test_shares_become_9p_devices_read_only_unless_writable() -> None:
    spec = MachineSpec(
        shares=(
            Share(Path("/srv/data"), Path("/mnt/data")),
            Share(Path("/home/me/src"), Path("/home/me/src"), writable=True),
        )
    )
    argv = build_argv("qemu", image(Accel.TCG), spec, RUNTIME)
    fsdevs = {}
    for value in options(argv, "-fsdev"):
        kind, p = props(value)
        assert kind == "local"
        fsdevs[p["id"]] = p
    tags = {}
    for value in options(argv, "-device"):
        kind, p = props(value)
        if kind == "virtio-9p-pci":
            tags[p["mount_tag"]] = fsdevs[p["fsdev"]]
    assert set(tags) == {"hostroot", "vmlab1", "vmlab2"}
    assert tags["hostroot"]["path"] == "/"
    assert tags["hostroot"]["readonly"] == "on"  # the host root, always read-only
    assert tags["vmlab1"]["path"] == "/srv/data"
    assert tags["vmlab1"]["readonly"] == "on"
    assert tags["vmlab2"]["path"] == "/home/me/src"
    assert "readonly" not in tags["vmlab2"]


def test_paths_with_commas_reach_qemu_intact() -> None:
    # QEMU splits option values on commas; a literal comma must be doubled.
    # A share, or the cwd (shared by `vmlab run`), or $XDG_RUNTIME_DIR may
    # contain one: `~/src/proj,v2`.
    runtime = Path("/tmp/ci,job/vmlab-abc")
    spec = MachineSpec(shares=(Share(Path("/home/me/proj,v2"), Path("/home/me/proj,v2")),))
    argv = build_argv("qemu", image(Accel.TCG), spec, runtime)
    paths = {props(v)[1]["path"] for v in options(argv, "-fsdev")}
    assert paths == {"/", "/home/me/proj,v2"}
    for value in options(argv, "-chardev"):
        assert Path(props(value)[1]["path"]).parent == runtime


def test_kernel_cmdline_appends_user_arguments_last() -> None:
    line = kernel_cmdline(MachineSpec(append=("loglevel=3", "foo=bar baz")))
    words = line.split(" ")
    assert "console=ttyS0" in words
    assert "panic=-1" in words  # with -no-reboot, a panic ends QEMU at once
    assert line.endswith(" loglevel=3 foo=bar baz")
    assert kernel_cmdline(MachineSpec()) + " loglevel=3 foo=bar baz" == line


def test_boot_script_mounts_shares_and_quotes_their_paths(tmp_path: Path) -> None:
    # Run the generated script with busybox sh and a recording `$BB`: mounting
    # 9p needs a guest, but the quoting is the shell's business.
    odd = Path("/mnt/it's a $dir `x`")
    spec = MachineSpec(
        name="web-1",
        shares=(Share(Path("/srv/ro"), odd), Share(Path("/srv/rw"), Path("/data"), writable=True)),
    )
    busybox = shutil.which("busybox")
    assert busybox, "busybox-static is needed (apt-get install busybox-static)"
    record = tmp_path / "record.sh"
    record.write_text(
        '#!/bin/sh\nfor a in "$@"; do printf "%s|" "$a"; done >>"$LOG"; echo >>"$LOG"\n'
    )
    record.chmod(0o755)
    log = tmp_path / "log"
    script = 'fail() { echo "FAIL $*" >>"$LOG"; }\n' + boot_script(spec)
    subprocess.run(
        [busybox, "sh", "-c", script],
        env={"BB": str(record), "LOG": str(log), "PATH": "/usr/bin:/bin"},
        check=True,
    )
    calls = [line.rstrip("|").split("|") for line in log.read_text().splitlines()]
    assert calls == [
        ["mkdir", "-p", f"/newroot{odd}"],
        ["mount", "-t", "9p", "-o", "trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000",
         "vmlab1", f"/newroot{odd}"],
        ["mkdir", "-p", "/newroot/data"],
        ["mount", "-t", "9p", "-o", "trans=virtio,version=9p2000.L,rw,cache=mmap,msize=512000",
         "vmlab2", "/newroot/data"],
        ["hostname", "web-1"],
    ]  # fmt: skip


def test_check_shares(tmp_path: Path) -> None:
    check_shares([Share(tmp_path, Path("/mnt"))])
    with pytest.raises(UsageError, match="does not exist"):
        check_shares([Share(tmp_path / "nope", Path("/mnt"))])
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match="is not a directory"):
        check_shares([Share(tmp_path / "file", Path("/mnt"))])
    with pytest.raises(UsageError, match="must be absolute"):
        check_shares([Share(tmp_path, Path("relative"))])


async def test_prepare_boot_checks_shares_before_anything_else(tmp_path: Path) -> None:
    spec = MachineSpec(
        kernel=tmp_path / "no-kernel-either", shares=(Share(tmp_path / "gone", Path("/mnt")),)
    )
    with pytest.raises(UsageError, match="gone"):
        await prepare_boot(spec)
