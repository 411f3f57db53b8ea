"""The review desk core on both backends: claims, the queue, grading and consensus, final
grades into banks, exposure limits and viewing preferences.

All data is generated: numbered placeholder hashes, placeholder usernames and bank names, and
fixed timestamps around one chosen ``NOW``. No media is involved.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from tipline.accounts import create_user
from tipline.audit import log as audit
from tipline.review import exposure, prefs
from tipline.review.grading import (
    Outcome,
    ReviewPolicy,
    bank_final_grades,
    grade_cluster,
    required_agreement,
)
from tipline.review.queue import (
    QueueEntry,
    QueueFilters,
    Reviewer,
    ReviewError,
    auto_confirm_banks,
    claim,
    current_claim,
    holds_claim,
    list_queue,
    release,
    waiting_items,
)
from tipline.review.taxonomy import load
from tipline.service.matching import MatchService
from tipline.store.tables import (
    AuditEvent,
    BankEntryRow,
    BankRow,
    Cluster,
    ClusterClaim,
    ExposureInterval,
    Grade,
    Item,
    Report,
    ReportItem,
    UserPreference,
)

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
TAX = load()
CAT_A = {"uk_category": "A", "ncmec_category": "A1", "interpol_baseline": True}
CAT_B = {"uk_category": "B", "ncmec_category": "B2"}
NOT_ILLEGAL = {"uk_category": "not_illegal", "ncmec_category": "none"}
PASSWORD = "placeholder-pass-123"
_seq = itertools.count(1)


# -- helpers -------------------------------------------------------------------------------------


def _users(factory: sessionmaker[Session], *specs: tuple[str, str]) -> dict[str, Reviewer]:
    with factory() as s, s.begin():
        return {name: Reviewer.of(create_user(s, name, role, PASSWORD)) for name, role in specs}


@pytest.fixture
def team(session_factory: sessionmaker[Session]) -> dict[str, Reviewer]:
    return _users(
        session_factory,
        ("ana", "analyst"),
        ("ben", "analyst"),
        ("cai", "analyst"),
        ("sen", "senior_analyst"),
        ("adm", "admin"),
        ("aud", "auditor"),
        ("par", "partner"),
    )


def _cluster(s: Session, status: str = "open") -> Cluster:
    c = Cluster(status=status, size=1)
    s.add(c)
    s.flush()
    return c


def _item(
    s: Session,
    cluster: Cluster | None,
    *,
    status: str = "hashed",
    first_seen: datetime = NOW - timedelta(hours=2),
    matches: list[dict[str, Any]] | None = None,
    ai: str | None = None,
    keywords: list[str] | None = None,
    pdq_quality: int = 90,
) -> Item:
    n = next(_seq)
    item = Item(
        sha256=f"{n:064x}",
        md5=f"{n:032x}",
        pdq=f"{n:064x}",
        pdq_quality=pdq_quality,
        status=status,
        first_seen=first_seen,
        matches=matches,
        ai_evidence=ai,
        keyword_hits=keywords,
        cluster_id=cluster.id if cluster else None,
    )
    s.add(item)
    s.flush()
    if cluster is not None and cluster.representative_item_id is None:
        cluster.representative_item_id = item.id
    return item


def _one_item_cluster(factory: sessionmaker[Session], **kw: Any) -> tuple[int, int]:
    with factory() as s, s.begin():
        c = _cluster(s)
        it = _item(s, c, **kw)
        return c.id, it.id


def _grade(
    factory: sessionmaker[Session],
    cluster_id: int,
    who: Reviewer,
    values: dict[str, Any],
    now: datetime = NOW,
    **kw: Any,
) -> list[Outcome]:
    """Claim, then grade, each in its own transaction (as the desk does)."""
    with factory() as s, s.begin():
        claim(s, cluster_id, who, now)
    with factory() as s, s.begin():
        return grade_cluster(s, cluster_id, who, values, TAX, now, **kw)


def _get(factory: sessionmaker[Session], model: Any, key: int) -> Any:
    with factory() as s:
        return s.get(model, key)


def _queue(
    factory: sessionmaker[Session], who: Reviewer, now: datetime = NOW, **kw: Any
) -> list[QueueEntry]:
    with factory() as s:
        return list_queue(s, who, now, **kw)


def _actions(factory: sessionmaker[Session]) -> list[tuple[str, str | None]]:
    with factory() as s:
        return [
            (e.action, e.target_id)
            for e in s.scalars(select(AuditEvent).order_by(AuditEvent.id))
            if e.action.startswith("review.")
        ]


# -- claims --------------------------------------------------------------------------------------


def test_claim_one_holder_renew_expire_release(
    session_factory: sessionmaker[Session], team: dict[str, Reviewer]
) -> None:
    f = session_factory
    ana, ben = team["ana"], team["ben"]
    cid, _ = _one_item_cluster(f)
    with f() as s, s.begin():
        got = claim(s, cid, ana, NOW)
        assert (got.user_id, got.expires_at) == (ana.user_id, NOW + timedelta(minutes=30))
    with f() as s, s.begin(), pytest.raises(ReviewError, match="being reviewed by ana"):
        claim(s, cid, ben, NOW + timedelta(minutes=5))
    with f() as s, s.begin():
        # the failed attempt left ana's claim alone; ana renews it
        assert holds_claim(s, cid, ana, NOW + timedelta(minutes=5))
        assert not holds_claim(s, cid, ben, NOW + timedelta(minutes=5))
        renewed = claim(s, cid, ana, NOW + timedelta(minutes=20))
        assert renewed.expires_at == NOW + timedelta(minutes=50)
    with f() as s, s.begin(), pytest.raises(ReviewError):
        claim(s, cid, ben, NOW + timedelta(minutes=49))  # still ana's thanks to the renewal
    later = NOW + timedelta(minutes=50)
    with f() as s, s.begin():
        assert current_claim(s, cid, later) is None  # lapsed exactly at expires_at
        taken = claim(s, cid, ben, later, minutes=10)
        assert taken.user_id == ben.user_id
        assert taken.expires_at == later + timedelta(minutes=10)
    with f() as s, s.begin():
        assert release(s, cid, ana) is False  # not the holder
        assert holds_claim(s, cid, ben, later)
        assert release(s, cid, ben) is True
        assert current_claim(s, cid, later) is None
        assert s.scalar(select(func.count()).select_from(ClusterClaim)) == 0


def test_claims_are_per_cluster(
    session_factory: sessionmaker[Session], team: dict[str, Reviewer]
) -> None:
    one, _ = _one_item_cluster(session_factory)
    two, _ = _one_item_cluster(session_factory)
    with session_factory() as s, s.begin():
        claim(s, one, team["ana"], NOW)
        claim(s, two, team["ben"], NOW)
        assert holds_claim(s, one, team["ana"], NOW)
        assert holds_claim(s, two, team["ben"], NOW)


@pytest.mark.parametrize("role", ["aud", "par"])
def test_auditor_and_partner_cannot_claim(
    session_factory: sessionmaker[Session], team: dict[str, Reviewer], role: str
) -> None:
    cid, _ = _one_item_cluster(session_factory)
    with session_factory() as s, s.begin(), pytest.raises(ReviewError, match="does not review"):
        claim(s, cid, team[role], NOW)
    with session_factory() as s:
        assert current_claim(s, cid, NOW) is None


def test_claim_unknown_cluster(
    session_factory: sessionmaker[Session], team: dict[str, Reviewer]
) -> None:
    with session_factory() as s, pytest.raises(ReviewError, match="does not exist"):
        claim(s, 4242, team["ana"], NOW)


@pytest.mark.parametrize("who", ["sen", "adm"])
def test_senior_and_admin_can_claim(
    session_factory: sessionmaker[Session], team: dict[str, Reviewer], who: str
) -> None:
    cid, _ = _one_item_cluster(session_factory)
    with session_factory() as s, s.begin():
        assert claim(s, cid, team[who], NOW).user_id == team[who].user_id


# -- the queue -----------------------------------------------------------------------------------


@pytest.fixture
def mixed(session_factory: sessionmaker[Session]) -> dict[str, int]:
    """Four one-item clusters: known (alert match), unknown with strong AI evidence, plain
    unknown from a partner report, and old known-benign (ignore match only)."""
    with session_factory() as s, s.begin():
        s.add(BankRow(name="B_KNOWN", role="alert", created_at=0.0))
        s.add(BankRow(name="B_BENIGN", role="ignore", created_at=0.0))
        known, ai, plain, benign, kw = (_cluster(s) for _ in range(5))
        _item(
            s,
            known,
            status="matched",
            matches=[{"bank": "B_KNOWN", "role": "alert", "signal_type": "md5", "distance": 0}],
        )
        _item(s, ai, ai="strong")
        plain_item = _item(s, plain)
        _item(
            s,
            benign,
            status="matched",
            first_seen=NOW - timedelta(hours=30),
            matches=[{"bank": "B_BENIGN", "role": "ignore", "signal_type": "pdq", "distance": 3}],
        )
        _item(s, kw, keywords=["teapot-42"], first_seen=NOW - timedelta(hours=10))
        report = Report(reference="TL-TEST-000001", source="partner_api", submitted_at=NOW)
        s.add(report)
        s.flush()
        s.add(ReportItem(report_id=report.id, item_id=plain_item.id))
        return {
            "known": known.id,
            "ai": ai.id,
            "plain": plain.id,
            "benign": benign.id,
            "kw": kw.id,
        }


def test_queue_order_unknown_ai_first_then_known(
    session_factory: sessionmaker[Session], team: dict[str, Reviewer], mixed: dict[str, int]
) -> None:
    q = _queue(session_factory, team["ana"])
    by = {e.cluster_id: e for e in q}
    # ai 20+40+1; known 40+1; kw 20+10+5; plain 20+10(partner)+1; benign -30+15
    assert [e.cluster_id for e in q] == [
        mixed["ai"],
        mixed["known"],
        mixed["kw"],
        mixed["plain"],
        mixed["benign"],
    ]
    assert by[mixed["ai"]].priority == pytest.approx(61.0)
    assert "strong AI-generation evidence" in by[mixed["ai"]].reason
    assert by[mixed["known"]].priority == pytest.approx(41.0)
    assert "alert match in B_KNOWN" in by[mixed["known"]].reason
    assert by[mixed["plain"]].priority == pytest.approx(31.0)
    assert "partner report" in by[mixed["plain"]].reason
    assert by[mixed["benign"]].priority == pytest.approx(-15.0)
    assert by[mixed["known"]].evidence == ["match"]
    assert by[mixed["ai"]].evidence == ["ai"]
    assert by[mixed["kw"]].evidence == ["keyword"]
    assert by[mixed["benign"]].evidence == ["none"]
    assert by[mixed["plain"]].sources == ["partner_api"]
    assert all(e.waiting and not e.escalated for e in q)
    js = by[mixed["ai"]].to_json()
    assert js["priority"] == 61.0 and js["claimed_by"] is None and js["overdue"] is False


@pytest.mark.parametrize(
    ("filters", "want"),
    [
        (QueueFilters(bank="B_KNOWN"), ["known"]),
        (QueueFilters(bank="B_BENIGN"), ["benign"]),
        (QueueFilters(bank="NO_SUCH_BANK"), []),
        (QueueFilters(evidence="match"), ["known"]),
        (QueueFilters(evidence="ai"), ["ai"]),
        (QueueFilters(evidence="keyword"), ["kw"]),
        (QueueFilters(evidence="none"), ["plain", "benign"]),
        (QueueFilters(source="partner_api"), ["plain"]),
        (QueueFilters(source="public_form"), []),
        (QueueFilters(min_age_hours=5), ["kw", "benign"]),
        (QueueFilters(max_age_hours=5), ["ai", "known", "plain"]),
        (QueueFilters(min_age_hours=5, max_age_hours=20), ["kw"]),
        (QueueFilters(overdue_only=True), ["benign"]),
        (QueueFilters(status="in_review"), []),
    ],
)
def test_queue_filters(
    session_factory: sessionmaker[Session],
    team: dict[str, Reviewer],
    mixed: dict[str, int],
    filters: QueueFilters,
    want: list[str],
) -> None:
    got = _queue(session_factory, team["ana"], filters=filters)
    assert [e.cluster_id for e in got] == [mixed[k] for k in want]


def test_queue_status_filter(
    session_factory: sessionmaker[Session], team: dict[str, Reviewer], mixed: dict[str, int]
) -> None:
    with session_factory() as s, s.begin():
        s.execute(update(Cluster).where(Cluster.id == mixed["kw"]).values(status="in_review"))
    got = _queue(session_factory, team["ana"], filters=QueueFilters(status="in_review"))
    assert [e.cluster_id for e in got] == [mixed["kw"]]
    opened = _queue(session_factory, team["ana"], filters=QueueFilters(status="open"))
    assert mixed["kw"] not in [e.cluster_id for e in opened]
    assert len(opened) == 4


def test_queue_shows_claim_holder(
    session_factory: sessionmaker[Session], team: dict[str, Reviewer], mixed: dict[str, int]
) -> None:
    with session_factory() as s, s.begin():
        claim(s, mixed["ai"], team["ben"], NOW)
    entry = next(e for e in _queue(session_factory, team["ana"]) if e.cluster_id == mixed["ai"])
    assert entry.claimed_by == "ben"
    assert entry.claim_expires == NOW + timedelta(minutes=30)
    later = _queue(session_factory, team["ana"], NOW + timedelta(hours=1))
    assert next(e for e in later if e.cluster_id == mixed["ai"]).claimed_by is None


def test_queue_ageing_raises_priority_and_overdue(
    session_factory: sessionmaker[Session], team: dict[str, Reviewer]
) -> None:
    _one_item_cluster(session_factory, first_seen=NOW)

    def entry(now: datetime, sla: float = 24.0) -> QueueEntry:
        (e,) = _queue(session_factory, team["ana"], now, sla_hours=sla)
        return e

    p0, p10, p30 = (entry(NOW + timedelta(hours=h)).priority for h in (0, 10, 30))
    assert p0 < p10 < p30
    assert p10 - p0 == pytest.approx(5.0)  # 0.5 per hour
    assert entry(NOW + timedelta(hours=100)).priority == pytest.approx(20.0 + 24.0)  # capped
    assert "10.0 h waiting" in entry(NOW + timedelta(hours=10)).reason
    e = entry(NOW + timedelta(hours=23, minutes=59))
    assert not e.overdue and e.due == NOW + timedelta(hours=24)
    assert entry(NOW + timedelta(hours=24)).overdue
    assert entry(NOW + timedelta(hours=3), sla=3.0).overdue
    assert not entry(NOW + timedelta(hours=3), sla=4.0).overdue


def test_overdue_breaks_ties(
    session_factory: sessionmaker[Session], team: dict[str, Reviewer]
) -> None:
    from tipline.triage.priority import TriageWeights

    flat = TriageWeights(age_per_hour=0.0)  # age no longer changes the score
    young, _ = _one_item_cluster(session_factory, first_seen=NOW - timedelta(hours=1))
    old, _ = _one_item_cluster(session_factory, first_seen=NOW - timedelta(hours=30))
    q = _queue(session_factory, team["ana"], weights=flat)
    assert [e.cluster_id for e in q] == [old, young]
    assert q[0].priority == q[1].priority


def test_graded_item_leaves_that_analysts_queue_only(
    session_factory: sessionmaker[Session], team: dict[str, Reviewer]
) -> None:
    f = session_factory
    cid, iid = _one_item_cluster(f)
    out = _grade(f, cid, team["ana"], CAT_A)
    assert out == [Outcome(iid, "pending")]
    assert _queue(f, team["ana"]) == []
    (e,) = _queue(f, team["ben"])
    assert (e.cluster_id, e.waiting, e.status) == (cid, [iid], "in_review")
    with f() as s:
        assert waiting_items(s, cid, team["ana"]) == []
        assert [i.id for i in waiting_items(s, cid, team["ben"])] == [iid]


def test_escalated_only_in_senior_and_admin_queues(
    session_factory: sessionmaker[Session], team: dict[str, Reviewer]
) -> None:
    f = session_factory
    cid, iid = _one_item_cluster(f)
    _grade(f, cid, team["ana"], CAT_A)
    assert _grade(f, cid, team["ben"], CAT_B) == [Outcome(iid, "escalated")]
    assert _queue(f, team["cai"]) == []
    assert _queue(f, team["ana"]) == []
    for who in ("sen", "adm"):
        (e,) = _queue(f, team[who])
        assert (e.cluster_id, e.waiting, e.escalated, e.status) == (cid, [iid], True, "escalated")
    esc = _queue(f, team["sen"], filters=QueueFilters(status="escalated"))
    assert [e.cluster_id for e in esc] == [cid]


# -- grading -------------------------------------------------------------------------------------


def test_grading_needs_a_claim(
    session_factory: sessionmaker[Session], team: dict[str, Reviewer]
) -> None:
    f = session_factory
    cid, iid = _one_item_cluster(f)
    with f() as s, s.begin(), pytest.raises(ReviewError, match=f"claim cluster {cid}"):
        grade_cluster(s, cid, team["ana"], CAT_A, TAX, NOW)
    with f() as s, s.begin():
        claim(s, cid, team["ben"], NOW)
    with f() as s, s.begin(), pytest.raises(ReviewError, match="claim cluster"):
        grade_cluster(s, cid, team["ana"], CAT_A, TAX, NOW)
    with f() as s:
        assert s.scalar(select(func.count()).select_from(Grade)) == 0
    with f() as s, s.begin():
        out = grade_cluster(s, cid, team["ana"], CAT_A, TAX, NOW, require_claim=False)
    assert out == [Outcome(iid, "pending")]


def test_grading_unknown_cluster_or_bad_values(
    session_factory: sessionmaker[Session], team: dict[str, Reviewer]
) -> None:
    f = session_factory
    with f() as s, pytest.raises(ReviewError, match="does not exist"):
        grade_cluster(s, 999, team["ana"], CAT_A, TAX, NOW)
    cid, _ = _one_item_cluster(f)
    from tipline.review.taxonomy import TaxonomyError

    with pytest.raises(TaxonomyError):
        _grade(f, cid, team["ana"], {"uk_category": "Z", "ncmec_category": "A1"})


def test_two_agreeing_analysts_make_a_final_grade(
    session_factory: sessionmaker[Session], team: dict[str, Reviewer]
) -> None:
    f = session_factory
    cid, iid = _one_item_cluster(f)
    assert _grade(f, cid, team["ana"], CAT_A) == [Outcome(iid, "pending")]
    item = _get(f, Item, iid)
    assert (item.status, item.grade, item.graded_at) == ("in_review", None, None)
    assert _get(f, Cluster, cid).status == "in_review"
    later = NOW + timedelta(hours=1)
    # ben agrees on the consensus fields; the other fields may differ
    (out,) = _grade(f, cid, team["ben"], {**CAT_A, "age_band": "3-6"}, later)
    assert out.state == "final"
    item = _get(f, Item, iid)
    assert item.status == "confirmed"
    assert item.graded_at == later
    assert item.grade == out.grade
    assert item.grade["actionable"] is True
    assert item.grade["how"] == "consensus"
    assert item.grade["graders"] == ["ana", "ben"]
    assert item.grade["taxonomy"] == "tipline-default"
    assert item.grade["values"]["uk_category"] == "A"
    assert item.grade["values"]["interpol_baseline"] is True
    assert item.grade["values"]["age_band"] in ("3-6", "unknown")
    assert item.grade["label"].startswith("uk_category:A ncmec_category:A1")
    assert _get(f, Cluster, cid).status == "closed"
    with f() as s:
        assert current_claim(s, cid, later) is None  # grading releases the claim
        kinds = s.scalars(select(Grade.kind).where(Grade.item_id == iid)).all()
    assert sorted(kinds) == ["analyst", "analyst"]
    assert _queue(f, team["cai"], later) == []


def test_not_illegal_consensus_dismisses(
    session_factory: sessionmaker[Session], team: dict[str, Reviewer]
) -> None:
    f = session_factory
    cid, iid = _one_item_cluster(f)
    _grade(f, cid, team["ana"], NOT_ILLEGAL)
    (out,) = _grade(f, cid, team["ben"], NOT_ILLEGAL)
    item = _get(f, Item, iid)
    assert out.state == "final"
    assert item.status == "dismissed"
    assert item.grade["actionable"] is False
    assert item.grade["label"] == "uk_category:not_illegal"
    assert _get(f, Cluster, cid).status == "closed"


def test_disagreement_escalates_then_senior_decides(
    session_factory: sessionmaker[Session], team: dict[str, Reviewer]
) -> None:
    f = session_factory
    cid, iid = _one_item_cluster(f)
    _grade(f, cid, team["ana"], CAT_A)
    assert _grade(f, cid, team["ben"], CAT_B) == [Outcome(iid, "escalated")]
    item = _get(f, Item, iid)
    assert (item.status, item.graded_at) == ("escalated", None)
    assert _get(f, Cluster, cid).status == "escalated"
    # a third analyst cannot settle it
    with f() as s, s.begin():
        claim(s, cid, team["cai"], NOW)
    with f() as s, s.begin(), pytest.raises(ReviewError, match="nothing in cluster"):
        grade_cluster(s, cid, team["cai"], CAT_A, TAX, NOW)
    with f() as s, s.begin():
        release(s, cid, team["cai"])
    later = NOW + timedelta(hours=2)
    (out,) = _grade(f, cid, team["sen"], CAT_B, later)
    assert out.state == "final"
    item = _get(f, Item, iid)
    assert item.status == "confirmed"
    assert item.grade["how"] == "senior"
    assert item.grade["graders"] == ["sen"]
    assert item.grade["values"]["uk_category"] == "B"
    assert item.graded_at == later
    assert _get(f, Cluster, cid).status == "closed"
    assert _queue(f, team["sen"], later) == []
    with f() as s:
        assert s.scalar(select(Grade.kind).where(Grade.user_id == team["sen"].user_id)) == "senior"
    # the senior cannot decide twice
    with f() as s, s.begin():
        claim(s, cid, team["sen"], later)
    with f() as s, s.begin(), pytest.raises(ReviewError, match="nothing in cluster"):
        grade_cluster(s, cid, team["sen"], CAT_A, TAX, later)


def test_analyst_cannot_grade_twice(
    session_factory: sessionmaker[Session], team: dict[str, Reviewer]
) -> None:
    f = session_factory
    cid, _ = _one_item_cluster(f)
    _grade(f, cid, team["ana"], CAT_A)
    with f() as s, s.begin():
        claim(s, cid, team["ana"], NOW)
    with f() as s, s.begin(), pytest.raises(ReviewError, match="waiting for your grade"):
        grade_cluster(s, cid, team["ana"], CAT_B, TAX, NOW)
    with f() as s:
        assert s.scalar(select(func.count()).select_from(Grade)) == 1
        assert _get(f, Item, _one_id(s, cid)).status == "in_review"


def _one_id(s: Session, cid: int) -> int:
    return s.scalars(select(Item.id).where(Item.cluster_id == cid)).one()


def test_bank_consensus_required_needs_three(
    session_factory: sessionmaker[Session], team: dict[str, Reviewer]
) -> None:
    f = session_factory
    with f() as s, s.begin():
        s.add(BankRow(name="B_STRICT", role="alert", created_at=0.0, consensus_required=3))
    strict = [{"bank": "B_STRICT", "role": "alert", "signal_type": "md5", "distance": 0}]
    cid, iid = _one_item_cluster(f, status="matched", matches=strict)
    other, other_iid = _one_item_cluster(f)
    with f() as s:
        assert required_agreement(s, _get(f, Item, iid), ReviewPolicy()) == 3
        assert required_agreement(s, _get(f, Item, other_iid), ReviewPolicy()) == 2
        assert required_agreement(s, _get(f, Item, other_iid), ReviewPolicy(consensus=0)) == 1
        assert required_agreement(s, _get(f, Item, iid), ReviewPolicy(consensus=5)) == 5
    assert _grade(f, cid, team["ana"], CAT_A)[0].state == "pending"
    assert _grade(f, cid, team["ben"], CAT_A)[0].state == "pending"
    assert _get(f, Item, iid).status == "in_review"
    (out,) = _grade(f, cid, team["cai"], CAT_A)
    assert out.state == "final"
    assert _get(f, Item, iid).grade["graders"] == ["ana", "ben", "cai"]
    # a policy of one settles at once
    (single,) = _grade(f, other, team["ana"], CAT_A, policy=ReviewPolicy(consensus=1))
    assert single.state == "final"


def test_grading_a_cluster_grades_every_waiting_item(
    session_factory: sessionmaker[Session], team: dict[str, Reviewer]
) -> None:
    f = session_factory
    with f() as s, s.begin():
        c = _cluster(s)
        ids = [_item(s, c).id for _ in range(3)]
        done = _item(s, c, status="dismissed")  # already settled: not graded again
        c.size = 4
        cid, done_id = c.id, done.id
    out = _grade(f, cid, team["ana"], CAT_A)
    assert [o.item_id for o in out] == ids
    assert {o.state for o in out} == {"pending"}
    with f() as s:
        graded = s.scalars(select(Grade.item_id).where(Grade.user_id == team["ana"].user_id))
        assert sorted(graded) == ids
    (e,) = _queue(f, team["ben"])
    assert e.waiting == ids and e.size == 4
    out2 = _grade(f, cid, team["ben"], CAT_A)
    assert [o.state for o in out2] == ["final"] * 3
    with f() as s:
        statuses = dict(s.execute(select(Item.id, Item.status).where(Item.cluster_id == cid)).all())
    assert statuses == {**{i: "confirmed" for i in ids}, done_id: "dismissed"}
    assert _get(f, Cluster, cid).status == "closed"


def test_grading_only_some_items(
    session_factory: sessionmaker[Session], team: dict[str, Reviewer]
) -> None:
    f = session_factory
    with f() as s, s.begin():
        c = _cluster(s)
        a, b = _item(s, c).id, _item(s, c).id
        cid = c.id
    assert _grade(f, cid, team["ana"], CAT_A, item_ids=[b]) == [Outcome(b, "pending")]
    (e,) = _queue(f, team["ana"])
    assert e.waiting == [a]
    with f() as s, s.begin():
        claim(s, cid, team["ana"], NOW)
    with f() as s, s.begin(), pytest.raises(ReviewError):
        grade_cluster(s, cid, team["ana"], CAT_A, TAX, NOW, item_ids=[b])


def test_mixed_cluster_escalates_one_item_and_closes_after_senior(
    session_factory: sessionmaker[Session], team: dict[str, Reviewer]
) -> None:
    f = session_factory
    with f() as s, s.begin():
        c = _cluster(s)
        a, b = _item(s, c).id, _item(s, c).id
        cid = c.id
    _grade(f, cid, team["ana"], CAT_A)
    _grade(f, cid, team["ben"], CAT_A, item_ids=[a])
    _grade(f, cid, team["ben"], NOT_ILLEGAL, item_ids=[b])
    assert _get(f, Item, a).status == "confirmed"
    assert _get(f, Item, b).status == "escalated"
    assert _get(f, Cluster, cid).status == "escalated"
    (e,) = _queue(f, team["sen"])
    assert e.waiting == [b]
    (out,) = _grade(f, cid, team["sen"], NOT_ILLEGAL)
    assert out == Outcome(b, "final", out.grade)
    assert _get(f, Item, b).status == "dismissed"
    assert _get(f, Cluster, cid).status == "closed"


def test_audit_events_and_chain(
    session_factory: sessionmaker[Session], team: dict[str, Reviewer]
) -> None:
    f = session_factory
    agree, agree_item = _one_item_cluster(f)
    split, split_item = _one_item_cluster(f)
    _grade(f, agree, team["ana"], CAT_A)
    _grade(f, agree, team["ben"], CAT_A)
    _grade(f, split, team["ana"], CAT_A)
    _grade(f, split, team["ben"], CAT_B)
    _grade(f, split, team["sen"], CAT_B)
    assert _actions(f) == [
        ("review.grade", str(agree)),
        ("review.final", str(agree_item)),
        ("review.grade", str(agree)),
        ("review.grade", str(split)),
        ("review.escalate", str(split_item)),
        ("review.grade", str(split)),
        ("review.final", str(split_item)),
        ("review.grade", str(split)),
    ]
    with f() as s:
        res = audit.verify(s)
        assert res.ok, res.message()
        events = s.scalars(select(AuditEvent).where(AuditEvent.action.like("review.%"))).all()
        final = [e for e in events if e.action == "review.final"]
        assert final[0].actor == "ben"
        assert final[0].details["how"] == "consensus"
        assert final[0].details["graders"] == ["ana", "ben"]
        assert final[1].details["how"] == "senior"
        esc = next(e for e in events if e.action == "review.escalate")
        assert esc.details["cluster_id"] == split
        assert sorted(esc.details["decisions"].values()) == [1, 1]
        grades = [e for e in events if e.action == "review.grade"]
        assert grades[0].details["outcomes"] == {str(agree_item): "pending"}
        assert grades[1].details["outcomes"] == {str(agree_item): "final"}
        assert [g.details["kind"] for g in grades] == ["analyst"] * 4 + ["senior"]


def test_senior_grading_as_analyst_is_audited_as_analyst(
    session_factory: sessionmaker[Session], team: dict[str, Reviewer]
) -> None:
    """A senior analyst may give an ordinary (analyst) grade on a waiting item; the audit
    event says which kind of grade it was, not the grader's rank."""
    f = session_factory
    cid, _ = _one_item_cluster(f)
    _grade(f, cid, team["ana"], CAT_A)
    (out,) = _grade(f, cid, team["sen"], CAT_A)
    assert out.state == "final"
    with f() as s:
        assert s.scalar(select(Grade.kind).where(Grade.user_id == team["sen"].user_id)) == "analyst"
        last = s.scalars(
            select(AuditEvent).where(AuditEvent.action == "review.grade").order_by(AuditEvent.id)
        ).all()[-1]
    assert last.details["kind"] == "analyst"


