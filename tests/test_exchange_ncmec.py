"""The ``ncmec`` exchange type against a local NCMEC-shaped server (tests/ncmec_replay.py, a
real HTTP server on 127.0.0.1), through the real fetcher into a bank: windows and paging,
entries not in time order, kills mid-window, expired links, links only valid with their own
from/to (#1744), repeating pages, unknown fingerprint types, invalid hashes, deletions, 429 /
5xx, rejected credentials, a 100 MB page, XML entity attacks, a clock that jumps back, and
feedback reaching the server. The end-to-end fetches run on SQLite and PostgreSQL. Entries
are benign stand-ins (``e<n>``, hashes of counters)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ncmec_replay import Replay, ReplayEntry, Source, render_query_result, stand_in_pdq
from tipline.exchange import fetcher, store
from tipline.exchange.api import (
    ExchangeError,
    ExchangeFetchError,
    FetchContext,
    Opinion,
    exchange_type,
)
from tipline.exchange.fetcher import FetchOptions, next_delay, run_fetch
from tipline.exchange.ncmec import Member, parse_entries, parse_ts, whoami
from tipline.net.fetch import FetchSettings
from tipline.store import migrations
from tipline.store.base import make_engine
from tipline.store.base import session_factory as make_factory
from tipline.store.media import Keyring, new_key
from tipline.store.tables import BankEntryRow, ExchangeFetchStatusRow, ExchangeRow, signal_key

USER, PASSWORD = "tipline-user", "stand-in-password"
CREDS = {"username": USER, "password": PASSWORD}
NOW = int(time.time())
DAY = 86400
LOCAL = FetchSettings.build(allow_networks=["127.0.0.1/32"])


def stand_in(i: int, ts: int, **kw: Any) -> ReplayEntry:
    prints = kw.pop("fingerprints", None) or {"pdq": stand_in_pdq(i)}
    return ReplayEntry(f"e{i}", ts, fingerprints=prints, **kw)


def spread(n: int, days: float = 3.0) -> list[ReplayEntry]:
    """n entries evenly over the last ``days`` days (at least a minute old)."""
    first = NOW - int(days * DAY)
    step = max(1, int(days * DAY - 120) // max(1, n))
    return [stand_in(i, first + i * step) for i in range(n)]


@pytest.fixture
def replay() -> Iterator[Replay]:
    r = Replay(Source(), page_size=100).start()
    yield r
    r.stop()


def _configure() -> None:
    ring = Keyring()
    ring.add(new_key())
    store.configure(LOCAL, lambda: ring)


@pytest.fixture
def both(session_factory: sessionmaker[Session]) -> Iterator[sessionmaker[Session]]:
    """SQLite and PostgreSQL."""
    _configure()
    yield session_factory
    store.configure(None, None)


@pytest.fixture
def lite(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    url = f"sqlite:///{tmp_path / 'x.sqlite3'}"
    migrations.upgrade(url)
    engine = make_engine(url)
    _configure()
    yield make_factory(engine)
    store.configure(None, None)
    engine.dispose()


def add(
    db: sessionmaker[Session], replay: Replay, name: str = "NCMEC", creds: Any = CREDS, **cfg: Any
) -> None:
    config = {"base_url": replay.base_url, "max_window_entries": 1000, **cfg}
    with db() as s, s.begin():
        store.create_exchange(s, name, "ncmec", config, credentials=creds)


def status(db: sessionmaker[Session], name: str = "NCMEC") -> dict[str, Any]:
    with db() as s:
        return store.status_json(s, store.get_exchange(s, name))


def checkpoint(db: sessionmaker[Session], name: str = "NCMEC") -> dict[str, Any]:
    with db() as s:
        st = s.get(ExchangeFetchStatusRow, store.get_exchange(s, name).id)
        assert st is not None
        return dict(st.checkpoint or {})


def bank(db: sessionmaker[Session]) -> list[BankEntryRow]:
    with db() as s:
        return list(s.scalars(select(BankEntryRow).order_by(BankEntryRow.id)))


def fetch_until_done(db: sessionmaker[Session], opts: FetchOptions, limit: int = 500) -> int:
    """Run fetches until up to date; returns how many runs it took. Each run's checkpoint
    time is checked never to go back."""
    last_ts = -1
    for runs in range(1, limit + 1):
        out = run_fetch(db, "NCMEC", opts)
        assert out.succeeded, out.error
        ts = status(db)["checkpoint_ts"]
        assert ts is not None and ts >= last_ts
        last_ts = ts
        if out.up_to_date:
            return runs
    raise AssertionError("never up to date")


# -- parsing ---------------------------------------------------------------------------------

DOC_SHAPED = b"""<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<queryResult xmlns="https://hashsharing.ncmec.org/hashsharing/v2">
  <images count="2" maxTimestamp="2017-10-24T15:10:00Z">
    <image>
      <member id="42">Example Member</member>
      <timestamp>2017-10-24T15:00:00Z</timestamp>
      <id>image1</id>
      <classification>A1</classification>
      <fingerprints>
        <md5>a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1</md5>
        <sha1>a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1</sha1>
        <pdna>a1a1...</pdna>
      </fingerprints>
      <feedback lastUpdateTimestamp="2023-06-01T12:48:14Z">
        <affirmativeFeedback type="Md5"><members><member id="42">Example Member</member>
        </members></affirmativeFeedback>
      </feedback>
    </image>
    <deletedImage><member id="43">Example Member2</member><id>image4</id>
      <timestamp>2017-10-24T15:10:00Z</timestamp></deletedImage>
  </images>
  <videos count="1" maxTimestamp="2017-10-24T15:20:00Z">
    <video><member id="42">Example Member</member><timestamp>2017-10-24T15:20:00Z</timestamp>
      <id>video1</id><fingerprints><md5>b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1</md5>
      <tmk-pdqf rel="self" href="/v2/entries/1/fingerprints/TMK_PDQF"/></fingerprints></video>
    <video><timestamp>2017-10-24T15:20:00Z</timestamp><id>no-member</id></video>
  </videos>
  <paging><next>/v2/entries?from=2017-10-20T00%3A00%3A00.000Z&amp;to=2017-10-30T00%3A00%3A00.000Z&amp;start=2001&amp;size=1000&amp;max=3000</next></paging>
