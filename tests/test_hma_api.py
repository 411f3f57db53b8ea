"""HMA 2.0-compatible routes: shapes, error shapes, bank name rules, string distances, and an
HMA client's flow. Runs on SQLite and PostgreSQL (``db_url``); media are benign generated
images."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tipline.service.app import create_app
from tipline.service.matching import MatchService
from tipline.service.settings import ServiceSettings
from tipline.store import migrations
from tipline.store.base import make_engine, session_factory, transaction

ALL_PERMS = "match:read,hash:read,index:read,bank:read,bank:write"
PDQ_A = "f" * 64
PDQ_B = "f" * 60 + "0000"  # 16 bits from PDQ_A


def benign_jpeg(seed: int = 1, size: tuple[int, int] = (320, 240)) -> bytes:
    """A smooth random gradient with shapes: benign, and PDQ quality well above 50."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3), dtype=np.float64)
    for c in range(3):
        fx, fy, ph = rng.uniform(1, 6), rng.uniform(1, 6), rng.uniform(0, 6)
        img[..., c] = 127 + 120 * np.sin(fx * x / w * 3.14 + ph) * np.cos(fy * y / h * 3.14)
    out = io.BytesIO()
    Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(out, "JPEG", quality=90)
    return out.getvalue()


def make_settings(tmp_path: Path, db_url: str, **kw: object) -> ServiceSettings:
    base: dict[str, object] = {
        "data_dir": tmp_path / "data",
        "database_url": db_url,
        "media_mode": "hash-only",
        "anonymous_permissions": ALL_PERMS,
        "index_refresh_seconds": 0.0,
        "inprocess_workers": 0,
    }
    base.update(kw)
    return ServiceSettings.load(env={}, **base)


@pytest.fixture
def client(db_url: str, tmp_path: Path) -> Iterator[TestClient]:
    migrations.upgrade(db_url)
    app = create_app(make_settings(tmp_path, db_url), load_index="sync")
    with TestClient(app) as c:
        yield c


def assert_message(resp: object, status: int) -> str:
    r = resp
    assert r.status_code == status, r.text  # type: ignore[attr-defined]
    body = r.json()  # type: ignore[attr-defined]
    assert set(body) == {"message"}, body
    assert isinstance(body["message"], str) and body["message"]
    return str(body["message"])


# ----------------------------------------------------------------------------------- core


def test_status_routes(client: TestClient) -> None:
    r = client.get("/status")
    assert r.status_code == 200 and r.text == "I-AM-ALIVE"
    assert client.get("/status/live").text == "I-AM-ALIVE"
    assert "/m/lookup" in client.get("/openapi.json").json()["paths"]


def test_status_before_index_loaded(db_url: str, tmp_path: Path) -> None:
    migrations.upgrade(db_url)
    with TestClient(create_app(make_settings(tmp_path, db_url), load_index="none")) as c:
        r = c.get("/status")
        assert r.status_code == 503 and r.text == "INDEX-NOT-LOADED"
        assert c.get("/status/live").status_code == 200
        r = c.get("/m/lookup", params={"signal_type": "pdq", "signal": PDQ_A})
        assert r.status_code == 503 and "message" in r.json()


# ----------------------------------------------------------------------------------- flow


