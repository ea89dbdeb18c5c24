"""`vmlab run`'s arguments parsed without Typer: the fast path of the CLI.

Typer builds a pydantic adapter for every option when it parses (~70 ms
here), on top of its import (~30 ms): a tenth of a whole `vmlab run -- true`
under TCG, all spent before QEMU can start. This parser takes the plain
shapes only: known long options (`--name VALUE`, `--name=VALUE`), `-v`,
then `--` or the first word that is not an option, and the command. For
anything else (`--help`, an unknown option, a value that does not convert,
no command) it returns None and Typer parses the arguments, with its usual
help and error messages. tests/unit/test_run_argv.py checks that the two
parsers agree, defaults included.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from vmlab.cli.run_cmd import RunOptions
from vmlab.machine.spec import Accel

# --option: (RunOptions field, conversion, repeatable)
_VALUED: dict[str, tuple[str, Callable[[str], Any], bool]] = {
    "--kernel": ("kernel", Path, False),
    "--modules": ("modules", Path, False),
    "--share": ("shares", str, True),
    "--memory": ("memory", str, False),
    "--cpus": ("cpus", int, False),
    "--append": ("append", str, True),
    "--env": ("env", str, True),
    "--timeout": ("timeout", float, False),
    "--console-log": ("console_log", Path, False),
    "--accel": ("accel", Accel, False),
    "--boot-timeout": ("boot_timeout", float, False),
}
_FLAGS = {"--verbose": "verbose", "-v": "verbose"}
_DEFAULTS: dict[str, Any] = {
    "kernel": None,
    "modules": None,
    "shares": (),
    "memory": "512M",
    "cpus": 1,
    "append": (),
    "timeout": None,
    "console_log": None,
    "verbose": False,
    "accel": Accel.AUTO,
    "env": (),
    "boot_timeout": None,
}


def parse_run_argv(args: Sequence[str]) -> RunOptions | None:
    """`args` (what follows `vmlab run`) as RunOptions, or None: ask Typer."""
    fields = dict(_DEFAULTS)
    index = 0
    while index < len(args):
        word = args[index]
        if word == "--":
            index += 1
            break
        if not word.startswith("-"):
            break  # the command (options end at the first other word)
        if word in _FLAGS:
            fields[_FLAGS[word]] = True
            index += 1
            continue
        name, equals, value = word.partition("=")
        if name not in _VALUED:
            return None
        if not equals:
            if index + 1 >= len(args):
                return None
            value = args[index + 1]
            index += 1
        index += 1
        field, convert, repeatable = _VALUED[name]
        if not value:
            return None
        try:
            converted = convert(value)
        except ValueError:
            return None
        fields[field] = (*fields[field], converted) if repeatable else converted
    command = tuple(args[index:])
    if not command:
        return None
    return RunOptions(command=command, **fields)
