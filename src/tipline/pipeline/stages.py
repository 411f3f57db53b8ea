"""The report pipeline: ingest -> fetch -> analyse -> cluster -> triage, as durable jobs.

Each stage is a plain function ``stage(session, payload, config) -> [FollowUp, ...]`` that runs
inside ONE database transaction together with the enqueueing of its follow-up jobs (see
:func:`_handler`): either the stage's effect and its next jobs are committed, or neither is.

**Idempotency.** A job may run twice (its worker can die after the commit, before the job is
marked done). Every stage is written so a second run has no second effect:

* ``ingest`` only enqueues, with dedupe keys (``fetch:url:<report>:<n>``,
  ``fetch:upload:<upload>``, ``triage:report:<report>``);
* ``fetch`` of an upload is a pass-through; of a URL it first looks for the upload row an
  earlier run stored (``uploads.source_url``) before fetching;
* ``analyse`` upserts the item by SHA-256, links (report, item) only if absent and clears the
  upload's bytes last; a re-run finds the bytes gone and the item by ``uploads.sha256``;
* ``cluster`` does nothing for an item that already has a cluster;
* ``triage`` recomputes scores from stored facts (setting a value twice is one effect).

Documented in docs/pipeline.md.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from tipline.actions import webhooks
from tipline.config import Limits, MiB
from tipline.exchange import partners
from tipline.net.fetch import (
    BlockedAddressError,
    FetchError,
    FetchSettings,
    HTTPStatusError,
    InvalidURLError,
    TooLargeError,
    fetch,
)
from tipline.provenance.keywords import KeywordMatcher
from tipline.record import ItemRecord, Match
from tipline.scan.archives import expand, is_archive, sniff_bytes
from tipline.scan.hashing import HashOptions, digest_stream, hash_bytes
from tipline.scan.keywords import apply_keywords
from tipline.signals.pdq import MIN_USABLE_QUALITY
from tipline.store.banks import auto_confirm_banks
from tipline.store.base import conflict_insert
from tipline.store.jobs import JobContext, PermanentJobError, register_handler
from tipline.store.media import MediaStore
from tipline.store.tables import Cluster, Item, Report, ReportItem, Upload
from tipline.triage import cluster_index
from tipline.triage.priority import (
    ItemFacts,
    Score,
    TriageWeights,
    score_cluster,
    score_item,
    score_report,
)

log = logging.getLogger("tipline.pipeline")

STAGES = ("ingest", "fetch", "analyse", "cluster", "triage")
#: item statuses set by people; triage never overwrites them
_HUMAN_STATUSES = frozenset({"in_review", "confirmed", "dismissed"})
_CLUSTER_PDQ_THRESHOLD = 31


@dataclass(frozen=True, slots=True)
class FollowUp:
    kind: str
    payload: dict[str, Any]
    dedupe_key: str


MatchFn = Callable[[ItemRecord], list[Match]]


#: Archives uploaded with a report are opened in memory, their members stored as uploads:
#: tighter totals than ``tipline scan``, which streams.
SERVICE_ARCHIVE_LIMITS = Limits(max_archive_bytes=512 * MiB, max_archive_members=2_000)


@dataclass
class PipelineConfig:
    """What the stages need besides the database."""

    #: bank matching of a hashed item (the service's MatchService.match_record, or a
    #: BankIndex.build(...).match in tests)
    match: MatchFn
    #: where media bytes go (``put(data) -> ref | None``); None keeps no bytes (hash-only)
    media_store: MediaStore | None = None
    fetch_settings: FetchSettings = field(default_factory=FetchSettings)
    hash_options: HashOptions = field(default_factory=HashOptions)
    weights: TriageWeights = field(default_factory=TriageWeights)
    keywords: KeywordMatcher | None = None
    #: fetch direct media URLs named in reports (through the SSRF-safe fetcher)
    fetch_urls: bool = True
    cluster_threshold: int = _CLUSTER_PDQ_THRESHOLD
    #: limits for opening uploaded zip/tar archives (members become uploads of their own)
    archive_limits: Limits = SERVICE_ARCHIVE_LIMITS


_config: PipelineConfig | None = None
_builder: Callable[[], PipelineConfig] | None = None
_config_lock = threading.Lock()


def configure(config: PipelineConfig | None) -> None:
    """Set (or with None, reset) the configuration the job handlers use in this process."""
    global _config, _builder
    with _config_lock:
        _config = config
        _builder = None


def configure_lazily(builder: Callable[[], PipelineConfig]) -> None:
    """Have the first job build this process's configuration with ``builder`` (``tipline
    worker`` passes one over the settings it resolved, so a worker that never gets a job never
    opens the bank index)."""
    global _config, _builder
    with _config_lock:
        _config = None
        _builder = builder


def get_config() -> PipelineConfig:
    """The configuration :func:`configure` or :func:`configure_lazily` set in this process.

    There is no fallback: a process that runs pipeline jobs without being configured is a
    wiring bug, and the job is retried rather than run with settings nobody chose."""
    global _config
    with _config_lock:
        if _config is None and _builder is not None:
            _config = _builder()
        if _config is None:
            raise RuntimeError(
                "the pipeline is not configured in this process (tipline serve and tipline "
                "worker configure it from their settings)"
            )
        return _config


# -- helpers -------------------------------------------------------------------------------------


def _int(payload: dict[str, Any], key: str) -> int:
    value = payload.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise PermanentJobError(f"job payload needs an integer {key!r}, got {value!r}")
    return value


def _report(session: Session, report_id: int) -> Report:
    report = session.get(Report, report_id)
    if report is None:
        raise PermanentJobError(f"report {report_id} does not exist")
    return report


def _report_url(session: Session, report_id: int, n: int) -> tuple[str, int | None]:
    """The report's URL number ``n`` and the upload an earlier run already stored for it."""
    urls = _report(session, report_id).urls or []
    if not 0 <= n < len(urls):
        raise PermanentJobError(f"report {report_id} has no URL number {n}")
    url = str(urls[n])
    stored = session.scalar(
        select(Upload.id).where(Upload.report_id == report_id, Upload.source_url == url)
    )
    return url, stored


