"""``tipline export``: hash lists, the URL list and NCMEC CyberTipline reports of final-graded,
actionable items (docs/actions.md). Every export is an ``export.<kind>`` audit event."""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, TextIO

import typer

from tipline.actions import exports
from tipline.cli.app import app
from tipline.cli.audit import _parse_since
from tipline.cli.database import UrlOption, open_db
from tipline.errors import TiplineError

export_app = typer.Typer(
    help=(
        "Export what analysts confirmed: hash lists (ThreatExchange CSV, JSONL, IWF-style CSV), "
        "the URL list, and NCMEC CyberTipline XML reports. Each export is audited."
    ),
    no_args_is_help=True,
)
app.add_typer(export_app, name="export")


class HashFormat(StrEnum):
    te_csv = "te-csv"
    jsonl = "jsonl"
    iwf_csv = "iwf-csv"


assert tuple(f.value for f in HashFormat) == exports.HASH_FORMATS

OutputOpt = Annotated[
    Path | None,
    typer.Option("-o", "--output", help="Write here instead of stdout.", show_default=False),
]
SinceOpt = Annotated[
    str | None,
    typer.Option(
        "--since",
        help="Only items graded at or after this ISO date/time (UTC unless it has an offset).",
        show_default=False,
    ),
]


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:
        return "cli"


@contextlib.contextmanager
def _output_after_commit(output: Path | None) -> Iterator[TextIO]:
    """A temporary file to write the export into; the caller's transaction (which records the
    audit event) closes inside this block, and only once the block ends without an error is
    the file moved into place (or copied to stdout). A failed export leaves no file behind."""
    where = output.parent if output is not None else None
    if where is not None and not where.is_dir():
        raise TiplineError(f"cannot write {output}: no directory {where}")
    fd, name = tempfile.mkstemp(prefix=".tipline-export-", suffix=".tmp", dir=where)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            yield fh
        if output is None:
            with tmp.open("r", encoding="utf-8", newline="") as fh2:
                shutil.copyfileobj(fh2, sys.stdout)
            sys.stdout.flush()
        else:
            tmp.replace(output)
    finally:
        tmp.unlink(missing_ok=True)


def _export_to(kind: str, output: Path | None, since: str | None, url: str | None) -> None:
    """Write to a temporary file in the transaction that records the audit event; once that
    commits, move it into place (or copy it to stdout)."""
    since_at = _parse_since(since) if since else None
    factory = open_db(url)
    with _output_after_commit(output) as fh, factory() as s, s.begin():
        count = exports.export(s, kind, fh, actor=_actor(), since=since_at)
    what = "URLs" if kind == "urls" else f"items ({count.rows} rows)"
    to = f" to {output}" if output is not None else ""
    typer.echo(f"exported {count.items} {what}{to}", err=True)


@export_app.command("hashes")
def export_hashes(
    fmt: Annotated[
        HashFormat,
        typer.Option(
            "--format",
            help="te-csv (threatexchange dataset --csv), jsonl (one object per item) or iwf-csv.",
        ),
    ] = HashFormat.te_csv,
    output: OutputOpt = None,
    since: SinceOpt = None,
    database_url_opt: UrlOption = None,
) -> None:
    """Write the hash list of final-graded actionable items."""
    _export_to(fmt.value, output, since, database_url_opt)


class UrlSource(StrEnum):
    auto = "auto"
    cases = "cases"
    items = "items"


def _export_url_list(
    output: Path | None,
    since: str | None,
    until: str | None,
    delta: bool,
    as_json: bool,
    source: UrlSource,
    url: str | None,
) -> None:
    """As :func:`_export_to`: the temporary file is written in the transaction that records
    the audit event, then moved into place (or copied to stdout)."""
    from tipline.removal import urllist

    since_at = _parse_since(since) if since else None
    until_at = _parse_time("--until", until) if until else None
    factory = open_db(url)
    with _output_after_commit(output) as fh, factory() as s, s.begin():
        result = urllist.export_urls(
            s,
            fh,
            actor=_actor(),
            now=until_at,
            since=since_at,
            delta_wanted=delta,
            fmt="json" if as_json else "text",
            source=source.value,
        )
    to = f" to {output}" if output is not None else ""
    if result.delta is not None:
        d = result.delta
        span = f"{exports.format_time(d.since)} .. {exports.format_time(d.until)}"
        typer.echo(
            f"exported the URL list delta {span}: "
            f"{len(d.added)} added, {len(d.removed)} removed{to}",
            err=True,
        )
    else:
        what = "from removal cases" if result.source == "cases" else "of final-graded items"
        typer.echo(f"exported {result.count} URLs ({what}){to}", err=True)


def _parse_time(option: str, value: str) -> datetime:
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise TiplineError(f"{option} {value!r} is not an ISO date or time") from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


@export_app.command("urls")
def export_urls(
    output: OutputOpt = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="With removal cases: the delta since then (URLs added to and removed from "
            "the list). Without cases: only items graded at or after then. ISO date/time, UTC "
            "unless it has an offset.",
            show_default=False,
        ),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(
            "--until",
            help="The list (or the delta's end) as it stood then, from the cases' histories "
            "(default: now).",
            show_default=False,
        ),
    ] = None,
    delta: Annotated[
        bool,
        typer.Option(
            "--delta",
            help="Ask for the delta explicitly: needs --since and removal cases; lines are "
            "'+<TAB>URL' (added) and '-<TAB>URL' (removed).",
        ),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object instead of lines.")
    ] = False,
    source: Annotated[
        UrlSource,
        typer.Option(
            "--source",
            help="cases: the locations still online and confirmed (removal cases); items: "
            "the URLs of final-graded actionable items; auto: cases once any exist.",
        ),
    ] = UrlSource.auto,
    database_url_opt: UrlOption = None,
) -> None:
    """Write the URL list, one per line, sorted.

    Once removal cases exist it holds exactly the locations still online and confirmed: a
    removed or closed case's URL leaves it at the next export, a reappearance puts it back
    (docs/removal.md, "URL list"). Before that, it is the distinct URLs of final-graded
    actionable items."""
    _export_url_list(output, since, until, delta, as_json, source, database_url_opt)


def _write_text(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text)
        return
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(output)


@export_app.command("ncmec")
def export_ncmec(
    item_id: Annotated[int, typer.Argument(help="The item's id.", show_default=False)],
    output: OutputOpt = None,
    org_name: Annotated[
        str, typer.Option("--org-name", help="Reporting organisation (placeholder contact).")
    ] = "Tipline hotline",
    org_email: Annotated[
        str, typer.Option("--org-email", help="Reporting organisation's e-mail address.")
    ] = "hotline@example.org",
    database_url_opt: UrlOption = None,
) -> None:
    """Write a CyberTipline-style XML report for one item with a final actionable grade."""
    from tipline.actions import ncmec

    factory = open_db(database_url_opt)
    with factory() as s, s.begin():
        xml = ncmec.cybertip_xml(s, item_id, ncmec.Reporter(org_name, org_email))
        exports.record_export(
            s, "ncmec", exports.ExportCount(1, 1), actor=_actor(), target_id=item_id
        )
    _write_text(xml, output)
    if output is not None:
        typer.echo(f"wrote the CyberTipline report of item {item_id} to {output}", err=True)
