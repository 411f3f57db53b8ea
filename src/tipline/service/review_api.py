"""The review desk as JSON, for integrations and a hotline's own front end: the caller's queue,
claiming, grading, the taxonomy and the dashboard's numbers (``/api/v1/review/...``,
``/api/v1/dashboard``; in the OpenAPI spec under ``review``). The same core as the desk's
pages (:mod:`tipline.service.desk_core`); media is deliberately not served here.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from tipline.accounts import Principal
from tipline.review import queue, stats
from tipline.review.queue import ReviewError
from tipline.review.taxonomy import TaxonomyError
from tipline.service import desk_core as core
from tipline.service.auth import require
from tipline.service.errors import HttpError

routes = APIRouter()


@routes.get("/api/v1/dashboard", tags=["review"])
async def dashboard_api(
    request: Request, _p: Principal = Depends(require("dashboard:read"))
) -> dict[str, Any]:
    """The dashboard's numbers as JSON (queue, per-day throughput, exposure, AI share)."""

    def run() -> dict[str, Any]:
        with core.session_factory(request)() as s:
            return stats.dashboard_json(stats.dashboard(s, core.now()))

    return await run_in_threadpool(run)


# -- queue, claims, grading ----------------------------------------------------------------------


def _api_queue(request: Request, p: Principal) -> Response:
    cfg = core.config(request)
    q = request.query_params
    try:
        limit = max(1, min(int(q.get("limit", "100")), 1000))
    except ValueError:
        raise HttpError(400, "limit must be a whole number") from None
    with core.session_factory(request)() as s:
        entries = queue.list_queue(
            s,
            core.reviewer(p),
            core.now(),
            filters=core.queue_filters(request, escalations=False),
            weights=cfg.weights,
            sla_hours=cfg.sla_hours,
            limit=limit,
        )
    return JSONResponse({"clusters": [e.to_json() for e in entries]})


@routes.get("/api/v1/review/queue", tags=["review"])
async def api_queue(request: Request, p: Principal = Depends(require("review:grade"))) -> Response:
    """The caller's review queue (same filters as /desk: bank, evidence, source,
    min_age_hours, max_age_hours, status, overdue=1; ``limit``)."""
    return await run_in_threadpool(_api_queue, request, p)


def _api_claim(request: Request, p: Principal, cluster_id: int, take: bool) -> Response:
    try:
        if take:
            expires, waiting = core.take_claim(request, p, cluster_id)
            return JSONResponse(
                {"cluster_id": cluster_id, "expires_at": expires.isoformat(), "waiting": waiting}
            )
        with core.session_factory(request)() as s, s.begin():
            released = queue.release(s, cluster_id, core.reviewer(p))
    except ReviewError as err:
        raise HttpError(409, str(err)) from None
    return JSONResponse({"cluster_id": cluster_id, "released": released})


@routes.post("/api/v1/review/clusters/{cluster_id}/claim", tags=["review"])
async def api_claim(
    cluster_id: int, request: Request, p: Principal = Depends(require("review:grade"))
) -> Response:
    """Claim (or renew the claim on) a cluster; 409 when someone else holds it."""
    return await run_in_threadpool(_api_claim, request, p, cluster_id, True)


@routes.delete("/api/v1/review/clusters/{cluster_id}/claim", tags=["review"])
async def api_release(
    cluster_id: int, request: Request, p: Principal = Depends(require("review:grade"))
) -> Response:
    """Give the claim back without grading."""
    return await run_in_threadpool(_api_claim, request, p, cluster_id, False)


def _api_grade(request: Request, p: Principal, cluster_id: int, body: Any) -> Response:
    if not isinstance(body, dict) or not isinstance(body.get("values"), dict):
        raise HttpError(400, 'want {"values": {field: value, ...}, "item_ids"?: [...]}')
    ids = body.get("item_ids")
    if ids is not None and not (isinstance(ids, list) and all(isinstance(i, int) for i in ids)):
        raise HttpError(400, "item_ids must be a list of item ids")
    try:
        outcomes = core.grade_and_bank(request, p, cluster_id, body["values"], ids)
    except TaxonomyError as err:
        raise HttpError(400, str(err)) from None
    except ReviewError as err:
        raise HttpError(409, str(err)) from None
    return JSONResponse(
        {"outcomes": [{"item_id": o.item_id, "state": o.state, "grade": o.grade} for o in outcomes]}
    )


@routes.post("/api/v1/review/clusters/{cluster_id}/grade", tags=["review"])
async def api_grade(
    cluster_id: int, request: Request, p: Principal = Depends(require("review:grade"))
) -> Response:
    """Grade every item of a claimed cluster still waiting for the caller (or ``item_ids``):
    ``{"values": {"uk_category": "C", "ncmec_category": "none"}}``. Answers each item's
    outcome: pending, escalated or final (with the final grade)."""
    try:
        body = await request.json()
    except ValueError:
        raise HttpError(400, "the body is not valid JSON") from None
    return await run_in_threadpool(_api_grade, request, p, cluster_id, body)


@routes.get("/api/v1/review/taxonomy", tags=["review"])
async def api_taxonomy(
    request: Request, _p: Principal = Depends(require("review:grade"))
) -> dict[str, Any]:
    """The grading taxonomy in use: fields, options, shortcut keys, consensus fields."""
    import dataclasses

    t = core.config(request).taxonomy
    return {
        "name": t.name,
        "consensus": list(t.consensus),
        "actionable_field": t.actionable_field,
        "fields": [dataclasses.asdict(f) for f in t.fields],
    }


def router(app_ctx: Any = None) -> APIRouter:
    """The review API's routes (mounted by ``app.include_routers``)."""
    return routes
