"""``/api/v1`` for analysts and admins: the review queue (items, clusters, reports by priority,
with the reason of every score) and the pipeline's jobs (dead letters, requeue).

Partners submit and follow their own reports through :mod:`tipline.service.intake`; these
routes need ``item:read``, ``report:read``, ``job:read`` or ``job:admin``. Auto-confirmed items
are left out of the queue unless asked for (``status=auto_confirmed``): nobody needs to see them.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from tipline.audit import log as audit
from tipline.service.auth import client_ip, require
from tipline.service.errors import HttpError
from tipline.store.jobs import JobQueue
from tipline.store.tables import (
    ITEM_STATUSES,
    JOB_STATUSES,
    REPORT_STATUSES,
    Cluster,
    Item,
    Report,
    ReportItem,
)

routes = APIRouter(tags=["review"])


def _sf(request: Request) -> sessionmaker[Session]:
    sf: sessionmaker[Session] = request.app.state.ctx.session_factory
    return sf


def item_json(item: Item, reports: list[str] | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {
        "id": item.id,
        "sha256": item.sha256,
        "md5": item.md5,
        "sha1": item.sha1,
        "pdq": item.pdq,
        "pdq_quality": item.pdq_quality,
        "media_type": item.media_type,
        "size": item.size,
        "status": item.status,
        "priority": item.priority,
        "priority_reason": item.priority_reason,
        "cluster_id": item.cluster_id,
        "first_seen": item.first_seen.isoformat(),
        "matches": item.matches or [],
        "ai_evidence": item.ai_evidence,
        "keyword_hits": len(item.keyword_hits or []),
        "errors": item.errors or [],
        "media": f"/api/v1/media/{item.media_ref}" if item.media_ref else None,
    }
    if reports is not None:
        d["provenance"] = item.provenance
        d["reports"] = reports
    return d


def report_json(report: Report) -> dict[str, Any]:
    return {
        "reference": report.reference,
        "source": report.source,
        "status": report.status,
        "submitted_at": report.submitted_at.isoformat(),
        "priority": report.priority,
        "priority_reason": report.priority_reason,
        "urls": report.urls or [],
        "description": report.description,
    }


def _by_priority(col: Any, tie: Any) -> tuple[Any, ...]:
    return (col.is_(None), col.desc(), tie)


@routes.get("/api/v1/items")
async def list_items(
    request: Request,
    status: str | None = Query(None, description="one of " + ", ".join(ITEM_STATUSES)),
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0),
    _p: Any = Depends(require("item:read")),
) -> Response:
    """The review queue: items by priority, highest first, each with its reason."""
    if status is not None and status not in ITEM_STATUSES:
        raise HttpError(400, f"unknown status {status[:40]!r}")

    def run() -> list[dict[str, Any]]:
        stmt = select(Item).order_by(*_by_priority(Item.priority, Item.id)).limit(limit)
        stmt = stmt.offset(offset)
        if status is not None:
            stmt = stmt.where(Item.status == status)
        else:
            stmt = stmt.where(Item.status.not_in(("auto_confirmed", "auto_dismissed")))
        with _sf(request)() as s:
            return [item_json(i) for i in s.scalars(stmt)]

    return JSONResponse({"items": await run_in_threadpool(run)})


@routes.get("/api/v1/items/{item_id}")
async def get_item(
    item_id: int, request: Request, _p: Any = Depends(require("item:read"))
) -> Response:
    """One item: hashes, matches, provenance, cluster, priority and the reports it came in."""

    def run() -> dict[str, Any] | None:
        with _sf(request)() as s:
            item = s.get(Item, item_id)
            if item is None:
                return None
            refs = list(
                s.scalars(
                    select(Report.reference)
                    .join(ReportItem, ReportItem.report_id == Report.id)
                    .where(ReportItem.item_id == item_id)
                    .order_by(Report.id)
                )
            )
            return item_json(item, refs)

    found = await run_in_threadpool(run)
    if found is None:
        raise HttpError(404, "no such item")
    return JSONResponse(found)


@routes.get("/api/v1/clusters")
async def list_clusters(
    request: Request,
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0),
    _p: Any = Depends(require("item:read")),
) -> Response:
    """Clusters of near-duplicates by priority (auto-confirmed clusters left out)."""

    def run() -> list[dict[str, Any]]:
        stmt = (
            select(Cluster)
            .where(Cluster.priority.is_not(None))
            .order_by(*_by_priority(Cluster.priority, Cluster.id))
            .limit(limit)
            .offset(offset)
        )
        with _sf(request)() as s:
            return [
                {
                    "id": c.id,
                    "size": c.size,
                    "status": c.status,
                    "priority": c.priority,
                    "priority_reason": c.priority_reason,
                    "representative_item_id": c.representative_item_id,
                }
                for c in s.scalars(stmt)
            ]

    return JSONResponse({"clusters": await run_in_threadpool(run)})


@routes.get("/api/v1/review/reports")
async def list_reports(
    request: Request,
    status: str | None = Query(None, description="one of " + ", ".join(REPORT_STATUSES)),
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0),
    _p: Any = Depends(require("report:read")),
) -> Response:
    """Reports by priority, highest first."""
    if status is not None and status not in REPORT_STATUSES:
        raise HttpError(400, f"unknown status {status[:40]!r}")

    def run() -> list[dict[str, Any]]:
        stmt = select(Report).order_by(*_by_priority(Report.priority, Report.id))
        stmt = stmt.limit(limit).offset(offset)
        if status is not None:
            stmt = stmt.where(Report.status == status)
        with _sf(request)() as s:
            return [report_json(r) for r in s.scalars(stmt)]

    return JSONResponse({"reports": await run_in_threadpool(run)})


@routes.get("/api/v1/review/reports/{ref}")
async def get_report(
    ref: str, request: Request, _p: Any = Depends(require("report:read"))
) -> Response:
    """One report with its items (the contact is personal data: shown to report readers only)."""

    def run() -> dict[str, Any] | None:
        with _sf(request)() as s:
            report = s.scalar(select(Report).where(Report.reference == ref[:32]))
            if report is None:
                return None
            items = s.scalars(
                select(Item)
                .join(ReportItem, ReportItem.item_id == Item.id)
                .where(ReportItem.report_id == report.id)
                .order_by(Item.id)
            )
            return {
                **report_json(report),
                "contact": report.contact,
                "items": [item_json(i) for i in items],
            }

    found = await run_in_threadpool(run)
    if found is None:
        raise HttpError(404, "no such report")
    return JSONResponse(found)


@routes.get("/api/v1/jobs")
async def list_jobs(
    request: Request,
    status: str | None = Query(None, description="one of " + ", ".join(JOB_STATUSES)),
    kind: str | None = Query(None, max_length=64),
    limit: int = Query(100, ge=1, le=1000),
    _p: Any = Depends(require("job:read")),
) -> Response:
    """Pipeline jobs, newest first; ``status=dead`` is the dead-letter list. Counts per status
    are included."""
    if status is not None and status not in JOB_STATUSES:
        raise HttpError(400, f"unknown status {status[:40]!r}")
    queue = JobQueue(request.app.state.ctx.engine)

    def run() -> dict[str, Any]:
        jobs = queue.list(status, kind, limit=limit)
        return {
            "counts": queue.counts(),
            "jobs": [
                {
                    "id": j.id,
                    "kind": j.kind,
                    "status": j.status,
                    "attempts": j.attempts,
                    "max_attempts": j.max_attempts,
                    "last_error": j.last_error,
                    "payload": j.payload,
                    "created_at": j.created_at.isoformat(),
                    "updated_at": j.updated_at.isoformat(),
                }
                for j in jobs
            ],
        }

    return JSONResponse(await run_in_threadpool(run))


@routes.post("/api/v1/jobs/requeue")
async def requeue_jobs(
    request: Request,
    body: dict[str, Any] = Body(default_factory=dict),
    principal: Any = Depends(require("job:admin")),
) -> Response:
    """Retry dead (or ``status``: failed) jobs: ``{"ids": [1, 2]}`` or all of them (``{}``).
    An audit event (``job.requeue``)."""
    ids = body.get("ids")
    status = body.get("status", "dead")
    if status not in ("dead", "failed"):
        raise HttpError(400, "status must be dead or failed")
    if ids is not None and (
        not isinstance(ids, list) or not all(isinstance(i, int) and i > 0 for i in ids)
    ):
        raise HttpError(400, "ids must be a list of job ids")
    engine = request.app.state.ctx.engine
    actor = str(getattr(principal, "actor", "unknown"))
    ip = client_ip(request)

    def run() -> int:
        n = JobQueue(engine).requeue(ids, status=status)
        with _sf(request)() as s, s.begin():
            audit.record(
                s, actor, "job.requeue", "job", None, ip, {"ids": ids, "status": status, "n": n}
            )
        return n

    return JSONResponse({"requeued": await run_in_threadpool(run)})


def router(app_ctx: Any = None) -> APIRouter:
    """For the service's ``OPTIONAL_ROUTERS``."""
    return routes
