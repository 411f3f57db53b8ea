"""Removal cases: the state machine from a confirmed URL to content gone (docs/removal.md).

A case follows one location (a canonical URL) through::

    confirmed ─> (held) ─> evidence_captured ─> notified(n) ─> escalated(level)
        ─> removed | moved | reappeared | closed

:data:`TRANSITIONS` is the whole table of allowed moves; anything else raises
:class:`InvalidTransitionError` naming the case, the two states and what is allowed. Every
transition writes a ``case_events`` row (from, to, when, who, details) and an audit event
(``case.<state>``) in the caller's transaction, so the case's history and the audit chain
never disagree.

* **Holds.** A law-enforcement hold (per agency, with an expiry) can be put on any open case
  by a senior analyst or an admin only (:data:`HOLD_ROLES`). The case goes to ``held`` and
  remembers the state it was in; no notice goes out while it holds (the scheduler skips held
  cases, and a queued notice naming a held case waits). :func:`release` or the expiry
  (:func:`expire_holds`, run by the scheduler) put it back where it was.
* **Open cases.** A location has at most one case that is not closed (the unique
  ``open_location_id``): :func:`open_case` for a URL that already has one returns that case.
* **Removal needs proof.** :func:`record_recheck` counts consecutive misses and declares the
  content removed only after ``misses_to_remove`` of them in a row (an outage is not a
  removal); any re-check that finds the evidence media again resets the count. After a
  removal the case keeps watching until ``watch_until``; content that comes back makes it
  ``reappeared`` and it goes back on the ladder.
* **Moves.** :func:`record_attribution` compares a fresh attribution with the case's: a
  different hosting country or AS moves the case to ``moved``; it then waits for an analyst
  (:func:`resume` re-routes it, :func:`close` ends it).

Nothing here touches the network: the scheduler (:mod:`tipline.removal.scheduler`) does the
fetching and calls these functions with the results. Every function takes ``now`` (tests
freeze the clock) and works in the caller's session; the caller commits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from tipline.audit import log as audit
from tipline.errors import TiplineError
from tipline.removal.locations import InvalidLocationError, parse_location
from tipline.store.case_tables import (
    CASE_STATES,
    CaseEvent,
    CaseRow,
    CaseState,
    LocationRow,
    NoticeCase,
    NoticeRow,
    RecheckRow,
)

__all__ = [
    "CLOSED_STATES",
    "HOLD_ROLES",
    "OPEN_STATES",
    "STATES",
    "TRANSITIONS",
    "CaseError",
    "CaseNotFoundError",
    "CaseState",
    "HoldPermissionError",
    "InvalidLocationError",
    "InvalidTransitionError",
    "RecheckLike",
    "case_events",
    "case_json",
    "close",
    "counts_by_state",
    "due_cases",
    "expire_holds",
    "get_case",
    "hold",
    "list_cases",
    "mark_moved",
    "open_case",
    "record_attribution",
    "record_evidence",
    "record_notice",
    "record_notice_sent",
    "record_recheck",
    "release",
    "resume",
    "schedule",
    "set_flag",
    "transition",
]

STATES: tuple[str, ...] = CASE_STATES
CLOSED_STATES = frozenset({"closed"})
OPEN_STATES = frozenset(STATES) - CLOSED_STATES
#: Roles that may put a case on hold (the API checks the user's role; the CLI is an operator).
HOLD_ROLES = frozenset({"senior_analyst", "admin"})

#: Every allowed transition: state -> the states it may go to. ``notified -> notified`` and
#: ``escalated -> escalated`` are re-notices (the count or the level goes up). ``held`` goes
#: back to the state the hold interrupted (any of the open states below).
TRANSITIONS: dict[str, frozenset[str]] = {
    "confirmed": frozenset({"held", "evidence_captured", "moved", "removed", "closed"}),
    "held": frozenset(
        {
            "confirmed",
            "evidence_captured",
            "notified",
            "escalated",
            "removed",
            "moved",
            "reappeared",
            "closed",
        }
    ),
    "evidence_captured": frozenset({"held", "notified", "escalated", "removed", "moved", "closed"}),
    "notified": frozenset({"notified", "escalated", "held", "removed", "moved", "closed"}),
    "escalated": frozenset({"escalated", "held", "removed", "moved", "closed"}),
    "removed": frozenset({"reappeared", "closed"}),
    "moved": frozenset({"held", "evidence_captured", "notified", "escalated", "removed", "closed"}),
    "reappeared": frozenset(
        {"held", "evidence_captured", "notified", "escalated", "removed", "moved", "closed"}
    ),
    "closed": frozenset(),
}
#: States a hold may interrupt.
HOLDABLE = frozenset(
    {"confirmed", "evidence_captured", "notified", "escalated", "moved", "reappeared"}
)
MAX_AGENCY_CHARS = 200
MAX_REASON_CHARS = 2000


class CaseError(TiplineError):
    """A case operation that cannot be done (the message says why, in one line)."""


class CaseNotFoundError(CaseError):
    def __init__(self, case_id: object) -> None:
        super().__init__(f"no case {case_id}")
        self.case_id = case_id


class InvalidTransitionError(CaseError):
    def __init__(self, case_id: int | None, from_state: str, to_state: str) -> None:
        allowed = ", ".join(sorted(TRANSITIONS.get(from_state, ()))) or "none: it is final"
        super().__init__(
            f"case {case_id}: cannot go from {from_state} to {to_state} (allowed: {allowed})"
        )
        self.from_state = from_state
        self.to_state = to_state


class HoldPermissionError(CaseError):
    """Only senior analysts and admins may hold (or release) a case."""


def _now(now: datetime | None) -> datetime:
    at = now or datetime.now(UTC)
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("now must be timezone-aware (UTC)")
    return at.astimezone(UTC)


def _aware(value: datetime | None) -> datetime | None:
    """A value read back from the database, timezone-aware (SQLite drops the zone)."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _clip(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- the core: one transition ---------------------------------------------------------------


