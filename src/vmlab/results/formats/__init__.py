"""Turn a guest test command's output into individual results.

A lab test that runs a guest command says how it reports: `format = "exit"`
(its exit status is the result, nothing to parse here), `"tap"`, `"ktap"` or
`"junit"`. `parse(output, fmt)` reads the output into a `ParsedOutput`: one
`SubResult` per test found (leaves only), the top-level plan, and the problems
with the output itself (a missing plan, fewer tests than planned, a bail out,
malformed lines, a crash that cut the output short). Parsing never raises on
bad output; what is wrong is reported in `problems`, and the engine decides what
that does to the guest test.

`test_ids(suite_test_id, parsed)` names each result below its guest test:
`fs/kunit` + `("tinyfs_cycles", "load unload")` -> `fs/kunit/tinyfs_cycles/load_unload`.

Everything here is pure: no I/O, no clock. The formats' rules and the mapping
decisions are in the docstrings of `tap` (TAP and KTAP) and `junit_in`.
"""

from __future__ import annotations

import re

from vmlab.results.formats._model import ParsedOutput, SubOutcome, SubResult
from vmlab.results.formats.junit_in import parse_junit
from vmlab.results.formats.tap import parse_ktap, parse_tap

__all__ = [
    "PARSED_FORMATS",
    "ParsedOutput",
    "SubOutcome",
    "SubResult",
    "parse",
    "parse_junit",
    "parse_ktap",
    "parse_tap",
    "sanitise_name",
    "test_ids",
]

PARSED_FORMATS = ("tap", "ktap", "junit")

_PARSERS = {"tap": parse_tap, "ktap": parse_ktap, "junit": parse_junit}


def parse(output: str, fmt: str) -> ParsedOutput:
    """Parse a guest command's `output` written in `fmt` (tap, ktap or junit).

    Raises ValueError for "exit" (an exit status has no sub-results) and for
    anything that is not a known format; never for bad output.
    """
    key = str(fmt).strip().lower()
    if key == "exit":
        raise ValueError("format 'exit' has no sub-results: the exit status is the result")
    parser = _PARSERS.get(key)
    if parser is None:
        known = ", ".join(PARSED_FORMATS)
        raise ValueError(f"unknown test output format {fmt!r} (try one of {known})")
    return parser(output)


_SPACE = re.compile(r"\s+")
_ESCAPE = re.compile(r"[%/#\x00-\x1f\x7f]")


def sanitise_name(name: str) -> str:
    """One part of a test id: whitespace runs -> `_`, and `%`, `/`, `#` and control
    characters percent-escaped (`/` -> `%2F`), so parts never split or collide
    with the `#N` suffix that `test_ids` gives duplicates. Never empty."""
    text = _SPACE.sub("_", name.strip())
    text = _ESCAPE.sub(lambda m: f"%{ord(m.group()):02X}", text)
    if text in ("", ".", ".."):
        return text.replace(".", "%2E") or "_"
    return text


def test_ids(suite_test_id: str, parsed: ParsedOutput) -> list[tuple[str, SubResult]]:
    """Each result with its id: `suite_test_id` + its sanitised path, joined by `/`.

    Ids are unique: a repeated one gets `#2`, `#3`, ... in output order. A result
    with an empty path (a whole stream skipped by `1..0 # SKIP`) gets
    `suite_test_id` itself.
    """
    used: set[str] = set()
    named: list[tuple[str, SubResult]] = []
    for result in parsed.results:
        base = "/".join([suite_test_id, *(sanitise_name(part) for part in result.path)])
        ident, n = base, 1
        while ident in used:
            n += 1
            ident = f"{base}#{n}"
        used.add(ident)
        named.append((ident, result))
    return named


test_ids.__test__ = False  # type: ignore[attr-defined]  # not a pytest test
