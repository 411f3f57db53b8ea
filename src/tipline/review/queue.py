"""The review queue: clusters waiting for a person, most urgent first, and claims on them.

A cluster is in an analyst's queue while it holds an item that still needs a grade *from that
analyst* (independent grading: nobody grades an item twice, nobody sees another's grade first).
Escalated items (analysts disagreed) are in the queue of senior analysts and admins only.

Priorities are recomputed at read time from the stored facts with the triage formula
(:mod:`tipline.triage.priority`), so waiting material keeps rising with age ("SLA ageing")
instead of keeping the score it had when the pipeline first saw it; the reason is shown with
every score. A cluster is *overdue* once its oldest waiting item has waited ``sla_hours``.

Claims make sure two analysts never hold the same job: :func:`claim` succeeds for one holder at
a time; a claim lapses after its time unless renewed (by working on the cluster).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tipline.errors import TiplineError
from tipline.store.banks import auto_confirm_banks
from tipline.store.tables import (
    Cluster,
    ClusterClaim,
    Grade,
    Item,
    Report,
    ReportItem,
    User,
)
from tipline.triage.priority import ItemFacts, TriageWeights, score_cluster, score_item

#: Item statuses that still need an analyst grade.
WAITING = ("new", "hashed", "matched", "in_review")
#: Item statuses with a final outcome (or nothing a person can do).
FINAL = ("confirmed", "dismissed", "auto_confirmed", "auto_dismissed", "failed")
#: Roles that decide escalated items.
SENIOR_ROLES = frozenset({"senior_analyst", "admin"})
#: Roles that grade at all.
GRADER_ROLES = frozenset({"analyst", "senior_analyst", "admin"})
EVIDENCE = ("match", "ai", "keyword", "none")
#: How many clusters (by stored priority) the queue looks at before re-scoring.
CANDIDATES = 2000


class ReviewError(TiplineError):
    """A review action that cannot be done (claimed by someone else, nothing to grade...)."""


@dataclass(frozen=True, slots=True)
class Reviewer:
    """Who is acting: enough of a user for the review functions (and their audit events)."""

    user_id: int
    username: str
    role: str

    @property
    def senior(self) -> bool:
        return self.role in SENIOR_ROLES

    @classmethod
    def of(cls, user: User) -> Reviewer:
        return cls(user.id, user.username, user.role)


@dataclass(frozen=True, slots=True)
class QueueFilters:
    bank: str | None = None
    evidence: str | None = None  # match | ai | keyword | none
    source: str | None = None  # public_form | partner_api | cli
    min_age_hours: float | None = None
    max_age_hours: float | None = None
    status: str | None = None  # open | in_review | escalated
    overdue_only: bool = False


@dataclass(slots=True)
class QueueEntry:
    cluster_id: int
    priority: float
    reason: str
    status: str
    size: int
    #: Items in this cluster the viewer still has to grade (or decide, when escalated).
    waiting: list[int]
    escalated: bool
    oldest: datetime
    age_hours: float
    due: datetime
    overdue: bool
    representative_item_id: int | None
    banks: list[str] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    claimed_by: str | None = None
    claim_expires: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "cluster_id": self.cluster_id,
            "priority": round(self.priority, 2),
            "reason": self.reason,
            "status": self.status,
            "size": self.size,
            "waiting": self.waiting,
            "escalated": self.escalated,
            "oldest": self.oldest.isoformat(),
            "age_hours": round(self.age_hours, 2),
            "due": self.due.isoformat(),
            "overdue": self.overdue,
            "representative_item_id": self.representative_item_id,
            "banks": self.banks,
            "evidence": self.evidence,
            "sources": self.sources,
            "claimed_by": self.claimed_by,
            "claim_expires": self.claim_expires.isoformat() if self.claim_expires else None,
        }


def item_evidence(item: Any) -> list[str]:
    """Evidence tags of an item: ``match`` (an alert-bank match), ``ai``, ``keyword``."""
    tags = []
    if any(m.get("role", "alert") == "alert" and not m.get("suppressed_by") for m in _m(item)):
        tags.append("match")
    if item.ai_evidence in ("strong", "weak"):
        tags.append("ai")
    if item.keyword_hits:
        tags.append("keyword")
    return tags


def _m(item: Any) -> list[dict[str, Any]]:
    return [m for m in (item.matches or []) if isinstance(m, dict)]


def _sources(session: Session, item_ids: Sequence[int]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = defaultdict(list)
    for chunk in _chunks(item_ids, 500):
        rows = session.execute(
            select(ReportItem.item_id, Report.source)
            .join(Report, Report.id == ReportItem.report_id)
            .where(ReportItem.item_id.in_(chunk))
        )
        for iid, src in rows:
            if src not in out[iid]:
                out[iid].append(src)
    return out


def _chunks(values: Sequence[int], n: int) -> Iterable[Sequence[int]]:
    for i in range(0, len(values), n):
        yield values[i : i + n]


def waiting_items(session: Session, cluster_id: int, viewer: Reviewer) -> list[Item]:
    """Items of the cluster the viewer still has to grade: waiting items they have not graded,
    and (senior viewers) escalated items they have not decided."""
    statuses = (*WAITING, "escalated") if viewer.senior else WAITING
    items = session.scalars(
        select(Item)
        .where(Item.cluster_id == cluster_id, Item.status.in_(statuses), Item.graded_at.is_(None))
        .order_by(Item.id)
    ).all()
    if not items:
        return []
    done: set[tuple[int, str]] = set(
        session.execute(
            select(Grade.item_id, Grade.kind).where(
                Grade.user_id == viewer.user_id, Grade.item_id.in_([i.id for i in items])
            )
        ).all()
    )
    out = []
    for it in items:
        if not _graded_by(it, done):
            out.append(it)
    return out


def _graded_by(item: Any, done: set[tuple[int, str]]) -> bool:
    """Whether the viewer already graded ``item`` for its current stage. A senior who graded
    an item as an analyst does not decide its escalation: another senior does."""
    if item.status == "escalated":
        return (item.id, "senior") in done or (item.id, "analyst") in done
    return (item.id, "analyst") in done


_QUEUE_COLUMNS = (
    Item.id,
    Item.cluster_id,
    Item.status,
    Item.first_seen,
    Item.matches,
    Item.ai_evidence,
    Item.keyword_hits,
)


def list_queue(
    session: Session,
    viewer: Reviewer,
    now: datetime,
    *,
    filters: QueueFilters | None = None,
    weights: TriageWeights | None = None,
    sla_hours: float = 24.0,
    limit: int = 100,
    only_cluster: int | None = None,
) -> list[QueueEntry]:
    """The viewer's queue, most urgent first (overdue clusters before others of equal rank);
    ``only_cluster``: just that cluster's entry (the cluster page)."""
    f = filters or QueueFilters()
    w = weights or TriageWeights()
    statuses = ["open", "in_review", "escalated"]
    if f.status:
        statuses = [f.status]
    stmt = (
        select(Cluster.id, Cluster.status, Cluster.size, Cluster.representative_item_id)
        .where(Cluster.status.in_(statuses))
        .order_by(Cluster.priority.desc().nulls_last(), Cluster.id)
        .limit(CANDIDATES)
    )
    if only_cluster is not None:
        stmt = stmt.where(Cluster.id == only_cluster)
    clusters = session.execute(stmt).all()
    if not clusters:
        return []
    by_id = {c.id: c for c in clusters}
    item_statuses = (*WAITING, "escalated") if viewer.senior else WAITING
    # only the columns scoring needs: the queue reads thousands of rows per page
    items: list[Any] = []
    for chunk in _chunks(list(by_id), 500):
        items.extend(
            session.execute(
                select(*_QUEUE_COLUMNS).where(
                    Item.cluster_id.in_(chunk),
                    Item.status.in_(item_statuses),
                    Item.graded_at.is_(None),
                )
            ).all()
        )
    if not items:
        return []
    graded: set[tuple[int, str]] = set(
        session.execute(
            select(Grade.item_id, Grade.kind).where(Grade.user_id == viewer.user_id)
        ).all()
    )
    sources = _sources(session, [i.id for i in items])
    auto = auto_confirm_banks(session)
    members: dict[int, list[Any]] = defaultdict(list)
    for it in items:
        if _graded_by(it, graded):
            continue
        assert it.cluster_id is not None
        members[it.cluster_id].append(it)
    claims = {
        c.cluster_id: c
        for c in session.scalars(
            select(ClusterClaim).where(
                ClusterClaim.cluster_id.in_(list(members)), ClusterClaim.expires_at > now
            )
        )
    }
    holders = usernames(session, {c.user_id for c in claims.values()})
    out: list[QueueEntry] = []
    for cid, its in members.items():
        cluster = by_id[cid]
        scores = []
        for it in its:
            facts = ItemFacts(
                matches=_m(it),
                ai_evidence=it.ai_evidence if isinstance(it.ai_evidence, str) else None,
                keyword_hits=len(it.keyword_hits or []),
                sources=sources.get(it.id, []),
                queued_at=it.first_seen,
            )
            scores.append(score_item(facts, auto, w, now))
        cs = score_cluster(scores, w)
        oldest = min(it.first_seen for it in its)
        age = max(0.0, (now - oldest).total_seconds() / 3600)
        banks = sorted({str(m.get("bank")) for it in its for m in _m(it)})
        evidence = sorted({t for it in its for t in item_evidence(it)}) or ["none"]
        srcs = sorted({s for it in its for s in sources.get(it.id, [])})
        claim = claims.get(cid)
        entry = QueueEntry(
            cluster_id=cid,
            priority=cs.priority if cs.priority is not None else 0.0,
            reason=cs.reason,
            status=cluster.status,
            size=cluster.size or len(its),
            waiting=[it.id for it in its],
            escalated=any(it.status == "escalated" for it in its),
            oldest=oldest,
            age_hours=age,
            due=oldest + timedelta(hours=sla_hours),
            overdue=age >= sla_hours,
            representative_item_id=cluster.representative_item_id,
            banks=banks,
            evidence=evidence,
            sources=srcs,
            claimed_by=holders.get(claim.user_id) if claim else None,
            claim_expires=claim.expires_at if claim else None,
        )
        if _keep(entry, f):
            out.append(entry)
    out.sort(key=lambda e: (-e.priority, not e.overdue, e.oldest, e.cluster_id))
    return out[:limit]