def test_hma_client_flow(client: TestClient) -> None:
    r = client.post("/c/banks", json={"name": "TEST_BANK"})
    assert r.status_code == 201
    assert r.json() == {"name": "TEST_BANK", "matching_enabled_ratio": 1.0}
    assert client.get("/c/banks").json() == [{"name": "TEST_BANK", "matching_enabled_ratio": 1.0}]

    r = client.post("/c/bank/TEST_BANK/signal", json={"pdq": PDQ_A, "note": "benign test"})
    assert r.status_code == 200, r.text
    cid = r.json()["id"]
    assert r.json() == {"id": cid, "signals": {"pdq": PDQ_A}}

    # found by the very next lookup: the index is updated in the request that added it
    r = client.get("/m/lookup", params={"signal_type": "pdq", "signal": PDQ_A})
    assert r.json() == {"TEST_BANK": [{"bank_content_id": cid, "distance": "0"}]}
    r = client.get("/m/lookup", params={"signal_type": "pdq", "signal": PDQ_B})
    assert r.json() == {"TEST_BANK": [{"bank_content_id": cid, "distance": "16"}]}
    r = client.get("/m/lookup", params={"signal_type": "pdq", "signal": "0" * 64})
    assert r.json() == {}

    r = client.get("/m/raw_lookup", params={"signal_type": "pdq", "signal": PDQ_A})
    assert r.json() == {"matches": [cid]}
    r = client.get(
        "/m/raw_lookup",
        params={"signal_type": "pdq", "signal": PDQ_A, "include_distance": "true"},
    )
    assert r.json() == {"matches": [{"bank_content_id": cid, "distance": "0"}]}
    r = client.get(
        "/m/raw_lookup", params={"signal_type": "pdq", "signal": PDQ_A, "banks": "OTHER"}
    )
    assert r.json() == {"matches": []}

    r = client.post("/m/compare", json={"pdq": [PDQ_A, PDQ_B]})
    assert r.json() == {"pdq": [True, {"distance": 16}]}
    r = client.post("/m/compare", json={"pdq": [PDQ_A, "0" * 64]})
    assert r.json() == {"pdq": [False, {"distance": 256}]}

    status = client.get("/m/index/status").json()
    assert status["pdq"]["present"] is True and status["pdq"]["size"] == 1
    assert isinstance(status["pdq"]["built_to"], int)
    assert set(client.get("/m/index/status", params={"signal_type": "pdq"}).json()) == {"pdq"}

    # content: read, disable (drops out of lookups), enable, delete
    r = client.get(
        f"/c/bank/TEST_BANK/content/{cid}",
        params={"include_signals": "true", "include_metadata": "true"},
    )
    body = r.json()
    assert body["id"] == cid and body["disable_until_ts"] == 1
    assert body["bank"] == {"name": "TEST_BANK", "matching_enabled_ratio": 1.0}
    assert body["signals"] == {"pdq": PDQ_A} and body["note"] == "benign test"
    # HMA leaves "metadata" out when the content has none (curation.py bank_get_content)
    assert "metadata" not in body
    r = client.put(f"/c/bank/TEST_BANK/content/{cid}", json={"disable_until_ts": 0})
    assert r.json()["disable_until_ts"] == 0
    assert client.get("/m/lookup", params={"signal_type": "pdq", "signal": PDQ_A}).json() == {}
    # raw_lookup checks no enabled state (HMA's matching.py raw_lookup, deliberately)
    assert client.get("/m/raw_lookup", params={"signal_type": "pdq", "signal": PDQ_A}).json() == {
        "matches": [cid]
    }
    client.put(f"/c/bank/TEST_BANK/content/{cid}", json={"disable_until_ts": 1})
    assert client.get("/m/raw_lookup", params={"signal_type": "pdq", "signal": PDQ_A}).json() == {
        "matches": [cid]
    }
    # a disabled bank matches nothing; re-enabled, it matches again
    r = client.put("/c/bank/TEST_BANK", json={"enabled_ratio": 0.0})
    assert r.json() == {"name": "TEST_BANK", "matching_enabled_ratio": 0.0}
    assert client.get("/m/lookup", params={"signal_type": "pdq", "signal": PDQ_A}).json() == {}
    client.put("/c/bank/TEST_BANK", json={"enabled": True})
    assert client.delete(f"/c/bank/TEST_BANK/content/{cid}").json() == {"deleted": 1}
    assert client.get("/m/lookup", params={"signal_type": "pdq", "signal": PDQ_A}).json() == {}
    assert_message(client.get(f"/c/bank/TEST_BANK/content/{cid}"), 404)

    assert client.delete("/c/bank/TEST_BANK").status_code == 200
    assert_message(client.get("/c/bank/TEST_BANK"), 404)


