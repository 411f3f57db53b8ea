"""``tipline scan --ray``: the same scan with its files spread over a Ray cluster.

The driver lists the files as the local scan does (``runner.plan_tasks``), cuts them into work
units (8-64 files, or fewer when together they pass ~256 MB) and keeps a bounded number of
units in flight with ``ray.wait``. Workers run the local scan's own per-file analysis
(``runner.process_batch``) and match with a ``BankIndex`` they rebuild from the banks'
columnar snapshot (``tipline.index.columns``), put in the object store once and cached per
worker process by its digest. Records come back to the driver, which writes them through the
same sink as a local scan, so ``-o``, ``--format``, ``--resume`` and exit codes are unchanged.

Failures: a unit whose worker dies is retried by Ray (``UNIT_RETRIES``); a unit that still
fails is re-run one file per task, and a file whose own task fails too gets the local scan's
``worker_crashed`` record. A driver killed mid-run resumes with ``--resume`` from the records
already written (each item exactly once, as locally).

Ray is imported only here, and this module only when ``--ray`` is given.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from tipline.record import ItemRecord
from tipline.scan import runner
from tipline.scan.hashing import HashOptions

if TYPE_CHECKING:
    from tipline.index.bank_index import BankIndex
    from tipline.index.columns import BankColumns

#: A work unit: at most this many files...
UNIT_MAX_FILES = 64
#: ...and at least this many, unless the scan is too small to keep every worker busy...
UNIT_MIN_FILES = 8
#: ...closed early once its files pass this many bytes.
UNIT_MAX_BYTES = 256 * 1024 * 1024
#: Ray re-runs a unit this many times when its worker dies.
UNIT_RETRIES = 2
#: Units in flight per worker CPU: enough to hide the driver's round trips.
INFLIGHT_PER_CPU = 2
#: Test hook (never set in production): a file whose path contains this text kills its
#: worker with SIGKILL; with TIPLINE_RAY_TEST_CRASH_ONCE=DIR only the first time (a marker
#: file in DIR), so its retry succeeds. This is how the tests kill a worker mid-task.
CRASH_HOOK_ENV = "TIPLINE_RAY_TEST_CRASH"
CRASH_ONCE_ENV = "TIPLINE_RAY_TEST_CRASH_ONCE"

Task = tuple[str, frozenset[str]]


@dataclass(slots=True)
class RayProgress:
    """What the driver reports as units finish (for the progress bar)."""

    files: int = 0
    bytes: int = 0
    workers: int = 0


def connect(address: str) -> dict[str, Any]:
    """``ray.init`` for ``--ray ADDRESS|auto|local``; returns the cluster's resources.

    ``local`` starts a private single-node Ray on 127.0.0.1 (no dashboard, no usage stats);
    ``auto`` joins the cluster ``ray start`` runs on this machine; anything else is an address.
    """
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not ray.is_initialized():
        if address == "local":
            ray.init(
                include_dashboard=False,
                _node_ip_address="127.0.0.1",
                logging_level=logging.ERROR,
                log_to_driver=False,
            )
        else:
            ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
    return dict(ray.cluster_resources())  # type: ignore[no-untyped-call]


def plan_units(
    tasks: Sequence[Task], workers: int, size_of: Callable[[str], int] | None = None
) -> list[list[Task]]:
    """Cut the file list into work units balanced by size (see the module docstring)."""
    size_of = size_of or _file_size
    if not tasks:
        return []
    # small scans: units small enough that every worker gets a few
    per_unit = max(1, min(UNIT_MAX_FILES, len(tasks) // max(1, workers * 4)))
    per_unit = max(per_unit, min(UNIT_MIN_FILES, len(tasks) // max(1, workers * 4) or 1))
    units: list[list[Task]] = []
    unit: list[Task] = []
    unit_bytes = 0
    for task in tasks:
        unit.append(task)
        unit_bytes += size_of(task[0])
        if len(unit) >= per_unit or unit_bytes >= UNIT_MAX_BYTES:
            units.append(unit)
            unit, unit_bytes = [], 0
    if unit:
        units.append(unit)
    return units


def _file_size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


# ---------------------------------------------------------------- worker side

#: per worker process: the index built from a bank snapshot, by digest
_INDEX_CACHE: dict[str, BankIndex | None] = {}


def _worker_matcher(digest: str | None, holder: list[Any]) -> BankIndex | None:
    if digest is None:
        return None
    if digest not in _INDEX_CACHE:
        import ray

        from tipline.index.columns import index_from_columns

        # the ref travels inside a list so Ray fetches the snapshot only on a cache miss
        _INDEX_CACHE.clear()
        _INDEX_CACHE[digest] = index_from_columns(ray.get(holder[0]))
    return _INDEX_CACHE[digest]


def _crash_hook(unit: Sequence[Task]) -> None:
    needle = os.environ.get(CRASH_HOOK_ENV)
    if not needle or not any(needle in path for path, _ in unit):
        return
    once = os.environ.get(CRASH_ONCE_ENV)
    if once:
        marker = os.path.join(once, "crashed-once")
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)


def scan_unit(
    options: HashOptions, digest: str | None, holder: list[Any], unit: list[Task]
) -> list[ItemRecord]:
    """One work unit on a worker: the local scan's analysis, matched with the cached index."""
    _crash_hook(unit)
    matcher = _worker_matcher(digest, holder)
    if matcher is not None and options.pdq_mode == "fast" and options.pdq_recheck is None:
        near = runner.pdq_recheck(matcher)
        if near is not None:
            options = replace(options, pdq_recheck=near)
    runner._OPTIONS, runner._MATCHER = options, matcher
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return runner.process_batch(unit)


