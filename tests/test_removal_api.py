"""Removal surfaces: the URL list's lifecycle (tipline.removal.urllist) and the cases API."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta

import pytest

from tipline.removal import urllist
from tipline.removal.urllist import LocationHistory, Transition

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def _h(url: str, *steps: tuple[float, str], case_id: int = 1) -> LocationHistory:
    return LocationHistory(
        url, tuple(Transition(T0 + timedelta(hours=h), s) for h, s in steps), case_id
    )


def test_list_holds_exactly_the_locations_still_online() -> None:
    histories = [
        _h("https://a.example/1", (0, "confirmed"), (1, "evidence_captured"), (2, "notified")),
        _h("https://b.example/2", (0, "confirmed"), (3, "notified"), (10, "removed")),
        _h("https://c.example/3", (0, "confirmed"), (1, "held")),
        _h("https://d.example/4", (0, "confirmed"), (5, "removed"), (20, "reappeared")),
        _h("https://e.example/5", (0, "confirmed"), (2, "closed")),
        # Confirmed later than the export time: not yet on the list.
        _h("https://f.example/6", (30, "confirmed")),
    ]
    at_12 = urllist.current_list(histories, T0 + timedelta(hours=12))
    assert at_12 == ["https://a.example/1", "https://c.example/3"]
    # The removed one left at the export after its removal; the reappeared one is back.
    at_25 = urllist.current_list(histories, T0 + timedelta(hours=25))
    assert at_25 == ["https://a.example/1", "https://c.example/3", "https://d.example/4"]
    at_9 = urllist.current_list(histories, T0 + timedelta(hours=9))
    assert "https://b.example/2" in at_9 and "https://d.example/4" not in at_9


def test_one_url_with_two_cases_stays_while_either_is_open() -> None:
    histories = [
        _h("https://same.example/x", (0, "confirmed"), (4, "removed"), case_id=1),
        _h("https://same.example/x", (2, "confirmed"), case_id=2),
    ]
    assert urllist.current_list(histories, T0 + timedelta(hours=5)) == ["https://same.example/x"]


def test_since_delta() -> None:
    histories = [
        _h("https://kept.example/", (0, "confirmed")),
        _h("https://gone.example/", (0, "confirmed"), (6, "removed")),
        _h("https://new.example/", (8, "confirmed")),
        # Left and came back between the two exports: in neither list.
        _h("https://flap.example/", (0, "confirmed"), (5, "removed"), (7, "reappeared")),
    ]
    d = urllist.delta(histories, T0 + timedelta(hours=4), T0 + timedelta(hours=9))
    assert d.added == ("https://new.example/",)
    assert d.removed == ("https://gone.example/",)
    out = io.StringIO()
    assert urllist.write_delta(out, d) == 2
    assert out.getvalue() == "+\thttps://new.example/\n-\thttps://gone.example/\n"
    out = io.StringIO()
    urllist.write_delta(out, d, "json")
    doc = json.loads(out.getvalue())
    assert doc == {
        "since": "2026-03-01T13:00:00Z",
        "until": "2026-03-01T18:00:00Z",
        "added": ["https://new.example/"],
        "removed": ["https://gone.example/"],
    }
    with pytest.raises(ValueError, match="unknown delta format"):
        urllist.write_delta(out, d, "xml")


def test_hostile_urls_and_times() -> None:
    histories = [
        _h("https://ok.example/\nhttps://injected.example/", (0, "confirmed")),
        _h("", (0, "confirmed")),
        _h("  https://spaced.example/  ", (0, "confirmed")),
        _h("https://nul.example/\x00", (0, "confirmed")),
    ]
    assert urllist.current_list(histories, T0 + timedelta(hours=1)) == ["https://spaced.example/"]
    with pytest.raises(ValueError, match="naive"):
        urllist.current_list(histories, datetime(2026, 3, 1))
    with pytest.raises(ValueError, match="since is after now"):
        urllist.delta(histories, T0 + timedelta(hours=2), T0)


def test_transitions_at_one_instant_keep_their_order() -> None:
    h = _h("https://x.example/", (0, "confirmed"), (3, "removed"), (3, "reappeared"))
    assert urllist.state_at(h, T0 + timedelta(hours=3)) == "reappeared"
    assert urllist.state_at(h, T0 - timedelta(hours=1)) is None
    rows = [(7, "https://x.example/", "confirmed", datetime(2026, 3, 1, 9, 0))]
    (loaded,) = urllist.group_transitions(rows)
    assert loaded.transitions[0].at.tzinfo is UTC and loaded.case_id == 7


# -- statistics presentation (tipline.service.cases_api) ---------------------------------------


def _summary() -> dict[str, object]:
    from tipline.removal.stats import CaseHistories, summarise

    now = T0 + timedelta(hours=100)

    def case(provider: str, notified: float, removed: float | None) -> dict[str, object]:
        return {
            "reported_at": T0,
            "confirmed_at": T0 + timedelta(hours=1),
            "notified_at": T0 + timedelta(hours=notified),
            "removed_at": None if removed is None else T0 + timedelta(hours=removed),
            "provider": provider,
            "asn": 64500,
            "country": "NL",
        }

    records = [
        case("Example Hosting", 2, 12),
        case("Example Hosting", 2, 30),
        case("<script>alert(1)</script>", 3, None),
    ]
    return summarise(CaseHistories.from_records(records), now=now)


def _render(template: str, **values: object) -> str:
    from tipline.service import desk

    return desk._env.get_template(template).render(
        csrf="tok",
        user="alice",
        role="analyst",
        can=lambda perm: False,
        age=lambda h: f"{h:.0f}h",
        flash="",
        flash_kind="",
        beat=None,
        exposure=None,
        page="removal",
        title="t",
        **values,
    )


def test_stats_page_shows_time_to_removal_and_escapes_names() -> None:
    from tipline.service import cases_api

    summary = _summary()
    view = cases_api.stats_view(summary)
    curve, bars = view["charts"]
    assert curve.startswith("<svg") and "Still online (Kaplan-Meier)" in curve
    # One line per origin; from report S(24h) = 2/3 -> 66.67 % still online.
    assert curve.count('class="line"') == 3 and 'data-value="66.67"' in curve
    assert 'data-label="within 24h"' in bars
    html = _render("removal_stats.html", **view)
    # Notice -> removal: 10 h and 28 h, one still online: S(10) = 2/3, S(28) = 1/3: median 28 h.
    assert 'data-origin="notice"' in html and "28.0 h" in html
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html
    assert 'id="removal-by-provider"' in html and 'id="removal-by-country"' in html


def test_stats_response_json_csv_and_bad_format() -> None:
    from tipline.service import cases_api
    from tipline.service.errors import HttpError

    summary = _summary()
    res = cases_api.stats_response(summary, "json")
    assert json.loads(bytes(res.body))["origins"]["notice"]["all"]["median_hours"] == 28.0
    res = cases_api.stats_response(summary, "csv")
    assert res.media_type == "text/csv; charset=utf-8"
    assert bytes(res.body).decode().startswith("origin,group_by,group,cases")
    with pytest.raises(HttpError):
        cases_api.stats_response(summary, "xml")


def test_case_page_hides_the_hold_form_from_analysts() -> None:
    case = {
        "id": 7,
        "url": "https://host.example/a",
        "state": "notified",
        "open": True,
        "opened_at": "2026-03-01 09:00",
        "age_hours": 30.0,
        "provider": "Example Hosting",
        "asn": 64500,
        "country": "NL",
        "ladder_step": "host (2nd notice)",
        "next_action": "re-check",
        "next_due": "2026-03-02 15:00",
        "hold": None,
        "events": [{"at": "2026-03-01 09:00", "from_state": None, "to_state": "confirmed"}],
        "evidence": [],
        "notices": [{"serial": "TL-2026-000001", "to": "abuse@host.example", "step": "host"}],
        "rechecks": [],
    }
    analyst = _render("removal_case.html", case=case)
    assert "TL-2026-000001" in analyst and 'id="do-recheck"' in analyst
    assert 'id="hold-form"' not in analyst
    from tipline.service import desk

    senior = desk._env.get_template("removal_case.html").render(
        csrf="tok",
        user="sam",
        role="senior_analyst",
        can=lambda perm: perm == "review:senior",
        age=lambda h: f"{h:.0f}h",
        flash="",
        flash_kind="",
        beat=None,
        exposure=None,
        page="removal",
        title="t",
        case=case,
    )
    assert 'id="hold-form"' in senior


def test_removal_list_page_renders_cases_by_age_and_provider() -> None:
    cases = [
        {
            "id": 3,
            "url": "https://host.example/<b>",
            "state": "escalated",
            "provider": "Example Hosting",
            "asn": 64500,
            "country": "NL",
            "age_hours": 80.0,
            "ladder_step": "registrar",
            "next_action": "notice",
            "next_due": None,
            "hold": None,
        }
    ]
    html = _render(
        "removal.html",
        cases=cases,
        states=["confirmed", "notified", "escalated"],
        filters={"state": "escalated"},
        by_provider=[{"provider": "Example Hosting", "open": 1, "oldest_hours": 80.0}],
        more=False,
    )
    assert 'data-case="3"' in html and "registrar" in html and "80h" in html
    assert "https://host.example/&lt;b&gt;" in html
    assert '<option value="escalated" selected>' in html
