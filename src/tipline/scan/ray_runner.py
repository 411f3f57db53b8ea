"""``tipline scan --ray``: the same scan with its files spread over a Ray cluster.

The driver lists the files as the local scan does (``runner.plan_tasks``), cuts them into work
units (8-64 files, or fewer when together they pass ~256 MB) and keeps a bounded number of
units in flight with ``ray.wait``. Workers run the local scan's own per-file analysis
(``runner.process_batch``) and match with a ``BankIndex`` they rebuild from the banks'
columnar snapshot (``tipline.index.columns``), put in the object store once and cached per
worker process by its digest. Records come back to the driver, which writes them through the
same sink as a local scan, so ``-o FILE``, ``--format``, ``--resume`` and exit codes are
unchanged.

With ``-o DIR`` (an existing directory) the results are sharded instead (``ShardDir``): the
driver writes ``manifest.jsonl`` (every planned file, with its size and mtime, cut into shards of
``shard_files`` files) before the first task, then each shard's records to
``part-NNNNN.jsonl.tmp``; a shard whose every file has come back is fsynced, renamed to
``part-NNNNN.jsonl`` and given a ``part-NNNNN.done`` marker (its record count and SHA-256).
``--resume`` re-runs only the shards without a valid marker (a half-written shard is thrown
away whole) and then checks the manifest against the records: every planned file exactly once.

Failures: a unit whose worker dies is retried by Ray (``UNIT_RETRIES``); a unit that still
fails is re-run one file per task, and a file whose own task fails too gets the local scan's
``worker_crashed`` record.

Ray is imported only here, and this module only when ``--ray`` is given.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tipline.record import ItemRecord
from tipline.scan import objectstore, output, runner
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
#: Files per shard of a sharded (``-o DIR``) run, by default.
SHARD_FILES = 1024
#: How often the driver re-reads the cluster's CPUs (workers alive) while it waits.
STATUS_SECONDS = 1.0
#: Test hook (never set in production): a file whose path contains this text kills its
#: worker with SIGKILL; with TIPLINE_RAY_TEST_CRASH_ONCE=DIR only the first time (a marker
#: file in DIR), so its retry succeeds. This is how the tests kill a worker mid-task. The
#: driver reads both from its own environment and hands them to the tasks.
CRASH_HOOK_ENV = "TIPLINE_RAY_TEST_CRASH"
CRASH_ONCE_ENV = "TIPLINE_RAY_TEST_CRASH_ONCE"

Task = tuple[str, frozenset[str]]
#: ``(needle, once-dir)`` of the crash test hook, or None
Hooks = tuple[str, str] | None


class ShardError(Exception):
    """A shard directory that cannot be used (not empty, another scan's, unreadable)."""


@dataclass(slots=True)
class RayProgress:
    """What the driver reports as units finish (for the progress bar)."""

    files: int = 0
    bytes: int = 0
    total_bytes: int = 0
    workers: int = 0


def connect(address: str, num_cpus: int | None = None) -> tuple[dict[str, Any], bool]:
    """``ray.init`` for ``--ray ADDRESS|auto|local``: the cluster's resources, and whether this
    call started Ray (the caller shuts it down then).

    ``local`` starts a private single-node Ray on 127.0.0.1 (no dashboard, no usage stats;
    ``num_cpus`` workers, default all cores); ``auto`` joins the cluster ``ray start`` runs on
    this machine; anything else is an address (``HOST:PORT`` or ``ray://HOST:PORT``). A Ray
    already initialised in this process is used as it is.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    started = False
    if not ray.is_initialized():
        if address == "local":
            ray.init(
                num_cpus=num_cpus,
                include_dashboard=False,
                _node_ip_address="127.0.0.1",
                logging_level=logging.ERROR,
                log_to_driver=False,
            )
        else:
            ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
        started = True
    return dict(ray.cluster_resources()), started  # type: ignore[no-untyped-call]


def _unit_files(n_tasks: int, workers: int) -> int:
    """Files per unit for a scan of ``n_tasks`` files: small scans get units small enough that
    every worker gets a few."""
    quarter = n_tasks // max(1, workers * 4)
    per_unit = max(1, min(UNIT_MAX_FILES, quarter))
    return max(per_unit, min(UNIT_MIN_FILES, quarter or 1))


def plan_units(
    tasks: Sequence[Task],
    workers: int,
    size_of: Callable[[str], int] | None = None,
    per_unit: int | None = None,
) -> list[list[Task]]:
    """Cut the file list into work units balanced by size (see the module docstring)."""
    size_of = size_of or _file_size
    if not tasks:
        return []
    per_unit = per_unit or _unit_files(len(tasks), workers)
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


def _crash_hook(unit: Sequence[Task], hooks: Hooks) -> None:
    if hooks is None:
        return
    needle, once = hooks
    if not needle or not any(needle in path for path, _ in unit):
        return
    if once:
        marker = os.path.join(once, "crashed-once")
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)


def scan_unit(
    options: HashOptions,
    digest: str | None,
    holder: list[Any],
    unit: list[Task],
    hooks: Hooks = None,
) -> list[ItemRecord]:
    """One work unit on a worker: the local scan's analysis, matched with the cached index."""
    _crash_hook(unit, hooks)
    matcher = _worker_matcher(digest, holder)
    if matcher is not None and options.pdq_mode == "fast" and options.pdq_recheck is None:
        near = runner.pdq_recheck(matcher)
        if near is not None:
            options = replace(options, pdq_recheck=near)
    runner._OPTIONS, runner._MATCHER = options, matcher
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return runner.process_batch(unit)


def _test_hooks() -> Hooks:
    needle = os.environ.get(CRASH_HOOK_ENV, "")
    return (needle, os.environ.get(CRASH_ONCE_ENV, "")) if needle else None


# ---------------------------------------------------------------- driver side


@dataclass(slots=True)
class _Unit:
    """The files of one task, the shard their records go to, and their bytes."""

    shard: int
    tasks: list[Task]
    nbytes: int


#: a planned file with its size in bytes
Sized = tuple[Task, int]


def _units(shards: Sequence[tuple[int, Sequence[Sized]]], workers: int) -> list[_Unit]:
    """Work units that never cross a shard, sized for the whole scan."""
    per_unit = _unit_files(sum(len(files) for _, files in shards), workers)
    units: list[_Unit] = []
    for shard, files in shards:
        sizes = {t[0]: n for t, n in files}
        for tasks in plan_units([t for t, _ in files], workers, sizes.__getitem__, per_unit):
            units.append(_Unit(shard, tasks, sum(sizes[p] for p, _ in tasks)))
    return units


def _dispatch(
    shards: Sequence[tuple[int, Sequence[Sized]]],
    options: HashOptions,
    columns: BankColumns | None,
    on_records: Callable[[int, list[ItemRecord]], None],
    on_shard_done: Callable[[int], None],
    on_progress: Callable[[int], None] | None,
    on_status: Callable[[RayProgress], None] | None,
) -> None:
    """Scan every file of ``shards`` on the cluster: records reach ``on_records`` with their
    shard; ``on_shard_done`` is called once every file of a shard has its records."""
    import ray
    from ray.exceptions import RayError

    status = RayProgress(total_bytes=sum(n for _, files in shards for _, n in files))
    remaining = {shard: len(files) for shard, files in shards}
    for shard, n in list(remaining.items()):
        if n == 0:
            del remaining[shard]
            on_shard_done(shard)
    if not remaining:
        return

    def alive_cpus() -> int:
        return int(ray.cluster_resources().get("CPU", 0))  # type: ignore[no-untyped-call]

    status.workers = alive_cpus()
    hooks = _test_hooks()
    digest = columns.digest() if columns is not None else None
    holder = [ray.put(columns)] if columns is not None else [None]
    options_ref = ray.put(options)
    batch_fn = ray.remote(num_cpus=1, max_retries=UNIT_RETRIES)(scan_unit)
    single_fn = ray.remote(num_cpus=1, max_retries=1)(scan_unit)

    def deliver(records: list[ItemRecord], unit: _Unit) -> None:
        if records:
            on_records(unit.shard, records)
        status.files += len(unit.tasks)
        status.bytes += unit.nbytes
        if on_progress:
            on_progress(len(unit.tasks))
        if on_status:
            on_status(status)
        remaining[unit.shard] -= len(unit.tasks)
        if remaining[unit.shard] == 0:
            del remaining[unit.shard]
            on_shard_done(unit.shard)

    def drain(
        queue: deque[_Unit],
        fn: Any,
        failed: Callable[[_Unit], None],
    ) -> None:
        inflight: dict[Any, _Unit] = {}
        checked = time.monotonic()
        while queue or inflight:
            limit = max(1, status.workers) * INFLIGHT_PER_CPU
            while queue and len(inflight) < limit:
                unit = queue.popleft()
                inflight[fn.remote(options_ref, digest, holder, unit.tasks, hooks)] = unit
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=STATUS_SECONDS)
            if time.monotonic() - checked >= STATUS_SECONDS:
                checked = time.monotonic()
                status.workers = alive_cpus()
                if on_status:
                    on_status(status)
            for ref in ready:
                unit = inflight.pop(ref)
                try:
                    records = ray.get(ref)
                except RayError:
                    failed(unit)
                    continue
                deliver(records, unit)

    retry_alone: deque[_Unit] = deque()

    def split(unit: _Unit) -> None:  # retries spent: each file on its own below
        for task in unit.tasks:
            retry_alone.append(_Unit(unit.shard, [task], _file_size(task[0])))

    def crashed(unit: _Unit) -> None:  # a file that kills its worker again
        deliver([runner.crashed_record(p) for p, _ in unit.tasks], unit)

    drain(deque(_units(shards, max(1, status.workers))), batch_fn, split)
    drain(retry_alone, single_fn, crashed)


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
    summary = runner.ScanSummary()
    start = time.perf_counter()
    lister = ClusterLister()
    tasks, early = runner.plan_tasks(paths, follow_symlinks, done or {}, lister)
    summary.listing_tasks = lister.tasks
    if on_total:
        on_total(len(tasks))

    def records_to_sink(_shard: int, records: list[ItemRecord]) -> None:
        for rec in records:
            summary.add(rec)
        sink(records)

    if early:
        records_to_sink(0, early)
    sized = [(t, _file_size(t[0])) for t in tasks]
    _dispatch(
        [(0, sized)], options, columns, records_to_sink, lambda _s: None, on_progress, on_status
    )
    summary.seconds = time.perf_counter() - start
    return summary


