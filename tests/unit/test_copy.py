"""File copies without a VM: both transports against real counterparts on this host.

- sftp: `SshChannel.copy_to/copy_from` over a real SSH connection to an
  in-process asyncssh SFTP server that serves this host's filesystem;
- tar: `vmlab.guest.tar_copy` with the guest scripts run by this host's
  /bin/sh, tar and mv (what a host-root guest runs: it sees the host's root).

The "guest" side is one temporary directory, the host side another. The same
copies against real guests: tests/vm/test_copy.py (host-root, tar through the
virtio-serial channel) and tests/image/test_copy.py (a disk image, OpenSSH's
sftp-server).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import pytest

from copy_trees import OLD, make_tree, snapshot, staging_leftovers, without_specials
from vmlab.errors import GuestPathError, UsageError
from vmlab.guest import tar_copy
from vmlab.guest.channel import Command, CommandResult, OutputSink, Stdin
from vmlab.guest.copying import Copied, guest_absolute, host_absolute
from vmlab.guest.ssh import SshChannel

pytestmark = pytest.mark.timeout(60)


async def run_here(
    command: Command,
    *,
    stdin: Stdin = None,
    on_stdout: OutputSink | None = None,
    on_stderr: OutputSink | None = None,
    capture: bool = True,
    timeout: float | None = None,
) -> CommandResult:
    """A `QemuMachine.run` for this host: the command runs here, as it is."""
    assert isinstance(stdin, bytes | None)
    proc = await asyncio.create_subprocess_exec(
        *command.argv,
        env=dict(command.env),
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    if on_stdout is not None:
        on_stdout(out)
    if on_stderr is not None:
        on_stderr(err)
    assert proc.returncode is not None
    return CommandResult(proc.returncode, out if capture else b"", err if capture else b"", 0.0)


@dataclass
class Transport:
    name: str
    copy_to: Callable[[Path, str], Awaitable[Copied]]
    copy_from: Callable[[str, str], Awaitable[Copied]]


class _NoAuth(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return False  # no authentication needed


@pytest.fixture(params=["sftp", "tar"])
async def transport(request: pytest.FixtureRequest) -> AsyncIterator[Transport]:
    if request.param == "tar":
        yield Transport(
            "tar",
            lambda src, dst: tar_copy.copy_to(run_here, src, dst),
            lambda src, dst: tar_copy.copy_from(run_here, src, dst),
        )
        return
    server = await asyncssh.listen(
        "127.0.0.1",
        0,
        server_host_keys=[asyncssh.generate_private_key("ssh-ed25519")],
        server_factory=_NoAuth,
        sftp_factory=True,
    )
    port = server.sockets[0].getsockname()[1]
    conn = await asyncssh.connect(
        "127.0.0.1", port, username="root", known_hosts=None, client_keys=None, config=None
    )
    channel = SshChannel(conn, sudo=False)
    try:
        yield Transport("sftp", channel.copy_to, channel.copy_from)
    finally:
        await channel.close()
        server.close()
        await server.wait_closed()


@pytest.fixture
def sides(tmp_path: Path) -> tuple[Path, Path]:
    host, guest = tmp_path / "host", tmp_path / "guest"
    host.mkdir()
    guest.mkdir()
    return host, guest


async def test_a_tree_goes_both_ways_whole(transport: Transport, sides: tuple[Path, Path]) -> None:
    host, guest = sides
    tree = make_tree(host)
    expected = without_specials(snapshot(tree))
    assert "pipe" not in expected and len(expected) > 10

    copied = await transport.copy_to(tree, f"{guest}/")  # into the directory
    assert copied == Copied(str(guest / "tree"), 8, sum(_sizes(tree)))
    assert snapshot(guest / "tree") == expected

    back = await transport.copy_from(str(guest / "tree"), str(host / "again"))  # a new name
    assert back == Copied(str(host / "again"), 8, copied.bytes)
    assert snapshot(host / "again") == expected
    assert staging_leftovers(host, guest) == []


async def test_a_file_keeps_its_bytes_mode_and_time(
    transport: Transport, sides: tuple[Path, Path]
) -> None:
    host, guest = sides
    data = os.urandom(1 << 20) + b"\x00\n"
    src = host / "blob"
    src.write_bytes(data)
    src.chmod(0o751)
    os.utime(src, (OLD, OLD))

    assert (await transport.copy_to(src, str(guest / "b"))).path == str(guest / "b")
    assert (guest / "b").read_bytes() == data
    assert (guest / "b").stat().st_mode & 0o7777 == 0o751
    assert int((guest / "b").stat().st_mtime) == OLD
    (guest / "dir").mkdir()
    assert (await transport.copy_to(src, str(guest / "dir"))).path == str(guest / "dir" / "blob")

    (guest / "b").write_bytes(b"changed")  # an existing file is replaced
    (guest / "b").chmod(0o600)
    back = await transport.copy_from(str(guest / "b"), str(host / "blob"))
    assert back == Copied(str(host / "blob"), 1, 7)
    assert src.read_bytes() == b"changed" and src.stat().st_mode & 0o777 == 0o600


async def test_a_symlink_given_as_the_source_is_followed(
    transport: Transport, sides: tuple[Path, Path]
) -> None:
    host, guest = sides
    tree = make_tree(host)
    (host / "to-tree").symlink_to(tree)
    copied = await transport.copy_to(host / "to-tree", f"{guest}/")
    assert copied.path == str(guest / "to-tree")  # the name given, the content linked to
    assert snapshot(guest / "to-tree") == without_specials(snapshot(tree))
    (guest / "to-file").symlink_to(guest / "to-tree" / "run.sh")
    back = await transport.copy_from(str(guest / "to-file"), f"{host}/")
    assert _regular_bytes(back.path) == (tree / "run.sh").read_bytes()


async def test_a_directory_onto_a_directory_is_merged(
    transport: Transport, sides: tuple[Path, Path]
) -> None:
    host, guest = sides
    tree = make_tree(host)
    target = guest / "tree"
    (target / "sub").mkdir(parents=True)
    (target / "sub" / "mine").write_text("kept\n")
    (target / "run.sh").write_text("old\n")
    await transport.copy_to(tree, str(guest))
    assert (target / "sub" / "mine").read_text() == "kept\n"
    assert (target / "run.sh").read_bytes() == (tree / "run.sh").read_bytes()
    assert (target / "sub" / "deep" / "f.txt").read_text() == "deep\n"
    merged = snapshot(target, times=False)
    assert {k: v for k, v in merged.items() if k != "sub/mine"} == without_specials(
        snapshot(tree, times=False)
    ) | {".": merged["."], "sub": merged["sub"]}  # existing directories keep their modes
    # and back onto the host's own tree
    await transport.copy_from(str(target), str(host))
    assert (tree / "sub" / "mine").read_text() == "kept\n"
    assert staging_leftovers(host, guest) == []


async def test_bad_sources_and_destinations_are_one_line_errors(
    transport: Transport, sides: tuple[Path, Path]
) -> None:
    host, guest = sides
    tree = make_tree(host)
    (guest / "file").write_text("x")
    (guest / "tree" / "run.sh").mkdir(parents=True)

    cases: list[tuple[Callable[[], Awaitable[Copied]], type[Exception], str]] = [
        (
            lambda: transport.copy_to(host / "nope", str(guest)),
            UsageError,
            "cannot read .*/nope: No such",
        ),
        (
            lambda: transport.copy_to(tree / "pipe", str(guest)),
            UsageError,
            "not a regular file or dir",
        ),
        (
            lambda: transport.copy_to(tree, f"{guest}/none/"),
            GuestPathError,
            "cannot write .*/none/ in the guest: no such directory",
        ),
        (
            lambda: transport.copy_to(tree, f"{guest}/none/x"),
            GuestPathError,
            f"cannot write {guest}/none/x in the guest: no such directory {guest}/none",
        ),
        (
            lambda: transport.copy_to(tree, str(guest / "file")),
            GuestPathError,
            "file in the guest: it exists and is not a directory, and the source is one",
        ),
        (
            lambda: transport.copy_to(tree / "run.sh", str(guest / "tree")),
            GuestPathError,
            "tree/run.sh in the guest: it is a directory, and the source is not",
        ),
        (
            lambda: transport.copy_from(str(guest / "nope"), str(host)),
            GuestPathError,
            f"cannot read {guest}/nope in the guest: No such file or directory",
        ),
        (
            lambda: transport.copy_from(str(guest / "file"), str(host / "no" / "dir" / "x")),
            UsageError,
            f"cannot write {host}/no/dir/x: no such directory {host}/no/dir",
        ),
    ]
    for work, kind, message in cases:
        with pytest.raises(kind, match=message) as raised:
            await work()
        assert "\n" not in str(raised.value)
    assert (guest / "file").read_text() == "x"
    assert staging_leftovers(host, guest) == []


def test_paths_are_made_absolute_keeping_a_trailing_slash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert host_absolute("out/") == f"{tmp_path}/out/"
    assert host_absolute("out") == f"{tmp_path}/out"
    assert host_absolute("/") == "/"
    assert guest_absolute("tmp/") == "/tmp/"
    assert guest_absolute("x", "/root") == "/root/x"
    with pytest.raises(UsageError, match="empty guest path"):
        guest_absolute("")


def _regular_bytes(path: str) -> bytes:
    """The content of `path`, which must be a regular file (not a symlink)."""
    assert not os.path.islink(path)
    with open(path, "rb") as file:
        return file.read()


def _sizes(root: Path) -> list[int]:
    return [p.lstat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink()]


@pytest.mark.parametrize("transport", ["sftp"], indirect=True)
async def test_a_cancelled_copy_leaves_nothing_behind(
    transport: Transport, sides: tuple[Path, Path]
) -> None:
    """Ctrl-C in `vmlab cp` cancels the copy: its staging directory goes, no
    target appears (the tar transport's guest script cleans up after itself)."""
    host, guest = sides
    (host / "big").write_bytes(os.urandom(64 << 20))
    copies: list[tuple[Callable[[], Awaitable[Copied]], Path]] = [
        (lambda: transport.copy_to(host / "big", str(guest)), guest),
        (lambda: transport.copy_from(str(guest / "big2"), str(host / "back")), host),
    ]
    for work, staging in copies:
        if staging is host:
            os.link(host / "big", guest / "big2")
        task = asyncio.ensure_future(work())
        for _ in range(10_000):  # until the copy is under way (bounded)
            if staging_leftovers(staging) or task.done():
                break
            await asyncio.sleep(0.001)
        assert not task.done(), "the copy ended before it could be cancelled"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert staging_leftovers(host, guest) == []
    assert sorted(p.name for p in guest.iterdir()) == ["big2"]
    assert sorted(p.name for p in host.iterdir()) == ["big"]
