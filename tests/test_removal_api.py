"""Removal surfaces: the URL list's lifecycle (tipline.removal.urllist) and the cases API."""

from __future__ import annotations

import hashlib
import io
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from test_notices import SmtpSink
from test_removal_e2e import PICTURE, World, confirmed_report, make_world
from tipline.removal import cases, scheduler, urllist
from tipline.removal.providers import replace_directory
from tipline.removal.urllist import LocationHistory, Transition
from tipline.service import auth
from tipline.service.app import BANK_PENDING_THREAD, create_app
from tipline.service.settings import ServiceSettings
from tipline.store.case_tables import CaseRow, NoticeRow
from tipline.store.tables import Job

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


# -- the cases API and the desk's Removal pages (tipline.service.cases_api) --------------------
#
# A case driven by the real scheduler (tests/test_removal_e2e.py's world: a local site, an
# aiosmtpd relay, ip2asn and provider data), read and acted on through a real app.

PASSWORD = "removal api password"
ROLES_USED = ("analyst", "senior_analyst", "auditor", "admin")


@dataclass
class Svc:
    client: TestClient
    world: World
    tokens: dict[str, str]

    def call(self, method: str, path: str, role: str = "analyst", **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.tokens[role]}", **kw.pop("headers", {})}
        return self.client.request(method, path, headers=headers, **kw)

    def get(self, path: str, role: str = "analyst", **kw: Any) -> Any:
        return self.call("GET", path, role, **kw)

    def post(self, path: str, role: str = "analyst", **kw: Any) -> Any:
        return self.call("POST", path, role, **kw)

    def login(self, role: str) -> str:
        """A browser session for ``role``'s user; returns its CSRF token."""
        self.client.cookies.clear()
        res = self.client.post(
            "/api/v1/auth/login", json={"username": f"u_{role}", "password": PASSWORD}
        )
        assert res.status_code == 200, res.text
        return str(res.json()["csrf_token"])


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    sink.start()
    try:
        yield sink
    finally:
        sink.stop()


@pytest.fixture
def svc(
    db_url: str,
    engine: Engine,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    smtp: SmtpSink,
) -> Iterator[Svc]:
    settings = ServiceSettings(
        data_dir=tmp_path / "svc",
        database_url=db_url,
        media_mode="hash-only",
        inprocess_workers=0,
        cookie_secure="false",
    )
    app = create_app(settings, load_index="none")
    app.state.ctx.auth.token_cache_seconds = 0
    world = make_world(session_factory, tmp_path, smtp)  # the scheduler's config: the world's
    tokens: dict[str, str] = {}
    with session_factory() as s, s.begin():
        for role in ROLES_USED:
            user = auth.create_user(s, f"u_{role}", role, PASSWORD)
            tokens[role] = auth.create_token(s, user, "all", sorted(auth.ROLE_PERMISSIONS[role]))
    try:
        with TestClient(app) as client:
            # The app's start-up thread writes too; a tick whose read snapshot it overtook
            # would fail its first attempt on SQLite (and be retried later than run_jobs looks).
            for t in threading.enumerate():
                if t.name == BANK_PENDING_THREAD:
                    t.join(30)
            yield Svc(client, world, tokens)
    finally:
        scheduler.configure(None)
        world.site.close()
        world.mirror.close()


def _notified_case(svc: Svc) -> CaseRow:
    """A case the scheduler took through attribution, evidence and its first notice."""
    w = svc.world
    confirmed_report(w, w.url)
    scheduler.start(w.queue, w.config)
    w.run_jobs()
    case = w.case()
    assert case.state == "notified" and case.evidence_sha256
    return case


def _more_cases(svc: Svc, n: int) -> list[int]:
    ids = []
    with svc.world.factory() as s, s.begin():
        for i in range(n):
            case, _ = cases.open_case(
                s, f"http://other{i}.example/page", now=T0_E2E - timedelta(days=2 * (i + 1))
            )
            ids.append(case.id)
    return ids