def _keep(e: QueueEntry, f: QueueFilters) -> bool:
    if f.bank and f.bank not in e.banks:
        return False
    if f.evidence and f.evidence not in e.evidence:
        return False
    if f.source and f.source not in e.sources:
        return False
    if f.min_age_hours is not None and e.age_hours < f.min_age_hours:
        return False
    if f.max_age_hours is not None and e.age_hours > f.max_age_hours:
        return False
    return not (f.overdue_only and not e.overdue)


def usernames(session: Session, ids: Iterable[int]) -> dict[int, str]:
    """user id -> username for ``ids``."""
    wanted = set(ids)
    if not wanted:
        return {}
    return dict(session.execute(select(User.id, User.username).where(User.id.in_(wanted))).all())


# -- claims -------------------------------------------------------------------------------------


def current_claim(session: Session, cluster_id: int, now: datetime) -> ClusterClaim | None:
    return session.scalar(
        select(ClusterClaim).where(
            ClusterClaim.cluster_id == cluster_id, ClusterClaim.expires_at > now
        )
    )


def claim(
    session: Session, cluster_id: int, viewer: Reviewer, now: datetime, minutes: int = 30
) -> ClusterClaim:
    """Take (or renew) the claim on a cluster; :class:`ReviewError` when someone else holds
    it. Safe under concurrency: one conditional UPDATE or one INSERT wins, never both."""
    if viewer.role not in GRADER_ROLES:
        raise ReviewError(f"role {viewer.role} does not review clusters")
    if session.get(Cluster, cluster_id) is None:
        raise ReviewError(f"cluster {cluster_id} does not exist")
    expires = now + timedelta(minutes=minutes)
    taken = session.execute(
        update(ClusterClaim)
        .where(
            ClusterClaim.cluster_id == cluster_id,
            or_(ClusterClaim.user_id == viewer.user_id, ClusterClaim.expires_at <= now),
        )
        .values(user_id=viewer.user_id, claimed_at=now, expires_at=expires)
        .execution_options(synchronize_session=False)
    )
    if getattr(taken, "rowcount", 0) != 1:
        try:
            with session.begin_nested():
                session.execute(
                    insert(ClusterClaim).values(
                        cluster_id=cluster_id,
                        user_id=viewer.user_id,
                        claimed_at=now,
                        expires_at=expires,
                    )
                )
        except IntegrityError:
            holder = current_claim(session, cluster_id, now)
            who = usernames(session, {holder.user_id}).get(holder.user_id) if holder else None
            raise ReviewError(
                f"cluster {cluster_id} is being reviewed by {who or 'someone else'}"
            ) from None
    got = session.get(ClusterClaim, cluster_id, populate_existing=True)
    assert got is not None
    return got


def release(session: Session, cluster_id: int, viewer: Reviewer) -> bool:
    """Give a claim back (only its holder can)."""
    res = session.execute(
        delete(ClusterClaim).where(
            and_(ClusterClaim.cluster_id == cluster_id, ClusterClaim.user_id == viewer.user_id)
        )
    )
    return bool(getattr(res, "rowcount", 0))


def holds_claim(session: Session, cluster_id: int, viewer: Reviewer, now: datetime) -> bool:
    c = current_claim(session, cluster_id, now)
    return c is not None and c.user_id == viewer.user_id


__all__ = [
    "EVIDENCE",
    "FINAL",
    "WAITING",
    "QueueEntry",
    "QueueFilters",
    "ReviewError",
    "Reviewer",
    "claim",
    "current_claim",
    "holds_claim",
    "item_evidence",
    "list_queue",
    "release",
    "usernames",
    "waiting_items",
]
