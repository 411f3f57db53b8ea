"""The analyst review desk: server-rendered pages over :mod:`tipline.review`.

Pages (all need a signed-in user; each route declares its permission):

* ``/desk``: the queue, most urgent first, with filters; claim a cluster to review it.
* ``/desk/clusters/{id}``: the claimed cluster: filtered media, facts and provenance beside it,
  the grading form (keyboard shortcuts). ``/desk/escalations``: escalated clusters (seniors).
* ``/desk/media/{item}/preview|full``: media bytes, only for the holder of the cluster's claim,
  only while their exposure limits allow, each request an audit event. ``preview`` is a small
  blurred greyscale JPEG made on the server (the unfiltered pixels never leave it); ``full``
  is what a deliberate reveal loads: images re-encoded from decoded pixels (no metadata, no
  payloads), video as stored.
* ``/desk/settings`` (viewing filter strengths), ``/desk/exposure`` (admins: exposure per
  analyst), ``/desk/dashboard`` (+ ``.csv``), ``/desk/exports``.

Pages carry a strict Content-Security-Policy (scripts and styles from /desk/assets only) and are
never cached.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape
from PIL import Image, ImageFilter, ImageOps
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from tipline.accounts import Principal
from tipline.actions import webhooks
from tipline.audit import log as audit
from tipline.config import Limits
from tipline.errors import TiplineError
from tipline.media.decode import deadline, open_image
from tipline.media.sniff import sniff
from tipline.review import charts as charts_
from tipline.review import exposure as exp
from tipline.review import grading, prefs, queue, stats
from tipline.review.queue import QueueFilters, Reviewer, ReviewError
from tipline.review.taxonomy import Taxonomy, TaxonomyError
from tipline.review.taxonomy import load as load_taxonomy
from tipline.service.auth import client_ip, context, require
from tipline.service.errors import HttpError
from tipline.store.tables import REPORT_SOURCES, BankRow, Cluster, Item, Report, ReportItem, User
from tipline.triage.priority import TriageWeights

log = logging.getLogger("tipline.desk")

routes = APIRouter(include_in_schema=False)
#: The desk's JSON routes (in the OpenAPI spec).
api_routes = APIRouter()

_env = Environment(
    loader=PackageLoader("tipline.service", "templates/desk"),
    autoescape=select_autoescape(default=True),
)

PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self'; media-src 'self'; connect-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
}
MEDIA_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "Cross-Origin-Resource-Policy": "same-origin",
}
PREVIEW_PIXELS = 512
FULL_PIXELS = 2048
#: Pixels a reviewed image may have (larger files are refused as decompression bombs).
VIEW_LIMITS = Limits(max_pixels=80_000_000)

FLASH = {
    "graded": ("Grade recorded.", "ok"),
    "released": ("Cluster released.", "info"),
    "saved": ("Preferences saved.", "ok"),
}


@dataclass(frozen=True, slots=True)
class DeskConfig:
    taxonomy: Taxonomy
    limits: exp.ExposureLimits
    policy: grading.ReviewPolicy
    weights: TriageWeights
    claim_minutes: int
    sla_hours: int


def _config(request: Request) -> DeskConfig:
    cfg = getattr(request.app.state, "desk", None)
    if isinstance(cfg, DeskConfig):
        return cfg
    s = request.app.state.settings
    cfg = DeskConfig(
        taxonomy=load_taxonomy(s.review_taxonomy or None),
        limits=exp.ExposureLimits(
            s.exposure_daily_cap_minutes, s.exposure_break_after_minutes, s.exposure_break_minutes
        ),
        policy=grading.ReviewPolicy(s.review_consensus, s.review_bank, s.review_benign_bank),
        weights=s.triage,
        claim_minutes=s.review_claim_minutes,
        sla_hours=s.review_sla_hours,
    )
    request.app.state.desk = cfg
    return cfg


def _sf(request: Request) -> sessionmaker[Session]:
    sf: sessionmaker[Session] = request.app.state.ctx.session_factory
    return sf


def _now() -> datetime:
    return datetime.now(UTC)


def _reviewer(p: Principal) -> Reviewer:
    if p.user_id is None:
        raise ReviewError("sign in as a person to review")
    return Reviewer(p.user_id, p.username, p.role)


def _age(hours: float) -> str:
    if hours < 1:
        return f"{hours * 60:.0f} min"
    if hours < 48:
        return f"{hours:.1f} h"
    return f"{hours / 24:.1f} d"


def render(
    request: Request,
    principal: Principal,
    template: str,
    status: int = 200,
    **values: Any,
) -> HTMLResponse:
    """A desk page with the common frame (navigation, exposure badge, flash message)."""
    flash_code = request.query_params.get("flash", "")
    flash, kind = FLASH.get(flash_code, (values.pop("flash", ""), values.pop("flash_kind", "")))
    if "exposure" not in values:  # the badge in the header, for people who view media
        values["exposure"] = _exposure(_sf(request), principal, _config(request))
    html = _env.get_template(template).render(
        csrf=principal.csrf_token or "",
        user=principal.username,
        role=principal.role,
        can=principal.can,
        age=_age,
        flash=flash,
        flash_kind=kind,
        beat=values.pop("beat", None),
        **values,
    )
    return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)


def _message(
    request: Request, p: Principal, status: int, heading: str, message: str
) -> HTMLResponse:
    return render(
        request, p, "message.html", status, title=heading, page="", heading=heading, message=message
    )


def _exposure(
    sf: sessionmaker[Session], p: Principal, cfg: DeskConfig
) -> exp.ExposureStatus | None:
    if p.user_id is None or not p.can("review:grade"):
        return None
    with sf() as s:
        return exp.status(s, p.user_id, _now(), cfg.limits)


# -- assets -------------------------------------------------------------------------------------

_ASSETS = {"desk.css": "text/css; charset=utf-8", "desk.js": "text/javascript; charset=utf-8"}


@routes.get("/desk/assets/{name}")
async def asset(name: str, _p: Principal = Depends(require("account:self"))) -> Response:
    from importlib import resources

    mime = _ASSETS.get(name)
    if mime is None:
        return JSONResponse({"message": "no such asset"}, status_code=404)
    body = resources.files("tipline.service").joinpath("static", name).read_bytes()
    return Response(body, media_type=mime, headers={"Cache-Control": "private, max-age=300"})


# -- queue --------------------------------------------------------------------------------------


def _float(v: str | None) -> float | None:
    try:
        return float(v) if v not in (None, "") else None
    except ValueError:
        return None


def _filters(request: Request, escalations: bool) -> QueueFilters:
    q = request.query_params
    ev = q.get("evidence") or None
    src = q.get("source") or None
    status = "escalated" if escalations else (q.get("status") or None)
    return QueueFilters(
        bank=q.get("bank") or None,
        evidence=ev if ev in queue.EVIDENCE else None,
        source=src if src in REPORT_SOURCES else None,
        min_age_hours=_float(q.get("min_age_hours")),
        max_age_hours=_float(q.get("max_age_hours")),
        status=status if status in ("open", "in_review", "escalated") else None,
        overdue_only=q.get("overdue") == "1",
    )


def _queue_page(request: Request, p: Principal, escalations: bool) -> HTMLResponse:
    cfg = _config(request)
    sf = _sf(request)
    f = _filters(request, escalations)
    now = _now()
    with sf() as s:
        entries = queue.list_queue(
            s, _reviewer(p), now, filters=f, weights=cfg.weights, sla_hours=cfg.sla_hours
        )
        banks = list(s.scalars(select(BankRow.name).order_by(BankRow.name)))
        status = exp.status(s, p.user_id or 0, now, cfg.limits)
    return render(
        request,
        p,
        "queue.html",
        title="Escalations" if escalations else "Queue",
        page="escalations" if escalations else "queue",
        heading="Escalated: analysts disagreed, your decision is final"
        if escalations
        else "Review queue",
        action="/desk/escalations" if escalations else "/desk",
        entries=entries,
        f=f,
        filtered=f != QueueFilters(status=f.status if escalations else None),
        banks=banks,
        evidence_choices=queue.EVIDENCE,
        source_choices=REPORT_SOURCES,
        status_choices=("open", "in_review", "escalated")
        if p.can("review:senior")
        else ("open", "in_review"),
        exposure=status,
    )


def _home(request: Request, p: Principal) -> HTMLResponse:
    if p.can("review:grade"):
        return _queue_page(request, p, escalations=False)
    links = []
    if p.can("dashboard:read"):
        links.append("the dashboard")
    if p.can("export:read"):
        links.append("exports")
    text = "Your role does not review material." + (
        f" You can open {' and '.join(links)} from the menu." if links else ""
    )
    return _message(request, p, 200, "Tipline", text)


@routes.get("/desk")
async def desk_home(request: Request, p: Principal = Depends(require("account:self"))) -> Response:
    return await run_in_threadpool(_home, request, p)


@routes.get("/desk/escalations")
async def escalations(
    request: Request, p: Principal = Depends(require("review:senior"))
) -> Response:
    return await run_in_threadpool(_queue_page, request, p, True)


# -- claiming and the cluster page ----------------------------------------------------------------


def _take_claim(request: Request, p: Principal, cluster_id: int) -> tuple[datetime, list[int]]:
    """Claim (or renew) for the pages and the API: (expiry, items waiting for the caller).
    Raises ReviewError when someone else holds it."""
    rv = _reviewer(p)
    with _sf(request)() as s, s.begin():
        c = queue.claim(s, cluster_id, rv, _now(), _config(request).claim_minutes)
        audit.record(s, p.actor, "review.claim", "cluster", str(cluster_id), client_ip(request), {})
        return c.expires_at, [i.id for i in queue.waiting_items(s, cluster_id, rv)]


def _grade_and_bank(
    request: Request,
    p: Principal,
    cluster_id: int,
    values: Mapping[str, Any],
    item_ids: list[int] | None = None,
) -> list[grading.Outcome]:
    """Grade (pages and API), then bank what became final. Raises ReviewError or
    TaxonomyError; the grade stands even when banking must wait (next grading or restart)."""
    cfg = _config(request)
    with _sf(request)() as s, s.begin():
        outcomes = grading.grade_cluster(
            s,
            cluster_id,
            _reviewer(p),
            values,
            cfg.taxonomy,
            _now(),
            policy=cfg.policy,
            item_ids=item_ids,
            ip=client_ip(request),
            sink=webhooks.emit,  # final grades announce themselves as `grade` webhooks
        )
    if any(o.state == "final" for o in outcomes):
        try:
            grading.bank_final_grades(_sf(request), request.app.state.ctx.matcher, cfg.policy)
        except Exception:
            log.exception("could not add final grades to the banks yet")
    return outcomes


def _claim(request: Request, p: Principal, cluster_id: int) -> Response:
    try:
        _take_claim(request, p, cluster_id)
    except ReviewError as err:
        return _message(request, p, 409, "Cannot claim this cluster", str(err))
    return RedirectResponse(f"/desk/clusters/{cluster_id}", status_code=303)


@routes.post("/desk/clusters/{cluster_id}/claim")
async def claim_cluster(
    cluster_id: int, request: Request, p: Principal = Depends(require("review:grade"))
) -> Response:
    return await run_in_threadpool(_claim, request, p, cluster_id)


def _release(request: Request, p: Principal, cluster_id: int) -> Response:
    with _sf(request)() as s, s.begin():
        if queue.release(s, cluster_id, _reviewer(p)):
            audit.record(
                s, p.actor, "review.release", "cluster", str(cluster_id), client_ip(request), {}
            )
    return RedirectResponse("/desk?flash=released", status_code=303)


@routes.post("/desk/clusters/{cluster_id}/release")
async def release_cluster(
    cluster_id: int, request: Request, p: Principal = Depends(require("review:grade"))
) -> Response:
    return await run_in_threadpool(_release, request, p, cluster_id)


def _findings(item: Item) -> list[dict[str, Any]]:
    """The item's provenance findings (``Finding.to_json()`` dicts; free text already dropped
    by the pipeline)."""
    prov = item.provenance
    if isinstance(prov, dict):
        prov = prov.get("findings", [prov])
    return [f for f in prov if isinstance(f, dict)] if isinstance(prov, list) else []


def _ai_findings(item: Item) -> list[str]:
    """One line per provenance finding, shown beside the media: signal, verdict, generator."""
    out = []
    for f in _findings(item)[:12]:
        if f.get("verdict") in (None, "none", "absent"):
            continue
        line = f"{f.get('signal', 'finding')}: {f.get('verdict', '')}"
        if f.get("generator"):
            line += f" ({f['generator']})"
        out.append(line[:200])
    return out


def _texts(item: Item) -> list[str]:
    """Text findings (keyword-list hits, the details of provenance evidence such as model and
    LoRA names): behind a reveal, since names can be explicit."""
    out = [f"keyword list: {h}" for h in (item.keyword_hits or [])][:50]
    for f in _findings(item)[:12]:
        ev = f.get("evidence")
        if isinstance(ev, dict) and ev:
            details = ", ".join(f"{k}={str(v)[:120]}" for k, v in list(ev.items())[:8])
            out.append(f"{f.get('signal', 'finding')}: {details}"[:1000])
    return out


def _item_view(s: Session, item: Item) -> dict[str, Any]:
    refs = [
        r
        for r in s.scalars(
            select(Report.reference)
            .join(ReportItem, ReportItem.report_id == Report.id)
            .where(ReportItem.item_id == item.id)
        )
    ]
    mt = item.media_type or ""
    kind = "image" if mt.startswith("image/") else "video" if mt.startswith("video/") else "other"
    return {
        "id": item.id,
        "kind": kind if item.media_ref else "other",
        "has_media": bool(item.media_ref),
        "media_type": mt,
        "size": item.size,
        "first_seen": item.first_seen,
        "sha256": item.sha256,
        "md5": item.md5,
        "pdq": item.pdq,
        "pdq_quality": item.pdq_quality,
        "matches": [m for m in (item.matches or []) if isinstance(m, dict)],
        "ai_evidence": item.ai_evidence,
        "ai_findings": _ai_findings(item),
        "reports": refs,
        "texts": _texts(item),
        "pw": PREVIEW_PIXELS,
        "ph": PREVIEW_PIXELS,
    }


def _cluster_page(request: Request, p: Principal, cluster_id: int) -> Response:
    cfg = _config(request)
    rv = _reviewer(p)
    now = _now()
    with _sf(request)() as s, s.begin():
        cluster = s.get(Cluster, cluster_id)
        if cluster is None:
            return _message(request, p, 404, "No such cluster", f"cluster {cluster_id} not found")
        if not queue.holds_claim(s, cluster_id, rv, now):
            return _message(
                request,
                p,
                409,
                "Claim this cluster first",
                f"Cluster {cluster_id} is not claimed by you: claim it from the queue.",
            )
        claim = queue.claim(s, cluster_id, rv, now, cfg.claim_minutes)  # renew while working
        items = queue.waiting_items(s, cluster_id, rv)
        if not items:
            queue.release(s, cluster_id, rv)
            return RedirectResponse("/desk", status_code=303)
        views = [_item_view(s, it) for it in items]
        status = exp.status(s, rv.user_id, now, cfg.limits)
        user_prefs = prefs.load(s, rv.user_id)
        escalated = any(it.status == "escalated" for it in items)
        evidence = sorted({str(it.ai_evidence) for it in items if it.ai_evidence}) or ["none"]
        entries = queue.list_queue(
            s, rv, now, weights=cfg.weights, sla_hours=cfg.sla_hours, only_cluster=cluster_id
        )
        entry = entries[0] if entries else None
        claim_expires = claim.expires_at
    return render(
        request,
        p,
        "cluster.html",
        title=f"Cluster {cluster_id}",
        page="cluster",
        cluster=cluster,
        items=views,
        taxonomy=cfg.taxonomy,
        exposure=status,
        blocked=status.blocked,
        prefs=user_prefs,
        speeds=prefs.SPEEDS,
        escalated=escalated,
        evidence_summary="AI evidence: " + ", ".join(evidence),
        priority=f"{entry.priority:.1f}" if entry else "-",
        reason=entry.reason if entry else "",
        claim_expires=claim_expires,
        beat=str(cluster_id),
    )


@routes.get("/desk/clusters/{cluster_id}")
async def cluster_page(
    cluster_id: int, request: Request, p: Principal = Depends(require("review:grade"))
) -> Response:
    return await run_in_threadpool(_cluster_page, request, p, cluster_id)


# -- grading ------------------------------------------------------------------------------------


def _grade(request: Request, p: Principal, cluster_id: int, form: Mapping[str, Any]) -> Response:
    taxonomy = _config(request).taxonomy
    values = {
        f.id: form.get(f.id)
        for f in taxonomy.fields
        if form.get(f.id) is not None or f.kind == "flag"
    }
    try:
        _grade_and_bank(request, p, cluster_id, values)
    except (ReviewError, TaxonomyError) as err:
        return _message(
            request,
            p,
            400 if isinstance(err, TaxonomyError) else 409,
            "The grade was not recorded",
            str(err),
        )
    return RedirectResponse("/desk?flash=graded", status_code=303)


@routes.post("/desk/clusters/{cluster_id}/grade")
async def grade(
    cluster_id: int, request: Request, p: Principal = Depends(require("review:grade"))
) -> Response:
    form = await request.form(max_files=0, max_fields=100)
    values = {k: v for k, v in form.items() if isinstance(v, str)}
    return await run_in_threadpool(_grade, request, p, cluster_id, values)


# -- media --------------------------------------------------------------------------------------


def _refused(status: int, message: str) -> HttpError:
    """A media request refused: ``{"message"}``, never cached."""
    return HttpError(status, message, headers={"Cache-Control": "no-store"})


def _encode_view(data: bytes, pixels: int, filters: prefs.ViewPrefs | None) -> bytes:
    mt = sniff(data[:4096])
    with deadline(20, "preparing the image for viewing"):
        im = open_image(data, mt, VIEW_LIMITS)
        if mt.mime == "image/jpeg":
            im.draft("RGB", (pixels, pixels))
        im.load()
        # shown upright for the analyst (hashes stay on the stored pixels)
        with contextlib.suppress(Exception):
            im = ImageOps.exif_transpose(im) or im
        im = im.convert("RGB")
        im.thumbnail((pixels, pixels))
        if filters is not None:
            radius = filters.blur * max(im.size) / PREVIEW_PIXELS
            im = im.filter(ImageFilter.GaussianBlur(radius))
            if filters.greyscale:
                grey = im.convert("L").convert("RGB")
                im = Image.blend(im, grey, filters.greyscale / 100)
        out = io.BytesIO()
        im.save(out, "JPEG", quality=70 if filters is not None else 90)
    return out.getvalue()


def _media(request: Request, p: Principal, item_id: int, mode: str) -> Response:
    cfg = _config(request)
    rv = _reviewer(p)
    now = _now()
    store = context(request).media_store
    sf = _sf(request)
    with sf() as s, s.begin():
        item = s.get(Item, item_id)
        if item is None or item.cluster_id is None:
            raise _refused(404, "no such item")
        if not queue.holds_claim(s, item.cluster_id, rv, now):
            raise _refused(403, "claim the item's cluster before viewing its media")
        st = exp.status(s, rv.user_id, now, cfg.limits)
        if st.blocked:
            raise _refused(403, st.message)
        if not item.media_ref or store is None:
            raise _refused(404, "this item's media is not kept (hash-only)")
        ref, media_type = item.media_ref, item.media_type or ""
        user_prefs = prefs.load(s, rv.user_id)
        exp.beat(s, rv.user_id, now, item.cluster_id)
    try:
        data = store.get(ref)
    except Exception as err:
        raise _refused(404, f"media unavailable: {err}") from None
    is_video = media_type.startswith("video/")
    if mode == "preview" and is_video:
        raise _refused(404, "videos have no preview: reveal to load them")
    try:
        if is_video:
            body, mime, shown = data, media_type, "video"
        elif mode == "preview":
            body, mime, shown = _encode_view(data, PREVIEW_PIXELS, user_prefs), "image/jpeg", mode
        else:
            body, mime, shown = _encode_view(data, FULL_PIXELS, None), "image/jpeg", "reveal"
    except TiplineError as err:
        raise _refused(422, f"cannot show this media: {err}") from None
    headers = dict(MEDIA_HEADERS)
    status = 200
    span = _byte_range(request.headers.get("range"), len(body)) if is_video else None
    if is_video:
        headers["Accept-Ranges"] = "bytes"  # seeking and frame stepping need ranges
    if span is not None:
        start, end = span
        headers["Content-Range"] = f"bytes {start}-{end}/{len(body)}"
        body, status = body[start : end + 1], 206
    if span is None or span[0] == 0:
        # one audit event per view: a player's later range requests (seeks) are the same view
        with sf() as s, s.begin():
            audit.record(
                s,
                p.actor,
                "media.view",
                "media",
                ref,
                client_ip(request),
                {"item_id": item_id, "mode": shown, "bytes": len(body)},
            )
    return Response(body, status_code=status, media_type=mime, headers=headers)


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The one ``bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` range asked for, clipped to the
    body; None for no (or an unusable) range: the whole body is sent."""
    if not header or not header.startswith("bytes=") or "," in header or size == 0:
        return None
    first, _, last = header[6:].strip().partition("-")
    try:
        if first == "":
            n = int(last)
            return (max(0, size - n), size - 1) if n > 0 else None
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start < 0 or start >= size or end < start:
        return None
    return start, min(end, size - 1)


