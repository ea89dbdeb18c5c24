"""`vmlab test` with host services, in process and without a VM: every test of
these labs is dangerous and skipped, so no machine boots, while the services
that serve the whole lab (they provide nothing) still start and stop."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from vmlab.cli.test_cmd import TestOptions, run_tests
from vmlab.errors import ServiceError

SKIPPED_SUITE = """
[suite.s]
[[suite.s.test]]
name = "boom"
run = "true"
safety = "dangerous"
"""


def options(lab: Path, out: Path) -> TestOptions:
    return TestOptions(
        lab=lab, level=1, suites=(), keyword=None, jobs=1, db=str(lab / "r.db"),
        out=out, allow_dangerous=False,
    )  # fmt: skip


def write(lab: Path, services: str) -> None:
    (lab / "vmlab.toml").write_text(textwrap.dedent(services) + SKIPPED_SUITE)


async def test_services_run_around_the_jobs_with_logs_in_the_run_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(
        tmp_path,
        """
        [service.ticker]
        command = "echo tick; echo ready-now >&2; exec sleep 600"
        ready = { log = "ready-now" }

        [service.unused]
        command = "exec sleep 600"
        provides = ["nobody.needs.this"]
        """,
    )
    out = tmp_path / "out"
    assert await run_tests(options(tmp_path, out)) == 0
    assert (out / "services" / "ticker.log").read_text() == "tick\nready-now\n"
    assert not (out / "services" / "unused.log").exists()
    lines = [line for line in capsys.readouterr().out.splitlines() if "SERVICE" in line]
    assert [line.split(":")[1].split()[0] for line in lines] == ["started", "ready", "stopped"]
    assert lines[1].startswith("SERVICE  ticker: ready (log line matching 'ready-now', ")


async def test_a_service_that_fails_ends_the_run_before_any_test(tmp_path: Path) -> None:
    write(
        tmp_path,
        """
        [service.broken]
        command = "echo 'bind: address in use' >&2; exit 4"
        ready = { cmd = "false" }
        """,
    )
    with pytest.raises(ServiceError) as caught:
        await run_tests(options(tmp_path, tmp_path / "out"))
    assert caught.value.message.startswith(
        "service broken: exited (exit status 4) before it was ready (cmd 'false'); "
        "last line: 'bind: address in use'"
    )
    assert int(caught.value.exit_code) == 125