</queryResult>"""


def test_parses_the_documented_shape() -> None:
    page = parse_entries(DOC_SHAPED)
    assert [(e.key, e.entry_type, e.deleted) for e in page.entries] == [
        ("42-image1", "image", False),
        ("43-image4", "image", True),
        ("42-video1", "video", False),
    ]
    first = page.entries[0]
    assert first.classification == "A1" and first.member_name == "Example Member"
    assert set(first.fingerprints) == {"md5", "sha1", "pdna"}
    assert page.entries[2].fingerprints == {"md5": "b1" * 16}  # the linked TMK is not a value
    assert page.max_timestamp == parse_ts("2017-10-24T15:20:00Z")
    assert page.next.startswith("/v2/entries?from=2017-10-20T00%3A00%3A00.000Z&to=")
    assert page.estimated_entries() == 3000 - 2001 + 3
    assert [(p.kind, p.where) for p in page.problems] == [("malformed", "page videos #2")]


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (
            b'<?xml version="1.0"?><!DOCTYPE q [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;">]>'
            b"<queryResult>&b;</queryResult>",
            "refused XML",
        ),
        (
            b'<?xml version="1.0"?><!DOCTYPE q [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            b"<queryResult>&x;</queryResult>",
            "refused XML",
        ),
        (  # an encoding that hides the DTD from a byte scan still meets defusedxml
            '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE q [<!ENTITY a "aaaa">]>'
            "<queryResult>&a;</queryResult>".encode("utf-16"),
            "refused XML",
        ),
        (b"<queryResult>&undeclared;</queryResult>", "malformed XML"),
        (b"<queryResult><images><image></queryResult>", "malformed XML"),
        (b"<status/>", "expected <queryResult>"),
    ],
)
def test_hostile_and_malformed_pages_fail_the_fetch_clearly(
    lite: sessionmaker[Session], replay: Replay, body: bytes, said: str
) -> None:
    replay.body = body
    add(lite, replay)
    out = run_fetch(lite, "NCMEC")
    assert not out.succeeded and said in (out.error or "")
    st = status(lite)
    assert st["last_fetch_succeeded"] is False and said in st["last_error"]
    assert bank(lite) == []


# -- end to end, SQLite and PostgreSQL -------------------------------------------------------


def test_windows_pages_metadata_and_time_boxed_resumes(
    both: sessionmaker[Session], replay: Replay
) -> None:
    entries = spread(2500)
    entries[5].fingerprints["md5"] = "ab" * 16  # two fingerprints: two records
    entries[6].entry_type = "video"
    replay.source.add(*entries)
    add(both, replay)
    # a time box of 0 s: every run commits one page and stops; entries come newest first
    runs = fetch_until_done(both, FetchOptions(budget_seconds=0.0))
    assert runs > 25  # 2,500 entries in pages of 100, some probes
    rows = bank(both)
    assert len(rows) == 2501 and len({r.signal for r in rows}) == 2501
    # the fetcher's own INSERT (SQLite) / COPY (PostgreSQL) fills the lookup key
    assert all(r.signal_key == signal_key(r.signal) for r in rows)
    by_key = {r.meta["exchange"]["key"]: r for r in rows}
    five = by_key["42-e5:md5"]
    assert five.signal_type == "md5" and five.label == "ncmec_category:A1"
    partner = five.meta["exchange"]["partner"]
    assert partner == {
        "member_id": 42,
        "member": "Example Member",
        "entry_id": "e5",
        "entry_type": "image",
        "classification": "A1",
        "timestamp": partner["timestamp"],
        "fingerprint": "md5",
    }
    assert parse_ts(partner["timestamp"]) == entries[5].ts
    assert by_key["42-e6:pdq"].meta["exchange"]["partner"]["entry_type"] == "video"
    assert five.source == "exchange:NCMEC"
    st = status(both)
    assert st["up_to_date"] and st["fetched_items"] == 2501
    assert st["checkpoint_ts"] >= NOW - 10
    # every paging link was used with the from/to it came with (#1744)
    paged = [p for p in replay.entry_requests() if "start=" in p]
    assert paged and all(p.removeprefix("/hashsharing") in replay.links for p in paged)
    # up to date: one more fetch asks only for the few seconds since
    before = len(replay.entry_requests())
    assert run_fetch(both, "NCMEC").added == 0
    assert len(replay.entry_requests()) - before <= 1


def test_mid_window_checkpoint_holds_the_link_and_a_replay_is_idempotent(
    both: sessionmaker[Session], replay: Replay
) -> None:
    old = [stand_in(10_000 + i, NOW - 3 * DAY + i) for i in range(50)]
    replay.source.add(*old)
    add(both, replay, max_window_entries=5000)
    assert run_fetch(both, "NCMEC").added == 50
    done = checkpoint(both)["state"]["from"]
    entries = [stand_in(i, done + 10 + i * 20) for i in range(900)]
    replay.source.add(*entries)
    # the next window holds 900 entries: 9 pages; a time box stops after the first
    out = run_fetch(both, "NCMEC", FetchOptions(budget_seconds=0.0, clock=lambda: NOW + DAY))
    assert out.more and out.added == 100
    cp = checkpoint(both)
    window_from = cp["state"]["from"]
    assert window_from == done
    assert cp["state"]["next"].startswith("/v2/entries?") and cp["state"]["to"] > window_from
    assert cp["progress_ts"] == window_from  # not the newest entry's time: not in order
    newest_first = max(e.ts for e in entries)
    assert status(both)["checkpoint_ts"] < newest_first
    # the link expires: the window starts again from its own start, not from scratch
    replay.expire_links()
    seen = len(replay.entry_requests())
    run_fetch(both, "NCMEC", FetchOptions(budget_seconds=0.0, clock=lambda: NOW + DAY))
    after = replay.entry_requests()[seen:]
    assert "start=" in after[0]  # the stored link was tried (410)...
    assert "start=" not in after[1] and after[1].count("from=") == 1  # ...then the window
    from_sent = after[1].split("from=")[1].split("&")[0]
    assert parse_ts(from_sent.replace("%3A", ":")) == window_from > 0
    fetch_until_done(both, FetchOptions(budget_seconds=0.0, clock=lambda: NOW + DAY))
    rows = bank(both)
    assert len(rows) == 950 and len({r.signal for r in rows}) == 950  # replayed: no doubles


def test_a_link_older_than_12h_is_not_used(lite: sessionmaker[Session], replay: Replay) -> None:
    replay.source.add(*spread(300, days=0.2))
    add(lite, replay, max_window_entries=5000)
    run_fetch(lite, "NCMEC", FetchOptions(budget_seconds=0.0))
    assert checkpoint(lite)["state"].get("next")
    seen = len(replay.entry_requests())
    later = time.time() + 13 * 3600
    out = run_fetch(lite, "NCMEC", FetchOptions(clock=lambda: later))
    assert out.succeeded and out.up_to_date
    assert "start=" not in replay.entry_requests()[seen]  # the window again, not the old link
    assert len(bank(lite)) == 300


def test_a_stored_link_for_another_window_is_dropped(
    lite: sessionmaker[Session], replay: Replay
) -> None:
    replay.source.add(*spread(300, days=0.2))
    add(lite, replay, max_window_entries=5000)
    run_fetch(lite, "NCMEC", FetchOptions(budget_seconds=0.0))
    with lite() as s, s.begin():  # a checkpoint whose window end no longer fits its link
        st = s.scalar(select(ExchangeFetchStatusRow))
        assert st is not None
        doc = dict(st.checkpoint)
        doc["state"] = {**doc["state"], "to": doc["state"]["to"] - 60}
        st.checkpoint = doc
    seen = len(replay.entry_requests())
    assert run_fetch(lite, "NCMEC").succeeded
    assert "start=" not in replay.entry_requests()[seen]
    paged = [p for p in replay.entry_requests() if "start=" in p]
    assert all(p.removeprefix("/hashsharing") in replay.links for p in paged)
    assert len(bank(lite)) == 300


def test_deletions_tombstone_and_a_return_reenables(
    both: sessionmaker[Session], replay: Replay
) -> None:
    t = NOW - DAY
    replay.source.add(*(stand_in(i, t + i) for i in range(10)))
    add(both, replay)
    assert run_fetch(both, "NCMEC").added == 10
    # later: e3 deleted, e4's entry changes classification
    later = int(time.time()) + 30  # after the checkpoint (our clock moved on below)
    replay.source.add(
        ReplayEntry("e3", later, deleted=True),
        stand_in(4, later, classification="B2"),
    )
    out = run_fetch(both, "NCMEC", FetchOptions(clock=lambda: later + 60))
    assert (out.tombstoned, out.changed) == (1, 1)
    rows = {r.meta["exchange"]["key"]: r for r in bank(both)}
    assert not rows["42-e3:pdq"].enabled and rows["42-e4:pdq"].label == "ncmec_category:B2"
    assert all(r.signal_key == signal_key(r.signal) for r in rows.values())
    assert status(both)["fetched_items"] == 9
    # the member shares it again: the same bank entry, enabled
    replay.source.add(stand_in(3, later + 100))
    out = run_fetch(both, "NCMEC", FetchOptions(clock=lambda: later + 200))
    assert out.added == 1 and len(bank(both)) == 10 and all(r.enabled for r in bank(both))


def test_rejected_credentials_mark_that_exchange_failing_others_go_on(
    both: sessionmaker[Session], replay: Replay
) -> None:
    replay.source.add(*spread(50))
    add(both, replay, "NCMEC_BAD", creds={"username": USER, "password": "wrong-stand-in"})
    add(both, replay, "NCMEC")
    bad = run_fetch(both, "NCMEC_BAD")
    good = run_fetch(both, "NCMEC")
    assert not bad.succeeded and "refused the credentials (HTTP 401)" in (bad.error or "")
    assert good.succeeded and good.added == 50
    st = status(both, "NCMEC_BAD")
    assert st["last_fetch_succeeded"] is False and st["consecutive_failures"] == 1
    assert "wrong-stand-in" not in str(st) and "refused the credentials" in st["last_error"]
    assert status(both)["last_fetch_succeeded"] is True
    with both() as s:  # sealed at rest, never shown
        blobs = list(s.scalars(select(ExchangeRow.credentials)))
        assert all(b and PASSWORD.encode() not in b for b in blobs)
        shown = str(store.exchange_json(s, store.get_exchange(s, "NCMEC")))
        assert PASSWORD not in shown and "'has_credentials': True" in shown


# -- faults (SQLite) -------------------------------------------------------------------------


def test_a_repeating_page_stops_with_an_error(lite: sessionmaker[Session], replay: Replay) -> None:
    replay.source.add(*spread(500, days=0.2))
    replay.repeat_page = True
    add(lite, replay, max_window_entries=5000)
    t = time.monotonic()
    out = run_fetch(lite, "NCMEC")
    assert time.monotonic() - t < 30
    assert not out.succeeded and "paging repeats" in (out.error or "")
    # the second page names itself as next: seen before it is asked for again
    assert len(replay.entry_requests()) == 2
    assert "paging repeats" in status(lite)["last_error"]
    again = run_fetch(lite, "NCMEC")  # the next run stops the same way, it does not loop
    assert not again.succeeded and len(replay.entry_requests()) == 4
    assert status(lite)["consecutive_failures"] == 2


def test_unknown_fingerprint_types_and_invalid_hashes_are_counted(
    lite: sessionmaker[Session], replay: Replay
) -> None:
    t = NOW - DAY
    replay.source.add(
        stand_in(1, t),
        stand_in(2, t, fingerprints={"pdq": "zz12-not-hex"}),
        stand_in(3, t, fingerprints={"quantumhash": "0123", "pdq": stand_in_pdq(3)}),
        stand_in(4, t, fingerprints={"pdna": "ab" * 20, "netclean": "cd" * 10}),  # ignored
        stand_in(5, t, fingerprints={"videntifier": "href:/v2/entries/1/fingerprints/V"}),
    )
    add(lite, replay)
    out = run_fetch(lite, "NCMEC")
    assert out.succeeded and out.added == 2
    assert out.counts == {"invalid": 1, "unknown_signal_type": 1}
    where = {p["where"]: p["kind"] for p in status(lite)["problems"]}
    assert where == {"record 42-e2:pdq": "invalid", "entry 42-e3": "unknown_signal_type"}


def test_a_batch_of_several_chunks_is_one_transaction_and_a_failure_keeps_its_chunks(
    both: sessionmaker[Session], replay: Replay, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches of 300 records written 100 at a time (one page): a partner failing mid-batch
    commits the chunks the open transaction holds with the checkpoint after them; the next
    run goes on from there: nothing lost, nothing doubled."""
    monkeypatch.setattr(fetcher, "CHUNK_RECORDS", 100)
    replay.source.add(*spread(1000))
    add(both, replay)
    served = [0]
    answer = replay.entries_page

    def failing_after_five(query: dict[str, list[str]]) -> tuple[int, bytes]:
        served[0] += 1
        if served[0] == 5:
            replay.fail.append((503, {}))  # the request after this page fails
        return answer(query)

    replay.entries_page = failing_after_five  # type: ignore[method-assign]
    opts = FetchOptions(commit_every=300, overlap=True)
    out = run_fetch(both, "NCMEC", opts)
    assert not out.succeeded and "HTTP 503" in (out.error or "")
    # pages 1-3: one batch of three chunks; pages 4-5: the open batch, committed at the error
    assert (out.batches, out.added) == (2, 500) and len(bank(both)) == 500
    assert status(both)["fetched_items"] == 500
    out = run_fetch(both, "NCMEC", opts)
    assert out.succeeded and out.up_to_date and out.added == 500
    rows = bank(both)
    assert len(rows) == 1000 and len({r.signal for r in rows}) == 1000
    assert status(both)["fetched_items"] == 1000


