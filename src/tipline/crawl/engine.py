"""The crawl engine: follow a reported page's links while they lead to known material.

A crawl (``crawls`` row) has seeds, budgets and a policy; its frontier (``crawl_pages``) is
its durable queue. One runner at a time works a crawl (``crawls.runner`` with a heartbeat; a
runner silent for ``stale_seconds`` is taken over). Each round the runner claims, in one
transaction, the queued pages it starts (``queued -> fetching``, at most one per free
worker), fetches each in a worker thread with its media, and commits **in one transaction**
the results of every page that finished since the last commit: their rows, their media rows
and their child pages. A runner killed at any moment therefore loses nothing: the pages it had
claimed were never committed and are queued again by the next runner (at most one per worker
is fetched a second time); a committed page is never fetched again (its canonical URL is
unique in the crawl).

**Hash-first.** Every media file goes through the pipeline's analysis of an upload
(:func:`tipline.pipeline.stages.analyse_bytes`: hashes, provenance, keywords, bank match).
Media that matched nothing and carries no AI or keyword flag keeps only its hashes, URL and
page (``crawl_media``); media that matched or was flagged becomes an upload of the crawl's
report and goes through the pipeline's ``analyse`` job (item, encrypted media store, cluster,
triage, webhooks). Page HTML is never stored; a page where something matched gets a sealed
evidence capture (:func:`tipline.removal.evidence.capture`, WARC-exportable) when an evidence
directory is configured.

**Policy** (Project Arachnid's): expand from pages where something matched or was flagged;
a branch stops after ``barren_pages`` pages in a row with nothing. Scope: the seeds'
registrable domains (plus ``allow_domains``, minus ``deny_domains``); a thumbnail's link to
another site (an image host's viewer page) is followed one hop, and media are fetched from any
host not denied. Per-host politeness: at most ``per_host_concurrency`` requests at once and
``per_host_delay`` seconds between them. Budgets: pages, bytes, depth, seconds, media.

Documented in docs/crawl.md.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import secrets
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

from sqlalchemy import Table, bindparam, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, CursorResult, Engine
from sqlalchemy.orm import Session, sessionmaker

from tipline.actions import webhooks
from tipline.crawl.journal import Entry as JournalEntry
from tipline.crawl.journal import Journal
from tipline.crawl.journal import load as load_journal
from tipline.crawl.tor import TorProxyDownError, fetch_onion, is_onion
from tipline.errors import TiplineError
from tipline.net.fetch import FetchError, FetchResult, FetchSettings, HTTPStatusError, fetch
from tipline.net.links import Link, PageLinks, canonical_url, extract, url_key
from tipline.pipeline.stages import PipelineConfig, analyse_bytes
from tipline.record import ItemRecord, Match
from tipline.removal.locations import registrable_domain
from tipline.scan.archives import expand, is_archive, sniff_bytes
from tipline.store.base import session_factory as make_session_factory
from tipline.store.crawl_tables import CrawlMedia, CrawlPage, CrawlRow
from tipline.store.jobs import JobQueue
from tipline.store.media import Keyring
from tipline.store.tables import BankEntryRow, Item, Report, ReportItem, Upload

# H6's documents and model links, looked up by name until both modules exist
_documents: Any
_models: Any
try:
    _documents = importlib.import_module("tipline.crawl.documents")
except ImportError:  # pragma: no cover - present in the full tree
    _documents = None
try:
    _models = importlib.import_module("tipline.crawl.models")
except ImportError:  # pragma: no cover
    _models = None

log = logging.getLogger("tipline.crawl")

MiB = 1024 * 1024
GiB = 1024 * MiB
CRAWL_JOB_KIND = "crawl"

#: Final states (a crawl in one of them is not run again).
FINAL_STATES = frozenset({"done", "stopped", "failed"})


class CrawlError(TiplineError):
    """A crawl cannot be started or run (no usable seed, unknown crawl, busy)."""


class CrawlBusyError(CrawlError):
    """Another live runner works this crawl."""


@dataclass(frozen=True, slots=True)
class Budgets:
    """When a crawl stops (the first budget used up is its stop reason)."""

    #: pages fetched (or failed)
    max_pages: int = 1000
    #: bytes read, pages and media together
    max_bytes: int = 2 * GiB
    #: links followed from a seed (a seed is depth 0)
    max_depth: int = 5
    #: seconds of running, over every resumption
    max_seconds: float = 3600.0
    #: media files fetched and hashed
    max_media: int = 10_000

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: Any) -> Budgets:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in dict(doc or {}).items() if k in known})


@dataclass(frozen=True, slots=True)
class Policy:
    """Where a crawl goes and how gently."""

    #: Arachnid's rule: a branch stops after this many pages in a row with nothing found
    #: (nothing matched or flagged); 0 follows every branch to the depth limit
    barren_pages: int = 3
    #: registrable domains in scope besides the seeds' own
    allow_domains: tuple[str, ...] = ()
    #: registrable domains (or hosts) never fetched, pages or media
    deny_domains: tuple[str, ...] = ()
    #: follow a thumbnail's link to another site one hop (an image host's viewer page)
    follow_media_hosts: bool = True
    per_host_concurrency: int = 2
    per_host_delay: float = 0.25
    max_links_per_page: int = 2000
    max_media_per_page: int = 200
    page_max_bytes: int = 8 * MiB
    media_max_bytes: int = 64 * MiB
    #: seconds one fetch may take in all (a slow-loris server is cut off)
    fetch_seconds: float = 30.0

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["allow_domains"] = list(self.allow_domains)
        d["deny_domains"] = list(self.deny_domains)
        return d

    @classmethod
    def from_json(cls, doc: Any) -> Policy:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in dict(doc or {}).items() if k in known}
        for name in ("allow_domains", "deny_domains"):
            if name in values:
                values[name] = tuple(str(d).lower() for d in values[name])
        return cls(**values)


@dataclass
class CrawlConfig:
    """What a runner needs besides the database (process settings, not stored per crawl)."""

    pipeline: PipelineConfig
    #: pages worked at once by one runner
    workers: int = 4
    #: ``socks5h://host:port`` of the Tor proxy; empty: .onion pages fail, never go direct
    tor_proxy: str = ""
    #: evidence captures of pages where something matched (both needed; else none)
    evidence_dir: Path | None = None
    keyring: Keyring | None = None
    #: largest model file streamed through the hashers
    model_size_cap: int = 16 * GiB
    heartbeat_seconds: float = 1.0
    #: a runner silent this long is taken over (one recorded as a process of this host that
    #: no longer exists is taken over at once)
    stale_seconds: float = 10.0
    #: the runners' local results journals (:mod:`tipline.crawl.journal`); None: none (after a
    #: kill the pages in flight are fetched again)
    journal_dir: Path | None = None
    #: seconds a page waits after the Tor proxy did not answer (doubling, at most 5 min)
    proxy_retry_seconds: float = 5.0


@dataclass(slots=True)
class CrawlStatus:
    """A crawl's counters as a runner or ``tipline crawl`` shows them."""

    crawl_id: int
    state: str
    stop_reason: str | None
    pages_done: int
    pages_failed: int
    pages_queued: int
    pages_waiting: int
    media_done: int
    media_matched: int
    media_flagged: int
    media_kept: int
    bytes_fetched: int
    run_seconds: float
    budgets: Budgets

    def budget_left(self) -> dict[str, float]:
        b = self.budgets
        return {
            "pages": max(0, b.max_pages - self.pages_done - self.pages_failed),
            "bytes": max(0, b.max_bytes - self.bytes_fetched),
            "media": max(0, b.max_media - self.media_done),
            "seconds": max(0.0, round(b.max_seconds - self.run_seconds, 1)),
        }

    def to_json(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "budgets"}
        d["budgets"] = self.budgets.to_json()
        d["budget_left"] = self.budget_left()
        return d


# -- starting ------------------------------------------------------------------------------------


def _insert(session: Session) -> Any:
    return postgresql if session.get_bind().dialect.name == "postgresql" else sqlite


def _exec(s: Session, stmt: Any) -> CursorResult[Any]:
    """``s.execute`` of an UPDATE/INSERT, typed as the cursor result it is (for rowcount)."""
    return cast("CursorResult[Any]", s.execute(stmt))


def _exec_c(conn: Connection, stmt: Any) -> CursorResult[Any]:
    return cast("CursorResult[Any]", conn.execute(stmt))


