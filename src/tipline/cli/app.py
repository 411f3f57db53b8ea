"""The ``tipline`` command: a thin layer over the library. Each command lives in its own module."""

from __future__ import annotations

import functools
import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from tipline import __version__
from tipline.cli import state
from tipline.errors import TiplineError
from tipline.store.registry import register_handler_modules

#: The deployment's job handlers, registered with the job queue from here (the composition
#: root: every ``tipline worker`` process imports this module before it loads them).
register_handler_modules("tipline.pipeline", "tipline.actions.webhooks", "tipline.exchange.fetcher")
register_handler_modules("tipline.removal.scheduler")  # removal ticks, steps, notices
register_handler_modules("tipline.crawl.engine")  # crawl runs
register_handler_modules("tipline.exchange.feedback")  # grades sent back to exchanges


def _typer_internals() -> tuple[Any, Any, Callable[..., Any], Callable[[Any], Any]] | None:
    """Typer's coercion internals the bypass below relies on (``typer._coercion``, Typer 0.2x),
    each checked for the shape it is used in; None where any differs (another Typer)."""
    import dataclasses
    import inspect

    try:
        from typer import _coercion
        from typer import core as typer_core
        from typer._param_types import coerce_cli_path
        from typer.models import ParameterInfo
    except ImportError:
        return None
    runtime_param = getattr(_coercion, "RuntimeParam", None)
    descriptor = getattr(_coercion, "TypeDescriptor", None)
    found: Callable[[Any], Any] | None = getattr(typer_core, "build_runtime_param", None)
    if found is not getattr(_coercion, "build_runtime_param", None) or found is None:
        return None  # not there, or already replaced
    original: Callable[[Any], Any] = found
    if not (dataclasses.is_dataclass(runtime_param) and dataclasses.is_dataclass(descriptor)):
        return None

    def fields(cls: Any) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    def params(fn: Any) -> list[str]:
        try:
            return list(inspect.signature(fn).parameters)
        except (TypeError, ValueError):
            return []

    if not (
        fields(runtime_param) == {"parameter_info", "annotation"}
        and {"parameter_info", "annotation", "file_annotation"} <= fields(descriptor)
        and params(getattr(runtime_param, "_coerce_value", None))
        == ["self", "value", "param", "ctx"]
        and {"path_type", "param", "ctx"} <= set(params(coerce_cli_path))
        and {"parser", "min", "max", "path_type"} <= set(params(ParameterInfo.__init__))
    ):
        return None
    return typer_core, runtime_param, coerce_cli_path, original


def _install_plain_coercion() -> bool:
    """Typer converts every option value with a Pydantic ``TypeAdapter``, and importing
    Pydantic costs ~60 ms of a ~0.2 s ``tipline hash DIR``. Plain values (``str``, ``bool``,
    ``int``, ``float``, an unconstrained ``Path``, a list of those; already of the type, or
    digits/decimals from the command line) are converted here as Pydantic converts them;
    anything else (other spellings, ranges, enums, parsers, files) goes to Typer's own
    conversion unchanged.

    It uses Typer internals (no public API converts a value): if they differ from what
    :func:`_typer_internals` checks, nothing is installed and it returns False (only slower).
    tests/test_cli_coercion.py fails loudly then (the command imports Pydantic again) and
    checks that the conversions equal Typer's own."""
    import re
    from dataclasses import dataclass

    internals = _typer_internals()
    if internals is None:
        return False
    typer_core, runtime_param, coerce_cli_path, build_original = internals

    int_text = re.compile(r"[+-]?[0-9]+")
    float_text = re.compile(r"[+-]?[0-9]+(\.[0-9]*)?")
    slow = object()

    def plain(annotation: Any, info: Any, value: Any, param: Any, ctx: Any) -> Any:
        if annotation is str or annotation is bool:
            return value if type(value) is annotation else slow
        if annotation is int:
            if type(value) is int:
                return value
            return int(value) if type(value) is str and int_text.fullmatch(value) else slow
        if annotation is float:
            if type(value) is float:
                return value
            return float(value) if type(value) is str and float_text.fullmatch(value) else slow
        if annotation is Path:
            if type(value) is str:
                value = Path(value)
            if not isinstance(value, Path):
                return slow
            return coerce_cli_path(value, info, path_type=Path, param=param, ctx=ctx)
        return slow  # pragma: no cover - only plain annotations get here

    plain_types = (str, bool, int, float, Path)

    def is_plain(descriptor: Any) -> bool:
        info = descriptor.parameter_info
        annotation = descriptor.annotation
        if getattr(annotation, "__origin__", None) is list:
            (annotation,) = annotation.__args__
        return (
            descriptor.file_annotation is None
            and annotation in plain_types
            and info.parser is None
            and info.min is None
            and info.max is None
            and info.path_type is None
        )

    @dataclass(frozen=True)
    class PlainRuntimeParam(runtime_param):  # type: ignore[misc, valid-type]
        descriptor: Any = None

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            annotation, info = self.annotation, self.parameter_info
            if getattr(annotation, "__origin__", None) is list:
                if isinstance(value, (list, tuple)):
                    (item,) = annotation.__args__
                    out = [plain(item, info, v, param, ctx) for v in value]
                    if all(v is not slow for v in out):
                        return out
            else:
                out = plain(annotation, info, value, param, ctx)
                if out is not slow:
                    return out
            return build_original(self.descriptor)._coerce_value(value, param=param, ctx=ctx)

    def build(descriptor: Any) -> Any:
        try:
            fast = is_plain(descriptor)
        except (AttributeError, TypeError, ValueError):  # a descriptor of another shape
            fast = False
        if not fast:
            return build_original(descriptor)
        return PlainRuntimeParam(
            parameter_info=descriptor.parameter_info,
            annotation=descriptor.annotation,
            descriptor=descriptor,
        )

    typer_core.build_runtime_param = build
    return True


