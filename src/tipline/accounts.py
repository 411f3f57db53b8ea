"""Accounts: users, passwords, API tokens, roles and permissions. No web framework here: the
service's auth layer (``tipline.service.auth``: request dependencies, login routes,
middleware) and the CLI (``tipline user``) both stand on this module.

* Passwords are hashed with argon2id (argon2-cffi); a hash made with older parameters is
  replaced at the next successful login.
* API tokens (``tl_...``) are stored as SHA-256 hashes and carry scopes; a token's effective
  permissions are its scopes intersected with its owner's role permissions.

The role -> permission table is :data:`ROLE_PERMISSIONS` (documented in docs/security.md).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import select
from sqlalchemy.orm import Session

from tipline.errors import TiplineError
from tipline.store.tables import ROLES, ApiToken, SessionRow, User

log = logging.getLogger("tipline.accounts")

# --------------------------------------------------------------------------------------------
# Roles and permissions

#: Every permission a route may declare, with what it allows.
PERMISSIONS: dict[str, str] = {
    "account:self": "see and end one's own session (/api/v1/auth/me, logout)",
    "match:read": "look up hashes and media against banks (/m/*, /api/v1/match)",
    "hash:read": "hash uploaded media (/h/hash)",
    "index:read": "see index status (/m/index/status)",
    "bank:read": "list banks and their entries (/c/banks, /c/bank/<name>)",
    "bank:write": "create, change and delete banks and entries",
    "report:submit": "submit reports through the partner API",
    "report:read": "read reports and their items",
    "report:write": "triage reports: status, notes, assignment",
    "item:read": "read items (hashes, provenance, matches, clusters)",
    "media:view": "view stored media bytes (every view is an audit event)",
    "job:read": "see pipeline jobs and the dead-letter queue",
    "job:admin": "retry or discard dead-lettered jobs",
    "audit:read": "read and export the audit trail",
    "user:admin": "manage users and API tokens",
    "export:read": "download hash and URL lists and NCMEC CyberTipline reports (audited)",
    "webhook:admin": "add, list and remove webhooks (signed event deliveries)",
    "review:grade": "use the review desk: claim clusters, grade them, set viewing filters",
    "review:senior": "decide escalated items (analysts disagreed)",
    "exposure:admin": "see every analyst's exposure to media",
    "dashboard:read": "see the review dashboard (queue, throughput, exposure, AI share)",
    "exchange:read": "read the banks shared with one's account (the peer feed /api/v1/exchange)",
    "exchange:write": "give opinions on entries of banks shared with one's account",
}

_ANALYST = frozenset(
    {
        "account:self",
        "match:read",
        "hash:read",
        "index:read",
        "bank:read",
        "report:read",
        "report:write",
        "item:read",
        "media:view",
        "job:read",
        "export:read",
        "review:grade",
    }
)

#: What each role may do. ``admin`` may do everything, including permissions added later.
ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "admin": frozenset(PERMISSIONS),
    "senior_analyst": _ANALYST
    | {"bank:write", "report:submit", "job:admin", "review:senior", "dashboard:read"},
    "analyst": _ANALYST,
    "auditor": frozenset(
        {
            "account:self",
            "audit:read",
            "index:read",
            "bank:read",
            "report:read",
            "item:read",
            "job:read",
            "dashboard:read",
        }
    ),
    "partner": frozenset(
        {
            "account:self",
            "match:read",
            "hash:read",
            "index:read",
            "bank:read",
            "report:submit",
            "exchange:read",
            "exchange:write",
        }
    ),
}

#: Roles that may only use API tokens, never a browser session.
API_ONLY_ROLES = frozenset({"partner"})

assert set(ROLE_PERMISSIONS) == set(ROLES)

#: Every permission some route declared (filled by :func:`require`), for introspection.
DECLARED: list[str] = []


def role_allows(role: str, permission: str) -> bool:
    if role == "admin":
        return True
    return permission in ROLE_PERMISSIONS.get(role, frozenset())


def permissions_table() -> str:
    """The role -> permission table as Markdown (docs/security.md holds this exact text)."""
    roles = list(ROLE_PERMISSIONS)
    lines = [
        "| permission | allows | " + " | ".join(roles) + " |",
        "|---|---|" + "---|" * len(roles),
    ]
    for perm, what in PERMISSIONS.items():
        marks = " | ".join("yes" if role_allows(r, perm) else "-" for r in roles)
        lines.append(f"| `{perm}` | {what} | {marks} |")
    return "\n".join(lines)


class UserError(TiplineError):
    """A user or token operation that cannot be done (unknown user, bad role or scope)."""


# --------------------------------------------------------------------------------------------
# Passwords

_hasher = PasswordHasher()  # argon2id with argon2-cffi's current recommended parameters
#: Verified against when the user does not exist, so both cases take the same time.
_DUMMY_HASH = _hasher.hash("tipline-dummy-password")

MIN_PASSWORD_LENGTH = 10


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"password too short (at least {MIN_PASSWORD_LENGTH} characters)")
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> tuple[bool, str | None]:
    """(matches, replacement hash when the stored one uses outdated parameters)."""
    try:
        _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False, None
    if _hasher.check_needs_rehash(password_hash):
        return True, _hasher.hash(password)
    return True, None


# --------------------------------------------------------------------------------------------
# Users and tokens (used by the CLI, tests and admin routes)

TOKEN_PREFIX = "tl_"


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


def _check_role(role: str) -> str:
    if role not in ROLE_PERMISSIONS:
        raise UserError(f"unknown role {role!r} (roles: {', '.join(ROLE_PERMISSIONS)})")
    return role


def create_user(session: Session, username: str, role: str, password: str | None = None) -> User:
    """Add a user. Without a password the account can only use API tokens."""
    username = username.strip()
    if not username or len(username) > 150 or any(c.isspace() for c in username):
        raise UserError("username must be 1-150 characters without spaces")
    _check_role(role)
    if session.scalars(select(User).where(User.username == username)).first() is not None:
        raise UserError(f"user {username!r} already exists")
    # "!" is never a valid argon2 hash, so a password-less account cannot log in.
    pw_hash = hash_password(password) if password is not None else "!"
    user = User(username=username, role=role, password_hash=pw_hash, active=True)
    session.add(user)
    session.flush()
    return user


def first_run_hint(session: Session) -> str | None:
    """A line to log at start-up while no active admin exists (None once one does)."""
    admin = session.scalars(
        select(User.id).where(User.role == "admin", User.active.is_(True)).limit(1)
    ).first()
    if admin is not None:
        return None
    return (
        "no admin account yet: create one with `tipline user add NAME --role admin` "
        "(see docs/security.md)"
    )


def get_user(session: Session, username: str) -> User:
    user = session.scalars(select(User).where(User.username == username)).first()
    if user is None:
        raise UserError(f"no user {username!r}")
    return user


def set_active(session: Session, username: str, active: bool) -> User:
    """Disable (or re-enable) a user; a disabled user's sessions and tokens stop working."""
    user = get_user(session, username)
    user.active = active
    if not active:
        _end_sessions(session, user)
    return user


