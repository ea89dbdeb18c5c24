"""`vmlab test` end to end on the smoke lab: outcomes, recovery, store, reports."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import xmlschema

from lab.helpers import ENV, LABS, VMLAB, vmlab, vmlab_qemus
from vmlab.results.store import Store

pytestmark = pytest.mark.vm
XSD = Path(__file__).resolve().parents[1] / "data" / "junit" / "junit.xsd"


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One run of the smoke lab with --allow-dangerous, shared by the tests below."""
    work = tmp_path_factory.mktemp("smoke")
    lab = work / "lab"
    shutil.copytree(LABS / "smoke", lab)
    done = vmlab("test", str(lab), "--allow-dangerous", "--db", str(work / "r.db"),
                 "--out", str(work / "out"), cwd=work)  # fmt: skip
    results = json.loads((work / "out" / "results.json").read_text())
    by_id = {t["test_id"]: t for t in results["tests"]}
    return {"done": done, "work": work, "results": results, "by_id": by_id}


def status(run: dict[str, Any], test_id: str) -> str:
    return str(run["by_id"][test_id]["execution"]["status"])


@pytest.mark.timeout(600)
def test_outcomes_of_each_kind(smoke_run: dict[str, Any]) -> None:
    done = smoke_run["done"]
    assert done.returncode == 1, done.stdout + done.stderr
    assert status(smoke_run, "basic/ok") == "passed"
    assert status(smoke_run, "basic/fails") == "failed"
    assert smoke_run["by_id"]["basic/fails"]["message"] == "exit status 3: about to fail"
    missing = smoke_run["by_id"]["basic/missing"]
    assert missing["execution"]["status"] == "failed"
    assert "not found" in missing["message"]


@pytest.mark.timeout(600)
def test_tap_subtests_become_results_with_metrics(smoke_run: dict[str, Any]) -> None:
    assert status(smoke_run, "basic/tap/first") == "passed"
    assert status(smoke_run, "basic/tap/second") == "failed"
    assert smoke_run["by_id"]["basic/tap/second"]["metrics"] == {"speed": 12.5}
    assert status(smoke_run, "basic/tap/third") == "skipped"
    # The command itself: it exited 0 and left the kernel clean, with its metrics.
    assert status(smoke_run, "basic/tap") == "passed"
    assert "mem_available_delta_kib" in smoke_run["by_id"]["basic/tap"]["metrics"]


@pytest.mark.timeout(600)
def test_timeout_and_crash_are_recovered_from(smoke_run: dict[str, Any]) -> None:
    assert status(smoke_run, "basic/slow") == "timeout"
    assert status(smoke_run, "basic/after-timeout") == "passed"
    panic = smoke_run["by_id"]["basic/panic"]
    assert panic["execution"]["status"] == "crash"
    assert panic["crash"]["title"] == "kernel panic: sysrq triggered crash"
    assert panic["crash"]["kind"] == "PANIC"
    console = Path(panic["artifacts"]["console"])
    assert "Kernel panic - not syncing" in console.read_text(errors="replace")
    # The test after the crash ran in a fresh VM: an untainted kernel.
    assert status(smoke_run, "basic/after-panic") == "passed"


@pytest.mark.timeout(600)
def test_reports_and_store_agree(smoke_run: dict[str, Any]) -> None:
    work: Path = smoke_run["work"]
    junit = work / "out" / "junit.xml"
    xmlschema.XMLSchema(str(XSD)).validate(str(junit))
    summary = smoke_run["results"]["summary"]["domains"]["kernel_module"]
    assert (summary["passed"], summary["skipped"]) == (5, 1)
    with Store.open(f"sqlite:///{work / 'r.db'}") as store:
        run = store.get_run("latest")
    assert len(run.results) == len(smoke_run["by_id"]) == 11
    assert run.status.value == "completed"
    shown = vmlab("show", "latest", "--db", str(work / "r.db"), cwd=work)
    assert shown.returncode == 1
    assert "kernel panic: sysrq triggered crash" in shown.stdout
    exported = vmlab("export", "latest", "--format", "junit", "-o", str(work / "again.xml"),
                     "--db", str(work / "r.db"), cwd=work)  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    xmlschema.XMLSchema(str(XSD)).validate(str(work / "again.xml"))
    listed = vmlab("runs", "--db", str(work / "r.db"), cwd=work)
    assert run.run_id in listed.stdout


