"""Reading a lab file's TOML, and finding the line of any key in it.

`tomllib` gives values without positions. `KeyIndex` scans the source once (after
tomllib has accepted it) and remembers the line where each table, key and array
element starts, so that a problem with `suite.fs.test[2].timeout` can name its line.
Paths are tuples: table and key names are strings, array positions are ints, just
like pydantic's error locations.
"""

from __future__ import annotations

import contextlib
import re
import tomllib
from typing import Any

from vmlab.errors import ConfigError

KeyPath = tuple[str | int, ...]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_AT_LINE = re.compile(r"\s*\(at line (\d+), column \d+\)\s*$")
_AT_END = re.compile(r"\s*\(at end of document\)\s*$")
_HEADER = re.compile(r"^\s*\[\[?\s*(.+?)\s*\]\]?\s*(?:#.*)?$")
_ASSIGN = re.compile(r"^\s*([A-Za-z0-9_.\-\"' ]+?)\s*=")
_SCALAR_END = frozenset(",]}#\r\n")

# What usually causes each of tomllib's complaints.
_TOML_HINTS = (
    ("invalid value", 'quote strings: key = "text"'),
    ("expected newline or end of document", 'one key per line; quote strings: key = "text"'),
    ("cannot overwrite", "a key is set twice"),
    ("cannot declare", "a table is declared twice"),
    ("duplicate", "a key is set twice"),
    ("expected '=' after a key", "write key = value"),
    ("unterminated", "a quote is not closed"),
    ("unclosed", "a bracket is not closed"),
    ("illegal character '\\n'", "a quote is not closed"),
    ("invalid statement", "a line is a [table], a key = value or a # comment"),
)


def dotted(path: KeyPath) -> str:
    """`("suite", "fs", "test", 2, "run")` -> `suite.fs.test[2].run`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        text = part
        if not _BARE_KEY.fullmatch(part):
            text = '"' + part.replace("\\", "\\\\").replace('"', '\\"') + '"'
        out += f".{text}" if out else text
    return out


def parse_toml(text: str, display: str) -> dict[str, Any]:
    """`tomllib.loads`, with a syntax error turned into one `FILE:LINE:` line."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        problem = str(exc)
        line = text.count("\n") + 1
        if match := _AT_LINE.search(problem):
            line = int(match.group(1))
            problem = problem[: match.start()]
        elif match := _AT_END.search(problem):
            problem = problem[: match.start()]
        problem = problem[:1].lower() + problem[1:]
        key = _key_near(text, line)
        hint = next((h for start, h in _TOML_HINTS if problem.startswith(start)), None)
        where = f"{display}:{line}: " + (f"{key}: " if key else "")
        raise ConfigError(
            f"{where}invalid TOML: {problem}" + (f" ({hint})" if hint else "")
        ) from exc


def _key_near(text: str, line: int) -> str:
    """A best guess at the dotted key on `line` of a file tomllib rejected."""
    lines = text.splitlines()
    table = ""
    for earlier in lines[: line - 1]:
        if match := _HEADER.match(earlier):
            table = re.sub(r"\s*\.\s*", ".", match.group(1))
    here = lines[line - 1] if 0 < line <= len(lines) else ""
    if match := _HEADER.match(here):
        return re.sub(r"\s*\.\s*", ".", match.group(1))
    if match := _ASSIGN.match(here):
        key = re.sub(r"\s*\.\s*", ".", match.group(1))
        return f"{table}.{key}" if table else key
    return table


class KeyIndex:
    """The line of every table, key and array element of a valid TOML text."""

    def __init__(self, text: str) -> None:
        self._lines: dict[KeyPath, int] = {}
        _Scanner(text, self._lines).scan()

    def line_of(self, path: KeyPath) -> int:
        """The line of `path`, else of its nearest enclosing key or table, else 1."""
        for size in range(len(path), 0, -1):
            line = self._lines.get(path[:size])
            if line is not None:
                return line
        return 1


class _ScanError(Exception):
    """The scanner met text it does not understand; the index keeps what it has."""


