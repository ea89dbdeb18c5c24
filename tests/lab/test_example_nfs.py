"""The NFS example lab (examples/nfs) passes for real, all three levels in one
run: a server machine and a client machine booted from the test image, on a
private network; level 1 the POSIX suite over NFSv3 and NFSv4.2, level 2 nfsd
restarted during a client's fsync stream, level 3 the client's link down for
10 s during it (~1.5 min more than level 1 alone)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lab.helpers import vmlab

pytestmark = pytest.mark.vm
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "nfs"
CHECKS = (
    "create-write-read", "rename", "unlink-while-open", "hard-links", "symlinks",
    "permissions-and-ownership", "byte-range-locks", "large-files", "big-directory",
    "concurrent-writers",
)  # fmt: skip


@pytest.mark.timeout(1800)  # a cold image build comes first on a fresh machine
def test_levels_1_to_3_pass(tmp_path: Path) -> None:
    lab = tmp_path / "lab"
    shutil.copytree(EXAMPLE, lab, ignore=shutil.ignore_patterns(".vmlab"))
    done = vmlab("test", str(lab), "--level", "3", "--db", str(tmp_path / "r.db"),
                 "--out", str(tmp_path / "out"), cwd=tmp_path, timeout=1700)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    status = {t["test_id"]: t["execution"]["status"] for t in results["tests"]}
    for version in ("v3", "v4.2"):
        assert status[f"posix/{version}"] == "passed"
        for check in CHECKS:
            assert status[f"posix/{version}/{check}"] == "passed", (version, check)
    for fault in ("server-restart", "link-drop"):
        for point in ("", "/fault", "/writer-resumed", "/data-intact"):
            assert status[f"faults/{fault}{point}"] == "passed", (fault, point)
    # The server machine's boot and setup are kept as a console log of the run.
    assert list((tmp_path / "out" / "console").glob("server_server-*.log"))