def transition(
    session: Session,
    case: CaseRow,
    to_state: str,
    *,
    actor: str,
    now: datetime | None = None,
    details: Mapping[str, Any] | None = None,
    audit_event: bool = True,
) -> CaseEvent:
    """Move ``case`` to ``to_state`` (checked against :data:`TRANSITIONS`), with a
    ``case_events`` row and an audit event. Raises :class:`InvalidTransitionError`.

    ``audit_event=False`` leaves the audit event to the caller, who records one for a batch
    of transitions (a notice naming many cases: one ``notice.queued`` event lists them all)."""
    at = _now(now)
    if to_state not in TRANSITIONS:
        raise CaseError(f"unknown case state {to_state!r} (one of {', '.join(STATES)})")
    from_state = case.state
    if to_state not in TRANSITIONS[from_state]:
        raise InvalidTransitionError(case.id, from_state, to_state)
    det = dict(details or {})
    case.state = to_state
    case.version = (case.version or 0) + 1
    case.updated_at = at
    if to_state == "closed":
        case.open_location_id = None
        case.closed_at = at
        case.next_action, case.next_action_at = None, None
    event = CaseEvent(
        case_id=case.id, from_state=from_state, to_state=to_state, at=at, actor=actor, details=det
    )
    session.add(event)
    if not audit_event:
        return event
    audit.record(
        session,
        actor,
        f"case.{to_state}",
        "case",
        str(case.id),
        None,
        {"from": from_state, "to": to_state, "url": case.url, "at": at.isoformat(), **det},
    )
    return event