def _triage_item(item_id: int, report_id: int) -> FollowUp:
    return FollowUp(
        "triage",
        {"item_id": item_id, "report_id": report_id},
        f"triage:item:{item_id}:report:{report_id}",
    )


# -- stages --------------------------------------------------------------------------------------


def stage_ingest(session: Session, payload: dict[str, Any], cfg: PipelineConfig) -> list[FollowUp]:
    """Fan a report out: one fetch job per upload and per URL, and a report-level triage."""
    report_id = _int(payload, "report_id")
    report = _report(session, report_id)
    if report.status == "received":
        report.status = "processing"
    out: list[FollowUp] = []
    uploads = session.scalars(
        select(Upload.id).where(Upload.report_id == report_id).order_by(Upload.id)
    ).all()
    for upload_id in uploads:
        out.append(
            FollowUp(
                "fetch",
                {"report_id": report_id, "upload_id": upload_id},
                f"fetch:upload:{upload_id}",
            )
        )
    if cfg.fetch_urls:
        for n, url in enumerate(report.urls or []):
            if isinstance(url, str) and url:
                out.append(
                    FollowUp(
                        "fetch",
                        {"report_id": report_id, "url_index": n},
                        f"fetch:url:{report_id}:{n}",
                    )
                )
    out.append(FollowUp("triage", {"report_id": report_id}, f"triage:report:{report_id}"))
    return out


def fetch_url_bytes(url: str, cfg: PipelineConfig) -> tuple[bytes, str]:
    """Fetch a reported URL through the SSRF-safe fetcher; (bytes, final URL). Errors that
    retrying cannot fix are :class:`PermanentJobError`; network trouble is retried."""
    try:
        res = fetch(url, cfg.fetch_settings)
    except (BlockedAddressError, InvalidURLError, TooLargeError) as err:
        raise PermanentJobError(str(err)) from None
    except HTTPStatusError as err:
        if 400 <= err.status < 500 and err.status not in (408, 429):
            raise PermanentJobError(str(err)) from None
        raise
    except FetchError:
        raise
    if res.media_type.kind not in ("image", "video"):
        raise PermanentJobError(
            f"not_media: {url[:200]} is {res.media_type.mime} (declared "
            f"{res.declared_type[:60] or 'nothing'}), not an image or video; "
            "page URLs stay on the report for an analyst"
        )
    return res.content, res.url


