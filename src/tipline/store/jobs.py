"""A durable job queue in the service database (the ``jobs`` table), on SQLite and PostgreSQL.

Life of a job::

    enqueue ──> queued ──lease──> running ──complete──> done
                  ^                  │
                  └──fail (backoff)──┤──fail, attempts used up──> dead   (dead letter)
                                     └──fail(PermanentJobError)──> failed

* :meth:`JobQueue.enqueue` adds a job; a ``dedupe_key`` makes it idempotent (a second enqueue
  with the same key returns the first job's id). Pass ``session=`` to enqueue inside the
  caller's transaction, so the job exists exactly when the row that needs it does.
* :meth:`JobQueue.lease` hands one due job to one worker: a single ``UPDATE ... WHERE id =
  (SELECT ... LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING`` on PostgreSQL; on SQLite the same
  single statement runs under SQLite's database write lock, so it is atomic too. Two workers
  never hold the same job. A lease lasts ``lease_seconds``; the worker extends it while the
  handler runs (:meth:`JobQueue.heartbeat`). A worker that dies (SIGKILL, power loss) stops
  extending it, and once it expires the job is leased again: nothing is lost.
* :meth:`JobQueue.fail` puts the job back with exponential backoff and jitter, or moves it to
  ``dead`` once ``max_attempts`` leases have been used (a job whose worker died on its last
  attempt goes to ``dead`` when that lease expires). ``tipline db jobs --status dead`` lists the
  dead letters; ``tipline db requeue`` retries them.

**Handlers must be idempotent.** A job can run more than once: its worker may die after the
handler's effect was committed but before :meth:`JobQueue.complete`. Every handler is written so
that running it again has no second effect: it upserts keyed by natural keys (an item's SHA-256,
a (report, item) pair, the job id), checks state before acting ("already hashed? skip"), and
enqueues follow-up jobs with a ``dedupe_key``. The pipeline's stages follow this rule.

Handlers are plain functions registered by kind with :func:`register_handler`. The layers above
name the modules that register them with :func:`register_handler_modules` (the queue knows no
service); ``tipline worker`` imports those (plus any ``--import`` modules) in each worker
process so the registrations exist there.
"""

from __future__ import annotations

import importlib
import json
import logging
import random
import threading
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import and_, delete, func, or_, select, true, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from tipline.errors import TiplineError
from tipline.store.base import conflict_insert
from tipline.store.base import session_factory as make_session_factory
from tipline.store.registry import handler_modules, register_handler_modules
from tipline.store.tables import Job, utcnow

DEFAULT_LEASE_SECONDS = 300.0
DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_BACKOFF_BASE = 10.0
DEFAULT_BACKOFF_CAP = 3600.0
#: Longest error text kept in ``jobs.last_error``.
MAX_ERROR_CHARS = 4000


class JobError(TiplineError):
    """A job queue problem (unknown handler, bad payload)."""


class PermanentJobError(Exception):
    """Raise from a handler when retrying cannot help (e.g. invalid input): the job goes to
    ``failed`` at once, with this message as its ``last_error``."""


class RetryLaterError(Exception):
    """Raise from a handler when the other side said when to come back (HTTP Retry-After):
    the attempt fails as any other, and the retry waits at least ``seconds`` (at most the
    queue's backoff cap), however short the backoff would have been."""

    def __init__(self, message: str, seconds: float) -> None:
        super().__init__(message)
        self.seconds = max(0.0, float(seconds))


@dataclass(frozen=True, slots=True)
class LeasedJob:
    """A job held by one worker until ``lease_expires_at``."""

    id: int
    kind: str
    payload: dict[str, Any]
    attempts: int
    max_attempts: int
    lease_owner: str
    lease_expires_at: datetime


@dataclass(slots=True)
class JobInfo:
    """One row of the jobs table, for listing."""

    id: int
    kind: str
    status: str
    attempts: int
    max_attempts: int
    run_after: datetime
    last_error: str | None
    dedupe_key: str | None
    created_at: datetime
    updated_at: datetime
    lease_owner: str | None
    payload: Any


