"""Real kernel bugs in real VMs (TCG): the crashers lab (tests/data/labs/crashers).

One `vmlab test --allow-dangerous` run of the lab, whose module fires a WARN_ON, a
BUG(), a NULL-pointer dereference, a soft lockup, a hung task, an RCU stall, a
silent hang, a taint and a leak, each in its own test with ordinary tests between
them. Each must be named as kernel developers name it, pinned on the test that
fired it and on no other, and the run must go on in fresh VMs.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from lab.helpers import LABS, vmlab

RUN_TIMEOUT = 1200  # the whole lab takes ~1 min alone on 2 cores; more beside a CI run
pytestmark = [pytest.mark.vm, pytest.mark.timeout(RUN_TIMEOUT + 300)]

# test id -> (outcome, kind, title) of the bugs that end their VM
STOPPERS = {
    "crashers/bug": ("crash", "BUG", "kernel BUG in crashers_bug"),
    "crashers/null": (
        "crash", "PAGE_FAULT", "BUG: kernel NULL pointer dereference in crashers_null",
    ),
    "crashers/softlockup": ("hang", "SOFT_LOCKUP", "BUG: soft lockup in crashers_spin"),
    "crashers/hung": ("hang", "HUNG_TASK", "INFO: task hung in crashers_hang"),
    "smp/rcu-stall": ("hang", "RCU_STALL", "INFO: rcu detected stall in crashers_spin"),
}  # fmt: skip
SILENT_HANG = "crashers/unresponsive"  # no report at all: only the heartbeat sees it
HANGS = [*(t for t, (outcome, _, _) in STOPPERS.items() if outcome == "hang"), SILENT_HANG]
ORDINARY = [
    *(f"crashers/ok-{n}" for n in range(1, 10)), "crashers/leak-control", "smp/ok-1", "smp/ok-2",
]  # fmt: skip
FAILING = ["crashers/warn", "crashers/taint", "crashers/leak"]
LEAK_KIB = 8192  # what crashers/leak leaks (leak.sh 8192)
NOISE_KIB = 1024  # what an ordinary test may move unreclaimable slab by


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Build crashers.ko on the host, then run the whole lab once."""
    work = tmp_path_factory.mktemp("crashers")
    lab = work / "lab"
    products = ("*.ko", "*.o", "*.mod", "*.mod.c", ".*.cmd", "*.symvers", "*.order", ".vmlab")
    shutil.copytree(LABS / "crashers", lab, ignore=shutil.ignore_patterns(*products))
    built = subprocess.run(["make", "-C", str(lab)], capture_output=True, text=True,
                           timeout=600, check=False)  # fmt: skip
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    assert (lab / "crashers.ko").is_file()
    began = time.monotonic()
    done = vmlab("test", str(lab), "--allow-dangerous", "--db", str(work / "r.db"),
                 "--out", str(work / "out"), cwd=work, timeout=RUN_TIMEOUT)  # fmt: skip
    elapsed = time.monotonic() - began
    results = json.loads((work / "out" / "results.json").read_text())
    by_id = {t["test_id"]: t for t in results["tests"]}
    return {"done": done, "work": work, "by_id": by_id, "elapsed": elapsed}


def result(run: dict[str, Any], test_id: str) -> dict[str, Any]:
    assert test_id in run["by_id"], f"no result for {test_id}: {sorted(run['by_id'])}"
    found: dict[str, Any] = run["by_id"][test_id]
    return found


def status(run: dict[str, Any], test_id: str) -> str:
    return str(result(run, test_id)["execution"]["status"])


def console_of(run: dict[str, Any], test_id: str) -> Path:
    artifacts = result(run, test_id)["artifacts"]
    assert "console" in artifacts, f"{test_id} has no console artifact: {artifacts}"
    path = Path(artifacts["console"])
    assert path.is_file(), path
    return path


