"""``tipline webhook``: endpoints told about matches, grades and exports (docs/actions.md)."""

from __future__ import annotations

import getpass
import json
from typing import Annotated

import typer

from tipline.actions import webhooks
from tipline.audit import log as audit
from tipline.cli.app import app
from tipline.cli.database import UrlOption, open_db

webhook_app = typer.Typer(
    help=(
        "Webhooks: signed JSON POSTs on events (match, grade, export), retried with backoff. "
        "Private and metadata addresses are refused unless allow-listed (fetch_allow_hosts / "
        "fetch_allow_networks)."
    ),
    no_args_is_help=True,
)
app.add_typer(webhook_app, name="webhook")

IdArg = Annotated[int, typer.Argument(help="Webhook id (see `webhook list`).", show_default=False)]


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:
        return "cli"


@webhook_app.command("add")
def webhook_add(
    url: Annotated[str, typer.Argument(help="The endpoint (https:// recommended).")],
    event: Annotated[
        list[str] | None,
        typer.Option(
            "--event",
            help=f"An event to deliver (repeat): {', '.join(webhooks.WEBHOOK_EVENTS)}. None: "
            "the webhook only receives removal notices (then --name is required: the provider "
            "directory's webhook = NAME).",
            show_default=False,
        ),
    ] = None,
    name: Annotated[
        str,
        typer.Option(
            "--name", help="What the webhook is for (the provider directory refers to it)."
        ),
    ] = "",
    database_url_opt: UrlOption = None,
) -> None:
    """Add a webhook and print its signing secret once (receivers verify with it)."""
    factory = open_db(database_url_opt)
    with factory() as s, s.begin():
        hook, secret = webhooks.create_webhook(s, url, event or [], name)
        hook_id = hook.id
        audit.record(
            s,
            _actor(),
            "webhook.create",
            "webhook",
            hook.id,
            None,
            {"name": hook.name, "events": hook.events},
        )
    typer.echo(secret)
    typer.echo(f"webhook {hook_id} added; store the secret now, it is not shown again", err=True)


@webhook_app.command("list")
def webhook_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    database_url_opt: UrlOption = None,
) -> None:
    """List webhooks: id, events, URL, active, last delivery status (never secrets)."""
    factory = open_db(database_url_opt)
    with factory() as s:
        rows = [webhooks.webhook_json(h) for h in webhooks.list_webhooks(s)]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        state = "active" if r["active"] else "DISABLED"
        last = r["last_status"] or "never delivered"
        events = ",".join(r["events"]) or "notices-only"
        typer.echo(f"{r['id']:>5} {events:<20} {state:<8} {r['url']}  ({last})")


@webhook_app.command("remove")
def webhook_remove(webhook_id: IdArg, database_url_opt: UrlOption = None) -> None:
    """Remove a webhook (deliveries still queued for it are dropped)."""
    factory = open_db(database_url_opt)
    with factory() as s, s.begin():
        webhooks.delete_webhook(s, webhook_id)
        audit.record(s, _actor(), "webhook.delete", "webhook", webhook_id, None, {})
    typer.echo(f"removed webhook {webhook_id}")


def _set_active(webhook_id: int, active: bool, url: str | None) -> None:
    factory = open_db(url)
    with factory() as s, s.begin():
        webhooks.set_active(s, webhook_id, active)
        action = "webhook.enable" if active else "webhook.disable"
        audit.record(s, _actor(), action, "webhook", webhook_id, None, {})
    typer.echo(f"{'enabled' if active else 'disabled'} webhook {webhook_id}")


@webhook_app.command("enable")
def webhook_enable(webhook_id: IdArg, database_url_opt: UrlOption = None) -> None:
    """Re-enable a disabled webhook."""
    _set_active(webhook_id, True, database_url_opt)


@webhook_app.command("disable")
def webhook_disable(webhook_id: IdArg, database_url_opt: UrlOption = None) -> None:
    """Stop deliveries to a webhook (queued ones are dropped) without removing it."""
    _set_active(webhook_id, False, database_url_opt)
