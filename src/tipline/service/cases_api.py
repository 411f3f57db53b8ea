"""Removal cases over HTTP (docs/api.md, "Cases"; docs/removal.md, "Desk pages"):
``/api/v1/cases...`` and the desk pages "Removal" and "Removal statistics".

API (in the OpenAPI spec under ``cases``):

* ``GET /api/v1/cases``: cases, oldest first, filters ``state`` (a state or ``open``, the
  default, or ``all``), ``provider``, ``country``, ``min_age_hours``/``max_age_hours`` (age:
  hours since the case's confirmation); paging by ``limit`` (1-500) and ``after`` (the last
  id seen; the answer's ``next_after``) (``report:read``);
* ``GET /api/v1/cases/{id}``: one case with its transitions, evidence summary (bundle
  SHA-256, HTTP status, address, media hashes), notices and re-checks (``report:read``);
* ``POST /api/v1/cases/{id}/hold`` ``{"agency", "until", "reason"?}`` and ``.../release``
  ``{"reason"?}``: a law-enforcement hold (``review:senior``: senior analysts and admins
  only; the route refuses analysts whatever a page shows);
* ``POST /api/v1/cases/{id}/recheck``: re-check now (a ``removal.step`` job);
  ``.../notify`` ``{"mark_sent"?}``: send the case's queued notices now, answer its manual
  ones (and with ``mark_sent`` record them as sent), or start a notice round;
  ``.../close`` ``{"reason"}`` (``report:write``);
* ``GET /api/v1/cases/stats`` (``?format=csv``): time-to-removal statistics
  (:mod:`tipline.removal.stats` over :func:`~tipline.removal.stats.load_histories`)
  (``report:read``).

Desk pages: ``/desk/removal`` (open cases by age and provider, the ladder step and the next
action due), ``/desk/removal/cases/{id}`` (timeline, history, evidence, notices, re-checks; the
same actions as forms, the hold form only for seniors), ``/desk/removal/stats`` (survival
curves and the per provider/AS/country table, drawn by :mod:`tipline.review.charts`).

Every refusal is one line: 400 for a bad parameter or body, 404 for an unknown case, 409 for
what the case's state does not allow (``case 7: cannot go from removed to notified (allowed:
closed, reappeared)``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from tipline.accounts import Principal
from tipline.removal import cases as case_sm
from tipline.removal import evidence as evidence_mod
from tipline.removal import notices as notices_mod
from tipline.removal import scheduler
from tipline.removal import stats as removal_stats
from tipline.review import charts
from tipline.service.auth import require
from tipline.service.errors import HttpError
from tipline.store.case_tables import CaseEvent, CaseRow, NoticeCase, NoticeRow
from tipline.store.jobs import JobQueue

ORIGIN_LABELS = {
    "report": "the report",
    "confirmation": "confirmation",
    "notice": "the first notice",
}
GROUPING_LABELS = {"provider": "provider", "asn": "AS", "country": "country"}
#: The origin the per-group tables of the statistics page count from (IWF's: notice).
TABLE_ORIGIN = "notice"
#: Rows per grouping on the statistics page (the CSV and JSON have all of them).
TABLE_ROWS = 25


# -- statistics -------------------------------------------------------------------------------


def _hours(v: float | None) -> str:
    if v is None:
        return "-"
    if v < 48:
        return f"{v:.1f} h"
    return f"{v / 24:.1f} d"


def _pct(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v * 100:.0f}%"


def _grid_label(h: float) -> str:
    return f"{h:g}h" if h < 48 else f"{h / 24:g}d"


def stats_charts(summary: Mapping[str, Any]) -> list[str]:
    """The statistics page's charts: the survival curve (share still online) from each
    origin, and the share removed within each bound."""
    origins = summary["origins"]
    first = next(iter(origins.values()), None)
    if first is None:
        return []
    grid = [h for h, _ in first["all"]["survival_at"]]
    curve = charts.line_chart(
        [_grid_label(h) for h in grid],
        {
            f"from {ORIGIN_LABELS.get(o, o)}": [
                round(s * 100, 2) for _, s in entry["all"]["survival_at"]
            ]
            for o, entry in origins.items()
            if entry["all"]["cases"]
        },
        "Still online (Kaplan-Meier), % of locations",
        y_label="% online",
    )
    within = [f"{h:g}h" for h in summary["within_hours"]]
    bars = charts.bar_chart(
        [f"within {w}" for w in within],
        {
            f"from {ORIGIN_LABELS.get(o, o)}": [
                round((entry["all"]["removed_within"][w] or 0.0) * 100, 2) for w in within
            ]
            for o, entry in origins.items()
            if entry["all"]["cases"]
        },
        "Removed within, % of locations",
        y_label="% removed",
    )
    return [curve, bars]


def stats_view(summary: Mapping[str, Any]) -> dict[str, Any]:
    within = [f"{h:g}h" for h in summary["within_hours"]]
    origins = [
        {"origin": o, "label": ORIGIN_LABELS.get(o, o), "row": entry["all"]}
        for o, entry in summary["origins"].items()
    ]
    table = summary["origins"].get(TABLE_ORIGIN) or next(iter(summary["origins"].values()))
    groupings = [
        {"key": g, "label": GROUPING_LABELS.get(g, g), "rows": rows[:TABLE_ROWS]}
        for g, rows in table["by"].items()
    ]
    notice = summary["origins"].get("notice", {}).get("all", {})
    report = summary["origins"].get("report", {}).get("all", {})
    cards = [
        ("cases", str(summary["cases"])),
        ("still online", str(report.get("censored", 0))),
        ("median, notice to removal", _hours(notice.get("median_hours"))),
        ("median, report to removal", _hours(report.get("median_hours"))),
        ("p90, notice to removal", _hours(notice.get("p90_hours"))),
    ]
    return {
        "within": within,
        "origins": origins,
        "groupings": groupings,
        "origin_label": ORIGIN_LABELS.get(TABLE_ORIGIN, TABLE_ORIGIN),
        "cards": cards,
        "charts": stats_charts(summary),
        "hours": _hours,
        "pct": _pct,
    }


def stats_response(summary: dict[str, Any], fmt: str) -> Response:
    """``/api/v1/cases/stats``'s answer for a summary: JSON, or ``csv`` as an attachment."""
    if fmt not in ("json", "csv"):
        raise HttpError(400, "format must be json or csv")
    if fmt == "csv":
        return Response(
            removal_stats.to_csv(summary),
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": 'attachment; filename="tipline-time-to-removal.csv"',
                "Cache-Control": "no-store",
            },
        )
    return JSONResponse(summary, headers={"Cache-Control": "no-store"})