def test_sink_gets_one_grade_event_per_final_item(
    session_factory: sessionmaker[Session], team: dict[str, Reviewer]
) -> None:
    f = session_factory
    with f() as s, s.begin():
        c = _cluster(s)
        items = [_item(s, c) for _ in range(2)]
        cid = c.id
        ids = [i.id for i in items]
        hashes = {i.id: (i.sha256, i.md5, i.pdq) for i in items}
    seen: list[tuple[str, dict[str, Any]]] = []

    def sink(session: Session, event: str, data: dict[str, Any]) -> None:
        assert isinstance(session, Session)
        seen.append((event, data))

    _grade(f, cid, team["ana"], CAT_A, sink=sink)
    assert seen == []  # nothing final yet
    later = NOW + timedelta(minutes=5)
    _grade(f, cid, team["ben"], CAT_A, later, sink=sink)
    assert [e for e, _ in seen] == ["grade", "grade"]
    assert [d["item_id"] for _, d in seen] == ids
    for _, d in seen:
        assert (d["sha256"], d["md5"], d["pdq"]) == hashes[d["item_id"]]
        assert d["grade"]["how"] == "consensus"
        assert d["graded_at"] == later.isoformat()


# -- final grades into banks -------------------------------------------------------------------


@pytest.fixture
def bank_service(tmp_path: Path, db_url: str, engine: Engine) -> Iterator[MatchService]:
    svc = MatchService.for_data_dir(tmp_path / "data", db_url, engine=engine)
    try:
        yield svc
    finally:
        svc.close()


