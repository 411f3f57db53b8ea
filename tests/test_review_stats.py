"""Review dashboard statistics (both backends) and the SVG chart renderer.

All data here is generated: numbered placeholder hashes, placeholder usernames, fixed
timestamps around one chosen "now".
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from tipline.review.charts import PALETTE, bar_chart, format_value, line_chart, nice_ticks
from tipline.review.stats import (
    AgeBucket,
    AIStats,
    Dashboard,
    DayStats,
    ExposureStats,
    QueueStats,
    ResolvedStats,
    dashboard,
    dashboard_csv,
    dashboard_json,
)
from tipline.store.tables import Cluster, ExposureInterval, Grade, Item, User

NOW = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)
SVG = "{http://www.w3.org/2000/svg}"
_seq = itertools.count(1)


def _item(s: Session, status: str, first_seen: datetime, **kw: Any) -> Item:
    item = Item(sha256=f"{next(_seq):064x}", status=status, first_seen=first_seen, **kw)
    s.add(item)
    s.flush()
    return item


def _cluster(s: Session, status: str) -> Cluster:
    c = Cluster(status=status)
    s.add(c)
    s.flush()
    return c


def _user(s: Session, name: str) -> User:
    u = User(username=name, password_hash="x", role="analyst")
    s.add(u)
    s.flush()
    return u


def _h(hours: float) -> datetime:
    return NOW - timedelta(hours=hours)


def _at(day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, minute, second, tzinfo=UTC)


# -- queue ------------------------------------------------------------------------------------


def _build_queue(s: Session) -> None:
    a = _cluster(s, "open")
    _item(s, "in_review", _h(0.5), cluster_id=a.id)
    # A resolved member does not make the cluster older.
    _item(s, "confirmed", _h(240), cluster_id=a.id, graded_at=_at(1))
    b = _cluster(s, "in_review")
    _item(s, "new", _h(1), cluster_id=b.id)  # exactly 1 h: not "<1h"
    _item(s, "hashed", _h(2), cluster_id=b.id)  # the cluster's age: 2 h
    c = _cluster(s, "escalated")
    _item(s, "escalated", _h(24), cluster_id=c.id)  # exactly 24 h: "1-3d"
    d = _cluster(s, "open")
    _item(s, "matched", _h(4), cluster_id=d.id)  # exactly 4 h: "4-24h"
    e = _cluster(s, "open")
    _item(s, "in_review", _h(80), cluster_id=e.id)  # the oldest: 80 h
    _item(s, "failed", _h(200), cluster_id=e.id)  # failed items wait for nobody
    f = _cluster(s, "closed")  # closed: never in the queue
    _item(s, "matched", _h(100), cluster_id=f.id)
    g = _cluster(s, "open")  # only finished members: not in the queue
    _item(s, "dismissed", _h(5), cluster_id=g.id, graded_at=_h(1))
    _item(s, "auto_confirmed", _h(5), cluster_id=g.id)
    _item(s, "failed", _h(5), cluster_id=g.id)
    h = _cluster(s, "open")
    _item(s, "new", _h(72), cluster_id=h.id)  # exactly 72 h: ">3d"
    i = _cluster(s, "open")
    _item(s, "new", _h(4) + timedelta(minutes=1), cluster_id=i.id)  # 3 h 59 min: "1-4h"
    _item(s, "new", _h(500))  # waiting, but in no cluster
    _cluster(s, "open")  # no members at all


def test_queue_counts_ages_and_buckets(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as s, s.begin():
        _build_queue(s)
    with session_factory() as s:
        q = dashboard(s, NOW).queue
    assert q.clusters == 7
    assert q.items_waiting == 8
    assert q.oldest_age_hours == 80.0
    assert [(b.label, b.clusters) for b in q.histogram] == [
        ("<1h", 1),
        ("1-4h", 2),
        ("4-24h", 1),
        ("1-3d", 1),
        (">3d", 2),
    ]


def test_empty_database(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as s:
        d = dashboard(s, NOW, days=2)
    assert d.queue == QueueStats(0, 0, None, tuple(AgeBucket(b, 0) for b in _labels()))
    assert d.daily == (DayStats(date(2026, 3, 9), 0, 0, 0), DayStats(date(2026, 3, 10), 0, 0, 0))
    assert d.daily[0].unviewed_share is None
    assert d.resolved_all_time == ResolvedStats(0, 0)
    assert d.resolved_all_time.unviewed_share is None
    assert d.exposure == ()
    assert d.ai == AIStats(0, 0, 0, 0)
    assert d.ai.evidence_share is None
    json.dumps(dashboard_json(d))  # serialisable even when empty


def _labels() -> list[str]:
    return ["<1h", "1-4h", "4-24h", "1-3d", ">3d"]


# -- throughput and unviewed share ------------------------------------------------------------


def _build_throughput(s: Session) -> None:
    ana, ben = _user(s, "ana"), _user(s, "ben")
    # Human final grades, on the day of graded_at.
    g1 = _item(s, "confirmed", _at(1), graded_at=_at(10, 9))
    _item(s, "dismissed", _at(1), graded_at=_at(9, 23, 59, 59))
    _item(s, "confirmed", _at(1), graded_at=_at(8))  # first instant of the window
    _item(s, "confirmed", _at(1), graded_at=_at(7, 23, 59, 59))  # just before it
    # graded_at set but not final (sent to a senior): not a human resolution.
    g2 = _item(s, "escalated", _at(1), graded_at=_at(10, 8))
    # Auto-confirmed items, on the day of first_seen, never viewed.
    _item(s, "auto_confirmed", _at(10, 1))
    _item(s, "auto_confirmed", _at(10, 2))
    _item(s, "auto_confirmed", _at(8, 12))
    _item(s, "auto_confirmed", _at(1, 12))  # before the window
    # Grade rows, on the day of created_at.
    for item, user, kind, at in (
        (g1, ana, "analyst", _at(10, 8)),
        (g1, ben, "analyst", _at(10, 9)),
        (g1, ben, "senior", _at(10, 14, 59)),
        (g2, ana, "analyst", _at(9, 0)),
        (g2, ben, "analyst", _at(7, 23)),  # before the window
    ):
        s.add(
            Grade(
                item_id=item.id,
                user_id=user.id,
                kind=kind,
                values={"uk_category": "not_illegal"},
                decision="placeholder",
                created_at=at,
            )
        )


def test_daily_throughput_and_unviewed_share(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as s, s.begin():
        _build_throughput(s)
    with session_factory() as s:
        d = dashboard(s, NOW, days=3)
    assert d.daily == (
        DayStats(date(2026, 3, 8), human_graded=1, auto_confirmed=1, grades=0),
        DayStats(date(2026, 3, 9), human_graded=1, auto_confirmed=0, grades=1),
        DayStats(date(2026, 3, 10), human_graded=1, auto_confirmed=2, grades=3),
    )
    assert [x.unviewed_share for x in d.daily] == [0.5, 0.0, 2 / 3]
    assert d.resolved_window == ResolvedStats(resolved=6, auto_confirmed=3)
    assert d.resolved_window.unviewed_share == 0.5
    # All time: 4 human resolutions and 4 auto-confirmations.
    assert d.resolved_all_time == ResolvedStats(resolved=8, auto_confirmed=4)
    assert d.resolved_all_time.unviewed_share == 0.5


def test_days_window_and_validation(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as s, s.begin():
        _build_throughput(s)
    with session_factory() as s:
        d14 = dashboard(s, NOW)
        assert len(d14.daily) == 14
        assert d14.daily[0].day == date(2026, 2, 25)
        assert d14.daily[-1].day == date(2026, 3, 10)
        assert sum(x.human_graded for x in d14.daily) == 4
        assert sum(x.grades for x in d14.daily) == 5
        # The same instant in another zone gives the same UTC days.
        d_tz = dashboard(s, NOW.astimezone(ZoneInfo("Pacific/Auckland")), days=3)
        assert d_tz.daily == dashboard(s, NOW, days=3).daily
        with pytest.raises(ValueError, match="timezone-aware"):
            dashboard(s, NOW.replace(tzinfo=None))
        with pytest.raises(ValueError, match="days"):
            dashboard(s, NOW, days=0)


# -- exposure ---------------------------------------------------------------------------------


def _build_exposure(s: Session) -> None:
    users = {n: _user(s, n) for n in ("alice", "bob", "carol", "dave")}

    def add(name: str, start: datetime, end: datetime) -> None:
        s.add(ExposureInterval(user_id=users[name].id, started_at=start, ended_at=end))

    # today starts 2026-03-10 00:00; the 7-day window starts 2026-03-03 15:00; now 15:00.
    add("alice", _at(9, 23, 30), _at(10, 0, 30))  # across midnight: 30 min today, 60 in 7 days
    add("alice", _at(10, 10), _at(10, 10, 45))  # two tabs overlapping: 10:00-11:00 once
    add("alice", _at(10, 10, 30), _at(10, 11))
    add("alice", _at(10, 10, 35), _at(10, 10, 40))  # inside the others: nothing more
    add("alice", _at(3, 14), _at(3, 16))  # across the 7-day edge: 60 min
    add("alice", _at(10, 14, 50), _at(10, 15, 20))  # ends after now: 10 min
    add("alice", _at(2, 9), _at(2, 10))  # before the window
    add("bob", _at(5, 8), _at(5, 9))
    add("carol", _at(1, 8), _at(1, 9))  # only outside the window: not listed
    add("dave", _at(10, 16), _at(10, 17))  # after now: not listed


def test_exposure_minutes_clipped_and_merged(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as s, s.begin():
        _build_exposure(s)
    with session_factory() as s:
        d = dashboard(s, NOW)
    assert d.exposure == (
        ExposureStats("alice", minutes_today=100.0, minutes_7d=190.0),
        ExposureStats("bob", minutes_today=0.0, minutes_7d=60.0),
    )


# -- AI evidence ------------------------------------------------------------------------------


def test_ai_evidence_shares(session_factory: sessionmaker[Session]) -> None:
    def grade(ai: str) -> dict[str, Any]:
        return {"values": {"uk_category": "not_illegal", "ai_generated": ai}, "by": "placeholder"}

    with session_factory() as s, s.begin():
        t = _at(9)
        _item(s, "new", t, ai_evidence="strong")
        _item(s, "new", t, ai_evidence="weak")
        _item(s, "new", t, ai_evidence="none")
        _item(s, "new", t)
        _item(s, "confirmed", t, ai_evidence="strong", grade=grade("yes"), graded_at=t)
        _item(s, "confirmed", t, ai_evidence="weak", grade=grade("yes"), graded_at=t)
        _item(s, "dismissed", t, grade=grade("yes"), graded_at=t)
        _item(s, "dismissed", t, ai_evidence="none", grade=grade("yes"), graded_at=t)
        _item(s, "dismissed", t, ai_evidence="strong", grade=grade("no"), graded_at=t)
        _item(s, "dismissed", t, ai_evidence="weak", grade=grade("unknown"), graded_at=t)
        _item(s, "auto_confirmed", t, grade={"values": {}})
    with session_factory() as s:
        ai = dashboard(s, NOW).ai
    assert ai == AIStats(
        items=11, items_with_evidence=6, graded_ai_yes=4, graded_ai_yes_with_evidence=2
    )
    assert ai.evidence_share == 6 / 11
    assert ai.graded_ai_yes_evidence_share == 0.5


# -- query count does not grow with the data (no N+1) ----------------------------------------


@pytest.fixture
def statements(engine: Engine) -> Iterator[list[str]]:
    seen: list[str] = []

    def _count(*args: Any) -> None:
        seen.append(args[2])

    event.listen(engine, "before_cursor_execute", _count)
    yield seen
    event.remove(engine, "before_cursor_execute", _count)


def test_query_count_is_constant(
    session_factory: sessionmaker[Session], statements: list[str]
) -> None:
    with session_factory() as s:
        statements.clear()
        dashboard(s, NOW)
        empty = len(statements)
    with session_factory() as s, s.begin():
        _build_queue(s)
        _build_throughput(s)
        _build_exposure(s)
        for n in range(40):
            c = _cluster(s, "open")
            _item(s, "new", _h(n), cluster_id=c.id, ai_evidence="weak")
    with session_factory() as s:
        statements.clear()
        d = dashboard(s, NOW)
        assert len(statements) == empty
    assert d.queue.clusters == 7 + 40


# -- CSV and JSON -----------------------------------------------------------------------------


def _sample() -> Dashboard:
    return Dashboard(
        generated_at=NOW,
        days=2,
        queue=QueueStats(
            3,
            5,
            26.5,
            tuple(AgeBucket(b, n) for b, n in zip(_labels(), [1, 0, 1, 1, 0], strict=True)),
        ),
        daily=(
            DayStats(date(2026, 3, 9), 2, 1, 4),
            DayStats(date(2026, 3, 10), 0, 0, 0),
        ),
        resolved_all_time=ResolvedStats(10, 4),
        exposure=(
            ExposureStats("=HYPERLINK(1)", 5.0, 12.5),
            ExposureStats('ana, "the" analyst', 0.0, 30.0),
        ),
        ai=AIStats(10, 3, 2, 1),
    )


def test_csv_sections_values_and_formula_guard() -> None:
    rows = list(csv.DictReader(io.StringIO(dashboard_csv(_sample()))))
    assert {r["section"] for r in rows} == {"queue", "age", "daily", "resolved", "exposure", "ai"}
    got = {(r["section"], r["key"], r["metric"]): r["value"] for r in rows}
    assert len(got) == len(rows)  # no duplicate keys
    assert got[("queue", "", "clusters")] == "3"
    assert got[("queue", "", "oldest_age_hours")] == "26.5"
    assert got[("age", "1-3d", "clusters")] == "1"
    assert got[("age", ">3d", "clusters")] == "0"
    assert got[("daily", "2026-03-09", "unviewed_share")] == str(1 / 3)
    assert got[("daily", "2026-03-10", "unviewed_share")] == ""  # no resolutions: no share
    assert got[("resolved", "all_time", "unviewed_share")] == "0.4"
    assert got[("resolved", "window", "resolved")] == "3"
    assert got[("exposure", "'=HYPERLINK(1)", "minutes_7d")] == "12.5"
    assert got[("exposure", 'ana, "the" analyst', "minutes_today")] == "0.0"
    assert got[("ai", "", "graded_ai_yes_evidence_share")] == "0.5"
    assert not any(r["key"].startswith("=") for r in rows)


def test_json_shape() -> None:
    j = dashboard_json(_sample())
    assert json.loads(json.dumps(j)) == j
    assert j["generated_at"] == "2026-03-10T15:00:00+00:00"
    assert j["queue"]["age_histogram"][0] == {"bucket": "<1h", "clusters": 1}
    assert j["daily"][0] == {
        "day": "2026-03-09",
        "human_graded": 2,
        "auto_confirmed": 1,
        "grades": 4,
        "unviewed_share": 1 / 3,
    }
    assert j["resolved"]["window"] == {"resolved": 3, "auto_confirmed": 1, "unviewed_share": 1 / 3}
    assert j["exposure"][0]["username"] == "=HYPERLINK(1)"
    assert j["ai"]["evidence_share"] == 0.3


def test_dashboard_from_database_exports(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as s, s.begin():
        _build_queue(s)
        _build_exposure(s)
    with session_factory() as s:
        d = dashboard(s, NOW, days=1)
    rows = list(csv.DictReader(io.StringIO(dashboard_csv(d))))
    got = {(r["section"], r["key"], r["metric"]): r["value"] for r in rows}
    assert got[("queue", "", "items_waiting")] == "8"
    assert got[("exposure", "alice", "minutes_today")] == "100.0"
    assert dashboard_json(d)["queue"]["oldest_age_hours"] == 80.0


# -- charts -----------------------------------------------------------------------------------


def _parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    assert root.get("role") == "img"
    assert root.get("aria-label")
    return root


def _bars(root: ET.Element) -> list[ET.Element]:
    return [r for r in root.iter(f"{SVG}rect") if r.get("class") == "bar"]


def _texts(root: ET.Element) -> list[str]:
    return ["".join(t.itertext()) for t in root.iter(f"{SVG}text")]


def test_bar_chart_heights_proportional_and_hover() -> None:
    svg = bar_chart(["mon", "tue", "wed"], {"graded": [2, 4, 8], "auto": [1, 0, 3]}, "Per day")
    root = _parse(svg)
    bars = _bars(root)
    assert len(bars) == 6
    by = {(b.get("data-series"), b.get("data-label")): b for b in bars}
    unit = float(by[("graded", "mon")].get("height", "")) / 2
    assert unit > 0
    for (name, label), value in {
        ("graded", "tue"): 4,
        ("graded", "wed"): 8,
        ("auto", "mon"): 1,
        ("auto", "tue"): 0,
        ("auto", "wed"): 3,
    }.items():
        assert float(by[(name, label)].get("height", "")) == pytest.approx(value * unit, abs=0.02)
    hover = [t.text for b in bars for t in b.iter(f"{SVG}title")]
    assert "wed — graded: 8" in hover
    # Bars stand on the x axis: y + height is the same for every bar.
    bottoms = {round(float(b.get("y", "")) + float(b.get("height", "")), 1) for b in bars}
    assert len(bottoms) == 1
    texts = _texts(root)
    assert "Per day" in texts and "graded" in texts and "auto" in texts
    assert "0" in texts and "8" in texts  # round ticks up to the largest value
    assert {b.get("fill") for b in bars} == {PALETTE[0], PALETTE[1]}


def test_stacked_bar_chart() -> None:
    root = _parse(bar_chart(["a", "b"], {"x": [3, 1], "y": [1, 0]}, "t", stacked=True))
    bars = _bars(root)
    assert len(bars) == 4
    by = {(b.get("data-series"), b.get("data-label")): b for b in bars}
    xa, ya = by[("x", "a")], by[("y", "a")]
    assert xa.get("x") == ya.get("x")  # same column
    # y's segment sits directly on top of x's.
    assert float(ya.get("y", "")) + float(ya.get("height", "")) == pytest.approx(
        float(xa.get("y", "")), abs=0.02
    )
    assert float(xa.get("height", "")) == pytest.approx(3 * float(ya.get("height", "")), abs=0.03)


def test_labels_are_escaped() -> None:
    nasty = "<script>&\"'x"
    svg = bar_chart([nasty], {nasty: [1.0]}, nasty, y_label=nasty)
    assert "<script>" not in svg
    root = _parse(svg)
    assert root.get("aria-label") == nasty
    assert root.find(f"{SVG}title") is not None
    assert root.find(f"{SVG}title").text == nasty  # type: ignore[union-attr]
    bar = _bars(root)[0]
    assert bar.get("data-series") == nasty and bar.get("data-label") == nasty
    assert nasty in _texts(root)
    line = line_chart([nasty], {nasty: [2.0]}, nasty)
    assert "<script>" not in line
    point = next(c for c in _parse(line).iter(f"{SVG}circle") if c.get("class") == "point")
    assert point.get("data-label") == nasty


def test_control_characters_are_replaced() -> None:
    root = _parse(bar_chart(["a\x00b\x1b"], {"s\ud800": [1.0]}, "t\x07"))
    assert _bars(root)[0].get("data-label") == "a\ufffdb\ufffd"
    assert root.get("aria-label") == "t\ufffd"


@pytest.mark.parametrize("render", [bar_chart, line_chart])
@pytest.mark.parametrize(("labels", "series"), [([], {}), (["a", "b"], {}), ([], {"s": []})])
def test_empty_chart_says_no_data(
    render: Any, labels: list[str], series: dict[str, list[float]]
) -> None:
    root = _parse(render(labels, series, "Nothing yet"))
    assert "no data" in _texts(root)
    assert _bars(root) == []
    assert list(root.iter(f"{SVG}circle")) == []


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="values for 2 labels"):
        bar_chart(["a", "b"], {"s": [1.0]}, "t")
    with pytest.raises(ValueError, match="non-negative"):
        line_chart(["a"], {"s": [-1.0]}, "t")
    with pytest.raises(ValueError, match="finite"):
        bar_chart(["a"], {"s": [math.nan]}, "t")


def test_line_chart_points() -> None:
    root = _parse(line_chart(["d1", "d2", "d3"], {"min": [0, 30, 60], "max": [5, 5, 5]}, "t"))
    lines = [p for p in root.iter(f"{SVG}polyline") if p.get("class") == "line"]
    assert len(lines) == 2
    pts = [c for c in root.iter(f"{SVG}circle") if c.get("class") == "point"]
    assert len(pts) == 6
    cy = [float(c.get("cy", "")) for c in pts[:3]]
    # Equal steps in value are equal steps on screen; larger values are higher (smaller y).
    assert cy[0] > cy[1] > cy[2]
    assert cy[0] - cy[1] == pytest.approx(cy[1] - cy[2], abs=0.02)
    assert [t.text for t in pts[1].iter(f"{SVG}title")] == ["d2 — min: 30"]


def test_nice_ticks_and_format() -> None:
    assert nice_ticks(8) == [0, 2, 4, 6, 8]
    assert nice_ticks(9) == [0, 2, 4, 6, 8, 10]
    assert nice_ticks(0.37) == [0, 0.1, 0.2, 0.3, 0.4]
    assert nice_ticks(1234) == [0, 500, 1000, 1500]
    assert nice_ticks(0) == [0, 1]
    assert format_value(1500.0) == "1,500"
    assert format_value(2 / 3) == "0.67"


def _luminance(hex_colour: str) -> float:
    def channel(c: int) -> float:
        v = c / 255
        return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4

    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)


def test_palette_contrast_against_white() -> None:
    for colour in PALETTE:
        assert (1.05) / (_luminance(colour) + 0.05) >= 3.0, colour


_label = st.text(max_size=30)
_value = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(
    labels=st.lists(_label, min_size=1, max_size=12),
    data=st.data(),
    names=st.lists(_label, min_size=1, max_size=4, unique=True),
    stacked=st.booleans(),
)
def test_bar_chart_random_input(
    labels: list[str], data: st.DataObject, names: list[str], stacked: bool
) -> None:
    series = {
        n: data.draw(st.lists(_value, min_size=len(labels), max_size=len(labels))) for n in names
    }
    root = _parse(bar_chart(labels, series, data.draw(_label), stacked=stacked))
    bars = _bars(root)
    assert len(bars) == len(labels) * len(names)
    pairs = sorted((float(b.get("data-value", "")), float(b.get("height", ""))) for b in bars)
    heights = [h for _v, h in pairs]
    assert heights == sorted(heights)  # monotone in value
    assert all(h >= 0 for h in heights)
    if max(pairs)[0] >= 1e-3:  # a visible value gives a visible bar
        assert max(heights) > 0


@settings(max_examples=40, deadline=None)
@given(labels=st.lists(_label, min_size=1, max_size=12), data=st.data(), name=_label)
def test_line_chart_random_input(labels: list[str], data: st.DataObject, name: str) -> None:
    values = data.draw(st.lists(_value, min_size=len(labels), max_size=len(labels)))
    root = _parse(line_chart(labels, {name: values}, name, y_label=name))
    pts = [c for c in root.iter(f"{SVG}circle") if c.get("class") == "point"]
    assert len(pts) == len(labels)
    pairs = sorted((float(c.get("data-value", "")), -float(c.get("cy", ""))) for c in pts)
    ups = [u for _v, u in pairs]
    assert ups == sorted(ups)
