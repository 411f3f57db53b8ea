"""The bank store: a :class:`~tipline.banks.bank.BankStore` in the service database (SQLite or
PostgreSQL), the only place banks are kept and written.

Over the ``banks`` and ``bank_entries`` tables created by the migrations: entry ids unique
across banks and never reused (AUTOINCREMENT on SQLite, a sequence on PostgreSQL), like HMA's
``bank_content_id``, so an id in an old match report never points at a different hash; signals
stored in canonical form; adding a signal a bank already holds returns the existing entry's id
(``dedupe``, the default: imports, `tipline bank add`), or makes a new entry holding it again
(``dedupe=False``: HMA's API, where every add is a new piece of content with its own note and
metadata); ``add_entries`` is one transaction (any error adds nothing). Old ``banks.sqlite3``
files are only read, to be adopted (:mod:`tipline.banks.sqlite_store`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, cast

from sqlalchemy import delete, func, insert, inspect, select, update
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tipline.banks.bank import ROLES, Bank, BankRole, Entry, validate_bank_name
from tipline.banks.sqlite_store import LEGACY_DB_NAME, adopt_banks
from tipline.errors import BankError, BankNotFoundError
from tipline.signals.types import SignalType, signal_type
from tipline.store.base import make_engine
from tipline.store.tables import BankEntryRow, BankRow, SignalTypeSettingRow, signal_key

#: Rows per INSERT batch, and signals per id lookup query.
_BATCH = 5_000
_LOOKUP = 500
_PAGE = 1_000

_B = BankRow
_E = BankEntryRow
_BANK_COLS = (
    _B.name,
    _B.role,
    _B.pdq_threshold,
    _B.enabled,
    _B.description,
    _B.created_at,
    _B.enabled_ratio,
)
_ENTRY_COLS = (
    _E.id,
    _B.name,
    _E.signal_type,
    _E.signal,
    _E.label,
    _E.source,
    _E.note,
    _E.added_at,
    _E.enabled,
    _E.tags,
    _E.disabled_until,
    _E.meta,
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
    ratio = bank.enabled_ratio
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 <= ratio <= 1:
        raise BankError(
            f"invalid enabled_ratio {ratio!r} for bank {bank.name}: use a number from 0 to 1"
        )


def _tags_text(tags: Iterable[str]) -> str:
    # Tags are stored space-joined; a tag with whitespace in it becomes several tags.
    return " ".join(t for tag in tags for t in tag.split())


def _not_found(name: str) -> BankNotFoundError:
    return BankNotFoundError(f"no bank named {name!r} (see `tipline bank list`)")


def _bank(row: Any) -> Bank:
    return Bank(
        name=row[0],
        role=cast(BankRole, row[1]),
        pdq_threshold=int(row[2]),
        enabled=bool(row[3]),
        description=row[4],
        created_at=float(row[5]),
        enabled_ratio=float(row[6]),
    )


def _entry(row: Any) -> Entry:
    return Entry(
        id=int(row[0]),
        bank=row[1],
        signal_type=row[2],
        signal=row[3],
        label=row[4],
        source=row[5],
        note=row[6],
        added_at=float(row[7]),
        enabled=bool(row[8]),
        tags=row[9].split() if row[9] else [],
        disabled_until=None if row[10] is None else float(row[10]),
        metadata=row[11] if isinstance(row[11], dict) else None,
    )


def _active(now: float) -> list[Any]:
    """Conditions of an entry matchable at ``now`` (enabled, past any ``disabled_until``)."""
    return [_E.enabled.is_(True), (_E.disabled_until.is_(None)) | (_E.disabled_until <= now)]


def auto_confirm_banks(session: Session, role: BankRole = "alert") -> set[str]:
    """Enabled banks of ``role`` with ``auto_confirm`` on: alert banks whose matches are
    actioned without a human view; ignore banks whose exact matches are dismissed without one."""
    return set(
        session.scalars(
            select(BankRow.name).where(
                BankRow.auto_confirm.is_(True), BankRow.role == role, BankRow.enabled.is_(True)
            )
        )
    )


class SqlBankStore:
    """Banks and entries in the service database. Thread-safe (an engine's connection pool)."""

    def __init__(self, engine_or_url: Engine | str) -> None:
        if isinstance(engine_or_url, Engine):
            self.engine, self._owned = engine_or_url, False
        else:
            self.engine, self._owned = make_engine(engine_or_url), True
        try:
            has = inspect(self.engine).has_table("bank_entries")
        except Exception as err:
            self.close()
            raise BankError(f"cannot open the service database: {err}") from None
        if not has:
            self.close()
            raise BankError("the service database has no bank tables: run `tipline db upgrade`")

    def close(self) -> None:
        if self._owned:
            self.engine.dispose()

    def __enter__(self) -> SqlBankStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _bank_id(conn: Connection, name: str, *, lock: bool = False) -> int:
        """The bank's id; ``lock``: its row locked until the transaction ends (SQLite: the
        transaction begins IMMEDIATE, see :mod:`tipline.store.base`)."""
        query = select(_B.id).where(_B.name == name)
        found = conn.scalar(query.with_for_update() if lock else query)
        if found is None:
            raise _not_found(name)
        return int(found)

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
            enabled_ratio=float(bank.enabled_ratio),
        )
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(_B).values(
                        name=created.name,
                        role=created.role,
                        pdq_threshold=created.pdq_threshold,
                        enabled=created.enabled,
                        description=created.description,
                        created_at=created.created_at,
                        enabled_ratio=created.enabled_ratio,
                    )
                )
        except IntegrityError:
            raise BankError(f"bank {bank.name} already exists") from None
        return created

    def get_bank(self, name: str) -> Bank:
        with self.engine.connect() as conn:
            row = conn.execute(select(*_BANK_COLS).where(_B.name == name)).first()
        if row is None:
            raise _not_found(name)
        return _bank(row)

    def has_bank(self, name: str) -> bool:
        with self.engine.connect() as conn:
            return conn.scalar(select(_B.id).where(_B.name == name)) is not None

    def list_banks(self) -> list[Bank]:
        with self.engine.connect() as conn:
            return [_bank(r) for r in conn.execute(select(*_BANK_COLS).order_by(_B.name))]

    def update_bank(self, bank: Bank) -> Bank:
        """Save ``bank``'s role, threshold, enabled flag, ratio and description (found by
        name)."""
        _validate_bank_fields(bank)
        with self.engine.begin() as conn:
            res = conn.execute(
                update(_B)
                .where(_B.name == bank.name)
                .values(
                    role=bank.role,
                    pdq_threshold=bank.pdq_threshold,
                    enabled=bank.enabled,
                    description=bank.description,
                    enabled_ratio=float(bank.enabled_ratio),
                )
            )
            if res.rowcount == 0:
                raise _not_found(bank.name)
        return self.get_bank(bank.name)

    def rename_bank(self, old: str, new: str) -> Bank:
        """Give a bank a new name; its entries (and their ids) go with it. Raises
        BankError("... already exists") when ``new`` is taken."""
        validate_bank_name(new)
        if new == old:
            return self.get_bank(old)
        try:
            with self.engine.begin() as conn:
                if conn.execute(update(_B).where(_B.name == old).values(name=new)).rowcount == 0:
                    raise _not_found(old)
        except IntegrityError:
            raise BankError(f"bank {new} already exists") from None
        return self.get_bank(new)

    def review_settings(self, name: str) -> tuple[bool, int | None]:
        """The bank's ``(auto_confirm, consensus_required)`` (the review desk's settings)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(_B.auto_confirm, _B.consensus_required).where(_B.name == name)
            ).first()
        if row is None:
            raise _not_found(name)
        return bool(row[0]), row[1]

    def set_review_settings(
        self, name: str, *, auto_confirm: bool | None = None, consensus: int | None = None
    ) -> tuple[bool, int | None]:
        """Set ``auto_confirm`` (alert matches actioned without a human view) and/or how many
        agreeing analysts items matching this bank need (``consensus``; 0 = the service
        default)."""
        values: dict[str, Any] = {}
        if auto_confirm is not None:
            values["auto_confirm"] = auto_confirm
        if consensus is not None:
            if not 0 <= consensus <= 10:
                raise BankError("consensus must be 0 (the service default) to 10 analysts")
            values["consensus_required"] = consensus or None
        if values:
            with self.engine.begin() as conn:
                if conn.execute(update(_B).where(_B.name == name).values(**values)).rowcount == 0:
                    raise _not_found(name)
        return self.review_settings(name)

    def delete_bank(self, name: str) -> int:
        """Delete a bank and all its entries; returns how many entries went with it."""
        with self.engine.begin() as conn:
            bank_id = self._bank_id(conn, name)
            n = conn.execute(delete(_E).where(_E.bank_id == bank_id)).rowcount
            conn.execute(delete(_B).where(_B.id == bank_id))
        return int(n)

    # -- entries ----------------------------------------------------------------------------

    def add_entries(self, entries: Iterable[Entry], *, dedupe: bool = True) -> list[int]:
        """Add entries (to the banks named by ``Entry.bank``) in one transaction; returns one id
        per input entry, in order. ``dedupe``: a signal its bank already holds (or that comes
        twice in ``entries``) gives the existing id and adds nothing; otherwise every entry is
        a new one (HMA's content adds)."""
        ids: list[int] = []
        bank_ids: dict[str, int] = {}
        types: dict[str, SignalType] = {}
        now = time.time()
        with self.engine.begin() as conn:
            batch: list[dict[str, Any]] = []
            for e in entries:
                bank_id = bank_ids.get(e.bank)
                if bank_id is None:
                    # dedupe reads what the bank holds, then inserts what it lacks: the bank
                    # is locked first, so two adds of one signal at once store it once
                    bank_id = bank_ids[e.bank] = self._bank_id(conn, e.bank, lock=dedupe)
                st = types.get(e.signal_type)
                if st is None:
                    st = types[e.signal_type] = signal_type(e.signal_type)
                signal = st.normalise(e.signal)
                batch.append(
                    {
                        "bank_id": bank_id,
                        "signal_type": st.name,
                        "signal": signal,
                        "signal_key": signal_key(signal),
                        "label": e.label,
                        "source": e.source,
                        "note": e.note,
                        "added_at": e.added_at or now,
                        "enabled": bool(e.enabled),
                        "tags": _tags_text(e.tags),
                        "disabled_until": e.disabled_until,
                        "meta": e.metadata or None,
                    }
                )
                if len(batch) >= _BATCH:
                    ids.extend(self._insert_batch(conn, batch, dedupe))
                    batch = []
            if batch:
                ids.extend(self._insert_batch(conn, batch, dedupe))
        return ids

    def _insert_batch(
        self, conn: Connection, batch: list[dict[str, Any]], dedupe: bool
    ) -> list[int]:
        found: dict[tuple[int, str, str], int] = {}
        if dedupe:
            # the first entry already holding each signal, by the signal_key index
            keys: dict[tuple[int, str], set[str]] = {}
            for row in batch:
                keys.setdefault((row["bank_id"], row["signal_type"]), set()).add(row["signal"])
            for (bank_id, st), signals in keys.items():
                sigs = sorted(signals)
                for i in range(0, len(sigs), _LOOKUP):
                    part = sigs[i : i + _LOOKUP]
                    rows = conn.execute(
                        select(func.min(_E.id), _E.signal)
                        .where(
                            _E.signal_key.in_([signal_key(sig) for sig in part]),
                            _E.bank_id == bank_id,
                            _E.signal_type == st,
                            _E.signal.in_(part),
                        )
                        .group_by(_E.signal)
                    )
                    for entry_id, sig in rows:
                        found[(bank_id, st, sig)] = int(entry_id)
        new: list[dict[str, Any]] = []
        seen: set[tuple[int, str, str]] = set()
        for row in batch:
            key = (row["bank_id"], row["signal_type"], row["signal"])
            if dedupe and (key in found or key in seen):
                continue
            seen.add(key)
            new.append(row)
        new_ids: list[int] = []
        if new:
            res = conn.execute(insert(_E).returning(_E.id, sort_by_parameter_order=True), new)
            new_ids = [int(r[0]) for r in res]
        if not dedupe:
            return new_ids
        for row, entry_id in zip(new, new_ids, strict=True):
            found[(row["bank_id"], row["signal_type"], row["signal"])] = entry_id
        return [found[(r["bank_id"], r["signal_type"], r["signal"])] for r in batch]

    def remove_entries(self, bank: str, entry_ids: Iterable[int]) -> int:
        """Delete entries of ``bank`` by id (ids in other banks are ignored); returns the count."""
        with self.engine.begin() as conn:
            bank_id = self._bank_id(conn, bank)
            wanted = sorted({int(i) for i in entry_ids})
            n = 0
            for i in range(0, len(wanted), _LOOKUP):
                n += conn.execute(
                    delete(_E).where(_E.bank_id == bank_id, _E.id.in_(wanted[i : i + _LOOKUP]))
                ).rowcount
            return n

    def set_entries_enabled(self, bank: str, entry_ids: Iterable[int], enabled: bool) -> int:
        """Enable or disable entries of ``bank``; returns how many entries were found."""
        with self.engine.begin() as conn:
            bank_id = self._bank_id(conn, bank)
            wanted = sorted({int(i) for i in entry_ids})
            n = 0
            for i in range(0, len(wanted), _LOOKUP):
                n += conn.execute(
                    update(_E)
                    .where(_E.bank_id == bank_id, _E.id.in_(wanted[i : i + _LOOKUP]))
                    .values(enabled=bool(enabled))
                ).rowcount
            return n

    def update_entry(
        self,
        bank: str,
        entry_id: int,
        *,
        enabled: bool | None = None,
        disabled_until: float | Literal["keep"] | None = "keep",
        note: str | None = None,
    ) -> Entry:
        """Change one entry of ``bank``: its enabled flag, its ``disabled_until`` time (None
        clears it; "keep" leaves it) and/or its note; returns it as stored."""
        values: dict[str, Any] = {}
        if enabled is not None:
            values["enabled"] = bool(enabled)
        if disabled_until != "keep":
            values["disabled_until"] = disabled_until
        if note is not None:
            values["note"] = note
        with self.engine.begin() as conn:
            bank_id = self._bank_id(conn, bank)
            where = (_E.bank_id == bank_id, _E.id == int(entry_id))
            if values:
                found = conn.execute(update(_E).where(*where).values(**values)).rowcount
            else:
                found = conn.scalar(select(func.count()).select_from(_E).where(*where)) or 0
            if not found:
                raise BankError(f"no entry {entry_id} in bank {bank}")
        return self.get_entry(int(entry_id))

    def get_entry(self, entry_id: int) -> Entry:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(*_ENTRY_COLS).join(_B, _B.id == _E.bank_id).where(_E.id == entry_id)
            ).first()
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

        ``enabled_only`` leaves out disabled entries and every entry of a disabled bank. Reads
        in pages by id, so no connection is held between pages.
        """
        conds: list[Any] = []
        if bank is not None:
            with self.engine.connect() as conn:
                conds.append(_E.bank_id == self._bank_id(conn, bank))  # raises now, not later
        if enabled_only:
            conds += [*_active(time.time()), _B.enabled.is_(True)]
        return self._pages(conds, limit, offset)

    def _pages(self, conds: Sequence[Any], limit: int | None, offset: int) -> Iterator[Entry]:
        last: int | None = None
        left = limit
        skip = offset
        while left is None or left > 0:
            size = _PAGE if left is None else min(_PAGE, left)
            stmt = (
                select(*_ENTRY_COLS)
                .join(_B, _B.id == _E.bank_id)
                .where(*conds)
                .order_by(_E.id)
                .limit(size)
            )
            if last is not None:
                stmt = stmt.where(_E.id > last)
            elif skip:
                stmt = stmt.offset(skip)
            with self.engine.connect() as conn:
                rows = conn.execute(stmt).all()
            for row in rows:
                yield _entry(row)
            if len(rows) < size:
                return
            last = int(rows[-1][0])
            if left is not None:
                left -= len(rows)

    def lookup(
        self, signal_type_name: str, signal: str, *, enabled_only: bool = True
    ) -> list[Entry]:
        """Entries holding exactly this signal, in any bank (for exact-match signal types)."""
        st = signal_type(signal_type_name)
        signal = st.normalise(signal)
        stmt = (
            select(*_ENTRY_COLS)
            .join(_B, _B.id == _E.bank_id)
            .where(
                _E.signal_key == signal_key(signal),
                _E.signal_type == st.name,
                _E.signal == signal,
            )
            .order_by(_E.id)
        )
        if enabled_only:
            stmt = stmt.where(*_active(time.time()), _B.enabled.is_(True))
        with self.engine.connect() as conn:
            return [_entry(r) for r in conn.execute(stmt)]

    def signal_type_ratios(self) -> dict[str, float]:
        """The ``enabled_ratio`` of every signal type set through HMA's API (others: 1.0)."""
        row = SignalTypeSettingRow
        with self.engine.connect() as conn:
            return {n: float(r) for n, r in conn.execute(select(row.name, row.enabled_ratio))}

    def set_signal_type_ratio(self, name: str, ratio: float) -> None:
        row = SignalTypeSettingRow
        with self.engine.begin() as conn:
            if (
                conn.execute(
                    update(row).where(row.name == name).values(enabled_ratio=ratio)
                ).rowcount
                == 0
            ):
                conn.execute(insert(row).values(name=name, enabled_ratio=ratio))

    def signal_type_stats(self) -> dict[str, tuple[int, float]]:
        """Per signal type: how many entries hold one, and when the newest was added."""
        stmt = select(_E.signal_type, func.count(_E.id), func.max(_E.added_at)).group_by(
            _E.signal_type
        )
        with self.engine.connect() as conn:
            return {st: (int(n), float(t or 0)) for st, n, t in conn.execute(stmt)}

    def count_entries(self, bank: str) -> int:
        with self.engine.connect() as conn:
            bank_id = self._bank_id(conn, bank)
            n = conn.scalar(select(func.count()).select_from(_E).where(_E.bank_id == bank_id))
        return int(n or 0)

    def entry_counts(self) -> dict[str, int]:
        """Entries per bank, every bank included (0 for empty ones)."""
        stmt = (
            select(_B.name, func.count(_E.id))
            .select_from(_B)
            .outerjoin(_E, _E.bank_id == _B.id)
            .group_by(_B.id, _B.name)
        )
        with self.engine.connect() as conn:
            return {name: int(n) for name, n in conn.execute(stmt)}