def test_upload_flow(client: TestClient) -> None:
    jpeg = benign_jpeg(7)
    r = client.post("/h/hash", files={"photo": ("a.jpg", jpeg, "image/jpeg")})
    assert r.status_code == 200, r.text
    pdq = r.json()["pdq"]
    assert len(pdq) == 64 and set(r.json()) == {"pdq"}
    files = {"photo": ("a.jpg", jpeg, "image/jpeg")}
    assert client.post("/h/hash", params={"types": "pdq"}, files=files).json() == {"pdq": pdq}
    # a type the content type does not have is refused (HMA's _parse_request_signal_type)
    assert_message(client.post("/h/hash", params={"types": "video_md5"}, files=files), 400)
    assert_message(client.post("/h/hash", params={"types": "nope"}, files=files), 400)
    assert_message(
        client.get("/h/hash", params={"url": "https://x.test/", "content_type": "x"}), 400
    )
    # url is required: HMA's 422 with pydantic's error list (flask-openapi3 validation)
    r = client.get("/h/hash")
    assert r.status_code == 422 and r.json()[0]["loc"] == ["url"]
    assert r.json()[0]["type"] == "missing"

    client.post("/c/banks", json={"name": "UPLOADS"})
    meta = {"content_id": "case-1", "content_uri": "https://example.org/x"}
    r = client.post(
        "/c/bank/UPLOADS/content",
        files={"photo": ("a.jpg", jpeg, "image/jpeg")},
        data={"metadata": json.dumps(meta), "note": "benign"},
    )
    assert r.status_code == 200, r.text
    cid = r.json()["id"]
    assert r.json()["signals"] == {"pdq": pdq}
    body = client.get(f"/c/bank/UPLOADS/content/{cid}", params={"include_metadata": "true"}).json()
    assert body["metadata"]["content_id"] == "case-1"
    assert body["metadata"]["content_uri"] == "https://example.org/x"
    # HMA keeps content_uri in the metadata and does not copy it to original_media_uri
    assert body["original_media_uri"] is None

    r = client.post("/m/lookup", files={"photo": ("b.jpg", jpeg, "image/jpeg")})
    assert r.json() == {"pdq": {"UPLOADS": [{"bank_content_id": cid, "distance": "0"}]}}


# ----------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("name", ["lower", "1ABC", "A-B", "", "A B", "ÄBC", "X" * 0 + "a_b"])
def test_bank_name_rules(client: TestClient, name: str) -> None:
    msg = assert_message(client.post("/c/banks", json={"name": name}), 400)
    assert "bank name" in msg


def test_bank_errors(client: TestClient) -> None:
    assert client.post("/c/banks", json={"name": "_OK_9"}).status_code == 201
    assert_message(client.post("/c/banks", json={"name": "_OK_9"}), 403)
    assert_message(client.post("/c/banks", json=["_OK_9"]), 400)
    assert_message(client.post("/c/banks", content=b"{not json"), 400)
    assert_message(client.get("/c/bank/NOPE"), 404)
    assert_message(client.post("/c/bank/NOPE/signal", json={"pdq": PDQ_A}), 404)
    assert_message(client.put("/c/bank/_OK_9", json={"name": "bad name"}), 400)
    # HMA renames banks (curation.py bank_update); a taken name is 403
    assert client.put("/c/bank/_OK_9", json={"name": "OTHER"}).json()["name"] == "OTHER"
    client.post("/c/banks", json={"name": "_OK_9"})
    assert_message(client.put("/c/bank/_OK_9", json={"name": "OTHER"}), 403)


@pytest.mark.parametrize(
    "params",
    [
        {"signal_type": "pdq", "signal": "xyz"},
        {"signal_type": "pdq", "signal": "f" * 63},
        {"signal_type": "pdq", "signal": "g" * 64},
        {"signal_type": "nope", "signal": PDQ_A},
        {"signal_type": "pdq"},
        {},
    ],
)
def test_invalid_lookups(client: TestClient, params: dict[str, str]) -> None:
    assert_message(client.get("/m/lookup", params=params), 400)
    if "signal" in params:
        assert_message(client.get("/m/raw_lookup", params=params), 400)


def test_invalid_signals_and_compare(client: TestClient) -> None:
    client.post("/c/banks", json={"name": "B"})
    assert_message(client.post("/c/bank/B/signal", json={"pdq": "zz"}), 400)
    assert_message(client.post("/c/bank/B/signal", json={"pdq": PDQ_A, "md5": "0" * 32}), 400)
    assert_message(client.post("/c/bank/B/signal", json={"sha512": "00"}), 400)
    assert_message(client.post("/c/bank/B/signal", json={"pdq": 5}), 400)
    assert_message(client.post("/m/compare", json={"pdq": [PDQ_A]}), 400)
    assert_message(client.post("/m/compare", json={"pdq": [PDQ_A, "x"]}), 400)
    assert_message(client.post("/m/compare", json={"xyz": [PDQ_A, PDQ_A]}), 400)
    # video_md5 signals are accepted and looked up under HMA's name
    md5 = "0123456789abcdef" * 2
    cid = client.post("/c/bank/B/signal", json={"video_md5": md5}).json()["id"]
    r = client.get("/m/lookup", params={"signal_type": "video_md5", "signal": md5})
    # an exact-match type has no distance: HMA's pretty_str is "-"
    assert r.json() == {"B": [{"bank_content_id": cid, "distance": "-"}]}