def test_list_and_show_a_case_the_scheduler_notified(svc: Svc) -> None:
    case = _notified_case(svc)
    res = svc.get("/api/v1/cases")
    assert res.status_code == 200, res.text
    (row,) = res.json()["cases"]
    assert res.json()["next_after"] is None
    assert row["id"] == case.id and row["state"] == "notified" and row["url"] == svc.world.url
    assert (row["provider"], row["asn"], row["country"]) == ("Example Host DE", 64500, "DE")
    assert row["ladder_label"] == "host (notice 1)" and row["notice_count"] == 1
    confirmed = datetime.fromisoformat(row["confirmed_at"])
    assert confirmed == T0_E2E - timedelta(hours=1)
    assert row["age_hours"] == pytest.approx(
        (datetime.now(UTC) - confirmed).total_seconds() / 3600, abs=0.1
    )
    assert "events" not in row  # the list is without history

    res = svc.get(f"/api/v1/cases/{case.id}", role="auditor")  # report:read is enough
    assert res.status_code == 200, res.text
    doc = res.json()
    assert [(e["from_state"], e["to_state"]) for e in doc["events"]] == [
        (None, "confirmed"),
        ("confirmed", "evidence_captured"),
        ("evidence_captured", "notified"),
    ]
    (bundle,) = doc["evidence"]
    assert bundle["sha256"] == case.evidence_sha256 and bundle["current"] is True
    assert bundle["http_status"] == 200 and bundle["resolved_ip"] == "127.0.0.1"
    assert hashlib.sha256(PICTURE).hexdigest() in bundle["media_sha256"]
    assert bundle["error"] is None
    (notice,) = doc["notices"]
    assert notice["state"] == "sent" and notice["to"] == "abuse@host-de.example"
    assert notice["serial"] == svc.world.smtp.received[0].message["X-Tipline-Notice"]
    assert doc["rechecks"] == []


def test_filters_paging_and_bad_parameters(svc: Svc) -> None:
    case = _notified_case(svc)
    others = _more_cases(svc, 3)

    def ids(query: str) -> list[int]:
        res = svc.get("/api/v1/cases" + query)
        assert res.status_code == 200, res.text
        return [c["id"] for c in res.json()["cases"]]

    assert ids("") == [case.id, *others]
    assert ids("?state=notified") == [case.id]
    assert ids("?state=confirmed") == others
    assert ids("?state=removed") == []
    assert ids("?provider=Example+Host+DE") == [case.id]
    assert ids("?provider=nobody") == []
    assert ids("?country=de") == [case.id] and ids("?country=FR") == []
    # ages from confirmation: the world's case was confirmed at T0 - 1 h (March 2026)
    age = (datetime.now(UTC) - (T0_E2E - timedelta(hours=1))).total_seconds() / 3600
    assert ids(f"?min_age_hours={age - 1:.0f}") == [case.id, *others]
    assert ids(f"?max_age_hours={age - 1:.0f}") == []
    assert ids(f"?min_age_hours={age + 1:.0f}") == others  # confirmed 2, 4, 6 days before
    assert ids(f"?min_age_hours={age + 72:.0f}") == others[1:]
    # min rounded down: a bound rounded to the nearest hour could fall just above the case's age
    assert ids(f"?max_age_hours={age + 72:.0f}&min_age_hours={int(age)}") == [case.id, others[0]]
    with svc.world.factory() as s, s.begin():
        cases.close(s, others[0], reason="duplicate", by="test")
    assert ids("?state=open") == [case.id, *others[1:]]
    assert ids("?state=all") == [case.id, *others]
    assert ids("?state=closed") == [others[0]]

    page1 = svc.get("/api/v1/cases?state=all&limit=2").json()
    assert [c["id"] for c in page1["cases"]] == [case.id, others[0]]
    assert page1["next_after"] == others[0]
    page2 = svc.get(f"/api/v1/cases?state=all&limit=2&after={page1['next_after']}").json()
    assert [c["id"] for c in page2["cases"]] == others[1:] and page2["next_after"] is None

    for query, message in (
        ("state=bogus", "state must be open, all or one of"),
        ("limit=0", "limit must be 1 to 500"),
        ("limit=501", "limit must be 1 to 500"),
        ("limit=ten", "limit must be a whole number"),
        ("after=-3", "after must be a non-negative number"),
        ("after=1.5", "after must be a whole number"),
        ("country=DEU", "country must be an ISO 3166 alpha-2 code"),
        ("country=1x", "country must be an ISO 3166 alpha-2 code"),
        ("min_age_hours=-1", "min_age_hours must be a non-negative number"),
        ("max_age_hours=nan", "max_age_hours must be a non-negative number"),
        ("min_age_hours=5&max_age_hours=2", "min_age_hours is more than max_age_hours"),
        ("provider=" + "x" * 301, "provider: at most 300 characters"),
    ):
        res = svc.get("/api/v1/cases?" + query)
        assert res.status_code == 400, (query, res.text)
        assert res.json()["message"].startswith(message), (query, res.text)
    assert svc.get("/api/v1/cases/999999").json() == {"message": "no case 999999"}
    assert svc.get("/api/v1/cases/999999").status_code == 404
    assert svc.get("/api/v1/cases/abc").status_code == 422
    assert svc.client.get("/api/v1/cases").status_code == 401


