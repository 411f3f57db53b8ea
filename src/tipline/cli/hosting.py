"""``tipline hosting`` and ``tipline provider``: IP-to-ASN data sets, hosting lookups and the
provider directory (docs/hosting.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from tipline.cli import state
from tipline.cli.app import app
from tipline.cli.database import UrlOption, open_db

hosting_app = typer.Typer(
    help=(
        "Hosting attribution: import offline IP-to-ASN data sets (iptoasn TSV, MMDB) and look "
        "up where a URL or address is hosted and whom to notify."
    ),
    no_args_is_help=True,
)
provider_app = typer.Typer(
    help="The provider directory: abuse contacts by AS, domain or country (TOML or CSV).",
    no_args_is_help=True,
)
app.add_typer(hosting_app, name="hosting")
app.add_typer(provider_app, name="provider")

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@hosting_app.command("import")
def hosting_import(
    file: Annotated[
        Path,
        typer.Argument(
            help="ip2asn-v4.tsv, ip2asn-v6.tsv, ip2asn-combined.tsv (optionally .gz) or an "
            ".mmdb file."
        ),
    ],
    name: Annotated[
        str | None,
        typer.Option("--name", help="Data set name (default: the file name / MMDB type)."),
    ] = None,
    version: Annotated[
        str | None,
        typer.Option("--version", help="Data set version (default: file date / MMDB build)."),
    ] = None,
    database_url_opt: UrlOption = None,
) -> None:
    """Import (or replace) an IP-to-ASN data set; a bad line refuses the whole file."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    from tipline.removal.hosting import import_dataset

    factory = open_db(database_url_opt)
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        transient=True,
        disable=not file.is_file() or file.stat().st_size < 8 << 20,
    ) as bar:
        task = bar.add_task(f"importing {file.name}", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        with factory() as s, s.begin():
            info = import_dataset(
                s, file, state.data_dir(), name=name, version=version, progress=progress
            )
    typer.echo(
        f"imported data set {info.name} ({info.kind}) version {info.version}: "
        f"{info.row_count} {'ranges' if info.kind == 'ip2asn' else 'tree nodes'}"
    )


@hosting_app.command("datasets")
def hosting_datasets(as_json: JsonOption = False, database_url_opt: UrlOption = None) -> None:
    """List the imported data sets: name, kind, version, rows, when imported."""
    from tipline.removal.hosting import datasets

    factory = open_db(database_url_opt)
    with factory() as s:
        rows = [d.to_json() for d in datasets(s)]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("no data sets (import one with `tipline hosting import FILE`)")
    for r in rows:
        typer.echo(
            f"{r['name']:<28} {r['kind']:<6} version {r['version']:<12} "
            f"{r['row_count']:>9} rows  imported {r['imported_at'][:19]}"
        )


def _fetch_settings() -> Any:
    return state.service_settings().fetch_settings()


@hosting_app.command("lookup")
def hosting_lookup(
    target: Annotated[str, typer.Argument(help="A URL, host name or IP address.")],
    as_json: JsonOption = False,
    database_url_opt: UrlOption = None,
) -> None:
    """Where TARGET is hosted: addresses, AS, country, CDN, contacts and the data sets used."""
    from tipline.removal.hosting import attribute

    factory = open_db(database_url_opt)
    with factory() as s:
        result = attribute(s, target, fetch_settings=_fetch_settings())
    doc = result.to_json()
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    sets = ", ".join(f"{d['name']} {d['version']}" for d in doc["datasets"]) or "-"
    asn = f"AS{doc['asn']} {doc['as_name'] or ''}".strip() if doc["asn"] is not None else "-"
    for label, value in (
        ("location", doc["canonical_url"]),
        ("registrable domain", doc["registrable_domain"]),
        ("addresses", ", ".join(doc["addresses"]) or "-"),
        ("AS", asn),
        ("country", doc["country"] or "-"),
        ("CDN", (doc["cdn_name"] or "yes") if doc["is_cdn"] else "no"),
        ("data sets", sets),
        ("error", doc["error"] or "-"),
    ):
        table.add_row(label, str(value))
    for role, c in doc["contacts"].items():
        via = c["abuse_email"] or c["webhook"] or "manual"
        table.add_row(f"contact {role}", f"{c['organisation']} <{via}> ({c['channel']})")
    if not doc["contacts"]:
        table.add_row("contacts", "none: manual action needed")
    Console(soft_wrap=True).print(table)


@provider_app.command("import")
def provider_import(
    file: Annotated[Path, typer.Argument(help="The directory as .toml or .csv.")],
    database_url_opt: UrlOption = None,
) -> None:
    """Replace the provider directory with FILE (refused, unchanged, if any entry is bad)."""
    from tipline.removal.providers import DirectoryError, load_directory, replace_directory

    try:
        contacts = load_directory(file)
    except DirectoryError as err:
        for problem in err.problems[:50]:
            typer.echo(problem, err=True)
        if len(err.problems) > 50:
            typer.echo(f"... and {len(err.problems) - 50} more", err=True)
        raise
    factory = open_db(database_url_opt)
    with factory() as s, s.begin():
        count = replace_directory(s, contacts)
    typer.echo(f"provider directory replaced: {count} entries from {file.name}")


@provider_app.command("list")
def provider_list(as_json: JsonOption = False, database_url_opt: UrlOption = None) -> None:
    """The provider directory."""
    from tipline.removal.providers import directory

    factory = open_db(database_url_opt)
    with factory() as s:
        rows = [c.to_json() for c in directory(s)]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("the provider directory is empty (import one with `tipline provider import`)")
    for r in rows:
        via = r["abuse_email"] or r["webhook"] or "-"
        window = f"  window {r['send_window']}" if r["send_window"] else ""
        cdn = "  CDN" if r["cdn"] else ""
        typer.echo(
            f"{r['key']:<28} {r['role']:<10} {r['organisation']}  {r['channel']}:{via}  "
            f"lang {r['language']}{window}{cdn}"
        )
