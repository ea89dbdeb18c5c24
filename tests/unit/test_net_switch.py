"""The network switch, with plain unix datagram sockets standing in for QEMU's
`dgram` netdevs (each binds its port's socket and sends to the switch's, as
QEMU does): learning, flooding, no hairpin, disabled ports, machines that are
not running or restart, a full queue, and the switch as a detached process."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vmlab.net.switch import QUEUE_FRAMES, Switch, SwitchError, SwitchProcess

BROADCAST = b"\xff" * 6


def mac(n: int) -> bytes:
    return bytes([0x02, 0, 0, 0, 0, n])


def frame(dst: bytes, src: bytes, payload: bytes = b"x") -> bytes:
    return dst + src + b"\x08\x00" + payload


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path (unix socket paths are limited to 108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="swt-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class FakeNic:
    """What QEMU's dgram netdev does: bind the port's socket, send to the switch."""

    def __init__(self, path: Path, switch: Path) -> None:
        self.path = path
        self.switch = switch
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        unlink_stale(path)
        self.sock.bind(str(path))

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, str(self.switch))

    def pending(self) -> list[bytes]:
        out = []
        while True:
            try:
                out.append(self.sock.recv(65536))
            except BlockingIOError:
                return out

    def close(self) -> None:
        self.sock.close()


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def exists(path: Path) -> bool:
    return path.exists()


def unlink_stale(path: Path) -> None:
    if path.exists():
        path.unlink()


async def until(what: str, check: Callable[[], object], seconds: float = 5.0) -> None:
    """Poll until true: a bounded wait for an event, not a timing check."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.005)


async def settle(switch: Switch, port: str, rx_frames: int) -> None:
    """Wait until the switch has taken `rx_frames` from `port`: the frames are
    forwarded in the same step, so what they cause has happened."""
    await until(
        f"{rx_frames} frames from {port}", lambda: switch.stats()[port].rx_frames >= rx_frames
    )
    await asyncio.sleep(0)


async def test_learning_flooding_and_no_hairpin(short_dir: Path) -> None:
    async with Switch(["a", "b", "c"], name="lan", directory=short_dir) as sw:
        nics = {p: FakeNic(sw.port_path(p), sw.socket_path) for p in sw.ports}
        a, b, c = nics["a"], nics["b"], nics["c"]

        # a broadcast from a floods to b and c, not back to a
        hello = frame(BROADCAST, mac(1), b"hello")
        a.send(hello)
        await settle(sw, "a", 1)
        assert (a.pending(), b.pending(), c.pending()) == ([], [hello], [hello])
        assert sw.mac_table() == {"02:00:00:00:00:01": "a"}

        # unicast to a learned MAC goes to its port only
        reply = frame(mac(1), mac(2), b"reply")
        b.send(reply)
        await settle(sw, "b", 1)
        assert (a.pending(), b.pending(), c.pending()) == ([reply], [], [])

        # unknown unicast floods to every other port
        lost = frame(mac(9), mac(3), b"who?")
        c.send(lost)
        await settle(sw, "c", 1)
        assert (a.pending(), b.pending(), c.pending()) == ([lost], [lost], [])

        # a frame for a MAC on the port it came from goes nowhere (no hairpin)
        a.send(frame(mac(1), mac(4), b"loop"))
        await settle(sw, "a", 2)
        assert (a.pending(), b.pending(), c.pending()) == ([], [], [])

        # multicast floods too; a multicast source is never learned
        multi = frame(b"\x01\x00\x5e\x00\x00\x01", b"\x03\x00\x00\x00\x00\x07")
        b.send(multi)
        await settle(sw, "b", 2)
        assert (a.pending(), b.pending(), c.pending()) == ([multi], [], [multi])
        assert "03:00:00:00:00:07" not in sw.mac_table()

        # a MAC that moves is learned again
        c.send(frame(BROADCAST, mac(1)))
        await settle(sw, "c", 2)
        assert sw.mac_table()["02:00:00:00:00:01"] == "c"

        stats = sw.stats()
        assert (stats["a"].rx_frames, stats["a"].tx_frames) == (2, 4)
        assert stats["a"].rx_bytes == len(hello) + len(frame(mac(1), mac(4), b"loop"))
        for nic in nics.values():
            nic.close()