def stats_page(request: Request, p: Principal, summary: Mapping[str, Any]) -> HTMLResponse:
    """The "Removal statistics" desk page for a summary (the desk's frame and headers)."""
    from tipline.service import desk

    return desk.render(
        request,
        p,
        "removal_stats.html",
        title="Removal statistics",
        page="removal",
        **stats_view(summary),
    )


# -- reading cases ----------------------------------------------------------------------------

routes = APIRouter()

MAX_LIMIT = 500
DESK_PAGE = 100
MAX_PROVIDER_CHARS = 300
#: Case states a list may be filtered by, besides "open" and "all".
STATE_CHOICES = ("open", "all", *case_sm.STATES)
#: Notice states that still wait for a delivery (sent now by "notify").
SENDABLE = ("queued", "sending")
#: What the desk says after an action (``?done=`` on the case page).
DONE = {
    "recheck": "Re-check queued: a worker runs it now.",
    "send": "The case's queued notices are being sent now.",
    "round": "A notice round was queued.",
    "marked": "Manual notices recorded as sent.",
    "closed": "Case closed.",
    "held": "Law-enforcement hold set: no notice goes out while it holds.",
    "released": "Hold released: the case goes on where it stopped.",
}


def _sf(request: Request) -> sessionmaker[Session]:
    sf: sessionmaker[Session] = request.app.state.ctx.session_factory
    return sf


def _queue(request: Request) -> JobQueue:
    return JobQueue(request.app.state.ctx.engine)


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(at: datetime | None) -> datetime | None:
    if at is None:
        return None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _fmt(at: datetime | None) -> str | None:
    at = _aware(at)
    return None if at is None else at.strftime("%Y-%m-%d %H:%M UTC")


def _hours_since(at: datetime | None, now: datetime) -> float:
    at = _aware(at)
    return 0.0 if at is None else max(0.0, (now - at).total_seconds() / 3600.0)


@dataclass(frozen=True)
class CaseFilters:
    """A case list's filters (the API's and the desk's query parameters)."""

    state: str = "open"
    provider: str | None = None
    country: str | None = None
    min_age_hours: float | None = None
    max_age_hours: float | None = None
    limit: int = DESK_PAGE
    after: int | None = None

    def query(self, **changes: Any) -> str:
        """The query string of these filters (with ``changes``), for a next-page link."""
        from urllib.parse import urlencode

        values = {
            "state": self.state,
            "provider": self.provider,
            "country": self.country,
            "min_age_hours": self.min_age_hours,
            "max_age_hours": self.max_age_hours,
            "after": self.after,
            **changes,
        }
        return urlencode(
            {
                k: f"{v:g}" if isinstance(v, float) else v
                for k, v in values.items()
                if v not in (None, "")
            }
        )


def _number(params: Mapping[str, str], name: str, *, whole: bool = False) -> float | None:
    raw = (params.get(name) or "").strip()
    if not raw:
        return None
    try:
        value = float(int(raw)) if whole else float(raw)
    except ValueError:
        kind = "a whole number" if whole else "a number"
        raise HttpError(400, f"{name} must be {kind}, got {raw[:40]!r}") from None
    if not math.isfinite(value) or value < 0:
        raise HttpError(400, f"{name} must be a non-negative number, got {raw[:40]!r}")
    return value