def _host(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def start_crawl(
    session: Session,
    seeds: Iterable[str],
    *,
    report_id: int | None = None,
    budgets: Budgets | None = None,
    policy: Policy | None = None,
) -> tuple[CrawlRow, list[str]]:
    """Add a crawl with its seed pages (in ``session``'s transaction). Returns it and one
    error line per seed that is not an http(s) URL; raises :class:`CrawlError` when none is."""
    errors: list[str] = []
    canon: list[str] = []
    for raw in seeds:
        c = canonical_url(str(raw)) if isinstance(raw, str) else None
        if c is None:
            errors.append(f"not an http(s) URL, not crawled: {str(raw)[:200]!r}")
        elif c not in canon:
            canon.append(c)
    if not canon:
        raise CrawlError("no seed is an http(s) URL: " + "; ".join(errors[:5]))
    crawl = CrawlRow(
        report_id=report_id,
        seeds=canon,
        budgets=(budgets or Budgets()).to_json(),
        policy=(policy or Policy()).to_json(),
        state="queued",
        tor_username=f"tipline-crawl-{secrets.token_hex(6)}",
        tor_password=secrets.token_hex(16),
    )
    session.add(crawl)
    session.flush()
    for url in canon:
        session.add(
            CrawlPage(crawl_id=crawl.id, url=url, url_key=url_key(url), host=_host(url), via="seed")
        )
    session.flush()
    return crawl, errors


def crawl_report(
    session: Session,
    queue: JobQueue,
    report_id: int,
    *,
    budgets: Budgets | None = None,
    policy: Policy | None = None,
) -> CrawlRow:
    """A crawl seeded with a report's URLs, and its durable job (same transaction)."""
    report = session.get(Report, report_id)
    if report is None:
        raise CrawlError(f"report {report_id} does not exist")
    crawl, _errors = start_crawl(
        session, report.urls or [], report_id=report_id, budgets=budgets, policy=policy
    )
    enqueue_run(session, queue, crawl.id)
    return crawl


def enqueue_run(
    session: Session, queue: JobQueue, crawl_id: int, run_after: datetime | None = None
) -> int:
    key = f"crawl:{crawl_id}" if run_after is None else f"crawl:{crawl_id}:{run_after:%s}"
    return queue.enqueue(
        CRAWL_JOB_KIND,
        {"crawl_id": crawl_id},
        dedupe_key=key,
        run_after=run_after,
        session=session,
    )


def status(session: Session, crawl_id: int) -> CrawlStatus:
    crawl = session.get(CrawlRow, crawl_id)
    if crawl is None:
        raise CrawlError(f"crawl {crawl_id} does not exist")
    counts = dict(
        session.execute(
            select(CrawlPage.state, func.count())
            .where(CrawlPage.crawl_id == crawl_id)
            .group_by(CrawlPage.state)
        ).all()
    )
    waiting = session.scalar(
        select(func.count())
        .select_from(CrawlPage)
        .where(
            CrawlPage.crawl_id == crawl_id,
            CrawlPage.state == "queued",
            CrawlPage.run_after.is_not(None),
        )
    )
    return CrawlStatus(
        crawl_id=crawl.id,
        state=crawl.state,
        stop_reason=crawl.stop_reason,
        pages_done=crawl.pages_done,
        pages_failed=crawl.pages_failed,
        pages_queued=int(counts.get("queued", 0)) + int(counts.get("fetching", 0)),
        pages_waiting=int(waiting or 0),
        media_done=crawl.media_done,
        media_matched=crawl.media_matched,
        media_flagged=crawl.media_flagged,
        media_kept=crawl.media_kept,
        bytes_fetched=crawl.bytes_fetched,
        run_seconds=crawl.run_seconds,
        budgets=Budgets.from_json(crawl.budgets),
    )


# -- one page ------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Media:
    url: str
    key: str
    via: str
    status: int | None = None
    media_type: str | None = None
    size: int = 0
    record: ItemRecord | None = None
    matched: bool = False
    flags: dict[str, Any] | None = None
    error: str | None = None
    #: bytes to keep (matched or flagged, and the crawl has a report)
    keep: bytes | None = None
    #: its row and upload are committed already (kept bytes are committed as they come)
    committed: bool = False
    #: its row's columns as read back from the journal (no record then)
    saved: dict[str, Any] | None = None

    def columns(self) -> dict[str, Any]:
        """Its ``crawl_media`` columns besides the crawl, page and time."""
        if self.saved is not None:
            return dict(self.saved)
        r = self.record
        return {
            "url": self.url,
            "url_key": self.key,
            "via": self.via[:16],
            "http_status": self.status,
            "media_type": (self.media_type or "")[:128] or None,
            "size": self.size,
            "sha256": r.sha256 if r else None,
            "md5": r.md5 if r else None,
            "pdq": r.pdq if r else None,
            "pdq_quality": r.pdq_quality if r else None,
            "matched": self.matched,
            "flagged": bool(self.flags),
            "matches": [x.to_json() for x in r.matches] if r and r.matches else None,
            "flags": self.flags,
            "error": self.error,
        }

    @classmethod
    def from_journal(cls, doc: dict[str, Any]) -> _Media:
        cols = {k: doc.get(k) for k in _MEDIA_COLUMNS}
        m = cls(
            str(cols["url"]),
            str(cols["url_key"]),
            str(cols["via"] or "media"),
            status=cols["http_status"] if isinstance(cols["http_status"], int) else None,
            media_type=cols["media_type"] if isinstance(cols["media_type"], str) else None,
            size=cols["size"] if isinstance(cols["size"], int) else 0,
            matched=bool(cols["matched"]),
            flags=cols["flags"] if isinstance(cols["flags"], dict) else None,
            error=cols["error"] if isinstance(cols["error"], str) else None,
            committed=bool(doc.get("committed")),
        )
        # a journal line leaves out what is None or False
        cols["size"] = m.size
        cols["matched"], cols["flagged"] = m.matched, bool(cols["flagged"])
        m.saved = cols
        return m


_MEDIA_COLUMNS = (
    "url",
    "url_key",
    "via",
    "http_status",
    "media_type",
    "size",
    "sha256",
    "md5",
    "pdq",
    "pdq_quality",
    "matched",
    "flagged",
    "matches",
    "flags",
    "error",
)


@dataclass(slots=True)
class _PageTask:
    id: int
    url: str
    depth: int
    barren: int
    offsite: bool
    attempts: int
    via: str


@dataclass(slots=True)
class _Outcome:
    task: _PageTask
    state: str = "done"
    status: int | None = None
    media_type: str | None = None
    bytes: int = 0
    error: str | None = None
    #: the Tor proxy did not answer: back to the queue, to wait
    defer: bool = False
    links: int = 0
    matched: bool = False
    flagged: bool = False
    notes: dict[str, Any] = field(default_factory=dict)
    media: list[_Media] = field(default_factory=list)
    children: list[tuple[Link, bool]] = field(default_factory=list)
    evidence_sha256: str | None = None
    #: the evidence capture was made (or tried) already
    evidence_done: bool = False


@dataclass(slots=True)
class _Resumed:
    """A page the previous runner fetched but did not commit, rebuilt from its journal."""

    out: _Outcome
    links: list[Link]
    html: bool
    host: str


#: a page printing a model hash names it (Civitai: "SHA256", "AutoV2"); others are not parsed
_MODEL_PAGE_RE = re.compile(rb"sha-?256|autov[123]", re.I)
_HTML_RE = re.compile(rb"<(?:!doctype\s+html|html|head|body|a|div|p|img|table|meta)[\s>/]", re.I)


def _looks_html(res: FetchResult) -> bool:
    """HTML by its bytes (the sniffer calls it text) or by its declared type when it is text;
    a declared type alone never makes an image a page."""
    if res.media_type.mime == "text/html":
        return True
    tagged = bool(_HTML_RE.search(res.content[:8192]))
    if res.media_type.kind == "other":  # text with stray binary bytes: declared and tagged
        return tagged and "html" in res.declared_type.lower()
    if res.media_type.kind != "text":
        return False
    return tagged or "html" in res.declared_type.lower()


def _flags(record: ItemRecord) -> dict[str, Any] | None:
    """Why a record is worth keeping besides a match: AI evidence, keyword hits."""
    out: dict[str, Any] = {}
    if record.ai_evidence in ("weak", "strong"):
        out["ai_evidence"] = record.ai_evidence
    hits = [f.evidence.get("category") for f in record.provenance or [] if f.signal == "keyword"]
    if hits:
        out["keywords"] = [str(h or "keyword") for h in hits][:20]
    return out or None


def _plain(obj: Any) -> Any:
    """A finding object as JSON-able data (dataclass fields, long text dropped)."""
    if is_dataclass(obj) and not isinstance(obj, type):
        d = {f.name: _plain(getattr(obj, f.name)) for f in fields(obj) if f.name != "text"}
        return d
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj[:50]]
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in list(obj.items())[:50]}
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if hasattr(obj, "to_json"):
        return obj.to_json()
    return str(obj)[:500]


