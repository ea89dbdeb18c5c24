"""vmlab.guest.rpc without a VM: framing, validation, error mapping, hang-ups.

The server here is the real one on a real unix socket; its `get_vm` is never
reached (every request below fails validation first) except where a test
makes it wait forever, to stand for a machine that is still booting. The
same code against a real guest is in tests/vm/test_pytest_plugin.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from vmlab.errors import (
    BootError,
    CommandNotFound,
    CommandTimeout,
    ConfigError,
    GuestCrashed,
    GuestError,
    HostError,
    InfraError,
    UsageError,
    VmlabError,
)
from vmlab.guest import rpc
from vmlab.guest.rpc import VmClient, VmRpcServer, encode_message, error_from_reply, error_reply
from vmlab.machine.qemu import QemuMachine

pytestmark = pytest.mark.timeout(30)


async def no_vm() -> QemuMachine:
    raise AssertionError("this request must not reach the machine")


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    # short: a unix socket path holds at most 107 bytes, tmp_path can be longer
    path = Path(tempfile.mkdtemp(prefix="vmlab-rpc-t-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def server(sock_dir: Path) -> AsyncIterator[VmRpcServer]:
    async with VmRpcServer(sock_dir / "vm.sock", no_vm, no_vm) as served:
        yield served


async def raw_exchange(path: Path, *lines: bytes) -> list[bytes]:
    """Send raw request lines; the raw reply lines (until the server hangs up or
    as many as were sent)."""
    reader, writer = await asyncio.open_unix_connection(str(path))
    try:
        replies = []
        for line in lines:
            writer.write(line)
            await writer.drain()
            replies.append(await reader.readline())
        return replies
    finally:
        writer.close()


# -- errors across the wire ----------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        VmlabError("root"),
        UsageError("usage"),
        ConfigError("lab.toml:3: x: bad"),
        HostError("no qemu"),
        InfraError("qemu died", details="argv: qemu"),
        BootError("no agent"),
        GuestError("no such cwd"),
        CommandNotFound("command 'x' not found"),
        CommandTimeout("command timed out after 1 s: sleep 9"),
    ],
)
def test_errors_round_trip_as_their_own_class(error: VmlabError) -> None:
    reply = json.loads(encode_message(error_reply(error)))
    back = error_from_reply(reply)
    assert type(back) is type(error)
    assert (back.message, back.details) == (error.message, error.details)


def test_a_guest_crash_keeps_its_title() -> None:
    crash = GuestCrashed("the guest kernel crashed: BUG: x", title="BUG: x", details="trace")
    back = error_from_reply(json.loads(encode_message(error_reply(crash))))
    assert isinstance(back, GuestCrashed)
    assert (back.message, back.title, back.details) == (crash.message, "BUG: x", "trace")


def test_an_unknown_subclass_travels_as_its_nearest_known_base() -> None:
    class SetupBroke(InfraError):
        pass

    reply = error_reply(SetupBroke("setup of box: `false` exited 1"))
    assert reply["error"] == "InfraError"
    back = error_from_reply(reply)
    assert type(back) is InfraError
    assert back.message == "setup of box: `false` exited 1"


def test_an_unknown_kind_is_a_vmlab_error() -> None:
    back = error_from_reply({"error": "NoSuchError", "message": "odd"})
    assert type(back) is VmlabError
    assert back.message == "odd"


def test_a_message_is_one_line_whatever_it_holds() -> None:
    line = encode_message({"stdout": "a\nb\r\n\u00e9\x00", "n": 1})
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert json.loads(line) == {"stdout": "a\nb\r\n\u00e9\x00", "n": 1}


# -- the server's side of the protocol -------------------------------------------


async def test_socket_is_private_and_removed(sock_dir: Path) -> None:
    path = sock_dir / "vm.sock"
    async with VmRpcServer(path, no_vm, no_vm):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not path.exists()


async def test_hello_and_bad_requests(server: VmRpcServer) -> None:
    replies = await raw_exchange(
        server.path,
        b'{"op": "hello"}\n',
        b"not json\n",
        b"[1, 2]\n",
        b'{"op": "explode"}\n',
        b'{"op": "run", "argv": ["true"], "shell": "true"}\n',
        b'{"op": "run"}\n',
        b'{"op": "run", "argv": []}\n',
        b'{"op": "run", "shell": "true", "timeout": -1}\n',
        b'{"op": "run", "shell": "true", "env": {"A": 1}}\n',
        b'{"op": "run", "shell": "true", "stdin": "***"}\n',
        b'{"op": "console", "lines": -1}\n',
        b'{"op": "copy_to", "src": "relative/path", "dst": "/tmp/x"}\n',
        b'{"op": "copy_from", "src": "", "dst": "/tmp/x"}\n',
        b'{"op": "hello"}\n',
    )
    decoded = [json.loads(reply) for reply in replies]
    assert decoded[0] == {"result": {"protocol": rpc.PROTOCOL}}
    assert decoded[-1] == decoded[0]  # the bad ones did not break the connection
    errors = decoded[1:-1]
    assert all(reply["error"] == "UsageError" for reply in errors), errors
    assert all("\n" not in reply["message"] for reply in errors)
    messages = [reply["message"] for reply in errors]
    assert "not JSON" in messages[0]
    assert "unknown request 'explode'" in messages[2]
    assert "exactly one of argv and shell" in messages[3]
    assert "timeout must be a number" in messages[6]
    assert "not valid base64" in messages[8]


async def test_copy_to_of_a_missing_host_file_is_a_usage_error(
    server: VmRpcServer, tmp_path: Path
) -> None:
    client = await asyncio.to_thread(VmClient, server.path)
    try:
        with pytest.raises(UsageError, match=r"copy_to: cannot read .*missing.bin"):
            await asyncio.to_thread(client.copy_to, tmp_path / "missing.bin", "/tmp/x")
        os.mkfifo(tmp_path / "fifo")  # (a directory is copied whole: vmlab.guest.copying)
        with pytest.raises(UsageError, match=r"copy_to: cannot read .*fifo: not a regular file"):
            await asyncio.to_thread(client.copy_to, tmp_path / "fifo", "/tmp/x")
        with pytest.raises(UsageError, match="unknown request 'bogus'"):
            await asyncio.to_thread(client._call, "bogus")
    finally:
        client.close()


async def test_an_overlong_request_hangs_up(
    server: VmRpcServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rpc, "MAX_REQUEST", 1000)
    reader, writer = await asyncio.open_unix_connection(str(server.path))
    try:
        writer.write(b"x" * 70_000)  # more than the limit, and no newline
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # hung up, no reply
    finally:
        writer.close()


async def test_a_request_line_may_come_in_pieces(server: VmRpcServer) -> None:
    reader, writer = await asyncio.open_unix_connection(str(server.path))
    try:
        for piece in (b'{"op":', b' "hel', b'lo"}\n{"op": "hello"}\n'):
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.01)
        first = await reader.readline()
        second = await reader.readline()
        assert json.loads(first) == json.loads(second) == {"result": {"protocol": 1}}
    finally:
        writer.close()


async def test_hanging_up_cancels_a_waiting_request(sock_dir: Path) -> None:
    waiting = asyncio.Event()
    cancelled = asyncio.Event()

    async def booting_forever() -> QemuMachine:
        waiting.set()
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()
        raise AssertionError("unreachable")

    async with VmRpcServer(sock_dir / "vm.sock", booting_forever, no_vm) as server:
        _, writer = await asyncio.open_unix_connection(str(server.path))
        writer.write(encode_message({"op": "run", "shell": "true"}))
        await writer.drain()
        await asyncio.wait_for(waiting.wait(), 5)
        writer.close()
        await asyncio.wait_for(cancelled.wait(), 5)
        # and the server still answers others
        assert (await raw_exchange(server.path, b'{"op": "hello"}\n'))[0].startswith(b'{"result"')


async def test_closing_the_server_drops_a_waiting_client(sock_dir: Path) -> None:
    started = asyncio.Event()

    async def booting_forever() -> QemuMachine:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    server = VmRpcServer(sock_dir / "vm.sock", booting_forever, no_vm)
    await server.start()
    try:
        client = await asyncio.to_thread(VmClient, server.path)
        call = asyncio.ensure_future(asyncio.to_thread(client.run, "true"))
        await asyncio.wait_for(started.wait(), 5)
    finally:
        await server.close()
    with pytest.raises(InfraError, match="hung up"):
        await asyncio.wait_for(call, 5)
    with pytest.raises(InfraError, match="cannot reach the vmlab VM server"):
        await asyncio.to_thread(client.run, "true")  # reconnects: nobody is there
    client.close()


# -- the client ---------------------------------------------------------------------


def test_a_client_without_a_server_fails_in_one_line(sock_dir: Path) -> None:
    with pytest.raises(InfraError) as error:
        VmClient(sock_dir / "nobody.sock")
    assert "cannot reach the vmlab VM server" in error.value.message
    assert "\n" not in error.value.message


async def test_a_long_socket_path_is_refused_in_one_line(tmp_path: Path) -> None:
    server = VmRpcServer(tmp_path / ("d" * 120) / "vm.sock", no_vm, no_vm)
    with pytest.raises(UsageError, match="socket path too long"):
        await server.start()


# -- console tails -------------------------------------------------------------------


@pytest.mark.parametrize("count", [0, 1, 5, 999, 5000, 20000])
def test_tail_file(tmp_path: Path, count: int) -> None:
    path = tmp_path / "console.log"
    lines = [f"[{i:8d}] line {i} " + "x" * (i % 97) for i in range(10_000)]
    path.write_bytes(("\r\n".join(lines) + "\r\npartial").encode())
    expected = [*lines, "partial"][-count:] if count else []
    assert rpc._tail_file(path, count) == expected


def test_tail_of_a_missing_file_is_empty(tmp_path: Path) -> None:
    assert rpc._tail_file(tmp_path / "none.log", 10) == []
