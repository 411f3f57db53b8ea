"""A :class:`~tipline.banks.bank.BankStore` kept in one SQLite file (stdlib ``sqlite3``).

Entry ids are ``INTEGER PRIMARY KEY AUTOINCREMENT``: unique across banks and never reused, like
HMA's ``bank_content_id``, so an id in an old match report never points at a different hash.
Signals are stored in canonical form (``signal_type(...).normalise``); adding a signal a bank
already holds is a no-op that returns the existing entry's id.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, cast

from tipline.banks.bank import (
    ROLES,
    Bank,
    BankRole,
    Entry,
    validate_bank_name,
)
from tipline.errors import BankError, BankNotFoundError
from tipline.signals.types import SignalType, signal_type

SCHEMA_VERSION = 1

#: Rows per executemany batch in :meth:`SqliteBankStore.add_entries`.
_BATCH = 10_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS banks (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    role          TEXT NOT NULL DEFAULT 'alert' CHECK (role IN ('alert', 'ignore')),
    pdq_threshold INTEGER NOT NULL DEFAULT 31 CHECK (pdq_threshold BETWEEN 0 AND 255),
    enabled       INTEGER NOT NULL DEFAULT 1,
    description   TEXT NOT NULL DEFAULT '',
    created_at    REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS entries (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    bank_id     INTEGER NOT NULL REFERENCES banks(id) ON DELETE CASCADE,
    signal_type TEXT NOT NULL,
    signal      TEXT NOT NULL,
    label       TEXT NOT NULL DEFAULT '',
    source      TEXT NOT NULL DEFAULT '',
    note        TEXT NOT NULL DEFAULT '',
    added_at    REAL NOT NULL,
    enabled     INTEGER NOT NULL DEFAULT 1,
    tags        TEXT NOT NULL DEFAULT ''
);
-- Serves both lookups by (signal_type, signal) and the per-bank dedupe.
CREATE UNIQUE INDEX IF NOT EXISTS entries_signal ON entries(signal_type, signal, bank_id);
CREATE INDEX IF NOT EXISTS entries_bank ON entries(bank_id);
"""

_ENTRY_COLS = (
    "e.id, b.name, e.signal_type, e.signal, e.label, e.source, e.note, e.added_at, e.enabled, "
    "e.tags"
)

_INSERT = (
    "INSERT INTO entries "
    "(bank_id, signal_type, signal, label, source, note, added_at, enabled, tags) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (signal_type, signal, bank_id) DO NOTHING"
)


def _validate_bank_fields(bank: Bank) -> None:
    validate_bank_name(bank.name)
    if bank.role not in ROLES:
        raise BankError(f"invalid role {bank.role!r} for bank {bank.name}: use alert or ignore")
    threshold = bank.pdq_threshold
    if isinstance(threshold, bool) or not isinstance(threshold, int) or not 0 <= threshold <= 255:
        raise BankError(
            f"invalid PDQ threshold {threshold!r} for bank {bank.name}: "
            "use a whole number of bits from 0 to 255 (default 31)"
        )


def _tags_text(tags: Iterable[str]) -> str:
    # Tags are stored space-joined; a tag with whitespace in it becomes several tags.
    return " ".join(t for tag in tags for t in tag.split())


def _entry(row: Sequence[Any]) -> Entry:
    return Entry(
        id=row[0],
        bank=row[1],
        signal_type=row[2],
        signal=row[3],
        label=row[4],
        source=row[5],
        note=row[6],
        added_at=row[7],
        enabled=bool(row[8]),
        tags=row[9].split() if row[9] else [],
    )


def _bank(row: Sequence[Any]) -> Bank:
    return Bank(
        name=row[0],
        role=cast(BankRole, row[1]),
        pdq_threshold=row[2],
        enabled=bool(row[3]),
        description=row[4],
        created_at=row[5],
    )


