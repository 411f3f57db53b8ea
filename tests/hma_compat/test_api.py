"""HMA's ``tests/test_api.py``, replayed over HTTP (paths below are under
``hasher-matcher-actioner/src/OpenMediaMatch/`` in facebook/ThreatExchange, HMA 1.1.7)."""

from __future__ import annotations

import random
import time
from pathlib import Path

import httpx
from fastapi.testclient import TestClient

from hma_compat.conftest import Images, jpeg, make_checkerboard


def _pdq_pair(bits: int, seed: int = 5) -> tuple[str, str]:
    """A random PDQ hash and a copy with ``bits`` bits flipped."""
    rng = random.Random(seed)
    a = rng.getrandbits(256)
    flips = rng.sample(range(256), bits)
    b = a
    for i in flips:
        b ^= 1 << i
    return f"{a:064x}", f"{b:064x}"


def test_status_response(client: httpx.Client, tmp_path: Path) -> None:
    """tests/test_api.py::test_status_response; app.py ``status``: ``I-AM-ALIVE`` when the
    index is ready, 503 ``INDEX-NOT-LOADED`` before it is, 503 ``INDEX-STALE`` when it has not
    been refreshed for too long (HMA monkeypatches its index cache; the stale half is checked
    here the same way, on an in-process app whose index last caught up long ago)."""
    r = client.get("/status")
    assert r.status_code == 200 and r.text == "I-AM-ALIVE"

    from tipline.service.app import create_app
    from tipline.service.settings import ServiceSettings
    from tipline.store import migrations

    url = f"sqlite:///{tmp_path / 't.sqlite3'}"
    migrations.upgrade(url)
    settings = ServiceSettings.load(
        env={}, data_dir=tmp_path, database_url=url, media_mode="hash-only", inprocess_workers=0
    )
    app = create_app(settings, load_index="none")
    with TestClient(app) as c:
        r = c.get("/status")
        assert r.status_code == 503 and r.text == "INDEX-NOT-LOADED"
        matcher = app.state.ctx.matcher
        matcher.load()
        assert c.get("/status").text == "I-AM-ALIVE"
        matcher.last_check = time.time() - 3600  # overdue on refresh
        r = c.get("/status")
        assert r.status_code == 503 and r.text == "INDEX-STALE"
        matcher.last_check = time.time()
        assert c.get("/status").text == "I-AM-ALIVE"


def test_status_live_always_alive(client: httpx.Client) -> None:
    """tests/test_api.py::test_status_live_always_alive; app.py ``status_live``: liveness
    never depends on the index."""
    r = client.get("/status/live")
    assert r.status_code == 200 and r.text == "I-AM-ALIVE"


def test_openapi_documentation_available(client: httpx.Client) -> None:
    """tests/test_api.py::test_openapi_documentation_available; app.py ``create_app``
    (``doc_prefix="/openapi"``): the spec at /openapi/openapi.json, titled as HMA's."""
    r = client.get("/openapi/openapi.json")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert r.json().get("info", {}).get("title") == "Open Media Match API"
    assert "/m/lookup" in r.json()["paths"]
    # and app.py ``site_map``: every route, sorted
    routes = client.get("/site-map").json()
    assert routes == sorted(routes) and "/m/lookup" in routes and "/c/banks" in routes


def test_lookup_success(client: httpx.Client, images: Images) -> None:
    """tests/test_api.py::test_lookup_success; blueprints/matching.py ``lookup_get`` (by URL)
    and ``lookup_post`` (an upload as a photo, and the same bytes as a "video": video_md5)."""
    r = client.get("/m/lookup", params={"url": images.url("image1.jpg")})
    assert r.status_code == 200, r.text
    assert r.json() == {"pdq": {}}
    data = jpeg(make_checkerboard(8))
    r = client.post("/m/lookup", files={"photo": ("image1.jpg", data, "image/jpeg")})
    assert r.status_code == 200 and r.json() == {"pdq": {}}
    r = client.post("/m/lookup", files={"video": ("image1.jpg", data, "image/jpeg")})
    assert r.status_code == 200 and r.json() == {"video_md5": {}}


