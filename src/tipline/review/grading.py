"""Grading, consensus and escalation, and final grades flowing into the hotline's banks.

* An analyst grades a whole cluster at once: the grade is recorded for every item of the
  cluster that still needs their grade. Analysts grade independently (they never see another
  analyst's grade of an item they have not graded).
* An item's grade becomes **final** when ``required`` analysts agree on the taxonomy's consensus
  fields (``review_consensus``, default 2; a bank's ``consensus_required`` raises it for items
  matching that bank). Other fields take the value most agreeing analysts chose.
* Any disagreement **escalates** the item to a senior analyst, whose decision is final.
* Final grades feed the banks (:func:`bank_final_grades`): actionable grades add the item's
  MD5, SHA-256 and usable PDQ to the graded bank (role alert, ``auto_confirm`` on, so the same
  material is actioned without anyone seeing it again) with the grade as the label; not-illegal
  grades go to an ignore bank so they are not queued again either.

Every step is an audit event: ``review.grade``, ``review.escalate``, ``review.final``,
``review.banked``.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from tipline.audit import log as audit
from tipline.banks.bank import Bank, Entry
from tipline.errors import BankNotFoundError
from tipline.review.queue import (
    WAITING,
    Reviewer,
    ReviewError,
    holds_claim,
    release,
    usernames,
    waiting_items,
)
from tipline.review.taxonomy import Taxonomy
from tipline.signals.pdq import MIN_USABLE_QUALITY
from tipline.store.tables import BankRow, Cluster, Grade, Item

log = logging.getLogger("tipline.review")


@dataclass(frozen=True, slots=True)
class ReviewPolicy:
    consensus: int = 2
    graded_bank: str = "TIPLINE_GRADED"
    benign_bank: str = "TIPLINE_NOT_ILLEGAL"


@dataclass(frozen=True, slots=True)
class Outcome:
    item_id: int
    state: str  # pending | escalated | final
    grade: dict[str, Any] | None = None


class EventSink(Protocol):
    """Where final grades are announced, inside the grading transaction: called
    ``sink(session, "grade", data)`` once per final grade. The service passes
    :func:`tipline.actions.webhooks.emit`; review itself knows no delivery mechanism."""

    def __call__(self, session: Session, event: str, data: dict[str, Any], /) -> object: ...


def required_agreement(session: Session, item: Item, policy: ReviewPolicy) -> int:
    """How many agreeing analysts the item needs: the policy's, or more if a bank it matched
    asks for more."""
    banks = {str(m.get("bank")) for m in (item.matches or []) if isinstance(m, dict)}
    need = policy.consensus
    if banks:
        extra = session.scalars(
            select(BankRow.consensus_required).where(
                BankRow.name.in_(banks), BankRow.consensus_required.is_not(None)
            )
        ).all()
        need = max([need, *[int(x) for x in extra if x]])
    return max(1, need)


def _merge(taxonomy: Taxonomy, grades: Sequence[Grade]) -> dict[str, Any]:
    """The final values from agreeing grades: per field, the most common value (earliest wins
    a tie)."""
    out: dict[str, Any] = {}
    for f in taxonomy.fields:
        seen = [g.values.get(f.id) for g in sorted(grades, key=lambda g: g.id)]
        counts = Counter(repr(v) for v in seen)
        best = max(seen, key=lambda v: (counts[repr(v)], -seen.index(v)))
        out[f.id] = best
    return out


def _finalise(
    session: Session,
    item: Item,
    taxonomy: Taxonomy,
    values: Mapping[str, Any],
    how: str,
    graders: list[str],
    actor: str,
    now: datetime,
    sink: EventSink | None,
) -> dict[str, Any]:
    actionable = taxonomy.actionable(values)
    grade = {
        "values": dict(values),
        "label": taxonomy.label(values),
        "actionable": actionable,
        "how": how,
        "graders": graders,
        "taxonomy": taxonomy.name,
    }
    item.grade = grade
    item.graded_at = now
    item.status = "confirmed" if actionable else "dismissed"
    audit.record(
        session,
        actor,
        "review.final",
        "item",
        str(item.id),
        None,
        {"grade": grade["label"], "actionable": actionable, "how": how, "graders": graders},
    )
    if sink is not None:
        sink(
            session,
            "grade",
            {
                "item_id": item.id,
                "sha256": item.sha256,
                "md5": item.md5,
                "pdq": item.pdq,
                "grade": grade,
                "graded_at": now.isoformat(),
            },
        )
    return grade


def grade_cluster(
    session: Session,
    cluster_id: int,
    reviewer: Reviewer,
    values: Mapping[str, Any],
    taxonomy: Taxonomy,
    now: datetime,
    *,
    policy: ReviewPolicy | None = None,
    item_ids: Iterable[int] | None = None,
    ip: str | None = None,
    require_claim: bool = True,
    sink: EventSink | None = None,
) -> list[Outcome]:
    """Record ``reviewer``'s grade for every item of the cluster that still needs it (or only
    ``item_ids``), then settle consensus item by item. Escalated items take a senior's
    decision. Releases the reviewer's claim. Runs in the caller's transaction. ``sink``
    (e.g. the service's webhooks) hears of each final grade; None: nobody is told."""
    policy = policy or ReviewPolicy()
    cluster = session.get(Cluster, cluster_id, with_for_update=True)
    if cluster is None:
        raise ReviewError(f"cluster {cluster_id} does not exist")
    if require_claim and not holds_claim(session, cluster_id, reviewer, now):
        raise ReviewError(f"claim cluster {cluster_id} before grading it")
    clean = taxonomy.validate(values)
    decision = taxonomy.decision(clean)
    targets = waiting_items(session, cluster_id, reviewer)
    if item_ids is not None:
        wanted = set(item_ids)
        targets = [t for t in targets if t.id in wanted]
    if not targets:
        raise ReviewError(f"nothing in cluster {cluster_id} is waiting for your grade")
    outcomes: list[Outcome] = []
    kinds: set[str] = set()  # the kinds of grade recorded (for the audit event)
    for item in targets:
        # lock the item row so two graders settle its consensus one after the other
        session.refresh(item, with_for_update=True)
        escalated = item.status == "escalated"
        if item.graded_at is not None:
            continue
        kind = "senior" if escalated else "analyst"
        if escalated and not reviewer.senior:
            continue
        session.add(
            Grade(
                item_id=item.id,
                cluster_id=cluster_id,
                user_id=reviewer.user_id,
                kind=kind,
                values=clean,
                decision=decision,
                created_at=now,
            )
        )
        session.flush()
        kinds.add(kind)
        if escalated:
            grade = _finalise(
                session,
                item,
                taxonomy,
                clean,
                "senior",
                [reviewer.username],
                reviewer.username,
                now,
                sink,
            )
            outcomes.append(Outcome(item.id, "final", grade))
            continue
        grades = session.scalars(
            select(Grade).where(Grade.item_id == item.id, Grade.kind == "analyst")
        ).all()
        need = required_agreement(session, item, policy)
        decisions = Counter(g.decision for g in grades)
        top, count = decisions.most_common(1)[0]
        if len(decisions) > 1:
            item.status = "escalated"
            audit.record(
                session,
                reviewer.username,
                "review.escalate",
                "item",
                str(item.id),
                ip,
                {"decisions": dict(decisions), "cluster_id": cluster_id},
            )
            outcomes.append(Outcome(item.id, "escalated"))
        elif count >= need:
            agreeing = [g for g in grades if g.decision == top]
            names = usernames(session, [g.user_id for g in agreeing])
            grade = _finalise(
                session,
                item,
                taxonomy,
                _merge(taxonomy, agreeing),
                "consensus",
                sorted(names.values()),
                reviewer.username,
                now,
                sink,
            )
            outcomes.append(Outcome(item.id, "final", grade))
        else:
            item.status = "in_review"
            outcomes.append(Outcome(item.id, "pending"))
    audit.record(
        session,
        reviewer.username,
        "review.grade",
        "cluster",
        str(cluster_id),
        ip,
        {
            "decision": decision,
            "kind": "senior" if "senior" in kinds else "analyst",
            "items": [o.item_id for o in outcomes],
            "outcomes": {str(o.item_id): o.state for o in outcomes},
        },
    )
    update_cluster_status(session, cluster)
    release(session, cluster_id, reviewer)
    return outcomes


def update_cluster_status(session: Session, cluster: Cluster) -> str:
    """closed when nothing in it waits for a person; escalated when a member is; else open /
    in_review (some grades in)."""
    statuses = set(session.scalars(select(Item.status).where(Item.cluster_id == cluster.id)))
    if "escalated" in statuses:
        cluster.status = "escalated"
    elif statuses & set(WAITING):
        cluster.status = "in_review" if "in_review" in statuses else "open"
    else:
        cluster.status = "closed"
    return cluster.status


# -- final grades into banks --------------------------------------------------------------------


class BankSink(Protocol):
    """What :func:`bank_final_grades` needs of the bank layer (MatchService fits)."""

    def get_bank(self, name: str) -> Bank: ...

    def create_bank(self, bank: Bank) -> Bank: ...

    def add_entries(self, entries: Iterable[Entry]) -> list[int]: ...


def _ensure_bank(sink: BankSink, factory: sessionmaker[Session], name: str, role: str) -> None:
    try:
        sink.get_bank(name)
        return
    except BankNotFoundError:
        pass
    description = (
        "Final grades from the review desk: matched material is actioned without a new view"
        if role == "alert"
        else "Graded not illegal by the review desk: matches are not queued again"
    )
    try:
        sink.create_bank(Bank(name=name, role=role, description=description))  # type: ignore[arg-type]
    except Exception:
        sink.get_bank(name)  # another process created it first
    # alert: matches actioned without a view; ignore: identical files dismissed without one
    with factory() as s, s.begin():
        s.execute(update(BankRow).where(BankRow.name == name).values(auto_confirm=True))


def entries_for(item: Item, bank: str) -> list[Entry]:
    grade = item.grade if isinstance(item.grade, dict) else {}
    label = str(grade.get("label", ""))[:200]
    note = f"item {item.id}, graded {grade.get('how', '')} by {', '.join(grade.get('graders', []))}"
    now = time.time()
    out = []
    for st, value in (("md5", item.md5), ("sha256", item.sha256)):
        if value:
            out.append(Entry(bank, st, value, label, "tipline-review", note, now))
    if item.pdq and (item.pdq_quality or 0) >= MIN_USABLE_QUALITY:
        out.append(Entry(bank, "pdq", item.pdq, label, "tipline-review", note, now))
    return out


def bank_final_grades(
    factory: sessionmaker[Session], sink: BankSink, policy: ReviewPolicy, limit: int = 500
) -> int:
    """Add the hashes of final grades not yet banked; returns how many items were banked.
    Idempotent (a bank holds a signal once), so a crash between adding and marking only
    repeats harmless work; callers run it after each grading and at start-up."""
    with factory() as s:
        items = s.scalars(
            select(Item)
            .where(Item.graded_at.is_not(None), Item.banked_at.is_(None))
            .order_by(Item.id)
            .limit(limit)
        ).all()
        s.expunge_all()
    if not items:
        return 0
    done = 0
    for item in items:
        grade = item.grade if isinstance(item.grade, dict) else {}
        bank = policy.graded_bank if grade.get("actionable") else policy.benign_bank
        _ensure_bank(sink, factory, bank, "alert" if grade.get("actionable") else "ignore")
        entries = entries_for(item, bank)
        ids = sink.add_entries(entries) if entries else []
        with factory() as s, s.begin():
            # locked, and read again: another process's sweep may have banked it meanwhile
            row = s.get(Item, item.id, with_for_update=True, populate_existing=True)
            if row is None or row.banked_at is not None:
                continue
            row.banked_at = datetime.now(UTC)
            audit.record(
                s,
                "system",
                "review.banked",
                "item",
                str(item.id),
                None,
                {"bank": bank, "entry_ids": ids},
            )
        done += 1
    return done


__all__ = [
    "BankSink",
    "Outcome",
    "ReviewPolicy",
    "bank_final_grades",
    "entries_for",
    "grade_cluster",
    "required_agreement",
    "update_cluster_status",
]