def test_429_and_5xx_back_off(lite: sessionmaker[Session], replay: Replay) -> None:
    replay.source.add(*spread(20))
    replay.fail = [(429, {"Retry-After": "120"}), (503, {})]
    add(lite, replay)
    out = run_fetch(lite, "NCMEC")
    assert not out.succeeded and out.retry_after == 120 and "HTTP 429" in (out.error or "")
    assert next_delay(3600, out, 1) == 120
    out = run_fetch(lite, "NCMEC")
    assert "HTTP 503" in (out.error or "") and next_delay(3600, out, 2) == 60
    assert status(lite)["consecutive_failures"] == 2
    out = run_fetch(lite, "NCMEC")
    assert out.succeeded and out.added == 20 and status(lite)["consecutive_failures"] == 0


def test_a_100mb_page_stops_at_the_size_limit(lite: sessionmaker[Session], replay: Replay) -> None:
    replay.huge_page = True
    add(lite, replay, max_page_bytes=2 * 1024 * 1024)
    out = run_fetch(lite, "NCMEC")
    assert not out.succeeded and "too_large" in (out.error or "")
    assert bank(lite) == []


def test_a_clock_that_jumps_back_does_not_move_the_checkpoint(
    lite: sessionmaker[Session], replay: Replay
) -> None:
    replay.source.add(*spread(30))
    add(lite, replay)
    # the module's NOW, not the wall clock: in a long suite the wall clock runs minutes ahead
    assert run_fetch(lite, "NCMEC", FetchOptions(clock=lambda: NOW)).added == 30
    done = checkpoint(lite)["state"]["from"]
    seen = len(replay.entry_requests())
    out = run_fetch(lite, "NCMEC", FetchOptions(clock=lambda: NOW - 5 * DAY))
    assert out.succeeded and out.up_to_date and out.added == 0
    assert len(replay.entry_requests()) == seen  # nothing asked: no window before the checkpoint
    assert checkpoint(lite)["state"]["from"] == done
    assert status(lite)["checkpoint_ts"] >= done
    # and once time goes on, new entries arrive
    replay.source.add(stand_in(99, NOW + 30))
    out = run_fetch(lite, "NCMEC", FetchOptions(clock=lambda: NOW + 120))
    assert out.added == 1 and checkpoint(lite)["state"]["from"] > done