def analyze(run: dict[str, Any], log: Path) -> list[dict[str, Any]]:
    """`vmlab crash analyze LOG --json`: every report in a console log."""
    done = vmlab("crash", "analyze", str(log), "--json", cwd=run["work"], timeout=120)
    assert done.returncode in (0, 1), done.stderr
    reports: list[dict[str, Any]] = json.loads(done.stdout)
    return reports


def test_every_test_has_its_outcome(run: dict[str, Any]) -> None:
    done = run["done"]
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    expected = {*STOPPERS, SILENT_HANG, *ORDINARY, *FAILING}
    cycle_checks = {t for t in run["by_id"] if t.startswith("cycles-")}  # checked below
    assert set(run["by_id"]) - cycle_checks == expected, done.stdout[-3000:]
    outcomes = {test_id: status(run, test_id) for test_id in sorted(expected)}
    want = {
        **{t: outcome for t, (outcome, _, _) in STOPPERS.items()},
        SILENT_HANG: "hang",
        **dict.fromkeys(ORDINARY, "passed"),
        **dict.fromkeys(FAILING, "failed"),
    }
    assert outcomes == want


def test_vmlab_prints_no_traceback(run: dict[str, Any]) -> None:
    """A VM that dies under a running command is an outcome, not an error:
    nothing on stderr but vmlab's own lines."""
    stderr = run["done"].stderr
    assert "Traceback" not in stderr, stderr[-3000:]
    assert "exception was never retrieved" not in stderr, stderr[-3000:]


@pytest.mark.parametrize("test_id", ORDINARY)
def test_ordinary_test_passes_beside_the_bugs(run: dict[str, Any], test_id: str) -> None:
    got = result(run, test_id)
    assert got["execution"]["status"] == "passed", got["message"]
    assert got["crash"] is None
    assert got["message"] == ""


@pytest.mark.parametrize("test_id", sorted(STOPPERS))
def test_bug_is_named_and_pinned_on_its_test(run: dict[str, Any], test_id: str) -> None:
    outcome, kind, title = STOPPERS[test_id]
    got = result(run, test_id)
    assert got["execution"]["status"] == outcome, got["message"]
    assert got["message"] == title
    crash = got["crash"]
    assert crash is not None
    assert (crash["title"], crash["kind"]) == (title, kind)
    assert re.fullmatch(r"[0-9a-f]{16}", crash["signature"])
    function = title.rsplit(" ", 1)[-1]
    assert function in crash["report"]
    assert function in console_of(run, test_id).read_text(errors="replace")


def test_warning_fails_the_monitored_test(run: dict[str, Any]) -> None:
    got = result(run, "crashers/warn")
    assert got["execution"]["status"] == "failed"
    assert "WARNING in crashers_warn" in got["message"]
    assert "kernel tainted during the test: W" in got["message"]
    assert got["crash"] is None  # the kernel went on: no VM was lost


def test_taint_alone_fails_the_test(run: dict[str, Any]) -> None:
    """`echo 64 > /proc/sys/kernel/tainted` prints no report; the taint check
    sees the new U all the same (and not the W left by `warn` before it)."""
    got = result(run, "crashers/taint")
    assert got["execution"]["status"] == "failed"
    assert re.search(r"kernel tainted during the test: U\b", got["message"]), got["message"]
    assert "W" not in got["message"].split("tainted during the test:", 1)[1].split("(")[0]


def test_leak_shows_in_the_memory_deltas_of_its_test_only(run: dict[str, Any]) -> None:
    leak = result(run, "crashers/leak")
    assert leak["execution"]["status"] == "failed"
    assert "leak: unreclaimable slab grew by" in leak["message"]
    metrics = leak["metrics"]
    assert metrics["slab_unreclaimable_delta_kib"] >= LEAK_KIB - NOISE_KIB, metrics
    assert metrics["mem_available_delta_kib"] <= -(LEAK_KIB - 2 * NOISE_KIB), metrics
    for test_id in ORDINARY:  # leak-control ran the same check, leaking nothing
        deltas = result(run, test_id)["metrics"]
        assert abs(deltas["slab_unreclaimable_delta_kib"]) < NOISE_KIB, (test_id, deltas)
        assert abs(deltas["mem_available_delta_kib"]) < 2 * NOISE_KIB, (test_id, deltas)


