"""The removal scheduler: durable jobs that move every open case along (docs/removal.md,
"Scheduler"). No cron: a ``removal.tick`` job re-enqueues itself every ``tick_seconds``.

A tick (:func:`tick`) does, each in its own short transaction:

1. **holds**: releases holds whose expiry has passed (:func:`cases.expire_holds`);
2. **intake**: opens a case for every confirmed item whose report has a URL and that no
   earlier tick looked at (``case_intake`` remembers each (report, item) and the outcome, so a
   hostile URL is recorded once with its error and never retried);
3. **due cases**: enqueues one ``removal.step`` job per case whose next action is due and that
   is neither held nor closed (``ix_cases_due``), keyed by the case's ``version`` so a case is
   never stepped twice for the same state;
4. **notices**: groups the notice rounds cases have decided (``pending_notice``) into one
   notice per contact (:func:`group_notices`) and enqueues a ``removal.send`` job for every
   queued notice whose time has come.

A step (:func:`step_case`) does the network work outside any transaction and then commits
its result only if the case's ``version`` is still the one it read (a second worker, or a
worker that lost its lease and was killed, changes nothing twice):

* ``prepare``: attribute the location (:func:`tipline.removal.hosting.attribute`), capture
  the evidence (:func:`tipline.removal.evidence.capture`) and decide the first notice round;
  a location already gone counts as a miss (removed after ``misses_to_remove``).
* ``recheck``: re-check against the evidence (:func:`tipline.removal.recheck.recheck`);
  still online -> re-attribute (a different country or AS: ``moved``, stop) and decide the
  next round on the ladder; a miss is counted; ``misses_to_remove`` in a row -> removed.
* ``watch`` (after a removal): the same re-check until ``watch_until``; content back ->
  ``reappeared`` and the ladder starts again.
* ``notice``: re-attribute and decide a round now (a reappearance, a released hold).

The escalation ladder is data (:class:`LadderStep`, :func:`load_ladder`, TOML or JSON): each
step names a ladder role and when it starts (a number of notices sent, or hours since the
first notice). Routing: a location hosted in the hotline's own country goes up the ladder; one
hosted abroad is referred to the partner hotline of the hosting country (an ICCAM-shaped
record) and, with ``notify_host_abroad``, notified directly too.
"""

from __future__ import annotations

import json
import logging
import threading
import tomllib
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.orm import Session, defer, sessionmaker

from tipline.errors import TiplineError
from tipline.net.fetch import FetchSettings
from tipline.removal import cases as case_sm
from tipline.removal import evidence as evidence_mod
from tipline.removal import notices as notices_mod
from tipline.removal import recheck as recheck_mod
from tipline.removal.hosting import Attribution, RdapClient, Resolver, attribute
from tipline.removal.locations import InvalidLocationError
from tipline.removal.providers import ROLES, ProviderContact
from tipline.store.base import conflict_insert
from tipline.store.case_tables import CaseIntake, CaseRow, NoticeRow
from tipline.store.jobs import JobContext, JobQueue, register_handler
from tipline.store.media import Keyring
from tipline.store.tables import Item, Job, Report, ReportItem

__all__ = [
    "DEFAULT_LADDER",
    "GROUP_KIND",
    "JOB_KINDS",
    "SEND_KIND",
    "STEP_KIND",
    "TICK_KIND",
    "LadderError",
    "LadderStep",
    "RemovalConfig",
    "TickResult",
    "configure",
    "current_config",
    "dispatch_notices",
    "enqueue_due",
    "ensure_started",
    "group_notices",
    "intake",
    "ladder_step_for",
    "load_ladder",
    "parse_ladder",
    "start",
    "step_case",
    "tick",
]

log = logging.getLogger("tipline.removal")

TICK_KIND = "removal.tick"
STEP_KIND = "removal.step"
GROUP_KIND = "removal.group"
SEND_KIND = "removal.send"
#: Every job kind of the removal loop (``tipline serve``'s in-process workers run them all).
JOB_KINDS = (TICK_KIND, STEP_KIND, GROUP_KIND, SEND_KIND)
CONFIRMED_ITEM_STATUSES = ("confirmed", "auto_confirmed")
MAX_LADDER_STEPS = 32


