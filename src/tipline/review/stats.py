"""Dashboard statistics for the review desk: queue, throughput, unviewed resolutions, analyst
exposure and AI evidence.

Everything is computed with a handful of aggregate queries (no per-row queries), portable
across SQLite and PostgreSQL: day buckets are conditional counts over UTC day boundaries
computed in Python, so no backend-specific date function is needed.

Definitions (all times UTC):

- **Waiting item**: an item whose status is not final (``confirmed``, ``dismissed``,
  ``auto_confirmed``) and not ``failed``. A cluster *needs review* when its status is
  ``open``, ``in_review`` or ``escalated`` and it has at least one waiting item; its age is
  ``now`` minus the earliest ``first_seen`` of its waiting items.
- **Resolved**: ``confirmed``/``dismissed`` (a human final grade, on the day of
  ``graded_at``) or ``auto_confirmed`` (matched a trusted bank and actioned without a human
  view, on the day of ``first_seen``). The *unviewed share* is auto-confirmed / resolved.
- **Exposure**: the union of a user's :class:`ExposureInterval` rows (overlapping intervals,
  e.g. two browser tabs, count once), clipped to *today* (UTC midnight to ``now``) and to the
  *last 7 days* (``now`` - 7 days to ``now``).
- **AI evidence share**: items whose ``ai_evidence`` is ``strong`` or ``weak`` over all items;
  and the same over the items whose final grade says ``values.ai_generated == "yes"``.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from typing import Any

from sqlalchemy import SQLColumnExpression, Text, and_, case, cast, func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from tipline.store.tables import Cluster, ExposureInterval, Grade, Item, User

#: Item statuses that end review (a human or a trusted bank decided).
HUMAN_FINAL = ("confirmed", "dismissed")
AUTO_FINAL = ("auto_confirmed", "auto_dismissed")
RESOLVED = HUMAN_FINAL + AUTO_FINAL
#: Items in these statuses are not waiting for anyone.
NOT_WAITING = (*RESOLVED, "failed", "container")
#: Cluster statuses that may still need review.
CLUSTER_ACTIVE = ("open", "in_review", "escalated")
AI_EVIDENCE_VALUES = ("strong", "weak")

#: Queue age buckets: (label, lower bound in hours inclusive, upper bound exclusive or None).
AGE_BUCKETS: tuple[tuple[str, float, float | None], ...] = (
    ("<1h", 0.0, 1.0),
    ("1-4h", 1.0, 4.0),
    ("4-24h", 4.0, 24.0),
    ("1-3d", 24.0, 72.0),
    (">3d", 72.0, None),
)
EXPOSURE_WEEK = timedelta(days=7)
MAX_DAYS = 366


@dataclass(frozen=True, slots=True)
class AgeBucket:
    label: str
    clusters: int


@dataclass(frozen=True, slots=True)
class QueueStats:
    #: Clusters needing review.
    clusters: int
    #: Waiting items in those clusters.
    items_waiting: int
    #: Age of the oldest cluster in hours (None: the queue is empty).
    oldest_age_hours: float | None
    histogram: tuple[AgeBucket, ...]


@dataclass(frozen=True, slots=True)
class DayStats:
    day: date
    #: Items whose human final grade (confirmed/dismissed) was given that day.
    human_graded: int
    #: Items auto-confirmed that day (by first_seen).
    auto_confirmed: int
    #: Grade rows submitted that day (analyst and senior).
    grades: int

    @property
    def resolved(self) -> int:
        return self.human_graded + self.auto_confirmed

    @property
    def unviewed_share(self) -> float | None:
        """Share of the day's resolved items resolved without a human view (None: none)."""
        return _share(self.auto_confirmed, self.resolved)


@dataclass(frozen=True, slots=True)
class ResolvedStats:
    #: All resolved items, every day (confirmed + dismissed + auto_confirmed).
    resolved: int
    #: Of which auto-confirmed (no human view).
    auto_confirmed: int

    @property
    def unviewed_share(self) -> float | None:
        return _share(self.auto_confirmed, self.resolved)


@dataclass(frozen=True, slots=True)
class ExposureStats:
    username: str
    minutes_today: float
    minutes_7d: float


