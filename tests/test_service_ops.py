"""Operations (metrics, health, readiness, JSON logs, settings), /api/v1 banks and matching,
and the service over real HTTP (uvicorn on 127.0.0.1)."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from test_hma_api import ALL_PERMS, PDQ_A, benign_jpeg, make_settings
from tipline.service.app import create_app
from tipline.service.ops import JsonFormatter, request_id_var
from tipline.service.settings import ServiceSettings, SettingsError
from tipline.store import migrations


@pytest.fixture
def client(db_url: str, tmp_path: Path) -> Iterator[TestClient]:
    migrations.upgrade(db_url)
    with TestClient(create_app(make_settings(tmp_path, db_url), load_index="sync")) as c:
        yield c


# ----------------------------------------------------------------------------------- ops


def test_health_readiness_and_metrics(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {"status": "ready", "checks": {"database": "ok", "index": "ok"}}
    client.post("/c/banks", json={"name": "M"})
    client.post("/c/bank/M/signal", json={"pdq": PDQ_A})
    client.get("/m/lookup", params={"signal_type": "pdq", "signal": PDQ_A})
    client.get("/m/lookup", params={"signal_type": "pdq", "signal": "bad"})
    text = client.get("/metrics").text
    assert 'tipline_http_requests_total{method="GET",route="/m/lookup",status="200"} 1.0' in text
    assert 'tipline_http_requests_total{method="GET",route="/m/lookup",status="400"} 1.0' in text
    assert 'tipline_http_request_seconds_bucket{le="0.05",method="GET",route="/m/lookup"}' in text
    assert 'tipline_matches_total{bank="M"} 1.0' in text
    assert "tipline_index_entries 1.0" in text
    assert "tipline_index_loaded 1.0" in text


def test_not_ready_until_index_loaded(db_url: str, tmp_path: Path) -> None:
    migrations.upgrade(db_url)
    with TestClient(create_app(make_settings(tmp_path, db_url), load_index="none")) as c:
        assert c.get("/healthz").status_code == 200
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["checks"]["index"] == "not loaded"
        assert "tipline_index_loaded 0.0" in c.get("/metrics").text


def test_database_gone_is_a_clear_503(tmp_path: Path) -> None:
    """The database goes away mid-run: readiness says so, requests get a clear 503 with
    ``{"message"}``, nothing is lost, and the service recovers by itself when it is back."""
    dbdir = tmp_path / "db"
    db = f"sqlite:///{dbdir / 'svc.sqlite3'}"
    migrations.upgrade(db)
    app = create_app(make_settings(tmp_path, db), load_index="sync")
    with TestClient(app) as c:
        assert c.post("/c/banks", json={"name": "KEEP"}).status_code == 201
        app.state.ctx.engine.dispose()  # drop pooled connections, as a server restart would
        away = tmp_path / "db.away"
        dbdir.rename(away)
        dbdir.write_text("not a directory")  # the database cannot be opened nor re-created
        try:
            r = c.get("/readyz")
            assert r.status_code == 503 and r.json()["checks"]["database"].startswith("error")
            r = c.get("/c/banks")
            assert r.status_code == 503 and "message" in r.json()
            assert r.headers["retry-after"] == "5"
            # lookups are answered from memory meanwhile
            r = c.get("/m/lookup", params={"signal_type": "pdq", "signal": PDQ_A})
            assert r.status_code == 200
        finally:
            dbdir.unlink()
            away.rename(dbdir)
        assert c.get("/readyz").status_code == 200
        assert c.get("/c/banks").json() == [{"name": "KEEP", "matching_enabled_ratio": 1.0}]


def test_request_id_and_json_log_line(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    r = client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    r = client.get("/healthz", headers={"X-Request-ID": "bad id\x7f"})
    assert len(r.headers["x-request-id"]) == 32  # replaced by a fresh one

    record = logging.makeLogRecord(
        {
            "name": "tipline.access",
            "levelno": 20,
            "levelname": "INFO",
            "msg": "request",
            "route": "/m/lookup",
            "status": 200,
            "ms": 1.5,
        }
    )
    token = request_id_var.set("rid-1")
    try:
        line = JsonFormatter().format(record)
    finally:
        request_id_var.reset(token)
    obj = json.loads(line)
    assert obj["msg"] == "request" and obj["level"] == "info" and obj["request_id"] == "rid-1"
    assert obj["route"] == "/m/lookup" and obj["status"] == 200 and obj["ms"] == 1.5
    assert obj["ts"].endswith("Z") and "\n" not in line


def test_settings_file_env_and_overrides(tmp_path: Path) -> None:
    cfg = tmp_path / "tipline.toml"
    cfg.write_text('port = 9001\nmedia_mode = "hash-only"\nlog_level = "DEBUG"\n')
    s = ServiceSettings.load(cfg, env={"TIPLINE_PORT": "9002", "TIPLINE_WORKERS": "3"})
    assert (s.port, s.workers, s.media_mode, s.log_level) == (9002, 3, "hash-only", "debug")
    s = ServiceSettings.load(cfg, env={"TIPLINE_PORT": "9002"}, port=9003)
    assert s.port == 9003
    js = tmp_path / "t.json"
    js.write_text(json.dumps({"service": {"data_dir": str(tmp_path), "json_logs": False}}))
    s = ServiceSettings.load(js, env={})
    assert s.data_dir == tmp_path and s.json_logs is False
    assert s.db_url == f"sqlite:///{tmp_path / 'tipline.sqlite3'}"
    assert s.key_path == tmp_path / "media.key"
    for bad_text in ("port = 'x'\n", "nope = 1\n", "media_mode = 'plain'\n", "[[x\n"):
        cfg.write_text(bad_text)
        with pytest.raises(SettingsError):
            ServiceSettings.load(cfg, env={})
    with pytest.raises(SettingsError):
        ServiceSettings.load(env={"TIPLINE_WORKERS": "0"})
    with pytest.raises(SettingsError):
        ServiceSettings.load(tmp_path / "missing.toml", env={})


# ----------------------------------------------------------------------------------- /api/v1


def test_api_v1_banks_entries_and_match(client: TestClient) -> None:
    r = client.post("/api/v1/banks", json={"name": "V1", "role": "alert", "pdq_threshold": 20})
    assert r.status_code == 201 and r.json()["entries"] == 0
    assert client.post("/api/v1/banks", json={"name": "v1"}).status_code == 400
    r = client.post(
        "/api/v1/banks/V1/entries",
        json={"entries": [{"signal_type": "pdq", "signal": PDQ_A, "label": "case-7"}]},
    )
    assert r.status_code == 201
    [eid] = r.json()["ids"]
    r = client.post(
        "/api/v1/banks/V1/entries", json={"entries": [{"signal_type": "pdq", "signal": "x"}]}
    )
    assert r.status_code == 400 and "message" in r.json()
    assert client.get("/api/v1/banks/V1").json()["entries"] == 1
    assert client.get("/api/v1/banks/V1/entries").json()[0]["label"] == "case-7"

    r = client.post(
        "/api/v1/match",
        json={
            "signals": [
                {"signal_type": "pdq", "signal": PDQ_A},
                {"signal_type": "pdq", "signal": "zz"},
            ]
        },
    )
    res = r.json()["results"]
    assert res[0]["matches"] == [
        {"bank": "V1", "entry_id": eid, "signal_type": "pdq", "distance": 0, "label": "case-7"}
    ]
    assert res[1]["matches"] == [] and "error" in res[1]
    # per-bank threshold: 24 bits away is beyond V1's 20
    far = "0" * 6 + "f" * 58
    r = client.post("/api/v1/match", json={"signals": [{"signal_type": "pdq", "signal": far}]})
    assert r.json()["results"][0]["matches"] == []
    assert client.post("/api/v1/match", json={"signals": "no"}).status_code == 422

    # an upload: hashes, matches with label, provenance evidence
    jpeg = benign_jpeg(5)
    pdq = client.post("/h/hash", files={"photo": ("a.jpg", jpeg, "image/jpeg")}).json()["pdq"]
    client.post(
        "/api/v1/banks/V1/entries",
        json={"entries": [{"signal_type": "pdq", "signal": pdq, "label": "up"}]},
    )
    r = client.post("/api/v1/match", files={"file": ("a.jpg", jpeg, "image/jpeg")})
    body = r.json()
    assert body["item"]["pdq"] == pdq and body["item"]["media_type"] == "image/jpeg"
    assert [(m["bank"], m["label"], m["distance"]) for m in body["matches"]] == [("V1", "up", 0)]
    assert "ai_evidence" in body and isinstance(body["provenance"], list)

    r = client.patch(f"/api/v1/banks/V1/entries/{eid}", json={"enabled": False})
    assert r.json()["enabled"] is False
    r = client.post("/api/v1/match", json={"signals": [{"signal_type": "pdq", "signal": PDQ_A}]})
    assert r.json()["results"][0]["matches"] == []
    assert client.delete(f"/api/v1/banks/V1/entries/{eid}").json() == {"deleted": 1}
    assert client.delete(f"/api/v1/banks/V1/entries/{eid}").status_code == 404
    status = client.get("/api/v1/index/status").json()
    assert status["loaded"] is True and status["size"] == 1
    assert client.patch("/api/v1/banks/V1", json={"enabled": False}).json()["enabled"] is False
    assert client.delete("/api/v1/banks/V1").json() == {"deleted_entries": 1}
    assert client.get("/api/v1/banks/V1").status_code == 404


# ----------------------------------------------------------------------------------- real HTTP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serving(app: object) -> Iterator[int]:
    """``app`` on a real uvicorn server on 127.0.0.1 in a thread; yields the port."""
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)  # type: ignore[arg-type]
    )
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/status", timeout=2).text == "I-AM-ALIVE":
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.05)
        yield port
    finally:
        server.should_exit = True
        t.join(10)


def test_slow_upload_is_cut_off(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'svc.sqlite3'}"
    migrations.upgrade(db)
    app = create_app(make_settings(tmp_path, db, upload_timeout_seconds=1.0), load_index="sync")
    with serving(app) as port, socket.create_connection(("127.0.0.1", port), timeout=15) as s:
        s.sendall(
            b"POST /h/hash HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: multipart/form-data; boundary=XX\r\nContent-Length: 100000\r\n\r\n"
            b'--XX\r\nContent-Disposition: form-data; name="photo"; filename="a.jpg"\r\n\r\n'
        )
        t0 = time.monotonic()
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        assert time.monotonic() - t0 < 10
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408")
    assert "message" in json.loads(body)


def test_real_http_server(db_url: str, tmp_path: Path) -> None:
    migrations.upgrade(db_url)
    settings = make_settings(tmp_path, db_url, anonymous_permissions=ALL_PERMS)
    app = create_app(settings, load_index="background")
    with serving(app) as port:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=10) as c:
            assert c.post("/c/banks", json={"name": "HTTP_BANK"}).status_code == 201
            cid = c.post("/c/bank/HTTP_BANK/signal", json={"pdq": PDQ_A}).json()["id"]
            r = c.get(
                "/m/lookup",
                params={"signal_type": "pdq", "signal": PDQ_A},
                headers={"X-Request-ID": "req-42"},
            )
            assert r.json() == {"HTTP_BANK": [{"bank_content_id": cid, "distance": "0"}]}
            assert r.headers["x-request-id"] == "req-42"
            assert c.get("/readyz").status_code == 200
            assert "tipline_http_requests_total" in c.get("/metrics").text


def test_tipline_serve_on_a_fresh_data_dir(tmp_path: Path) -> None:
    """`tipline serve` with no configuration: SQLite in the data dir, migrated on start."""
    import os
    import subprocess
    import sys

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIPLINE_")}
    env.update(
        {
            "TIPLINE_DATA_DIR": str(tmp_path / "fresh"),
            "TIPLINE_ANONYMOUS_PERMISSIONS": "match:read",
            "TIPLINE_INPROCESS_WORKERS": "0",
        }
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "tipline", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                if r.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            assert time.monotonic() < deadline, "tipline serve did not become ready"
            time.sleep(0.1)
        r = httpx.get(
            f"http://127.0.0.1:{port}/m/lookup", params={"signal_type": "pdq", "signal": PDQ_A}
        )
        assert r.status_code == 200 and r.json() == {}
        assert (tmp_path / "fresh" / "tipline.sqlite3").exists()
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0].decode()
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    assert lines and all(json.loads(ln)["ts"] for ln in lines)  # JSON log lines
    assert any(json.loads(ln).get("route") == "/m/lookup" for ln in lines)


def test_api_v1_hash_list_import(client: TestClient) -> None:
    client.post("/api/v1/banks", json={"name": "LIST"})
    good = [f"{i * 0x1234567:064x}" for i in range(1, 50)]
    body = "\n".join([*good, good[0]]) + "\n"
    r = client.post(
        "/api/v1/banks/LIST/import",
        params={"format": "hex", "signal_type": "pdq", "label": "list-1"},
        content=body,
    )
    assert r.status_code == 200, r.text
    assert r.json()["added"] == 49 and r.json()["duplicates"] == 1
    r = client.get("/m/lookup", params={"signal_type": "pdq", "signal": good[5]})
    assert r.json()["LIST"][0]["distance"] == "0"
    # a bad line: nothing imported, the line named; with skip_bad_lines the rest goes in
    bad = "\n".join([f"{0xABCDEF:064x}", "not a hash", f"{0xFEDCBA:064x}"]) + "\n"
    r = client.post(
        "/api/v1/banks/LIST/import", params={"format": "hex", "signal_type": "pdq"}, content=bad
    )
    assert r.status_code == 400 and "line 2" in r.json()["message"]
    assert client.get("/api/v1/banks/LIST").json()["entries"] == 49
    r = client.post(
        "/api/v1/banks/LIST/import",
        params={"format": "hex", "signal_type": "pdq", "skip_bad_lines": "true"},
        content=bad,
    )
    assert r.json()["added"] == 2 and r.json()["skipped_lines"] == 1
    assert client.post("/api/v1/banks/NOPE/import", content=bad).status_code == 404


def test_api_v1_bank_review_settings(client: TestClient) -> None:
    assert client.post("/api/v1/banks", json={"name": "TRUSTED"}).status_code == 201
    out = client.get("/api/v1/banks/TRUSTED").json()
    assert (out["auto_confirm"], out["consensus_required"]) == (False, None)
    r = client.patch("/api/v1/banks/TRUSTED", json={"auto_confirm": True, "consensus_required": 3})
    assert r.status_code == 200, r.text
    assert (r.json()["auto_confirm"], r.json()["consensus_required"]) == (True, 3)
    r = client.patch("/api/v1/banks/TRUSTED", json={"consensus_required": 0, "pdq_threshold": 20})
    assert r.json()["consensus_required"] is None and r.json()["pdq_threshold"] == 20
    assert r.json()["auto_confirm"] is True
    assert client.patch("/api/v1/banks/TRUSTED", json={"consensus_required": 11}).status_code in (
        400,
        422,
    )


@pytest.mark.slow
def test_metrics_add_up_across_api_processes(tmp_path: Path) -> None:
    """`tipline serve --workers 2`: /metrics counts every process's requests, whichever
    process answers the scrape."""
    import os
    import re
    import subprocess
    import sys

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIPLINE_", "PROMETHEUS"))}
    env.update(
        {
            "TIPLINE_DATA_DIR": str(tmp_path / "multi"),
            "TIPLINE_ANONYMOUS_PERMISSIONS": "match:read",
            "TIPLINE_INPROCESS_WORKERS": "0",
        }
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "tipline", "serve", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None
            assert time.monotonic() < deadline, "tipline serve did not become ready"
            time.sleep(0.2)
        n = 40
        answered: dict[str, int] = {}
        for _ in range(n):  # new connections: spread over both processes
            with httpx.Client() as c:
                res = c.get(url + "/m/lookup", params={"signal_type": "pdq", "signal": PDQ_A})
            # /readyz came from one process; the other may still be loading its index (503)
            answered[str(res.status_code)] = answered.get(str(res.status_code), 0) + 1
        assert set(answered) <= {"200", "503"} and answered.get("200"), answered
        pattern = re.compile(
            r'^tipline_http_requests_total\{method="GET",route="/m/lookup",status="(\d+)"\} (\S+)$',
            re.M,
        )
        for _ in range(6):  # every scrape, from either process, sees the total
            with httpx.Client() as c:
                text = c.get(url + "/metrics").text
            counted = {status: int(float(v)) for status, v in pattern.findall(text)}
            assert counted == answered, text[:2000]
    finally:
        proc.terminate()
        proc.wait(30)
    assert (tmp_path / "multi" / "metrics").is_dir()


def test_the_app_holds_one_typed_context_built_at_start(db_url: str, tmp_path: Path) -> None:
    """One thing on app.state (the AppContext), every part of it built by create_app before
    any request: authentication, intake, the desk, the in-process workers' pipeline."""
    from tipline.service.context import AppContext

    migrations.upgrade(db_url)
    app = create_app(make_settings(tmp_path, db_url, inprocess_workers=1), load_index="none")
    ctx = app.state.ctx
    try:
        assert set(vars(app.state)["_state"]) == {"ctx"}
        assert isinstance(ctx, AppContext)
        assert ctx.auth is not None and ctx.intake is not None and ctx.desk is not None
        assert ctx.pipeline is not None  # built now, not on the first job
        assert ctx.auth.session_factory is ctx.session_factory
    finally:
        ctx.engine.dispose()
    # no in-process workers: no pipeline configuration is built at all
    app = create_app(make_settings(tmp_path, db_url), load_index="none")
    try:
        assert app.state.ctx.pipeline is None
    finally:
        app.state.ctx.engine.dispose()