# ---------------------------------------------------------------- driver side


def run_scan_ray(
    paths: Iterable[str],
    options: HashOptions,
    columns: BankColumns | None,
    sink: Callable[[list[ItemRecord]], None],
    *,
    follow_symlinks: bool = False,
    done: dict[str, set[str]] | None = None,
    on_total: Callable[[int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
    on_status: Callable[[RayProgress], None] | None = None,
) -> runner.ScanSummary:
    """``runner.run_scan`` on the Ray cluster ``connect`` joined (same records, same sink)."""
    import ray
    from ray.exceptions import RayError

    summary = runner.ScanSummary()
    start = time.perf_counter()
    tasks, early = runner.plan_tasks(paths, follow_symlinks, done or {})
    if on_total:
        on_total(len(tasks))
    status = RayProgress()

    def deliver(records: list[ItemRecord], unit: Sequence[Task]) -> None:
        for rec in records:
            summary.add(rec)
        if records:
            sink(records)
        if unit:
            status.files += len(unit)
            status.bytes += sum(_file_size(p) for p, _ in unit)
            if on_progress:
                on_progress(len(unit))
            if on_status:
                on_status(status)

    deliver(early, ())
    if not tasks:
        summary.seconds = time.perf_counter() - start
        return summary
    resources = ray.cluster_resources()  # type: ignore[no-untyped-call]
    cpus = max(1, int(resources.get("CPU", 1)))
    status.workers = cpus
    digest = columns.digest() if columns is not None else None
    holder = [ray.put(columns)] if columns is not None else [None]
    options_ref = ray.put(options)
    batch_fn = ray.remote(num_cpus=1, max_retries=UNIT_RETRIES)(scan_unit)
    single_fn = ray.remote(num_cpus=1, max_retries=1)(scan_unit)

    pending: deque[list[Task]] = deque(plan_units(tasks, cpus))
    inflight: dict[Any, list[Task]] = {}
    failed: list[Task] = []
    limit = cpus * INFLIGHT_PER_CPU
    while pending or inflight:
        while pending and len(inflight) < limit:
            unit = pending.popleft()
            inflight[batch_fn.remote(options_ref, digest, holder, unit)] = unit
        ready, _ = ray.wait(list(inflight), num_returns=1)
        for ref in ready:
            unit = inflight.pop(ref)
            try:
                records = ray.get(ref)
            except RayError:
                failed.extend(unit)  # retries spent: each file on its own below
                continue
            deliver(records, unit)

    # a unit that kept killing its workers: one file per task, so only the culprit is lost
    singles: dict[Any, Task] = {}
    queue: deque[Task] = deque(failed)
    while queue or singles:
        while queue and len(singles) < limit:
            task = queue.popleft()
            singles[single_fn.remote(options_ref, digest, holder, [task])] = task
        ready, _ = ray.wait(list(singles), num_returns=1)
        for ref in ready:
            task = singles.pop(ref)
            try:
                records = ray.get(ref)
            except RayError:
                records = [runner.crashed_record(task[0])]
            deliver(records, [task])
    summary.seconds = time.perf_counter() - start
    return summary
