"""The audit trail: hash chain, tamper detection, concurrent appends, export and the CLI."""

from __future__ import annotations

import csv
import io
import itertools
import json
import threading
from pathlib import Path

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from tipline.audit import log as audit
from tipline.store.tables import AuditEvent


def _add(factory: sessionmaker[Session], n: int, actor: str = "user:alice") -> None:
    for i in range(n):
        with factory() as s, s.begin():
            audit.record(s, actor, "report.view", "report", i, "192.0.2.1", {"n": i, "t": "x"})


def test_chain_links_and_verifies(session_factory: sessionmaker[Session]) -> None:
    _add(session_factory, 5)
    with session_factory() as s:
        events = list(s.scalars(select(AuditEvent).order_by(AuditEvent.id)))
        assert events[0].prev_hash == audit.GENESIS
        for a, b in itertools.pairwise(events):
            assert b.prev_hash == a.hash
        result = audit.verify(s)
    assert result.ok and result.count == 5 and result.head_hash == events[-1].hash
    assert "intact" in result.message()


def test_empty_chain_is_valid(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as s:
        result = audit.verify(s)
    assert result.ok and result.count == 0


@pytest.mark.parametrize(
    "tamper",
    ["edit_details", "edit_actor", "delete_middle", "edit_time"],
)
def test_tampering_is_detected_at_the_right_event(
    session_factory: sessionmaker[Session], tamper: str
) -> None:
    _add(session_factory, 5)
    with session_factory() as s, s.begin():
        ids = list(s.scalars(select(AuditEvent.id).order_by(AuditEvent.id)))
        third = ids[2]
        if tamper == "edit_details":
            s.execute(update(AuditEvent).where(AuditEvent.id == third).values(details={"n": 99}))
        elif tamper == "edit_actor":
            s.execute(update(AuditEvent).where(AuditEvent.id == third).values(actor="user:eve"))
        elif tamper == "edit_time":
            ev = s.get(AuditEvent, third)
            assert ev is not None
            from datetime import timedelta

            ev.at = ev.at - timedelta(hours=1)
        else:
            s.execute(text("DELETE FROM audit_events WHERE id = :i"), {"i": third})
    with session_factory() as s:
        result = audit.verify(s)
    assert not result.ok
    expected_bad = ids[3] if tamper == "delete_middle" else third
    assert result.first_bad_id == expected_bad
    assert result.count == 2
    assert "BROKEN" in result.message()


def test_concurrent_writers_never_fork_the_chain(
    engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            _add(session_factory, 15, actor=f"user:w{k}")
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with session_factory() as s:
        result = audit.verify(s)
        prevs = list(s.scalars(select(AuditEvent.prev_hash)))
    assert result.ok, result.message()
    assert result.count == 60
    assert len(set(prevs)) == 60  # no two events share a predecessor: no fork


def test_record_rolls_back_with_the_callers_transaction(
    session_factory: sessionmaker[Session],
) -> None:
    _add(session_factory, 1)
    with pytest.raises(RuntimeError), session_factory() as s, s.begin():
        audit.record(s, "user:a", "report.delete", "report", 1)
        raise RuntimeError("boom")
    _add(session_factory, 1)
    with session_factory() as s:
        result = audit.verify(s)
    assert result.ok and result.count == 2


def test_export_jsonl_and_csv(session_factory: sessionmaker[Session]) -> None:
    _add(session_factory, 3)
    with session_factory() as s:
        lines = audit.export_text(s, "jsonl").splitlines()
        rows = list(csv.DictReader(io.StringIO(audit.export_text(s, "csv"))))
        with pytest.raises(ValueError):
            audit.export_text(s, "xml")
    assert len(lines) == 3 and len(rows) == 3
    first = json.loads(lines[0])
    assert first["action"] == "report.view" and first["details"] == {"n": 0, "t": "x"}
    assert first["prev_hash"] == audit.GENESIS
    assert rows[2]["hash"] == json.loads(lines[2])["hash"]
    assert json.loads(rows[1]["details"]) == {"n": 1, "t": "x"}
    # The export alone is enough to re-verify the chain offline.
    prev = audit.GENESIS
    for line in lines:
        ev = json.loads(line)
        body = {k: ev[k] for k in ("actor", "action", "target_type", "target_id", "ip", "details")}
        canon = json.dumps(
            {"at": ev["at"], **body}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
        assert ev["prev_hash"] == prev
        assert audit.chain_hash(prev, canon) == ev["hash"]
        prev = ev["hash"]


def test_cli_verify_and_export(
    db_url: str, engine: Engine, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    from tipline.cli.app import _register, app

    _register()
    _add(session_factory, 3)
    runner = CliRunner()
    env = {"TIPLINE_DATABASE_URL": db_url, "TIPLINE_DATA_DIR": str(tmp_path)}
    res = runner.invoke(app, ["audit", "verify"], env=env)
    assert res.exit_code == 0, res.output
    assert "intact: 3 events" in res.output
    out = tmp_path / "audit.csv"
    res = runner.invoke(app, ["audit", "export", "-o", str(out), "--format", "csv"], env=env)
    assert res.exit_code == 0, res.output
    assert len(list(csv.DictReader(out.open(encoding="utf-8")))) == 3
    res = runner.invoke(app, ["audit", "export", "--since", "2999-01-01"], env=env)
    assert res.exit_code == 0 and res.stdout.strip() == ""
    res = runner.invoke(app, ["audit", "export", "--since", "not-a-date"], env=env)
    assert res.exit_code == 2
    with session_factory() as s, s.begin():
        s.execute(update(AuditEvent).where(AuditEvent.id == 2).values(action="report.hide"))
    res = runner.invoke(app, ["audit", "verify"], env=env)
    assert res.exit_code == 1
    assert "BROKEN at event 2" in res.output


def test_audit_api_pages_and_verifies(
    db_url: str, engine: Engine, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient

    from tipline.service import auth
    from tipline.service.app import create_app
    from tipline.service.settings import ServiceSettings

    _add(session_factory, 3)
    with session_factory() as s, s.begin():
        tok = auth.create_token(s, auth.create_user(s, "aud", "auditor"), "t", ["audit:read"])
    settings = ServiceSettings(data_dir=tmp_path, database_url=db_url, media_mode="hash-only")
    hdr = {"Authorization": f"Bearer {tok}"}
    with TestClient(create_app(settings, load_index="none")) as client:
        page = client.get("/api/v1/audit/events?limit=2", headers=hdr).json()
        assert [e["target_id"] for e in page["events"]] == ["0", "1"]
        rest = client.get(
            f"/api/v1/audit/events?after_id={page['next_after_id']}", headers=hdr
        ).json()
        assert [e["target_id"] for e in rest["events"]] == ["2"]
        assert rest["events"][0]["prev_hash"] == page["events"][1]["hash"]
        res = client.get("/api/v1/audit/verify", headers=hdr).json()
        assert res["ok"] is True and res["count"] == 3
        assert client.get("/api/v1/audit/verify").status_code == 401


def test_anchors_catch_a_rewritten_or_truncated_chain(
    db_url: str, engine: Engine, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    from tipline.cli.app import _register, app

    _register()
    _add(session_factory, 3)
    with session_factory() as s:
        anchor = audit.verify(s).head_hash
        assert audit.verify(s, [anchor]).ok
    _add(session_factory, 2)
    with session_factory() as s:
        assert audit.verify(s, [anchor]).ok  # the chain grew past the anchor
    # Someone with database access deletes the last events and the chain still links up...
    with session_factory() as s, s.begin():
        s.execute(text("DELETE FROM audit_events WHERE id >= 3"))
    with session_factory() as s:
        assert audit.verify(s).ok
        result = audit.verify(s, [anchor])
    # ... but the recorded head is gone.
    assert not result.ok and anchor in result.reason and "BROKEN" in result.message()
    env = {"TIPLINE_DATABASE_URL": db_url, "TIPLINE_DATA_DIR": str(tmp_path)}
    res = CliRunner().invoke(app, ["audit", "verify", "--anchor", anchor], env=env)
    assert res.exit_code == 1 and "not in the chain" in res.output
