"""Every route declares its permission, and every role gets exactly what the table says.

The test builds the full service app, walks every route, fails on any non-public route without
a declared permission, then calls each route as each role (by session for people, by token
for partners and for every role again) and anonymously, asserting allow or deny from
:data:`tipline.service.auth.ROLE_PERMISSIONS`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from tipline.service import auth
from tipline.service.app import create_app
from tipline.service.settings import ServiceSettings

#: Routes anyone may call without credentials: (method, path). Adding a route here is a
#: security decision; everything else must declare a permission.
PUBLIC_ROUTES: frozenset[tuple[str, str]] = frozenset(
    {
        ("GET", "/openapi.json"),
        # HMA's spec path and route list: what /openapi.json already tells anyone
        ("GET", "/openapi/openapi.json"),
        ("GET", "/site-map"),
        ("GET", "/docs"),
        ("GET", "/docs/oauth2-redirect"),
        ("GET", "/redoc"),
        ("GET", "/status"),
        ("GET", "/status/live"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        # sign-in
        ("GET", "/login"),
        ("POST", "/login"),
        ("POST", "/api/v1/auth/login"),
        # the public report form (anonymous reporting)
        ("GET", "/"),
        ("GET", "/report"),
        ("POST", "/report"),
        ("GET", "/report/thanks"),
        ("GET", "/report/{reference}"),
    }
)

PASSWORD = "correct horse battery"
ROLES = tuple(auth.ROLE_PERMISSIONS)


@dataclass
class Caller:
    label: str
    role: str | None
    headers: dict[str, str]
    cookies: dict[str, str]


@pytest.fixture
def client(
    db_url: str, engine: Engine, session_factory: sessionmaker[Session], tmp_path: Path
) -> Iterator[TestClient]:
    settings = ServiceSettings(data_dir=tmp_path, database_url=db_url, media_mode="hash-only")
    app = create_app(settings, load_index="none")
    ctx = app.state.ctx.auth
    ctx.token_cache_seconds = 0
    with TestClient(app) as c:
        yield c


def _make_users(factory: sessionmaker[Session]) -> dict[str, str]:
    """One user per role (password PASSWORD) and a token with all of its role's permissions."""
    tokens: dict[str, str] = {}
    with factory() as s, s.begin():
        for role in ROLES:
            user = auth.create_user(s, f"u_{role}", role, PASSWORD)
            tokens[role] = auth.create_token(s, user, "all", sorted(auth.ROLE_PERMISSIONS[role]))
    return tokens


def _login(client: TestClient, role: str) -> Caller:
    res = client.post("/api/v1/auth/login", json={"username": f"u_{role}", "password": PASSWORD})
    assert res.status_code == 200, res.text
    cookie = res.cookies.get(auth.SESSION_COOKIE)
    assert cookie
    client.cookies.clear()
    return Caller(
        f"{role}/session",
        role,
        {auth.CSRF_HEADER: res.json()["csrf_token"]},
        {auth.SESSION_COOKIE: cookie},
    )


def _callers(client: TestClient, tokens: dict[str, str]) -> list[Caller]:
    callers = [Caller("anonymous", None, {}, {})]
    for role in ROLES:
        callers.append(
            Caller(f"{role}/token", role, {"Authorization": f"Bearer {tokens[role]}"}, {})
        )
        if role not in auth.API_ONLY_ROLES:
            callers.append(_login(client, role))
    return callers


def _concrete(path: str) -> str:
    fills = {"name": "PERMTEST_BANK", "ref": "0" * 32}
    return re.sub(r"\{(\w+)(:\w+)?\}", lambda m: fills.get(m.group(1), "1"), path)


def _is_auth_denial(res: Response) -> bool:
    if res.status_code == 401:
        return True
    if res.status_code != 403:
        return False
    try:
        message = str(res.json().get("message", ""))
    except ValueError:
        return False
    return message.startswith("permission ") or message.startswith("CSRF")


