"""The service's bank store plus a live match index, updated incrementally.

``MatchService`` owns a ``BankStore`` (the service database through
``tipline.store.banks.SqlBankStore``) and one live ``tipline.index.bank_index.BankIndex`` of every
entry: the same index, matching rules and ignore-bank suppression `tipline scan` uses (one per
signal type: PDQ in an MIH index searched at the largest threshold of the enabled banks, then
filtered by each bank's own ``pdq_threshold``; vPDQ frames; exact and model hashes). What is the
service's own is below: the store, the lock, the change journal and reloads.

**Incremental updates.** Every change made through the service (add, remove, enable, disable an
entry; create, update or delete a bank) is written to the store and then applied to the index in
the same request, under a lock: a hash added by ``POST /c/bank/X/signal`` is found by the very
next ``/m/lookup``. There are no periodic full rebuilds.

**Other processes** (several API processes, in-process or separate pipeline workers) sharing
the index directory learn of changes through a change journal, ``<index_dir>/changes.jsonl``:
every change is appended as one JSON line (under a file lock) by the process that made it; each
process follows the file from where its index was built, at most ``refresh_seconds`` behind, in
a background thread, and applies the same incremental update (operations are idempotent). So a
hash added through one process is matchable on all of them within about a second, with no
rebuild. Only a bulk add of more than ``JOURNAL_MAX_ADDS`` entries is journalled as ``reload``:
the others rebuild from the database in the background while their old index keeps answering
(memory peak: two indexes for the length of one reload). Writers outside the service use the
same writer (``tipline.index.journal``): ``tipline bank`` journals ``reload``, and the exchange
fetcher (``tipline.exchange.fetcher``, in a ``tipline worker``) journals each committed batch's
adds, tombstone disables and re-enables right after its commit. The journal is rotated when it
outgrows ``JOURNAL_ROTATE_BYTES``: the writer renames it to ``changes.jsonl.old`` and starts a
new one; a process that finds a new file under the name reads the rest of its old file from
``changes.jsonl.old`` and follows the new one from its start (no rebuild: a long fetch rotates
the journal every few hundred thousand entries). Only a process that missed a whole rotation
(the old file renamed over again) rebuilds from the database, which already holds every change
journalled before.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sqlalchemy.engine import Engine

from tipline.banks.bank import Bank, BankStore, Entry
from tipline.errors import BankError, BankNotFoundError
from tipline.index import journal
from tipline.index.bank_index import BankIndex, Hit
from tipline.record import ItemRecord, Match
from tipline.signals.types import signal_type
from tipline.store.banks import SqlBankStore

log = logging.getLogger("tipline.service.matching")

#: The change journal in the index directory (JSON lines; see the module docstring and
#: ``tipline.index.journal``, its writer, shared with the exchange fetcher).
JOURNAL = journal.JOURNAL
#: Adds larger than this are journalled as "reload" (the other processes rebuild).
JOURNAL_MAX_ADDS = journal.JOURNAL_MAX_ADDS
#: The journal is rotated past this size (the others read the rest of the old file, then the new).
JOURNAL_ROTATE_BYTES = journal.JOURNAL_ROTATE_BYTES
#: The most of the journal read at one look.
_READ_BYTES = 64 * 1024 * 1024


@dataclass(slots=True)
class _Index:
    """The live index and the banks it was told about (for roles in answers)."""

    banks: dict[str, Bank] = field(default_factory=dict)
    matcher: BankIndex = field(default_factory=lambda: BankIndex(grows=True))
    built_at: float = 0.0


def _store_factory(db_url: str, engine: Engine | None = None) -> Callable[[], BankStore]:
    """One shared ``SqlBankStore`` on the service database (thread-safe: a connection pool),
    opened on first use."""
    shared: list[BankStore] = []
    lock = threading.Lock()

    def sql_store() -> BankStore:
        with lock:
            if not shared:
                shared.append(SqlBankStore(engine if engine is not None else db_url))
            return shared[0]

    return sql_store


class MatchService:
    """Banks plus the live index. Thread-safe: stores are per thread, the index has a lock."""

    def __init__(
        self,
        store_factory: Callable[[], BankStore],
        index_dir: Path | None = None,
        refresh_seconds: float = 1.0,
    ) -> None:
        self._factory = store_factory
        self._local = threading.local()
        self._stores: list[BankStore] = []
        self._stores_lock = threading.Lock()
        self._lock = threading.RLock()
        self._index: _Index | None = None
        self.index_dir = index_dir
        self.refresh_seconds = refresh_seconds
        self._offset = 0
        self._inode = 0
        self._old_at_load = 0
        self._instance = secrets.token_hex(8)
        self._watcher: threading.Thread | None = None
        self._stop = threading.Event()
        self.load_seconds = 0.0
        #: when the index last caught up with the change journal (or was built)
        self.last_check = 0.0
        self._st_ratios: tuple[float, dict[str, float]] = (0.0, {})

    @classmethod
    def for_data_dir(
        cls,
        data_dir: Path,
        db_url: str,
        index_dir: Path | None = None,
        refresh: float = 1.0,
        engine: Engine | None = None,
    ) -> MatchService:
        return cls(_store_factory(db_url, engine), index_dir or data_dir / "index", refresh)

    # ------------------------------------------------------------------ store plumbing

    @property
    def store(self) -> BankStore:
        store: BankStore | None = getattr(self._local, "store", None)
        if store is None:
            store = self._factory()
            self._local.store = store
            with self._stores_lock:
                self._stores.append(store)
        return store

    def close(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(5)
            self._watcher = None
        self._stop = threading.Event()
        with self._stores_lock:
            for s in {id(s): s for s in self._stores}.values():
                with contextlib.suppress(Exception):
                    s.close()
            self._stores.clear()
        self._local = threading.local()

    def ping(self) -> None:
        """Raise if the bank store cannot be read (readiness)."""
        self.store.list_banks()

    # ------------------------------------------------------------------ index lifecycle

    @property
    def loaded(self) -> bool:
        return self._index is not None

    def load(self) -> None:
        """Build the index from the store (start-up; or when another process asks for a
        reload), then follow the change journal from where the build started."""
        if self.index_dir is not None:
            # its existence tells tools outside the service (`tipline bank`) to journal changes
            self.index_dir.mkdir(parents=True, exist_ok=True)
        inode, offset = self._journal_stat()
        old_inode = self._old_inode()
        t0 = time.perf_counter()
        idx = self._build(self.store)
        with self._lock:
            self._index = idx
            self._offset = offset
            self._inode = inode
            self._old_at_load = old_inode
            self.last_check = time.time()
        self.load_seconds = time.perf_counter() - t0
        log.info(
            "match index loaded",
            extra={"entries": len(idx.matcher), "seconds": round(self.load_seconds, 3)},
        )
        self._start_watcher()

    @staticmethod
    def _build(store: BankStore) -> _Index:
        banks = {b.name: b for b in store.list_banks()}
        matcher = BankIndex.build(
            banks.values(), (e for e in store.iter_entries() if e.id), grows=True
        )
        return _Index(banks=banks, matcher=matcher, built_at=time.time())

    def _current(self) -> _Index:
        idx = self._index
        if idx is None:
            raise IndexNotLoadedError("the match index is not loaded yet")
        return idx

    # -- the change journal shared by the processes on one index directory

    def _journal(self) -> Path | None:
        return None if self.index_dir is None else self.index_dir / JOURNAL

    def _journal_size(self) -> int:
        return self._journal_stat()[1]

    def _old_inode(self) -> int:
        """Inode of the rotated journal (``changes.jsonl.old``); 0 when there is none."""
        path = self._journal()
        try:
            return path.with_name(path.name + ".old").stat().st_ino if path is not None else 0
        except OSError:
            return 0

    def _journal_stat(self) -> tuple[int, int]:
        """(inode, size) of the journal; (0, 0) when there is none."""
        path = self._journal()
        try:
            st = path.stat() if path is not None else None
        except OSError:
            return 0, 0
        return (st.st_ino, st.st_size) if st is not None else (0, 0)

    def _log(self, op: dict[str, Any]) -> None:
        """Append one change for the other processes (JSON, one line, under a file lock)."""
        path = self._journal()
        if path is None:
            return
        op["by"] = self._instance
        path.parent.mkdir(parents=True, exist_ok=True)
        _append_journal(path, op)

    def _start_watcher(self) -> None:
        if self.index_dir is None or self._watcher is not None:
            return
        self._watcher = threading.Thread(
            target=self._watch, name="tipline-index-journal", daemon=True
        )
        self._watcher.start()

    def _watch(self) -> None:
        while not self._stop.wait(max(self.refresh_seconds, 0.05)):
            try:
                self.catch_up()
            except Exception:
                log.exception("could not apply bank changes from other processes; reloading")
                with contextlib.suppress(Exception):
                    self.load()

    def catch_up(self) -> int:
        """Apply the changes other processes journalled since our last look; returns how
        many. Every operation is idempotent, so one seen twice does no harm."""
        path = self._journal()
        if path is None or self._index is None:
            return 0
        applied = self._catch_up(path)
        self.last_check = time.time()
        return applied

    def stale(self, limit: float) -> bool:
        """True when the index has not caught up with the other processes' changes for more
        than ``limit`` seconds (HMA's ``INDEX-STALE``); never without a journal to follow."""
        if self._index is None or self.index_dir is None or limit <= 0:
            return False
        return time.time() - self.last_check > max(limit, 3 * self.refresh_seconds)

    def _catch_up(self, path: Path) -> int:
        inode, size = self._journal_stat()
        applied = 0
        if inode == self._inode and size < self._offset:
            # shorter than what we read: a new file that got our old file's inode back (two
            # rotations since our last look); rebuild
            self.load()
            return 0
        if inode != self._inode:
            old_inode = self._old_inode()
            if self._inode == 0 and old_inode == self._old_at_load:
                self._inode = inode  # created since we loaded, never rotated: follow it
            elif self._inode != 0 and old_inode == self._inode:
                # rotated once since our last look: the rest of our file is in `.old` (final:
                # the writer renamed it under its lock; later lines go to the new file), so
                # read that rest, then follow the new file from its start. No rebuild.
                done = self._read_rotated(path.with_name(path.name + ".old"))
                if done is None:
                    self.load()
                    return 0
                applied += done
                self._old_at_load = self._inode
                self._inode, self._offset = inode, 0
            else:
                # rotated twice (or removed) since our last look: rebuild; the database
                # holds every change journalled before
                self.load()
                return 0
        if size <= self._offset:
            return applied
        with path.open("rb") as f:
            f.seek(self._offset)
            data = f.read(_READ_BYTES)
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next look
        n, reload = self._apply_lines(data[:end])
        self._offset += end
        if reload:
            self.load()
        return applied + n

    def _read_rotated(self, old: Path) -> int | None:
        """Apply the rest of our rotated journal from ``self._offset``; None when ``old`` is
        no longer our file (a second rotation in between: the caller rebuilds)."""
        try:
            f = old.open("rb")
        except OSError:
            return None
        applied = 0
        with f:
            if os.fstat(f.fileno()).st_ino != self._inode:
                return None
            f.seek(self._offset)
            while data := f.read(_READ_BYTES):
                end = data.rfind(b"\n") + 1
                if end == 0:  # one line longer than a read: take it whole
                    data += f.readline()
                    if not data.endswith(b"\n"):
                        break  # a torn last line (its writer died mid-write): nothing follows
                    end = len(data)
                else:
                    f.seek(end - len(data), 1)
                n, reload = self._apply_lines(data[:end])
                applied += n
                if reload:
                    return None
        return applied

    def _apply_lines(self, data: bytes) -> tuple[int, bool]:
        """Apply complete journal lines; returns (operations applied, a reload was asked)."""
        applied = 0
        reload = False
        for raw in data.splitlines():
            op = json.loads(raw)  # JSON only: the journal is data, never code
            if not isinstance(op, dict) or op.get("by") == self._instance:
                continue
            if op.get("op") == "reload":
                reload = True
                continue
            self._apply(op)
            applied += 1
        return applied, reload

    def _apply(self, op: dict[str, Any]) -> None:
        kind = op.get("op")
        if kind == "bank":
            self._apply_bank(Bank(**op["bank"]))
        elif kind == "delete_bank":
            self._apply_delete_bank(str(op["name"]))
        elif kind == "rename_bank":
            self._apply_rename(str(op["old"]), str(op["new"]))
        elif kind == "add":
            # columnar, without an Entry per row (a fetch journals thousands of rows a line)
            rows = op["entries"]
            with self._lock:
                if self._index is not None:
                    self._index.matcher.add_rows(rows)
        elif kind == "remove":
            self._apply_remove(str(op["bank"]), [int(i) for i in op["ids"]])
        elif kind == "enable":
            self._apply_enabled(
                str(op["bank"]),
                [int(i) for i in op["ids"]],
                bool(op["enabled"]),
                op.get("until"),
            )
        else:
            raise ValueError(f"unknown journal operation {str(kind)[:40]!r}")

    # ------------------------------------------------------------------ banks

    def list_banks(self) -> list[Bank]:
        return self.store.list_banks()

    def get_bank(self, name: str) -> Bank:
        return self.store.get_bank(name)

    def create_bank(self, bank: Bank) -> Bank:
        created = self.store.create_bank(bank)
        self._apply_bank(created)
        self._log({"op": "bank", "bank": _bank_fields(created)})
        return created

    def update_bank(self, bank: Bank) -> Bank:
        updated = self.store.update_bank(bank)
        self._apply_bank(updated)
        self._log({"op": "bank", "bank": _bank_fields(updated)})
        return updated

    def rename_bank(self, old: str, new: str) -> Bank:
        """A bank's new name; its entries and their ids go with it."""
        renamed = self.store.rename_bank(old, new)
        self._apply_rename(old, new)
        self._log({"op": "rename_bank", "old": old, "new": new})
        return renamed

    def _apply_rename(self, old: str, new: str) -> None:
        with self._lock:
            idx = self._index
            if idx is not None and old in idx.banks:
                bank = idx.banks.pop(old)
                bank.name = new
                idx.banks[new] = bank
                idx.matcher.rename_bank(old, new)

    def _apply_bank(self, bank: Bank) -> None:
        with self._lock:
            if self._index is not None:
                self._index.banks[bank.name] = bank
                self._index.matcher.put_bank(bank)

    def delete_bank(self, name: str) -> int:
        n = self.store.delete_bank(name)
        self._apply_delete_bank(name)
        self._log({"op": "delete_bank", "name": name})
        return n

    def _apply_delete_bank(self, name: str) -> None:
        with self._lock:
            idx = self._index
            if idx is not None:
                idx.banks.pop(name, None)
                idx.matcher.delete_bank(name)

    def count_entries(self, bank: str) -> int:
        return self.store.count_entries(bank)

    # ------------------------------------------------------------------ signal types

    def signal_type_ratios(self, max_age: float = 1.0) -> dict[str, float]:
        """Signal types' HMA ``enabled_ratio`` (a type not listed: 1.0), at most ``max_age``
        seconds old."""
        at, ratios = self._st_ratios
        if time.monotonic() - at > max_age:
            try:
                ratios = self.store.signal_type_ratios()
            except Exception as err:  # the database is away: lookups go on from memory
                log.warning("signal type settings not refreshed: %s", str(err)[:200])
            self._st_ratios = (time.monotonic(), ratios)
        return ratios

    def set_signal_type_ratio(self, name: str, ratio: float) -> None:
        self.store.set_signal_type_ratio(name, ratio)
        self._st_ratios = (0.0, {})

    def signal_type_stats(self) -> dict[str, tuple[int, float]]:
        return self.store.signal_type_stats()

    # ------------------------------------------------------------------ entries

    def add_entries(self, entries: Iterable[Entry], *, dedupe: bool = True) -> list[int]:
        """Store the entries and make them matchable before returning their ids. ``dedupe``
        (the default): a signal its bank already holds gives the existing id; otherwise each
        entry is a new one (HMA's content adds)."""
        batch = list(entries)
        ids = self.store.add_entries(batch, dedupe=dedupe)
        stored: list[Entry] = []
        for e, eid in zip(batch, ids, strict=True):
            st = signal_type(e.signal_type)
            stored.append(
                Entry(
                    bank=e.bank,
                    signal_type=st.name,
                    signal=st.normalise(e.signal),
                    label=e.label,
                    enabled=e.enabled,
                    id=eid,
                    disabled_until=e.disabled_until,
                )
            )
        self._apply_add(stored)
        if len(stored) > JOURNAL_MAX_ADDS:
            self._log({"op": "reload"})  # a bulk import: others rebuild instead
        else:
            self._log(
                {
                    "op": "add",
                    "entries": [
                        [
                            e.id,
                            e.bank,
                            e.signal_type,
                            e.signal,
                            e.label,
                            e.enabled,
                            e.disabled_until,
                        ]
                        for e in stored
                    ],
                }
            )
        return ids

    def _apply_add(self, entries: list[Entry]) -> None:
        with self._lock:
            idx = self._index
            if idx is not None:
                # an id already indexed: the bank already held this signal, or we saw this add
                idx.matcher.add(entries)

    def get_entry(self, entry_id: int) -> Entry:
        getter = getattr(self.store, "get_entry", None)
        if getter is not None:
            entry: Entry = getter(entry_id)
            return entry
        idx = self._index
        known = idx.matcher.bank_of(entry_id) if idx is not None else None
        banks = [known] if known is not None else [b.name for b in self.store.list_banks()]
        for bank in banks:
            for e in self.store.iter_entries(bank):
                if e.id == entry_id:
                    return e
        raise BankError(f"no bank entry with id {entry_id}")

    def remove_entries(self, bank: str, entry_ids: Iterable[int]) -> int:
        ids = [int(i) for i in entry_ids]
        n = self.store.remove_entries(bank, ids)
        self._apply_remove(bank, ids)
        self._log({"op": "remove", "bank": bank, "ids": ids})
        return n

    def _apply_remove(self, bank: str, ids: list[int]) -> None:
        with self._lock:
            idx = self._index
            if idx is not None:
                idx.matcher.remove(ids, bank=bank)

    def set_entries_enabled(self, bank: str, entry_ids: Iterable[int], enabled: bool) -> int:
        ids = [int(i) for i in entry_ids]
        n = self.store.set_entries_enabled(bank, ids, enabled)
        self._apply_enabled(bank, ids, enabled)
        self._log({"op": "enable", "bank": bank, "ids": ids, "enabled": enabled})
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
        """Change one entry's enabled state, ``disabled_until`` time (disabled until then,
        enabled again by itself) and/or note; the index follows at once."""
        entry = self.store.update_entry(
            bank, entry_id, enabled=enabled, disabled_until=disabled_until, note=note
        )
        if enabled is not None or disabled_until != "keep":
            ids = [int(entry_id)]
            self._apply_enabled(bank, ids, entry.enabled, entry.disabled_until)
            self._log(
                {
                    "op": "enable",
                    "bank": bank,
                    "ids": ids,
                    "enabled": entry.enabled,
                    "until": entry.disabled_until,
                }
            )
        return entry

    def _apply_enabled(
        self, bank: str, ids: list[int], enabled: bool, until: float | None = None
    ) -> None:
        with self._lock:
            idx = self._index
            if idx is not None:
                idx.matcher.set_enabled(ids, enabled, bank=bank, until=until)

    def iter_entries(self, bank: str) -> Iterator[Entry]:
        return self.store.iter_entries(bank)

    # ------------------------------------------------------------------ lookups

    def lookup(
        self,
        st_name: str,
        signal: str,
        banks: set[str] | None = None,
        labels: bool = True,
        *,
        coinflip: float | None = None,
        all_banks: bool = False,
        all_entries: bool = False,
    ) -> list[Hit]:
        """Enabled entries of enabled banks matching ``signal`` (PDQ within each bank's
        threshold), closest first. Raises InvalidSignalError for a malformed signal.
        ``labels=False`` leaves ``Hit.label`` empty (cheaper; HMA's answers carry none).
        ``coinflip``, ``all_banks``, ``all_entries``: see ``BankIndex.lookup``."""
        st = signal_type(st_name)
        value = st.normalise(signal)
        idx = self._current()
        with self._lock:
            return idx.matcher.lookup(
                st,
                value,
                banks,
                labels,
                coinflip=coinflip,
                all_banks=all_banks,
                all_entries=all_entries,
            )

    def pdq_near(self, values: Sequence[str], margin: int) -> bool:
        """Whether any of ``values`` (PDQ hex) lies within the largest threshold of any bank
        (enabled or not) plus ``margin`` of a PDQ entry: the fast-mode re-check's question."""
        idx = self._current()
        with self._lock:
            index = idx.matcher.type_index("pdq")
            radius = idx.matcher.radius(all_banks=True)
            if index is None or radius < 0 or not len(index):
                return False
            return bool(len(index.query(list(values), radius + margin).ids))

    def match_record(self, record: ItemRecord, banks: set[str] | None = None) -> list[Match]:
        """Matches for a hashed item (an upload): the same ``BankIndex.match`` as `tipline
        scan` (every signal type, dihedral PDQ when computed, vPDQ, cited model hashes, the
        ignore-bank rule)."""
        idx = self._current()
        with self._lock:
            return idx.matcher.match(record, banks)

    def status(self) -> dict[str, Any]:
        idx = self._index
        if idx is None:
            return {"loaded": False}
        with self._lock:
            counts = idx.matcher.by_signal_type()
            every = idx.matcher.by_signal_type(all_entries=True)
            pdq = idx.matcher.type_index("pdq")
            pdq_size = len(pdq) if pdq is not None else 0
        return {
            "loaded": True,
            "built_at": int(idx.built_at),
            "size": sum(counts.values()),
            "by_signal_type": counts,
            "all_by_signal_type": every,
            "pdq_index_size": pdq_size,
            "banks": len(idx.banks),
            "journal_offset": self._offset,
            "load_seconds": round(self.load_seconds, 3),
        }

    def index_size(self) -> int:
        idx = self._index
        return 0 if idx is None else idx.matcher.index_size()


class IndexNotLoadedError(BankError):
    """The index is still being built at start-up."""


def announce_reload(index_dir: Path) -> None:
    """Tell every process following ``index_dir``'s change journal to rebuild its index from
    the database: used by tools that change banks outside the service (``tipline bank``).
    Does nothing where no service has ever kept an index there."""
    if index_dir.is_dir():
        _append_journal(index_dir / JOURNAL, {"op": "reload", "by": "cli"})


def _append_journal(path: Path, op: dict[str, Any]) -> None:
    """One JSON line, appended under an exclusive lock (``tipline.index.journal.append``)."""
    journal.append(path, op, JOURNAL_ROTATE_BYTES)


def _bank_fields(b: Bank) -> dict[str, Any]:
    return {
        "name": b.name,
        "role": b.role,
        "pdq_threshold": b.pdq_threshold,
        "enabled": b.enabled,
        "description": b.description,
        "created_at": b.created_at,
        "enabled_ratio": b.enabled_ratio,
    }


__all__ = ["BankNotFoundError", "Hit", "IndexNotLoadedError", "MatchService"]
