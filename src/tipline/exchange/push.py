"""Pushing banks to exchanges that take submissions (docs/exchanges.md, "Pushing"): a Tipline
peer whose share accepts pushes, StopNCII's SubmitHashes where the operator has the rights.

* A *push* (:func:`create_push`, table ``exchange_pushes``) says bank B goes to exchange X.
  :func:`run_push` compares the bank with what was pushed before (``exchange_push_entries``:
  one row per entry, the state pushed and a digest of what was sent) and sends what changed,
  in batches of the type's :attr:`~tipline.exchange.api.ExchangeType.submission_batch`: an
  enabled entry not yet sent as it is now, a disabled or deleted one that was sent (a
  withdrawal). Each batch's rows are committed once the partner took it, so a crash repeats at
  most one batch, and the types' submissions are idempotent per key besides: each
  (entry, state) goes out once. A record the type cannot push at all
  (:meth:`~tipline.exchange.api.ExchangeType.push_refusal`) is ``skipped`` and one the partner
  refuses ``refused``, each with the reason, and neither is tried again until the entry
  changes. One runner at a time: a run claims the push row (:data:`CLAIM_SECONDS`).
* Runs are jobs of kind :data:`JOB_KIND` (``tipline worker``, and ``tipline serve``'s
  in-process workers), one chain per push like the fetcher's (``run_seq``: only the current
  link runs). A partner that is busy or down (429, 5xx, unreachable) fails the attempt and the
  queue retries it with backoff, the partner's ``Retry-After`` a floor on the wait
  (:class:`~tipline.store.jobs.RetryLaterError`); a refusal of the whole request (another
  4xx, missing keys) fails the job at once. Either way the push's status says so.
* A *following* push (``follow``) runs again after its interval, and at once (after
  :data:`KICK_DELAY`) when a final grade is made (:func:`on_final_grade`, composed into the
  grading transaction's sink by the exchange feedback hook): a grade that adds to a followed
  bank reaches the partner without anyone asking. Its chain outlives failures: after a
  refusal, or the last attempt, the next link is scheduled anyway.
* :func:`push_status` is what ``tipline exchange status`` and ``/api/v1/exchanges`` show.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from tipline.exchange.api import (
    ExchangeConfigError,
    ExchangeError,
    ExchangeFetchError,
    ExchangeRecord,
    FetchContext,
    exchange_type,
    is_permanent,
)
from tipline.exchange.store import fetch_settings, named_bank, open_credentials
from tipline.store.base import conflict_insert
from tipline.store.exchange_share_tables import ExchangePushEntryRow, ExchangePushRow
from tipline.store.jobs import (
    JobContext,
    JobQueue,
    PermanentJobError,
    RetryLaterError,
    register_handler,
)
from tipline.store.tables import BankEntryRow, BankRow, ExchangeRow

log = logging.getLogger("tipline.exchange")

JOB_KIND = "exchange_push"
#: Attempts per chain link (the queue's backoff: about 10 s, 20 s, 40 s, ... up to an hour).
MAX_ATTEMPTS = 8
DEFAULT_INTERVAL = 300
MIN_INTERVAL = 10
MAX_INTERVAL = 30 * 86400
#: A run stops after this many seconds and the next link goes on at once.
DEFAULT_BUDGET_SECONDS = 240.0
#: How long a run's claim of its push holds (a runner that died lets go after it).
CLAIM_SECONDS = DEFAULT_BUDGET_SECONDS + 360.0
#: A final grade runs the following pushes this many seconds later (banking comes right after
#: the grade's commit).
KICK_DELAY = 2.0
#: When a run finds its push claimed by another runner, it looks again this much later.
BUSY_DELAY = 5.0
#: Backoff between failed runs that a kick also honours (the partner is not asked again at once).
BACKOFF_BASE = 10.0
BACKOFF_CAP = 3600.0
MAX_ERROR_CHARS = 1000
#: Rows per multi-row upsert of push entries.
_ROWS = 400
PUSH_STATES = ("sent", "withdrawn", "refused", "skipped")

_P = ExchangePushRow
_PE = ExchangePushEntryRow
_E = BankEntryRow


class PushError(ExchangeError):
    """A push that cannot be set up (no such exchange or bank, a type that takes none)."""


@dataclass(frozen=True, slots=True)
class Pending:
    """One entry to push: its key, the record (None: a withdrawal) and the digest of it."""

    entry_id: int
    key: str
    signal_type: str
    signal: str
    record: ExchangeRecord | None
    digest: str


@dataclass(slots=True)
class PushOutcome:
    """What a run did."""

    exchange: str
    bank: str
    sent: int = 0
    withdrawn: int = 0
    refused: int = 0
    skipped: int = 0
    #: what is still to push (the time box stopped the run, or it failed)
    pending: int = 0
    batches: int = 0
    more: bool = False
    succeeded: bool = True
    busy: bool = False
    error: str | None = None
    permanent: bool = False
    retry_after: float | None = None
    refusals: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        parts = [f"pushed {self.sent} record(s)", f"{self.withdrawn} withdrawal(s)"]
        if self.refused:
            parts.append(f"{self.refused} refused")
        if self.skipped:
            parts.append(f"{self.skipped} skipped")
        text = ", ".join(parts) + f" of bank {self.bank} to {self.exchange}"
        if self.pending:
            text += f"; {self.pending} left"
        return text


# -- setting pushes up -------------------------------------------------------------------------


def _exchange(s: Session, name: str) -> ExchangeRow:
    ex = s.scalar(select(ExchangeRow).where(ExchangeRow.name == name))
    if ex is None:
        raise PushError(f"no exchange named {name[:80]!r} (see `tipline exchange list`)")
    return ex


def _bank(s: Session, name: str) -> BankRow:
    return named_bank(s, name, PushError)


def get_push(s: Session, exchange: str, bank: str) -> ExchangePushRow | None:
    return s.scalar(
        select(_P)
        .join(ExchangeRow, ExchangeRow.id == _P.exchange_id)
        .join(BankRow, BankRow.id == _P.bank_id)
        .where(ExchangeRow.name == exchange, BankRow.name == bank)
    )


def create_push(
    s: Session,
    exchange: str,
    bank: str,
    *,
    follow: bool | None = None,
    interval_seconds: int | None = None,
    now: float | None = None,
) -> ExchangePushRow:
    """Push ``bank`` to ``exchange`` (or change how: ``follow``, ``interval_seconds``; None
    keeps what an existing push has). :class:`PushError` when the exchange's type (with its
    configuration) takes no submissions, or the bank is the exchange's own."""
    ex = _exchange(s, exchange)
    typ = exchange_type(ex.api)
    if not typ.takes_submissions(ex.config or {}):
        hint = (
            " (the operator must say it has the rights: --config submit=true)"
            if (typ.accepts_submissions)
            else ""
        )
        raise PushError(f"exchange {ex.name} ({ex.api}) takes no pushed records{hint}")
    row = _bank(s, bank)
    if row.id == ex.bank_id:
        raise PushError(
            f"bank {row.name} is what exchange {ex.name} fetches into: pushing it back to the "
            "partner is an echo"
        )
    if interval_seconds is not None and not MIN_INTERVAL <= interval_seconds <= MAX_INTERVAL:
        raise ExchangeConfigError(f"interval must be {MIN_INTERVAL} seconds to 30 days")
    push = s.scalar(select(_P).where(_P.exchange_id == ex.id, _P.bank_id == row.id))
    if push is None:
        push = _P(
            exchange_id=ex.id,
            bank_id=row.id,
            follow=bool(follow),
            interval_seconds=interval_seconds or DEFAULT_INTERVAL,
            run_seq=0,
            created_at=time.time() if now is None else now,
            consecutive_failures=0,
            pending=0,
        )
        s.add(push)
    else:
        if follow is not None:
            push.follow = follow
        if interval_seconds is not None:
            push.interval_seconds = interval_seconds
    s.flush()
    return push