def test_upload_errors(db_url: str, tmp_path: Path) -> None:
    migrations.upgrade(db_url)
    app = create_app(make_settings(tmp_path, db_url, max_upload_bytes=4000), load_index="sync")
    jpeg = benign_jpeg(3)
    small = benign_jpeg(3, (64, 48))
    with TestClient(app) as c:
        assert_message(c.post("/h/hash", files={"photo": ("a.jpg", jpeg, "image/jpeg")}), 413)
        assert_message(c.post("/h/hash", files={"image": ("a.jpg", small, "image/jpeg")}), 400)
        two = [("photo", ("a.jpg", small, "image/jpeg")), ("photo", ("b.jpg", small, "image/jpeg"))]
        assert_message(c.post("/h/hash", files=two), 400)
        assert_message(c.post("/h/hash", files={"photo": ("a.jpg", b"", "image/jpeg")}), 400)
        assert_message(
            c.post("/m/lookup", content=b"plain", headers={"content-type": "text/plain"}), 400
        )
        bad = b'--XX\r\nContent-Disposition: form-data; name="photo"; filename="a"\r\n\r\nabc'
        r = c.post(
            "/m/lookup", content=bad, headers={"content-type": "multipart/form-data; boundary=XX"}
        )
        assert_message(r, 400)
        # a non-image upload hashes to an empty PDQ, never an error 500
        r = c.post("/h/hash", files={"photo": ("a.txt", b"neutral text", "text/plain")})
        assert r.status_code == 200 and r.json() == {"pdq": ""}


# ----------------------------------------------------------------------------------- URLs


class _ImageHandler(BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def image_server() -> Iterator[str]:
    _ImageHandler.body = benign_jpeg(11)
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _ImageHandler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def test_urls_go_through_the_safe_fetcher(db_url: str, tmp_path: Path, image_server: str) -> None:
    migrations.upgrade(db_url)
    # not allow-listed: loopback, private and metadata addresses are refused
    with TestClient(create_app(make_settings(tmp_path, db_url), load_index="sync")) as c:
        for url in (
            image_server + "/a.jpg",
            "http://10.1.2.3/a.jpg",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::1]/a.jpg",
            "http://[::ffff:127.0.0.1]/a.jpg",
            "file:///etc/passwd",
        ):
            assert_message(c.get("/h/hash", params={"url": url}), 400)
            assert_message(c.get("/m/lookup", params={"url": url}), 400)
    # the test server allow-listed: hashing and lookup by URL work; its redirect to the
    # metadata address is still refused
    settings = make_settings(tmp_path, db_url, fetch_allow_networks="127.0.0.1/32")
    with TestClient(create_app(settings, load_index="sync")) as c:
        pdq = c.get("/h/hash", params={"url": image_server + "/a.jpg"}).json()["pdq"]
        assert len(pdq) == 64
        c.post("/c/banks", json={"name": "URLS"})
        r = c.post("/c/bank/URLS/content", params={"url": image_server + "/a.jpg"})
        assert r.status_code == 200, r.text
        cid = r.json()["id"]
        r = c.get("/m/lookup", params={"url": image_server + "/b.jpg"})
        assert r.json() == {"pdq": {"URLS": [{"bank_content_id": cid, "distance": "0"}]}}
        assert_message(c.get("/h/hash", params={"url": image_server + "/redirect"}), 400)


# ----------------------------------------------------------------------------------- auth


def test_routes_need_credentials_and_tokens_work(db_url: str, tmp_path: Path) -> None:
    from tipline.service import auth

    migrations.upgrade(db_url)
    app = create_app(make_settings(tmp_path, db_url, anonymous_permissions=""), load_index="sync")
    engine = make_engine(db_url)
    with transaction(session_factory(engine)) as s:
        user = auth.create_user(s, "partner1", "partner")
        token = auth.create_token(s, user, "hma", ["match:read"])
    engine.dispose()
    with TestClient(app) as c:
        assert c.get("/status").text == "I-AM-ALIVE"  # public, like HMA's
        assert_message(c.get("/m/lookup", params={"signal_type": "pdq", "signal": PDQ_A}), 401)
        h = {"Authorization": f"Bearer {token}"}
        r = c.get("/m/lookup", params={"signal_type": "pdq", "signal": PDQ_A}, headers=h)
        assert r.status_code == 200 and r.json() == {}
        assert_message(c.post("/c/banks", json={"name": "X"}, headers=h), 403)


