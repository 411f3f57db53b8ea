"""``tipline exchange``: partners' hash lists fetched into banks (docs/exchanges.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tipline.cli import state
from tipline.cli.app import app
from tipline.cli.database import UrlOption, open_db
from tipline.errors import TiplineError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from tipline.store.jobs import JobQueue

exchange_app = typer.Typer(
    help=(
        "Hash exchanges: partners' hash lists (a local file, a list over HTTPS) fetched into a "
        "bank per exchange by durable jobs (`tipline worker`), resumable, with tombstones; "
        "our banks shared with and pushed to partners. Credentials are stored encrypted with "
        "the media key and never shown."
    ),
    no_args_is_help=True,
)
app.add_typer(exchange_app, name="exchange")

NameArg = Annotated[str, typer.Argument(help="The exchange's name (CAPITALS_AND_UNDERSCORES).")]


def _configure() -> None:
    from tipline.service.wiring import configure_process

    configure_process(state.service_settings())


def _config(pairs: list[str], config_json: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if config_json:
        try:
            doc = json.loads(config_json)
        except ValueError as err:
            raise TiplineError(f"--config-json is not JSON: {err}") from None
        if not isinstance(doc, dict):
            raise TiplineError("--config-json must be a JSON object")
        out.update(doc)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise TiplineError(f"--config {pair[:80]!r}: use KEY=VALUE")
        out[key.strip()] = value
    return out


def _queue(s: Session) -> JobQueue:
    from sqlalchemy.engine import Engine

    from tipline.store.jobs import JobQueue

    bind = s.get_bind()
    return JobQueue(bind if isinstance(bind, Engine) else bind.engine)


def _credentials(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise TiplineError(f"cannot read credentials file {path}: {type(err).__name__}") from None
    if not isinstance(doc, dict):
        raise TiplineError(f"credentials file {path} must hold a JSON object")
    return doc


@exchange_app.command("add")
def exchange_add(
    name: NameArg,
    api: Annotated[
        str,
        typer.Option(
            "--type", help="Exchange type: local_file, http_list, ncmec or tipline (a peer)."
        ),
    ] = "local_file",
    config: Annotated[
        list[str] | None,
        typer.Option(
            "--config",
            help="A configuration field, KEY=VALUE (repeat): path=..., "
            "url=..., format=te, default_signal_type=pdq.",
            show_default=False,
        ),
    ] = None,
    config_json: Annotated[
        str | None, typer.Option("--config-json", help="The configuration as a JSON object.")
    ] = None,
    credentials_file: Annotated[
        Path | None,
        typer.Option(
            "--credentials-file",
            help='A JSON file with the credentials (http_list: {"authorization": ...}; '
            'tipline: {"token": "tl_...", "secret": "tls_..."}); stored encrypted with the '
            "media key.",
        ),
    ] = None,
    bank: Annotated[
        str | None, typer.Option("--bank", help="The bank to fill. Default: NAME (created).")
    ] = None,
    role: Annotated[str, typer.Option("--role", help="A new bank's role: alert or ignore.")] = (
        "alert"
    ),
    pdq_threshold: Annotated[
        int, typer.Option("--pdq-threshold", help="A new bank's PDQ distance threshold.")
    ] = 31,
    interval: Annotated[
        int, typer.Option("--interval", help="Seconds between fetches.", min=60)
    ] = 3600,
    no_schedule: Annotated[
        bool, typer.Option("--no-schedule", help="Do not queue the first fetch job.")
    ] = False,
    database_url_opt: UrlOption = None,
) -> None:
    """Add an exchange (and its bank) and queue its first fetch."""
    from tipline.exchange import store
    from tipline.exchange.fetcher import start_chain

    _configure()
    creds = _credentials(credentials_file)
    factory = open_db(database_url_opt)
    with factory() as s, s.begin():
        ex = store.create_exchange(
            s,
            name,
            api,
            _config(config or [], config_json),
            bank=bank,
            role=role,
            pdq_threshold=pdq_threshold,
            interval_seconds=interval,
            credentials=creds,
        )
        if not no_schedule:
            start_chain(_queue(s), s, ex)
        bank_name = store.bank_name(s, ex)
    typer.echo(f"added exchange {name} ({api}) into bank {bank_name}")


@exchange_app.command("list")
def exchange_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    database_url_opt: UrlOption = None,
) -> None:
    """List exchanges: type, bank, enabled, last fetch (never credentials)."""
    from tipline.exchange import store

    factory = open_db(database_url_opt)
    with factory() as s:
        rows = [
            {**store.exchange_json(s, ex), "status": store.status_json(s, ex)}
            for ex in store.list_exchanges(s)
        ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("no exchanges (add one with `tipline exchange add`)")
    for r in rows:
        st = r["status"]
        ok = {True: "ok", False: "FAILING", None: "never fetched"}[st["last_fetch_succeeded"]]
        on = "enabled" if r["enabled"] else "disabled"
        typer.echo(
            f"{r['name']:<24} {r['api']:<11} bank {r['bank']:<24} {on:<8} {ok}, "
            f"{st['fetched_items']} items"
        )


@exchange_app.command("show")
def exchange_show(name: NameArg, database_url_opt: UrlOption = None) -> None:
    """An exchange's configuration and status as JSON (credentials: only whether set)."""
    from tipline.exchange import store

    factory = open_db(database_url_opt)
    with factory() as s:
        ex = store.get_exchange(s, name)
        doc = {**store.exchange_json(s, ex), "status": store.status_json(s, ex)}
    typer.echo(json.dumps(doc, indent=2))