class LadderError(TiplineError):
    """An escalation ladder file that cannot be used (every bad step named)."""


@dataclass(frozen=True)
class LadderStep:
    """One rung: notices go to ``role``'s contact once ``after_notices`` notices were sent or
    ``after_hours`` passed since the first notice (either; step 0 always applies)."""

    role: str
    after_notices: int | None = None
    after_hours: float | None = None


#: host every 24 h; site owner from the 3rd notice, registrar from the 6th (SCARt's 1x/3x/6x),
#: the upstream AS from the 9th; the hotline of the hosting country after two weeks online and
#: the police after four.
DEFAULT_LADDER: tuple[LadderStep, ...] = (
    LadderStep("host", 0),
    LadderStep("site_owner", 3),
    LadderStep("registrar", 6),
    LadderStep("upstream", 9),
    LadderStep("hotline", after_hours=14 * 24),
    LadderStep("police", after_hours=28 * 24),
)


def parse_ladder(data: Any, source: str = "ladder") -> tuple[LadderStep, ...]:
    """A ladder from parsed TOML/JSON: ``{"step": [{"role", "after_notices", "after_hours"}]}``
    (``steps`` works too, or a bare list)."""
    raw = data
    if isinstance(data, Mapping):
        raw = data.get("step", data.get("steps"))
    if not isinstance(raw, list) or not raw:
        raise LadderError(f"{source}: want a non-empty list of [[step]] tables")
    if len(raw) > MAX_LADDER_STEPS:
        raise LadderError(f"{source}: at most {MAX_LADDER_STEPS} steps")
    problems: list[str] = []
    steps: list[LadderStep] = []
    for i, entry in enumerate(raw, 1):
        where = f"{source} step {i}"
        if not isinstance(entry, Mapping):
            problems.append(f"{where}: not a table")
            continue
        unknown = set(entry) - {"role", "after_notices", "after_hours"}
        if unknown:
            problems.append(f"{where}: unknown field(s) {', '.join(sorted(map(str, unknown)))}")
        role = entry.get("role")
        if role not in ROLES:
            problems.append(f"{where}: role {role!r} is not one of {', '.join(ROLES)}")
        notices = entry.get("after_notices")
        hours = entry.get("after_hours")
        if notices is not None and (
            isinstance(notices, bool) or not isinstance(notices, int) or notices < 0
        ):
            problems.append(f"{where}: after_notices must be a whole number >= 0")
        if hours is not None and (
            isinstance(hours, bool) or not isinstance(hours, int | float) or not 0 <= hours < 1e6
        ):
            problems.append(f"{where}: after_hours must be a number of hours >= 0")
        if i > 1 and notices is None and hours is None:
            problems.append(f"{where}: needs after_notices or after_hours")
        if not problems:
            steps.append(
                LadderStep(
                    str(role),
                    int(notices) if notices is not None else (0 if i == 1 else None),
                    float(hours) if hours is not None else None,
                )
            )
    if problems:
        raise LadderError("; ".join(problems[:10]))
    return tuple(steps)


def load_ladder(path: Path) -> tuple[LadderStep, ...]:
    """A ladder from a ``.toml`` or ``.json`` file."""
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (OSError, UnicodeError, ValueError) as err:
        raise LadderError(f"cannot read ladder {path}: {err}") from None
    return parse_ladder(data, str(path))


def ladder_step_for(
    ladder: Sequence[LadderStep],
    notices_sent: int,
    first_notice_at: datetime | None,
    now: datetime,
) -> int:
    """The highest step whose trigger is met (0 when none: the first step)."""
    hours = (now - first_notice_at).total_seconds() / 3600 if first_notice_at else 0.0
    best = 0
    for i, step in enumerate(ladder):
        if i == 0:
            continue
        if (step.after_notices is not None and notices_sent >= step.after_notices) or (
            step.after_hours is not None
            and first_notice_at is not None
            and hours >= step.after_hours
        ):
            best = i
    return best