def _entries(factory: sessionmaker[Session], bank: str) -> list[tuple[str, str, str]]:
    with factory() as s:
        return sorted(
            s.execute(
                select(BankEntryRow.signal_type, BankEntryRow.signal, BankEntryRow.label)
                .join(BankRow, BankRow.id == BankEntryRow.bank_id)
                .where(BankRow.name == bank)
            ).all()
        )


def test_final_grades_reach_the_banks(
    session_factory: sessionmaker[Session],
    team: dict[str, Reviewer],
    bank_service: MatchService,
) -> None:
    f = session_factory
    one = ReviewPolicy(consensus=1)
    bad, bad_item = _one_item_cluster(f)
    fine, fine_item = _one_item_cluster(f)
    weak, weak_item = _one_item_cluster(f, pdq_quality=10)  # PDQ too weak to bank
    waiting, waiting_item = _one_item_cluster(f)
    _grade(f, bad, team["ana"], CAT_A, policy=one)
    _grade(f, fine, team["ana"], NOT_ILLEGAL, policy=one)
    _grade(f, weak, team["ana"], CAT_B, policy=one)
    _grade(f, waiting, team["ana"], CAT_A)  # pending: nothing to bank
    policy = ReviewPolicy()
    assert bank_final_grades(f, bank_service, policy) == 3

    b, fi, w = (_get(f, Item, i) for i in (bad_item, fine_item, weak_item))
    graded = _entries(f, "TIPLINE_GRADED")
    assert graded == sorted(
        [
            ("md5", b.md5, b.grade["label"]),
            ("sha256", b.sha256, b.grade["label"]),
            ("pdq", b.pdq, b.grade["label"]),
            ("md5", w.md5, w.grade["label"]),
            ("sha256", w.sha256, w.grade["label"]),
        ]
    )
    assert _entries(f, "TIPLINE_NOT_ILLEGAL") == sorted(
        [
            ("md5", fi.md5, fi.grade["label"]),
            ("sha256", fi.sha256, fi.grade["label"]),
            ("pdq", fi.pdq, fi.grade["label"]),
        ]
    )
    with f() as s:
        rows = {r.name: r for r in s.scalars(select(BankRow))}
        assert (rows["TIPLINE_GRADED"].role, rows["TIPLINE_GRADED"].auto_confirm) == ("alert", True)
        assert rows["TIPLINE_NOT_ILLEGAL"].role == "ignore"
        assert rows["TIPLINE_NOT_ILLEGAL"].auto_confirm is True  # identical files: dismissed
        # the same material now skips the queue: the graded bank auto-confirms
        assert "TIPLINE_GRADED" in auto_confirm_banks(s)
        assert "TIPLINE_NOT_ILLEGAL" not in auto_confirm_banks(s)
        banked = dict(s.execute(select(Item.id, Item.banked_at)).all())
        events = s.scalars(select(AuditEvent).where(AuditEvent.action == "review.banked")).all()
        assert audit.verify(s).ok
    assert all(banked[i] is not None for i in (bad_item, fine_item, weak_item))
    assert banked[waiting_item] is None
    assert sorted(int(e.target_id or 0) for e in events) == [bad_item, fine_item, weak_item]
    assert {e.details["bank"] for e in events} == {"TIPLINE_GRADED", "TIPLINE_NOT_ILLEGAL"}

    # a second run finds nothing to do and adds nothing
    assert bank_final_grades(f, bank_service, policy) == 0
    assert _entries(f, "TIPLINE_GRADED") == graded
    # even if an item's banked_at was lost (a crash after adding), banking again adds nothing
    with f() as s, s.begin():
        s.execute(update(Item).where(Item.id == bad_item).values(banked_at=None))
    assert bank_final_grades(f, bank_service, policy) == 1
    assert _entries(f, "TIPLINE_GRADED") == graded
    with f() as s:
        assert s.scalar(select(func.count()).select_from(BankEntryRow)) == 8