def _record_event(
    session: Session,
    case: CaseRow,
    from_state: str | None,
    *,
    at: datetime,
    actor: str,
    details: Mapping[str, Any],
    action: str,
    audit_details: Mapping[str, Any],
) -> None:
    """A case-history row and its audit event for what is not a state change (opening, a hold
    extended, a resume): ``to_state`` is the case's state as it stands."""
    session.add(
        CaseEvent(
            case_id=case.id,
            from_state=from_state,
            to_state=case.state,
            at=at,
            actor=actor,
            details=dict(details),
        )
    )
    session.flush()
    audit.record(session, actor, action, "case", str(case.id), None, dict(audit_details))


def schedule(case: CaseRow, action: str | None, at: datetime | None) -> None:
    """Set what the scheduler does with ``case`` next, and when (None: nothing)."""
    case.next_action = action
    case.next_action_at = at
    case.version = (case.version or 0) + 1


def set_flag(case: CaseRow, flag: str | None) -> None:
    """Flag the case for an analyst (``flag`` says why) or clear the flag."""
    case.flag = None if flag is None else _clip(flag, MAX_REASON_CHARS)


# -- opening --------------------------------------------------------------------------------


def _location(
    session: Session, url: str, report_id: int | None, item_id: int | None, at: datetime
) -> LocationRow:
    loc = parse_location(url)
    key = hashlib.sha256(loc.canonical_url.encode("utf-8")).hexdigest()
    row = session.scalar(select(LocationRow).where(LocationRow.url_sha256 == key))
    if row is None:
        row = LocationRow(
            url_sha256=key,
            canonical_url=loc.canonical_url,
            host=loc.host[:255],
            registrable_domain=loc.registrable_domain[:255],
            first_seen=at,
            report_id=report_id,
            item_id=item_id,
        )
        session.add(row)
        session.flush()
    return row


def open_case(
    session: Session,
    url: str,
    *,
    report_id: int | None = None,
    item_id: int | None = None,
    grade: Mapping[str, Any] | None = None,
    reported_at: datetime | None = None,
    confirmed_at: datetime | None = None,
    actor: str = "system",
    now: datetime | None = None,
) -> tuple[CaseRow, bool]:
    """The open case of ``url``'s location, opening one (state ``confirmed``, first action
    "prepare" due now) if there is none. Returns ``(case, created)``.

    Raises :class:`InvalidLocationError` for a URL that cannot be a location."""
    at = _now(now)
    loc = _location(session, url, report_id, item_id, at)
    existing = session.scalar(select(CaseRow).where(CaseRow.open_location_id == loc.id))
    if existing is not None:
        return existing, False
    confirmed = _now(confirmed_at) if confirmed_at is not None else at
    reported = _now(reported_at) if reported_at is not None else confirmed
    case = CaseRow(
        location_id=loc.id,
        open_location_id=loc.id,
        url=loc.canonical_url,
        state="confirmed",
        ladder_step=0,
        escalation_level=0,
        notice_count=0,
        consecutive_misses=0,
        next_action="prepare",
        next_action_at=at,
        version=0,
        item_id=item_id,
        report_id=report_id,
        grade=dict(grade) if grade is not None else None,
        opened_by=actor,
        reported_at=min(reported, confirmed),
        confirmed_at=confirmed,
        created_at=at,
        updated_at=at,
    )
    session.add(case)
    session.flush()
    opened = {"url": case.url, "report_id": report_id, "item_id": item_id}
    _record_event(
        session,
        case,
        None,
        at=at,
        actor=actor,
        details=opened,
        action="case.open",
        audit_details={**opened, "at": at.isoformat()},
    )
    return case, True


# -- reading --------------------------------------------------------------------------------


def get_case(session: Session, case_id: int, *, for_update: bool = False) -> CaseRow:
    """The case, or :class:`CaseNotFoundError`."""
    case = session.get(CaseRow, case_id, with_for_update=for_update or None)
    if case is None:
        raise CaseNotFoundError(case_id)
    return case


