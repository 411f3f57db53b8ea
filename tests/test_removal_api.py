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