class SqliteBankStore:
    """Banks and entries in one SQLite database (WAL mode, foreign keys on).

    One instance per thread: the underlying connection is not shared across threads.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None)
        except sqlite3.Error as err:
            raise BankError(f"cannot open bank database {self.path}: {err}") from None
        try:
            self._db.execute("PRAGMA foreign_keys = ON")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.execute("PRAGMA busy_timeout = 10000")
            # A big import grows the WAL file; give the space back after the checkpoint.
            self._db.execute("PRAGMA journal_size_limit = 67108864")
            # Bulk imports insert random keys into a large index; a bigger page cache keeps
            # that fast (negative = KiB).
            self._db.execute("PRAGMA cache_size = -65536")
            self._migrate()
        except sqlite3.DatabaseError as err:
            self._db.close()
            raise BankError(f"{self.path} is not a usable Tipline bank database: {err}") from None

    # -- plumbing ---------------------------------------------------------------------------

    def _schema_version(self) -> int:
        has_table = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
        ).fetchone()
        if not has_table:
            return 0
        row = self._db.execute("SELECT MAX(version) FROM schema_version").fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def _migrate(self) -> None:
        version = self._schema_version()
        if version == SCHEMA_VERSION:
            return
        with self._tx():
            version = self._schema_version()  # again, under the write lock
            if version > SCHEMA_VERSION:
                raise BankError(
                    f"{self.path} was written by a newer Tipline (schema {version}; this one "
                    f"understands {SCHEMA_VERSION}): upgrade Tipline"
                )
            if version < SCHEMA_VERSION:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute("DELETE FROM schema_version")
                self._db.execute(
                    "INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,)
                )

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        else:
            self._db.execute("COMMIT")

    def _bank_id(self, name: str) -> int:
        row = self._db.execute("SELECT id FROM banks WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise BankNotFoundError(f"no bank named {name!r} (see `tipline bank list`)")
        return int(row[0])

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> SqliteBankStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- banks ------------------------------------------------------------------------------

    def create_bank(self, bank: Bank) -> Bank:
        _validate_bank_fields(bank)
        created = Bank(
            name=bank.name,
            role=bank.role,
            pdq_threshold=bank.pdq_threshold,
            enabled=bank.enabled,
            description=bank.description,
            created_at=bank.created_at or time.time(),
        )
        try:
            with self._tx() as db:
                db.execute(
                    "INSERT INTO banks "
                    "(name, role, pdq_threshold, enabled, description, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        created.name,
                        created.role,
                        created.pdq_threshold,
                        int(created.enabled),
                        created.description,
                        created.created_at,
                    ),
                )
        except sqlite3.IntegrityError:
            raise BankError(f"bank {bank.name} already exists") from None
        return created

    def get_bank(self, name: str) -> Bank:
        row = self._db.execute(
            "SELECT name, role, pdq_threshold, enabled, description, created_at "
            "FROM banks WHERE name = ?",
            (name,),
        ).fetchone()
        if row is None:
            raise BankNotFoundError(f"no bank named {name!r} (see `tipline bank list`)")
        return _bank(row)

    def has_bank(self, name: str) -> bool:
        return (
            self._db.execute("SELECT 1 FROM banks WHERE name = ?", (name,)).fetchone() is not None
        )

    def list_banks(self) -> list[Bank]:
        rows = self._db.execute(
            "SELECT name, role, pdq_threshold, enabled, description, created_at "
            "FROM banks ORDER BY name"
        )
        return [_bank(r) for r in rows]

    def update_bank(self, bank: Bank) -> Bank:
        """Save ``bank``'s role, threshold, enabled flag and description (found by name)."""
        _validate_bank_fields(bank)
        with self._tx() as db:
            cur = db.execute(
                "UPDATE banks SET role = ?, pdq_threshold = ?, enabled = ?, description = ? "
                "WHERE name = ?",
                (bank.role, bank.pdq_threshold, int(bank.enabled), bank.description, bank.name),
            )
            if cur.rowcount == 0:
                raise BankNotFoundError(f"no bank named {bank.name!r} (see `tipline bank list`)")
        return self.get_bank(bank.name)

    def delete_bank(self, name: str) -> int:
        """Delete a bank and all its entries; returns how many entries went with it."""
        with self._tx() as db:
            bank_id = self._bank_id(name)
            n = db.execute("SELECT COUNT(*) FROM entries WHERE bank_id = ?", (bank_id,)).fetchone()
            db.execute("DELETE FROM entries WHERE bank_id = ?", (bank_id,))
            db.execute("DELETE FROM banks WHERE id = ?", (bank_id,))
        return int(n[0])

    # -- entries ----------------------------------------------------------------------------

    def add_entries(self, entries: Iterable[Entry]) -> list[int]:
        """Add entries (to the banks named by ``Entry.bank``) in one transaction.

        Returns one id per input entry, in order. A signal its bank already holds (or one that
        appears twice in ``entries``) is not added again: its existing id is returned. Any error
        (unknown bank, invalid signal, or an exception raised by the ``entries`` iterable itself)
        rolls back the whole call, so nothing is added.
        """
        ids: list[int] = []
        bank_ids: dict[str, int] = {}
        types: dict[str, SignalType] = {}
        now = time.time()
        with self._tx() as db:
            batch: list[tuple[int, str, str, str, str, str, float, int, str]] = []
            for e in entries:
                bank_id = bank_ids.get(e.bank)
                if bank_id is None:
                    bank_id = bank_ids[e.bank] = self._bank_id(e.bank)
                st = types.get(e.signal_type)
                if st is None:
                    st = types[e.signal_type] = signal_type(e.signal_type)
                batch.append(
                    (
                        bank_id,
                        st.name,
                        st.normalise(e.signal),
                        e.label,
                        e.source,
                        e.note,
                        e.added_at or now,
                        int(e.enabled),
                        _tags_text(e.tags),
                    )
                )
                if len(batch) >= _BATCH:
                    ids.extend(self._insert_batch(db, batch))
                    batch = []
            if batch:
                ids.extend(self._insert_batch(db, batch))
        return ids

    @staticmethod
    def _insert_batch(
        db: sqlite3.Connection, batch: list[tuple[int, str, str, str, str, str, float, int, str]]
    ) -> list[int]:
        # Inside our write transaction nobody else inserts, and AUTOINCREMENT hands out ids
        # above every id ever used, in insertion order. So when every row of the batch was new,
        # the rows with id above the previous maximum are exactly this batch, in order.
        before = db.execute("SELECT COALESCE(MAX(id), 0) FROM entries").fetchone()[0]
        inserted = db.executemany(_INSERT, batch).rowcount
        if inserted == len(batch):
            new = [
                r[0]
                for r in db.execute("SELECT id FROM entries WHERE id > ? ORDER BY id", (before,))
            ]
            if len(new) == len(batch):
                return new
        # Some rows were already there: look every row up (uses the unique index).
        out: list[int] = []
        for row in batch:
            found = db.execute(
                "SELECT id FROM entries WHERE signal_type = ? AND signal = ? AND bank_id = ?",
                (row[1], row[2], row[0]),
            ).fetchone()
            out.append(int(found[0]))
        return out

    def remove_entries(self, bank: str, entry_ids: Iterable[int]) -> int:
        """Delete entries of ``bank`` by id (ids in other banks are ignored); returns the count."""
        with self._tx() as db:
            bank_id = self._bank_id(bank)
            cur = db.executemany(
                "DELETE FROM entries WHERE id = ? AND bank_id = ?",
                ((int(i), bank_id) for i in entry_ids),
            )
            return max(cur.rowcount, 0)

    def set_entries_enabled(self, bank: str, entry_ids: Iterable[int], enabled: bool) -> int:
        """Enable or disable entries of ``bank``; returns how many entries were found."""
        with self._tx() as db:
            bank_id = self._bank_id(bank)
            cur = db.executemany(
                "UPDATE entries SET enabled = ? WHERE id = ? AND bank_id = ?",
                ((int(enabled), int(i), bank_id) for i in entry_ids),
            )
            return max(cur.rowcount, 0)

    def get_entry(self, entry_id: int) -> Entry:
        row = self._db.execute(
            f"SELECT {_ENTRY_COLS} FROM entries e JOIN banks b ON b.id = e.bank_id WHERE e.id = ?",
            (entry_id,),
        ).fetchone()
        if row is None:
            raise BankError(f"no bank entry with id {entry_id}")
        return _entry(row)

    def iter_entries(
        self,
        bank: str | None = None,
        *,
        enabled_only: bool = False,
        limit: int | None = None,
        offset: int = 0,
    ) -> Iterator[Entry]:
        """Entries of one bank (or of every bank when ``bank`` is None), in id order.

        ``enabled_only`` leaves out disabled entries and every entry of a disabled bank: what
        the matcher should see.
        """
        where: list[str] = []
        params: list[Any] = []
        if bank is not None:
            where.append("e.bank_id = ?")
            params.append(self._bank_id(bank))
        if enabled_only:
            where.append("e.enabled = 1 AND b.enabled = 1")
        sql = f"SELECT {_ENTRY_COLS} FROM entries e JOIN banks b ON b.id = e.bank_id"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY e.id"
        if limit is not None or offset:
            sql += " LIMIT ? OFFSET ?"
            params += [-1 if limit is None else limit, offset]
        cur = self._db.cursor()
        cur.execute(sql, params)
        return self._rows(cur)

    @staticmethod
    def _rows(cur: sqlite3.Cursor) -> Iterator[Entry]:
        try:
            while rows := cur.fetchmany(1000):
                for row in rows:
                    yield _entry(row)
        finally:
            with suppress(sqlite3.ProgrammingError):  # the store was closed first
                cur.close()

    def lookup(
        self, signal_type_name: str, signal: str, *, enabled_only: bool = True
    ) -> list[Entry]:
        """Entries holding exactly this signal, in any bank (for exact-match signal types)."""
        st = signal_type(signal_type_name)
        sql = (
            f"SELECT {_ENTRY_COLS} FROM entries e JOIN banks b ON b.id = e.bank_id "
            "WHERE e.signal_type = ? AND e.signal = ?"
        )
        if enabled_only:
            sql += " AND e.enabled = 1 AND b.enabled = 1"
        rows = self._db.execute(sql + " ORDER BY e.id", (st.name, st.normalise(signal)))
        return [_entry(r) for r in rows]

    def count_entries(self, bank: str) -> int:
        bank_id = self._bank_id(bank)
        row = self._db.execute("SELECT COUNT(*) FROM entries WHERE bank_id = ?", (bank_id,))
        return int(row.fetchone()[0])

    def entry_counts(self) -> dict[str, int]:
        """Entries per bank, every bank included (0 for empty ones)."""
        rows = self._db.execute(
            "SELECT b.name, COUNT(e.id) FROM banks b LEFT JOIN entries e ON e.bank_id = b.id "
            "GROUP BY b.id"
        )
        return {name: int(n) for name, n in rows}
