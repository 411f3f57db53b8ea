"""Feedback to exchanges (docs/exchanges.md, "Feedback"), on SQLite and PostgreSQL: an NCMEC
bank fetched from the local NCMEC-shaped replay server (tests/ncmec_replay.py, a real HTTP
server on 127.0.0.1), a benign image reported and matched against it by the real pipeline,
graded through the review API, one durable ``exchange_feedback`` job, and the feedback PUT
reaching the replay server: affirmative for a confirmed grade, negative with NCMEC's reason
for a not-illegal one; a 503 retried by the queue (still one accepted PUT), a 4xx marks the
row failed, the same opinion twice is one row and one PUT, a grade of content that matched
no exchange (or an exchange with feedback off) makes none, and a real ``tipline worker``
runs the job kind. ``/api/v1/exchanges`` shows the counts.

The images are procedural noise; the replay's entries hold their MD5s (benign stand-ins)."""

from __future__ import annotations

import hashlib
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

import exchange_fixtures as fx
from conftest import encode, noise_image
from hma_compat.conftest import serve_env
from ncmec_replay import Replay, ReplayEntry, Source
from serve_process import tipline_exe
from tipline.exchange import feedback, store
from tipline.exchange.fetcher import run_fetch
from tipline.service.settings import ServiceSettings
from tipline.store.exchange_feedback_tables import ExchangeFeedbackRow
from tipline.store.jobs import JobQueue
from tipline.store.tables import ExchangeRow, Item, Job

CREDS = {"username": "tipline-user", "password": "stand-in-password"}
CONFIRMED = {"uk_category": "C", "ncmec_category": "none"}
NOT_ILLEGAL = {"uk_category": "not_illegal", "ncmec_category": "none"}
MD5_REASON = "01234567-abcd-0123-4567-012345678900"  # the replay's only MD5 reason

IMG_A = encode(noise_image(11, 200, 150), "PNG")
IMG_B = encode(noise_image(12, 200, 150), "PNG")
IMG_UNLISTED = encode(noise_image(13, 200, 150), "PNG")


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@dataclass
class World:
    client: TestClient
    sf: sessionmaker[Session]
    engine: Engine
    replay: Replay
    settings: ServiceSettings
    db_url: str
    tokens: dict[str, str]

    def call(self, who: str, method: str, path: str, **kw: Any) -> Any:
        self.client.cookies.clear()
        headers = {"Authorization": f"Bearer {self.tokens[who]}"}
        return self.client.request(method, path, headers=headers, **kw)

    def report(self, image: bytes) -> Item:
        """Report ``image`` and run the pipeline (hash, match, cluster, triage) over it."""
        return fx.report(self.sf, self.engine, image)

    def grade(self, item: Item, values: dict[str, str]) -> dict[str, Any]:
        answer = fx.grade(self.client, self.tokens["alice"], item, values)
        [out] = answer["outcomes"]
        assert out["state"] == "final"
        return dict(out["grade"])

    def send(self) -> Any:
        """One step of a worker running the feedback job kind (backoff stepped over)."""
        q = JobQueue(self.engine, backoff_base=0.0)
        return q.run_one("feedback-worker", [feedback.JOB_KIND], session_factory=self.sf)

    def rows(self) -> list[ExchangeFeedbackRow]:
        with self.sf() as s:
            rows = list(s.scalars(select(ExchangeFeedbackRow).order_by(ExchangeFeedbackRow.id)))
            s.expunge_all()
        return rows

    def jobs(self) -> list[Job]:
        with self.sf() as s:
            jobs = list(s.scalars(select(Job).where(Job.kind == feedback.JOB_KIND)))
            s.expunge_all()
        return jobs

    def puts(self) -> list[str]:
        return [p for m, p, _ in self.replay.requests if m == "PUT"]

    def counts(self) -> dict[str, int]:
        res = self.call("ada", "GET", "/api/v1/exchanges")
        assert res.status_code == 200, res.text
        [ex] = [e for e in res.json()["exchanges"] if e["name"] == "NCMEC"]
        return dict(ex["feedback"])