@pytest.mark.timeout(300)
def test_dangerous_is_skipped_without_the_flag(tmp_path: Path) -> None:
    done = vmlab("test", str(LABS / "smoke"), "-k", "panic", "--db", str(tmp_path / "r.db"),
                 "--out", str(tmp_path / "out"), cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    tests = json.loads((tmp_path / "out" / "results.json").read_text())["tests"]
    by_id = {t["test_id"]: t for t in tests}
    assert by_id["basic/panic"]["execution"]["status"] == "skipped"
    assert "allow-dangerous" in by_id["basic/panic"]["message"]


@pytest.mark.timeout(300)
def test_postgresql_store(tmp_path: Path, pg_url: str) -> None:
    done = vmlab("test", str(LABS / "smoke"), "-k", "ok or tap", "--db", pg_url,
                 "--out", str(tmp_path / "out"), cwd=tmp_path)  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr  # tap/second fails
    with Store.open(pg_url) as store:
        run = store.get_run("latest")
    outcomes = {r.test_id: r.outcome.value for r in run.results}
    assert outcomes == {"basic/ok": "passed", "basic/tap": "passed", "basic/tap/first": "passed",
                        "basic/tap/second": "failed", "basic/tap/third": "skipped"}  # fmt: skip


@pytest.mark.timeout(300)
def test_ctrl_c_saves_an_interrupted_run(tmp_path: Path) -> None:
    lab = tmp_path / "vmlab.toml"
    lab.write_text(
        '[machine.vm]\naccel = "tcg"\n[suite.s]\n'
        '[[suite.s.test]]\nname = "quick"\nrun = "true"\n'
        '[[suite.s.test]]\nname = "long"\nrun = "sleep 600"\ntimeout = 900\n'
    )
    proc = subprocess.Popen(
        [str(VMLAB), "test", str(lab), "--jobs", "1", "--db", str(tmp_path / "r.db")],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:  # wait until the first test finished
        if "s/quick" in line:
            break
    time.sleep(1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == (
        "vmlab: interrupted; the VMs were stopped and the run was saved as interrupted"
    )
    assert not vmlab_qemus()
    with Store.open(f"sqlite:///{tmp_path / 'r.db'}") as store:
        run = store.get_run("latest")
    assert run.status.value == "interrupted"
    assert [r.test_id for r in run.results] == ["s/quick"]


BAD_LABS = {
    "malformed": ("[machine.vm\n", "vmlab.toml:1:"),
    "unknown key": ('[machine.vm]\nmemroy = "1G"\n', "vmlab.toml:2: machine.vm.memroy"),
    "missing machine": (
        '[machine.vm]\n[suite.s]\nmachine = "nope"\n[[suite.s.test]]\nname = "t"\nrun = "true"\n',
        "vmlab.toml:3:",
    ),
    "cycle": (
        '[machine.vm]\n[suite.a]\nrequires = ["y"]\nprovides = ["x"]\n'
        '[[suite.a.test]]\nname = "t"\nrun = "true"\n'
        '[suite.b]\nrequires = ["x"]\nprovides = ["y"]\n'
        '[[suite.b.test]]\nname = "t"\nrun = "true"\n',
        "->",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_LABS))
@pytest.mark.timeout(60)
def test_bad_lab_is_one_line_and_starts_nothing(tmp_path: Path, case: str) -> None:
    text, expected = BAD_LABS[case]
    (tmp_path / "vmlab.toml").write_text(text)
    done = vmlab("test", "--db", str(tmp_path / "r.db"), cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vmlab: "), done.stderr
    assert expected in lines[0]
    assert "Traceback" not in done.stderr
    assert not (tmp_path / ".vmlab" / "runs").exists()


@pytest.mark.timeout(300)
def test_pytest_lab_test_gets_a_vm_fixture(tmp_path: Path) -> None:
    done = vmlab("test", str(LABS.parent / "pytest_lab"), "--db", str(tmp_path / "r.db"),
                 "--out", str(tmp_path / "out"), cwd=tmp_path)  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    tests = json.loads((tmp_path / "out" / "results.json").read_text())["tests"]
    outcomes = {t["test_id"].rsplit("/", 1)[-1]: t["execution"]["status"] for t in tests}
    assert outcomes.pop("test_reports_failure") == "failed"
    assert len(outcomes) >= 5
    assert set(outcomes.values()) == {"passed"}, outcomes
    assert all(t["test_id"].startswith("guest/checks") for t in tests)