def test_lookup_without_role(client: httpx.Client, images: Images) -> None:
    """tests/test_api.py::test_lookup_without_role; matching.py ``lookup_get`` / ``lookup_post``
    answer 403 without the hasher role. Tipline has no roles per process: a caller's
    permissions decide (docs/api.md, differences), so the replay is a caller without them:
    an unknown token is refused before any hashing."""
    h = {"Authorization": "Bearer not-a-token"}
    r = client.get("/m/lookup", params={"url": images.url("image1.jpg")}, headers=h)
    assert r.status_code == 401 and "message" in r.json()
    r = client.post(
        "/m/lookup", files={"photo": ("a.jpg", b"\xff\xd8\xff\xd9", "image/jpeg")}, headers=h
    )
    assert r.status_code == 401


def test_exchange_api_set_auth(client: httpx.Client) -> None:
    """tests/test_api.py::test_exchange_api_set_auth; curation.py ``exchange_api_list`` and
    ``exchange_api_config_get_or_update``: Tipline installs ``fb_threatexchange``,
    ``http_list``, ``local_file``, ``ncmec``, ``stop_ncii``, ``tat`` and ``tipline`` (HMA's test
    installs two others); an API that is not installed is 400."""
    r = client.get("/c/exchanges/apis")
    assert r.status_code == 200
    assert r.json() == [
        "fb_threatexchange",
        "http_list",
        "local_file",
        "ncmec",
        "stop_ncii",
        "tat",
        "tipline",
    ]
    r = client.get("/c/exchanges/api/http_list")
    assert r.json() == {"supports_authentification": True, "has_set_authentification": False}
    r = client.post(
        "/c/exchanges/api/http_list", json={"credential_json": {"authorization": "Bearer x"}}
    )
    assert r.status_code == 200 and r.json()["has_set_authentification"] is True
    assert "Bearer" not in r.text
    r = client.post("/c/exchanges/api/http_list", json={"credential_json": {}})
    assert r.json()["has_set_authentification"] is False
    assert client.get("/c/exchanges/api/local_file").json()["supports_authentification"] is False
    r = client.get("/c/exchanges/api/fb_threatexchange")
    assert r.json() == {"supports_authentification": True, "has_set_authentification": False}
    r = client.get("/c/exchanges/api/sample")
    assert r.status_code == 400 and "no such Exchange API" in r.json()["message"]
    r = client.post("/c/exchanges/api/sample", json={"credential_json": {}})
    assert r.status_code == 400


def test_exchange_api_schema(client: httpx.Client) -> None:
    """tests/test_api.py::test_exchange_api_schema; curation.py ``exchange_api_schema_get``:
    an API that is not installed is 404."""
    r = client.get("/c/exchanges/api/sample/schema")
    assert r.status_code == 404 and "message" in r.json()
    r = client.get("/c/exchanges/api/fb_threatexchange/schema")
    assert r.status_code == 200
    fields = [f["name"] for f in r.json()["config_schema"]["fields"]]
    assert fields[:2] == ["privacy_groups", "base_url"]


def test_compare_hashes(client: httpx.Client) -> None:
    """tests/test_api.py::test_compare_hashes; matching.py ``compare``: two PDQ hashes 9 bits
    apart match at distance 9; malformed input is 400."""
    a, b = _pdq_pair(9)
    r = client.post("/m/compare", json={"pdq": [a, b]})
    assert r.status_code == 200 and r.json() == {"pdq": [True, {"distance": 9}]}
    far_a, far_b = _pdq_pair(100)
    assert client.post("/m/compare", json={"pdq": [far_a, far_b]}).json() == {
        "pdq": [False, {"distance": 100}]
    }
    bad_inputs: list[object] = [
        ["banana"],
        {"pdq": "banana"},
        {"pdq": []},
        {"pdq": ["banana", "banana"]},
        {"pdq": [a, b, a]},
    ]
    for bad in bad_inputs:
        r = client.post("/m/compare", json=bad)
        assert r.status_code == 400, (bad, r.text)
        assert "message" in r.json()