def test_only_esp_ids_and_fingerprint_choice(lite: sessionmaker[Session], replay: Replay) -> None:
    t = NOW - DAY
    both_prints = {"md5": "ab" * 16, "pdq": stand_in_pdq(1)}
    replay.source.add(
        stand_in(1, t, fingerprints=dict(both_prints)),
        stand_in(2, t, member_id=43, fingerprints={"pdq": stand_in_pdq(2)}),
    )
    add(lite, replay, only_esp_ids="42", fingerprints="pdq")
    out = run_fetch(lite, "NCMEC")
    assert out.added == 1 and bank(lite)[0].meta["exchange"]["key"] == "42-e1:pdq"


def test_config_and_credentials_are_checked(lite: sessionmaker[Session], replay: Replay) -> None:
    typ = exchange_type("ncmec")
    assert typ.accepts_opinions and not typ.snapshot
    for bad, said in [
        ({"environment": "moon"}, "must be one of"),
        ({"base_url": "ftp://x"}, "http:// or https://"),
        ({"only_esp_ids": "42,abc"}, "must be numbers"),
        ({"fingerprints": "netclean"}, "cannot be taken"),
    ]:
        with pytest.raises(ExchangeError, match=said):
            typ.validate_config(bad)
    with pytest.raises(ExchangeError, match="no ':'"):
        typ.validate_credentials({"username": "a:b", "password": "x"})
    assert typ.validate_config({})["environment"] == "industry"
    schema = typ.schema()
    assert [f["name"] for f in schema["credentials_schema"]["fields"]] == ["username", "password"]
    add(lite, replay, creds=None)
    out = run_fetch(lite, "NCMEC")
    assert not out.succeeded and "no NCMEC credentials" in (out.error or "")