@dataclass(frozen=True)
class RemovalConfig:
    """What the scheduler needs (built from the service settings by ``service.wiring``)."""

    evidence_dir: Path
    keyring: Callable[[], Keyring]
    hotline_country: str = ""
    notify_host_abroad: bool = False
    recheck_hours: float = 24.0
    misses_to_remove: int = 3
    watch_days: float = 30.0
    ladder: tuple[LadderStep, ...] = DEFAULT_LADDER
    notices: notices_mod.NoticeSettings = field(default_factory=notices_mod.NoticeSettings)
    fetch_settings: FetchSettings = field(default_factory=FetchSettings)
    #: host -> addresses for attribution (None: the fetcher's resolver)
    resolver: Resolver | None = None
    webhook_settings: FetchSettings | None = None
    tick_seconds: float = 300.0
    #: cases stepped / confirmed items taken in per tick
    batch: int = 1000
    #: how long a decided notice round waits for others to the same contact
    group_delay_seconds: float = 60.0
    evidence_limits: evidence_mod.CaptureLimits | None = None
    #: the opt-in online abuse-contact lookup (``[removal] rdap``); None: never asked
    rdap: RdapClient | None = None

    @property
    def recheck_every(self) -> timedelta:
        return timedelta(hours=self.recheck_hours)


_config: RemovalConfig | None = None
_config_lock = threading.Lock()


def configure(config: RemovalConfig | None) -> None:
    """Set this process's removal configuration (``tipline serve``/``worker`` do it from the
    settings; tests set their own)."""
    global _config
    with _config_lock:
        _config = config


def current_config() -> RemovalConfig:
    with _config_lock:
        if _config is None:
            raise TiplineError(
                "the removal scheduler is not configured in this process "
                "(service.wiring.configure_process does it)"
            )
        return _config


def _aware(at: datetime | None) -> datetime | None:
    if at is None:
        return None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


# -- intake -----------------------------------------------------------------------------------


def intake(session: Session, now: datetime, *, limit: int = 1000) -> list[int]:
    """Open cases for confirmed items with a URL not looked at yet; returns new case ids.

    The URL is the one the item was fetched from, else every URL of its report."""
    seen = exists().where(
        and_(CaseIntake.report_id == ReportItem.report_id, CaseIntake.item_id == ReportItem.item_id)
    )
    rows = session.execute(
        select(
            ReportItem.report_id,
            ReportItem.item_id,
            ReportItem.source_url,
            Report.urls,
            Report.submitted_at,
            Item.grade,
            Item.graded_at,
        )
        .join(Item, Item.id == ReportItem.item_id)
        .join(Report, Report.id == ReportItem.report_id)
        .where(Item.status.in_(CONFIRMED_ITEM_STATUSES), ~seen)
        .order_by(ReportItem.report_id, ReportItem.item_id)
        .limit(limit)
    ).all()
    opened: list[int] = []
    for report_id, item_id, source_url, report_urls, submitted_at, grade, graded_at in rows:
        urls = (
            [source_url] if source_url else [u for u in (report_urls or []) if isinstance(u, str)]
        )
        first_case: int | None = None
        errors: list[str] = []
        for url in urls[:100]:
            try:
                with session.begin_nested():
                    case, created = case_sm.open_case(
                        session,
                        url,
                        report_id=report_id,
                        item_id=item_id,
                        grade=grade,
                        reported_at=_aware(submitted_at),
                        confirmed_at=_aware(graded_at) or now,
                        now=now,
                    )
            except InvalidLocationError as err:
                errors.append(f"{str(url)[:200]!r}: {err}")
                continue
            first_case = first_case or case.id
            if created:
                opened.append(case.id)
        session.add(
            CaseIntake(
                report_id=report_id,
                item_id=item_id,
                url=(source_url or (urls[0] if urls else ""))[:8192],
                case_id=first_case,
                error="; ".join(errors)[:4000] if errors else (None if urls else "no URL"),
                at=now,
            )
        )
    session.flush()
    return opened


# -- the tick ---------------------------------------------------------------------------------