@pytest.fixture
def world(
    db_url: str, session_factory: sessionmaker[Session], engine: Engine, tmp_path: Path
) -> Iterator[World]:
    replay = Replay(Source(), page_size=100).start()
    ts = int(time.time()) - 2 * 86400
    replay.source.add(
        ReplayEntry("e1", ts, member_id=42, fingerprints={"md5": _md5(IMG_A)}),
        ReplayEntry("e2", ts + 60, member_id=43, fingerprints={"md5": _md5(IMG_B)}),
    )
    app, settings = fx.service_app(db_url, tmp_path)
    with session_factory() as s, s.begin():
        store.create_exchange(
            s,
            "NCMEC",
            "ncmec",
            {"base_url": replay.base_url, "max_window_entries": 1000},
            credentials=CREDS,
        )
        tokens = {
            "alice": fx.user_token(s, "alice", "analyst", ["review:grade"], "feedback-test"),
            "ada": fx.user_token(s, "ada", "admin", ["bank:read"], "feedback-test"),
        }
    out = run_fetch(session_factory, "NCMEC")
    assert out.succeeded and out.added == 2, out.error
    try:
        with fx.serving(app, settings) as client:
            yield World(client, session_factory, engine, replay, settings, db_url, tokens)
    finally:
        replay.stop()


def test_a_confirmed_grade_reaches_ncmec_once_through_a_503(world: World) -> None:
    item = world.report(IMG_A)
    assert any(m["bank"] == "NCMEC" for m in item.matches or []), item.matches
    assert world.rows() == [] and world.jobs() == []  # matching alone sends nothing
    grade = world.grade(item, CONFIRMED)
    assert grade["actionable"] is True
    [row] = world.rows()
    assert (row.record_key, row.category, row.state, row.signal) == (
        "42-e1:md5",
        "positive",
        "queued",
        _md5(IMG_A),
    )
    assert row.reasons == ["uk_category:C"] and row.item_id == item.id
    assert [j.status for j in world.jobs()] == ["queued"]
    assert world.counts() == {"queued": 1, "sent": 0, "failed": 0}

    world.replay.fail = [(503, {})]  # the partner is down once
    job = world.send()
    assert job is not None and job.kind == feedback.JOB_KIND
    [row] = world.rows()
    assert row.state == "queued" and row.attempts == 1 and "HTTP 503" in (row.last_error or "")
    assert world.replay.feedback == {} and [j.status for j in world.jobs()] == ["queued"]

    assert world.send() is not None  # the queue's retry
    assert world.send() is None  # nothing left
    [row] = world.rows()
    assert row.state == "sent" and row.attempts == 2 and row.last_error is None
    assert row.sent_at is not None
    assert world.replay.feedback == {(42, "e1", "MD5"): ("affirmative", ())}
    [(path, body)] = world.replay.feedback_log  # exactly one accepted PUT
    assert path == "/v2/entries/42/e1/MD5/feedback" and "<affirmative/>" in body
    assert world.puts() == ["/hashsharing/v2/entries/42/e1/MD5/feedback"] * 2  # 503, then 200
    assert world.counts() == {"queued": 0, "sent": 1, "failed": 0}

    # the same opinion again (the hook run twice, a job run again after a crash): one row,
    # one job, no second PUT
    with world.sf() as s, s.begin():
        assert feedback.enqueue_for_grade(s, item.id, grade) == [row.id]
    assert len(world.rows()) == 1 and len(world.jobs()) == 1
    assert JobQueue(world.engine).requeue(status="done") >= 1
    assert world.send() is not None
    assert len(world.replay.feedback_log) == 1 and world.rows()[0].attempts == 2


def test_a_partners_retry_after_is_honoured(world: World) -> None:
    """429 with Retry-After: 120: the retry waits at least that long, not the (here zero)
    backoff; then it is sent."""
    from datetime import UTC, datetime, timedelta

    item = world.report(IMG_A)
    world.grade(item, CONFIRMED)
    world.replay.fail = [(429, {"Retry-After": "120"})]
    before = datetime.now(UTC)
    assert world.send() is not None
    [job] = world.jobs()
    run_after = job.run_after if job.run_after.tzinfo else job.run_after.replace(tzinfo=UTC)
    assert job.status == "queued" and run_after >= before + timedelta(seconds=119)
    assert world.send() is None  # not due yet
    later = JobQueue(world.engine, backoff_base=0.0, clock=lambda: run_after + timedelta(seconds=1))
    assert later.run_one("feedback-worker", [feedback.JOB_KIND], session_factory=world.sf)
    [row] = world.rows()
    assert row.state == "sent" and row.attempts == 2
    assert world.replay.feedback == {(42, "e1", "MD5"): ("affirmative", ())}


