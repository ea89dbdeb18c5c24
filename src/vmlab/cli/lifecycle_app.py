"""The commands of machines that stay up: up, status, ssh, cp, console, down,
clean, inventory. `vmlab --help` imports this module, so it stays light; the
work is in lifecycle_cmd (and cp_cmd), imported when a command runs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from vmlab.cli.runner import run_async, run_sync

LabOption = Annotated[Path, typer.Option("--lab", help="Lab file or its directory")]
DEFAULT_LAB = Path("vmlab.toml")


def add_lifecycle_commands(app: typer.Typer) -> None:
    """Register the commands on the `vmlab` app."""

    @app.command("up")
    def up(
        machines: Annotated[
            list[str] | None,
            typer.Argument(metavar="[MACHINE]...", help="Disk-image machines [default: all]"),
        ] = None,
        lab: LabOption = DEFAULT_LAB,
        verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show evidence")] = False,
    ) -> None:
        """Boot a lab's disk-image machines and leave them running in the background.

        Each is set up as for `vmlab test` (the lab copied in, modules_load,
        setup) and snapshotted; `vmlab test` then uses it instead of booting
        its own. The switches of their private networks stay up with them.
        `vmlab down` stops them.
        """
        from vmlab.cli import lifecycle_cmd  # noqa: PLC0415

        sys.exit(
            run_async(
                lifecycle_cmd.up(lab, tuple(machines or ())),
                verbose=verbose,
                on_signal="machines still booting were stopped; those already up stay up",
            )
        )

    @app.command("status")
    def status(
        lab: LabOption = DEFAULT_LAB,
        json_out: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
    ) -> None:
        """Show the lab's machines that are up: state, SSH address, uptime, memory."""
        from vmlab.cli import lifecycle_cmd  # noqa: PLC0415

        sys.exit(run_sync(lambda: lifecycle_cmd.status(lab, as_json=json_out)))

    @app.command("ssh", context_settings={"allow_interspersed_args": False})
    def ssh(
        machine: Annotated[str, typer.Argument(metavar="MACHINE")],
        command: Annotated[
            list[str] | None,
            typer.Argument(metavar="[-- CMD [ARGS]...]", show_default=False),
        ] = None,
        lab: LabOption = DEFAULT_LAB,
    ) -> None:
        """Run CMD in a machine that is up (exit with its status), or log in.

        Without CMD, the system ssh client logs in as root.
        """
        from vmlab.cli import lifecycle_cmd  # noqa: PLC0415

        words = list(command or ())
        if words[:1] == ["--"]:  # after MACHINE, click keeps the separator
            words = words[1:]
        if not words:
            sys.exit(run_sync(lambda: lifecycle_cmd.ssh_login(lab, machine)))
        sys.exit(run_async(lifecycle_cmd.ssh_run(lab, machine, tuple(words)), on_signal=""))

    @app.command("cp")
    def cp(
        src: Annotated[str, typer.Argument(metavar="SRC")],
        dst: Annotated[str, typer.Argument(metavar="DST")],
        lab: LabOption = DEFAULT_LAB,
    ) -> None:
        """Copy files or directories between the host and a machine that is up.

        One of SRC and DST is MACHINE:PATH (a relative PATH starts at /root).
        Directories are copied recursively; modes and times are kept.
        """
        from vmlab.cli import cp_cmd  # noqa: PLC0415

        sys.exit(
            run_async(
                cp_cmd.cp(lab, src, dst),
                on_signal="the copy was stopped; nothing half-written is left",
            )
        )

    @app.command("console")
    def console(
        machine: Annotated[str, typer.Argument(metavar="MACHINE")],
        lab: LabOption = DEFAULT_LAB,
    ) -> None:
        """Attach to the serial console of a machine that is up (Ctrl-] detaches)."""
        from vmlab.cli import lifecycle_cmd  # noqa: PLC0415

        sys.exit(run_async(lifecycle_cmd.console(lab, machine), on_signal="detached"))

    @app.command("down")
    def down(
        machines: Annotated[
            list[str] | None,
            typer.Argument(metavar="[MACHINE]...", help="Machines [default: all that are up]"),
        ] = None,
        lab: LabOption = DEFAULT_LAB,
    ) -> None:
        """Stop machines that are up and remove their overlays and state."""
        from vmlab.cli import lifecycle_cmd  # noqa: PLC0415

        sys.exit(run_async(lifecycle_cmd.down(lab, tuple(machines or ())), on_signal=""))

    @app.command("clean")
    def clean(lab: LabOption = DEFAULT_LAB) -> None:
        """Remove what machines that are not running left (never a running one's)."""
        from vmlab.cli import lifecycle_cmd  # noqa: PLC0415

        sys.exit(run_async(lifecycle_cmd.clean(lab), on_signal=""))

    @app.command("inventory")
    def inventory(lab: LabOption = DEFAULT_LAB) -> None:
        """Print an Ansible inventory (YAML) of the machines that are running."""
        from vmlab.cli import lifecycle_cmd  # noqa: PLC0415

        sys.exit(run_sync(lambda: lifecycle_cmd.inventory(lab)))