class _Scanner:
    """A small TOML reader that records positions and throws the values away."""

    def __init__(self, text: str, lines: dict[KeyPath, int]) -> None:
        self.text = text
        self.pos = 0
        self.line = 1
        self.lines = lines
        self.arrays: dict[KeyPath, int] = {}  # array-of-tables path -> elements seen

    def scan(self) -> None:
        # best effort: what is not indexed falls back to its enclosing table
        with contextlib.suppress(_ScanError, IndexError):
            self._document()

    def _document(self) -> None:
        table: KeyPath = ()
        while True:
            self._skip(newlines=True)
            if self.pos >= len(self.text):
                return
            line = self.line
            if self.text.startswith("[[", self.pos):
                self.pos += 2
                keys = self._key()
                array = (*self._resolve(keys[:-1]), keys[-1])
                count = self.arrays.get(array, 0)
                self.arrays[array] = count + 1
                table = (*array, count)
                self._expect("]]")
            elif self.text[self.pos] == "[":
                self.pos += 1
                table = self._resolve(self._key())
                self._expect("]")
            else:
                keys = self._key()
                self._expect("=")
                self._note((*table, *keys), line)
                self._value((*table, *keys))
                continue
            self._note(table, line)

    def _resolve(self, keys: tuple[str, ...]) -> KeyPath:
        """Header keys -> a path, entering the last element of arrays of tables."""
        path: KeyPath = ()
        for key in keys:
            path = (*path, key)
            if path in self.arrays:
                path = (*path, self.arrays[path] - 1)
        return path

    def _note(self, path: KeyPath, line: int) -> None:
        for size in range(1, len(path) + 1):
            self.lines.setdefault(path[:size], line)

    def _skip(self, *, newlines: bool) -> None:
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char in " \t":
                self.pos += 1
            elif char == "#":
                end = text.find("\n", self.pos)
                self.pos = len(text) if end < 0 else end
            elif newlines and char in "\r\n":
                self.line += char == "\n"
                self.pos += 1
            else:
                return

    def _expect(self, token: str) -> None:
        self._skip(newlines=False)
        if not self.text.startswith(token, self.pos):
            raise _ScanError(token)
        self.pos += len(token)

    def _key(self) -> tuple[str, ...]:
        parts: list[str] = []
        while True:
            self._skip(newlines=False)
            start = self.pos
            char = self.text[self.pos]
            if char == '"':
                self._string()
                parts.append(tomllib.loads("k = " + self.text[start : self.pos])["k"])
            elif char == "'":
                self._string()
                parts.append(self.text[start + 1 : self.pos - 1])
            else:
                match = _BARE_KEY.match(self.text, self.pos)
                if match is None:
                    raise _ScanError("key")
                parts.append(match.group())
                self.pos = match.end()
            self._skip(newlines=False)
            if self.pos < len(self.text) and self.text[self.pos] == ".":
                self.pos += 1
                continue
            return tuple(parts)

    def _value(self, path: KeyPath) -> None:
        self._skip(newlines=False)
        char = self.text[self.pos]
        if char in "\"'":
            self._string()
        elif char == "[":
            self._array(path)
        elif char == "{":
            self._inline_table(path)
        else:
            start = self.pos
            while self.pos < len(self.text) and self.text[self.pos] not in _SCALAR_END:
                self.pos += 1
            if self.pos == start:
                raise _ScanError("value")

    def _array(self, path: KeyPath) -> None:
        self.pos += 1
        index = 0
        while True:
            self._skip(newlines=True)
            if self.text[self.pos] == "]":
                self.pos += 1
                return
            self._note((*path, index), self.line)
            self._value((*path, index))
            index += 1
            self._skip(newlines=True)
            if self.text[self.pos] == ",":
                self.pos += 1

    def _inline_table(self, path: KeyPath) -> None:
        self.pos += 1
        while True:
            self._skip(newlines=True)
            if self.text[self.pos] == "}":
                self.pos += 1
                return
            line = self.line
            keys = self._key()
            self._expect("=")
            self._note((*path, *keys), line)
            self._value((*path, *keys))
            self._skip(newlines=True)
            if self.text[self.pos] == ",":
                self.pos += 1

    def _string(self) -> None:
        text = self.text
        quote = text[self.pos]
        if text.startswith(quote * 3, self.pos):
            self.pos += 3
            while True:
                if self.pos >= len(text):
                    raise _ScanError("string")
                if quote == '"' and text[self.pos] == "\\":
                    self.line += text.count("\n", self.pos, self.pos + 2)
                    self.pos += 2
                elif text.startswith(quote * 3, self.pos):
                    # up to two quotes may sit right before the closing three
                    end = self.pos + 3
                    while end < min(len(text), self.pos + 5) and text[end] == quote:
                        end += 1
                    self.pos = end
                    return
                else:
                    self.line += text[self.pos] == "\n"
                    self.pos += 1
        self.pos += 1
        while text[self.pos] != quote:
            self.pos += 2 if quote == '"' and text[self.pos] == "\\" else 1
        self.pos += 1