def service_db_has_banks(url: str) -> bool:
    """True when ``url`` is a reachable service database with the bank tables (migrated).

    A SQLite URL whose file does not exist is False without creating the file.
    """
    engine_url = make_url(url)
    if engine_url.get_backend_name() == "sqlite":
        path = engine_url.database
        if not path or path == ":memory:" or not Path(path).is_file():
            return False
    engine = make_engine(url)
    try:
        return bool(inspect(engine).has_table("bank_entries"))
    except Exception:
        return False
    finally:
        engine.dispose()


def open_bank_store(data_dir: Path, database_url: str | None = None) -> SqlBankStore:
    """The one bank store of an installation: the service database (the embedded SQLite file
    ``<data_dir>/tipline.sqlite3`` unless ``database_url`` or ``$TIPLINE_DATABASE_URL`` names
    another), so banks made with ``tipline bank`` are the banks ``tipline serve`` matches.

    The schema is upgraded when it is behind. Banks an older version kept in a standalone
    ``banks.sqlite3`` in ``data_dir`` are adopted (read, never changed) while the database has
    no banks; a file that cannot be adopted is an error, so no bank is silently left out.
    """
    from tipline.store import migrations
    from tipline.store.base import database_url as resolve

    url = resolve(Path(data_dir), database_url)
    try:
        if migrations.current(url) != migrations.head():
            migrations.upgrade(url)
    except Exception as err:  # unreachable server, bad URL, read-only file...
        raise BankError(f"cannot open the database {make_url(url)!r}: {err}") from None
    store = SqlBankStore(url)
    legacy = Path(data_dir) / LEGACY_DB_NAME
    try:
        if legacy.is_file() and not store.list_banks():
            adopt_banks(legacy, store)
    except BankError as err:
        store.close()
        raise BankError(
            f"{err} (an old bank file, adopted automatically: move it out of the data "
            "directory to go on without its banks)"
        ) from None
    except BaseException:
        store.close()
        raise
    return store


__all__ = ["SqlBankStore", "open_bank_store", "service_db_has_banks"]