def remove_push(s: Session, exchange: str, bank: str) -> bool:
    """Stop pushing ``bank`` to ``exchange`` and forget what was pushed (its queued jobs find
    no push and do nothing). False if there was none."""
    push = get_push(s, exchange, bank)
    if push is None:
        return False
    s.delete(push)
    s.flush()
    return True


def _dedupe_key(push_id: int, seq: int) -> str:
    return f"exchange-push:{push_id}:{seq}"


def schedule(
    queue: JobQueue,
    s: Session,
    push: ExchangePushRow,
    delay: float = 0.0,
    *,
    expect_seq: int | None,
) -> int | None:
    """Enqueue the push's next link in ``s``'s transaction (``run_seq`` + 1; older links
    become obsolete), ``delay`` seconds from now but not before ``retry_not_before``. With
    ``expect_seq``, only if the chain is still at that number (else None)."""
    s.refresh(push, with_for_update=True)
    if expect_seq is not None and push.run_seq != expect_seq:
        return None
    push.run_seq = int(push.run_seq or 0) + 1
    wait = max(0.0, delay)
    if push.retry_not_before is not None:
        wait = max(wait, float(push.retry_not_before) - time.time())
    return queue.enqueue(
        JOB_KIND,
        {"push_id": push.id, "seq": push.run_seq},
        dedupe_key=_dedupe_key(push.id, push.run_seq),
        run_after=queue.clock() + timedelta(seconds=wait),
        max_attempts=MAX_ATTEMPTS,
        session=s,
    )


