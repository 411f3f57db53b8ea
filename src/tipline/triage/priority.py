"""Review priority for items, clusters and reports, with the reason shown beside every score.

Hotline analysts' time is the bottleneck, and known material can be actioned by hash, so the
ordering puts new (unknown) material with evidence first and spares people what a trusted bank
already settles. The formula (docs/pipeline.md has a worked example)::

    item priority = match + unknown + source + age

    match   = alert_match * closeness                    per item, best non-suppressed alert
              match in a bank WITHOUT auto_confirm; closeness = 1 for exact hashes, and
              1 - distance / 256 for PDQ (distance 0 -> 1.0, distance 31 -> 0.88)
            + known_benign                               when only ignore-bank matches exist
    unknown = (no alert match)  unknown_base
              + ai_strong | ai_weak                      from the item's ai_evidence
              + min(keyword_hit * hits, keyword_max)     keyword-list hits
    source  = partner_report | public_report             the best source among its reports
    age     = min(age_per_hour * hours waiting, age_max)

An item with an alert match in a bank whose ``auto_confirm`` is on is **auto-confirmed**: it is
actioned without a human view and gets no priority at all (it never enters a review queue).
Likewise an item with no alert match but an *exact* hash match (MD5, SHA-1, SHA-256) in an
ignore bank whose ``auto_confirm`` is on (the review desk's not-illegal bank) is
**auto-dismissed**: the identical file was already graded not illegal. A PDQ match there only
lowers the priority (``known_benign``): similar is not the same.

    cluster priority = max(member item priorities) + cluster_size * log2(members)
    report priority  = max(its item priorities), or source + age when it has no items yet

Every weight is a field of :class:`TriageWeights`, set from the config file (a ``[triage]``
table) or ``TIPLINE_TRIAGE_<FIELD>`` environment variables.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tipline.errors import TiplineError

ENV_PREFIX = "TIPLINE_TRIAGE_"


class TriageSettingsError(TiplineError):
    pass


@dataclass(frozen=True, slots=True)
class TriageWeights:
    #: an item matching an alert bank that still needs a human to confirm it
    alert_match: float = 40.0
    #: an item that matched only ignore (known benign) banks
    known_benign: float = -30.0
    #: any item no alert bank knows: new material comes first
    unknown_base: float = 20.0
    #: unknown material with strong / weak AI-generation evidence (tipline.provenance)
    ai_strong: float = 40.0
    ai_weak: float = 15.0
    #: per keyword-list hit, and the most keyword hits can add
    keyword_hit: float = 10.0
    keyword_max: float = 30.0
    #: where the report came from (a vetted partner's reports are usually accurate)
    partner_report: float = 10.0
    public_report: float = 5.0
    #: per hour waiting in the queue, and its cap (old items rise slowly, never dominate)
    age_per_hour: float = 0.5
    age_max: float = 24.0
    #: per doubling of a cluster's size
    cluster_size: float = 5.0

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> TriageWeights:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise TriageSettingsError(
                f"unknown triage weight(s) {', '.join(unknown)} (known: {', '.join(sorted(names))})"
            )
        out: dict[str, float] = {}
        for k, v in values.items():
            try:
                out[k] = float(v)
            except (TypeError, ValueError):
                raise TriageSettingsError(
                    f"triage weight {k}: {str(v)[:40]!r} is not a number"
                ) from None
            if not math.isfinite(out[k]):
                raise TriageSettingsError(f"triage weight {k} must be finite")
        return cls(**out)


@dataclass(slots=True)
class Score:
    """A priority and why. ``priority`` is None for auto-confirmed material (no human view)."""

    priority: float | None
    reason: str
    auto_confirmed: bool = False
    parts: list[tuple[str, float]] = field(default_factory=list)
    auto_dismissed: bool = False


@dataclass(slots=True)
class ItemFacts:
    """What triage needs to know about one item (from ``items`` and its reports)."""

    #: Match.to_json() dicts: bank, distance, role, signal_type, suppressed_by...
    matches: Sequence[Mapping[str, Any]] = ()
    #: none | weak | strong
    ai_evidence: str | None = None
    keyword_hits: int = 0
    #: sources of the reports that brought the item in (public_form, partner_api, cli)
    sources: Iterable[str] = ()
    #: when it entered the queue
    queued_at: datetime | None = None


def _closeness(m: Mapping[str, Any]) -> float:
    if m.get("signal_type") in ("pdq", "vpdq"):
        return max(0.0, 1.0 - float(m.get("distance", 0)) / 256.0)
    return 1.0


def _fmt(name: str, value: float) -> str:
    return f"{name} {value:+.1f}"


def _source_part(sources: Iterable[str], w: TriageWeights) -> tuple[str, float] | None:
    s = set(sources)
    if "partner_api" in s:
        return ("partner report", w.partner_report)
    if "public_form" in s:
        return ("public report", w.public_report)
    return None


def _age_part(queued_at: datetime | None, now: datetime, w: TriageWeights) -> tuple[str, float]:
    if queued_at is None:
        return ("0.0 h waiting", 0.0)
    hours = max(0.0, (now - queued_at).total_seconds() / 3600.0)
    return (f"{hours:.1f} h waiting", min(w.age_per_hour * hours, w.age_max))


def _total(parts: list[tuple[str, float]]) -> Score:
    value = round(sum(v for _, v in parts), 2)
    shown = "; ".join(_fmt(n, v) for n, v in parts if v != 0.0) or "no signals"
    return Score(value, f"{value:.1f} = {shown}", False, parts)


EXACT_SIGNALS = frozenset({"md5", "sha1", "sha256", "video_md5"})


def score_item(
    facts: ItemFacts,
    auto_confirm_banks: Iterable[str] = (),
    weights: TriageWeights | None = None,
    now: datetime | None = None,
    auto_dismiss_banks: Iterable[str] = (),
) -> Score:
    """The priority of one item (see the module docstring for the formula)."""
    w = weights or TriageWeights()
    now = now or datetime.now(UTC)
    auto = set(auto_confirm_banks)
    alerts = [
        m for m in facts.matches if m.get("role", "alert") == "alert" and not m.get("suppressed_by")
    ]
    confirmed_by = sorted({str(m["bank"]) for m in alerts if m.get("bank") in auto})
    if confirmed_by:
        return Score(
            None,
            f"auto-confirmed: matched auto_confirm bank(s) {', '.join(confirmed_by)}; "
            "actioned without a human view",
            True,
        )
    dismiss = set(auto_dismiss_banks)
    dismissed_by = sorted(
        {
            str(m["bank"])
            for m in facts.matches
            if m.get("role") == "ignore"
            and m.get("bank") in dismiss
            and m.get("signal_type") in EXACT_SIGNALS
        }
    )
    if dismissed_by and not alerts:
        return Score(
            None,
            f"auto-dismissed: identical to material graded not illegal ({', '.join(dismissed_by)});"
            " no human view",
            auto_dismissed=True,
        )
    parts: list[tuple[str, float]] = []
    if alerts:
        best = max(alerts, key=_closeness)
        dist = best.get("distance", 0)
        parts.append(
            (
                f"alert match in {best.get('bank')} ({best.get('signal_type')} distance {dist})",
                w.alert_match * _closeness(best),
            )
        )
    else:
        if facts.matches:
            banks = sorted({str(m.get("bank")) for m in facts.matches})
            parts.append((f"known benign ({', '.join(banks)})", w.known_benign))
        else:
            parts.append(("unknown material", w.unknown_base))
        if facts.ai_evidence == "strong":
            parts.append(("strong AI-generation evidence", w.ai_strong))
        elif facts.ai_evidence == "weak":
            parts.append(("weak AI-generation evidence", w.ai_weak))
        if facts.keyword_hits > 0:
            parts.append(
                (
                    f"{facts.keyword_hits} keyword hit(s)",
                    min(w.keyword_hit * facts.keyword_hits, w.keyword_max),
                )
            )
    src = _source_part(facts.sources, w)
    if src:
        parts.append(src)
    parts.append(_age_part(facts.queued_at, now, w))
    return _total(parts)


def score_cluster(members: Sequence[Score], weights: TriageWeights | None = None) -> Score:
    """A cluster's priority from its members' scores."""
    w = weights or TriageWeights()
    live = [s for s in members if not s.auto_confirmed and s.priority is not None]
    if not live:
        if members:
            return Score(
                None,
                f"resolved: all {len(members)} member(s) settled by a bank; no human view",
                True,
            )
        return Score(0.0, "0.0 = empty cluster", False, [])
    top = max(live, key=lambda s: s.priority or 0.0)
    parts: list[tuple[str, float]] = [(f"top item [{top.reason}]", top.priority or 0.0)]
    if len(members) > 1:
        parts.append((f"{len(members)} members", w.cluster_size * math.log2(len(members))))
    return _total(parts)


def score_report(
    items: Sequence[Score],
    source: str,
    submitted_at: datetime | None,
    weights: TriageWeights | None = None,
    now: datetime | None = None,
) -> Score:
    """A report's priority: its best item, or (no items yet, e.g. only page URLs) source + age."""
    w = weights or TriageWeights()
    live = [s for s in items if s.priority is not None]
    if live:
        top = max(live, key=lambda s: s.priority or 0.0)
        return Score(top.priority, f"{top.priority:.1f} = highest item [{top.reason}]", False)
    if items:
        return Score(None, "resolved: every item settled by a bank; no human view", True)
    parts: list[tuple[str, float]] = [("no media items analysed yet", w.unknown_base)]
    src = _source_part([source], w)
    if src:
        parts.append(src)
    parts.append(_age_part(submitted_at, now or datetime.now(UTC), w))
    return _total(parts)
