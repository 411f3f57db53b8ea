"""``tipline audit``: check the audit trail's hash chain and export it."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from tipline.audit import log as audit
from tipline.cli.app import app
from tipline.cli.database import UrlOption, open_db
from tipline.errors import TiplineError

audit_app = typer.Typer(
    help=(
        "The audit trail: who did what, when, from where and on what, chained by hash so "
        "tampering is detectable."
    ),
    no_args_is_help=True,
)
app.add_typer(audit_app, name="audit")


class ExportFormat(StrEnum):
    jsonl = "jsonl"
    csv = "csv"


def _parse_since(value: str) -> datetime:
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise TiplineError(f"--since {value!r} is not an ISO date or time") from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


@audit_app.command("verify")
def verify_cmd(
    anchor: Annotated[
        list[str] | None,
        typer.Option(
            "--anchor",
            help="A head hash printed by an earlier verify and kept outside the database "
            "(repeatable): it must still be in the chain.",
            show_default=False,
        ),
    ] = None,
    database_url_opt: UrlOption = None,
) -> None:
    """Walk the whole chain; exit 0 if intact, 1 at the first broken link (which it names).

    Record the printed head hash somewhere else (e.g. with your backups) and pass it back with
    --anchor later: a chain rewritten from scratch or cut short still links up, but loses it.
    """
    factory = open_db(database_url_opt)
    with factory() as s:
        result = audit.verify(s, anchor or ())
    typer.echo(result.message())
    raise typer.Exit(0 if result.ok else 1)


@audit_app.command("export")
def export_cmd(
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write here instead of stdout.")
    ] = None,
    fmt: Annotated[ExportFormat, typer.Option("--format", help="jsonl or csv.")] = (
        ExportFormat.jsonl
    ),
    since: Annotated[
        str | None,
        typer.Option("--since", help="Only events at or after this ISO date/time (UTC)."),
    ] = None,
    database_url_opt: UrlOption = None,
) -> None:
    """Export events oldest first, each with its prev_hash and hash (verifiable offline)."""
    since_at = _parse_since(since) if since else None
    factory = open_db(database_url_opt)
    with factory() as s:
        if output is None:
            audit.export(s, sys.stdout, fmt.value, since_at)
            return
        tmp = output.with_name(output.name + ".tmp")
        with tmp.open("w", encoding="utf-8", newline="") as fh:
            n = audit.export(s, fh, fmt.value, since_at)
        tmp.replace(output)
    typer.echo(f"exported {n} events to {output}", err=True)