def parse_filters(params: Mapping[str, str], *, default_limit: int = DESK_PAGE) -> CaseFilters:
    """Filters from query parameters; :class:`HttpError` 400 naming the bad one."""
    state = (params.get("state") or "open").strip()
    if state not in STATE_CHOICES:
        raise HttpError(
            400, f"state must be open, all or one of {', '.join(case_sm.STATES)}: {state[:40]!r}"
        )
    provider = (params.get("provider") or "").strip() or None
    if provider is not None and len(provider) > MAX_PROVIDER_CHARS:
        raise HttpError(400, f"provider: at most {MAX_PROVIDER_CHARS} characters")
    country = (params.get("country") or "").strip() or None
    if country is not None and not (len(country) == 2 and country.isascii() and country.isalpha()):
        raise HttpError(400, f"country must be an ISO 3166 alpha-2 code, got {country[:40]!r}")
    min_age = _number(params, "min_age_hours")
    max_age = _number(params, "max_age_hours")
    if min_age is not None and max_age is not None and min_age > max_age:
        raise HttpError(400, "min_age_hours is more than max_age_hours")
    limit = _number(params, "limit", whole=True)
    if limit is not None and not 1 <= limit <= MAX_LIMIT:
        raise HttpError(400, f"limit must be 1 to {MAX_LIMIT}")
    after = _number(params, "after", whole=True)
    return CaseFilters(
        state=state,
        provider=provider,
        country=country.upper() if country else None,
        min_age_hours=min_age,
        max_age_hours=max_age,
        limit=int(limit) if limit is not None else default_limit,
        after=int(after) if after is not None else None,
    )


def query_cases(
    session: Session, f: CaseFilters, now: datetime
) -> tuple[list[CaseRow], int | None]:
    """One page of cases by id, and the id to continue after (None: this is the last page).
    Age is counted from the case's confirmation."""
    stmt = select(CaseRow).order_by(CaseRow.id)
    if f.state == "open":
        stmt = stmt.where(CaseRow.state != "closed")
    elif f.state != "all":
        stmt = stmt.where(CaseRow.state == f.state)
    if f.provider:
        stmt = stmt.where(
            (CaseRow.provider_key == f.provider) | (CaseRow.provider_name == f.provider)
        )
    if f.country:
        stmt = stmt.where(CaseRow.country == f.country)
    if f.min_age_hours is not None:
        stmt = stmt.where(CaseRow.confirmed_at <= now - timedelta(hours=f.min_age_hours))
    if f.max_age_hours is not None:
        stmt = stmt.where(CaseRow.confirmed_at >= now - timedelta(hours=f.max_age_hours))
    if f.after is not None:
        stmt = stmt.where(CaseRow.id > f.after)
    rows = list(session.scalars(stmt.limit(f.limit + 1)))
    more = len(rows) > f.limit
    rows = rows[: f.limit]
    return rows, (rows[-1].id if more and rows else None)


def _get_case(session: Session, case_id: int, *, for_update: bool = False) -> CaseRow:
    try:
        return case_sm.get_case(session, case_id, for_update=for_update)
    except case_sm.CaseNotFoundError as err:
        raise HttpError(404, str(err)) from None


def _config() -> scheduler.RemovalConfig | None:
    try:
        return scheduler.current_config()
    except Exception:  # not configured in this process: the pages still show the rest
        return None


def _ladder() -> tuple[scheduler.LadderStep, ...]:
    cfg = _config()
    return cfg.ladder if cfg is not None else scheduler.DEFAULT_LADDER


def ladder_label(case: CaseRow, ladder: tuple[scheduler.LadderStep, ...]) -> str | None:
    """``host (notice 2)``: the ladder step's role and how many notices went out."""
    if not case.notice_count:
        return None
    step = case.ladder_step or 0
    role = ladder[step].role if 0 <= step < len(ladder) else f"step {step}"
    return f"{role.replace('_', ' ')} (notice {case.notice_count})"


def evidence_summary(session: Session, case: CaseRow) -> list[dict[str, Any]]:
    """The case's evidence bundles, newest last: SHA-256 (what the audit chain holds), when,
    the HTTP status, the address, and the SHA-256 of every media file found (never media)."""
    found: dict[str, datetime | None] = {}
    for at, details in session.execute(
        select(CaseEvent.at, CaseEvent.details)
        .where(CaseEvent.case_id == case.id)
        .order_by(CaseEvent.id)
    ):
        sha = details.get("evidence_sha256") if isinstance(details, dict) else None
        if isinstance(sha, str) and sha not in found:
            found[sha] = _aware(at)
    if case.evidence_sha256 and case.evidence_sha256 not in found:
        found[case.evidence_sha256] = None
    cfg = _config()
    out: list[dict[str, Any]] = []
    for sha, at in found.items():
        entry: dict[str, Any] = {
            "sha256": sha,
            "captured_at": at.isoformat() if at else None,
            "http_status": None,
            "resolved_ip": None,
            "media": None,
            "media_sha256": [],
            "page_sha256": None,
            "error": None,
            "current": sha == case.evidence_sha256,
        }
        if cfg is None:
            entry["error"] = "the evidence store is not configured in this process"
        else:
            try:
                bundle = evidence_mod.load(sha, store_dir=cfg.evidence_dir, keyring=cfg.keyring())
            except Exception as err:  # a missing or unreadable bundle: say so, show the rest
                entry["error"] = f"bundle not readable here: {str(err)[:200]}"
            else:
                entry.update(
                    captured_at=_aware(bundle.captured_at).isoformat()  # type: ignore[union-attr]
                    if bundle.captured_at
                    else entry["captured_at"],
                    http_status=bundle.http_status,
                    resolved_ip=bundle.resolved_ip,
                    media=len(bundle.media),
                    media_sha256=sorted(bundle.media_sha256),
                    page_sha256=bundle.page_sha256,
                    error=bundle.error,
                )
        out.append(entry)
    return out


