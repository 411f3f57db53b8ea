"""Media at rest: hash-only mode, AES-256-GCM blobs, keys and rotation, retention purge, and
serving bytes only with auth and an audit event per view. All media here is generated noise."""

from __future__ import annotations

import base64
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from tipline.actions import retention
from tipline.audit import log as audit
from tipline.service import auth
from tipline.service.app import create_app
from tipline.service.errors import HttpError
from tipline.service.media import view_media
from tipline.service.settings import ServiceSettings
from tipline.store import media as ms
from tipline.store.tables import AuditEvent, Item

BENIGN = b"benign test bytes: " + bytes(range(256)) * 8


def _store(tmp_path: Path, *keys: bytes) -> ms.EncryptedStore:
    ring = ms.Keyring()
    for k in keys:
        ring.add(k)
    return ms.EncryptedStore(tmp_path / "media", ring)


def _blob_path(store: ms.EncryptedStore, ref: str) -> Path:
    return store.root / ref[:2] / f"{ref}.blob"


# -- modes and the blob format ----------------------------------------------------------------


def test_hash_only_keeps_nothing(tmp_path: Path) -> None:
    store = ms.open_media_store("hash-only", tmp_path)
    assert store.put(BENIGN) is None
    with pytest.raises(ms.MediaNotFound, match="hash-only"):
        store.get("0" * 32)
    assert list(store.refs()) == [] and list(tmp_path.iterdir()) == []
    with pytest.raises(ms.MediaError, match="unknown media mode"):
        ms.open_media_store("plaintext", tmp_path)


def test_encrypted_round_trip_and_format(tmp_path: Path) -> None:
    key = ms.new_key()
    store = _store(tmp_path, key)
    ref1, ref2 = store.put(BENIGN), store.put(BENIGN)
    assert ref1 != ref2 and ms.valid_ref(ref1)
    assert store.get(ref1) == BENIGN == store.get(ref2)
    blob1, blob2 = _blob_path(store, ref1).read_bytes(), _blob_path(store, ref2).read_bytes()
    assert blob1.startswith(ms.MAGIC) and BENIGN[:40] not in blob1
    assert blob1[20:32] != blob2[20:32]  # a fresh nonce per blob
    assert blob1[12:20] == ms.key_id(key)  # the key id is in the header
    assert stat.S_IMODE(_blob_path(store, ref1).stat().st_mode) == 0o600
    assert sorted(store.refs()) == sorted([ref1, ref2])
    assert abs((store.created_at(ref1) - datetime.now(UTC)).total_seconds()) < 120


@pytest.mark.parametrize("where", ["header-date", "ciphertext", "tag"])
def test_tampering_is_detected(tmp_path: Path, where: str) -> None:
    store = _store(tmp_path, ms.new_key())
    ref = store.put(BENIGN)
    path = _blob_path(store, ref)
    blob = bytearray(path.read_bytes())
    pos = {"header-date": 10, "ciphertext": ms.HEADER_SIZE + 3, "tag": len(blob) - 1}[where]
    blob[pos] ^= 0x01
    path.write_bytes(bytes(blob))
    with pytest.raises(ms.MediaError, match="tampered"):
        store.get(ref)


def test_blob_cannot_be_moved_to_another_ref(tmp_path: Path) -> None:
    store = _store(tmp_path, ms.new_key())
    ref = store.put(BENIGN)
    other = "f" * 32
    _blob_path(store, other).parent.mkdir(parents=True, exist_ok=True)
    _blob_path(store, other).write_bytes(_blob_path(store, ref).read_bytes())
    with pytest.raises(ms.MediaError, match="tampered"):
        store.get(other)


def test_bad_refs_and_truncated_blobs(tmp_path: Path) -> None:
    store = _store(tmp_path, ms.new_key())
    for ref in ("../../etc/passwd", "A" * 32, "0" * 31, ""):
        with pytest.raises(ms.MediaNotFound):
            store.get(ref)
    with pytest.raises(ms.MediaNotFound):
        store.get("0" * 32)
    ref = store.put(BENIGN)
    _blob_path(store, ref).write_bytes(b"TLM1")
    with pytest.raises(ms.MediaError, match="truncated"):
        store.get(ref)


def test_missing_key_is_a_clear_error(tmp_path: Path) -> None:
    old = ms.new_key()
    ref = _store(tmp_path, old).put(BENIGN)
    store = _store(tmp_path, ms.new_key())
    with pytest.raises(ms.MediaError, match=f"key {ms.key_id(old).hex()}.*not loaded"):
        store.get(ref)
    with pytest.raises(ms.MediaError, match="no media key"):
        _store(tmp_path).put(BENIGN)