_PAGES = cast(Table, CrawlPage.__table__)
_CRAWLS = cast(Table, CrawlRow.__table__)
_MEDIA_TABLE = cast(Table, CrawlMedia.__table__)
#: what a runner needs of a queued page to work it
_TASK_COLUMNS = (
    CrawlPage.id,
    CrawlPage.url,
    CrawlPage.depth,
    CrawlPage.barren,
    CrawlPage.offsite,
    CrawlPage.attempts,
    CrawlPage.via,
    CrawlPage.host,
)
#: a page's result, where it is still being fetched (executemany over a batch)
_PAGE_DONE = (
    update(_PAGES)
    .where(_PAGES.c.id == bindparam("b_id"), _PAGES.c.state == "fetching")
    .values(
        state=bindparam("b_state"),
        attempts=_PAGES.c.attempts + 1,
        run_after=None,
        fetched_at=bindparam("b_fetched_at"),
        http_status=bindparam("b_http_status"),
        media_type=bindparam("b_media_type"),
        bytes=bindparam("b_bytes"),
        links=bindparam("b_links"),
        media=bindparam("b_media"),
        matched=bindparam("b_matched"),
        flagged=bindparam("b_flagged"),
        notes=bindparam("b_notes"),
        error=bindparam("b_error"),
        evidence_sha256=bindparam("b_evidence"),
    )
)
#: a page that waits for the Tor proxy: back to the queue, after a delay
_PAGE_DEFER = (
    update(_PAGES)
    .where(_PAGES.c.id == bindparam("b_id"), _PAGES.c.state == "fetching")
    .values(
        state="queued",
        attempts=_PAGES.c.attempts + 1,
        run_after=bindparam("b_run_after"),
        error=bindparam("b_error"),
    )
)


