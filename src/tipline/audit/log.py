"""The audit trail: append-only events chained by hash, so tampering is detectable.

Every event stores ``prev_hash`` (the hash of the event before it; 64 zeros for the first) and
``hash = sha256(prev_hash + canonical JSON of the event)``. Changing, deleting or inserting any
event breaks the chain at that point, and :func:`verify` reports the first broken link.
Truncating the tail leaves a valid but shorter chain, so operators record the head hash that
``tipline audit verify`` prints (e.g. in their backup log) and compare it later.

Appends are serialised so two concurrent writers never fork the chain: on PostgreSQL a
transaction-scoped advisory lock is taken before the chain head is read; on SQLite the write
lock is taken first (a no-op write) so the head read happens under the single-writer lock. The
lock is held until the caller's transaction commits, which is also what makes ``id`` order equal
chain order.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from tipline.store.tables import AuditEvent

GENESIS = "0" * 64

#: The advisory-lock key for appends on PostgreSQL (an arbitrary constant: "TLAUDIT").
_PG_LOCK_KEY = 0x544C4155444954

EXPORT_FIELDS = (
    "id",
    "at",
    "actor",
    "action",
    "target_type",
    "target_id",
    "ip",
    "details",
    "prev_hash",
    "hash",
)


def format_time(at: datetime) -> str:
    """A fixed-precision UTC ISO-8601 string (naive datetimes are taken to be UTC)."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _normalise_details(details: Any) -> Any:
    """Details as they will read back from a JSON column (tuples become lists, keys strings)."""
    return json.loads(json.dumps(details if details is not None else {}, default=str))


def canonical(
    *,
    at: datetime,
    actor: str,
    action: str,
    target_type: str | None,
    target_id: str | None,
    ip: str | None,
    details: Any,
) -> str:
    """The canonical JSON of an event: sorted keys, no whitespace, UTF-8."""
    body = {
        "at": format_time(at),
        "actor": actor,
        "action": action,
        "target_type": target_type,
        "target_id": target_id,
        "ip": ip,
        "details": details,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain_hash(prev_hash: str, canonical_json: str) -> str:
    return hashlib.sha256((prev_hash + canonical_json).encode("utf-8")).hexdigest()


def event_hash(event: AuditEvent) -> str:
    """The hash ``event`` should have, recomputed from its stored fields."""
    return chain_hash(
        event.prev_hash,
        canonical(
            at=event.at,
            actor=event.actor,
            action=event.action,
            target_type=event.target_type,
            target_id=event.target_id,
            ip=event.ip,
            details=event.details,
        ),
    )


def _lock_chain(session: Session) -> None:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
    elif dialect == "sqlite":
        # Any write statement takes SQLite's single write lock for the rest of the transaction;
        # this one changes nothing. The head is then read under that lock.
        session.execute(text("UPDATE audit_events SET id = id WHERE 1 = 0"))


def head(session: Session) -> AuditEvent | None:
    return session.scalars(select(AuditEvent).order_by(AuditEvent.id.desc()).limit(1)).first()


def record(
    session: Session,
    actor: str,
    action: str,
    target_type: str | None = None,
    target_id: str | int | None = None,
    ip: str | None = None,
    details: Any = None,
) -> AuditEvent:
    """Append one event in ``session``'s transaction (it is visible once the caller commits).

    ``actor`` is who (``user:alice``, ``token:7:acme``, ``system``), ``action`` what
    (``media.view``, ``report.create``), ``target_*`` on what, ``ip`` from where.
    Call it last in the transaction: the chain lock it takes is held until commit.
    """
    _lock_chain(session)
    last = head(session)
    prev = last.hash if last is not None else GENESIS
    at = datetime.now(UTC)
    det = _normalise_details(details)
    tid = None if target_id is None else str(target_id)
    digest = chain_hash(
        prev,
        canonical(
            at=at,
            actor=actor,
            action=action,
            target_type=target_type,
            target_id=tid,
            ip=ip,
            details=det,
        ),
    )
    event = AuditEvent(
        at=at,
        actor=actor,
        action=action,
        target_type=target_type,
        target_id=tid,
        ip=ip,
        details=det,
        prev_hash=prev,
        hash=digest,
    )
    session.add(event)
    session.flush()
    return event


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    count: int
    head_hash: str
    first_bad_id: int | None = None
    reason: str = ""

    def message(self) -> str:
        if self.ok:
            return f"audit chain intact: {self.count} events, head {self.head_hash}"
        if self.first_bad_id is None:
            return f"audit chain BROKEN: {self.reason} ({self.count} events verified)"
        return (
            f"audit chain BROKEN at event {self.first_bad_id}: {self.reason} "
            f"({self.count} events verified before it)"
        )


def _events(session: Session, since: datetime | None = None) -> Iterator[AuditEvent]:
    stmt = select(AuditEvent).order_by(AuditEvent.id)
    if since is not None:
        stmt = stmt.where(AuditEvent.at >= since)
    yield from session.scalars(stmt.execution_options(yield_per=1000))


def verify(session: Session, anchors: Iterable[str] = ()) -> VerifyResult:
    """Walk the whole chain from the first event; report the first broken link.

    ``anchors`` are head hashes recorded earlier (outside the database); each must still be
    in the chain, otherwise history was rewritten or cut short.
    """
    missing = {a.strip().lower() for a in anchors if a.strip()}
    prev = GENESIS
    count = 0
    for event in _events(session):
        missing.discard(event.hash)
        if event.prev_hash != prev:
            return VerifyResult(
                False,
                count,
                prev,
                event.id,
                "prev_hash does not match the previous event's hash "
                "(an event was removed, inserted or reordered)",
            )
        if event_hash(event) != event.hash:
            return VerifyResult(
                False, count, prev, event.id, "hash does not match the event's contents (edited)"
            )
        prev = event.hash
        count += 1
    missing.discard(GENESIS)
    if missing:
        return VerifyResult(
            False,
            count,
            prev,
            None,
            f"recorded head hash(es) not in the chain: {', '.join(sorted(missing))} "
            "(history was rewritten or cut short)",
        )
    return VerifyResult(True, count, prev)


def as_dict(event: AuditEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "at": format_time(event.at),
        "actor": event.actor,
        "action": event.action,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "ip": event.ip,
        "details": event.details,
        "prev_hash": event.prev_hash,
        "hash": event.hash,
    }


def export(
    session: Session, out: IO[str], format: str = "jsonl", since: datetime | None = None
) -> int:
    """Write events (oldest first) as JSON lines or CSV; returns how many were written.

    Every row carries ``prev_hash`` and ``hash`` so an export can be verified offline.
    """
    if format not in ("jsonl", "csv"):
        raise ValueError(f"unknown export format {format!r} (use jsonl or csv)")
    n = 0
    writer = csv.DictWriter(out, fieldnames=EXPORT_FIELDS) if format == "csv" else None
    if writer is not None:
        writer.writeheader()
    for event in _events(session, since):
        row = as_dict(event)
        if writer is not None:
            row["details"] = json.dumps(row["details"], sort_keys=True, ensure_ascii=False)
            writer.writerow(row)
        else:
            out.write(json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n")
        n += 1
    return n


def export_text(session: Session, format: str = "jsonl", since: datetime | None = None) -> str:
    buf = io.StringIO()
    export(session, buf, format, since)
    return buf.getvalue()