# ----------------------------------------------------------------------------------- index


def test_other_process_sees_changes(tmp_path: Path) -> None:
    """Two MatchServices on one index directory stand for two API processes: changes made on
    one reach the other through the change journal, incrementally."""
    import time

    from tipline.banks.bank import Bank, Entry
    from tipline.store.banks import open_bank_store

    open_bank_store(tmp_path).close()  # migrated once, before any thread opens it

    def factory() -> object:
        return open_bank_store(tmp_path)

    a = MatchService(factory, tmp_path / "index", refresh_seconds=0.05)  # type: ignore[arg-type]
    b = MatchService(factory, tmp_path / "index", refresh_seconds=0.05)  # type: ignore[arg-type]
    a.load()
    b.load()
    built = b.status()["built_at"]

    def eventually(check: object) -> None:
        deadline = time.monotonic() + 10
        while not check() and time.monotonic() < deadline:  # type: ignore[operator]
            time.sleep(0.02)
        assert check()  # type: ignore[operator]

    try:
        a.create_bank(Bank("SHARED"))
        [eid] = a.add_entries([Entry("SHARED", "pdq", PDQ_A, label="x")])
        assert [h.entry_id for h in a.lookup("pdq", PDQ_A)] == [eid]
        eventually(lambda: [h.entry_id for h in b.lookup("pdq", PDQ_A)] == [eid])
        a.set_entries_enabled("SHARED", [eid], False)
        eventually(lambda: b.lookup("pdq", PDQ_A) == [])
        a.set_entries_enabled("SHARED", [eid], True)
        eventually(lambda: len(b.lookup("pdq", PDQ_A)) == 1)
        a.update_bank(Bank("SHARED", pdq_threshold=0))
        eventually(lambda: b.lookup("pdq", PDQ_B) == [] and len(b.lookup("pdq", PDQ_A)) == 1)
        a.remove_entries("SHARED", [eid])
        eventually(lambda: b.lookup("pdq", PDQ_A) == [])
        assert b.status()["built_at"] == built  # all incremental, no rebuild
        # a change from b reaches a the same way
        b.add_entries([Entry("SHARED", "md5", "0" * 32)])
        eventually(lambda: len(a.lookup("md5", "0" * 32)) == 1)
        b.delete_bank("SHARED")
        eventually(lambda: a.lookup("md5", "0" * 32) == [])
    finally:
        a.close()
        b.close()


def test_uploaded_lookups_give_the_reference_hashs_matches(client: TestClient) -> None:
    """POST /m/lookup hashes with the fast PDQ and re-checks with the reference near any bank
    entry: every distance it answers is the reference hash's, as HMA's would be."""
    from tipline.scan.hashing import HashOptions, hash_bytes
    from tipline.signals.pdq import hamming

    client.post("/c/banks", json={"name": "NEAR"})
    from conftest import encode, photo

    # sample photographs (no people) on which the fast PDQ is 2 bits from the reference
    images = [encode(photo(n), "JPEG") for n in ("chelsea", "retina", "logo")]
    images += [benign_jpeg(seed, (480, 360)) for seed in range(20, 23)]
    refs = [hash_bytes(b, "x.jpg", HashOptions(pdq_mode="reference")).pdq for b in images]
    for pdq in refs:
        assert pdq
        assert client.post("/c/bank/NEAR/signal", json={"pdq": pdq}).status_code == 200
    for data, ref in zip(images, refs, strict=True):
        files = {"photo": ("q.jpg", data, "image/jpeg")}
        got = client.post("/m/lookup", files=files).json()["pdq"].get("NEAR", [])
        want = sorted(str(hamming(ref, o)) for o in refs if hamming(ref, o) <= 31)
        # the reference hash's distances ("0" to its own entry, not the fast hash's few bits)
        assert sorted(m["distance"] for m in got) == want