@dataclass(frozen=True, slots=True)
class AIStats:
    items: int
    #: Items with ai_evidence strong or weak.
    items_with_evidence: int
    #: Items whose final grade has values.ai_generated == "yes".
    graded_ai_yes: int
    #: Of which had ai_evidence strong or weak.
    graded_ai_yes_with_evidence: int

    @property
    def evidence_share(self) -> float | None:
        return _share(self.items_with_evidence, self.items)

    @property
    def graded_ai_yes_evidence_share(self) -> float | None:
        return _share(self.graded_ai_yes_with_evidence, self.graded_ai_yes)


@dataclass(frozen=True, slots=True)
class Dashboard:
    generated_at: datetime
    days: int
    queue: QueueStats
    #: One entry per UTC day, oldest first, ending with ``generated_at``'s day.
    daily: tuple[DayStats, ...]
    #: Over all time.
    resolved_all_time: ResolvedStats
    #: Sorted by username.
    exposure: tuple[ExposureStats, ...]
    ai: AIStats

    @property
    def resolved_window(self) -> ResolvedStats:
        """Resolved items over the ``days`` shown."""
        return ResolvedStats(
            resolved=sum(d.resolved for d in self.daily),
            auto_confirmed=sum(d.auto_confirmed for d in self.daily),
        )


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


# -- queue ----------------------------------------------------------------------------------


def _queue(session: Session, now: datetime) -> QueueStats:
    per_cluster = (
        select(
            Item.cluster_id.label("cluster_id"),
            func.count(Item.id).label("n"),
            func.min(Item.first_seen).label("oldest"),
        )
        .join(Cluster, Cluster.id == Item.cluster_id)
        .where(Cluster.status.in_(CLUSTER_ACTIVE), Item.status.not_in(NOT_WAITING))
        .group_by(Item.cluster_id)
        .subquery()
    )
    bucket_cols: list[ColumnElement[Any]] = []
    for _label, lo, hi in AGE_BUCKETS:
        # age >= lo  <=>  oldest <= now - lo;   age < hi  <=>  oldest > now - hi
        conds: list[ColumnElement[bool]] = []
        if lo > 0:
            conds.append(per_cluster.c.oldest <= now - timedelta(hours=lo))
        if hi is not None:
            conds.append(per_cluster.c.oldest > now - timedelta(hours=hi))
        bucket_cols.append(func.count(case((and_(*conds), 1))))
    row = session.execute(
        select(
            func.count(),
            func.coalesce(func.sum(per_cluster.c.n), 0),
            func.min(per_cluster.c.oldest),
            *bucket_cols,
        ).select_from(per_cluster)
    ).one()
    clusters, items, oldest = int(row[0]), int(row[1]), row[2]
    oldest_dt = _as_utc(oldest) if oldest is not None else None
    return QueueStats(
        clusters=clusters,
        items_waiting=items,
        oldest_age_hours=(now - oldest_dt).total_seconds() / 3600 if oldest_dt else None,
        histogram=tuple(
            AgeBucket(label, int(n))
            for (label, _lo, _hi), n in zip(AGE_BUCKETS, row[3:], strict=True)
        ),
    )


def _as_utc(value: datetime | str) -> datetime:
    """A MIN() over a UTCDateTime column, as an aware UTC datetime on both backends."""
    if isinstance(value, str):  # pragma: no cover - SQLite without result typing
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# -- throughput -----------------------------------------------------------------------------


def _day_bounds(first: date, days: int) -> list[tuple[datetime, datetime]]:
    starts = [datetime.combine(first + timedelta(days=i), time(0), UTC) for i in range(days + 1)]
    return list(pairwise(starts))


def _per_day(
    session: Session,
    col: SQLColumnExpression[datetime | None],
    bounds: Sequence[tuple[datetime, datetime]],
    *where: ColumnElement[bool],
) -> list[int]:
    """Rows whose ``col`` falls in each [start, end) bound: one query, conditional counts."""
    counts = [func.count(case((and_(col >= lo, col < hi), 1))) for lo, hi in bounds]
    row = session.execute(
        select(*counts).where(col >= bounds[0][0], col < bounds[-1][1], *where)
    ).one()
    return [int(n) for n in row]


