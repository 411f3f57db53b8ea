"""``tipline user`` and ``tipline token``: accounts, roles and API tokens."""

from __future__ import annotations

import getpass
import json
import sys
from typing import Annotated, Any

import typer
from sqlalchemy import select

from tipline import accounts as auth
from tipline.audit import log as audit
from tipline.cli.app import app
from tipline.cli.database import UrlOption, open_db
from tipline.store.tables import ApiToken, User

user_app = typer.Typer(
    help=(
        "Accounts and roles: admin, senior_analyst, analyst, auditor, partner (API only). "
        "See docs/security.md for what each role may do."
    ),
    no_args_is_help=True,
)
token_app = typer.Typer(
    help="API tokens (`Authorization: Bearer tl_...`): scoped, revocable, stored hashed.",
    no_args_is_help=True,
)
app.add_typer(user_app, name="user")
app.add_typer(token_app, name="token")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:
        return "cli"


def _read_password(from_stdin: bool, role: str) -> str | None:
    if from_stdin:
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise auth.UserError("no password on stdin")
        return line
    if role in auth.API_ONLY_ROLES:
        return None  # partners never log in with a password
    first = getpass.getpass("Password: ")
    if getpass.getpass("Repeat: ") != first:
        raise auth.UserError("passwords differ")
    return first


@user_app.command("add")
def user_add(
    name: Annotated[str, typer.Argument(help="Username.", show_default=False)],
    role: Annotated[
        str, typer.Option("--role", help=f"One of: {', '.join(auth.ROLE_PERMISSIONS)}.")
    ],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from stdin's first line.")
    ] = False,
    database_url_opt: UrlOption = None,
) -> None:
    """Add a user (the password is prompted for; partner accounts get none: they use tokens)."""
    auth._check_role(role)
    factory = open_db(database_url_opt)  # before the prompt: a database problem asks nothing
    password = _read_password(password_stdin, role)
    with factory() as s, s.begin():
        user = auth.create_user(s, name, role, password)
        audit.record(
            s, _actor(), "user.add", "user", user.id, None, {"username": name, "role": role}
        )
    typer.echo(f"added {role} {name}")


@user_app.command("list")
def user_list(as_json: JsonOpt = False, database_url_opt: UrlOption = None) -> None:
    """List users with their role and whether they are active."""
    factory = open_db(database_url_opt)
    with factory() as s:
        users = list(s.scalars(select(User).order_by(User.username)))
    rows = [
        {"username": u.username, "role": u.role, "active": u.active, "created": str(u.created_at)}
        for u in users
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        typer.echo(f"{r['username']:<24} {r['role']:<15} {'active' if r['active'] else 'DISABLED'}")


def _set_active(name: str, active: bool, url: str | None) -> None:
    factory = open_db(url)
    with factory() as s, s.begin():
        user = auth.set_active(s, name, active)
        action = "user.enable" if active else "user.disable"
        audit.record(s, _actor(), action, "user", user.id, None, {"username": name})
    typer.echo(f"{'enabled' if active else 'disabled'} {name}")


@user_app.command("disable")
def user_disable(
    name: Annotated[str, typer.Argument(show_default=False)], database_url_opt: UrlOption = None
) -> None:
    """Disable a user: their sessions end and their tokens stop working at once."""
    _set_active(name, False, database_url_opt)


@user_app.command("enable")
def user_enable(
    name: Annotated[str, typer.Argument(show_default=False)], database_url_opt: UrlOption = None
) -> None:
    """Re-enable a disabled user."""
    _set_active(name, True, database_url_opt)


@user_app.command("set-password")
def user_set_password(
    name: Annotated[str, typer.Argument(show_default=False)],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from stdin's first line.")
    ] = False,
    database_url_opt: UrlOption = None,
) -> None:
    """Set a user's password (their open sessions end)."""
    factory = open_db(database_url_opt)
    with factory() as s, s.begin():
        user = auth.get_user(s, name)
        if user.role in auth.API_ONLY_ROLES:
            raise auth.UserError(f"{user.role} accounts use API tokens and have no password")
        password = _read_password(password_stdin, user.role)
        assert password is not None
        auth.set_password(s, user, password)
        audit.record(s, _actor(), "user.set_password", "user", user.id, None, {"username": name})
    typer.echo(f"password set for {name}")


@user_app.command("set-role")
def user_set_role(
    name: Annotated[str, typer.Argument(show_default=False)],
    role: Annotated[str, typer.Argument(help="The new role.", show_default=False)],
    database_url_opt: UrlOption = None,
) -> None:
    """Change a user's role; their sessions end and their tokens narrow to the new role."""
    factory = open_db(database_url_opt)
    with factory() as s, s.begin():
        user = auth.get_user(s, name)
        old = user.role
        auth.set_role(s, user, role)
        audit.record(
            s,
            _actor(),
            "user.set_role",
            "user",
            user.id,
            None,
            {"username": name, "from": old, "to": role},
        )
    typer.echo(f"{name}: {old} -> {role}")


@token_app.command("create")
def token_create(
    user: Annotated[str, typer.Option("--user", help="The token's owner.", show_default=False)],
    name: Annotated[str, typer.Option("--name", help="What the token is for.")],
    scope: Annotated[
        list[str],
        typer.Option(
            "--scope",
            help="A permission the token carries (repeat). Must be one the owner's role has.",
            show_default=False,
        ),
    ],
    database_url_opt: UrlOption = None,
) -> None:
    """Create a token and print it once (only its hash is stored)."""
    factory = open_db(database_url_opt)
    with factory() as s, s.begin():
        owner = auth.get_user(s, user)
        raw = auth.create_token(s, owner, name, scope)
        tok = s.scalars(select(ApiToken).where(ApiToken.token_hash == auth._sha256(raw))).one()
        audit.record(
            s,
            _actor(),
            "token.create",
            "token",
            tok.id,
            None,
            {"user": user, "name": name, "scopes": tok.scopes},
        )
    typer.echo(raw)
    typer.echo(f"token {tok.id} for {user}; store it now, it is not shown again", err=True)


@token_app.command("list")
def token_list(as_json: JsonOpt = False, database_url_opt: UrlOption = None) -> None:
    """List tokens (never their values): id, owner, name, scopes, last use, revoked."""
    factory = open_db(database_url_opt)
    with factory() as s:
        rows: list[dict[str, Any]] = [
            {
                "id": t.id,
                "user": u.username,
                "name": t.name,
                "scopes": t.scopes,
                "created": str(t.created_at),
                "last_used": str(t.last_used_at) if t.last_used_at else None,
                "revoked": str(t.revoked_at) if t.revoked_at else None,
            }
            for t, u in s.execute(
                select(ApiToken, User).join(User, User.id == ApiToken.user_id).order_by(ApiToken.id)
            )
        ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        state_ = "REVOKED" if r["revoked"] else f"last used {r['last_used'] or 'never'}"
        typer.echo(
            f"{r['id']:>5} {r['user']:<20} {r['name']:<20} {','.join(r['scopes'])}  {state_}"
        )


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[int, typer.Argument(help="Token id (see `token list`).")],
    database_url_opt: UrlOption = None,
) -> None:
    """Revoke a token; servers stop accepting it within seconds."""
    factory = open_db(database_url_opt)
    with factory() as s, s.begin():
        auth.revoke_token(s, token_id)
        audit.record(s, _actor(), "token.revoke", "token", token_id, None, {})
    typer.echo(f"revoked token {token_id}")
