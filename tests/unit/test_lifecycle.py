"""Machines left up by `vmlab up`, without a VM: state records, liveness (pid
reuse), down and clean of dead machines, the inventory, the status table, the
commands' one-line errors and the `setup = { playbook = ... }` config form.

A `sleep` process plays the part of a running QEMU where one is needed: the
liveness check compares /proc/PID/cmdline with the recorded argv, whatever the
program is (tests/image/test_lifecycle.py does all of it with a real machine).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from vmlab.cli import lifecycle_cmd
from vmlab.cli.app import app
from vmlab.config import load_lab
from vmlab.errors import ConfigError, HostError, InfraError, UsageError
from vmlab.machine.ansible import InventoryHost, failure_line, inventory_yaml
from vmlab.machine.records import (
    AdoptedProcess,
    Entry,
    MachineRecord,
    MachineStatus,
    format_duration,
    list_records,
    qemu_alive,
    read_record,
    record_path,
    status_of,
    terminate,
    write_record,
)


@pytest.fixture
def lab(tmp_path: Path) -> Path:
    root = tmp_path / "lab"
    root.mkdir()
    (root / "vmlab.toml").write_text(
        '[image.base]\n[machine.web]\nimage = "base"\n[machine.db]\nimage = "base"\n'
        "[machine.host]\nmemory = 256\n"
    )
    return root


def make_record(
    lab: Path, name: str, pid: int, argv: tuple[str, ...], **kw: object
) -> MachineRecord:
    runtime = kw.pop("runtime_dir", lab.parent / f"vmlab-{name}")
    assert isinstance(runtime, Path)
    fields: dict[str, object] = {
        "name": name, "lab_dir": lab, "pid": pid, "argv": argv,
        "started": datetime.now(UTC) - timedelta(seconds=125), "runtime_dir": runtime,
        "qmp_socket": runtime / "qmp.sock", "console_socket": runtime / "console.sock",
        "console_log": lab / ".vmlab" / "machines" / f"{name}.console.log",
        "ssh_port": 40022, "ssh_user": "root", "key_path": lab / ".vmlab/ssh/id_ed25519",
        "memory_mib": 512, "snapshot": "vmlab-ready",
    }  # fmt: skip
    fields.update(kw)
    return MachineRecord(**fields)  # type: ignore[arg-type]


# -- records -----------------------------------------------------------------


def test_a_record_survives_its_file(lab: Path) -> None:
    argv = ("qemu-system-x86_64", "-name", "vmlab-web")
    record = make_record(lab, "web", 1234, argv, networks=("lan", "san"))
    path = write_record(record)
    assert path == lab / ".vmlab" / "machines" / "web.json"
    assert read_record(lab, "web") == record
    assert json.loads(path.read_text())["version"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["web.json"]  # no temporary left
    assert read_record(lab, "db") is None


@pytest.mark.parametrize(
    "text", ["", "{", "[]", '{"version": 1}', '{"version": 2, "name": "web"}', '"x"']
)
def test_an_unreadable_record_is_a_value_error(lab: Path, text: str) -> None:
    path = record_path(lab, "web")
    path.parent.mkdir(parents=True)
    path.write_text(text)
    with pytest.raises(ValueError, match=r"web\.json"):
        read_record(lab, "web")
    (entry,) = list_records(lab)
    assert entry.record is None and entry.problem
    assert status_of(entry) is MachineStatus.STALE


def test_labs_in_different_directories_never_see_each_others_machines(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    write_record(make_record(one, "web", 1, ("qemu",)))
    assert [e.name for e in list_records(one)] == ["web"]
    assert list_records(two) == []


# -- liveness ----------------------------------------------------------------


def test_a_live_process_with_the_recorded_command_line_is_alive(
    sleeper: subprocess.Popen[bytes],
) -> None:
    assert qemu_alive(sleeper.pid, ("sleep", "300"))


def test_a_reused_pid_is_dead(sleeper: subprocess.Popen[bytes]) -> None:
    # the pid exists, but it is not the QEMU that was recorded
    assert not qemu_alive(sleeper.pid, ("qemu-system-x86_64", "-name", "vmlab-web"))
    assert not qemu_alive(os.getpid(), ("qemu-system-x86_64",))


def test_an_exited_or_zombie_process_is_dead() -> None:
    proc = subprocess.Popen(["sleep", "300"])
    proc.kill()
    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # a zombie: not reaped yet
    assert not qemu_alive(proc.pid, ("sleep", "300"))
    proc.wait()
    assert not qemu_alive(proc.pid, ("sleep", "300"))
    assert not qemu_alive(0, ("sleep",))


def test_status_running_dead_and_stale(lab: Path, sleeper: subprocess.Popen[bytes]) -> None:
    runtime = lab.parent / "vmlab-abc"
    runtime.mkdir()
    running = make_record(lab, "web", sleeper.pid, ("sleep", "300"), runtime_dir=runtime)
    dead = make_record(lab, "db", sleeper.pid, ("qemu", "-name", "vmlab-db"), runtime_dir=runtime)
    gone = make_record(lab, "old", 999_999_999, ("qemu",), runtime_dir=lab / "vmlab-gone")
    assert status_of(Entry("web", running)) is MachineStatus.RUNNING
    assert status_of(Entry("db", dead)) is MachineStatus.DEAD
    assert status_of(Entry("old", gone)) is MachineStatus.STALE


async def test_an_adopted_process_is_terminated_through_its_pidfd(
    sleeper: subprocess.Popen[bytes],
) -> None:
    assert AdoptedProcess.adopt(sleeper.pid, ("sleep", "1")) is None  # not that process
    adopted = AdoptedProcess.adopt(sleeper.pid, ("sleep", "300"))
    assert adopted is not None and adopted.returncode is None
    # vmlab is not the parent of a QEMU `vmlab up` started: its zombie counts as gone
    await asyncio.wait_for(terminate(adopted, grace=5), 10)
    assert adopted.returncode == -1
    with pytest.raises(ProcessLookupError):
        adopted.send_signal(0)


# -- down, clean, status, inventory -------------------------------------------


def _dead_machine(lab: Path, name: str) -> MachineRecord:
    runtime = lab.parent / f"vmlab-{name}x"
    runtime.mkdir()
    (runtime / "disk.qcow2").write_bytes(b"overlay")
    record = make_record(lab, name, 999_999_999, ("qemu",), runtime_dir=runtime)
    write_record(record)
    record.console_log.write_text("[    1.0] the last words\n")
    return record


async def test_clean_removes_dead_machines_and_never_touches_a_running_one(
    lab: Path, sleeper: subprocess.Popen[bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    dead = _dead_machine(lab, "db")
    runtime = lab.parent / "vmlab-webx"
    runtime.mkdir()
    running = make_record(lab, "web", sleeper.pid, ("sleep", "300"), runtime_dir=runtime)
    write_record(running)
    running.console_log.write_text("alive\n")
    assert await lifecycle_cmd.clean(lab) == 0
    out = capsys.readouterr().out
    assert "db: removed runtime dir" in out and "state file" in out and "console log" in out
    assert "web" not in out
    assert not dead.runtime_dir.exists() and not dead.console_log.exists()
    assert read_record(lab, "db") is None
    assert read_record(lab, "web") == running and runtime.is_dir()
    assert sleeper.poll() is None
    assert await lifecycle_cmd.clean(lab) == 0
    assert "nothing to clean" in capsys.readouterr().out


async def test_clean_never_removes_a_directory_that_is_not_a_runtime_dir(lab: Path) -> None:
    precious = lab.parent / "precious"
    precious.mkdir()
    write_record(make_record(lab, "db", 999_999_999, ("qemu",), runtime_dir=precious))
    await lifecycle_cmd.clean(lab)
    assert precious.is_dir()
    assert read_record(lab, "db") is None


async def test_down_of_a_dead_machine_cleans_up_and_keeps_its_console_log(
    lab: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dead = _dead_machine(lab, "db")
    assert await lifecycle_cmd.down(lab, ("db",)) == 0
    out = capsys.readouterr().out
    assert "db: was not running (QEMU gone)" in out and str(dead.console_log) in out
    assert not dead.runtime_dir.exists() and read_record(lab, "db") is None
    assert dead.console_log.exists()


async def test_down_stops_a_running_machine(
    lab: Path, sleeper: subprocess.Popen[bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    runtime = lab.parent / "vmlab-webx"
    runtime.mkdir()
    write_record(make_record(lab, "web", sleeper.pid, ("sleep", "300"), runtime_dir=runtime))
    assert await lifecycle_cmd.down(lab, ()) == 0
    assert "web: stopped" in capsys.readouterr().out
    assert sleeper.wait(timeout=5) == -15  # SIGTERM first
    assert not runtime.exists() and list_records(lab) == []


def test_status_table_and_json(
    lab: Path, sleeper: subprocess.Popen[bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    runtime = lab.parent / "vmlab-webx"
    runtime.mkdir()
    write_record(make_record(lab, "web", sleeper.pid, ("sleep", "300"), runtime_dir=runtime))
    _dead_machine(lab, "db")
    assert lifecycle_cmd.status(lab, as_json=False) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "machine",
        "state",
        "address",
        "uptime",
        "memory",
        "(RSS",
        "/",
        "size)",
    ]
    assert lines[1].split()[:3] == ["db", "dead", "(QEMU"]
    web = lines[2].split()
    assert web[:5] == ["web", "running", "ssh", "root@127.0.0.1:40022", "2m05s"]
    assert web[-1] == "512M" and web[-3].endswith("M")  # the sleeper's RSS
    assert "not running: db" in lines[3]
    assert lifecycle_cmd.status(lab, as_json=True) == 0
    rows = {row["machine"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["web"]["state"] == "running" and rows["web"]["pid"] == sleeper.pid
    assert rows["web"]["ssh_port"] == 40022 and rows["web"]["memory_mib"] == 512
    assert rows["db"]["state"] == "dead" and rows["db"]["uptime_s"] is None


def test_inventory_lists_running_machines_only(
    lab: Path, sleeper: subprocess.Popen[bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    runtime = lab.parent / "vmlab-webx"
    runtime.mkdir()
    write_record(make_record(lab, "web", sleeper.pid, ("sleep", "300"), runtime_dir=runtime))
    _dead_machine(lab, "db")
    assert lifecycle_cmd.inventory(lab) == 0
    inventory = yaml.safe_load(capsys.readouterr().out)
    assert inventory == {
        "all": {
            "hosts": {
                "web": {
                    "ansible_host": "127.0.0.1",
                    "ansible_port": 40022,
                    "ansible_user": "root",
                    "ansible_ssh_private_key_file": str(lab / ".vmlab/ssh/id_ed25519"),
                    "ansible_ssh_common_args": (
                        "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
                    ),
                }
            }
        }
    }


def test_inventory_yaml_of_no_machine_is_still_an_inventory() -> None:
    assert yaml.safe_load(inventory_yaml([])) == {"all": {"hosts": {}}}
    two = inventory_yaml(
        [InventoryHost("a", 1, "root", Path("/k")), InventoryHost("b", 2, "root", Path("/k"))]
    )
    assert list(yaml.safe_load(two)["all"]["hosts"]) == ["a", "b"]


def test_the_failing_line_of_a_playbook() -> None:
    output = (
        b"PLAY [all] ***\nTASK [x] ***\n"
        b'fatal: [web]: FAILED! => {"changed": false, "msg": "no such file"}\n'
        b"PLAY RECAP ***\nweb : ok=0 failed=1\n"
    )
    assert failure_line(output).startswith("fatal: [web]: FAILED!")
    assert failure_line(b"just\nthe end\n\n") == "the end"


def test_ssh_argv_and_durations(lab: Path) -> None:
    record = make_record(lab, "web", 1, ("qemu",))
    argv = lifecycle_cmd.ssh_argv(record)
    assert argv[0] == "ssh" and argv[-1] == "root@127.0.0.1"
    assert argv[argv.index("-p") + 1] == "40022"
    assert argv[argv.index("-i") + 1] == str(lab / ".vmlab/ssh/id_ed25519")
    assert "StrictHostKeyChecking=no" in argv and "UserKnownHostsFile=/dev/null" in argv
    assert [format_duration(s) for s in (5, 125, 7260, 90000)] == ["5s", "2m05s", "2h01m", "1d01h"]


def test_log_tail(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_bytes(b"".join(b"line %d\n" % i for i in range(200)))
    tail = lifecycle_cmd.log_tail(log, 3)
    assert tail == b"line 197\nline 198\nline 199\n"
    assert lifecycle_cmd.log_tail(tmp_path / "missing") == b""


# -- errors: one line each ------------------------------------------------------


def test_unknown_machine_suggests_close_names(lab: Path) -> None:
    write_record(make_record(lab, "web", 999_999_999, ("qemu",)))
    with pytest.raises(UsageError, match=r"no machine named 'wbe' \(did you mean 'web'\?\)"):
        lifecycle_cmd.select_entries(lab, ["wbe"])
    with pytest.raises(UsageError, match=r"machine db is not up \(vmlab up db\)"):
        lifecycle_cmd.select_entries(lab, ["db"])
    with pytest.raises(InfraError, match=r"its QEMU \(pid 999999999\) is gone"):
        lifecycle_cmd.running_record(lab, "web")


def test_no_lab_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such lab file"):
        lifecycle_cmd.lab_dir_of(tmp_path)
    with pytest.raises(UsageError, match="no such lab file"):
        lifecycle_cmd.lab_dir_of(tmp_path / "other.toml")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["up", "host"], "machine host boots the host's root, which has no background mode"),
        (["up", "wbe"], "no machine named 'wbe' (did you mean 'web'?)"),
        (["ssh", "web", "--", "true"], "machine web is not up (vmlab up web)"),
        (["console", "web"], "machine web is not up (vmlab up web)"),
        (["down", "nope"], "no machine named 'nope'"),
    ],
)
def test_cli_errors_are_one_line_and_exit_2(lab: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, [args[0], "--lab", str(lab), *args[1:]])
    assert result.exit_code == 2, result.output
    assert f"vmlab: {message}" in result.output
    assert "Traceback" not in result.output


def test_cli_without_a_lab_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for args in (["status"], ["down"], ["inventory"], ["clean"], ["up"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert "no such lab file" in result.output


def test_status_of_a_lab_with_nothing_up(lab: Path) -> None:
    result = CliRunner().invoke(app, ["status", "--lab", str(lab)])
    assert result.exit_code == 0 and "no machine is up" in result.output
    result = CliRunner().invoke(app, ["status", "--json", "--lab", str(lab)])
    assert json.loads(result.output) == []


# -- setup = { playbook = ... } -----------------------------------------------


def test_a_playbook_as_setup(tmp_path: Path) -> None:
    (tmp_path / "site.yml").write_text("- hosts: all\n")
    (tmp_path / "vmlab.toml").write_text(
        '[image.base]\n[machine.web]\nimage = "base"\nsetup = { playbook = "site.yml" }\n'
    )
    web = load_lab(tmp_path).machines["web"]
    assert web.playbook == tmp_path / "site.yml" and web.setup == ()


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ('{ playbook = "nope.yml" }', "setup.playbook: no such file"),
        ('{ play = "site.yml" }', "setup.playbook: missing"),
        ('{ playbook = "site.yml", x = 1 }', "setup.x: unknown key"),
        ('["a", 3]', 'setup[1]: expected a string, got integer 3 (quote it: "3")'),
        ("5", 'expected a shell command, an array of them, or { playbook = "site.yml" }'),
    ],
)
def test_bad_setup(tmp_path: Path, setup: str, message: str) -> None:
    (tmp_path / "vmlab.toml").write_text(
        f'[image.base]\n[machine.web]\nimage = "base"\nsetup = {setup}\n'
    )
    with pytest.raises(ConfigError, match=r"vmlab\.toml:4: machine\.web\.") as caught:
        load_lab(tmp_path)
    assert message in caught.value.message


def test_a_playbook_needs_a_disk_image_machine(tmp_path: Path) -> None:
    (tmp_path / "site.yml").write_text("- hosts: all\n")
    (tmp_path / "vmlab.toml").write_text('[machine.h]\nsetup = { playbook = "site.yml" }\n')
    with pytest.raises(ConfigError, match="a playbook needs a disk-image machine"):
        load_lab(tmp_path)


def test_ssh_login_without_a_client_says_how_to_get_one(
    lab: Path, sleeper: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = lab.parent / "vmlab-webx"
    runtime.mkdir()
    write_record(make_record(lab, "web", sleeper.pid, ("sleep", "300"), runtime_dir=runtime))
    monkeypatch.setenv("PATH", str(lab))  # no ssh there
    with pytest.raises(HostError, match=r"apt-get install openssh-client"):
        lifecycle_cmd.ssh_login(lab, "web")
