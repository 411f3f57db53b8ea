"""The URL list's lifecycle (issue 13 item 6): the list holds exactly the locations still
online and confirmed, from the removal cases' histories; ``tipline export urls`` and
``GET /api/v1/exports/urls`` (SQLite + PostgreSQL). URLs are placeholders on example.org."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from tipline.removal import cases, urllist
from tipline.removal.cases import RecheckLike
from tipline.removal.urllist import LocationHistory, Transition
from tipline.service import auth
from tipline.store.tables import AuditEvent, Item, Report, ReportItem

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
ONLINE = RecheckLike("online", "evidence media still served", 200)
MISS = RecheckLike("miss", "gone: HTTP 404", 404)
A = "http://a.example.org/page"
B = "http://b.example.org/page"
C = "http://c.example.org/page"


# -- the pure core ------------------------------------------------------------------------


def _h(url: str, *steps: tuple[int, str]) -> LocationHistory:
    return LocationHistory(url, tuple(Transition(T0 + d * DAY, st) for d, st in steps))


def test_list_follows_states_and_reappearance() -> None:
    hs = [
        _h(A, (0, "confirmed"), (1, "notified"), (3, "removed"), (5, "reappeared")),
        _h(B, (0, "confirmed"), (2, "closed")),
        _h(C, (1, "confirmed"), (2, "held"), (4, "moved")),
    ]
    assert urllist.current_list(hs, T0) == [A, B]
    assert urllist.current_list(hs, T0 + 2 * DAY) == [A, C]  # B closed, C held
    assert urllist.current_list(hs, T0 + 3 * DAY) == [C]  # A removed
    assert urllist.current_list(hs, T0 + 5 * DAY) == [A, C]  # A reappeared
    assert urllist.current_list(hs, T0 - DAY) == []  # before any case
    d = urllist.delta(hs, T0, T0 + 3 * DAY)
    assert (d.added, d.removed) == ((C,), (A, B))
    # A left and came back in between: in neither half
    d = urllist.delta(hs, T0 + 1 * DAY, T0 + 6 * DAY)
    assert (d.added, d.removed) == ((), (B,))


def test_two_cases_of_one_url_and_hostile_urls() -> None:
    hs = [
        _h(A, (0, "confirmed"), (1, "closed")),
        _h(A, (2, "confirmed")),  # a new case for the same location
        _h("http://x.example.org/\r\nInjected: 1", (0, "confirmed")),
        _h("", (0, "confirmed")),
        _h("http://" + "x" * 9000, (0, "confirmed")),
    ]
    assert urllist.current_list(hs, T0) == [A]
    assert urllist.current_list(hs, T0 + DAY) == []
    assert urllist.current_list(hs, T0 + 2 * DAY) == [A]


def test_bad_times_are_refused() -> None:
    hs = [_h(A, (0, "confirmed"))]
    with pytest.raises(ValueError, match="naive"):
        urllist.current_list(hs, datetime(2026, 3, 2))
    with pytest.raises(ValueError, match="after now"):
        urllist.delta(hs, T0 + DAY, T0)
    with pytest.raises(ValueError, match="unknown delta format"):
        urllist.write_delta(io.StringIO(), urllist.delta(hs, T0, T0), "xml")


def test_delta_text_and_json() -> None:
    d = urllist.delta(
        [_h(A, (1, "confirmed")), _h(B, (0, "confirmed"), (1, "removed"))], T0, T0 + DAY
    )
    out = io.StringIO()
    assert urllist.write_delta(out, d) == 2
    assert out.getvalue() == f"+\t{A}\n-\t{B}\n"
    out = io.StringIO()
    urllist.write_delta(out, d, "json")
    assert json.loads(out.getvalue()) == {
        "since": "2026-03-02T09:00:00Z",
        "until": "2026-03-03T09:00:00Z",
        "added": [A],
        "removed": [B],
    }


# -- from the case tables -------------------------------------------------------------------


def _lifecycle(sf: sessionmaker[Session]) -> dict[str, int]:
    """A: online, removed on day 3 (three misses), reappears on day 5. B: closed on day 2.
    C: opened on day 1, held on day 2."""
    ids: dict[str, int] = {}
    with sf() as s, s.begin():
        ids["a"] = cases.open_case(s, A, now=T0)[0].id
        ids["b"] = cases.open_case(s, B, now=T0)[0].id
    with sf() as s, s.begin():
        ids["c"] = cases.open_case(s, C, now=T0 + DAY)[0].id
    with sf() as s, s.begin():
        cases.close(s, ids["b"], reason="duplicate report", by="user:ann", now=T0 + 2 * DAY)
        cases.hold(
            s,
            ids["c"],
            agency="Stand-in Police",
            until=T0 + 30 * DAY,
            by="user:sen",
            role="senior_analyst",
            now=T0 + 2 * DAY,
        )
    for day, result in ((1, MISS), (2, MISS), (3, MISS), (5, ONLINE)):
        with sf() as s, s.begin():
            case = cases.get_case(s, ids["a"])
            cases.record_recheck(
                s,
                case,
                result,
                misses_to_remove=3,
                watch_for=30 * DAY,
                recheck_every=DAY,
                now=T0 + day * DAY + timedelta(hours=1),
            )
    with sf() as s:
        assert cases.get_case(s, ids["a"]).state == "reappeared"
    return ids


def _export(sf: sessionmaker[Session], **kw: object) -> tuple[str, urllist.UrlExport]:
    out = io.StringIO()
    with sf() as s, s.begin():
        result = urllist.export_urls(s, out, actor="test", **kw)  # type: ignore[arg-type]
    return out.getvalue(), result


def test_export_from_cases(session_factory: sessionmaker[Session]) -> None:
    _lifecycle(session_factory)
    with session_factory() as s:
        hs = urllist.load_histories(s, batch=3)  # several pages
        assert len(hs) == 3
        assert urllist.listed_now(s) == urllist.current_list(hs, datetime.now(UTC)) == [A, C]
    # the list at each next export
    at = T0 + timedelta(hours=2)
    assert _export(session_factory, now=at)[0] == f"{A}\n{B}\n"
    assert _export(session_factory, now=at + DAY)[0] == f"{A}\n{B}\n{C}\n"
    assert _export(session_factory, now=at + 2 * DAY)[0] == f"{A}\n{C}\n"  # B closed
    text, result = _export(session_factory, now=at + 3 * DAY)
    assert text == f"{C}\n" and result.source == "cases" and result.count == 1  # A removed
    assert _export(session_factory, now=at + 5 * DAY)[0] == f"{A}\n{C}\n"  # A is back
    assert _export(session_factory)[0] == f"{A}\n{C}\n"  # now, from the current states
    # the delta between two times
    text, result = _export(session_factory, since=at, now=at + 3 * DAY)
    assert text == f"+\t{C}\n-\t{A}\n-\t{B}\n" and result.count == 3
    text, _ = _export(session_factory, since=at + 2 * DAY, now=at + 5 * DAY, fmt="json")
    assert json.loads(text)["added"] == [] and json.loads(text)["removed"] == []
    text, _ = _export(session_factory, since=at + 3 * DAY, now=at + 5 * DAY, fmt="json")
    assert json.loads(text)["added"] == [A]
    text, _ = _export(session_factory, now=at, fmt="json")
    assert json.loads(text) == {"source": "cases", "at": "2026-03-02T11:00:00Z", "urls": [A, B]}
    with session_factory() as s:
        events = list(s.scalars(select(AuditEvent).where(AuditEvent.action == "export.urls")))
    assert len(events) == 10
    delta_event = events[6].details
    assert delta_event["delta"] is True and delta_event["source"] == "cases"
    assert (delta_event["added"], delta_event["removed"]) == (1, 2)


def test_export_refuses_bad_requests(session_factory: sessionmaker[Session]) -> None:
    with pytest.raises(urllist.UrlListError, match="a delta needs removal cases"):
        _export(session_factory, since=T0, delta_wanted=True)
    with pytest.raises(urllist.UrlListError, match="needs --since"):
        _export(session_factory, delta_wanted=True)
    with pytest.raises(urllist.UrlListError, match="unknown URL list source"):
        _export(session_factory, source="everything")
    with pytest.raises(urllist.UrlListError, match="unknown URL list format"):
        _export(session_factory, fmt="xml")
    with pytest.raises(ValueError, match="naive"):
        _export(session_factory, since=datetime(2026, 3, 2), source="cases")
    with session_factory() as s, s.begin():
        cases.open_case(s, A, now=T0)
    with pytest.raises(urllist.UrlListError, match="after the export time"):
        _export(session_factory, since=T0 + DAY, now=T0)
    with session_factory() as s:
        n = len(list(s.scalars(select(AuditEvent).where(AuditEvent.action == "export.urls"))))
    assert n == 0  # nothing refused was recorded as exported


def _graded_item(s: Session, url: str) -> None:
    """A final-graded actionable item fetched from ``url`` (no case opened for it)."""
    digest = hashlib.sha256(b"benign-stand-in-" + url.encode()).hexdigest()
    item = Item(
        sha256=digest,
        md5=digest[:32],
        size=1,
        media_type="image/png",
        grade={"actionable": True, "values": {}, "label": "DEMO-benign-stand-in"},
        graded_at=T0,
        status="confirmed",
    )
    s.add(item)
    s.flush()
    report = Report(reference=f"TL-URLLIST-{item.id}", source="cli", urls=[url])
    s.add(report)
    s.flush()
    s.add(ReportItem(report_id=report.id, item_id=item.id, source_url=url))


def test_install_without_cases_keeps_the_items_list(
    session_factory: sessionmaker[Session],
) -> None:
    with session_factory() as s, s.begin():
        _graded_item(s, "http://graded.example.org/x")
    text, result = _export(session_factory)
    assert text == "http://graded.example.org/x\n" and result.source == "items"
    text, _ = _export(session_factory, fmt="json")
    assert json.loads(text) == {"source": "items", "urls": ["http://graded.example.org/x"]}
    # once a case exists, the list is the cases' (the graded item has none)
    with session_factory() as s, s.begin():
        cases.open_case(s, A, now=T0)
    assert _export(session_factory)[0] == f"{A}\n"
    assert _export(session_factory, source="items")[0] == "http://graded.example.org/x\n"


# -- CLI and API ----------------------------------------------------------------------------


def test_cli_export_urls(
    db_url: str, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    from tipline.cli.app import _register, app

    _register()
    runner = CliRunner()
    env = {"TIPLINE_DATABASE_URL": db_url, "TIPLINE_DATA_DIR": str(tmp_path)}
    res = runner.invoke(app, ["export", "urls", "--delta", "--since", "2026-03-01"], env=env)
    assert res.exit_code != 0 and "a delta needs removal cases" in res.output
    _lifecycle(session_factory)
    res = runner.invoke(app, ["export", "urls"], env=env)
    assert res.exit_code == 0, res.output
    assert res.stdout == f"{A}\n{C}\n" and "exported 2 URLs (from removal cases)" in res.stderr
    out = tmp_path / "list.txt"
    res = runner.invoke(
        app, ["export", "urls", "--until", "2026-03-05T11:00:00Z", "-o", str(out)], env=env
    )
    assert res.exit_code == 0 and out.read_text() == f"{C}\n"
    res = runner.invoke(
        app,
        ["export", "urls", "--since", "2026-03-02T11:00", "--until", "2026-03-05T11:00Z"],
        env=env,
    )
    assert res.exit_code == 0 and res.stdout == f"+\t{C}\n-\t{A}\n-\t{B}\n"
    assert "1 added, 2 removed" in res.stderr
    res = runner.invoke(
        app, ["export", "urls", "--delta", "--json", "--since", "2026-03-05T11:00Z"], env=env
    )
    assert res.exit_code == 0 and json.loads(res.stdout)["added"] == [A]
    res = runner.invoke(app, ["export", "urls", "--since", "yesterday"], env=env)
    assert res.exit_code != 0 and "not an ISO date" in res.output
    res = runner.invoke(app, ["export", "urls", "--until", "soon"], env=env)
    assert res.exit_code != 0 and "--until 'soon' is not an ISO date" in res.output
    res = runner.invoke(app, ["export", "urls", "--source", "items"], env=env)
    assert res.exit_code == 0 and res.stdout == "" and "of final-graded items" in res.stderr


PASSWORD = "correct horse battery"


@pytest.fixture
def client(
    db_url: str, session_factory: sessionmaker[Session], tmp_path: Path
) -> Iterator[TestClient]:
    from tipline.service.app import create_app
    from tipline.service.settings import ServiceSettings

    settings = ServiceSettings(
        data_dir=tmp_path, database_url=db_url, media_mode="hash-only", inprocess_workers=0
    )
    with TestClient(create_app(settings, load_index="none")) as c:
        yield c


def test_api_export_urls(client: TestClient, session_factory: sessionmaker[Session]) -> None:
    with session_factory() as s, s.begin():
        user = auth.create_user(s, "x_analyst", "analyst", PASSWORD)
        raw = auth.create_token(s, user, "t", sorted(auth.ROLE_PERMISSIONS["analyst"]))
    h = {"Authorization": f"Bearer {raw}"}
    res = client.get(
        "/api/v1/exports/urls", params={"delta": "true", "since": "2026-03-01"}, headers=h
    )
    assert res.status_code == 400 and "a delta needs removal cases" in res.text
    _lifecycle(session_factory)
    res = client.get("/api/v1/exports/urls", headers=h)
    assert res.status_code == 200 and res.text == f"{A}\n{C}\n"
    assert res.headers["x-tipline-export-count"] == "2"
    res = client.get(
        "/api/v1/exports/urls",
        params={"since": "2026-03-02T11:00Z", "until": "2026-03-05T11:00Z", "format": "json"},
        headers=h,
    )
    assert res.status_code == 200 and res.headers["content-type"].startswith("application/json")
    assert json.loads(res.text)["removed"] == [A, B]
    for bad in ({"format": "xml"}, {"source": "all"}, {"until": "later"}, {"since": "soon"}):
        assert client.get("/api/v1/exports/urls", params=bad, headers=h).status_code == 400
    assert client.get("/api/v1/exports/urls").status_code == 401