def test_banking_uses_an_existing_bank_and_policy_names(
    session_factory: sessionmaker[Session],
    team: dict[str, Reviewer],
    bank_service: MatchService,
) -> None:
    from tipline.banks.bank import Bank

    f = session_factory
    bank_service.create_bank(Bank(name="MY_GRADED", role="alert"))
    cid, _ = _one_item_cluster(f)
    cat_c = {"uk_category": "C", "ncmec_category": "none"}
    _grade(f, cid, team["ana"], cat_c)
    _grade(f, cid, team["ben"], cat_c)
    policy = ReviewPolicy(graded_bank="MY_GRADED", benign_bank="MY_BENIGN")
    assert bank_final_grades(f, bank_service, policy) == 1
    assert len(_entries(f, "MY_GRADED")) == 3
    with f() as s:
        names = set(s.scalars(select(BankRow.name)))
    assert "TIPLINE_GRADED" not in names and "MY_BENIGN" not in names


class FakeSink:
    """A minimal BankSink: banks and entries in memory."""

    def __init__(self) -> None:
        from tipline.banks.bank import Bank, Entry

        self.banks: dict[str, Bank] = {}
        self.entries: dict[tuple[str, str, str], Entry] = {}

    def get_bank(self, name: str) -> Any:
        from tipline.errors import BankNotFoundError

        if name not in self.banks:
            raise BankNotFoundError(name)
        return self.banks[name]

    def create_bank(self, bank: Any) -> Any:
        self.banks[bank.name] = bank
        return bank

    def add_entries(self, entries: Any) -> list[int]:
        out = []
        for e in entries:
            key = (e.bank, e.signal_type, e.signal)
            self.entries.setdefault(key, e)
            out.append(list(self.entries).index(key) + 1)
        return out


