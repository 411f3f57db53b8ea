"""Authentication and authorisation: users, sessions, API tokens, roles and permissions.

* Passwords are hashed with argon2id (argon2-cffi); a hash made with older parameters is
  replaced at the next successful login.
* Browser users get a server-side session: the cookie holds a random id, the database only its
  SHA-256, and the cookie is HttpOnly, SameSite=Lax and Secure over https. Sessions end after
  an idle period and at an absolute limit. Unsafe requests made with a session need the
  session's CSRF token (``X-CSRF-Token`` header or ``csrf_token`` form field).
* API clients send ``Authorization: Bearer tl_...``. Tokens are stored as SHA-256 hashes, carry
  scopes, can be revoked, and record when they were last used. A token's effective permissions
  are its scopes intersected with its owner's role permissions.
* Every route declares one permission with ``Depends(require("match:read"))``; the dependency
  answers 401 (``{"message"}``) without valid credentials and 403 without the permission.
  ``partner`` accounts are API-only: they cannot log in to a session.

The role -> permission table is :data:`ROLE_PERMISSIONS` (documented in docs/security.md).
"""

from __future__ import annotations

import hmac
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from tipline.accounts import (
    _DUMMY_HASH,
    API_ONLY_ROLES,
    DECLARED,
    PERMISSIONS,
    ROLE_PERMISSIONS,
    TOKEN_PREFIX,
    Principal,
    UserError,
    _check_role,
    _now,
    _sha256,
    create_token,
    create_user,
    first_run_hint,
    get_user,
    permissions_table,
    revoke_token,
    role_allows,
    set_active,
    set_password,
    set_role,
    verify_password,
)
from tipline.audit import log as audit
from tipline.service import errors
from tipline.service.errors import HttpError
from tipline.store.tables import ApiToken, AuditEvent, SessionRow, User

log = logging.getLogger("tipline.auth")