# -- keys --------------------------------------------------------------------------------------


def test_key_file_and_environment(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "media.key"
    kid1 = ms.add_key_to_file(path, create_only=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(ms.MediaError, match="already exists"):
        ms.add_key_to_file(path, create_only=True)
    kid2 = ms.add_key_to_file(path)
    ring = ms.Keyring.load(path, env={})
    assert ring.active == kid2 and set(ring.keys) == {kid1, kid2}
    env_key = ms.new_key()
    ring = ms.Keyring.load(path, env={ms.KEY_ENV: base64.b64encode(env_key).decode()})
    assert ring.active == ms.key_id(env_key) and len(ring.keys) == 3
    with pytest.raises(ms.MediaError, match="base64"):
        ms.Keyring.load(None, env={ms.KEY_ENV: "not base64!!"})
    with pytest.raises(ms.MediaError, match="32 bytes"):
        ms.Keyring.load(None, env={ms.KEY_ENV: base64.b64encode(b"short").decode()})
    assert ms.keep_only_active(path) == 1
    assert set(ms.Keyring.load(path, env={}).keys) == {kid2}


def test_rotation_reencrypts_everything_and_keeps_dates(tmp_path: Path) -> None:
    path = tmp_path / "media.key"
    ms.add_key_to_file(path)
    store = ms.EncryptedStore(tmp_path / "media", ms.Keyring.load(path, env={}))
    old_date = datetime.now(UTC) - timedelta(days=3)
    refs = [store.put(BENIGN + bytes([i]), created=old_date) for i in range(3)]
    new_kid = ms.add_key_to_file(path)
    store = ms.EncryptedStore(tmp_path / "media", ms.Keyring.load(path, env={}))
    result = ms.rotate(store)
    assert (result.reencrypted, result.unchanged, result.failed) == (3, 0, [])
    assert result.active_key == new_kid.hex()
    assert ms.rotate(store).reencrypted == 0  # idempotent
    ms.keep_only_active(path)
    store = ms.EncryptedStore(tmp_path / "media", ms.Keyring.load(path, env={}))
    for i, ref in enumerate(refs):
        assert store.key_of(ref) == new_kid
        assert store.get(ref) == BENIGN + bytes([i])
        assert abs((store.created_at(ref) - old_date).total_seconds()) < 2


def test_cli_keygen_rotate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tipline.cli.app import _register, app

    _register()
    monkeypatch.delenv(ms.KEY_ENV, raising=False)
    runner = CliRunner()
    env = {"TIPLINE_DATA_DIR": str(tmp_path)}
    res = runner.invoke(app, ["media", "keygen"], env=env)
    assert res.exit_code == 0, res.output
    key_path = tmp_path / "media.key"
    assert key_path.exists()
    assert runner.invoke(app, ["media", "keygen"], env=env).exit_code == 2
    store = ms.open_media_store("encrypted", tmp_path, env={})
    ref = store.put(BENIGN)
    res = runner.invoke(app, ["media", "rotate-key", "--drop-old"], env=env)
    assert res.exit_code == 0, res.output
    assert "re-encrypted 1 blobs" in res.output and "dropped 1 old key" in res.output
    store = ms.open_media_store("encrypted", tmp_path, env={})
    assert store.get(ref) == BENIGN and len(store.keyring.keys) == 1
    env_key = base64.b64encode(ms.new_key()).decode()
    res = runner.invoke(app, ["media", "rotate-key"], env={**env, ms.KEY_ENV: env_key})
    assert res.exit_code == 2 and "--no-new-key" in res.output


# -- retention ---------------------------------------------------------------------------------


def test_purge_deletes_expired_media_with_an_audit_event_each(
    tmp_path: Path, engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    store = _store(tmp_path, ms.new_key())
    now = datetime.now(UTC)
    old = [store.put(BENIGN, created=now - timedelta(days=40)) for _ in range(2)]
    fresh = store.put(BENIGN, created=now - timedelta(days=5))
    with session_factory() as s, s.begin():
        for i, ref in enumerate([*old, fresh]):
            s.add(Item(sha256=f"{i:064x}", media_ref=ref))
    assert retention.purge(store, session_factory, 0).purged == []  # 0 = keep forever
    result = retention.purge(store, session_factory, 30)
    assert sorted(result.purged) == sorted(old) and result.kept == 1
    assert list(store.refs()) == [fresh]
    with session_factory() as s:
        refs = set(s.scalars(select(Item.media_ref)))
        events = list(s.scalars(select(AuditEvent).order_by(AuditEvent.id)))
        assert audit.verify(s).ok
    assert refs == {None, fresh}
    assert [e.action for e in events] == ["media.purge", "media.purge"]
    assert sorted(e.target_id or "" for e in events) == sorted(old)
    assert events[0].details["retention_days"] == 30
    assert retention.purge(store, session_factory, 30).purged == []


def test_cli_purge(
    db_url: str, tmp_path: Path, engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    from tipline.cli.app import _register, app

    _register()
    store = _store(tmp_path, ms.new_key())
    store.put(BENIGN, created=datetime.now(UTC) - timedelta(days=10))
    res = CliRunner().invoke(
        app,
        ["media", "purge", "--days", "7"],
        env={"TIPLINE_DATA_DIR": str(tmp_path), "TIPLINE_DATABASE_URL": db_url},
    )
    assert res.exit_code == 0, res.output
    assert "purged 1 blobs, kept 0" in res.output
    env = {"TIPLINE_DATA_DIR": str(tmp_path), "TIPLINE_DATABASE_URL": db_url}
    store.put(BENIGN, created=datetime.now(UTC) - timedelta(days=10))
    res = CliRunner().invoke(app, ["media", "purge"], env=env)  # setting: 0 = keep forever
    assert res.exit_code == 0 and "nothing purged" in res.output
    res = CliRunner().invoke(
        app, ["media", "purge"], env={**env, "TIPLINE_MEDIA_RETENTION_DAYS": "9"}
    )
    assert res.exit_code == 0 and "purged 1 blobs" in res.output, res.output
    with session_factory() as s:
        actors = [e.actor for e in s.scalars(select(AuditEvent))]
    assert actors == ["cli:media-purge"] * 2


# -- serving -----------------------------------------------------------------------------------


@pytest.fixture
def served(
    db_url: str, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[TestClient, ms.EncryptedStore]]:
    monkeypatch.delenv(ms.KEY_ENV, raising=False)
    ms.add_key_to_file(tmp_path / "media.key")
    settings = ServiceSettings(data_dir=tmp_path, database_url=db_url, media_mode="encrypted")
    app = create_app(settings, load_index="none")
    app.state.ctx.auth.token_cache_seconds = 0
    store = app.state.ctx.auth.media_store
    assert isinstance(store, ms.EncryptedStore)
    with TestClient(app) as c:
        yield c, store


def test_media_is_served_only_with_auth_and_every_view_is_audited(
    served: tuple[TestClient, ms.EncryptedStore], session_factory: sessionmaker[Session]
) -> None:
    client, store = served
    ref = store.put(BENIGN)
    with session_factory() as s, s.begin():
        analyst = auth.create_user(s, "ana", "analyst")
        auditor = auth.create_user(s, "aud", "auditor")
        partner = auth.create_user(s, "acme", "partner")
        t_analyst = auth.create_token(s, analyst, "v", ["media:view"])
        t_auditor = auth.create_token(s, auditor, "v", ["audit:read"])
        t_partner = auth.create_token(s, partner, "v", ["match:read"])
    url = f"/api/v1/media/{ref}"
    assert client.get(url).status_code == 401
    for tok in (t_auditor, t_partner):
        res = client.get(url, headers={"Authorization": f"Bearer {tok}"})
        assert res.status_code == 403 and res.json() == {
            "message": "permission 'media:view' required"
        }
    with session_factory() as s:
        assert list(s.scalars(select(AuditEvent))) == []  # refusals show no bytes
    hdr = {"Authorization": f"Bearer {t_analyst}"}
    for _ in range(2):
        res = client.get(url, headers=hdr)
        assert res.status_code == 200 and res.content == BENIGN
        assert res.headers["cache-control"] == "no-store"
        assert res.headers["x-content-type-options"] == "nosniff"
        assert res.headers["content-type"] == "application/octet-stream"
    res = client.get("/api/v1/media/" + "0" * 32, headers=hdr)
    assert res.status_code == 404 and set(res.json()) == {"message"}
    assert client.get("/api/v1/media/..%2f..%2fetc", headers=hdr).status_code == 404
    with session_factory() as s:
        events = list(s.scalars(select(AuditEvent).order_by(AuditEvent.id)))
        assert audit.verify(s).ok
    assert [(e.action, e.target_id) for e in events] == [("media.view", ref)] * 2
    assert events[0].actor.endswith(":ana") and events[0].ip


def test_view_media_function_refuses_without_permission(
    tmp_path: Path, engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    store = _store(tmp_path, ms.new_key())
    ref = store.put(BENIGN)
    nobody = auth.Principal(1, "aud", "auditor", auth.ROLE_PERMISSIONS["auditor"], "session")
    with pytest.raises(HttpError):
        view_media(store, session_factory, nobody, ref, "192.0.2.7")
    with pytest.raises(HttpError):
        view_media(store, session_factory, None, ref, "192.0.2.7")
    ana = auth.Principal(2, "ana", "analyst", auth.ROLE_PERMISSIONS["analyst"], "session")
    assert view_media(store, session_factory, ana, ref, "192.0.2.7") == BENIGN
    with session_factory() as s:
        (event,) = s.scalars(select(AuditEvent))
    assert (event.action, event.actor, event.ip) == ("media.view", "user:ana", "192.0.2.7")


def test_hash_only_server_serves_nothing(
    db_url: str, engine: Engine, tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    settings = ServiceSettings(data_dir=tmp_path, database_url=db_url, media_mode="hash-only")
    app = create_app(settings, load_index="none")
    with session_factory() as s, s.begin():
        tok = auth.create_token(s, auth.create_user(s, "a", "admin"), "v", ["media:view"])
    with TestClient(app) as client:
        res = client.get("/api/v1/media/" + "a" * 32, headers={"Authorization": f"Bearer {tok}"})
    assert res.status_code == 404 and "hash-only" in res.json()["message"]
    assert not (tmp_path / "media").exists()


def test_media_over_a_real_http_server(
    db_url: str,
    engine: Engine,
    tmp_path: Path,
    session_factory: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """uvicorn on 127.0.0.1: no bytes without a session, bytes plus an audit event with one."""
    import socket
    import threading
    import time

    import httpx
    import uvicorn

    monkeypatch.delenv(ms.KEY_ENV, raising=False)
    ms.add_key_to_file(tmp_path / "media.key")
    settings = ServiceSettings(data_dir=tmp_path, database_url=db_url, media_mode="encrypted")
    app = create_app(settings, load_index="none")
    ref = app.state.ctx.auth.media_store.put(BENIGN)
    with session_factory() as s, s.begin():
        auth.create_user(s, "ana", "analyst", "correct horse battery")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if server.started:
                break
            time.sleep(0.05)
        assert server.started
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
            assert c.get(f"/api/v1/media/{ref}").status_code == 401
            res = c.post(
                "/api/v1/auth/login",
                json={"username": "ana", "password": "correct horse battery"},
            )
            assert res.status_code == 200
            cookie = res.cookies[auth.SESSION_COOKIE]
            assert "httponly" in res.headers["set-cookie"].lower()
            c.cookies.clear()
            hdr = {"Cookie": f"{auth.SESSION_COOKIE}={cookie}"}
            res = c.get(f"/api/v1/media/{ref}", headers=hdr)
            assert res.status_code == 200 and res.content == BENIGN
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
    with session_factory() as s:
        actions = [(e.action, e.target_id) for e in s.scalars(select(AuditEvent))]
    assert actions == [("auth.login", actions[0][1]), ("media.view", ref)]


def test_default_key_is_created_once_on_first_use(tmp_path: Path) -> None:
    import threading

    settings = ServiceSettings(data_dir=tmp_path, media_mode="encrypted")
    stores: list[ms.HashOnlyStore | ms.EncryptedStore] = []
    threads = [
        threading.Thread(target=lambda: stores.append(ms.from_settings(settings, env={})))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ms.read_key_lines(tmp_path / "media.key")) == 1
    assert stat.S_IMODE((tmp_path / "media.key").stat().st_mode) == 0o600
    kids = {s.keyring.active for s in stores if isinstance(s, ms.EncryptedStore)}
    assert len(kids) == 1  # every process agrees on the key
    ref = stores[0].put(BENIGN)
    assert ref is not None and stores[-1].get(ref) == BENIGN
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    # An explicitly configured key file is never invented.
    explicit = ServiceSettings(
        data_dir=tmp_path / "b", media_mode="encrypted", key_file=str(tmp_path / "k.key")
    )
    store = ms.from_settings(explicit, env={})
    assert not (tmp_path / "k.key").exists()
    with pytest.raises(ms.MediaError, match="no media key"):
        store.put(BENIGN)
    # Nor is one made in hash-only mode or when the key comes from the environment.
    ms.from_settings(ServiceSettings(data_dir=tmp_path / "c", media_mode="hash-only"), env={})
    env = {ms.KEY_ENV: base64.b64encode(ms.new_key()).decode()}
    ms.from_settings(ServiceSettings(data_dir=tmp_path / "d", media_mode="encrypted"), env=env)
    assert not (tmp_path / "c").exists() and not (tmp_path / "d" / "media.key").exists()
