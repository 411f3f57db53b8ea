"""Feedback to exchanges: analysts' final grades of content that matched a partner's entry,
sent back to the partner as opinions (docs/exchanges.md, "Feedback").

* :func:`enqueue_for_grade` runs inside the grading transaction (the service composes it into
  the grade's event sink; review and exchange are peers and never import each other). For
  every match of the graded item in a bank that an exchange fetches into, whose type
  :attr:`~tipline.exchange.api.ExchangeType.accepts_opinions` and whose configuration does not
  turn ``feedback`` off, it adds one ``exchange_feedback`` row per (exchange, partner record,
  category) and one ``exchange_feedback`` job for it: ``positive`` for an actionable
  (confirmed) grade, ``negative`` for a not-actionable one (not illegal), with the grade's
  label words as reasons (:func:`reasons_of`: NCMEC's negatives take its own reasons). The
  same opinion on the same entry again (a second grade, another item matching the same
  entry) adds nothing: one row, one job, one delivery.
* :func:`send_job` (job kind :data:`JOB_KIND`, run by ``tipline worker``) sends one opinion
  through the exchange type's :meth:`~tipline.exchange.api.ExchangeType.submit_opinion`.
  A partner that is busy or down (429, 5xx, a timeout) fails the attempt and the job queue
  retries it with backoff; a refusal (another 4xx, a record the type cannot name, bad
  reasons) marks the row ``failed`` with the error at once; the last attempt's failure does
  too. A row already ``sent`` is not sent again (a job that runs twice after a crash); the
  types' deliveries are idempotent besides.
* :func:`feedback_counts` says how many opinions of an exchange are queued, sent, failed
  (``/api/v1/exchanges`` shows them).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from tipline.exchange import push  # registers the push jobs' handler with the feedback's
from tipline.exchange.api import (
    ExchangeError,
    FetchContext,
    Opinion,
    OpinionCategory,
    exchange_type,
    is_permanent,
)
from tipline.exchange.store import fetch_settings, open_credentials
from tipline.store.base import conflict_insert
from tipline.store.exchange_feedback_tables import FEEDBACK_STATES, ExchangeFeedbackRow
from tipline.store.jobs import (
    JobContext,
    JobQueue,
    PermanentJobError,
    RetryLaterError,
    register_handler,
)
from tipline.store.tables import BankEntryRow, BankRow, ExchangeRecordRow, ExchangeRow, Item

log = logging.getLogger("tipline.exchange")

JOB_KIND = "exchange_feedback"
#: Attempts per opinion (the queue's backoff: about 10 s, 20 s, 40 s, ... up to an hour).
MAX_ATTEMPTS = 8
#: Longest error text kept on a row.
MAX_ERROR_CHARS = 1000
#: Most reasons sent with one opinion.
MAX_REASONS = 20

_F = ExchangeFeedbackRow


def feedback_enabled(config: Mapping[str, Any] | None) -> bool:
    """Whether an exchange's configuration lets grades become feedback (on unless its
    ``feedback`` setting is false)."""
    value = (config or {}).get("feedback", True)
    return value is not False and str(value).strip().lower() not in ("0", "false", "no", "off")


def category_of(grade: Mapping[str, Any]) -> OpinionCategory:
    """``positive`` for an actionable (confirmed) grade, ``negative`` for a not-actionable one."""
    return "positive" if grade.get("actionable") is True else "negative"


def reasons_of(
    grade: Mapping[str, Any],
    category: OpinionCategory,
    config: Mapping[str, Any] | None,
    *,
    partner_reasons: bool = False,
) -> tuple[str, ...]:
    """The reasons sent with an opinion: the words of the grade's label
    (``uk_category:not_illegal``), Tipline's own codes, which a Tipline peer reads. A type
    whose partner has its own list of negative reasons (``partner_reasons``: it has a
    ``negative_reasons`` setting, as ``ncmec``) sends a negative opinion with the exchange's
    ``negative_reasons`` instead (comma-separated names or ids; empty: none, and the type
    picks the partner's only reason where there is one)."""
    if category == "negative" and partner_reasons:
        configured = str((config or {}).get("negative_reasons") or "")
        words = [r.strip() for r in configured.split(",")]
    else:
        words = str(grade.get("label") or "").split()
    return tuple(dict.fromkeys(w[:200] for w in words if w))[:MAX_REASONS]


def _matched_entries(item: Item) -> dict[str, set[int]]:
    """Bank name -> ids of the entries the item matched (hostile shapes skipped)."""
    out: dict[str, set[int]] = {}
    for m in item.matches or []:
        if not isinstance(m, dict):
            continue
        bank, entry = m.get("bank"), m.get("entry_id")
        if isinstance(bank, str) and isinstance(entry, int) and not isinstance(entry, bool):
            out.setdefault(bank, set()).add(entry)
    return out


def _record_of(
    s: Session, ex: ExchangeRow, entry: BankEntryRow
) -> tuple[str, dict[str, Any]] | None:
    """The partner's record key of a fetched entry and its partner metadata; None if the entry
    did not come from this exchange."""
    meta = entry.meta if isinstance(entry.meta, dict) else {}
    exchange = meta.get("exchange")
    if not isinstance(exchange, dict):
        exchange = {}
    partner = exchange.get("partner")
    partner_meta = dict(partner) if isinstance(partner, dict) else {}
    key = exchange.get("key")
    if exchange.get("name") == ex.name and isinstance(key, str) and key:
        return key, partner_meta
    found = s.scalar(
        select(ExchangeRecordRow.key).where(
            ExchangeRecordRow.exchange_id == ex.id, ExchangeRecordRow.entry_id == entry.id
        )
    )
    return (str(found), partner_meta) if found else None


def _insert_row(s: Session, values: dict[str, Any]) -> int:
    """Insert a feedback row unless its (exchange, record, category) has one; the row's id."""
    s.execute(
        conflict_insert(s, _F)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["exchange_id", "record_key", "category"])
    )
    row_id = s.scalar(
        select(_F.id).where(
            _F.exchange_id == values["exchange_id"],
            _F.record_key == values["record_key"],
            _F.category == values["category"],
        )
    )
    assert row_id is not None
    return int(row_id)