async def _media_route(request: Request, p: Principal, item_id: int, mode: str) -> Response:
    return await run_in_threadpool(_media, request, p, item_id, mode)


@routes.get("/desk/media/{item_id}/preview")
async def media_preview(
    item_id: int, request: Request, p: Principal = Depends(require("media:view"))
) -> Response:
    return await _media_route(request, p, item_id, "preview")


@routes.get("/desk/media/{item_id}/full")
async def media_full(
    item_id: int, request: Request, p: Principal = Depends(require("media:view"))
) -> Response:
    return await _media_route(request, p, item_id, "full")


# -- exposure -----------------------------------------------------------------------------------


def _beat(request: Request, p: Principal, cluster_id: int | None) -> dict[str, Any]:
    cfg = _config(request)
    rv = _reviewer(p)
    now = _now()
    with _sf(request)() as s, s.begin():
        st = exp.status(s, rv.user_id, now, cfg.limits)
        if not st.blocked and cluster_id is not None and queue.holds_claim(s, cluster_id, rv, now):
            exp.beat(s, rv.user_id, now, cluster_id)
            queue.claim(s, cluster_id, rv, now, cfg.claim_minutes)
            st = exp.status(s, rv.user_id, now, cfg.limits)
    return st.to_json()


@routes.post("/desk/exposure/beat")
async def exposure_beat(
    request: Request, p: Principal = Depends(require("review:grade"))
) -> Response:
    """A heartbeat from a page showing media: counts exposure and renews the claim."""
    try:
        body = await request.json()
    except ValueError:
        body = {}
    cid = body.get("cluster_id") if isinstance(body, dict) else None
    out = await run_in_threadpool(_beat, request, p, cid if isinstance(cid, int) else None)
    return JSONResponse(out, headers={"Cache-Control": "no-store"})


