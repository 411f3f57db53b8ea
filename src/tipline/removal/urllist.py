"""The URL list's lifecycle (issue 13, item 6): the list holds exactly the locations still
online and confirmed.

A URL is on the list while at least one of its cases is in a *listed* state
(:data:`LISTED_STATES`: confirmed, held, evidence captured, notified, escalated, moved to
another host, reappeared). A removal or closing takes it off at the next export; a
reappearance puts it back. Everything is computed from the case transitions with their
timestamps, so the list at any past time, and so a ``since`` delta (URLs added and removed
between two times), come from the same rows as the current list.

The pure core (:class:`LocationHistory`, :func:`listed_at`, :func:`current_list`,
:func:`delta`) knows nothing of the database; :func:`load_histories` reads the case tables
and :func:`export_urls` writes one export with its audit event. ``tipline export urls`` and
``GET /api/v1/exports/urls`` use the case-state list once cases exist; an install without
cases keeps the list of final-graded items' URLs (:func:`tipline.actions.exports.write_urls`)
(docs/removal.md, "URL list").
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from tipline.actions import exports, webhooks
from tipline.audit import log as audit
from tipline.errors import TiplineError
from tipline.store.case_tables import CaseEvent, CaseRow

#: Case states in which the URL is still online and confirmed.
LISTED_STATES = frozenset(
    {"confirmed", "held", "evidence_captured", "notified", "escalated", "moved", "reappeared"}
)
#: States that take it off the list.
UNLISTED_STATES = frozenset({"removed", "closed"})


@dataclass(frozen=True)
class Transition:
    at: datetime
    state: str


@dataclass(frozen=True)
class LocationHistory:
    """One case's URL and its state transitions (any order; sorted by time when used)."""

    url: str
    transitions: tuple[Transition, ...]
    case_id: int | str | None = None


@dataclass(frozen=True)
class Delta:
    """What changed on the list between ``since`` and ``until``."""

    since: datetime
    until: datetime
    added: tuple[str, ...]
    removed: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "since": _iso(self.since),
            "until": _iso(self.until),
            "added": list(self.added),
            "removed": list(self.removed),
        }


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _aware(at: datetime, what: str) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{what}: naive timestamp (no time zone): {at.isoformat()}")
    return at


def state_at(history: LocationHistory, at: datetime) -> str | None:
    """The case's state at ``at`` (the last transition at or before it); None before the
    first transition."""
    _aware(at, "at")
    state = None
    # A stable sort: transitions at the same instant keep their recorded order.
    for t in sorted(history.transitions, key=lambda t: t.at):
        if t.at > at:
            break
        state = t.state
    return state


def listed_at(history: LocationHistory, at: datetime) -> bool:
    return state_at(history, at) in LISTED_STATES


def _listable(url: str) -> bool:
    """A URL that can go on a one-per-line list (no line breaks, not empty, not absurd)."""
    return bool(url) and len(url) <= 8192 and not any(c in url for c in "\r\n\x00")


def _listed_urls(histories: Iterable[LocationHistory], at: datetime) -> set[str]:
    return {h.url.strip() for h in histories if _listable(h.url.strip()) and listed_at(h, at)}


def current_list(histories: Iterable[LocationHistory], now: datetime) -> list[str]:
    """The URL list at ``now``: distinct URLs with a case in a listed state, sorted."""
    return sorted(_listed_urls(histories, _aware(now, "now")))


def delta(histories: Sequence[LocationHistory], since: datetime, now: datetime) -> Delta:
    """URLs added to and removed from the list between ``since`` and ``now``. A URL that
    left and came back in between (removed, then reappeared) is in neither."""
    _aware(since, "since")
    _aware(now, "now")
    if since > now:
        raise ValueError("since is after now")
    then = _listed_urls(histories, since)
    current = _listed_urls(histories, now)
    return Delta(since, now, tuple(sorted(current - then)), tuple(sorted(then - current)))


def write_list(out: TextIO, urls: Iterable[str]) -> int:
    """One URL per line; returns how many."""
    n = 0
    for url in urls:
        out.write(url + "\n")
        n += 1
    return n


def write_delta(out: TextIO, d: Delta, fmt: str = "text") -> int:
    """``text``: ``+<TAB>URL`` / ``-<TAB>URL`` lines (added first); ``json``: one object.
    Returns the number of changed URLs."""
    if fmt == "json":
        out.write(json.dumps(d.to_json(), ensure_ascii=False, sort_keys=True) + "\n")
    elif fmt == "text":
        for url in d.added:
            out.write(f"+\t{url}\n")
        for url in d.removed:
            out.write(f"-\t{url}\n")
    else:
        raise ValueError(f"unknown delta format {fmt!r} (text or json)")
    return len(d.added) + len(d.removed)


def group_transitions(
    rows: Iterable[tuple[Any, str, str, datetime]],
) -> list[LocationHistory]:
    """Histories from ``(case_id, url, state, at)`` rows (a join of cases and transitions)."""
    urls: dict[Any, str] = {}
    steps: dict[Any, list[Transition]] = defaultdict(list)
    for case_id, url, state, at in rows:
        urls[case_id] = url
        if at.tzinfo is None:  # SQLite hands back naive UTC where a column lost its zone
            at = at.replace(tzinfo=UTC)
        steps[case_id].append(Transition(at, state))
    return [LocationHistory(urls[c], tuple(steps[c]), c) for c in urls]


# -- the database side ------------------------------------------------------------------------

