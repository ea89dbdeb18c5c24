"""The `vmlab` command line (Typer). Each command lives in its own module."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from vmlab import __version__
from vmlab.cli.image_cmd import image_app  # light: its commands import their work lazily
from vmlab.cli.lifecycle_app import add_lifecycle_commands  # light, like image_cmd
from vmlab.cli.runner import run_async, run_sync
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


DbOption = Annotated[
    str | None,
    typer.Option("--db", help="Results store URL [default: sqlite .vmlab/results.db]"),
]


@app.command("test")
def test_(
    lab: Annotated[Path, typer.Argument(help="Lab file or its directory")] = Path("vmlab.toml"),
    level: Annotated[
        int, typer.Option(help="Run levels <= N (1 smoke, 2 integration, 3 stress)")
    ] = 1,
    suite: Annotated[list[str] | None, typer.Option(help="Only this suite. Repeatable.")] = None,
    keyword: Annotated[
        str | None, typer.Option("-k", help="Select tests by id: 'crud and not slow'")
    ] = None,
    jobs: Annotated[
        int | None, typer.Option(help="Machines in parallel [default: cores, memory]")
    ] = None,
    db: DbOption = None,
    out: Annotated[
        Path | None, typer.Option(help="Reports here [default: .vmlab/runs/RUN_ID]")
    ] = None,
    allow_dangerous: Annotated[bool, typer.Option(help="Also run `dangerous` tests")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show error evidence")] = False,
) -> None:
    """Run a lab's suites, level by level; store results; write JUnit and JSON."""
    from vmlab.cli import test_cmd  # noqa: PLC0415

    opts = test_cmd.TestOptions(
        lab=lab, level=level, suites=tuple(suite or ()), keyword=keyword, jobs=jobs, db=db,
        out=out, allow_dangerous=allow_dangerous,
    )  # fmt: skip
    sys.exit(
        run_async(
            test_cmd.run_tests(opts),
            verbose=verbose,
            on_signal="the VMs were stopped and the run was saved as interrupted",
        )
    )


@app.command("runs")
def runs(
    db: DbOption = None,
    limit: Annotated[int, typer.Option(help="How many, newest first")] = 20,
) -> None:
    """List recorded runs."""
    from vmlab.cli import results_cmd  # noqa: PLC0415

    sys.exit(run_sync(lambda: results_cmd.list_runs(db, limit)))


@app.command("show")
def show(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="Run id, a prefix, or 'latest'")],
    db: DbOption = None,
) -> None:
    """Print a run's summary, its crashes by signature, and each failure's output tail."""
    from vmlab.cli import results_cmd  # noqa: PLC0415

    sys.exit(run_sync(lambda: results_cmd.show_run(db, run_id)))


@app.command("export")
def export(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="Run id, a prefix, or 'latest'")],
    fmt: Annotated[str, typer.Option("--format", help="junit or json")] = "junit",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write")] = None,
    db: DbOption = None,
) -> None:
    """Rewrite a run's junit.xml or results.json from the store."""
    from vmlab.cli import results_cmd  # noqa: PLC0415

    sys.exit(run_sync(lambda: results_cmd.export_run(db, run_id, fmt, output)))


add_lifecycle_commands(app)  # up, status, ssh, console, down, clean, inventory

crash_app = typer.Typer(help="Kernel crash reports.", no_args_is_help=True)
app.add_typer(crash_app, name="crash")
app.add_typer(image_app, name="image")


@crash_app.command("analyze")
def crash_analyze(
    logs: Annotated[list[Path], typer.Argument(metavar="LOG...", help="Console or dmesg logs")],
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON list")] = False,
) -> None:
    """Find every kernel crash report in LOGs: kind, title, guilty frame, signature."""
    from vmlab.cli import crash_cmd  # noqa: PLC0415

    sys.exit(run_sync(lambda: crash_cmd.analyze(logs, as_json=json_out)))
