"""`vmlab up | status | test | down` on a lab whose machines share a private
network, through the installed `vmlab` command: two real disk-image machines
stay up on one network (its switch runs detached, recorded in the lab), reach
each other, and a host-root machine that `vmlab test` boots joins the same
network and reaches them. `down` of one machine keeps the switch for the
other; `down` of the last stops it. Nothing may be left running.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from vmlab.machine.image_build import BuiltImage
from vmlab.results.model import Outcome

from .images import image_table
from .test_lifecycle import VMLAB, _processes, _qemus_of

pytestmark = [pytest.mark.vm, pytest.mark.timeout(1500)]

REACH = "python3 -c 'import socket, sys; socket.create_connection((sys.argv[1], 22), timeout=20)'"


def _lab_file() -> str:
    return f"""
[lab]
name = "uplan"

{image_table()}
[network.lan]
subnet = "10.77.9.0/24"

[machine.a]
image = "base"
memory = "512M"
networks = ["lan"]

[machine.b]
image = "base"
memory = "512M"
networks = ["lan"]
internet = true  # user networking with a way out (a has none)

[machine.c]  # host-root: booted by vmlab test, on the network of the machines that are up
memory = "256M"
networks = ["lan"]

[suite.reach]
machine = "c"

[[suite.reach.test]]
name = "a"
run = "{REACH} a"

[[suite.reach.test]]
name = "b"
run = "{REACH} b"
"""


@dataclass
class NetLab:
    root: Path
    env: dict[str, str]
    up: subprocess.CompletedProcess[str]

    def vmlab(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [VMLAB, *args], cwd=self.root, env=self.env, capture_output=True, text=True,
            timeout=timeout, check=False,
        )  # fmt: skip

    def switch_pid(self) -> int:
        record = json.loads((self.root / ".vmlab" / "networks" / "lan.json").read_text())
        state = json.loads((Path(record["directory"]) / "switch.json").read_text())
        pid = state["pid"]
        assert isinstance(pid, int)
        return pid


def _switches_of(lab: Path) -> list[int]:
    """Pids of switch processes whose directory the lab's network record names."""
    record = lab / ".vmlab" / "networks" / "lan.json"
    if not record.exists():
        return []
    directory = json.loads(record.read_text())["directory"].encode()
    return [
        pid
        for pid, cmdline in _processes()
        if b"vmlab.net.switch" in cmdline and directory in cmdline
    ]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture(scope="module")
def net_lab(built_image: BuiltImage, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetLab]:
    assert built_image.base.exists()
    root = tmp_path_factory.mktemp("uplan")
    (root / "vmlab.toml").write_text(_lab_file())
    runtime = tmp_path_factory.mktemp("run")
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "TMPDIR": str(runtime)}
    done = subprocess.run(
        [VMLAB, "up"], cwd=root, env=env, capture_output=True, text=True, timeout=1200, check=False
    )
    lab = NetLab(root, env, done)
    switches = _switches_of(root)
    try:
        yield lab
    finally:
        lab.vmlab("down")
        left = _qemus_of(root) + [pid for pid in switches if _alive(pid)]
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        assert not left, f"processes of the lab were left running: {left}"


def test_up_starts_the_network_once_and_both_machines_on_it(net_lab: NetLab) -> None:
    assert net_lab.up.returncode == 0, net_lab.up.stdout + net_lab.up.stderr
    out = net_lab.up.stdout
    assert out.count("network lan: switch started") == 1, out
    assert "a: up in" in out and "b: up in" in out
    assert _alive(net_lab.switch_pid())
    rows = {row["machine"]: row for row in json.loads(net_lab.vmlab("status", "--json").stdout)}
    assert rows["a"]["networks"] == ["lan"] and rows["b"]["networks"] == ["lan"]
    status = net_lab.vmlab("status")
    assert f"network lan: switch running (pid {net_lab.switch_pid()}; a, b, c)" in status.stdout


def test_the_machines_that_are_up_reach_each_other_by_name(net_lab: NetLab) -> None:
    for here, there in (("a", "b"), ("b", "a")):
        done = net_lab.vmlab("ssh", here, "--", REACH, there)
        assert done.returncode == 0, f"{here} -> {there}: {done.stderr}"
    address = net_lab.vmlab("ssh", "a", "--", "getent", "hosts", "b")
    assert address.stdout.split()[0] == "10.77.9.11", address.stdout


def test_a_killed_switch_is_brought_back_by_up_and_the_machines_reconnect(net_lab: NetLab) -> None:
    killed = net_lab.switch_pid()
    os.kill(killed, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _alive(killed) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "its switch (pid" in net_lab.vmlab("status").stdout
    cut = net_lab.vmlab("ssh", "a", "--", REACH.replace("20", "3"), "b")
    assert cut.returncode != 0, "a reached b with its network's switch dead"
    again = net_lab.vmlab("up")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "network lan: its switch was gone; started again" in again.stdout
    assert "a: already up" in again.stdout and "b: already up" in again.stdout
    assert net_lab.switch_pid() != killed
    done = net_lab.vmlab("ssh", "a", "--", REACH, "b")
    assert done.returncode == 0, done.stderr


PROBE = (
    "python3 -c 'import socket, sys\n"
    'try:\n socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5); print("in")\n'
    "except OSError as e:\n print(type(e).__name__)'"
)


def test_only_the_machine_with_internet_has_a_way_out(net_lab: NetLab) -> None:
    # A listener on the host's loopback: user networking's gateway (10.0.2.2)
    # leads there only when the machine says `internet = true`.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = str(listener.getsockname()[1])
        out = net_lab.vmlab("ssh", "b", "--", PROBE, "10.0.2.2", port)
        assert out.stdout.strip() == "in", out.stdout + out.stderr
        shut = net_lab.vmlab("ssh", "a", "--", PROBE, "10.0.2.2", port)
        assert shut.stdout.strip() in {"TimeoutError", "ConnectionRefusedError", "OSError"}, (
            shut.stdout + shut.stderr
        )


def test_vmlab_test_boots_a_machine_onto_the_network_that_is_up(net_lab: NetLab) -> None:
    pid = net_lab.switch_pid()
    out = net_lab.root / "out"
    done = net_lab.vmlab("test", "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads((out / "results.json").read_text())
    outcomes = {t["test_id"]: t["execution"]["status"] for t in results["tests"]}
    passed = Outcome.PASSED.value
    assert outcomes == {"reach/a": passed, "reach/b": passed}, outcomes
    assert net_lab.switch_pid() == pid and _alive(pid)  # the run left it running


def test_down_keeps_the_switch_for_the_machine_still_up_and_stops_it_with_the_last(
    net_lab: NetLab,
) -> None:
    pid = net_lab.switch_pid()
    first = net_lab.vmlab("down", "a")
    assert first.returncode == 0, first.stderr
    assert "a: stopped" in first.stdout and "network lan" not in first.stdout
    assert _alive(pid)
    again = net_lab.vmlab("ssh", "b", "--", "true")
    assert again.returncode == 0, again.stderr
    last = net_lab.vmlab("down")
    assert last.returncode == 0, last.stderr
    assert "b: stopped" in last.stdout and "network lan: switch stopped" in last.stdout
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid)
    assert not (net_lab.root / ".vmlab" / "networks" / "lan.json").exists()
    assert _qemus_of(net_lab.root) == []
