"""The URL list's lifecycle (issue 13, item 6): the list holds exactly the locations still
online and confirmed.

A URL is on the list while at least one of its cases is in a *listed* state
(:data:`LISTED_STATES`: confirmed, held, evidence captured, notified, escalated, moved to
another host, reappeared). A removal or closing takes it off at the next export; a
reappearance puts it back. Everything is computed from the case transitions with their
timestamps, so the list at any past time, and so a ``since`` delta (URLs added and removed
between two times), come from the same rows as the current list.

The pure core (:class:`LocationHistory`, :func:`listed_at`, :func:`current_list`,
:func:`delta`) knows nothing of the database; :func:`load_histories` reads the case tables.
``tipline export urls`` uses this list once cases exist (docs/removal.md, "URL list").
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

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
