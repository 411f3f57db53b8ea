"""The ``fb_threatexchange`` exchange type against a local Graph-shaped server
(tests/threatexchange_replay.py, a real HTTP server on 127.0.0.1), through the real fetcher
into a bank: the access token checked at the server, paging, several privacy groups, kills
mid-window, should_delete and empty descriptors as tombstones (#834), a stale checkpoint,
malformed pages, wrong field types, invalid hashes, unknown types, a paging link to another
host, a repeating page, a refused token (Graph code 190), 429 / 5xx, a 100 MB page, and
reactions reaching the server. The end-to-end fetches run on SQLite and PostgreSQL. Updates
are benign stand-ins (ids ``<n>``, hashes of counters)."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

import exchange_fixtures as fx
from threatexchange_replay import (
    APP_ID,
    APP_SECRET,
    TOKEN,
    Replay,
    Update,
    graph_error,
    pdq_update,
    stand_in_md5,
    stand_in_pdq,
)
from tipline.exchange import store
from tipline.exchange.api import (
    Checkpoint,
    ExchangeError,
    ExchangeFetchError,
    FetchContext,
    Opinion,
    exchange_type,
)
from tipline.exchange.fb_threatexchange import STALE_SECONDS, parse_time
from tipline.exchange.fetcher import FetchOptions, next_delay, run_fetch
from tipline.store.tables import BankEntryRow, ExchangeFetchStatusRow, ExchangeRow

CREDS = {"app_id": APP_ID, "app_secret": APP_SECRET}
NOW = int(time.time())
DAY = 86400
G1, G2 = "1111", "2222"


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
    db: sessionmaker[Session], replay: Replay, name: str = "TE", creds: Any = CREDS, **cfg: Any
) -> None:
    config = {"base_url": replay.base_url, "privacy_groups": G1, **cfg}
    with db() as s, s.begin():
        store.create_exchange(s, name, "fb_threatexchange", config, credentials=creds)


def status(db: sessionmaker[Session], name: str = "TE") -> dict[str, Any]:
    with db() as s:
        return store.status_json(s, store.get_exchange(s, name))


def checkpoint(db: sessionmaker[Session], name: str = "TE") -> dict[str, Any]:
    with db() as s:
        st = s.get(ExchangeFetchStatusRow, store.get_exchange(s, name).id)
        assert st is not None
        return dict(st.checkpoint or {})


def bank(db: sessionmaker[Session]) -> dict[str, BankEntryRow]:
    with db() as s:
        rows = s.scalars(select(BankEntryRow).order_by(BankEntryRow.id))
        return {r.meta["exchange"]["key"]: r for r in rows}


def spread(n: int, first: int = 0, days: float = 3.0) -> list[Update]:
    t0 = NOW - int(days * DAY)
    step = max(1, int(days * DAY - 120) // max(1, n))
    return [pdq_update(first + i, t0 + i * step) for i in range(n)]


# -- end to end, SQLite and PostgreSQL -------------------------------------------------------


def test_pages_groups_metadata_and_the_token(both: sessionmaker[Session], replay: Replay) -> None:
    replay.add(G1, *spread(250))
    md5 = Update("9001", stand_in_md5(1).upper(), "MD5", NOW - DAY)
    video = Update("9002", stand_in_md5(2), "VIDEO_MD5", NOW - DAY)
    two = pdq_update(
        9003,
        NOW - DAY,
        descriptors=[
            {"id": "d7", "owner": {"id": "555", "name": "P1"}, "tags": ["a", "b"], "status": "S"},
            {"id": "d8", "owner": {"id": "556", "name": "P2"}, "tags": ["c"]},
        ],
    )
    replay.add(G2, md5, video, two)
    add(both, replay, privacy_groups=f"{G1},{G2}")
    out = run_fetch(both, "TE", FetchOptions(clock=lambda: NOW))
    assert out.succeeded and out.up_to_date and out.added == 253, out.error
    rows = bank(both)
    assert len(rows) == 253 and len({r.signal for r in rows.values()}) == 253
    r7 = rows[f"{G1}:7"]
    assert r7.signal_type == "pdq" and r7.signal == stand_in_pdq(7)
    assert r7.label == "stand_in_tag" and r7.source == "exchange:TE"
    assert r7.meta["exchange"]["partner"] == {
        "privacy_group": G1,
        "id": "7",
        "type": "PDQ",
        "descriptor_ids": ["d1"],
        "owners": [{"id": "555", "name": "Example Partner"}],
        "tags": ["stand_in_tag"],
        "status": ["MALICIOUS"],
        "last_updated": replay.groups[G1][7].last_updated,
    }
    assert rows[f"{G2}:9001"].signal_type == "md5" and rows[f"{G2}:9001"].signal == stand_in_md5(1)
    assert rows[f"{G2}:9002"].signal_type == "md5"
    p3 = rows[f"{G2}:9003"].meta["exchange"]["partner"]
    assert rows[f"{G2}:9003"].label == "a,b" and p3["tags"] == ["a", "b", "c"]
    assert p3["descriptor_ids"] == ["d7", "d8"] and [o["name"] for o in p3["owners"]] == [
        "P1",
        "P2",
    ]
    # the token went with every request (the server checked it), pages of 100 were followed
    pages = replay.update_requests()
    assert len(pages) == 3 + 1 and all(good for _, _, good in replay.requests)
    assert all("limit=100" in p and "start_time=0" in p for p in pages)
    assert sum("after=" in p for p in pages) == 2
    # the checkpoint and the status hold no secret
    cp = checkpoint(both)
    assert APP_SECRET not in json.dumps(cp) and APP_SECRET not in str(status(both))
    assert cp["state"]["groups"] == {G1: {"done": NOW}, G2: {"done": NOW}}
    assert status(both)["checkpoint_ts"] == NOW
    # up to date: the next fetch asks only for what came since, from the window's end
    seen = len(replay.update_requests())
    assert run_fetch(both, "TE", FetchOptions(clock=lambda: NOW + 60)).added == 0
    later = replay.update_requests()[seen:]
    assert len(later) == 2 and all(f"start_time={NOW}&" in p for p in later)


def test_a_kill_mid_window_resumes_at_the_next_page(
    both: sessionmaker[Session], replay: Replay
) -> None:
    replay.add(G1, *spread(350))
    add(both, replay)
    # a time box of 0 s: the run commits one page and stops
    out = run_fetch(both, "TE", FetchOptions(budget_seconds=0.0, clock=lambda: NOW))
    assert out.succeeded and out.more and out.added == 100
    st = checkpoint(both)["state"]["groups"][G1]
    assert st["stop"] == NOW and "after=100" in st["next"] and "done" not in st
    assert st["next"].startswith(f"/v21.0/{G1}/threat_updates") and APP_SECRET not in st["next"]
    assert status(both)["checkpoint_ts"] == 0  # the window is not done: no progress yet
    # the next runs (later, a new clock) go on from the stored link, same window end
    runs = 1
    while True:
        out = run_fetch(both, "TE", FetchOptions(budget_seconds=0.0, clock=lambda: NOW + 600))
        assert out.succeeded, out.error
        runs += 1
        if out.up_to_date:
            break
        assert runs < 20
    pages = replay.update_requests()
    # every page of the window, before and after the kill, kept the window's end
    assert pages[:4] and all(f"stop_time={NOW}&" in p for p in pages[:4])
    assert "after=100" in pages[1] and "after=0" not in pages[1]
    assert len(bank(both)) == 350
    assert checkpoint(both)["state"]["groups"][G1]["done"] == NOW


def test_should_delete_and_empty_descriptors_are_tombstones(
    both: sessionmaker[Session], replay: Replay
) -> None:
    replay.add(G1, *(pdq_update(i, NOW - DAY + i) for i in range(6)))
    add(both, replay)
    assert run_fetch(both, "TE", FetchOptions(clock=lambda: NOW)).added == 6
    t = NOW + 30
    gone = pdq_update(1, t, should_delete=True)
    empty = pdq_update(2, t, descriptors=[])
    missing = pdq_update(3, t)
    missing.descriptors = None
    relabelled = pdq_update(4, t, descriptors=[{"id": "d9", "tags": ["new_tag"]}])
    replay.add(G1, gone, empty, missing, relabelled)
    out = run_fetch(both, "TE", FetchOptions(clock=lambda: NOW + 60))
    assert (out.tombstoned, out.changed) == (3, 1), out
    rows = bank(both)
    assert [k for k, r in rows.items() if not r.enabled] == [f"{G1}:1", f"{G1}:2", f"{G1}:3"]
    assert rows[f"{G1}:4"].label == "new_tag"
    assert status(both)["fetched_items"] == 3
    # shared again: the same bank entry, enabled
    replay.add(G1, pdq_update(1, NOW + 90))
    out = run_fetch(both, "TE", FetchOptions(clock=lambda: NOW + 120))
    assert out.added == 1 and len(bank(both)) == 6 and bank(both)[f"{G1}:1"].enabled


def test_a_refused_token_fails_that_exchange_others_go_on(
    both: sessionmaker[Session], replay: Replay
) -> None:
    replay.add(G1, *spread(20))
    add(both, replay, "TE_BAD", creds={"access_token": "999|wrong-stand-in"})
    add(both, replay, "TE")
    bad = run_fetch(both, "TE_BAD")
    assert len(replay.update_requests()) == 1  # Graph's code read from the one refused answer
    good = run_fetch(both, "TE")
    assert not bad.succeeded and "refused the access token (HTTP 400)" in (bad.error or "")
    assert "Graph error 190" in (bad.error or "")
    assert good.succeeded and good.added == 20
    st = status(both, "TE_BAD")
    assert st["last_fetch_succeeded"] is False and "wrong-stand-in" not in str(st)
    with both() as s:  # sealed at rest, never shown
        blobs = list(s.scalars(select(ExchangeRow.credentials)))
        assert all(b and APP_SECRET.encode() not in b for b in blobs)
        assert APP_SECRET not in str(store.exchange_json(s, store.get_exchange(s, "TE")))


# -- staleness ---------------------------------------------------------------------------------


def test_a_stale_checkpoint_refetches_and_tombstones_what_is_gone(
    lite: sessionmaker[Session], replay: Replay
) -> None:
    replay.add(G1, *(pdq_update(i, NOW - DAY + i) for i in range(5)))
    add(lite, replay)
    assert run_fetch(lite, "TE", FetchOptions(clock=lambda: NOW)).added == 5
    typ = exchange_type("fb_threatexchange")
    cp = Checkpoint.from_json(checkpoint(lite))
    assert cp is not None
    assert not typ.is_stale(cp, NOW + 84 * DAY) and typ.is_stale(cp, NOW + 86 * DAY)
    assert STALE_SECONDS == 85 * DAY
    # ThreatExchange forgot update 2 (its deletion expired): only a pass from scratch shows it
    with replay.lock:
        replay.groups[G1] = [u for u in replay.groups[G1] if u.id != "2"]
    seen = len(replay.update_requests())
    out = run_fetch(lite, "TE", FetchOptions(clock=lambda: NOW + 86 * DAY))
    assert out.succeeded and out.tombstoned == 1
    assert "start_time=0&" in replay.update_requests()[seen]
    assert [k for k, r in bank(lite).items() if not r.enabled] == [f"{G1}:2"]
    # mid-window is never stale: the window began in time
    mid = Checkpoint({"groups": {G1: {"stop": NOW, "next": "/v21.0/x", "done": 1}}}, 1)
    assert not typ.is_stale(mid, NOW + 200 * DAY)


def test_a_clock_that_jumps_back_does_not_move_the_checkpoint(
    lite: sessionmaker[Session], replay: Replay
) -> None:
    replay.add(G1, *spread(10))
    add(lite, replay)
    assert run_fetch(lite, "TE", FetchOptions(clock=lambda: NOW)).added == 10
    seen = len(replay.update_requests())
    out = run_fetch(lite, "TE", FetchOptions(clock=lambda: NOW - 5 * DAY))
    assert out.succeeded and out.up_to_date and len(replay.update_requests()) == seen
    assert checkpoint(lite)["state"]["groups"][G1]["done"] == NOW


# -- hostile answers (SQLite) -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (b'{"data": [', "malformed JSON"),
        (b"\xff\xfe not json", "malformed JSON"),
        (b"[1, 2]", "expected a JSON object, got list"),
        (b"[" * 200_000 + b"]" * 200_000, "malformed JSON"),  # nesting past the recursion limit
        (b'{"data": {"id": "1"}}', "'data' is not a list"),
        (b'{"data": [], "paging": "x"}', "'paging' is not an object"),
        (b'{"data": [], "paging": {"next": 7}}', "'paging.next' is not a string"),
        (graph_error("Unsupported get request", 100), "Graph error 100"),
        (graph_error("Error validating access token", 190), "refused the access token"),
    ],
)
def test_malformed_pages_fail_the_fetch_clearly(
    lite: sessionmaker[Session], replay: Replay, body: bytes, said: str
) -> None:
    replay.body = body
    add(lite, replay)
    out = run_fetch(lite, "TE")
    assert not out.succeeded and said in (out.error or ""), out.error
    st = status(lite)
    assert st["last_fetch_succeeded"] is False and said in st["last_error"]
    assert bank(lite) == {}


def test_wrong_types_invalid_hashes_and_unknown_types_are_counted(
    lite: sessionmaker[Session], replay: Replay
) -> None:
    t = NOW - DAY
    replay.add(
        G1,
        pdq_update(1, t),
        Update("2", "zz12-not-hex", "PDQ", t),
        Update("3", "https://example.invalid/x", "URI", t),
        Update("4", "bluebird", "RAW_TEXT", t),
        Update("5", "", "PDQ", t, raw={"id": "5", "indicator": 12, "type": "PDQ"}),
        Update(
            "6",
            "",
            "PDQ",
            t,
            raw={"id": "6", "indicator": "a", "type": "PDQ", "should_delete": "yes"},
        ),
        Update("7", "", "PDQ", t, raw="not an object"),
        Update("8", "", "PDQ", t, raw={"id": {"x": 1}, "type": "PDQ"}),
        Update(
            "9", "", "PDQ", t, raw={"id": "9", "indicator": "a", "type": "PDQ", "descriptors": "d"}
        ),
        pdq_update(10, t),
    )
    add(lite, replay)
    out = run_fetch(lite, "TE", FetchOptions(clock=lambda: NOW))
    assert out.succeeded and out.added == 2, out.error
    assert out.counts == {"invalid": 1, "unknown_signal_type": 2, "malformed": 5}
    where = {p["where"]: p["kind"] for p in status(lite)["problems"]}
    assert where[f"record {G1}:2"] == "invalid"
    assert where[f"update {G1}:3"] == where[f"update {G1}:4"] == "unknown_signal_type"
    assert where[f"update {G1}:5"] == where[f"update {G1}:6"] == "malformed"
    assert where[f"update {G1}:9"] == "malformed"
    assert {f"privacy group {G1} update #7", f"privacy group {G1} update #8"} <= set(where)


def test_a_paging_link_to_another_host_is_refused(
    lite: sessionmaker[Session], replay: Replay
) -> None:
    replay.add(G1, *spread(150))
    replay.next_host = "http://127.0.0.2:9"
    add(lite, replay)
    out = run_fetch(lite, "TE", FetchOptions(clock=lambda: NOW))
    assert not out.succeeded and "paging link to another host" in (out.error or "")
    assert "'127.0.0.2:9'" in (out.error or "") and APP_SECRET not in (out.error or "")
    assert len(replay.update_requests()) == 1
    # a link elsewhere on the right host is refused too
    replay.next_host = f"{replay.base_url}/v21.0/me/../{G2}"
    out = run_fetch(lite, "TE", FetchOptions(clock=lambda: NOW))
    assert not out.succeeded and "paging link outside" in (out.error or "")


def test_a_stored_link_is_checked_again_on_resume(
    lite: sessionmaker[Session], replay: Replay
) -> None:
    replay.add(G1, *spread(250))
    add(lite, replay)
    assert run_fetch(lite, "TE", FetchOptions(budget_seconds=0.0, clock=lambda: NOW)).more
    with lite() as s, s.begin():  # a checkpoint whose link now names another host
        st = s.scalar(select(ExchangeFetchStatusRow))
        assert st is not None
        doc = json.loads(json.dumps(st.checkpoint))  # a copy: a changed value is written
        group = doc["state"]["groups"][G1]
        group["next"] = "http://127.0.0.2:9" + group["next"]
        st.checkpoint = doc
    seen = len(replay.update_requests())
    out = run_fetch(lite, "TE", FetchOptions(clock=lambda: NOW))
    assert not out.succeeded and "paging link to another host" in (out.error or "")
    assert len(replay.update_requests()) == seen


def test_a_repeating_page_stops_with_an_error(lite: sessionmaker[Session], replay: Replay) -> None:
    replay.add(G1, *spread(500))
    replay.repeat_page = True
    add(lite, replay)
    out = run_fetch(lite, "TE", FetchOptions(clock=lambda: NOW))
    assert not out.succeeded and "paging repeats" in (out.error or "")
    assert len(replay.update_requests()) == 2
    # the next run stops the same way (nothing was committed: the first page again), no loop
    again = run_fetch(lite, "TE", FetchOptions(clock=lambda: NOW))
    assert not again.succeeded and len(replay.update_requests()) == 4


def test_429_and_5xx_back_off(lite: sessionmaker[Session], replay: Replay) -> None:
    replay.add(G1, *spread(20))
    replay.fail = [(429, {"Retry-After": "120"}, b""), (503, {}, b"")]
    add(lite, replay)
    out = run_fetch(lite, "TE")
    assert not out.succeeded and out.retry_after == 120 and "HTTP 429" in (out.error or "")
    assert next_delay(3600, out, 1) == 120
    out = run_fetch(lite, "TE")
    assert "HTTP 503" in (out.error or "") and next_delay(3600, out, 2) == 60
    out = run_fetch(lite, "TE")
    assert out.succeeded and out.added == 20 and status(lite)["consecutive_failures"] == 0


def test_a_403_graph_error_names_its_code(lite: sessionmaker[Session], replay: Replay) -> None:
    replay.fail = [(403, {}, graph_error("Permissions error", 10))]
    add(lite, replay)
    out = run_fetch(lite, "TE")
    assert not out.succeeded and "HTTP 403 (Graph error 10: Permissions error)" in (out.error or "")
    # Graph's code is read from the refused answer itself: one request, not asked again
    assert len(replay.update_requests()) == 1


def test_a_gzip_graph_error_is_read(lite: sessionmaker[Session], replay: Replay) -> None:
    body = gzip.compress(graph_error("Unsupported get request", 100))
    replay.fail = [(400, {"Content-Encoding": "gzip"}, body)]
    add(lite, replay)
    out = run_fetch(lite, "TE")
    assert "HTTP 400 (Graph error 100: Unsupported get request)" in (out.error or "")
    assert len(replay.update_requests()) == 1


def test_a_100mb_page_stops_at_the_size_limit(lite: sessionmaker[Session], replay: Replay) -> None:
    replay.huge_page = True
    add(lite, replay, max_page_bytes=2 * 1024 * 1024)
    out = run_fetch(lite, "TE")
    assert not out.succeeded and "too_large" in (out.error or "")
    assert bank(lite) == {}


def test_config_and_credentials_are_checked(lite: sessionmaker[Session], replay: Replay) -> None:
    typ = exchange_type("fb_threatexchange")
    assert typ.accepts_opinions and not typ.snapshot
    for bad, said in [
        ({}, "'privacy_groups' is required"),
        ({"privacy_groups": "12,abc"}, "numeric ids"),
        ({"privacy_groups": "1", "base_url": "ftp://x"}, "http:// or https://"),
        ({"privacy_groups": "1", "page_size": 5000}, "page_size"),
    ]:
        with pytest.raises(ExchangeError, match=said):
            typ.validate_config(bad)
    checked = typ.validate_config({"privacy_groups": " 1, 2,1", "feedback": "off"})
    assert checked["privacy_groups"] == "1,2" and checked["feedback"] is False
    with pytest.raises(ExchangeError, match="app_id and app_secret, or access_token"):
        typ.validate_credentials({"app_id": "1"})
    with pytest.raises(ExchangeError, match="unexpected characters"):
        typ.validate_credentials({"access_token": "a&b"})
    assert typ.validate_credentials({"access_token": TOKEN})["access_token"] == TOKEN
    assert parse_time("2020-07-10T21:39:17+0000") == 1594417157 == parse_time(1594417157)
    assert parse_time("soon") is None and parse_time(True) is None
    add(lite, replay, creds=None)
    out = run_fetch(lite, "TE")
    assert not out.succeeded and "no ThreatExchange credentials" in (out.error or "")


# -- reactions -------------------------------------------------------------------------------


def _ctx(replay: Replay, token: str = TOKEN) -> FetchContext:
    return FetchContext(
        "TE", {"base_url": replay.base_url, "privacy_groups": G1}, {"access_token": token}, fx.LOCAL
    )


def test_reactions_reach_the_server(replay: Replay) -> None:
    typ = exchange_type("fb_threatexchange")
    meta = {"privacy_group": G1, "id": "7", "descriptor_ids": ["d7", "d8"]}
    yes = Opinion(f"{G1}:7", "pdq", stand_in_pdq(7), "positive", meta=meta)
    typ.submit_opinion(_ctx(replay), yes)
    assert replay.reactions == [("d7", "SAW_THIS_TOO"), ("d8", "SAW_THIS_TOO")]
    posts = [(p, good) for m, p, good in replay.requests if m == "POST"]
    assert posts == [("/v21.0/d7/reactions", True), ("/v21.0/d8/reactions", True)]
    no = Opinion(f"{G1}:7", "pdq", stand_in_pdq(7), "negative", meta={"descriptor_ids": ["d7"]})
    typ.submit_opinion(_ctx(replay), no)
    assert replay.reactions[-1] == ("d7", "DISAGREE_WITH_TAGS")
    with pytest.raises(ExchangeError, match="positive or negative"):
        typ.submit_opinion(_ctx(replay), Opinion(f"{G1}:7", "pdq", "x", "not_sure", meta=meta))
    with pytest.raises(ExchangeError, match="no ThreatExchange descriptor ids"):
        typ.submit_opinion(_ctx(replay), Opinion(f"{G1}:7", "pdq", "x", "positive"))
    with pytest.raises(ExchangeError, match="not a ThreatExchange descriptor id"):
        bad = Opinion("k", "pdq", "x", "positive", meta={"descriptor_ids": ["../me"]})
        typ.submit_opinion(_ctx(replay), bad)
    with pytest.raises(ExchangeFetchError, match="refused the access token") as err:
        typ.submit_opinion(_ctx(replay, "999|wrong-stand-in"), yes)
    assert "wrong-stand-in" not in str(err.value)


def test_a_reaction_429_is_retryable(replay: Replay) -> None:
    replay.fail = [(429, {"Retry-After": "30"}, b"")]
    yes = Opinion(f"{G1}:1", "pdq", "x", "positive", meta={"descriptor_ids": ["d1"]})
    with pytest.raises(ExchangeFetchError) as err:
        exchange_type("fb_threatexchange").submit_opinion(_ctx(replay), yes)
    assert "HTTP 429" in str(err.value) and err.value.retry_after == 30
    exchange_type("fb_threatexchange").submit_opinion(_ctx(replay), yes)
    assert replay.reactions == [("d1", "SAW_THIS_TOO")]