def test_compare_video_md5(client: httpx.Client) -> None:
    """matching.py ``compare`` with ``video_md5``: HMA answers 500 (its no-distance result does
    not serialise); what it evidently means: whether the two are equal, no distance."""
    md5 = "0123456789abcdef" * 2
    r = client.post("/m/compare", json={"video_md5": [md5, md5.upper()]})
    assert r.status_code == 200 and r.json() == {"video_md5": [True, {}]}
    r = client.post("/m/compare", json={"video_md5": [md5, "f" * 32]})
    assert r.json() == {"video_md5": [False, {}]}


def test_exchange_delete(client: httpx.Client) -> None:
    """tests/test_api.py::test_exchange_delete; curation.py ``exchange_delete`` (deleting an
    exchange that does not exist is 200) and ``exchange_create`` of an API that is not
    installed (400: no such exchange type)."""
    r = client.delete("/c/exchange/TEST_EXCHANGE")
    assert r.status_code == 200 and r.json()["message"] == "Exchange deleted"
    r = client.post("/c/exchanges", json={"api": "sample", "bank": "FOO_EXCHANGE", "api_json": {}})
    assert r.status_code == 400 and "No such exchange type" in r.json()["message"]
    assert client.post("/c/exchanges", json={"api": "sample"}).status_code == 400
    assert client.post("/c/exchanges", json={"bank": "lower", "api": "x"}).status_code == 400
    assert client.post("/c/exchanges", json={"bank": "FOO"}).status_code == 400
    assert client.get("/c/exchanges").json() == []


def test_exchange_get_fetch_status(client: httpx.Client) -> None:
    """tests/test_api.py::test_exchange_get_fetch_status; curation.py
    ``exchange_get_fetch_status``: an unknown exchange is 404 (and none can be created of an
    API that is not installed)."""
    r = client.get("/c/exchange/NONEXISTENT_EXCHANGE/status")
    assert r.status_code == 404 and "message" in r.json()
    assert client.get("/c/exchange/NONEXISTENT_EXCHANGE").status_code == 404
    assert (
        client.put("/c/exchange/NONEXISTENT_EXCHANGE", json={"enabled": False}).status_code == 404
    )
    r = client.post("/c/exchanges", json={"api": "sample", "bank": "BAR_EXCHANGE", "api_json": {}})
    assert r.status_code == 400


def test_exchange_lifecycle_local_file(client: httpx.Client, tmp_path: Path) -> None:
    """curation.py ``exchange_create`` / ``exchange_show_by_name`` / ``exchange_update`` /
    ``exchange_get_fetch_status`` / ``exchange_delete`` with an installed API (local_file)."""
    lst = tmp_path / "list.te"
    lst.write_text("pdq " + "f" * 64 + "\n")
    body = {"api": "local_file", "bank": "LOCAL_EX", "api_json": {"path": str(lst)}}
    r = client.post("/c/exchanges", json=body)
    assert r.status_code == 201 and r.json() == {"message": "Created successfully"}
    assert client.get("/c/exchanges").json() == ["LOCAL_EX"]
    got = client.get("/c/exchange/LOCAL_EX").json()
    assert (got["name"], got["api"], got["enabled"], got["path"]) == (
        "LOCAL_EX",
        "local_file",
        True,
        str(lst),
    )
    st = client.get("/c/exchange/LOCAL_EX/status").json()
    keys = {"checkpoint_ts", "running_fetch_start_ts", "last_fetch_complete_ts"}
    assert keys | {"last_fetch_succeeded", "up_to_date", "fetched_items"} <= set(st)
    assert st["fetched_items"] == 0 and st["up_to_date"] is False
    r = client.put("/c/exchange/LOCAL_EX", json={"enabled": False})
    assert r.status_code == 200 and r.json()["enabled"] is False
    bad = {"api": "local_file", "bank": "LOCAL_EX2", "api_json": {"nope": 1}}
    assert client.post("/c/exchanges", json=bad).status_code == 400
    schema = client.get("/c/exchanges/api/local_file/schema").json()
    assert schema["credentials_schema"] is None
    assert "path" in [f["name"] for f in schema["config_schema"]["fields"]]
    assert client.delete("/c/exchange/LOCAL_EX").json() == {"message": "Exchange deleted"}
    assert client.get("/c/exchanges").json() == []