# -- feedback --------------------------------------------------------------------------------


def _ctx(replay: Replay, password: str = PASSWORD) -> FetchContext:
    return FetchContext(
        "NCMEC",
        {"base_url": replay.base_url},
        {"username": USER, "password": password},
        LOCAL,
    )


def test_feedback_reaches_the_partner_and_is_idempotent(replay: Replay) -> None:
    typ = exchange_type("ncmec")
    ctx = _ctx(replay)
    assert whoami(ctx) == Member(1, "Stand-in Hotline")
    meta = {"member_id": 42, "entry_id": "e7", "fingerprint": "pdq"}
    yes = Opinion("42-e7:pdq", "pdq", stand_in_pdq(7), "positive", meta=meta)
    typ.submit_opinion(ctx, yes)
    typ.submit_opinion(ctx, yes)  # delivered twice after a crash: the same feedback
    assert replay.feedback == {(42, "e7", "PDQ"): ("affirmative", ())}
    assert len(replay.feedback_log) == 2
    path, body = replay.feedback_log[0]
    assert path == "/v2/entries/42/e7/PDQ/feedback" and "<affirmative/>" in body
    assert "https://hashsharing.ncmec.org/hashsharing/v2" in body
    # negative with a reason named as NCMEC lists it: looked up, sent as its GUID
    no = Opinion("42-e7:pdq", "pdq", stand_in_pdq(7), "negative", ("Not a match",), meta)
    typ.submit_opinion(ctx, no)
    assert replay.feedback[(42, "e7", "PDQ")] == (
        "negative",
        ("01234567-abcd-0123-4567-012345678902",),
    )
    # MD5 has one reason: none given, that one; the key alone names the entry
    typ.submit_opinion(ctx, Opinion("43-e9:md5", "md5", "ab" * 16, "negative"))
    assert replay.feedback[(43, "e9", "MD5")] == (
        "negative",
        ("01234567-abcd-0123-4567-012345678900",),
    )
    with pytest.raises(ExchangeError, match="needs a reason"):
        typ.submit_opinion(ctx, Opinion("42-e7:pdq", "pdq", stand_in_pdq(7), "negative"))
    with pytest.raises(ExchangeError, match="no PDQ feedback reason"):
        typ.submit_opinion(ctx, Opinion("42-e7:pdq", "pdq", "x", "negative", ("nope",)))
    with pytest.raises(ExchangeError, match="affirmative or negative"):
        typ.submit_opinion(ctx, Opinion("42-e7:pdq", "pdq", "x", "not_sure"))
    with pytest.raises(ExchangeError, match="not an NCMEC record key"):
        typ.submit_opinion(ctx, Opinion("garbage", "pdq", "x", "positive"))
    with pytest.raises(ExchangeFetchError, match="refused the credentials"):
        typ.submit_opinion(_ctx(replay, "wrong"), yes)


def test_feedback_429_is_retryable(replay: Replay) -> None:
    """A partner that is busy: the feedback job is retried (ExchangeFetchError, Retry-After)."""
    replay.fail = [(429, {"Retry-After": "30"})]
    yes = Opinion("42-e1:pdq", "pdq", "x", "positive")
    with pytest.raises(ExchangeFetchError) as err:
        exchange_type("ncmec").submit_opinion(_ctx(replay), yes)
    assert "HTTP 429" in str(err.value) and err.value.retry_after == 30
    assert replay.feedback == {}
    exchange_type("ncmec").submit_opinion(_ctx(replay), yes)
    assert replay.feedback == {(42, "e1", "PDQ"): ("affirmative", ())}


def test_render_round_trip() -> None:
    """The replay's pages are what the parser reads (one shape, two sides)."""
    page = parse_entries(render_query_result([stand_in(1, NOW - 60)], "/v2/entries?from=a"))
    assert [e.key for e in page.entries] == ["42-e1"] and page.next == "/v2/entries?from=a"
