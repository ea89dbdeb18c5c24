"""The fast `vmlab run` parser (cli/run_argv.py) against Typer's: for every
argument vector it accepts, it must produce exactly the RunOptions that the
Typer command would; the ones it declines go to Typer."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from vmlab.cli import app as app_module
from vmlab.cli import run_cmd
from vmlab.cli.run_argv import parse_run_argv
from vmlab.cli.run_cmd import RunOptions
from vmlab.machine.spec import Accel


def typer_options(args: list[str], monkeypatch: pytest.MonkeyPatch) -> RunOptions:
    """What the Typer `run` command hands to run_cmd.run for `args`."""
    seen: list[RunOptions] = []
    monkeypatch.setattr(run_cmd, "run", lambda opts: opts)

    def fake_run_async(opts: RunOptions, *, verbose: bool) -> int:
        seen.append(opts)
        return 0

    monkeypatch.setattr(app_module, "run_async", fake_run_async)
    result = CliRunner().invoke(app_module.app, ["run", *args])
    assert result.exit_code == 0, result.output
    assert len(seen) == 1
    return seen[0]


ACCEPTED = [
    ["--", "true"],
    ["true"],
    ["echo", "--kernel", "x"],  # options end at the command
    ["--", "sh", "-c", "echo hi"],
    ["--kernel", "/boot/vmlinuz", "--modules", "/lib/modules/x", "--", "uname", "-r"],
    ["--kernel=/boot/vmlinuz", "--memory=1G", "--cpus=2", "--", "true"],
    ["--share", "/srv", "--share", "/data:/mnt:rw", "--", "ls"],
    ["--append", "quiet", "--append=loglevel=3", "--env", "A=1", "--env=B=2=3", "--", "env"],
    ["--timeout", "2.5", "--boot-timeout", "30", "--console-log", "c.log", "--", "true"],
    ["--accel", "tcg", "-v", "--", "true"],
    ["--verbose", "--accel=kvm", "true"],
    ["--cpus", "1", "--cpus", "3", "--", "true"],  # the last one counts
    ["--timeout", "-1", "--", "true"],  # vmlab rejects it later, with its own line
    ["--env", "X=", "--", "true"],
]


@pytest.mark.parametrize("args", ACCEPTED, ids=" ".join)
def test_the_fast_parser_agrees_with_typer(
    args: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = parse_run_argv(args)
    assert fast is not None, "the fast path should take this one"
    assert fast == typer_options(args, monkeypatch)


def test_defaults_are_typers(monkeypatch: pytest.MonkeyPatch) -> None:
    fast = parse_run_argv(["true"])
    assert fast == typer_options(["true"], monkeypatch)
    assert fast is not None and fast.accel is Accel.AUTO and fast.memory == "512M"


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--"],
        ["--help"],
        ["--kernel"],  # no value
        ["--cpus", "two", "--", "true"],
        ["--timeout", "soon", "--", "true"],
        ["--accel", "fast", "--", "true"],
        ["--verbose=yes", "--", "true"],
        ["-vq", "--", "true"],
        ["--no-such-option", "--", "true"],
        ["--kernel=", "--", "true"],
        ["--memory", "1G"],  # no command
    ],
    ids=lambda a: " ".join(a) or "(nothing)",
)
def test_anything_else_is_left_to_typer(args: list[str]) -> None:
    assert parse_run_argv(args) is None


def test_every_typer_option_is_known_to_the_fast_parser() -> None:
    # A new `vmlab run` option must be added to run_argv too (or this fails).
    import typer.main  # noqa: PLC0415

    command = typer.main.get_command(app_module.app)
    run = command.commands["run"]  # type: ignore[attr-defined]
    names = {opt for param in run.params for opt in param.opts if opt.startswith("-")}
    from vmlab.cli.run_argv import _FLAGS, _VALUED  # noqa: PLC0415

    assert names == set(_VALUED) | set(_FLAGS)


def test_paths_stay_as_given() -> None:
    opts = parse_run_argv(["--kernel", "rel/vmlinux", "--", "true"])
    assert opts is not None and opts.kernel == Path("rel/vmlinux")
