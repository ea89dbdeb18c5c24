"""`vmlab run`'s input handling: --share, the command's environment, and the
machine spec built from the options (no VM; tests/vm runs the real command)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from vmlab.cli.run_cmd import RunOptions, command_env, machine_spec, parse_share
from vmlab.errors import ExitCode, UsageError
from vmlab.machine.spec import Accel, Share


def opts(**changes: object) -> RunOptions:
    base = RunOptions(
        command=("true",),
        kernel=None,
        modules=None,
        shares=(),
        memory="512M",
        cpus=1,
        append=(),
        timeout=None,
        console_log=None,
        verbose=False,
        accel=Accel.TCG,
        env=(),
        boot_timeout=None,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


# -- --share ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "share"),
    [
        ("/srv/data", Share(Path("/srv/data"), Path("/srv/data"), False)),
        ("/srv/data:rw", Share(Path("/srv/data"), Path("/srv/data"), True)),
        ("/srv/data:ro", Share(Path("/srv/data"), Path("/srv/data"), False)),
        ("/srv/data:/mnt", Share(Path("/srv/data"), Path("/mnt"), False)),
        ("/srv/data:/mnt:rw", Share(Path("/srv/data"), Path("/mnt"), True)),
        ("/srv/data:/mnt:ro", Share(Path("/srv/data"), Path("/mnt"), False)),
        ("/srv/my data:/mnt/my data", Share(Path("/srv/my data"), Path("/mnt/my data"), False)),
    ],
)
def test_parse_share(text: str, share: Share) -> None:
    assert parse_share(text) == share


def test_relative_and_home_shares_become_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert parse_share("sub:rw") == Share(tmp_path / "sub", tmp_path / "sub", True)
    assert parse_share("~/src").host == tmp_path / "home" / "src"


@pytest.mark.parametrize(
    "text", ["", ":/mnt", "/a:/b:/c", "/a:b:c:d", "/srv/data:mnt", "/a:relative:rw"]
)
def test_bad_share(text: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_share(text)
    assert info.value.exit_code == ExitCode.USAGE
    assert "--share" in info.value.message


# -- the command's environment ---------------------------------------------------------------


def test_command_env_passes_the_basics_only(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("USER", "LOGNAME", "LANGUAGE", "TERM", "TZ", "SHELL", "LANG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PATH", "/opt/bin:/usr/bin")
    monkeypatch.setenv("HOME", "/home/me")
    monkeypatch.setenv("LANG", "C.UTF-8")
    monkeypatch.setenv("LC_TIME", "en_GB.UTF-8")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "hunter2")
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/0")
    env = command_env([])
    assert env == {
        "PATH": "/opt/bin:/usr/bin",
        "HOME": "/home/me",
        "LANG": "C.UTF-8",
        "LC_TIME": "en_GB.UTF-8",
    }


def test_command_env_extras_override_and_keep_their_equals_signs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOME", "/home/me")
    env = command_env(["HOME=/tmp/h", "X=1", "EMPTY=", "EQ=a=b", "SPACE=a b $c"])
    assert (env["HOME"], env["X"], env["EMPTY"], env["EQ"], env["SPACE"]) == (
        "/tmp/h", "1", "", "a=b", "a b $c",
    )  # fmt: skip


def test_command_env_without_path_gets_a_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PATH", raising=False)
    assert "/usr/bin" in command_env([])["PATH"].split(":")


@pytest.mark.parametrize("item", ["NOEQUALS", "=value", ""])
def test_bad_env(item: str) -> None:
    with pytest.raises(UsageError, match="--env"):
        command_env([item])


# -- the machine spec --------------------------------------------------------------------------


def test_the_cwd_is_shared_read_write(tmp_path: Path) -> None:
    spec = machine_spec(opts(memory="2G", cpus=2, append=("quiet",)), tmp_path)
    assert spec.shares == (Share(tmp_path, tmp_path, writable=True),)
    assert (spec.memory_mib, spec.cpus, spec.append, spec.accel) == (2048, 2, ("quiet",), Accel.TCG)


def test_the_cwd_is_not_shared_twice(tmp_path: Path) -> None:
    spec = machine_spec(opts(shares=(f"{tmp_path}:rw",)), tmp_path)
    assert spec.shares == (Share(tmp_path, tmp_path, writable=True),)


def test_root_as_cwd_is_not_shared() -> None:
    # / is the host root, already there (read-only, under the overlay).
    assert machine_spec(opts(), Path("/")).shares == ()


def test_kernel_and_modules_paths_become_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bzImage").write_bytes(b"")
    (tmp_path / "mods").mkdir()
    spec = machine_spec(opts(kernel=Path("bzImage"), modules=Path("mods")), tmp_path)
    assert (spec.kernel, spec.modules) == (tmp_path / "bzImage", tmp_path / "mods")


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"memory": "1X"}, "--memory: '1X' is not a size (try 512M or 2G)"),
        ({"memory": "0"}, "--memory"),
        ({"cpus": 0}, "--cpus"),
        ({"timeout": 0.0}, "--timeout"),
        ({"timeout": -5.0}, "--timeout"),
        ({"kernel": Path("/nonexistent/bzImage")}, "--kernel /nonexistent/bzImage does not exist"),
        ({"modules": Path("/nonexistent/mods")}, "--modules /nonexistent/mods does not exist"),
        ({"shares": ("relative:/x:/y:/z",)}, "--share"),
    ],
)
def test_bad_options_are_usage_errors(
    tmp_path: Path, changes: dict[str, object], words: str
) -> None:
    with pytest.raises(UsageError) as info:
        machine_spec(opts(**changes), tmp_path)
    assert words in info.value.message
    assert "\n" not in info.value.message