async def test_runts_and_strangers_are_dropped(short_dir: Path) -> None:
    async with Switch(["a", "b"], directory=short_dir) as sw:
        a, b = (FakeNic(sw.port_path(p), sw.socket_path) for p in sw.ports)
        a.send(b"short")
        await settle(sw, "a", 1)
        assert sw.stats()["a"].dropped == 1
        stranger = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        stranger.bind(str(short_dir / "x.sock"))
        stranger.sendto(frame(BROADCAST, mac(5)), str(sw.socket_path))
        await until("the stranger's frame", lambda: sw.unknown_senders == 1)
        assert b.pending() == []
        stranger.close()
        a.close()
        b.close()


async def test_a_disabled_port_neither_sends_nor_receives(short_dir: Path) -> None:
    async with Switch(["a", "b"], directory=short_dir) as sw:
        a, b = (FakeNic(sw.port_path(p), sw.socket_path) for p in sw.ports)
        a.send(frame(BROADCAST, mac(1)))
        b.send(frame(BROADCAST, mac(2)))
        await settle(sw, "a", 1)
        await settle(sw, "b", 1)
        assert len(a.pending()) == len(b.pending()) == 1

        sw.set_port("b", False)
        assert not sw.port_enabled("b")
        assert "02:00:00:00:00:02" not in sw.mac_table()  # forgotten with the cable
        a.send(frame(mac(2), mac(1)))
        b.send(frame(mac(1), mac(2)))
        await settle(sw, "a", 2)
        await settle(sw, "b", 2)
        assert (a.pending(), b.pending()) == ([], [])
        assert sw.stats()["b"].dropped == 2  # one in, one out

        sw.set_port("b", True)
        again = frame(mac(2), mac(1), b"again")
        a.send(again)
        await settle(sw, "a", 3)
        assert b.pending() == [again]
        with pytest.raises(KeyError, match="no port 'z'"):
            sw.set_port("z", False)
        a.close()
        b.close()


async def test_machines_that_are_not_running_or_restart(short_dir: Path) -> None:
    async with Switch(["a", "b"], directory=short_dir) as sw:
        a = FakeNic(sw.port_path("a"), sw.socket_path)
        a.send(frame(BROADCAST, mac(1)))  # b is not running: dropped, no error
        await settle(sw, "a", 1)
        assert sw.stats()["b"].dropped == 1

        b = FakeNic(sw.port_path("b"), sw.socket_path)
        first = frame(BROADCAST, mac(1), b"first")
        a.send(first)
        await settle(sw, "a", 2)
        assert b.pending() == [first]

        # b's QEMU exits and a new one binds the same path (a reboot)
        b.close()
        b = FakeNic(sw.port_path("b"), sw.socket_path)
        second = frame(BROADCAST, mac(1), b"second")
        a.send(second)
        await settle(sw, "a", 3)
        assert b.pending() == [second]
        a.close()
        b.close()


async def test_a_full_machine_queue_waits_instead_of_dropping(short_dir: Path) -> None:
    """Unix datagram queues are short (net.unix.max_dgram_qlen): the switch waits
    for room at a slow machine, in order, up to QUEUE_FRAMES frames."""
    count = min(200, QUEUE_FRAMES)
    async with Switch(["a", "b"], directory=short_dir) as sw:
        a, b = (FakeNic(sw.port_path(p), sw.socket_path) for p in sw.ports)
        b.send(frame(BROADCAST, mac(2)))
        await settle(sw, "b", 1)
        sent = [frame(mac(2), mac(1), i.to_bytes(4, "big")) for i in range(count)]
        for i, data in enumerate(sent):
            while True:
                try:
                    a.send(data)
                    break
                except BlockingIOError:  # the switch's own queue is full: let it read
                    await asyncio.sleep(0.001)
            if i % 8 == 0:
                await asyncio.sleep(0)
        await settle(sw, "a", count)
        received: list[bytes] = []
        await until(
            "every frame at b",
            lambda: received.extend(b.pending()) or len(received) >= count,  # type: ignore[func-returns-value]
        )
        assert received == sent
        assert sw.stats()["b"].dropped == 0
        a.close()
        b.close()