class _Runner:
    def __init__(
        self,
        factory: sessionmaker[Session],
        crawl: CrawlRow,
        cfg: CrawlConfig,
        runner_id: str,
    ) -> None:
        self.factory = factory
        self.cfg = cfg
        self.runner_id = runner_id
        self.crawl_id = crawl.id
        self.report_id = crawl.report_id
        self.budgets = Budgets.from_json(crawl.budgets)
        self.policy = Policy.from_json(crawl.policy)
        self.tor_user, self.tor_password = crawl.tor_username, crawl.tor_password
        self.scope = {registrable_domain(_host(s)) for s in crawl.seeds or [] if _host(s)}
        self.scope |= {d.lower() for d in self.policy.allow_domains}
        self.deny = {d.lower().strip(".") for d in self.policy.deny_domains}
        base = cfg.pipeline.fetch_settings
        self.page_settings = replace(
            base,
            max_bytes=min(base.max_bytes, self.policy.page_max_bytes),
            total_timeout=min(base.total_timeout, self.policy.fetch_seconds),
            read_timeout=min(base.read_timeout, self.policy.fetch_seconds),
        )
        self.media_settings = replace(
            self.page_settings, max_bytes=min(base.max_bytes, self.policy.media_max_bytes)
        )
        self.lock = threading.Lock()
        self.counters = Counter(
            pages_done=crawl.pages_done,
            pages_failed=crawl.pages_failed,
            media_done=crawl.media_done,
            media_matched=crawl.media_matched,
            media_flagged=crawl.media_flagged,
            media_kept=crawl.media_kept,
            bytes_fetched=crawl.bytes_fetched,
        )
        self.queue = JobQueue(factory.kw["bind"]) if "bind" in factory.kw else None
        self.engine: Engine = factory.kw["bind"]
        #: the main loop's own connection (:meth:`_transaction`)
        self._conn: Connection | None = None
        with factory() as s:
            self.seen_media: set[str] = set(
                s.scalars(select(CrawlMedia.url_key).where(CrawlMedia.crawl_id == crawl.id))
            )
            #: the frontier's keys (one runner writes a crawl's pages, so this is exact; at
            #: most ``max_pages`` of them): a batch's children are told apart without a query
            self.frontier_keys: set[str] = set(
                s.scalars(select(CrawlPage.url_key).where(CrawlPage.crawl_id == crawl.id))
            )
            self.frontier_rows = len(self.frontier_keys)
        #: media fetches reserved by workers (the media budget is checked before each)
        self.media_reserved = 0
        self.journal: Journal | None = None
        if cfg.journal_dir is not None:
            try:
                self.journal = Journal(cfg.journal_dir, crawl.id, runner_id)
            except OSError as err:
                log.warning("crawl %s: no results journal (%s)", crawl.id, err)
        #: pages the previous runner fetched and did not commit, rebuilt from the journal
        self.resumed: list[_Resumed] = []

    def rebuild(self, row: Any, entry: JournalEntry) -> _Resumed:
        """A page from its journal lines (and its frontier row): nothing fetched again."""
        task = _PageTask(row.id, row.url, row.depth, row.barren, row.offsite, row.attempts, row.via)
        p = entry.page
        out = _Outcome(task)
        out.state = "failed" if p.get("state") == "failed" else "done"
        out.status = p.get("status") if isinstance(p.get("status"), int) else None
        out.media_type = p.get("media_type") if isinstance(p.get("media_type"), str) else None
        out.bytes = _int(p.get("bytes"))
        out.error = p.get("error") if isinstance(p.get("error"), str) else None
        out.links = _int(p.get("links"))
        out.matched = bool(p.get("matched"))
        out.flagged = bool(p.get("flagged"))
        out.notes = dict(p["notes"]) if isinstance(p.get("notes"), dict) else {}
        links: list[Link] = []
        for item in p.get("found") or []:
            if (
                isinstance(item, list)
                and len(item) == 3
                and all(isinstance(v, str) for v in item)
                and item[1] in ("page", "media", "archive", "model", "document")
            ):
                links.append(Link(item[0], item[1], item[2]))
        for doc in entry.media.values():
            try:
                m = _Media.from_journal(doc)
            except (TypeError, ValueError):
                continue
            out.media.append(m)
            with self.lock:
                self.seen_media.add(m.key)
                if not m.committed:
                    self.media_reserved += 1
        if entry.evidence is not None:
            sha = entry.evidence.get("sha")
            out.evidence_sha256 = sha if isinstance(sha, str) else None
            notes = entry.evidence.get("notes")
            out.notes.update(notes if isinstance(notes, dict) else {})
            out.evidence_done = True
        r = _Resumed(out, links, bool(p.get("html")), row.host)
        if self.journal is not None:  # this runner's journal holds them now
            self.journal.write(p)
            for doc in entry.media.values():
                self.journal.write({"e": "media", "id": task.id, "m": doc})
            if entry.evidence is not None:
                self.journal.write(entry.evidence)
        return r

    # scope -------------------------------------------------------------------------------

    def denied(self, url: str) -> bool:
        host = _host(url)
        if not host:
            return True
        return host in self.deny or registrable_domain(host) in self.deny

    def in_scope(self, url: str) -> bool:
        return registrable_domain(_host(url)) in self.scope

    # fetching ----------------------------------------------------------------------------

    def fetch(self, url: str, settings: FetchSettings) -> FetchResult:
        if is_onion(url):
            return fetch_onion(
                url,
                settings,
                proxy=self.cfg.tor_proxy,
                username=self.tor_user,
                password=self.tor_password,
            )
        return fetch(url, settings)

    def _take_media_slot(self) -> bool:
        with self.lock:
            if self.counters["media_done"] + self.media_reserved >= self.budgets.max_media:
                return False
            if self.counters["bytes_fetched"] >= self.budgets.max_bytes:
                return False
            self.media_reserved += 1
            return True

    def _analyse(self, m: _Media, data: bytes) -> None:
        pipeline = self.cfg.pipeline
        mt = sniff_bytes(data)
        if is_archive(mt):
            self._analyse_archive(m, data)
            return
        record = analyse_bytes(data, m.url[-255:], pipeline)
        m.record = record
        m.media_type = record.media_type
        m.matched = bool(record.alert_matches)
        m.flags = _flags(record)
        if record.errors:
            m.error = "; ".join(record.errors)[:1000]

    def _analyse_archive(self, m: _Media, data: bytes) -> None:
        """An archive: its own hashes, and each member analysed like an upload's members."""
        pipeline = self.cfg.pipeline
        found = expand(data, pipeline.archive_limits)
        record = ItemRecord(path=m.url[-255:], media_type=sniff_bytes(data).mime)
        import hashlib

        record.sha256 = hashlib.sha256(data).hexdigest()
        record.md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
        record.size = len(data)
        matched_members = 0
        flagged_members = 0
        for path, member in found.members:
            r = analyse_bytes(member, f"{m.url[-200:]}!{path}"[-255:], pipeline)
            if r.alert_matches:
                matched_members += 1
                record.matches.extend(r.alert_matches)
            if _flags(r):
                flagged_members += 1
        m.record = record
        m.media_type = record.media_type
        m.matched = matched_members > 0
        m.flags = {
            "archive_members": len(found.members),
            "matched_members": matched_members,
            "flagged_members": flagged_members,
        }
        if flagged_members == 0 and not m.matched:
            m.flags = None
        if found.errors:
            m.error = "; ".join(found.errors[:5])[:1000]

    def _model(self, link: Link) -> _Media:
        """A model link streamed through the hashers (never written, never unpickled); its
        :meth:`ModelFindings.record` is matched like a scanned model file."""
        m = _Media(link.url, url_key(link.url), "model")
        if _models is None or not hasattr(_models, "hash_model_stream"):
            m.error = "model links are not hashed in this build (tipline.crawl.models missing)"
            return m
        try:
            if is_onion(link.url):
                # never direct: through the Tor proxy, under the media size cap
                res = self.fetch(link.url, self.media_settings)
                found = _models.analyse_model_stream([res.content], link.url)
                found.final_url = res.url
            else:
                found = _models.hash_model_stream(
                    link.url, self.media_settings, self.cfg.model_size_cap
                )
            record: ItemRecord = found.record()
            record.matches = list(self.cfg.pipeline.match(record)) if found.hashes else []
        except FetchError as err:
            m.error = str(err)[:1000]
            m.status = err.status if isinstance(err, HTTPStatusError) else None
            return m
        except Exception as err:  # a hostile model file never stops the crawl
            log.exception("crawl %s: model link %s failed", self.crawl_id, link.url[:200])
            m.error = f"model: {type(err).__name__}: {err}"[:1000]
            return m
        m.record = record
        m.size = int(found.size or 0)
        m.media_type = record.media_type
        m.status = 200 if found.hashes else None
        m.matched = bool(record.alert_matches)
        m.flags = _flags(record)
        if m.matched or m.flags:
            # what the hashers and header readers said (the bytes are never kept)
            m.flags = dict(m.flags or {})
            m.flags["model"] = {
                "format": found.format,
                "autov2": found.autov2,
                "autov3": found.autov3,
                "verdict": found.finding.verdict if found.finding is not None else None,
            }
        if found.error:
            m.error = str(found.error)[:1000]
        return m

    def _model_page(self, out: _Outcome, res: FetchResult) -> None:
        """A Civitai-style model page: the hashes it prints, matched against the banks."""
        if _models is None or not _MODEL_PAGE_RE.search(res.content):
            return
        try:
            cited = _models.model_hashes_from_page(res.content)
            if not cited:
                return
            record: ItemRecord = _models.page_record(res.url, cited)
            record.matches = list(self.cfg.pipeline.match(record))
            matches = record.alert_matches
        except Exception as err:  # hostile markup never stops the crawl
            out.notes["model_page_error"] = f"{type(err).__name__}: {err}"[:500]
            return
        out.notes["model_page_hashes"] = len(cited)
        if matches:
            out.notes["model_page_matches"] = [x.to_json() for x in matches][:50]
            # what it printed: the commit makes the matched models hash-only items of the
            # report (:meth:`_add_model_page_items`)
            out.notes["model_page_cited"] = [[h.algorithm, h.value] for h in cited][:50]
            out.matched = True

    def _fetch_media(self, link: Link) -> _Media | None:
        key = url_key(link.url)
        with self.lock:
            if key in self.seen_media:
                return None
            self.seen_media.add(key)
        if self.denied(link.url):
            return _Media(link.url, key, link.via, error="denied: the host is on the deny list")
        if not self._take_media_slot():
            with self.lock:
                self.seen_media.discard(key)
            return None
        if link.kind == "model":
            return self._model(link)
        m = _Media(link.url, key, link.via if link.kind == "media" else link.kind)
        try:
            res = self.fetch(link.url, self.media_settings)
        except FetchError as err:
            m.error = str(err)[:1000]
            m.status = err.status if isinstance(err, HTTPStatusError) else None
            return m
        m.status, m.size, m.media_type = res.status, len(res.content), res.media_type.mime
        try:
            self._analyse(m, res.content)
        except Exception as err:  # hostile bytes: a per-item error, the crawl goes on
            log.exception("crawl %s: analysing %s failed", self.crawl_id, link.url[:200])
            m.error = f"analysis failed: {type(err).__name__}: {err}"[:1000]
        if (m.matched or m.flags) and self.report_id is not None:
            m.keep = res.content
        return m

    def _document(self, out: _Outcome, res: FetchResult, found: Any = None) -> None:
        """A page's or document's text: keywords, TLSH (``found``: already read)."""
        if found is None:
            if _documents is None or not hasattr(_documents, "analyse_document"):
                return
            try:
                found = _documents.analyse_document(
                    res.content,
                    res.headers.get("content-type", ""),
                    res.url,
                    self.cfg.pipeline.keywords,
                )
            except Exception as err:  # hostile documents never stop the crawl
                out.notes["document_error"] = f"{type(err).__name__}: {err}"[:500]
                return
        plain = _plain(found)
        hits = getattr(found, "keyword_hits", None)
        tlsh = getattr(found, "tlsh", None)
        matches: list[Any] = []
        if tlsh or getattr(found, "sha256", None):
            record = ItemRecord(
                path=res.url[-255:],
                media_type=res.media_type.mime,
                sha256=getattr(found, "sha256", None),
                md5=getattr(found, "md5", None),
                tlsh=tlsh if isinstance(tlsh, str) else None,
            )
            matches = [m.to_json() for m in self.cfg.pipeline.match(record) if m.role == "alert"]
        # only what is worth a look is noted (a page's text is never stored)
        worth = {k: plain.get(k) for k in ("tlsh", "keyword_hits", "findings", "error")}
        worth = {k: v for k, v in worth.items() if v} if isinstance(plain, dict) else {}
        if worth:
            out.notes["document"] = worth
        if matches:
            out.notes["document_matches"] = matches
            out.matched = True
        if hits:
            out.flagged = True
        sha = getattr(found, "sha256", None)
        guide = bool(matches) or (bool(hits) and getattr(found, "kind", "") != "html")
        if guide and self.report_id is not None and isinstance(sha, str):
            # a guide matched by TLSH/SHA-256, or a document with keyword hits: an item of the
            # crawl's report (hash-only; the page's evidence capture keeps what it said), its
            # URL the item's source (a removal location once confirmed)
            cats = [str(getattr(h, "category", None) or "keyword") for h in hits or []]
            out.notes["document_item"] = {
                "sha256": sha,
                "md5": getattr(found, "md5", None),
                "size": int(getattr(found, "size", 0) or 0),
                "media_type": res.media_type.mime,
                "matches": matches,
                "keyword_hits": cats[:50],
            }

    def process(self, task: _PageTask) -> _Outcome:
        out = _Outcome(task)
        if self.denied(task.url):
            out.state, out.error = "failed", "denied: the host is on the deny list"
            return out
        try:
            res = self.fetch(task.url, self.page_settings)
        except TorProxyDownError as err:
            out.defer, out.error = True, str(err)
            return out
        except FetchError as err:
            out.state, out.error = "failed", str(err)[:1000]
            out.status = err.status if isinstance(err, HTTPStatusError) else None
            self._journal_page(out, [], False)
            return out
        out.status, out.bytes, out.media_type = res.status, len(res.content), res.media_type.mime
        kind = res.media_type.kind
        links_found: list[Link] = []
        html = False
        if kind in ("image", "video") or is_archive(res.media_type):
            # the "page" is a media file (a link without a telling extension)
            key = url_key(task.url)
            with self.lock:
                fresh = key not in self.seen_media
                self.seen_media.add(key)
            if fresh and self._take_media_slot():
                m = _Media(task.url, key, "page", res.status, res.media_type.mime, len(res.content))
                try:
                    self._analyse(m, res.content)
                except Exception as err:
                    m.error = f"analysis failed: {type(err).__name__}: {err}"[:1000]
                if (m.matched or m.flags) and self.report_id is not None:
                    m.keep = res.content
                self._took_media(out, m)
        elif _looks_html(res):
            html = True
            links_found = self._parse(out, res)
            self._model_page(out, res)  # the model hashes a model page prints
        else:
            self._document(out, res)
        # the page's fetch is complete: journaled before its media are fetched
        self._journal_page(out, links_found, html)
        return self._complete(out, links_found, html)

    def _parse(self, out: _Outcome, res: FetchResult) -> list[Link]:
        """An HTML page's links, and its text's keywords and TLSH."""
        is_model = getattr(_models, "is_model_link", None) if _models is not None else None
        once = getattr(_documents, "analyse_page", None) if _documents is not None else None
        both = None
        found: PageLinks
        if once is not None:
            try:  # links and text from one parse
                both = once(
                    res.content,
                    res.headers.get("content-type", ""),
                    res.url,
                    self.cfg.pipeline.keywords,
                    max_links=self.policy.max_links_per_page,
                    is_model_link=is_model,
                )
            except Exception as err:  # hostile markup never stops the crawl
                out.notes["document_error"] = f"{type(err).__name__}: {err}"[:500]
        if both is not None:
            found, doc = both
            self._document(out, res, doc)
        else:
            found = extract(
                res.content,
                res.url,
                max_links=self.policy.max_links_per_page,
                content_type=res.declared_type,
                is_model_link=is_model,
            )
            self._document(out, res)  # the page's own text: keywords, TLSH
        out.links = len(found.links)
        if found.dropped:
            out.notes["links_dropped"] = found.dropped
        if found.ignored:
            out.notes["links_ignored"] = found.ignored
        if found.truncated:
            out.notes["parse_truncated"] = True
        return found.links

    def _complete(self, out: _Outcome, links: Sequence[Link], html: bool) -> _Outcome:
        """A fetched (or journaled) page's media, children and evidence."""
        if html:
            self._page_media(out, links)
        out.matched = out.matched or any(m.matched for m in out.media)
        out.flagged = out.flagged or any(m.flags for m in out.media)
        self._children(out, links)
        if (
            out.matched
            and not out.evidence_done
            and self.cfg.evidence_dir is not None
            and self.cfg.keyring is not None
        ):
            out.evidence_sha256 = self._evidence(out.task.url, out)
            out.evidence_done = True
            if self.journal is not None:
                ev_notes = {k: v for k, v in out.notes.items() if k.startswith("evidence")}
                self.journal.write(
                    {
                        "e": "evidence",
                        "id": out.task.id,
                        "sha": out.evidence_sha256,
                        "notes": ev_notes,
                    }
                )
        return out

    def resume(self, r: _Resumed) -> _Outcome:
        """Finish a page rebuilt from the journal: its media not fetched yet, children, evidence
        (the page itself is not fetched again)."""
        return self._complete(r.out, r.links, r.html)

    def _page_media(self, out: _Outcome, links: Sequence[Link]) -> None:
        wanted = [ln for ln in links if ln.kind in ("media", "archive", "model")]
        if len(wanted) > self.policy.max_media_per_page:
            out.notes["media_dropped"] = len(wanted) - self.policy.max_media_per_page
            wanted = wanted[: self.policy.max_media_per_page]
        done = {m.key for m in out.media}
        for ln in wanted:
            if done and url_key(ln.url) in done:
                continue  # fetched before a kill: in the journal
            m = self._fetch_media(ln)
            if m is not None:
                self._took_media(out, m)

    def _took_media(self, out: _Outcome, m: _Media) -> None:
        """A media file of ``out`` is fetched and analysed: kept bytes are committed at once
        (they never go into the journal), and the journal says so."""
        out.media.append(m)
        if m.keep is not None:
            self._commit_kept(out.task.id, m)
        if self.journal is not None:
            cols = {k: v for k, v in m.columns().items() if v is not None and v is not False}
            if m.committed:
                cols["committed"] = True
            self.journal.write({"e": "media", "id": out.task.id, "m": cols})

    def _journal_page(self, out: _Outcome, links: Sequence[Link], html: bool) -> None:
        if self.journal is None:
            return
        # only what differs from :meth:`rebuild`'s defaults (state done, nothing found...)
        line: dict[str, Any] = {"e": "page", "id": out.task.id}
        if out.state != "done":
            line["state"] = out.state
        for key, value in (
            ("status", out.status),
            ("media_type", out.media_type),
            ("bytes", out.bytes),
            ("error", out.error),
            ("links", out.links),
            ("matched", out.matched),
            ("flagged", out.flagged),
            ("notes", out.notes),
            ("html", html),
        ):
            if value:
                line[key] = value
        if links:
            line["found"] = [[ln.url, ln.kind, ln.via] for ln in links]
        self.journal.write(line)

    def _children(self, out: _Outcome, links: Sequence[Link]) -> None:
        task = out.task
        found = out.matched or out.flagged
        run = 0 if found else task.barren + 1
        k = self.policy.barren_pages
        if task.offsite or task.depth >= self.budgets.max_depth or (k and run >= k):
            if links and not task.offsite and k and run >= k:
                out.notes["branch_stopped"] = f"{run} page(s) in a row with nothing found"
            return
        for ln in links:
            if ln.kind not in ("page", "document"):
                continue
            if self.denied(ln.url):
                continue
            if is_onion(ln.url) or self.in_scope(ln.url):
                if is_onion(ln.url) and not self.in_scope(ln.url) and not is_onion(task.url):
                    # a clearnet page's onion link: in scope only if the seeds include it
                    continue
                out.children.append((ln, False))
            elif ln.via == "thumb" and self.policy.follow_media_hosts:
                out.children.append((ln, True))

    def _evidence(self, url: str, out: _Outcome) -> str | None:
        if is_onion(url):
            out.notes["evidence"] = "no capture: .onion pages are not captured directly"
            return None
        from tipline.removal.evidence import capture

        assert self.cfg.evidence_dir is not None and self.cfg.keyring is not None
        try:
            bundle = capture(
                url,
                fetch_settings=self.page_settings,
                attribution=None,
                store_dir=self.cfg.evidence_dir,
                keyring=self.cfg.keyring,
            )
        except Exception as err:  # storage trouble: recorded, the crawl goes on
            out.notes["evidence_error"] = f"{type(err).__name__}: {err}"[:500]
            return None
        return bundle.sha256

    # committing --------------------------------------------------------------------------

    def _commit_kept(self, page_id: int, m: _Media) -> None:
        """A media file whose bytes are kept (an upload of the report): its row, upload and
        analyse job in their own transaction right away, so the journal never holds bytes."""
        now = datetime.now(UTC)
        added = False
        with self.factory() as s, s.begin():
            held = _exec(
                s,
                update(CrawlRow)
                .where(CrawlRow.id == self.crawl_id, CrawlRow.runner == self.runner_id)
                .values(runner_seen_at=now),
            )
            if not held.rowcount:
                s.rollback()
                return  # taken over: the page's commit writes nothing either
            added = self._add_media(s, page_id, m, now)
            if added:
                s.execute(
                    update(CrawlRow)
                    .where(CrawlRow.id == self.crawl_id)
                    .values(
                        media_done=CrawlRow.media_done + 1,
                        media_matched=CrawlRow.media_matched + int(m.matched),
                        media_flagged=CrawlRow.media_flagged + int(bool(m.flags)),
                        media_kept=CrawlRow.media_kept + 1,
                        bytes_fetched=CrawlRow.bytes_fetched + m.size,
                    )
                )
        with self.lock:
            if added:
                self.counters.update(
                    media_done=1,
                    media_matched=int(m.matched),
                    media_flagged=int(bool(m.flags)),
                    media_kept=1,
                    bytes_fetched=m.size,
                )
            self.media_reserved = max(0, self.media_reserved - 1)
        m.committed, m.keep = True, None

    def commit(self, out: _Outcome) -> bool:
        """One page's result (see :meth:`commit_many`)."""
        return self.commit_many([out]) == 1

    @contextmanager
    def _transaction(self) -> Iterator[tuple[Session, Connection]]:
        """A transaction of the main loop on the runner's own connection, held for the whole
        run: no pool check-out and no pre-ping round trip per transaction (on PostgreSQL each
        was a round trip of its own). A connection that broke is replaced at the next one."""
        conn = self._conn
        if conn is None or conn.closed or conn.invalidated:
            if conn is not None:
                with suppress(Exception):
                    conn.close()
            conn = self._conn = self.engine.connect()
        # committed by the connection (a Session on a connection joins it, never commits it)
        with conn.begin(), Session(bind=conn, expire_on_commit=False) as s:
            yield s, conn
            s.flush()

    def close(self) -> None:
        """Give the runner's held connection back."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with suppress(Exception):
                conn.close()

    def commit_many(self, outs: Sequence[_Outcome]) -> int:
        """Pages' results, their media and their child pages in **one transaction** (the
        pages that finished since the last commit: at most one per worker). Returns the pages
        recorded; 0 when the crawl is no longer this runner's (taken over), nothing written."""
        held, recorded = self.round(outs)
        return recorded if held else 0

    def round(
        self,
        outs: Sequence[_Outcome],
        claim: Callable[[Connection, int], None] | None = None,
        run_seconds: float | None = None,
    ) -> tuple[bool, int]:
        """One transaction of the main loop: the heartbeat (``run_seconds`` too, when given),
        the results of ``outs`` with their media and children, and then ``claim(conn,
        pages)`` (it reads the queued pages and claims those it starts; ``pages``: the pages
        this transaction records, not counted in the budgets yet). Returns whether this
        runner still holds the crawl (False: nothing written) and the pages recorded.

        The first statement updates the crawl's row where this runner still holds it, which
        serialises against a take-over (it updates the same row; on SQLite it also takes the
        write lock before anything is read): a runner that lost the crawl writes nothing, and
        one that still holds it commits before the new runner requeues."""
        now = datetime.now(UTC)
        delta: Counter[str] = Counter()
        recorded = 0
        beat: dict[str, Any] = {"runner_seen_at": now}
        if run_seconds is not None:
            beat["run_seconds"] = run_seconds
        results = [o for o in outs if not o.defer]
        # the pages' counters are known before anything is written: set with the heartbeat
        # (one statement); the media's depend on their inserts (a second one, if any)
        pages: Counter[str] = Counter()
        for out in results:
            pages["pages_done" if out.state == "done" else "pages_failed"] += 1
            pages["bytes_fetched"] += out.bytes + sum(m.size for m in out.media if not m.committed)
        beat.update({k: _CRAWLS.c[k] + n for k, n in pages.items() if n})
        with self._transaction() as (s, conn):
            held = _exec_c(
                conn,
                update(_CRAWLS)
                .where(_CRAWLS.c.id == self.crawl_id, _CRAWLS.c.runner == self.runner_id)
                .values(beat),
            )
            if not held.rowcount:
                return False, 0  # nothing written
            deferred = [o for o in outs if o.defer]
            if deferred:
                conn.execute(
                    _PAGE_DEFER,
                    [
                        {
                            "b_id": o.task.id,
                            "b_run_after": now
                            + timedelta(
                                seconds=min(
                                    300.0,
                                    self.cfg.proxy_retry_seconds * (2 ** min(o.task.attempts, 6)),
                                )
                            ),
                            "b_error": o.error,
                        }
                        for o in deferred
                    ],
                )
                recorded += len(deferred)
            # children, media and items before the pages' rows: their notes are final then
            # (links over the page budget, the model page's items)
            self._add_children(conn, results)
            for out in results:
                for m in out.media:
                    if m.committed:
                        continue  # committed as it came (kept bytes)
                    if not self._add_media(s, out.task.id, m, now):
                        continue
                    delta["media_done"] += 1
                    delta["media_matched"] += int(m.matched)
                    delta["media_flagged"] += int(bool(m.flags))
                    delta["media_kept"] += int(m.keep is not None)
                doc = out.notes.get("document_item") if out.state == "done" else None
                if isinstance(doc, dict):
                    self._add_finding_item(s, out.task.url, doc)
                if out.state == "done" and out.notes.get("model_page_matches"):
                    self._add_model_page_items(s, out.task.url, out.notes)
            if results:
                conn.execute(
                    _PAGE_DONE,
                    [
                        {
                            "b_id": o.task.id,
                            "b_state": o.state,
                            "b_fetched_at": now,
                            "b_http_status": o.status,
                            "b_media_type": (o.media_type or "")[:128] or None,
                            "b_bytes": o.bytes,
                            "b_links": o.links,
                            "b_media": len(o.media),
                            "b_matched": o.matched,
                            "b_flagged": o.flagged,
                            "b_notes": o.notes or None,
                            "b_error": o.error,
                            "b_evidence": o.evidence_sha256,
                        }
                        for o in results
                    ],
                )
                recorded += len(results)
            counts = {_CRAWLS.c[k]: _CRAWLS.c[k] + n for k, n in delta.items() if n}
            if counts:
                conn.execute(update(_CRAWLS).where(_CRAWLS.c.id == self.crawl_id).values(counts))
            if claim is not None:
                claim(conn, len(results))
        with self.lock:
            self.counters.update(pages)
            self.counters.update(delta)
            done_media = sum(1 for o in outs for m in o.media if not m.committed)
            self.media_reserved = max(0, self.media_reserved - done_media)
        if self.journal is not None and outs:
            self.journal.committed(o.task.id for o in outs)
        return True, recorded

    def _add_media(self, s: Session, page_id: int, m: _Media, now: datetime) -> bool:
        values = {
            "crawl_id": self.crawl_id,
            "page_id": page_id,
            "fetched_at": now,
            **m.columns(),
        }
        ins = _insert(s).insert(_MEDIA_TABLE).values(**values)
        res = _exec_c(
            s.connection(), ins.on_conflict_do_nothing(index_elements=["crawl_id", "url_key"])
        )
        if not res.rowcount:
            return False  # another page of this crawl recorded it first
        if m.via == "model" and m.matched and m.keep is None:
            # a model file matched by SHA-256/AutoV2: its bytes are never kept, its hashes and
            # URL become an item of the report (a removal location once confirmed)
            cols = m.columns()
            if isinstance(cols.get("sha256"), str):
                self._add_finding_item(
                    s,
                    m.url,
                    {
                        "sha256": cols["sha256"],
                        "md5": cols.get("md5"),
                        "size": cols.get("size") or 0,
                        "media_type": cols.get("media_type") or "application/octet-stream",
                        "matches": [
                            x
                            for x in cols.get("matches") or []
                            if x.get("role") == "alert" and not x.get("suppressed_by")
                        ],
                        "keyword_hits": list((m.flags or {}).get("keywords") or []),
                    },
                )
        if m.keep is not None and self.report_id is not None and self.queue is not None:
            import hashlib

            up = Upload(
                report_id=self.report_id,
                filename=m.url[-255:],
                source_url=m.url,
                data=m.keep,
                size=len(m.keep),
                sha256=hashlib.sha256(m.keep).hexdigest(),
            )
            s.add(up)
            s.flush()
            s.execute(
                update(CrawlMedia)
                .where(CrawlMedia.crawl_id == self.crawl_id, CrawlMedia.url_key == m.key)
                .values(upload_id=up.id)
            )
            self.queue.enqueue(
                "analyse",
                {"report_id": self.report_id, "upload_id": up.id},
                dedupe_key=f"analyse:upload:{up.id}",
                session=s,
            )
        return True

    def _add_finding_item(self, s: Session, url: str, doc: dict[str, Any]) -> None:
        """A matched guide or model file found by the crawl as an item of its report, the way
        a kept image becomes one (:func:`tipline.pipeline.stages.stage_analyse`): the item by
        SHA-256 (hash-only: no bytes), linked to the report with ``url`` as its source (what
        :func:`tipline.removal.scheduler.intake` makes a location of once the item is
        confirmed), then clustered and triaged by the pipeline's jobs."""
        sha = doc.get("sha256")
        if self.report_id is None or self.queue is None or not isinstance(sha, str):
            return
        matches = [x for x in doc.get("matches") or [] if isinstance(x, dict)]
        hits = [str(h) for h in doc.get("keyword_hits") or []]
        mime = str(doc.get("media_type") or "application/octet-stream")[:64]
        size = _int(doc.get("size"))
        s.execute(
            _insert(s)
            .insert(Item)
            .values(sha256=sha, media_type=mime, size=size)
            .on_conflict_do_nothing(index_elements=["sha256"])
        )
        item = s.scalar(select(Item).where(Item.sha256 == sha))
        if item is None:  # pragma: no cover - inserted just above
            return
        md5 = doc.get("md5")
        item.md5 = item.md5 or (md5 if isinstance(md5, str) else None)
        if matches and not item.matches:
            item.matches = matches
        if hits and not item.keyword_hits:
            item.keyword_hits = hits
        if item.status in ("new", "hashed", "matched"):
            item.status = "matched" if item.matches else "hashed"
        linked = _exec(
            s,
            _insert(s)
            .insert(ReportItem)
            .values(
                report_id=self.report_id,
                item_id=item.id,
                source_url=url,
                fetched_at=datetime.now(UTC),
            )
            .on_conflict_do_nothing(index_elements=["report_id", "item_id"]),
        )
        alerts = [
            m
            for m in (_match(x) for x in matches)
            if m is not None and m.role == "alert" and m.suppressed_by is None
        ]
        if alerts and linked.rowcount:
            # the "match" event, as the analyse stage sends for a matched upload (same
            # transaction; once per item and report: a second URL of it sends none)
            webhooks.emit_match(s, item, self.report_id, alerts)
        payload = {"item_id": item.id, "report_id": self.report_id}
        self.queue.enqueue("cluster", payload, dedupe_key=f"cluster:item:{item.id}", session=s)
        self.queue.enqueue(
            "triage",
            payload,
            dedupe_key=f"triage:item:{item.id}:report:{self.report_id}",
            session=s,
        )

    def _add_model_page_items(self, s: Session, url: str, notes: dict[str, Any]) -> None:
        """A Civitai-style page whose printed hashes matched a model bank: each matched model
        a hash-only item of the report, its source the page's URL (as a matched model file's).
        An item is keyed by the model's full SHA-256: the matched bank entry's own (a SHA-256
        entry that a printed AutoV2 found), or the page's printed SHA-256 when it prints only
        that one hash; a model known by AutoV2/V3 alone has none, and the page stays only a
        matched page (its note ``model_page_item`` says so)."""
        if self.report_id is None or self.queue is None:
            return
        matches = [
            x
            for x in notes.get("model_page_matches") or []
            if isinstance(x, dict) and x.get("role") == "alert" and not x.get("suppressed_by")
        ]
        cited = [c for c in notes.get("model_page_cited") or [] if isinstance(c, list)]
        ids = {_int(x.get("entry_id"), -1) for x in matches} - {-1}
        full: dict[int, str] = {}
        if ids:
            for eid, st, signal in s.execute(
                select(BankEntryRow.id, BankEntryRow.signal_type, BankEntryRow.signal).where(
                    BankEntryRow.id.in_(sorted(ids))
                )
            ):
                if st == "sha256" and _SHA256_RE.fullmatch(signal.lower()):
                    full[eid] = signal.lower()
        printed = [v for a, v in cited if a == "sha256" and isinstance(v, str)]
        only = printed[0] if len(cited) == 1 and len(printed) == 1 else None
        by_sha: dict[str, list[dict[str, Any]]] = {}
        for x in matches:
            sha = full.get(_int(x.get("entry_id"), -1)) or only
            if sha is not None:
                by_sha.setdefault(sha, []).append(x)
        if not by_sha:
            notes["model_page_item"] = "no full SHA-256 of the model: no item"
            return
        for sha, found in by_sha.items():
            self._add_finding_item(
                s,
                url,
                {
                    "sha256": sha,
                    "size": 0,
                    "media_type": "application/octet-stream",
                    "matches": found,
                    "keyword_hits": [],
                },
            )
        notes["model_page_item"] = sorted(by_sha)

    def _add_children(self, conn: Connection, outs: Sequence[_Outcome]) -> None:
        """The child pages of a batch of pages: one look-up of the keys already in the
        frontier and one insert (a key two pages of the batch found goes to the first)."""
        by_key: dict[str, tuple[Link, bool, _Outcome]] = {}
        for out in outs:
            for ln, offsite in out.children:
                by_key.setdefault(url_key(ln.url), (ln, offsite, out))
        if not by_key:
            return
        with self.lock:
            fresh = [k for k in by_key if k not in self.frontier_keys]
            room = max(0, self.budgets.max_pages - self.frontier_rows)
            take = fresh[:room]
            self.frontier_keys.update(take)
            self.frontier_rows += len(take)
        for k in fresh[len(take) :]:
            notes = by_key[k][2].notes
            notes["links_over_budget"] = notes.get("links_over_budget", 0) + 1
        if not take:
            return
        rows = []
        for k in take:
            ln, offsite, out = by_key[k]
            task = out.task
            found = out.matched or out.flagged
            rows.append(
                {
                    "crawl_id": self.crawl_id,
                    "url": ln.url,
                    "url_key": k,
                    "host": _host(ln.url)[:255],
                    "depth": task.depth + 1,
                    "parent_id": task.id,
                    "via": ln.via[:16],
                    "offsite": offsite,
                    "barren": 0 if found else task.barren + 1,
                    "state": "queued",
                    "attempts": 0,
                    "bytes": 0,
                    "links": 0,
                    "media": 0,
                    "matched": False,
                    "flagged": False,
                }
            )
        dialect: Any = postgresql if conn.dialect.name == "postgresql" else sqlite
        ins = dialect.insert(_PAGES).on_conflict_do_nothing(index_elements=["crawl_id", "url_key"])
        conn.execute(ins, rows)