def _exposure_admin(request: Request, p: Principal) -> Response:
    cfg = _config(request)
    now = _now()
    today = exp.day_start(now)
    with _sf(request)() as s:
        users = s.scalars(
            select(User).where(User.role.in_(sorted(queue.GRADER_ROLES))).order_by(User.username)
        ).all()
        day = exp.minutes_by_user(s, today, now)
        week = exp.minutes_by_user(s, now - timedelta(days=7), now)
        rows = []
        for u in users:
            st = exp.status(s, u.id, now, cfg.limits)
            rows.append(
                {
                    "username": u.username,
                    "role": u.role,
                    "today": day.get(u.id, 0.0),
                    "week": week.get(u.id, 0.0),
                    "stretch": st.stretch_minutes,
                    "state": st.state,
                }
            )
    return render(
        request,
        p,
        "exposure.html",
        title="Exposure",
        page="exposure",
        rows=rows,
        limits=cfg.limits,
    )


@routes.get("/desk/exposure")
async def exposure_admin(
    request: Request, p: Principal = Depends(require("exposure:admin"))
) -> Response:
    return await run_in_threadpool(_exposure_admin, request, p)


# -- preferences --------------------------------------------------------------------------------


def _settings_page(request: Request, p: Principal, form: Mapping[str, str] | None) -> Response:
    cfg = _config(request)
    rv = _reviewer(p)
    error = ""
    with _sf(request)() as s, s.begin():
        current = prefs.load(s, rv.user_id)
        if form is not None:
            values = {k: v for k, v in form.items() if k != "csrf_token"}
            values.setdefault("greyscale_after_reveal", "off")
            try:
                current = prefs.parse(values, current)
                prefs.save(s, rv.user_id, current)
                audit.record(
                    s,
                    p.actor,
                    "review.preferences",
                    "user",
                    p.username,
                    client_ip(request),
                    current.to_json(),
                )
            except prefs.PreferenceError as err:
                error = str(err)
        status = exp.status(s, rv.user_id, _now(), cfg.limits)
    if form is not None and not error:
        return RedirectResponse("/desk/settings?flash=saved", status_code=303)
    return render(
        request,
        p,
        "settings.html",
        400 if error else 200,
        title="Viewing",
        page="settings",
        prefs=current,
        speeds=prefs.SPEEDS,
        blur_range=prefs.BLUR_RANGE,
        exposure=status,
        flash=error,
        flash_kind="error",
    )