#: whether Typer's Pydantic conversion is bypassed for plain values (tests/test_cli_coercion.py)
PLAIN_COERCION = _install_plain_coercion()

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


#: Set to 1 for tracebacks instead of one-line error messages (as ``--debug``).
DEBUG_ENV = "TIPLINE_DEBUG"

#: Exit status of a command stopped by an error (as `tipline scan`'s "the command failed").
ERROR_STATUS = 2


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
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            envvar=DEBUG_ENV,
            help="On an error, show Python's traceback instead of the one-line `error:` "
            "message (for bug reports).",
        ),
    ] = False,
) -> None:
    state.set_data_dir(data_dir)
    state.debug = debug


def _debugging(argv: list[str] | None = None) -> bool:
    """``--debug`` or ``TIPLINE_DEBUG=1`` (``argv``: for errors before the option was parsed)."""
    if state.debug or os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    if not argv:
        return False
    cmd = invoked_command(argv)
    return "--debug" in (argv[: argv.index(cmd)] if cmd else argv)


def _passes_through(err: BaseException) -> bool:
    """Exceptions click/typer handle themselves: exit, abort, usage errors."""
    return type(err).__module__.split(".")[0] in ("click", "typer")


def _user_error_types() -> tuple[type[BaseException], ...]:
    """Errors that mean something about the input or the environment is wrong, not Tipline:
    bad values and files (also corrupt JSON/TOML/text: ValueError), paths, permissions, the
    database (unreachable, locked, refused). Looked up lazily: a module never imported
    raised nothing."""
    found: list[type[BaseException]] = [TiplineError, OSError, ValueError, EOFError]
    sa_exc = sys.modules.get("sqlalchemy.exc")
    if sa_exc is not None:
        found += [sa_exc.DBAPIError, sa_exc.ArgumentError]
    for module, name in (
        ("zipfile", "BadZipFile"),
        ("tarfile", "TarError"),
        ("PIL.Image", "DecompressionBombError"),
        ("alembic.util.exc", "CommandError"),
    ):
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            found.append(cls)
    return tuple(found)


def error_message(err: BaseException) -> str:
    """The one line `tipline` prints for an error that stopped a command."""
    if isinstance(err, TiplineError):
        return " ".join(str(err).split())
    from tipline.cli.database import one_line

    if isinstance(err, _user_error_types()):
        return one_line(err)
    return (
        f"internal error, {one_line(err)} (a bug in Tipline: run again with --debug or "
        f"{DEBUG_ENV}=1 for the traceback, and please report it)"
    )


def report(err: BaseException) -> int:
    """Print ``error: <one line>`` to stderr for an error that stopped a command; the exit
    status. A broken pipe (``tipline ... | head``) prints nothing."""
    if not isinstance(err, BrokenPipeError):
        typer.echo(f"error: {error_message(err)}", err=True)
    return ERROR_STATUS


