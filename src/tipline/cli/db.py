"""``tipline db``: create/upgrade the service database and look at its job queue."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer

from tipline.cli import state
from tipline.cli.app import app
from tipline.cli.database import known_revisions, one_line, ready_url, safe_url
from tipline.errors import TiplineError
from tipline.store import migrations
from tipline.store.base import database_url, make_engine
from tipline.store.jobs import JobQueue
from tipline.store.tables import JOB_STATUSES

db_app = typer.Typer(
    help="The service database (SQLite file by default, or PostgreSQL): schema and job queue.",
    no_args_is_help=True,
)
app.add_typer(db_app, name="db")

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="SQLAlchemy URL, e.g. postgresql+psycopg://tipline@127.0.0.1:5432/tipline. "
        "Default: $TIPLINE_DATABASE_URL, else the SQLite file in the data directory.",
        show_default=False,
    ),
]


def _url(explicit: str | None) -> str:
    return database_url(state.data_dir(), explicit)


@db_app.command("upgrade")
def upgrade_cmd(database_url_opt: UrlOption = None) -> None:
    """Create the database schema or bring it to the newest version (safe to run again)."""
    url = _url(database_url_opt)
    try:
        before = migrations.current(url)
        migrations.upgrade(url)
        after = migrations.current(url)
    except TiplineError:
        raise
    except Exception as err:
        raise TiplineError(f"cannot upgrade {safe_url(url)}: {one_line(err)}") from None
    if before == after:
        typer.echo(f"{safe_url(url)}: already at schema {after}")
    else:
        typer.echo(f"{safe_url(url)}: upgraded from {before or '(empty)'} to {after}")


@db_app.command("current")
def current_cmd(database_url_opt: UrlOption = None) -> None:
    """Show the database's schema version and this Tipline's newest one."""
    url = _url(database_url_opt)
    try:
        have = migrations.current(url)
    except Exception as err:
        raise TiplineError(f"cannot open {safe_url(url)}: {one_line(err)}") from None
    head = migrations.head()
    if have == head:
        note = "up to date"
    elif have is not None and have not in known_revisions():
        note = "the database is newer than this Tipline"
    else:
        note = "run `tipline db upgrade`"
    typer.echo(f"{safe_url(url)}: schema {have or '(empty)'} (newest {head}: {note})")


def print_jobs(url: str, status: str | None, kind: str | None, limit: int, as_json: bool) -> None:
    engine = make_engine(url)
    try:
        queue = JobQueue(engine)
        jobs = queue.list(status=status, kind=kind, limit=limit)
        counts = queue.counts()
    finally:
        engine.dispose()
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "counts": counts,
                    "jobs": [
                        {
                            "id": j.id,
                            "kind": j.kind,
                            "status": j.status,
                            "attempts": j.attempts,
                            "max_attempts": j.max_attempts,
                            "run_after": j.run_after.isoformat(),
                            "updated_at": j.updated_at.isoformat(),
                            "last_error": j.last_error,
                            "dedupe_key": j.dedupe_key,
                        }
                        for j in jobs
                    ],
                },
                indent=2,
            )
        )
        return
    typer.echo("  ".join(f"{k}: {v}" for k, v in counts.items()))
    for j in jobs:
        err = (j.last_error or "").strip().splitlines()
        typer.echo(
            f"{j.id:>8}  {j.kind:<20} {j.status:<8} {j.attempts}/{j.max_attempts}  "
            f"{j.updated_at:%Y-%m-%d %H:%M:%S}  {err[-1][:100] if err else ''}"
        )


@db_app.command("jobs")
def jobs_cmd(
    database_url_opt: UrlOption = None,
    status: Annotated[
        str | None,
        typer.Option("--status", help=f"Only jobs in this state: {', '.join(JOB_STATUSES)}."),
    ] = None,
    kind: Annotated[str | None, typer.Option("--kind", help="Only jobs of this kind.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List jobs, newest first, with counts per state (`--status dead`: the dead letters)."""
    if status is not None and status not in JOB_STATUSES:
        raise TiplineError(f"unknown job status {status!r}: use one of {', '.join(JOB_STATUSES)}")
    print_jobs(ready_url(database_url_opt), status, kind, limit, as_json)


@db_app.command("requeue")
def requeue_cmd(
    job_ids: Annotated[
        list[int] | None, typer.Argument(help="Job ids. Default: every job in --status.")
    ] = None,
    database_url_opt: UrlOption = None,
    status: Annotated[
        str, typer.Option("--status", help="Requeue jobs in this state: dead or failed.")
    ] = "dead",
) -> None:
    """Put dead-lettered (or failed) jobs back in the queue with fresh attempts."""
    if status not in ("dead", "failed"):
        raise TiplineError("only dead or failed jobs can be requeued")
    engine = make_engine(ready_url(database_url_opt))
    try:
        n = JobQueue(engine).requeue(job_ids or None, status=status)
    finally:
        engine.dispose()
    typer.echo(f"requeued {n} job(s)")


@db_app.command("purge-jobs")
def purge_jobs_cmd(
    older_than_days: Annotated[
        float, typer.Option("--older-than-days", min=0, help="Finished at least this long ago.")
    ] = 30,
    status: Annotated[
        str, typer.Option("--status", help="Which finished jobs: done, failed or dead.")
    ] = "done",
    database_url_opt: UrlOption = None,
) -> None:
    """Delete finished jobs older than N days (the queue keeps them for inspection until then)."""
    if status not in ("done", "failed", "dead"):
        raise TiplineError("only done, failed or dead jobs can be purged")
    engine = make_engine(ready_url(database_url_opt))
    try:
        n = JobQueue(engine).purge(timedelta(days=older_than_days), status=status)
    finally:
        engine.dispose()
    typer.echo(f"deleted {n} {status} job(s)")


@db_app.command("import-banks")
def import_banks_cmd(
    source: Annotated[
        Path | None,
        typer.Option(
            "--from",
            help="The old bank file. Default: banks.sqlite3 in the data directory.",
            show_default=False,
        ),
    ] = None,
    database_url_opt: UrlOption = None,
) -> None:
    """Adopt the banks of an old banks.sqlite3 (older Tipline versions) into the service database.

    The file is only read, never changed, and checked whole before anything is written. Safe to
    run again: banks already there keep their settings, entries are not added twice.
    """
    from tipline.banks import LEGACY_DB_NAME, adopt_banks
    from tipline.store.banks import SqlBankStore

    path = source or state.data_dir() / LEGACY_DB_NAME
    if not path.is_file():
        raise TiplineError(f"no bank file at {path}")
    url = ready_url(database_url_opt)
    with SqlBankStore(url) as dst:
        report = adopt_banks(path, dst)
        total = sum(dst.entry_counts().values())
    typer.echo(f"{report} ({total} entries in the service database {safe_url(url)})")
