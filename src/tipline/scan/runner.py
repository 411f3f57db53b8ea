"""Run a scan: files fan out to a process pool, records come back, get matched and written.

Workers are forked after the bank matcher is built, so every worker shares the loaded banks
copy-on-write instead of loading them again. A worker that dies (a decoder crash on hostile
input) breaks the pool; the files it held are retried one at a time in a fresh pool, and a file
that kills its worker again gets an error record instead of stopping the scan.
"""

from __future__ import annotations

import os
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Protocol

from tipline.errors import BankError
from tipline.os_utils import cpu_count
from tipline.record import ItemRecord
from tipline.scan.hashing import HashOptions
from tipline.scan.items import scan_file
from tipline.scan.sources import iter_inputs

# The bank index and multiprocessing (jobs > 1) only where used: `tipline hash` needs neither.
if TYPE_CHECKING:
    import multiprocessing
    from concurrent.futures import Future

    from tipline.index.bank_index import BankIndex, BankLike, EntryLike
    from tipline.scan.objectstore import ObjectEntry

#: Files handed to a worker at a time: big enough to amortise IPC, small enough to balance.
BATCH = 8
#: A fast-mode PDQ hash within a bank threshold plus this many bits of a bank entry is
#: recomputed with the reference pipeline before matching. Fast mode lands within 16 bits of
#: the reference at quality >= 80 (bench/hashing.py), so no reference match is missed and no
#: match is reported on a fast hash alone.
RECHECK_MARGIN = 16


@dataclass(slots=True)
class ScanSummary:
    items: int = 0
    matched: int = 0
    errors: int = 0
    suppressed: int = 0
    by_bank: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    #: object-storage prefixes listed as Ray tasks (``tipline scan --ray``)
    listing_tasks: int = 0

    def add(self, rec: ItemRecord) -> None:
        self.items += 1
        alerts = rec.alert_matches
        if alerts:
            self.matched += 1
            for bank in {m.bank for m in alerts}:
                self.by_bank[bank] += 1
        elif any(m.suppressed_by is not None for m in rec.matches):
            self.suppressed += 1
        if rec.errors:
            self.errors += 1

    @property
    def exit_status(self) -> int:
        """2 if anything could not be scanned (results incomplete), else 1 on a match, else 0."""
        if self.errors:
            return 2
        return 1 if self.matched else 0


class _BankSource(Protocol):
    """What a scan reads banks from (``tipline.store.banks.SqlBankStore`` is one)."""

    def list_banks(self) -> Sequence[BankLike]: ...
    def iter_entries(
        self, bank: str | None = None, *, enabled_only: bool = False
    ) -> Iterable[EntryLike]: ...


@dataclass(frozen=True, slots=True)
class _ChosenBank:
    name: str
    role: str
    pdq_threshold: int
    enabled: bool = True


def bank_index_for_scan(store: _BankSource, names: Sequence[str] | None = None) -> BankIndex:
    """The index a scan matches with: the banks named (even a disabled one: naming it is
    asking for it), else every enabled bank; their enabled entries."""
    from tipline.index.bank_index import BankIndex

    chosen = chosen_banks(store, names)
    entries = (e for b in chosen for e in store.iter_entries(b.name, enabled_only=True))
    return BankIndex.build(chosen, entries)


def chosen_banks(store: _BankSource, names: Sequence[str] | None = None) -> list[BankLike]:
    """The banks a scan matches with (see ``bank_index_for_scan``)."""
    all_banks = {b.name: b for b in store.list_banks()}
    if names:
        missing = [n for n in names if n not in all_banks]
        if missing:
            raise BankError(f"no such bank: {', '.join(missing)} (see `tipline bank list`)")
        chosen: list[BankLike] = [
            _ChosenBank(all_banks[n].name, all_banks[n].role, all_banks[n].pdq_threshold)
            for n in names
        ]
    else:
        chosen = [b for b in all_banks.values() if b.enabled]
    return chosen


def is_uri(path: str) -> bool:
    """``objectstore.is_uri``, importing ``tipline.scan.objectstore`` (tempfile, datetime and
    the optional SDK probes: ~3 ms of every ``tipline hash``) only for a path that can be one."""
    if "://" not in path:
        return False
    from tipline.scan.objectstore import is_uri as object_uri

    return object_uri(path)