@dataclass
class TickResult:
    released: list[int] = field(default_factory=list)
    opened: list[int] = field(default_factory=list)
    stepped: int = 0
    notices: list[int] = field(default_factory=list)
    dispatched: int = 0


def enqueue_due(session: Session, queue: JobQueue, now: datetime, *, limit: int) -> int:
    """A ``removal.step`` job per due case (deduplicated by case and version)."""
    due = case_sm.due_cases(session, now, limit=limit)
    values = [
        {
            "kind": STEP_KIND,
            "payload": {"case_id": case_id, "version": version},
            "status": "queued",
            "attempts": 0,
            "max_attempts": 5,
            "run_after": now,
            "created_at": now,
            "updated_at": now,
            "dedupe_key": f"removal-step:{case_id}:{version}",
        }
        for case_id, version, _action in due
    ]
    # INSERT ... ON CONFLICT DO NOTHING on the dedupe key: the rows JobQueue.enqueue(dedupe_key=)
    # writes, without a round trip per job (100,000 due cases in one pass)
    if values:
        stmt = conflict_insert(session, Job.__table__).on_conflict_do_nothing(
            index_elements=["dedupe_key"]
        )
        session.connection().execute(stmt, values)  # executemany: compiled once, batched
    return len(due)


def dispatch_notices(session: Session, queue: JobQueue, now: datetime, *, limit: int = 5000) -> int:
    """A ``removal.send`` job per queued notice whose time has come."""
    rows = session.execute(
        select(NoticeRow.id, NoticeRow.attempts, NoticeRow.send_after)
        .where(NoticeRow.state == "queued", NoticeRow.send_after <= now)
        .order_by(NoticeRow.send_after, NoticeRow.id)
        .limit(limit)
    ).all()
    for notice_id, attempts, send_after in rows:
        _enqueue_send(queue, session, notice_id, attempts, _aware(send_after) or now)
    return len(rows)


def _enqueue_send(
    queue: JobQueue, session: Session | None, notice_id: int, attempts: int, at: datetime
) -> None:
    queue.enqueue(
        SEND_KIND,
        {"notice_id": notice_id},
        dedupe_key=f"removal-send:{notice_id}:{attempts}:{int(at.timestamp())}",
        run_after=at,
        max_attempts=10,
        session=session,
    )


def tick(
    factory: sessionmaker[Session],
    queue: JobQueue,
    config: RemovalConfig,
    now: datetime | None = None,
) -> TickResult:
    """One scheduler pass (see the module docstring)."""
    at = _aware(now) or queue.clock()
    out = TickResult()
    with factory() as s, s.begin():
        out.released = case_sm.expire_holds(s, at)
    with factory() as s, s.begin():
        out.opened = intake(s, at, limit=config.batch)
    with factory() as s, s.begin():
        out.stepped = enqueue_due(s, queue, at, limit=config.batch)
    out.notices = group_notices(factory, config, at)
    with factory() as s, s.begin():
        out.dispatched = dispatch_notices(s, queue, at)
    return out


def start(
    queue: JobQueue, config: RemovalConfig | None = None, *, session: Session | None = None
) -> int:
    """Start the tick chain (idempotent: at most one tick per ``tick_seconds`` bucket)."""
    cfg = config or current_config()
    now = queue.clock()
    return _enqueue_tick(queue, cfg, now, session)


