"""Alembic environment for Tipline: run through :mod:`tipline.store.migrate`, not ``alembic``.

The caller passes an open connection in ``config.attributes["connection"]`` (or a URL as
``sqlalchemy.url``); the target metadata is the shared ``Base.metadata`` with every model loaded.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

import tipline.store.tables  # noqa: F401  (registers every table on Base.metadata)
from tipline.store.base import Base, make_engine

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
    try:
        with engine.connect() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported; run `tipline db upgrade`")
run_migrations_online()