def start_chain(queue: JobQueue, s: Session, push: ExchangePushRow, delay: float = 0.0) -> int:
    """Run the push (soon) as a job; for a following push, the start of its chain."""
    job = schedule(queue, s, push, delay, expect_seq=None)
    assert job is not None
    return job


def _engine(s: Session) -> Engine:
    bind = s.get_bind()
    return bind if isinstance(bind, Engine) else bind.engine


def kick_following(
    session: Session, *, queue: JobQueue | None = None, delay: float = KICK_DELAY
) -> list[int]:
    """Run every following push soon (``delay``), in ``session``'s transaction: a bank that
    may have changed reaches its partners now rather than an interval later. The job ids."""
    pushes = list(session.scalars(select(_P).where(_P.follow.is_(True)).order_by(_P.id)))
    if not pushes:
        return []
    q = queue or JobQueue(_engine(session))
    out = []
    for push in pushes:
        job = schedule(q, session, push, delay, expect_seq=None)
        if job is not None:
            out.append(job)
    return out


def on_final_grade(session: Session, event: str, data: Mapping[str, Any], /) -> list[int]:
    """An event sink for the grading transaction: a final ``grade`` may add to a followed bank
    (banking follows the commit), so the following pushes run :data:`KICK_DELAY` later."""
    if event != "grade" or not isinstance(data, Mapping):
        return []
    return kick_following(session)


# -- what to push ------------------------------------------------------------------------------


def entry_key(entry_id: int) -> str:
    """Our key of a pushed entry (the same as the peer feed's)."""
    return f"e{entry_id}"


def _record(
    bank: str,
    signal_type: str,
    signal: str,
    label: str | None,
    tags: str | None,
    meta: Any,
    added_at: float,
) -> ExchangeRecord:
    """What a partner is told of an entry: signal, label, which list, classification, tags,
    when added. Never notes or sources (they are the hotline's own)."""
    classification = meta.get("classification") if isinstance(meta, dict) else None
    doc = {
        "list": bank,
        "classification": str(classification or label or ""),
        "tags": [t for t in (tags or "").replace(",", " ").split() if t],
        "added_at": int(added_at),
    }
    return ExchangeRecord(signal_type, signal, label or "", doc)