@routes.get("/desk/settings")
async def settings_page(
    request: Request, p: Principal = Depends(require("review:grade"))
) -> Response:
    return await run_in_threadpool(_settings_page, request, p, None)


@routes.post("/desk/settings")
async def settings_save(
    request: Request, p: Principal = Depends(require("review:grade"))
) -> Response:
    form = await request.form(max_files=0, max_fields=20)
    values = {k: v for k, v in form.items() if isinstance(v, str)}
    return await run_in_threadpool(_settings_page, request, p, values)


# -- exports page -------------------------------------------------------------------------------


def _exports_page(request: Request, p: Principal) -> Response:
    with _sf(request)() as s:
        count = s.scalar(select(func.count()).select_from(Item).where(Item.graded_at.is_not(None)))
        rows = s.scalars(
            select(Item)
            .where(Item.graded_at.is_not(None))
            .order_by(Item.graded_at.desc())
            .limit(50)
        ).all()
        graded = [
            {
                "id": it.id,
                "label": (it.grade or {}).get("label", ""),
                "how": (it.grade or {}).get("how", ""),
                "actionable": bool((it.grade or {}).get("actionable")),
                "graded_at": it.graded_at,
            }
            for it in rows
        ]
    return render(
        request,
        p,
        "exports.html",
        title="Exports",
        page="exports",
        count=count or 0,
        graded=graded,
    )


