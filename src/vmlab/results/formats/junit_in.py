"""JUnit XML read from a guest command's output (pytest, Go, Maven Surefire, node...).

Finding the XML: it starts at the first `<?xml`, `<testsuites` or `<testsuite` in
the output, so text before it (pytest's progress line with `--junitxml=/dev/stdout`)
is allowed. Text after the root element closes is ignored. XML that breaks
before its root closes (truncated, malformed) is one problem naming the line,
and the test cases completed before the break are still reported.

Which path a `<testcase>` gets, from the outermost name to the innermost:

1. the `name` of every enclosing `<testsuite>` (nested suites each add one;
   the `<testsuites>` root adds none), except where it says nothing: empty, a
   runner's default (`pytest`), or the same as the test case's classname or a
   dotted/slashed prefix of it (Surefire and Go name the suite after the class
   or package, which the classname repeats);
2. the `classname`, whole (dots kept: `tests.test_fs.TestMount`,
   `org.example.ExportTest`, `example.com/nfsd/export`), unless it is empty, a
   runner's default (node's `test`) or the same as the name;
3. the `name` (`test_write[4096]`, `TestMount/v4`), or `unnamed` without one.

`test_ids()` then escapes `/` inside each part, so a Go package stays one part.

Outcome: `<error>` is ERROR, `<failure>` FAILED (the worse wins when both are
there), `<skipped>` SKIPPED; a `<skipped>` whose type marks an expected failure
(pytest's `pytest.xfail`, node's `todo`, `xfail`) is TODO_FAILED whatever else
is there. The message is the element's `message` attribute, else the first line
of its text. Diagnostics are the texts of those elements and of the test case's
`<system-out>`/`<system-err>`. Metrics come from `# metric NAME=VALUE` lines in
that output and from `<property name="metric.NAME" value="...">` in the test
case (pytest's `record_property("metric.NAME", value)`). `time` is the duration.
`planned` is the root's `tests` attribute, else the sum of its suites' (when
each says and the XML is complete), else None; it is not checked
against the test cases seen, because runners count differently (pytest counts
a test that fails and then errors in teardown twice).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from vmlab.results.formats._model import (
    ParsedOutput,
    SubOutcome,
    SubResult,
    metrics_from_lines,
    one_line,
)

__all__ = ["parse_junit"]

_START = re.compile(r"<(?:\?xml\b|testsuites\b|testsuite\b)")
_DEFAULT_SUITE_NAMES = frozenset({"", "pytest"})
_DEFAULT_CLASSNAMES = frozenset({"", "test"})
_XFAIL_TYPES = frozenset({"pytest.xfail", "todo", "xfail"})
_POSITION = re.compile(r":\s*line \d+, column \d+$")


def _local(tag: str) -> str:
    """The tag without an XML namespace."""
    return tag.rsplit("}", 1)[-1]


def _drain(
    parser: ET.XMLPullParser[ET.Element], into: list[tuple[str, ET.Element]]
) -> ET.ParseError | None:
    events = parser.read_events()
    while True:
        try:
            item = next(events)
        except StopIteration:
            return None
        except ET.ParseError as exc:
            return exc
        if len(item) == 2 and isinstance(item[1], ET.Element):  # start/end events only
            into.append((item[0], item[1]))


def _read_events(xml: str) -> tuple[list[tuple[str, ET.Element]], ET.ParseError | None]:
    """Parse events up to the end of the text or the first error."""
    parser: ET.XMLPullParser[ET.Element] = ET.XMLPullParser(events=("start", "end"))
    events: list[tuple[str, ET.Element]] = []
    error: ET.ParseError | None = None
    try:
        parser.feed(xml)
    except ET.ParseError as exc:
        error = exc
    error = _drain(parser, events) or error
    if error is None:
        try:
            parser.close()
        except ET.ParseError as exc:
            error = exc
        error = _drain(parser, events) or error
    return events, error


def _path(suites: list[str], classname: str, name: str) -> tuple[str, ...]:
    kept = [
        s
        for s in suites
        if s not in _DEFAULT_SUITE_NAMES
        and s != classname
        and not classname.startswith((s + ".", s + "/"))
    ]
    if classname not in _DEFAULT_CLASSNAMES and classname != name:
        kept.append(classname)
    kept.append(name)
    return tuple(kept)


def _duration(case: ET.Element, where: str, problems: list[str]) -> float | None:
    raw = case.get("time")
    if raw is None or not raw.strip():
        return None
    try:
        value = float(raw.replace(",", ""))  # Surefire may group thousands
    except ValueError:
        problems.append(f"{where}: time {raw!r} is not a number")
        return None
    if value < 0:
        problems.append(f"{where}: time {raw!r} is negative")
        return None
    return value


def _case(case: ET.Element, suites: list[str], problems: list[str]) -> SubResult:
    name = (case.get("name") or "").strip() or "unnamed"
    classname = (case.get("classname") or case.get("class") or "").strip()
    path = _path(suites, classname, name)
    where = "/".join(path)

    failures: list[ET.Element] = []
    errors: list[ET.Element] = []
    skips: list[ET.Element] = []
    texts: list[str] = []
    output: list[str] = []
    metrics_props: dict[str, str] = {}
    for child in case:
        tag = _local(child.tag)
        if tag in ("failure", "error", "skipped"):
            {"failure": failures, "error": errors, "skipped": skips}[tag].append(child)
            if child.text and child.text.strip():
                texts.append(child.text.strip("\n"))
        elif tag in ("system-out", "system-err"):
            if child.text and child.text.strip():
                output.append(child.text.strip("\n"))
        elif tag == "properties":
            for prop in child:
                key = prop.get("name") or ""
                if _local(prop.tag) == "property" and key.startswith("metric."):
                    metrics_props[key.removeprefix("metric.")] = prop.get("value") or ""

    xfail = [s for s in skips if (s.get("type") or "").lower() in _XFAIL_TYPES]
    decisive: ET.Element | None
    if xfail:
        outcome, decisive = SubOutcome.TODO_FAILED, xfail[0]
    elif errors:
        outcome, decisive = SubOutcome.ERROR, errors[0]
    elif failures:
        outcome, decisive = SubOutcome.FAILED, failures[0]
    elif skips:
        outcome, decisive = SubOutcome.SKIPPED, skips[0]
    else:
        outcome, decisive = SubOutcome.PASSED, None
    message = ""
    if decisive is not None:
        message = one_line(decisive.get("message") or "") or one_line(decisive.text or "")

    lines = [line for block in output for line in block.splitlines()]
    metrics = metrics_from_lines(lines, where, problems)
    for key, raw in metrics_props.items():
        try:
            metrics[key] = float(raw)
        except ValueError:
            problems.append(f"{where}: metric {key}: {raw!r} is not a number")
    return SubResult(
        path=path,
        outcome=outcome,
        message=message,
        diagnostics="\n".join(texts + output),
        metrics=metrics,
        duration_s=_duration(case, where, problems),
    )


def parse_junit(output: str) -> ParsedOutput:
    """Parse JUnit XML found in `output` (see the module docstring for the mapping)."""
    start = _START.search(output)
    if start is None:
        return ParsedOutput(results=(), planned=None, problems=("no JUnit XML in the output",))
    first_line = output.count("\n", 0, start.start())  # to report lines of the whole output
    events, error = _read_events(output[start.start() :])

    problems: list[str] = []
    results: list[SubResult] = []
    planned: int | None = None
    suites: list[str] = []
    depth = 0
    root_closed = False
    foreign = False  # the XML is not JUnit
    declared = 0  # tests= of the root's child suites, for a root without its own
    summable = True
    for event, element in events:
        tag = _local(element.tag)
        if event == "start":
            depth += 1
            if depth == 1:
                if tag not in ("testsuites", "testsuite"):
                    problems.append(f"not JUnit XML: the root element is <{tag}>")
                    foreign = True
                    break
                tests = element.get("tests")
                if tests is not None:
                    try:
                        planned = int(tests)
                    except ValueError:
                        problems.append(f"<{tag}> tests={tests!r} is not a number")
            elif depth == 2 and planned is None and tag in ("testsuite", "testcase"):
                try:
                    declared += int(element.get("tests") or "")
                except ValueError:
                    summable = False  # a bare testcase, or a suite that does not say
            if tag == "testsuite":
                suites.append((element.get("name") or "").strip())
            continue
        depth -= 1
        if tag == "testsuite" and suites:
            suites.pop()
        elif tag == "testcase":
            results.append(_case(element, suites, problems))
        if depth == 0:
            root_closed = True
            break
    if planned is None and summable and depth == 0 and root_closed and declared:
        planned = declared
    if error is not None and not root_closed and not foreign:
        line, column = error.position
        what = _POSITION.sub("", str(error))
        problems.append(f"malformed JUnit XML at line {line + first_line}, column {column}: {what}")
    elif error is None and not root_closed and not foreign:
        problems.append("no JUnit XML in the output")
    return ParsedOutput(results=tuple(results), planned=planned, problems=tuple(problems))