def _enqueue_tick(
    queue: JobQueue,
    config: RemovalConfig,
    at: datetime,
    session: Session | None,
    restart_of: int | None = None,
) -> int:
    bucket = int(at.timestamp() // max(1.0, config.tick_seconds))
    key = f"removal-tick:{bucket}"
    if restart_of is not None:  # the bucket's own key is spent by a tick that died
        key += f":restart-after:{restart_of}"
    return queue.enqueue(
        TICK_KIND,
        {"bucket": bucket},
        dedupe_key=key,
        run_after=at,
        max_attempts=3,
        session=session,
    )


# -- notice rounds ------------------------------------------------------------------------------


def _contacts(attribution: Mapping[str, Any] | None) -> dict[str, ProviderContact]:
    out: dict[str, ProviderContact] = {}
    for role, raw in ((attribution or {}).get("contacts") or {}).items():
        if isinstance(raw, Mapping):
            try:
                out[str(role)] = ProviderContact(**dict(raw))
            except TypeError:
                continue
    return out


def _round(case: CaseRow, config: RemovalConfig, now: datetime) -> dict[str, Any]:
    """The recipients of the case's next notice round (``pending_notice``)."""
    first = _aware(case.first_notice_at)
    step = ladder_step_for(config.ladder, case.notice_count or 0, first, now)
    contacts = _contacts(case.attribution)
    recipients: list[dict[str, Any]] = []
    missing: list[str] = []

    def add(role: str, kind: str) -> None:
        contact = contacts.get(role)
        if contact is None:
            missing.append(role)
        recipients.append(
            {
                "role": role,
                "kind": kind,
                "contact": contact.to_json() if contact is not None else None,
                # no contact: grouped per provider (else per case) for one manual notice
                "key": contact.key
                if contact is not None
                else f"none:{role}:{case.provider_key or case.id}",
            }
        )

    role = config.ladder[step].role
    if case.routing == "abroad" and role in ("host", "site_owner", "registrar", "upstream"):
        add("hotline", "referral")
        if config.notify_host_abroad:
            add(role, "notice")
    else:
        # a rung without a contact falls back to the nearest lower rung that has one
        chosen = role
        if role not in contacts:
            lower = [config.ladder[i].role for i in range(step - 1, -1, -1)]
            chosen = next((r for r in lower if r in contacts), role)
            if chosen != role:
                missing.append(role)
        add(chosen, "referral" if chosen == "hotline" else "notice")
    return {
        "step": step,
        "recipients": recipients,
        "missing": sorted(set(missing)),
        "decided_at": now.isoformat(),
    }


def group_notices(
    factory: sessionmaker[Session], config: RemovalConfig, now: datetime
) -> list[int]:
    """One notice per (contact, role, kind, ladder step) for every decided round; returns the
    new notice ids. Held and closed cases wait (a hold may come after the decision)."""
    created: list[int] = []
    with factory() as s, s.begin():
        pending = list(
            s.scalars(
                select(CaseRow)
                .where(
                    CaseRow.pending_notice.is_not(None), CaseRow.state.not_in(("held", "closed"))
                )
                .order_by(CaseRow.id)
                # the big JSON columns are not needed to group (loaded if a referral needs them)
                .options(defer(CaseRow.attribution), defer(CaseRow.grade))
                .with_for_update()
            )
        )
        groups: dict[tuple[str, str, str, int], list[tuple[CaseRow, dict[str, Any], bool]]]
        groups = defaultdict(list)
        for case in pending:
            plan = case.pending_notice or {}
            step = int(plan.get("step", 0))
            for i, r in enumerate(plan.get("recipients") or []):
                groups[(str(r["key"]), str(r["role"]), str(r["kind"]), step)].append(
                    (case, r, i == 0)
                )
        for (key, role, kind, step), members in sorted(groups.items()):
            raw = members[0][1].get("contact")
            contact = ProviderContact(**raw) if isinstance(raw, Mapping) else None
            primary = [c for c, _, first in members if first]
            secondary = [c for c, _, first in members if not first]
            for batch, counted in ((primary, True), (secondary, False)):
                if not batch:
                    continue
                notice = notices_mod.queue_notice(
                    s,
                    contact=contact,
                    role=role,
                    cases=batch,
                    ladder_step=step,
                    settings=config.notices,
                    kind=kind,
                    contact_key=key,
                    now=now,
                    counted=counted,
                )
                created.append(notice.id)
        for case in pending:
            plan = case.pending_notice or {}
            if plan.get("missing"):
                case_sm.set_flag(
                    case,
                    "no contact for "
                    + ", ".join(str(m) for m in plan["missing"])
                    + " (provider directory): notice sent to the nearest rung or left for "
                    "manual sending",
                )
            case.pending_notice = None
    return created


# -- stepping one case ------------------------------------------------------------------------


def _attribute(
    config: RemovalConfig, factory: sessionmaker[Session], url: str, now: datetime
) -> Attribution:
    with factory() as s:
        return attribute(
            s,
            url,
            resolver=config.resolver,
            fetch_settings=config.fetch_settings,
            now=now,
            rdap=config.rdap,
        )


def _provider(attribution: Attribution) -> tuple[str | None, str | None]:
    host = attribution.contacts.get("host")
    if host is not None:
        return host.key, host.organisation
    if attribution.asn is not None:
        return f"asn:{attribution.asn}", attribution.as_name
    return None, None


def _apply_attribution(
    s: Session, case: CaseRow, attribution: Attribution, config: RemovalConfig, now: datetime
) -> bool:
    """Store the attribution; True if the case moved (and so stops)."""
    key, name = _provider(attribution)
    moved = case_sm.record_attribution(
        s,
        case,
        attribution.to_json(),
        hotline_country=config.hotline_country or None,
        provider_key=key,
        provider_name=name,
        now=now,
    )
    if not moved and attribution.error:
        case_sm.set_flag(case, f"attribution: {attribution.error}")
    return moved


def reattribution(
    config: RemovalConfig, factory: sessionmaker[Session], now: datetime
) -> notices_mod.Reattribution:
    """How a delivery re-attributes its cases just before the notice goes out (a case whose
    host moved meanwhile is withdrawn and re-routed instead of notified to the old host)."""
    return notices_mod.Reattribution(
        attribute=lambda url: _attribute(config, factory, url, now),
        apply=lambda s, case, attribution: _apply_attribution(s, case, attribution, config, now),
    )


def _decide_round(case: CaseRow, config: RemovalConfig, now: datetime) -> None:
    case.pending_notice = _round(case, config, now)
    interval = config.recheck_every
    host = _contacts(case.attribution).get("host")
    if host is not None and host.recheck_hours:
        interval = timedelta(hours=host.recheck_hours)
    case_sm.schedule(case, "recheck", now + interval)


def _evidence_usable(bundle: evidence_mod.EvidenceBundle) -> str | None:
    """Why the capture cannot back a notice (None: it can)."""
    if bundle.error:
        return bundle.error
    if bundle.http_status is None or bundle.http_status >= 400:
        return f"HTTP {bundle.http_status}"
    if not bundle.media and not bundle.page_sha256:
        return "nothing captured"
    return None


def _load_for_commit(s: Session, case_id: int, version: int) -> CaseRow | None:
    case = s.get(CaseRow, case_id, with_for_update=True)
    if case is None or case.version != version or case.state in ("held", "closed"):
        return None
    return case


def step_case(
    factory: sessionmaker[Session],
    case_id: int,
    version: int,
    config: RemovalConfig,
    now: datetime,
) -> str:
    """Do the case's due action (see the module docstring); returns what happened
    (``"stale"`` when the case changed since the step was enqueued)."""
    with factory() as s:
        case = s.get(CaseRow, case_id)
        if case is None or case.version != version or case.state in ("held", "closed"):
            return "stale"
        action, url, state = case.next_action, case.url, case.state
        evidence_sha = case.evidence_sha256
        held_media: frozenset[str] = frozenset()
        if case.item_id is not None:
            item = s.get(Item, case.item_id)
            held_media = frozenset({item.sha256}) if item is not None else frozenset()
    if action == "prepare":
        return _prepare(factory, case_id, version, url, held_media, config, now)
    if action in ("recheck", "watch"):
        if evidence_sha is None:
            return _prepare(factory, case_id, version, url, held_media, config, now)
        return _recheck(factory, case_id, version, url, evidence_sha, config, now)
    if action == "notice":
        attribution = _attribute(config, factory, url, now)
        with factory() as s, s.begin():
            case = _load_for_commit(s, case_id, version)
            if case is None:
                return "stale"
            if _apply_attribution(s, case, attribution, config, now):
                return "moved"
            _decide_round(case, config, now)
        _enqueue_group(factory, config, now)
        return "notice"
    log.warning("case %s: unknown next action %r in state %s", case_id, action, state)
    return "stale"


def _enqueue_group(factory: sessionmaker[Session], config: RemovalConfig, now: datetime) -> None:
    queue = _queue_for(factory)
    if queue is None:
        return
    at = now + timedelta(seconds=max(0.0, config.group_delay_seconds))
    bucket = int(at.timestamp() // max(1.0, config.group_delay_seconds or 1.0))
    key = f"removal-group:{bucket}"
    # A later round always lands before the bucket's group job runs, except with no delay
    # (one-second buckets): then the bucket's job may have run already and would swallow this
    # round until the next tick, so a new job follows it under a key naming it.
    for _ in range(8):
        job_id = queue.enqueue(GROUP_KIND, {}, dedupe_key=key, run_after=at)
        found = queue.list(job_id=job_id, limit=1)
        if not found or found[0].status == "queued":
            return
        key = f"removal-group:{bucket}:after:{job_id}"


#: the queue of the job being run in this thread (set by the handlers), for follow-up jobs
_local = threading.local()


def _queue_for(factory: sessionmaker[Session]) -> JobQueue | None:
    return getattr(_local, "queue", None)


def _prepare(
    factory: sessionmaker[Session],
    case_id: int,
    version: int,
    url: str,
    held_media: frozenset[str],
    config: RemovalConfig,
    now: datetime,
) -> str:
    attribution = _attribute(config, factory, url, now)
    bundle = evidence_mod.capture(
        url,
        fetch_settings=config.fetch_settings,
        attribution=attribution.to_json(),
        store_dir=config.evidence_dir,
        keyring=config.keyring(),
        held_media_sha256=held_media,
        now=now,
        limits=config.evidence_limits,
    )
    unusable = _evidence_usable(bundle)
    with factory() as s, s.begin():
        case = _load_for_commit(s, case_id, version)
        if case is None:
            return "stale"
        if _apply_attribution(s, case, attribution, config, now):
            return "moved"
        if unusable is not None:
            miss = case_sm.RecheckLike("miss", f"evidence capture: {unusable}", bundle.http_status)
            effect = case_sm.record_recheck(
                s,
                case,
                miss,
                misses_to_remove=config.misses_to_remove,
                watch_for=timedelta(days=config.watch_days),
                recheck_every=config.recheck_every,
                now=now,
            )
            if effect == "miss":
                case_sm.schedule(case, "prepare", now + config.recheck_every)
            return f"capture-{effect}"
        if case.state == "evidence_captured":
            case.evidence_sha256 = bundle.sha256
        else:
            case_sm.record_evidence(
                s, case, bundle.sha256, now=now, details={"media": len(bundle.media)}
            )
        case.consecutive_misses = 0
        case.last_checked_at = now
        _decide_round(case, config, now)
    _enqueue_group(factory, config, now)
    return "evidence"


def _recheck(
    factory: sessionmaker[Session],
    case_id: int,
    version: int,
    url: str,
    evidence_sha: str,
    config: RemovalConfig,
    now: datetime,
) -> str:
    bundle = evidence_mod.load(
        evidence_sha, store_dir=config.evidence_dir, keyring=config.keyring()
    )
    result = recheck_mod.recheck(
        url, bundle, fetch_settings=config.fetch_settings, now=now, limits=config.evidence_limits
    )
    attribution = _attribute(config, factory, url, now) if result.outcome == "online" else None
    with factory() as s, s.begin():
        case = _load_for_commit(s, case_id, version)
        if case is None:
            return "stale"
        was_removed = case.state == "removed"
        effect = case_sm.record_recheck(
            s,
            case,
            result,
            misses_to_remove=config.misses_to_remove,
            watch_for=timedelta(days=config.watch_days),
            recheck_every=config.recheck_every,
            now=now,
        )
        if effect in ("online", "reappeared") and attribution is not None:
            # re-attributed just before the notice: a host that moved stops the case
            if _apply_attribution(s, case, attribution, config, now):
                return "moved"
            _decide_round(case, config, now)
            if was_removed:
                effect = "reappeared"
        else:
            return effect
    _enqueue_group(factory, config, now)
    return effect


# -- job handlers -----------------------------------------------------------------------------


def _with_queue(ctx: JobContext, fn: Callable[[], Any]) -> Any:
    _local.queue = ctx.queue
    try:
        return fn()
    finally:
        _local.queue = None


def tick_job(ctx: JobContext) -> None:
    config = current_config()
    now = ctx.queue.clock()
    _with_queue(ctx, lambda: tick(ctx.session_factory, ctx.queue, config, now))
    _enqueue_tick(ctx.queue, config, now + timedelta(seconds=config.tick_seconds), None)


def step_job(ctx: JobContext) -> None:
    config = current_config()
    case_id = int(ctx.payload.get("case_id", 0))
    version = int(ctx.payload.get("version", -1))
    now = ctx.queue.clock()
    _with_queue(ctx, lambda: step_case(ctx.session_factory, case_id, version, config, now))


def group_job(ctx: JobContext) -> None:
    config = current_config()
    now = ctx.queue.clock()
    group_notices(ctx.session_factory, config, now)
    with ctx.session_factory() as s, s.begin():
        dispatch_notices(s, ctx.queue, now)


def send_job(ctx: JobContext) -> None:
    config = current_config()
    notice_id = int(ctx.payload.get("notice_id", 0))
    now = ctx.queue.clock()
    outcome = notices_mod.deliver(
        ctx.session_factory,
        notice_id,
        config.notices,
        now=now,
        webhook_settings=config.webhook_settings,
        reattribution=reattribution(config, ctx.session_factory, now),
    )
    if outcome in ("deferred", "retry"):
        with ctx.session_factory() as s:
            notice = s.get(NoticeRow, notice_id)
            if notice is not None and notice.state == "queued":
                _enqueue_send(
                    ctx.queue, None, notice.id, notice.attempts, _aware(notice.send_after) or now
                )


register_handler(TICK_KIND, tick_job)
register_handler(STEP_KIND, step_job)
register_handler(GROUP_KIND, group_job)
register_handler(SEND_KIND, send_job)


def with_overrides(config: RemovalConfig, **changes: Any) -> RemovalConfig:
    """A copy of ``config`` with ``changes`` (tests, the CLI)."""
    return replace(config, **changes)


def ensure_started(queue: JobQueue, config: RemovalConfig | None = None) -> int | None:
    """Start the tick chain unless a tick is already queued or running (``tipline serve`` and
    ``tipline worker`` call this at start-up). Returns the new tick's job id, or None when the
    chain was already there. Safe across restarts and several processes starting at once: the
    check and the insert are one transaction under a lock (a PostgreSQL advisory lock; on
    SQLite the database's write lock, taken first), and :func:`start` is deduplicated too."""
    from sqlalchemy import text, update

    from tipline.store.base import session_factory

    cfg = config or current_config()
    with session_factory(queue.engine)() as s, s.begin():
        if s.get_bind().dialect.name == "postgresql":
            s.execute(text("SELECT pg_advisory_xact_lock(hashtext('tipline.removal.tick'))"))
        else:  # an UPDATE takes SQLite's write lock: a second starter waits here
            s.execute(update(Job).where(Job.id == -1).values(updated_at=Job.updated_at))
        alive = s.scalar(
            select(Job.id)
            .where(Job.kind == TICK_KIND, Job.status.in_(("queued", "running")))
            .limit(1)
        )
        if alive is not None:
            return None
        # A chain that died in this tick's time bucket (its tick dead or cancelled) holds the
        # bucket's dedupe key: restart under a key naming the dead tick, not never.
        now = queue.clock()
        bucket = int(now.timestamp() // max(1.0, cfg.tick_seconds))
        spent = s.scalar(
            select(func.max(Job.id)).where(
                Job.kind == TICK_KIND,
                or_(
                    Job.dedupe_key == f"removal-tick:{bucket}",
                    Job.dedupe_key.like(f"removal-tick:{bucket}:%"),
                ),
            )
        )
        return _enqueue_tick(queue, cfg, now, s, restart_of=spent)
