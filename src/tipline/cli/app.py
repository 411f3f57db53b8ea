"""The ``tipline`` command: a thin layer over the library. Each command lives in its own module."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

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


def _friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A TiplineError escaping a command becomes `error: <message>` and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TiplineError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from None

    return wrapper


def _wrap_commands(t: typer.Typer) -> None:
    for info in t.registered_commands:
        if info.callback is not None and not hasattr(info.callback, "__wrapped__"):
            info.callback = _friendly(info.callback)
    for group in t.registered_groups:
        if group.typer_instance is not None:
            _wrap_commands(group.typer_instance)


_registered = False


def _register() -> None:
    global _registered
    if _registered:
        return
    # Command modules register themselves on `app` when imported.
    from tipline.cli import (  # noqa: F401
        audit,  # the audit trail
        bank,
        db,  # service database, job workers
        dedupe,
        demo,
        detector,
        inspect,
        keywords,
        media,  # media at rest
        scan,
        serve,  # the web service
        users,  # users and API tokens
        worker,
    )

    _wrap_commands(app)
    _registered = True


def main() -> None:
    # One BLAS thread per process: scan runs one worker process per core, and PDQ's small
    # matrix products slow down several-fold when BLAS threads fight over the same cores.
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    _register()
    app()