def case_detail(session: Session, case: CaseRow, now: datetime) -> dict[str, Any]:
    """``GET /api/v1/cases/{id}``: :func:`tipline.removal.cases.case_json` with its history,
    the evidence summary, its age and ladder step label."""
    out = case_sm.case_json(session, case, history=True)
    out["age_hours"] = round(_hours_since(case.confirmed_at, now), 3)
    out["ladder_label"] = ladder_label(case, _ladder())
    out["evidence"] = evidence_summary(session, case)
    return out


def _list_json(session: Session, rows: list[CaseRow], now: datetime) -> list[dict[str, Any]]:
    ladder = _ladder()
    out = []
    for c in rows:
        doc = case_sm.case_json(session, c)
        doc["age_hours"] = round(_hours_since(c.confirmed_at, now), 3)
        doc["ladder_label"] = ladder_label(c, ladder)
        out.append(doc)
    return out


@routes.get("/api/v1/cases", tags=["cases"])
async def list_cases_api(
    request: Request, _p: Principal = Depends(require("report:read"))
) -> Response:
    """Cases, oldest first: ``state`` (open, all or a state), ``provider``, ``country``,
    ``min_age_hours``, ``max_age_hours``, ``limit`` (1-500, default 100), ``after``."""
    f = parse_filters(request.query_params)

    def run() -> dict[str, Any]:
        now = _now()
        with _sf(request)() as s:
            rows, next_after = query_cases(s, f, now)
            return {"cases": _list_json(s, rows, now), "next_after": next_after}

    return JSONResponse(await run_in_threadpool(run), headers={"Cache-Control": "no-store"})


def load_stats_summary(sf: sessionmaker[Session]) -> dict[str, Any]:
    """The time-to-removal summary of every case in the database, now."""
    with sf() as s:
        histories = removal_stats.load_histories(s)
    return removal_stats.summarise(histories, now=_now())


@routes.get("/api/v1/cases/stats", tags=["cases"])
async def stats_api(request: Request, _p: Principal = Depends(require("report:read"))) -> Response:
    """Time-to-removal statistics (Kaplan-Meier; open cases censored at now) from report,
    confirmation and first notice, per provider, AS and country: ``format=json`` or ``csv``."""
    fmt = request.query_params.get("format", "json")
    if fmt not in ("json", "csv"):
        raise HttpError(400, "format must be json or csv")
    summary = await run_in_threadpool(load_stats_summary, _sf(request))
    return stats_response(summary, fmt)


@routes.get("/api/v1/cases/{case_id}", tags=["cases"])
async def get_case_api(
    case_id: int, request: Request, _p: Principal = Depends(require("report:read"))
) -> Response:
    """One case with its transitions, evidence summary, notices and re-checks."""

    def run() -> dict[str, Any]:
        with _sf(request)() as s:
            return case_detail(s, _get_case(s, case_id), _now())

    return JSONResponse(await run_in_threadpool(run), headers={"Cache-Control": "no-store"})


# -- acting on cases ----------------------------------------------------------------------------


def _conflict(err: case_sm.CaseError) -> HttpError:
    if isinstance(err, case_sm.CaseNotFoundError):
        return HttpError(404, str(err))
    if isinstance(err, case_sm.HoldPermissionError):
        return HttpError(403, str(err))
    return HttpError(409, str(err))


def _text(body: Mapping[str, Any], name: str, *, required: bool, limit: int) -> str:
    value = body.get(name)
    if value is None or value == "":
        if required:
            raise HttpError(400, f"{name} is required")
        return ""
    if not isinstance(value, str):
        raise HttpError(400, f"{name} must be text")
    value = " ".join(value.split())
    if required and not value:
        raise HttpError(400, f"{name} is required")
    if len(value) > limit:
        raise HttpError(400, f"{name}: at most {limit} characters")
    return value


