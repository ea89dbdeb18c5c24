"""How commands reach a running guest: one Channel protocol for every transport.

The virtio-serial channel (host-root machines) implements it today; an SSH
channel for disk-image machines sits beside it later. The test engine only
ever talks to a `Channel`.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol

# The PATH a command gets from vmlab (sessions, `vmlab ssh`, copies), and root's
# login environment around it.
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ROOT_ENV: Mapping[str, str] = {
    "PATH": GUEST_PATH,
    "HOME": "/root",
    "USER": "root",
    "LOGNAME": "root",
}
# Where an argv command whose env has no PATH is looked up (execvp's default),
# on either channel.
EXEC_PATH = "/usr/bin:/bin"

OutputSink = Callable[[bytes], None]
Stdin = bytes | BinaryIO | None


@dataclass(frozen=True)
class User:
    """Who a command runs as in the guest."""

    uid: int
    gid: int
    groups: tuple[int, ...] = ()


@dataclass(frozen=True)
class Command:
    """A command for the guest: an argv run directly, or a shell string.

    Exactly one of `argv` and `shell` is set. `env` is the whole environment
    (nothing else leaks in); `cwd` None means /.
    """

    argv: tuple[str, ...] = ()
    shell: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    user: User | None = None

    def __post_init__(self) -> None:
        if bool(self.argv) == (self.shell is not None):
            raise ValueError("a Command takes exactly one of argv and shell")

    def describe(self) -> str:
        return self.shell if self.shell is not None else shlex.join(self.argv)


@dataclass(frozen=True)
class CommandResult:
    """What a finished command left: its exit status and captured output."""

    status: int
    stdout: bytes
    stderr: bytes
    duration_s: float

    @property
    def ok(self) -> bool:
        return self.status == 0


class Channel(Protocol):
    """Runs commands in one guest, one at a time."""

    async def run(
        self,
        command: Command,
        *,
        stdin: Stdin = None,
        on_stdout: OutputSink | None = None,
        on_stderr: OutputSink | None = None,
        capture: bool = True,
    ) -> CommandResult:
        """Run `command` to its end. Output streams to the sinks as it comes,
        and is also returned when `capture` is true."""
        ...

    async def interrupt(self) -> None:
        """Kill the running command (its whole process group)."""
        ...

    async def close(self) -> None: ...


class MachineChannel(Channel, Protocol):
    """A channel to a whole machine: also the liveness and SysRq requests that
    hang detection and task dumps use, answered beside a running command."""

    async def ping(self, *, timeout: float) -> None: ...

    async def sysrq(self, letters: str, *, timeout: float = 5) -> None: ...