def _engine(s: Session) -> Engine:
    bind = s.get_bind()
    return bind if isinstance(bind, Engine) else bind.engine


def enqueue_for_grade(
    session: Session,
    item_id: int,
    grade: Mapping[str, Any],
    *,
    queue: JobQueue | None = None,
) -> list[int]:
    """Queue the feedback a final grade of item ``item_id`` makes (see the module docstring),
    in ``session``'s transaction. Returns the ids of the feedback rows it touched (new or
    already there); none when the item matched no bank of an exchange that takes opinions."""
    item = session.get(Item, item_id)
    if item is None or not isinstance(grade, Mapping):
        return []
    wanted = _matched_entries(item)
    if not wanted:
        return []
    exchanges = session.execute(
        select(ExchangeRow, BankRow.name)
        .join(BankRow, BankRow.id == ExchangeRow.bank_id)
        .where(BankRow.name.in_(sorted(wanted)))
        .order_by(ExchangeRow.id)
    ).all()
    category = category_of(grade)
    q = queue or JobQueue(_engine(session))
    now = time.time()
    ids: list[int] = []
    for ex, bank in exchanges:
        try:
            typ = exchange_type(ex.api)
        except ExchangeError as err:  # a plugin type that is gone: no feedback, say why
            log.warning("exchange %s: no feedback queued: %s", ex.name, err)
            continue
        if not typ.accepts_opinions or not feedback_enabled(ex.config):
            continue
        own = any(f.name == "negative_reasons" for f in typ.config_fields)
        reasons = list(reasons_of(grade, category, ex.config, partner_reasons=own))
        entries = session.scalars(
            select(BankEntryRow)
            .where(BankEntryRow.id.in_(sorted(wanted[bank])), BankEntryRow.bank_id == ex.bank_id)
            .order_by(BankEntryRow.id)
        ).all()
        for entry in entries:
            found = _record_of(session, ex, entry)
            if found is None:
                continue  # added to the exchange's bank by hand: not the partner's
            key, partner_meta = found
            row_id = _insert_row(
                session,
                {
                    "exchange_id": ex.id,
                    "record_key": key[:600],
                    "entry_id": entry.id,
                    "signal_type": entry.signal_type,
                    "signal": entry.signal,
                    "category": category,
                    "reasons": reasons,
                    "meta": partner_meta,
                    "item_id": item.id,
                    "state": "queued",
                    "attempts": 0,
                    "last_error": None,
                    "created_at": now,
                    "updated_at": now,
                    "sent_at": None,
                },
            )
            q.enqueue(
                JOB_KIND,
                {"feedback_id": row_id},
                dedupe_key=f"exchange-feedback:{row_id}",
                max_attempts=MAX_ATTEMPTS,
                session=session,
            )
            ids.append(row_id)
    return ids