async def test_a_switch_makes_and_removes_its_own_directory(
    monkeypatch: pytest.MonkeyPatch, short_dir: Path
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(short_dir))
    sw = Switch(["a"])
    await sw.start()
    directory = sw.directory
    assert directory.parent == short_dir and directory.name.startswith("vmlab-net-")
    assert (directory / "owner.pid").read_text() == f"{os.getpid()}\n"
    assert sw.socket_path.is_socket()
    sw.close()
    sw.close()
    assert not directory.exists()
    assert not sw.running


async def test_a_given_directory_is_only_cleaned(short_dir: Path) -> None:
    (short_dir / "keep").write_text("")
    async with Switch(["a"], directory=short_dir) as sw:
        FakeNic(sw.port_path("a"), sw.socket_path).close()
    assert listing(short_dir) == ["keep"]


# ---------------------------------------------------------------- a process of its own


async def test_a_detached_switch_forwards_is_controlled_and_stops(short_dir: Path) -> None:
    proc = await SwitchProcess.spawn(["a", "b"], name="lan", directory=short_dir)
    try:
        assert proc.alive() and proc.pid != os.getpid()
        # not our child: it runs in a session of its own
        assert os.getsid(proc.pid) == proc.pid
        again = SwitchProcess.attach(short_dir)
        assert (again.pid, again.ports, again.socket_path) == (
            proc.pid,
            ("a", "b"),
            proc.socket_path,
        )

        a = FakeNic(proc.port_path("a"), proc.socket_path)
        b = FakeNic(proc.port_path("b"), proc.socket_path)
        hello = frame(BROADCAST, mac(1), b"hello")
        a.send(hello)
        got: list[bytes] = []
        await until("b hears a", lambda: got.extend(b.pending()) or got)  # type: ignore[func-returns-value]
        assert got == [hello]

        await again.set_port("b", False)
        a.send(frame(BROADCAST, mac(1), b"lost"))
        deadline = time.monotonic() + 5
        while (await proc.stats())["b"].dropped < 1:
            assert time.monotonic() < deadline, "the frame to b was never dropped"
            await asyncio.sleep(0.01)
        assert b.pending() == []
        await again.set_port("b", True)
        back = frame(BROADCAST, mac(1), b"back")
        a.send(back)
        got.clear()
        await until("b hears a again", lambda: got.extend(b.pending()) or got)  # type: ignore[func-returns-value]
        assert got == [back]
        with pytest.raises(SwitchError, match="no port 'z'"):
            await proc.set_port("z", True)
        a.close()
        b.close()
    finally:
        await proc.stop()
    assert not proc.alive()
    assert not exists(short_dir)


async def test_a_detached_switch_stops_with_its_owner(short_dir: Path) -> None:
    owner = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import time; time.sleep(60)"
    )
    try:
        proc = await SwitchProcess.spawn(["a"], directory=short_dir, exit_with=owner.pid)
        assert proc.alive()
    finally:
        owner.kill()
        await owner.wait()
    await until("the switch to follow its owner", lambda: not proc.alive(), seconds=10)
    await until("its directory to go", lambda: not exists(short_dir))


async def test_a_switch_that_cannot_start_says_why(short_dir: Path) -> None:
    with pytest.raises(SwitchError, match="switch lan did not start: no such directory"):
        await SwitchProcess.spawn(["a"], name="lan", directory=short_dir / "missing")
    deep = short_dir / ("d" * 100)  # too long a path for a unix socket
    deep.mkdir()
    with pytest.raises(SwitchError, match="switch lan did not start: AF_UNIX path too long"):
        await SwitchProcess.spawn(["a"], name="lan", directory=deep)
    assert not deep.exists()


def test_the_command_line_checks_its_arguments(short_dir: Path) -> None:
    run = [sys.executable, "-m", "vmlab.net.switch", "--dir", str(short_dir)]
    done = subprocess.run(run, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2 and "at least one --port" in done.stderr
    done = subprocess.run(
        [*run, "--port", "a", "--port", "a"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2 and "duplicate port names" in done.stderr
