"""TAP (versions 12, 13, 14) and KTAP (version 1): one parser, two dialects.

Both are line formats with the same test points (`ok 3 name # SKIP why`), plans
(`1..N`) and nesting by indentation. The structure is read the same way for both:

* A nested stream starts with a version line, a `# Subtest: name` line, a plan or
  a test point at a deeper indentation than its parent (any width: KUnit and
  TAP14 use 4 spaces, the KTAP document's examples 2). It ends at the next such
  line less indented (in TAP also at a less indented `#` line; in KTAP that may
  be a kernel line such as `#PF: ...`), and the next test point of the parent
  is its result line. `# Subtest: name` at the parent's indentation (TAP14,
  Test::More) or as the first line of the nested stream (KUnit) names it;
  node's test runner also announces every leaf with one, which is ignored.
  Streams nested deeper than 32 levels are read as unknown lines (a problem).
* A YAML block (`---` ... `...`, indented under a test point) right after a test
  point belongs to it, in both dialects.
* `Bail out!` at any depth stops everything.
* Kernel log prefixes (`[   12.345678] `, with or without a `[  T123]` caller
  field, `<6>` levels, `Mon DD HH:MM:SS host kernel: `) are removed from every
  line first, so KTAP read from dmesg or a serial console parses like the
  original. Diagnostics are kept without them.

The dialects differ where the formats do:

* Which lines a test point owns. TAP writes diagnostics after the test point
  (Test::More's `#   Failed test ...`), so `#` lines after a point belong to it
  until the next point or a trailing plan. KTAP writes them before the result
  line (KUnit's `# name: EXPECTATION FAILED at ...` and the unprefixed
  `Expected ...` lines that follow), so every line since the previous result
  line at that level belongs to the next one, including unknown lines (KTAP
  allows them anywhere, and a kernel message printed during a test is evidence).
* Other output. In TAP it is ignored, and a problem only when it looks like
  broken TAP (`ok1`, `not  ok`, `1..x`, a version line with no number). In KTAP
  it is allowed, so never a problem.
* Plans. TAP needs one at every level ("no TAP plan" otherwise). KTAP needs the
  top-level one only when the output has a top-level version line (KUnit's
  built-in runner and kselftest print both); suites loaded from a module print
  no top-level header, and parameterised KUnit tests have no plan at all.

Directives (`#` after the description): SKIP and TODO in any case, with any
suffix (`skipped`, `SKIPPING`), and KTAP's upper-case XFAIL, TIMEOUT and ERROR.
`ok`/`not ok # SKIP` is SKIPPED; `not ok # TODO` and `# XFAIL` are TODO_FAILED;
`ok # TODO` is PASSED with a note; `# TIMEOUT` is FAILED ("timed out: ...");
`# ERROR` is ERROR. Anything else after `#` is diagnostic data: the message of a
failing test (kselftest's `# exit=1`), ignored for a passing one.

Results are the leaves: a test point with a nested stream is represented by its
subtests, plus one result named after it when it failed (or errored) while none
of its subtests did, and its TODO turns its subtests' failures into TODO_FAILED.
A nested stream with no result line (the output ended inside it: a crash, a
hang) gives its subtests, a problem, and an ERROR result named after it that
carries the lines seen after its last result (the oops, typically). A whole
stream skipped by `1..0 # SKIP why` is one SKIPPED result with an empty path:
it stands for the guest command itself.

Names: the description (a leading `- ` dropped, escaped `#` and backslashes undone), else
the nested stream's `# Subtest:` name, else `test N`. Messages of failures: the
data after `#`, else the YAML `message:` or `error:` (node), else the first
owned line that says something (KUnit's `initializing` and `pass:N fail:N`
statistics lines do not). Metrics: `# metric NAME=VALUE [UNIT]` lines a point
owns (KUnit's `# case: metric ...` too) and a YAML `metrics:` mapping; a YAML
`duration_ms:` is the duration. Problems: a missing or wrong plan, numbers out
of sequence, a second plan or version line, unterminated YAML, broken TAP lines,
a bail out (after which missing tests are not counted again).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

from vmlab.results.formats._model import (
    METRIC_LINE,
    ParsedOutput,
    SubOutcome,
    SubResult,
    metrics_from_lines,
    one_line,
)

__all__ = ["parse_ktap", "parse_tap"]

# --- lines -----------------------------------------------------------------

_LOG_PREFIX = re.compile(
    r"^(?:[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \S+ kernel: )?"  # journalctl -k
    r"(?:<\d>)?"  # console log level
    r"(?:\[\s*\d+\.\d+\](?:\[\s*[A-Z]\d+\])? ?)?"  # printk time [+ caller] and one space
)
_VERSION = re.compile(r"^(K?TAP) version (\d+)$")
_PLAN = re.compile(r"^(\d+)\.\.(\d+)(?:\s+#\s*(.*))?$")
_POINT = re.compile(r"^(not ok|ok)(?:\s+(.*))?$")
_NUMBER = re.compile(r"^(\d+)(?=\s|#|$)\s*")
_BAIL = re.compile(r"^bail out!\s*(.*)$", re.IGNORECASE)
_SUBTEST = re.compile(r"^#\s*Subtest(?::\s*(.*))?$")
_DIRECTIVE = re.compile(r"^\s*(?:((?i:skip|todo))\S*|(XFAIL|TIMEOUT|ERROR)\b)[\s:]*(.*)$")
_BROKEN = (
    re.compile(r"^not\s*ok\S|^notok\b"),  # "not ok1", "notok 2"
    re.compile(r"^not\s{2,}ok\b"),  # "not  ok 1"
    re.compile(r"^(?:not )?ok\d"),  # "ok1 - name"
    re.compile(r"^\d+\.\.(?!\d+(?:\s+#.*)?$)"),  # "1..", "1..x", "1..3 tests"
    re.compile(r"^K?TAP version(?! \d+$)"),  # "TAP version thirteen"
)
# Diagnostic lines that say nothing about why a test failed.
_NOT_A_MESSAGE = (
    re.compile(r"^[\w.-]+: initializing$"),  # older KUnit, before every case
    re.compile(r"\bpass:\d+ fail:\d+ skip:\d+ total:\d+$"),  # KUnit statistics
    re.compile(r"^Subtest\b"),
    re.compile(r"^module: \S+$"),  # KUnit's module line
)


class _Kind(enum.Enum):
    BLANK = enum.auto()
    VERSION = enum.auto()
    PLAN = enum.auto()
    POINT = enum.auto()
    BAIL = enum.auto()
    SUBTEST = enum.auto()
    COMMENT = enum.auto()
    YAML_START = enum.auto()
    PRAGMA = enum.auto()
    OTHER = enum.auto()


# Lines that open a nested stream when they are indented deeper than the current
# one, and close the current one when they are indented less. So does a '#' line
# in TAP; in KTAP it may be a kernel line (`#PF: error_code(0x0000)`) anywhere.
_OPENERS = frozenset({_Kind.VERSION, _Kind.PLAN, _Kind.POINT, _Kind.SUBTEST})
_MAX_DEPTH = 32  # nested streams; deeper ones are read as unknown lines (and a problem)


def _kind(text: str) -> _Kind:
    if not text:
        return _Kind.BLANK
    if _POINT.match(text):
        return _Kind.POINT
    if _PLAN.match(text):
        return _Kind.PLAN
    if _VERSION.match(text):
        return _Kind.VERSION
    if _BAIL.match(text):
        return _Kind.BAIL
    if _SUBTEST.match(text):
        return _Kind.SUBTEST
    if text.startswith("#"):
        return _Kind.COMMENT
    if text.rstrip() == "---":
        return _Kind.YAML_START
    if text.startswith("pragma ") and text[7:8] in "+-":
        return _Kind.PRAGMA
    return _Kind.OTHER


@dataclass(frozen=True)
class _Line:
    no: int  # 1-based line number in the output
    indent: int  # columns of leading whitespace (a tab counts 4)
    text: str  # without the indentation and trailing whitespace
    raw: str  # without the log prefix and trailing whitespace

    def dedent(self, indent: int) -> str:
        """The line with at most `indent` columns of its indentation removed."""
        if self.indent <= indent:
            return self.text
        lead = self.raw[: len(self.raw) - len(self.raw.lstrip(" \t"))].expandtabs(4)
        return lead[indent:] + self.text


def _dedent_all(lines: list[_Line]) -> list[str]:
    """`lines` as text, dedented together: the least indented one starts the line."""
    common = min((line.indent for line in lines if line.text), default=0)
    return [line.dedent(common) for line in lines]


def _split_lines(output: str) -> list[_Line]:
    lines = []
    for no, original in enumerate(output.replace("\r\n", "\n").split("\n"), start=1):
        raw = _LOG_PREFIX.sub("", original.rstrip(), count=1).replace("\r", "")
        body = raw.lstrip(" \t")
        indent = len(raw[: len(raw) - len(body)].expandtabs(4))
        lines.append(_Line(no, indent, body, raw))
    return lines


# --- structure ---------------------------------------------------------------


@dataclass
class _Point:
    line: int
    number: int | None
    name: str
    ok: bool
    directive: str = ""  # SKIP, TODO, XFAIL, TIMEOUT, ERROR or ""
    reason: str = ""  # what follows the directive, or the '#' data without one
    diag: list[str] = field(default_factory=list)  # every owned line, verbatim
    notes: list[str] = field(default_factory=list)  # the owned lines outside YAML
    yaml: list[str] = field(default_factory=list)  # the YAML body, dedented to its keys
    child: _Block | None = None
    synthetic: bool = False  # stands for a nested stream that has no result line


@dataclass
class _Block:
    indent: int
    name: str | None
    top: bool
    points: list[_Point] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    version: bool = False
    plan: int | None = None
    plan_reason: str = ""  # "1..0 # SKIP why"
    plan_after: int = 0  # how many test points came before the plan
    tail: list[_Line] = field(default_factory=list)  # KTAP lines after the last result

    @property
    def seen(self) -> int:
        return sum(1 for p in self.points if not p.synthetic)


def _unescape_split(text: str) -> tuple[str, str | None]:
    """Split at the first unescaped '#': (description with \\# and \\\\ undone, rest)."""
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text) and text[i + 1] in "#\\":
            out.append(text[i + 1])
            i += 2
            continue
        if c == "#":
            return "".join(out), text[i + 1 :]
        out.append(c)
        i += 1
    return "".join(out), None