@dataclass(slots=True)
class JobContext:
    """What a handler gets: the job, and a session factory on the worker's own engine."""

    job: LeasedJob
    session_factory: sessionmaker[Session]
    queue: JobQueue
    worker_id: str = ""

    @property
    def job_id(self) -> int:
        return self.job.id

    @property
    def kind(self) -> str:
        return self.job.kind

    @property
    def payload(self) -> dict[str, Any]:
        return self.job.payload

    @property
    def attempt(self) -> int:
        """1 on the first run, 2 on the first retry, ..."""
        return self.job.attempts


Handler = Callable[[JobContext], None]
_HANDLERS: dict[str, Handler] = {}
_H = TypeVar("_H", bound=Handler)


def register_handler(kind: str, fn: _H | None = None) -> Any:
    """Register ``fn`` as the handler for jobs of ``kind``; also usable as a decorator::

        @register_handler("hash_item")
        def hash_item(ctx: JobContext) -> None: ...

    Registering the same function again is a no-op; a different one for a taken kind is an
    error (two stages fighting over one kind is a bug).
    """

    def _register(f: _H) -> _H:
        existing = _HANDLERS.get(kind)
        if existing is not None and existing is not f and _qualname(existing) != _qualname(f):
            raise JobError(f"a handler for job kind {kind!r} is already registered")
        _HANDLERS[kind] = f
        return f

    if fn is not None:
        return _register(fn)
    return _register


def _qualname(f: Callable[..., Any]) -> str:
    return f"{getattr(f, '__module__', '')}.{getattr(f, '__qualname__', repr(f))}"


def unregister_handler(kind: str) -> None:
    _HANDLERS.pop(kind, None)


def handlers() -> dict[str, Handler]:
    return dict(_HANDLERS)


def load_handler_modules(extra: Iterable[str] = ()) -> None:
    """Import the registered handler modules (:func:`register_handler_modules`) and ``extra``.

    A module that cannot be imported stops the worker (:class:`JobError`): a worker that ran
    without, say, the pipeline's handlers would leave those jobs queued with nobody to say why.
    """
    for name in dict.fromkeys([*handler_modules(), *extra]):
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise JobError(f"cannot import handler module {name!r}: {err}") from None


def backoff_seconds(
    attempt: int,
    base: float = DEFAULT_BACKOFF_BASE,
    cap: float = DEFAULT_BACKOFF_CAP,
    rng: random.Random | None = None,
) -> float:
    """Delay before retry after failed attempt ``attempt`` (1-based): ``base * 2**(attempt-1)``
    capped at ``cap``, times a random factor in [0.5, 1] so failed jobs do not retry in lockstep.
    """
    exp = min(cap, base * 2.0 ** max(0, min(attempt - 1, 60)))
    r = rng.random() if rng is not None else random.random()
    return exp * (0.5 + 0.5 * r)