def list_cases(
    session: Session,
    *,
    state: str | None = "open",
    provider: str | None = None,
    country: str | None = None,
    due_before: datetime | None = None,
    limit: int = 100,
    after: int | None = None,
) -> list[CaseRow]:
    """Cases by id (oldest first). ``state``: a state, ``"open"`` (not closed; the default) or
    ``None``/``"all"``; ``provider``: a provider key or organisation; ``country``: ISO
    alpha-2; ``due_before``: next action due by then; paging by ``after`` (the last id seen)."""
    stmt = select(CaseRow).order_by(CaseRow.id)
    if state == "open":
        stmt = stmt.where(CaseRow.state != "closed")
    elif state not in (None, "all"):
        if state not in STATES:
            raise CaseError(f"unknown case state {state!r} (one of {', '.join(STATES)}, open)")
        stmt = stmt.where(CaseRow.state == state)
    if provider:
        stmt = stmt.where(or_(CaseRow.provider_key == provider, CaseRow.provider_name == provider))
    if country:
        stmt = stmt.where(CaseRow.country == country.upper())
    if due_before is not None:
        stmt = stmt.where(CaseRow.next_action_at <= due_before)
    if after is not None:
        stmt = stmt.where(CaseRow.id > after)
    return list(session.scalars(stmt.limit(max(1, min(limit, 10_000)))))


def case_events(session: Session, case_id: int) -> list[CaseEvent]:
    return list(
        session.scalars(
            select(CaseEvent).where(CaseEvent.case_id == case_id).order_by(CaseEvent.id)
        )
    )


def _iso(at: datetime | None) -> str | None:
    at = _aware(at)
    return None if at is None else at.astimezone(UTC).isoformat()


def case_json(session: Session, case: CaseRow, *, history: bool = False) -> dict[str, Any]:
    """The case as JSON (CLI ``--json``, the API); ``history`` adds its events, notices and
    re-checks."""
    out: dict[str, Any] = {
        "id": case.id,
        "url": case.url,
        "state": case.state,
        "open": case.state != "closed",
        "ladder_step": case.ladder_step,
        "escalation_level": case.escalation_level,
        "notice_count": case.notice_count,
        "consecutive_misses": case.consecutive_misses,
        "next_action": case.next_action,
        "next_action_at": _iso(case.next_action_at),
        "hold": (
            {"agency": case.hold_agency, "until": _iso(case.hold_until), "by": case.hold_by}
            if case.state == "held"
            else None
        ),
        "flag": case.flag,
        "routing": case.routing,
        "provider_key": case.provider_key,
        "provider": case.provider_name,
        "asn": case.asn,
        "as_name": case.as_name,
        "country": case.country,
        "evidence_sha256": case.evidence_sha256,
        "item_id": case.item_id,
        "report_id": case.report_id,
        "grade": case.grade,
        "reported_at": _iso(case.reported_at),
        "confirmed_at": _iso(case.confirmed_at),
        "first_notice_at": _iso(case.first_notice_at),
        "last_notice_at": _iso(case.last_notice_at),
        "last_checked_at": _iso(case.last_checked_at),
        "removed_at": _iso(case.removed_at),
        "moved_at": _iso(case.moved_at),
        "reappeared_at": _iso(case.reappeared_at),
        "watch_until": _iso(case.watch_until),
        "closed_at": _iso(case.closed_at),
        "close_reason": case.close_reason,
        "created_at": _iso(case.created_at),
    }
    if history:
        out["events"] = [
            {
                "at": _iso(e.at),
                "from_state": e.from_state,
                "to_state": e.to_state,
                "actor": e.actor,
                "details": e.details,
            }
            for e in case_events(session, case.id)
        ]
        notices = session.scalars(
            select(NoticeRow)
            .join(NoticeCase, NoticeCase.notice_id == NoticeRow.id)
            .where(NoticeCase.case_id == case.id)
            .order_by(NoticeRow.id)
        )
        out["notices"] = [
            {
                "serial": n.serial,
                "kind": n.kind,
                "role": n.role,
                "organisation": n.organisation,
                "contact_key": n.contact_key,
                "channel": n.channel,
                "to": n.address,
                "language": n.language,
                "state": n.state,
                "attempts": n.attempts,
                "step": n.ladder_step,
                "send_after": _iso(n.send_after),
                "sent_at": _iso(n.sent_at),
                "last_error": n.last_error,
            }
            for n in notices
        ]
        out["rechecks"] = [
            {
                "at": _iso(r.at),
                "outcome": r.outcome,
                "http_status": r.http_status,
                "reason": r.reason,
                "transient": r.transient,
                "matched": len(r.matched or []),
            }
            for r in session.scalars(
                select(RecheckRow).where(RecheckRow.case_id == case.id).order_by(RecheckRow.id)
            )
        ]
    return out