def test_banking_with_a_small_sink(
    session_factory: sessionmaker[Session], team: dict[str, Reviewer]
) -> None:
    f = session_factory
    cid, iid = _one_item_cluster(f)
    _grade(f, cid, team["ana"], NOT_ILLEGAL, policy=ReviewPolicy(consensus=1))
    sink = FakeSink()
    assert bank_final_grades(f, sink, ReviewPolicy()) == 1
    assert sink.banks["TIPLINE_NOT_ILLEGAL"].role == "ignore"
    item = _get(f, Item, iid)
    got = sorted((k[1], k[2]) for k in sink.entries)
    assert got == sorted([("md5", item.md5), ("sha256", item.sha256), ("pdq", item.pdq)])
    e = next(iter(sink.entries.values()))
    assert e.source == "tipline-review" and e.label == "uk_category:not_illegal"
    assert f"item {iid}, graded consensus by ana" == e.note
    assert bank_final_grades(f, sink, ReviewPolicy()) == 0


# -- exposure ------------------------------------------------------------------------------------


def _intervals(factory: sessionmaker[Session], user_id: int) -> list[tuple[datetime, datetime]]:
    with factory() as s:
        return [
            (r.started_at, r.ended_at)
            for r in s.scalars(
                select(ExposureInterval)
                .where(ExposureInterval.user_id == user_id)
                .order_by(ExposureInterval.started_at)
            )
        ]


