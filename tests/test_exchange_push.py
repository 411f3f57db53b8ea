"""Pushing banks to exchanges as durable jobs (docs/exchanges.md, "Pushing"), against the
local StopNCII-shaped server (tests/stopncii_replay.py, a real HTTP server on 127.0.0.1):
StopNCII's SubmitHashes request shape and faults (the contract), each (entry, state) pushed
once by the ``exchange_push`` job, 429 with Retry-After honoured, a 503 mid-push resuming
after the last batch the partner took, signal types and withdrawals StopNCII does not take
skipped with the reason, one runner at a time, following pushes (a final grade runs them; the
chain goes on after its interval and after failures), the status in ``/api/v1/exchanges``,
and a confirmed grade pushed to StopNCII and fetched from there by another exchange ("kept
down"). SQLite and PostgreSQL. Hashes are benign stand-ins (digests of counters, noise
images)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

import exchange_fixtures as fx
from conftest import encode, noise_image
from stopncii_replay import (
    FEEDBACK_KEY,
    FETCH_KEY,
    SUBMIT_KEY,
    SUBSCRIPTION_KEY,
    Replay,
    stand_in_md5,
    stand_in_pdq,
)
from tipline.exchange import feedback, push, store
from tipline.exchange.api import (
    ExchangeError,
    ExchangeFetchError,
    ExchangeRecord,
    FetchContext,
    PartnerStatusError,
    exchange_type,
)
from tipline.exchange.fetcher import run_fetch
from tipline.exchange.stop_ncii import StopNCIIExchange
from tipline.store.exchange_share_tables import ExchangePushEntryRow, ExchangePushRow
from tipline.store.jobs import JobQueue
from tipline.store.tables import BankEntryRow, BankRow, Job

CREDS = {
    "subscription_key": SUBSCRIPTION_KEY,
    "fetch_function_key": FETCH_KEY,
    "feedback_function_key": FEEDBACK_KEY,
    "submit_function_key": SUBMIT_KEY,
}
NAME = "STOPNCII"


@pytest.fixture
def replay() -> Iterator[Replay]:
    r = Replay().start()
    yield r
    r.stop()


@pytest.fixture
def db(session_factory: sessionmaker[Session]) -> Iterator[sessionmaker[Session]]:
    """SQLite and PostgreSQL, with a credential key and the loopback fetch policy."""
    with fx.exchange_store(session_factory) as sf:
        yield sf


def _ctx(replay: Replay, creds: dict[str, Any] | None = None, **cfg: Any) -> FetchContext:
    config = exchange_type("stop_ncii").validate_config(
        {"base_url": replay.base_url, "submit": True, **cfg}
    )
    return FetchContext(NAME, config, CREDS if creds is None else creds, fx.LOCAL)


def _add_exchange(db: sessionmaker[Session], replay: Replay, **cfg: Any) -> None:
    with db() as s, s.begin():
        store.create_exchange(
            s, NAME, "stop_ncii", {"base_url": replay.base_url, **cfg}, credentials=CREDS
        )


def _bank(db: sessionmaker[Session], name: str, entries: list[tuple[str, str, bool]]) -> list[int]:
    """A bank with (signal_type, signal, enabled) entries; their ids."""
    with db() as s, s.begin():
        bank = BankRow(name=name, role="alert", pdq_threshold=31, enabled=True, description="",
                       created_at=time.time(), enabled_ratio=1.0)  # fmt: skip
        s.add(bank)
        s.flush()
        rows = [
            BankEntryRow(
                bank_id=bank.id,
                signal_type=st,
                signal=sig,
                label="uk_category:C",
                source="test",
                note="never leaves",
                added_at=time.time(),
                enabled=on,
                tags="demo",
            )
            for st, sig, on in entries
        ]
        s.add_all(rows)
        s.flush()
        return [r.id for r in rows]


def _queue(engine: Engine, later: float = 0.0) -> JobQueue:
    at = datetime.now(UTC) + timedelta(seconds=later)
    return JobQueue(engine, backoff_base=0.0, clock=lambda: at)


def _run(db: sessionmaker[Session], engine: Engine, later: float = 0.0) -> Any:
    return _queue(engine, later).run_one("push-worker", [push.JOB_KIND], session_factory=db)


def _jobs(db: sessionmaker[Session]) -> list[Job]:
    with db() as s:
        return list(s.scalars(select(Job).where(Job.kind == push.JOB_KIND).order_by(Job.id)))


def _status(db: sessionmaker[Session]) -> dict[str, Any]:
    with db() as s:
        [st] = push.push_status(s, NAME)
    return st


def _states(db: sessionmaker[Session]) -> dict[int, str]:
    with db() as s:
        return {r.entry_id: r.state for r in s.scalars(select(ExchangePushEntryRow))}


def _submits(replay: Replay) -> list[tuple[str, dict[str, str]]]:
    return [(p, h) for m, p, h in replay.requests if p == "/v1/SubmitHashes"]


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


# -- the contract: SubmitHashes --------------------------------------------------------------


def test_submit_hashes_request_shape_and_keys(replay: Replay) -> None:
    typ = exchange_type("stop_ncii")
    a, b = stand_in_pdq(1), stand_in_pdq(2)
    records: dict[str, ExchangeRecord | None] = {
        "e1": ExchangeRecord("pdq", a, "uk_category:C", {"tags": ["demo", "x" * 300]}),
        "e2": ExchangeRecord("pdq", b, ""),
        "e3": ExchangeRecord("sha256", hashlib.sha256(b"x").hexdigest(), ""),
        "e4": None,
    }
    ctx = _ctx(replay, feedback_tags="tipline")
    problems = typ.submit_records(ctx, records)
    assert set(problems) == {"e3", "e4"}  # not a type StopNCII takes; no withdrawal call
    assert "withdraw" in problems["e4"] and "sha256" in problems["e3"]
    [(_, headers)] = _submits(replay)
    assert headers["x-functions-key"] == SUBMIT_KEY
    assert headers["Ocp-Apim-Subscription-Key"] == SUBSCRIPTION_KEY
    [doc] = replay.submit_log
    assert doc["count"] == 2 and [r["hashValue"] for r in doc["hashRecords"]] == [a, b]
    first = doc["hashRecords"][0]
    assert first["signalType"] == "ImagePDQ" and isinstance(first["lastModtimestamp"], int)
    assert first["CSPFeedbacks"] == [{"feedbackValue": "Blocked", "tags": ["tipline", "demo",
                                      "x" * 100]}]  # fmt: skip
    assert replay.submitted[("ImagePDQ", b)] == ("Blocked", ("tipline",))
    # md5 only where the operator says the bank holds video hashes
    md5 = stand_in_md5(1)
    assert typ.push_refusal(ctx, "e5", ExchangeRecord("md5", md5)) is not None
    ctx_md5 = _ctx(replay, submit_signal_types="pdq,md5", submit_feedback="PendingReview")
    assert typ.submit_records(ctx_md5, {"e5": ExchangeRecord("md5", md5)}) == {}
    assert replay.submitted[("VideoMD5", md5)] == ("PendingReview", ())


def test_submit_hashes_faults(replay: Replay) -> None:
    typ = exchange_type("stop_ncii")
    rec = {"e1": ExchangeRecord("pdq", stand_in_pdq(1))}
    replay.fail = [(429, {"Retry-After": "120"})]
    with pytest.raises(ExchangeFetchError) as busy:
        typ.submit_records(_ctx(replay), rec)
    assert isinstance(busy.value, PartnerStatusError) and busy.value.status == 429
    assert busy.value.retry_after == 120 and "try later" in busy.value.body  # body kept
    replay.fail = [(503, {})]
    with pytest.raises(ExchangeFetchError, match="HTTP 503"):
        typ.submit_records(_ctx(replay), rec)
    with pytest.raises(PartnerStatusError, match=r"refused the keys \(HTTP 403\)") as refused:
        typ.submit_records(_ctx(replay, {**CREDS, "submit_function_key": "wrong"}), rec)
    assert refused.value.status == 403 and "bad function key" in refused.value.body
    with pytest.raises(ExchangeError, match="no StopNCII submit_function_key"):
        typ.submit_records(_ctx(replay, {**CREDS, "submit_function_key": None}), rec)
    with pytest.raises(ExchangeError, match="needs its permission"):
        typ.submit_records(_ctx(replay, submit=False), rec)
    assert replay.submitted == {}
    assert not typ.takes_submissions(typ.validate_config({}))  # off unless the operator says
    assert typ.takes_submissions(typ.validate_config({"submit": "true"}))
    with pytest.raises(ExchangeError, match="submit_signal_types"):
        typ.validate_config({"submit_signal_types": "pdq,sha256"})


# -- the push job ------------------------------------------------------------------------------


def test_each_entry_state_is_pushed_once(
    db: sessionmaker[Session], engine: Engine, replay: Replay
) -> None:
    _add_exchange(db, replay, submit="true")
    a, b, c = stand_in_pdq(1), stand_in_pdq(2), stand_in_pdq(3)
    ids = _bank(db, "LOCAL", [("pdq", a, True), ("pdq", b, True), ("pdq", c, False),
                              ("sha256", hashlib.sha256(b"y").hexdigest(), True)])  # fmt: skip
    with db() as s, s.begin():
        with pytest.raises(push.PushError, match="echo"):
            push.create_push(s, NAME, NAME)  # the exchange's own bank
        with pytest.raises(push.PushError, match="no bank"):
            push.create_push(s, NAME, "NOPE")
        p = push.create_push(s, NAME, "LOCAL")
        push.start_chain(JobQueue(engine), s, p)
    assert _run(db, engine) is not None
    assert set(replay.submitted) == {("ImagePDQ", a), ("ImagePDQ", b)}
    assert _states(db) == {ids[0]: "sent", ids[1]: "sent", ids[3]: "skipped"}  # c never sent
    st = _status(db)
    assert st["last_push_succeeded"] is True and st["pending"] == 0 and not st["follow"]
    assert st["counts"] == {"sent": 2, "withdrawn": 0, "refused": 0, "skipped": 1}
    assert st["problems"][0]["key"] == f"e{ids[3]}" and "sha256" in st["problems"][0]["reason"]
    assert _run(db, engine) is None  # not following: no next link
    # pushed again: nothing new goes out
    with db() as s, s.begin():
        push.start_chain(JobQueue(engine), s, push.create_push(s, NAME, "LOCAL"))
    assert _run(db, engine) is not None and len(replay.submit_log) == 1
    # a change is pushed once: c enabled; a withdrawn (StopNCII has no call: skipped)
    with db() as s, s.begin():
        s.get_one(BankEntryRow, ids[2]).enabled = True
        s.get_one(BankEntryRow, ids[0]).enabled = False
        push.start_chain(JobQueue(engine), s, push.create_push(s, NAME, "LOCAL"))
    assert _run(db, engine) is not None
    assert len(replay.submit_log) == 2 and replay.submit_log[1]["count"] == 1
    assert replay.submit_log[1]["hashRecords"][0]["hashValue"] == c
    assert _states(db) == {ids[0]: "skipped", ids[1]: "sent", ids[2]: "sent", ids[3]: "skipped"}
    with db() as s, s.begin():
        assert push.remove_push(s, NAME, "LOCAL") and not push.remove_push(s, NAME, "LOCAL")
        assert push.push_status(s, NAME) == []


def test_429_retry_after_is_honoured_and_a_503_resumes_after_the_last_batch(
    db: sessionmaker[Session], engine: Engine, replay: Replay, monkeypatch: pytest.MonkeyPatch
) -> None:
    _add_exchange(db, replay, submit="true")
    hashes = [stand_in_pdq(i) for i in range(5)]
    _bank(db, "LOCAL", [("pdq", h, True) for h in hashes])
    monkeypatch.setattr(StopNCIIExchange, "submission_batch", 2)
    with db() as s, s.begin():
        push.start_chain(JobQueue(engine), s, push.create_push(s, NAME, "LOCAL"))
    replay.fail = [(429, {"Retry-After": "120"})]
    before = datetime.now(UTC)
    assert _run(db, engine) is not None
    [job] = _jobs(db)
    assert job.status == "queued" and _aware(job.run_after) >= before + timedelta(seconds=119)
    st = _status(db)
    assert st["last_push_succeeded"] is False and "HTTP 429" in st["last_error"]
    assert st["consecutive_failures"] == 1 and st["pending"] == 5 and replay.submitted == {}
    assert st["retry_not_before"] >= int(before.timestamp()) + 119
    assert _run(db, engine, later=30) is None  # not due yet
    # due: the first batch is taken, then the partner fails (503): two batches stay to push
    real = StopNCIIExchange.submit_records
    calls: list[int] = []

    def flaky(self: StopNCIIExchange, ctx: FetchContext, recs: Any) -> Any:
        calls.append(len(recs))
        if len(calls) == 2:
            replay.fail = [(503, {})]
        return real(self, ctx, recs)

    monkeypatch.setattr(StopNCIIExchange, "submit_records", flaky)
    assert _run(db, engine, later=125) is not None
    assert len(replay.submitted) == 2 and _status(db)["pending"] == 3
    assert "HTTP 503" in _status(db)["last_error"] and _status(db)["consecutive_failures"] == 2
    assert _run(db, engine, later=300) is not None  # the retry: the other three, once each
    assert sorted(h for _, h in replay.submitted) == sorted(hashes)
    sent = [r["hashValue"] for d in replay.submit_log for r in d["hashRecords"]]
    assert sorted(sent) == sorted(hashes)  # none twice
    st = _status(db)
    assert st["last_push_succeeded"] is True and st["pending"] == 0
    assert st["last_error"] is None and st["consecutive_failures"] == 0
    [job] = _jobs(db)
    assert job.status == "done" and job.attempts == 3


def test_a_refusal_fails_the_job_and_a_following_chain_goes_on(
    db: sessionmaker[Session], engine: Engine, replay: Replay
) -> None:
    with db() as s, s.begin():
        store.create_exchange(s, NAME, "stop_ncii", {"base_url": replay.base_url, "submit": True},
                              credentials={**CREDS, "submit_function_key": "wrong"})  # fmt: skip
    _bank(db, "LOCAL", [("pdq", stand_in_pdq(1), True)])
    with db() as s, s.begin():
        p = push.create_push(s, NAME, "LOCAL", follow=True, interval_seconds=60)
        push.start_chain(JobQueue(engine), s, p)
    assert _run(db, engine) is not None
    first, nxt = _jobs(db)
    assert first.status == "failed" and "HTTP 403" in (first.last_error or "")
    assert nxt.status == "queued" and nxt.payload["seq"] == first.payload["seq"] + 1
    st = _status(db)
    assert st["last_push_succeeded"] is False and "refused the keys" in st["last_error"]
    assert st["pending"] == 1 and st["follow"] is True


def test_one_runner_at_a_time(db: sessionmaker[Session], engine: Engine, replay: Replay) -> None:
    _add_exchange(db, replay, submit="true")
    _bank(db, "LOCAL", [("pdq", stand_in_pdq(1), True)])
    with db() as s, s.begin():
        p = push.create_push(s, NAME, "LOCAL")
        push_id = p.id
        push.start_chain(JobQueue(engine), s, p)
        p.claimed_by, p.claimed_until = "another-runner", time.time() + 60
    out = push.run_push(db, push_id)
    assert out.busy and not out.succeeded and replay.submitted == {}
    assert _run(db, engine) is not None  # the job finds it busy: it looks again later
    done, again = _jobs(db)
    assert done.status == "done" and again.status == "queued" and replay.submitted == {}
    assert _status(db)["running"] is True
    with db() as s, s.begin():
        s.get_one(ExchangePushRow, push_id).claimed_until = time.time() - 1  # the runner died
    assert _run(db, engine, later=10) is not None and len(replay.submitted) == 1
    assert _status(db)["running"] is False


def test_a_final_grade_runs_the_following_pushes(
    db: sessionmaker[Session], engine: Engine, replay: Replay
) -> None:
    """The grade sink schedules each following push a moment later (banking follows the
    grade's commit), replacing the link waiting for its interval; after the run the next link
    waits for the interval again."""
    _add_exchange(db, replay, submit="true")
    _bank(db, "LOCAL", [])
    with db() as s, s.begin():
        p = push.create_push(s, NAME, "LOCAL", follow=True, interval_seconds=600)
        push.start_chain(JobQueue(engine), s, p, delay=600)
    assert _run(db, engine) is None  # waiting for its interval
    signal = stand_in_pdq(9)
    with db() as s, s.begin():
        assert feedback.on_final_grade(s, "grade", {"item_id": 0, "grade": {}}) == []
        bank = s.scalars(select(BankRow).where(BankRow.name == "LOCAL")).one()
        entry = BankEntryRow(bank_id=bank.id, signal_type="pdq", signal=signal, label="",
                             source="", note="", added_at=time.time(), enabled=True)  # fmt: skip
        s.add(entry)
    with db() as s, s.begin():
        assert feedback.on_final_grade(s, "webhook", {}) == []  # not a grade: no kick
    old, kick = _jobs(db)
    assert kick.payload["seq"] == old.payload["seq"] + 1
    assert _aware(kick.run_after) < datetime.now(UTC) + timedelta(seconds=push.KICK_DELAY + 1)
    assert _run(db, engine, later=push.KICK_DELAY + 0.5).id == kick.id
    assert replay.submitted == {("ImagePDQ", signal): ("Blocked", ())}
    old, kick, nxt = _jobs(db)
    assert kick.status == "done" and nxt.status == "queued" and old.status == "queued"
    assert _aware(nxt.run_after) > datetime.now(UTC) + timedelta(seconds=590)
    # the interval passes: the replaced link does nothing, the current one pushes (nothing new)
    assert _run(db, engine, later=650).id == old.id
    assert _run(db, engine, later=650).id == nxt.id
    assert len(replay.submit_log) == 1 and len(_jobs(db)) == 4
    assert _status(db)["last_push_succeeded"] is True


# -- a confirmed grade reaches StopNCII, and another partner fetches it ------------------------


def test_a_confirmed_grade_is_pushed_and_fetched_by_another_exchange(
    db_url: str, db: sessionmaker[Session], engine: Engine, tmp_path: Path, replay: Replay
) -> None:
    """Through the real service: a report, the pipeline, a grade (review API) banked into
    TIPLINE_GRADED, followed by a push to StopNCII (submit=true): the grade's kick runs the
    push job, SubmitHashes carries the item's PDQ once; another exchange fetching the same
    StopNCII list gets it into its bank ("kept down"), and /api/v1/exchanges shows the push."""
    replay.publish_submissions = True
    img = encode(noise_image(31, 200, 150), "PNG")
    app, settings = fx.service_app(db_url, tmp_path)
    with db() as s, s.begin():
        store.create_exchange(s, NAME, "stop_ncii", {"base_url": replay.base_url, "submit": True},
                              credentials=CREDS)  # fmt: skip
        store.create_exchange(s, "OTHER_CSP", "stop_ncii", {"base_url": replay.base_url},
                              credentials=CREDS)  # fmt: skip
        token = fx.user_token(s, "alice", "analyst", ["review:grade", "bank:read"], "push-test")
        s.add(BankRow(name="TIPLINE_GRADED", role="alert", pdq_threshold=31, enabled=True,
                      description="", created_at=time.time(), enabled_ratio=1.0))  # fmt: skip
        s.flush()
        p = push.create_push(s, NAME, "TIPLINE_GRADED", follow=True, interval_seconds=3600)
        push.start_chain(JobQueue(engine), s, p, delay=3600)
    headers = {"Authorization": f"Bearer {token}"}
    with fx.serving(app, settings) as client:
        item = fx.report(db, engine, img)
        assert item.pdq and (item.pdq_quality or 0) >= 50
        fx.grade(client, token, item, {"uk_category": "C", "ncmec_category": "none"})
        assert replay.submitted == {}
        assert _run(db, engine, later=push.KICK_DELAY + 0.5) is not None
        assert list(replay.submitted) == [("ImagePDQ", item.pdq)]  # md5/sha256 skipped
        [pushed] = replay.submit_log
        assert pushed["count"] == 1
        res = client.get("/api/v1/exchanges/" + NAME, headers=headers)
        assert res.status_code == 200, res.text
        [st] = res.json()["pushes"]
        assert st["bank"] == "TIPLINE_GRADED" and st["follow"] is True
        assert st["counts"]["sent"] == 1 and st["counts"]["skipped"] == 2
        assert st["last_push_succeeded"] is True and st["pending"] == 0
        assert res.json()["feedback"] == {"queued": 0, "sent": 0, "failed": 0}
        # the other partner's exchange learns the hash from StopNCII
        assert run_fetch(db, "OTHER_CSP").added == 1
        with db() as s:
            got = s.scalars(
                select(BankEntryRow.signal)
                .join(BankRow, BankRow.id == BankEntryRow.bank_id)
                .where(BankRow.name == "OTHER_CSP")
            ).all()
        assert got == [item.pdq]
        # graded again (another grade elsewhere): nothing new is sent
        with db() as s, s.begin():
            push.kick_following(s, delay=0)
        assert _run(db, engine, later=1) is not None and len(replay.submit_log) == 1
