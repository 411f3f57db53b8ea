"""The durable fetcher: each exchange is fetched as jobs on the queue (kind
``exchange_fetch``), one chain of jobs per exchange.

* A run reads deltas from the exchange type from the stored checkpoint and commits them in
  batches (``commit_every`` records or ``commit_seconds``, whole deltas only): the records
  land in the exchange's bank *in the same transaction* as the checkpoint after them, so a
  worker killed at any point (SIGKILL, power loss) leaves the last committed batch and its
  checkpoint; the next run resumes there. Records are keyed by the exchange's own key
  (``exchange_records``), so a record fetched twice is one bank entry: nothing lost, nothing
  doubled.
* Every commit is conditional on the status row's ``version`` being the one this run last
  wrote: a second fetcher of the same exchange (a CLI `exchange fetch` beside a worker)
  stops instead of interleaving.
* A run is time-boxed (``budget_seconds``, HMA's 4 minutes); it commits what it has and the
  next job of the chain goes on at once.
* A stale checkpoint (:meth:`ExchangeType.is_stale`) or none at all fetches from scratch, as a
  new *generation*; once that pass is complete, records of older generations it did not see
  again are tombstoned. Snapshot types (hash list files) do the same whenever their list
  changed. Tombstones disable the record's bank entry (its history and grades stay).
* The checkpoint time never goes backwards: a partner's (or our) clock that jumps back keeps
  the stored ``checkpoint_ts``, and is counted (``clock_went_back``).
* A failed run (the partner refused, 429/5xx, a too-large list) is recorded on the status
  (``last_fetch_succeeded`` false, ``last_error``; the credentials never appear in it), and
  the next run is scheduled with exponential backoff (honouring ``Retry-After``); the chain
  never dies.

* **Live indexes.** Right after each batch commits, its changes are appended to the
  bank-change journal of the configured index directory (``tipline.index.journal``, the file
  every serving process's ``MatchService`` follows): ``add`` for new entries, ``remove`` +
  ``add`` for entries whose record changed or came back (a re-enable), ``enable`` false for
  tombstones; all idempotent. A batch's transaction also sets ``journal_pending`` on the status
  row; the run clears it once all its lines are written. A writer that died (or failed to
  write) between a commit and its lines leaves the flag set, and the next run of the exchange
  (the job's retry after its lease, or the next link) journals ``reload`` first: every serving
  process rebuilds from the database, which holds the batch. So a crash delays those entries
  until the next run; it never loses them.

The chain: job ``exchange_fetch`` with payload ``{"exchange_id", "seq"}`` and dedupe key
``exchange-fetch:<id>:<seq>``; a run schedules ``seq + 1`` in its last transaction (now, if it
ran out of time; else after the exchange's interval or the backoff). A job whose ``seq`` is not
the status row's ``run_seq`` is obsolete and does nothing.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Connection, Engine, Table, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from tipline.errors import InvalidSignalError, TiplineError
from tipline.exchange.api import (
    MAX_PROBLEMS_KEPT,
    Checkpoint,
    ExchangeError,
    ExchangeFetchError,
    ExchangeRecord,
    ExchangeType,
    FetchContext,
    Problem,
    exchange_type,
)
from tipline.exchange.meta_json import encoded, json_str
from tipline.exchange.store import (
    JOURNAL_PENDING,
    fetch_settings,
    get_exchange,
    index_dir,
    open_credentials,
)
from tipline.index.journal import EntryRow, JournalWriter, add_op
from tipline.signals.types import SignalType
from tipline.signals.types import registered as signal_types
from tipline.store.jobs import JobContext, JobQueue, register_handler
from tipline.store.tables import (
    BankEntryRow,
    BankRow,
    ExchangeFetchStatusRow,
    ExchangeRecordRow,
    ExchangeRow,
    signal_key,
)

log = logging.getLogger("tipline.exchange")

JOB_KIND = "exchange_fetch"
DEFAULT_COMMIT_EVERY = 30_000
#: Records handed to the open transaction at a time (at most): a batch of ``commit_every``
#: is written chunk by chunk as it is fetched, so only a chunk is held in memory.
CHUNK_RECORDS = 5_000
DEFAULT_COMMIT_SECONDS = 60.0
DEFAULT_BUDGET_SECONDS = 240.0
BACKOFF_BASE = 30.0
BACKOFF_CAP = 6 * 3600.0
_CHUNK = 500
#: SQLite page cache (KiB) and WAL checkpoint interval (pages) of a run's connection.
_SQLITE_CACHE_KIB = 64 * 1024
_SQLITE_WAL_PAGES = 16_384
#: Ids per journalled ``remove`` / ``enable`` line.
_JOURNAL_IDS = 20_000

_R = ExchangeRecordRow
_E = BankEntryRow
_S = ExchangeFetchStatusRow


class ConcurrentFetchError(ExchangeError):
    """Another fetcher committed to this exchange meanwhile: this run stopped."""


@dataclass(slots=True)
class FetchOptions:
    #: records per transaction (with their checkpoint); written to it in chunks of
    #: :data:`CHUNK_RECORDS` (or fewer) as they arrive
    commit_every: int = DEFAULT_COMMIT_EVERY
    commit_seconds: float = DEFAULT_COMMIT_SECONDS
    budget_seconds: float = DEFAULT_BUDGET_SECONDS
    #: wall clock (epoch seconds) for the status times; monotonic time bounds the run
    clock: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic
    #: the index directory whose change journal gets each batch (default: the one
    #: ``tipline.exchange.store.configure`` set; None there: no journal)
    index_dir: Path | None = None
    #: commit each batch in a second thread while the next one is fetched (see _Run._submit)
    overlap: bool = True


@dataclass(slots=True)
class FetchOutcome:
    """What one run did."""

    name: str
    succeeded: bool = True
    up_to_date: bool = False
    #: stopped by the time box with more to fetch
    more: bool = False
    batches: int = 0
    added: int = 0
    changed: int = 0
    tombstoned: int = 0
    skipped: int = 0
    #: journal lines written for the serving processes' live indexes
    journalled: int = 0
    error: str | None = None
    retry_after: float | None = None
    counts: dict[str, int] = field(default_factory=dict)


_encode_str = json_str


def _encoded(rec: ExchangeRecord) -> tuple[str, str]:
    """(digest, the partner metadata as JSON): the metadata is encoded once, for both (or not
    at all: an :class:`EncodedMeta` brings its text). The digest is SHA-256 of
    ``json.dumps([type, signal, label, meta], sort_keys=True)``, built from the parts (the
    encoder's default separators make it the same text)."""
    meta = encoded(rec.meta) if rec.meta else "{}"
    doc = (
        f"[{_encode_str(rec.signal_type)}, {_encode_str(rec.signal)}, "
        f"{_encode_str(rec.label)}, {meta}]"
    )
    return hashlib.sha256(doc.encode()).hexdigest(), meta


def _digest(rec: ExchangeRecord) -> str:
    return _encoded(rec)[0]


def _chunks(items: list[Any], n: int = _CHUNK) -> Iterable[list[Any]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _check_record(
    rec: ExchangeRecord, key: str, types: Mapping[str, SignalType] | None = None
) -> ExchangeRecord | Problem:
    """The record with a canonical signal, or why it is skipped. ``types``: the signal type
    registry as a batch read it once (default: read now)."""
    if types is None:
        types = signal_types()
    st = types.get(rec.signal_type) or types.get(rec.signal_type.strip().lower())
    if st is None:
        return Problem("unknown_signal_type", f"record {key[:120]}", f"{rec.signal_type[:40]!r}")
    try:
        signal = st.normalise(rec.signal)
    except InvalidSignalError as err:
        return Problem("invalid", f"record {key[:120]}", str(err))
    if signal == rec.signal and st.name == rec.signal_type:
        return rec
    return ExchangeRecord(st.name, signal, rec.label, rec.meta)


_ENTRY_COLUMNS = (
    "bank_id, signal_type, signal, label, source, note, added_at, enabled, tags, "
    "disabled_until, meta, signal_key"
)
_RECORD_COLUMNS = "exchange_id, key, entry_id, generation, deleted, digest, updated_at"
_SQLITE_SEQUENCE = "SELECT seq FROM sqlite_sequence WHERE name = 'bank_entries'"


def _pg_next_ids(conn: Connection, n: int) -> list[int]:
    """``n`` new bank entry ids from the table's own sequence (what a default would use)."""
    return [
        int(i)
        for i in conn.exec_driver_sql(
            "SELECT nextval(pg_get_serial_sequence('bank_entries', 'id')) "
            "FROM generate_series(1, %(n)s)",
            {"n": n},
        ).scalars()
    ]


def _pg_copy(conn: Connection, table: str, columns: str, rows: Iterable[tuple[Any, ...]]) -> None:
    """``COPY table (columns) FROM STDIN`` on the transaction's own psycopg connection."""
    raw = conn.connection.driver_connection
    if raw is None:
        raise ExchangeError("the database connection is closed")
    with raw.cursor() as cur, cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


#: Collector thresholds during a fetch run: a batch is tens of thousands of young objects
#: that all survive until its commit, which the default (700, 10, 10) walks again and again.
_RUN_GC_THRESHOLD = (100_000, 50, 100)
_gc_lock = threading.Lock()
_gc_depth = 0
_gc_saved: tuple[tuple[int, int, int], bool] | None = None


@contextmanager
def _collector_relaxed() -> Iterator[None]:
    """For a run's duration: what is alive when it starts (modules, the ORM's registries)
    moved out of the cyclic collector's sight (``gc.freeze``) and its thresholds raised;
    both restored afterwards, even on an error (nested or concurrent runs: by the last one
    out). A process that froze its objects itself (``tipline serve`` after loading its
    index) keeps them frozen: the run only raises the thresholds there."""
    global _gc_depth, _gc_saved
    with _gc_lock:
        if _gc_depth == 0:
            froze = gc.get_freeze_count() == 0
            _gc_saved = (gc.get_threshold(), froze)
            if froze:
                gc.freeze()
            gc.set_threshold(*_RUN_GC_THRESHOLD)
        _gc_depth += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_depth -= 1
            if _gc_depth == 0 and _gc_saved is not None:
                threshold, froze = _gc_saved
                _gc_saved = None
                gc.set_threshold(*threshold)
                if froze:
                    gc.unfreeze()


@dataclass(slots=True)
class _Txn:
    """A batch's open transaction: its session, the locked status row, what it did so far."""

    session: Session
    status: ExchangeFetchStatusRow
    added: int = 0
    changed: int = 0
    tomb: int = 0
    problems: list[Problem] = field(default_factory=list)


class _Run:
    """One fetch run of one exchange (see the module docstring)."""

    def __init__(self, factory: sessionmaker[Session], name: str, opts: FetchOptions) -> None:
        self.factory = factory
        self.opts = opts
        self.out = FetchOutcome(name)
        where = opts.index_dir if opts.index_dir is not None else index_dir()
        self.journal = JournalWriter(where, f"exchange:{name}") if where is not None else None
        #: a journal write failed in this run: the pending flag stays for the next run
        self.journal_failed = False
        self.journal_pending = False
        #: the current batch's journal operations (built in its transaction)
        self.ops: list[dict[str, Any]] = []
        self._pool: ThreadPoolExecutor | None = None
        self._inflight: Future[None] | None = None
        #: the run's batches share one connection (see :meth:`_batch_session`)
        self._conn: Connection | None = None
        #: the batch being written (chunk by chunk) and not yet committed
        self._txn: _Txn | None = None
        with factory() as s, s.begin():
            ex = get_exchange(s, name)
            self.ex_id, self.name, self.api = ex.id, ex.name, ex.api
            self.bank_id = ex.bank_id
            self.config = dict(ex.config or {})
            self.credentials = open_credentials(s, ex)
            st = self._status(s)
            self.checkpoint = Checkpoint.from_json(st.checkpoint)
            st.running_fetch_start_ts = opts.clock()
            st.version = (st.version or 0) + 1
            self.version = st.version
            stats = dict(st.stats or {})
            if stats.get(JOURNAL_PENDING):
                if self._replay():
                    stats.pop(JOURNAL_PENDING, None)
                    st.stats = stats
                else:
                    self.journal_failed = True  # keep the flag for a later run

    def _replay(self) -> bool:
        """An earlier run committed batches whose journal lines may be missing: tell every
        serving process to rebuild from the database (which holds them). True when done."""
        if self.journal is None:
            return False
        try:
            self.journal.reload()
        except OSError as err:
            log.warning("exchange %s: could not journal a reload: %s", self.name, err)
            return False
        log.info("exchange %s: journalled a reload for an earlier run's batches", self.name)
        return True

    def _status(self, s: Session) -> ExchangeFetchStatusRow:
        st = s.get(_S, self.ex_id, with_for_update=True)
        if st is None:
            st = _S(exchange_id=self.ex_id, stats={})
            s.add(st)
            s.flush()
        return st

    def run(self) -> FetchOutcome:
        typ = exchange_type(self.api)
        now = self.opts.clock()
        cp = self.checkpoint
        from_scratch = cp is None or typ.is_stale(cp, now)
        if cp is not None and from_scratch:
            log.info("exchange %s: checkpoint is stale, fetching from scratch", self.name)
        ctx = FetchContext(
            self.name, self.config, self.credentials, fetch_settings(), self.opts.clock
        )
        try:
            with _collector_relaxed():
                self._fetch(typ, ctx, None if from_scratch else cp, from_scratch)
        except BaseException:
            # the batch in flight lands (or fails) before the run's error is recorded
            self._drain(raise_error=False)
            raise
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
            if self._txn is not None:
                self._abort_txn()  # a batch whose last chunk never came (the run failed)
            self._release_connection()
        self._finish(None)
        return self.out

    def _fetch(
        self, typ: ExchangeType, ctx: FetchContext, cp: Checkpoint | None, from_scratch: bool
    ) -> None:
        start = self.opts.monotonic()
        last_commit = start
        chunk = max(1, min(self.opts.commit_every, CHUNK_RECORDS))
        pending: dict[str, ExchangeRecord | None] = {}
        problems: list[Problem] = []
        latest: Checkpoint | None = None
        new_generation = from_scratch
        #: records handed to the open transaction, and the checkpoint after them
        in_txn = 0
        open_cp: Checkpoint | None = None
        try:
            for delta in typ.fetch_iter(ctx, cp):
                if delta.new_snapshot and latest is not None:
                    # a new pass begins: what came before it belongs to the old one
                    self._submit(pending, problems, latest, new_generation, final=True)
                    pending, problems, new_generation = {}, [], False
                    in_txn, open_cp = 0, None
                new_generation = new_generation or delta.new_snapshot
                pending.update(delta.updates)
                problems.extend(delta.problems)
                latest = delta.checkpoint
                t = self.opts.monotonic()
                due = (
                    in_txn + len(pending) >= self.opts.commit_every
                    or t - last_commit >= self.opts.commit_seconds
                    or delta.checkpoint.up_to_date
                )
                out_of_time = t - start >= self.opts.budget_seconds
                if due or (out_of_time and (pending or problems or open_cp)):
                    self._submit(pending, problems, latest, new_generation, final=True)
                    pending, problems, new_generation = {}, [], False
                    in_txn, open_cp, last_commit = 0, None, t
                elif len(pending) >= chunk:
                    self._submit(pending, problems, latest, new_generation, final=False)
                    in_txn, open_cp = in_txn + len(pending), latest
                    pending, problems, new_generation = {}, [], False
                if delta.checkpoint.up_to_date:
                    self.out.up_to_date = True
                    break
                if out_of_time:
                    self.out.more = True
                    break
            else:
                if latest is not None and (pending or problems or new_generation or open_cp):
                    self._submit(pending, problems, latest, new_generation, final=True)
        except Exception:
            # the partner failed mid-batch: what the open transaction holds lands with the
            # checkpoint after it (unless writing it failed: then it is rolled back); the
            # error is the run's, recorded after
            self._drain(raise_error=False)
            if open_cp is not None and self._txn is not None:
                self._commit({}, [], open_cp, False, True)
            raise
        self._drain()

    def _submit(
        self,
        updates: dict[str, ExchangeRecord | None],
        problems: list[Problem],
        checkpoint: Checkpoint,
        new_generation: bool,
        *,
        final: bool = True,
    ) -> None:
        """Hand a chunk to the open transaction (begun by the first chunk); ``final``: then
        commit it with ``checkpoint``. With ``overlap``, in the committer thread: the
        database's work (no GIL held in SQLite's or libpq's calls) overlaps the next
        chunk's fetch and parse. One chunk in flight at most, written in order, so a kill
        still leaves a prefix of the batches with its checkpoint."""
        if not self.opts.overlap:
            self._commit(updates, problems, checkpoint, new_generation, final)
            return
        self._drain()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"fetch-{self.name[:20]}")
        self._inflight = self._pool.submit(
            self._commit, updates, problems, checkpoint, new_generation, final
        )

    def _drain(self, *, raise_error: bool = True) -> None:
        """Wait for the batch in flight; its error is raised here (unless ``raise_error``)."""
        inflight, self._inflight = self._inflight, None
        if inflight is None:
            return
        try:
            inflight.result()
        except BaseException:
            if raise_error:
                raise
            log.warning("exchange %s: a batch failed as the run stopped", self.name, exc_info=True)

    # -- one batch, one transaction ------------------------------------------------------

    def _batch_session(self) -> Session:
        """A session for one batch, on the connection every batch of the run uses (held
        from the first batch to the run's end). On SQLite that connection gets a page cache
        of :data:`_SQLITE_CACHE_KIB` (the random-order signal index's pages stay in it from
        batch to batch) and a WAL checkpoint every :data:`_SQLITE_WAL_PAGES` pages rather
        than 1,000; both set back when the run ends. Durability is unchanged: each batch
        commits (``synchronous`` as configured) with its checkpoint."""
        bind = self.factory.kw.get("bind")
        if not isinstance(bind, Engine):
            return self.factory()
        if self._conn is None or self._conn.invalidated or self._conn.closed:
            conn = bind.connect()
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql(f"PRAGMA cache_size = -{_SQLITE_CACHE_KIB}")
                conn.exec_driver_sql(f"PRAGMA wal_autocheckpoint = {_SQLITE_WAL_PAGES}")
                conn.commit()
            self._conn = conn
        return self.factory(bind=self._conn)

    def _release_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if not conn.invalidated and conn.dialect.name == "sqlite":
                conn.rollback()
                # the pool keeps the connection: give back the cache's memory
                conn.exec_driver_sql("PRAGMA cache_size = -2000")
                conn.exec_driver_sql("PRAGMA wal_autocheckpoint = 1000")
                conn.commit()
        except Exception:
            log.warning("exchange %s: could not reset the fetch connection", self.name)
            conn.invalidate()
        finally:
            conn.close()

    def _commit(
        self,
        updates: dict[str, ExchangeRecord | None],
        problems: list[Problem],
        checkpoint: Checkpoint,
        new_generation: bool,
        final: bool = True,
    ) -> None:
        """Write a chunk in the open transaction (the first chunk begins it and checks the
        status row's version); ``final``: then commit it with ``checkpoint``. A batch is
        one transaction however many chunks it took; an error rolls it all back."""
        now = self.opts.clock()
        txn = self._txn
        if txn is None:
            s = self._batch_session()
            try:
                s.begin()
                st = self._status(s)
                if st.version != self.version:
                    raise ConcurrentFetchError(
                        f"exchange {self.name}: another fetch committed meanwhile; this one stopped"
                    )
            except BaseException:
                s.close()
                raise
            txn = self._txn = _Txn(s, st)
            self.ops = []
        s, st = txn.session, txn.status
        try:
            if new_generation:
                st.generation = (st.generation or 0) + 1
                st.snapshot_open = True
            gen = st.generation or 0
            checked: dict[str, ExchangeRecord | None] = {}
            types = signal_types()
            for key, rec in updates.items():
                if rec is None:
                    checked[key] = None
                    continue
                ok = _check_record(rec, key, types)
                if isinstance(ok, Problem):
                    problems.append(ok)
                else:
                    checked[key] = ok
            txn.problems.extend(problems)
            added, changed, tomb = self._apply(s, checked, gen, now)
            txn.added += added
            txn.changed += changed
            txn.tomb += tomb
            if not final:
                return
            self._txn = None
            self._finish_batch(s, txn, checkpoint, gen, now)
            s.commit()
        except BaseException:
            self._abort_txn(txn)
            raise
        finally:
            if self._txn is None:
                s.close()
        self._journal_batch()
        problems = txn.problems
        self.out.batches += 1
        self.out.added += txn.added
        self.out.changed += txn.changed
        self.out.tombstoned += txn.tomb
        self.out.skipped += len(problems)
        for p in problems:
            self.out.counts[p.kind] = self.out.counts.get(p.kind, 0) + 1

    def _finish_batch(
        self, s: Session, txn: _Txn, checkpoint: Checkpoint, gen: int, now: float
    ) -> None:
        """The batch's last writes before its commit: tombstones of a completed pass, the
        counts and problems, the checkpoint (never back in time), the version."""
        st = txn.status
        if checkpoint.up_to_date and st.snapshot_open:
            txn.tomb += self._tombstone_unseen(s, gen, now)
            st.snapshot_open = False
        stats: dict[str, Any] = dict(st.stats or {})
        kept = list(stats.get("problems") or [])
        if self.ops and self.journal is not None and self.journal.active:
            stats[JOURNAL_PENDING] = True
            self.journal_pending = True
        problems = txn.problems
        for p in problems:
            stats[p.kind] = int(stats.get(p.kind, 0)) + 1
        kept = (kept + [p.to_json() for p in problems])[-MAX_PROBLEMS_KEPT:]
        stats["problems"] = kept
        stats["tombstoned"] = int(stats.get("tombstoned", 0)) + txn.tomb
        ts = checkpoint.progress_ts
        if ts is not None and st.checkpoint_ts is not None and ts < st.checkpoint_ts:
            stats["clock_went_back"] = int(stats.get("clock_went_back", 0)) + 1
            log.warning(
                "exchange %s: checkpoint time went back (%s < %s); keeping the later one",
                self.name,
                ts,
                st.checkpoint_ts,
            )
            ts = st.checkpoint_ts
        st.checkpoint = checkpoint.to_json()
        st.checkpoint_ts = ts if ts is not None else st.checkpoint_ts
        st.up_to_date = checkpoint.up_to_date
        st.fetched_items = max(0, int(st.fetched_items or 0) + txn.added - txn.tomb)
        st.stats = stats
        st.version = self.version = st.version + 1

    def _abort_txn(self, txn: _Txn | None = None) -> None:
        """Roll the open transaction back (its chunks and journal operations are dropped)."""
        txn = txn or self._txn
        self._txn = None
        self.ops = []
        if txn is None:
            return
        try:
            txn.session.rollback()
        finally:
            txn.session.close()

    def _journal_batch(self) -> None:
        """Append the committed batch's operations to the change journal (after the commit:
        a line never names an entry the database does not hold)."""
        ops, self.ops = self.ops, []
        if not ops or self.journal is None:
            return
        try:
            self.out.journalled += self.journal.write(ops)
        except OSError as err:
            self.journal_failed = True
            log.warning(
                "exchange %s: batch committed but not journalled (%s); the next run "
                "journals a reload",
                self.name,
                err,
            )

    def _journal_ops(
        self,
        s: Session,
        added: list[tuple[int, dict[str, Any]]],
        replaced: list[int],
        disabled: list[int],
    ) -> None:
        """This batch's journal operations: its bank, ``remove`` for entries written again
        (a changed or revived record: the ``add`` after it carries the new state), ``add``,
        then ``enable`` false for tombstones. Each is idempotent."""
        if self.journal is None or not (added or disabled):
            return
        row = s.get(BankRow, self.bank_id)
        if row is None:
            return
        bank = row.name
        # the bank first: `tipline exchange add` creates it outside the service (idempotent)
        self.ops.append(
            {
                "op": "bank",
                "bank": {
                    "name": row.name,
                    "role": row.role,
                    "pdq_threshold": row.pdq_threshold,
                    "enabled": row.enabled,
                    "description": row.description,
                    "created_at": row.created_at,
                    "enabled_ratio": row.enabled_ratio,
                },
            }
        )
        for chunk in _chunks(replaced, _JOURNAL_IDS):
            self.ops.append({"op": "remove", "bank": bank, "ids": chunk})
        if added:
            rows: list[EntryRow] = [
                (eid, bank, v["signal_type"], v["signal"], v["label"], True, None)
                for eid, v in added
            ]
            self.ops.append(add_op(rows))
        for chunk in _chunks(disabled, _JOURNAL_IDS):
            self.ops.append(
                {"op": "enable", "bank": bank, "ids": chunk, "enabled": False, "until": None}
            )

    def _apply(
        self, s: Session, updates: dict[str, ExchangeRecord | None], gen: int, now: float
    ) -> tuple[int, int, int]:
        """Land ``updates`` in the bank; returns (added or revived, changed, tombstoned)."""
        existing = self._existing(s, list(updates))
        new: list[tuple[str, ExchangeRecord, str, str]] = []
        touch: list[int] = []
        gone_records: list[int] = []
        gone_entries: list[int] = []
        journal_add: list[tuple[int, dict[str, Any]]] = []
        replaced: list[int] = []
        added = changed = 0
        for key, rec in updates.items():
            old = existing.get(key)
            if rec is None:
                if old is not None and not old.deleted:
                    gone_records.append(old.id)
                    if old.entry_id is not None:
                        gone_entries.append(old.entry_id)
                continue
            digest, meta = _encoded(rec)
            if old is None:
                new.append((key, rec, digest, meta))
            elif old.digest == digest and not old.deleted and old.entry_id is not None:
                touch.append(old.id)
            else:
                changed += 1
                added += 1 if old.deleted else 0
                values = self._entry_values(key, rec, now)
                entry_id = old.entry_id
                if entry_id is None:
                    entry_id = s.execute(insert(_E).values(**values).returning(_E.id)).scalar_one()
                else:
                    values.pop("added_at")
                    s.execute(update(_E).where(_E.id == entry_id).values(**values))
                    replaced.append(int(entry_id))
                journal_add.append((int(entry_id), values))
                s.execute(
                    update(_R)
                    .where(_R.id == old.id)
                    .values(
                        entry_id=entry_id,
                        digest=digest,
                        deleted=False,
                        generation=gen,
                        updated_at=now,
                    )
                )
        if new:
            ids = self._insert_new(s, new, gen, now)
            added += len(new)
            journal_add.extend(
                (eid, {"signal_type": r.signal_type, "signal": r.signal, "label": r.label})
                for eid, (_, r, _, _) in zip(ids, new, strict=True)
            )
        for chunk in _chunks(touch):
            s.execute(update(_R).where(_R.id.in_(chunk)).values(generation=gen))
        tomb = self._disable(s, gone_records, gone_entries, gen, now)
        self._journal_ops(s, journal_add, replaced, gone_entries)
        return added, changed, tomb

    def _existing(self, s: Session, keys: list[str]) -> dict[str, Any]:
        """The stored records among ``keys``: key -> row (id, key, entry_id, deleted,
        digest). Driver-level SQL, as :meth:`_insert_new` (on a big first fetch every key is
        looked up and none is found)."""
        conn = s.connection()
        cols = "id, key, entry_id, deleted, digest"
        out: dict[str, Any] = {}
        if conn.dialect.name == "postgresql":
            for row in conn.exec_driver_sql(
                f"SELECT {cols} FROM exchange_records WHERE exchange_id = %(ex)s "
                "AND key = ANY(%(keys)s)",
                {"ex": self.ex_id, "keys": keys},
            ):
                out[row.key] = row
            return out
        if conn.dialect.name == "sqlite":
            for chunk in _chunks(keys):
                marks = ", ".join("?" * len(chunk))
                for row in conn.exec_driver_sql(
                    f"SELECT {cols} FROM exchange_records WHERE exchange_id = ? "
                    f"AND key IN ({marks})",
                    (self.ex_id, *chunk),
                ):
                    out[row.key] = row
            return out
        for chunk in _chunks(keys):
            for row in s.execute(
                select(_R.id, _R.key, _R.entry_id, _R.deleted, _R.digest).where(
                    _R.exchange_id == self.ex_id, _R.key.in_(chunk)
                )
            ):
                out[row.key] = row
        return out

    def _insert_new(
        self, s: Session, new: list[tuple[str, ExchangeRecord, str, str]], gen: int, now: float
    ) -> list[int]:
        """Insert the bank entries and exchange records of ``new`` (key, record, digest, meta
        JSON) in ``s``'s transaction; returns the entries' ids in order.

        The hot path of a big fetch, so below the ORM and SQLAlchemy's per-row parameter
        processing: the metadata goes in as the JSON text already made for the digest.
        SQLite: one ``executemany`` without RETURNING (which SQLite would run row by row to
        keep the order), the ids read back from ``sqlite_sequence`` in the same transaction
        (the write lock is ours, AUTOINCREMENT ids are consecutive). PostgreSQL: the ids
        drawn from the sequence in one query, then both tables by COPY."""
        conn = s.connection()
        name = _encode_str(self.name)
        head = f'{{"exchange": {{"name": {name}, "api": {_encode_str(self.api)}, "key": '
        source = f"exchange:{self.name}"
        metas = [
            f'{head}{_encode_str(key)}, "partner": {meta}}}}}'
            if rec.meta
            else f"{head}{_encode_str(key)}}}}}"
            for key, rec, _, meta in new
        ]
        dialect = conn.dialect.name
        if dialect == "sqlite":
            return self._sqlite_insert_new(conn, new, metas, source, gen, now)
        b = self.bank_id
        entries = [
            (
                b, rec.signal_type, rec.signal, rec.label, source, "", now, True, "", None, m,
                signal_key(rec.signal),
            )
            for (_, rec, _, _), m in zip(new, metas, strict=True)
        ]  # fmt: skip
        if dialect == "postgresql":
            ids = _pg_next_ids(conn, len(entries))
            _pg_copy(
                conn,
                "bank_entries",
                "id, " + _ENTRY_COLUMNS,
                ((eid, *row) for eid, row in zip(ids, entries, strict=True)),
            )
            _pg_copy(
                conn,
                "exchange_records",
                _RECORD_COLUMNS,
                (
                    (self.ex_id, k, eid, gen, False, d, now)
                    for (k, _, d, _), eid in zip(new, ids, strict=True)
                ),
            )
            return ids
        # any other database: SQLAlchemy Core (slower, same rows)
        table = cast(Table, _E.__table__)
        cols = _ENTRY_COLUMNS.split(", ")
        values = [dict(zip(cols, row, strict=True)) for row in entries]
        for v in values:
            v["meta"] = json.loads(str(v["meta"]))
        ids = [
            int(r[0])
            for r in conn.execute(
                insert(table).returning(table.c.id, sort_by_parameter_order=True), values
            )
        ]
        conn.execute(
            insert(cast(Table, _R.__table__)),
            [
                dict(
                    zip(
                        _RECORD_COLUMNS.split(", "),
                        (self.ex_id, k, eid, gen, False, d, now),
                        strict=True,
                    )
                )
                for (k, _, d, _), eid in zip(new, ids, strict=True)
            ],
        )
        return ids

    def _sqlite_insert_new(
        self,
        conn: Connection,
        new: list[tuple[str, ExchangeRecord, str, str]],
        metas: list[str],
        source: str,
        gen: int,
        now: float,
    ) -> list[int]:
        """SQLite: each table's rows in one ``INSERT ... SELECT`` over ``json_each`` of one
        JSON array (the columns that vary; the others bound once). One statement is one
        ``sqlite3_step``, which runs without the GIL: the database's work overlaps the next
        batch's parse instead of taking the GIL back row by row as ``executemany`` does. The
        ids: AUTOINCREMENT gives the n rows of one statement, in the order of the array
        (``ORDER BY key``), the n ids after the sequence's value, in a transaction that
        holds the write lock; checked (the sequence moved by exactly n), not assumed."""
        n = len(new)
        before = int(conn.exec_driver_sql(_SQLITE_SEQUENCE).scalar() or 0)
        conn.exec_driver_sql(
            f"INSERT INTO bank_entries ({_ENTRY_COLUMNS}) "
            "SELECT ?, value ->> 0, value ->> 1, value ->> 2, ?, '', ?, 1, '', NULL, "
            "value ->> 3, value ->> 4 FROM json_each(?) ORDER BY key",
            (
                self.bank_id,
                source,
                now,
                json.dumps(
                    [
                        [rec.signal_type, rec.signal, rec.label, m, signal_key(rec.signal)]
                        for (_, rec, _, _), m in zip(new, metas, strict=True)
                    ]
                ),
            ),
        )
        after = int(conn.exec_driver_sql(_SQLITE_SEQUENCE).scalar() or 0)
        if after - before != n:
            raise ExchangeError(
                f"bank entry ids are not consecutive ({before} + {n} != {after}); "
                "the batch was not committed"
            )
        conn.exec_driver_sql(
            f"INSERT INTO exchange_records ({_RECORD_COLUMNS}) "
            "SELECT ?, value ->> 0, ? + key, ?, 0, value ->> 1, ? FROM json_each(?) ORDER BY key",
            (self.ex_id, before + 1, gen, now, json.dumps([[k, d] for k, _, d, _ in new])),
        )
        return list(range(before + 1, after + 1))

    def _entry_values(self, key: str, rec: ExchangeRecord, now: float) -> dict[str, Any]:
        exchange: dict[str, Any] = {"name": self.name, "api": self.api, "key": key}
        if rec.meta:
            exchange["partner"] = dict(rec.meta)
        return {
            "bank_id": self.bank_id,
            "signal_type": rec.signal_type,
            "signal": rec.signal,
            "signal_key": signal_key(rec.signal),
            "label": rec.label,
            "source": f"exchange:{self.name}",
            "note": "",
            "added_at": now,
            "enabled": True,
            "tags": "",
            "disabled_until": None,
            "meta": {"exchange": exchange},
        }

    def _disable(
        self, s: Session, records: list[int], entries: list[int], gen: int, now: float
    ) -> int:
        for chunk in _chunks(entries):
            s.execute(update(_E).where(_E.id.in_(chunk)).values(enabled=False))
        for chunk in _chunks(records):
            s.execute(
                update(_R)
                .where(_R.id.in_(chunk))
                .values(deleted=True, generation=gen, updated_at=now)
            )
        return len(records)

    def _tombstone_unseen(self, s: Session, gen: int, now: float) -> int:
        rows = s.execute(
            select(_R.id, _R.entry_id).where(
                _R.exchange_id == self.ex_id, _R.generation < gen, _R.deleted.is_(False)
            )
        ).all()
        entries = [int(r.entry_id) for r in rows if r.entry_id is not None]
        self._journal_ops(s, [], [], entries)
        return self._disable(s, [r.id for r in rows], entries, gen, now)

    def _finish(self, error: BaseException | None) -> None:
        now = self.opts.clock()
        with self.factory() as s, s.begin():
            st = self._status(s)
            st.running_fetch_start_ts = None
            if self.journal_pending and not self.journal_failed:
                stats = dict(st.stats or {})
                stats.pop(JOURNAL_PENDING, None)
                st.stats = stats
            if error is None:
                st.last_fetch_complete_ts = max(now, st.last_fetch_complete_ts or 0.0)
                st.last_fetch_succeeded = True
                st.consecutive_failures = 0
                st.last_error = None
            else:
                st.last_fetch_succeeded = False
                st.consecutive_failures = (st.consecutive_failures or 0) + 1
                st.last_error = _error_text(error)


def _error_text(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text[:1000]


def run_fetch(
    factory: sessionmaker[Session], name: str, options: FetchOptions | None = None
) -> FetchOutcome:
    """Fetch exchange ``name`` once (up to date, or until the time box); never raises for a
    partner's fault: the outcome (and the status row) says what went wrong."""
    opts = options or FetchOptions()
    run = _Run(factory, name, opts)
    try:
        return run.run()
    except ConcurrentFetchError as err:
        run.out.succeeded, run.out.error = False, str(err)
        return run.out
    except (TiplineError, OSError) as err:
        run.out.succeeded, run.out.error = False, _error_text(err)
        if isinstance(err, ExchangeFetchError):
            run.out.retry_after = err.retry_after
        log.warning("exchange %s: fetch failed: %s", name, run.out.error)
        run._finish(err)
        return run.out


# -- scheduling: the job chain ---------------------------------------------------------------


def _dedupe_key(exchange_id: int, seq: int) -> str:
    return f"exchange-fetch:{exchange_id}:{seq}"


def next_delay(ex_interval: int, outcome: FetchOutcome, failures: int) -> float:
    """Seconds until the next run: at once when the time box stopped a fetch with more to
    do; after the interval when it succeeded; else exponential backoff from
    :data:`BACKOFF_BASE` (at least the partner's ``Retry-After``), capped at the interval's
    larger of it and :data:`BACKOFF_CAP`."""
    if outcome.succeeded:
        return 0.0 if outcome.more else float(ex_interval)
    delay = min(BACKOFF_CAP, BACKOFF_BASE * 2.0 ** max(0, min(failures - 1, 20)))
    if outcome.retry_after is not None:
        delay = max(delay, outcome.retry_after)
    return delay


def schedule(
    queue: JobQueue, s: Session, ex: ExchangeRow, delay: float = 0.0, *, expect_seq: int | None
) -> int | None:
    """Enqueue the exchange's next fetch job in ``s``'s transaction (``run_seq`` + 1). With
    ``expect_seq``, only if the chain is still at that sequence number (else None)."""
    st = s.get(_S, ex.id, with_for_update=True)
    if st is None:
        return None
    if expect_seq is not None and st.run_seq != expect_seq:
        return None
    st.run_seq = (st.run_seq or 0) + 1
    run_after = queue.clock() + timedelta(seconds=max(0.0, delay))
    return queue.enqueue(
        JOB_KIND,
        {"exchange_id": ex.id, "seq": st.run_seq},
        dedupe_key=_dedupe_key(ex.id, st.run_seq),
        run_after=run_after,
        max_attempts=3,
        session=s,
    )


def start_chain(queue: JobQueue, s: Session, ex: ExchangeRow) -> int | None:
    """Start (or restart: the old chain's jobs become obsolete) the exchange's fetch jobs."""
    return schedule(queue, s, ex, 0.0, expect_seq=None)


def fetch_job(ctx: JobContext) -> None:
    """One link of an exchange's chain: fetch, then schedule the next link."""
    ex_id = int(ctx.payload.get("exchange_id", 0))
    seq = int(ctx.payload.get("seq", 0))
    with ctx.session_factory() as s:
        ex = s.get(ExchangeRow, ex_id)
        st = s.get(_S, ex_id)
        if ex is None or st is None or st.run_seq != seq:
            return  # removed, or an obsolete link of a restarted chain
        name, enabled = ex.name, ex.fetching_enabled
    outcome = run_fetch(ctx.session_factory, name) if enabled else FetchOutcome(name)
    with ctx.session_factory() as s, s.begin():
        ex = s.get(ExchangeRow, ex_id)
        st = s.get(_S, ex_id)
        if ex is None or st is None:
            return
        delay = next_delay(ex.interval_seconds, outcome, int(st.consecutive_failures or 0))
        schedule(ctx.queue, s, ex, delay, expect_seq=seq)


register_handler(JOB_KIND, fetch_job)


def utc_from_epoch(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


__all__ = [
    "JOB_KIND",
    "ConcurrentFetchError",
    "FetchOptions",
    "FetchOutcome",
    "fetch_job",
    "next_delay",
    "run_fetch",
    "schedule",
    "start_chain",
]