def on_final_grade(session: Session, event: str, data: Mapping[str, Any], /) -> list[int]:
    """An event sink (``review.grading.EventSink``) for the grading transaction: a ``grade``
    event queues its feedback, and runs the following pushes soon
    (:func:`tipline.exchange.push.on_final_grade`); other events are not ours."""
    if event != "grade" or not isinstance(data, Mapping):
        return []
    push.on_final_grade(session, event, data)  # a grade may add to a bank pushed to partners
    item_id, grade = data.get("item_id"), data.get("grade")
    if not isinstance(item_id, int) or not isinstance(grade, Mapping):
        return []
    return enqueue_for_grade(session, item_id, grade)


# -- sending ---------------------------------------------------------------------------------


def _error_text(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text[:MAX_ERROR_CHARS]


def _settle(
    ctx: JobContext, row_id: int, state: str, error: str | None, *, sent: bool = False
) -> None:
    with ctx.session_factory() as s, s.begin():
        row = s.get(_F, row_id, with_for_update=True)
        if row is None:
            return
        now = time.time()
        row.state = state
        row.attempts = int(row.attempts or 0) + 1
        row.last_error = error
        row.updated_at = now
        if sent:
            row.sent_at = now


def send_job(ctx: JobContext) -> None:
    """Send one feedback row's opinion (job :data:`JOB_KIND`, payload ``{"feedback_id"}``)."""
    row_id = ctx.payload.get("feedback_id")
    if not isinstance(row_id, int) or isinstance(row_id, bool):
        raise PermanentJobError(f"bad exchange_feedback payload: {ctx.payload!r:.200}")
    with ctx.session_factory() as s:
        row = s.get(_F, row_id)
        if row is None or row.state == "sent":
            return  # its exchange was removed, or a second run after a crash
        ex = s.get(ExchangeRow, row.exchange_id)
        if ex is None:
            return
        opinion = Opinion(
            record_key=row.record_key,
            signal_type=row.signal_type,
            signal=row.signal,
            category="positive" if row.category == "positive" else "negative",
            reasons=tuple(str(r) for r in (row.reasons or [])),
            meta=dict(row.meta or {}),
        )
        try:
            typ = exchange_type(ex.api)
            fctx = FetchContext(ex.name, ex.config or {}, open_credentials(s, ex), fetch_settings())
        except ExchangeError as err:
            _settle(ctx, row_id, "failed", _error_text(err))
            raise PermanentJobError(_error_text(err)) from None
    try:
        typ.submit_opinion(fctx, opinion)
    except Exception as err:
        text = _error_text(err)
        if is_permanent(err):
            _settle(ctx, row_id, "failed", text)
            log.warning("exchange %s: feedback %s refused: %s", ex.name, row_id, text)
            raise PermanentJobError(text) from None
        last = ctx.attempt >= ctx.job.max_attempts
        _settle(ctx, row_id, "failed" if last else "queued", text)
        wait = getattr(err, "retry_after", None)
        if isinstance(wait, int | float) and wait > 0:  # the partner said when (Retry-After)
            raise RetryLaterError(text, float(wait)) from err
        raise
    _settle(ctx, row_id, "sent", None, sent=True)


register_handler(JOB_KIND, send_job)


def feedback_counts(session: Session, name: str) -> dict[str, int]:
    """How many opinions exchange ``name`` has queued, sent and failed (every state, 0 if
    none; all 0 for an exchange that is not there)."""
    out = dict.fromkeys(FEEDBACK_STATES, 0)
    rows = session.execute(
        select(_F.state, func.count())
        .join(ExchangeRow, ExchangeRow.id == _F.exchange_id)
        .where(ExchangeRow.name == name)
        .group_by(_F.state)
    )
    for state, n in rows:
        out[str(state)] = int(n)
    return out


def list_feedback(session: Session, name: str, states: Iterable[str] | None = None) -> list[Any]:
    """An exchange's feedback rows (oldest first), optionally of some states only."""
    stmt = (
        select(_F)
        .join(ExchangeRow, ExchangeRow.id == _F.exchange_id)
        .where(ExchangeRow.name == name)
        .order_by(_F.id)
    )
    if states is not None:
        stmt = stmt.where(_F.state.in_(list(states)))
    return list(session.scalars(stmt))


__all__ = [
    "JOB_KIND",
    "MAX_ATTEMPTS",
    "category_of",
    "enqueue_for_grade",
    "feedback_counts",
    "feedback_enabled",
    "list_feedback",
    "on_final_grade",
    "reasons_of",
    "send_job",
]