@dataclass
class LoginLimiter:
    """Failed-login limits per client address and per username (sliding window, in process)."""

    window_seconds: float = 900.0
    per_username: int = 5
    per_ip: int = 20
    _fails: dict[str, deque[float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _prune(self, key: str, now: float) -> deque[float]:
        q = self._fails.setdefault(key, deque())
        while q and q[0] <= now - self.window_seconds:
            q.popleft()
        return q

    def retry_after(self, ip: str, username: str) -> int:
        """Seconds until another attempt is allowed (0 = allowed now)."""
        now = time.monotonic()
        wait = 0.0
        with self._lock:
            for key, cap in ((f"ip:{ip}", self.per_ip), (f"user:{username}", self.per_username)):
                q = self._prune(key, now)
                if len(q) >= cap:
                    wait = max(wait, q[0] + self.window_seconds - now)
        return int(wait) + 1 if wait > 0 else 0

    def failed(self, ip: str, username: str) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._fails) > 100_000:  # many distinct names: forget the expired ones
                for key in list(self._fails):
                    if not self._prune(key, now):
                        del self._fails[key]
            for key in (f"ip:{ip}", f"user:{username}"):
                self._prune(key, now).append(now)

    def succeeded(self, username: str) -> None:
        with self._lock:
            self._fails.pop(f"user:{username}", None)


@dataclass
class AuthContext:
    """Everything the auth dependency needs; :func:`install_auth` puts it on ``app.state``."""

    session_factory: sessionmaker[Session]
    #: The media store served by GET /api/v1/media/{ref} (None: the route answers 404).
    media_store: Any = None
    #: "auto": Secure cookies when the request came over https; or always / never.
    cookie_secure: bool | Literal["auto"] = "auto"
    session_idle: timedelta = timedelta(minutes=30)
    session_max: timedelta = timedelta(hours=12)
    #: Permissions granted without credentials (e.g. match:read on a private network).
    anonymous_permissions: frozenset[str] = frozenset()
    #: Seconds a verified token is trusted before the database is asked again (revocation
    #: takes effect within this time); 0 = ask every time.
    token_cache_seconds: float = 2.0
    limiter: LoginLimiter = field(default_factory=LoginLimiter)
    _token_cache: dict[str, tuple[float, Principal]] = field(default_factory=dict)


SESSION_COOKIE = "tipline_session"
LOGIN_CSRF_COOKIE = "tipline_login_csrf"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def context(request: Request) -> AuthContext:
    ctx = getattr(getattr(request.app.state, "ctx", None), "auth", None)
    if not isinstance(ctx, AuthContext):
        raise HttpError(503, "authentication is not configured on this server")
    return ctx


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _token_principal(ctx: AuthContext, raw: str) -> Principal | None:
    digest = _sha256(raw)
    now_m = time.monotonic()
    cached = ctx._token_cache.get(digest)
    if cached is not None and now_m - cached[0] < ctx.token_cache_seconds:
        return cached[1]
    with ctx.session_factory() as s, s.begin():
        row = s.execute(
            select(ApiToken, User)
            .join(User, User.id == ApiToken.user_id)
            .where(ApiToken.token_hash == digest)
        ).first()
        if row is None:
            return None
        token, user = row
        if token.revoked_at is not None or not user.active:
            ctx._token_cache.pop(digest, None)
            return None
        now = _now()
        if token.last_used_at is None or now - token.last_used_at > timedelta(seconds=60):
            token.last_used_at = now
        scopes = frozenset(str(x) for x in (token.scopes or []))
        allowed = frozenset(p for p in scopes if role_allows(user.role, p))
        principal = Principal(user.id, user.username, user.role, allowed, "token", token.id)
    if ctx.token_cache_seconds > 0:
        if len(ctx._token_cache) > 10_000:
            ctx._token_cache.clear()
        ctx._token_cache[digest] = (now_m, principal)
    return principal


def _session_principal(ctx: AuthContext, raw: str) -> Principal | None:
    sid = _sha256(raw)
    with ctx.session_factory() as s, s.begin():
        row = s.execute(
            select(SessionRow, User)
            .join(User, User.id == SessionRow.user_id)
            .where(SessionRow.id == sid)
        ).first()
        if row is None:
            return None
        sess, user = row
        now = _now()
        if sess.expires_at <= now or not user.active or user.role in API_ONLY_ROLES:
            s.delete(sess)
            return None
        # Sliding idle expiry, capped by the absolute limit.
        new_exp = min(sess.created_at + ctx.session_max, now + ctx.session_idle)
        if new_exp - sess.expires_at > timedelta(seconds=60):
            sess.expires_at = new_exp
        return Principal(
            user.id,
            user.username,
            user.role,
            ROLE_PERMISSIONS.get(user.role, frozenset()),
            "session",
            csrf_token=sess.csrf_token,
            session_id=sid,
        )


async def authenticate(request: Request) -> Principal | None:
    """The principal behind ``request``'s bearer token or session cookie, or None.

    A malformed or unknown bearer token is an error (401) rather than a fall-back to the
    session, so a client with a wrong token learns about it.
    """
    ctx = context(request)
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        value = value.strip()
        if scheme.lower() != "bearer" or not value.startswith(TOKEN_PREFIX) or len(value) > 200:
            raise HttpError(
                401, "invalid Authorization header (want: Bearer tl_...)", headers=_www()
            )
        principal = await run_in_threadpool(_token_principal, ctx, value)
        if principal is None:
            raise HttpError(401, "invalid, revoked or expired API token", headers=_www())
        return principal
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie and len(cookie) <= 200:
        return await run_in_threadpool(_session_principal, ctx, cookie)
    return None


def _www() -> dict[str, str]:
    return {"WWW-Authenticate": 'Bearer realm="tipline"'}


#: Largest url-encoded form body read for its ``csrf_token`` field.
_MAX_CSRF_FORM_BYTES = 1024 * 1024


async def _check_csrf(request: Request, principal: Principal) -> None:
    """The session's CSRF token must come with every unsafe request: the ``X-CSRF-Token``
    header, a ``csrf_token`` field of a url-encoded form, or (for multipart uploads, whose body
    is left for the route to read within its own limits) a ``csrf_token`` query parameter."""
    expected = principal.csrf_token or ""
    sent = request.headers.get(CSRF_HEADER)
    if sent is None:
        ctype = request.headers.get("content-type", "")
        length = request.headers.get("content-length", "")
        if (
            ctype.startswith("application/x-www-form-urlencoded")
            and length.isdigit()
            and int(length) <= _MAX_CSRF_FORM_BYTES
        ):
            form = await request.form()
            value = form.get("csrf_token")
            sent = value if isinstance(value, str) else None
        else:
            sent = request.query_params.get("csrf_token")
    if not sent or not expected or not hmac.compare_digest(sent, expected):
        raise HttpError(403, "CSRF token missing or invalid")


def require(permission: str) -> Callable[[Request], Awaitable[Principal]]:
    """A FastAPI dependency: the request must carry credentials with ``permission``.

    Use as ``dependencies=[Depends(require("bank:write"))]`` or
    ``principal: Annotated[Principal, Depends(require("bank:write"))]``. The permission is
    recorded on the dependency (``.permission``) so tests can list what each route needs.
    """
    if permission not in DECLARED:
        DECLARED.append(permission)

    async def dependency(request: Request) -> Principal:
        ctx = context(request)
        principal = await authenticate(request)
        if principal is None:
            if permission in ctx.anonymous_permissions:
                principal = Principal(None, "anonymous", "", ctx.anonymous_permissions, "anonymous")
            else:
                raise HttpError(401, "authentication required", headers=_www())
        if not principal.can(permission):
            raise HttpError(403, f"permission {permission!r} required")
        if principal.via == "session" and request.method not in SAFE_METHODS:
            await _check_csrf(request, principal)
        request.state.principal = principal
        request.state.permission = permission
        request.state.auth_context = ctx
        return principal

    dependency.permission = permission  # type: ignore[attr-defined]
    dependency.__name__ = f"require_{permission.replace(':', '_')}"
    return dependency


def route_permissions(route: Any) -> list[str]:
    """The permissions a route's dependencies declare (empty: the route is public)."""
    found: list[str] = []
    dependant = getattr(route, "dependant", None)
    stack = [dependant] if dependant is not None else []
    while stack:
        d = stack.pop()
        perm = getattr(d.call, "permission", None)
        if isinstance(perm, str) and perm not in found:
            found.append(perm)
        stack.extend(d.dependencies)
    return found


@dataclass(frozen=True, slots=True)
class RouteInfo:
    path: str
    methods: frozenset[str]
    permissions: tuple[str, ...]
    name: str


def iter_routes(app: Any) -> list[RouteInfo]:
    """Every HTTP route of ``app`` (routers included) with the permissions it declares.

    Works with both plain route lists and FastAPI's lazily included routers.
    """
    out: list[RouteInfo] = []
    for route in app.routes:
        contexts = getattr(route, "effective_route_contexts", None)
        items = list(contexts()) if callable(contexts) else [route]
        for item in items:
            path = getattr(item, "path", None)
            if not isinstance(path, str):
                continue
            methods = frozenset(getattr(item, "methods", None) or ())
            name = str(getattr(item, "name", "") or "")
            out.append(RouteInfo(path, methods, tuple(route_permissions(item)), name))
    return out


# --------------------------------------------------------------------------------------------
# Sessions: login and logout


def _cookie_secure(ctx: AuthContext, request: Request) -> bool:
    if ctx.cookie_secure == "auto":
        return request.url.scheme == "https"
    return bool(ctx.cookie_secure)


def _login(ctx: AuthContext, username: str, password: str, ip: str) -> tuple[str, str, User]:
    """Check the password and open a session: (raw session id, csrf token, user).

    Failures are audit events too, committed on their own (the login itself rolls back).
    """
    failure: HttpError | None = None
    with ctx.session_factory() as s, s.begin():
        user = s.scalars(select(User).where(User.username == username)).first()
        if user is None:
            verify_password(_DUMMY_HASH, password)
            ok, new_hash = False, None
        else:
            ok, new_hash = verify_password(user.password_hash, password)
        if not ok or user is None or not user.active:
            failure = HttpError(401, "wrong username or password")
        elif user.role in API_ONLY_ROLES:
            failure = HttpError(403, f"{user.role} accounts use API tokens, not sessions")
        else:
            if new_hash is not None:
                user.password_hash = new_hash
            raw = secrets.token_urlsafe(32)
            csrf = secrets.token_urlsafe(32)
            now = _now()
            # Housekeeping: sessions past their expiry are never valid again.
            s.execute(delete(SessionRow).where(SessionRow.expires_at < now))
            s.add(
                SessionRow(
                    id=_sha256(raw),
                    user_id=user.id,
                    created_at=now,
                    expires_at=now + min(ctx.session_idle, ctx.session_max),
                    csrf_token=csrf,
                )
            )
            audit.record(s, f"user:{user.username}", "auth.login", "user", user.id, ip, {})
            return raw, csrf, user
    action = "auth.login_failed" if failure.status == 401 else "auth.login_refused"
    with ctx.session_factory() as s, s.begin():
        target = None if user is None else user.id
        audit.record(s, f"user:{username[:100]}", action, "user", target, ip, {})
    raise failure


def _logout(ctx: AuthContext, principal: Principal, ip: str) -> None:
    with ctx.session_factory() as s, s.begin():
        if principal.session_id is not None:
            row = s.get(SessionRow, principal.session_id)
            if row is not None:
                s.delete(row)
        audit.record(s, principal.actor, "auth.logout", "user", principal.user_id, ip, {})


def _rate_limit(ctx: AuthContext, ip: str, username: str) -> None:
    wait = ctx.limiter.retry_after(ip, username)
    if wait:
        raise HttpError(
            429,
            f"too many failed logins; try again in {wait} s",
            headers={"Retry-After": str(wait)},
        )


async def _do_login(request: Request, username: str, password: str) -> tuple[str, str, User]:
    ctx = context(request)
    ip = client_ip(request)
    username = username.strip()[:150]
    _rate_limit(ctx, ip, username)
    try:
        result = await run_in_threadpool(_login, ctx, username, password[:4096], ip)
        ctx.limiter.succeeded(username)
        return result
    except HttpError as err:
        if err.status == 401:
            ctx.limiter.failed(ip, username)
        raise


def _set_session_cookie(response: Response, ctx: AuthContext, request: Request, raw: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        raw,
        max_age=int(ctx.session_max.total_seconds()),
        httponly=True,
        samesite="lax",
        secure=_cookie_secure(ctx, request),
        path="/",
    )


_env = Environment(autoescape=True)
_LOGIN_PAGE = _env.from_string(
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in - Tipline</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><main><h1>Sign in</h1>
{% if error %}<p role="alert"><strong>{{ error }}</strong></p>{% endif %}
<form method="post" action="/login">
<input type="hidden" name="csrf_token" value="{{ csrf }}">
<input type="hidden" name="next" value="{{ next }}">
<p><label>Username <input name="username" autocomplete="username" required></label></p>
<p><label>Password <input name="password" type="password" autocomplete="current-password"
required></label></p>
<p><button type="submit">Sign in</button></p>
</form></main></body></html>
"""
)


def _safe_next(value: str) -> str:
    """Only local paths are followed after login (no open redirect)."""
    if value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value[:500]
    return "/"


def _login_page(request: Request, error: str = "", status: int = 200, nxt: str = "/") -> Response:
    csrf = secrets.token_urlsafe(32)
    html = _LOGIN_PAGE.render(error=error, csrf=csrf, next=_safe_next(nxt))
    response = HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        csrf,
        max_age=3600,
        httponly=True,
        samesite="strict",
        secure=_cookie_secure(context(request), request),
        path="/login",
    )
    return response


router = APIRouter()


@router.get("/login", include_in_schema=False)
async def login_form(request: Request, next: str = "/desk") -> Response:
    return _login_page(request, nxt=next)


@router.post("/login", include_in_schema=False)
async def login_form_post(request: Request) -> Response:
    form = await request.form()

    def field_(name: str) -> str:
        value = form.get(name)
        return value if isinstance(value, str) else ""

    sent = field_("csrf_token")
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    nxt = field_("next") or "/desk"
    if not sent or not cookie or not hmac.compare_digest(sent, cookie):
        return _login_page(request, "Your form expired; please sign in again.", 403, nxt)
    try:
        raw, _csrf, _user = await _do_login(request, field_("username"), field_("password"))
    except HttpError as err:
        return _login_page(request, err.message, err.status, nxt)
    response = RedirectResponse(_safe_next(nxt), status_code=303)
    _set_session_cookie(response, context(request), request, raw)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


@router.post("/logout", include_in_schema=False)
async def logout_form(
    request: Request, principal: Principal = Depends(require("account:self"))
) -> Response:
    await run_in_threadpool(_logout, context(request), principal, client_ip(request))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.post("/api/v1/auth/login", tags=["auth"])
async def login_json(request: Request) -> Response:
    """Open a session (JSON: ``{"username", "password"}``); answers the CSRF token to send as
    ``X-CSRF-Token`` on unsafe requests. API clients should prefer tokens."""
    if not request.headers.get("content-type", "").startswith("application/json"):
        raise HttpError(415, "send application/json")
    try:
        body = await request.json()
    except ValueError:
        raise HttpError(400, "body is not valid JSON") from None
    if not isinstance(body, dict):
        raise HttpError(400, 'want {"username": ..., "password": ...}')
    username, password = body.get("username"), body.get("password")
    if not isinstance(username, str) or not isinstance(password, str):
        raise HttpError(400, 'want {"username": ..., "password": ...}')
    raw, csrf, user = await _do_login(request, username, password)
    ctx = context(request)
    response = JSONResponse(
        {"username": user.username, "role": user.role, "csrf_token": csrf},
        headers={"Cache-Control": "no-store"},
    )
    _set_session_cookie(response, ctx, request, raw)
    return response


@router.post("/api/v1/auth/logout", tags=["auth"])
async def logout_json(
    request: Request, principal: Principal = Depends(require("account:self"))
) -> Response:
    await run_in_threadpool(_logout, context(request), principal, client_ip(request))
    response = JSONResponse({"message": "logged out"})
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/api/v1/auth/me", tags=["auth"])
async def me(principal: Principal = Depends(require("account:self"))) -> dict[str, Any]:
    """Who the credentials belong to and what they may do."""
    return {
        "username": principal.username,
        "role": principal.role,
        "via": principal.via,
        "permissions": sorted(principal.permissions),
        "csrf_token": principal.csrf_token,
    }


def _audit_page(ctx: AuthContext, after_id: int, limit: int) -> dict[str, Any]:
    with ctx.session_factory() as s:
        rows = s.scalars(
            select(AuditEvent).where(AuditEvent.id > after_id).order_by(AuditEvent.id).limit(limit)
        )
        events = [audit.as_dict(e) for e in rows]
    return {"events": events, "next_after_id": events[-1]["id"] if events else None}


@router.get("/api/v1/audit/events", tags=["audit"])
async def audit_events(
    request: Request,
    after_id: int = 0,
    limit: int = 100,
    _p: Principal = Depends(require("audit:read")),
) -> dict[str, Any]:
    """Audit events oldest first, after ``after_id`` (page with ``next_after_id``); each carries
    ``prev_hash`` and ``hash`` so a client can re-verify the chain."""
    limit = max(1, min(limit, 1000))
    return await run_in_threadpool(_audit_page, context(request), max(after_id, 0), limit)


def _audit_verify(ctx: AuthContext) -> dict[str, Any]:
    with ctx.session_factory() as s:
        r = audit.verify(s)
    return {
        "ok": r.ok,
        "count": r.count,
        "head_hash": r.head_hash,
        "first_bad_id": r.first_bad_id,
        "reason": r.reason,
    }


@router.get("/api/v1/audit/verify", tags=["audit"])
async def audit_verify(
    request: Request, _p: Principal = Depends(require("audit:read"))
) -> dict[str, Any]:
    """Walk the audit chain (like ``tipline audit verify``)."""
    return await run_in_threadpool(_audit_verify, context(request))


def _list_users(ctx: AuthContext) -> list[dict[str, Any]]:
    with ctx.session_factory() as s:
        return [
            {"username": u.username, "role": u.role, "active": u.active}
            for u in s.scalars(select(User).order_by(User.username))
        ]


@router.get("/api/v1/users", tags=["auth"])
async def users_list(
    request: Request, _p: Principal = Depends(require("user:admin"))
) -> list[dict[str, Any]]:
    """Users and their roles (manage them with ``tipline user`` / ``tipline token``)."""
    return await run_in_threadpool(_list_users, context(request))


#: Permissions whose successful unsafe requests are recorded as ``api.write`` audit events by
#: :class:`AuditWritesMiddleware` (routes may add their own, more specific events too).
AUDITED_WRITE_PERMISSIONS = frozenset(
    {"bank:write", "report:write", "job:admin", "user:admin", "webhook:admin"}
)


class AuditWritesMiddleware:
    """After a successful (< 400) POST/PUT/PATCH/DELETE made with one of
    :data:`AUDITED_WRITE_PERMISSIONS`, append an ``api.write`` audit event: who, the method and
    path, the permission and the status, and from where. Plain ASGI, so lookups pay nothing."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method", "GET") in SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_wrapper(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        # Shared by reference with every Request made from (a copy of) this scope.
        state = scope.setdefault("state", {})
        await self.app(scope, receive, send_wrapper)
        principal = state.get("principal")
        permission = state.get("permission")
        ctx = state.get("auth_context")
        if (
            status < 400
            and isinstance(principal, Principal)
            and isinstance(ctx, AuthContext)
            and permission in AUDITED_WRITE_PERMISSIONS
        ):
            client = scope.get("client")
            ip = client[0] if client else None
            try:
                await run_in_threadpool(
                    _record_write,
                    ctx,
                    principal,
                    scope["method"],
                    scope["path"],
                    permission,
                    status,
                    ip,
                )
            except Exception:  # the work is done and answered; never turn it into an error
                log.exception("could not record the api.write audit event")


def _record_write(
    ctx: AuthContext,
    principal: Principal,
    method: str,
    path: str,
    permission: str,
    status: int,
    ip: str | None,
) -> None:
    with ctx.session_factory() as s, s.begin():
        audit.record(
            s,
            principal.actor,
            "api.write",
            "route",
            f"{method} {path}"[:200],
            ip,
            {"permission": permission, "status": status},
        )


def install_auth(app: FastAPI, ctx: AuthContext) -> None:
    """Attach ``ctx`` to ``app``, add the login/logout/me routes and the
    :class:`HttpError` handler (``errors.install``: ``create_app`` installs it with the other
    handlers too; an app built from parts answers auth failures all the same)."""
    from tipline.service.context import route_contexts

    route_contexts(app).auth = ctx
    errors.install(app)
    app.add_middleware(AuditWritesMiddleware)
    app.include_router(router)


#: account names this module re-exports for the web layer's callers (``auth.require`` and
#: ``auth.create_user`` side by side); they live in ``tipline.accounts``
__all__ = [
    "API_ONLY_ROLES",
    "DECLARED",
    "PERMISSIONS",
    "ROLE_PERMISSIONS",
    "Principal",
    "UserError",
    "_check_role",
    "_now",
    "_sha256",
    "create_token",
    "create_user",
    "first_run_hint",
    "get_user",
    "permissions_table",
    "revoke_token",
    "role_allows",
    "set_active",
    "set_password",
    "set_role",
    "verify_password",
]
