"""Time-to-removal statistics that count open cases properly (issue 13, item 7).

A location still online has not been removed *yet*: dropping it would make removal look
faster than it is, counting it as removed at ``now`` would too. Kaplan-Meier survival
treats it as right-censored at ``now`` (or at the time its case was closed without a
removal: a case closed by hand, or a location that moved away and was handed on).

Three origins are computed from the stored timestamps, because hotlines count differently:

- ``report``: from the report's arrival (INHOPE counts report -> removal);
- ``confirmation``: from the analyst's confirmation;
- ``notice``: from the first notice sent (IWF counts notice -> removal). Cases never
  notified have no origin and are left out of this one (counted in ``excluded``).

For each origin and group (all cases, per provider, per AS, per country) the summary gives
the survival curve S(t) (share still online t hours after the origin), the median and p90
time to removal as Kaplan-Meier quantiles (the smallest t with ``1 - S(t) >= q``; ``None``
when the curve never drops that far, e.g. when most cases are still open), and the share
removed within 24/48/72 h, ``1 - S(t)``.

Everything is numpy-vectorised over columnar arrays (:class:`CaseHistories`): one sort per
origin, then the product-limit estimator for every group at once (segmented cumulative sums
of ``log(1 - d/n)``), so a million histories take well under two seconds
(``bench/removal.py``).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

ORIGINS = ("report", "confirmation", "notice")
GROUPINGS = ("provider", "asn", "country")
WITHIN_HOURS: tuple[float, ...] = (24.0, 48.0, 72.0)
#: Hours at which the summary states S(t) for all cases (the dashboard's chart).
GRID_HOURS: tuple[float, ...] = (0, 6, 12, 24, 36, 48, 72, 96, 120, 168, 240, 336, 504, 720)
#: Group label for a case whose provider/AS/country is unknown (e.g. attribution failed).
UNKNOWN = "unknown"
#: Survival values within this of a threshold count as reaching it (exp(log(.)) rounding).
_EPS = 1e-9
_ORIGIN_FIELD = {"report": "reported_at", "confirmation": "confirmed_at", "notice": "notified_at"}
CSV_COLUMNS = (
    "origin",
    "group_by",
    "group",
    "cases",
    "removed",
    "censored",
    "median_hours",
    "p90_hours",
    *(f"removed_within_{int(h)}h" for h in WITHIN_HOURS),
)


@dataclass(frozen=True)
class SurvivalCurve:
    """The Kaplan-Meier estimate for one set of durations.

    ``times`` are the distinct durations (hours, ascending) with at least one removal;
    ``survival[i]`` is S just after ``times[i]``, ``at_risk[i]`` the cases still online just
    before it and ``removed[i]`` the removals at it. S is 1 before ``times[0]``.
    """

    times: FloatArray
    survival: FloatArray
    at_risk: IntArray
    removed: IntArray
    cases: int
    censored: int

    def at(self, hours: float) -> float:
        """S(hours): the estimated share still online ``hours`` after the origin."""
        k = int(np.searchsorted(self.times, hours, side="right"))
        return 1.0 if k == 0 else float(self.survival[k - 1])

    def quantile(self, share_removed: float) -> float | None:
        """The smallest t with ``1 - S(t) >= share_removed``; None if never reached."""
        if not 0.0 < share_removed <= 1.0:
            raise ValueError(f"share_removed must be in (0, 1], got {share_removed!r}")
        reached = np.flatnonzero(self.survival <= 1.0 - share_removed + _EPS)
        return float(self.times[reached[0]]) if reached.size else None

    def points(self, max_points: int | None = None) -> list[list[float]]:
        """``[[0, 1], [t, S(t)], ...]`` for charts, at most ``max_points`` (evenly thinned;
        the first and the last step are always kept)."""
        idx = np.arange(self.times.size)
        if max_points is not None and idx.size > max(max_points - 1, 1):
            idx = np.unique(np.linspace(0, idx.size - 1, max(max_points - 1, 2)).round()).astype(
                np.int64
            )
        return [[0.0, 1.0]] + [
            [round(float(self.times[i]), 4), round(float(self.survival[i]), 6)] for i in idx
        ]


def kaplan_meier(durations: npt.ArrayLike, removed: npt.ArrayLike) -> SurvivalCurve:
    """The product-limit estimator: ``durations`` in hours (finite, >= 0), ``removed`` True
    where the duration ends in a removal and False where it is censored (still online)."""
    d = np.asarray(durations, dtype=np.float64)
    e = np.asarray(removed, dtype=bool)
    if d.shape != e.shape or d.ndim != 1:
        raise ValueError("durations and removed must be 1-d arrays of the same length")
    if d.size and (not np.isfinite(d).all() or (d < 0).any()):
        raise ValueError("durations must be finite and non-negative")
    codes = np.zeros(d.size, dtype=np.int64)
    grouped = _grouped_km(codes, 1, d, e)
    return grouped.curve(0)


@dataclass(frozen=True)
class _GroupedKM:
    """Kaplan-Meier steps of several groups in one set of arrays: the steps (distinct
    (group, time) runs with a removal) of group g are ``step_start[g]:step_start[g+1]``."""

    step_time: FloatArray
    step_survival: FloatArray
    step_at_risk: IntArray
    step_removed: IntArray
    step_start: IntArray
    cases: IntArray
    events: IntArray

    def curve(self, g: int) -> SurvivalCurve:
        s = slice(int(self.step_start[g]), int(self.step_start[g + 1]))
        return SurvivalCurve(
            times=self.step_time[s],
            survival=self.step_survival[s],
            at_risk=self.step_at_risk[s],
            removed=self.step_removed[s],
            cases=int(self.cases[g]),
            censored=int(self.cases[g] - self.events[g]),
        )

    def survival_at(self, hours: float) -> FloatArray:
        """S(hours) of every group."""
        before = self.step_time <= hours
        n_groups = self.cases.size
        counts = _segment_sums(before, self.step_start, n_groups)
        last = self.step_start[:-1] + counts - 1
        out = np.ones(n_groups, dtype=np.float64)
        has = counts > 0
        out[has] = self.step_survival[last[has]]
        return out

    def quantile(self, share_removed: float) -> FloatArray:
        """Per group, the smallest t with ``1 - S(t) >= share_removed``; NaN if never."""
        n_groups = self.cases.size
        out = np.full(n_groups, np.nan)
        # S never rises within a group, so the steps that reach the threshold are a suffix
        # of the group's steps: the first of them is the group's end minus their count.
        hit = self.step_survival <= 1.0 - share_removed + _EPS
        counts = _segment_sums(hit, self.step_start, n_groups)
        reached = counts > 0
        out[reached] = self.step_time[self.step_start[1:][reached] - counts[reached]]
        return out


def _segment_sums(values: BoolArray, starts: IntArray, n_groups: int) -> IntArray:
    """How many of ``values[starts[g]:starts[g+1]]`` are true, for each g."""
    total = np.zeros(values.size + 1, dtype=np.int64)
    np.cumsum(values, out=total[1:])
    return (total[starts[1:]] - total[starts[:-1]])[:n_groups]


def _by_duration(d: FloatArray, e: BoolArray) -> tuple[IntArray, FloatArray, BoolArray]:
    """The order by duration and both columns in it (ties in any order: they form one run)."""
    order = np.argsort(d)
    return order.astype(np.int64), d[order], e[order]


def _grouped_km(
    codes: IntArray, n_groups: int, d: FloatArray, e: BoolArray, *, sorted_by_duration: bool = False
) -> _GroupedKM:
    """Kaplan-Meier for every group at once. ``codes`` in ``[0, n_groups)``."""
    if not sorted_by_duration:
        order, d, e = _by_duration(d, e)
        codes = codes[order]
    # A stable sort by group keeps durations ascending within each group; small codes sort
    # as 16-bit integers (numpy's radix sort: several times faster on a million rows).
    if n_groups > 1:
        key = codes.astype(np.uint16) if n_groups <= 1 << 16 else codes
        order = np.argsort(key, kind="stable")
        c, t, ev = key[order], d[order], e[order]
    else:
        c, t, ev = codes, d, e
    n = t.size
    cases = np.bincount(c, minlength=n_groups).astype(np.int64)
    group_end = np.cumsum(cases)  # one past the group's last position
    if n == 0:
        empty_f, empty_i = np.empty(0), np.empty(0, dtype=np.int64)
        return _GroupedKM(
            empty_f, empty_f, empty_i, empty_i, np.zeros(n_groups + 1, np.int64), cases, cases
        )
    new_run = np.empty(n, dtype=bool)
    new_run[0] = True
    new_run[1:] = (c[1:] != c[:-1]) | (t[1:] != t[:-1])
    run_start = np.flatnonzero(new_run)
    run_group = c[run_start]
    run_removed = np.add.reduceat(ev.astype(np.int32), run_start)
    # Everyone of the group from this run on is still at risk just before its time.
    run_at_risk = group_end[run_group] - run_start
    events = np.bincount(run_group, weights=run_removed, minlength=n_groups).astype(np.int64)
    # Only runs with a removal change S.
    keep = run_removed > 0
    s_group, s_time = run_group[keep], t[run_start[keep]]
    s_removed, s_at_risk = run_removed[keep], run_at_risk[keep]
    factor = 1.0 - s_removed / s_at_risk
    # S within a group is the running product of its factors: a segmented cumulative sum of
    # logs. A factor of 0 (every case still at risk removed at once) can only be a group's
    # last step; it is left out of the sum and set to 0 afterwards so it cannot spill over.
    zero = factor <= 0.0
    logs = np.log(np.where(zero, 1.0, factor))
    step_start = np.concatenate(([0], np.cumsum(np.bincount(s_group, minlength=n_groups))))
    running = np.cumsum(logs)
    before_group = np.concatenate(([0.0], running))[step_start[:-1]]
    per_step_offset = np.repeat(before_group, np.diff(step_start))
    survival = np.exp(running - per_step_offset)
    survival[zero] = 0.0
    return _GroupedKM(
        step_time=s_time,
        step_survival=np.minimum(survival, 1.0),
        step_at_risk=s_at_risk.astype(np.int64),
        step_removed=s_removed.astype(np.int64),
        step_start=step_start.astype(np.int64),
        cases=cases,
        events=events,
    )


@dataclass(frozen=True)
class RowError:
    """One case history that could not be used, and why (the others still count)."""

    index: int
    case_id: str | None
    error: str

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "case_id": self.case_id, "error": self.error}


@dataclass(frozen=True)
class Grouping:
    """A categorical column: ``codes[i]`` indexes ``labels``."""

    codes: IntArray
    labels: tuple[str, ...]


@dataclass(frozen=True)
class CaseHistories:
    """Case timestamps as columns: seconds since the Unix epoch (UTC), NaN where unknown.

    ``removed_at`` is the first removal (NaN: not removed); ``ended_at`` is when a case ended
    without a removal (closed, moved away: censored there); NaN for both means still open,
    censored at ``now``.
    """

    reported_at: FloatArray
    confirmed_at: FloatArray
    notified_at: FloatArray
    removed_at: FloatArray
    ended_at: FloatArray
    groups: Mapping[str, Grouping] = field(default_factory=dict)
    errors: tuple[RowError, ...] = ()

    def __len__(self) -> int:
        return int(self.reported_at.size)

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any] | Any]) -> CaseHistories:
        """From mappings or objects with ``reported_at``, ``confirmed_at``, ``notified_at``
        (first notice), ``removed_at``, ``ended_at`` (aware datetimes, ISO 8601 strings or
        None) and optional ``provider``, ``asn``, ``country``, ``case_id``. A record that
        cannot be read is left out with a :class:`RowError`; the rest still count."""
        columns: dict[str, list[float]] = {f: [] for f in _TIME_FIELDS}
        group_codes: dict[str, list[int]] = {g: [] for g in GROUPINGS}
        group_index: dict[str, dict[str, int]] = {g: {} for g in GROUPINGS}
        errors: list[RowError] = []
        for i, record in enumerate(records):
            case_id = _field(record, "case_id")
            try:
                times = {f: _epoch(_field(record, f), f) for f in _TIME_FIELDS}
                _check_order(times)
                keys = {g: _group_key(g, _field(record, g)) for g in GROUPINGS}
            except ValueError as exc:
                errors.append(RowError(i, None if case_id is None else str(case_id), str(exc)))
                continue
            for f, v in times.items():
                columns[f].append(v)
            for g, key in keys.items():
                codes = group_index[g]
                group_codes[g].append(codes.setdefault(key, len(codes)))
        return cls(
            **{f: np.asarray(v, dtype=np.float64) for f, v in columns.items()},
            groups={
                g: Grouping(
                    np.asarray(group_codes[g], dtype=np.int64), tuple(group_index[g].keys())
                )
                for g in GROUPINGS
            },
            errors=tuple(errors),
        )


_TIME_FIELDS = ("reported_at", "confirmed_at", "notified_at", "removed_at", "ended_at")


def _field(record: Mapping[str, Any] | Any, name: str) -> Any:
    if isinstance(record, Mapping):
        return record.get(name)
    return getattr(record, name, None)


def _epoch(value: Any, name: str) -> float:
    if value is None or value == "":
        return math.nan
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{name}: not an ISO 8601 timestamp: {value[:64]!r}") from None
    if not isinstance(value, datetime):
        raise ValueError(f"{name}: expected a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name}: naive timestamp (no time zone): {value.isoformat()}")
    return value.timestamp()


def _check_order(times: Mapping[str, float]) -> None:
    reported = times["reported_at"]
    if math.isnan(reported):
        raise ValueError("reported_at is missing")
    for name in ("confirmed_at", "notified_at", "removed_at", "ended_at"):
        v = times[name]
        if not math.isnan(v) and v < reported:
            raise ValueError(f"{name} is before reported_at")


def _group_key(grouping: str, value: Any) -> str:
    if value is None or value == "":
        return UNKNOWN
    if grouping == "asn":
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError(f"asn: expected an integer, got {type(value).__name__}")
        text = str(value).upper().removeprefix("AS")
        if not text.isdigit() or not 0 <= int(text) < 2**32:
            raise ValueError(f"asn: not an AS number: {str(value)[:32]!r}")
        return str(int(text))
    if not isinstance(value, str):
        raise ValueError(f"{grouping}: expected text, got {type(value).__name__}")
    return value.upper() if grouping == "country" else value


def durations(
    histories: CaseHistories, origin: str, now: datetime
) -> tuple[FloatArray, BoolArray, BoolArray, dict[str, int]]:
    """Hours from ``origin`` to removal (or to censoring) per case, whether it was removed,
    which cases are used, and how many were left out and why."""
    if origin not in _ORIGIN_FIELD:
        raise ValueError(f"unknown origin {origin!r}: expected one of {', '.join(ORIGINS)}")
    now_s = _epoch(now, "now")
    start = getattr(histories, _ORIGIN_FIELD[origin])
    removed = ~np.isnan(histories.removed_at) & (histories.removed_at <= now_s)
    end = np.where(
        removed,
        histories.removed_at,
        np.where(np.isnan(histories.ended_at), now_s, np.minimum(histories.ended_at, now_s)),
    )
    hours = (end - start) / 3600.0
    no_origin = np.isnan(start)
    # Removed before the origin: e.g. taken down by the host before any notice went out.
    # It says nothing about notice -> removal, so it is left out of that origin.
    before_origin = ~no_origin & (hours < 0)
    used = ~no_origin & ~before_origin
    excluded = {
        "no_origin": int(no_origin.sum()),
        "ended_before_origin": int(before_origin.sum()),
    }
    return np.where(used, hours, 0.0), removed, used, excluded


def summarise(
    histories: CaseHistories,
    *,
    now: datetime,
    origins: Sequence[str] = ORIGINS,
    group_by: Sequence[str] = GROUPINGS,
    within_hours: Sequence[float] = WITHIN_HOURS,
    curve_points: int = 200,
    grid_hours: Sequence[float] = GRID_HOURS,
    min_group_cases: int = 1,
) -> dict[str, Any]:
    """The JSON-able summary: per origin, all cases (with the survival curve, thinned to
    ``curve_points``, and S at each of ``grid_hours`` for charts) and each grouping's groups
    (largest first, those with at least ``min_group_cases`` cases)."""
    for g in group_by:
        if g not in histories.groups:
            raise ValueError(f"unknown grouping {g!r}: expected one of {', '.join(GROUPINGS)}")
    out: dict[str, Any] = {
        "now": now.astimezone(UTC).isoformat(),
        "cases": len(histories),
        "within_hours": [float(h) for h in within_hours],
        "errors": [e.to_json() for e in histories.errors],
        "origins": {},
    }
    for origin in origins:
        hours, removed, used, excluded = durations(histories, origin, now)
        # One sort by duration per origin serves all cases and every grouping.
        used_index = np.flatnonzero(used)
        order, d, e = _by_duration(hours[used_index], removed[used_index])
        used_sorted = used_index[order]
        overall = _grouped_km(np.zeros(d.size, dtype=np.int64), 1, d, e, sorted_by_duration=True)
        entry: dict[str, Any] = {
            "excluded": excluded,
            "all": _rows(overall, ("all",), within_hours)[0],
        }
        curve = overall.curve(0)
        entry["all"]["curve"] = curve.points(curve_points)
        entry["all"]["survival_at"] = [[float(h), round(curve.at(h), 6)] for h in grid_hours]
        entry["by"] = {}
        for g in group_by:
            grouping = histories.groups[g]
            km = _grouped_km(
                grouping.codes[used_sorted], len(grouping.labels), d, e, sorted_by_duration=True
            )
            rows = [
                r
                for r in _rows(km, grouping.labels, within_hours)
                if r["cases"] >= max(min_group_cases, 1)
            ]
            rows.sort(key=lambda r: (-r["cases"], r["group"]))
            entry["by"][g] = rows
        out["origins"][origin] = entry
    return out


def _rows(
    km: _GroupedKM, labels: Sequence[str], within_hours: Sequence[float]
) -> list[dict[str, Any]]:
    # Rounded and turned into Python values column by column (one row per group: thousands).
    median = _optional(km.quantile(0.5), 4)
    p90 = _optional(km.quantile(0.9), 4)
    has_cases = km.cases > 0
    within = {
        _hours_label(h): _optional(np.where(has_cases, 1.0 - km.survival_at(h), np.nan), 6)
        for h in within_hours
    }
    cases, removed = km.cases.tolist(), km.events.tolist()
    return [
        {
            "group": label,
            "cases": cases[g],
            "removed": removed[g],
            "censored": cases[g] - removed[g],
            "median_hours": median[g],
            "p90_hours": p90[g],
            "removed_within": {w: v[g] for w, v in within.items()},
        }
        for g, label in enumerate(labels)
    ]


def _optional(values: FloatArray, decimals: int) -> list[float | None]:
    """Rounded floats, None for NaN (a quantile the curve never reaches)."""
    rounded: list[float] = np.round(values, decimals).tolist()
    return [None if math.isnan(v) else v for v in rounded]


def _hours_label(h: float) -> str:
    return f"{int(h) if float(h).is_integer() else h}h"


def to_csv(summary: Mapping[str, Any]) -> str:
    """One row per origin and group (``group_by`` "all" for all cases); empty cells for
    quantiles the curve never reaches."""
    buf = io.StringIO()
    within = [_hours_label(h) for h in summary["within_hours"]]
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*CSV_COLUMNS[:8], *(f"removed_within_{w}" for w in within)])
    for origin, entry in summary["origins"].items():
        groups: list[tuple[str, Mapping[str, Any]]] = [("all", entry["all"])]
        for g, rows in entry["by"].items():
            groups.extend((g, r) for r in rows)
        for group_by, row in groups:
            writer.writerow(
                [
                    origin,
                    group_by,
                    _csv_safe(str(row["group"])),
                    row["cases"],
                    row["removed"],
                    row["censored"],
                    "" if row["median_hours"] is None else row["median_hours"],
                    "" if row["p90_hours"] is None else row["p90_hours"],
                    *(
                        "" if row["removed_within"][w] is None else row["removed_within"][w]
                        for w in within
                    ),
                ]
            )
    return buf.getvalue()


def _csv_safe(text: str) -> str:
    """A provider name is operator/third-party text: neutralise spreadsheet formulas."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


