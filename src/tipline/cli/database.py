"""The service database as every CLI command opens it, with one rule for its schema.

- The embedded default (the SQLite file in the data directory) is created or upgraded on the
  spot, as ``tipline db upgrade`` would (safe to repeat): a fresh data directory just works.
- A database named explicitly (``--database-url``, ``$TIPLINE_DATABASE_URL``, a config file's
  ``database_url``) is often shared with running services: an empty one gets the schema, but one
  at an older schema is left alone and the command stops with one line saying what to run
  (upgrading a shared database is a deployment step: ``tipline db upgrade``, or ``tipline
  serve``, which migrates on start unless ``--no-migrate``).
- A database at a schema newer than this Tipline knows is never touched.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from tipline.cli import state
from tipline.errors import TiplineError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import Session, sessionmaker

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="SQLAlchemy URL. Default: $TIPLINE_DATABASE_URL, else the SQLite file in the data "
        "directory (created or upgraded as needed; a named database at an older schema is left "
        "to `tipline db upgrade`).",
        show_default=False,
    ),
]


def safe_url(url: str) -> str:
    """The URL with any password hidden, for messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(unparsable database URL)"


def one_line(err: BaseException) -> str:
    """``Type: message`` on one line (``path: reason`` for a file system error); for a database
    driver's error, the driver's own message (not SQLAlchemy's SQL echo and link)."""
    orig = getattr(err, "orig", None)
    shown = orig if isinstance(orig, BaseException) else err
    if isinstance(shown, OSError) and shown.strerror:  # `path: No such file or directory`
        names = [str(f) for f in (shown.filename, shown.filename2) if f is not None]
        return f"{' -> '.join(names)}: {shown.strerror}" if names else shown.strerror
    text = " ".join(str(shown).split()) or type(shown).__name__
    return text if isinstance(shown, TiplineError) else f"{type(shown).__name__}: {text}"


def resolve(explicit: str | None) -> tuple[str, bool]:
    """The service database's URL for a command, and whether it is the embedded default."""
    from tipline.store.base import database_url, default_url

    url = database_url(state.data_dir(), explicit)
    return url, url == default_url(state.data_dir())


def known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    from tipline.store import migrations

    script = ScriptDirectory.from_config(migrations.alembic_config())
    return {rev.revision for rev in script.walk_revisions()}


def ensure_schema(
    url: str, *, embedded: bool, create_empty: bool = True, flag: bool = False
) -> None:
    """Bring the database at ``url`` to this Tipline's schema where that is expected (see the
    module's rule), else raise a :class:`TiplineError` that says, in one line, what to run.

    ``flag``: the URL was given as ``--database-url`` (the advice repeats it).
    """
    from sqlalchemy import inspect

    from tipline.store import migrations
    from tipline.store.base import make_engine

    shown = safe_url(url)
    upgrade = "tipline db upgrade" + (f" --database-url '{shown}'" if flag else "")
    try:
        engine = make_engine(url)
        try:
            have = migrations.current(engine)
            want = migrations.head()
            if have == want:
                return
            if have is not None and have not in known_revisions():
                raise TiplineError(
                    f"the database at {shown} is at schema {have}, newer than this Tipline "
                    f"knows (newest {want}): use a newer Tipline"
                )
            empty = have is None and not inspect(engine).get_table_names()
            if have is None and not empty and not embedded:
                raise TiplineError(
                    f"the database at {shown} has tables but no Tipline schema version: "
                    "point --database-url / TIPLINE_DATABASE_URL at Tipline's database"
                )
            if embedded or (empty and create_empty):
                migrations.upgrade(engine)
                return
        finally:
            engine.dispose()
    except TiplineError:
        raise
    except Exception as err:  # unreachable server, bad URL, missing driver, unwritable file...
        raise TiplineError(f"cannot open the database at {shown}: {one_line(err)}") from None
    raise TiplineError(
        f"the database at {shown} is at schema {have or '(empty)'}, this Tipline needs {want}: "
        f"run `{upgrade}`"
    )


def ready_url(explicit: str | None) -> str:
    """The service database's URL (``--database-url``, else ``$TIPLINE_DATABASE_URL``, else
    the data directory's SQLite file), its schema made ready first (:func:`ensure_schema`)."""
    url, embedded = resolve(explicit)
    ensure_schema(url, embedded=embedded, flag=explicit is not None and not embedded)
    return url


def open_engine(explicit: str | None) -> Engine:
    """An engine on the service database, its schema ready (:func:`ready_url`)."""
    from tipline.store.base import make_engine

    return make_engine(ready_url(explicit))


def open_db(explicit: str | None) -> sessionmaker[Session]:
    """A session factory on the service database, its schema ready (:func:`ready_url`)."""
    from tipline.store.base import session_factory

    return session_factory(open_engine(explicit))
