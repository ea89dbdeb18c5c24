"""Fixtures and rules of the real-VM tests.

Rules (checked at collection): every test here carries the `vm` marker (so
`-m "not vm"` really leaves out everything that boots QEMU) and a `timeout`
marker (pytest-timeout), so that a hung guest can never hang CI. The
`reliability` marker (20 boots under load) is registered here, so the long test
can be deselected with `-m "not reliability"`.

Every test here runs with:

- VMLAB_TEST_TAG set to a token of this pytest session, inherited by every vmlab
  and QEMU the test starts (the census in vmtools.py finds them by it);
- $XDG_RUNTIME_DIR and $TMPDIR pointing at fresh private directories, where vmlab
  makes its `vmlab-*` runtime directories (so another vmlab on the host, a
  developer's or a benchmark, cannot confuse the check), and $XDG_STATE_HOME too
  (default console logs).

After each test, the `vm_env` fixture asserts that no QEMU or vmlab process of
the test is left and that no `vmlab-*` runtime directory remains; leftovers are
killed (by pid) and removed, so that one failure does not cascade into the next
tests. When the test itself already failed, the leftovers are cleaned up without
a second error.

This directory is a package (tests/vm/__init__.py) so that this conftest and
tests/store/conftest.py do not both claim the module name `conftest` (mypy).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import tempfile
import time
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from .vmtools import TAG_VAR, Proc, VmEnv, runtime_dirs, tagged_processes

_HERE = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "reliability: many boots in a row under load (minutes; part of the vm set)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    problems = []
    for item in items:
        if _HERE not in Path(str(item.path)).resolve().parents:
            continue
        if item.get_closest_marker("vm") is None:
            problems.append(f"{item.nodeid}: a test under tests/vm/ needs @pytest.mark.vm")
        if item.get_closest_marker("timeout") is None:
            problems.append(f"{item.nodeid}: a real-VM test needs @pytest.mark.timeout(SECONDS)")
    if problems:
        raise pytest.UsageError("\n".join(problems))


SESSION_TAG = f"{os.getpid()}-{secrets.token_hex(6)}"
_FAILED = pytest.StashKey[bool]()
LEFTOVER_GRACE_S = 10.0  # how long exiting processes get to disappear


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call" and report.failed:
        item.stash[_FAILED] = True
    return report


def _leftovers(env: VmEnv) -> tuple[list[Proc], list[Path]]:
    return tagged_processes(env.tag), runtime_dirs(env.runtime, env.tmpdir)


@pytest.fixture(autouse=True)
def vm_env(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[VmEnv]:
    """Private directories for this test, and the leak check after it."""
    tmp_path_factory.getbasetemp()  # settle tmp_path's root before $TMPDIR changes
    # Short paths under /tmp: unix socket paths are limited to 108 bytes.
    base = Path(tempfile.mkdtemp(prefix="vmt-", dir="/tmp"))
    env = VmEnv(SESSION_TAG, base / "rt", base / "tmp", base / "state")
    for directory in (env.runtime, env.tmpdir, env.state):
        directory.mkdir(mode=0o700)
    monkeypatch.setenv(TAG_VAR, env.tag)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(env.runtime))
    monkeypatch.setenv("TMPDIR", str(env.tmpdir))
    monkeypatch.setenv("XDG_STATE_HOME", str(env.state))
    try:
        yield env
    finally:
        deadline = time.monotonic() + LEFTOVER_GRACE_S
        while tagged_processes(env.tag) and time.monotonic() < deadline:
            time.sleep(0.1)
        procs, dirs = _leftovers(env)
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)
        if (procs or dirs) and not request.node.stash.get(_FAILED, False):
            pytest.fail(
                "the test left behind:\n"
                + "\n".join([p.describe() for p in procs] + [str(d) for d in dirs]),
                pytrace=False,
            )