# -- running -------------------------------------------------------------------------------------


def _hostname() -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname())[:64] or "host"


def _pid_namespace() -> str:
    """This process's PID namespace (two containers of one host can share a host name and
    reuse each other's process ids); "-" where it cannot be told."""
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "-"


_SHA256_RE = re.compile(r"[0-9a-f]{64}")


def _match(doc: dict[str, Any]) -> Match | None:
    """A stored match (``Match.to_json``) as the object the webhooks take."""
    try:
        return Match(
            bank=str(doc["bank"]),
            entry_id=_int(doc.get("entry_id")),
            signal_type=str(doc["signal_type"]),
            distance=_int(doc.get("distance")),
            label=str(doc.get("label") or ""),
            role=str(doc.get("role") or "alert"),
            suppressed_by=doc.get("suppressed_by")
            if _int(doc.get("suppressed_by"), -1) >= 0
            else None,
        )
    except (KeyError, TypeError):
        return None


def _int(v: Any, default: int = 0) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else default


def _runner_id() -> str:
    """``host:pid:pid-namespace:random``: who runs a crawl, so a runner on the same host can
    tell that the recorded one is no longer a process (:func:`runner_gone`)."""
    return f"{_hostname()}:{os.getpid()}:{_pid_namespace()}:{secrets.token_hex(3)}"