def _friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """An exception escaping a command becomes `error: <one line>` and exit status 2 (with
    --debug / TIPLINE_DEBUG=1: the traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            if _passes_through(err) or _debugging() or isinstance(err, BrokenPipeError):
                raise
            raise typer.Exit(report(err)) from None

    return wrapper


def _wrap_commands(t: typer.Typer) -> None:
    for info in t.registered_commands:
        if info.callback is not None and not hasattr(info.callback, "__wrapped__"):
            info.callback = _friendly(info.callback)
    for group in t.registered_groups:
        if group.typer_instance is not None:
            _wrap_commands(group.typer_instance)


_registered = False

#: Each command (or command group) and the module that defines it. `tipline CMD ...` imports
#: only CMD's module, so a command does not pay for the imports of the others (the service's
#: FastAPI and SQLAlchemy stack costs ~0.5 s); `tipline --help` imports them all.
COMMAND_MODULES = {
    "scan": "scan",
    "hash": "scan",
    "bank": "bank",
    "dedupe": "dedupe",
    "demo": "demo",
    "inspect": "inspect",
    "keywords": "keywords",
    "detector": "detector",
    "serve": "serve",
    "config": "config",
    "db": "db",
    "worker": "worker",
    "user": "users",
    "token": "users",
    "audit": "audit",
    "media": "media",
    "export": "export",
    "webhook": "webhook",
    "exchange": "exchange",
    "hosting": "hosting",
    "provider": "hosting",
    "case": "case",
    "crawl": "crawl",
}


def invoked_command(argv: list[str]) -> str | None:
    """The command word of a command line (after the top-level options), if any."""
    args = iter(argv)
    for arg in args:
        if arg == "--data-dir":
            next(args, None)
        elif not arg.startswith("-"):
            return arg
    return None


#: the commands and groups ``_show_only`` set aside (registered, not shown), in order
_set_aside: tuple[list[Any], list[Any]] = ([], [])


def _command_name(info: Any) -> str | None:
    if info.name is not None:
        return str(info.name)
    callback = info.callback
    name = getattr(getattr(callback, "__wrapped__", callback), "__name__", None)
    return None if name is None else name.lower().replace("_", "-")  # as Typer names it


def _show_all() -> None:
    """Put back what ``_show_only`` set aside (before the commands registered since)."""
    commands, groups = _set_aside
    if commands or groups:
        app.registered_commands[:0] = commands
        app.registered_groups[:0] = groups
        commands.clear()
        groups.clear()


def _show_only(name: str) -> None:
    """Let Typer build only the invoked command: it builds a Click command for every
    registered one before it parses the command line (~6 ms of ``tipline hash`` for ``scan``'s
    forty options). The others stay registered (``_show_all``)."""
    _show_all()
    keep = [c for c in app.registered_commands if _command_name(c) == name]
    keep_groups = [g for g in app.registered_groups if g.name == name]
    if not keep and not keep_groups:
        return
    _set_aside[0].extend(c for c in app.registered_commands if c not in keep)
    _set_aside[1].extend(g for g in app.registered_groups if g not in keep_groups)
    app.registered_commands[:] = keep
    app.registered_groups[:] = keep_groups


def _register(only: str | None = None) -> None:
    """Import the command modules (they register themselves on ``app``); with ``only``, just
    the module defining that command, and only that command shown to Typer."""
    global _registered
    if _registered:
        return
    if only is not None and only in COMMAND_MODULES:
        importlib.import_module(f"tipline.cli.{COMMAND_MODULES[only]}")
        _show_only(only)
        _wrap_commands(app)
        return
    _show_all()
    # Command modules register themselves on `app` when imported.
    from tipline.cli import (  # noqa: F401
        audit,  # the audit trail
        bank,
        case,  # removal cases
        config,  # the effective service settings
        crawl,  # follow reported pages' links
        db,  # service database, job workers
        dedupe,
        demo,
        detector,
        exchange,  # hash exchanges with partners
        export,  # hash/URL lists and NCMEC reports
        hosting,  # hosting attribution and the provider directory
        inspect,
        keywords,
        media,  # media at rest
        scan,
        serve,  # the web service
        users,  # users and API tokens
        webhook,
        worker,
    )

    _wrap_commands(app)
    _registered = True


def main() -> None:
    # One BLAS thread per process: scan runs one worker process per core, and PDQ's small
    # matrix products slow down several-fold when BLAS threads fight over the same cores.
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    argv = sys.argv[1:]
    try:
        _register(only=invoked_command(argv))
        app()
    except BrokenPipeError:
        # the reader went away (`tipline ... | head`): no message, no second error at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(1)
    except Exception as err:  # what escaped the commands' own boundary (_friendly)
        if _passes_through(err) or _debugging(argv):
            raise
        sys.exit(report(err))
