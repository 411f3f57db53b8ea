"""``tipline crawl``: follow reported pages' links while they lead to known material
(docs/crawl.md)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from tipline.cli import state
from tipline.cli.app import app
from tipline.cli.database import UrlOption, open_db


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _line(st: Any) -> str:
    left = st.budget_left()
    return (
        f"pages {st.pages_done} done, {st.pages_failed} failed, {st.pages_queued} queued | "
        f"media {st.media_done} ({st.media_matched} matched, {st.media_flagged} flagged) | "
        f"{_size(st.bytes_fetched)} | left: {left['pages']} pages, {_size(left['bytes'])}, "
        f"{left['media']} media, {left['seconds']:.0f} s"
    )


@app.command("crawl")
def crawl(
    urls: Annotated[
        list[str] | None,
        typer.Argument(help="Seed pages (http, https; .onion through [crawl] tor_proxy)."),
    ] = None,
    max_pages: Annotated[int | None, typer.Option(help="Pages to fetch at most.")] = None,
    max_bytes: Annotated[int | None, typer.Option(help="Bytes to read at most.")] = None,
    max_depth: Annotated[int | None, typer.Option(help="Links to follow from a seed.")] = None,
    max_seconds: Annotated[float | None, typer.Option(help="Seconds of running.")] = None,
    max_media: Annotated[int | None, typer.Option(help="Media files to hash at most.")] = None,
    barren: Annotated[
        int | None,
        typer.Option(
            help="Stop a branch after this many pages in a row with nothing found (0: never)."
        ),
    ] = None,
    delay: Annotated[
        float | None, typer.Option(help="Seconds between two requests to one host.")
    ] = None,
    allow_domain: Annotated[
        list[str] | None,
        typer.Option("--allow-domain", help="Another registrable domain in scope (repeatable)."),
    ] = None,
    deny_domain: Annotated[
        list[str] | None,
        typer.Option("--deny-domain", help="A domain or host never fetched (repeatable)."),
    ] = None,
    report: Annotated[
        str | None,
        typer.Option(
            "--report",
            help="Attach to this report (reference or id): matched media become its uploads.",
        ),
    ] = None,
    resume: Annotated[
        int | None, typer.Option("--resume", help="Resume crawl ID (no URLs then).")
    ] = None,
    take_over: Annotated[
        bool,
        typer.Option("--take-over", help="With --resume: run it although a runner seems alive."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    config: Annotated[
        Path | None, typer.Option("--config", help="Settings file (TOML/JSON).")
    ] = None,
    database_url_opt: UrlOption = None,
) -> None:
    """Crawl from seed URLs in the foreground: fetch pages, hash every media file against the
    banks, keep expanding where something matched, stop at a budget. Media that match nothing
    keep only their hashes; matched pages get a sealed evidence capture.

    Examples: ``tipline crawl https://forum.example/thread/1 --max-pages 200``;
    ``tipline crawl --resume 7``."""
    from rich.console import Console
    from rich.live import Live

    from tipline.crawl.engine import Budgets, CrawlError, run_crawl, start_crawl
    from tipline.service.wiring import configure_process, crawl_config, crawl_defaults
    from tipline.store.tables import Report

    settings = state.service_settings(config)
    if database_url_opt:  # the banks matched against are this database's too
        settings = settings.replace(database_url=database_url_opt)
    factory = open_db(settings.database_url or None)
    configure_process(settings)
    if resume is None and not urls:
        raise typer.BadParameter("give seed URLs, or --resume ID")
    if resume is not None and urls:
        raise typer.BadParameter("--resume takes no URLs (the crawl has its seeds)")
    errors: list[str] = []
    if resume is None:
        budgets, policy = crawl_defaults(settings)
        budgets = Budgets.from_json(
            {
                **budgets.to_json(),
                **{
                    k: v
                    for k, v in {
                        "max_pages": max_pages,
                        "max_bytes": max_bytes,
                        "max_depth": max_depth,
                        "max_seconds": max_seconds,
                        "max_media": max_media,
                    }.items()
                    if v is not None
                },
            }
        )
        if barren is not None:
            policy = replace(policy, barren_pages=barren)
        if delay is not None:
            policy = replace(policy, per_host_delay=delay)
        policy = replace(
            policy,
            allow_domains=tuple(d.lower() for d in allow_domain or ()),
            deny_domains=tuple(d.lower() for d in deny_domain or ()),
        )
        with factory() as s, s.begin():
            report_id = None
            if report is not None:
                row = (
                    s.get(Report, int(report))
                    if report.isdigit()
                    else s.query(Report).filter(Report.reference == report).one_or_none()
                )
                if row is None:
                    raise CrawlError(f"no report {report!r}")
                report_id = row.id
            crawl_row, errors = start_crawl(
                s, urls or [], report_id=report_id, budgets=budgets, policy=policy
            )
            crawl_id = crawl_row.id
    else:
        crawl_id = resume
    cfg = crawl_config(settings)
    err_console = Console(stderr=True)
    for e in errors:
        err_console.print(f"[yellow]skipped:[/] {e}")
    if as_json or not err_console.is_terminal:
        result = run_crawl(factory, crawl_id, cfg, take_over=take_over)
    else:
        with Live("starting...", console=err_console, transient=True) as live:

            def progress(st: Any) -> None:
                live.update(f"crawl {st.crawl_id}: {_line(st)}")

            result = run_crawl(factory, crawl_id, cfg, progress=progress, take_over=take_over)
    if as_json:
        typer.echo(json.dumps({**result.to_json(), "skipped_seeds": errors}, indent=2))
        return
    typer.echo(f"crawl {result.crawl_id}: {result.state} ({result.stop_reason})")
    typer.echo(_line(result))
    if result.state in ("waiting", "paused"):
        typer.echo(f"resume with: tipline crawl --resume {result.crawl_id}")
