"""`vmlab crash analyze LOG...`: every kernel crash report in console/dmesg logs."""

from __future__ import annotations

import json
from pathlib import Path

from vmlab.errors import UsageError
from vmlab.watch.crashes import format_summary, parse_log, read_log


def analyze(logs: list[Path], *, as_json: bool) -> int:
    """Print the crashes of each log; exit 1 when any log holds one."""
    found: list[dict[str, object]] = []
    texts: list[str] = []
    total = 0
    for log in logs:
        try:
            text = read_log(log)
        except FileNotFoundError:
            raise UsageError(f"{log}: no such file") from None
        except (IsADirectoryError, PermissionError) as exc:
            raise UsageError(f"{log}: cannot read it ({exc.strerror})") from None
        crashes = parse_log(text)
        total += len(crashes)
        found += [{"log": str(log), **crash.to_json()} for crash in crashes]
        texts.append(format_summary(crashes, str(log)))
    print(json.dumps(found, indent=2) if as_json else "\n".join(texts))
    return 1 if total else 0
