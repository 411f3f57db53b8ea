"""The ``tipline`` command: a thin layer over the library. Each command lives in its own module."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from tipline import __version__
from tipline.cli import state
from tipline.errors import TiplineError

app = typer.Typer(
    name="tipline",
    help=(
        "Find known material by hash, recognise AI-generated material, and get it in front of the "
        "right person first.\n\nStart with `tipline demo`, then `tipline scan --help`."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tipline {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            envvar="TIPLINE_DATA_DIR",
            help="Where banks and the demo corpus live. Default: ~/.local/share/tipline.",
            show_default=False,
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    state.set_data_dir(data_dir)


def _register() -> None:
    # Imported here so `tipline --help` stays fast and modules register themselves on `app`.
    from tipline.cli import bank, demo, scan  # noqa: F401


def main() -> None:
    _register()
    try:
        app()
    except TiplineError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