def _beat(factory: sessionmaker[Session], user_id: int, at: datetime) -> None:
    with factory() as s, s.begin():
        exposure.beat(s, user_id, at)


def _add(factory: sessionmaker[Session], user_id: int, *spans: tuple[datetime, datetime]) -> None:
    with factory() as s, s.begin():
        s.add_all(ExposureInterval(user_id=user_id, started_at=a, ended_at=b) for a, b in spans)


def _status(
    factory: sessionmaker[Session], user_id: int, now: datetime, **kw: int
) -> exposure.ExposureStatus:
    with factory() as s:
        return exposure.status(s, user_id, now, exposure.ExposureLimits(**kw))


def test_beats_join_within_90_seconds(
    session_factory: sessionmaker[Session], team: dict[str, Reviewer]
) -> None:
    f, uid = session_factory, team["ana"].user_id
    s = timedelta(seconds=1)
    _beat(f, uid, NOW)
    assert _intervals(f, uid) == [(NOW, NOW + 30 * s)]
    _beat(f, uid, NOW + 60 * s)
    _beat(f, uid, NOW + 150 * s)  # 90 s after the previous beat: still joins
    _beat(f, uid, NOW + 100 * s)  # a late, out-of-order beat never shortens the interval
    assert _intervals(f, uid) == [(NOW, NOW + 150 * s)]
    _beat(f, uid, NOW + 241 * s)  # 91 s: a new interval
    assert _intervals(f, uid) == [(NOW, NOW + 150 * s), (NOW + 241 * s, NOW + 271 * s)]
    # other users' beats are their own
    _beat(f, team["ben"].user_id, NOW + 242 * s)
    assert len(_intervals(f, uid)) == 2
    assert _intervals(f, team["ben"].user_id) == [(NOW + 242 * s, NOW + 272 * s)]