@exchange_app.command("status")
def exchange_status(name: NameArg, database_url_opt: UrlOption = None) -> None:
    """An exchange's fetch status as JSON (HMA's fields, errors, counts, latest problems),
    with its pushes (`tipline exchange push`) when it has any."""
    from tipline.exchange import store
    from tipline.exchange.push import push_status

    factory = open_db(database_url_opt)
    with factory() as s:
        doc = store.status_json(s, store.get_exchange(s, name))
        pushes = push_status(s, name)
    if pushes:
        doc["pushes"] = pushes
    typer.echo(json.dumps(doc, indent=2))


@exchange_app.command("fetch")
def exchange_fetch(
    name: NameArg,
    budget: Annotated[
        float, typer.Option("--budget", help="Stop after this many seconds.", min=1)
    ] = 240.0,
    enqueue: Annotated[
        bool, typer.Option("--enqueue", help="Queue a fetch job for the workers instead.")
    ] = False,
    database_url_opt: UrlOption = None,
) -> None:
    """Fetch an exchange now, here (or `--enqueue` for the workers); prints the outcome."""
    from tipline.exchange import store
    from tipline.exchange.fetcher import FetchOptions, run_fetch, start_chain

    _configure()
    factory = open_db(database_url_opt)
    if enqueue:
        with factory() as s, s.begin():
            ex = store.get_exchange(s, name)
            job = start_chain(_queue(s), s, ex)
        typer.echo(f"queued fetch job {job} for exchange {name}")
        return
    with factory() as s:
        store.get_exchange(s, name)
    out = run_fetch(factory, name, FetchOptions(budget_seconds=budget))
    state_word = "up to date" if out.up_to_date else ("more to fetch" if out.more else "")
    if not out.succeeded:
        raise TiplineError(f"fetch of {name} failed: {out.error}")
    typer.echo(
        f"{name}: {out.added} added, {out.changed} changed, {out.tombstoned} tombstoned, "
        f"{out.skipped} skipped in {out.batches} batch(es); {state_word}".rstrip("; ")
    )


@exchange_app.command("remove")
def exchange_remove(name: NameArg, database_url_opt: UrlOption = None) -> None:
    """Remove an exchange. Its bank and entries stay (`tipline bank delete` removes them)."""
    from tipline.exchange import store

    factory = open_db(database_url_opt)
    with factory() as s, s.begin():
        if not store.delete_exchange(s, name):
            raise TiplineError(f"no exchange named {name[:80]!r}")
    typer.echo(f"removed exchange {name} (its bank stays)")


PeerOpt = Annotated[
    str,
    typer.Option(
        "--to", help="The peer's account here (its tokens with exchange:read read the feed)."
    ),
]