def stage_fetch(
    session: Session,
    payload: dict[str, Any],
    cfg: PipelineConfig,
    fetched: tuple[bytes, str] | None = None,
) -> list[FollowUp]:
    """Get the bytes: an upload is already stored; a URL's bytes (fetched outside the
    transaction by the handler and passed as ``fetched``) become an upload row."""
    report_id = _int(payload, "report_id")
    if "upload_id" in payload:
        upload_id = _int(payload, "upload_id")
        if session.get(Upload, upload_id) is None:
            raise PermanentJobError(f"upload {upload_id} does not exist")
    else:
        url, existing = _report_url(session, report_id, _int(payload, "url_index"))
        if existing is not None:
            upload_id = existing
        else:
            if fetched is None:
                fetched = fetch_url_bytes(url, cfg)
            data, final = fetched
            import hashlib

            up = Upload(
                report_id=report_id,
                filename=final[:255],
                source_url=url,
                data=data,
                size=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
            )
            session.add(up)
            session.flush()
            upload_id = up.id
    return [
        FollowUp(
            "analyse",
            {"report_id": report_id, "upload_id": upload_id},
            f"analyse:upload:{upload_id}",
        )
    ]


def _upsert_item(session: Session, record: ItemRecord) -> Item:
    assert record.sha256 is not None
    session.execute(
        conflict_insert(session, Item)
        .values(sha256=record.sha256, media_type=record.media_type, size=record.size or 0)
        .on_conflict_do_nothing(index_elements=["sha256"])
    )
    item = session.scalar(select(Item).where(Item.sha256 == record.sha256))
    assert item is not None
    return item


def _keyword_hits(record: ItemRecord) -> list[str]:
    hits: list[str] = []
    for f in record.provenance or []:
        if f.signal == "keyword":
            cat = str(f.evidence.get("category") or "keyword")
            hits.extend([cat] * int(f.evidence.get("count") or 1))
    return hits


def analyse_bytes(data: bytes, name: str, cfg: PipelineConfig) -> ItemRecord:
    """Hash, read provenance and keywords, match against the banks: the analysis of an upload,
    shared with the crawler (which keeps only the record of media that matched nothing)."""
    options = cfg.hash_options
    if cfg.keywords is not None:
        from dataclasses import replace

        options = replace(options, keywords=cfg.keywords)
    record = hash_bytes(data, name, options)
    if cfg.keywords is not None:
        apply_keywords(record, cfg.keywords, include_text=False)
    record.matches = cfg.match(record)
    return record


def stage_analyse(session: Session, payload: dict[str, Any], cfg: PipelineConfig) -> list[FollowUp]:
    """Hash, read provenance, match against the banks; upsert the item by SHA-256 and link it
    to the report. The upload's bytes move to the media store (or are dropped: hash-only)."""
    report_id = _int(payload, "report_id")
    upload_id = _int(payload, "upload_id")
    up = session.get(Upload, upload_id)
    if up is None:
        raise PermanentJobError(f"upload {upload_id} does not exist")
    if up.data is None:
        # an earlier run finished the work (its bytes are gone): find its item
        item = session.scalar(select(Item).where(Item.sha256 == up.sha256))
        if item is None:
            raise PermanentJobError(f"upload {upload_id} has no bytes and no item")
        if item.status == "container":
            _link(session, report_id, item, up)
            return []
    elif "!" not in (up.filename or "") and is_archive(sniff_bytes(bytes(up.data[:64]))):
        return _expand_upload(session, up, report_id, cfg)
    else:
        data = bytes(up.data)
        record = analyse_bytes(data, up.filename or f"upload-{upload_id}", cfg)
        partners.annotate(session, record.matches)  # which partner's list matched, if any
        item = _upsert_item(session, record)
        item.md5, item.sha1 = record.md5, record.sha1
        item.pdq, item.pdq_quality = record.pdq, record.pdq_quality
        item.vpdq = record.vpdq
        item.media_type = record.media_type
        item.size = record.size or len(data)
        item.provenance = (
            [f.to_json() for f in record.provenance] if record.provenance is not None else None
        )
        item.ai_evidence = record.ai_evidence
        item.matches = [m.to_json() for m in record.matches]
        item.errors = list(record.errors)
        item.warnings = list(record.warnings) or None
        item.keyword_hits = _keyword_hits(record)
        if item.status in ("new", "hashed", "matched"):
            item.status = "matched" if record.alert_matches else "hashed"
        if item.media_ref is None and cfg.media_store is not None:
            item.media_ref = cfg.media_store.put(data)
        up.data = None
        if record.alert_matches:  # webhooks subscribed to "match" (same transaction)
            webhooks.emit_match(session, item, report_id, record.alert_matches)
    _link(session, report_id, item, up)
    return [
        FollowUp(
            "cluster", {"item_id": item.id, "report_id": report_id}, f"cluster:item:{item.id}"
        ),
        _triage_item(item.id, report_id),
    ]


