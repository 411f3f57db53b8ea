"""The ``tat`` exchange type against a local TCAP-shaped server (tests/tat_replay.py, a real
HTTP server on 127.0.0.1), through the real fetcher into a bank: the JWT from
``token-auth/tcap/`` sent as a Bearer token, ``after=<ts,id>`` paging in update order, resumes,
deletions, an expired token renewed once, refused credentials, hostile pages, unknown
algorithms and invalid hashes counted, a repeating checkpoint, 429 / 5xx, a 100 MB page and a
checkpoint that never moves back. End-to-end fetches run on SQLite and PostgreSQL. Entries are
benign stand-ins (digests of counters)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

import exchange_fixtures as fx
from tat_replay import PASSWORD, USER, Replay, TatEntry, stand_in_md5, stand_in_pdq
from tipline.exchange import store
from tipline.exchange.api import ExchangeError, exchange_type, registered
from tipline.exchange.fetcher import FetchOptions, next_delay, run_fetch
from tipline.exchange.tat import parse_after
from tipline.store.tables import BankEntryRow, ExchangeFetchStatusRow

CREDS = {"username": USER, "password": PASSWORD}
NOW = int(time.time())
DAY = 86400
NAME = "TAT"


def pdq(i: int, ts: int, **kw: Any) -> TatEntry:
    return TatEntry(i, ts, stand_in_pdq(i), **kw)


@pytest.fixture
def replay() -> Iterator[Replay]:
    r = Replay(page_size=100).start()
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
    with db() as s, s.begin():
        store.create_exchange(
            s, name, "tat", {"base_url": replay.base_url, **cfg}, credentials=creds
        )


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


def token_posts(replay: Replay) -> list[dict[str, list[str]]]:
    return [parse_qs(b.decode()) for m, p, _, b in replay.requests if p == "/token-auth/tcap/"]


# -- end to end, SQLite and PostgreSQL -------------------------------------------------------


def test_pages_metadata_deletions_and_the_bearer_token(
    both: sessionmaker[Session], replay: Replay
) -> None:
    t = NOW - 3 * DAY
    replay.add(*(pdq(i, t + i) for i in range(1, 231)))
    replay.add(TatEntry(500, t + 300, stand_in_md5(500), "MD5", "far-right", "video"))
    add(both, replay)
    out = run_fetch(both, NAME)
    assert out.succeeded and out.up_to_date and out.added == 231
    # one token for the run, sent as form fields; every list request carries it
    assert token_posts(replay) == [
        {"username": [USER], "password": [PASSWORD], "resend": ["False"]}
    ]
    lists = [(p, h) for m, p, h, _ in replay.requests if "/api/hash-list/" in p]
    assert all(h["Authorization"] == "Bearer eyJstand.in-1.sig" for _, h in lists)
    assert all("order=asc" in p for p, _ in lists)
    assert replay.list_requests() == ["", f"{t + 100},100", f"{t + 200},200"]
    rows = bank(both)
    assert len(rows) == 231
    one = rows["1"]
    assert one.signal_type == "pdq" and one.signal == stand_in_pdq(1)
    assert one.meta["exchange"]["partner"] == {
        "id": 1,
        "algorithm": "PDQ",
        "ideology": "islamist",
        "file_type": "image",
        "updated_on": float(t + 1),
        "created_on": "2024-01-01T00:00:00Z",
    }
    assert rows["500"].signal_type == "md5"
    assert rows["500"].meta["exchange"]["partner"]["ideology"] == "far-right"
    assert checkpoint(both)["state"]["after"] == f"{t + 300},500"
    assert status(both)["checkpoint_ts"] == t + 300
    # later: entry 7 deleted (it moves to the end of the update order), 8 changes ideology
    replay.add(pdq(7, t + 400, deleted=True), pdq(8, t + 401, ideology="far-right"))
    out = run_fetch(both, NAME)
    assert (out.tombstoned, out.changed, out.added) == (1, 1, 0)
    assert replay.list_requests()[-1] == f"{t + 300},500"
    rows = bank(both)
    assert (
        not rows["7"].enabled and rows["8"].meta["exchange"]["partner"]["ideology"] == "far-right"
    )
    assert status(both)["fetched_items"] == 230


def test_a_time_boxed_fetch_resumes_after_its_checkpoint(
    both: sessionmaker[Session], replay: Replay
) -> None:
    t = NOW - DAY
    replay.add(*(pdq(i, t + i) for i in range(1, 251)))
    add(both, replay)
    runs = 0
    while True:
        runs += 1
        out = run_fetch(both, NAME, FetchOptions(budget_seconds=0.0))
        assert out.succeeded
        if out.up_to_date:
            break
    assert runs == 3 and len(bank(both)) == 250
    assert replay.list_requests() == ["", f"{t + 100},100", f"{t + 200},200"]


# -- faults (SQLite) -------------------------------------------------------------------------


def test_an_expired_token_is_renewed_once(lite: sessionmaker[Session], replay: Replay) -> None:
    t = NOW - DAY
    replay.add(*(pdq(i, t + i) for i in range(1, 151)))
    add(lite, replay)
    # the token expires after the first page
    original = replay.page

    def page_then_expire(after: str) -> tuple[int, dict[str, Any]]:
        got = original(after)
        replay.expire_tokens()
        return got

    replay.page = page_then_expire  # type: ignore[method-assign]
    out = run_fetch(lite, NAME)
    assert out.succeeded and out.added == 150 and len(token_posts(replay)) == 2


def test_refused_credentials_mark_the_exchange_failing(
    lite: sessionmaker[Session], replay: Replay
) -> None:
    replay.add(pdq(1, NOW - DAY))
    add(lite, replay, creds={"username": USER, "password": "wrong-stand-in"})
    out = run_fetch(lite, NAME)
    assert not out.succeeded and "refused the credentials (HTTP 401) for token" in (out.error or "")
    st = status(lite)
    assert st["last_fetch_succeeded"] is False and "wrong-stand-in" not in str(st)
    assert replay.list_requests() == []


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (b'{"results": [', "malformed JSON"),
        (b"[]", "expected a JSON object, got list"),
        (b'{"next": 5, "results": []}', "next is not a link"),
        (b'{"checkpoint": "yesterday", "results": []}', "is not 'ts,id'"),
        (b'{"next": "https://x.invalid/", "results": []}', "without a checkpoint"),
        (b'{"results": {"a": 1}}', "results is not a list"),
    ],
)
def test_hostile_pages_fail_the_fetch_clearly(
    lite: sessionmaker[Session], replay: Replay, body: bytes, said: str
) -> None:
    replay.body = body
    add(lite, replay)
    out = run_fetch(lite, NAME)
    assert not out.succeeded and said in (out.error or "")
    assert said in status(lite)["last_error"] and bank(lite) == {}


def test_unknown_algorithms_invalid_hashes_and_malformed_results_are_counted(
    lite: sessionmaker[Session], replay: Replay
) -> None:
    t = NOW - DAY
    replay.add(
        pdq(1, t + 1),
        TatEntry(2, t + 2, "zz-not-hex"),
        TatEntry(3, t + 3, "ab" * 20, "PhotoDNA"),
        TatEntry(4, t + 4, "cd" * 20, "SHA1"),
    )
    replay.raw_items = [
        "a string",
        {"id": "seven", "hash_digest": "x", "algorithm": "PDQ"},
        {"id": 9, "hash_digest": stand_in_pdq(9), "algorithm": "PDQ", "deleted": "no"},
        {"id": 10, "hash_digest": None, "algorithm": "PDQ"},
    ]
    add(lite, replay)
    out = run_fetch(lite, NAME)
    assert out.succeeded and out.added == 2
    assert out.counts == {"invalid": 1, "unknown_signal_type": 1, "malformed": 4}
    where = {p["where"]: p["kind"] for p in status(lite)["problems"]}
    assert where == {
        "record 2": "invalid",
        "entry 3": "unknown_signal_type",
        **{f"page 1 after '' result #{n}": "malformed" for n in range(1, 5)},
    }
    assert set(bank(lite)) == {"1", "4"} and bank(lite)["4"].signal_type == "sha1"


def test_a_repeating_checkpoint_stops_with_an_error(
    lite: sessionmaker[Session], replay: Replay
) -> None:
    replay.add(*(pdq(i, NOW - DAY + i) for i in range(1, 31)))
    replay.repeat_checkpoint = True
    add(lite, replay)
    out = run_fetch(lite, NAME)
    assert not out.succeeded and "paging repeats" in (out.error or "")
    assert replay.list_requests() == ["", "1,1"]


def test_429_and_5xx_back_off(lite: sessionmaker[Session], replay: Replay) -> None:
    replay.add(*(pdq(i, NOW - DAY + i) for i in range(1, 21)))
    replay.fail = [(429, {"Retry-After": "120"}), (503, {})]
    add(lite, replay)
    out = run_fetch(lite, NAME)
    assert not out.succeeded and out.retry_after == 120 and "HTTP 429" in (out.error or "")
    assert next_delay(3600, out, 1) == 120
    out = run_fetch(lite, NAME)
    assert "HTTP 503" in (out.error or "") and status(lite)["consecutive_failures"] == 2
    out = run_fetch(lite, NAME)
    assert out.succeeded and out.added == 20 and status(lite)["consecutive_failures"] == 0


def test_a_100mb_page_stops_at_the_size_limit(lite: sessionmaker[Session], replay: Replay) -> None:
    replay.huge_page = True
    add(lite, replay, max_page_bytes=2 * 1024 * 1024)
    out = run_fetch(lite, NAME)
    assert not out.succeeded and "too_large" in (out.error or "")


def test_the_checkpoint_never_moves_back(lite: sessionmaker[Session], replay: Replay) -> None:
    t = NOW - DAY
    replay.add(*(pdq(i, t + i) for i in range(1, 4)))
    add(lite, replay)
    assert run_fetch(lite, NAME).added == 3
    replay.body = b'{"next": null, "checkpoint": "100,1", "results": []}'
    out = run_fetch(lite, NAME)
    assert out.succeeded and checkpoint(lite)["state"]["after"] == f"{t + 3},3"
    assert status(lite)["checkpoint_ts"] == t + 3


def test_config_and_credentials_are_checked(lite: sessionmaker[Session], replay: Replay) -> None:
    typ = exchange_type("tat")
    assert "tat" in registered() and not typ.accepts_opinions
    with pytest.raises(ExchangeError, match="http:// or https://"):
        typ.validate_config({"base_url": "file:///etc"})
    with pytest.raises(ExchangeError, match="is required"):
        typ.validate_credentials({"username": "x"})
    assert parse_after("1704085200,124") == (1704085200.0, 124)
    assert parse_after("nan,1") is None and parse_after("12") is None
    add(lite, replay, creds=None)
    out = run_fetch(lite, NAME)
    assert not out.succeeded and "no TAT credentials" in (out.error or "")


def test_a_deeply_nested_token_answer_is_no_usable_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hostile token answer nested past the parser's depth is "no usable token", not a
    RecursionError out of the fetch."""
    import httpx

    from tipline.exchange import tat
    from tipline.exchange.api import ExchangeFetchError, FetchContext
    from tipline.net.fetch import SentResponse

    def nested(*_a: Any, **_k: Any) -> SentResponse:
        return SentResponse(200, httpx.Headers(), "[" * 60_000 + "]" * 60_000)

    monkeypatch.setattr(tat, "send_pinned", nested)
    ctx = FetchContext(NAME, {"base_url": "http://127.0.0.1:9"}, CREDS, fx.LOCAL)
    with pytest.raises(ExchangeFetchError, match="no usable token"):
        tat.Client(ctx).token()
