"""vmlab: test systems software in disposable QEMU virtual machines."""

__version__ = "0.1.0"