# -- holds ----------------------------------------------------------------------------------


def hold(
    session: Session,
    case_id: int,
    *,
    agency: str,
    until: datetime,
    by: str,
    role: str,
    reason: str = "",
    now: datetime | None = None,
) -> CaseRow:
    """Put ``case_id`` on a law-enforcement hold for ``agency`` until ``until``.

    Only :data:`HOLD_ROLES` may (:class:`HoldPermissionError`). A case already held is held
    longer if ``until`` is later (the agency is recorded in the event)."""
    at = _now(now)
    if role not in HOLD_ROLES:
        raise HoldPermissionError(
            f"only a senior analyst or an admin may hold a case (role {role!r})"
        )
    agency = _clip(agency or "", MAX_AGENCY_CHARS)
    if not agency:
        raise CaseError("a hold needs the agency that asked for it")
    until = _now(until)
    if until <= at:
        raise CaseError(f"hold until {until.isoformat()} is not in the future")
    case = get_case(session, case_id, for_update=True)
    details = {"agency": agency, "until": until.isoformat(), "reason": _clip(reason, 500)}
    if case.state == "held":
        current = _aware(case.hold_until)
        case.hold_until = max(current, until) if current is not None else until
        case.hold_agency, case.hold_by = agency, by
        case.version = (case.version or 0) + 1
        case.updated_at = at
        _record_event(
            session,
            case,
            "held",
            at=at,
            actor=by,
            details={**details, "extended": True},
            action="case.hold",
            audit_details=details,
        )
        return case
    if case.state not in HOLDABLE:
        raise InvalidTransitionError(case.id, case.state, "held")
    case.state_before_hold = case.state
    case.hold_agency, case.hold_until, case.hold_by = agency, until, by
    transition(session, case, "held", actor=by, now=at, details=details)
    return case


def _end_hold(session: Session, case: CaseRow, actor: str, at: datetime, why: str) -> None:
    back = case.state_before_hold or "confirmed"
    details = {"agency": case.hold_agency, "until": _iso(case.hold_until), "why": why}
    case.state_before_hold = None
    case.hold_agency, case.hold_until, case.hold_by = None, None, None
    transition(session, case, back, actor=actor, now=at, details=details)
    # the work the hold held back is due now
    if case.next_action not in (None, "manual"):
        case.next_action_at = at


def release(
    session: Session,
    case_id: int,
    *,
    by: str,
    role: str,
    reason: str = "released",
    now: datetime | None = None,
) -> CaseRow:
    """End a hold early (senior analysts and admins only); the case goes back to the state
    the hold interrupted and its next action is due at once."""
    at = _now(now)
    if role not in HOLD_ROLES:
        raise HoldPermissionError(
            f"only a senior analyst or an admin may release a hold (role {role!r})"
        )
    case = get_case(session, case_id, for_update=True)
    if case.state != "held":
        raise CaseError(f"case {case_id} is not held (it is {case.state})")
    _end_hold(session, case, by, at, _clip(reason, 500) or "released")
    return case