def test_today_minutes_clipped_at_utc_midnight(
    session_factory: sessionmaker[Session], team: dict[str, Reviewer]
) -> None:
    f, uid = session_factory, team["ana"].user_id
    midnight = datetime(2026, 3, 11, tzinfo=UTC)
    _add(f, uid, (midnight - timedelta(minutes=10), midnight + timedelta(minutes=20)))
    st = _status(f, uid, midnight + timedelta(minutes=40))
    assert st.today_minutes == pytest.approx(20.0)
    assert st.state == "ok" and not st.blocked and st.resume_at is None
    # seen just before midnight, the same interval counts for the old day (up to now)
    before = _status(f, uid, midnight - timedelta(minutes=4))
    assert before.today_minutes == pytest.approx(6.0)
    assert exposure.day_start(midnight + timedelta(hours=5)) == midnight


def test_daily_cap(session_factory: sessionmaker[Session], team: dict[str, Reviewer]) -> None:
    f, uid = session_factory, team["ana"].user_id
    day = datetime(2026, 3, 10, tzinfo=UTC)
    # five 59-minute sessions with 20-minute breaks: 295 minutes, no break ever due
    spans = [
        (day + timedelta(hours=6, minutes=80 * k), day + timedelta(hours=6, minutes=80 * k + 59))
        for k in range(5)
    ]
    _add(f, uid, *spans)
    now = spans[-1][1] + timedelta(minutes=30)
    ok = _status(f, uid, now)
    assert ok.state == "ok" and ok.today_minutes == pytest.approx(295.0)
    assert _status(f, uid, now, daily_cap_minutes=295).state == "cap"
    _add(f, uid, (now, now + timedelta(minutes=5)))
    capped = _status(f, uid, now + timedelta(minutes=6))
    assert capped.state == "cap" and capped.blocked
    assert capped.resume_at == day + timedelta(days=1)
    assert "300 minutes" in capped.message
    assert capped.to_json()["resume_at"] == (day + timedelta(days=1)).isoformat()
    # the next UTC day starts from zero
    assert _status(f, uid, day + timedelta(days=1, minutes=1)).state == "ok"
    # a cap of 0 means no cap
    assert _status(f, uid, now + timedelta(minutes=6), daily_cap_minutes=0).state == "ok"