def _link(session: Session, report_id: int, item: Item, up: Upload) -> None:
    # the same file twice in one report (two uploads) links once; a racing twin is a no-op
    session.execute(
        conflict_insert(session, ReportItem)
        .values(
            report_id=report_id,
            item_id=item.id,
            source_url=up.source_url,
            fetched_at=datetime.now(UTC) if up.source_url else None,
        )
        .on_conflict_do_nothing(index_elements=["report_id", "item_id"])
    )


def _expand_upload(
    session: Session, up: Upload, report_id: int, cfg: PipelineConfig
) -> list[FollowUp]:
    """An uploaded zip/tar: each member becomes an upload of its own (analysed, clustered and
    reviewed like any other); the archive itself is kept as a ``container`` item with its
    hashes and any limit it hit (zip bombs, too many members), linked to the report but never
    queued for review."""
    import hashlib
    import io

    assert up.data is not None
    data = bytes(up.data)
    found = expand(data, cfg.archive_limits)
    record = ItemRecord(path=up.filename or "", media_type=sniff_bytes(data).mime)
    digest_stream(io.BytesIO(data), record, len(data))
    item = _upsert_item(session, record)
    item.md5, item.sha1 = record.md5, record.sha1
    item.media_type, item.size = record.media_type, len(data)
    item.status = "container"
    item.errors = [*found.errors[:100], f"archive opened: {len(found.members)} member(s)"]
    _link(session, report_id, item, up)
    base = up.filename or f"upload-{up.id}"
    follow: list[FollowUp] = []
    for path, member in found.members:
        child = Upload(
            report_id=report_id,
            filename=f"{base}!{path}"[-255:],
            source_url=up.source_url,
            data=member,
            size=len(member),
            sha256=hashlib.sha256(member).hexdigest(),
        )
        session.add(child)
        session.flush()
        follow.append(
            FollowUp(
                "analyse",
                {"report_id": report_id, "upload_id": child.id},
                f"analyse:upload:{child.id}",
            )
        )
    up.data = None
    return follow


#: The PostgreSQL advisory lock that serialises cluster assignment ("tipl" "clus").
CLUSTER_LOCK_KEY = 0x7469706C_636C7573