def _parse_point(line: _Line) -> _Point:
    m = _POINT.match(line.text)
    assert m is not None
    rest = m.group(2) or ""
    number: int | None = None
    num = _NUMBER.match(rest)
    if num:
        number = int(num.group(1))
        rest = rest[num.end() :]
    desc, after = _unescape_split(rest)
    desc = desc.strip()
    if desc == "-" or desc.startswith(("- ", "-\t")):
        desc = desc[1:].strip()
    point = _Point(line=line.no, number=number, name=desc, ok=m.group(1) == "ok")
    if after is not None:
        d = _DIRECTIVE.match(after)
        if d:
            point.directive = (d.group(1) or d.group(2)).upper()
            point.reason = d.group(3).strip()
        else:
            point.reason = after.strip()
    return point


class _Parser:
    def __init__(self, lines: list[_Line], *, ktap: bool) -> None:
        self.lines = lines
        self.ktap = ktap
        self.pos = 0
        self.bail: str | None = None
        self.problems: list[str] = []  # about lines, wherever they are
        self.depth = 0  # nested streams open now
        self.too_deep = False

    def _peek_indent(self) -> int | None:
        """The indentation of the next non-blank line after the current one."""
        for i in range(self.pos + 1, len(self.lines)):
            if self.lines[i].text:
                return self.lines[i].indent
        return None

    def parse(self) -> _Block:
        return self._block(0, None, top=True)

    def _block(self, indent: int, name: str | None, *, top: bool) -> _Block:
        blk = _Block(indent=indent, name=name, top=top)
        pending: list[_Line] = []  # KTAP: lines owned by the next result line
        before_child: list[_Line] = []  # KTAP: the same, from before the nested stream
        child: _Block | None = None  # a nested stream waiting for its result line
        child_name: str | None = None  # announced by '# Subtest: x' at this level
        last: _Point | None = None  # TAP: the point that owns the '#' lines that follow
        previous_number = 0
        while self.pos < len(self.lines) and self.bail is None:
            line = self.lines[self.pos]
            kind = _kind(line.text)
            if kind is _Kind.BLANK:
                self.pos += 1
                continue
            if kind is _Kind.BAIL:
                m = _BAIL.match(line.text)
                assert m is not None
                self.bail = m.group(1).strip()
                break
            if line.indent < indent and (
                kind in _OPENERS or (kind is _Kind.COMMENT and not self.ktap)
            ):
                break  # the parent's line: this stream is over
            if line.indent > indent and kind in _OPENERS and self.depth >= _MAX_DEPTH:
                if not self.too_deep:
                    self.problems.append(f"line {line.no}: nested deeper than {_MAX_DEPTH} levels")
                    self.too_deep = True
                kind = _Kind.OTHER  # read as an unknown line of this stream
            if line.indent > indent and kind in _OPENERS:
                if child is not None:
                    self._orphan(blk, child, ended=False)
                before_child.extend(pending)
                pending = []
                self.depth += 1
                child = self._block(line.indent, child_name, top=False)
                self.depth -= 1
                child_name = None
                last = None
                continue
            if line.indent < indent:  # an unknown line, less indented
                if self.ktap:
                    pending.append(line)
                else:
                    self._check_broken(blk, line)
                self.pos += 1
                continue

            # A line of this stream (or a non-structural line indented deeper).
            if kind is _Kind.VERSION:
                self._version(blk, line)
                pending.clear()
            elif kind is _Kind.SUBTEST:
                m = _SUBTEST.match(line.text)
                assert m is not None
                announced = (m.group(1) or "").strip()
                following = self._peek_indent()
                if following is not None and following > indent:
                    child_name = announced or None
                elif blk.name is None and not blk.points and blk.plan is None:
                    blk.name = announced or None
                    pending.clear()
                # else: node announces each leaf this way; the point names it anyway
            elif kind is _Kind.PLAN:
                self._plan(blk, line)
                pending.clear()
                last = None
            elif kind is _Kind.POINT:
                point = _parse_point(line)
                if self.ktap:  # the lines since the previous result line, in order
                    owned = _dedent_all(before_child + (child.tail if child else []) + pending)
                    point.diag.extend(owned)
                    point.notes.extend(owned)
                    before_child, pending = [], []
                if child is not None:
                    point.child = child
                    child = None
                child_name = None
                expected = previous_number + 1
                if point.number is None:
                    point.number = expected
                elif point.number != expected and (blk.version or not (self.ktap and top)):
                    # (KUnit suites loaded from modules number on across loads)
                    blk.problems.append(
                        f"line {line.no}: test {point.number} out of sequence (expected {expected})"
                    )
                previous_number = point.number
                blk.points.append(point)
                last = point
                self.pos += 1
                self._yaml(point, indent)
                continue
            elif kind is _Kind.COMMENT:
                if self.ktap:
                    pending.append(line)
                elif last is not None:
                    last.diag.append(line.dedent(indent))
                    last.notes.append(line.dedent(indent))
            elif self.ktap:
                if kind is not _Kind.PRAGMA:
                    pending.append(line)
            elif kind is _Kind.OTHER:
                self._check_broken(blk, line)
            self.pos += 1

        if child is not None:
            self._orphan(blk, child, ended=self.pos >= len(self.lines))
        blk.tail = before_child + pending
        return blk

    def _version(self, blk: _Block, line: _Line) -> None:
        m = _VERSION.match(line.text)
        assert m is not None
        if blk.version or blk.points or blk.plan is not None:
            blk.problems.append(f"line {line.no}: unexpected version line {line.text!r}")
            return
        blk.version = True
        flavour, number = m.group(1), int(m.group(2))
        known = {"TAP": (13, 14), "KTAP": (1,)}[flavour]
        if number not in known:
            blk.problems.append(f"line {line.no}: unsupported {line.text!r}")

    def _plan(self, blk: _Block, line: _Line) -> None:
        m = _PLAN.match(line.text)
        assert m is not None
        first, last = int(m.group(1)), int(m.group(2))
        if blk.plan is not None:
            blk.problems.append(f"line {line.no}: a second plan {line.text!r}")
            return
        if first != 1:
            blk.problems.append(f"line {line.no}: plan {line.text!r} does not start at 1")
        blk.plan = max(last - first + 1, 0)
        blk.plan_after = blk.seen
        comment = (m.group(3) or "").strip()
        d = _DIRECTIVE.match(comment)
        if blk.plan == 0:
            blk.plan_reason = d.group(3).strip() if d else comment

    def _yaml(self, point: _Point, indent: int) -> None:
        """Consume a YAML block (`---` ... `...`) right after a test point."""
        start = self.pos
        while start < len(self.lines) and not self.lines[start].text:
            start += 1
        if start >= len(self.lines):
            return
        head = self.lines[start]
        if _kind(head.text) is not _Kind.YAML_START or head.indent <= indent:
            return
        body: list[_Line] = []
        i = start + 1
        while i < len(self.lines):
            line = self.lines[i]
            if line.text == "..." and line.indent >= indent:
                point.diag.append(head.dedent(indent))
                point.diag.extend(x.dedent(indent) for x in body)
                point.diag.append(line.dedent(indent))
                point.yaml.extend(x.dedent(head.indent) for x in body)
                self.pos = i + 1
                return
            if line.text and line.indent < head.indent:
                break
            body.append(line)
            i += 1
        # Not terminated: leave the lines to the normal loop, and say so.
        point.diag.append(head.dedent(indent))
        point.diag.extend(x.dedent(indent) for x in body)
        point.yaml.extend(x.dedent(head.indent) for x in body)
        self.pos = i
        self.problems.append(f"line {head.no}: YAML block not terminated by '...'")

    def _orphan(self, blk: _Block, child: _Block, *, ended: bool) -> None:
        """A nested stream closed without a result line of its own."""
        name = child.name or "unnamed subtest"
        if self.bail is None:
            why = "the output ended inside it" if ended else "no result line"
            blk.problems.append(f"subtest {name!r}: {why}")
        point = _Point(line=0, number=None, name=child.name or "", ok=False, synthetic=True)
        point.child = child
        point.diag.extend(_dedent_all(child.tail))
        point.notes.extend(_dedent_all(child.tail))
        shown = f"{child.seen} of {child.plan}" if child.plan is not None else f"{child.seen}"
        point.reason = (
            f"the output ended before its result line ({shown} subtests reported)"
            if ended
            else f"no result line ({shown} subtests reported)"
        )
        blk.points.append(point)

    def _check_broken(self, blk: _Block, line: _Line) -> None:
        if any(p.match(line.text) for p in _BROKEN):
            blk.problems.append(f"line {line.no}: malformed TAP line {line.text!r}")


