"""Disk images for disk-image machines, built with mmdebstrap (`vmlab image build`).

The recipe, for an `ImageSpec` (`[image.NAME]` in a lab file):

1. mmdebstrap (root mode, `--variant=minbase`, in a private mount namespace so
   that nothing it mounts can outlive it) installs `BASE_PACKAGES` plus the
   spec's packages into a directory under the cache. Hooks keep the kernel's
   postinst from building an initrd (vmlab boots the kernel with its own tiny
   initramfs), write /etc/fstab (`/dev/vda` as `/`), /etc/hostname and
   /etc/hosts, copy the spec's files in and run its script in the chroot.
2. The image's kernel is copied out as `vmlinuz`, with a subset of its modules
   (`IMAGE_BOOT_MODULES` and what they need, plus the `modules.*` indexes) in
   `modules/RELEASE/`, for the tiny initramfs that mounts the root disk.
3. `mkfs.ext4 -d` turns the directory into an ext4 filesystem (label
   `vmlab-root`, no partition table) on a raw file, and `qemu-img convert`
   makes `base.qcow2` of it; `image.json` is written last.

Cache layout (`~/.cache/vmlab/images/`)::

    KEY/                      sha256 of the spec's canonical JSON (image_key)
        base.qcow2            the root filesystem (ext4 on the whole disk)
        vmlinuz               the image's kernel (/boot/vmlinuz-RELEASE)
        modules/RELEASE/      modules.* and the .ko files the initramfs needs
        image.json            what was built: name, release, sizes, timings
        names/NAME            empty: each name the image was built or used under
    .build-KEY16-PID-RAND/    a build in progress (removed on any failure)
    .KEY.lock                 held while KEY is being built

An entry appears under its final name only when complete (the build directory
is renamed into place), so a reader sees a whole image or none. Any failure,
Ctrl-C or cancellation removes the build directory; one left by a killed
vmlab is swept by the next build.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import datetime
import fcntl
import hashlib
import json
import math
import os
import re
import secrets
import shlex
import shutil
import signal
import stat
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vmlab.cache import cache_dir, cache_root, state_dir, write_atomic
from vmlab.errors import HostError, InfraError, UsageError, VmlabError
from vmlab.machine.initramfs import ModuleIndex
from vmlab.machine.kernel import find_default_kernel
from vmlab.machine.spec import IMAGE_DISTROS, ImageSpec
from vmlab.machine.subprocess_util import kill_on_parent_death, pid_exists
from vmlab.units import format_mib

# Bump when the recipe changes in a way that makes old images wrong: every
# cached image is rebuilt on next use.
FORMAT = 1

# Always installed (the spec's packages come on top). mmdebstrap's minbase
# variant (Priority: required, plus apt) is the floor; recommends are not
# installed.
BASE_PACKAGES: tuple[str, ...] = (
    "systemd-sysv",  # systemd as /sbin/init
    "udev",  # device nodes and module autoloading; systemd does not pull it in
    "openssh-server",  # how vmlab reaches an image machine (SSH)
    "cloud-init",  # provisioning from vmlab's NoCloud seed: user, keys, network
    "sudo",  # cloud-init gives the machine's user passwordless sudo (docs/lab-file.md)
    "linux-image-amd64",  # the image's own kernel, copied out and booted directly
    "iproute2",  # `ip`: ifupdown and cloud-init configure interfaces with it
    # cloud-init 22.4 (bookworm) renders a NoCloud network-config v2 with the first
    # available renderer of eni, sysconfig, netplan, ...: "eni" needs ifup, ifdown
    # and ifquery and /etc/network/interfaces, i.e. ifupdown, whose networking.service
    # brings the interfaces up at boot.
    "ifupdown",
    "isc-dhcp-client",  # ifupdown's `inet dhcp` runs dhclient
    "python3",  # cloud-init's and tests' interpreter (cloud-init depends on it anyway)
    "kmod",  # modprobe, for udev and for tests that load modules
    "procps",  # ps, pkill, sysctl
)

# What a tiny initramfs needs to mount the image's root disk and reach the
# network; their dependencies from modules.dep come along. ext4 needs a crc32c
# implementation that modules.dep does not list (a soft dependency). Names that
# are built into the image's kernel are left out.
IMAGE_BOOT_MODULES: tuple[str, ...] = (
    "virtio_pci",
    "virtio_blk",
    "virtio_console",
    "virtio_net",
    "crc32c_generic",
    "ext4",
    "failover",
    "net_failover",
)

ROOT_LABEL = "vmlab-root"
ROOT_DEVICE = "/dev/vda"
HOSTNAME = "vmlab"

# dpkg leaves these out of the image (and out of what the guest installs later):
# documentation, manual pages and translations are dead weight in a test VM.
_DPKG_OPTIONS = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
)

# Debian policy's package names; versions and releases (`pkg=1.2`) are not taken.
PACKAGE_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+")

Progress = Callable[[str], None]

_IMAGES = "images"
KEEP_BUILD_LOGS = 50
_INFO = "image.json"
_LOG_TAIL = 60  # lines of mmdebstrap's output kept as an error's evidence
_SCRIPT_FAILED = "E: vmlab: the image script failed with exit status "


# ------------------------------------------------------------------ the key


def _tree_digest(path: Path) -> str:
    """A digest of a host file or directory: layout, modes, contents, symlinks."""
    digest = hashlib.sha256()

    def add(item: Path, rel: str) -> None:
        st = item.lstat()
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISLNK(st.st_mode):
            digest.update(f"L {rel} {os.readlink(item)}\0".encode())
        elif stat.S_ISDIR(st.st_mode):
            digest.update(f"D {rel} {mode:o}\0".encode())
            for child in sorted(item.iterdir()):
                add(child, f"{rel}/{child.name}")
        elif stat.S_ISREG(st.st_mode):
            content = hashlib.sha256()
            with item.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    content.update(block)
            digest.update(f"F {rel} {mode:o} {content.hexdigest()}\0".encode())
        else:
            raise UsageError(f"{item}: not a file, directory or symlink (cannot copy it in)")

    add(path.resolve(), ".")
    return digest.hexdigest()


def image_manifest(spec: ImageSpec) -> dict[str, Any]:
    """Everything the built image depends on, as JSON: the cache key's input.

    The name and description are not in it: two names for the same recipe
    share one image. Files count by content, not by path or mtime.
    """
    files = []
    for guest, host in sorted(spec.files):
        if not host.exists():
            raise UsageError(f"{_at(spec, 'files')}: {host} does not exist (it was copied in)")
        files.append([guest, _tree_digest(host)])
    return {
        "format": FORMAT,
        "distro": spec.distro,
        "base": list(BASE_PACKAGES),
        "packages": sorted(set(spec.packages)),
        "size_mib": spec.size_mib,
        "files": files,
        "script": spec.script,
        "mirror": spec.mirror.rstrip("/"),
    }


def image_key(spec: ImageSpec) -> str:
    """sha256 of the canonical JSON of `image_manifest(spec)`."""
    text = json.dumps(image_manifest(spec), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


# ------------------------------------------------------------ built images


@dataclass(frozen=True)
class BuiltImage:
    """An image in the cache. Boot `base` (through an overlay: never write it)
    with `vmlinuz`; `modules` is the root of the boot modules' subset."""

    key: str
    directory: Path
    name: str  # the name it was built under
    names: tuple[str, ...]  # every name it was built or found under
    distro: str
    packages: tuple[str, ...]  # the spec's, on top of BASE_PACKAGES
    release: str  # `uname -r` of the image's kernel
    boot_modules: tuple[str, ...]  # load order of IMAGE_BOOT_MODULES' closure
    size_mib: int  # the disk's virtual size
    rootfs_bytes: int  # what the files take
    disk_bytes: int  # base.qcow2 on the host
    built_at: datetime.datetime  # UTC
    build_seconds: float

    @property
    def base(self) -> Path:
        return self.directory / "base.qcow2"

    @property
    def vmlinuz(self) -> Path:
        return self.directory / "vmlinuz"

    @property
    def modules(self) -> Path:
        return self.directory / "modules" / self.release


