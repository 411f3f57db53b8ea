"""The analyst review desk's pages: server-rendered HTML over :mod:`tipline.review`.

Pages (all need a signed-in user; each route declares its permission):

* ``/desk``: the queue, most urgent first, with filters; claim a cluster to review it.
* ``/desk/clusters/{id}``: the claimed cluster: filtered media, facts and provenance beside it,
  the grading form (keyboard shortcuts). ``/desk/escalations``: escalated clusters (seniors).
* ``/desk/settings`` (viewing filter strengths), ``/desk/exposure`` (admins: exposure per
  analyst), ``/desk/dashboard`` (+ ``.csv``), ``/desk/exports``; ``/desk/exposure/beat``, the
  pages' heartbeat while media is shown; ``/desk/assets/...``, their script and style.

Pages carry a strict Content-Security-Policy (scripts and styles from /desk/assets only) and are
never cached. Elsewhere: what pages and API share (configuration, claiming, grading) is
:mod:`tipline.service.desk_core`; the same desk as JSON is :mod:`tipline.service.review_api`;
the media the pages show (``/desk/media/{item}/preview|full``) is served by
:mod:`tipline.service.media`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from tipline.accounts import Principal
from tipline.audit import log as audit
from tipline.review import charts as charts_
from tipline.review import exposure as exp
from tipline.review import prefs, queue, stats
from tipline.review.queue import QueueFilters, ReviewError
from tipline.review.taxonomy import TaxonomyError
from tipline.service import desk_core as core
from tipline.service.auth import client_ip, require
from tipline.service.media import PREVIEW_PIXELS
from tipline.store.tables import REPORT_SOURCES, BankRow, Cluster, Item, Report, ReportItem, User

routes = APIRouter(include_in_schema=False)

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

FLASH = {
    "graded": ("Grade recorded.", "ok"),
    "released": ("Cluster released.", "info"),
    "saved": ("Preferences saved.", "ok"),
}


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
        values["exposure"] = _exposure(
            core.session_factory(request), principal, core.config(request)
        )
    html = _env.get_template(template).render(
        csrf=principal.csrf_token or "",
        user=principal.username,
        role=principal.role,
        can=principal.can,
        age=core.age,
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
    sf: sessionmaker[Session], p: Principal, cfg: core.DeskConfig
) -> exp.ExposureStatus | None:
    if p.user_id is None or not p.can("review:grade"):
        return None
    with sf() as s:
        return exp.status(s, p.user_id, core.now(), cfg.limits)


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


def _queue_page(request: Request, p: Principal, escalations: bool) -> HTMLResponse:
    cfg = core.config(request)
    sf = core.session_factory(request)
    f = core.queue_filters(request, escalations)
    now = core.now()
    with sf() as s:
        entries = queue.list_queue(
            s, core.reviewer(p), now, filters=f, weights=cfg.weights, sla_hours=cfg.sla_hours
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


def _claim(request: Request, p: Principal, cluster_id: int) -> Response:
    try:
        core.take_claim(request, p, cluster_id)
    except ReviewError as err:
        return _message(request, p, 409, "Cannot claim this cluster", str(err))
    return RedirectResponse(f"/desk/clusters/{cluster_id}", status_code=303)


@routes.post("/desk/clusters/{cluster_id}/claim")
async def claim_cluster(
    cluster_id: int, request: Request, p: Principal = Depends(require("review:grade"))
) -> Response:
    return await run_in_threadpool(_claim, request, p, cluster_id)


def _release(request: Request, p: Principal, cluster_id: int) -> Response:
    with core.session_factory(request)() as s, s.begin():
        if queue.release(s, cluster_id, core.reviewer(p)):
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
        # e.g. "name says image/jpeg, content is text/plain": a disguised file is worth a look
        "warnings": [str(w)[:200] for w in (item.warnings or [])][:10],
        "pw": PREVIEW_PIXELS,
        "ph": PREVIEW_PIXELS,
    }


def _cluster_page(request: Request, p: Principal, cluster_id: int) -> Response:
    cfg = core.config(request)
    rv = core.reviewer(p)
    now = core.now()
    with core.session_factory(request)() as s, s.begin():
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
    taxonomy = core.config(request).taxonomy
    values = {
        f.id: form.get(f.id)
        for f in taxonomy.fields
        if form.get(f.id) is not None or f.kind == "flag"
    }
    try:
        core.grade_and_bank(request, p, cluster_id, values)
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


# -- exposure -----------------------------------------------------------------------------------


def _beat(request: Request, p: Principal, cluster_id: int | None) -> dict[str, Any]:
    cfg = core.config(request)
    rv = core.reviewer(p)
    now = core.now()
    with core.session_factory(request)() as s, s.begin():
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
    cfg = core.config(request)
    now = core.now()
    today = exp.day_start(now)
    with core.session_factory(request)() as s:
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
    cfg = core.config(request)
    rv = core.reviewer(p)
    error = ""
    with core.session_factory(request)() as s, s.begin():
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
        status = exp.status(s, rv.user_id, core.now(), cfg.limits)
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
    with core.session_factory(request)() as s:
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
        ("oldest waiting", core.age(q.oldest_age_hours) if q.oldest_age_hours is not None else "-"),
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
    with core.session_factory(request)() as s:
        d = stats.dashboard(s, core.now())
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
    with core.session_factory(request)() as s:
        return stats.dashboard_csv(stats.dashboard(s, core.now()))


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


def router(app_ctx: Any = None) -> APIRouter:
    """The desk's pages (mounted by ``app.include_routers``)."""
    return routes


__all__ = ["render", "router", "routes"]
