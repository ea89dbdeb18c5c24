"""Ansible from the host: inventories of disk-image machines, and playbooks as a
machine's setup.

    [machine.web]
    image = "base"
    setup = { playbook = "site.yml" }     # relative to the lab file

After every boot of `web`, vmlab runs, on the host, in the lab's directory::

    ansible-playbook -i INVENTORY --limit web site.yml

where INVENTORY (a temporary YAML file) reaches the machine like `vmlab
inventory` does: 127.0.0.1, its forwarded SSH port, root, the lab's key. A
failing playbook is a setup failure (every test of the machine is an ERROR
naming it). Ansible is not a dependency of vmlab: `pip install ansible-core`
(or `pip install 'vmlab[ansible]'`) where vmlab is installed, or put
`ansible-playbook` on PATH. The guest needs python3 (built images have it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from vmlab.errors import HostError
from vmlab.machine.subprocess_util import kill_on_parent_death

SSH_COMMON_ARGS = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
PLAYBOOK_TIMEOUT = 1800.0


@dataclass(frozen=True)
class InventoryHost:
    """One machine as Ansible reaches it: 127.0.0.1:`port`, `user`, `key`."""

    name: str
    port: int
    user: str
    key: Path


def inventory_yaml(hosts: Iterable[InventoryHost]) -> str:
    """An Ansible inventory (YAML) of `hosts`."""
    import yaml  # noqa: PLC0415

    entries = {
        host.name: {
            "ansible_host": "127.0.0.1",
            "ansible_port": host.port,
            "ansible_user": host.user,
            "ansible_ssh_private_key_file": str(host.key),
            "ansible_ssh_common_args": SSH_COMMON_ARGS,
        }
        for host in hosts
    }
    return str(yaml.safe_dump({"all": {"hosts": entries}}, sort_keys=False))


def ansible_playbook() -> str:
    """The ansible-playbook program: next to vmlab's Python (its venv), else on PATH."""
    beside = Path(sys.executable).parent / "ansible-playbook"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("ansible-playbook")
    if found is None:
        raise HostError(
            "ansible-playbook is not installed, and a machine's setup is a playbook "
            "(pip install ansible-core, in vmlab's environment)"
        )
    return found


@dataclass(frozen=True)
class PlaybookRun:
    status: int  # -1: timed out
    output: bytes  # stdout and stderr, interleaved


async def run_playbook(
    playbook: Path, host: InventoryHost, *, cwd: Path, timeout: float = PLAYBOOK_TIMEOUT
) -> PlaybookRun:
    """Run `playbook` against `host` alone (--limit); its whole output is kept."""
    program = ansible_playbook()
    with tempfile.TemporaryDirectory(prefix="vmlab-ansible-") as tmp:
        inventory = Path(tmp) / "inventory.yml"
        inventory.write_text(inventory_yaml([host]))
        env = {
            **os.environ,
            "ANSIBLE_HOST_KEY_CHECKING": "False",
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_LOCAL_TEMP": str(Path(tmp) / "local"),
            # ssh's shared connections live here, and end with the run (below)
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(Path(tmp) / "cp"),
        }
        proc = await asyncio.create_subprocess_exec(
            program, "-i", str(inventory), "--limit", host.name, str(playbook),
            cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=kill_on_parent_death,
        )  # fmt: skip
        try:
            output, _ = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            _kill_group(proc.pid)
            await proc.wait()
            return PlaybookRun(-1, b"")
        except BaseException:
            _kill_group(proc.pid)
            await proc.wait()
            raise
        finally:
            await _end_shared_connections(Path(tmp) / "cp")
    assert proc.returncode is not None
    return PlaybookRun(proc.returncode, output)


async def _end_shared_connections(directory: Path) -> None:
    """Stop the ssh masters Ansible leaves behind (ControlPersist) at once."""

    def controls() -> list[Path]:
        return list(directory.iterdir()) if directory.is_dir() else []

    for control in await asyncio.to_thread(controls):
        with contextlib.suppress(OSError, TimeoutError):
            done = await asyncio.create_subprocess_exec(
                "ssh", "-o", f"ControlPath={control}", "-O", "exit", "vmlab-guest",
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            await asyncio.wait_for(done.wait(), 10)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def failure_line(output: bytes) -> str:
    """The line of a playbook's output that says what failed."""
    lines = [line.strip() for line in output.decode("utf-8", "replace").splitlines()]
    for marker in ("fatal:", "ERROR!", "[ERROR]", "UNREACHABLE!", "FAILED!"):
        for line in reversed(lines):
            if marker in line:
                return line[:300]
    return next((line[:300] for line in reversed(lines) if line), "")