def test_hold_release_close_and_their_refusals(svc: Svc) -> None:
    case = _notified_case(svc)
    path = f"/api/v1/cases/{case.id}"
    until = (datetime.now(UTC) + timedelta(days=7)).replace(microsecond=0)
    body = {"agency": "LKA-benign-test", "until": until.isoformat(), "reason": "investigation"}

    # analysts may not hold or release, whatever they send
    res = svc.post(path + "/hold", json=body)
    assert res.status_code == 403 and res.json() == {
        "message": "permission 'review:senior' required"
    }
    assert svc.post(path + "/release", json={}).status_code == 403
    assert svc.post(path + "/hold", role="auditor", json=body).status_code == 403

    for bad, message in (
        ({**body, "agency": ""}, "agency is required"),
        ({**body, "agency": 7}, "agency must be text"),
        ({**body, "agency": "x" * 201}, "agency: at most 200 characters"),
        ({**body, "until": "next tuesday"}, "until: 'next tuesday' is not an ISO 8601"),
        ({**body, "until": "2020-01-01T00:00:00Z"}, "until: 2020-01-01T00:00:00+00:00 is not in"),
        ({"agency": "LKA"}, "until is required"),
    ):
        res = svc.post(path + "/hold", role="senior_analyst", json=bad)
        assert res.status_code == 400 and res.json()["message"].startswith(message), res.text
    res = svc.post(path + "/hold", role="senior_analyst", content=b"{not json")
    assert res.status_code == 400 and res.json()["message"] == "the body is not valid JSON"
    res = svc.post(path + "/hold", role="senior_analyst", json=["agency"])
    assert res.status_code == 400 and res.json()["message"] == "the body must be a JSON object"
    assert (
        svc.post("/api/v1/cases/999999/hold", role="senior_analyst", json=body).status_code == 404
    )

    res = svc.post(path + "/hold", role="senior_analyst", json=body)
    assert res.status_code == 200, res.text
    assert res.json()["state"] == "held"
    assert res.json()["hold"]["agency"] == "LKA-benign-test"
    assert datetime.fromisoformat(res.json()["hold"]["until"]) == until
    # a date: the hold lasts through that day
    day = (datetime.now(UTC) + timedelta(days=30)).date()
    res = svc.post(path + "/hold", role="admin", json={"agency": "LKA", "until": day.isoformat()})
    assert res.status_code == 200
    assert res.json()["hold"]["until"] == f"{day + timedelta(days=1)}T00:00:00+00:00"
    # held: nothing to re-check, no notice
    assert svc.post(path + "/recheck").status_code == 409
    assert svc.post(path + "/notify").json()["message"] == f"case {case.id} is held: no notice now"

    res = svc.post(path + "/release", role="senior_analyst", json={"reason": "cleared"})
    assert res.status_code == 200 and res.json()["state"] == "notified"
    res = svc.post(path + "/release", role="senior_analyst")
    assert res.status_code == 409
    assert res.json()["message"] == f"case {case.id} is not held (it is notified)"

    assert svc.post(path + "/close", role="auditor", json={"reason": "x"}).status_code == 403
    res = svc.post(path + "/close", json={})
    assert res.status_code == 400 and res.json()["message"] == "reason is required"
    res = svc.post(path + "/close", json={"reason": "   "})
    assert res.status_code == 400
    res = svc.post(path + "/close", json={"reason": "handled by the partner hotline"})
    assert res.status_code == 200 and res.json()["state"] == "closed"
    assert res.json()["close_reason"] == "handled by the partner hotline"
    res = svc.post(path + "/close", json={"reason": "again"})
    assert res.status_code == 409 and res.json()["message"] == f"case {case.id} is already closed"
    res = svc.post(path + "/hold", role="senior_analyst", json=body)
    assert res.status_code == 409
    assert "cannot go from closed to held" in res.json()["message"]
    assert (
        svc.post(path + "/recheck").json()["message"]
        == f"case {case.id} is closed: nothing to re-check"
    )

    events = svc.get(path).json()["events"]
    assert [(e["to_state"], e["actor"].rsplit(":", 1)[-1]) for e in events[3:]] == [
        ("held", "u_senior_analyst"),
        ("held", "u_admin"),  # extended
        ("notified", "u_senior_analyst"),
        ("closed", "u_analyst"),
    ]
    assert all(e["actor"].startswith("token:") for e in events[3:])


