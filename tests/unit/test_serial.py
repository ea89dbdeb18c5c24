"""The virtio-serial channel's pure parts: the job script the guest agent runs
(run here with the real busybox sh, as the agent does, with the agent's
directory moved from /run/vmlab to a temp dir), and the nonce demultiplexer."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from vmlab.errors import InfraError
from vmlab.guest.channel import Command, User
from vmlab.guest.serial import AGENT_DIR, SETPRIV, _Demux, _send, job_script

PATH = "/usr/local/bin:/usr/bin:/bin"

NASTY_ARGS = [
    "two words",
    "",
    "'single'",
    '"double"',
    "it's",
    "$HOME",
    "${PATH}",
    "`id`",
    "$(id -u)",
    "line1\nline2",
    "\n",
    "tab\there",
    "back\\slash",
    "*",
    "[a-z]",
    ";",
    "&&",
    "|",
    ">redirect",
    "#comment",
    "~",
    "-n",
    "--",
    "\u00e9t\u00e9 \u2713",
]


@dataclass(frozen=True)
class Ran:
    status: int
    stdout: bytes
    stderr: bytes
    why: str


def run_job(command: Command, tmp_path: Path) -> Ran:
    """Run `job_script(command)` as the agent does: `busybox sh JOB`."""
    busybox = shutil.which("busybox")
    assert busybox, "busybox-static is needed (apt-get install busybox-static)"
    agent = tmp_path / "agent"
    agent.mkdir(exist_ok=True)
    if not (agent / "busybox").exists():
        (agent / "busybox").symlink_to(busybox)
    (agent / "why").unlink(missing_ok=True)
    script = job_script(command)
    assert AGENT_DIR in script
    job = agent / "job"
    job.write_text(script.replace(AGENT_DIR, str(agent)))
    proc = subprocess.run(
        [busybox, "sh", str(job)],
        capture_output=True,
        # The agent's own environment, which must not reach the command; a
        # value with newlines makes `export -p` print continuation lines.
        env={
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "AGENT_SECRET": "x",
            "AGENT_MULTI": "a\nexport B='zzz'\nexport 'bad name'\n",
        },
        cwd="/",
        timeout=30,
        check=False,
    )
    why = (agent / "why").read_text().strip() if (agent / "why").exists() else ""
    return Ran(proc.returncode, proc.stdout, proc.stderr, why)


# -- job_script ---------------------------------------------------------------------------


def test_arguments_arrive_intact(tmp_path: Path) -> None:
    ran = run_job(Command(argv=("printf", "%s\\0", *NASTY_ARGS), env={"PATH": PATH}), tmp_path)
    assert ran.status == 0, ran.stderr
    assert ran.stdout.split(b"\0")[:-1] == [a.encode() for a in NASTY_ARGS]
    assert not (tmp_path / "agent" / ">redirect").exists()


def test_the_environment_is_exactly_the_commands(tmp_path: Path) -> None:
    env = {
        "PATH": PATH,
        "A": "x y",
        "B": "line1\nline2",
        "C": "$HOME 'q' \"d\" `id`",
        "EMPTY": "",
        "EQ": "a=b=c",
    }
    ran = run_job(Command(argv=("env", "-0"), env=env), tmp_path)
    assert ran.status == 0, ran.stderr
    got = dict(item.split("=", 1) for item in ran.stdout.decode().split("\0")[:-1])
    assert got == env  # nothing of the agent's own environment leaks in


def test_argv0_is_the_name_given_not_the_path_found(tmp_path: Path) -> None:
    ran = run_job(Command(argv=("cat", "/proc/self/cmdline"), env={"PATH": PATH}), tmp_path)
    assert ran.stdout == b"cat\0/proc/self/cmdline\0"


def test_cwd_and_status(tmp_path: Path) -> None:
    odd = tmp_path / "it's a $dir"
    odd.mkdir()
    ran = run_job(
        Command(argv=("sh", "-c", "pwd; echo err >&2; exit 42"), env={"PATH": PATH}, cwd=str(odd)),
        tmp_path,
    )
    assert (ran.status, ran.stdout, ran.stderr, ran.why) == (42, f"{odd}\n".encode(), b"err\n", "")


def test_default_cwd_is_root(tmp_path: Path) -> None:
    ran = run_job(Command(argv=("pwd",), env={"PATH": PATH}), tmp_path)
    assert ran.stdout == b"/\n"


def test_shell_form(tmp_path: Path) -> None:
    ran = run_job(Command(shell='echo "$A" "$0"; exit 3', env={"PATH": PATH, "A": "a b"}), tmp_path)
    assert (ran.status, ran.stdout) == (3, b"a b /bin/sh\n")


def test_missing_cwd(tmp_path: Path) -> None:
    ran = run_job(Command(argv=("true",), cwd=str(tmp_path / "gone")), tmp_path)
    assert (ran.status, ran.why) == (126, "nocwd")


@pytest.mark.parametrize("argv0", ["no-such-command-vmlab", "/nonexistent/tool", "-n"])
def test_missing_command(tmp_path: Path, argv0: str) -> None:
    ran = run_job(Command(argv=(argv0, "x"), env={"PATH": PATH}), tmp_path)
    assert (ran.status, ran.why) == (127, "notfound")


def test_a_command_found_on_the_commands_own_path(tmp_path: Path) -> None:
    bindir = tmp_path / "my bin"
    bindir.mkdir()
    tool = bindir / "mytool"
    tool.write_text("#!/bin/sh\necho mytool ran\n")
    tool.chmod(0o755)
    ran = run_job(Command(argv=("mytool",), env={"PATH": f"{bindir}:{PATH}"}), tmp_path)
    assert (ran.status, ran.stdout, ran.why) == (0, b"mytool ran\n", "")


def test_root_runs_without_setpriv() -> None:
    assert SETPRIV not in job_script(Command(argv=("id",), user=User(0, 0, (0,))))
    assert SETPRIV not in job_script(Command(argv=("id",)))


def test_another_user(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("switching users needs root (make test runs as root)")
    tmp_path.chmod(0o755)  # nobody must reach the job's cwd
    command = Command(
        argv=("sh", "-c", "id -u; id -g; id -G"),
        env={"PATH": PATH},
        user=User(65534, 65534, (65534, 100)),
        cwd="/",
    )
    ran = run_job(command, tmp_path)
    assert ran.status == 0, ran.stderr
    assert ran.stdout == b"65534\n65534\n65534 100\n"
    ran = run_job(Command(argv=("id", "-G"), env={"PATH": PATH}, user=User(1234, 1234)), tmp_path)
    assert ran.stdout == b"1234\n"  # root's groups are dropped


# -- the demultiplexer ------------------------------------------------------------------------

NONCE = b"\x1e0123456789abcdef0123\x1e"


def collecting(demux: _Demux, nonce: bytes = NONCE) -> tuple[list[bytes], asyncio.Future[None]]:
    got: list[bytes] = []
    return got, demux.begin(nonce, got.append)


async def test_output_up_to_the_nonce() -> None:
    demux = _Demux("stdout")
    got, done = collecting(demux)
    demux.feed(b"hello ")
    assert b"".join(got) == b"hello "  # streamed as it comes
    demux.feed(b"world" + NONCE)
    assert b"".join(got) == b"hello world"
    assert done.done()


@pytest.mark.parametrize("split", range(1, len(NONCE)))
async def test_a_nonce_split_across_chunks(split: int) -> None:
    demux = _Demux("stdout")
    got, done = collecting(demux)
    demux.feed(b"data" + NONCE[:split])
    assert b"".join(got) == b"data"  # the partial nonce is held back, not emitted
    assert not done.done()
    demux.feed(NONCE[split:])
    assert b"".join(got) == b"data"
    assert done.done()


async def test_a_false_nonce_prefix_is_released() -> None:
    demux = _Demux("stdout")
    got, done = collecting(demux)
    demux.feed(b"a" + NONCE[:7])
    assert b"".join(got) == b"a"
    demux.feed(b"zz")
    assert b"".join(got) == b"a" + NONCE[:7] + b"zz"
    demux.feed(NONCE)
    assert b"".join(got) == b"a" + NONCE[:7] + b"zz"
    assert done.done()


@pytest.mark.parametrize("seed", range(40))
async def test_any_chunking_delivers_every_byte_exactly(seed: int) -> None:
    rng = random.Random(seed)
    # Output rich in the nonce's own bytes, and in its prefixes.
    pieces = [rng.randbytes(rng.randrange(0, 50)) for _ in range(10)]
    pieces += [NONCE[: rng.randrange(1, len(NONCE))] for _ in range(5)] + [b"\x1e" * 3]
    output = NONCE
    # Prefixes side by side may spell the nonce itself: only its end may.
    while (output + NONCE).find(NONCE) != len(output):
        rng.shuffle(pieces)
        output = b"".join(pieces)
    stream = output + NONCE
    demux = _Demux("stderr")
    got, done = collecting(demux)
    pos = 0
    while pos < len(stream):
        step = rng.choice([1, 1, 2, 3, 7, 22, 64])
        demux.feed(stream[pos : pos + step])
        pos += step
        assert not done.done() or pos >= len(stream)
    assert done.done()
    assert b"".join(got) == output


async def test_two_commands_in_a_row() -> None:
    demux = _Demux("stdout")
    nonce2 = b"\x1effffffffffffffffffff\x1e"
    got1, done1 = collecting(demux)
    demux.feed(b"one" + NONCE)
    got2, done2 = collecting(demux, nonce2)
    demux.feed(b"two" + nonce2)
    assert (b"".join(got1), b"".join(got2)) == (b"one", b"two")
    assert done1.done() and done2.done()


@pytest.mark.parametrize("when", ["before-the-command", "after-the-last-nonce"])
async def test_stray_bytes_never_reach_the_next_command(when: str) -> None:
    # Bytes that arrive while no command runs (a background process of an
    # earlier command writing late) belong to no command: the host sends a
    # command to the guest only after begin(), so they cannot be its output.
    demux = _Demux("stdout")
    nonce2 = b"\x1effffffffffffffffffff\x1e"
    if when == "before-the-command":
        demux.feed(b"stray")
    else:
        got1, _ = collecting(demux)
        demux.feed(b"one" + NONCE + b"stray")
        assert b"".join(got1) == b"one"
    got2, done2 = collecting(demux, nonce2)
    demux.feed(b"mine" + nonce2)
    assert done2.done()
    assert b"".join(got2) == b"mine"


async def test_fail_ends_the_wait_with_the_error() -> None:
    demux = _Demux("stdout")
    _, done = collecting(demux)
    demux.fail(ConnectionError("gone"))
    with pytest.raises(ConnectionError, match="gone"):
        await done


async def test_a_request_to_a_vanished_agent_is_an_infra_error() -> None:
    # QEMU that rejects its options connects its chardevs and exits at once:
    # the boot request then meets a reset socket, which must not escape as
    # a raw ConnectionResetError (a traceback from the CLI).
    ours, theirs = socket.socketpair()
    _, writer = await asyncio.open_unix_connection(sock=ours)
    theirs.close()
    with pytest.raises(InfraError, match="hung up"):
        for _ in range(50):  # the first writes may still be buffered
            await _send(writer, b"x" * 65536)
    writer.close()
