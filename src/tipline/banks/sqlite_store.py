"""Old ``banks.sqlite3`` files: read them (never write them) and adopt their banks.

Tipline once kept banks in a standalone SQLite file, ``<data dir>/banks.sqlite3``. Banks live in
the service database now (:class:`tipline.store.banks.SqlBankStore`, the one bank store). This
module is only the way in for an old file: :class:`LegacyBankFile` opens one read-only and lists
its banks and entries, and :func:`adopt_banks` copies them into a bank store (the service
database), which is the only thing written. ``tipline db import-banks`` runs it, and
:func:`tipline.store.banks.open_bank_store` does once, for a data directory that still has the
file and a database with no banks yet.

The file is untrusted input: one that is not SQLite, is damaged or truncated, has another
schema or holds values the old store could never have written raises a one-line
:class:`~tipline.errors.BankError` naming the file, never a ``sqlite3`` traceback.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

from tipline.banks.bank import ROLES, Bank, BankRole, BankStore, Entry, validate_bank_name
from tipline.errors import BankError
from tipline.signals.types import signal_type

#: File name of an old bank file inside the data directory.
LEGACY_DB_NAME = "banks.sqlite3"

#: The only schema the old store ever wrote.
SCHEMA_VERSION = 1

_BANK_COLS = ("id", "name", "role", "pdq_threshold", "enabled", "description", "created_at")
_ENTRY_COLS = (
    "id",
    "bank_id",
    "signal_type",
    "signal",
    "label",
    "source",
    "note",
    "added_at",
    "enabled",
    "tags",
)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _one_line(err: BaseException | str) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _unusable(path: Path, what: str) -> BankError:
    return BankError(f"{path} is not a usable old Tipline bank file: {what}")


class LegacyBankFile:
    """An old ``banks.sqlite3`` opened read-only: its banks and entries, as they were written.

    Nothing is ever written to the file: it is opened ``immutable`` (nothing is created beside
    it either) unless an unfinished write-ahead log (``-wal``) lies next to it, which is then
    read too, read-only (SQLite may add its ``-shm`` index beside it; the log is never
    checkpointed into the file).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise BankError(f"no bank file at {self.path}")
        wal = self.path.with_name(self.path.name + "-wal")
        pending = wal.is_file() and wal.stat().st_size > 0
        uri = "file:" + quote(str(self.path.absolute())) + "?mode=ro"
        if not pending:
            uri += "&immutable=1"
        try:
            self._db = sqlite3.connect(uri, uri=True)
        except sqlite3.Error as err:
            raise BankError(f"cannot open {self.path}: {_one_line(err)}") from None
        try:
            self._check_schema()
            self._names = {bank_id: bank.name for bank_id, bank in self._banks()}
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> LegacyBankFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading ----------------------------------------------------------------------------

    def _fail(self, what: str) -> BankError:
        return _unusable(self.path, what)

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
        try:
            cur = self._db.execute(sql, params)
            while rows := cur.fetchmany(1000):
                yield from rows
        except sqlite3.Error as err:
            raise self._fail(_one_line(err)) from None

    def _check_schema(self) -> None:
        tables = {row[0] for row in self._query("SELECT name FROM sqlite_master")}
        if "schema_version" not in tables:
            raise self._fail("no schema_version table")
        versions = [row[0] for row in self._query("SELECT version FROM schema_version")]
        if len(versions) != 1 or type(versions[0]) is not int:
            raise self._fail(f"unreadable schema version {_short(versions)}")
        if versions[0] > SCHEMA_VERSION:
            raise BankError(
                f"{self.path} was written by a newer Tipline (schema {versions[0]}; this one "
                f"reads {SCHEMA_VERSION}): upgrade Tipline"
            )
        if versions[0] != SCHEMA_VERSION:
            raise self._fail(f"unknown schema version {versions[0]}")
        for table, wanted in (("banks", _BANK_COLS), ("entries", _ENTRY_COLS)):
            # the table name is one of two literals, never input
            have = {row[1] for row in self._query(f"PRAGMA table_info({table})")}
            missing = [c for c in wanted if c not in have]
            if missing:
                raise self._fail(f"table {table} lacks {', '.join(missing)}")

    def check(self) -> None:
        """SQLite's own consistency check of the whole file (pages, indexes)."""
        problems = [str(row[0]) for row in self._query("PRAGMA quick_check(1)")]
        if problems != ["ok"]:
            raise self._fail(f"damaged ({_one_line(' '.join(problems))})")

    def _banks(self) -> Iterator[tuple[int, Bank]]:
        sql = f"SELECT {', '.join(_BANK_COLS)} FROM banks ORDER BY name"
        for row in self._query(sql):
            bank_id, name, role, threshold, enabled, description, created_at = row
            where = f"bank row {_short(bank_id)}"
            if type(bank_id) is not int or type(name) is not str:
                raise self._fail(f"{where}: id or name is not what the old store wrote")
            try:
                validate_bank_name(name)
            except BankError as err:
                raise self._fail(f"{where}: {err}") from None
            if role not in ROLES:
                raise self._fail(f"bank {name}: role {_short(role)} is not alert or ignore")
            if type(threshold) is not int or not 0 <= threshold <= 255:
                raise self._fail(f"bank {name}: PDQ threshold {_short(threshold)} not 0 to 255")
            if enabled not in (0, 1) or type(description) is not str:
                raise self._fail(f"bank {name}: enabled flag or description is malformed")
            if type(created_at) not in (int, float):
                raise self._fail(f"bank {name}: created_at {_short(created_at)} is not a time")
            bank = Bank(
                name=name,
                role=cast(BankRole, role),
                pdq_threshold=threshold,
                enabled=bool(enabled),
                description=description,
                created_at=float(created_at),
            )
            yield bank_id, bank

    def list_banks(self) -> list[Bank]:
        """Every bank of the file, by name."""
        return [bank for _, bank in self._banks()]

    def iter_entries(self) -> Iterator[Entry]:
        """Every entry of the file (of every bank), in id order, with its id in the file.

        Read straight from the table, not through an index, so a damaged index cannot hide
        rows. Signals are returned as stored; :func:`adopt_banks` validates them.
        """
        sql = f"SELECT {', '.join(_ENTRY_COLS)} FROM entries ORDER BY id"
        for row in self._query(sql):
            entry_id, bank_id, st, signal, label, source, note, added_at, enabled, tags = row
            where = f"entry {_short(entry_id)}"
            if type(entry_id) is not int:
                raise self._fail(f"{where}: the id is not a whole number")
            bank = self._names.get(bank_id)
            if bank is None:
                raise self._fail(f"{where}: belongs to no bank (bank id {_short(bank_id)})")
            if not all(type(v) is str for v in (st, signal, label, source, note, tags)):
                raise self._fail(f"{where}: a text field holds something else")
            if type(added_at) not in (int, float) or enabled not in (0, 1):
                raise self._fail(f"{where}: added_at or the enabled flag is malformed")
            yield Entry(
                bank=bank,
                signal_type=st,
                signal=signal,
                label=label,
                source=source,
                note=note,
                added_at=float(added_at),
                enabled=bool(enabled),
                id=entry_id,
                tags=tags.split(),
            )

    def entry_counts(self) -> dict[str, int]:
        """Entries per bank, every bank included (0 for empty ones)."""
        counts = dict.fromkeys(sorted(self._names.values()), 0)
        for entry in self.iter_entries():
            counts[entry.bank] += 1
        return counts


