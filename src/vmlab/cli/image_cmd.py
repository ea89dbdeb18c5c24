"""`vmlab image build|list|rm`: the disk images of disk-image machines.

`vmlab --help` imports this module, so it stays light: each command imports
its work (the image builder, the config loader, Rich) when it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from vmlab.cli.runner import run_async, run_sync

if TYPE_CHECKING:
    from rich.console import Console
    from rich.status import Status

    from vmlab.config_specs import MachineConfig
    from vmlab.machine.image_build import BuiltImage

image_app = typer.Typer(
    help="Disk images for disk-image machines, built with mmdebstrap.", no_args_is_help=True
)


@image_app.command("build")
def build_command(
    names: Annotated[
        list[str] | None,
        typer.Argument(metavar="NAME", help="Images of the lab \\[default: all of them]"),
    ] = None,
    lab: Annotated[Path, typer.Option("--lab", help="Lab file or its directory")] = Path(
        "vmlab.toml"
    ),
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show the end of the build log on errors")
    ] = False,
) -> None:
    """Build a lab's \\[image.NAME] images into the cache (an unchanged one is instant).

    Needs root (mmdebstrap's root mode) and the Debian mirror; a cold build
    takes about a minute or two.
    """
    sys.exit(
        run_async(
            build(lab, tuple(names or ())),
            verbose=verbose,
            on_signal="the unfinished build was removed",
        )
    )


@image_app.command("list")
def list_command() -> None:
    """List the images in the cache: name, key, kernel, sizes, when built."""
    sys.exit(run_sync(list_images))


@image_app.command("rm")
def rm_command(
    target: Annotated[
        str, typer.Argument(metavar="NAME|KEY", help="An image's name, or a key prefix")
    ],
) -> None:
    """Remove cached images: every build of NAME, or the one whose key starts with KEY."""
    sys.exit(run_sync(lambda: remove(target)))


# ----------------------------------------------------------------- the work


async def build(lab_path: Path, names: tuple[str, ...]) -> int:
    from rich.console import Console  # noqa: PLC0415

    from vmlab.config import load_lab  # noqa: PLC0415
    from vmlab.errors import UsageError  # noqa: PLC0415
    from vmlab.machine.image_build import build_image  # noqa: PLC0415

    lab = load_lab(lab_path)
    if not lab.images:
        raise UsageError(f"{lab.path}: no [image.NAME] table to build (see docs/lab-file.md)")
    for name in names:
        if name not in lab.images:
            known = ", ".join(lab.images)
            raise UsageError(f"{lab.path}: no image named {name!r} (known: {known})")
    console = Console(highlight=False)
    for name in dict.fromkeys(names or tuple(lab.images)):
        async with BuildStatus(console, name) as status:
            image = await build_image(lab.images[name], progress=status.update)
        done = "up to date" if status.cached else f"built in {image.build_seconds:.0f}s"
        console.print(f"{name}: {done}: {_describe(image)}", soft_wrap=True)
    return 0


async def build_machine_images(machines: Iterable[MachineConfig], *, stderr: bool) -> None:
    """Build (or find in the cache) the images of these disk-image machines,
    with progress (on stderr when stdout carries the command's own output),
    before any of them boots."""
    from rich.console import Console  # noqa: PLC0415

    from vmlab.machine.image_build import build_image  # noqa: PLC0415
    from vmlab.machine.spec import ImageSpec  # noqa: PLC0415

    specs = {
        m.spec.disk.image.name: m.spec.disk.image
        for m in machines
        if m.spec.disk is not None and isinstance(m.spec.disk.image, ImageSpec)
    }
    console = Console(stderr=stderr, highlight=False)
    for name, spec in specs.items():
        async with BuildStatus(console, f"image {name}") as status:
            await build_image(spec, progress=status.update)


class BuildStatus:
    """One status line on a terminal (stage and elapsed seconds, refreshed every
    second); elsewhere one plain line per stage."""

    def __init__(self, console: Console, name: str) -> None:
        self.console = console
        self.name = name
        self.stage = "starting"
        self.cached = False
        self.started = time.monotonic()
        self._status: Status | None = None
        self._ticker: asyncio.Task[None] | None = None

    async def __aenter__(self) -> BuildStatus:
        if self.console.is_terminal:
            self._status = self.console.status(self._text())
            self._status.start()
            self._ticker = asyncio.create_task(self._tick())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        if self._status is not None:
            self._status.stop()

    def update(self, stage: str) -> None:
        self.stage = stage
        self.cached = self.cached or stage.startswith("cached")
        if self._status is not None:
            self._status.update(self._text())
        elif not self.cached and not stage.startswith("built "):  # the summary says it
            self.console.print(f"{self.name}: [{self._elapsed():4.0f}s] {stage}", markup=False)

    def _elapsed(self) -> float:
        return time.monotonic() - self.started

    def _text(self) -> str:
        from rich.markup import escape  # noqa: PLC0415

        return escape(f"{self.name}: {self.stage} ({self._elapsed():.0f}s)")

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(1)
            if self._status is not None:
                self._status.update(self._text())


def list_images() -> int:
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    from vmlab.machine.image_build import list_images as cached_images  # noqa: PLC0415

    images = cached_images()
    if not images:
        print("no images (vmlab image build builds a lab's [image.NAME] tables)")
        return 0
    table = Table("name", "key", "distro", "kernel", "size", "on disk", "built (UTC)", "took")
    for image in images:
        table.add_row(
            ", ".join(image.names), image.key[:12], image.distro, image.release,
            _size(image.size_mib << 20), _size(image.disk_bytes),
            image.built_at.strftime("%Y-%m-%d %H:%M"), f"{image.build_seconds:.0f}s",
        )  # fmt: skip
    Console(width=max(120, Console().width)).print(table)
    return 0


def remove(target: str) -> int:
    from vmlab.machine.image_build import remove_image  # noqa: PLC0415

    for image in remove_image(target):
        print(f"removed {', '.join(image.names)} ({image.key[:12]}, {_size(image.disk_bytes)})")
    return 0


def _describe(image: BuiltImage) -> str:
    return (
        f"{image.distro}, kernel {image.release}, disk {_size(image.size_mib << 20)} "
        f"({_size(image.rootfs_bytes)} used), key {image.key[:12]}"
    )


def _size(size: int) -> str:
    if size >= 10 << 30 or (size >= 1 << 30 and size % (1 << 30) == 0):
        return f"{size / (1 << 30):.0f}G"
    if size >= 1 << 30:
        return f"{size / (1 << 30):.1f}G"
    return f"{size / (1 << 20):.0f}M"
