"""Writes ``banks.sqlite3`` files the way older Tipline versions did, for the adoption tests.

Tipline itself only reads such files now (``tipline.banks.sqlite_store``); this writer is the
old store's schema (version 1) and row format, with plain ``sqlite3``, and nothing more. Every
signal given to it in the tests is random hex or a fixed benign stand-in.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path

from tipline.banks import Bank, Entry

#: The old store's schema, as it created it.
OLD_SCHEMA = """
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
CREATE UNIQUE INDEX IF NOT EXISTS entries_signal ON entries(signal_type, signal, bank_id);
CREATE INDEX IF NOT EXISTS entries_bank ON entries(bank_id);
"""


def write_old_bank_file(
    path: Path, banks: Iterable[Bank] = (), entries: Iterable[Entry] = (), *, version: int = 1
) -> Path:
    """Create (or add to) an old-format bank file at ``path``: WAL journal, schema
    ``version``, the banks, then the entries (signals as given: the old store kept them in
    canonical form, so give lower-case hex)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA journal_mode = WAL")
        db.executescript(OLD_SCHEMA)
        db.execute("DELETE FROM schema_version")
        db.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
        now = time.time()
        for b in banks:
            db.execute(
                "INSERT INTO banks (name, role, pdq_threshold, enabled, description, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    b.name,
                    b.role,
                    b.pdq_threshold,
                    int(b.enabled),
                    b.description,
                    b.created_at or now,
                ),
            )
        for e in entries:
            (bank_id,) = db.execute("SELECT id FROM banks WHERE name = ?", (e.bank,)).fetchone()
            db.execute(
                "INSERT INTO entries (bank_id, signal_type, signal, label, source, note, "
                "added_at, enabled, tags) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    bank_id,
                    e.signal_type,
                    e.signal,
                    e.label,
                    e.source,
                    e.note,
                    e.added_at or now,
                    int(e.enabled),
                    " ".join(e.tags),
                ),
            )
        db.commit()
    finally:
        db.close()
    return path