# ---------------------------------------------------------------- sharded output

MANIFEST = "manifest.jsonl"
MANIFEST_FORMAT = "tipline-scan-shards/1"


@dataclass(slots=True)
class Manifest:
    """A sharded run's plan: the scan's arguments, the listing errors, the files by shard."""

    paths: list[str]
    early: list[ItemRecord]
    #: per shard: (path, size, mtime) of each file
    shards: list[list[tuple[str, int, float]]]
    #: each shard also as ``part-NNNNN.parquet`` (``--format parquet``)
    parquet: bool = False
    #: objects' ETags as listed (object-storage inputs), by URI
    etags: dict[str, str] = field(default_factory=dict)

    @property
    def files(self) -> int:
        return sum(len(s) for s in self.shards)


@dataclass(slots=True)
class Verified:
    """What ``ShardDir.verify`` found: every record of the finished shards, and problems."""

    records: list[ItemRecord] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


class ShardDir:
    """A directory of ``part-NNNNN.jsonl`` shards (see the module docstring)."""

    def __init__(self, root: Path, parquet: bool = False) -> None:
        self.root = root
        #: each committed shard also as Parquet (the manifest's choice on a resume)
        self.parquet = parquet

    def part(self, shard: int) -> Path:
        return self.root / f"part-{shard:05d}.jsonl"

    def parquet_part(self, shard: int) -> Path:
        return self.root / f"part-{shard:05d}.parquet"

    def _tmp(self, shard: int) -> Path:
        return self.root / f"part-{shard:05d}.jsonl.tmp"

    def _marker(self, shard: int) -> Path:
        return self.root / f"part-{shard:05d}.done"

    # -- the manifest

    def has_manifest(self) -> bool:
        return (self.root / MANIFEST).exists()

    def create(self, manifest: Manifest) -> None:
        """Write the manifest (atomically) into an empty directory."""
        if any(self.root.iterdir()):
            raise ShardError(
                f"{self.root} is not empty: a sharded scan starts in an empty directory "
                "(or continues there with --resume)"
            )
        lines = [
            json.dumps(
                {
                    "format": MANIFEST_FORMAT,
                    "paths": manifest.paths,
                    "shards": len(manifest.shards),
                    "files": manifest.files,
                    "early": [r.to_json() for r in manifest.early],
                    "parquet": manifest.parquet,
                },
                ensure_ascii=False,
            )
        ]
        for i, files in enumerate(manifest.shards):
            row: dict[str, Any] = {"shard": i, "files": files}
            tags = {p: manifest.etags[p] for p, _, _ in files if p in manifest.etags}
            if tags:
                row["etags"] = tags
            lines.append(json.dumps(row, ensure_ascii=False))
        _write_atomic(self.root / MANIFEST, "".join(line + "\n" for line in lines))

    def load(self) -> Manifest:
        path = self.root / MANIFEST
        try:
            with open(path, encoding="utf-8") as f:
                head = json.loads(f.readline())
                if not isinstance(head, dict) or head.get("format") != MANIFEST_FORMAT:
                    raise ShardError(f"{path}: not a tipline shard manifest")
                shards: list[list[tuple[str, int, float]]] = []
                etags: dict[str, str] = {}
                for i, line in enumerate(f):
                    row = json.loads(line)
                    if row.get("shard") != i:
                        raise ShardError(f"{path}: shard {i} is missing or out of order")
                    shards.append([(str(p), int(n), float(m)) for p, n, m in row["files"]])
                    etags.update({str(k): str(v) for k, v in dict(row.get("etags", {})).items()})
        except FileNotFoundError:
            raise ShardError(f"{self.root} holds no {MANIFEST}: nothing to resume") from None
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ShardError(f"{path}: unreadable manifest ({err})") from None
        if len(shards) != head.get("shards"):
            raise ShardError(f"{path}: {len(shards)} shards listed, {head.get('shards')} planned")
        early = [ItemRecord.from_json(d) for d in head.get("early", [])]
        paths = [str(p) for p in head.get("paths", [])]
        parquet = bool(head.get("parquet", False))
        return Manifest(paths, early, shards, parquet=parquet, etags=etags)

    # -- shards

    def is_done(self, shard: int) -> bool:
        """A committed shard: its part file and a marker whose SHA-256 is the part's."""
        try:
            marker = json.loads(self._marker(shard).read_text(encoding="utf-8"))
            data = self.part(shard).read_bytes()
            table = self.parquet_part(shard).read_bytes() if self.parquet else b""
        except (OSError, ValueError):
            return False
        if not isinstance(marker, dict) or marker.get("sha256") != _sha256(data):
            return False
        return not self.parquet or marker.get("parquet_sha256") == _sha256(table)

    def start(self, shard: int) -> None:
        """Throw away whatever an interrupted run left of this shard."""
        parquet = self.parquet_part(shard)
        for p in (
            self._marker(shard),
            self.part(shard),
            self._tmp(shard),
            parquet,
            parquet.with_suffix(".parquet.tmp"),
        ):
            p.unlink(missing_ok=True)

    def append(self, shard: int, records: list[ItemRecord]) -> None:
        text = "".join(json.dumps(r.to_json(), ensure_ascii=False) + "\n" for r in records)
        with open(self._tmp(shard), "a", encoding="utf-8") as f:
            f.write(text)

    def commit(self, shard: int) -> None:
        """fsync the shard's records, rename them into place, then write its done marker."""
        tmp = self._tmp(shard)
        tmp.touch()
        with open(tmp, "rb") as f:
            data = f.read()
            os.fsync(f.fileno())
        marker: dict[str, Any] = {"records": data.count(b"\n"), "sha256": _sha256(data)}
        if self.parquet:  # the same records, typed columns (written before the marker)
            table = self.parquet_part(shard)
            table_tmp = table.with_suffix(".parquet.tmp")
            records = (ItemRecord.from_json(json.loads(line)) for line in data.splitlines())
            output.write_parquet(records, table_tmp)
            with open(table_tmp, "rb") as f:
                marker["parquet_sha256"] = _sha256(f.read())
                os.fsync(f.fileno())
            os.replace(table_tmp, table)
        os.replace(tmp, self.part(shard))
        _write_atomic(self._marker(shard), json.dumps(marker) + "\n")

    def iter_records(self, shard: int) -> Iterator[ItemRecord]:
        with open(self.part(shard), encoding="utf-8") as f:
            for line in f:
                yield ItemRecord.from_json(json.loads(line))

    def verify(self, manifest: Manifest) -> Verified:
        """Every planned file exactly once: its own record in its shard, no record twice, no
        record of a file the manifest does not list, every shard committed."""
        out = Verified()
        paths: Counter[str] = Counter()
        for shard, files in enumerate(manifest.shards):
            if not self.is_done(shard):
                out.problems.append(f"shard {shard} is not finished ({self.part(shard).name})")
                continue
            planned = {p for p, _, _ in files}
            if shard == 0:
                planned |= {r.path for r in manifest.early}
            own: Counter[str] = Counter()
            for rec in self.iter_records(shard):
                out.records.append(rec)
                paths[rec.path] += 1
                top = rec.container or rec.path
                if top not in planned:
                    out.problems.append(f"shard {shard}: {rec.path} is not one of its files")
                elif top == rec.path:
                    own[rec.path] += 1
            missing = [p for p in sorted(planned) if own[p] == 0]
            if missing:
                shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
                out.problems.append(f"shard {shard}: {len(missing)} files have no record: {shown}")
        doubled = [p for p, n in paths.items() if n > 1]
        if doubled:
            shown = ", ".join(sorted(doubled)[:5]) + (" ..." if len(doubled) > 5 else "")
            out.problems.append(f"{len(doubled)} records appear more than once: {shown}")
        return out


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------- listing on the cluster