# -- from the database ------------------------------------------------------------------------

#: Seconds between the Julian day epoch and the Unix epoch (SQLite's julianday()).
_JULIAN_UNIX_EPOCH = 2440587.5


def _epoch_column(column: Any, dialect: str) -> Any:
    """SQL for a timestamp column as float epoch seconds (NULL stays NULL), so a million rows
    come back as plain floats instead of a million datetime objects."""
    from sqlalchemy import Float, cast, extract, func

    if dialect == "sqlite":
        # SQLite stores "YYYY-MM-DD HH:MM:SS.ffffff" (UTC); julianday() reads it (to the ms)
        return (func.julianday(column) - _JULIAN_UNIX_EPOCH) * 86400.0
    return cast(extract("epoch", column), Float)


def load_histories(session: Session) -> CaseHistories:
    """Every case's timestamps as :class:`CaseHistories`, read with plain column selects.

    ``reported_at`` and ``confirmed_at`` are the case's; ``notified_at`` is its first notice
    actually sent (``first_notice_at``); ``removed_at`` its first removal. A case that ended
    without a removal is censored where it ended: ``closed_at`` for a case closed by hand,
    ``moved_at`` for one waiting in ``moved`` (the content went elsewhere); every other case
    still open is censored at ``now`` by :func:`summarise`. Groups: the provider (its name,
    else its directory key), the AS number and the hosting country; unknown ones are
    :data:`UNKNOWN`. A row whose times contradict each other (a time before its report) is
    left out with a :class:`RowError` naming the case."""
    from sqlalchemy import select

    from tipline.store.case_tables import CaseRow

    dialect = session.get_bind().dialect.name
    epoch = {
        name: _epoch_column(getattr(CaseRow, name), dialect).label(name)
        for name in (
            "reported_at",
            "confirmed_at",
            "first_notice_at",
            "removed_at",
            "closed_at",
            "moved_at",
        )
    }
    stmt = select(
        CaseRow.id,
        CaseRow.state,
        CaseRow.provider_name,
        CaseRow.provider_key,
        CaseRow.asn,
        CaseRow.country,
        *epoch.values(),
    ).order_by(CaseRow.id)
    # Core on the session's connection, not the ORM's row loading: a million rows
    rows = session.connection().execute(stmt).fetchall()
    if not rows:
        empty = np.empty(0, dtype=np.float64)
        return CaseHistories(
            empty,
            empty,
            empty,
            empty,
            empty,
            groups={g: Grouping(np.empty(0, dtype=np.int64), ()) for g in GROUPINGS},
        )
    ids, states, names, keys, asns, countries, *times = zip(*rows, strict=True)

    def column(values: Sequence[Any]) -> FloatArray:
        # None -> NaN; rounded to the millisecond (what SQLite's julianday() keeps)
        raw: FloatArray = np.asarray(values, dtype=np.float64)
        return np.round(raw, 3)

    reported, confirmed, notified, removed, closed, moved = (column(v) for v in times)
    in_moved = np.asarray(states, dtype=object) == "moved"
    ended = np.where(~np.isnan(closed), closed, np.where(in_moved, moved, np.nan))
    # A contradiction (e.g. a time before the report) is one bad row, not a broken page.
    bad = np.isnan(reported)
    for other in (confirmed, notified, removed, ended):
        bad |= other < reported  # NaN compares False: unknown is not a contradiction
    errors = tuple(
        RowError(
            int(i),
            str(ids[i]),
            "reported_at is missing" if math.isnan(reported[i]) else "a time is before reported_at",
        )
        for i in np.flatnonzero(bad)
    )
    keep = ~bad

    def grouping(values: Sequence[Any]) -> Grouping:
        index: dict[str, int] = {}
        codes = [index.setdefault(v, len(index)) for v in values]
        return Grouping(np.asarray(codes, dtype=np.int64)[keep], tuple(index))

    providers = [n or k or UNKNOWN for n, k in zip(names, keys, strict=True)]
    asn_labels = [UNKNOWN if a is None else str(a) for a in asns]
    country_labels = [c.upper() if c else UNKNOWN for c in countries]
    return CaseHistories(
        reported_at=reported[keep],
        confirmed_at=confirmed[keep],
        notified_at=notified[keep],
        removed_at=removed[keep],
        ended_at=ended[keep],
        groups={
            "provider": grouping(providers),
            "asn": grouping(asn_labels),
            "country": grouping(country_labels),
        },
        errors=errors,
    )
