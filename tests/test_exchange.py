"""The exchange fetcher (docs/exchanges.md): local_file and http_list into banks, batches
committed with their checkpoint, resume, tombstones, staleness, credentials sealed, and a
contract replay from a real HTTP server on 127.0.0.1 (repeats, invalid hashes, unknown types,
429/5xx, a 100 MB body, a clock that jumps back). Hashes are random stand-ins labelled
``DEMO-benign-stand-in``: no real list."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from tipline.exchange import store
from tipline.exchange.api import Checkpoint, exchange_type, register, unregister
from tipline.exchange.fetcher import (
    JOB_KIND,
    FetchOptions,
    next_delay,
    run_fetch,
    start_chain,
)
from tipline.exchange.types import LocalFileExchange
from tipline.net.fetch import FetchSettings
from tipline.store import migrations
from tipline.store.base import make_engine, session_factory
from tipline.store.jobs import JobQueue
from tipline.store.media import Keyring, new_key
from tipline.store.tables import BankEntryRow, ExchangeFetchStatusRow, ExchangeRow

LABEL = "DEMO-benign-stand-in"


def pdq(i: int) -> str:
    return hashlib.sha256(f"stand-in {i}".encode()).hexdigest()


def te_lines(ids: range | list[int]) -> str:
    return "".join(f"pdq {pdq(i)}\n" for i in ids)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    url = f"sqlite:///{tmp_path / 'x.sqlite3'}"
    migrations.upgrade(url)
    engine = make_engine(url)
    ring = Keyring()
    ring.add(new_key())
    store.configure(FetchSettings.build(allow_networks=["127.0.0.1/32"]), lambda: ring)
    yield session_factory(engine)
    store.configure(None, None)
    engine.dispose()


def add(db: sessionmaker[Session], name: str, api: str, **config: Any) -> None:
    creds = config.pop("credentials", None)
    with db() as s, s.begin():
        store.create_exchange(s, name, api, config, credentials=creds)


def entries(db: sessionmaker[Session], bank: str = "") -> list[BankEntryRow]:
    with db() as s:
        return list(s.scalars(select(BankEntryRow).order_by(BankEntryRow.id)))


def status(db: sessionmaker[Session], name: str) -> dict[str, Any]:
    with db() as s:
        return store.status_json(s, store.get_exchange(s, name))


def test_local_file_lands_resumes_and_tombstones(db: sessionmaker[Session], tmp_path: Path) -> None:
    lst = tmp_path / "list.te"
    body = te_lines(range(2500))
    body += f"pdq {pdq(3)}\n"  # a repeated line: one record
    body += "pdq not-a-hash\n"  # invalid: line 2502
    body += "tmk 0123abcd\n"  # an unknown signal type: line 2503
    lst.write_text(body)
    add(db, "LOCAL_LIST", "local_file", path=str(lst))
    out = run_fetch(db, "LOCAL_LIST", FetchOptions(commit_every=1000))
    assert out.succeeded and out.up_to_date and out.added == 2500 and out.batches == 3
    assert out.counts == {"invalid": 1, "unknown_signal_type": 1}
    rows = entries(db)
    assert len(rows) == 2500 and all(r.enabled for r in rows)
    assert rows[0].meta == {
        "exchange": {"name": "LOCAL_LIST", "api": "local_file", "key": f"pdq:{pdq(0)}"}
    }
    st = status(db, "LOCAL_LIST")
    assert st["fetched_items"] == 2500 and st["up_to_date"] and st["last_fetch_succeeded"]
    assert st["counts"]["invalid"] == 1 and st["counts"]["unknown_signal_type"] == 1
    wheres = {p["where"]: p["kind"] for p in st["problems"]}
    assert wheres == {"line 2502": "invalid", "line 2503": "unknown_signal_type"}
    # unchanged: nothing to do
    again = run_fetch(db, "LOCAL_LIST")
    assert again.up_to_date and (again.added, again.tombstoned) == (0, 0)
    # the list changes: 10 withdrawn, 5 new
    lst.write_text(te_lines(range(10, 2505)))
    out = run_fetch(db, "LOCAL_LIST")
    assert (out.added, out.tombstoned) == (5, 10)
    rows = entries(db)
    assert len(rows) == 2505 and sum(not r.enabled for r in rows) == 10
    assert {r.signal for r in rows if not r.enabled} == {pdq(i) for i in range(10)}
    assert status(db, "LOCAL_LIST")["fetched_items"] == 2495
    # a withdrawn hash that comes back is the same entry, enabled again
    lst.write_text(te_lines(range(0, 2505)))
    out = run_fetch(db, "LOCAL_LIST")
    assert (out.added, out.changed, out.tombstoned) == (10, 10, 0)
    assert len(entries(db)) == 2505 and all(r.enabled for r in entries(db))


def test_time_box_resumes_without_loss_or_doubles(
    db: sessionmaker[Session], tmp_path: Path
) -> None:
    lst = tmp_path / "list.txt"
    lst.write_text(te_lines(range(4200)))
    add(db, "BOXED", "local_file", path=str(lst))
    runs = 0
    while True:
        runs += 1
        out = run_fetch(db, "BOXED", FetchOptions(budget_seconds=0.0))
        assert out.succeeded
        if out.up_to_date:
            break
        assert out.more and out.added == 1000
    assert runs == 5
    rows = entries(db)
    assert len(rows) == 4200 and len({r.signal for r in rows}) == 4200


def test_stale_checkpoint_refetches_from_scratch(db: sessionmaker[Session], tmp_path: Path) -> None:
    class StaleFile(LocalFileExchange):
        name = "stale_file"

        def is_stale(self, checkpoint: Checkpoint, now: float) -> bool:
            return True

    register(StaleFile)
    try:
        lst = tmp_path / "l.te"
        lst.write_text(te_lines(range(30)))
        add(db, "STALE", "stale_file", path=str(lst))
        assert run_fetch(db, "STALE").added == 30
        with db() as s:
            gen1 = s.get(ExchangeFetchStatusRow, store.get_exchange(s, "STALE").id).generation
        out = run_fetch(db, "STALE")
        assert out.up_to_date and (out.added, out.tombstoned) == (0, 0)
        with db() as s:
            gen2 = s.get(ExchangeFetchStatusRow, store.get_exchange(s, "STALE").id).generation
        assert gen2 == gen1 + 1
        assert len(entries(db)) == 30
    finally:
        unregister("stale_file")


def test_registry_and_config_checks(db: sessionmaker[Session], tmp_path: Path) -> None:
    assert exchange_type("local_file").snapshot
    with db() as s, pytest.raises(Exception, match="unknown exchange type"):
        store.create_exchange(s, "X", "nope", {})
    with db() as s, pytest.raises(Exception, match="must be absolute"):
        store.create_exchange(s, "X", "local_file", {"path": "rel.te"})
    with db() as s, pytest.raises(Exception, match="unknown field"):
        store.create_exchange(s, "X", "local_file", {"path": "/a", "bogus": 1})
    with db() as s, pytest.raises(Exception, match="exchange name"):
        store.create_exchange(s, "lower", "local_file", {"path": "/a"})


# -- a real HTTP server on 127.0.0.1 ---------------------------------------------------------


class Partner:
    """What the replay server answers, per path; ``seen`` keeps the request headers."""

    def __init__(self) -> None:
        self.body = te_lines(range(100)).encode()
        self.etag = '"v1"'
        self.last_modified = "Wed, 02 Dec 2026 10:00:00 GMT"
        self.queue: list[tuple[int, dict[str, str]]] = []
        self.seen: list[dict[str, str]] = []


@pytest.fixture
def partner() -> Iterator[tuple[Partner, str]]:
    p = Partner()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a: Any) -> None:
            pass

        def do_GET(self) -> None:
            p.seen.append({k.lower(): v for k, v in self.headers.items()})
            if self.path.startswith("/big"):
                self.send_response(200)
                chunked = self.path == "/big-chunked"
                if not chunked:
                    self.send_header("Content-Length", str(100 * 1024 * 1024))
                self.end_headers()
                line = (f"pdq {pdq(1)}\n" * 1000).encode()
                try:
                    for _ in range(100 * 1024 * 1024 // len(line)):
                        self.wfile.write(line)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                return
            if p.queue:
                code, headers = p.queue.pop(0)
                self.send_response(code)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if self.headers.get("If-None-Match") == p.etag:
                self.send_response(304)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("ETag", p.etag)
            self.send_header("Last-Modified", p.last_modified)
            self.send_header("Content-Length", str(len(p.body)))
            self.end_headers()
            self.wfile.write(p.body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield p, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_list_contract(db: sessionmaker[Session], partner: tuple[Partner, str]) -> None:
    p, base = partner
    p.body = (te_lines(range(100)) + te_lines(range(50)) + "pdq 12zz\nmd6 abc\n").encode()
    add(
        db,
        "HTTP_LIST",
        "http_list",
        url=f"{base}/list.te",
        credentials={"authorization": "Bearer sekrit-stand-in"},
    )
    with db() as s:
        blob = s.scalar(select(ExchangeRow.credentials))
        assert blob and b"sekrit" not in blob
        shown = str(store.exchange_json(s, store.get_exchange(s, "HTTP_LIST")))
        assert "sekrit" not in shown and "'has_credentials': True" in shown
    out = run_fetch(db, "HTTP_LIST")
    assert out.succeeded and out.added == 100  # the repeated page: no doubles
    assert out.counts == {"invalid": 1, "unknown_signal_type": 1}
    assert p.seen[-1]["authorization"] == "Bearer sekrit-stand-in"
    st = status(db, "HTTP_LIST")
    assert st["checkpoint_ts"] == 1796205600  # Last-Modified
    # unchanged: a conditional request, answered 304
    out = run_fetch(db, "HTTP_LIST")
    assert out.succeeded and out.added == 0 and p.seen[-1]["if-none-match"] == '"v1"'
    # the partner's clock jumps back: a new list with an older Last-Modified
    p.body, p.etag = te_lines(range(1, 101)).encode(), '"v2"'
    p.last_modified = "Mon, 01 Jan 2024 00:00:00 GMT"
    out = run_fetch(db, "HTTP_LIST")
    assert (out.added, out.tombstoned) == (1, 1)
    st = status(db, "HTTP_LIST")
    assert st["checkpoint_ts"] == 1796205600 and st["counts"]["clock_went_back"] == 1
    # ours jumps back too: the completion time stays
    done = st["last_fetch_complete_ts"]
    p.etag = '"v3"'
    out = run_fetch(db, "HTTP_LIST", FetchOptions(clock=lambda: 1000.0))
    assert out.succeeded and status(db, "HTTP_LIST")["last_fetch_complete_ts"] == done


def test_http_list_429_5xx_back_off(
    db: sessionmaker[Session], partner: tuple[Partner, str]
) -> None:
    p, base = partner
    add(db, "FLAKY", "http_list", url=f"{base}/list.te")
    p.queue = [(429, {"Retry-After": "700"}), (503, {}), (500, {})]
    out = run_fetch(db, "FLAKY")
    assert not out.succeeded and out.retry_after == 700 and "429" in (out.error or "")
    st = status(db, "FLAKY")
    assert st["last_fetch_succeeded"] is False and st["consecutive_failures"] == 1
    assert next_delay(3600, out, 1) == 700
    out2 = run_fetch(db, "FLAKY")
    assert "503" in (out2.error or "") and next_delay(3600, out2, 2) == 60
    # through the job chain: the failure is recorded and the next link is backed off
    engine = db.kw["bind"]
    queue = JobQueue(engine)
    with db() as s, s.begin():
        start_chain(queue, s, store.get_exchange(s, "FLAKY"))
    assert queue.run_one("w", [JOB_KIND]) is not None
    [nxt] = [j for j in queue.list(kind=JOB_KIND) if j.status == "queued"]
    assert (nxt.run_after - queue.clock()).total_seconds() > 100  # 30 s * 2**2 after 3 failures
    assert status(db, "FLAKY")["consecutive_failures"] == 3
    # the partner recovers
    out = run_fetch(db, "FLAKY")
    assert out.succeeded and out.added == 100
    assert status(db, "FLAKY")["consecutive_failures"] == 0


@pytest.mark.parametrize("path", ["/big", "/big-chunked"])
def test_http_list_100mb_body_stops_at_the_limit(
    db: sessionmaker[Session], partner: tuple[Partner, str], path: str
) -> None:
    _, base = partner
    add(db, "BIG", "http_list", url=f"{base}{path}", max_bytes=2 * 1024 * 1024)
    out = run_fetch(db, "BIG")
    assert not out.succeeded and "too_large" in (out.error or "")
    assert entries(db) == []
    with db() as s:
        assert s.scalar(select(func.count()).select_from(BankEntryRow)) == 0


def test_record_digest_is_unchanged_by_the_single_encoding() -> None:
    """The fetcher encodes metadata once for digest and row; the digest must stay the one
    stored by earlier versions (else every unchanged record is rewritten on a refetch)."""
    import json

    from tipline.exchange.api import ExchangeRecord
    from tipline.exchange.fetcher import _digest

    def legacy(rec: ExchangeRecord) -> str:
        doc = [rec.signal_type, rec.signal, rec.label, dict(rec.meta)]
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()

    recs = [
        ExchangeRecord(
            "pdq", pdq(1), "DEMO-benign-stand-in", {"b": 1, "a": {"z": None, "y": [1, "é"]}}
        ),
        ExchangeRecord("md5", "f" * 32),
        ExchangeRecord("md5", "e" * 32, 'quote " and ü', {"k": "ü", "t": 3.5}),
    ]
    assert [_digest(r) for r in recs] == [legacy(r) for r in recs]
    assert len({_digest(r) for r in recs}) == 3
