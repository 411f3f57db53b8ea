"""Webhooks: signed deliveries through the job queue, retries, dead letters and the SSRF policy.

A real HTTP server on 127.0.0.1 (allow-listed explicitly) receives the deliveries. Retries are
driven with ``JobQueue.run_one`` after moving the job's ``run_after`` into the past, never by
waiting for the backoff.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from conftest import encode, noise_image, photo
from tipline.actions import webhooks
from tipline.net.fetch import FetchSettings
from tipline.service import auth
from tipline.store.jobs import JobQueue, handlers
from tipline.store.tables import AuditEvent, Job, Webhook, utcnow

LOCAL = FetchSettings.build(allow_networks=["127.0.0.1/32"])


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    url: str
    #: statuses to answer, in order (200 once they run out)
    statuses: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver("")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with state.lock:
                state.received.append(
                    Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
                status = state.statuses.pop(0) if state.statuses else 200
            self.send_response(status)
            if status in (301, 302, 307, 308):
                self.send_header("Location", "/elsewhere")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    t = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    t.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def policy() -> Iterator[None]:
    webhooks.configure(LOCAL)
    yield
    webhooks.configure(None)


def _add(sf: sessionmaker[Session], url: str, events: list[str] | None = None) -> tuple[int, str]:
    with sf() as s, s.begin():
        hook, secret = webhooks.create_webhook(s, url, events or ["grade"], "test")
        return hook.id, secret


def _emit(sf: sessionmaker[Session], event: str = "grade", data: Any = None) -> list[int]:
    with sf() as s, s.begin():
        return webhooks.emit(s, event, data if data is not None else {"item_id": 7})


def _run(engine: Engine, sf: sessionmaker[Session]) -> Any:
    return JobQueue(engine).run_one(
        "test", [webhooks.DELIVER_KIND], session_factory=sf, heartbeat=False
    )


def _job(sf: sessionmaker[Session], job_id: int) -> Job:
    with sf() as s:
        job = s.get(Job, job_id)
        assert job is not None
        return job


def _due_now(sf: sessionmaker[Session], job_id: int) -> None:
    """Step over the backoff: the retry is due now."""
    with sf() as s, s.begin():
        s.execute(
            update(Job).where(Job.id == job_id).values(run_after=utcnow() - timedelta(seconds=1))
        )


# -- signatures ---------------------------------------------------------------------------------


def test_signature_round_trip_and_rejections() -> None:
    body = b'{"event":"grade","id":"x"}'
    ts = str(int(time.time()))
    header = webhooks.sign("whsec_abc", ts, body)
    assert header.startswith("sha256=") and len(header) == 7 + 64
    assert webhooks.verify_signature("whsec_abc", ts, body, header)
    assert webhooks.verify_signature("whsec_abc", ts, body.decode(), header)  # str body too
    assert not webhooks.verify_signature("whsec_abc", ts, body + b" ", header)
    assert not webhooks.verify_signature("whsec_other", ts, body, header)
    assert not webhooks.verify_signature("whsec_abc", str(int(ts) + 1), body, header)
    assert not webhooks.verify_signature("whsec_abc", ts, body, header.upper())
    assert not webhooks.verify_signature("whsec_abc", "not-a-time", body, header)
    old = str(int(time.time()) - 3600)
    stale = webhooks.sign("whsec_abc", old, body)
    assert not webhooks.verify_signature("whsec_abc", old, body, stale)
    assert webhooks.verify_signature("whsec_abc", old, body, stale, max_age_seconds=None)


# -- managing -----------------------------------------------------------------------------------


def test_create_validates_and_shows_the_secret_once(
    session_factory: sessionmaker[Session], policy: None
) -> None:
    hook_id, secret = _add(session_factory, "https://hooks.example.test/in", ["match", "grade"])
    assert secret.startswith("whsec_") and len(secret) > 40
    with session_factory() as s:
        [listed] = [webhooks.webhook_json(h) for h in webhooks.list_webhooks(s)]
    assert listed["id"] == hook_id and listed["events"] == ["match", "grade"]
    assert secret not in json.dumps(listed) and "secret" not in listed
    bad = [
        ("ftp://hooks.example.test/", ["grade"], "http:// or https://"),
        ("https://user:pw@hooks.example.test/", ["grade"], "credentials"),
        ("https://hooks.example.test/", ["nope"], "unknown event"),
        ("https://hooks.example.test/", [], "at least one event"),
        ("http://169.254.169.254/latest/meta-data/", ["grade"], "metadata"),
        ("http://10.0.0.1/hook", ["grade"], "private"),
        ("http://[::ffff:10.0.0.1]/hook", ["grade"], "blocked"),
    ]
    for url, events, message in bad:
        with session_factory() as s, s.begin(), pytest.raises(webhooks.WebhookError) as err:
            webhooks.create_webhook(s, url, events)
        assert message in str(err.value) or "refused" in str(err.value), (url, err.value)
    # an allow-list entry for a private network admits it; never a metadata address by name
    private = FetchSettings.build(allow_networks=["10.0.0.0/8"], allow_hosts=["169.254.169.254"])
    with session_factory() as s, s.begin():
        webhooks.create_webhook(s, "http://10.0.0.1/hook", ["grade"], settings=private)
        with pytest.raises(webhooks.WebhookError, match="metadata"):
            webhooks.create_webhook(s, "http://169.254.169.254/", ["grade"], settings=private)
    with session_factory() as s, s.begin():
        webhooks.delete_webhook(s, hook_id)
        with pytest.raises(webhooks.WebhookNotFoundError):
            webhooks.delete_webhook(s, hook_id)


def test_emit_enqueues_in_the_callers_transaction(
    session_factory: sessionmaker[Session], policy: None
) -> None:
    grade_id, _ = _add(session_factory, "https://a.example.test/", ["grade"])
    _add(session_factory, "https://b.example.test/", ["match"])
    off_id, _ = _add(session_factory, "https://c.example.test/", ["grade", "export"])
    with session_factory() as s, s.begin():
        webhooks.set_active(s, off_id, False)
    with session_factory() as s:
        s.begin()
        webhooks.emit(s, "grade", {"item_id": 1})
        s.rollback()  # the change that caused the event did not happen: no delivery
    with session_factory() as s:
        assert s.scalar(select(Job.id)) is None
    [job_id] = _emit(session_factory, "grade", {"item_id": 1})
    job = _job(session_factory, job_id)
    assert job.kind == "webhook.deliver" and job.max_attempts == webhooks.MAX_ATTEMPTS
    assert job.payload["webhook_id"] == grade_id and job.payload["event"] == "grade"
    assert job.payload["data"] == {"item_id": 1}
    assert len(job.payload["id"]) == 36 and job.payload["occurred_at"].endswith("+00:00")
    assert _emit(session_factory, "export", {"kind": "urls"}) == []  # c is disabled
    with pytest.raises(webhooks.WebhookError):
        _emit(session_factory, "bogus")


def test_handler_is_registered_for_workers() -> None:
    import tipline.cli.app  # noqa: F401  (registers the deployment's handler modules)
    from tipline.store import jobs

    assert "tipline.actions.webhooks" in jobs.handler_modules()
    assert handlers()[webhooks.DELIVER_KIND] is webhooks.deliver


# -- delivering ---------------------------------------------------------------------------------


def test_delivery_is_signed_and_verifiable(
    engine: Engine, session_factory: sessionmaker[Session], receiver: Receiver, policy: None
) -> None:
    hook_id, secret = _add(session_factory, receiver.url + "/hook?k=1")
    [job_id] = _emit(session_factory, "grade", {"item_id": 7, "label": "uk:A"})
    assert _run(engine, session_factory) is not None
    [got] = receiver.received
    assert got.path == "/hook?k=1"
    h = got.headers
    assert h["content-type"] == "application/json"
    assert h["x-tipline-event"] == "grade"
    assert webhooks.verify_signature(
        secret, h["x-tipline-timestamp"], got.body, h["x-tipline-signature"]
    )
    doc = json.loads(got.body)
    assert doc["event"] == "grade" and doc["data"] == {"item_id": 7, "label": "uk:A"}
    assert doc["id"] == h["x-tipline-delivery"] == _job(session_factory, job_id).payload["id"]
    assert _job(session_factory, job_id).status == "done"
    with session_factory() as s:
        hook = s.get(Webhook, hook_id)
        assert hook is not None and hook.last_status == "HTTP 200"
        assert hook.last_delivery_at is not None


def test_server_error_is_retried_with_the_same_delivery_id(
    engine: Engine, session_factory: sessionmaker[Session], receiver: Receiver, policy: None
) -> None:
    hook_id, secret = _add(session_factory, receiver.url + "/hook")
    receiver.statuses = [500]
    [job_id] = _emit(session_factory)
    _run(engine, session_factory)
    job = _job(session_factory, job_id)
    assert job.status == "queued" and job.attempts == 1 and "HTTP 500" in (job.last_error or "")
    assert job.run_after > utcnow()  # backoff
    assert _run(engine, session_factory) is None  # not due yet
    _due_now(session_factory, job_id)
    _run(engine, session_factory)
    assert _job(session_factory, job_id).status == "done"
    first, second = receiver.received
    assert first.headers["x-tipline-delivery"] == second.headers["x-tipline-delivery"]
    h = second.headers
    assert webhooks.verify_signature(
        secret, h["x-tipline-timestamp"], second.body, h["x-tipline-signature"]
    )
    with session_factory() as s:
        hook = s.get(Webhook, hook_id)
        assert hook is not None and hook.last_status == "HTTP 200"


@pytest.mark.parametrize("status", [408, 429, 503, 302])
def test_retryable_answers(
    engine: Engine,
    session_factory: sessionmaker[Session],
    receiver: Receiver,
    policy: None,
    status: int,
) -> None:
    _add(session_factory, receiver.url + "/hook")
    receiver.statuses = [status]
    [job_id] = _emit(session_factory)
    _run(engine, session_factory)
    assert _job(session_factory, job_id).status == "queued"
    assert [r.path for r in receiver.received] == ["/hook"]  # a redirect is never followed


def test_gone_goes_to_the_dead_letters(
    engine: Engine, session_factory: sessionmaker[Session], receiver: Receiver, policy: None
) -> None:
    hook_id, _ = _add(session_factory, receiver.url + "/hook")
    receiver.statuses = [410]
    [job_id] = _emit(session_factory)
    _run(engine, session_factory)
    job = _job(session_factory, job_id)
    assert job.status == "failed" and "HTTP 410" in (job.last_error or "")
    assert len(receiver.received) == 1
    assert [j.id for j in JobQueue(engine).list(status="failed")] == [job_id]
    with session_factory() as s:
        hook = s.get(Webhook, hook_id)
        assert hook is not None and hook.last_status == "HTTP 410"


def test_exhausted_retries_are_dead(
    engine: Engine, session_factory: sessionmaker[Session], receiver: Receiver, policy: None
) -> None:
    _add(session_factory, receiver.url + "/hook")
    receiver.statuses = [500] * webhooks.MAX_ATTEMPTS
    [job_id] = _emit(session_factory)
    for _ in range(webhooks.MAX_ATTEMPTS):
        _due_now(session_factory, job_id)
        _run(engine, session_factory)
    job = _job(session_factory, job_id)
    assert job.status == "dead" and job.attempts == webhooks.MAX_ATTEMPTS
    assert len(receiver.received) == webhooks.MAX_ATTEMPTS


def test_connection_refused_is_retried(
    engine: Engine, session_factory: sessionmaker[Session], policy: None
) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    hook_id, _ = _add(session_factory, f"http://127.0.0.1:{port}/hook")
    [job_id] = _emit(session_factory)
    _run(engine, session_factory)
    job = _job(session_factory, job_id)
    assert job.status == "queued" and "connect_error" in (job.last_error or "")
    with session_factory() as s:
        hook = s.get(Webhook, hook_id)
        assert hook is not None and (hook.last_status or "").startswith("connect_error")


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/", "http://10.0.0.1/hook"])
def test_blocked_addresses_are_never_contacted(
    engine: Engine,
    session_factory: sessionmaker[Session],
    policy: None,
    monkeypatch: pytest.MonkeyPatch,
    url: str,
) -> None:
    sent: list[Any] = []
    real_send = httpx.Client.send

    def spy(self: httpx.Client, request: httpx.Request, **kw: Any) -> httpx.Response:
        sent.append(request.url)
        return real_send(self, request, **kw)

    monkeypatch.setattr(httpx.Client, "send", spy)
    with session_factory() as s, s.begin():
        with pytest.raises(webhooks.WebhookError):
            webhooks.create_webhook(s, url, ["grade"])
        # a row from before the policy changed (or written by hand) is refused at delivery
        s.add(Webhook(name="old", url=url, secret="whsec_x", events=["grade"], active=True))
    [job_id] = _emit(session_factory)
    _run(engine, session_factory)
    job = _job(session_factory, job_id)
    assert job.status == "failed" and "blocked_address" in (job.last_error or "")
    assert sent == []


def test_a_name_resolving_to_a_private_address_is_refused(
    engine: Engine, session_factory: sessionmaker[Session], receiver: Receiver
) -> None:
    port = receiver.url.rsplit(":", 1)[1]
    webhooks.configure(FetchSettings(resolver=lambda host, p: ["127.0.0.1"]))
    try:
        _add(session_factory, f"http://hooks.rebind.test:{port}/hook")  # names pass at creation
        [job_id] = _emit(session_factory)
        _run(engine, session_factory)
    finally:
        webhooks.configure(None)
    job = _job(session_factory, job_id)
    assert job.status == "failed" and "blocked_address" in (job.last_error or "")
    assert receiver.received == []  # the server on 127.0.0.1 was never contacted


def test_removed_or_disabled_webhooks_get_nothing(
    engine: Engine, session_factory: sessionmaker[Session], receiver: Receiver, policy: None
) -> None:
    gone, _ = _add(session_factory, receiver.url + "/gone")
    off, _ = _add(session_factory, receiver.url + "/off")
    jobs = _emit(session_factory)
    with session_factory() as s, s.begin():
        webhooks.delete_webhook(s, gone)
        webhooks.set_active(s, off, False)
    _run(engine, session_factory)
    _run(engine, session_factory)
    assert [_job(session_factory, j).status for j in jobs] == ["done", "done"]
    assert receiver.received == []


# -- the pipeline's match event -----------------------------------------------------------------


def test_alert_match_in_the_pipeline_emits_a_match_event(
    engine: Engine, session_factory: sessionmaker[Session], policy: None
) -> None:
    from tipline import pipeline
    from tipline.banks.bank import Bank, Entry
    from tipline.index.bank_index import BankIndex
    from tipline.scan.hashing import HashOptions, hash_bytes
    from tipline.service.intake import IntakeContext, IntakeSettings, NewReport, create_reports

    known = encode(photo("coffee", (320, 240)), "JPEG", quality=90)
    unknown = encode(noise_image(11, 256, 192), "PNG")
    rec = hash_bytes(known, "x", HashOptions(provenance=False))
    bank = "DEMO_BENIGN_STAND_IN"
    matcher = BankIndex.build(
        [Bank(bank, "alert")], [Entry(bank, "sha256", rec.sha256 or "", label="DEMO", id=1)]
    )
    pipeline.configure(pipeline.PipelineConfig(match=matcher.match, media_store=None))
    hook_id, _ = _add(session_factory, "https://hooks.example.test/m", ["match"])
    _add(session_factory, "https://hooks.example.test/g", ["grade"])
    try:
        ctx = IntakeContext(session_factory, JobQueue(engine), IntakeSettings(secret=b"s"))
        new = NewReport(urls=[], uploads=[("a.jpg", known), ("b.png", unknown)])
        [(report, _)] = create_reports(ctx, [new], "partner_api")
        queue = JobQueue(engine)
        n = 0
        while queue.run_one("t", list(pipeline.STAGES), session_factory=session_factory):
            n += 1
            assert n < 50
    finally:
        pipeline.configure(None)
    [job] = JobQueue(engine).list(kind=webhooks.DELIVER_KIND)
    assert job.status == "queued"
    assert job.payload["webhook_id"] == hook_id and job.payload["event"] == "match"
    data = job.payload["data"]
    assert data["sha256"] == rec.sha256 and data["report_id"] == report.id
    assert data["matches"] == [{"bank": bank, "signal_type": "sha256", "distance": 0}]


# -- API and CLI --------------------------------------------------------------------------------


@pytest.fixture
def client(
    db_url: str, engine: Engine, session_factory: sessionmaker[Session], tmp_path: Path
) -> Iterator[TestClient]:
    from tipline.service.app import create_app
    from tipline.service.settings import ServiceSettings

    settings = ServiceSettings(
        data_dir=tmp_path, database_url=db_url, media_mode="hash-only", inprocess_workers=0
    )
    with TestClient(create_app(settings, load_index="none")) as c:
        yield c


def _token(sf: sessionmaker[Session], role: str) -> dict[str, str]:
    with sf() as s, s.begin():
        user = auth.create_user(s, f"w_{role}", role, "correct horse battery")
        raw = auth.create_token(s, user, "t", sorted(auth.ROLE_PERMISSIONS[role]))
    return {"Authorization": f"Bearer {raw}"}


def test_api_webhooks(client: TestClient, session_factory: sessionmaker[Session]) -> None:
    admin = _token(session_factory, "admin")
    body = {"url": "https://hooks.example.test/api", "events": ["grade", "export"], "name": "soc"}
    res = client.post("/api/v1/webhooks", json=body, headers=admin)
    assert res.status_code == 201, res.text
    created = res.json()
    secret, hook_id = created["secret"], created["webhook"]["id"]
    assert secret.startswith("whsec_")
    listed = client.get("/api/v1/webhooks", headers=admin).json()["webhooks"]
    assert [h["id"] for h in listed] == [hook_id] and secret not in json.dumps(listed)
    for bad in (
        {"url": "http://169.254.169.254/", "events": ["grade"]},
        {"url": "https://hooks.example.test/", "events": ["nope"]},
        {"events": ["grade"]},
        {"url": "https://hooks.example.test/", "events": "grade"},
    ):
        res = client.post("/api/v1/webhooks", json=bad, headers=admin)
        assert res.status_code == 400 and res.json()["message"], bad
    analyst = _token(session_factory, "analyst")
    assert client.get("/api/v1/webhooks", headers=analyst).status_code == 403
    assert client.delete(f"/api/v1/webhooks/{hook_id}", headers=analyst).status_code == 403
    assert client.delete(f"/api/v1/webhooks/{hook_id}", headers=admin).status_code == 200
    assert client.delete(f"/api/v1/webhooks/{hook_id}", headers=admin).status_code == 404
    with session_factory() as s:
        actions = [e.action for e in s.scalars(select(AuditEvent).order_by(AuditEvent.id))]
    assert actions.count("webhook.create") == 1 and actions.count("webhook.delete") == 1
    assert "api.write" in actions  # webhook:admin writes are audited by the middleware


def test_cli_webhooks(
    db_url: str, session_factory: sessionmaker[Session], tmp_path: Path, policy: None
) -> None:
    from tipline.cli.app import _register, app

    _register()
    runner = CliRunner()
    env = {"TIPLINE_DATABASE_URL": db_url, "TIPLINE_DATA_DIR": str(tmp_path)}
    args = ["webhook", "add", "https://hooks.example.test/c", "--event", "grade"]
    res = runner.invoke(app, [*args, "--event", "match", "--name", "ops"], env=env)
    assert res.exit_code == 0, res.output
    secret = res.stdout.strip()
    assert secret.startswith("whsec_")
    res = runner.invoke(app, ["webhook", "list", "--json"], env=env)
    [row] = json.loads(res.stdout)
    assert row["events"] == ["grade", "match"] and row["name"] == "ops"
    assert secret not in res.stdout
    res = runner.invoke(app, ["webhook", "disable", str(row["id"])], env=env)
    assert res.exit_code == 0
    assert _emit(session_factory) == []
    res = runner.invoke(app, ["webhook", "add", "http://10.0.0.1/", "--event", "grade"], env=env)
    assert res.exit_code == 2 and "private" in res.output
    res = runner.invoke(app, ["webhook", "remove", str(row["id"])], env=env)
    assert res.exit_code == 0
    res = runner.invoke(app, ["webhook", "remove", str(row["id"])], env=env)
    assert res.exit_code == 2 and "no webhook" in res.output
