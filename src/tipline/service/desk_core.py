"""What the review desk's pages (:mod:`tipline.service.desk`), its JSON API
(:mod:`tipline.service.review_api`) and its media routes (:mod:`tipline.service.media`) share:
the desk's configuration, the signed-in reviewer, the queue filters of a request, and claiming
and grading (one implementation for the pages and the API). No routes here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import Request
from sqlalchemy.orm import Session, sessionmaker

from tipline.accounts import Principal
from tipline.actions import webhooks
from tipline.audit import log as audit
from tipline.exchange import feedback
from tipline.review import exposure as exp
from tipline.review import grading, queue
from tipline.review.queue import QueueFilters, Reviewer, ReviewError
from tipline.review.taxonomy import Taxonomy
from tipline.service.auth import client_ip
from tipline.service.errors import HttpError
from tipline.store.tables import REPORT_SOURCES
from tipline.triage.priority import TriageWeights

log = logging.getLogger("tipline.desk")


@dataclass(frozen=True, slots=True)
class DeskConfig:
    """The desk's settings, built once at start-up (``AppContext.desk``)."""

    taxonomy: Taxonomy
    limits: exp.ExposureLimits
    policy: grading.ReviewPolicy
    weights: TriageWeights
    claim_minutes: int
    sla_hours: int


def config(request: Request) -> DeskConfig:
    """The app's :class:`DeskConfig`, built at start-up by ``create_app``."""
    cfg = getattr(getattr(request.app.state, "ctx", None), "desk", None)
    if not isinstance(cfg, DeskConfig):
        raise HttpError(503, "the review desk is not configured on this server")
    return cfg


def session_factory(request: Request) -> sessionmaker[Session]:
    factory: sessionmaker[Session] = request.app.state.ctx.session_factory
    return factory


def now() -> datetime:
    return datetime.now(UTC)


def reviewer(p: Principal) -> Reviewer:
    if p.user_id is None:
        raise ReviewError("sign in as a person to review")
    return Reviewer(p.user_id, p.username, p.role)


def age(hours: float) -> str:
    if hours < 1:
        return f"{hours * 60:.0f} min"
    if hours < 48:
        return f"{hours:.1f} h"
    return f"{hours / 24:.1f} d"


def _float(v: str | None) -> float | None:
    try:
        return float(v) if v not in (None, "") else None
    except ValueError:
        return None


def queue_filters(request: Request, escalations: bool) -> QueueFilters:
    q = request.query_params
    ev = q.get("evidence") or None
    src = q.get("source") or None
    status = "escalated" if escalations else (q.get("status") or None)
    return QueueFilters(
        bank=q.get("bank") or None,
        evidence=ev if ev in queue.EVIDENCE else None,
        source=src if src in REPORT_SOURCES else None,
        min_age_hours=_float(q.get("min_age_hours")),
        max_age_hours=_float(q.get("max_age_hours")),
        status=status if status in ("open", "in_review", "escalated") else None,
        overdue_only=q.get("overdue") == "1",
    )


def take_claim(request: Request, p: Principal, cluster_id: int) -> tuple[datetime, list[int]]:
    """Claim (or renew) for the pages and the API: (expiry, items waiting for the caller).
    Raises ReviewError when someone else holds it."""
    rv = reviewer(p)
    with session_factory(request)() as s, s.begin():
        c = queue.claim(s, cluster_id, rv, now(), config(request).claim_minutes)
        audit.record(s, p.actor, "review.claim", "cluster", str(cluster_id), client_ip(request), {})
        return c.expires_at, [i.id for i in queue.waiting_items(s, cluster_id, rv)]


def announce_grade(s: Session, event: str, data: dict[str, Any], /) -> None:
    """The grading's event sink: a final grade is a ``grade`` webhook and, where the item
    matched partners' entries, feedback queued to those exchanges (same transaction)."""
    webhooks.emit(s, event, data)
    feedback.on_final_grade(s, event, data)


def grade_and_bank(
    request: Request,
    p: Principal,
    cluster_id: int,
    values: Mapping[str, Any],
    item_ids: list[int] | None = None,
) -> list[grading.Outcome]:
    """Grade (pages and API), then bank what became final. Raises ReviewError or
    TaxonomyError; the grade stands even when banking must wait (next grading or restart)."""
    cfg = config(request)
    with session_factory(request)() as s, s.begin():
        outcomes = grading.grade_cluster(
            s,
            cluster_id,
            reviewer(p),
            values,
            cfg.taxonomy,
            now(),
            policy=cfg.policy,
            item_ids=item_ids,
            ip=client_ip(request),
            sink=announce_grade,
        )
    if any(o.state == "final" for o in outcomes):
        try:
            grading.bank_final_grades(
                session_factory(request), request.app.state.ctx.matcher, cfg.policy
            )
        except Exception:
            log.exception("could not add final grades to the banks yet")
    return outcomes
