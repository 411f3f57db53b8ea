"""Database fixtures shared by every test that needs the service database.

``db_url`` runs each test twice: on a fresh SQLite file and on PostgreSQL. The PostgreSQL side
uses one throwaway database per test session (``tipline_test_<random>`` on the server at
``$TIPLINE_TEST_PG`` or ``postgresql+psycopg://postgres@127.0.0.1:5432/test``), emptied before
each test and dropped at the end. An unreachable server skips the PostgreSQL half with the
reason; set ``TIPLINE_REQUIRE_POSTGRES=1`` to make that a failure instead (``.ci/run`` starts
the server).

``engine`` / ``session_factory`` give the same database migrated to the newest schema.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from tipline.store import migrations
from tipline.store.base import make_engine
from tipline.store.base import session_factory as _session_factory
from tipline.triage import cluster_index

PG_SERVER = os.environ.get("TIPLINE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _admin_engine() -> Engine:
    return create_engine(
        PG_SERVER, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5}
    )


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """URL of this session's throwaway PostgreSQL database (skips if there is no server)."""
    admin = _admin_engine()
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as err:  # any connection failure means "no server"
        admin.dispose()
        reason = (
            f"PostgreSQL not reachable at {PG_SERVER} ({type(err).__name__}); .ci/run starts it"
        )
        if os.environ.get("TIPLINE_REQUIRE_POSTGRES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    name = f"tipline_test_{secrets.token_hex(6)}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_SERVER).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _reset_pg(url: str) -> None:
    eng = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with eng.connect() as conn:
            # Connections a previous test leaked (idle in a transaction) would block the drop.
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    finally:
        eng.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database (not migrated): a SQLite file, or the emptied PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tipline-test.sqlite3'}"
    url: str = request.getfixturevalue("pg_database")
    _reset_pg(url)
    cluster_index.reset_all()  # the same URL now names an empty database
    return url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on ``db_url``, migrated to the newest schema."""
    eng = make_engine(db_url)
    migrations.upgrade(eng)
    try:
        yield eng
    finally:
        eng.dispose()


@pytest.fixture
def session_factory(engine: Engine) -> sessionmaker[Session]:
    return _session_factory(engine)
