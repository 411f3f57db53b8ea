"""The ``stop_ncii`` exchange type against a local StopNCII-shaped server
(tests/stopncii_replay.py, a real HTTP server on 127.0.0.1), through the real fetcher into a
bank: the keys checked at the server, paging within a set, resumes mid-set, withdrawn and
deleted hashes tombstoned (python-threatexchange compares the hashValue, not the hashStatus),
a stale checkpoint refetching from scratch, a checkpoint that never moves back, unknown signal
types, invalid hashes and malformed records counted, hostile pages, a repeating page token,
429 / 5xx, refused keys, a 100 MB page, and feedback reaching the server. The end-to-end
fetches run on SQLite and PostgreSQL. Hashes are benign stand-ins (digests of counters)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
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
    SUBSCRIPTION_KEY,
    HashRec,
    Replay,
    stand_in_md5,
    stand_in_pdq,
)
from tipline.exchange import feedback, store
from tipline.exchange.api import (
    ExchangeError,
    ExchangeFetchError,
    FetchContext,
    Opinion,
    exchange_type,
    registered,
)
from tipline.exchange.fetcher import FetchOptions, next_delay, run_fetch
from tipline.exchange.stop_ncii import STALE_SECONDS, parse_page
from tipline.store.exchange_feedback_tables import ExchangeFeedbackRow
from tipline.store.jobs import JobQueue
from tipline.store.tables import BankEntryRow, ExchangeFetchStatusRow, ExchangeRow

CREDS = {
    "subscription_key": SUBSCRIPTION_KEY,
    "fetch_function_key": FETCH_KEY,
    "feedback_function_key": FEEDBACK_KEY,
}
NOW = int(time.time())
DAY = 86400
NAME = "STOPNCII"


def pdq(i: int, ts: int, **kw: Any) -> HashRec:
    return HashRec(ts, stand_in_pdq(i), **kw)


@pytest.fixture
def replay() -> Iterator[Replay]:
    r = Replay().start()
    yield r
    r.stop()


@pytest.fixture
def both(session_factory: sessionmaker[Session]) -> Iterator[sessionmaker[Session]]:
    """SQLite and PostgreSQL."""
    with fx.exchange_store(session_factory) as sf:
        yield sf


@pytest.fixture
def lite(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    with fx.sqlite_db(tmp_path) as sf:
        yield sf


def add(
    db: sessionmaker[Session], replay: Replay, name: str = NAME, creds: Any = CREDS, **cfg: Any
) -> None:
    config = {"base_url": replay.base_url, **cfg}
    with db() as s, s.begin():
        store.create_exchange(s, name, "stop_ncii", config, credentials=creds)


def status(db: sessionmaker[Session], name: str = NAME) -> dict[str, Any]:
    with db() as s:
        return store.status_json(s, store.get_exchange(s, name))


def checkpoint(db: sessionmaker[Session], name: str = NAME) -> dict[str, Any]:
    with db() as s:
        st = s.get(ExchangeFetchStatusRow, store.get_exchange(s, name).id)
        assert st is not None
        return dict(st.checkpoint or {})


def bank(db: sessionmaker[Session]) -> dict[str, BankEntryRow]:
    with db() as s:
        rows = s.scalars(select(BankEntryRow).order_by(BankEntryRow.id))
        return {r.meta["exchange"]["key"]: r for r in rows}


def starts(replay: Replay) -> list[tuple[int, str]]:
    """(startTimestamp, nextPageToken) of every FetchHashes request."""
    return [
        (int(q["startTimestamp"][0]), (q.get("nextPageToken") or [""])[0])
        for q in replay.fetch_requests()
    ]


# -- parsing ---------------------------------------------------------------------------------

DOC_SHAPED = {
    "count": 2,
    "nextPageToken": "abc",
    "nextSetTimestamp": None,
    "hasMoreRecords": True,
    "hashRecords": [
        {
            "lastModtimestamp": 1700000000,
            "signalType": "ImagePDQ",
            "hashValue": "f" * 64,
            "hashStatus": "Active",
            "caseNumbers": {"c1": "Active", "c2": "Received"},
            "CSPFeedbacks": [{"feedbackValue": "Blocked", "tags": ["x"], "source": "CSP"}],
        },
        {"lastModtimestamp": "soon", "signalType": "VideoMD5", "hashValue": "a" * 32},
    ],
}


def test_parses_the_documented_shape() -> None:
    page = parse_page(json.dumps(DOC_SHAPED).encode())
    assert page.has_more and page.next_token == "abc" and page.next_set_ts is None
    [rec] = page.records
    assert (rec.key, rec.hash_status, rec.case_count) == (
        "ImagePDQ:" + "f" * 64,
        "Active",
        2,
    )
    assert [(p.kind, p.where) for p in page.problems] == [("malformed", "page record #2")]
    assert "lastModtimestamp" in page.problems[0].reason


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (b'{"count": 1, "hashRecords": [', "malformed JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "malformed JSON"),
        (b'[{"hashValue": "x"}]', "expected a JSON object, got list"),
        (b'"just a string"', "expected a JSON object, got str"),
        (b'{"hasMoreRecords": "yes", "hashRecords": []}', "hasMoreRecords is not true"),
        (b'{"hasMoreRecords": false, "hashRecords": {"a": 1}}', "hashRecords is not a list"),
        (b'{"nextSetTimestamp": "tomorrow", "hashRecords": []}', "nextSetTimestamp is not"),
        (b'{"nextPageToken": 7, "hasMoreRecords": true}', "nextPageToken is not"),
        (b'{"nextPageToken": "", "hasMoreRecords": true}', "without a nextPageToken"),
    ],
)
def test_hostile_pages_fail_the_fetch_clearly(
    lite: sessionmaker[Session], replay: Replay, body: bytes, said: str
) -> None:
    replay.body = body
    add(lite, replay)
    out = run_fetch(lite, NAME)
    assert not out.succeeded and said in (out.error or "")
    st = status(lite)
    assert st["last_fetch_succeeded"] is False and said in st["last_error"]
    assert bank(lite) == {}


# -- end to end, SQLite and PostgreSQL -------------------------------------------------------


def test_paging_metadata_and_keys_at_the_server(
    both: sessionmaker[Session], replay: Replay
) -> None:
    t = NOW - 3 * DAY
    replay.add(*(pdq(i, t + i) for i in range(240)))
    replay.add(HashRec(t + 500, stand_in_md5(1), "VideoMD5", cases={}))
    add(both, replay, page_size=100)
    out = run_fetch(both, NAME)
    assert out.succeeded and out.up_to_date and out.added == 241
    # three pages of one set: the same startTimestamp, then the tokens the server issued
    assert starts(replay) == [(0, ""), (0, "tok-0-100"), (0, "tok-0-200")]
    for _, path, headers in replay.requests:
        assert "pageSize=100" in path
        assert headers["Ocp-Apim-Subscription-Key"] == SUBSCRIPTION_KEY
        assert headers["x-functions-key"] == FETCH_KEY
    rows = bank(both)
    assert len(rows) == 241
    first = rows["ImagePDQ:" + stand_in_pdq(0)]
    assert first.signal_type == "pdq" and first.signal == stand_in_pdq(0)
    assert first.source == f"exchange:{NAME}"
    assert first.meta["exchange"]["partner"] == {
        "hashStatus": "Active",
        "caseNumbers": 1,
        "lastModtimestamp": t,
        "signalType": "ImagePDQ",
    }
    video = rows["VideoMD5:" + stand_in_md5(1)]
    assert video.signal_type == "md5" and video.meta["exchange"]["partner"]["caseNumbers"] == 0
    cp = checkpoint(both)
    assert cp["state"]["set_ts"] == t + 501 and "token" not in cp["state"]
    assert status(both)["checkpoint_ts"] == t + 501 and status(both)["fetched_items"] == 241
    # up to date: the next fetch asks for the next set only
    assert run_fetch(both, NAME).added == 0
    assert starts(replay)[-1] == (t + 501, "")


def test_withdrawn_and_deleted_hashes_are_tombstoned(
    both: sessionmaker[Session], replay: Replay
) -> None:
    """python-threatexchange compares ``hashValue`` with Withdrawn/Deleted, so these would
    never be removed there; here the ``hashStatus`` decides."""
    t = NOW - DAY
    replay.add(*(pdq(i, t + i) for i in range(10)))
    add(both, replay)
    assert run_fetch(both, NAME).added == 10
    later = NOW + 10
    replay.add(
        pdq(3, later, status="Withdrawn", cases={"case-1": "Withdrawn"}),
        pdq(4, later, status="Deleted"),
        pdq(5, later, cases={"case-1": "Active", "case-2": "Active"}),
    )
    out = run_fetch(both, NAME)
    assert (out.tombstoned, out.changed) == (2, 1)
    rows = bank(both)
    assert not rows["ImagePDQ:" + stand_in_pdq(3)].enabled
    assert not rows["ImagePDQ:" + stand_in_pdq(4)].enabled
    assert rows["ImagePDQ:" + stand_in_pdq(5)].meta["exchange"]["partner"]["caseNumbers"] == 2
    assert sum(r.enabled for r in rows.values()) == 8
    assert status(both)["fetched_items"] == 8
    # the person submits it again: the same bank entry, enabled
    replay.add(pdq(3, later + 5))
    out = run_fetch(both, NAME)
    assert out.added == 1 and len(bank(both)) == 10
    assert bank(both)["ImagePDQ:" + stand_in_pdq(3)].enabled


def test_a_time_boxed_fetch_resumes_mid_set(both: sessionmaker[Session], replay: Replay) -> None:
    t = NOW - DAY
    replay.add(*(pdq(i, t + i) for i in range(50)))
    add(both, replay, page_size=20)
    # a time box of 0 s: each run commits one page and stops
    out = run_fetch(both, NAME, FetchOptions(budget_seconds=0.0))
    assert out.more and not out.up_to_date and out.added == 20
    cp = checkpoint(both)
    assert cp["state"]["set_ts"] == 0 and cp["state"]["token"] == "tok-0-20"
    assert not cp["up_to_date"]
    out = run_fetch(both, NAME, FetchOptions(budget_seconds=0.0))
    assert out.added == 20 and checkpoint(both)["state"]["token"] == "tok-0-40"
    out = run_fetch(both, NAME, FetchOptions(budget_seconds=0.0))
    assert out.added == 10 and out.up_to_date
    # each run went on with the stored token, with the set's own startTimestamp
    assert starts(replay) == [(0, ""), (0, "tok-0-20"), (0, "tok-0-40")]
    assert len(bank(both)) == 50 and checkpoint(both)["state"]["set_ts"] == t + 50


def test_rejected_keys_mark_that_exchange_failing_others_go_on(
    both: sessionmaker[Session], replay: Replay
) -> None:
    replay.add(*(pdq(i, NOW - DAY + i) for i in range(5)))
    add(both, replay, "NCII_BAD_SUB", creds={**CREDS, "subscription_key": "wrong-sub-stand-in"})
    add(both, replay, "NCII_BAD_FN", creds={**CREDS, "fetch_function_key": "wrong-fn-stand-in"})
    add(both, replay)
    bad_sub = run_fetch(both, "NCII_BAD_SUB")
    bad_fn = run_fetch(both, "NCII_BAD_FN")
    good = run_fetch(both, NAME)
    assert not bad_sub.succeeded and "refused the keys (HTTP 401)" in (bad_sub.error or "")
    assert not bad_fn.succeeded and "refused the keys (HTTP 403)" in (bad_fn.error or "")
    assert good.succeeded and good.added == 5
    for name, secret in (("NCII_BAD_SUB", "wrong-sub-stand-in"), ("NCII_BAD_FN", "wrong-fn")):
        st = status(both, name)
        assert st["last_fetch_succeeded"] is False and st["consecutive_failures"] == 1
        assert secret not in str(st)
    with both() as s:  # sealed at rest
        blobs = list(s.scalars(select(ExchangeRow.credentials)))
        assert blobs and all(b and SUBSCRIPTION_KEY.encode() not in b for b in blobs)


# -- checkpoints (SQLite) --------------------------------------------------------------------


def test_a_stale_checkpoint_refetches_from_scratch(
    lite: sessionmaker[Session], replay: Replay
) -> None:
    t = NOW - DAY
    replay.add(*(pdq(i, t + i) for i in range(10)))
    add(lite, replay, start_ts=5)
    assert run_fetch(lite, NAME).added == 10
    assert starts(replay) == [(5, "")]
    # two hashes vanish without a withdrawal record (StopNCII only keeps those 30 days)
    replay.remove(("ImagePDQ", stand_in_pdq(1)), ("ImagePDQ", stand_in_pdq(2)))
    soon = NOW + 29 * DAY
    out = run_fetch(lite, NAME, FetchOptions(clock=lambda: soon))
    assert out.succeeded and out.tombstoned == 0 and starts(replay)[-1] == (t + 10, "")
    # the last checkpoint was made "29 days from now"; 31 days after that it is stale
    late = soon + STALE_SECONDS + DAY
    out = run_fetch(lite, NAME, FetchOptions(clock=lambda: late))
    assert out.succeeded and starts(replay)[-1] == (5, "")  # from scratch: start_ts again
    assert out.tombstoned == 2
    rows = bank(lite)
    assert sorted(k for k, r in rows.items() if not r.enabled) == sorted(
        ["ImagePDQ:" + stand_in_pdq(1), "ImagePDQ:" + stand_in_pdq(2)]
    )
    assert status(lite)["fetched_items"] == 8


def test_the_checkpoint_never_moves_back(lite: sessionmaker[Session], replay: Replay) -> None:
    t = NOW - DAY
    replay.add(*(pdq(i, t + i) for i in range(3)))
    add(lite, replay)
    assert run_fetch(lite, NAME).added == 3
    assert checkpoint(lite)["state"]["set_ts"] == t + 3
    replay.body = json.dumps(
        {
            "count": 0,
            "nextPageToken": "",
            "nextSetTimestamp": 1000,
            "hasMoreRecords": False,
            "hashRecords": [],
        }
    ).encode()
    out = run_fetch(lite, NAME)
    assert out.succeeded and out.up_to_date
    assert checkpoint(lite)["state"]["set_ts"] == t + 3
    assert status(lite)["checkpoint_ts"] == t + 3


# -- faults (SQLite) -------------------------------------------------------------------------


def test_unknown_signal_types_invalid_hashes_and_malformed_records_are_counted(
    lite: sessionmaker[Session], replay: Replay
) -> None:
    t = NOW - DAY
    replay.add(
        pdq(1, t),
        HashRec(t, "zz12-not-hex"),
        HashRec(t, "ab" * 32, "VideoTMK"),
        HashRec(t, "some words", "Text"),
        HashRec(t, "https://example.invalid/x", "URL"),
        HashRec(t + 1, stand_in_md5(2), "VideoMD5"),
    )
    replay.raw_items = [
        42,
        {"signalType": 7, "hashValue": "x"},
        {"signalType": "ImagePDQ", "hashValue": stand_in_pdq(9), "lastModtimestamp": "x"},
        {"signalType": "ImagePDQ", "hashValue": ["list"], "lastModtimestamp": t},
        {
            "signalType": "ImagePDQ",
            "hashValue": stand_in_pdq(8),
            "lastModtimestamp": t,
            "caseNumbers": ["c1"],
        },
    ]
    add(lite, replay)
    out = run_fetch(lite, NAME)
    assert out.succeeded and out.added == 2
    assert out.counts == {"invalid": 1, "unknown_signal_type": 3, "malformed": 5}
    where = {p["where"]: p["kind"] for p in status(lite)["problems"]}
    set_page = "page 1 of the set from 0"
    assert where == {
        "record ImagePDQ:zz12-not-hex": "invalid",
        "record VideoTMK:" + "ab" * 32: "unknown_signal_type",
        "record Text:some words": "unknown_signal_type",
        "record URL:https://example.invalid/x": "unknown_signal_type",
        **{f"{set_page} record #{n}": "malformed" for n in range(1, 6)},
    }
    assert set(bank(lite)) == {"ImagePDQ:" + stand_in_pdq(1), "VideoMD5:" + stand_in_md5(2)}


def test_a_repeating_page_token_stops_with_an_error(
    lite: sessionmaker[Session], replay: Replay
) -> None:
    replay.add(*(pdq(i, NOW - DAY + i) for i in range(30)))
    replay.repeat_token = True
    add(lite, replay, page_size=10)
    t = time.monotonic()
    out = run_fetch(lite, NAME)
    assert time.monotonic() - t < 30
    assert not out.succeeded and "paging repeats" in (out.error or "")
    # the second page names its own token as next: seen before it is asked for again
    assert starts(replay) == [(0, ""), (0, "tok-repeat")]
    # the failed run committed nothing: the next one starts the set again and stops the same
    # way, it does not loop
    again = run_fetch(lite, NAME)
    assert not again.succeeded and "paging repeats" in (again.error or "")
    assert starts(replay)[2:] == [(0, ""), (0, "tok-repeat")]
    assert status(lite)["consecutive_failures"] == 2


def test_429_and_5xx_back_off(lite: sessionmaker[Session], replay: Replay) -> None:
    replay.add(*(pdq(i, NOW - DAY + i) for i in range(20)))
    replay.fail = [(429, {"Retry-After": "120"}), (503, {})]
    add(lite, replay)
    out = run_fetch(lite, NAME)
    assert not out.succeeded and out.retry_after == 120 and "HTTP 429" in (out.error or "")
    assert next_delay(3600, out, 1) == 120
    out = run_fetch(lite, NAME)
    assert "HTTP 503" in (out.error or "") and next_delay(3600, out, 2) == 60
    assert status(lite)["consecutive_failures"] == 2
    out = run_fetch(lite, NAME)
    assert out.succeeded and out.added == 20 and status(lite)["consecutive_failures"] == 0


def test_a_100mb_page_stops_at_the_size_limit(lite: sessionmaker[Session], replay: Replay) -> None:
    replay.huge_page = True
    add(lite, replay, max_page_bytes=2 * 1024 * 1024)
    out = run_fetch(lite, NAME)
    assert not out.succeeded and "too_large" in (out.error or "")
    assert bank(lite) == {}


def test_config_and_credentials_are_checked(lite: sessionmaker[Session], replay: Replay) -> None:
    typ = exchange_type("stop_ncii")
    assert "stop_ncii" in registered()
    assert typ.accepts_opinions and not typ.snapshot
    assert typ.accepts_submissions and not typ.takes_submissions(typ.validate_config({}))
    for bad, said in [
        ({"base_url": "ftp://x"}, "http:// or https://"),
        ({"page_size": 0}, "page_size must be 1 to 800"),
        ({"page_size": 801}, "page_size must be 1 to 800"),
        ({"start_ts": -1}, "start_ts must be >= 0"),
        ({"nope": 1}, "unknown field"),
    ]:
        with pytest.raises(ExchangeError, match=said):
            typ.validate_config(bad)
    with pytest.raises(ExchangeError, match="is required"):
        typ.validate_credentials({"subscription_key": "x"})
    with pytest.raises(ExchangeError, match="must not be empty"):
        typ.validate_credentials({"subscription_key": " ", "fetch_function_key": "y"})
    assert typ.validate_config({})["base_url"] == "https://api.stopncii.org/v1"
    schema = typ.schema()
    assert [f["name"] for f in schema["credentials_schema"]["fields"]] == [
        "subscription_key",
        "fetch_function_key",
        "feedback_function_key",
        "submit_function_key",
    ]
    add(lite, replay, creds=None)
    out = run_fetch(lite, NAME)
    assert not out.succeeded and "no StopNCII keys" in (out.error or "")
    assert replay.requests == []


# -- feedback --------------------------------------------------------------------------------


def _ctx(replay: Replay, feedback_key: str | None = FEEDBACK_KEY, **cfg: Any) -> FetchContext:
    creds = {**CREDS, "feedback_function_key": feedback_key}
    return FetchContext(NAME, {"base_url": replay.base_url, **cfg}, creds, fx.LOCAL)


def test_feedback_reaches_the_partner_and_is_idempotent(replay: Replay) -> None:
    typ = exchange_type("stop_ncii")
    value = stand_in_pdq(7)
    meta = {"signalType": "ImagePDQ", "hashStatus": "Active"}
    yes = Opinion("ImagePDQ:" + value, "pdq", value, "positive", ("ncii",), meta)
    ctx = _ctx(replay, feedback_tags="tipline, hotline")
    typ.submit_opinion(ctx, yes)
    typ.submit_opinion(ctx, yes)  # delivered twice after a crash: the same feedback
    assert replay.feedback == {("ImagePDQ", value): ("Blocked", ("tipline", "hotline", "ncii"))}
    assert len(replay.feedback_log) == 2
    assert replay.feedback_log[0] == {
        "count": 1,
        "hashFeedbacks": [
            {
                "hashValue": value,
                "signalType": "ImagePDQ",
                "feedbackValue": "Blocked",
                "tags": ["tipline", "hotline", "ncii"],
            }
        ],
    }
    method, path, headers = replay.requests[-1]
    assert (method, path) == ("POST", "/v1/SubmitFeedback")
    assert headers["x-functions-key"] == FEEDBACK_KEY
    assert headers["Ocp-Apim-Subscription-Key"] == SUBSCRIPTION_KEY
    # negative: NotBlocked; the key alone names the hash
    md5 = stand_in_md5(3)
    typ.submit_opinion(_ctx(replay), Opinion("VideoMD5:" + md5, "md5", md5, "negative"))
    assert replay.feedback[("VideoMD5", md5)] == ("NotBlocked", ())
    with pytest.raises(ExchangeError, match=r"positive \(Blocked\) or negative"):
        typ.submit_opinion(ctx, Opinion(yes.record_key, "pdq", value, "not_sure"))
    with pytest.raises(ExchangeError, match="not a StopNCII record key"):
        typ.submit_opinion(ctx, Opinion("garbage", "pdq", "x", "positive"))
    with pytest.raises(ExchangeError, match="no StopNCII feedback_function_key"):
        typ.submit_opinion(_ctx(replay, None), yes)
    with pytest.raises(ExchangeFetchError, match=r"refused the keys \(HTTP 403\)"):
        typ.submit_opinion(_ctx(replay, "wrong-stand-in"), yes)
    assert len(replay.feedback_log) == 3


def test_feedback_429_is_retryable(replay: Replay) -> None:
    replay.fail = [(429, {"Retry-After": "30"})]
    value = stand_in_pdq(1)
    yes = Opinion("ImagePDQ:" + value, "pdq", value, "positive")
    with pytest.raises(ExchangeFetchError) as err:
        exchange_type("stop_ncii").submit_opinion(_ctx(replay), yes)
    assert "HTTP 429" in str(err.value) and err.value.retry_after == 30
    assert replay.feedback == {}
    exchange_type("stop_ncii").submit_opinion(_ctx(replay), yes)
    assert replay.feedback == {("ImagePDQ", value): ("Blocked", ())}


# -- a grade's feedback through the queue, end to end ----------------------------------------


def test_a_confirmed_grade_reaches_stopncii_through_the_feedback_queue(
    db_url: str, session_factory: sessionmaker[Session], engine: Engine, tmp_path: Path
) -> None:
    """Fetched from the replay, matched by a report, graded: the feedback job (the queue
    built in exchange/feedback.py) posts ``Blocked`` with the grade's reasons as tags, once
    through a 503; a not-illegal grade posts ``NotBlocked``."""
    img_a = encode(noise_image(21, 200, 150), "PNG")
    img_b = encode(noise_image(22, 200, 150), "PNG")
    md5_a, md5_b = hashlib.md5(img_a).hexdigest(), hashlib.md5(img_b).hexdigest()
    replay = Replay().start()
    replay.add(
        HashRec(NOW - DAY, md5_a, "VideoMD5"),
        HashRec(NOW - DAY + 1, md5_b, "VideoMD5"),
    )
    app, settings = fx.service_app(db_url, tmp_path)
    with session_factory() as s, s.begin():
        store.create_exchange(
            s, NAME, "stop_ncii", {"base_url": replay.base_url}, credentials=CREDS
        )
        token = fx.user_token(s, "alice", "analyst", ["review:grade"], "feedback-test")
    assert run_fetch(session_factory, NAME).added == 2
    queue = JobQueue(engine, backoff_base=0.0)

    def report_and_grade(image: bytes, values: dict[str, str]) -> None:
        item = fx.report(session_factory, engine, image)
        assert any(m["bank"] == NAME for m in item.matches or []), item.matches
        fx.grade(client, token, item, values)

    def send() -> Any:
        return queue.run_one(
            "feedback-worker", [feedback.JOB_KIND], session_factory=session_factory
        )

    try:
        with fx.serving(app, settings) as client:
            report_and_grade(img_a, {"uk_category": "C", "ncmec_category": "none"})
            replay.fail = [(503, {})]  # the partner is down once
            assert send() is not None and replay.feedback == {}
            assert send() is not None and send() is None
            assert replay.feedback == {("VideoMD5", md5_a): ("Blocked", ("uk_category:C",))}
            assert len(replay.feedback_log) == 1
            posts = [h for m, p, h in replay.requests if p == "/v1/SubmitFeedback"]
            assert len(posts) == 2 and all(h["x-functions-key"] == FEEDBACK_KEY for h in posts)
            report_and_grade(img_b, {"uk_category": "not_illegal", "ncmec_category": "none"})
            assert send() is not None
            assert replay.feedback[("VideoMD5", md5_b)][0] == "NotBlocked"
            with session_factory() as s:
                rows = list(s.scalars(select(ExchangeFeedbackRow).order_by(ExchangeFeedbackRow.id)))
                assert [(r.record_key, r.category, r.state) for r in rows] == [
                    ("VideoMD5:" + md5_a, "positive", "sent"),
                    ("VideoMD5:" + md5_b, "negative", "sent"),
                ]
    finally:
        replay.stop()