# --- results -----------------------------------------------------------------


def _yaml_fields(lines: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """Top-level scalars of a TAP YAML block, and its `metrics:` mapping.

    Only what is needed here: `key: value`, quoted values, block scalars (`|`,
    `|-`, `>`), and one nested mapping level under `metrics:`. Anything else is
    skipped; the block stays verbatim in the diagnostics.
    """
    scalars: dict[str, str] = {}
    metrics: dict[str, str] = {}
    key_re = re.compile(r"^([A-Za-z_][\w.-]*):(?:\s+(.*))?$")
    i = 0
    while i < len(lines):
        m = key_re.match(lines[i])
        i += 1
        if m is None:
            continue
        key, value = m.group(1), (m.group(2) or "").strip()
        nested: list[str] = []  # the lines that belong to this key
        while i < len(lines) and (not lines[i].strip() or lines[i].startswith((" ", "\t", "- "))):
            nested.append(lines[i])
            i += 1
        if value[:1] in ("|", ">"):
            body = [x.strip() for x in nested]
            scalars[key] = "\n".join(body).strip()
        elif value:
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            scalars[key] = value
        elif key == "metrics":
            for sub in nested:
                s = key_re.match(sub.strip())
                if s and s.group(2):
                    metrics[s.group(1)] = s.group(2).strip().strip("'\"")
    return scalars, metrics


def _outcome(point: _Point) -> SubOutcome:
    if point.synthetic:
        return SubOutcome.ERROR
    directive = point.directive
    if directive == "SKIP":
        return SubOutcome.SKIPPED
    if directive == "TODO":
        return SubOutcome.PASSED if point.ok else SubOutcome.TODO_FAILED
    if directive == "XFAIL":
        return SubOutcome.TODO_FAILED
    if directive == "ERROR":
        return SubOutcome.ERROR
    if directive == "TIMEOUT":
        return SubOutcome.FAILED
    return SubOutcome.PASSED if point.ok else SubOutcome.FAILED


def _first_note(notes: list[str]) -> str:
    for note in notes:
        text = note.strip().lstrip("#").strip()
        if not text or any(p.search(text) for p in _NOT_A_MESSAGE):
            continue
        if METRIC_LINE.match(note):
            continue
        return one_line(text)
    return ""


class _Builder:
    def __init__(self, ktap: bool, bailed: bool) -> None:
        self.ktap = ktap
        self.bailed = bailed
        self.results: list[SubResult] = []
        self.problems: list[str] = []

    def check(self, blk: _Block, where: str) -> None:
        """The problems of one stream, named after where it is."""
        prefix = f"{where}: " if where else ""
        self.problems.extend(prefix + p for p in blk.problems)
        if self.bailed:
            return
        seen = blk.seen
        if blk.plan is None:
            needed = not self.ktap or (blk.top and blk.version)
            if needed:
                self.problems.append(prefix + ("no KTAP plan" if self.ktap else "no TAP plan"))
            elif blk.top and not blk.points:
                self.problems.append("no KTAP results found")
        elif blk.plan != seen:
            tests = "test" if blk.plan == 1 else "tests"
            self.problems.append(prefix + f"planned {blk.plan} {tests}, saw {seen}")
        elif blk.plan_after not in (0, seen):
            self.problems.append(prefix + "the plan is in the middle of the tests")

    def walk(self, blk: _Block, prefix: tuple[str, ...]) -> None:
        for point in blk.points:
            name = point.name or (point.child.name if point.child else None) or ""
            if not name:
                name = "unnamed subtest" if point.synthetic else f"test {point.number}"
            path = (*prefix, name)
            own = _outcome(point)
            kids = point.child
            if kids is not None:
                self.check(kids, "/".join(path))
            if kids is not None and kids.points:
                start = len(self.results)
                self.walk(kids, path)
                below = self.results[start:]
                if own is SubOutcome.TODO_FAILED:
                    self.results[start:] = [_as_todo(r, point.reason) for r in below]
                elif point.synthetic:
                    if not self.bailed:
                        self.results.append(self.leaf(point, path, own))
                elif own in (SubOutcome.FAILED, SubOutcome.ERROR) and not any(
                    r.outcome in (SubOutcome.FAILED, SubOutcome.ERROR) for r in below
                ):
                    self.results.append(self.leaf(point, path, own))
            elif point.synthetic and self.bailed:
                continue
            else:
                if kids is not None and kids.plan == 0 and own is SubOutcome.PASSED:
                    own = SubOutcome.SKIPPED  # "1..0 # SKIP why" inside, "ok" outside
                    point.reason = point.reason or kids.plan_reason
                self.results.append(self.leaf(point, path, own))

    def leaf(self, point: _Point, path: tuple[str, ...], outcome: SubOutcome) -> SubResult:
        where = "/".join(path)
        scalars, yaml_metrics = _yaml_fields(point.yaml)
        metrics = metrics_from_lines(point.notes, where, self.problems)
        for key, raw in yaml_metrics.items():
            try:
                metrics[key] = float(raw)
            except ValueError:
                self.problems.append(f"{where}: metric {key}: {raw!r} is not a number")
        duration: float | None = None
        if "duration_ms" in scalars:
            try:
                duration = round(float(scalars["duration_ms"]) / 1000.0, 9)
            except ValueError:
                self.problems.append(f"{where}: duration_ms {scalars['duration_ms']!r}")
        return SubResult(
            path=path,
            outcome=outcome,
            message=_message(point, outcome, scalars),
            diagnostics="\n".join(point.diag),
            metrics=metrics,
            duration_s=duration,
        )


def _message(point: _Point, outcome: SubOutcome, scalars: dict[str, str]) -> str:
    reason = one_line(point.reason)
    if outcome in (SubOutcome.SKIPPED, SubOutcome.TODO_FAILED):
        return reason
    if outcome is SubOutcome.PASSED:
        if point.directive == "TODO":
            return f"passed although marked TODO: {reason}" if reason else "passed although TODO"
        return ""
    if point.directive == "TIMEOUT":
        return f"timed out: {reason}" if reason else "timed out"
    if reason:
        return reason
    for key in ("message", "error"):
        if scalars.get(key):
            return one_line(scalars[key])
    return _first_note(point.notes)


def _as_todo(result: SubResult, reason: str) -> SubResult:
    if result.outcome is not SubOutcome.FAILED:
        return result
    return SubResult(
        path=result.path,
        outcome=SubOutcome.TODO_FAILED,
        message=one_line(reason) or result.message,
        diagnostics=result.diagnostics,
        metrics=result.metrics,
        duration_s=result.duration_s,
    )


def _parse(output: str, *, ktap: bool) -> ParsedOutput:
    parser = _Parser(_split_lines(output), ktap=ktap)
    top = parser.parse()
    bailed = parser.bail is not None
    builder = _Builder(ktap, bailed)
    if bailed:
        builder.problems.append(f"bail out: {parser.bail}" if parser.bail else "bail out")
    builder.check(top, "")
    builder.problems.extend(parser.problems)
    if top.plan == 0 and not top.points:
        reason = top.plan_reason
        builder.results.append(SubResult(path=(), outcome=SubOutcome.SKIPPED, message=reason))
    else:
        builder.walk(top, ())
    return ParsedOutput(
        results=tuple(builder.results),
        planned=top.plan,
        problems=tuple(builder.problems),
        bailed_out=bailed,
    )


def parse_tap(output: str) -> ParsedOutput:
    """Parse TAP 12/13/14 output (see the module docstring for the rules)."""
    return _parse(output, ktap=False)


def parse_ktap(output: str) -> ParsedOutput:
    """Parse KTAP output, also read from dmesg or a console (see the module docstring)."""
    return _parse(output, ktap=True)
