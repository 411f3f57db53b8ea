"""Time-to-removal statistics (tipline.removal.stats): Kaplan-Meier with right-censoring,
checked against hand-computed textbook values and a plain-Python product-limit estimator."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tipline.removal.stats import (
    UNKNOWN,
    CaseHistories,
    kaplan_meier,
    load_histories,
    summarise,
    to_csv,
)
from tipline.store.case_tables import CaseRow

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

# Freireich et al. (1963), 6-MP arm: weeks in remission, False = censored. The textbook
# Kaplan-Meier example (e.g. Kleinbaum & Klein, "Survival Analysis", chapter 2).
GEHAN_TIMES = [6, 6, 6, 6, 7, 9, 10, 10, 11, 13, 16, 17, 19, 20, 22, 23, 25, 32, 32, 34, 35]
GEHAN_EVENT = [1, 1, 1, 0, 1, 0, 1, 0, 0, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0]


def _hand_survival() -> list[tuple[int, int, int, Fraction]]:
    """(time, at risk, events, S) by the product-limit formula, in exact fractions."""
    steps = [(6, 21, 3), (7, 17, 1), (10, 15, 1), (13, 12, 1), (16, 11, 1), (22, 7, 1), (23, 6, 1)]
    s = Fraction(1)
    out = []
    for t, n, d in steps:
        s *= 1 - Fraction(d, n)
        out.append((t, n, d, s))
    return out


def test_textbook_example_with_censoring() -> None:
    curve = kaplan_meier(GEHAN_TIMES, np.array(GEHAN_EVENT, dtype=bool))
    hand = _hand_survival()
    assert curve.times.tolist() == [t for t, _, _, _ in hand]
    assert curve.at_risk.tolist() == [n for _, n, _, _ in hand]
    assert curve.removed.tolist() == [d for _, _, d, _ in hand]
    assert curve.survival.tolist() == pytest.approx([float(s) for *_, s in hand], abs=1e-12)
    # S(23) = 0.4482 (the textbook's table), the first value <= 0.5: the median is 23.
    assert float(hand[-1][3]) == pytest.approx(0.4482, abs=5e-5)
    assert curve.quantile(0.5) == 23.0
    # Never drops to 0.1: p90 is undefined, not the last time seen.
    assert curve.quantile(0.9) is None
    assert curve.at(5.9) == 1.0
    assert curve.at(6) == pytest.approx(18 / 21)
    assert curve.at(21.99) == pytest.approx(float(hand[4][3]))
    assert curve.cases == 21 and curve.censored == 12
    assert curve.points()[0] == [0.0, 1.0]


def test_quantile_reaches_exact_half_and_everyone_removed() -> None:
    # 4 cases removed at 1, 2, 3, 4 h: S(2) = 0.5 exactly, the median is 2 (not 3).
    curve = kaplan_meier([1, 2, 3, 4], np.ones(4, dtype=bool))
    assert curve.quantile(0.5) == 2.0
    assert curve.quantile(0.9) == 4.0
    assert curve.at(4) == 0.0
    # All at risk removed at once: S drops to exactly 0.
    tie = kaplan_meier([5, 5, 5], np.ones(3, dtype=bool))
    assert tie.survival.tolist() == [0.0] and tie.quantile(1.0) == 5.0


def test_nothing_removed_and_empty() -> None:
    open_only = kaplan_meier([10, 20], np.zeros(2, dtype=bool))
    assert open_only.times.size == 0 and open_only.at(100) == 1.0
    assert open_only.quantile(0.5) is None and open_only.censored == 2
    empty = kaplan_meier([], np.zeros(0, dtype=bool))
    assert empty.cases == 0 and empty.quantile(0.5) is None and empty.at(1) == 1.0


def test_bad_durations_refused() -> None:
    with pytest.raises(ValueError, match="finite and non-negative"):
        kaplan_meier([1, -2], np.ones(2, dtype=bool))
    with pytest.raises(ValueError, match="finite and non-negative"):
        kaplan_meier([1, float("nan")], np.ones(2, dtype=bool))
    with pytest.raises(ValueError, match="same length"):
        kaplan_meier([1, 2], np.ones(3, dtype=bool))
    with pytest.raises(ValueError, match="share_removed"):
        kaplan_meier([1], np.ones(1, dtype=bool)).quantile(0.0)


def _reference_km(times: list[float], events: list[bool]) -> list[tuple[float, float]]:
    """The product-limit estimator, one distinct event time at a time, plain Python."""
    out = []
    s = 1.0
    for t in sorted({t for t, e in zip(times, events, strict=True) if e}):
        at_risk = sum(1 for x in times if x >= t)
        d = sum(1 for x, e in zip(times, events, strict=True) if e and x == t)
        s *= 1 - d / at_risk
        out.append((t, s))
    return out


durations_and_events = st.lists(
    st.tuples(st.integers(0, 60).map(lambda x: x / 2), st.booleans()), min_size=0, max_size=80
)


@settings(max_examples=150, deadline=None)
@given(durations_and_events)
def test_matches_reference_and_is_a_survival_curve(rows: list[tuple[float, bool]]) -> None:
    times = [t for t, _ in rows]
    events = [e for _, e in rows]
    curve = kaplan_meier(times, np.array(events, dtype=bool))
    ref = _reference_km(times, events)
    assert curve.times.tolist() == [t for t, _ in ref]
    assert curve.survival.tolist() == pytest.approx([s for _, s in ref], abs=1e-9)
    s = curve.survival
    assert ((s >= 0) & (s <= 1)).all()
    assert (np.diff(s) <= 1e-12).all()  # non-increasing
    assert curve.cases == len(rows) and curve.censored == events.count(False)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 100).map(lambda x: x / 4), min_size=1, max_size=80))
def test_without_censoring_one_minus_s_is_the_empirical_cdf(times: list[float]) -> None:
    curve = kaplan_meier(times, np.ones(len(times), dtype=bool))
    for t in [*sorted(set(times)), -1.0, 1e9]:
        ecdf = sum(1 for x in times if x <= t) / len(times)
        assert 1 - curve.at(t) == pytest.approx(ecdf, abs=1e-9)
    # And the quantiles are the empirical ones (smallest t with ECDF >= q).
    ordered = sorted(times)
    for q in (0.5, 0.9):
        k = next(i for i in range(len(ordered)) if (i + 1) / len(ordered) >= q - 1e-12)
        assert curve.quantile(q) == ordered[k]


def _case(
    case_id: str,
    reported_h: float,
    *,
    confirmed_h: float | None = None,
    notified_h: float | None = None,
    removed_h: float | None = None,
    ended_h: float | None = None,
    provider: str | None = "Example Hosting",
    asn: int | str | None = 64500,
    country: str | None = "de",
) -> dict[str, object]:
    """A case history; times in hours after a start 100 h before NOW."""
    start = NOW - timedelta(hours=100)

    def at(h: float | None) -> datetime | None:
        return None if h is None else start + timedelta(hours=h)

    return {
        "case_id": case_id,
        "reported_at": at(reported_h),
        "confirmed_at": at(confirmed_h),
        "notified_at": at(notified_h),
        "removed_at": at(removed_h),
        "ended_at": at(ended_h),
        "provider": provider,
        "asn": asn,
        "country": country,
    }


def test_summary_per_origin_with_open_cases_censored_at_now() -> None:
    records = [
        # Removed 30 h after report, 20 h after notice.
        _case("a", 0, confirmed_h=5, notified_h=10, removed_h=30),
        # Removed 60 h after report, 10 h after notice.
        _case("b", 0, confirmed_h=40, notified_h=50, removed_h=60),
        # Still online: censored at NOW (100 h after report, 80 h after notice).
        _case("c", 0, confirmed_h=10, notified_h=20, provider="Other Net", asn="AS64501"),
        # Never notified (a law-enforcement hold): no notice origin.
        _case("d", 0, confirmed_h=1, country=None, asn=None, provider=None),
        # Removed by the host before any notice: left out of notice -> removal.
        _case("e", 0, confirmed_h=2, removed_h=3, notified_h=None),
    ]
    histories = CaseHistories.from_records(records)
    assert histories.errors == ()
    summary = summarise(histories, now=NOW)
    json.dumps(summary)  # JSON-able as it is

    report = summary["origins"]["report"]
    assert report["all"]["cases"] == 5 and report["all"]["removed"] == 3
    # From report: removals at 3, 30, 60 h; at risk 5, 4, 3 -> S = 4/5, 3/5, 2/5.
    assert report["all"]["removed_within"]["24h"] == pytest.approx(1 - 4 / 5)
    assert report["all"]["removed_within"]["48h"] == pytest.approx(1 - 3 / 5)
    assert report["all"]["removed_within"]["72h"] == pytest.approx(1 - 2 / 5)
    assert report["all"]["median_hours"] == 60.0
    assert report["all"]["p90_hours"] is None

    notice = summary["origins"]["notice"]
    assert notice["excluded"] == {"no_origin": 2, "ended_before_origin": 0}
    # From notice: a 20 h, b 10 h, c censored at 80 h: S(10) = 2/3, S(20) = 1/3.
    assert notice["all"]["cases"] == 3 and notice["all"]["censored"] == 1
    assert notice["all"]["median_hours"] == 20.0
    assert notice["all"]["removed_within"]["24h"] == pytest.approx(2 / 3)

    confirmation = summary["origins"]["confirmation"]
    # a 25 h, b 20 h, e 1 h; c and d open.
    assert confirmation["all"]["removed_within"]["24h"] == pytest.approx(1 - (4 / 5) * (3 / 4))

    by_provider = {r["group"]: r for r in report["by"]["provider"]}
    assert set(by_provider) == {"Example Hosting", "Other Net", UNKNOWN}
    assert by_provider["Example Hosting"]["cases"] == 3
    assert by_provider["Other Net"]["removed"] == 0
    assert by_provider["Other Net"]["median_hours"] is None
    by_asn = {r["group"]: r["cases"] for r in report["by"]["asn"]}
    assert by_asn == {"64500": 3, "64501": 1, UNKNOWN: 1}
    by_country = {r["group"]: r["cases"] for r in report["by"]["country"]}
    assert by_country == {"DE": 4, UNKNOWN: 1}
    curve = report["all"]["curve"]
    assert curve[0] == [0.0, 1.0] and curve[-1] == [60.0, pytest.approx(0.4)]
    grid = {h: s for h, s in report["all"]["survival_at"]}
    assert grid[0.0] == 1.0 and grid[24.0] == pytest.approx(0.8) and grid[72.0] == 0.4


def test_removed_before_notice_and_closed_cases() -> None:
    records = [
        _case("x", 0, notified_h=10, removed_h=5),
        # Closed by hand at 40 h without a removal: censored there, not at NOW.
        _case("y", 0, notified_h=10, ended_h=40),
        _case("z", 0, notified_h=10, removed_h=50),
    ]
    summary = summarise(CaseHistories.from_records(records), now=NOW, group_by=())
    notice = summary["origins"]["notice"]
    assert notice["excluded"] == {"no_origin": 0, "ended_before_origin": 1}
    # y censored at 30 h after notice, z removed at 40 h: S(40) = 0 (only z at risk).
    assert notice["all"]["median_hours"] == 40.0
    assert notice["all"]["removed_within"]["24h"] == 0.0
    # A removal in the future of `now` does not count yet.
    later = summarise(CaseHistories.from_records(records), now=NOW - timedelta(hours=60))
    assert later["origins"]["report"]["all"]["removed"] == 1


def test_groups_match_separate_curves() -> None:
    rng = np.random.default_rng(7)
    records = []
    for i in range(300):
        removed = float(rng.uniform(1, 90)) if rng.random() < 0.7 else None
        records.append(
            _case(str(i), 0, notified_h=0.5, removed_h=removed, provider=f"p{i % 4}", asn=i % 3)
        )
    summary = summarise(CaseHistories.from_records(records), now=NOW, origins=("report",))
    for row in summary["origins"]["report"]["by"]["provider"]:
        mine = [r for r in records if r["provider"] == row["group"]]
        hours = [
            ((r["removed_at"] or NOW) - r["reported_at"]).total_seconds() / 3600  # type: ignore[operator]
            for r in mine
        ]
        curve = kaplan_meier(hours, np.array([r["removed_at"] is not None for r in mine]))
        assert row["cases"] == len(mine)
        assert row["median_hours"] == (
            None if curve.quantile(0.5) is None else pytest.approx(curve.quantile(0.5), abs=1e-4)
        )
        assert row["removed_within"]["48h"] == pytest.approx(1 - curve.at(48), abs=1e-6)


def test_bad_records_are_reported_and_the_rest_count() -> None:
    naive = datetime(2026, 1, 1, 10, 0)
    records: list[object] = [
        _case("good", 0, removed_h=10),
        {**_case("naive", 0), "reported_at": naive},
        {**_case("garbage", 0), "removed_at": "yesterday-ish"},
        {**_case("backwards", 10), "removed_at": NOW - timedelta(hours=99.5)},
        {**_case("asn", 0), "asn": "AS-one"},
        {**_case("asn-type", 0), "asn": 3.5},
        {**_case("missing", 0), "reported_at": None},
        {**_case("iso", 0), "reported_at": (NOW - timedelta(hours=50)).isoformat()},
    ]
    histories = CaseHistories.from_records(records)
    assert len(histories) == 2
    errors = {e.case_id: e.error for e in histories.errors}
    assert "naive timestamp" in errors["naive"]
    assert "not an ISO 8601 timestamp" in errors["garbage"]
    assert "removed_at is before reported_at" in errors["backwards"]
    assert "not an AS number" in errors["asn"]
    assert "expected an integer" in errors["asn-type"]
    assert "reported_at is missing" in errors["missing"]
    summary = summarise(histories, now=NOW)
    assert summary["cases"] == 2 and len(summary["errors"]) == 6


def test_unknown_origin_and_grouping_refused() -> None:
    histories = CaseHistories.from_records([_case("a", 0)])
    with pytest.raises(ValueError, match="unknown origin"):
        summarise(histories, now=NOW, origins=("arrival",))
    with pytest.raises(ValueError, match="unknown grouping"):
        summarise(histories, now=NOW, group_by=("registrar",))


def test_csv_rows_and_formula_neutralised() -> None:
    records = [
        _case("a", 0, notified_h=1, removed_h=10, provider="=HYPERLINK(1)"),
        _case("b", 0, notified_h=1, provider="Plain, Inc."),
    ]
    summary = summarise(CaseHistories.from_records(records), now=NOW)
    rows = list(csv.DictReader(io.StringIO(to_csv(summary))))
    header = list(rows[0].keys())
    assert header[:8] == [
        "origin",
        "group_by",
        "group",
        "cases",
        "removed",
        "censored",
        "median_hours",
        "p90_hours",
    ]
    assert header[8:] == ["removed_within_24h", "removed_within_48h", "removed_within_72h"]
    # report and notice: all + 2 providers + 1 AS + 1 country; confirmation has no
    # confirmed_at at all, so only its (empty) "all" row: groups without cases are left out.
    assert len(rows) == 2 * (1 + 2 + 1 + 1) + 1
    empty = next(r for r in rows if r["origin"] == "confirmation")
    assert empty["cases"] == "0" and empty["median_hours"] == ""
    assert empty["removed_within_24h"] == ""
    providers = {r["group"] for r in rows if r["group_by"] == "provider"}
    assert providers == {"'=HYPERLINK(1)", "Plain, Inc."}
    everyone = next(r for r in rows if r["origin"] == "notice" and r["group_by"] == "all")
    assert everyone["median_hours"] == "9.0" and everyone["p90_hours"] == ""
    assert everyone["removed_within_24h"] == "0.5"


# -- from the database (load_histories) ---------------------------------------------------------


def _db_case(
    s: Session,
    n: int,
    *,
    state: str,
    notified_h: float | None = None,
    removed_h: float | None = None,
    closed_h: float | None = None,
    moved_h: float | None = None,
    provider: tuple[str | None, str | None] = ("Example Hosting", "asn:64500"),
    asn: int | None = 64500,
    country: str | None = "nl",
) -> None:
    """A case row with its timestamps set as the state machine leaves them (hours after T0)."""
    from tipline.removal import cases

    def at(h: float | None) -> datetime | None:
        return None if h is None else DB_T0 + timedelta(hours=h)

    case, _ = cases.open_case(
        s, f"http://site{n}.example/page", reported_at=DB_T0, confirmed_at=at(1), now=at(1)
    )
    case.state = state
    case.first_notice_at = at(notified_h)
    case.removed_at = at(removed_h)
    case.closed_at = at(closed_h)
    case.moved_at = at(moved_h)
    case.provider_name, case.provider_key = provider
    case.asn = asn
    case.country = country.upper() if country else None
    if state == "closed":
        case.open_location_id = None


DB_T0 = datetime(2026, 2, 1, 8, 0, tzinfo=UTC)
DB_NOW = DB_T0 + timedelta(hours=200)


def test_load_histories_from_the_case_tables(session_factory: sessionmaker[Session]) -> None:
    """Cases as the scheduler leaves them, read back with plain column selects: the summary
    equals the one of the same histories written out by hand (CaseHistories.from_records)."""
    with session_factory() as s, s.begin():
        _db_case(s, 1, state="removed", notified_h=2, removed_h=12)
        # removed, then closed when the watch ended: still a removal at 30 h
        _db_case(s, 2, state="closed", notified_h=2, removed_h=30, closed_h=750)
        # still online: censored at now
        _db_case(s, 3, state="escalated", notified_h=3, provider=(None, "asn:64501"), asn=64501)
        # closed by hand without a removal: censored at 20 h
        _db_case(s, 4, state="closed", notified_h=4, closed_h=20)
        # waiting in "moved": censored where it moved away
        _db_case(s, 5, state="moved", notified_h=2, moved_h=10, country="fr")
        # moved once, re-routed (resumed) and open again: censored at now, not at the move
        _db_case(s, 6, state="notified", notified_h=8, moved_h=5, provider=(None, None))
        # never notified (held), no attribution
        _db_case(s, 7, state="held", provider=(None, None), asn=None, country=None)
        # removed before any notice went out
        _db_case(s, 8, state="removed", removed_h=1.5)
    expected = [
        {"reported_at": DB_T0, "confirmed_at": DB_T0 + timedelta(hours=1), **extra}
        for extra in (
            {"notified_at": _h(2), "removed_at": _h(12), "provider": "Example Hosting"},
            {
                "notified_at": _h(2),
                "removed_at": _h(30),
                "ended_at": _h(750),
                "provider": "Example Hosting",
            },
            {"notified_at": _h(3), "provider": "asn:64501", "asn": 64501},
            {"notified_at": _h(4), "ended_at": _h(20), "provider": "Example Hosting"},
            {
                "notified_at": _h(2),
                "ended_at": _h(10),
                "provider": "Example Hosting",
                "country": "FR",
            },
            {"notified_at": _h(8)},
            {"asn": None, "country": None},
            {"removed_at": _h(1.5), "provider": "Example Hosting"},
        )
    ]
    for r in expected:
        r.setdefault("asn", 64500)
        r.setdefault("country", "NL")
    with session_factory() as s:
        loaded = load_histories(s)
    assert len(loaded) == 8 and loaded.errors == ()
    by_hand = CaseHistories.from_records(expected)
    got, want = summarise(loaded, now=DB_NOW), summarise(by_hand, now=DB_NOW)
    assert got == want
    notice = got["origins"]["notice"]["all"]
    # from notice: censored at 8 h (case 5), removed at 10 h (1; 5 at risk: S = 4/5),
    # censored at 16 h (4), removed at 28 h (2; 3 at risk: S = 4/5 * 2/3 = 8/15), censored
    # at 192 h (6) and 197 h (3, still online at now)
    assert (notice["cases"], notice["removed"], notice["censored"]) == (6, 2, 4)
    assert notice["removed_within"]["24h"] == pytest.approx(1 / 5, abs=1e-6)
    assert notice["removed_within"]["48h"] == pytest.approx(7 / 15, abs=1e-6)
    assert notice["median_hours"] is None  # S never reaches 1/2: most are still online
    assert got["origins"]["notice"]["excluded"] == {"no_origin": 2, "ended_before_origin": 0}
    report = got["origins"]["report"]
    assert report["all"]["removed"] == 3 and report["all"]["cases"] == 8
    providers = {r["group"]: r["cases"] for r in report["by"]["provider"]}
    assert providers == {"Example Hosting": 5, "asn:64501": 1, UNKNOWN: 2}
    assert {r["group"] for r in report["by"]["country"]} == {"NL", "FR", UNKNOWN}


def test_load_histories_empty_and_contradictory_rows(
    session_factory: sessionmaker[Session],
) -> None:
    with session_factory() as s:
        empty = load_histories(s)
    assert len(empty) == 0
    assert summarise(empty, now=DB_NOW)["origins"]["notice"]["all"]["cases"] == 0
    with session_factory() as s, s.begin():
        _db_case(s, 1, state="removed", notified_h=2, removed_h=12)
        # a first notice before the report (a hand-edited row): one bad row, the rest count
        _db_case(s, 2, state="notified", notified_h=-5)
    with session_factory() as s:
        loaded = load_histories(s)
        bad_id = max(s.scalars(select(CaseRow.id)))
    assert len(loaded) == 1
    (err,) = loaded.errors
    assert err.case_id == str(bad_id) and err.error == "a time is before reported_at"
    assert summarise(loaded, now=DB_NOW)["errors"] == [err.to_json()]


def _h(hours: float) -> datetime:
    return DB_T0 + timedelta(hours=hours)