def _digest(record: ExchangeRecord | None) -> str:
    if record is None:
        return "withdrawn"
    doc = [record.signal_type, record.signal, record.label, dict(record.meta)]
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def plan(s: Session, push: ExchangePushRow, bank: str, now: float) -> list[Pending]:
    """What the bank holds that was not pushed as it is now (see the module docstring), in
    entry order. Column reads, no ORM rows."""
    pushed: dict[int, tuple[str, str, str, str]] = {
        int(entry_id): (str(digest), str(state), str(st), str(sig))
        for entry_id, digest, state, st, sig in s.execute(
            select(_PE.entry_id, _PE.digest, _PE.state, _PE.signal_type, _PE.signal).where(
                _PE.push_id == push.id
            )
        )
    }
    out: list[Pending] = []
    present: set[int] = set()
    rows = s.execute(
        select(
            _E.id, _E.signal_type, _E.signal, _E.label, _E.tags, _E.meta, _E.added_at,
            _E.enabled, _E.disabled_until,
        )
        .where(_E.bank_id == push.bank_id)
        .order_by(_E.id)
    )  # fmt: skip
    for entry_id, st, signal, label, tags, meta, added_at, on, until in rows:
        present.add(entry_id)
        enabled = bool(on) and (until is None or until <= now)
        old = pushed.get(entry_id)
        if enabled:
            rec: ExchangeRecord | None = _record(bank, st, signal, label, tags, meta, added_at)
        elif old is not None and old[1] == "sent":
            rec = None  # sent before, disabled now: withdraw it
        else:
            continue  # never taken by the partner: nothing to withdraw
        digest = _digest(rec)
        if old is not None and old[0] == digest:
            continue
        out.append(Pending(entry_id, entry_key(entry_id), st, signal, rec, digest))
    for entry_id, (_, state, st, sig) in sorted(pushed.items()):
        if entry_id not in present and state == "sent":  # deleted from the bank
            out.append(Pending(entry_id, entry_key(entry_id), st, sig, None, _digest(None)))
    return out


# -- running -----------------------------------------------------------------------------------


def _claim(factory: sessionmaker[Session], push_id: int, owner: str, now: float) -> bool:
    with factory() as s, s.begin():
        res = s.execute(
            update(_P)
            .where(
                _P.id == push_id,
                or_(_P.claimed_until.is_(None), _P.claimed_until < now, _P.claimed_by == owner),
            )
            .values(claimed_by=owner, claimed_until=now + CLAIM_SECONDS)
        )
        return bool(getattr(res, "rowcount", 0) == 1)


def _release(factory: sessionmaker[Session], push_id: int, owner: str) -> None:
    with factory() as s, s.begin():
        s.execute(
            update(_P)
            .where(_P.id == push_id, _P.claimed_by == owner)
            .values(claimed_by=None, claimed_until=None)
        )


def _save(s: Session, push_id: int, rows: list[dict[str, Any]]) -> None:
    """Upsert push entry rows (keyed by push and entry)."""
    if not rows:
        return
    for start in range(0, len(rows), _ROWS):
        stmt = conflict_insert(s, _PE).values(rows[start : start + _ROWS])
        s.execute(
            stmt.on_conflict_do_update(
                index_elements=["push_id", "entry_id"],
                set_={
                    "state": stmt.excluded.state,
                    "digest": stmt.excluded.digest,
                    "reason": stmt.excluded.reason,
                    "pushed_at": stmt.excluded.pushed_at,
                    "signal_type": stmt.excluded.signal_type,
                    "signal": stmt.excluded.signal,
                },
            )
        )


def _error_text(err: BaseException) -> str:
    return (" ".join(str(err).split()) or type(err).__name__)[:MAX_ERROR_CHARS]


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"[:200]


def run_push(
    factory: sessionmaker[Session],
    push_id: int,
    *,
    budget_seconds: float = DEFAULT_BUDGET_SECONDS,
    owner: str | None = None,
    clock: Callable[[], float] = time.time,
) -> PushOutcome:
    """Push what changed (see the module docstring); never raises for a partner's answer:
    the outcome (and the push's status) says how it went. ``busy``: another runner holds the
    push."""
    me = owner or default_owner()
    with factory() as s:
        push = s.get(_P, push_id)
        if push is None:
            raise PushError(f"no push {push_id}")
        ex = s.get(ExchangeRow, push.exchange_id)
        bank = s.scalar(select(BankRow.name).where(BankRow.id == push.bank_id))
        if ex is None or bank is None:
            raise PushError(f"push {push_id}: its exchange or bank is gone")
        out = PushOutcome(ex.name, str(bank))
        api, config, name = ex.api, dict(ex.config or {}), ex.name
        creds = open_credentials(s, ex)
    start = clock()
    if not _claim(factory, push_id, me, start):
        out.busy, out.succeeded = True, False
        return out
    try:
        _run(factory, push_id, out, api, FetchContext(name, config, creds, fetch_settings()),
             start, budget_seconds, clock)  # fmt: skip
    finally:
        _release(factory, push_id, me)
    return out