def expire_holds(session: Session, now: datetime | None = None) -> list[int]:
    """Release every hold whose ``hold_until`` has passed; returns the case ids."""
    at = _now(now)
    due = list(
        session.scalars(
            select(CaseRow)
            .where(CaseRow.state == "held", CaseRow.hold_until <= at)
            .order_by(CaseRow.id)
            .with_for_update()
        )
    )
    for case in due:
        _end_hold(session, case, "system", at, "hold expired")
    return [c.id for c in due]


# -- what the scheduler found ---------------------------------------------------------------


def record_attribution(
    session: Session,
    case: CaseRow,
    attribution: Mapping[str, Any],
    *,
    hotline_country: str | None,
    provider_key: str | None = None,
    provider_name: str | None = None,
    actor: str = "system",
    now: datetime | None = None,
) -> bool:
    """Store a fresh attribution (``Attribution.to_json()``) on the case. Returns True when it
    says the location moved (a different country or AS than the case knew): the case is then
    ``moved`` and waits for an analyst (:func:`mark_moved`)."""
    at = _now(now)
    asn = attribution.get("asn")
    country = attribution.get("country")
    country = country.upper() if isinstance(country, str) and country else None
    asn = asn if isinstance(asn, int) and not isinstance(asn, bool) else None
    known = case.asn is not None or case.country is not None
    moved = (
        known
        and (asn is not None or country is not None)
        and (asn != case.asn or country != case.country)
        and case.state not in ("confirmed", "moved")
    )
    if moved:
        before = f"AS{case.asn}/{case.country or '?'}"
        after = f"AS{asn}/{country or '?'}"
        case.attribution = dict(attribution)
        mark_moved(
            session,
            case,
            reason=f"hosting changed from {before} to {after}",
            actor=actor,
            now=at,
            details={
                "from_asn": case.asn,
                "from_country": case.country,
                "asn": asn,
                "country": country,
            },
        )
        return True
    case.attribution = dict(attribution)
    case.asn, case.country = asn, country
    case.as_name = (
        attribution.get("as_name") if isinstance(attribution.get("as_name"), str) else None
    )
    case.provider_key = provider_key
    case.provider_name = provider_name
    if country is None:
        case.routing = "unknown"
    elif hotline_country and country == hotline_country.upper():
        case.routing = "in_country"
    else:
        case.routing = "abroad"
    case.version = (case.version or 0) + 1
    case.updated_at = at
    return False


def mark_moved(
    session: Session,
    case: CaseRow,
    *,
    reason: str,
    actor: str = "system",
    now: datetime | None = None,
    details: Mapping[str, Any] | None = None,
) -> None:
    """The location is served from somewhere else now: stop, flag, wait for an analyst."""
    at = _now(now)
    transition(
        session, case, "moved", actor=actor, now=at, details={"reason": reason, **(details or {})}
    )
    case.moved_at = at
    case.pending_notice = None
    set_flag(case, f"moved: {reason}; an analyst must re-route it (tipline case resume)")
    schedule(case, "manual", None)


def resume(session: Session, case_id: int, *, by: str, now: datetime | None = None) -> CaseRow:
    """An analyst re-routes a moved (or flagged) case: the next scheduler pass attributes it
    afresh, captures new evidence and notifies the new host."""
    at = _now(now)
    case = get_case(session, case_id, for_update=True)
    if case.state in ("closed", "held"):
        raise CaseError(f"case {case_id} is {case.state}: nothing to resume")
    if case.state == "moved":
        # the new hosting becomes the case's: forget the old one so it is not a move again
        case.asn, case.country, case.provider_key, case.provider_name = None, None, None, None
    set_flag(case, None)
    schedule(case, "prepare", at)
    case.updated_at = at
    _record_event(
        session,
        case,
        case.state,
        at=at,
        actor=by,
        details={"resumed": True},
        action="case.resume",
        audit_details={"state": case.state},
    )
    return case