def parse_until(value: Any, now: datetime) -> datetime:
    """A hold's end: an ISO date-time (UTC if no offset) or a date (the hold lasts through
    that day, UTC); it must be in the future."""
    if not isinstance(value, str) or not value.strip():
        raise HttpError(400, "until is required (an ISO 8601 date or date-time)")
    raw = value.strip()
    try:
        if len(raw) == 10:
            at = datetime.combine(date.fromisoformat(raw) + timedelta(days=1), time(), UTC)
        else:
            at = datetime.fromisoformat(raw.replace("Z", "+00:00"))
            at = at if at.tzinfo else at.replace(tzinfo=UTC)
    except ValueError:
        raise HttpError(400, f"until: {raw[:40]!r} is not an ISO 8601 date or date-time") from None
    at = at.astimezone(UTC)
    if at <= now:
        raise HttpError(400, f"until: {at.isoformat()} is not in the future")
    return at


def do_hold(sf: sessionmaker[Session], p: Principal, case_id: int, body: Mapping[str, Any]) -> str:
    now = _now()
    agency = _text(body, "agency", required=True, limit=case_sm.MAX_AGENCY_CHARS)
    until = parse_until(body.get("until"), now)
    reason = _text(body, "reason", required=False, limit=500)
    with sf() as s, s.begin():
        _get_case(s, case_id)
        try:
            case_sm.hold(
                s,
                case_id,
                agency=agency,
                until=until,
                by=p.actor,
                role=p.role,
                reason=reason,
                now=now,
            )
        except case_sm.CaseError as err:
            raise _conflict(err) from None
    return "held"


def do_release(
    sf: sessionmaker[Session], p: Principal, case_id: int, body: Mapping[str, Any]
) -> str:
    reason = _text(body, "reason", required=False, limit=500) or "released"
    with sf() as s, s.begin():
        _get_case(s, case_id)
        try:
            case_sm.release(s, case_id, by=p.actor, role=p.role, reason=reason, now=_now())
        except case_sm.CaseError as err:
            raise _conflict(err) from None
    return "released"


def do_close(sf: sessionmaker[Session], p: Principal, case_id: int, body: Mapping[str, Any]) -> str:
    reason = _text(body, "reason", required=True, limit=case_sm.MAX_REASON_CHARS)
    with sf() as s, s.begin():
        _get_case(s, case_id)
        try:
            case_sm.close(s, case_id, reason=reason, by=p.actor, now=_now())
        except case_sm.CaseError as err:
            raise _conflict(err) from None
    return "closed"


def _enqueue_step(queue: JobQueue, s: Session, case: CaseRow, now: datetime) -> int:
    # the scheduler's own key (enqueue_due): a tick that sees the same version adds nothing
    return queue.enqueue(
        scheduler.STEP_KIND,
        {"case_id": case.id, "version": case.version},
        dedupe_key=f"removal-step:{case.id}:{case.version}",
        run_after=now,
        max_attempts=5,
        session=s,
    )


def do_recheck(
    sf: sessionmaker[Session], queue: JobQueue, p: Principal, case_id: int
) -> dict[str, Any]:
    """Re-check now: the case's next action (re-check, watch, or the first capture) becomes
    due at once and a ``removal.step`` job is queued for it."""
    now = _now()
    with sf() as s, s.begin():
        case = _get_case(s, case_id, for_update=True)
        if case.state in ("held", "closed"):
            raise HttpError(409, f"case {case_id} is {case.state}: nothing to re-check")
        action = (
            "watch"
            if case.state == "removed"
            else ("recheck" if case.evidence_sha256 else "prepare")
        )
        case_sm.schedule(case, action, now)
        s.flush()
        job = _enqueue_step(queue, s, case, now)
    return {"case_id": case_id, "action": action, "job_id": job, "done": "recheck"}