def _daily(session: Session, now: datetime, days: int) -> tuple[DayStats, ...]:
    first = now.date() - timedelta(days=days - 1)
    bounds = _day_bounds(first, days)
    human = _per_day(session, Item.graded_at, bounds, Item.status.in_(HUMAN_FINAL))
    auto = _per_day(session, Item.first_seen, bounds, Item.status.in_(AUTO_FINAL))
    grades = _per_day(session, Grade.created_at, bounds)
    return tuple(
        DayStats(day=lo.date(), human_graded=h, auto_confirmed=a, grades=g)
        for (lo, _hi), h, a, g in zip(bounds, human, auto, grades, strict=True)
    )


def _resolved_all_time(session: Session) -> ResolvedStats:
    auto = func.count(case((Item.status.in_(AUTO_FINAL), 1)))
    row = session.execute(select(func.count(), auto).where(Item.status.in_(RESOLVED))).one()
    return ResolvedStats(resolved=int(row[0]), auto_confirmed=int(row[1]))


# -- exposure -------------------------------------------------------------------------------


def _merge(intervals: Iterable[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    out: list[tuple[datetime, datetime]] = []
    for start, end in sorted(intervals):
        if end <= start:
            continue
        if out and start <= out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def _clipped_minutes(
    intervals: Sequence[tuple[datetime, datetime]], lo: datetime, hi: datetime
) -> float:
    total = timedelta(0)
    for start, end in intervals:
        s, e = max(start, lo), min(end, hi)
        if e > s:
            total += e - s
    return total.total_seconds() / 60


def _exposure(session: Session, now: datetime) -> tuple[ExposureStats, ...]:
    week_start = now - EXPOSURE_WEEK
    today_start = datetime.combine(now.date(), time(0), UTC)
    rows = session.execute(
        select(User.username, ExposureInterval.started_at, ExposureInterval.ended_at)
        .join(User, User.id == ExposureInterval.user_id)
        .where(ExposureInterval.started_at < now, ExposureInterval.ended_at > week_start)
    ).all()
    by_user: dict[str, list[tuple[datetime, datetime]]] = defaultdict(list)
    for username, started, ended in rows:
        by_user[username].append((started, ended))
    out = []
    for username in sorted(by_user):
        merged = _merge(by_user[username])
        out.append(
            ExposureStats(
                username=username,
                minutes_today=_clipped_minutes(merged, today_start, now),
                minutes_7d=_clipped_minutes(merged, week_start, now),
            )
        )
    return tuple(out)


# -- AI evidence ----------------------------------------------------------------------------


def _json_scalar(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _ai(session: Session) -> AIStats:
    # JSON columns have no equality on PostgreSQL (type json), so group on their text form and
    # decode the few distinct values here; the path lookup is portable through SQLAlchemy.
    inner = select(
        cast(Item.ai_evidence, Text).label("evidence"),
        Item.grade[("values", "ai_generated")].as_string().label("ai_generated"),
    ).subquery()
    rows = session.execute(
        select(inner.c.evidence, inner.c.ai_generated, func.count()).group_by(
            inner.c.evidence, inner.c.ai_generated
        )
    ).all()
    items = with_evidence = ai_yes = ai_yes_with_evidence = 0
    for evidence_text, ai_generated, n in rows:
        has_evidence = _json_scalar(evidence_text) in AI_EVIDENCE_VALUES
        items += n
        with_evidence += n if has_evidence else 0
        if ai_generated == "yes":
            ai_yes += n
            ai_yes_with_evidence += n if has_evidence else 0
    return AIStats(
        items=items,
        items_with_evidence=with_evidence,
        graded_ai_yes=ai_yes,
        graded_ai_yes_with_evidence=ai_yes_with_evidence,
    )


# -- public ---------------------------------------------------------------------------------


def dashboard(session: Session, now: datetime, days: int = 14) -> Dashboard:
    """The review dashboard as of ``now`` (timezone-aware), with ``days`` days of history."""
    if now.tzinfo is None:
        raise ValueError("dashboard() needs a timezone-aware now, e.g. datetime.now(UTC)")
    if not 1 <= days <= MAX_DAYS:
        raise ValueError(f"days must be between 1 and {MAX_DAYS}, got {days}")
    now = now.astimezone(UTC)
    return Dashboard(
        generated_at=now,
        days=days,
        queue=_queue(session, now),
        daily=_daily(session, now, days),
        resolved_all_time=_resolved_all_time(session),
        exposure=_exposure(session, now),
        ai=_ai(session),
    )


def dashboard_json(d: Dashboard) -> dict[str, Any]:
    """The dashboard as plain JSON-serialisable data (dates as ISO strings)."""
    window = d.resolved_window
    return {
        "generated_at": d.generated_at.isoformat(),
        "days": d.days,
        "queue": {
            "clusters": d.queue.clusters,
            "items_waiting": d.queue.items_waiting,
            "oldest_age_hours": d.queue.oldest_age_hours,
            "age_histogram": [
                {"bucket": b.label, "clusters": b.clusters} for b in d.queue.histogram
            ],
        },
        "daily": [
            {
                "day": x.day.isoformat(),
                "human_graded": x.human_graded,
                "auto_confirmed": x.auto_confirmed,
                "grades": x.grades,
                "unviewed_share": x.unviewed_share,
            }
            for x in d.daily
        ],
        "resolved": {
            "all_time": {
                "resolved": d.resolved_all_time.resolved,
                "auto_confirmed": d.resolved_all_time.auto_confirmed,
                "unviewed_share": d.resolved_all_time.unviewed_share,
            },
            "window": {
                "resolved": window.resolved,
                "auto_confirmed": window.auto_confirmed,
                "unviewed_share": window.unviewed_share,
            },
        },
        "exposure": [
            {"username": e.username, "minutes_today": e.minutes_today, "minutes_7d": e.minutes_7d}
            for e in d.exposure
        ],
        "ai": {
            "items": d.ai.items,
            "items_with_evidence": d.ai.items_with_evidence,
            "evidence_share": d.ai.evidence_share,
            "graded_ai_yes": d.ai.graded_ai_yes,
            "graded_ai_yes_with_evidence": d.ai.graded_ai_yes_with_evidence,
            "graded_ai_yes_evidence_share": d.ai.graded_ai_yes_evidence_share,
        },
    }


CSV_COLUMNS = ("section", "key", "metric", "value")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: object) -> str:
    """A CSV cell; text that a spreadsheet would run as a formula is prefixed with a quote."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def dashboard_csv(d: Dashboard) -> str:
    """The dashboard as one long-format CSV (``section,key,metric,value``): filter on
    ``section`` (queue, age, daily, resolved, exposure, ai) in a spreadsheet."""
    rows: list[tuple[str, str, str, object]] = [
        ("queue", "", "clusters", d.queue.clusters),
        ("queue", "", "items_waiting", d.queue.items_waiting),
        ("queue", "", "oldest_age_hours", d.queue.oldest_age_hours),
    ]
    rows += [("age", b.label, "clusters", b.clusters) for b in d.queue.histogram]
    for x in d.daily:
        day = x.day.isoformat()
        rows += [
            ("daily", day, "human_graded", x.human_graded),
            ("daily", day, "auto_confirmed", x.auto_confirmed),
            ("daily", day, "grades", x.grades),
            ("daily", day, "unviewed_share", x.unviewed_share),
        ]
    for key, r in (("all_time", d.resolved_all_time), ("window", d.resolved_window)):
        rows += [
            ("resolved", key, "resolved", r.resolved),
            ("resolved", key, "auto_confirmed", r.auto_confirmed),
            ("resolved", key, "unviewed_share", r.unviewed_share),
        ]
    for e in d.exposure:
        rows += [
            ("exposure", e.username, "minutes_today", e.minutes_today),
            ("exposure", e.username, "minutes_7d", e.minutes_7d),
        ]
    rows += [
        ("ai", "", "items", d.ai.items),
        ("ai", "", "items_with_evidence", d.ai.items_with_evidence),
        ("ai", "", "evidence_share", d.ai.evidence_share),
        ("ai", "", "graded_ai_yes", d.ai.graded_ai_yes),
        ("ai", "", "graded_ai_yes_with_evidence", d.ai.graded_ai_yes_with_evidence),
        ("ai", "", "graded_ai_yes_evidence_share", d.ai.graded_ai_yes_evidence_share),
    ]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows([_cell(c) for c in row] for row in rows)
    return buf.getvalue()


__all__ = [
    "AGE_BUCKETS",
    "AIStats",
    "AgeBucket",
    "Dashboard",
    "DayStats",
    "ExposureStats",
    "QueueStats",
    "ResolvedStats",
    "dashboard",
    "dashboard_csv",
    "dashboard_json",
]