def test_a_not_illegal_grade_is_negative_feedback_with_ncmecs_reason(world: World) -> None:
    item = world.report(IMG_B)
    grade = world.grade(item, NOT_ILLEGAL)
    assert grade["actionable"] is False
    [row] = world.rows()
    # NCMEC has its own reasons: the exchange's negative_reasons (none set: NCMEC's only one)
    assert (row.record_key, row.category, row.reasons) == ("43-e2:md5", "negative", [])
    assert world.send() is not None
    assert world.rows()[0].state == "sent"
    assert world.replay.feedback == {(43, "e2", "MD5"): ("negative", (MD5_REASON,))}
    [(_, body)] = world.replay.feedback_log
    assert f"<negative><reasonIds><guid>{MD5_REASON}</guid></reasonIds></negative>" in body


def test_a_refusal_marks_the_row_failed_with_the_error(world: World) -> None:
    item = world.report(IMG_A)
    world.grade(item, CONFIRMED)
    world.replay.fail = [(400, {})]
    assert world.send() is not None
    [row] = world.rows()
    assert row.state == "failed" and "HTTP 400" in (row.last_error or "")
    [job] = world.jobs()
    assert job.status == "failed" and "HTTP 400" in (job.last_error or "")
    assert world.send() is None and world.replay.feedback == {}
    assert world.counts() == {"queued": 0, "sent": 0, "failed": 1}


def test_no_feedback_without_an_exchange_match_or_with_feedback_off(world: World) -> None:
    unlisted = world.report(IMG_UNLISTED)
    assert not any(m["bank"] == "NCMEC" for m in unlisted.matches or [])
    world.grade(unlisted, CONFIRMED)
    assert world.rows() == [] and world.jobs() == []
    with world.sf() as s, s.begin():
        ex = s.scalars(select(ExchangeRow).where(ExchangeRow.name == "NCMEC")).one()
        ex.config = {**ex.config, "feedback": False}
    world.grade(world.report(IMG_A), CONFIRMED)
    assert world.rows() == [] and world.jobs() == []
    assert world.counts() == {"queued": 0, "sent": 0, "failed": 0}
    with world.sf() as s:
        assert s.scalar(select(func.count()).select_from(Item).where(Item.graded_at.is_not(None)))
    assert world.replay.feedback_log == []


def test_tipline_worker_runs_the_feedback_jobs(world: World) -> None:
    world.grade(world.report(IMG_A), CONFIRMED)
    env = serve_env(
        world.settings.data_dir,
        TIPLINE_DATABASE_URL=world.db_url,
        TIPLINE_ANONYMOUS_PERMISSIONS="",
    )
    kind = ["--kind", feedback.JOB_KIND]
    res = subprocess.run(
        [tipline_exe(), "worker", "--drain", "--poll-interval", "0.05", *kind],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert [r.state for r in world.rows()] == ["sent"]
    assert world.replay.feedback == {(42, "e1", "MD5"): ("affirmative", ())}
    assert [j.status for j in world.jobs()] == ["done"]


def test_reasons_and_the_feedback_setting() -> None:
    grade = {"label": "uk_category:A ncmec_category:A1 interpol_baseline", "actionable": True}
    assert feedback.category_of(grade) == "positive"
    assert feedback.category_of({"actionable": False}) == "negative"
    assert feedback.category_of({}) == "negative"
    words = ("uk_category:A", "ncmec_category:A1", "interpol_baseline")
    assert feedback.reasons_of(grade, "positive", {}) == words
    no = {"label": "uk_category:not_illegal", "actionable": False}
    assert feedback.reasons_of(no, "negative", {}) == ("uk_category:not_illegal",)
    cfg = {"negative_reasons": "Not a match, Not the described content"}
    assert feedback.reasons_of(no, "negative", cfg, partner_reasons=True) == (
        "Not a match",
        "Not the described content",
    )
    assert feedback.reasons_of(no, "negative", {}, partner_reasons=True) == ()
    assert feedback.feedback_enabled({}) and feedback.feedback_enabled({"feedback": True})
    assert not feedback.feedback_enabled({"feedback": False})
    assert not feedback.feedback_enabled({"feedback": "off"})
