"""The `vmlab` program: `vmlab run` goes straight to work, the rest through Typer.

Booting a VM under TCG takes about two seconds; importing Typer and letting
it parse takes a tenth of that, before QEMU can even start. So a plain
`vmlab run` (see run_argv) skips Typer; everything else, help and usage
errors included, is the Typer app in cli/app.py.
"""

from __future__ import annotations

import sys


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["run"]:
        from vmlab.cli.run_argv import parse_run_argv  # noqa: PLC0415

        opts = parse_run_argv(args[1:])
        if opts is not None:
            from vmlab.cli import run_cmd  # noqa: PLC0415
            from vmlab.cli.runner import run_async  # noqa: PLC0415

            sys.exit(run_async(run_cmd.run(opts), verbose=opts.verbose))
    from vmlab.cli.app import main as typer_main  # noqa: PLC0415

    typer_main()
