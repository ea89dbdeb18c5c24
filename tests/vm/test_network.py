"""Private networks between real guests (TCG): two host-root machines of a lab
file on one `[network.NAME]`, booted at the same time, ping each other by name,
move a few MiB over TCP intact, lose and regain their link (QMP set_link, and a
port disabled at the switch), and machines of two labs never see each other's
frames, whether their switch runs in vmlab's event loop or as a detached
process (`vmlab up`). The `vm_env` fixture checks that no QEMU, switch process
or runtime directory (vmlab-* and vmlab-net-*) is left after each test."""

from __future__ import annotations

import asyncio
import contextlib
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from vmlab.config import Lab, load_lab
from vmlab.errors import UsageError
from vmlab.guest.channel import Command, CommandResult
from vmlab.machine.qemu import QemuMachine
from vmlab.machine.spec import MachineSpec
from vmlab.net.lab_switches import ensure_switches, list_switches, stop_unused
from vmlab.net.networks import LabNetworks, attach

from .vmtools import VmEnv, runtime_dirs, tagged_processes

pytestmark = [pytest.mark.vm]

PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"


def sh(script: str) -> Command:
    return Command(argv=("sh", "-c", script), env={"PATH": PATH})


def lab_file(directory: Path, text: str) -> Lab:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vmlab.toml").write_text(textwrap.dedent(text).removeprefix("\n"))
    return load_lab(directory)


@contextlib.asynccontextmanager
async def running(*specs: MachineSpec, logs: Path) -> AsyncIterator[list[QemuMachine]]:
    """Boot machines at the same time; stop them all on the way out, on any path."""
    vms = [QemuMachine(spec, console_log=logs / f"{spec.name}.log") for spec in specs]
    try:
        async with asyncio.TaskGroup() as group:
            for vm in vms:
                group.create_task(vm.start())
        yield vms
    finally:
        await asyncio.gather(*(vm.stop() for vm in vms), return_exceptions=True)


async def ping(vm: QemuMachine, target: str, count: int = 3) -> CommandResult:
    return await vm.run(sh(f"busybox ping -c {count} -W 2 {target}"), timeout=60)


TWO_MACHINES = """
[lab]
name = "pair"

[network.lan]
subnet = "10.77.0.0/24"

[machine.alpha]
accel = "tcg"
networks = ["lan"]

[machine.beta]
accel = "tcg"
networks = [{ name = "lan", address = "10.77.0.42" }]
"""

SERVER = r"""
import hashlib, socket
server = socket.create_server(("0.0.0.0", 5001))
print("listening", flush=True)
conn, peer = server.accept()
digest, size = hashlib.sha256(), 0
while data := conn.recv(1 << 16):
    digest.update(data)
    size += len(data)
print(size, digest.hexdigest(), peer[0], flush=True)
"""

CLIENT = r"""
import hashlib, random, socket, sys, time
data = random.Random(6).randbytes(int(sys.argv[2]))
started = time.monotonic()
with socket.create_connection((sys.argv[1], 5001), timeout=60) as conn:
    conn.sendall(data)
    conn.shutdown(socket.SHUT_WR)
    conn.recv(1)  # the server closes once it has read everything
print(len(data), hashlib.sha256(data).hexdigest(), time.monotonic() - started)
"""


@pytest.mark.timeout(300)
async def test_two_machines_ping_each_other_by_name_and_move_data_intact(
    tmp_path: Path, vm_env: VmEnv
) -> None:
    lab = lab_file(tmp_path / "lab", TWO_MACHINES)
    async with LabNetworks(lab.networks.values()) as nets:
        specs = [nets.attach(lab.machines[name].spec) for name in ("alpha", "beta")]
        async with running(*specs, logs=tmp_path) as (alpha, beta):
            # Every machine resolves every other by name (and itself).
            hosts = await alpha.run(sh("grep -E ' (alpha|beta)$' /etc/hosts"))
            assert hosts.stdout.decode().split("\n") == ["10.77.0.10 alpha", "10.77.0.42 beta", ""]
            addr = await beta.run(sh("ip -4 -o addr show | grep -v ' lo '"))
            assert "inet 10.77.0.42/24" in addr.stdout.decode(), addr.stdout

            to_beta = await ping(alpha, "beta")
            assert to_beta.status == 0, to_beta.stdout + to_beta.stderr
            assert b"3 packets transmitted, 3 packets received" in to_beta.stdout
            to_alpha = await ping(beta, "alpha")
            assert to_alpha.status == 0, to_alpha.stdout + to_alpha.stderr
            assert b"PING alpha (10.77.0.10)" in to_alpha.stdout

            # A few MiB over TCP, checked end to end.
            size = 4 << 20
            switch = nets.switch("lan")
            before = switch.stats()
            heard: list[bytes] = []
            server = asyncio.ensure_future(
                beta.run(
                    Command(argv=("python3", "-c", SERVER), env={"PATH": PATH}),
                    on_stdout=heard.append,
                    timeout=120,
                )
            )
            try:
                deadline = asyncio.get_running_loop().time() + 60
                while b"listening" not in b"".join(heard):
                    assert not server.done(), server.result()
                    assert asyncio.get_running_loop().time() < deadline, "no server"
                    await asyncio.sleep(0.05)
                client = await alpha.run(
                    Command(argv=("python3", "-c", CLIENT, "beta", str(size)), env={"PATH": PATH}),
                    timeout=120,
                )
                served = await server
            finally:
                server.cancel()
            assert client.status == 0, client.stderr
            assert served.status == 0, served.stderr
            sent_size, sent_hash, seconds = client.stdout.split()
            got_size, got_hash, peer = b"".join(heard).split(b"\n")[1].split()
            assert (got_size, got_hash) == (sent_size, sent_hash) == (str(size).encode(), sent_hash)
            assert peer == b"10.77.0.10"
            print(f"TCP alpha -> beta: {size / float(seconds) / 1e6:.1f} MB/s under TCG")
            # The switch lost nothing on the way. (Frames sent while the other
            # machine's QEMU was not up yet, or no longer, are dropped: not
            # counted here.)
            after = switch.stats()
            assert after["alpha"].rx_bytes - before["alpha"].rx_bytes > size
            assert after["beta"].tx_bytes - before["beta"].tx_bytes > size
            drops = {port: after[port].dropped - before[port].dropped for port in after}
            assert drops == {"alpha": 0, "beta": 0}
    assert runtime_dirs(vm_env.runtime, vm_env.tmpdir) == []


