"""Crawls in the service (issue 14, surfaces): a partner's report may ask for a crawl of its
URLs (``"crawl": true`` or an object of budgets), ``/api/v1/crawls`` lists crawls and shows
one, the desk's Crawls page shows each crawl's frontier, pages done, what matched and why it
stopped, and ``/metrics`` counts crawls and their pages and media (from the database: the
crawls run in ``tipline worker`` processes, not in the API process).

A report's crawl may narrow the hotline's ``[crawl]`` budgets, never widen them: the operator's
settings are the caps (docs/crawl.md).
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from tipline.accounts import Principal
from tipline.crawl import engine as crawl_engine
from tipline.crawl.engine import Budgets, CrawlError, Policy
from tipline.service.auth import require
from tipline.service.errors import HttpError
from tipline.store.crawl_tables import CrawlMedia, CrawlPage, CrawlRow
from tipline.store.jobs import JobQueue
from tipline.store.tables import Report

__all__ = [
    "CRAWL_REQUEST_FIELDS",
    "crawl_json",
    "crawl_metrics",
    "crawl_metrics_cached",
    "crawl_request",
    "router",
    "routes",
    "start_for_report",
]

#: what a report's ``crawl`` object may set: the budgets (capped by ``[crawl]``) and the
#: barren-branch rule
CRAWL_REQUEST_FIELDS = (
    "max_pages",
    "max_bytes",
    "max_depth",
    "max_seconds",
    "max_media",
    "barren_pages",
)
_FLOAT_FIELDS = frozenset({"max_seconds"})
#: the most pages in a row with nothing found a report may ask a branch to go on for
MAX_BARREN_PAGES = 100

routes = APIRouter()


def crawl_request(raw: Any, defaults: tuple[Budgets, Policy]) -> dict[str, int | float] | None:
    """A report's ``crawl`` field checked: None (no crawl), ``{}`` (``true``: the hotline's
    defaults) or the overrides. Raises :class:`HttpError` 400 naming the field."""
    if raw is None or raw is False:
        return None
    if raw is True:
        return {}
    if not isinstance(raw, Mapping):
        raise HttpError(400, "crawl must be true or an object of budgets")
    unknown = sorted(str(k)[:40] for k in raw if k not in CRAWL_REQUEST_FIELDS)
    if unknown:
        raise HttpError(
            400,
            f"crawl: unknown field(s) {', '.join(unknown)} "
            f"(known: {', '.join(CRAWL_REQUEST_FIELDS)})",
        )
    budgets, policy = defaults
    caps: dict[str, float] = {**budgets.to_json(), "barren_pages": MAX_BARREN_PAGES}
    out: dict[str, int | float] = {}
    for name, value in raw.items():
        ok_type = (int, float) if name in _FLOAT_FIELDS else (int,)
        if isinstance(value, bool) or not isinstance(value, ok_type):
            kind = "a number" if name in _FLOAT_FIELDS else "a whole number"
            raise HttpError(400, f"crawl.{name} must be {kind}")
        low = 0 if name in ("max_depth", "barren_pages") else 1
        if value < low:
            raise HttpError(400, f"crawl.{name} must be at least {low}")
        if value > caps[name]:
            why = "the most a report may ask" if name == "barren_pages" else "the hotline's cap"
            raise HttpError(400, f"crawl.{name}: at most {caps[name]:g} ({why})")
        out[name] = float(value) if name in _FLOAT_FIELDS else int(value)
    del policy
    return out


def start_for_report(
    session: Session,
    queue: JobQueue,
    report: Report,
    overrides: Mapping[str, int | float],
    defaults: tuple[Budgets, Policy],
) -> CrawlRow:
    """The crawl a report asked for, seeded with its URLs, and its job (same transaction)."""
    budgets, policy = defaults
    fields = {k: v for k, v in overrides.items() if k != "barren_pages"}
    budgets = Budgets.from_json({**budgets.to_json(), **fields})
    if "barren_pages" in overrides:
        policy = replace(policy, barren_pages=int(overrides["barren_pages"]))
    crawl, _ = crawl_engine.start_crawl(
        session, report.urls or [], report_id=report.id, budgets=budgets, policy=policy
    )
    crawl_engine.enqueue_run(session, queue, crawl.id)
    return crawl


# -- reading ---------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


def _reference(s: Session, report_id: int | None) -> str | None:
    if report_id is None:
        return None
    return s.scalar(select(Report.reference).where(Report.id == report_id))


def crawl_json(s: Session, crawl: CrawlRow, *, detail: bool = False) -> dict[str, Any]:
    """One crawl: its status (frontier, counters, budgets left, why it stopped), with
    ``detail`` what matched (media and pages) and the failed pages."""
    st = crawl_engine.status(s, crawl.id).to_json()
    out: dict[str, Any] = {
        "id": crawl.id,
        "report": _reference(s, crawl.report_id),
        "seeds": list(crawl.seeds or []),
        "created_at": _iso(crawl.created_at),
        "started_at": _iso(crawl.started_at),
        "finished_at": _iso(crawl.finished_at),
        **{k: v for k, v in st.items() if k != "crawl_id"},
    }
    if not detail:
        return out
    media = s.execute(
        select(
            CrawlMedia.url,
            CrawlMedia.via,
            CrawlMedia.sha256,
            CrawlMedia.matched,
            CrawlMedia.flagged,
            CrawlMedia.matches,
            CrawlMedia.flags,
            CrawlPage.url,
        )
        .outerjoin(CrawlPage, CrawlPage.id == CrawlMedia.page_id)
        .where(
            CrawlMedia.crawl_id == crawl.id,
            (CrawlMedia.matched.is_(True)) | (CrawlMedia.flagged.is_(True)),
        )
        .order_by(CrawlMedia.id)
        .limit(500)
    ).all()
    out["found"] = [
        {
            "url": url,
            "via": via,
            "sha256": sha,
            "matched": bool(matched),
            "flagged": bool(flagged),
            "banks": sorted({str(m.get("bank")) for m in (matches or []) if isinstance(m, dict)}),
            "flags": sorted((flags or {}).keys()) if isinstance(flags, dict) else [],
            "page": page,
        }
        for url, via, sha, matched, flagged, matches, flags, page in media
    ]
    pages = s.execute(
        select(
            CrawlPage.url,
            CrawlPage.depth,
            CrawlPage.matched,
            CrawlPage.flagged,
            CrawlPage.notes,
            CrawlPage.evidence_sha256,
        )
        .where(
            CrawlPage.crawl_id == crawl.id,
            (CrawlPage.matched.is_(True)) | (CrawlPage.flagged.is_(True)),
        )
        .order_by(CrawlPage.id)
        .limit(500)
    ).all()
    out["pages_found"] = [
        {
            "url": url,
            "depth": depth,
            "matched": bool(matched),
            "flagged": bool(flagged),
            "findings": sorted(notes.keys()) if isinstance(notes, dict) else [],
            "evidence_sha256": evidence,
        }
        for url, depth, matched, flagged, notes, evidence in pages
    ]
    failed = s.execute(
        select(CrawlPage.url, CrawlPage.http_status, CrawlPage.error)
        .where(CrawlPage.crawl_id == crawl.id, CrawlPage.state == "failed")
        .order_by(CrawlPage.id)
        .limit(100)
    ).all()
    out["failed"] = [
        {"url": url, "http_status": status, "error": (error or "")[:300]}
        for url, status, error in failed
    ]
    return out


def crawl_metrics(s: Session) -> dict[str, Any]:
    """Counts for ``/metrics``: crawls by state, pages and media by outcome, bytes."""
    by_state = {
        str(k): int(v)
        for k, v in s.execute(select(CrawlRow.state, func.count()).group_by(CrawlRow.state))
    }
    sums = s.execute(
        select(
            func.coalesce(func.sum(CrawlRow.pages_done), 0),
            func.coalesce(func.sum(CrawlRow.pages_failed), 0),
            func.coalesce(func.sum(CrawlRow.media_done), 0),
            func.coalesce(func.sum(CrawlRow.media_matched), 0),
            func.coalesce(func.sum(CrawlRow.media_flagged), 0),
            func.coalesce(func.sum(CrawlRow.media_kept), 0),
            func.coalesce(func.sum(CrawlRow.bytes_fetched), 0),
        )
    ).one()
    frontier = s.scalar(
        select(func.count()).select_from(CrawlPage).where(CrawlPage.state == "queued")
    )
    return {
        "crawls": by_state,
        "pages": {"done": int(sums[0]), "failed": int(sums[1])},
        "media": {
            "hashed": int(sums[2]),
            "matched": int(sums[3]),
            "flagged": int(sums[4]),
            "kept": int(sums[5]),
        },
        "bytes": int(sums[6]),
        "frontier": int(frontier or 0),
    }


#: seconds ``/metrics`` reuses the crawl counts (a scrape storm costs one query set per TTL)
CRAWL_METRICS_TTL = 5.0


class CrawlMetricsCache:
    """:func:`crawl_metrics` of a database, reused for ``ttl`` seconds (per session factory;
    ``clock`` injectable for tests). A failed query is not cached (it raises)."""

    def __init__(
        self, ttl: float = CRAWL_METRICS_TTL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self.clock = clock
        self._lock = threading.Lock()
        self._held: weakref.WeakKeyDictionary[sessionmaker[Session], tuple[float, Any]] = (
            weakref.WeakKeyDictionary()
        )

    def get(self, factory: sessionmaker[Session]) -> dict[str, Any]:
        with self._lock:  # one query set at a time: concurrent scrapes wait for it
            now = self.clock()
            held = self._held.get(factory)
            if held is not None and now - held[0] < self.ttl:
                result: dict[str, Any] = held[1]
                return result
            with factory() as s:
                result = crawl_metrics(s)
            self._held[factory] = (now, result)
            return result


_metrics_cache = CrawlMetricsCache()


def crawl_metrics_cached(factory: sessionmaker[Session]) -> dict[str, Any]:
    """:func:`crawl_metrics` at most once per :data:`CRAWL_METRICS_TTL` seconds a database."""
    return _metrics_cache.get(factory)


def _sf(request: Request) -> sessionmaker[Session]:
    factory: sessionmaker[Session] = request.app.state.ctx.session_factory
    return factory


def _list(factory: sessionmaker[Session], limit: int, state: str | None) -> list[dict[str, Any]]:
    with factory() as s:
        stmt = select(CrawlRow).order_by(CrawlRow.id.desc()).limit(limit)
        if state:
            stmt = stmt.where(CrawlRow.state == state)
        return [crawl_json(s, c) for c in s.scalars(stmt)]


def _one(factory: sessionmaker[Session], crawl_id: int) -> dict[str, Any]:
    with factory() as s:
        crawl = s.get(CrawlRow, crawl_id)
        if crawl is None:
            raise HttpError(404, f"no crawl {crawl_id}")
        try:
            return crawl_json(s, crawl, detail=True)
        except CrawlError as err:
            raise HttpError(404, str(err)) from None


def _limit(raw: str | None) -> int:
    try:
        n = int(raw or 50)
    except ValueError:
        raise HttpError(400, "limit must be a whole number") from None
    return max(1, min(500, n))


@routes.get("/api/v1/crawls", tags=["crawls"])
async def list_crawls(
    request: Request, p: Principal = Depends(require("report:read"))
) -> JSONResponse:
    """Crawls, newest first (``state``: one state; ``limit``: at most 500)."""
    q = request.query_params
    rows = await run_in_threadpool(_list, _sf(request), _limit(q.get("limit")), q.get("state"))
    return JSONResponse({"crawls": rows})


@routes.get("/api/v1/crawls/{crawl_id}", tags=["crawls"])
async def get_crawl(
    crawl_id: int, request: Request, p: Principal = Depends(require("report:read"))
) -> JSONResponse:
    """One crawl: status, budgets left, why it stopped, what matched, the failed pages."""
    return JSONResponse(await run_in_threadpool(_one, _sf(request), crawl_id))


def router(ctx: Any = None) -> APIRouter:
    """The crawl routes and desk pages (mounted by ``app.include_routers``)."""
    return routes


def _page(request: Request, p: Principal) -> Response:
    from tipline.service import desk

    state = request.query_params.get("state") or None
    rows = _list(_sf(request), 100, state)
    return desk.render(
        request, p, "crawls.html", title="Crawls", page="crawls", crawls=rows, request_state=state
    )


def _detail_page(request: Request, p: Principal, crawl_id: int) -> Response:
    from tipline.service import desk

    try:
        doc = _one(_sf(request), crawl_id)
    except HttpError as err:
        return desk.render(
            request,
            p,
            "message.html",
            status=err.status,
            title="Crawl",
            heading="No such crawl",
            message=err.message,
        )
    return desk.render(request, p, "crawl.html", title=f"Crawl {crawl_id}", page="crawls", c=doc)


@routes.get("/desk/crawls", include_in_schema=False)
async def crawls_page(request: Request, p: Principal = Depends(require("report:read"))) -> Response:
    return await run_in_threadpool(_page, request, p)


@routes.get("/desk/crawls/{crawl_id}", include_in_schema=False)
async def crawl_page(
    crawl_id: int, request: Request, p: Principal = Depends(require("report:read"))
) -> Response:
    return await run_in_threadpool(_detail_page, request, p, crawl_id)
