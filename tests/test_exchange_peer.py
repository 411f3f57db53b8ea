"""Two Tipline instances share a bank (docs/exchanges.md, "Tipline peers"): two real
``tipline serve`` processes on 127.0.0.1 with their own data directories. In A an analyst's
grade confirms an item into TIPLINE_GRADED, shared with B's account; B's ``tipline`` exchange
is fetched by the durable fetcher (``tipline worker --drain``, no hand call), and B's
``/m/lookup`` of the same image matches, the entry carrying the partner's metadata (which list,
which partner, classification). Bad inputs: a wrong token (the exchange is marked failing,
visible in /api/v1/exchanges, the others go on), a wrong secret, a replayed and a stale signed
page (through a recording proxy on 127.0.0.1), a garbage and a future cursor (400), a peer that
is down (backoff). The image is a benign scikit-image photo; nothing else is shared."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from conftest import encode, photo
from hma_compat.conftest import serve_env
from serve_process import free_port, start_serve, stop_serve, tipline_exe
from tipline.exchange import peer
from tipline.exchange.api import ExchangeFetchError, FetchContext
from tipline.exchange.types import HttpListExchange
from tipline.net.fetch import FetchSettings
from tipline.scan.hashing import HashOptions, hash_bytes
from tipline.store.base import default_url, make_engine, session_factory
from tipline.store.tables import BankEntryRow, BankRow, Cluster, Item

ANALYST = "alice"
PEER_ACCOUNT = "hotline-b"
LOCAL = FetchSettings.build(allow_networks=["127.0.0.1/32"])


@dataclass
class Instance:
    url: str
    data: Path
    proc: subprocess.Popen[bytes]

    def cli(self, *args: str, stdin: str | None = None) -> str:
        res = subprocess.run(
            [tipline_exe(), *args],
            env=serve_env(self.data, TIPLINE_ANONYMOUS_PERMISSIONS=""),
            capture_output=True,
            text=True,
            input=stdin,
            timeout=90,
            check=False,
        )
        assert res.returncode == 0, f"tipline {' '.join(args)}: {res.stdout}{res.stderr}"
        return res.stdout


def _start(tmp: Path, name: str, **extra: str) -> Instance:
    data = tmp / name
    data.mkdir()
    env = serve_env(data, TIPLINE_ANONYMOUS_PERMISSIONS="", TIPLINE_REVIEW_CONSENSUS="1", **extra)
    url, proc = start_serve(env, tmp / f"{name}.log")
    return Instance(url, data, proc)


def _stop(inst: Instance) -> None:
    stop_serve(inst.proc)


@contextmanager
def _two(tmp_path: Path, **b_env: str) -> Iterator[tuple[Instance, Instance]]:
    """Instances A and B (``b_env``: B's extra environment), both stopped on the way out."""
    a = _start(tmp_path, "a")
    try:
        b = _start(tmp_path, "b", **b_env)
    except BaseException:
        _stop(a)
        raise
    try:
        yield a, b
    finally:
        _stop(b)
        _stop(a)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Instance, Instance]]:
    with _two(tmp_path) as ab:
        yield ab


def _token(inst: Instance, user: str, *scopes: str) -> str:
    args = ["token", "create", "--user", user, "--name", "peer-test"]
    for s in scopes:
        args += ["--scope", s]
    out = inst.cli(*args)
    m = re.search(r"tl_[A-Za-z0-9_\-]+", out)
    assert m, out
    return m.group(0)


