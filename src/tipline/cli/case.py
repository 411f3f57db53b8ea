"""``tipline case``: removal cases (docs/removal.md): list, show, hold, release, notify,
recheck, resume, close, and the scheduler (one pass now, or start its job chain)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tipline.cli import state
from tipline.cli.app import app
from tipline.cli.database import UrlOption, open_db
from tipline.errors import TiplineError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from tipline.removal.scheduler import RemovalConfig

case_app = typer.Typer(
    help=(
        "Removal cases: a confirmed URL from attribution and evidence through notices, "
        "re-checks and escalation to removal."
    ),
    no_args_is_help=True,
)
app.add_typer(case_app, name="case")

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
IdArg = Annotated[int, typer.Argument(help="The case id.")]
#: The CLI is run by an operator of the deployment: it acts with admin rights.
OPERATOR = "cli"
OPERATOR_ROLE = "admin"


def _config() -> RemovalConfig:
    from tipline.service.wiring import configure_process, removal_config

    settings = state.service_settings()
    configure_process(settings)
    return removal_config(settings)


def _parse_until(text: str) -> datetime:
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise TiplineError(
            f"--until {text[:40]!r}: use an ISO date or time (2026-06-30, 2026-06-30T12:00Z)"
        ) from None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _short(value: Any, width: int) -> str:
    text = "-" if value in (None, "") else str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


@case_app.command("list")
def case_list(
    state_opt: Annotated[
        str,
        typer.Option("--state", help="A state, 'open' (not closed) or 'all'."),
    ] = "open",
    provider: Annotated[
        str | None, typer.Option("--provider", help="Provider key or name.")
    ] = None,
    country: Annotated[str | None, typer.Option("--country", help="Hosting country.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 100,
    as_json: JsonOption = False,
    database_url_opt: UrlOption = None,
) -> None:
    """Cases, oldest first."""
    from tipline.removal import cases

    factory = open_db(database_url_opt)
    with factory() as s:
        rows = cases.list_cases(s, state=state_opt, provider=provider, country=country, limit=limit)
        if as_json:
            typer.echo(json.dumps([cases.case_json(s, c) for c in rows], indent=2))
            return
        if not rows:
            typer.echo("no cases")
            return
        typer.echo(f"{'ID':>6}  {'STATE':<17} {'N':>3} {'STEP':>4}  {'NEXT':<8} {'DUE':<17} URL")
        for c in rows:
            due = c.next_action_at.strftime("%Y-%m-%d %H:%M") if c.next_action_at else "-"
            typer.echo(
                f"{c.id:>6}  {c.state:<17} {c.notice_count:>3} {c.ladder_step:>4}  "
                f"{_short(c.next_action, 8):<8} {due:<17} {_short(c.url, 90)}"
                + (f"  [!] {_short(c.flag, 60)}" if c.flag else "")
            )


@case_app.command("show")
def case_show(
    case_id: IdArg, as_json: JsonOption = False, database_url_opt: UrlOption = None
) -> None:
    """One case with its history, notices and re-checks."""
    from tipline.removal import cases

    factory = open_db(database_url_opt)
    with factory() as s:
        doc = cases.case_json(s, cases.get_case(s, case_id), history=True)
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
        return
    for key in (
        "id", "url", "state", "routing", "provider", "asn", "country", "notice_count",
        "ladder_step", "escalation_level", "consecutive_misses", "next_action",
        "next_action_at", "flag", "evidence_sha256", "reported_at", "confirmed_at",
        "first_notice_at", "removed_at", "watch_until", "closed_at", "close_reason",
    ):  # fmt: skip
        if doc.get(key) not in (None, ""):
            typer.echo(f"{key:<20} {doc[key]}")
    if doc["hold"]:
        typer.echo(f"{'hold':<20} {doc['hold']['agency']} until {doc['hold']['until']}")
    typer.echo("events:")
    for e in doc["events"]:
        typer.echo(f"  {e['at']}  {e['from_state'] or '-':>17} -> {e['to_state']:<17} {e['actor']}")
    if doc["notices"]:
        typer.echo("notices:")
        for n in doc["notices"]:
            typer.echo(
                f"  {n['serial']}  {n['state']:<14} {n['channel']:<7} {n['role']:<10} "
                f"{_short(n['to'], 40)}  sent {n['sent_at'] or '-'}"
            )
    if doc["rechecks"]:
        typer.echo("re-checks:")
        for r in doc["rechecks"]:
            typer.echo(f"  {r['at']}  {r['outcome']:<7} {_short(r['reason'], 80)}")


@case_app.command("hold")
def case_hold(
    case_id: IdArg,
    agency: Annotated[str, typer.Option("--agency", help="The agency asking for the hold.")],
    until: Annotated[str, typer.Option("--until", help="Expiry (ISO date or time, UTC).")],
    reason: Annotated[str, typer.Option("--reason", help="Reference or reason.")] = "",
    database_url_opt: UrlOption = None,
) -> None:
    """Put a law-enforcement hold on a case: no notice until it expires or is released."""
    from tipline.removal import cases

    factory = open_db(database_url_opt)
    with factory() as s, s.begin():
        case = cases.hold(
            s,
            case_id,
            agency=agency,
            until=_parse_until(until),
            by=OPERATOR,
            role=OPERATOR_ROLE,
            reason=reason,
        )
        typer.echo(f"case {case.id} held for {case.hold_agency} until {case.hold_until}")


@case_app.command("release")
def case_release(case_id: IdArg, database_url_opt: UrlOption = None) -> None:
    """End a hold now."""
    from tipline.removal import cases

    factory = open_db(database_url_opt)
    with factory() as s, s.begin():
        case = cases.release(s, case_id, by=OPERATOR, role=OPERATOR_ROLE)
        typer.echo(f"case {case.id} released: {case.state}")


@case_app.command("close")
def case_close(
    case_id: IdArg,
    reason: Annotated[str, typer.Option("--reason", help="Why the case is closed.")],
    database_url_opt: UrlOption = None,
) -> None:
    """Close a case by hand."""
    from tipline.removal import cases

    factory = open_db(database_url_opt)
    with factory() as s, s.begin():
        cases.close(s, case_id, reason=reason, by=OPERATOR)
    typer.echo(f"case {case_id} closed")


@case_app.command("resume")
def case_resume(case_id: IdArg, database_url_opt: UrlOption = None) -> None:
    """Re-route a moved or flagged case: attribute it afresh at the next scheduler pass."""
    from tipline.removal import cases

    factory = open_db(database_url_opt)
    with factory() as s, s.begin():
        case = cases.resume(s, case_id, by=OPERATOR)
    typer.echo(f"case {case_id} resumed ({case.state}): it is prepared again at the next pass")


def _queue(factory: sessionmaker[Session]) -> Any:
    from sqlalchemy.engine import Engine

    from tipline.store.jobs import JobQueue

    with factory() as s:
        bind = s.get_bind()
    assert isinstance(bind, Engine)
    return JobQueue(bind)


@case_app.command("notify")
def case_notify(
    case_id: IdArg,
    mark_sent: Annotated[
        bool,
        typer.Option("--mark-sent", help="Record the case's manual notices as sent by you."),
    ] = False,
    database_url_opt: UrlOption = None,
) -> None:
    """Send the case's queued notices now; print its manual notices (to copy into a portal
    or post), and with --mark-sent record them as sent. A case with no notice waiting gets a
    notice round at once."""
    from sqlalchemy import select

    from tipline.removal import cases, notices, scheduler
    from tipline.store.case_tables import NoticeCase, NoticeRow

    config = _config()
    factory = open_db(database_url_opt)
    now = datetime.now(UTC)
    with factory() as s:
        case = cases.get_case(s, case_id)
        waiting = list(
            s.scalars(
                select(NoticeRow)
                .join(NoticeCase, NoticeCase.notice_id == NoticeRow.id)
                .where(
                    NoticeCase.case_id == case.id,
                    NoticeRow.state.in_(("queued", "sending", "manual_pending", "failed")),
                )
                .order_by(NoticeRow.id)
            )
        )
    if not waiting:
        with factory() as s, s.begin():
            case = cases.get_case(s, case_id, for_update=True)
            if case.state in ("held", "closed", "moved"):
                raise TiplineError(f"case {case_id} is {case.state}: no notice now")
            cases.schedule(case, "notice", now)
            version = case.version
        outcome = scheduler.step_case(factory, case_id, version, config, now)
        scheduler.group_notices(factory, config, now)
        typer.echo(f"case {case_id}: {outcome}; notice round queued")
        with factory() as s, s.begin():
            scheduler.dispatch_notices(s, _queue(factory), now)
        return
    for n in waiting:
        if n.state in ("queued", "sending"):
            with factory() as s, s.begin():
                row = s.get(NoticeRow, n.id, with_for_update=True)
                if row is not None:
                    row.send_after = now
            result = notices.deliver(
                factory,
                n.id,
                config.notices,
                now=now,
                webhook_settings=config.webhook_settings,
                reattribution=scheduler.reattribution(config, factory, now),
            )
            typer.echo(f"{n.serial}: {result}")
            continue
        with factory() as s, s.begin():
            row = s.get(NoticeRow, n.id)
            assert row is not None
            text = notices.render_notice(s, row, config.notices)
            typer.echo(
                f"--- {n.serial} ({n.state}) to {n.organisation or n.contact_key} "
                f"<{n.address or 'no address'}> ---"
            )
            typer.echo(f"Subject: {text.subject}\n\n{text.text}")
            if mark_sent:
                notices.mark_sent(s, n.serial, by=OPERATOR, settings=config.notices, now=now)
                typer.echo(f"{n.serial}: marked sent")


@case_app.command("recheck")
def case_recheck(case_id: IdArg, database_url_opt: UrlOption = None) -> None:
    """Re-check the case's location now (against its evidence; captures it if none)."""
    from tipline.removal import cases, scheduler

    config = _config()
    factory = open_db(database_url_opt)
    now = datetime.now(UTC)
    with factory() as s, s.begin():
        case = cases.get_case(s, case_id, for_update=True)
        if case.state in ("held", "closed"):
            raise TiplineError(f"case {case_id} is {case.state}: nothing to re-check")
        action = (
            "watch"
            if case.state == "removed"
            else ("recheck" if case.evidence_sha256 else "prepare")
        )
        cases.schedule(case, action, now)
        version = case.version
    outcome = scheduler.step_case(factory, case_id, version, config, now)
    scheduler.group_notices(factory, config, now)
    with factory() as s:
        case = cases.get_case(s, case_id)
        typer.echo(
            f"case {case_id}: {outcome} (state {case.state}, misses {case.consecutive_misses})"
        )


@case_app.command("scheduler")
def case_scheduler(
    start_chain: Annotated[
        bool,
        typer.Option(
            "--start", help="Also start the periodic scheduler job (tipline worker runs it)."
        ),
    ] = False,
    database_url_opt: UrlOption = None,
) -> None:
    """Run one scheduler pass now: expire holds, open cases for confirmed URLs, enqueue due
    re-checks and group notices (the work itself is done by `tipline worker`)."""
    from tipline.removal import scheduler

    config = _config()
    factory = open_db(database_url_opt)
    queue = _queue(factory)
    result = scheduler.tick(factory, queue, config)
    typer.echo(
        f"holds released {len(result.released)}, cases opened {len(result.opened)}, "
        f"steps enqueued {result.stepped}, notices {len(result.notices)}, "
        f"sends enqueued {result.dispatched}"
    )
    if start_chain:
        job_id = scheduler.start(queue, config)
        typer.echo(f"scheduler chain: job {job_id}")
