"""Every error vmlab raises on purpose, and the exit codes they map to.

The tree::

    VmlabError                  root; `exit_code` says how the CLI exits
    ├── UsageError              the user's input is wrong (exit 2): bad option,
    │   │                       missing path, bad size, a file that is no kernel
    │   └── ConfigError         a lab file is wrong (`FILE:LINE: key: problem (hint)`)
    ├── HostError               the host lacks something (exit 3): QEMU, busybox,
    │                           kernel modules, /dev/kvm permissions
    ├── InfraError              the lab or its infrastructure failed, not the code
    │   │                       under test (exit 125): QEMU died, a boot stalled
    │   ├── BootError           the guest never reached its agent in time
    │   └── ServiceError        a host service did not start, or not become ready
    └── GuestError              something happened inside a guest
        ├── GuestPathError      a guest path to copy from or to is missing, of the
        │                       wrong kind or not writable (exit 2)
        ├── CommandNotFound     the command does not exist in the guest (exit 127)
        ├── CommandTimeout      the command outlived its timeout (exit 124)
        ├── GuestCrashed        the guest kernel panicked or oopsed (exit 120)
        └── GuestHung           the guest kernel locked up or stopped answering (exit 121)

A message is one line that names the problem and, where there is one, the fix.
Evidence (argv, exit status, last console lines) goes in `details`, which the
CLI prints only with --verbose.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Exit statuses of the `vmlab` command (documented in docs/cli.md).

    `vmlab run` otherwise exits with the guest command's own status, so these
    sit where shells and `timeout(1)` put theirs.
    """

    OK = 0
    FAILED = 1  # vmlab test: some test failed
    USAGE = 2  # bad command line, bad lab file, bad input path
    HOST = 3  # the host lacks something vmlab needs
    GUEST_CRASH = 120  # the guest kernel panicked or oopsed
    GUEST_HANG = (
        121  # the guest kernel locked up (soft lockup, hung task, RCU stall) or went silent
    )
    TIMEOUT = 124  # the guest command outlived --timeout
    INFRA = 125  # QEMU or the boot failed: not the command's fault
    NOT_FOUND = 127  # the command does not exist in the guest
    INTERRUPTED = 130  # SIGINT (Ctrl-C)
    TERMINATED = 143  # SIGTERM


class VmlabError(Exception):
    """Root of vmlab's errors: a one-line message plus optional evidence."""

    exit_code: ExitCode = ExitCode.INFRA

    def __init__(self, message: str, *, details: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class UsageError(VmlabError):
    """The user's input is wrong."""

    exit_code = ExitCode.USAGE


class ConfigError(UsageError):
    """A lab file is wrong; the message starts with `FILE:LINE:`."""


class HostError(VmlabError):
    """The host lacks a program, a file or a permission vmlab needs."""

    exit_code = ExitCode.HOST


class InfraError(VmlabError):
    """The infrastructure failed (QEMU, boot), not the code under test."""

    exit_code = ExitCode.INFRA


class BootError(InfraError):
    """The guest did not reach its agent in time (a stalled boot)."""


class ServiceError(InfraError):
    """A host service (`[service.NAME]`) could not start, exited before it was
    ready, or did not become ready in time."""


class GuestError(VmlabError):
    """Something happened inside a guest."""


class GuestPathError(GuestError):
    """A file copy to or from a guest met a bad guest path: missing, of the wrong
    kind (a directory where a file is), or not writable (read-only, no space)."""

    exit_code = ExitCode.USAGE


class CommandNotFound(GuestError):
    """The command does not exist in the guest."""

    exit_code = ExitCode.NOT_FOUND


class CommandTimeout(GuestError):
    """The command outlived its timeout."""

    exit_code = ExitCode.TIMEOUT


class GuestCrashed(GuestError):
    """The guest kernel panicked or oopsed; `title` names the crash."""

    exit_code = ExitCode.GUEST_CRASH

    def __init__(
        self, message: str, *, title: str, details: str = "", crash: object | None = None
    ) -> None:
        super().__init__(message, details=details)
        self.title = title
        self.crash = crash  # the parsed report (vmlab.watch.crashes.Crash), when there is one


class GuestHung(GuestError):
    """The guest locked up or stopped answering; `title` names the hang."""

    exit_code = ExitCode.GUEST_HANG

    def __init__(
        self, message: str, *, title: str, details: str = "", crash: object | None = None
    ) -> None:
        super().__init__(message, details=details)
        self.title = title
        self.crash = crash