def _end_sessions(session: Session, user: User) -> None:
    for row in session.scalars(select(SessionRow).where(SessionRow.user_id == user.id)):
        session.delete(row)


def set_password(session: Session, user: User, password: str) -> None:
    """Replace ``user``'s password and end their sessions."""
    user.password_hash = hash_password(password)
    _end_sessions(session, user)


def set_role(session: Session, user: User, role: str) -> None:
    """Change ``user``'s role and end their sessions (tokens narrow to the new role at once)."""
    user.role = _check_role(role)
    _end_sessions(session, user)


def check_scopes(role: str, scopes: Iterable[str]) -> list[str]:
    out: list[str] = []
    for scope in scopes:
        if scope not in PERMISSIONS:
            raise UserError(f"unknown scope {scope!r} (scopes: {', '.join(PERMISSIONS)})")
        if not role_allows(role, scope):
            raise UserError(f"role {role} does not have {scope!r}, so a token cannot either")
        if scope not in out:
            out.append(scope)
    if not out:
        raise UserError("a token needs at least one scope")
    return out


def create_token(session: Session, user: User, name: str, scopes: Iterable[str]) -> str:
    """Make an API token for ``user``; the returned ``tl_...`` value is never stored or shown
    again (only its SHA-256 is kept)."""
    checked = check_scopes(user.role, scopes)
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(user_id=user.id, name=name, token_hash=_sha256(raw), scopes=checked))
    session.flush()
    return raw


def revoke_token(session: Session, token_id: int) -> ApiToken:
    token = session.get(ApiToken, token_id)
    if token is None:
        raise UserError(f"no token with id {token_id}")
    if token.revoked_at is None:
        token.revoked_at = _now()
    return token


# --------------------------------------------------------------------------------------------
# Principals and the request context


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is making a request and what they may do."""

    user_id: int | None
    username: str
    role: str
    permissions: frozenset[str]
    via: Literal["session", "token", "anonymous"]
    token_id: int | None = None
    csrf_token: str | None = None
    session_id: str | None = None

    def can(self, permission: str) -> bool:
        return permission in self.permissions or (self.role == "admin" and self.via == "session")

    @property
    def actor(self) -> str:
        if self.via == "token":
            return f"token:{self.token_id}:{self.username}"
        if self.via == "anonymous":
            return "anonymous"
        return f"user:{self.username}"
