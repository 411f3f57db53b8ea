"""The removal case state machine (tipline.removal.cases) on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from tipline.audit import log as audit
from tipline.cli import app as cli_app
from tipline.removal import cases, scheduler
from tipline.removal.cases import (
    TRANSITIONS,
    CaseError,
    HoldPermissionError,
    InvalidLocationError,
    InvalidTransitionError,
    RecheckLike,
)
from tipline.removal.scheduler import LadderStep
from tipline.store.case_tables import CaseEvent, CaseIntake, CaseRow, LocationRow, RecheckRow
from tipline.store.tables import AuditEvent, Item, Report, ReportItem

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
ONLINE = RecheckLike("online", "1 of 1 evidence media still served", 200)
MISS = RecheckLike("miss", "gone: HTTP 404", 404)


def _open(s: Session, url: str = "http://Site.Example.org/a/../page?x=1", **kw: object) -> int:
    case, created = cases.open_case(s, url, now=T0, **kw)  # type: ignore[arg-type]
    assert created
    return case.id


def test_open_case_canonical_one_per_location(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as s, s.begin():
        first = _open(s)
        again, created = cases.open_case(s, "http://site.example.org:80/page?x=1#frag", now=T0)
        assert not created and again.id == first
        case = cases.get_case(s, first)
        assert case.url == "http://site.example.org/page?x=1"
        assert case.state == "confirmed" and case.next_action == "prepare"
        assert case.next_action_at == T0 and case.reported_at == T0
        loc = s.get(LocationRow, case.location_id)
        assert loc is not None and loc.registrable_domain == "example.org"
    with session_factory() as s, s.begin():
        cases.close(s, first, reason="duplicate", by="user:ann", now=T0 + DAY)
        # closed: the location may get a new case
        second, created = cases.open_case(s, "http://site.example.org/page?x=1", now=T0 + DAY)
        assert created and second.id != first
        assert s.scalar(select(func.count()).select_from(LocationRow)) == 1


def test_open_case_refuses_bad_url(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as s, s.begin():
        for bad in ("", "javascript:alert(1)", "http://", "http://exa mple.org/", "x" * 9000):
            with pytest.raises(InvalidLocationError):
                cases.open_case(s, bad, now=T0)
        assert s.scalar(select(func.count()).select_from(CaseRow)) == 0


def test_unique_open_location_enforced_by_database(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as s, s.begin():
        cid = _open(s)
        case = cases.get_case(s, cid)
        s.add(
            CaseRow(
                location_id=case.location_id,
                open_location_id=case.location_id,
                url=case.url,
                reported_at=T0,
                confirmed_at=T0,
            )
        )
        with pytest.raises(IntegrityError):
            s.flush()


def test_every_transition_in_the_table_and_none_other(
    session_factory: sessionmaker[Session],
) -> None:
    for from_state in cases.STATES:
        for to_state in cases.STATES:
            with session_factory() as s, s.begin():
                case = cases.get_case(s, _open(s, f"http://e{from_state}.example.org/{to_state}"))
                case.state = from_state
                if to_state in TRANSITIONS[from_state]:
                    cases.transition(s, case, to_state, actor="test", now=T0)
                    assert case.state == to_state
                else:
                    with pytest.raises(InvalidTransitionError) as err:
                        cases.transition(s, case, to_state, actor="test", now=T0)
                    assert f"cannot go from {from_state} to {to_state}" in str(err.value)
                    assert case.state == from_state
                s.rollback()


def test_transitions_are_events_and_audit(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as s, s.begin():
        cid = _open(s)
        case = cases.get_case(s, cid)
        cases.record_evidence(s, case, "ab" * 32, now=T0 + timedelta(minutes=5))
        cases.record_notice(s, case, serial="TLN-2026-000001", ladder_step=0, role="host", now=T0)
        cases.record_notice(s, case, serial="TLN-2026-000002", ladder_step=0, role="host", now=T0)
        cases.record_notice(s, case, serial="TLN-2026-000003", ladder_step=1, role="site_owner")
        assert case.state == "escalated" and case.notice_count == 3
        assert case.escalation_level == 1
    with session_factory() as s:
        events = cases.case_events(s, cid)
        assert [(e.from_state, e.to_state) for e in events] == [
            (None, "confirmed"),
            ("confirmed", "evidence_captured"),
            ("evidence_captured", "notified"),
            ("notified", "notified"),
            ("notified", "escalated"),
        ]
        assert events[1].details["evidence_sha256"] == "ab" * 32
        actions = [a.action for a in s.scalars(select(AuditEvent).order_by(AuditEvent.id))]
        assert actions == [
            "case.open",
            "case.evidence_captured",
            "case.notified",
            "case.notified",
            "case.escalated",
        ]
        assert audit.verify(s).ok
        view = cases.case_json(s, cases.get_case(s, cid), history=True)
        assert view["state"] == "escalated" and len(view["events"]) == 5


def test_hold_senior_only_blocks_and_expires(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as s, s.begin():
        cid = _open(s)
        case = cases.get_case(s, cid)
        cases.record_evidence(s, case, "cd" * 32, now=T0)
        cases.schedule(case, "notice", T0)
    with session_factory() as s, s.begin():
        with pytest.raises(HoldPermissionError):
            cases.hold(s, cid, agency="LKA", until=T0 + DAY, by="user:al", role="analyst", now=T0)
        with pytest.raises(CaseError, match="not in the future"):
            cases.hold(s, cid, agency="LKA", until=T0, by="user:sen", role="senior_analyst", now=T0)
        with pytest.raises(CaseError, match="agency"):
            cases.hold(s, cid, agency=" ", until=T0 + DAY, by="u", role="admin", now=T0)
        cases.hold(
            s,
            cid,
            agency="LKA Berlin",
            until=T0 + DAY,
            by="user:sen",
            role="senior_analyst",
            now=T0,
        )
    with session_factory() as s, s.begin():
        assert cases.get_case(s, cid).state == "held"
        assert cases.due_cases(s, T0 + timedelta(hours=1)) == []  # no action while held
        # another agency extends it
        cases.hold(s, cid, agency="BKA", until=T0 + 2 * DAY, by="user:sen", role="admin", now=T0)
        assert cases.expire_holds(s, T0 + DAY + timedelta(hours=1)) == []
        assert cases.get_case(s, cid).hold_agency == "BKA"
    with session_factory() as s, s.begin():
        released = cases.expire_holds(s, T0 + 2 * DAY)
        assert released == [cid]
        case = cases.get_case(s, cid)
        assert case.state == "evidence_captured" and case.hold_until is None
        assert case.next_action == "notice" and case.next_action_at == T0 + 2 * DAY
        assert [c[0] for c in cases.due_cases(s, T0 + 2 * DAY)] == [cid]
    with session_factory() as s, s.begin():
        cases.hold(s, cid, agency="LKA", until=T0 + 9 * DAY, by="u", role="admin", now=T0 + 2 * DAY)
        with pytest.raises(HoldPermissionError):
            cases.release(s, cid, by="user:al", role="analyst", now=T0 + 3 * DAY)
        cases.release(s, cid, by="user:sen", role="senior_analyst", now=T0 + 3 * DAY)
        assert cases.get_case(s, cid).state == "evidence_captured"
        with pytest.raises(CaseError, match="not held"):
            cases.release(s, cid, by="user:sen", role="admin", now=T0 + 3 * DAY)


def test_removed_only_after_consecutive_misses(session_factory: sessionmaker[Session]) -> None:
    kw = {"misses_to_remove": 3, "watch_for": 30 * DAY, "recheck_every": DAY}
    with session_factory() as s, s.begin():
        case = cases.get_case(s, _open(s))
        cases.record_evidence(s, case, "ef" * 32, now=T0)
        cases.record_notice(s, case, serial="TLN-2026-000001", ladder_step=0, role="host", now=T0)
        at = T0
        effects = []
        for result in (MISS, MISS, ONLINE, MISS, MISS, MISS):
            at += DAY
            effects.append(cases.record_recheck(s, case, result, now=at, **kw))  # type: ignore[arg-type]
        assert effects == ["miss", "miss", "online", "miss", "miss", "removed"]
        assert case.state == "removed" and case.removed_at == at
        assert case.watch_until == at + 30 * DAY and case.next_action == "watch"
        # content back within the watch period: reappeared, back on the ladder
        effect = cases.record_recheck(s, case, ONLINE, now=at + DAY, **kw)  # type: ignore[arg-type]
        assert effect == "reappeared" and case.state == "reappeared"
        assert case.next_action == "notice" and case.ladder_step == 0
        assert s.scalar(select(func.count()).select_from(RecheckRow)) == 7


def test_watch_period_ends_in_closed(session_factory: sessionmaker[Session]) -> None:
    kw = {"misses_to_remove": 1, "watch_for": 2 * DAY, "recheck_every": DAY}
    with session_factory() as s, s.begin():
        case = cases.get_case(s, _open(s))
        cases.record_evidence(s, case, "01" * 32, now=T0)
        assert cases.record_recheck(s, case, MISS, now=T0, **kw) == "removed"  # type: ignore[arg-type]
        assert cases.record_recheck(s, case, MISS, now=T0 + DAY, **kw) == "watching"  # type: ignore[arg-type]
        assert cases.record_recheck(s, case, MISS, now=T0 + 2 * DAY, **kw) == "closed"  # type: ignore[arg-type]
        assert case.state == "closed" and case.open_location_id is None
        assert case.removed_at == T0  # the removal time stays for the statistics


def test_attribution_change_is_a_move(session_factory: sessionmaker[Session]) -> None:
    first = {"asn": 64500, "country": "DE", "as_name": "Example Hosting", "datasets": []}
    with session_factory() as s, s.begin():
        case = cases.get_case(s, _open(s))
        assert not cases.record_attribution(s, case, first, hotline_country="DE", now=T0)
        assert case.routing == "in_country" and case.asn == 64500
        cases.record_evidence(s, case, "02" * 32, now=T0)
        # the same hosting again: no move
        assert not cases.record_attribution(s, case, first, hotline_country="DE", now=T0)
        moved = {"asn": 64501, "country": "FR", "datasets": []}
        assert cases.record_attribution(s, case, moved, hotline_country="DE", now=T0 + DAY)
        assert case.state == "moved" and case.next_action == "manual"
        assert case.flag is not None and "AS64500/DE to AS64501/FR" in case.flag
        assert cases.due_cases(s, T0 + 9 * DAY) == []  # waits for an analyst
        cases.resume(s, case.id, by="user:ann", now=T0 + 2 * DAY)
        assert case.flag is None and case.next_action == "prepare"
        assert not cases.record_attribution(s, case, moved, hotline_country="DE", now=T0)
        assert case.routing == "abroad" and case.country == "FR"


def test_close_needs_reason_and_is_final(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as s, s.begin():
        cid = _open(s)
        with pytest.raises(CaseError, match="reason"):
            cases.close(s, cid, reason="  ", by="user:ann", now=T0)
        cases.close(s, cid, reason="not a hosting location", by="user:ann", now=T0)
        with pytest.raises(CaseError, match="already closed"):
            cases.close(s, cid, reason="again", by="user:ann", now=T0)
        with pytest.raises(InvalidTransitionError):
            cases.hold(s, cid, agency="X", until=T0 + DAY, by="u", role="admin", now=T0)
        with pytest.raises(cases.CaseNotFoundError):
            cases.get_case(s, 999_999)


def test_list_cases_filters(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as s, s.begin():
        ids = [_open(s, f"http://h{i}.example.org/") for i in range(5)]
        cases.close(s, ids[0], reason="done", by="u", now=T0)
        case = cases.get_case(s, ids[1])
        cases.record_attribution(s, case, {"asn": 1, "country": "nl"}, hotline_country="DE")
        assert [c.id for c in cases.list_cases(s)] == ids[1:]
        assert [c.id for c in cases.list_cases(s, state="all")] == ids
        assert [c.id for c in cases.list_cases(s, state="closed")] == ids[:1]
        assert [c.id for c in cases.list_cases(s, country="NL")] == ids[1:2]
        assert [c.id for c in cases.list_cases(s, after=ids[2], limit=1)] == ids[3:4]
        with pytest.raises(CaseError, match="unknown case state"):
            cases.list_cases(s, state="bogus")
        assert s.scalar(select(func.count()).select_from(CaseEvent)) == 6


# -- the escalation ladder as data ------------------------------------------------------------


def test_ladder_parse_and_triggers(tmp_path: Path) -> None:
    toml_file = tmp_path / "ladder.toml"
    toml_file.write_text(
        '[[step]]\nrole = "host"\n\n[[step]]\nrole = "registrar"\nafter_notices = 4\n\n'
        '[[step]]\nrole = "police"\nafter_hours = 72\n'
    )
    ladder = scheduler.load_ladder(toml_file)
    assert ladder == (
        LadderStep("host", 0),
        LadderStep("registrar", 4),
        LadderStep("police", None, 72.0),
    )
    json_file = tmp_path / "ladder.json"
    json_file.write_text(
        json.dumps({"steps": [{"role": "host"}, {"role": "hotline", "after_notices": 1}]})
    )
    assert scheduler.load_ladder(json_file)[1] == LadderStep("hotline", 1)
    first = T0
    assert scheduler.ladder_step_for(ladder, 0, None, T0) == 0
    assert scheduler.ladder_step_for(ladder, 3, first, T0 + DAY) == 0
    assert scheduler.ladder_step_for(ladder, 4, first, T0 + DAY) == 1
    # age alone reaches the last step, whatever the count
    assert scheduler.ladder_step_for(ladder, 1, first, T0 + 3 * DAY) == 2
    default = scheduler.DEFAULT_LADDER
    assert [s.role for s in default] == [
        "host",
        "site_owner",
        "registrar",
        "upstream",
        "hotline",
        "police",
    ]
    assert [scheduler.ladder_step_for(default, n, first, T0) for n in (1, 3, 6, 9)] == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "non-empty list"),
        ({"step": []}, "non-empty list"),
        ({"step": [{"role": "landlord"}]}, "role 'landlord' is not one of"),
        ({"step": [{"role": "host"}, {"role": "police"}]}, "needs after_notices or after_hours"),
        ({"step": [{"role": "host", "after_notices": -1}]}, "whole number"),
        ({"step": [{"role": "host", "after_hours": "soon"}]}, "number of hours"),
        ({"step": [{"role": "host", "when": 3}]}, "unknown field(s) when"),
        ({"step": ["host"]}, "not a table"),
        ({"step": [{"role": "host"}] * 40}, "at most"),
    ],
)
def test_ladder_errors_name_the_step(data: Any, message: str) -> None:
    with pytest.raises(scheduler.LadderError) as err:
        scheduler.parse_ladder(data, "ladder.toml")
    assert message in str(err.value) and "ladder.toml" in str(err.value)


def test_ladder_file_unreadable(tmp_path: Path) -> None:
    bad = tmp_path / "ladder.toml"
    bad.write_text("[[step]\nrole=")
    with pytest.raises(scheduler.LadderError, match="cannot read ladder"):
        scheduler.load_ladder(bad)
    with pytest.raises(scheduler.LadderError, match="cannot read ladder"):
        scheduler.load_ladder(tmp_path / "missing.toml")


# -- intake of confirmed items --------------------------------------------------------------


def _report(s: Session, urls: list[str], status: str, source_url: str | None, n: int) -> int:
    report = Report(reference=f"TL-2026-TEST-{n:04d}", source="cli", urls=urls, submitted_at=T0)
    item = Item(sha256=f"{n:064x}", status=status, grade={"label": "x"}, graded_at=T0 + DAY)
    s.add_all([report, item])
    s.flush()
    s.add(ReportItem(report_id=report.id, item_id=item.id, source_url=source_url))
    s.flush()
    return report.id


def test_intake_opens_cases_once(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as s, s.begin():
        fetched = _report(
            s, ["http://a.example.org/page"], "confirmed", "http://a.example.org/i", 1
        )
        uploaded = _report(
            s, ["http://b.example.org/1", "ftp://b.example.org/2"], "auto_confirmed", None, 2
        )
        _report(s, ["http://c.example.org/"], "dismissed", "http://c.example.org/", 3)
        _report(s, ["http://d.example.org/"], "in_review", "http://d.example.org/", 4)
        _report(s, [], "confirmed", None, 5)
        _report(s, ["http://a.example.org/i"], "confirmed", "http://a.example.org/i", 6)
    with session_factory() as s, s.begin():
        opened = scheduler.intake(s, T0 + 2 * DAY)
        assert len(opened) == 3
        urls = {c.url: c for c in cases.list_cases(s)}
        assert set(urls) == {
            "http://a.example.org/i",
            "http://b.example.org/1",
            "ftp://b.example.org/2",
        }
        case = urls["http://a.example.org/i"]
        assert case.report_id == fetched and case.reported_at == T0
        assert case.confirmed_at == T0 + DAY and case.grade == {"label": "x"}
        assert urls["http://b.example.org/1"].report_id == uploaded
        intake_rows = list(s.scalars(select(CaseIntake)))
        assert len(intake_rows) == 4  # the two confirmed ones, the upload, the empty report
        assert {r.error for r in intake_rows} == {None, "no URL"}
    with session_factory() as s, s.begin():
        assert scheduler.intake(s, T0 + 3 * DAY) == []


# -- the CLI --------------------------------------------------------------------------------


cli_app._register()
runner = CliRunner()


def _cli(data: Path, *args: str) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIPLINE_")}
    return runner.invoke(cli_app.app, ["--data-dir", str(data), "case", *args], env=env)


def test_cli_list_show_hold_release_close(tmp_path: Path) -> None:
    from tipline.store import migrations
    from tipline.store.base import make_engine
    from tipline.store.base import session_factory as make_factory

    data = tmp_path / "data"
    engine = make_engine(f"sqlite:///{data / 'tipline.sqlite3'}")
    migrations.upgrade(engine)
    with make_factory(engine)() as s, s.begin():
        cid = _open(s)
    engine.dispose()
    res = _cli(data, "list")
    assert res.exit_code == 0, res.output
    assert f"{cid:>6}  confirmed" in res.output and "http://site.example.org/page?x=1" in res.output
    res = _cli(data, "hold", str(cid), "--agency", "LKA Berlin", "--until", "2099-01-31")
    assert res.exit_code == 0, res.output
    assert "held for LKA Berlin until 2099-01-31" in res.output
    res = _cli(data, "show", str(cid), "--json")
    doc = json.loads(res.output)
    assert doc["state"] == "held" and doc["hold"]["agency"] == "LKA Berlin"
    assert [e["to_state"] for e in doc["events"]] == ["confirmed", "held"]
    res = _cli(data, "show", str(cid))
    assert "hold                 LKA Berlin until 2099-01-31" in res.output
    res = _cli(data, "hold", str(cid), "--agency", "X", "--until", "next week")
    assert res.exit_code != 0 and "use an ISO date" in res.output
    res = _cli(data, "release", str(cid))
    assert res.exit_code == 0 and "released: confirmed" in res.output
    res = _cli(data, "close", str(cid), "--reason", "")
    assert res.exit_code != 0 and "needs a reason" in res.output
    res = _cli(data, "close", str(cid), "--reason", "duplicate of another case")
    assert res.exit_code == 0, res.output
    res = _cli(data, "list", "--state", "closed", "--json")
    assert [c["id"] for c in json.loads(res.output)] == [cid]
    res = _cli(data, "show", "999")
    assert res.exit_code != 0 and "no case 999" in res.output
    res = _cli(data, "list", "--state", "nonsense")
    assert res.exit_code != 0 and "unknown case state" in res.output


def test_cli_notify_prints_and_marks_manual_notice(tmp_path: Path) -> None:
    from tipline.removal import notices
    from tipline.store import migrations
    from tipline.store.base import make_engine
    from tipline.store.base import session_factory as make_factory
    from tipline.store.case_tables import NoticeRow

    data = tmp_path / "data"
    engine = make_engine(f"sqlite:///{data / 'tipline.sqlite3'}")
    migrations.upgrade(engine)
    with make_factory(engine)() as s, s.begin():
        case = cases.get_case(s, _open(s))
        cases.record_evidence(s, case, "ab" * 32, now=T0)
        notice = notices.queue_notice(
            s,
            contact=None,
            role="host",
            cases=[case],
            ladder_step=0,
            settings=notices.NoticeSettings(),
            now=T0,
        )
        cid, serial = case.id, notice.serial
    res = _cli(data, "notify", str(cid))
    assert res.exit_code == 0, res.output
    assert f"--- {serial} (manual_pending)" in res.output
    assert f"Subject: [{serial}] Notice of illegal content at 1 location" in res.output
    assert "http://site.example.org/page?x=1" in res.output and "marked sent" not in res.output
    res = _cli(data, "notify", str(cid), "--mark-sent")
    assert res.exit_code == 0 and f"{serial}: marked sent" in res.output, res.output
    with make_factory(engine)() as s:
        row = s.scalar(select(NoticeRow))
        assert row is not None and row.state == "sent" and row.sent_by == "cli"
        assert cases.get_case(s, cid).first_notice_at is not None
    engine.dispose()
    res = _cli(data, "show", str(cid))
    assert f"{serial}  sent" in res.output


def test_states_are_defined_once() -> None:
    """The CaseState Literal is the one definition: the tuple, the transition table and the
    CHECK constraint all follow it."""
    from typing import get_args

    from tipline.store.case_tables import CASE_STATES, CaseRow, CaseState

    assert CASE_STATES == get_args(CaseState) == cases.STATES
    assert set(TRANSITIONS) == set(CASE_STATES)
    check = next(c for c in CaseRow.__table__.constraints if c.name == "ck_cases_state")
    assert all(repr(state) in str(check.sqltext) for state in CASE_STATES)  # type: ignore[attr-defined]