@exchange_app.command("share")
def exchange_share(
    bank: Annotated[str, typer.Argument(help="The bank to share (e.g. TIPLINE_GRADED).")],
    peer_name: PeerOpt,
    accept_into: Annotated[
        str | None,
        typer.Option(
            "--accept-into",
            help="Also take records the peer pushes (`tipline exchange push` there), into "
            "this bank (created if missing).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    database_url_opt: UrlOption = None,
) -> None:
    """Share a bank with a Tipline peer: its entries, their changes and tombstones are
    published on the signed feed /api/v1/exchange/banks/BANK/changes. Prints the signing
    secret once (give it to the peer with a token for the account: `tipline token create`);
    sharing again replaces the secret."""
    from tipline.exchange import peer, store

    _configure()
    ring = store.keyring()
    factory = open_db(database_url_opt)
    with factory() as s, s.begin():
        secret = peer.share_bank(
            s,
            bank,
            peer_name,
            lambda owner, data: store.seal(ring, owner, data),
            accept_into=accept_into,
        )
    if as_json:
        typer.echo(json.dumps({"bank": bank, "peer": peer_name, "secret": secret}))
        return
    typer.echo(f"shared bank {bank} with {peer_name}")
    typer.echo(f"signing secret (shown once; the peer's exchange credentials): {secret}")


@exchange_app.command("unshare")
def exchange_unshare(
    bank: Annotated[str, typer.Argument(help="The shared bank.")],
    peer_name: PeerOpt,
    database_url_opt: UrlOption = None,
) -> None:
    """Stop sharing a bank with a peer (its feed answers 404 from now on)."""
    from tipline.exchange import peer

    factory = open_db(database_url_opt)
    with factory() as s, s.begin():
        if not peer.unshare_bank(s, bank, peer_name):
            raise TiplineError(f"bank {bank[:80]} is not shared with {peer_name[:80]}")
    typer.echo(f"bank {bank} is no longer shared with {peer_name}")


@exchange_app.command("shares")
def exchange_shares(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    database_url_opt: UrlOption = None,
) -> None:
    """List the banks shared with peers: changes published, entries live, last read."""
    from tipline.exchange import peer

    factory = open_db(database_url_opt)
    with factory() as s:
        rows = [i.to_json() for i in peer.list_shares(s)]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("no shared banks (share one with `tipline exchange share BANK --to PEER`)")
    for r in rows:
        read = "never read" if r["last_read_at"] is None else f"last read {r['last_read_at']}"
        typer.echo(
            f"{r['bank']:<24} to {r['peer']:<20} {r['changes']} changes, "
            f"{r['published']} live, {r['opinions']} opinions, {read}"
        )


@exchange_app.command("push")
def exchange_push(
    name: NameArg,
    bank: Annotated[str, typer.Option("--bank", help="Our bank whose entries to push.")],
    follow: Annotated[
        bool | None,
        typer.Option(
            "--follow/--no-follow",
            help="Keep pushing every change of the bank by itself (`tipline worker`, serve's "
            "in-process workers): after each interval, and at once after a final grade. "
            "Default: as the push was (not following for a new one).",
            show_default=False,
        ),
    ] = None,
    interval: Annotated[
        int | None,
        typer.Option(
            "--interval",
            help="Seconds between a following push's runs (default 300).",
            min=10,
            show_default=False,
        ),
    ] = None,
    enqueue: Annotated[
        bool, typer.Option("--enqueue", help="Queue the push job for the workers instead.")
    ] = False,
    budget: Annotated[
        float, typer.Option("--budget", help="Stop after this many seconds.", min=1)
    ] = 240.0,
    database_url_opt: UrlOption = None,
) -> None:
    """Push a bank's entries to an exchange that takes submissions (a `tipline` peer whose
    share --accept-into a bank; `stop_ncii` with --config submit=true): enabled entries as
    records, disabled or deleted ones as withdrawals, each (entry, state) once, so pushing
    again sends only what changed. Runs the push job here (or `--enqueue`); `--follow`
    keeps pushing by itself (`tipline exchange status` shows how it goes)."""
    from tipline.exchange import push
    from tipline.store.exchange_share_tables import ExchangePushRow

    _configure()
    factory = open_db(database_url_opt)
    with factory() as s, s.begin():
        row = push.create_push(s, name, bank, follow=follow, interval_seconds=interval)
        push_id, following = row.id, row.follow
        if enqueue:
            job = push.start_chain(_queue(s), s, row)
    if enqueue:
        typer.echo(f"queued push job {job} of bank {bank} to {name}")
        return
    out = push.run_push(factory, push_id, budget_seconds=budget)
    if out.busy:
        raise TiplineError(f"bank {bank} is being pushed to {name} right now; try again later")
    if following or out.more:
        with factory() as s, s.begin():
            row2 = s.get(ExchangePushRow, push_id)
            if row2 is not None:
                push.start_chain(_queue(s), s, row2, 0.0 if out.more else row2.interval_seconds)
    if not out.succeeded:
        raise TiplineError(f"push of bank {bank} to {name} failed: {out.error}")
    typer.echo(out.summary() + ("; following" if following else ""))
    for key, reason in list(out.refusals.items())[:5]:
        typer.echo(f"  refused {key}: {reason}")


@exchange_app.command("unpush")
def exchange_unpush(
    name: NameArg,
    bank: Annotated[str, typer.Option("--bank", help="The bank pushed.")],
    database_url_opt: UrlOption = None,
) -> None:
    """Stop pushing a bank to an exchange (what the partner has stays there)."""
    from tipline.exchange import push

    factory = open_db(database_url_opt)
    with factory() as s, s.begin():
        if not push.remove_push(s, name, bank):
            raise TiplineError(f"bank {bank[:80]} is not pushed to {name[:80]}")
    typer.echo(f"bank {bank} is no longer pushed to {name}")
