"""Private L2 networks between machines (`[network.NAME]` in a lab file).

Each network is a small learning switch in vmlab (`switch.py`) on unix datagram
sockets in a private runtime directory; each machine's NIC is a QEMU `dgram`
netdev whose frames go to that switch (`qemu_nic.py`). No root, bridge or tap
device is involved, and no frame leaves the host. Addresses, MACs and subnets
are pure functions of the lab (`addresses.py`); `networks.py` runs a lab's
switches and attaches machine specs to them.

Modules here import nothing from `vmlab.machine` but its specs, so that
`vmlab.machine.qemu` can use them, and the switch process starts fast.
"""