def test_every_route_declares_a_permission(client: TestClient) -> None:
    routes = auth.iter_routes(client.app)
    assert len(routes) > 20
    missing, unknown, doubled = [], [], []
    for r in routes:
        for method in sorted(r.methods - {"HEAD"}):
            public = (method, r.path) in PUBLIC_ROUTES
            if not r.permissions and not public:
                missing.append(f"{method} {r.path} ({r.name})")
            if r.permissions and public:
                doubled.append(f"{method} {r.path}")
        if len(r.permissions) > 1:
            doubled.append(f"{r.path}: several permissions {r.permissions}")
        unknown += [f"{r.path}: {p}" for p in r.permissions if p not in auth.PERMISSIONS]
    assert not missing, "routes without a declared permission: " + ", ".join(missing)
    assert not unknown, "permissions missing from auth.PERMISSIONS: " + ", ".join(unknown)
    assert not doubled, "ambiguous routes: " + ", ".join(doubled)


def test_every_role_on_every_route(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    tokens = _make_users(session_factory)
    callers = _callers(client, tokens)
    failures: list[str] = []
    checked = succeeded = 0
    for r in auth.iter_routes(client.app):
        if not r.permissions:
            continue
        (perm,) = r.permissions
        url = _concrete(r.path)
        for method in sorted(r.methods - {"HEAD"}):
            for caller in callers:
                client.cookies.clear()
                for k, v in caller.cookies.items():
                    client.cookies.set(k, v)
                kwargs: dict[str, object] = {"headers": caller.headers}
                if method in ("POST", "PUT", "PATCH"):
                    kwargs["json"] = {}
                res = client.request(method, url, **kwargs)  # type: ignore[arg-type]
                checked += 1
                if r.path.endswith("/logout") and caller.cookies:
                    fresh = _login(client, str(caller.role))  # that call ended the session
                    caller.headers, caller.cookies = fresh.headers, fresh.cookies
                if caller.role is None:
                    ok = res.status_code == 401 and res.json() == {
                        "message": "authentication required"
                    }
                    expect = "401"
                elif auth.role_allows(caller.role, perm):
                    ok = not _is_auth_denial(res)
                    expect = "allowed"
                    succeeded += res.status_code < 300
                else:
                    ok = res.status_code == 403 and res.json() == {
                        "message": f"permission {perm!r} required"
                    }
                    expect = "403"
                if not ok:
                    failures.append(
                        f"{method} {r.path} [{perm}] as {caller.label}: expected {expect}, got "
                        f"{res.status_code} {res.text[:120]}"
                    )
    client.cookies.clear()
    assert checked > 100
    assert succeeded > 20  # allowed calls really ran (not only refused for other reasons)
    assert not failures, "\n".join(failures)


def test_session_writes_need_the_csrf_token(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    with session_factory() as s, s.begin():
        auth.create_user(s, "csrf_admin", "admin", PASSWORD)
    res = client.post("/api/v1/auth/login", json={"username": "csrf_admin", "password": PASSWORD})
    csrf = res.json()["csrf_token"]
    # Cookie alone (what a cross-site form post would carry): refused.
    res = client.post("/api/v1/auth/logout")
    assert res.status_code == 403 and "CSRF" in res.json()["message"]
    res = client.post("/api/v1/auth/logout", headers={auth.CSRF_HEADER: "wrong"})
    assert res.status_code == 403
    # Safe methods need no token.
    assert client.get("/api/v1/auth/me").status_code == 200
    res = client.post("/api/v1/auth/logout", headers={auth.CSRF_HEADER: csrf})
    assert res.status_code == 200
    client.cookies.clear()


def test_session_multipart_upload_takes_csrf_in_the_query(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    """The CSRF check leaves an upload's body for the route (which enforces its own limits)."""
    from conftest import encode, noise_image

    with session_factory() as s, s.begin():
        auth.create_user(s, "up_analyst", "analyst", PASSWORD)
    res = client.post("/api/v1/auth/login", json={"username": "up_analyst", "password": PASSWORD})
    csrf = res.json()["csrf_token"]
    files = {"photo": ("noise.png", encode(noise_image(3), "PNG"), "image/png")}
    res = client.post("/h/hash", files=files)
    assert res.status_code == 403 and "CSRF" in res.json()["message"]
    res = client.post(f"/h/hash?csrf_token={csrf}", files=files)
    assert res.status_code == 200, res.text
    res = client.post("/h/hash", files=files, headers={auth.CSRF_HEADER: csrf})
    assert res.status_code == 200, res.text
    client.cookies.clear()