def images_dir() -> Path:
    return cache_dir(_IMAGES)


def _load(directory: Path) -> BuiltImage | None:
    """The image in a cache entry, or None when it is not a complete one."""
    try:
        info = json.loads((directory / _INFO).read_text())
        names_dir = directory / "names"
        names = {info["name"]}
        if names_dir.is_dir():
            names |= {p.name for p in names_dir.iterdir()}
        return BuiltImage(
            key=directory.name,
            directory=directory,
            name=str(info["name"]),
            names=tuple(sorted(names)),
            distro=str(info["distro"]),
            packages=tuple(info["packages"]),
            release=str(info["release"]),
            boot_modules=tuple(info["boot_modules"]),
            size_mib=int(info["size_mib"]),
            rootfs_bytes=int(info["rootfs_bytes"]),
            disk_bytes=int(info["disk_bytes"]),
            built_at=datetime.datetime.fromisoformat(info["built_at"]),
            build_seconds=float(info["build_seconds"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def find_image(spec: ImageSpec) -> BuiltImage | None:
    """The cached image of `spec`, or None when it has not been built."""
    return _load(images_dir() / image_key(spec))


def list_images() -> list[BuiltImage]:
    """Every complete image in the cache, oldest first."""
    found = []
    for entry in images_dir().iterdir():
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        image = _load(entry)
        if image is not None:
            found.append(image)
    return sorted(found, key=lambda image: image.built_at)


def remove_image(key_or_name: str) -> list[BuiltImage]:
    """Remove the images built under a name (all of them), or the one whose key
    starts with `key_or_name` (at least 4 hex digits). Returns what was removed."""
    images = list_images()
    targets = [image for image in images if key_or_name in image.names]
    if not targets and re.fullmatch(r"[0-9a-f]{4,64}", key_or_name):
        targets = [image for image in images if image.key.startswith(key_or_name)]
        if len(targets) > 1:
            keys = ", ".join(sorted(image.key[:12] for image in targets))
            raise UsageError(f"{key_or_name!r} starts several image keys ({keys}): give more of it")
    if not targets:
        raise UsageError(f"no image named or keyed {key_or_name!r} (vmlab image list shows them)")
    for image in targets:
        trash = image.directory.with_name(f".rm-{image.key[:16]}-{os.getpid()}-{_token()}")
        try:
            image.directory.rename(trash)
        except FileNotFoundError:
            continue  # removed meanwhile
        _remove_tree(trash)
    return targets


def _remember_name(image: BuiltImage, name: str) -> BuiltImage:
    if name in image.names:
        return image
    with contextlib.suppress(OSError):  # a cache we may read but not write
        (image.directory / "names").mkdir(exist_ok=True)
        (image.directory / "names" / name).touch()
    return _load(image.directory) or image


# ------------------------------------------------------------------ build


async def build_image(spec: ImageSpec, *, progress: Progress | None = None) -> BuiltImage:
    """Build `spec` into the cache, or return the cached image at once.

    `progress` gets one short line per stage (mmdebstrap's `I:` lines among
    them); a cached image gives one line that says `cached`. Errors are one
    line: UsageError for the spec (a package that does not exist, a size too
    small), HostError for the host (no mmdebstrap, not root, mirror
    unreachable, disk full), InfraError for anything else, with the end of the
    build log as details.
    """
    say = progress or _quiet
    check_spec(spec)
    key = image_key(spec)
    found = _load(images_dir() / key)
    if found is not None:
        say(f"cached: {key[:12]} (built {_ago(found.built_at)})")
        return _remember_name(found, spec.name)
    tools = _host_tools(spec)
    async with _build_lock(key, say):
        found = _load(images_dir() / key)  # another vmlab may have built it meanwhile
        if found is not None:
            say(f"cached: {key[:12]} (built by another vmlab just now)")
            return _remember_name(found, spec.name)
        _sweep_stale_builds()
        work = images_dir() / f".build-{key[:16]}-{os.getpid()}-{_token()}"
        work.mkdir()
        try:
            return await _build(spec, key, work, tools, say)
        finally:
            # Synchronous on purpose: a second Ctrl-C cannot skip it.
            _remove_tree(work)


def check_spec(spec: ImageSpec) -> None:
    """What the config loader checks, for specs made in code."""
    if spec.distro not in IMAGE_DISTROS:
        raise UsageError(
            f"{_at(spec, 'distro')}: {spec.distro!r} is not supported "
            f"(supported: {', '.join(IMAGE_DISTROS)})"
        )
    if not spec.name or "/" in spec.name or spec.name.startswith("."):
        raise UsageError(f"{spec.name!r} is not a valid image name")
    for package in spec.packages:
        if not PACKAGE_NAME.fullmatch(package):
            raise UsageError(f"{_at(spec, 'packages')}: {package!r} is not a package name")


@dataclass(frozen=True)
class _Tools:
    mmdebstrap: str
    unshare: str
    mkfs: str
    qemu_img: str


def _which(program: str) -> str | None:
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    return shutil.which(program, path=path)


def _host_tools(spec: ImageSpec) -> _Tools:
    found: dict[str, str] = {}
    for program, package in (
        ("mmdebstrap", "mmdebstrap"),
        ("unshare", "util-linux"),
        ("mkfs.ext4", "e2fsprogs"),
        ("qemu-img", "qemu-utils"),
    ):
        path = _which(program)
        if path is None:
            raise HostError(
                f"{program} is not installed; building images needs it "
                f"(apt-get install {package}, or make setup)"
            )
        found[program] = path
    if os.geteuid() != 0:
        raise HostError(
            f"building image {spec.name} needs root: mmdebstrap runs in root mode "
            "(run `sudo vmlab image build`; sudo -E keeps your cache directory)"
        )
    return _Tools(found["mmdebstrap"], found["unshare"], found["mkfs.ext4"], found["qemu-img"])


async def _build(spec: ImageSpec, key: str, work: Path, tools: _Tools, say: Progress) -> BuiltImage:
    started = time.monotonic()
    rootfs = work / "rootfs"
    log = _build_log(spec, key)
    argv = _mmdebstrap_argv(spec, work, rootfs, tools)
    say("mmdebstrap: starting")
    code, tail = await _run_logged(argv, log, say)
    if code != 0:
        raise mmdebstrap_error(spec, code, tail, log)

    say("copying out the kernel and its boot modules")
    release, boot_modules = await asyncio.to_thread(_copy_kernel, spec, rootfs, work)
    rootfs_bytes = await asyncio.to_thread(tree_usage, rootfs)

    raw = work / "disk.raw"
    say(f"making the ext4 filesystem ({format_mib(spec.size_mib)})")
    await make_filesystem(spec, tools.mkfs, rootfs, raw, rootfs_bytes)
    await asyncio.to_thread(_remove_tree, rootfs)

    say("converting to qcow2")
    base = work / "base.qcow2"
    code, output = await _run_quiet([tools.qemu_img, "convert", "-O", "qcow2", str(raw), str(base)])
    if code != 0:
        raise InfraError(
            f"image {spec.name}: qemu-img convert failed (exit {code})", details=output
        )
    raw.unlink()

    info = {
        "format": FORMAT,
        "key": key,
        "name": spec.name,
        "distro": spec.distro,
        "packages": sorted(set(spec.packages)),
        "base_packages": list(BASE_PACKAGES),
        "mirror": spec.mirror,
        "release": release,
        "boot_modules": list(boot_modules),
        "size_mib": spec.size_mib,
        "rootfs_bytes": rootfs_bytes,
        "disk_bytes": base.stat().st_size,
        "built_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "build_seconds": round(time.monotonic() - started, 1),
        "manifest": image_manifest(spec),
    }
    shutil.rmtree(work / "hooks")
    (work / "names").mkdir()
    (work / "names" / spec.name).touch()
    write_atomic(work / _INFO, (json.dumps(info, indent=2) + "\n").encode())
    final = images_dir() / key
    try:
        os.rename(work, final)
    except OSError:
        if _load(final) is None:  # not a finished image: make way (we hold the lock)
            _remove_tree(final)
            os.rename(work, final)
    image = _load(final)
    if image is None:
        raise InfraError(f"image {spec.name}: {final} is not readable after the build")
    say(f"built {key[:12]} in {image.build_seconds:.0f}s")
    return _remember_name(image, spec.name)


async def make_filesystem(
    spec: ImageSpec, mkfs: str, rootfs: Path, raw: Path, rootfs_bytes: int
) -> None:
    """`raw` becomes an ext4 filesystem of `spec.size_mib` holding `rootfs`, or a
    UsageError says how big it must be."""
    with raw.open("wb") as f:
        f.truncate(spec.size_mib << 20)
    argv = [mkfs, "-q", "-F", "-L", ROOT_LABEL, "-d", str(rootfs), "-E", "root_owner=0:0"]
    code, output = await _run_quiet([*argv, str(raw), f"{spec.size_mib}M"])
    if code == 0:
        return
    if "Could not allocate" in output:  # a block or an inode: the image is full
        raise UsageError(_size_message(spec, rootfs_bytes), details=output)
    if "No space left on device" in output:
        raise HostError(
            f"image {spec.name}: no space left on the device of {raw.parent} "
            "(free some, or set VMLAB_CACHE_DIR to a larger filesystem)",
            details=output,
        )
    raise InfraError(f"image {spec.name}: mkfs.ext4 failed (exit {code})", details=output)


def _build_log(spec: ImageSpec, key: str) -> Path:
    """~/.local/state/vmlab/image-builds/NAME-KEY12.log; the newest ones are kept."""
    directory = state_dir("image-builds")
    logs = sorted(directory.glob("*.log"), key=_mtime)
    for old in logs[: max(0, len(logs) - KEEP_BUILD_LOGS + 1)]:
        old.unlink(missing_ok=True)
    return directory / f"{spec.name}-{key[:12]}.log"


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _mmdebstrap_argv(spec: ImageSpec, work: Path, rootfs: Path, tools: _Tools) -> list[str]:
    hooks = work / "hooks"
    hooks.mkdir()
    packages = list(dict.fromkeys((*BASE_PACKAGES, *spec.packages)))
    argv = [
        tools.unshare, "--mount", "--propagation", "private", "--",
        tools.mmdebstrap, "--mode=root", "--variant=minbase", "--format=directory",
        f"--include={','.join(packages)}",
        *(f"--dpkgopt={option}" for option in _DPKG_OPTIONS),
    ]  # fmt: skip
    for stage, name, text in _hook_scripts(spec, hooks):
        path = hooks / name
        path.write_text(text)
        argv.append(f'--{stage}-hook=/bin/sh {shlex.quote(str(path))} "$1"')
    argv += [IMAGE_DISTROS[spec.distro], str(rootfs), spec.mirror]
    return argv


def _hook_scripts(spec: ImageSpec, hooks: Path) -> list[tuple[str, str, str]]:
    """(stage, file name, shell text) of each hook, in order; each gets the root as $1."""
    q = shlex.quote
    scripts = [
        (
            "essential",
            "no-initrd.sh",
            # The kernel's postinst would build an initrd with initramfs-tools: ~30 s
            # and ~30 MB that vmlab never boots. Divert update-initramfs until the end.
            'set -e\nroot="$1"\n'
            'chroot "$root" dpkg-divert --quiet --local --rename '
            "--divert /usr/sbin/update-initramfs.vmlab --add /usr/sbin/update-initramfs\n"
            'ln -s /bin/true "$root/usr/sbin/update-initramfs"\n',
        ),
        (
            "customize",
            "configure.sh",
            'set -e\nroot="$1"\necho "I: vmlab: writing fstab, hostname, hosts"\n'
            f"printf '%s\\n' {q(f'{ROOT_DEVICE} / ext4 rw,relatime,errors=remount-ro 0 1')}"
            ' > "$root/etc/fstab"\n'
            f'echo {HOSTNAME} > "$root/etc/hostname"\n'
            "printf '127.0.0.1\\tlocalhost\\n::1\\tlocalhost ip6-localhost ip6-loopback\\n'"
            ' > "$root/etc/hosts"\n',
        ),
    ]
    if spec.files:
        lines = ['set -e\nroot="$1"', f'echo "I: vmlab: copying {len(spec.files)} file(s) in"']
        for guest, host in spec.files:
            parent = guest.rsplit("/", 1)[0] or "/"
            lines.append(f'mkdir -p "$root"{q(parent)}')
            lines.append(
                f'cp -R -T -p --no-preserve=ownership -- {q(str(host.resolve()))} "$root"{q(guest)}'
            )
        scripts.append(("customize", "files.sh", "\n".join(lines) + "\n"))
    if spec.script:
        user_script = hooks / "script"
        user_script.write_text(spec.script if spec.script.endswith("\n") else spec.script + "\n")
        scripts.append(
            (
                "customize",
                "script.sh",
                'root="$1"\necho "I: vmlab: running the image script"\n'
                f'cp {q(str(user_script))} "$root/root/.vmlab-script" || exit 1\n'
                'chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root '
                "DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 TERM=dumb "
                "/bin/sh -e /root/.vmlab-script </dev/null\n"
                'status=$?\nrm -f "$root/root/.vmlab-script"\n'
                f'[ $status = 0 ] || {{ echo "{_SCRIPT_FAILED}$status" >&2; exit $status; }}\n',
            )
        )
    scripts.append(
        (
            "customize",
            "finish.sh",
            'set -e\nroot="$1"\n'
            'rm -f "$root/usr/sbin/update-initramfs"\n'
            'chroot "$root" dpkg-divert --quiet --local --rename '
            "--remove /usr/sbin/update-initramfs\n"
            # The build host's resolver means nothing in a guest; DHCP or cloud-init fill it.
            'rm -f "$root/etc/resolv.conf"\n: > "$root/etc/resolv.conf"\n',
        )
    )
    return scripts


def _copy_kernel(spec: ImageSpec, rootfs: Path, work: Path) -> tuple[str, tuple[str, ...]]:
    """Copy /boot/vmlinuz-RELEASE and the boot modules' subset out of the rootfs."""
    modules_root = rootfs / "usr" / "lib" / "modules"
    if not modules_root.is_dir():
        modules_root = rootfs / "lib" / "modules"
    try:
        kernel = find_default_kernel(rootfs / "boot", modules_root)
    except HostError:
        raise InfraError(
            f"image {spec.name}: no kernel with modules in the image's /boot "
            "(linux-image-amd64 is always installed: did the script remove it?)"
        ) from None
    release = kernel.name.removeprefix("vmlinuz-")
    shutil.copyfile(kernel, work / "vmlinuz")
    os.chmod(work / "vmlinuz", 0o644)
    order = copy_boot_modules(modules_root / release, work / "modules" / release)
    return release, tuple(order)


def copy_boot_modules(source: Path, target: Path) -> list[str]:
    """Copy the `modules.*` indexes of a kernel's modules directory and the
    modules of IMAGE_BOOT_MODULES' dependency closure (built-in ones and names the
    kernel lacks are left out). Returns the load order."""
    index = ModuleIndex.load(source)
    order = index.load_order(name for name in IMAGE_BOOT_MODULES if name in index.paths)
    target.mkdir(parents=True)
    for item in source.glob("modules.*"):
        if item.is_file():
            shutil.copy2(item, target / item.name)
    for name in order:
        relative = index.paths[name]
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / relative, target / relative)
    return order


def tree_usage(root: Path) -> int:
    """Bytes the files under `root` take on disk (hard links counted once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for directory, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            st = os.lstat(os.path.join(directory, name))
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total


def size_needed_mib(rootfs_bytes: int) -> int:
    """A disk size that holds `rootfs_bytes` of files with ext4's overhead
    (inode tables, journal, block groups), rounded up to 64M."""
    mib = rootfs_bytes * 1.1 / (1 << 20) + 64
    return math.ceil(mib / 64) * 64


def _size_message(spec: ImageSpec, rootfs_bytes: int) -> str:
    needed = max(size_needed_mib(rootfs_bytes), spec.size_mib + 64)
    suggestion = format_mib(math.ceil(needed / 256) * 256)
    return (
        f"{_at(spec, 'size')}: the root filesystem ({format_mib(rootfs_bytes >> 20)} of files) "
        f"does not fit in {format_mib(spec.size_mib)}: it needs about {format_mib(needed)} "
        f'(set size = "{suggestion}")'
    )


# -------------------------------------------------------- mmdebstrap's output

_MISSING_PACKAGE = re.compile(r"^E: Unable to locate package (\S+)")
_NO_CANDIDATE = re.compile(r"^E: Package '([^']+)' has no installation candidate")
_FETCH_FAILED = re.compile(r"^E: Failed to fetch (\S+)\s+(.*)$")
_IP_NOTE = re.compile(r"\s*\[IP: [^]]*\]\s*$")


def mmdebstrap_error(spec: ImageSpec, code: int, lines: Iterable[str], log: Path) -> VmlabError:
    """The one-line error for a failed mmdebstrap, from its output."""
    lines = list(lines)
    details = "\n".join(lines)
    missing: list[str] = []
    for line in lines:
        if line.startswith(_SCRIPT_FAILED):
            status = line.removeprefix(_SCRIPT_FAILED).strip()
            return UsageError(
                f"{_at(spec, 'script')}: failed with exit status {status} "
                f"(its output is in {log}; -v shows the end)",
                details=details,
            )
        match = _MISSING_PACKAGE.match(line) or _NO_CANDIDATE.match(line)
        if match and match.group(1) not in missing:
            missing.append(match.group(1))
    if missing:
        names = ", ".join(repr(name) for name in missing)
        what = "no package" if len(missing) == 1 else "no packages"
        return UsageError(
            f"{_at(spec, 'packages')}: {what} {names} in {spec.distro} at {spec.mirror} "
            f"(check the spelling: https://packages.debian.org/{IMAGE_DISTROS[spec.distro]}/)",
            details=details,
        )
    for line in lines:
        match = _FETCH_FAILED.match(line)
        if match:
            reason = " ".join(_IP_NOTE.sub("", match.group(2)).split())
            return HostError(
                f"{_at(spec, 'mirror')}: cannot fetch from {spec.mirror}: {reason} "
                "(check the mirror's URL and this host's network)",
                details=details,
            )
    if any("No space left on device" in line for line in lines):
        return HostError(
            f"image {spec.name}: no space left on the device of {cache_root()} "
            "(free some, or set VMLAB_CACHE_DIR to a larger filesystem)",
            details=details,
        )
    errors = [line for line in lines if line.startswith("E: ") and "mmdebstrap failed" not in line]
    last = errors[0].removeprefix("E: ") if errors else "no error message"
    return InfraError(
        f"image {spec.name}: mmdebstrap failed (exit {code}): {last[:200]} (log: {log})",
        details=details,
    )


# ------------------------------------------------------------- processes


async def _run_logged(argv: list[str], log: Path, say: Progress) -> tuple[int, list[str]]:
    """Run mmdebstrap: its output to `log`, its `I:` stages to `say`. Returns the
    exit status and the last lines of output."""
    tail: deque[str] = deque(maxlen=_LOG_TAIL)
    with log.open("w") as out:
        out.write(f"# {shlex.join(argv)}\n")
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=kill_on_parent_death,
            limit=1 << 20,
            env={**os.environ, "LC_ALL": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"},
        )
        try:
            assert proc.stdout is not None
            while raw := await proc.stdout.readline():
                line = raw.decode("utf-8", "replace").rstrip()
                out.write(line + "\n")
                out.flush()
                tail.append(line)
                stage = _stage(line)
                if stage:
                    say(stage)
            return await proc.wait(), list(tail)
        finally:
            _kill_group(proc)


def _stage(line: str) -> str | None:
    """mmdebstrap's `I: running apt-get update...` -> `running apt-get update`."""
    if not line.startswith("I: ") or " --" in line or "received signal" in line:
        return None  # not "running --customize-hook in shell: ..." nor the dying words
    return line.removeprefix("I: ").removeprefix("vmlab: ").rstrip(".").strip() or None


async def _run_quiet(argv: list[str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=kill_on_parent_death,
    )
    try:
        output, _ = await proc.communicate()
        return proc.returncode or 0, output.decode("utf-8", "replace")
    finally:
        _kill_group(proc)


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL a child's process group (it leads one) and wait, without awaiting,
    until none of it is left: a build directory is removed only after that.
    mmdebstrap's mounts live in its private mount namespace and go with it."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)  # the leader is a zombie until asyncio's child watcher reaps it


# ----------------------------------------------------- locks and clean-up


@contextlib.asynccontextmanager
async def _build_lock(key: str, say: Progress) -> AsyncIterator[None]:
    """One build of a key at a time (across processes); others wait, then find it.

    The holder removes the lock file when done, so that failed and cancelled
    builds leave none behind; a waiter that then gets the lock on the removed
    file sees that the path is gone or is another file, and locks again."""
    path = images_dir() / f".{key[:32]}.lock"
    told = False
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not told:
                        say("waiting for another vmlab that builds this image")
                        told = True
                    await asyncio.sleep(0.5)
            try:
                current = os.stat(path).st_ino
            except FileNotFoundError:
                current = -1
        except BaseException:
            os.close(fd)
            raise
        if current == os.fstat(fd).st_ino:
            break
        os.close(fd)  # locked a file its holder had removed: lock the new one
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)


def _sweep_stale_builds() -> None:
    """Remove build and removal directories whose vmlab is gone (SIGKILL)."""
    for entry in images_dir().iterdir():
        match = re.fullmatch(r"\.(?:build|rm)-[0-9a-f]+-(\d+)-[0-9a-f]+", entry.name)
        if match and not pid_exists(int(match.group(1))):
            _remove_tree(entry)


_OCTAL = re.compile(r"\\([0-7]{3})")  # mountinfo writes a space as \040


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    mounts = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), line.split()[4])
            if point.startswith(prefix) or point == prefix[:-1]:
                mounts.append(point)
    return mounts


