"""Kernel crash reports in serial console and dmesg logs.

``parse_log(text)`` returns every crash report in a log, in order; ``CrashScanner``
does the same line by line for a live console (``parse_log`` is built on it, so the
two always agree). Each ``Crash`` has a syzkaller-style title, the guilty frame, a
signature for de-duplication, and where it is in the log. The report types are the
table in ``crash_patterns``; frame rules are in ``crash_frames``.

Reading a log
-------------
Each line loses its prefixes first: ANSI escapes, a syslog/journal prefix (``Nov 21
03:00:00 host kernel:``; lines of other programs are *foreign*), ``<4>`` log
levels, printk timestamps (``[   12.345678]`` or ``dmesg -T``), ``dmesg -x``
facility tags and caller ids (``[T123]``, ``[C0]``). A line with one of these is a
*kernel line*; once a log has shown kernel lines, lines without a prefix are other
programs' output: they never start a report and are skipped inside one (except for
entries marked ``any_source``: a ``cat /sys/kernel/debug/kmemleak`` into the console
is unprefixed but still reports leaks).

With caller ids, every task ``T<n>`` and the CPU contexts (all ``C<n>`` together)
have their own report in progress, so interleaved reports are told apart.

Where a report starts and ends
------------------------------
A report starts at a line matching a table entry (plus a ``cut here`` or ``=====``
separator up to three lines before it). It ends at the first of:

* its closing line: ``---[ end trace ... ]---``, the ``=====`` rule of sanitizer
  reports, ``---[ end Kernel panic ... ]---``. After ``end trace`` (and the rule),
  the register dump that oopses print again, ``note:`` lines and a following
  ``Kernel panic - not syncing`` still belong to the report; a panic takes
  everything up to its own end marker;
* the start of another report in the same context, unless the new line is the
  report's own continuation (``invalid opcode`` after ``kernel BUG at``, a panic
  after any report);
* once its stack trace is complete (``</TASK>``, or the first non-frame line), the
  first line that does not look like part of a report (indented lines, register
  dumps, ``CPU:``/``Hardware name:``/``Call Trace:`` and the like, see
  ``_REPORT_LINE_RE``, plus the entry's own ``body`` lines). Before the stack, the
  first ``_HEADER_WINDOW`` lines are taken as they come, later ones only if they
  look like a report. Reports without a stack (``stack=False``) use the report-like
  rule from their first line on;
* a sign of a new boot (``SeaBIOS``, ``Linux version``, ``reboot: ...``), or the end
  of the log (``finish()``); the report is *cut* if it had not reached its end.

A report is *corrupted* when its title cannot be trusted: the guilty frame the title
needs was not found, a field of an optional title part is missing in a cut report,
its first line has another printk merged into it, or it is a panic that only ever
follows another report whose start was lost (``Kernel panic - not syncing: Fatal
exception`` on its own).

Signatures
----------
``signature`` is the first 16 hex digits of SHA-256 over the kind and the title
(with any numbers and addresses masked). Timestamps, addresses, offsets, pids, CPU
numbers and task names never enter it, so the same bug in two runs has the same
signature, and different titles give different signatures. Stack frames beyond the
title's are left out on purpose: a report cut off after its ``RIP:`` line has the
same title as the complete one but not the same stack.

The report text keeps the lines of the report with their log prefixes removed; the
1-based, inclusive ``start_line``/``end_line`` point into the original log.
"""

from __future__ import annotations

import enum
import hashlib
import os
import re
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from vmlab.watch.crash_frames import (
    Frame,
    guilty,
    is_generic,
    normalize_func,
    parse_frame,
    parse_rip,
)
from vmlab.watch.crash_patterns import HANG_KINDS, PATTERNS, CrashPattern, FrameSource, Kind

__all__ = [
    "PATTERNS",
    "Crash",
    "CrashPattern",
    "CrashScanner",
    "Kind",
    "format_summary",
    "parse_log",
    "read_log",
]

_HEADER_WINDOW = 10  # lines accepted unconditionally before a report's stack trace
_MAX_LINES = 2000  # a report never grows beyond this
_LEAD_IN = 3  # how far back a ``cut here``/``=====`` separator may precede the start