def record_evidence(
    session: Session,
    case: CaseRow,
    evidence_sha256: str,
    *,
    actor: str = "system",
    now: datetime | None = None,
    details: Mapping[str, Any] | None = None,
) -> None:
    """The case's evidence bundle (its SHA-256 goes into the audit chain with the event)."""
    at = _now(now)
    if len(evidence_sha256) != 64 or any(c not in "0123456789abcdef" for c in evidence_sha256):
        raise CaseError(f"not a SHA-256 hex digest: {evidence_sha256[:80]!r}")
    case.evidence_sha256 = evidence_sha256
    transition(
        session,
        case,
        "evidence_captured",
        actor=actor,
        now=at,
        details={"evidence_sha256": evidence_sha256, **(details or {})},
    )


def record_notice(
    session: Session,
    case: CaseRow,
    *,
    serial: str,
    ladder_step: int,
    role: str,
    counted: bool = True,
    actor: str = "system",
    now: datetime | None = None,
    audit_event: bool = True,
) -> tuple[str, str]:
    """A notice naming this case was queued (serial, ladder step): ``notified`` on the first
    ladder step, ``escalated`` (level = step) above it. The notice count (what the ladder's
    triggers count) goes up once per round: ``counted=False`` for a round's second recipient
    (the host told directly beside the partner hotline). Returns ``(from, to)``."""
    at = _now(now)
    to_state = "escalated" if ladder_step > 0 else "notified"
    if case.state == "escalated" and to_state == "notified":
        to_state = "escalated"  # a ladder never goes back down within a case
    if counted or not case.notice_count:
        case.notice_count = (case.notice_count or 0) + 1
    case.ladder_step = ladder_step
    case.escalation_level = max(case.escalation_level or 0, ladder_step)
    case.pending_notice = None
    from_state = case.state
    transition(
        session,
        case,
        to_state,
        actor=actor,
        now=at,
        details={
            "serial": serial,
            "notice": case.notice_count,
            "ladder_step": ladder_step,
            "role": role,
            "level": case.escalation_level,
        },
        audit_event=audit_event,
    )
    return from_state, to_state


def record_notice_sent(session: Session, case_ids: Sequence[int], at: datetime) -> None:
    """A notice naming ``case_ids`` went out at ``at`` (first/last notice timestamps)."""
    at = _now(at)
    session.execute(
        update(CaseRow)
        .where(CaseRow.id.in_(list(case_ids)), CaseRow.first_notice_at.is_(None))
        .values(first_notice_at=at)
    )
    session.execute(
        update(CaseRow)
        .where(
            CaseRow.id.in_(list(case_ids)),
            or_(CaseRow.last_notice_at.is_(None), CaseRow.last_notice_at < at),
        )
        .values(last_notice_at=at)
    )


@dataclass(frozen=True)
class RecheckLike:
    """What :func:`record_recheck` needs of a re-check (``recheck.RecheckResult`` has it)."""

    outcome: str
    reason: str
    http_status: int | None = None
    addresses: tuple[str, ...] = ()
    matched: frozenset[str] = frozenset()
    transient: bool = False


