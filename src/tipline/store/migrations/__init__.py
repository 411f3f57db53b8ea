"""Schema migrations (Alembic), run programmatically: no ``alembic.ini`` is needed.

``upgrade(url)`` brings a database (SQLite file or PostgreSQL) to the newest schema and is a
no-op when it is already there; ``current(url)`` says which revision a database is at. The CLI
front is ``tipline db upgrade`` / ``tipline db current``.

To write a new migration after changing :mod:`tipline.store.tables`::

    python -c "from tipline.store.migrations import revision; revision('sqlite:///tmp/x.db', 'msg')"

then review the generated file under ``versions/`` (keep it backend-neutral: plain ``sa`` types).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from tipline.store.base import make_engine

SCRIPT_LOCATION = str(Path(__file__).resolve().parent)


def alembic_config(url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    if url is not None:
        # ConfigParser interpolation: a literal % in a password must be doubled.
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head() -> str:
    """The newest revision this Tipline knows."""
    rev = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert rev is not None
    return rev


def _with_engine(url_or_engine: str | Engine) -> tuple[Engine, bool]:
    if isinstance(url_or_engine, Engine):
        return url_or_engine, False
    return make_engine(url_or_engine), True


def upgrade(url_or_engine: str | Engine, revision: str = "head") -> None:
    """Migrate the database to ``revision`` (default: newest). Already there: nothing happens."""
    engine, owned = _with_engine(url_or_engine)
    try:
        with engine.begin() as conn:
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    finally:
        if owned:
            engine.dispose()
    _private_sqlite_file(engine)


def _private_sqlite_file(engine: Engine) -> None:
    """The database holds personal data: a SQLite file is readable by its owner only."""
    path = engine.url.database if engine.dialect.name == "sqlite" else None
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(OSError):
            os.chmod(path + suffix, 0o600)


def downgrade(url_or_engine: str | Engine, revision: str) -> None:
    engine, owned = _with_engine(url_or_engine)
    try:
        with engine.begin() as conn:
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, revision)
    finally:
        if owned:
            engine.dispose()


def current(url_or_engine: str | Engine) -> str | None:
    """The revision the database is at, or None for a database never migrated."""
    engine, owned = _with_engine(url_or_engine)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        if owned:
            engine.dispose()


def revision(url: str, message: str) -> None:
    """Autogenerate a new migration by comparing ``url`` (at head) with the models."""
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.revision(cfg, message=message, autogenerate=True)
    finally:
        engine.dispose()


__all__ = [
    "SCRIPT_LOCATION",
    "alembic_config",
    "current",
    "downgrade",
    "head",
    "revision",
    "upgrade",
]