def test_recheck_and_notify_queue_real_jobs(svc: Svc) -> None:
    w = svc.world
    case = _notified_case(svc)
    path = f"/api/v1/cases/{case.id}"
    res = svc.post(path + "/recheck")
    assert res.status_code == 202, res.text
    out = res.json()
    assert out["action"] == "recheck" and out["case_id"] == case.id
    with w.factory() as s:
        job = s.get(Job, out["job_id"])
        assert job is not None and job.kind == scheduler.STEP_KIND and job.status == "queued"
        version = s.get(CaseRow, case.id).version  # type: ignore[union-attr]
        assert job.dedupe_key == f"removal-step:{case.id}:{version}"
    w.clock.now = datetime.now(UTC) + timedelta(minutes=1)  # the workers' clock: now
    assert scheduler.STEP_KIND in w.run_jobs()
    doc = svc.get(path).json()
    assert [r["outcome"] for r in doc["rechecks"]] == ["online"]
    assert doc["last_checked_at"] is not None

    # no notice waiting: a round starts (a step job), which a worker turns into a notice
    res = svc.post(path + "/notify", json={})
    assert res.status_code == 202 and res.json()["round"] is True
    assert [r.message["Subject"].split("] ")[1][:10] for r in w.smtp.received] == [
        "Notice of ",
        "Reminder 1",  # the re-check found the content still online: the next round
    ]
    w.advance(timedelta(minutes=1))
    assert len(w.smtp.received) == 3 and "Reminder 2" in w.smtp.received[2].message["Subject"]
    res = svc.post(path + "/notify", json={"mark_sent": "yes"})
    assert res.status_code == 400 and res.json()["message"] == "mark_sent must be true or false"


def test_manual_notice_answered_and_marked_sent(svc: Svc) -> None:
    w = svc.world
    with w.factory() as s, s.begin():
        replace_directory(s, [])  # nobody to tell: the notice is manual
    confirmed_report(w, w.url)
    scheduler.start(w.queue, w.config)
    w.run_jobs()
    case = w.case()
    path = f"/api/v1/cases/{case.id}"
    res = svc.post(path + "/notify")
    assert res.status_code == 202, res.text
    (manual,) = res.json()["manual"]
    assert manual["state"] == "manual_pending" and w.url in manual["text"]
    assert manual["subject"]
    res = svc.post(path + "/notify", json={"mark_sent": True})
    assert res.status_code == 202 and res.json()["manual"][0]["state"] == "sent"
    with w.factory() as s:
        (notice,) = s.scalars(select(NoticeRow))
        assert notice.state == "sent" and notice.sent_by and "u_analyst" in notice.sent_by
    assert w.smtp.received == []


