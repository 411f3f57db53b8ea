"""Users, passwords, sessions, API tokens, login rate limiting and the user/token CLI."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from tipline.service import auth
from tipline.service.app import create_app
from tipline.service.settings import ServiceSettings
from tipline.store.tables import ApiToken, AuditEvent, SessionRow, User

PASSWORD = "correct horse battery"


@pytest.fixture
def app_(db_url: str, engine: Engine, tmp_path: Path) -> object:
    settings = ServiceSettings(data_dir=tmp_path, database_url=db_url, media_mode="hash-only")
    app = create_app(settings, load_index="none")
    app.state.ctx.auth.token_cache_seconds = 0
    return app


@pytest.fixture
def client(app_: object) -> Iterator[TestClient]:
    with TestClient(app_) as c:  # type: ignore[arg-type]
        yield c


def _user(
    factory: sessionmaker[Session], name: str, role: str, password: str | None = PASSWORD
) -> int:
    with factory() as s, s.begin():
        return auth.create_user(s, name, role, password).id


def _token(factory: sessionmaker[Session], name: str, scopes: list[str]) -> str:
    with factory() as s, s.begin():
        return auth.create_token(s, auth.get_user(s, name), "t", scopes)


def _login(client: TestClient, name: str, password: str = PASSWORD) -> tuple[int, dict[str, str]]:
    res = client.post("/api/v1/auth/login", json={"username": name, "password": password})
    return res.status_code, res.json()


def _actions(factory: sessionmaker[Session]) -> list[str]:
    with factory() as s:
        return list(s.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))


# -- passwords ---------------------------------------------------------------------------------


def test_passwords_are_argon2id_and_rehashed_when_parameters_change(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    uid = _user(session_factory, "alice", "analyst")
    with session_factory() as s:
        stored = s.get(User, uid)
        assert stored is not None and stored.password_hash.startswith("$argon2id$")
        assert PASSWORD not in stored.password_hash
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(PASSWORD)
    with session_factory() as s, s.begin():
        s.execute(update(User).where(User.id == uid).values(password_hash=weak))
    status, _ = _login(client, "alice")
    assert status == 200
    with session_factory() as s:
        user = s.get(User, uid)
        assert user is not None
        assert user.password_hash != weak and user.password_hash.startswith("$argon2id$")
        assert "m=8," not in user.password_hash
    assert auth.verify_password(user.password_hash, PASSWORD) == (True, None)


def test_user_validation(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as s, s.begin():
        with pytest.raises(auth.UserError, match="unknown role"):
            auth.create_user(s, "x", "superuser", PASSWORD)
        with pytest.raises(auth.UserError, match="too short"):
            auth.create_user(s, "x", "analyst", "short")
        with pytest.raises(auth.UserError, match="username"):
            auth.create_user(s, "two words", "analyst", PASSWORD)
        auth.create_user(s, "x", "analyst", PASSWORD)
        with pytest.raises(auth.UserError, match="already exists"):
            auth.create_user(s, "x", "admin", PASSWORD)


# -- sessions ----------------------------------------------------------------------------------


def test_session_login_cookie_flags_and_hashed_storage(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    _user(session_factory, "alice", "analyst")
    res = client.post("/api/v1/auth/login", json={"username": "alice", "password": PASSWORD})
    assert res.status_code == 200
    assert res.json()["role"] == "analyst" and res.json()["csrf_token"]
    header = res.headers["set-cookie"]
    assert "HttpOnly" in header and "SameSite=lax" in header.replace("Lax", "lax")
    assert "Secure" not in header  # plain http in "auto" mode
    raw = res.cookies[auth.SESSION_COOKIE]
    with session_factory() as s:
        ids = list(s.scalars(select(SessionRow.id)))
    assert ids == [auth._sha256(raw)] and raw not in ids
    me = client.get("/api/v1/auth/me")
    assert me.status_code == 200 and me.json()["username"] == "alice"
    assert me.json()["via"] == "session" and "media:view" in me.json()["permissions"]
    assert _actions(session_factory) == ["auth.login"]


def test_secure_cookie_over_https_and_when_forced(
    app_: object, session_factory: sessionmaker[Session]
) -> None:
    _user(session_factory, "alice", "analyst")
    with TestClient(app_, base_url="https://testserver") as c:  # type: ignore[arg-type]
        res = c.post("/api/v1/auth/login", json={"username": "alice", "password": PASSWORD})
        assert "Secure" in res.headers["set-cookie"]
    app_.state.ctx.auth.cookie_secure = True  # type: ignore[attr-defined]
    with TestClient(app_) as c:  # type: ignore[arg-type]
        res = c.post("/api/v1/auth/login", json={"username": "alice", "password": PASSWORD})
        assert "Secure" in res.headers["set-cookie"]


def test_wrong_password_unknown_user_and_logout(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    _user(session_factory, "alice", "analyst")
    assert _login(client, "alice", "wrong password!") == (
        401,
        {"message": "wrong username or password"},
    )
    assert _login(client, "nobody", PASSWORD) == (401, {"message": "wrong username or password"})
    status, body = _login(client, "alice")
    assert status == 200
    res = client.post("/api/v1/auth/logout", headers={auth.CSRF_HEADER: body["csrf_token"]})
    assert res.status_code == 200
    with session_factory() as s:
        assert s.scalars(select(SessionRow)).first() is None
    assert client.get("/api/v1/auth/me").status_code == 401
    assert _actions(session_factory) == [
        "auth.login_failed",
        "auth.login_failed",
        "auth.login",
        "auth.logout",
    ]


def test_idle_and_absolute_expiry(
    client: TestClient, app_: object, session_factory: sessionmaker[Session]
) -> None:
    _user(session_factory, "alice", "analyst")
    assert _login(client, "alice")[0] == 200
    assert client.get("/api/v1/auth/me").status_code == 200
    # Idle: the sliding expiry has passed.
    with session_factory() as s, s.begin():
        row = s.scalars(select(SessionRow)).one()
        row.expires_at = auth._now() - timedelta(seconds=1)
    res = client.get("/api/v1/auth/me")
    assert res.status_code == 401 and res.json() == {"message": "authentication required"}
    # Absolute: activity keeps extending the idle expiry, but never past created + max.
    client.cookies.clear()
    assert _login(client, "alice")[0] == 200
    ctx = app_.state.ctx.auth  # type: ignore[attr-defined]
    with session_factory() as s, s.begin():
        row = s.scalars(select(SessionRow)).one()
        row.created_at = auth._now() - ctx.session_max + timedelta(minutes=5)
        row.expires_at = auth._now() + timedelta(minutes=1)
    assert client.get("/api/v1/auth/me").status_code == 200
    with session_factory() as s:
        row = s.scalars(select(SessionRow)).one()
        assert row.expires_at <= row.created_at + ctx.session_max
        row_created = row.created_at
    with session_factory() as s, s.begin():
        s.execute(
            update(SessionRow).values(
                created_at=row_created - timedelta(minutes=10),
                expires_at=row_created - timedelta(minutes=10) + ctx.session_max,
            )
        )
    assert client.get("/api/v1/auth/me").status_code == 401
    # Expired sessions are cleared at the next sign-in.
    with session_factory() as s, s.begin():
        s.execute(update(SessionRow).values(expires_at=auth._now() - timedelta(seconds=1)))
    client.cookies.clear()
    assert _login(client, "alice")[0] == 200
    with session_factory() as s:
        assert len(list(s.scalars(select(SessionRow)))) == 1


def test_partner_is_api_only(client: TestClient, session_factory: sessionmaker[Session]) -> None:
    _user(session_factory, "acme", "partner", None)
    _user(session_factory, "acme2", "partner")
    assert _login(client, "acme")[0] == 401  # no password at all
    status, body = _login(client, "acme2")
    assert status == 403 and "API tokens" in body["message"]
    token = _token(session_factory, "acme", ["match:read"])
    res = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert res.status_code == 403  # the token lacks account:self
    token = _token(session_factory, "acme", ["account:self", "match:read"])
    res = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert res.status_code == 200
    assert res.json()["via"] == "token" and res.json()["permissions"] == [
        "account:self",
        "match:read",
    ]


def test_login_rate_limit(client: TestClient, session_factory: sessionmaker[Session]) -> None:
    _user(session_factory, "alice", "analyst")
    for _ in range(5):
        assert _login(client, "alice", "wrong password!")[0] == 401
    res = client.post("/api/v1/auth/login", json={"username": "alice", "password": PASSWORD})
    assert res.status_code == 429 and int(res.headers["retry-after"]) > 0
    assert "too many" in res.json()["message"]
    # Another account from the same address is not locked by alice's failures (yet).
    _user(session_factory, "bob", "analyst")
    assert _login(client, "bob")[0] == 200
    # A success clears the username's failures.
    for _ in range(4):
        assert _login(client, "bob", "wrong password!")[0] == 401
    assert _login(client, "bob")[0] == 200
    for _ in range(4):
        assert _login(client, "bob", "wrong password!")[0] == 401
    assert _login(client, "bob")[0] == 200
    # ... while the address keeps counting: 20 failures from it lock everyone out.
    for i in range(20):
        _login(client, f"nobody{i}", "wrong password!")
    assert _login(client, "bob")[0] == 429


def test_json_login_rejects_non_json(client: TestClient) -> None:
    res = client.post("/api/v1/auth/login", data={"username": "a", "password": "b"})
    assert res.status_code == 415
    res = client.post(
        "/api/v1/auth/login", content=b"[1]", headers={"content-type": "application/json"}
    )
    assert res.status_code == 400


# -- the login form ----------------------------------------------------------------------------


def test_form_login_with_csrf_and_no_open_redirect(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    _user(session_factory, "alice", "analyst")
    page = client.get("/login?next=//evil.example/")
    assert page.status_code == 200 and "<form" in page.text
    m = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert m is not None
    form = {"username": "alice", "password": PASSWORD, "csrf_token": m.group(1), "next": "//x"}
    # Without the matching cookie (a cross-site post): refused.
    fresh = TestClient(client.app)
    res = fresh.post("/login", data=form, follow_redirects=False)
    assert res.status_code == 403 and auth.SESSION_COOKIE not in res.cookies
    res = client.post("/login", data=form, follow_redirects=False)
    assert res.status_code == 303 and res.headers["location"] == "/"
    assert auth.SESSION_COOKIE in res.cookies
    page = client.get("/login")
    m = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert m is not None
    form = {**form, "csrf_token": m.group(1), "password": "nope nope nope", "next": "/queue"}
    res = client.post("/login", data=form, follow_redirects=False)
    assert res.status_code == 401 and "wrong username or password" in res.text
    assert "nope nope nope" not in res.text


def test_form_logout_takes_the_csrf_field(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    _user(session_factory, "alice", "admin")
    _status, body = _login(client, "alice")
    res = client.post("/logout", data={"csrf_token": "wrong"}, follow_redirects=False)
    assert res.status_code == 403
    res = client.post("/logout", data={"csrf_token": body["csrf_token"]}, follow_redirects=False)
    assert res.status_code == 303 and res.headers["location"] == "/login"


# -- tokens ------------------------------------------------------------------------------------


def test_tokens_hashed_scoped_revocable_and_tracked(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    _user(session_factory, "bob", "senior_analyst")
    token = _token(session_factory, "bob", ["account:self", "bank:write"])
    assert token.startswith("tl_") and len(token) > 40
    with session_factory() as s:
        row = s.scalars(select(ApiToken)).one()
        assert row.token_hash == auth._sha256(token) and token not in row.token_hash
        assert row.last_used_at is None
        token_id = row.id
    hdr = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/auth/me", headers=hdr).status_code == 200
    # Scoped: bank:read is in bob's role but not in the token.
    res = client.get("/api/v1/banks", headers=hdr)
    assert res.status_code == 403 and res.json() == {"message": "permission 'bank:read' required"}
    with session_factory() as s:
        row = s.get(ApiToken, token_id)
        assert row is not None and row.last_used_at is not None
    # Scopes intersect the role: demote bob and the token loses bank:write.
    with session_factory() as s, s.begin():
        s.execute(update(User).where(User.username == "bob").values(role="analyst"))
    res = client.post("/api/v1/banks", headers=hdr, json={"name": "X_BANK"})
    assert res.status_code == 403
    with session_factory() as s, s.begin():
        auth.revoke_token(s, token_id)
    res = client.get("/api/v1/auth/me", headers=hdr)
    assert res.status_code == 401 and "revoked" in res.json()["message"]
    assert res.headers["www-authenticate"].startswith("Bearer")


def test_bad_authorization_headers(client: TestClient) -> None:
    for value in ("Basic YWxhZGRpbjpvcGVu", "Bearer", "Bearer nope", "Bearer tl_" + "x" * 40):
        res = client.get("/api/v1/auth/me", headers={"Authorization": value})
        assert res.status_code == 401, value
        assert set(res.json()) == {"message"}


def test_token_scope_rules(session_factory: sessionmaker[Session]) -> None:
    _user(session_factory, "aud", "auditor")
    with session_factory() as s, s.begin():
        user = auth.get_user(s, "aud")
        with pytest.raises(auth.UserError, match="does not have"):
            auth.create_token(s, user, "t", ["bank:write"])
        with pytest.raises(auth.UserError, match="unknown scope"):
            auth.create_token(s, user, "t", ["everything"])
        with pytest.raises(auth.UserError, match="at least one"):
            auth.create_token(s, user, "t", [])


def test_disabled_user_loses_sessions_and_tokens(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    _user(session_factory, "carol", "analyst")
    token = _token(session_factory, "carol", ["account:self"])
    assert _login(client, "carol")[0] == 200
    with session_factory() as s, s.begin():
        auth.set_active(s, "carol", False)
    assert client.get("/api/v1/auth/me").status_code == 401
    res = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert res.status_code == 401
    assert _login(client, "carol")[0] == 401


def test_anonymous_permissions_are_opt_in(
    app_: object, client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    assert client.get("/api/v1/index/status").status_code == 401
    app_.state.ctx.auth.anonymous_permissions = frozenset({"index:read"})  # type: ignore[attr-defined]
    assert client.get("/api/v1/index/status").status_code not in (401, 403)
    assert client.get("/api/v1/banks").status_code == 401


# -- the CLI -----------------------------------------------------------------------------------


def test_cli_users_and_tokens(
    db_url: str, engine: Engine, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    from tipline.cli.app import _register, app

    _register()
    runner = CliRunner()
    env = {"TIPLINE_DATABASE_URL": db_url, "TIPLINE_DATA_DIR": str(tmp_path)}

    def run(*args: str, stdin: str | None = None) -> tuple[int, str]:
        res = runner.invoke(app, list(args), env=env, input=stdin)
        return res.exit_code, res.output

    code, out = run("user", "add", "dana", "--role", "admin", "--password-stdin", stdin=PASSWORD)
    assert code == 0, out
    code, out = run("user", "add", "acme", "--role", "partner")  # no password for partners
    assert code == 0, out
    code, out = run("user", "add", "eve", "--role", "root", "--password-stdin", stdin=PASSWORD)
    assert code == 2 and "unknown role" in out
    code, out = run("user", "list", "--json")
    assert code == 0 and '"acme"' in out and '"partner"' in out
    code, out = run(
        "token", "create", "--user", "acme", "--name", "upload-path", "--scope", "match:read"
    )
    assert code == 0, out
    token = next(line for line in out.splitlines() if line.startswith("tl_"))
    code, out = run("token", "create", "--user", "acme", "--name", "x", "--scope", "bank:write")
    assert code == 2 and "does not have" in out
    code, out = run("token", "list")
    assert code == 0 and "upload-path" in out and token not in out
    with session_factory() as s:
        tid = s.scalars(select(ApiToken.id)).one()
        assert s.scalars(select(ApiToken.token_hash)).one() == auth._sha256(token)
    code, out = run("token", "revoke", str(tid))
    assert code == 0
    code, out = run("token", "list", "--json")
    assert '"revoked": null' not in out
    code, out = run("user", "set-password", "dana", "--password-stdin", stdin="another long one")
    assert code == 0, out
    with session_factory() as s:
        assert auth.verify_password(auth.get_user(s, "dana").password_hash, "another long one")[0]
    code, out = run("user", "set-password", "acme", "--password-stdin", stdin=PASSWORD)
    assert code == 2 and "API tokens" in out
    code, out = run("user", "set-role", "dana", "auditor")
    assert code == 0 and "admin -> auditor" in out
    code, out = run("user", "set-role", "dana", "wizard")
    assert code == 2 and "unknown role" in out
    code, out = run("user", "disable", "dana")
    assert code == 0
    code, out = run("user", "list")
    assert "DISABLED" in out
    code, out = run("user", "disable", "nobody")
    assert code == 2 and "no user" in out
    assert _actions(session_factory) == [
        "user.add",
        "user.add",
        "token.create",
        "token.revoke",
        "user.set_password",
        "user.set_role",
        "user.disable",
    ]


def test_security_doc_has_the_current_permissions_table() -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "security.md").read_text()
    assert auth.permissions_table() in doc, "paste auth.permissions_table() into docs/security.md"


def test_staff_writes_are_audited(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    _user(session_factory, "sam", "senior_analyst")
    token = _token(session_factory, "sam", ["bank:write", "bank:read"])
    hdr = {"Authorization": f"Bearer {token}"}
    res = client.post("/api/v1/banks", headers=hdr, json={"name": "AUDITED_BANK"})
    assert res.status_code < 300, res.text
    client.get("/api/v1/banks", headers=hdr)  # reads are not api.write events
    client.post("/api/v1/banks", headers=hdr, json={"name": "bad name"})  # refused: no event
    with session_factory() as s:
        events = [e for e in s.scalars(select(AuditEvent)) if e.action == "api.write"]
    assert len(events) == 1
    (ev,) = events
    assert ev.actor.endswith(":sam") and ev.target_id == "POST /api/v1/banks"
    assert ev.details["permission"] == "bank:write" and ev.ip


def test_first_run_hint(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as s:
        assert "tipline user add" in (auth.first_run_hint(s) or "")
    _user(session_factory, "root", "admin")
    with session_factory() as s:
        assert auth.first_run_hint(s) is None