def test_break_after_an_hour_of_continuous_exposure(
    session_factory: sessionmaker[Session], team: dict[str, Reviewer]
) -> None:
    f, uid = session_factory, team["ana"].user_id
    for minute in range(0, 60):
        _beat(f, uid, NOW + timedelta(minutes=minute))
    last = NOW + timedelta(minutes=59)
    assert len(_intervals(f, uid)) == 1
    st = _status(f, uid, last)
    assert st.state == "ok" and st.stretch_minutes == pytest.approx(59.0)
    _beat(f, uid, NOW + timedelta(minutes=60))
    last = NOW + timedelta(minutes=60)
    due = _status(f, uid, last + timedelta(seconds=20))
    assert due.state == "break" and due.blocked
    assert due.stretch_minutes == pytest.approx(60.0)
    assert due.resume_at == last + timedelta(minutes=10)
    assert _status(f, uid, last + timedelta(minutes=9, seconds=59)).state == "break"
    after = _status(f, uid, last + timedelta(minutes=10))
    assert after.state == "ok" and after.stretch_minutes == 0.0
    # a longer break setting moves the resume time
    longer = _status(f, uid, last + timedelta(minutes=1), break_minutes=15)
    assert longer.resume_at == last + timedelta(minutes=15)


@pytest.mark.parametrize(("gap", "state", "stretch"), [(10, "ok", 20.0), (9, "break", 70.0)])
def test_a_ten_minute_gap_resets_the_stretch(
    session_factory: sessionmaker[Session],
    team: dict[str, Reviewer],
    gap: int,
    state: str,
    stretch: float,
) -> None:
    f, uid = session_factory, team["ana"].user_id
    first_end = NOW + timedelta(minutes=50)
    second = first_end + timedelta(minutes=gap)
    _add(f, uid, (NOW, first_end), (second, second + timedelta(minutes=20)))
    st = _status(f, uid, second + timedelta(minutes=20))
    assert st.state == state
    assert st.stretch_minutes == pytest.approx(stretch)
    assert st.today_minutes == pytest.approx(70.0)


def test_minutes_by_user(session_factory: sessionmaker[Session], team: dict[str, Reviewer]) -> None:
    f = session_factory
    ana, ben = team["ana"].user_id, team["ben"].user_id
    _add(
        f,
        ana,
        (NOW, NOW + timedelta(minutes=30)),
        (NOW + timedelta(hours=2), NOW + timedelta(hours=3)),
    )
    _add(f, ben, (NOW - timedelta(minutes=30), NOW + timedelta(minutes=15)))
    with f() as s:
        got = exposure.minutes_by_user(s, NOW, NOW + timedelta(hours=2, minutes=30))
        assert got == {ana: pytest.approx(60.0), ben: pytest.approx(15.0)}
        assert exposure.minutes_by_user(s, NOW + timedelta(hours=4), NOW + timedelta(hours=5)) == {}


# -- preferences ---------------------------------------------------------------------------------


def test_prefs_defaults_and_parse() -> None:
    d = prefs.ViewPrefs()
    assert (d.blur, d.greyscale, d.greyscale_after_reveal, d.video_speed) == (24, 100, True, 1.0)
    assert prefs.parse({}) == d
    p = prefs.parse({"blur": "8", "greyscale_after_reveal": "off", "video_speed": "1.5"})
    assert p == prefs.ViewPrefs(8, 100, False, 1.5)
    # fields left out keep the base
    assert prefs.parse({"greyscale": 40}, p) == prefs.ViewPrefs(8, 40, False, 1.5)
    assert prefs.parse({"blur": 4, "greyscale": 0}).blur == 4


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"blur": 0}, "blur: want a whole number from 4 to 60"),
        ({"blur": 3}, "blur"),
        ({"blur": 61}, "blur"),
        ({"blur": "lots"}, "blur"),
        ({"blur": None}, "blur"),
        ({"blur": float("inf")}, "blur"),
        ({"greyscale": -1}, "greyscale"),
        ({"greyscale": 101}, "greyscale"),
        ({"video_speed": 3}, "video_speed: want one of"),
        ({"video_speed": "fast"}, "video_speed: want a number"),
        ({"sepia": 10}, "unknown preference"),
    ],
)
def test_prefs_refused(values: dict[str, Any], message: str) -> None:
    with pytest.raises(prefs.PreferenceError, match=message):
        prefs.parse(values)


def test_prefs_save_load_round_trip(
    session_factory: sessionmaker[Session], team: dict[str, Reviewer]
) -> None:
    f, uid = session_factory, team["ana"].user_id
    with f() as s:
        assert prefs.load(s, uid) == prefs.ViewPrefs()
    mine = prefs.ViewPrefs(blur=12, greyscale=50, greyscale_after_reveal=False, video_speed=0.5)
    with f() as s, s.begin():
        prefs.save(s, uid, mine)
    with f() as s:
        assert prefs.load(s, uid) == mine
        assert prefs.load(s, team["ben"].user_id) == prefs.ViewPrefs()
    changed = prefs.parse({"blur": 30}, mine)
    with f() as s, s.begin():
        prefs.save(s, uid, changed)
    with f() as s:
        assert prefs.load(s, uid) == changed
        assert s.scalar(select(func.count()).select_from(UserPreference)) == 1
    # a stored value this version refuses falls back to the defaults
    with f() as s, s.begin():
        s.execute(update(UserPreference).values(prefs={"blur": 0}))
    with f() as s:
        assert prefs.load(s, uid) == prefs.ViewPrefs()


def test_senior_who_graded_as_analyst_does_not_decide_the_escalation(
    session_factory: sessionmaker[Session], team: dict[str, Reviewer]
) -> None:
    f = session_factory
    cid, iid = _one_item_cluster(f)
    _grade(f, cid, team["sen"], CAT_A)  # the senior grades first, as one of the analysts
    assert _grade(f, cid, team["ana"], CAT_B) == [Outcome(iid, "escalated")]
    assert _queue(f, team["sen"]) == []  # not theirs to decide: independence
    with f() as s, s.begin():
        claim(s, cid, team["sen"], NOW)
    with f() as s, s.begin(), pytest.raises(ReviewError, match="nothing in cluster"):
        grade_cluster(s, cid, team["sen"], CAT_A, TAX, NOW)
