"""`vmlab up | status | ssh | console | inventory | test | down | clean` on one
real disk-image machine, driven through the installed `vmlab` command.

One boot for the whole module (about a minute or two under TCG): the tests run
in file order against the machine that `vmlab up` left running, and the last
one kills its QEMU behind vmlab's back and checks that `down` cleans up. The
machine's setup is an Ansible playbook, so `up` also proves the playbook hook
and the inventory it uses. Nothing may be left running: the module's teardown
kills (by pid) and reports any QEMU of this lab.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from vmlab.machine.image_build import BuiltImage
from vmlab.results.model import Outcome

from .images import TEST_IMAGE_SPEC

VMLAB = str(Path(sys.executable).parent / "vmlab")
MACHINE = "web"

pytestmark = [pytest.mark.vm, pytest.mark.timeout(1500)]


@dataclass
class UpLab:
    root: Path
    env: dict[str, str]
    runtime_base: Path
    up_seconds: float
    up: subprocess.CompletedProcess[str]

    def vmlab(
        self, *args: str, input: str | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [VMLAB, *args], cwd=self.root, env=self.env, input=input, capture_output=True,
            text=True, timeout=timeout, check=False,
        )  # fmt: skip

    def vmlab_bytes(self, *args: str, input: bytes) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [VMLAB, *args], cwd=self.root, env=self.env, input=input, capture_output=True,
            timeout=60, check=False,
        )  # fmt: skip

    def status(self) -> list[dict[str, object]]:
        done = self.vmlab("status", "--json")
        assert done.returncode == 0, done.stderr
        rows = json.loads(done.stdout)
        assert isinstance(rows, list)
        return rows

    def record(self) -> dict[str, object]:
        data = json.loads((self.root / ".vmlab" / "machines" / f"{MACHINE}.json").read_text())
        assert isinstance(data, dict)
        return data


def _lab_file() -> str:
    packages = ", ".join(f'"{p}"' for p in TEST_IMAGE_SPEC.packages)
    return f"""
[lab]
name = "lifecycle"

[image.base]  # the same recipe as TEST_IMAGE_SPEC: the cached image
packages = [{packages}]
size = "{TEST_IMAGE_SPEC.size_mib}M"

[machine.{MACHINE}]
image = "base"
memory = "512M"
setup = {{ playbook = "site.yml" }}

[suite.smoke]
machine = "{MACHINE}"

[[suite.smoke.test]]
name = "provisioned"
run = "grep -q from-ansible /etc/vmlab-playbook && test -f data/hello.txt"

[suite.crash]
machine = "{MACHINE}"

[[suite.crash.test]]
name = "panic"
run = "echo c >/proc/sysrq-trigger"
safety = "risky"

[[suite.crash.test]]
name = "after"
run = "grep -q from-ansible /etc/vmlab-playbook"
"""


PLAYBOOK = """
- hosts: all
  gather_facts: false
  tasks:
    - name: leave a mark
      ansible.builtin.copy:
        dest: /etc/vmlab-playbook
        content: "from-ansible {{ inventory_hostname }}\\n"
"""


def _processes() -> Iterator[tuple[int, bytes]]:
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                yield int(proc.name), (proc / "cmdline").read_bytes()
            except OSError:
                continue


def _qemus_of(lab: Path) -> list[int]:
    """Pids of processes whose command line names the lab's directory (its QEMU
    has the console log there)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline and b"qemu-system" in cmdline[0] and str(lab).encode() in b" ".join(cmdline):
            pids.append(int(proc.name))
    return pids


@pytest.fixture(scope="module")
def up_lab(built_image: BuiltImage, tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpLab]:
    assert built_image.base.exists()
    if (
        shutil.which("ansible-playbook") is None
        and not (Path(sys.executable).parent / "ansible-playbook").exists()
    ):
        pytest.fail("ansible-playbook is missing: pip install ansible-core (the [ansible] extra)")
    root = tmp_path_factory.mktemp("lifecycle")
    (root / "vmlab.toml").write_text(_lab_file())
    (root / "site.yml").write_text(PLAYBOOK)
    (root / "data").mkdir()
    (root / "data" / "hello.txt").write_text("hello\n")
    runtime = tmp_path_factory.mktemp("run")
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "TMPDIR": str(runtime)}
    started = time.monotonic()
    done = subprocess.run(
        [VMLAB, "up"], cwd=root, env=env, capture_output=True, text=True, timeout=1200, check=False
    )
    lab = UpLab(root, env, runtime, time.monotonic() - started, done)
    try:
        yield lab
    finally:
        lab.vmlab("down")
        left = _qemus_of(root)
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        assert not left, f"QEMU processes of the lab were left running: {left}"