@pytest.mark.timeout(300)
async def test_a_link_goes_down_and_comes_back(tmp_path: Path, vm_env: VmEnv) -> None:
    lab = lab_file(tmp_path / "lab", TWO_MACHINES)
    async with LabNetworks(lab.networks.values()) as nets:
        specs = [nets.attach(lab.machines[name].spec) for name in ("alpha", "beta")]
        async with running(*specs, logs=tmp_path) as (alpha, _beta):
            first = await ping(alpha, "beta")
            hosts = await alpha.run(sh("cat /etc/hosts"))  # evidence, if it failed
            assert first.status == 0, (first.stderr, hosts.stdout)

            # The cable pulled at alpha's NIC (QMP set_link): the guest sees no carrier.
            await alpha.link("lan", up=False)
            down = await ping(alpha, "beta", count=2)
            assert down.status != 0, down.stdout
            carrier = await alpha.run(sh("cat /sys/class/net/eth0/carrier"))
            assert carrier.stdout == b"0\n"
            await alpha.link("lan", up=True)
            back = await ping(alpha, "beta")
            assert back.status == 0, back.stdout + back.stderr

            # The same at the switch: beta's port disabled, then enabled.
            switch = nets.switch("lan")
            switch.set_port("beta", False)
            cut = await ping(alpha, "beta", count=2)
            assert cut.status != 0, cut.stdout
            assert switch.stats()["beta"].dropped > 0
            switch.set_port("beta", True)
            again = await ping(alpha, "beta")
            assert again.status == 0, again.stdout + again.stderr

            with pytest.raises(UsageError, match="not on network 'wan'"):
                await alpha.link("wan", up=False)


@pytest.mark.timeout(300)
async def test_two_labs_do_not_see_each_others_traffic(tmp_path: Path, vm_env: VmEnv) -> None:
    # The same subnet and addresses in two labs: only their switches keep them apart.
    one = lab_file(
        tmp_path / "one",
        """
        [lab]
        name = "one"
        [network.lan]
        subnet = "10.77.0.0/24"
        [machine.x]
        accel = "tcg"
        networks = [{ name = "lan", address = "10.77.0.10" }]
        """,
    )
    two = lab_file(
        tmp_path / "two",
        """
        [lab]
        name = "two"
        [network.lan]
        subnet = "10.77.0.0/24"
        [machine.y]
        accel = "tcg"
        networks = [{ name = "lan", address = "10.77.0.11" }]
        """,
    )
    # Lab one's switch runs in this event loop; lab two's as a detached process,
    # as for machines that outlive vmlab (`vmlab up`), recorded in its lab directory.
    found = await ensure_switches(two.root, list(two.networks.values()))
    assert found.started == ("lan",)
    detached = found.switches
    try:
        async with LabNetworks(one.networks.values()) as nets:
            x_spec = nets.attach(one.machines["x"].spec)
            y_spec = attach(two.machines["y"].spec, detached)
            async with running(x_spec, y_spec, logs=tmp_path) as (x, y):
                assert (await ping(x, "10.77.0.11", count=2)).status != 0
                assert (await ping(y, "10.77.0.10", count=2)).status != 0
                # each guest reaches its own address, and its switch heard it ask for the other
                assert (await ping(x, "x", count=1)).status == 0
            one_switch = nets.switch("lan")
            x_mac = one.machines["x"].spec.nics[0].mac
            assert one_switch.mac_table() == {x_mac: "x"}
            assert one_switch.stats()["x"].rx_frames > 0
            two_stats = await detached["lan"].stats()
            assert two_stats["y"].rx_frames > 0
            assert two_stats["y"].tx_frames == 0  # nobody else on lab two's network
    finally:
        assert await stop_unused(two.root, in_use=()) == ["network lan: switch stopped"]
    assert list_switches(two.root) == []
    assert [p for p in tagged_processes(vm_env.tag) if "vmlab.net.switch" in " ".join(p.argv)] == []