def _serialise_cluster_assignment(session: Session) -> None:
    """One cluster assignment at a time, until this transaction ends: two workers placing
    near-duplicates concurrently would otherwise each start a cluster. PostgreSQL: an advisory
    lock; SQLite: its write lock, taken now by a write that changes nothing (the reads that
    follow then see every committed assignment)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CLUSTER_LOCK_KEY})
    else:
        session.execute(text("UPDATE clusters SET id = id WHERE 0 = 1"))


def stage_cluster(session: Session, payload: dict[str, Any], cfg: PipelineConfig) -> list[FollowUp]:
    """Join the cluster of the nearest clustered item within ``cluster_threshold`` PDQ bits,
    else start a cluster. Items are unique by SHA-256, so an identical file is the same item."""
    item_id = _int(payload, "item_id")
    _serialise_cluster_assignment(session)
    item = session.get(Item, item_id)
    if item is None:
        raise PermanentJobError(f"item {item_id} does not exist")
    if item.cluster_id is None:
        target: int | None = None
        if item.pdq and (item.pdq_quality or 0) >= MIN_USABLE_QUALITY:
            index = cluster_index.for_session(session)
            index.refresh(session)
            hit = index.nearest(item.pdq, cfg.cluster_threshold)
            target = hit[0] if hit is not None else None
        cluster = session.get(Cluster, target) if target is not None else None
        if cluster is None:
            cluster = Cluster(representative_item_id=item.id, size=1)
            session.add(cluster)
            session.flush()
        else:
            cluster.size = (cluster.size or 0) + 1
        item.cluster_id = cluster.id
        item.clustered_seq = cluster_index.next_seq(session)
    report_id = payload.get("report_id")
    return [_triage_item(item.id, report_id)] if isinstance(report_id, int) else []


def _stored_score(item: Item) -> Score:
    return Score(
        item.priority,
        item.priority_reason or "",
        item.status in ("auto_confirmed", "auto_dismissed"),
    )


def _lock_cluster(session: Session, cluster_id: int | None) -> Cluster | None:
    if cluster_id is None:
        return None
    return session.get(Cluster, cluster_id, with_for_update=True)


def _score_report(session: Session, report: Report, cfg: PipelineConfig) -> None:
    # locked before its items are read: two items of one report triaged at once would each
    # write a priority computed without the other's new score (SQLite: begins IMMEDIATE)
    session.refresh(report, with_for_update=True)
    items = session.scalars(
        select(Item)
        .join(ReportItem, ReportItem.item_id == Item.id)
        .where(ReportItem.report_id == report.id)
    ).all()
    s = score_report(
        [_stored_score(i) for i in items], report.source, report.submitted_at, cfg.weights
    )
    report.priority, report.priority_reason = s.priority, s.reason
    # "triaged" once every upload is analysed (URL fetches may add items later; their triage
    # scores the report again)
    pending = session.scalar(
        select(Upload.id).where(Upload.report_id == report.id, Upload.data.is_not(None)).limit(1)
    )
    if pending is None and report.status in ("received", "processing"):
        report.status = "triaged"


def stage_triage(session: Session, payload: dict[str, Any], cfg: PipelineConfig) -> list[FollowUp]:
    """Score the item (auto-confirming it when an auto_confirm bank matched), its cluster and
    every report it came in; or, with only ``report_id``, the report itself."""
    if "item_id" not in payload:
        _score_report(session, _report(session, _int(payload, "report_id")), cfg)
        return []
    item_id = _int(payload, "item_id")
    item = session.get(Item, item_id)
    if item is None:
        raise PermanentJobError(f"item {item_id} does not exist")
    # One lock order for everything that writes an item of a cluster: the cluster, then the
    # item, then its reports (grading takes the cluster, then the item). Writing the item
    # first would hold its row while waiting for the cluster a grader holds, and the grader
    # waits for the item: a deadlock on PostgreSQL. The item is read again under its lock, so
    # a status a grader just set is seen (SQLite: the first lock begins IMMEDIATE).
    cluster = _lock_cluster(session, item.cluster_id)
    session.refresh(item, with_for_update=True)
    if item.cluster_id != (cluster.id if cluster is not None else None):
        cluster = _lock_cluster(session, item.cluster_id)  # re-clustered meanwhile
    reports = session.scalars(
        select(Report)
        .join(ReportItem, ReportItem.report_id == Report.id)
        .where(ReportItem.item_id == item_id)
        .order_by(Report.id)  # the order they are locked in (_score_report)
    ).all()
    facts = ItemFacts(
        matches=list(item.matches or []),
        ai_evidence=item.ai_evidence if isinstance(item.ai_evidence, str) else None,
        keyword_hits=len(item.keyword_hits or []),
        sources=[r.source for r in reports],
        queued_at=item.first_seen,
    )
    s = score_item(
        facts,
        auto_confirm_banks(session, "alert"),
        cfg.weights,
        auto_dismiss_banks=auto_confirm_banks(session, "ignore"),
    )
    item.priority, item.priority_reason = s.priority, s.reason
    if s.auto_confirmed and item.status not in _HUMAN_STATUSES:
        item.status = "auto_confirmed"
    elif s.auto_dismissed and item.status not in _HUMAN_STATUSES:
        item.status = "auto_dismissed"
    # the cluster was locked above, before its members are read here: two members triaged at
    # once would each write a priority computed without the other's new score
    if cluster is not None:
        members = session.scalars(select(Item).where(Item.cluster_id == cluster.id)).all()
        cs = score_cluster([_stored_score(m) for m in members], cfg.weights)
        cluster.priority, cluster.priority_reason = cs.priority, cs.reason
        cluster.size = len(members)
    for report in reports:
        _score_report(session, report, cfg)
    return []


Stage = Callable[[Session, dict[str, Any], PipelineConfig], list[FollowUp]]
STAGE_FUNCTIONS: dict[str, Stage] = {
    "ingest": stage_ingest,
    "fetch": stage_fetch,
    "analyse": stage_analyse,
    "cluster": stage_cluster,
    "triage": stage_triage,
}


def run_stage(
    session: Session,
    kind: str,
    payload: dict[str, Any],
    cfg: PipelineConfig,
    enqueue: Callable[[Session, FollowUp], None],
) -> list[FollowUp]:
    """Run one stage in ``session``'s transaction and enqueue its follow-ups there too."""
    follow = STAGE_FUNCTIONS[kind](session, payload, cfg)
    for f in follow:
        enqueue(session, f)
    return follow


