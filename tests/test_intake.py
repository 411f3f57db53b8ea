"""Intake: the public form (no JavaScript, CSRF, rate limit, size limits) and the partner API
(idempotent single and bulk submission). Runs on SQLite and PostgreSQL (``session_factory``)."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from tipline.service import auth
from tipline.service.intake import (
    IntakeContext,
    IntakeSettings,
    TokenBucket,
    install_intake,
    new_reference,
)
from tipline.store.jobs import JobQueue
from tipline.store.tables import AuditEvent, Job, Report, Upload

PNG = b"\x89PNG\r\n\x1a\n" + b"\x01" * 200


def _settings(**kw: Any) -> IntakeSettings:
    base: dict[str, Any] = {
        "secret": b"test-secret-not-for-production",
        "max_upload_bytes": 4096,
        "max_request_bytes": 16_384,
        "form_burst": 100.0,
    }
    base.update(kw)
    return IntakeSettings(**base)


def _app(engine: Engine, sf: sessionmaker[Session], settings: IntakeSettings) -> FastAPI:
    app = FastAPI()
    auth.install_auth(app, auth.AuthContext(session_factory=sf, token_cache_seconds=0))
    install_intake(app, IntakeContext(sf, JobQueue(engine), settings))
    return app


@pytest.fixture
def client(engine: Engine, session_factory: sessionmaker[Session]) -> Iterator[TestClient]:
    with TestClient(_app(engine, session_factory, _settings())) as c:
        yield c


def _token(sf: sessionmaker[Session], name: str = "partner1") -> str:
    with sf() as s, s.begin():
        user = auth.create_user(s, name, "partner")
        return auth.create_token(s, user, "t", ["report:submit"])


def _csrf(client: TestClient) -> str:
    page = client.get("/report")
    assert page.status_code == 200
    m = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert m
    return m.group(1)


def _count(sf: sessionmaker[Session], model: Any) -> int:
    with sf() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


# -- public form ---------------------------------------------------------------------------------


def test_form_works_without_javascript(client: TestClient) -> None:
    page = client.get("/report")
    assert page.status_code == 200
    assert "<script" not in page.text.lower()
    assert 'enctype="multipart/form-data"' in page.text
    assert 'name="urls"' in page.text and 'name="upload"' in page.text
    assert "tipline_report_csrf" in page.headers["set-cookie"]


def test_form_submit_returns_reference_and_queues_ingest(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    token = _csrf(client)
    resp = client.post(
        "/report",
        data={
            "csrf_token": token,
            "urls": "https://example.org/a.jpg\n\nexample.net/page",
            "description": "seen on a forum",
        },
        files={"upload": ("pic.png", PNG, "image/png")},
    )
    assert resp.status_code == 200, resp.text
    ref = re.search(r'class="ref">(TL-\d{4}-[0-9A-Z]{4}-[0-9A-Z]{4})<', resp.text)
    assert ref, resp.text
    # a double click / reload of the answer page: the same report again, not a second one
    again = client.post("/report", data={"csrf_token": token, "urls": "https://example.org/b"})
    assert again.status_code == 200 and ref.group(1) in again.text
    assert _count(session_factory, Report) == 1
    with session_factory() as s:
        report = s.scalars(select(Report).where(Report.reference == ref.group(1))).one()
        assert report.source == "public_form"
        assert report.contact is None
        assert report.urls == ["https://example.org/a.jpg", "http://example.net/page"]
        upload = s.scalars(select(Upload).where(Upload.report_id == report.id)).one()
        assert upload.data == PNG and upload.filename == "pic.png"
        event = s.scalars(select(AuditEvent)).one()
        assert (event.actor, event.ip, event.target_id) == ("public", None, report.reference)
        job = s.scalars(select(Job)).one()
        assert (job.kind, job.payload, job.dedupe_key) == (
            "ingest",
            {"report_id": report.id},
            f"ingest:{report.id}",
        )


def test_form_without_csrf_token_rejected(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    _csrf(client)  # has the cookie, but sends no token
    resp = client.post("/report", data={"urls": "https://example.org/x"})
    assert resp.status_code == 403
    assert "Reload the report page" in resp.text
    assert _count(session_factory, Report) == 0


def test_form_with_foreign_csrf_token_rejected(
    engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    app = _app(engine, session_factory, _settings())
    with TestClient(app) as attacker, TestClient(app) as victim:
        stolen = _csrf(attacker)  # a valid token, but for the attacker's cookie
        _csrf(victim)
        resp = victim.post("/report", data={"csrf_token": stolen, "urls": "https://e.org/x"})
        assert resp.status_code == 403
        forged = victim.post("/report", data={"csrf_token": "abc.def.ghi", "urls": "x.org"})
        assert forged.status_code == 403
    assert _count(session_factory, Report) == 0


def test_form_invalid_input_rerenders_with_problems(client: TestClient) -> None:
    token = _csrf(client)
    resp = client.post(
        "/report",
        data={"csrf_token": token, "urls": "ftp://example.org/x", "description": "<b>hi</b>"},
    )
    assert resp.status_code == 400
    assert "only http and https URLs can be reported" in resp.text
    assert "&lt;b&gt;hi&lt;/b&gt;" in resp.text  # escaped, kept for the reporter
    empty = client.post("/report", data={"csrf_token": _csrf(client), "urls": ""})
    assert empty.status_code == 400 and "at least one URL" in empty.text


def test_form_rate_limited_per_client(
    engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    with TestClient(_app(engine, session_factory, _settings(form_burst=2.0))) as c:
        codes = []
        for _ in range(3):
            codes.append(
                c.post("/report", data={"csrf_token": _csrf(c), "urls": "https://e.org/1"})
            )
        assert [r.status_code for r in codes] == [200, 200, 429]
        assert int(codes[2].headers["retry-after"]) > 0
        assert "Too many reports" in codes[2].text
    assert _count(session_factory, Report) == 2


def test_token_bucket_refills() -> None:
    now = [0.0]
    b = TokenBucket(capacity=1, per_second=0.5, clock=lambda: now[0])
    assert b.take("a") == 0
    assert b.take("a") == pytest.approx(2.0)
    assert b.take("b") == 0  # per key
    now[0] = 2.0
    assert b.take("a") == 0


def test_oversize_upload_413(client: TestClient, session_factory: sessionmaker[Session]) -> None:
    resp = client.post(
        "/report",
        data={"csrf_token": _csrf(client), "urls": ""},
        files={"upload": ("big.bin", b"x" * 5000, "application/octet-stream")},
    )
    assert resp.status_code == 413
    assert "limit is 4,096 bytes" in resp.text
    assert _count(session_factory, Report) == 0


def test_oversize_request_413_by_declared_length(client: TestClient) -> None:
    resp = client.post(
        "/report",
        content=b"x" * 20_000,
        headers={"content-type": "multipart/form-data; boundary=zz"},
    )
    assert resp.status_code == 413
    assert "The report is too large" in resp.text


def test_oversize_request_413_when_streamed(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b"y" * 4000

    resp = client.post(
        "/report", content=chunks(), headers={"content-type": "multipart/form-data; boundary=zz"}
    )
    assert resp.status_code == 413


@pytest.mark.parametrize(
    ("ctype", "body"),
    [
        ("multipart/form-data; boundary=abc", b"--abc\r\nContent-Disposition: garbage\r\n\r\nx"),
        ("multipart/form-data", b"--abc\r\n\r\n"),
        ("text/plain", b"urls=x"),
    ],
)
def test_malformed_multipart_400(
    client: TestClient, session_factory: sessionmaker[Session], ctype: str, body: bytes
) -> None:
    _csrf(client)
    resp = client.post("/report", content=body, headers={"content-type": ctype})
    assert resp.status_code == 400, resp.text
    assert _count(session_factory, Report) == 0


# -- partner API ---------------------------------------------------------------------------------


def test_partner_submit_needs_token(client: TestClient) -> None:
    assert client.post("/api/v1/reports", json={"urls": ["https://e.org/"]}).status_code == 401


def test_partner_submit_is_idempotent(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    tok = _token(session_factory)
    h = {"Authorization": f"Bearer {tok}", "Idempotency-Key": "req-0001"}
    body = {
        "urls": ["https://example.org/img.jpg"],
        "description": "partner report",
        "uploads": [{"filename": "a.png", "content_base64": base64.b64encode(PNG).decode()}],
    }
    first = client.post("/api/v1/reports", json=body, headers=h)
    again = client.post("/api/v1/reports", json=body, headers=h)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert _count(session_factory, Report) == 1
    assert _count(session_factory, Job) == 1
    assert _count(session_factory, Upload) == 1
    with session_factory() as s:
        [event] = s.scalars(select(AuditEvent)).all()
        assert (event.action, event.target_id) == ("report.create", first.json()["reference"])
        assert event.actor.startswith("token:")
    other = client.post("/api/v1/reports", json=body, headers={**h, "Idempotency-Key": "req-0002"})
    assert other.json()["reference"] != first.json()["reference"]
    status = client.get(first.json()["status_url"], headers=h)
    assert status.status_code == 200
    assert status.json()["status"] == "received"
    # another partner cannot see it, and its key space is separate
    h2 = {"Authorization": f"Bearer {_token(session_factory, 'partner2')}"}
    assert client.get(first.json()["status_url"], headers=h2).status_code == 404
    mine = client.post("/api/v1/reports", json=body, headers={**h2, "Idempotency-Key": "req-0001"})
    assert mine.json()["reference"] != first.json()["reference"]


def test_partner_submit_bad_input(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    h = {"Authorization": f"Bearer {_token(session_factory)}"}
    cases: list[tuple[Any, str]] = [
        ({"urls": ["javascript:alert(1)"]}, "http and https"),
        ({"urls": [], "uploads": [{"content_base64": "***"}]}, "not valid base64"),
        ({"urls": ["https://e.org"], "colour": "red"}, "unknown field"),
        ([1, 2], "JSON object"),
    ]
    for body, msg in cases:
        resp = client.post("/api/v1/reports", json=body, headers=h)
        assert resp.status_code == 400 and msg in resp.json()["message"], resp.text
    for raw in (b"{", b"[" * 100_000, b"\xff\xfe"):
        bad_json = client.post("/api/v1/reports", content=raw, headers=h)
        assert bad_json.status_code == 400 and "not valid JSON" in bad_json.json()["message"]
    huge = client.post("/api/v1/reports", content=b" " * 2_000_000, headers=h)
    assert huge.status_code == 413 and "limit" in huge.json()["message"]
    assert _count(session_factory, Report) == 0


def test_bulk_submit(client: TestClient, session_factory: sessionmaker[Session]) -> None:
    h = {"Authorization": f"Bearer {_token(session_factory)}"}
    reports = [
        {"urls": ["https://e.org/1"], "idempotency_key": "b-1"},
        {"urls": ["not a url at all"], "idempotency_key": "b-2"},
        {"urls": ["https://e.org/3"], "idempotency_key": "b-3"},
        {"urls": ["https://e.org/1"], "idempotency_key": "b-1"},  # repeated inside the batch
        {"urls": ["https://e.org/5"]},
    ]
    resp = client.post("/api/v1/reports/bulk", json={"reports": reports}, headers=h)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert (out["accepted"], out["rejected"]) == (4, 1)
    r = out["results"]
    assert "error" in r[1] and "spaces" in r[1]["error"]
    assert r[0]["created"] and r[2]["created"] and r[4]["created"]
    assert not r[3]["created"] and r[3]["reference"] == r[0]["reference"]
    assert _count(session_factory, Report) == 3
    # the whole batch retried: nothing new
    again = client.post("/api/v1/reports/bulk", json={"reports": reports[:4]}, headers=h).json()
    assert [x.get("reference") for x in again["results"]] == [x.get("reference") for x in r[:4]]
    assert not any(x.get("created") for x in again["results"])
    assert _count(session_factory, Report) == 4 - 1  # b-1, b-3 and the keyless one
    too_many = client.post(
        "/api/v1/reports/bulk", json={"reports": [{"urls": ["https://e.org"]}] * 501}, headers=h
    )
    assert too_many.status_code == 413


def test_reference_format() -> None:
    refs = {new_reference() for _ in range(200)}
    assert len(refs) == 200
    assert all(
        re.fullmatch(r"TL-\d{4}-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}", r) for r in refs
    )


# -- end to end through the service app ---------------------------------------------------------


def test_service_app_form_to_review_queue(
    db_url: str, engine: Engine, session_factory: sessionmaker[Session], tmp_path: Any
) -> None:
    """``create_app`` as ``tipline serve`` runs it: a public report with a benign upload is
    processed by the in-process pipeline worker and shows up in the analysts' queue
    (GET /api/v1/items) with its priority and reason."""
    import time

    from conftest import encode, noise_image
    from tipline import pipeline
    from tipline.service.app import create_app
    from tipline.service.settings import ServiceSettings

    settings = ServiceSettings(
        data_dir=tmp_path, database_url=db_url, media_mode="hash-only", inprocess_workers=1
    )
    try:
        with TestClient(create_app(settings, load_index="sync")) as c:
            resp = c.post(
                "/report",
                data={"csrf_token": _csrf(c), "description": "benign test"},
                files={"upload": ("n.png", encode(noise_image(3, 64, 48), "PNG"), "image/png")},
            )
            assert resp.status_code == 200, resp.text
            ref = re.search(r"TL-\d{4}-[0-9A-Z]{4}-[0-9A-Z]{4}", resp.text)
            assert ref
            queue = JobQueue(engine)

            def report_jobs_done() -> int:
                # the in-process workers also run the removal scheduler's tick chain
                return sum(
                    1 for j in queue.list("done", limit=1000) if not j.kind.startswith("removal.")
                )

            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                counts = queue.counts()
                if report_jobs_done() == 6 or counts["dead"] or counts["failed"]:
                    break
                time.sleep(0.05)
            assert report_jobs_done() == 6, queue.list()
            # the removal tick ran in this process too (no `tipline worker` beside serve)
            while time.monotonic() < deadline and not queue.list("done", "removal.tick"):
                time.sleep(0.05)
            assert queue.list("done", "removal.tick"), queue.list()
            with session_factory() as s, s.begin():
                user = auth.create_user(s, "ana", "analyst")
                tok = auth.create_token(s, user, "t", ["item:read", "report:read", "job:read"])
            h = {"Authorization": f"Bearer {tok}"}
            items = c.get("/api/v1/items", headers=h).json()["items"]
            assert len(items) == 1
            assert 25.0 <= items[0]["priority"] < 25.5  # unknown 20 + public report 5 + age
            assert "unknown material +20.0" in items[0]["priority_reason"]
            detail = c.get(f"/api/v1/items/{items[0]['id']}", headers=h).json()
            assert detail["reports"] == [ref.group(0)]
            report = c.get(f"/api/v1/review/reports/{ref.group(0)}", headers=h).json()
            assert report["status"] == "triaged" and len(report["items"]) == 1
            jobs = c.get("/api/v1/jobs", headers=h).json()
            assert jobs["counts"]["done"] >= 7 and jobs["counts"]["dead"] == 0
            assert c.get("/api/v1/items").status_code == 401
            assert c.post("/api/v1/jobs/requeue", json={}, headers=h).status_code == 403
    finally:
        pipeline.configure(None)


def test_slow_loris_upload_408(engine: Engine, session_factory: sessionmaker[Session]) -> None:
    """A real server on 127.0.0.1: a client that sends its body too slowly gets 408."""
    import socket
    import threading
    import time

    import uvicorn

    app = _app(engine, session_factory, _settings(body_timeout=0.5))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if server.started:
                break
            time.sleep(0.02)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(
                b"POST /report HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: multipart/form-data; boundary=zz\r\n"
                b"Content-Length: 1000\r\n\r\n--zz\r\n"
            )
            reply = sock.recv(4096)  # the server answers while the body is still missing
        assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
        assert b"did not arrive within" in reply
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert _count(session_factory, Report) == 0


def test_database_down_gives_503_and_keeps_nothing(tmp_path: Any) -> None:
    from tipline.store.base import make_engine
    from tipline.store.base import session_factory as make_sf

    dead = make_engine("postgresql+psycopg://postgres@127.0.0.1:1/none")  # nothing listens
    app = FastAPI()
    install_intake(app, IntakeContext(make_sf(dead), JobQueue(dead), _settings()))
    with TestClient(app) as c:
        resp = c.post("/report", data={"csrf_token": _csrf(c), "urls": "https://e.org/x"})
    assert resp.status_code == 503
    assert "nothing was kept" in resp.text and resp.headers["retry-after"] == "30"
    dead.dispose()