@dataclass(slots=True)
class AdoptReport:
    """What :func:`adopt_banks` did. Skipped banks were already in the store (their settings
    there are kept); skipped entries were already held by their bank there."""

    path: Path
    banks_adopted: int = 0
    banks_skipped: int = 0
    entries_adopted: int = 0
    entries_skipped: int = 0

    def __str__(self) -> str:
        return (
            f"{self.path}: {self.banks_adopted} bank(s) adopted, {self.banks_skipped} already "
            f"there; {self.entries_adopted} entries adopted, {self.entries_skipped} already there"
        )


def adopt_banks(path: str | Path, dst: BankStore) -> AdoptReport:
    """Copy every bank and entry of the old bank file at ``path`` into ``dst``.

    The file is only read. It is checked whole first (SQLite's consistency check, every row and
    every signal), so a bad file raises :class:`BankError` before anything is written. Then
    banks ``dst`` lacks are created with the file's settings (banks it has keep theirs) and
    every entry is added in one ``add_entries`` call: entries a bank already holds are not added
    again, so adopting twice adds nothing the second time. Entry ids are the store's own (old
    ids are not kept).
    """
    report = AdoptReport(Path(path))
    with LegacyBankFile(path) as src:
        src.check()
        banks = src.list_banks()
        read = 0
        for entry in src.iter_entries():
            try:
                signal_type(entry.signal_type).normalise(entry.signal)
            except BankError as err:
                raise _unusable(src.path, f"entry {entry.id}: {_one_line(err)}") from None
            read += 1
        have = {bank.name for bank in dst.list_banks()}
        before = sum(dst.count_entries(b.name) for b in banks if b.name in have)
        for bank in banks:
            if bank.name in have:
                report.banks_skipped += 1
            else:
                dst.create_bank(bank)
                report.banks_adopted += 1
        # the same entries without their ids: the store assigns its own
        entries = (
            Entry(
                bank=e.bank,
                signal_type=e.signal_type,
                signal=e.signal,
                label=e.label,
                source=e.source,
                note=e.note,
                added_at=e.added_at,
                enabled=e.enabled,
                tags=e.tags,
            )
            for e in src.iter_entries()
        )
        dst.add_entries(entries)
        after = sum(dst.count_entries(b.name) for b in banks)
    report.entries_adopted = after - before
    report.entries_skipped = read - report.entries_adopted
    return report


__all__ = ["LEGACY_DB_NAME", "AdoptReport", "LegacyBankFile", "adopt_banks"]
