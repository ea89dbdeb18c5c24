"""The example lab (examples/kernel-module) passes its level 1 for real."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lab.helpers import vmlab

pytestmark = pytest.mark.vm
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "kernel-module"


@pytest.mark.timeout(900)
def test_level_1_passes(tmp_path: Path) -> None:
    lab = tmp_path / "lab"
    shutil.copytree(EXAMPLE, lab, ignore=shutil.ignore_patterns(".vmlab", "*.ko", "*.o"))
    done = vmlab("test", str(lab), "--level", "1", "--db", str(tmp_path / "r.db"),
                 "--out", str(tmp_path / "out"), cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    by_id = {t["test_id"]: t for t in results["tests"]}
    assert by_id["kernel_module/build"]["execution"]["status"] == "passed"
    domains = results["summary"]["domains"]
    assert {"kernel_module", "filesystem"} <= set(domains)
    assert all(d["failed"] == 0 and d["errors"] == 0 for d in domains.values())
    assert domains["filesystem"]["passed"] >= 10
    timing = by_id["kernel_module/load-unload/cycle_timing"]["metrics"]
    assert timing["load_ms_median"] > 0
