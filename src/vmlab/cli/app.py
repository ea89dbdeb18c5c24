"""The `vmlab` command line (Typer). Each command lives in its own module."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from vmlab import __version__
from vmlab.cli.runner import run_async
from vmlab.machine.spec import Accel

app = typer.Typer(
    name="vmlab",
    help="Test systems software in disposable QEMU virtual machines.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        print(f"vmlab {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Test systems software in disposable QEMU virtual machines."""


@app.command(
    context_settings={"allow_interspersed_args": False},
    no_args_is_help=True,
)
def run(
    command: Annotated[list[str], typer.Argument(metavar="-- CMD [ARGS]...", show_default=False)],
    kernel: Annotated[
        Path | None,
        typer.Option(help="bzImage or vmlinux [default: newest /boot/vmlinuz-* with modules]"),
    ] = None,
    modules: Annotated[
        Path | None, typer.Option(help="Modules of --kernel [default: /lib/modules/RELEASE]")
    ] = None,
    share: Annotated[
        list[str] | None,
        typer.Option(
            metavar="HOST[:GUEST][:rw]",
            help="Share a host directory (read-only unless :rw). Repeatable.",
        ),
    ] = None,
    memory: Annotated[str, typer.Option(help="Guest memory, e.g. 512M or 2G")] = "512M",
    cpus: Annotated[int, typer.Option(help="Virtual CPUs")] = 1,
    append: Annotated[
        list[str] | None, typer.Option(help="Extra kernel command line. Repeatable.")
    ] = None,
    env: Annotated[
        list[str] | None, typer.Option(metavar="NAME=VALUE", help="Set a variable. Repeatable.")
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(help="Kill the VM after SECONDS (exit 124), dumping guest tasks first"),
    ] = None,
    console_log: Annotated[
        Path | None,
        typer.Option(help="Write the kernel console here [default: ~/.local/state/vmlab/console/]"),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Also show the kernel console live")
    ] = False,
    accel: Annotated[Accel, typer.Option(help="auto: KVM when a probe proves it works")] = (
        Accel.AUTO
    ),
    boot_timeout: Annotated[
        float | None, typer.Option(help="Seconds a boot may take [default: 60 TCG, 20 KVM]")
    ] = None,
) -> None:
    """Boot a kernel over the host's root filesystem and run CMD in it.

    The host root is read-only with a throwaway tmpfs overlay; the current
    directory is shared read-write and is CMD's working directory. vmlab
    exits with CMD's status (see docs/cli.md for vmlab's own codes).
    """
    from vmlab.cli import run_cmd  # noqa: PLC0415  (keeps `vmlab --help` fast)

    opts = run_cmd.RunOptions(
        command=tuple(command),
        kernel=kernel,
        modules=modules,
        shares=tuple(share or ()),
        memory=memory,
        cpus=cpus,
        append=tuple(append or ()),
        timeout=timeout,
        console_log=console_log,
        verbose=verbose,
        accel=accel,
        env=tuple(env or ()),
        boot_timeout=boot_timeout,
    )
    sys.exit(run_async(run_cmd.run(opts), verbose=verbose))


def main() -> None:
    app()