def _handler(kind: str) -> Callable[[JobContext], None]:
    def handle(ctx: JobContext) -> None:
        cfg = get_config()
        payload = ctx.payload
        fetched: tuple[bytes, str] | None = None
        if kind == "fetch" and "url_index" in payload:
            fetched = _prefetch(ctx, cfg)

        def enqueue(session: Session, f: FollowUp) -> None:
            ctx.queue.enqueue(f.kind, f.payload, dedupe_key=f.dedupe_key, session=session)

        with ctx.session_factory() as session, session.begin():
            if kind == "fetch":
                follow = stage_fetch(session, payload, cfg, fetched)
                for f in follow:
                    enqueue(session, f)
            else:
                run_stage(session, kind, payload, cfg, enqueue)

    handle.__name__ = f"handle_{kind}"
    handle.__qualname__ = f"pipeline.handle_{kind}"
    return handle


def _prefetch(ctx: JobContext, cfg: PipelineConfig) -> tuple[bytes, str] | None:
    """Network I/O outside any transaction: fetch a report's URL unless an earlier run already
    stored its bytes."""
    report_id = _int(ctx.payload, "report_id")
    with ctx.session_factory() as session:
        url, done = _report_url(session, report_id, _int(ctx.payload, "url_index"))
    if done is not None:
        return None
    return fetch_url_bytes(url, cfg)


def start_workers(
    engine: Any,
    stop: threading.Event,
    count: int = 1,
    poll_seconds: float = 0.5,
    extra_kinds: Sequence[str] = (),
) -> list[threading.Thread]:
    """Run pipeline jobs in ``count`` daemon threads of this process until ``stop`` is set
    (the embedded single-machine mode; production runs ``tipline worker`` processes).

    ``extra_kinds``: job kinds of layers beside the pipeline that the embedded mode runs too
    (``tipline serve`` adds the removal scheduler's), so one process is a whole hotline."""
    import os

    from tipline.actions.webhooks import DELIVER_KIND
    from tipline.store.base import session_factory
    from tipline.store.jobs import JobQueue

    queue = JobQueue(engine)
    factory = session_factory(engine)
    # the pipeline's stages and webhook deliveries (match, grade and export events)
    kinds = [*STAGES, DELIVER_KIND, *extra_kinds]

    def loop(n: int) -> None:
        worker_id = f"inproc:{os.getpid()}:{n}"
        while not stop.is_set():
            try:
                job = queue.run_one(worker_id, kinds, session_factory=factory)
            except Exception:  # the database went away: wait, then try again
                log.exception("in-process pipeline worker: queue unavailable")
                job = None
            if job is None:
                stop.wait(poll_seconds)

    threads = [
        threading.Thread(target=loop, args=(n,), name=f"tipline-pipeline-{n}", daemon=True)
        for n in range(count)
    ]
    for t in threads:
        t.start()
    return threads


def register(kinds: Sequence[str] = STAGES) -> None:
    for kind in kinds:
        register_handler(kind, _handler(kind))


register()