def _check_payload(payload: Any) -> dict[str, Any]:
    if payload is None:
        return {}
    if not isinstance(payload, dict):
        raise JobError(f"job payload must be a JSON object, not {type(payload).__name__}")
    try:
        json.dumps(payload, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise JobError(f"job payload is not plain JSON: {err}") from None
    return payload


def _error_text(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}"
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


@dataclass
class JobQueue:
    """The queue over one engine. Safe to share between threads; one per process."""

    engine: Engine
    lease_seconds: float = DEFAULT_LEASE_SECONDS
    backoff_base: float = DEFAULT_BACKOFF_BASE
    backoff_cap: float = DEFAULT_BACKOFF_CAP
    #: The time source (tests pass a fake clock to step over backoff delays).
    clock: Callable[[], datetime] = utcnow
    rng: random.Random = field(default_factory=random.Random)

    # -- producing --------------------------------------------------------------------------

    def enqueue(
        self,
        kind: str,
        payload: dict[str, Any] | None = None,
        *,
        dedupe_key: str | None = None,
        run_after: datetime | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        session: Session | None = None,
    ) -> int:
        """Add a job; returns its id. With ``dedupe_key``, a job already enqueued under that key
        (in any state) is returned instead of adding another. With ``session``, the insert is
        part of that session's transaction (committed by the caller)."""
        if not kind or len(kind) > 64:
            raise JobError("job kind must be 1 to 64 characters")
        if max_attempts < 1:
            raise JobError("max_attempts must be at least 1")
        now = self.clock()
        values = {
            "kind": kind,
            "payload": _check_payload(payload),
            "status": "queued",
            "attempts": 0,
            "max_attempts": max_attempts,
            "run_after": run_after or now,
            "created_at": now,
            "updated_at": now,
            "dedupe_key": dedupe_key,
        }
        if session is not None:
            return self._enqueue(session, values)
        with make_session_factory(self.engine)() as s, s.begin():
            return self._enqueue(s, values)

    def _enqueue(self, s: Session, values: dict[str, Any]) -> int:
        if values["dedupe_key"] is None:
            job = Job(**values)
            s.add(job)
            s.flush()
            return job.id
        stmt = (
            conflict_insert(s, Job)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["dedupe_key"])
        )
        s.execute(stmt)
        job_id = s.scalar(select(Job.id).where(Job.dedupe_key == values["dedupe_key"]))
        assert job_id is not None
        return int(job_id)

    # -- consuming --------------------------------------------------------------------------

    def lease(
        self,
        worker_id: str,
        kinds: Sequence[str] | None = None,
        lease_seconds: float | None = None,
    ) -> LeasedJob | None:
        """Take the next due job of one of ``kinds`` (any kind if None) for ``worker_id``.

        Due means queued with ``run_after`` passed, or running with an expired lease (its worker
        died). Returns None when there is nothing to do right now.
        """
        if kinds is not None and not kinds:
            return None
        now = self.clock()
        expires = now + timedelta(seconds=lease_seconds or self.lease_seconds)
        expired = and_(Job.status == "running", Job.lease_expires_at < now)
        due = or_(and_(Job.status == "queued", Job.run_after <= now), expired)
        kind_ok = Job.kind.in_(list(kinds)) if kinds is not None else true()
        with self.engine.begin() as conn:
            # A job whose worker died on its last allowed attempt is dead, not leased again.
            # (SKIP LOCKED here too: two workers reaping at once never wait on each other.)
            spent = (
                select(Job.id)
                .where(expired, Job.attempts >= Job.max_attempts, kind_ok)
                .with_for_update(skip_locked=True)
            )
            conn.execute(
                update(Job)
                .where(Job.id.in_(spent), expired)
                .values(
                    status="dead",
                    lease_owner=None,
                    lease_expires_at=None,
                    updated_at=now,
                    last_error=func.coalesce(Job.last_error, "")
                    + "\nlease expired on the last attempt (worker died or hung)",
                )
            )
            candidate = (
                select(Job.id)
                .where(due, kind_ok)
                .order_by(Job.run_after, Job.id)
                .limit(1)
                .with_for_update(skip_locked=True)
                .scalar_subquery()
            )
            row = conn.execute(
                update(Job)
                .where(Job.id == candidate, due)
                .values(
                    status="running",
                    lease_owner=worker_id,
                    lease_expires_at=expires,
                    attempts=Job.attempts + 1,
                    updated_at=now,
                )
                .returning(Job.id, Job.kind, Job.payload, Job.attempts, Job.max_attempts)
            ).first()
        if row is None:
            return None
        payload = row[2] if isinstance(row[2], dict) else {}
        return LeasedJob(row[0], row[1], payload, row[3], row[4], worker_id, expires)

    def _owned(self, job: LeasedJob) -> Any:
        return and_(
            Job.id == job.id,
            Job.status == "running",
            Job.lease_owner == job.lease_owner,
            Job.attempts == job.attempts,
        )

    def heartbeat(self, job: LeasedJob, lease_seconds: float | None = None) -> bool:
        """Extend the lease; False if this worker no longer holds the job."""
        now = self.clock()
        expires = now + timedelta(seconds=lease_seconds or self.lease_seconds)
        with self.engine.begin() as conn:
            res = conn.execute(
                update(Job).where(self._owned(job)).values(lease_expires_at=expires, updated_at=now)
            )
        return bool(res.rowcount == 1)

    def complete(self, job: LeasedJob) -> bool:
        """Mark done. False if the lease was lost meanwhile (the job was re-leased elsewhere)."""
        now = self.clock()
        with self.engine.begin() as conn:
            res = conn.execute(
                update(Job)
                .where(self._owned(job))
                .values(
                    status="done",
                    lease_owner=None,
                    lease_expires_at=None,
                    last_error=None,
                    updated_at=now,
                )
            )
        return bool(res.rowcount == 1)

    def fail(
        self,
        job: LeasedJob,
        error: BaseException | str,
        *,
        permanent: bool = False,
        at_least: float = 0.0,
    ) -> str:
        """Record a failed attempt; returns the job's new status (``queued`` for a retry after
        backoff, ``dead`` when attempts are used up, ``failed`` when ``permanent``), or
        ``lost`` if this worker no longer held the job."""
        now = self.clock()
        text = error if isinstance(error, str) else _error_text(error)
        if permanent:
            status, run_after = "failed", now
        elif job.attempts >= job.max_attempts:
            status, run_after = "dead", now
        else:
            delay = backoff_seconds(job.attempts, self.backoff_base, self.backoff_cap, self.rng)
            delay = max(delay, min(at_least, self.backoff_cap))  # a partner's Retry-After
            status, run_after = "queued", now + timedelta(seconds=delay)
        with self.engine.begin() as conn:
            res = conn.execute(
                update(Job)
                .where(self._owned(job))
                .values(
                    status=status,
                    run_after=run_after,
                    lease_owner=None,
                    lease_expires_at=None,
                    last_error=text[:MAX_ERROR_CHARS],
                    updated_at=now,
                )
            )
        return status if res.rowcount == 1 else "lost"

    # -- operating --------------------------------------------------------------------------

    def requeue(self, job_ids: Iterable[int] | None = None, *, status: str = "dead") -> int:
        """Put dead (or ``status``) jobs back in the queue with a fresh set of attempts: all of
        them, or those in ``job_ids``. Returns how many."""
        now = self.clock()
        stmt = (
            update(Job)
            .where(Job.status == status)
            .values(status="queued", attempts=0, run_after=now, updated_at=now)
        )
        if job_ids is not None:
            stmt = stmt.where(Job.id.in_(list(job_ids)))
        with self.engine.begin() as conn:
            return int(conn.execute(stmt).rowcount)

    def purge(self, older_than: timedelta, status: str = "done") -> int:
        """Delete ``done`` (or ``status``) jobs last updated more than ``older_than`` ago."""
        if status in ("queued", "running"):
            raise JobError("only finished jobs (done, failed, dead) can be purged")
        cutoff = self.clock() - older_than
        with self.engine.begin() as conn:
            res = conn.execute(delete(Job).where(Job.status == status, Job.updated_at < cutoff))
        return int(res.rowcount)

    def get(self, job_id: int) -> JobInfo | None:
        found = self.list(job_id=job_id)
        return found[0] if found else None

    def list(
        self,
        status: str | None = None,
        kind: str | None = None,
        *,
        job_id: int | None = None,
        limit: int = 100,
    ) -> list[JobInfo]:
        """Jobs, newest first, optionally of one status/kind."""
        stmt = select(Job).order_by(Job.id.desc()).limit(limit)
        if status is not None:
            stmt = stmt.where(Job.status == status)
        if kind is not None:
            stmt = stmt.where(Job.kind == kind)
        if job_id is not None:
            stmt = stmt.where(Job.id == job_id)
        with make_session_factory(self.engine)() as s:
            return [
                JobInfo(
                    id=j.id,
                    kind=j.kind,
                    status=j.status,
                    attempts=j.attempts,
                    max_attempts=j.max_attempts,
                    run_after=j.run_after,
                    last_error=j.last_error,
                    dedupe_key=j.dedupe_key,
                    created_at=j.created_at,
                    updated_at=j.updated_at,
                    lease_owner=j.lease_owner,
                    payload=j.payload,
                )
                for j in s.scalars(stmt)
            ]

    def counts(self) -> dict[str, int]:
        """Jobs per status (every status present, 0 if none): for metrics and health."""
        out = dict.fromkeys(("queued", "running", "done", "failed", "dead"), 0)
        with self.engine.connect() as conn:
            for status, n in conn.execute(select(Job.status, func.count()).group_by(Job.status)):
                out[status] = int(n)
        return out

    # -- running ----------------------------------------------------------------------------

    def run_one(
        self,
        worker_id: str,
        kinds: Sequence[str] | None = None,
        *,
        session_factory: sessionmaker[Session] | None = None,
        heartbeat: bool = True,
    ) -> LeasedJob | None:
        """Lease one job of a kind that has a handler and run it; returns the job, or None if
        there was nothing to do. A handler exception fails the attempt (retry or dead-letter);
        it never escapes."""
        registered = handlers()
        wanted = [k for k in (kinds if kinds is not None else registered) if k in registered]
        job = self.lease(worker_id, wanted)
        if job is None:
            return None
        ctx = JobContext(job, session_factory or make_session_factory(self.engine), self, worker_id)
        stop = threading.Event()
        beat: threading.Thread | None = None
        if heartbeat:
            beat = threading.Thread(
                target=self._beat, args=(job, stop), name=f"lease-{job.id}", daemon=True
            )
            beat.start()
        try:
            registered[job.kind](ctx)
        except PermanentJobError as err:
            self._stop(stop, beat)
            self.fail(job, err, permanent=True)
        except RetryLaterError as err:
            self._stop(stop, beat)
            self.fail(job, err, at_least=err.seconds)
            _log_failure(job, err)
        except Exception as err:
            self._stop(stop, beat)
            self.fail(job, err)
            _log_failure(job, err)
        else:
            self._stop(stop, beat)
            if not self.complete(job):
                logging.getLogger("tipline.jobs").warning(
                    "job %s (%s) finished after its lease was lost; it may run again "
                    "(handlers are idempotent)",
                    job.id,
                    job.kind,
                )
        finally:
            # KeyboardInterrupt/SystemExit: stop renewing the lease so the job comes back.
            self._stop(stop, beat)
        return job

    @staticmethod
    def _stop(stop: threading.Event, beat: threading.Thread | None) -> None:
        stop.set()
        if beat is not None and beat is not threading.current_thread():
            beat.join()

    def _beat(self, job: LeasedJob, stop: threading.Event) -> None:
        interval = max(0.05, self.lease_seconds / 3)
        while not stop.wait(interval):
            try:
                if not self.heartbeat(job):
                    return
            except Exception:  # a database blip: the next beat tries again
                continue


def _log_failure(job: LeasedJob, err: BaseException) -> None:
    logging.getLogger("tipline.jobs").warning(
        "job %s (%s) attempt %s/%s failed: %s\n%s",
        job.id,
        job.kind,
        job.attempts,
        job.max_attempts,
        _error_text(err),
        "".join(traceback.format_exception(err)[-5:]),
    )


__all__ = [
    "Handler",
    "JobContext",
    "JobError",
    "JobInfo",
    "JobQueue",
    "LeasedJob",
    "PermanentJobError",
    "RetryLaterError",
    "backoff_seconds",
    "handler_modules",
    "handlers",
    "load_handler_modules",
    "register_handler",
    "register_handler_modules",
    "unregister_handler",
]
