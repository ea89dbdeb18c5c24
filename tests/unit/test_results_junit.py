"""JUnit XML: valid against the JUnit schema, counts right, one testsuite per domain."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import xmlschema

from vmlab.errors import HostError
from vmlab.results import CrashInfo, Outcome, RunRecord, TestResult, VmSpec
from vmlab.results.junit import junit_bytes, write_junit

XSD = Path(__file__).resolve().parent.parent / "data" / "junit" / "junit.xsd"
T0 = datetime(2026, 11, 21, 3, 1, 2, 500000, tzinfo=UTC)


@pytest.fixture(scope="module")
def schema() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(str(XSD))


def make_result(
    test_id: str, outcome: Outcome = Outcome.PASSED, domain: str = "filesystem", **changes: object
) -> TestResult:
    result = TestResult(
        test_id=test_id,
        suite=test_id.split("/", maxsplit=1)[0],
        domain=domain,
        level=1,
        safety="safe",
        machine="vm1",
        vm=VmSpec(memory_mib=512, cpus=1, kernel="6.1.0-28-amd64"),
        start=T0,
        duration_s=0.25,
        outcome=outcome,
    )
    return replace(result, **changes)  # type: ignore[arg-type]


CRASH = CrashInfo(
    title="BUG: kernel NULL pointer dereference",
    kind="oops",
    signature="ramfs2_fill_super+0x12",
    report="[ 1.0] BUG: kernel NULL pointer dereference\n[ 1.0] RIP: ramfs2_fill_super+0x12",
)

RESULTS = (
    make_result("fs/basic/create", output_tail="created 10 files\n"),
    make_result("fs/basic/remount", Outcome.FAILED, message="checksum mismatch", output_tail="x\n"),
    make_result("fs/stress/writers", Outcome.TIMEOUT, message="timed out after 60s"),
    make_result("fs/big", Outcome.SKIPPED, message="dangerous: needs --allow-dangerous"),
    make_result(
        "kmod/load/cycle",
        Outcome.CRASH,
        domain="kernel_module",
        crash=CRASH,
        message="guest crashed",
        start=T0 - timedelta(seconds=30),
    ),
    make_result("kmod/load/hang", Outcome.HANG, domain="kernel_module", message="no heartbeat"),
    make_result("kmod/setup", Outcome.ERROR, domain="kernel_module", message="make failed"),
    make_result("perf", domain="performance", duration_s=2.0, metrics={"ops": 1e6}),
)

RUN = RunRecord(
    run_id="20261121-030102-ab12",
    start=T0 - timedelta(minutes=1),
    end=T0 + timedelta(minutes=1),
    host="builder",
    accel="tcg",
    qemu_version="7.2.15",
    kernel_release="6.1.0-28-amd64",
    kernel_config_hash="sha256:cc",
    lab_hash="sha256:aa",
    git_commit="0123abc",
    results=RESULTS,
)


def test_the_report_is_valid_junit(tmp_path: Path, schema: xmlschema.XMLSchema) -> None:
    path = tmp_path / "out" / "junit.xml"
    write_junit(RUN, path)
    schema.validate(str(path))


def test_one_testsuite_per_domain_with_the_right_counts(tmp_path: Path) -> None:
    path = tmp_path / "junit.xml"
    write_junit(RUN, path)
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("errors"), root.get("skipped")) == (
        "8",
        "4",
        "1",
        "1",
    )
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert list(suites) == ["filesystem", "kernel_module", "performance"]
    counts = {
        name: tuple(s.get(k) for k in ("tests", "failures", "errors", "skipped", "time"))
        for name, s in suites.items()
    }
    assert counts == {
        "filesystem": ("4", "2", "0", "1", "1.000"),
        "kernel_module": ("3", "2", "1", "0", "0.750"),
        "performance": ("1", "0", "0", "0", "2.000"),
    }
    # the earliest test of the domain, in UTC, without a zone
    assert suites["kernel_module"].get("timestamp") == "2026-11-21T03:00:32"
    assert suites["filesystem"].get("hostname") == "builder"
    properties = {p.get("name"): p.get("value") for p in suites["filesystem"].iter("property")}
    assert properties["vmlab.run_id"] == RUN.run_id
    assert properties["vmlab.git_commit"] == "0123abc"


def test_each_outcome_becomes_its_junit_element(tmp_path: Path) -> None:
    root = ET.fromstring(junit_bytes(RUN))
    cases = {f"{c.get('classname')}/{c.get('name')}": c for c in root.iter("testcase")}
    assert set(cases) == {
        "fs.basic/create",
        "fs.basic/remount",
        "fs.stress/writers",
        "fs/big",
        "kmod.load/cycle",
        "kmod.load/hang",
        "kmod/setup",
        "perf/perf",  # a test id without a slash: classname is its suite
    }
    assert [child.tag for child in cases["fs.basic/create"]] == ["system-out"]
    assert cases["fs.basic/create"].findtext("system-out") == "created 10 files\n"

    failure = cases["fs.basic/remount"].find("failure")
    assert failure is not None
    assert failure.attrib == {"message": "checksum mismatch", "type": "failed"}
    assert failure.text == "x\n"

    timeout = cases["fs.stress/writers"].find("failure")
    assert timeout is not None and timeout.get("type") == "timeout"
    assert timeout.text == "timed out after 60s"

    skipped = cases["fs/big"].find("skipped")
    assert skipped is not None and skipped.get("message") == "dangerous: needs --allow-dangerous"

    crash = cases["kmod.load/cycle"].find("failure")
    assert crash is not None
    assert crash.attrib == {"message": CRASH.title, "type": "crash"}
    assert crash.text is not None and CRASH.report in crash.text and CRASH.signature in crash.text

    hang = cases["kmod.load/hang"].find("failure")
    assert hang is not None and hang.get("type") == "hang"

    error = cases["kmod/setup"].find("error")
    assert error is not None and error.attrib == {"message": "make failed", "type": "error"}
    assert cases["kmod/setup"].find("failure") is None
    assert cases["perf/perf"].get("time") == "2.000"


def test_console_control_characters_do_not_break_the_xml(
    tmp_path: Path, schema: xmlschema.XMLSchema
) -> None:
    nasty = "\x1b[31mred\x1b[0m \x00nul \x07bell \ud800 fine: \u00e9\u2603\U0001f600 <&>\"'"
    result = make_result("fs/x", Outcome.FAILED, message=nasty, output_tail=nasty)
    path = tmp_path / "junit.xml"
    write_junit(replace(RUN, results=(result,)), path)
    schema.validate(str(path))
    failure = ET.parse(path).getroot().find("testsuite/testcase/failure")
    assert failure is not None
    assert failure.get("message") == (
        "\ufffd[31mred\ufffd[0m \ufffdnul \ufffdbell \ufffd fine: \u00e9\u2603\U0001f600 <&>\"'"
    )


def test_an_empty_run_is_valid_too(schema: xmlschema.XMLSchema) -> None:
    root = ET.fromstring(junit_bytes(replace(RUN, results=())))
    schema.validate(root)
    assert root.get("tests") == "0" and root.findall("testsuite") == []


def test_the_schema_rejects_what_ci_servers_reject(schema: xmlschema.XMLSchema) -> None:
    # guard against a schema that accepts anything
    assert not schema.is_valid("<testsuites><testcase name='x'/></testsuites>")
    document = ET.fromstring(junit_bytes(RUN))
    suite = document.find("testsuite")
    assert suite is not None
    del suite.attrib["timestamp"]
    assert not schema.is_valid(document)


def test_writing_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "junit.xml"
    write_junit(RUN, path)
    before = path.read_bytes()

    def broken_replace(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.replace", broken_replace)
    with pytest.raises(HostError, match=r"cannot write .*junit\.xml: No space left on device"):
        write_junit(replace(RUN, results=RESULTS[:1]), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junit.xml"]  # no temporary left