Source = Literal["auto", "cases", "items"]
SOURCES: tuple[Source, ...] = ("auto", "cases", "items")
ListFormat = Literal["text", "json"]
#: Case events read per query (keyset paging on the event id).
HISTORY_BATCH = 20_000


class UrlListError(TiplineError):
    """An URL list export that cannot be made (one line: why)."""


def has_cases(session: Session) -> bool:
    """Does this install have removal cases (then the URL list comes from them)?"""
    return bool(session.scalar(select(exists().where(CaseRow.id.is_not(None)))))


def load_histories(session: Session, *, batch: int = HISTORY_BATCH) -> list[LocationHistory]:
    """Every case's URL and state transitions, from ``case_events`` joined to ``cases``
    (events that are not state changes, such as a hold extended, repeat the state and change
    nothing). Read in batches by event id, so no cursor stays open."""
    rows: list[tuple[Any, str, str, datetime]] = []
    last = 0
    while True:
        page = session.execute(
            select(CaseEvent.id, CaseEvent.case_id, CaseRow.url, CaseEvent.to_state, CaseEvent.at)
            .join(CaseRow, CaseRow.id == CaseEvent.case_id)
            .where(CaseEvent.id > last)
            .order_by(CaseEvent.id)
            .limit(batch)
        ).all()
        rows.extend((case_id, url, state, at) for _, case_id, url, state, at in page)
        if len(page) < batch:
            break
        last = page[-1][0]
    return group_transitions(rows)


def listed_now(session: Session) -> list[str]:
    """The list as it stands (the cases' current states; the same as :func:`current_list`
    over :func:`load_histories` at the present, without reading the histories)."""
    urls = session.scalars(select(CaseRow.url).where(CaseRow.state.in_(sorted(LISTED_STATES))))
    return sorted({u.strip() for u in urls if _listable(u.strip())})


@dataclass(frozen=True)
class UrlExport:
    """What :func:`export_urls` wrote."""

    source: str  #: "cases" or "items"
    count: int  #: URLs on the list, or changed URLs of a delta
    delta: Delta | None = None


def _record(
    session: Session, result: UrlExport, *, actor: str, ip: str | None, details: dict[str, Any]
) -> None:
    """The ``export.urls`` audit event and the ``export`` webhook event (as
    :func:`tipline.actions.exports.record_export` does, with the list's source and delta)."""
    details = {"count": result.count, "rows": result.count, "source": result.source, **details}
    webhooks.emit(session, "export", {"kind": "urls", **details})
    audit.record(session, actor, "export.urls", "export", "urls", ip, details)


def export_urls(
    session: Session,
    out: TextIO,
    *,
    actor: str,
    ip: str | None = None,
    now: datetime | None = None,
    since: datetime | None = None,
    delta_wanted: bool = False,
    fmt: ListFormat = "text",
    source: Source = "auto",
) -> UrlExport:
    """Write the URL list (or its delta) to ``out`` and record the export in ``session``'s
    transaction; the caller commits.

    ``source``: ``cases`` (the lifecycle list), ``items`` (the URLs of final-graded items,
    what an install without cases exports) or ``auto`` (cases once any exist). With cases,
    ``since`` gives the delta between ``since`` and ``now`` (URLs added and removed;
    ``delta_wanted`` asks for it explicitly and needs ``since``); with items, ``since`` keeps
    items graded at or after it, as before. ``fmt``: ``text`` (one URL per line; a delta as
    ``+``/``-`` lines) or ``json`` (one object)."""
    if source not in SOURCES:
        raise UrlListError(f"unknown URL list source {source!r} (one of {', '.join(SOURCES)})")
    if fmt not in ("text", "json"):
        raise UrlListError(f"unknown URL list format {fmt!r} (text or json)")
    at = _aware(now, "now") if now is not None else datetime.now(UTC)
    if since is not None:
        _aware(since, "since")
    if delta_wanted and since is None:
        raise UrlListError("a delta needs --since (the time to compare the list with)")
    use_cases = source == "cases" or (source == "auto" and has_cases(session))
    if not use_cases:
        if delta_wanted:
            raise UrlListError(
                "a delta needs removal cases (this install has none: the list is the URLs "
                "of final-graded items; use --since alone for items graded since then)"
            )
        if fmt == "json":
            urls = exports.list_urls(session, since)
            urls = [u for u in urls if _listable(u)]
            out.write(json.dumps({"source": "items", "urls": urls}, ensure_ascii=False) + "\n")
            n = len(urls)
        else:
            n = exports.write_urls(session, out, since).items
        result = UrlExport("items", n)
        extra = {"since": _iso(since)} if since is not None else {}
        _record(session, result, actor=actor, ip=ip, details=extra)
        return result
    if since is not None:
        if since > at:
            raise UrlListError(f"--since {_iso(since)} is after the export time {_iso(at)}")
        d = delta(load_histories(session), since, at)
        n = write_delta(out, d, fmt)
        result = UrlExport("cases", n, d)
        details = {"since": _iso(since), "until": _iso(at), "delta": True}
        details |= {"added": len(d.added), "removed": len(d.removed)}
        _record(session, result, actor=actor, ip=ip, details=details)
        return result
    urls = listed_now(session) if now is None else current_list(load_histories(session), at)
    if fmt == "json":
        doc = {"source": "cases", "at": _iso(at), "urls": urls}
        out.write(json.dumps(doc, ensure_ascii=False) + "\n")
        n = len(urls)
    else:
        n = write_list(out, urls)
    result = UrlExport("cases", n)
    _record(session, result, actor=actor, ip=ip, details={"at": _iso(at)})
    return result