def test_up_leaves_the_machine_running(up_lab: UpLab) -> None:
    assert up_lab.up.returncode == 0, up_lab.up.stdout + up_lab.up.stderr
    assert f"{MACHINE}: booting" in up_lab.up.stdout
    assert f"{MACHINE}: up in" in up_lab.up.stdout
    print(f"vmlab up (one machine, with its playbook): {up_lab.up_seconds:.1f}s")
    # vmlab has exited; its QEMU has not
    record = up_lab.record()
    pid = record["pid"]
    assert isinstance(pid, int)
    assert _qemus_of(up_lab.root) == [pid]
    runtime = Path(str(record["runtime_dir"]))
    assert runtime.parent == up_lab.runtime_base  # sockets stay under the runtime base
    assert (runtime / "owner.pid").read_text().strip() == str(pid)  # not swept as stale
    assert len(str(record["qmp_socket"])) < 108
    assert record["snapshot"] == "vmlab-ready"
    # Ansible's shared ssh connections (ControlPersist) ended with the playbook
    muxes = [
        pid
        for pid, cmd in _processes()
        if b"[mux]" in cmd and str(up_lab.runtime_base).encode() in cmd
    ]
    assert not muxes

    started = time.monotonic()
    (row,) = up_lab.status()
    print(f"vmlab status: {time.monotonic() - started:.2f}s")
    assert row["machine"] == MACHINE
    assert row["state"] == "running"
    assert row["address"] == f"ssh root@127.0.0.1:{record['ssh_port']}"
    assert row["memory_mib"] == 512
    assert isinstance(row["rss_mib"], int) and row["rss_mib"] > 0

    plain = up_lab.vmlab("status")
    assert plain.returncode == 0
    assert "running" in plain.stdout and f"127.0.0.1:{record['ssh_port']}" in plain.stdout

    again = up_lab.vmlab("up", MACHINE)
    assert again.returncode == 0, again.stderr
    assert "already up" in again.stdout
    assert up_lab.record()["pid"] == pid


def test_ssh_runs_a_command_with_its_status_and_output(up_lab: UpLab) -> None:
    started = time.monotonic()
    done = up_lab.vmlab("ssh", MACHINE, "--", "cat /etc/vmlab-playbook; echo oops >&2; exit 7")
    print(f"vmlab ssh round trip: {time.monotonic() - started:.2f}s")
    assert done.returncode == 7, done.stderr
    assert done.stdout == f"from-ansible {MACHINE}\n"  # the playbook ran at `up`
    assert "oops" in done.stderr
    piped = up_lab.vmlab("ssh", MACHINE, "--", "tr", "a-z", "A-Z", input="shout\n")
    assert piped.returncode == 0 and piped.stdout == "SHOUT\n"
    # without CMD: the system ssh client (here fed a script on stdin, no terminal)
    login = up_lab.vmlab("ssh", MACHINE, input="hostname; exit 4\n")
    assert login.returncode == 4, login.stderr
    assert MACHINE in login.stdout.splitlines()


def test_inventory_is_ansible_yaml_of_the_running_machines(up_lab: UpLab) -> None:
    done = up_lab.vmlab("inventory")
    assert done.returncode == 0, done.stderr
    inventory = yaml.safe_load(done.stdout)
    host = inventory["all"]["hosts"][MACHINE]
    record = up_lab.record()
    assert host["ansible_host"] == "127.0.0.1"
    assert host["ansible_port"] == record["ssh_port"]
    assert host["ansible_user"] == "root"
    assert host["ansible_ssh_private_key_file"] == record["key_path"]
    assert "StrictHostKeyChecking=no" in host["ansible_ssh_common_args"]