#: sub-prefixes of a bucket listed at once as Ray tasks
LISTING_IN_FLIGHT = 16


def list_prefix(uri: str) -> dict[str, Any]:
    """A Ray task: the manifest lines of one sub-prefix (``objectstore.iter_objects``), as
    plain JSON values; ``error`` when it cannot be listed at all."""
    out: list[dict[str, Any]] = []
    try:
        for item in objectstore.iter_objects(uri):
            if isinstance(item, ItemRecord):
                out.append({"record": item.to_json()})
            else:
                out.append(
                    {"uri": item.uri, "size": item.size, "etag": item.etag, "mtime": item.mtime}
                )
    except objectstore.ObjectStoreError as err:
        return {"error": str(err)}
    return {"items": out}


class ClusterLister:
    """``runner.plan_tasks``'s lister for a Ray scan: an ``s3://`` prefix with sub-prefixes is
    listed one level down by the driver, each sub-prefix as its own task on the cluster (at
    most ``LISTING_IN_FLIGHT`` at once), the results merged in key order. A bucket of
    millions of objects under many prefixes is listed in parallel, not by one process."""

    def __init__(self) -> None:
        self.tasks = 0

    def __call__(self, uri: str) -> Iterator[objectstore.ObjectEntry | ItemRecord]:
        split = objectstore.split_listing(uri)
        if split is None:
            yield from objectstore.iter_objects(uri)
            return
        import ray

        direct, subs = split
        task = ray.remote(num_cpus=0, max_retries=UNIT_RETRIES)(list_prefix)
        items: list[objectstore.ObjectEntry | ItemRecord] = list(direct)
        pending: list[Any] = []
        queue = list(subs)
        while queue or pending:
            while queue and len(pending) < LISTING_IN_FLIGHT:
                pending.append(task.remote(queue.pop(0)))
                self.tasks += 1
            ready, pending = ray.wait(pending, num_returns=1)
            doc = ray.get(ready[0])
            if "error" in doc:
                raise objectstore.ObjectStoreError(str(doc["error"]))
            for row in doc["items"]:
                if "record" in row:
                    items.append(ItemRecord.from_json(row["record"]))
                    continue
                entry = objectstore.ObjectEntry(
                    str(row["uri"]), int(row["size"]), row.get("etag"), row.get("mtime")
                )
                objectstore.remember(entry)
                items.append(entry)
        items.sort(key=lambda x: x.path if isinstance(x, ItemRecord) else x.uri)
        yield from items


