"""JUnit XML for CI systems (Jenkins, GitLab, GitHub annotations, ...).

The document follows the common JUnit XML schema (the Ant/Jenkins junit.xsd):
`testsuites > testsuite > testcase`, one `testsuite` per domain. A test id
`suite/sub/test` becomes `classname="suite.sub" name="test"`.

| outcome                        | testcase child                                   |
|--------------------------------|--------------------------------------------------|
| PASSED                         | none                                             |
| SKIPPED                        | `<skipped message=...>`                          |
| FAILED, TIMEOUT, HANG, CRASH   | `<failure message=... type=outcome>` + report    |
| ERROR                          | `<error message=... type="error">` + output tail |

Each testcase carries the end of its guest output in `system-out`. Characters
that XML 1.0 cannot carry (most control characters, from consoles) become U+FFFD.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Final

from vmlab.results._files import atomic_write
from vmlab.results.model import Outcome, RunRecord, TestResult

_FAILURES: Final = frozenset({Outcome.FAILED, Outcome.TIMEOUT, Outcome.HANG, Outcome.CRASH})
_MAX_TEXT: Final = 64 * 1024  # characters of output per testcase
_NOT_XML: Final = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def write_junit(run: RunRecord, path: Path) -> None:
    """Write `run` as JUnit XML to `path`, atomically."""
    atomic_write(Path(path), junit_bytes(run))


def junit_bytes(run: RunRecord) -> bytes:
    """`run` as a JUnit XML document (UTF-8, with declaration)."""
    root = ET.Element("testsuites")
    results = run.results
    _set(
        root,
        name=f"vmlab {run.run_id}",
        tests=str(len(results)),
        failures=str(sum(r.outcome in _FAILURES for r in results)),
        errors=str(sum(r.outcome is Outcome.ERROR for r in results)),
        skipped=str(sum(r.outcome is Outcome.SKIPPED for r in results)),
        time=_seconds(sum(r.duration_s for r in results)),
        timestamp=_timestamp(run.start),
    )
    for index, domain in enumerate(run.domains()):
        root.append(_testsuite(run, index, domain, [r for r in results if r.domain == domain]))
    ET.indent(root)
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return data + b"\n"


def _testsuite(run: RunRecord, index: int, domain: str, results: list[TestResult]) -> ET.Element:
    suite = ET.Element("testsuite")
    _set(
        suite,
        name=domain,
        tests=str(len(results)),
        failures=str(sum(r.outcome in _FAILURES for r in results)),
        errors=str(sum(r.outcome is Outcome.ERROR for r in results)),
        skipped=str(sum(r.outcome is Outcome.SKIPPED for r in results)),
        time=_seconds(sum(r.duration_s for r in results)),
        timestamp=_timestamp(min((r.start for r in results), default=run.start)),
        hostname=run.host or "localhost",
        id=str(index),
        package=f"vmlab.{domain}",
    )
    properties = ET.SubElement(suite, "properties")
    for name, value in _run_properties(run):
        _set(ET.SubElement(properties, "property"), name=name, value=value)
    for result in results:
        suite.append(_testcase(result))
    ET.SubElement(suite, "system-out")
    ET.SubElement(suite, "system-err")
    return suite


def _testcase(result: TestResult) -> ET.Element:
    head, _, leaf = result.test_id.rpartition("/")
    case = ET.Element("testcase")
    _set(
        case,
        classname=head.replace("/", ".") if head else result.suite,
        name=leaf or result.test_id,
        time=_seconds(result.duration_s),
    )
    outcome = result.outcome
    message = result.message or (result.crash.title if result.crash else "") or outcome.value
    if outcome is Outcome.SKIPPED:
        _set(ET.SubElement(case, "skipped"), message=message)
    elif outcome is Outcome.ERROR or outcome in _FAILURES:
        tag = "error" if outcome is Outcome.ERROR else "failure"
        if outcome is Outcome.CRASH and result.crash is not None:
            message = result.crash.title
        child = ET.SubElement(case, tag)
        _set(child, message=message, type=outcome.value)
        child.text = _clean(_failure_text(result))
    if result.output_tail:
        ET.SubElement(case, "system-out").text = _clean(result.output_tail)
    return case


def _failure_text(result: TestResult) -> str:
    parts: list[str] = []
    if result.crash is not None:
        crash = result.crash
        parts.append(f"{crash.kind}: {crash.title} [signature {crash.signature}]")
        if crash.report:
            parts.append(crash.report)
    elif result.output_tail:
        parts.append(result.output_tail)
    if result.message and not parts:
        parts.append(result.message)
    return "\n".join(parts)


def _run_properties(run: RunRecord) -> Iterable[tuple[str, str]]:
    yield "vmlab.run_id", run.run_id
    yield "vmlab.status", run.status.value
    yield "vmlab.accel", run.accel
    yield "vmlab.qemu_version", run.qemu_version
    yield "vmlab.kernel_release", run.kernel_release
    yield "vmlab.kernel_config_hash", run.kernel_config_hash
    yield "vmlab.lab_hash", run.lab_hash
    if run.git_commit:
        yield "vmlab.git_commit", run.git_commit


def _set(element: ET.Element, **attributes: str) -> None:
    for key, value in attributes.items():
        element.set(key, _clean(value))


def _clean(text: str) -> str:
    """`text` without what XML 1.0 cannot hold, cut to its last _MAX_TEXT characters."""
    if len(text) > _MAX_TEXT:
        text = "[...]\n" + text[-_MAX_TEXT:]
    return _NOT_XML.sub("\ufffd", text)


def _seconds(value: float) -> str:
    return f"{max(value, 0.0):.3f}"


def _timestamp(when: datetime) -> str:
    """ISO 8601 in UTC without a zone, as the schema wants it."""
    return when.strftime("%Y-%m-%dT%H:%M:%S")