def _seed_item(inst: Instance, image: bytes) -> tuple[int, dict[str, str]]:
    """An item of a report as the pipeline leaves it (hashed, clustered, waiting for review),
    with the hashes Tipline computes for ``image``."""
    rec = hash_bytes(image, "photo.jpg", HashOptions())
    assert rec.sha256 and rec.md5 and rec.pdq and (rec.pdq_quality or 0) >= 50
    engine = make_engine(default_url(inst.data))
    try:
        with session_factory(engine)() as s, s.begin():
            cluster = Cluster(size=1, priority=30.0, status="open")
            s.add(cluster)
            s.flush()
            item = Item(
                sha256=rec.sha256,
                md5=rec.md5,
                pdq=rec.pdq,
                pdq_quality=rec.pdq_quality,
                media_type="image/jpeg",
                size=len(image),
                status="hashed",
                cluster_id=cluster.id,
                first_seen=datetime.now(UTC) - timedelta(hours=1),
            )
            s.add(item)
            s.flush()
            cluster.representative_item_id = item.id
            cid = cluster.id
    finally:
        engine.dispose()
    return cid, {"sha256": rec.sha256, "md5": rec.md5, "pdq": rec.pdq}


def _grade(a: Instance, token: str, cluster_id: int) -> None:
    h = {"Authorization": f"Bearer {token}"}
    url = f"{a.url}/api/v1/review/clusters/{cluster_id}"
    assert httpx.post(url + "/claim", headers=h).status_code == 200
    values = {"values": {"uk_category": "C", "ncmec_category": "none"}}
    res = httpx.post(url + "/grade", headers=h, json=values)
    assert res.status_code == 200, res.text
    assert res.json()["outcomes"][0]["state"] == "final"


def _add_exchange(
    b: Instance,
    tmp: Path,
    name: str,
    url: str,
    token: str,
    secret: str,
    bank: str = "TIPLINE_GRADED",
    **config: str,
) -> None:
    creds = tmp / f"{name}.json"
    creds.write_text(json.dumps({"token": token, "secret": secret}))
    args = ["exchange", "add", name, "--type", "tipline", "--credentials-file", str(creds)]
    args += ["--config", f"url={url}", "--config", f"bank={bank}"]
    for k, v in config.items():
        args += ["--config", f"{k}={v}"]
    b.cli(*args)