def do_notify(
    sf: sessionmaker[Session],
    queue: JobQueue,
    p: Principal,
    case_id: int,
    mark_sent: bool,
) -> dict[str, Any]:
    """``tipline case notify``'s three cases: queued notices are sent now (``removal.send``
    jobs due now); manual ones are answered with their text (and with ``mark_sent`` recorded
    as sent by the caller); with no notice waiting a notice round starts."""
    now = _now()
    cfg = _config()
    with sf() as s, s.begin():
        case = _get_case(s, case_id, for_update=True)
        waiting = list(
            s.scalars(
                select(NoticeRow)
                .join(NoticeCase, NoticeCase.notice_id == NoticeRow.id)
                .where(
                    NoticeCase.case_id == case.id,
                    NoticeRow.state.in_((*SENDABLE, "manual_pending", "failed")),
                )
                .order_by(NoticeRow.id)
                .with_for_update()
            )
        )
        if not waiting:
            if case.state in ("held", "closed", "moved"):
                raise HttpError(409, f"case {case_id} is {case.state}: no notice now")
            case_sm.schedule(case, "notice", now)
            s.flush()
            job = _enqueue_step(queue, s, case, now)
            return {"case_id": case_id, "round": True, "job_id": job, "done": "round"}
        sent: list[str] = []
        manual: list[dict[str, Any]] = []
        for n in waiting:
            if n.state in SENDABLE:
                n.send_after = now
                queue.enqueue(
                    scheduler.SEND_KIND,
                    {"notice_id": n.id},
                    dedupe_key=f"removal-send:{n.id}:{n.attempts}:{int(now.timestamp())}",
                    run_after=now,
                    max_attempts=10,
                    session=s,
                )
                sent.append(n.serial)
                continue
            if cfg is None:
                raise HttpError(503, "the removal scheduler is not configured in this process")
            text = notices_mod.render_notice(s, n, cfg.notices)
            entry = {
                "serial": n.serial,
                "state": n.state,
                "to": n.address,
                "organisation": n.organisation,
                "subject": text.subject,
                "text": text.text,
            }
            if mark_sent:
                try:
                    notices_mod.mark_sent(s, n.serial, by=p.actor, settings=cfg.notices, now=now)
                except case_sm.CaseError as err:
                    raise _conflict(err) from None
                entry["state"] = "sent"
            manual.append(entry)
    done = "marked" if mark_sent and manual else "send"
    return {"case_id": case_id, "sending": sent, "manual": manual, "done": done}


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = await request.json()
    except ValueError:
        raise HttpError(400, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise HttpError(400, "the body must be a JSON object")
    return body


@routes.post("/api/v1/cases/{case_id}/hold", tags=["cases"])
async def hold_api(
    case_id: int, request: Request, p: Principal = Depends(require("review:senior"))
) -> Response:
    """A law-enforcement hold ``{"agency", "until", "reason"?}`` (senior analysts, admins):
    no notice goes out until it expires or is released."""
    body = await _json_body(request)
    await run_in_threadpool(do_hold, _sf(request), p, case_id, body)
    return await _case_answer(request, case_id)


@routes.post("/api/v1/cases/{case_id}/release", tags=["cases"])
async def release_api(
    case_id: int, request: Request, p: Principal = Depends(require("review:senior"))
) -> Response:
    """End a hold early ``{"reason"?}`` (senior analysts, admins)."""
    body = await _json_body(request)
    await run_in_threadpool(do_release, _sf(request), p, case_id, body)
    return await _case_answer(request, case_id)


@routes.post("/api/v1/cases/{case_id}/close", tags=["cases"])
async def close_api(
    case_id: int, request: Request, p: Principal = Depends(require("report:write"))
) -> Response:
    """Close a case by hand ``{"reason"}``."""
    body = await _json_body(request)
    await run_in_threadpool(do_close, _sf(request), p, case_id, body)
    return await _case_answer(request, case_id)


@routes.post("/api/v1/cases/{case_id}/recheck", tags=["cases"])
async def recheck_api(
    case_id: int, request: Request, p: Principal = Depends(require("report:write"))
) -> Response:
    """Re-check the location now (queued for a worker): ``202 {"case_id", "action",
    "job_id"}``."""
    await _json_body(request)
    out = await run_in_threadpool(do_recheck, _sf(request), _queue(request), p, case_id)
    out.pop("done")
    return JSONResponse(out, status_code=202)


@routes.post("/api/v1/cases/{case_id}/notify", tags=["cases"])
async def notify_api(
    case_id: int, request: Request, p: Principal = Depends(require("report:write"))
) -> Response:
    """Send queued notices now, answer manual ones (``{"mark_sent": true}`` records them as
    sent by you), or start a notice round: ``202``."""
    body = await _json_body(request)
    mark = body.get("mark_sent", False)
    if not isinstance(mark, bool):
        raise HttpError(400, "mark_sent must be true or false")
    out = await run_in_threadpool(do_notify, _sf(request), _queue(request), p, case_id, mark)
    out.pop("done")
    return JSONResponse(out, status_code=202, headers={"Cache-Control": "no-store"})


async def _case_answer(request: Request, case_id: int) -> Response:
    def run() -> dict[str, Any]:
        with _sf(request)() as s:
            return case_sm.case_json(s, _get_case(s, case_id))

    return JSONResponse(await run_in_threadpool(run))


# -- desk pages -----------------------------------------------------------------------------------


def _desk_row(
    c: CaseRow, now: datetime, ladder: tuple[scheduler.LadderStep, ...]
) -> dict[str, Any]:
    due = _aware(c.next_action_at)
    return {
        "id": c.id,
        "url": c.url,
        "state": c.state,
        "provider": c.provider_name or c.provider_key,
        "asn": c.asn,
        "country": c.country,
        "age_hours": _hours_since(c.confirmed_at, now),
        "ladder_step": ladder_label(c, ladder),
        "next_action": c.next_action,
        "next_due": f"{_fmt(due)}{' (due)' if due <= now else ''}" if due else None,
        "hold": {"agency": c.hold_agency, "until": _fmt(c.hold_until)}
        if c.state == "held"
        else None,
        "flag": c.flag,
    }


def open_by_provider(session: Session, now: datetime, limit: int = 50) -> list[dict[str, Any]]:
    """Open cases per provider (most first) with the oldest one's age."""
    label = func.coalesce(CaseRow.provider_name, CaseRow.provider_key, "unknown")
    rows = session.execute(
        select(label, func.count(), func.min(CaseRow.confirmed_at))
        .where(CaseRow.state != "closed")
        .group_by(label)
        .order_by(func.count().desc(), label)
        .limit(limit)
    ).all()
    out = []
    for provider, count, oldest in rows:
        if isinstance(oldest, str):  # SQLite answers min() of a timestamp as text
            oldest = datetime.fromisoformat(oldest)
        out.append(
            {"provider": provider, "open": int(count), "oldest_hours": _hours_since(oldest, now)}
        )
    return out


def _message(request: Request, p: Principal, status: int, heading: str, text: str) -> Response:
    from tipline.service import desk

    return desk.render(
        request,
        p,
        "message.html",
        status,
        title=heading,
        page="removal",
        heading=heading,
        message=text,
    )


def _removal_page(request: Request, p: Principal) -> Response:
    from tipline.service import desk

    try:
        f = parse_filters(request.query_params)
    except HttpError as err:
        return _message(request, p, 400, "Bad filter", str(err))
    now = _now()
    ladder = _ladder()
    with _sf(request)() as s:
        rows, next_after = query_cases(s, f, now)
        cases = [_desk_row(c, now, ladder) for c in rows]
        by_provider = open_by_provider(s, now)
        counts = case_sm.counts_by_state(s)
    return desk.render(
        request,
        p,
        "removal.html",
        title="Removal",
        page="removal",
        cases=cases,
        states=case_sm.STATES,
        filters=f,
        by_provider=by_provider,
        counts=counts,
        more=next_after is not None,
        next_page="/desk/removal?" + f.query(after=next_after),
    )


@routes.get("/desk/removal", include_in_schema=False)
async def removal_page(
    request: Request, p: Principal = Depends(require("report:read"))
) -> Response:
    return await run_in_threadpool(_removal_page, request, p)


def _detail_text(details: Any) -> str:
    if not isinstance(details, dict) or not details:
        return ""
    parts = [f"{k}={v}" for k, v in details.items() if v not in (None, "", [], {})]
    text = ", ".join(parts)
    return text if len(text) <= 300 else text[:299] + "…"


def _case_view(s: Session, case: CaseRow, now: datetime) -> dict[str, Any]:
    doc = case_detail(s, case, now)
    row = _desk_row(case, now, _ladder())
    first_notice = _aware(case.first_notice_at)
    removed = _aware(case.removed_at)
    timeline = [
        ("Reported", _fmt(case.reported_at)),
        ("Confirmed", _fmt(case.confirmed_at)),
        ("First notice sent", _fmt(first_notice)),
        ("Last notice sent", _fmt(case.last_notice_at)),
        ("Removed", _fmt(removed)),
        ("Reappeared", _fmt(case.reappeared_at)),
        ("Moved", _fmt(case.moved_at)),
        ("Watched until", _fmt(case.watch_until)),
        ("Closed", _fmt(case.closed_at) and f"{_fmt(case.closed_at)}: {case.close_reason or ''}"),
    ]
    to_removal = []
    if removed is not None:
        for label, origin in (
            ("from the report", case.reported_at),
            ("from confirmation", case.confirmed_at),
            ("from the first notice", first_notice),
        ):
            start = _aware(origin)
            if start is not None and start <= removed:
                to_removal.append((label, _hours((removed - start).total_seconds() / 3600.0)))
    return {
        **row,
        "open": doc["open"],
        "opened_at": _fmt(case.created_at),
        "routing": case.routing,
        "timeline": [(k, v) for k, v in timeline if v],
        "to_removal": to_removal,
        "notice_count": case.notice_count,
        "misses": case.consecutive_misses,
        "events": [
            {
                "at": _fmt(datetime.fromisoformat(e["at"])) if e["at"] else None,
                "from_state": e["from_state"],
                "to_state": e["to_state"],
                "by": e["actor"],
                "detail": _detail_text(e["details"]),
            }
            for e in doc["events"]
        ],
        "evidence": [
            {
                **b,
                "captured_at": _fmt(datetime.fromisoformat(b["captured_at"]))
                if b["captured_at"]
                else None,
                "media": "-" if b["media"] is None else b["media"],
            }
            for b in doc["evidence"]
        ],
        "notices": [
            {
                "serial": n["serial"],
                "to": n["to"] or n["organisation"] or n["contact_key"],
                "role": n["role"],
                "kind": n["kind"],
                "channel": n["channel"],
                "step": n["step"],
                "status": n["state"],
                "attempts": n["attempts"],
                "sent_at": _fmt(datetime.fromisoformat(n["sent_at"])) if n["sent_at"] else None,
                "last_error": n["last_error"],
            }
            for n in doc["notices"]
        ],
        "rechecks": [
            {
                "at": _fmt(datetime.fromisoformat(r["at"])) if r["at"] else None,
                "outcome": r["outcome"],
                "http_status": r["http_status"],
                "reason": r["reason"],
            }
            for r in doc["rechecks"]
        ],
    }


def _case_page(
    request: Request,
    p: Principal,
    case_id: int,
    *,
    status: int = 200,
    flash: str = "",
    flash_kind: str = "",
    manual: list[dict[str, Any]] | None = None,
) -> Response:
    from tipline.service import desk

    done = request.query_params.get("done", "")
    if not flash and done in DONE:
        flash, flash_kind = DONE[done], "ok"
    with _sf(request)() as s:
        case = s.get(CaseRow, case_id)
        if case is None:
            return _message(request, p, 404, "No such case", f"no case {case_id}")
        view = _case_view(s, case, _now())
    return desk.render(
        request,
        p,
        "removal_case.html",
        status,
        title=f"Case {case_id}",
        page="removal",
        case=view,
        manual=manual or [],
        flash=flash,
        flash_kind=flash_kind,
    )


@routes.get("/desk/removal/cases/{case_id}", include_in_schema=False)
async def case_page(
    case_id: int, request: Request, p: Principal = Depends(require("report:read"))
) -> Response:
    return await run_in_threadpool(_case_page, request, p, case_id)


def _desk_action(
    request: Request, p: Principal, case_id: int, action: str, form: dict[str, str]
) -> Response:
    sf = _sf(request)
    manual: list[dict[str, Any]] = []
    try:
        if action == "hold":
            done = do_hold(sf, p, case_id, form)
        elif action == "release":
            done = do_release(sf, p, case_id, form)
        elif action == "close":
            done = do_close(sf, p, case_id, form)
        elif action == "recheck":
            done = str(do_recheck(sf, _queue(request), p, case_id)["done"])
        else:
            out = do_notify(sf, _queue(request), p, case_id, form.get("mark_sent") == "1")
            done, manual = str(out["done"]), list(out["manual"])
    except HttpError as err:
        return _case_page(
            request, p, case_id, status=err.status, flash=str(err), flash_kind="error"
        )
    if manual and done != "marked":
        # the text to copy into a portal or a letter: shown on the page, not in a redirect
        return _case_page(
            request,
            p,
            case_id,
            flash=f"{len(manual)} manual notice(s) waiting: send them by hand, then mark them sent",
            flash_kind="info",
            manual=manual,
        )
    return RedirectResponse(f"/desk/removal/cases/{case_id}?done={done}", status_code=303)


async def _form(request: Request) -> dict[str, str]:
    form = await request.form(max_files=0, max_fields=20)
    return {k: v for k, v in form.items() if isinstance(v, str) and k != "csrf_token"}


@routes.post("/desk/removal/cases/{case_id}/hold", include_in_schema=False)
async def hold_form(
    case_id: int, request: Request, p: Principal = Depends(require("review:senior"))
) -> Response:
    return await run_in_threadpool(_desk_action, request, p, case_id, "hold", await _form(request))


@routes.post("/desk/removal/cases/{case_id}/release", include_in_schema=False)
async def release_form(
    case_id: int, request: Request, p: Principal = Depends(require("review:senior"))
) -> Response:
    form = await _form(request)
    return await run_in_threadpool(_desk_action, request, p, case_id, "release", form)


@routes.post("/desk/removal/cases/{case_id}/close", include_in_schema=False)
async def close_form(
    case_id: int, request: Request, p: Principal = Depends(require("report:write"))
) -> Response:
    form = await _form(request)
    return await run_in_threadpool(_desk_action, request, p, case_id, "close", form)


@routes.post("/desk/removal/cases/{case_id}/recheck", include_in_schema=False)
async def recheck_form(
    case_id: int, request: Request, p: Principal = Depends(require("report:write"))
) -> Response:
    form = await _form(request)
    return await run_in_threadpool(_desk_action, request, p, case_id, "recheck", form)


@routes.post("/desk/removal/cases/{case_id}/notify", include_in_schema=False)
async def notify_form(
    case_id: int, request: Request, p: Principal = Depends(require("report:write"))
) -> Response:
    form = await _form(request)
    return await run_in_threadpool(_desk_action, request, p, case_id, "notify", form)


@routes.get("/desk/removal/stats", include_in_schema=False)
async def stats_desk_page(
    request: Request, p: Principal = Depends(require("report:read"))
) -> Response:
    summary = await run_in_threadpool(load_stats_summary, _sf(request))
    return await run_in_threadpool(stats_page, request, p, summary)


def router(ctx: Any = None) -> APIRouter:
    """The case routes and Removal pages (mounted by ``app.include_routers``)."""
    return routes


__all__ = [
    "CaseFilters",
    "case_detail",
    "evidence_summary",
    "ladder_label",
    "load_stats_summary",
    "open_by_provider",
    "parse_filters",
    "parse_until",
    "query_cases",
    "router",
    "stats_charts",
    "stats_page",
    "stats_response",
    "stats_view",
]