@routes.get("/desk/exports")
async def exports_page(
    request: Request, p: Principal = Depends(require("export:read"))
) -> Response:
    return await run_in_threadpool(_exports_page, request, p)


# -- dashboard ----------------------------------------------------------------------------------


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.0f}%"


def _dashboard_parts(d: stats.Dashboard) -> tuple[list[tuple[str, str]], list[str]]:
    q = d.queue
    cards = [
        ("clusters waiting", str(q.clusters)),
        ("items waiting", str(q.items_waiting)),
        ("oldest waiting", _age(q.oldest_age_hours) if q.oldest_age_hours is not None else "-"),
        ("resolved without a human view (all time)", _pct(d.resolved_all_time.unviewed_share)),
        (f"resolved without a human view ({d.days} days)", _pct(d.resolved_window.unviewed_share)),
        ("items with AI evidence", _pct(d.ai.evidence_share)),
    ]
    days = [day.day.strftime("%d %b") for day in d.daily]
    charts = [
        charts_.bar_chart(
            [b.label for b in q.histogram],
            {"clusters": [float(b.clusters) for b in q.histogram]},
            "Queue by age",
            y_label="clusters",
        ),
        charts_.bar_chart(
            days,
            {
                "graded by analysts": [float(x.human_graded) for x in d.daily],
                "auto-confirmed (no view)": [float(x.auto_confirmed) for x in d.daily],
            },
            f"Items resolved per day (last {d.days} days)",
            stacked=True,
            y_label="items",
        ),
        charts_.line_chart(
            days,
            {"grades submitted": [float(x.grades) for x in d.daily]},
            "Grades submitted per day",
            y_label="grades",
        ),
        charts_.bar_chart(
            [e.username for e in d.exposure],
            {
                "today": [round(e.minutes_today, 1) for e in d.exposure],
                "last 7 days": [round(e.minutes_7d, 1) for e in d.exposure],
            },
            "Exposure per analyst (minutes)",
            y_label="minutes",
        ),
        charts_.bar_chart(
            ["all items", "graded AI-generated"],
            {
                "with AI evidence": [
                    float(d.ai.items_with_evidence),
                    float(d.ai.graded_ai_yes_with_evidence),
                ],
                "without": [
                    float(d.ai.items - d.ai.items_with_evidence),
                    float(d.ai.graded_ai_yes - d.ai.graded_ai_yes_with_evidence),
                ],
            },
            "AI-generation evidence",
            stacked=True,
            y_label="items",
        ),
    ]
    return cards, charts