def _process_exists(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return False
    except OSError:
        stat = b""
    if stat:
        # "pid (comm) S ...": the state follows the last ")"; a zombie has ended
        return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] != b"Z"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def runner_gone(runner: str | None) -> bool:
    """Whether ``runner`` (a crawl's recorded runner) was a process of this host, in this PID
    namespace, that no longer exists: then its crawl is taken over at once, without waiting for
    its heartbeat to go stale. Another host's runner, or one that cannot be told, is not gone."""
    if not runner:
        return False
    parts = runner.split(":")
    if len(parts) != 4 or parts[0] != _hostname() or parts[2] != _pid_namespace():
        return False
    if parts[2] == "-" or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    if pid == os.getpid() or pid <= 1:
        return False  # this process: another thread's runner, alive or not, is not known dead
    return not _process_exists(pid)


ProgressFn = Callable[[CrawlStatus], None]


def run_crawl(
    factory: sessionmaker[Session] | Engine,
    crawl_id: int,
    cfg: CrawlConfig,
    *,
    stop: threading.Event | None = None,
    progress: ProgressFn | None = None,
    take_over: bool = False,
    runner_id: str | None = None,
) -> CrawlStatus:
    """Run crawl ``crawl_id`` until its frontier is exhausted, a budget is used up, only pages
    waiting for the Tor proxy are left, or ``stop`` is set (see the module docstring).

    ``take_over``: run it although another runner's heartbeat is recent (the operator knows
    it is dead). Raises :class:`CrawlBusyError` when a live runner holds it."""
    if isinstance(factory, Engine):
        factory = make_session_factory(factory)
    me = runner_id or _runner_id()
    now = datetime.now(UTC)
    with factory() as s, s.begin():
        crawl = s.get(CrawlRow, crawl_id)
        if crawl is None:
            raise CrawlError(f"crawl {crawl_id} does not exist")
        if crawl.state in FINAL_STATES:
            return status(s, crawl_id)
        stale = now - timedelta(seconds=cfg.stale_seconds)
        cond = (
            (CrawlRow.runner.is_(None))
            | (CrawlRow.runner == me)
            | (CrawlRow.runner_seen_at.is_(None))
            | (CrawlRow.runner_seen_at < stale)
        )
        previous = crawl.runner
        if previous and previous != me and runner_gone(previous):
            # a process of this host that no longer exists: taken over at once (the update
            # still names it, so a runner that took the crawl meanwhile is not displaced)
            log.info("crawl %s: its runner %s has ended; taking it over", crawl_id, previous)
            cond = cond | (CrawlRow.runner == previous)
        res = _exec(
            s,
            update(CrawlRow)
            .where(CrawlRow.id == crawl_id, *(() if take_over else (cond,)))
            .values(
                runner=me,
                runner_seen_at=now,
                state="running",
                stop_reason=None,
                started_at=crawl.started_at or now,
            ),
        )
        if not res.rowcount:
            raise CrawlBusyError(
                f"crawl {crawl_id} is being run by {crawl.runner} (seen "
                f"{crawl.runner_seen_at:%H:%M:%S}); wait {cfg.stale_seconds:g}s after it died, "
                "or take it over"
            )
        # pages the previous runner had in flight were never committed: those its journal
        # says were fetched are finished from it (not fetched again), the rest queued again;
        # pages waiting for the Tor proxy get a new try in this run
        inflight_rows = list(
            s.execute(
                select(*_TASK_COLUMNS).where(
                    CrawlPage.crawl_id == crawl_id, CrawlPage.state == "fetching"
                )
            )
        )
        journaled = (
            load_journal(cfg.journal_dir, crawl_id)
            if cfg.journal_dir is not None and inflight_rows
            else {}
        )
        keep = [r for r in inflight_rows if r.id in journaled]
        again = [r.id for r in inflight_rows if r.id not in journaled]
        if again:
            s.execute(
                update(CrawlPage)
                .where(CrawlPage.id.in_(again), CrawlPage.state == "fetching")
                .values(state="queued")
            )
        s.execute(
            update(CrawlPage)
            .where(CrawlPage.crawl_id == crawl_id, CrawlPage.run_after.is_not(None))
            .values(run_after=None)
        )
        s.refresh(crawl)
        runner = _Runner(factory, crawl, cfg, me)
        base_seconds = crawl.run_seconds
    runner.resumed = [runner.rebuild(r, journaled[r.id]) for r in keep]
    if runner.journal is not None:
        runner.journal.remove_others()  # read, and written again in this runner's own
    if keep:
        log.info("crawl %s: %d page(s) finished from the journal", crawl_id, len(keep))
    return _loop(runner, base_seconds, stop or threading.Event(), progress)