_ANSI_RE = re.compile(r"\x1b(?:\[[0-9;?]*[ -/]*[@-~]|[@-Z\\-_c])")
_SYSLOG_RE = re.compile(
    r"^(?:[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d(?:\.\d+)?"
    r"|\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?)"
    r" \S+ (?P<prog>[^\s:\[]+)(?:\[\d+\])?: ?"
)
_PREFIX_RE = re.compile(
    r"<\d{1,2}>"
    r"|\[\s*\d+\.\d+\]"
    r"|\[[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4}\]"
    r"|\[\s*(?P<caller>[TC]\d+)\]"
    r"|(?:kern|user|mail|daemon|auth|syslog|lpr|news)\s*:\s*"
    r"(?:emerg|alert|crit|err|warn|notice|info|debug)\s*: "
)
_KMEMLEAK_RE = re.compile(r"^kmemleak: (?=unreferenced object|\s)")
_REBOOT_RE = re.compile(
    r"^(?:SeaBIOS \(version|iPXE \(http|Booting from (?:ROM|Hard Disk|DVD|Floppy)"
    r"|Linux version \d|Command line: |reboot: (?:Restarting system|Power down|System halted)"
    r"|U-Boot )"
)
_END_TRACE_RE = re.compile(r"^---\[ end trace [0-9a-f]* ?\]---")
_PANIC_END_RE = re.compile(r"^---\[ end Kernel panic")
_SEPARATOR_RE = re.compile(r"^(?:-+\[ cut here \]-+|={20,})$")
_STACK_MARKER_RE = re.compile(r"^(?:Call Trace|Call trace|\s*backtrace(?: \(crc [0-9a-f]+\))?):")
_SECTION_RE = re.compile(r"^\s*<(?P<close>/?)(?P<name>TASK|IRQ|NMI|SOFTIRQ|EOI)>")
_REGS = r"(?:RIP|RSP|RAX|RBX|RCX|RDX|RSI|RDI|RBP|R\d\d|FS|GS|CS|CR\d|DR\d|PKRU|EFLAGS|Code)\b"
_REG_RE = re.compile(r"^" + _REGS)
_STACK_LINE_RE = re.compile(r"^(?:\s|" + _REGS + ")")
# Lines that still belong to a report after its stack trace (or far into its header).
_REPORT_LINE_RE = re.compile(
    r"^(?:\s|$|<|\?|\[<[0-9a-f]+>\]|" + _REGS + r"|Call Trace|Call trace|Modules linked in"
    r"|CPU: \d+ (?:PID|UID)|Hardware name|Workqueue:|Kernel Offset|Sending NMI|NMI backtrace"
    r"|task:\S+\s+state:|Showing all locks|\d+ locks? held by|no locks held by"
    r"|INFO: lockdep is turned off|Disabling lock debugging|irq event stamp|hardirqs last"
    r"|softirqs last|rcu: |Preemption disabled at|Tainted:|#PF: |PGD |Oops: |note: "
    r"|Dumping ftrace buffer)"
)
# Lines seen between a report's first line and its stack trace.
_HEADER_LINE_RE = re.compile(
    r"^(?:-+\[ cut here \]-+$|in_atomic\(\)|preempt_count:|RCU nest depth|caller is |\"echo 0 >"
    r"|kernel BUG at |Modules linked in)"
)
# Lines that may follow ``---[ end trace ]---`` and still belong to the report.
_TAIL_RE = re.compile(
    r"^(?:" + _REGS + r"|Kernel Offset:|note: |Fixing recursive fault|Rebooting in"
    r"|Dumping ftrace buffer|\s+\(ftrace buffer empty\)|Disabling lock debugging|\s*$)"
)
_AT_RE = re.compile(
    r"(?:\bat: |^\[<[0-9a-f]+>\] )(?:\[<[0-9a-f]+>\]\s*)?(?P<func>[A-Za-z_$][\w.$]*)"
    r"(?:\+0x[0-9a-f]+/0x[0-9a-f]+|\s+\S+:\d+)"
)
_MERGED_RE = re.compile(r"\[\s*\d+\.\d{3,}\]")
_SCRUB_RE = re.compile(r"\b(?:0x[0-9a-fA-F]+|[0-9a-f]*\d[0-9a-f]*|\d+)\b")
_FIELD_RE = re.compile(r"\{(\w+)\}")
_OPTIONAL_RE = re.compile(r"\[([^\[\]]*)\]")
_ANY_START_RE = re.compile(
    "|".join("(?:" + re.sub(r"\(\?P<\w+>", "(?:", p.start.pattern) + ")" for p in PATTERNS)
)