def _dashboard(request: Request, p: Principal) -> Response:
    with _sf(request)() as s:
        d = stats.dashboard(s, _now())
    cards, charts = _dashboard_parts(d)
    return render(
        request,
        p,
        "dashboard.html",
        title="Dashboard",
        page="dashboard",
        cards=cards,
        charts=charts,
    )


@routes.get("/desk/dashboard")
async def dashboard_page(
    request: Request, p: Principal = Depends(require("dashboard:read"))
) -> Response:
    return await run_in_threadpool(_dashboard, request, p)


def _dashboard_csv(request: Request) -> str:
    with _sf(request)() as s:
        return stats.dashboard_csv(stats.dashboard(s, _now()))


@routes.get("/desk/dashboard.csv")
async def dashboard_csv(
    request: Request, _p: Principal = Depends(require("dashboard:read"))
) -> Response:
    body = await run_in_threadpool(_dashboard_csv, request)
    return Response(
        body,
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": 'attachment; filename="tipline-dashboard.csv"',
            "Cache-Control": "no-store",
        },
    )


@api_routes.get("/api/v1/dashboard", tags=["review"])
async def dashboard_api(
    request: Request, _p: Principal = Depends(require("dashboard:read"))
) -> dict[str, Any]:
    """The dashboard's numbers as JSON (queue, per-day throughput, exposure, AI share)."""

    def run() -> dict[str, Any]:
        with _sf(request)() as s:
            return stats.dashboard_json(stats.dashboard(s, _now()))

    return await run_in_threadpool(run)


