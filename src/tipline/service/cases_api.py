"""Removal cases over HTTP (docs/removal.md, "API and desk"): ``/api/v1/cases...`` and the desk
pages "Removal" and "Removal statistics".

Status: the presentation of the time-to-removal statistics (charts, tables, JSON/CSV answer,
the statistics page) is here and tested; the routes below are the planned surface and are
mounted once the case tables and :mod:`tipline.removal.cases` exist.

Planned surface:

API (in the OpenAPI spec under ``cases``):

* ``GET /api/v1/cases``: cases, oldest first, filters ``state`` (a state or ``open``, the
  default, or ``all``), ``provider``, ``country``, ``min_age_hours``/``max_age_hours``;
  paging by ``limit`` (1-500) and ``after`` (the last id seen) (``report:read``);
* ``GET /api/v1/cases/{id}``: one case with its transitions, evidence summary, notices and
  re-checks (``report:read``);
* ``POST /api/v1/cases/{id}/hold`` ``{"agency", "until"}`` and ``.../release``: a
  law-enforcement hold (``review:senior``: senior analysts and admins only);
* ``POST /api/v1/cases/{id}/recheck``, ``.../notify``, ``.../close`` ``{"reason"}``
  (``report:write``);
* ``GET /api/v1/cases/stats`` (``?format=csv``): time-to-removal statistics
  (:mod:`tipline.removal.stats`) (``report:read``).

Desk pages: ``/desk/removal`` (open cases by age and provider, the ladder step and the next
action due), ``/desk/removal/cases/{id}`` (history, evidence, notices; the hold form only for
seniors, and the route refuses analysts whatever the page shows), ``/desk/removal/stats``
(survival curves and the per provider/AS/country table, drawn by
:mod:`tipline.review.charts`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from tipline.accounts import Principal
from tipline.removal import stats as removal_stats
from tipline.review import charts
from tipline.service.errors import HttpError

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


def router(ctx: Any = None) -> APIRouter:
    """The case routes and Removal pages (mounted by the app; filled in by issue 13's surfaces)."""
    return APIRouter()


__all__ = ["router", "stats_charts", "stats_page", "stats_response", "stats_view"]