def _run(
    factory: sessionmaker[Session],
    push_id: int,
    out: PushOutcome,
    api: str,
    ctx: FetchContext,
    start: float,
    budget: float,
    clock: Callable[[], float],
) -> None:
    try:
        typ = exchange_type(api)
        with factory() as s:
            push = s.get(_P, push_id)
            assert push is not None
            todo = plan(s, push, out.bank, start)
        size = max(1, int(typ.submission_batch))
        for at in range(0, len(todo), size):
            if at and clock() - start > budget:
                out.more = True
                break
            batch = todo[at : at + size]
            rows: list[dict[str, Any]] = []
            send: dict[str, ExchangeRecord | None] = {}
            reasons: dict[str, str] = {}
            for p in batch:
                why = typ.push_refusal(ctx, p.key, p.record)
                if why:
                    reasons[p.key] = why
                else:
                    send[p.key] = p.record
            refused = dict(typ.submit_records(ctx, send)) if send else {}
            now = clock()
            for p in batch:
                if p.key in reasons:
                    state, reason = "skipped", reasons[p.key][:MAX_ERROR_CHARS]
                    out.skipped += 1
                elif p.key in refused:
                    state, reason = "refused", str(refused[p.key])[:MAX_ERROR_CHARS]
                    out.refused += 1
                    if len(out.refusals) < 20:
                        out.refusals[p.key] = reason
                elif p.record is None:
                    state, reason = "withdrawn", None
                    out.withdrawn += 1
                else:
                    state, reason = "sent", None
                    out.sent += 1
                rows.append(
                    {
                        "push_id": push_id,
                        "entry_id": p.entry_id,
                        "signal_type": p.signal_type,
                        "signal": p.signal[:512],
                        "state": state,
                        "digest": p.digest,
                        "reason": reason,
                        "pushed_at": now,
                    }
                )
            with factory() as s, s.begin():
                _save(s, push_id, rows)
            out.batches += 1
        done = out.sent + out.withdrawn + out.refused + out.skipped
        out.pending = len(todo) - done
    except Exception as err:
        if not isinstance(err, ExchangeError):
            log.exception("exchange %s: push of bank %s failed", out.exchange, out.bank)
        out.succeeded = False
        out.error = _error_text(err)
        out.permanent = is_permanent(err)
        wait = getattr(err, "retry_after", None)
        out.retry_after = float(wait) if isinstance(wait, int | float) and wait > 0 else None
        with factory() as s:
            push = s.get(_P, push_id)
            if push is not None:
                out.pending = len(plan(s, push, out.bank, clock()))
    _settle(factory, push_id, out, clock())


def _settle(factory: sessionmaker[Session], push_id: int, out: PushOutcome, now: float) -> None:
    with factory() as s, s.begin():
        push = s.get(_P, push_id)
        if push is None:
            return
        push.last_run_ts = now
        push.pending = out.pending
        if out.succeeded:
            push.last_success_ts = now
            push.last_error = None
            push.consecutive_failures = 0
            push.retry_not_before = None
            return
        push.last_error = out.error
        failures = int(push.consecutive_failures or 0) + 1
        push.consecutive_failures = failures
        backoff = min(BACKOFF_CAP, BACKOFF_BASE * 2.0 ** min(failures - 1, 20))
        wait = 0.0 if out.permanent else backoff
        if out.retry_after is not None:
            wait = max(wait, min(out.retry_after, BACKOFF_CAP))
        push.retry_not_before = now + wait if wait else None