def _remove_tree(path: Path) -> None:
    """Remove a build directory, never through a mount point into the host's
    /sys or /dev (mmdebstrap's mounts are private to it, but a mount left by
    something else must not turn this into a host-wide rm -rf)."""
    if not path.exists():
        return
    mounts = _mounts_under(path)
    if mounts:
        libc = ctypes.CDLL(None, use_errno=True)
        for point in sorted(mounts, key=len, reverse=True):
            libc.umount2(point.encode(), 2)  # MNT_DETACH
        if _mounts_under(path):
            raise InfraError(
                f"{path} still has mounts under it; not removing it "
                f"(umount them, then rm -rf {path})"
            )
    shutil.rmtree(path, ignore_errors=True)


# ------------------------------------------------------------------ helpers


def _at(spec: ImageSpec, key: str) -> str:
    """`vmlab.toml:5: image.base.size` (just `image.base.size` for specs made in code)."""
    what = f"image.{spec.name}.{key}"
    return f"{spec.where}: {what}" if spec.where else what


def _ago(when: datetime.datetime) -> str:
    seconds = (datetime.datetime.now(datetime.UTC) - when).total_seconds()
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    if seconds < 172800:
        return f"{seconds / 3600:.0f}h ago"
    return f"{seconds / 86400:.0f}d ago"


def _token() -> str:
    return secrets.token_hex(4)


def _quiet(_message: str) -> None:
    pass