def _drain(b: Instance) -> None:
    res = subprocess.run(
        [tipline_exe(), "worker", "--drain", "--poll-interval", "0.05", "--kind", "exchange_fetch"],
        env=serve_env(b.data, TIPLINE_ANONYMOUS_PERMISSIONS=""),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr[-2000:]


@pytest.mark.slow  # two serve processes and some twenty CLI runs: about 50 s on 2 cores
def test_a_grade_in_one_instance_is_a_match_in_the_other(
    pair: tuple[Instance, Instance], tmp_path: Path
) -> None:
    a, b = pair
    a.cli("user", "add", ANALYST, "--role", "analyst", "--password-stdin", stdin="pw-" * 6 + "\n")
    a.cli("user", "add", PEER_ACCOUNT, "--role", "partner")
    grader = _token(a, ANALYST, "review:grade")
    feed_token = _token(a, PEER_ACCOUNT, "exchange:read", "exchange:write")
    image = encode(photo("coffee"), "JPEG", quality=90)
    cluster_id, hashes = _seed_item(a, image)
    _grade(a, grader, cluster_id)
    secret = json.loads(
        a.cli(
            "exchange", "share", "TIPLINE_GRADED", "--to", PEER_ACCOUNT,
            "--accept-into", "FROM_HOTLINE_B", "--json",
        )
    )["secret"]  # fmt: skip
    assert secret.startswith("tls_")

    # B: a good peer exchange, and faulty ones beside it (wrong token, wrong secret, down)
    dead = f"http://127.0.0.1:{free_port()}"
    _add_exchange(b, tmp_path, "PEER_A", a.url, feed_token, secret, partner="hotline-a")
    _add_exchange(b, tmp_path, "PEER_A_BADTOKEN", a.url, "tl_not-a-token", secret)
    _add_exchange(b, tmp_path, "PEER_A_BADSECRET", a.url, feed_token, "tls_wrong")
    _add_exchange(b, tmp_path, "PEER_DOWN", dead, feed_token, secret)
    _add_exchange(b, tmp_path, "PEER_A_NOTSHARED", a.url, feed_token, secret, bank="OTHER")
    _drain(b)

    # B's lookup of the same image (B hashes it itself) matches the shared entry
    b_admin = _token_admin(b)
    h = {"Authorization": f"Bearer {b_admin}"}
    res = httpx.post(b.url + "/m/lookup", headers=h, files={"file": ("p.jpg", image)})
    assert res.status_code == 200, res.text
    found = {
        st: hits for st, by_bank in res.json().items() for bank, hits in by_bank.items()
        if bank == "PEER_A"
    }  # fmt: skip
    assert "pdq" in found and found["pdq"][0]["distance"] == "0", res.json()
    # the matched entry carries the partner's metadata
    engine = make_engine(default_url(b.data))
    try:
        with session_factory(engine)() as s:
            entry_id = int(found["pdq"][0]["bank_content_id"])
            entry = s.get(BankEntryRow, entry_id)
            assert entry is not None and entry.signal == hashes["pdq"]
            partner = (entry.meta or {})["exchange"]["partner"]
            assert partner["list"] == "TIPLINE_GRADED" and partner["partner"] == "hotline-a"
            assert partner["classification"] and partner["classification"] == entry.label
            assert isinstance(partner["added_at"], int)
            md5s = s.scalars(
                select(BankEntryRow.signal).where(BankEntryRow.signal_type == "md5")
            ).all()
            assert hashes["md5"] in md5s
    finally:
        engine.dispose()

    # /api/v1/exchanges: the good one is up to date, the faulty ones failing and why
    res = httpx.get(b.url + "/api/v1/exchanges", headers=h)
    assert res.status_code == 200, res.text
    by_name = {e["name"]: e for e in res.json()["exchanges"]}
    good = by_name["PEER_A"]["status"]
    assert good["last_fetch_succeeded"] is True and good["up_to_date"] is True
    assert good["fetched_items"] == 3
    bad_token = by_name["PEER_A_BADTOKEN"]["status"]
    assert bad_token["last_fetch_succeeded"] is False
    assert "refused our token (401)" in bad_token["last_error"]
    not_shared = by_name["PEER_A_NOTSHARED"]["status"]
    assert "shares no bank OTHER" in not_shared["last_error"]
    bad_secret = by_name["PEER_A_BADSECRET"]["status"]
    assert "signature does not verify" in bad_secret["last_error"]
    down = by_name["PEER_DOWN"]["status"]
    assert down["last_fetch_succeeded"] is False and down["consecutive_failures"] >= 1
    for e in by_name.values():  # credentials never come out
        assert feed_token not in json.dumps(e) and secret not in json.dumps(e)
    one = httpx.get(b.url + "/api/v1/exchanges/PEER_A_BADTOKEN", headers=h).json()
    assert one["status"]["last_fetch_succeeded"] is False and one["api"] == "tipline"
    assert httpx.get(b.url + "/api/v1/exchanges/NOPE", headers=h).status_code == 404

    _feed_refusals(a, feed_token, secret)
    _published_list(a, feed_token, hashes)
    key = partner_key(b)
    _opinion_reaches_the_publisher(a, b, feed_token, secret, entry_key=key)

    _push_reaches_the_publisher(a, b, tmp_path)

    # A deletes the entry: the feed's tombstone disables it in B at its next fetch
    a.cli("bank", "remove", "TIPLINE_GRADED", key.removeprefix("e"))
    b.cli("exchange", "fetch", "PEER_A", "--enqueue")
    _drain(b)
    deadline = time.monotonic() + 5
    while True:
        res = httpx.post(b.url + "/m/lookup", headers=h, files={"file": ("p.jpg", image)})
        if "PEER_A" not in res.json().get("pdq", {}):
            break
        assert time.monotonic() < deadline, f"the tombstone did not reach B: {res.json()}"
        time.sleep(0.1)
    after = httpx.get(b.url + "/api/v1/exchanges/PEER_A", headers=h).json()["status"]
    assert after["last_fetch_succeeded"] is True and after["counts"]["tombstoned"] == 1


def partner_key(b: Instance) -> str:
    engine = make_engine(default_url(b.data))
    try:
        with session_factory(engine)() as s:
            metas = s.scalars(
                select(BankEntryRow.meta).where(BankEntryRow.signal_type == "pdq")
            ).all()
    finally:
        engine.dispose()
    return str(next(m for m in metas if m)["exchange"]["key"])


def _token_admin(inst: Instance) -> str:
    inst.cli("user", "add", "root", "--role", "admin", "--password-stdin", stdin="pw-" * 6 + "\n")
    return _token(inst, "root", "match:read", "bank:read", "bank:write")


def _push_reaches_the_publisher(a: Instance, b: Instance, tmp: Path) -> None:
    """B pushes a bank of its own to A (A's share accepts pushes into FROM_HOTLINE_B): A
    matches it at once, a second push changes nothing, a disabled entry is withdrawn."""
    pushed = [secrets.token_hex(32), secrets.token_hex(32)]
    lst = tmp / "local-b.te"
    lst.write_text("".join(f"pdq {x}\n" for x in pushed) + "pdq not-a-hash\n")
    b.cli("bank", "create", "LOCAL_B")
    b.cli("bank", "import", "LOCAL_B", str(lst), "--skip-bad-lines")
    out = b.cli("exchange", "push", "PEER_A", "--bank", "LOCAL_B")
    assert "pushed 2 record(s)" in out
    ha = {"Authorization": f"Bearer {_token_admin(a)}"}

    def at_a(signal: str) -> bool:
        res = httpx.get(a.url + "/m/lookup", params={"signal_type": "pdq", "signal": signal},
                        headers=ha)  # fmt: skip
        assert res.status_code == 200, res.text
        return "FROM_HOTLINE_B" in res.json()

    assert at_a(pushed[0]) and at_a(pushed[1])  # the serving process added them at once
    b.cli("exchange", "push", "PEER_A", "--bank", "LOCAL_B")  # again: nothing new
    engine = make_engine(default_url(a.data))
    try:
        with session_factory(engine)() as s:
            rows = s.scalars(
                select(BankEntryRow).join(BankRow, BankRow.id == BankEntryRow.bank_id)
                .where(BankRow.name == "FROM_HOTLINE_B")
            ).all()  # fmt: skip
            assert sorted(r.signal for r in rows) == sorted(pushed)
            partner = (rows[0].meta or {})["exchange"]["partner"]
            assert partner["partner"] == PEER_ACCOUNT and partner["list"] == "LOCAL_B"
    finally:
        engine.dispose()
    hb = {"Authorization": f"Bearer {_token(b, 'root', 'bank:read', 'bank:write')}"}
    entries = httpx.get(b.url + "/api/v1/banks/LOCAL_B/entries", headers=hb).json()
    first = next(e for e in entries if e["signal"] == pushed[0])
    res = httpx.patch(
        f"{b.url}/api/v1/banks/LOCAL_B/entries/{first['id']}", headers=hb, json={"enabled": False}
    )
    assert res.status_code == 200, res.text
    b.cli("exchange", "push", "PEER_A", "--bank", "LOCAL_B")
    assert not at_a(pushed[0]) and at_a(pushed[1])


def _feed_refusals(a: Instance, token: str, secret: str) -> None:
    feed = f"{a.url}/api/v1/exchange/banks/TIPLINE_GRADED/changes"
    h = {"Authorization": f"Bearer {token}", peer.NONCE_HEADER: "n" * 16}
    ok = httpx.get(feed, headers=h)
    assert ok.status_code == 200 and ok.headers[peer.SIGNATURE_HEADER].startswith("v1=")
    page = ok.json()
    assert page["more"] is False and len(page["changes"]) == 3
    # garbage and future cursors
    for cursor in ("garbage", "c1.!!!", "c1." + "A" * 40):
        res = httpx.get(feed, headers=h, params={"cursor": cursor})
        assert res.status_code == 400 and "cursor" in res.json()["message"], res.text
    share_id = json.loads(__import__("base64").urlsafe_b64decode(
        page["next_cursor"][3:] + "=" * (-len(page["next_cursor"][3:]) % 4)))[0]  # fmt: skip
    res = httpx.get(feed, headers=h, params={"cursor": peer.encode_cursor(share_id, 10**6)})
    assert res.status_code == 400 and "ahead" in res.json()["message"]
    res = httpx.get(feed, headers=h, params={"cursor": peer.encode_cursor(share_id + 1, 1)})
    assert res.status_code == 400 and "another share" in res.json()["message"]
    # the last cursor: an empty page, same cursor (never backwards)
    again = httpx.get(feed, headers=h, params={"cursor": page["next_cursor"]}).json()
    assert again["changes"] == [] and again["next_cursor"] == page["next_cursor"]
    # no nonce, wrong token, another account's bank
    assert httpx.get(feed, headers={"Authorization": f"Bearer {token}"}).status_code == 400
    assert httpx.get(feed, headers={**h, "Authorization": "Bearer tl_bad"}).status_code == 401
    other = f"{a.url}/api/v1/exchange/banks/TIPLINE_NOT_ILLEGAL/changes"
    assert httpx.get(other, headers=h).status_code == 404

    # a replayed page and a stale one, served by a proxy that records A's answer
    ctx = FetchContext(
        "T",
        {"url": "", "bank": "TIPLINE_GRADED", "partner": "a", "page_size": 1000},
        {"token": token, "secret": secret},
        LOCAL,
    )
    typ = peer.TiplinePeerExchange()
    with _Proxy(a.url, secret) as proxy:
        live = dict(ctx.config, url=proxy.url)
        good = list(typ.fetch_iter(FetchContext("T", live, ctx.credentials, LOCAL), None))
        assert sum(len(d.updates) for d in good) == 3
        proxy.mode = "replay"
        with pytest.raises(ExchangeFetchError, match="does not verify"):
            list(typ.fetch_iter(FetchContext("T", live, ctx.credentials, LOCAL), None))
        proxy.mode = "stale"
        with pytest.raises(ExchangeFetchError, match="stale"):
            list(typ.fetch_iter(FetchContext("T", live, ctx.credentials, LOCAL), None))


def _published_list(a: Instance, token: str, hashes: dict[str, str]) -> None:
    """The shared bank as a hash list file, read by an ``http_list`` exchange (ETag, 304)."""
    base = f"{a.url}/api/v1/exchange/banks/TIPLINE_GRADED"
    h = {"Authorization": f"Bearer {token}"}
    res = httpx.get(base + "/list.te", headers=h)
    assert res.status_code == 200 and res.headers["etag"], res.text
    assert sorted(res.text.splitlines()) == sorted(f"{k} {v}" for k, v in hashes.items())
    again = httpx.get(base + "/list.te", headers={**h, "If-None-Match": res.headers["etag"]})
    assert again.status_code == 304
    jsonl = httpx.get(base + "/list.jsonl", headers=h)
    assert jsonl.status_code == 200 and jsonl.headers["content-type"] == "application/x-ndjson"
    docs = [json.loads(line) for line in jsonl.text.splitlines()]
    assert len(docs) == 3 and all(d["label"] for d in docs)
    assert "tipline-review" not in jsonl.text  # the sources and notes stay in A
    bad = httpx.get(base + "/list.hex", headers=h)  # md5, sha256 and pdq: hex holds one type
    assert bad.status_code == 400 and "one signal type" in bad.json()["message"]
    assert httpx.get(base + "/list.xml", headers=h).status_code == 400
    assert httpx.get(base + "/list.te").status_code == 401
    other = f"{a.url}/api/v1/exchange/banks/OTHER/list.te"
    assert httpx.get(other, headers=h).status_code == 404
    # an http_list exchange reads it, and an unchanged list costs one 304
    typ = HttpListExchange()
    ctx = FetchContext(
        "LIST",
        typ.validate_config({"url": base + "/list.te"}),
        {"authorization": f"Bearer {token}"},
        LOCAL,
    )
    deltas = list(typ.fetch_iter(ctx, None))
    got = {(r.signal_type, r.signal) for d in deltas for r in d.updates.values() if r}
    assert got == set(hashes.items()) and deltas[-1].checkpoint.up_to_date
    [same] = list(typ.fetch_iter(ctx, deltas[-1].checkpoint))
    assert same.updates == {} and same.checkpoint == deltas[-1].checkpoint


def _opinion_reaches_the_publisher(
    a: Instance, b: Instance, token: str, secret: str, entry_key: str
) -> None:
    from tipline.exchange.api import Opinion

    typ = peer.TiplinePeerExchange()
    ctx = FetchContext(
        "PEER_A",
        {"url": a.url, "bank": "TIPLINE_GRADED", "partner": "a", "page_size": 1000},
        {"token": token, "secret": secret},
        LOCAL,
    )
    op = Opinion(entry_key, "pdq", "0" * 64, "positive", ("seen-here",))
    typ.submit_opinion(ctx, op)
    typ.submit_opinion(ctx, op)  # redelivered: still one opinion
    shares = json.loads(a.cli("exchange", "shares", "--json"))
    assert [(s["bank"], s["peer"], s["opinions"]) for s in shares] == [
        ("TIPLINE_GRADED", PEER_ACCOUNT, 1)
    ]
    # an unsigned opinion is refused
    url = f"{a.url}/api/v1/exchange/banks/TIPLINE_GRADED/opinions"
    res = httpx.post(
        url,
        headers={"Authorization": f"Bearer {token}", peer.NONCE_HEADER: "x" * 16},
        json={"key": entry_key, "category": "negative"},
    )
    assert res.status_code == 401 and "not signed" in res.json()["message"]
    # an unknown entry is a clear 400
    with pytest.raises(Exception, match="never published"):
        typ.submit_opinion(ctx, Opinion("e999999", "pdq", "0" * 64, "negative"))


class _Proxy:
    """Forwards the feed to A (mode ``live``, recording the answer), or answers the recorded
    page again (``replay``), or re-signs it correctly but ten minutes old (``stale``)."""

    def __init__(self, upstream: str, secret: str) -> None:
        self.upstream, self.secret, self.mode = upstream, secret, "live"
        self.recorded: tuple[bytes, dict[str, str]] | None = None
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                nonce = self.headers.get(peer.NONCE_HEADER, "")
                if proxy.mode == "live" or proxy.recorded is None:
                    res = httpx.get(
                        proxy.upstream + self.path,
                        headers={k: v for k, v in self.headers.items() if k.lower() != "host"},
                    )
                    body = res.content
                    headers = {
                        k: res.headers[k]
                        for k in (peer.SIGNATURE_HEADER, peer.TIMESTAMP_HEADER)
                        if k in res.headers
                    }
                    proxy.recorded = (body, headers)
                elif proxy.mode == "replay":
                    body, headers = proxy.recorded
                else:
                    body = proxy.recorded[0]
                    headers = peer.sign_headers(
                        proxy.secret, nonce, "GET", self.path, body, time.time() - 600
                    )
                    headers.pop(peer.NONCE_HEADER)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> _Proxy:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def pusher_pair(tmp_path: Path) -> Iterator[tuple[Instance, Instance]]:
    """A (takes pushes) and B, whose serve runs in-process workers: its push jobs run there,
    with no `tipline worker` beside it."""
    with _two(tmp_path, TIPLINE_INPROCESS_WORKERS="1") as ab:
        yield ab


@pytest.mark.slow  # two serve processes and about ten CLI runs
def test_a_grade_in_one_instance_is_pushed_to_the_other_by_itself(
    pusher_pair: tuple[Instance, Instance], tmp_path: Path
) -> None:
    """B follows its TIPLINE_GRADED with a push to A (A's share takes pushes into
    FROM_HOTLINE_B). An analyst's grade in B confirms an item; B's serve (its in-process
    workers, the grade's kick) pushes the hashes, and A's /m/lookup of the same image matches
    them, with nobody touching A after the set-up; B's /api/v1/exchanges shows the push."""
    a, b = pusher_pair
    a.cli("user", "add", PEER_ACCOUNT, "--role", "partner")
    feed_token = _token(a, PEER_ACCOUNT, "exchange:read", "exchange:write")
    a.cli("bank", "create", "A_LIST")
    secret = json.loads(
        a.cli(
            "exchange", "share", "A_LIST", "--to", PEER_ACCOUNT,
            "--accept-into", "FROM_HOTLINE_B", "--json",
        )
    )["secret"]  # fmt: skip
    ha = {"Authorization": f"Bearer {_token_admin(a)}"}

    b.cli("user", "add", ANALYST, "--role", "analyst", "--password-stdin", stdin="pw-" * 6 + "\n")
    grader = _token(b, ANALYST, "review:grade")
    _add_exchange(b, tmp_path, "PEER_A", a.url, feed_token, secret, bank="A_LIST")
    b.cli("bank", "create", "TIPLINE_GRADED")
    out = b.cli("exchange", "push", "PEER_A", "--bank", "TIPLINE_GRADED", "--follow",
                "--interval", "3600")  # fmt: skip
    assert "pushed 0 record(s)" in out and "following" in out
    image = encode(photo("astronaut"), "JPEG", quality=90)
    cluster_id, hashes = _seed_item(b, image)

    def at_a() -> dict[str, object]:
        res = httpx.post(a.url + "/m/lookup", headers=ha, files={"file": ("p.jpg", image)})
        assert res.status_code == 200, res.text
        return {st: by_bank["FROM_HOTLINE_B"] for st, by_bank in res.json().items()
                if "FROM_HOTLINE_B" in by_bank}  # fmt: skip

    assert at_a() == {}
    _grade(b, grader, cluster_id)  # B's grade: nothing else is run by hand
    deadline = time.monotonic() + 30
    while "pdq" not in (found := at_a()):
        assert time.monotonic() < deadline, "the push did not reach A"
        time.sleep(0.2)
    assert found["pdq"][0]["distance"] == "0"  # type: ignore[index]
    engine = make_engine(default_url(a.data))
    try:
        with session_factory(engine)() as s:
            rows = s.scalars(
                select(BankEntryRow).join(BankRow, BankRow.id == BankEntryRow.bank_id)
                .where(BankRow.name == "FROM_HOTLINE_B")
            ).all()  # fmt: skip
            assert sorted(r.signal for r in rows) == sorted(hashes.values())
            partner = (rows[0].meta or {})["exchange"]["partner"]
            assert partner["partner"] == PEER_ACCOUNT and partner["list"] == "TIPLINE_GRADED"
            assert partner["classification"]
    finally:
        engine.dispose()
    hb = {"Authorization": f"Bearer {_token_admin(b)}"}
    deadline = time.monotonic() + 10
    while True:  # the push job settles its status right after the partner took the batch
        [st] = httpx.get(b.url + "/api/v1/exchanges/PEER_A", headers=hb).json()["pushes"]
        if st["counts"]["sent"] == 3 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert st["bank"] == "TIPLINE_GRADED" and st["follow"] is True
    assert st["counts"] == {"sent": 3, "withdrawn": 0, "refused": 0, "skipped": 0}
    assert st["last_push_succeeded"] is True and st["pending"] == 0
    status = json.loads(b.cli("exchange", "status", "PEER_A"))
    assert status["pushes"][0]["counts"]["sent"] == 3