def test_vmlab_test_uses_the_machine_that_is_up(up_lab: UpLab) -> None:
    pid = up_lab.record()["pid"]
    out = up_lab.root / "out"
    done = up_lab.vmlab("test", "--out", str(out), "--suite", "smoke", timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads((out / "results.json").read_text())
    outcomes = {t["test_id"]: t["execution"]["status"] for t in results["tests"]}
    assert outcomes == {"smoke/provisioned": Outcome.PASSED.value}
    assert not (out / "console").exists()  # nothing was booted
    assert up_lab.record()["pid"] == pid  # and the machine is still up
    assert _qemus_of(up_lab.root) == [pid]
    (row,) = up_lab.status()
    assert row["state"] == "running"


def test_a_crash_in_a_machine_that_is_up_is_restored_from_its_snapshot(up_lab: UpLab) -> None:
    before = up_lab.record()
    out = up_lab.root / "out-crash"
    done = up_lab.vmlab("test", "--out", str(out), "--suite", "crash", timeout=900)
    assert done.returncode == 1, done.stdout + done.stderr  # a crash is a failure
    results = json.loads((out / "results.json").read_text())
    outcomes = {t["test_id"]: t["execution"]["status"] for t in results["tests"]}
    assert outcomes == {"crash/panic": Outcome.CRASH.value, "crash/after": Outcome.PASSED.value}
    # The panic ended the QEMU `vmlab up` started; `vmlab test` resumed the
    # snapshot in a new QEMU that outlived it and is recorded in its place.
    after = up_lab.record()
    assert after["pid"] != before["pid"]
    assert isinstance(after["argv"], list) and "-loadvm" in after["argv"]
    assert after["runtime_dir"] == before["runtime_dir"]
    assert _qemus_of(up_lab.root) == [after["pid"]]
    runtime = Path(str(after["runtime_dir"]))
    assert (runtime / "owner.pid").read_text().strip() == str(after["pid"])
    (row,) = up_lab.status()
    assert row["state"] == "running"
    ssh = up_lab.vmlab("ssh", MACHINE, "--", "cat /etc/vmlab-playbook")
    assert ssh.returncode == 0 and ssh.stdout == f"from-ansible {MACHINE}\n"


def test_console_shows_the_log_and_detaches_with_ctrl_bracket(up_lab: UpLab) -> None:
    done = up_lab.vmlab_bytes("console", MACHINE, input=b"\n\x1d")
    assert done.returncode == 0, done.stderr
    assert b"VMLAB-READY" in done.stdout  # the tail of the console log
    assert b"Ctrl-] detaches" in done.stderr
    assert b"detached" in done.stderr
    (row,) = up_lab.status()
    assert row["state"] == "running"


def test_a_qemu_killed_behind_vmlabs_back_is_dead_and_down_cleans_up(up_lab: UpLab) -> None:
    record = up_lab.record()
    pid = record["pid"]
    assert isinstance(pid, int)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while pid in _qemus_of(up_lab.root) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pid not in _qemus_of(up_lab.root)

    (row,) = up_lab.status()
    assert row["state"] == "dead"
    ssh = up_lab.vmlab("ssh", MACHINE, "--", "true")
    assert ssh.returncode == 125
    assert "is not running" in ssh.stderr and "Traceback" not in ssh.stderr

    down = up_lab.vmlab("down")
    assert down.returncode == 0, down.stderr
    assert "was not running" in down.stdout
    assert not (up_lab.root / ".vmlab" / "machines" / f"{MACHINE}.json").exists()
    assert not Path(str(record["runtime_dir"])).exists()
    assert not list(up_lab.runtime_base.glob("vmlab-*"))
    assert up_lab.status() == []
    assert _qemus_of(up_lab.root) == []

    clean = up_lab.vmlab("clean")
    assert clean.returncode == 0
    assert "console log" in clean.stdout  # down kept the dead machine's log; clean takes it
    assert not list((up_lab.root / ".vmlab" / "machines").glob(f"{MACHINE}.*"))