def _finish(runner: _Runner, state: str, reason: str | None, seconds: float) -> CrawlStatus:
    with runner.factory() as s, s.begin():
        s.execute(
            update(CrawlRow)
            .where(CrawlRow.id == runner.crawl_id, CrawlRow.runner == runner.runner_id)
            .values(
                state=state,
                stop_reason=reason,
                run_seconds=seconds,
                runner=None,
                runner_seen_at=None,
                finished_at=datetime.now(UTC) if state in FINAL_STATES else None,
            )
        )
    with runner.factory() as s:
        return status(s, runner.crawl_id)


def _budget_reason(runner: _Runner, seconds: float, inflight: int) -> str | None:
    b, c = runner.budgets, runner.counters
    if c["pages_done"] + c["pages_failed"] + inflight >= b.max_pages:
        return "max_pages"
    if c["bytes_fetched"] >= b.max_bytes:
        return "max_bytes"
    if c["media_done"] >= b.max_media:
        return "max_media"
    if seconds >= b.max_seconds:
        return "max_seconds"
    return None


def _loop(
    runner: _Runner, base_seconds: float, stop: threading.Event, progress: ProgressFn | None
) -> CrawlStatus:
    cfg = runner.cfg
    started = time.monotonic()
    last_beat = 0.0
    last_progress = 0.0
    active: Counter[str] = Counter()
    next_at: dict[str, float] = {}
    inflight: dict[Future[_Outcome], tuple[int, str]] = {}
    #: pages finished since the last round (committed by the next one)
    finished: list[_Outcome] = []
    #: no claim before this (monotonic) unless a page finishes: every candidate's host was at
    #: its limit or in its delay (a polite crawl of one host does not poll the database)
    claim_after = 0.0
    reason: str | None = None
    state = "done"
    workers = max(1, cfg.workers)

    def seconds() -> float:
        return base_seconds + (time.monotonic() - started)

    def collect(done: Iterable[Future[_Outcome]]) -> None:
        nonlocal claim_after
        for fut in done:
            page_id, host = inflight.pop(fut)
            active[host] -= 1
            next_at[host] = time.monotonic() + runner.policy.per_host_delay
            try:
                out = fut.result()
            except Exception as err:  # a bug in one page's handling: that page fails
                log.exception("crawl %s: page %s failed", runner.crawl_id, page_id)
                out = _Outcome(
                    _PageTask(page_id, "", 0, 0, False, 0, ""),
                    state="failed",
                    error=f"internal error: {type(err).__name__}: {err}"[:1000],
                )
            finished.append(out)
            claim_after = 0.0

    #: pages claimed and handed to the pool at most: twice the workers, so a worker that
    #: finishes a page starts the next one at once instead of waiting for the main thread's
    #: round (those waiting in the pool's queue were not fetched: after a kill they are
    #: queued again and fetched once)
    ahead = 2 * workers
    #: queued pages read and not claimed yet, in frontier order: this runner is the only
    #: writer of the crawl's frontier, so they stay queued until it claims them; read again
    #: when they cannot fill the free slots (the claim checks ``queued`` all the same)
    cache: list[Any] = []
    cache_read = False
    due = (
        select(*_TASK_COLUMNS)
        .where(
            CrawlPage.crawl_id == runner.crawl_id,
            CrawlPage.state == "queued",
            (CrawlPage.run_after.is_(None)) | (CrawlPage.run_after <= bindparam("b_now")),
        )
        .order_by(CrawlPage.depth, CrawlPage.id)
        .limit(ahead * 4)
    )
    claimed_rows: list[Any] = []

    def claim(conn: Connection, recording: int) -> None:
        """In the round's transaction: the queued pages due, those the free slots start
        (per-host limits and delays, budgets), claimed (``queued -> fetching``)."""
        nonlocal claim_after, cache_read
        claimed_rows.clear()
        free = ahead - len(inflight)
        chosen: list[Any] = []
        now = time.monotonic()
        wake = float("inf")
        full = False

        def take(rows: list[Any]) -> list[Any]:
            """Choose from ``rows``; returns those not chosen."""
            nonlocal free, wake, full
            left: list[Any] = []
            for i, page in enumerate(rows):
                busy = len(inflight) + recording + len(chosen)
                if free <= 0 or _budget_reason(runner, seconds(), busy):
                    full = True
                    left.extend(rows[i:])
                    break
                host = page.host
                if active[host] >= runner.policy.per_host_concurrency:
                    left.append(page)  # a page of that host finishing wakes the loop
                    continue
                if next_at.get(host, 0.0) > now:
                    wake = min(wake, next_at[host])
                    left.append(page)
                    continue
                chosen.append(page)
                active[host] += 1
                free -= 1
            return left

        cache[:] = take(cache)
        if not full:
            picked = {p.id for p in chosen}
            rows = conn.execute(due, {"b_now": datetime.now(UTC)}).all()
            cache[:] = take([r for r in rows if r.id not in picked])
            cache_read = True
        if cache and not chosen and (inflight or wake != float("inf")):
            claim_after = wake  # a page finishing resets it
        if not chosen:
            return
        ids = set(
            conn.execute(
                update(_PAGES)
                .where(_PAGES.c.id.in_([p.id for p in chosen]), _PAGES.c.state == "queued")
                .values(state="fetching")
                .returning(_PAGES.c.id)
            ).scalars()
        )
        for page in chosen:
            if page.id in ids:
                claimed_rows.append(page)
            else:
                active[page.host] -= 1

    def commit_round(want_claim: bool) -> bool:
        """One transaction: heartbeat, what finished, the next claims. False: taken over."""
        nonlocal last_beat
        nonlocal cache_read
        outs = finished[:]
        finished.clear()
        cache_read = False
        claimed_rows.clear()
        held, _n = runner.round(outs, claim if want_claim else None, seconds())
        last_beat = time.monotonic()
        if not held:
            log.warning("crawl %s was taken over by another runner", runner.crawl_id)
        return held

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"crawl-{runner.crawl_id}")
    clean = False
    try:
        # first the pages the previous runner fetched and did not commit (from its journal)
        for r in runner.resumed:
            inflight[pool.submit(runner.resume, r)] = (r.out.task.id, r.host)
            active[r.host] += 1
        runner.resumed = []
        while True:
            now = time.monotonic()
            if progress is not None and now - last_progress >= 0.25:
                last_progress = now
                with runner.factory() as s:
                    progress(status(s, runner.crawl_id))
            if stop.is_set():
                state, reason = "paused", reason or "interrupted"
                break
            reason = _budget_reason(runner, seconds(), 0)
            if reason is not None:
                state = "stopped"
                break
            recording = sum(1 for o in finished if not o.defer)
            want_claim = (
                len(inflight) < ahead
                and now >= claim_after
                and _budget_reason(runner, seconds(), len(inflight) + recording) is None
            )
            submitted = 0
            tried = False
            if finished or want_claim or now - last_beat >= cfg.heartbeat_seconds:
                tried = want_claim
                if not commit_round(want_claim):
                    stop.set()
                    reason = "taken_over"
                    for page in claimed_rows:  # rolled back: never started
                        active[page.host] -= 1
                    claimed_rows.clear()
                    continue
                for page in claimed_rows:
                    task = _PageTask(
                        page.id,
                        page.url,
                        page.depth,
                        page.barren,
                        page.offsite,
                        page.attempts,
                        page.via,
                    )
                    inflight[pool.submit(runner.process, task)] = (page.id, page.host)
                    submitted += 1
                claimed_rows.clear()
            if tried and cache_read and not inflight and not cache and not finished:
                with runner.factory() as s:
                    waiting = s.scalar(
                        select(func.count())
                        .select_from(CrawlPage)
                        .where(CrawlPage.crawl_id == runner.crawl_id, CrawlPage.state == "queued")
                    )
                if waiting:
                    state = "waiting"
                    reason = f"waiting for the Tor proxy: {waiting} .onion page(s)"
                else:
                    state, reason = "done", "frontier_exhausted"
                break
            if inflight:
                done, _ = wait(list(inflight), timeout=0.05, return_when=FIRST_COMPLETED)
                collect(done)
            elif not submitted:
                # everything due belongs to hosts at their limit or in their delay
                stop.wait(min(0.05, max(0.001, claim_after - time.monotonic())))
        # let the pages in flight finish and commit (a kill -9 here loses nothing either)
        if inflight:
            done, _ = wait(list(inflight))
            collect(done)
        if finished and reason != "taken_over":
            commit_round(False)
        clean = True
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        runner.close()
        if runner.journal is not None:
            # every page committed (or the crawl taken over: the new runner read the journal)
            runner.journal.close(remove=clean)
    if reason == "taken_over":
        with runner.factory() as s:
            return status(s, runner.crawl_id)
    result = _finish(runner, state, reason, seconds())
    if progress is not None:
        progress(result)
    return result