# -- the same desk as JSON (integrations, a hotline's own front end) -----------------------------


def _api_error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"message": message}, status_code=status)


def _api_queue(request: Request, p: Principal) -> Response:
    cfg = _config(request)
    q = request.query_params
    try:
        limit = max(1, min(int(q.get("limit", "100")), 1000))
    except ValueError:
        return _api_error(400, "limit must be a whole number")
    with _sf(request)() as s:
        entries = queue.list_queue(
            s,
            _reviewer(p),
            _now(),
            filters=_filters(request, escalations=False),
            weights=cfg.weights,
            sla_hours=cfg.sla_hours,
            limit=limit,
        )
    return JSONResponse({"clusters": [e.to_json() for e in entries]})


@api_routes.get("/api/v1/review/queue", tags=["review"])
async def api_queue(request: Request, p: Principal = Depends(require("review:grade"))) -> Response:
    """The caller's review queue (same filters as /desk: bank, evidence, source,
    min_age_hours, max_age_hours, status, overdue=1; ``limit``)."""
    return await run_in_threadpool(_api_queue, request, p)


def _api_claim(request: Request, p: Principal, cluster_id: int, take: bool) -> Response:
    try:
        if take:
            expires, waiting = _take_claim(request, p, cluster_id)
            return JSONResponse(
                {"cluster_id": cluster_id, "expires_at": expires.isoformat(), "waiting": waiting}
            )
        with _sf(request)() as s, s.begin():
            released = queue.release(s, cluster_id, _reviewer(p))
    except ReviewError as err:
        return _api_error(409, str(err))
    return JSONResponse({"cluster_id": cluster_id, "released": released})


