"""The database layer's foundation: one declarative Base for every table, engines for SQLite and
PostgreSQL from one URL, and sessions.

Every module that defines tables imports ``Base`` from here; Alembic autogenerates migrations
from ``Base.metadata``. The embedded default is a SQLite file in the data directory; set
``TIPLINE_DATABASE_URL`` (or ``--database-url``) to e.g.
``postgresql+psycopg://user@127.0.0.1:5432/tipline`` to run on PostgreSQL.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, ExecutionContext
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

#: Constraint names fixed by convention, so migrations are identical on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def default_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'tipline.sqlite3'}"


def database_url(data_dir: Path, explicit: str | None = None) -> str:
    """``explicit`` wins, then ``$TIPLINE_DATABASE_URL``, then the SQLite file in ``data_dir``."""
    return explicit or os.environ.get("TIPLINE_DATABASE_URL") or default_url(data_dir)


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine with the settings each backend needs.

    SQLite: WAL journal (readers never block the writer), foreign keys on, a busy timeout so
    concurrent workers wait instead of failing. PostgreSQL: pre-ping so a restarted server is
    survived transparently.
    """
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        event.listen(engine, "before_cursor_execute", _begin_immediate_for_update)
        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


def _begin_immediate_for_update(
    conn: Connection,
    _cursor: Any,
    _statement: str,
    _parameters: Any,
    context: ExecutionContext | None,
    _executemany: bool,
) -> None:
    """SQLite: a transaction that starts with a locking read (``with_for_update()``, a row lock
    on PostgreSQL) starts with ``BEGIN IMMEDIATE``, taking the write lock before it reads.

    pysqlite begins a transaction only before the first INSERT/UPDATE/DELETE, so without this
    the read runs outside the transaction and two processes that read a row and then write it
    both write what they read: one update is lost. With it the second waits (busy timeout)
    and reads the first's commit. Beginning deferred instead would not do: a read transaction
    cannot take the write lock once another connection has committed (SQLITE_BUSY, "database
    is locked", at once). Other transactions begin as pysqlite begins them; reads that do not
    lock never wait for a writer (WAL)."""
    compiled = context.compiled if context is not None else None
    if compiled is None or getattr(compiled.statement, "_for_update_arg", None) is None:
        return
    dbapi_conn = conn.connection.dbapi_connection
    if dbapi_conn is None or dbapi_conn.in_transaction or dbapi_conn.isolation_level is None:
        return  # already in a transaction, or autocommit by request
    dbapi_conn.execute("BEGIN IMMEDIATE")


def conflict_insert(on: Session | Connection, table: Any) -> Any:
    """``INSERT`` into ``table`` in the dialect of ``on``'s database, which has
    ``on_conflict_do_nothing`` / ``on_conflict_do_update`` (spelled alike on both backends): an
    insert that two processes may run at once for the same key without one failing."""
    bind = on.get_bind() if isinstance(on, Session) else on
    module: Any = postgresql if bind.dialect.name == "postgresql" else sqlite
    return module.insert(table)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose work commits on success and rolls back on any exception."""
    with factory() as session, session.begin():
        yield session