def iter_objects(uri: str) -> Iterable[ObjectEntry | ItemRecord]:
    from tipline.scan.objectstore import iter_objects as list_uri

    return list_uri(uri)


# Set in the parent before the pool forks; read by workers.
_OPTIONS: HashOptions | None = None
_MATCHER: BankIndex | None = None


def process_path(path: str, skip: frozenset[str]) -> list[ItemRecord]:
    assert _OPTIONS is not None
    out: list[ItemRecord] = []
    if is_uri(path):  # s3://, gs://, az:// objects (scan.objectstore)
        from tipline.scan.objectstore import scan_object

        scan_object(path, _OPTIONS, out.append, skip)
    else:
        scan_file(path, _OPTIONS, out.append, skip)
    if _MATCHER is not None:
        for rec in out:
            rec.matches = _MATCHER.match(rec)
    return out


def process_batch(batch: list[tuple[str, frozenset[str]]]) -> list[ItemRecord]:
    out: list[ItemRecord] = []
    for path, skip in batch:
        out.extend(process_path(path, skip))
    return out


def crashed_record(path: str) -> ItemRecord:
    return ItemRecord(
        path=path,
        errors=[
            "worker_crashed: the process decoding this file died (crafted input?); not scanned"
        ],
    )


def run_scan(
    paths: Iterable[str],
    options: HashOptions,
    matcher: BankIndex | None,
    sink: Callable[[list[ItemRecord]], None],
    *,
    jobs: int = 0,
    follow_symlinks: bool = False,
    done: dict[str, set[str]] | None = None,
    on_total: Callable[[int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> ScanSummary:
    """Scan ``paths``; ``sink`` receives each batch of finished records.

    ``done`` maps a top-level file to the record paths an interrupted run already wrote for it
    (``--resume``): finished files are skipped, half-finished archives skip their done members.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return _run_scan(
            paths, options, matcher, sink, jobs, follow_symlinks, done, on_total, on_progress
        )


def _run_scan(
    paths: Iterable[str],
    options: HashOptions,
    matcher: BankIndex | None,
    sink: Callable[[list[ItemRecord]], None],
    jobs: int,
    follow_symlinks: bool,
    done: dict[str, set[str]] | None,
    on_total: Callable[[int], None] | None,
    on_progress: Callable[[int], None] | None,
) -> ScanSummary:
    global _OPTIONS, _MATCHER
    if matcher is not None and options.pdq_mode == "fast" and options.pdq_recheck is None:
        near = pdq_recheck(matcher)
        if near is not None:
            options = replace(options, pdq_recheck=near)
    _OPTIONS, _MATCHER = options, matcher
    summary = ScanSummary()
    start = time.perf_counter()
    done = done or {}

    tasks, early = plan_tasks(paths, follow_symlinks, done)
    if on_total:
        on_total(len(tasks))

    def deliver(records: list[ItemRecord], files: int) -> None:
        for rec in records:
            summary.add(rec)
        if records:
            sink(records)
        if on_progress and files:
            on_progress(files)

    deliver(early, 0)
    jobs = jobs or cpu_count()
    if jobs == 1 or len(tasks) <= 1:
        for path, skip in tasks:
            deliver(process_path(path, skip), 1)
    else:
        _run_pool(tasks, jobs, deliver)
    summary.seconds = time.perf_counter() - start
    return summary


def plan_tasks(
    paths: Iterable[str],
    follow_symlinks: bool,
    done: dict[str, set[str]],
    list_objects: Callable[[str], Iterable[ObjectEntry | ItemRecord]] | None = None,
) -> tuple[list[tuple[str, frozenset[str]]], list[ItemRecord]]:
    """The files to scan, each with the record paths ``--resume`` skips in it, and the error
    records of inputs that could not be listed (a missing path).

    Object-storage URIs (``s3://bucket/prefix``...) are listed into their objects, whose URIs
    are the tasks (and the records' paths); a URI that cannot be listed at all raises
    ``objectstore.ObjectStoreError``. ``list_objects`` lists a URI instead of
    ``objectstore.iter_objects`` (a Ray scan lists big prefixes as cluster tasks)."""
    tasks: list[tuple[str, frozenset[str]]] = []
    early: list[ItemRecord] = []
    seen: set[str] = set()  # overlapping arguments (a folder and its subfolder) scan once
    for item in _iter_all_inputs(paths, follow_symlinks, list_objects or iter_objects):
        if isinstance(item, ItemRecord):
            if item.path not in done.get(item.path, ()):
                early.append(item)
            continue
        # a key may hold "..", "//": never normalised (it would merge two objects)
        key = item if is_uri(item) else os.path.abspath(item)
        if key in seen:
            continue
        seen.add(key)
        already = done.get(item)
        if already and item in already:
            continue  # its own record is written last, so the whole file is done
        tasks.append((item, frozenset(already or ())))
    return tasks, early


def task_size(path: str) -> int:
    """Bytes of a planned file or object (0 if unknown), for size-balanced work units: an
    object's from the driver's listing (no request), a file's from ``os.stat``."""
    if is_uri(path):
        from tipline.scan.objectstore import object_size

        return object_size(path)
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _iter_all_inputs(
    paths: Iterable[str],
    follow_symlinks: bool,
    list_objects: Callable[[str], Iterable[ObjectEntry | ItemRecord]],
) -> Iterator[str | ItemRecord]:
    """``iter_inputs`` for local paths, the object manifest for URIs, in argument order."""
    for p in paths:
        if is_uri(p):
            for entry in list_objects(p):
                yield entry if isinstance(entry, ItemRecord) else entry.uri
        else:
            yield from iter_inputs([p], follow_symlinks)


def pdq_recheck(
    matcher: BankIndex, margin: int = RECHECK_MARGIN
) -> Callable[[Sequence[str]], bool] | None:
    """The fast-mode re-check for a scan's matcher: whether any of an item's PDQ hashes lies
    within the largest bank threshold plus ``margin`` of a banked PDQ (None: no PDQ entries).

    It errs towards re-checking (every bank's entries at the largest threshold): a re-check
    costs one reference hash, never a wrong answer.
    """
    index = matcher.type_index("pdq")
    radius = matcher.radius()
    if index is None or radius < 0 or not len(index):
        return None
    reach = radius + margin

    def near(values: Sequence[str]) -> bool:
        return bool(len(index.query(list(values), reach).ids))

    return near


def _batches(
    tasks: list[tuple[str, frozenset[str]]], size: int
) -> Iterator[list[tuple[str, frozenset[str]]]]:
    for i in range(0, len(tasks), size):
        yield tasks[i : i + size]


def _run_pool(
    tasks: list[tuple[str, frozenset[str]]],
    jobs: int,
    deliver: Callable[[list[ItemRecord], int], None],
) -> None:
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    ctx = multiprocessing.get_context("fork")
    batch = max(1, min(BATCH, len(tasks) // (jobs * 4) or 1))
    pending: deque[list[tuple[str, frozenset[str]]]] = deque(_batches(tasks, batch))
    retry_alone: list[tuple[str, frozenset[str]]] = []
    while pending:
        pool = ProcessPoolExecutor(max_workers=jobs, mp_context=ctx)
        inflight: dict[Future[list[ItemRecord]], list[tuple[str, frozenset[str]]]] = {}
        broken = False
        try:
            while pending or inflight:
                while pending and len(inflight) < jobs * 3:
                    b = pending.popleft()
                    inflight[pool.submit(process_batch, b)] = b
                finished, _ = wait(inflight, return_when=FIRST_COMPLETED)
                for fut in finished:
                    b = inflight.pop(fut)
                    try:
                        deliver(fut.result(), len(b))
                    except BrokenProcessPool:
                        broken = True
                        retry_alone.extend(b)
                if broken:
                    for b in inflight.values():
                        retry_alone.extend(b)
                    inflight.clear()
                    break
        finally:
            pool.shutdown(wait=not broken, cancel_futures=True)
        if broken:
            _retry_one_by_one(retry_alone, ctx, deliver)
            retry_alone = []


def _retry_one_by_one(
    tasks: list[tuple[str, frozenset[str]]],
    ctx: multiprocessing.context.BaseContext,
    deliver: Callable[[list[ItemRecord], int], None],
) -> None:
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    for task in tasks:
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
            try:
                deliver(pool.submit(process_batch, [task]).result(), 1)
            except BrokenProcessPool:
                deliver([crashed_record(task[0])], 1)
