"""`vmlab cp` without a VM: its arguments, its one-line errors and exit codes,
and a whole copy both ways through the real command.

Where a machine must be up, a `sleep` process stands in for its QEMU (the
`sleeper` fixture of tests/unit/conftest.py) and an
asyncssh SSH server in a thread of its own stands in for its sshd: the lab's
key logs in, and SFTP serves this host's filesystem, so the "guest" paths
below are host paths. tests/image/test_lifecycle.py runs `vmlab cp` against
a real machine that is up.
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import asyncssh
import pytest
from typer.testing import CliRunner

from copy_trees import make_tree, snapshot, staging_leftovers, without_specials
from vmlab.cli.app import app
from vmlab.cli.cp_cmd import CopyRequest, human_size, parse
from vmlab.errors import UsageError
from vmlab.machine.records import MachineRecord, write_record

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def lab(tmp_path: Path) -> Path:
    root = tmp_path / "lab"
    root.mkdir()
    (root / "vmlab.toml").write_text(
        '[image.base]\n[machine.web]\nimage = "base"\n[machine.db]\nimage = "base"\n'
    )
    return root


def record(lab: Path, name: str, pid: int, argv: tuple[str, ...], port: int = 1) -> MachineRecord:
    runtime = lab.parent / f"vmlab-{name}"
    return MachineRecord(
        name=name, lab_dir=lab, pid=pid, argv=argv, started=datetime.now(UTC),
        runtime_dir=runtime, qmp_socket=runtime / "qmp.sock",
        console_socket=runtime / "console.sock",
        console_log=lab / ".vmlab" / "machines" / f"{name}.console.log",
        ssh_port=port, ssh_user="root", key_path=lab / ".vmlab" / "ssh" / "id_ed25519",
        memory_mib=512,
    )  # fmt: skip


def cli(lab: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["cp", "--lab", str(lab), *args])
    return result.exit_code, result.output


# -- the arguments ----------------------------------------------------------------


def test_one_side_is_machine_colon_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert parse("build", "web:/tmp/") == CopyRequest("web", True, f"{tmp_path}/build", "/tmp/")
    assert parse("db-1:/var/log/x", "out/") == CopyRequest(
        "db-1", False, f"{tmp_path}/out/", "/var/log/x"
    )
    # a relative guest path starts at /root; MACHINE: alone is /root
    assert parse("f", "web:notes/f").guest == "/root/notes/f"
    assert parse("f", "web:").guest == "/root/"
    # a colon after a slash is part of a host path, as in scp
    assert parse("./a:b", "web:/tmp").host == f"{tmp_path}/a:b"
    assert parse("web:/a:b", "/x").guest == "/a:b"


@pytest.mark.parametrize(
    ("src", "dst", "message"),
    [
        ("a", "b", "neither 'a' nor 'b' names a machine (write that side as MACHINE:PATH"),
        ("./w:x", "/tmp/y", "neither './w:x' nor '/tmp/y' names a machine"),
        ("web:/a", "db:/b", "both 'web:/a' and 'db:/b' name a machine"),
        ("web:/a", "", "an empty host path"),
    ],
)
def test_bad_arguments(src: str, dst: str, message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        parse(src, dst)


def test_sizes_are_human() -> None:
    assert [human_size(n) for n in (0, 1023, 1024, 8 << 20, 3 << 30)] == [
        "0 B", "1023 B", "1.0 KiB", "8.0 MiB", "3.0 GiB",
    ]  # fmt: skip


# -- errors through the command ---------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["a", "b"], "neither 'a' nor 'b' names a machine"),
        (["web:/a", "db:/b"], "both 'web:/a' and 'db:/b' name a machine"),
        (["/etc", "wbe:/tmp"], "no machine named 'wbe' (did you mean 'web'?)"),
        (["/etc", "db:/tmp"], "machine db is not up (vmlab up db)"),
        (["./missing", "web:/tmp"], "cannot read "),
    ],
)
def test_bad_input_is_one_line_and_exit_2(lab: Path, args: list[str], message: str) -> None:
    code, output = cli(lab, *args)
    assert code == 2, output
    assert f"vmlab: {message}" in output
    assert len(output.strip().splitlines()) == 1 and "Traceback" not in output


def test_no_lab_file_is_exit_2(tmp_path: Path) -> None:
    code, output = cli(tmp_path, "/etc", "web:/tmp")
    assert code == 2 and "no such lab file" in output


def test_a_machine_whose_qemu_is_gone_is_exit_125(lab: Path, tmp_path: Path) -> None:
    write_record(record(lab, "web", 999_999_999, ("qemu",)))
    (tmp_path / "f").write_text("x")
    code, output = cli(lab, str(tmp_path / "f"), "web:/tmp/")
    assert code == 125, output
    assert "vmlab: machine web is not running: its QEMU (pid 999999999) is gone" in output
    assert len(output.strip().splitlines()) == 1


# -- a whole copy, both ways --------------------------------------------------------


class SshServer:
    """An SSH server with SFTP on 127.0.0.1, in a thread and loop of its own,
    that lets in the holder of the key it writes to `key_path`."""

    def __init__(self, key_path: Path) -> None:
        key = asyncssh.generate_private_key("ssh-ed25519")
        key_path.parent.mkdir(parents=True, exist_ok=True)
        key.write_private_key(str(key_path))
        key_path.chmod(0o600)
        self._authorized = asyncssh.import_authorized_keys(key.export_public_key().decode("ascii"))
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        self.port: int = self._server.sockets[0].getsockname()[1]

    async def _listen(self) -> asyncssh.SSHAcceptor:
        return await asyncssh.listen(
            "127.0.0.1",
            0,
            server_host_keys=[asyncssh.generate_private_key("ssh-ed25519")],
            authorized_client_keys=self._authorized,
            sftp_factory=True,
        )

    def close(self) -> None:
        async def stop() -> None:
            self._server.close()
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture
def up_machine(lab: Path, sleeper: subprocess.Popen[bytes]) -> Iterator[SshServer]:
    """Machine `web` of the lab, up: a live stand-in QEMU (tests/unit/conftest.py)
    and an SSH server."""
    server = SshServer(lab / ".vmlab" / "ssh" / "id_ed25519")
    write_record(record(lab, "web", sleeper.pid, ("sleep", "300"), port=server.port))
    try:
        yield server
    finally:
        server.close()


def test_cp_copies_a_tree_both_ways(lab: Path, tmp_path: Path, up_machine: SshServer) -> None:
    tree = make_tree(tmp_path)
    guest = tmp_path / "guest"
    guest.mkdir()
    code, output = cli(lab, str(tree), f"web:{guest}/")
    assert code == 0, output
    assert output == f"copied 8 files (300.1 KiB) to web:{guest}/tree\n"
    assert snapshot(guest / "tree") == without_specials(snapshot(tree))

    code, output = cli(lab, f"web:{guest}/tree/sub/deep/f.txt", str(tmp_path / "f.txt"))
    assert code == 0, output
    assert output == f"copied 1 file (5 B) to {tmp_path}/f.txt\n"
    assert (tmp_path / "f.txt").read_text() == "deep\n"

    code, output = cli(lab, f"web:{guest}/nowhere", str(tmp_path))
    assert code == 2, output
    assert output == f"vmlab: cannot read {guest}/nowhere in the guest: No such file or directory\n"
    assert staging_leftovers(tmp_path) == []
