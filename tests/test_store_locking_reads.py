"""Read-then-write transactions in two processes at once (the service and a worker): a locking
read (``with_for_update()``) serialises them on SQLite as its row lock does on PostgreSQL, and
neither fails with "database is locked".

Without ``store.base``'s BEGIN IMMEDIATE, pysqlite runs the read outside the transaction, so
both processes write what they read and increments are lost (measured: 131 of 200); a plain
deferred BEGIN would instead fail the second writer at once with SQLITE_BUSY.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, select

from tipline.store.base import make_engine, session_factory

ROUNDS = 40

_WORKER = r"""
import sys, time
from sqlalchemy import Column, Integer, MetaData, Table, select, update
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from tipline.store.base import make_engine, session_factory

class Base(DeclarativeBase):
    pass

class Counter(Base):
    __tablename__ = "locking_read_counter"
    id: Mapped[int] = mapped_column(primary_key=True)
    value: Mapped[int]

url, rounds, start = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
counter = Counter.__table__
factory = session_factory(make_engine(url))
time.sleep(max(0.0, start - time.time()))  # both processes begin together
failures = 0
for i in range(rounds):
    try:
        with factory() as s, s.begin():
            if i % 2:  # the ORM's locking get
                row = s.get(Counter, 1, with_for_update=True)
                time.sleep(0.002)  # the work between the read and the write
                row.value += 1
            else:  # a Core locking select in a session
                value = s.execute(
                    select(counter.c.value).where(counter.c.id == 1).with_for_update()
                ).scalar_one()
                time.sleep(0.002)
                s.execute(update(counter).where(counter.c.id == 1).values(value=value + 1))
    except Exception as err:
        failures += 1
        print(type(err).__name__, str(err)[:200], file=sys.stderr)
print(failures)
"""


_MD = MetaData()
#: the workers' ``Counter`` table
_COUNTER = Table(
    "locking_read_counter",
    _MD,
    Column("id", Integer, primary_key=True),
    Column("value", Integer, nullable=False),
)


def test_two_processes_read_then_write_lose_nothing(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        _MD.create_all(engine)
        with engine.begin() as conn:
            conn.execute(_COUNTER.insert().values(id=1, value=0))
        start = time.time() + 3.0
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _WORKER, db_url, str(ROUNDS), str(start)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        outs = [p.communicate(timeout=120) for p in procs]
        for p, (out, err) in zip(procs, outs, strict=True):
            assert p.returncode == 0, err
            assert out.strip() == "0", err  # no transaction failed ("database is locked")
        with engine.connect() as conn:
            value = conn.execute(select(_COUNTER.c.value)).scalar_one()
        assert value == 2 * ROUNDS  # no increment lost
    finally:
        _MD.drop_all(engine)
        engine.dispose()


def test_sqlite_locking_read_takes_the_write_lock_plain_reads_do_not(tmp_path: Path) -> None:
    """Which transactions begin IMMEDIATE: a locking read does (another writer must wait);
    a plain read does not (WAL readers never block a writer), nor does autocommit."""
    url = f"sqlite:///{tmp_path / 'locks.sqlite3'}"
    md = MetaData()
    t = Table("t", md, Column("id", Integer, primary_key=True), Column("v", Integer))
    engine = make_engine(url)
    other = sqlite3.connect(tmp_path / "locks.sqlite3", timeout=0.05, isolation_level=None)
    try:
        md.create_all(engine)
        with engine.begin() as conn:
            conn.execute(t.insert().values(id=1, v=0))

        def other_can_write() -> bool:
            try:
                other.execute("UPDATE t SET v = v + 1")
            except sqlite3.OperationalError as err:
                assert "database is locked" in str(err)
                return False
            return True

        factory = session_factory(engine)
        with factory() as s, s.begin():
            s.execute(select(t.c.v)).all()
            assert other_can_write()  # a plain read holds no write lock
        with factory() as s, s.begin():
            s.execute(select(t.c.v).with_for_update()).all()
            assert not other_can_write()  # a locking read does, until the commit
        assert other_can_write()
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(select(t.c.v).with_for_update()).all()
            assert other_can_write()  # autocommit asked for: no transaction begun
    finally:
        other.close()
        engine.dispose()


@pytest.mark.parametrize("first", ["insert", "locking read"])
def test_sqlite_write_transactions_still_commit_and_roll_back(tmp_path: Path, first: str) -> None:
    url = f"sqlite:///{tmp_path / 'rb.sqlite3'}"
    md = MetaData()
    t = Table("t", md, Column("id", Integer, primary_key=True), Column("v", Integer))
    engine = make_engine(url)
    try:
        md.create_all(engine)
        factory = session_factory(engine)
        with pytest.raises(RuntimeError), factory() as s, s.begin():
            if first == "locking read":
                s.execute(select(t.c.v).with_for_update()).all()
            s.execute(t.insert().values(id=1, v=1))
            raise RuntimeError("roll back")
        with engine.connect() as conn:
            assert conn.execute(select(t.c.v)).all() == []
        with factory() as s, s.begin():
            if first == "locking read":
                s.execute(select(t.c.v).with_for_update()).all()
            s.execute(t.insert().values(id=1, v=1))
        with engine.connect() as conn:
            assert conn.execute(select(t.c.v)).all() == [(1,)]
    finally:
        engine.dispose()