@dataclass(frozen=True)
class Crash:
    """One kernel crash report found in a log."""

    kind: Kind  # a str (StrEnum); see crash_patterns.Kind for the list
    title: str  # syzkaller-style, e.g. "KASAN: slab-use-after-free Read in foo_bar"
    frame: str | None  # the guilty function, None when not found
    signature: str  # 16 hex digits; equal for the same bug across runs
    corrupted: bool  # the title cannot be trusted (cut off, interleaved, start lost)
    report: str  # the report's lines, log prefixes removed
    start_line: int  # 1-based, inclusive
    end_line: int  # 1-based, inclusive

    @property
    def is_hang(self) -> bool:
        """A lockup, stall or hung task: the kernel stopped making progress."""
        return self.kind in HANG_KINDS

    def to_json(self) -> dict[str, object]:
        """A JSON-safe dict (keys: the field names)."""
        return {
            "kind": str(self.kind),
            "title": self.title,
            "frame": self.frame,
            "signature": self.signature,
            "corrupted": self.corrupted,
            "report": self.report,
            "start_line": self.start_line,
            "end_line": self.end_line,
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Crash:
        """The inverse of ``to_json``."""
        frame = data["frame"]
        start, end = data["start_line"], data["end_line"]
        if not isinstance(start, int) or not isinstance(end, int):
            raise ValueError("start_line and end_line must be integers")
        return cls(
            kind=Kind(str(data["kind"])),
            title=str(data["title"]),
            frame=None if frame is None else str(frame),
            signature=str(data["signature"]),
            corrupted=bool(data["corrupted"]),
            report=str(data["report"]),
            start_line=start,
            end_line=end,
        )


class _Source(enum.Enum):
    KERNEL = "kernel"  # had a kernel log prefix
    PLAIN = "plain"  # no prefix at all
    FOREIGN = "foreign"  # syslog line of another program


@dataclass(frozen=True, slots=True)
class _Line:
    no: int
    text: str
    source: _Source
    key: str  # "T<n>" for a task, "C" for any CPU context, "" without caller ids


def _normalize(raw: str, no: int) -> _Line:
    s = raw.rstrip("\r\n")
    if "\x1b" in s:
        s = _ANSI_RE.sub("", s)
    s = s.replace("\r", "")
    source = _Source.PLAIN
    pos = 0
    m = _SYSLOG_RE.match(s)
    if m is not None:
        if m["prog"] != "kernel":
            return _Line(no, s[m.end() :], _Source.FOREIGN, "")
        source = _Source.KERNEL
        pos = m.end()
    caller = None
    prefixed = False
    while (m := _PREFIX_RE.match(s, pos)) is not None:
        prefixed = True
        caller = m["caller"] or caller
        pos = m.end()
        if s.startswith(" ", pos) and _PREFIX_RE.match(s, pos + 1):
            pos += 1
    if prefixed:
        source = _Source.KERNEL
        if s.startswith(" ", pos):
            pos += 1
    text = s[pos:]
    if text.startswith("kmemleak: ") and _KMEMLEAK_RE.match(text):
        text = text[len("kmemleak: ") :]
    key = "" if caller is None else ("C" if caller[0] == "C" else caller)
    return _Line(no, text, source, key)


class _Phase(enum.Enum):
    HEADER = "header"  # before the stack trace
    STACK = "stack"  # inside the stack trace
    AFTER = "after"  # stack trace complete
    TAIL = "tail"  # after the closing marker: register dump, panic may follow
    PANIC = "panic"  # a panic: everything up to its end marker


@dataclass
class _Open:
    pattern: CrashPattern
    match: re.Match[str]
    header: _Line  # the line that matched ``pattern.start``
    lines: list[_Line] = field(default_factory=list)
    phase: _Phase = _Phase.HEADER
    complete: bool = False
    header_lines: int = 0
    stack_frames: int = 0


class CrashScanner:
    """Finds crash reports in a log fed line by line (a live console).

    ``feed`` returns the reports that completed with the line it was given (a
    report often completes only when the first line after it arrives); ``finish``
    flushes what is still open at the end of the log.
    """

    def __init__(self) -> None:
        self._lineno = 0
        self._kernel_seen = False
        self._open: dict[tuple[_Source, str], _Open] = {}
        self._recent: deque[_Line] = deque(maxlen=_LEAD_IN)

    @property
    def lines_seen(self) -> int:
        """How many lines were fed so far."""
        return self._lineno

    def feed(self, line: str) -> list[Crash]:
        """Feed one line (a trailing newline is fine; embedded ones split lines)."""
        out: list[Crash] = []
        if line.endswith("\n"):
            line = line[:-1]
        for piece in line.split("\n"):
            self._lineno += 1
            self._step(_normalize(piece, self._lineno), out)
        return out

    @property
    def reporting(self) -> bool:
        """True while a report has started and not ended yet."""
        return bool(self._open)

    def finish(self) -> list[Crash]:
        """The end of the log: close the reports still open."""
        out = [self._close(rep) for rep in sorted(self._open.values(), key=_first_line)]
        self._open.clear()
        self._recent.clear()
        return out

    # -- one line ---------------------------------------------------------------

    def _step(self, line: _Line, out: list[Crash]) -> None:
        if line.source is _Source.FOREIGN:
            return
        if _REBOOT_RE.match(line.text):
            out.extend(self.finish())
            return
        if line.source is _Source.KERNEL:
            self._kernel_seen = True
        key = (line.source, line.key)
        current = self._open.get(key)
        found = self._match_start(line)
        if found is not None:
            pattern, match = found
            if current is not None:
                if self._absorbs(current, pattern, line):
                    return
                out.append(self._close(self._open.pop(key)))
            self._open[key] = self._begin(pattern, match, line)
            return
        if current is None:
            self._recent.append(line)
            return
        if not self._extend(current, line):
            out.append(self._close(self._open.pop(key)))
            self._recent.append(line)
        elif current.phase is _Phase.PANIC and _PANIC_END_RE.match(line.text):
            out.append(self._close(self._open.pop(key)))

    def _match_start(self, line: _Line) -> tuple[CrashPattern, re.Match[str]] | None:
        if not _ANY_START_RE.match(line.text):
            return None
        may_start = line.source is _Source.KERNEL or not self._kernel_seen
        for pattern in PATTERNS:
            if not (may_start or pattern.any_source):
                continue
            m = pattern.start.match(line.text)
            if m is not None:
                return pattern, m
        return None

    def _absorbs(self, current: _Open, pattern: CrashPattern, line: _Line) -> bool:
        """Whether a line that looks like a report start continues ``current``."""
        cont = current.pattern.continues
        if current.phase is _Phase.PANIC:
            absorbed = True
        elif pattern.follow_up:
            absorbed = True
            current.phase = _Phase.PANIC
        else:
            absorbed = (
                current.phase in (_Phase.HEADER, _Phase.STACK)
                and cont is not None
                and cont.match(line.text) is not None
            )
        if absorbed:
            current.lines.append(line)
        return absorbed

    def _begin(self, pattern: CrashPattern, match: re.Match[str], line: _Line) -> _Open:
        rep = _Open(pattern=pattern, match=match, header=line)
        lead = [x for x in self._recent if x.key == line.key and x.source is line.source]
        for i, prev in enumerate(lead):
            if _SEPARATOR_RE.match(prev.text) and line.no - prev.no <= 2 * _LEAD_IN:
                rep.lines.extend(lead[i:])
                break
        self._recent.clear()
        rep.lines.append(line)
        if pattern.kind is Kind.PANIC:
            rep.phase = _Phase.PANIC
        elif not pattern.stack:
            rep.phase = _Phase.AFTER
            rep.complete = True
        return rep

    def _extend(self, rep: _Open, line: _Line) -> bool:
        """Add ``line`` to ``rep`` if it belongs there; False ends the report."""
        text = line.text
        pattern = rep.pattern
        if len(rep.lines) >= _MAX_LINES:
            return False
        if rep.phase is _Phase.PANIC:
            rep.lines.append(line)
            return True
        if rep.phase is _Phase.TAIL:
            if _TAIL_RE.match(text):
                rep.lines.append(line)
                return True
            return False
        if _END_TRACE_RE.match(text) or (pattern.end is not None and pattern.end.match(text)):
            rep.lines.append(line)
            rep.phase = _Phase.TAIL
            rep.complete = True
            return True
        if pattern.end is not None:
            rep.lines.append(line)
            return True
        if rep.phase is _Phase.HEADER:
            if _STACK_MARKER_RE.match(text):
                rep.phase = _Phase.STACK
                rep.lines.append(line)
                return True
            rep.header_lines += 1
            if (
                rep.header_lines <= _HEADER_WINDOW
                or _HEADER_LINE_RE.match(text)
                or self._report_like(rep, text)
            ):
                rep.lines.append(line)
                return True
            return False
        if rep.phase is _Phase.STACK:
            if _STACK_LINE_RE.match(text):
                rep.lines.append(line)
                if parse_frame(text, line.no) is not None:
                    rep.stack_frames += 1
                section = _SECTION_RE.match(text)
                if section is not None and section["close"] and section["name"] == "TASK":
                    rep.phase = _Phase.AFTER
                    rep.complete = True
                return True
            rep.phase = _Phase.AFTER
            rep.complete = True
        if _STACK_MARKER_RE.match(text):
            rep.phase = _Phase.STACK
            rep.lines.append(line)
            return True
        if self._report_like(rep, text):
            rep.lines.append(line)
            return True
        return False

    @staticmethod
    def _report_like(rep: _Open, text: str) -> bool:
        body = rep.pattern.body
        return _REPORT_LINE_RE.match(text) is not None or (
            body is not None and body.match(text) is not None
        )

    # -- a finished report ------------------------------------------------------

    def _close(self, rep: _Open) -> Crash:
        cut = not rep.complete and not (rep.phase is _Phase.STACK and rep.stack_frames > 0)
        if rep.phase is _Phase.PANIC:
            cut = False
        return _build(rep, cut)


def _first_line(rep: _Open) -> int:
    return rep.lines[0].no


def _stacks(lines: list[_Line]) -> list[list[Frame]]:
    """The report's stack traces: the frames after each ``Call Trace:``-like marker
    (or, without markers, each run of frame lines), with <IRQ>/<NMI> sections marked."""
    has_marker = any(_STACK_MARKER_RE.match(x.text) for x in lines)
    blocks: list[list[Frame]] = []
    current: list[Frame] | None = None if has_marker else []
    in_irq = False
    for line in lines:
        text = line.text
        if has_marker and _STACK_MARKER_RE.match(text):
            if current:
                blocks.append(current)
            current, in_irq = [], False
            continue
        if current is None:
            continue
        section = _SECTION_RE.match(text)
        if section is not None:
            if section["name"] in ("IRQ", "NMI", "SOFTIRQ"):
                in_irq = not section["close"]
            elif section["name"] == "TASK" and section["close"] and current:
                blocks.append(current)
                current = [] if not has_marker else None
            continue
        frame = parse_frame(text, line.no, in_irq=in_irq)
        if frame is not None:
            current.append(frame)
            continue
        if not current or _REG_RE.match(text) or text.lstrip().startswith("?"):
            continue
        blocks.append(current)
        current = [] if not has_marker else None
    if current:
        blocks.append(current)
    return blocks


def _at_frame(lines: list[_Line], pattern: CrashPattern) -> str | None:
    marker = pattern.at_marker
    if marker is None:
        return None
    for i, line in enumerate(lines):
        if marker.search(line.text) is None:
            continue
        for near in lines[i : i + 6]:
            for m in _AT_RE.finditer(near.text):
                func = normalize_func(m["func"])
                if not is_generic(func, pattern.skip):
                    return func
        return None
    return None


def _guilty_frame(rep: _Open, fields: dict[str, str], stacks: list[list[Frame]]) -> str | None:
    """The guilty function: from the pattern's frame sources, in order."""
    pattern = rep.pattern
    for source in pattern.frames:
        if source is FrameSource.HEADER:
            name = fields.get("func") or fields.get("func_alt")
            if name and not is_generic(name, pattern.skip):
                return name
        elif source is FrameSource.AT:
            name = _at_frame(rep.lines, pattern)
            if name is not None:
                return name
        elif source is FrameSource.RIP:
            rips = [f for f in (parse_rip(x.text, x.no) for x in rep.lines) if f is not None]
            found = guilty(rips, pattern.skip)
            if found is not None:
                return found.func
        else:
            for stack in stacks:
                found = guilty(stack, pattern.skip)
                if found is not None:
                    return found.func
    return None


def _render(template: str, fields: dict[str, str]) -> tuple[str, bool, bool]:
    """Fill a title template; returns (title, required missing, optional missing)."""
    optional_missing = False

    def optional(m: re.Match[str]) -> str:
        nonlocal optional_missing
        if all(name in fields for name in _FIELD_RE.findall(m[1])):
            return m[1]
        optional_missing = True
        return ""

    text = _OPTIONAL_RE.sub(optional, template)
    required_missing = any(name not in fields for name in _FIELD_RE.findall(text))
    title = _FIELD_RE.sub(lambda m: fields.get(m[1], "?"), text)
    return " ".join(title.split()), required_missing, optional_missing


def _build(rep: _Open, cut: bool) -> Crash:
    pattern = rep.pattern
    lines = rep.lines
    fields = {k: v for k, v in rep.match.groupdict().items() if v is not None}
    for name in ("func", "func2", "func_alt"):
        if name in fields:
            fields[name] = normalize_func(fields[name])
    if pattern.extra is not None:
        for line in lines:
            m = pattern.extra.search(line.text)
            if m is not None:
                fields.update({k: v for k, v in m.groupdict().items() if v is not None})
                break
    stacks = _stacks(lines)
    if pattern.task_frames_only:
        stacks = [s for s in ([f for f in stack if not f.in_irq] for stack in stacks) if s]
    frame = _guilty_frame(rep, fields, stacks)
    if frame is not None:
        fields["frame"] = frame
    title, required_missing, optional_missing = _render(pattern.title, fields)
    header = rep.header
    corrupted = (
        pattern.corrupted
        or required_missing
        or (optional_missing and cut)
        or _MERGED_RE.search(header.text) is not None
    )
    material = f"{pattern.kind}\n{_SCRUB_RE.sub('N', title)}"
    return Crash(
        kind=pattern.kind,
        title=title,
        frame=frame,
        signature=hashlib.sha256(material.encode()).hexdigest()[:16],
        corrupted=corrupted,
        report="\n".join(x.text for x in lines),
        start_line=lines[0].no,
        end_line=lines[-1].no,
    )


def read_log(path: str | os.PathLike[str]) -> str:
    """A log file as text, with every byte kept (no newline translation, bad UTF-8
    replaced), so that line numbers agree with ``grep -n`` and editors."""
    return Path(path).read_bytes().decode("utf-8", errors="replace")


def parse_log(text: str) -> list[Crash]:
    """Every crash report in a console or dmesg log, in order of their first line.

    Lines are split at ``\\n`` only (``\\r`` is dropped); read files with
    ``read_log`` (not universal newlines) so that line numbers match the file.
    """
    scanner = CrashScanner()
    crashes: list[Crash] = []
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for line in lines:
        crashes.extend(scanner.feed(line))
    crashes.extend(scanner.finish())
    crashes.sort(key=lambda c: c.start_line)
    return crashes


def format_summary(crashes: list[Crash], source: str, *, max_report_lines: int = 40) -> str:
    """Readable text for ``vmlab crash analyze LOG``."""
    if not crashes:
        return f"{source}: no kernel crash reports\n"
    distinct = len({c.signature for c in crashes})
    noun = "report" if len(crashes) == 1 else "reports"
    out = [f"{source}: {len(crashes)} kernel crash {noun} ({distinct} distinct)", ""]
    for i, crash in enumerate(crashes, 1):
        flag = "  [corrupted: title may be wrong]" if crash.corrupted else ""
        out.append(f"#{i} {crash.title}{flag}")
        out.append(
            f"   kind {crash.kind}, lines {crash.start_line}-{crash.end_line}, "
            f"frame {crash.frame or '-'}, signature {crash.signature}"
        )
        body = crash.report.split("\n")
        out.extend(f"   | {x}" for x in body[:max_report_lines])
        if len(body) > max_report_lines:
            out.append(f"   | ... ({len(body) - max_report_lines} more lines)")
        out.append("")
    return "\n".join(out)