def test_stats_json_csv_and_bad_format(svc: Svc) -> None:
    _notified_case(svc)
    res = svc.get("/api/v1/cases/stats", role="auditor")
    assert res.status_code == 200, res.text
    doc = res.json()
    assert doc["cases"] == 1 and doc["origins"]["notice"]["all"]["censored"] == 1
    res = svc.get("/api/v1/cases/stats?format=csv")
    assert res.headers["content-type"] == "text/csv; charset=utf-8"
    assert "attachment" in res.headers["content-disposition"]
    assert res.text.startswith("origin,group_by,group,cases")
    assert "Example Host DE" in res.text
    res = svc.get("/api/v1/cases/stats?format=xml")
    assert res.status_code == 400 and res.json()["message"] == "format must be json or csv"


def test_desk_pages_and_forms(svc: Svc) -> None:
    case = _notified_case(svc)
    c = svc.client
    csrf = svc.login("analyst")
    page = c.get("/desk/removal")
    assert page.status_code == 200
    assert '<a href="/desk/removal" aria-current="page">Removal</a>' in page.text
    assert f'data-case="{case.id}"' in page.text and "host (notice 1)" in page.text
    assert 'id="removal-providers"' in page.text and "Example Host DE" in page.text
    detail = c.get(f"/desk/removal/cases/{case.id}")
    assert detail.status_code == 200
    assert case.evidence_sha256 and case.evidence_sha256 in detail.text
    assert 'data-to="evidence_captured"' in detail.text and 'data-to="notified"' in detail.text
    assert 'id="hold-form"' not in detail.text and 'id="do-recheck"' in detail.text
    assert hashlib.sha256(PICTURE).hexdigest() in detail.text
    # an analyst's form post to hold is refused by the route, not only hidden
    res = c.post(
        f"/desk/removal/cases/{case.id}/hold",
        data={"csrf_token": csrf, "agency": "LKA", "until": "2099-01-01"},
    )
    assert res.status_code == 403
    # without the CSRF token nothing is done
    res = c.post(f"/desk/removal/cases/{case.id}/close", data={"reason": "x"})
    assert res.status_code == 403
    res = c.post(f"/desk/removal/cases/{case.id}/close", data={"csrf_token": csrf, "reason": ""})
    assert res.status_code == 400 and "reason is required" in res.text
    assert c.get("/desk/removal?state=bogus").status_code == 400
    assert c.get("/desk/removal/cases/999999").status_code == 404
    stats = c.get("/desk/removal/stats")
    assert stats.status_code == 200 and 'id="removal-origins"' in stats.text

    csrf = svc.login("senior_analyst")
    detail = c.get(f"/desk/removal/cases/{case.id}")
    assert 'id="hold-form"' in detail.text
    res = c.post(
        f"/desk/removal/cases/{case.id}/hold",
        data={"csrf_token": csrf, "agency": "LKA-benign-test", "until": "2099-01-01"},
        follow_redirects=False,
    )
    assert res.status_code == 303 and res.headers["location"].endswith("?done=held")
    page = c.get(res.headers["location"])
    assert "Law-enforcement hold set" in page.text
    assert re.search(r'id="case-hold">LKA-benign-test until 2099-01-02 00:00 UTC', page.text)
    assert 'id="release-form"' in page.text
    res = c.post(f"/desk/removal/cases/{case.id}/release", data={"csrf_token": csrf})
    assert res.status_code == 200 and "Hold released" in res.text  # followed the redirect
    c.cookies.clear()


T0_E2E = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
