"""`vmlab up` on bad input, through the installed command: an image that is not
an image, a user_data file that is not valid YAML, an ssh_port in use. Each is
one line on stderr and exit 2, and nothing is left behind: no QEMU, no runtime
directory, no machine record.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from vmlab.machine.image_build import BuiltImage

from .images import image_table
from .test_lifecycle import VMLAB, _qemus_of

pytestmark = [pytest.mark.vm, pytest.mark.timeout(600)]


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield int(server.getsockname()[1])


CASES = {
    "not-an-image": (
        '[machine.web]\nimage = "notes.qcow2"\n',
        r"image .*notes\.qcow2 is not a disk image",
    ),
    "user-data-not-yaml": (
        image_table() + '[machine.web]\nimage = "base"\nuser_data = "user-data.yml"\n',
        r"user-data\.yml:[34]: user_data is not valid YAML",
    ),
    "ssh-port-in-use": (
        image_table() + '[machine.web]\nimage = "base"\nssh_port = PORT\n',
        r"ssh_port \d+ on 127\.0\.0\.1 is in use \(pick another",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(
    case: str, built_image: BuiltImage, busy_port: int, tmp_path: Path
) -> None:
    assert built_image.base.exists()
    lab_text, message = CASES[case]
    lab = tmp_path / "lab"
    lab.mkdir()
    (lab / "vmlab.toml").write_text(lab_text.replace("PORT", str(busy_port)))
    (lab / "notes.qcow2").write_text("not a disk, just text\n" * 100)
    (lab / "user-data.yml").write_text("#cloud-config\npackages:\n  - [unclosed\n")
    runtime = tmp_path / "run"
    runtime.mkdir()
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "TMPDIR": str(runtime)}
    done = subprocess.run(
        [VMLAB, "up"], cwd=lab, env=env, capture_output=True, text=True, timeout=500, check=False
    )
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vmlab: web: "), done.stderr
    assert re.search(message, lines[0]), lines[0]
    assert list(runtime.iterdir()) == []
    assert list((lab / ".vmlab" / "machines").glob("*.json")) == []
    assert _qemus_of(lab) == []