def plan_manifest(
    paths: Sequence[str],
    follow_symlinks: bool,
    shard_files: int = SHARD_FILES,
    lister: ClusterLister | None = None,
) -> Manifest:
    """List ``paths`` as the local scan does (object-storage prefixes through ``lister``,
    on the cluster) and cut the files into shards."""
    tasks, early = runner.plan_tasks(paths, follow_symlinks, {}, lister)
    rows: list[tuple[str, int, float]] = []
    etags: dict[str, str] = {}
    for path, _ in tasks:
        if objectstore.is_uri(path):  # the listing's size and ETag, no request per object
            entry = objectstore.listed_entry(path)
            rows.append((path, entry.size if entry else runner.task_size(path), 0.0))
            if entry is not None and entry.etag:
                etags[path] = entry.etag
            continue
        try:
            st = os.stat(path)
            rows.append((path, st.st_size, st.st_mtime))
        except OSError:
            rows.append((path, 0, 0.0))  # its scan says why
    step = max(1, shard_files)
    shards = [rows[i : i + step] for i in range(0, len(rows), step)] or [[]]
    return Manifest(list(paths), early, shards, etags=etags)


def run_scan_ray_shards(
    paths: Sequence[str],
    options: HashOptions,
    columns: BankColumns | None,
    root: Path,
    *,
    resume: bool = False,
    follow_symlinks: bool = False,
    shard_files: int = SHARD_FILES,
    parquet: bool = False,
    on_total: Callable[[int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
    on_status: Callable[[RayProgress], None] | None = None,
) -> tuple[runner.ScanSummary, list[str]]:
    """A sharded run into ``root`` (or its continuation with ``resume``): the summary of every
    record in the directory, and what ``ShardDir.verify`` found wrong (empty: every planned
    file exactly once). Raises ``ShardError`` for a directory it cannot use."""
    start = time.perf_counter()
    store = ShardDir(root, parquet=parquet)
    listing_tasks = 0
    if resume and store.has_manifest():
        manifest = store.load()
        store.parquet = manifest.parquet  # the run continues as it began
        if manifest.paths != list(paths):
            raise ShardError(
                f"{root} holds a scan of {' '.join(manifest.paths)[:200]}, not of these paths"
            )
    else:
        if store.has_manifest():
            raise ShardError(f"{root} holds a sharded scan: continue it with --resume")
        lister = ClusterLister()
        manifest = plan_manifest(paths, follow_symlinks, shard_files, lister)
        listing_tasks = lister.tasks
        manifest.parquet = parquet
        store.create(manifest)
    todo = [i for i in range(len(manifest.shards)) if not store.is_done(i)]
    for i in todo:
        store.start(i)
    if 0 in todo and manifest.early:
        store.append(0, manifest.early)
    work = [(i, [((p, frozenset[str]()), n) for p, n, _ in manifest.shards[i]]) for i in todo]
    if on_total:
        on_total(sum(len(files) for _, files in work))
    _dispatch(work, options, columns, store.append, store.commit, on_progress, on_status)
    found = store.verify(manifest)
    summary = runner.ScanSummary(listing_tasks=listing_tasks)
    for rec in found.records:
        summary.add(rec)
    summary.seconds = time.perf_counter() - start
    return summary, found.problems