def test_guest_that_stops_answering_is_a_hang(run: dict[str, Any]) -> None:
    got = result(run, SILENT_HANG)
    assert got["execution"]["status"] == "hang", got["message"]
    assert "stopped answering" in got["message"]
    assert got["crash"] is not None
    assert got["crash"]["title"] == got["message"]
    # No detector was on: the console holds no report, only the task dumps.
    assert analyze(run, console_of(run, SILENT_HANG)) == []


@pytest.mark.parametrize("test_id", HANGS)
def test_hang_dumps_blocked_and_running_tasks_first(run: dict[str, Any], test_id: str) -> None:
    text = console_of(run, test_id).read_text(errors="replace")
    assert "sysrq: Show Blocked State" in text  # SysRq w
    assert "sysrq: Show State" in text  # SysRq t


def test_task_dumps_show_where_the_guest_is_stuck(run: dict[str, Any]) -> None:
    """The hung task is in the blocked-task dump; the spinning one, found by no
    detector, in the dump of the running tasks."""
    hung = console_of(run, "crashers/hung").read_text(errors="replace")
    assert "crashers_hang" in hung.split("sysrq: Show Blocked State", 1)[-1]
    silent = console_of(run, SILENT_HANG).read_text(errors="replace")
    dumps = silent.split("sysrq:", 1)[-1] if "sysrq: Show" in silent else ""
    assert "crashers_spin" in dumps, silent[-3000:]


def test_each_vm_console_holds_only_its_own_bug(run: dict[str, Any]) -> None:
    """The VM of each dangerous test is its own, and the reports in its console
    are that test's bug only; the shared VMs saw only the warning of `warn`."""
    stoppers = [*STOPPERS, SILENT_HANG]
    consoles = {test_id: console_of(run, test_id) for test_id in stoppers}
    assert len(set(consoles.values())) == len(consoles), consoles
    for test_id, (_, _, title) in STOPPERS.items():
        reports = analyze(run, consoles[test_id])
        assert reports, test_id
        assert {r["title"] for r in reports} == {title}, (test_id, reports)
        assert reports[0]["signature"] == result(run, test_id)["crash"]["signature"]
    shared = set((run["work"] / "out" / "console").glob("*.log")) - set(consoles.values())
    assert shared
    titles = [r["title"] for log in sorted(shared) for r in analyze(run, log)]
    assert titles == ["WARNING in crashers_warn"]


def test_different_bugs_have_different_signatures(run: dict[str, Any]) -> None:
    signatures = {t: result(run, t)["crash"]["signature"] for t in [*STOPPERS, SILENT_HANG]}
    assert len(set(signatures.values())) == len(signatures), signatures


def test_show_lists_every_crash_with_its_signature(run: dict[str, Any]) -> None:
    shown = vmlab("show", "latest", "--db", str(run["work"] / "r.db"), cwd=run["work"])
    assert shown.returncode == 1, shown.stderr
    text = " ".join(shown.stdout.split())  # as if no line were wrapped
    for test_id in [*STOPPERS, SILENT_HANG]:
        crash = result(run, test_id)["crash"]
        assert f"{crash['title']} [{crash['signature']}]" in text, (test_id, shown.stdout)


def test_module_cycle_check_flags_a_module_that_leaks_on_load(run: dict[str, Any]) -> None:
    leaky = result(run, "cycles-leaky/module-cycles/slab_growth")
    assert leaky["execution"]["status"] == "failed"
    assert leaky["metrics"]["slab_unreclaimable_growth_kib"] > 1024
    assert status(run, "cycles-leaky/module-cycles/cycles") == "passed"
    clean = result(run, "cycles-clean/module-cycles/slab_growth")
    assert clean["execution"]["status"] == "passed"
    assert clean["metrics"]["slab_unreclaimable_growth_kib"] <= 1024
    assert status(run, "cycles-clean/module-cycles/unloaded") == "passed"