# -- the durable job -----------------------------------------------------------------------------

_config: CrawlConfig | None = None
_builder: Callable[[], CrawlConfig] | None = None
_lock = threading.Lock()


def configure(config: CrawlConfig | None) -> None:
    """Set (None: reset) the configuration crawl jobs use in this process."""
    global _config, _builder
    with _lock:
        _config, _builder = config, None


def configure_lazily(builder: Callable[[], CrawlConfig]) -> None:
    global _config, _builder
    with _lock:
        _config, _builder = None, builder


def get_config() -> CrawlConfig:
    global _config
    with _lock:
        if _config is None and _builder is not None:
            _config = _builder()
        if _config is None:
            raise RuntimeError(
                "crawling is not configured in this process (tipline serve and tipline worker "
                "configure it from their settings)"
            )
        return _config


def _handle(ctx: Any) -> None:
    from tipline.store.jobs import PermanentJobError

    crawl_id = ctx.payload.get("crawl_id")
    if not isinstance(crawl_id, int) or isinstance(crawl_id, bool):
        raise PermanentJobError(f"crawl job needs an integer crawl_id, got {crawl_id!r}")
    cfg = get_config()
    try:
        result = run_crawl(ctx.session_factory, crawl_id, cfg)
    except CrawlBusyError:
        raise  # retried with back-off: the other runner may be dead by then
    except CrawlError as err:
        raise PermanentJobError(str(err)) from None
    if result.state == "waiting":
        with ctx.session_factory() as s, s.begin():
            enqueue_run(
                s,
                ctx.queue,
                crawl_id,
                run_after=datetime.now(UTC) + timedelta(seconds=60),
            )


def register() -> None:
    from tipline.store.jobs import register_handler

    register_handler(CRAWL_JOB_KIND, _handle)


register()