def record_recheck(
    session: Session,
    case: CaseRow,
    result: Any,
    *,
    misses_to_remove: int,
    watch_for: timedelta,
    recheck_every: timedelta,
    actor: str = "system",
    now: datetime | None = None,
) -> str:
    """Record a re-check (a ``rechecks`` row) and what it means for the case. Returns the
    effect: ``"online"``, ``"miss"`` (counted), ``"removed"`` (``misses_to_remove`` misses in
    a row), ``"reappeared"`` (online again after a removal), ``"watching"`` (still gone after a
    removal), ``"blocked"`` (now resolves to a refused address: flagged) or ``"closed"``
    (the watch period after the removal is over)."""
    at = _now(now)
    outcome = str(result.outcome)
    if outcome not in ("online", "miss", "blocked"):
        raise CaseError(f"unknown re-check outcome {outcome!r}")
    matched = sorted(getattr(result, "matched", frozenset()) or ())
    session.add(
        RecheckRow(
            case_id=case.id,
            at=at,
            outcome=outcome,
            http_status=getattr(result, "http_status", None),
            reason=_clip(getattr(result, "reason", "") or "", MAX_REASON_CHARS),
            transient=bool(getattr(result, "transient", False)),
            addresses=list(getattr(result, "addresses", ()) or ()),
            matched=matched,
        )
    )
    case.last_checked_at = at
    case.updated_at = at
    details = {"outcome": outcome, "reason": _clip(getattr(result, "reason", ""), 300)}
    if case.state == "removed":
        if outcome == "online":
            case.consecutive_misses = 0
            case.reappeared_at = at
            case.watch_until = None
            case.ladder_step = 0
            transition(session, case, "reappeared", actor=actor, now=at, details=details)
            schedule(case, "notice", at)
            return "reappeared"
        watch_until = _aware(case.watch_until)
        if watch_until is not None and at >= watch_until:
            case.close_reason = "removed; watch period over without reappearance"
            transition(
                session,
                case,
                "closed",
                actor=actor,
                now=at,
                details={**details, "reason": case.close_reason},
            )
            return "closed"
        schedule(case, "watch", at + recheck_every)
        return "watching"
    if outcome == "blocked":
        set_flag(case, f"re-check blocked: {getattr(result, 'reason', '')}")
        schedule(case, "recheck", at + recheck_every)
        return "blocked"
    if outcome == "online":
        case.consecutive_misses = 0
        return "online"
    case.consecutive_misses = (case.consecutive_misses or 0) + 1
    if case.consecutive_misses >= max(1, misses_to_remove):
        case.removed_at = case.removed_at or at
        case.watch_until = at + watch_for
        case.pending_notice = None
        transition(
            session,
            case,
            "removed",
            actor=actor,
            now=at,
            details={**details, "misses": case.consecutive_misses},
        )
        schedule(case, "watch", at + recheck_every)
        return "removed"
    schedule(case, case.next_action or "recheck", at + recheck_every)
    return "miss"


def close(
    session: Session,
    case_id: int,
    *,
    reason: str,
    by: str,
    now: datetime | None = None,
) -> CaseRow:
    """Close a case by hand (``reason`` required); a held case is closed too (the hold ends)."""
    at = _now(now)
    reason = _clip(reason or "", MAX_REASON_CHARS)
    if not reason:
        raise CaseError("closing a case needs a reason")
    case = get_case(session, case_id, for_update=True)
    if case.state == "closed":
        raise CaseError(f"case {case_id} is already closed")
    case.close_reason = reason
    case.pending_notice = None
    transition(session, case, "closed", actor=by, now=at, details={"reason": reason})
    return case


def due_cases(
    session: Session, now: datetime, *, limit: int = 10_000, after: int | None = None
) -> list[tuple[int, int, str]]:
    """``(case id, version, next action)`` of cases whose next action is due at ``now`` and
    that are neither held nor closed (the scheduler's query, on ``ix_cases_due``)."""
    stmt = (
        select(CaseRow.id, CaseRow.version, CaseRow.next_action)
        .where(
            and_(
                CaseRow.state.not_in(("held", "closed")),
                CaseRow.next_action_at <= now,
                CaseRow.next_action.is_not(None),
                CaseRow.next_action != "manual",
            )
        )
        .order_by(CaseRow.next_action_at, CaseRow.id)
        .limit(limit)
    )
    if after is not None:
        stmt = stmt.where(CaseRow.id > after)
    return [(int(i), int(v), str(a)) for i, v, a in session.execute(stmt)]


def counts_by_state(session: Session) -> dict[str, int]:
    out = dict.fromkeys(STATES, 0)
    for state, n in session.execute(select(CaseRow.state, func.count()).group_by(CaseRow.state)):
        out[str(state)] = int(n)
    return out