@api_routes.post("/api/v1/review/clusters/{cluster_id}/claim", tags=["review"])
async def api_claim(
    cluster_id: int, request: Request, p: Principal = Depends(require("review:grade"))
) -> Response:
    """Claim (or renew the claim on) a cluster; 409 when someone else holds it."""
    return await run_in_threadpool(_api_claim, request, p, cluster_id, True)


@api_routes.delete("/api/v1/review/clusters/{cluster_id}/claim", tags=["review"])
async def api_release(
    cluster_id: int, request: Request, p: Principal = Depends(require("review:grade"))
) -> Response:
    """Give the claim back without grading."""
    return await run_in_threadpool(_api_claim, request, p, cluster_id, False)


def _api_grade(request: Request, p: Principal, cluster_id: int, body: Any) -> Response:
    if not isinstance(body, dict) or not isinstance(body.get("values"), dict):
        return _api_error(400, 'want {"values": {field: value, ...}, "item_ids"?: [...]}')
    ids = body.get("item_ids")
    if ids is not None and not (isinstance(ids, list) and all(isinstance(i, int) for i in ids)):
        return _api_error(400, "item_ids must be a list of item ids")
    try:
        outcomes = _grade_and_bank(request, p, cluster_id, body["values"], ids)
    except TaxonomyError as err:
        return _api_error(400, str(err))
    except ReviewError as err:
        return _api_error(409, str(err))
    return JSONResponse(
        {"outcomes": [{"item_id": o.item_id, "state": o.state, "grade": o.grade} for o in outcomes]}
    )


@api_routes.post("/api/v1/review/clusters/{cluster_id}/grade", tags=["review"])
async def api_grade(
    cluster_id: int, request: Request, p: Principal = Depends(require("review:grade"))
) -> Response:
    """Grade every item of a claimed cluster still waiting for the caller (or ``item_ids``):
    ``{"values": {"uk_category": "C", "ncmec_category": "none"}}``. Answers each item's
    outcome: pending, escalated or final (with the final grade)."""
    try:
        body = await request.json()
    except ValueError:
        return _api_error(400, "the body is not valid JSON")
    return await run_in_threadpool(_api_grade, request, p, cluster_id, body)


@api_routes.get("/api/v1/review/taxonomy", tags=["review"])
async def api_taxonomy(
    request: Request, _p: Principal = Depends(require("review:grade"))
) -> dict[str, Any]:
    """The grading taxonomy in use: fields, options, shortcut keys, consensus fields."""
    import dataclasses

    t = _config(request).taxonomy
    return {
        "name": t.name,
        "consensus": list(t.consensus),
        "actionable_field": t.actionable_field,
        "fields": [dataclasses.asdict(f) for f in t.fields],
    }


def router(app_ctx: Any = None) -> APIRouter:
    """The desk's pages and JSON routes (``OPTIONAL_ROUTERS``)."""
    combined = APIRouter()
    combined.include_router(routes)
    combined.include_router(api_routes)
    return combined


__all__ = ["DeskConfig", "api_routes", "render", "router", "routes"]