def push_job(ctx: JobContext) -> None:
    """One link of a push's chain (payload ``{"push_id", "seq"}``): push, then schedule the
    next link of a following push."""
    push_id, seq = ctx.payload.get("push_id"), ctx.payload.get("seq")
    if not isinstance(push_id, int) or not isinstance(seq, int):
        raise PermanentJobError(f"bad exchange_push payload: {ctx.payload!r:.200}")
    with ctx.session_factory() as s:
        push = s.get(_P, push_id)
        if push is None or push.run_seq != seq:
            return  # removed, or an obsolete link (a kick or a restart replaced it)
    out = run_push(ctx.session_factory, push_id, owner=f"job:{ctx.job_id}")

    def next_link(delay: float) -> None:
        with ctx.session_factory() as s, s.begin():
            push = s.get(_P, push_id)
            if push is not None and (push.follow or out.more or out.busy):
                schedule(ctx.queue, s, push, delay, expect_seq=seq)

    if out.busy:
        next_link(BUSY_DELAY)
        return
    if out.succeeded:
        with ctx.session_factory() as s:
            push = s.get(_P, push_id)
            interval = float(push.interval_seconds) if push is not None else 0.0
        next_link(0.0 if out.more else interval)
        return
    text = f"push of bank {out.bank} to {out.exchange}: {out.error}"
    if out.permanent:
        next_link(_interval(ctx, push_id))
        log.warning("exchange %s: %s", out.exchange, text)
        raise PermanentJobError(text)
    if ctx.attempt >= ctx.job.max_attempts:  # the chain outlives the last attempt
        next_link(max(_interval(ctx, push_id), BACKOFF_CAP))
    if out.retry_after is not None:  # the partner said when (Retry-After)
        raise RetryLaterError(text, out.retry_after)
    raise ExchangeFetchError(text)


def _interval(ctx: JobContext, push_id: int) -> float:
    with ctx.session_factory() as s:
        push = s.get(_P, push_id)
        return float(push.interval_seconds) if push is not None else float(DEFAULT_INTERVAL)


register_handler(JOB_KIND, push_job)


# -- status ------------------------------------------------------------------------------------


def push_status(session: Session, exchange: str) -> list[dict[str, Any]]:
    """Every push to ``exchange``: bank, following, interval, the last run (when, whether it
    succeeded, the error, failures in a row), what is left and what was pushed per state, and
    the latest refusals (key and reason)."""
    out = []
    pushes = session.execute(
        select(_P, BankRow.name)
        .join(ExchangeRow, ExchangeRow.id == _P.exchange_id)
        .join(BankRow, BankRow.id == _P.bank_id)
        .where(ExchangeRow.name == exchange)
        .order_by(BankRow.name)
    ).all()
    for push, bank in pushes:
        counts = dict.fromkeys(PUSH_STATES, 0)
        for state, n in session.execute(
            select(_PE.state, func.count()).where(_PE.push_id == push.id).group_by(_PE.state)
        ):
            counts[str(state)] = int(n)
        problems = [
            {"key": entry_key(int(e)), "state": str(st), "reason": str(r or "")[:300]}
            for e, st, r in session.execute(
                select(_PE.entry_id, _PE.state, _PE.reason)
                .where(_PE.push_id == push.id, _PE.state.in_(["refused", "skipped"]))
                .order_by(_PE.pushed_at.desc(), _PE.id.desc())
                .limit(5)
            )
        ]
        ok = None if push.last_run_ts is None else push.consecutive_failures == 0
        out.append(
            {
                "bank": bank,
                "follow": bool(push.follow),
                "interval_seconds": int(push.interval_seconds),
                "last_push_ts": _ts(push.last_run_ts),
                "last_success_ts": _ts(push.last_success_ts),
                "last_push_succeeded": ok,
                "last_error": push.last_error,
                "consecutive_failures": int(push.consecutive_failures or 0),
                "retry_not_before": _ts(push.retry_not_before),
                "running": push.claimed_until is not None and push.claimed_until > time.time(),
                "pending": int(push.pending or 0),
                "counts": counts,
                "problems": problems,
            }
        )
    return out


def _ts(value: float | None) -> int | None:
    return None if value is None else int(value)


def list_pushes(session: Session) -> list[tuple[ExchangePushRow, str, str]]:
    """Every push with its exchange's and bank's names (oldest first)."""
    rows = session.execute(
        select(_P, ExchangeRow.name, BankRow.name)
        .join(ExchangeRow, ExchangeRow.id == _P.exchange_id)
        .join(BankRow, BankRow.id == _P.bank_id)
        .order_by(_P.id)
    ).all()
    return [(p, str(e), str(b)) for p, e, b in rows]


__all__ = [
    "JOB_KIND",
    "PUSH_STATES",
    "Pending",
    "PushError",
    "PushOutcome",
    "create_push",
    "entry_key",
    "get_push",
    "kick_following",
    "list_pushes",
    "on_final_grade",
    "plan",
    "push_job",
    "push_status",
    "remove_push",
    "run_push",
    "schedule",
    "start_chain",
]
