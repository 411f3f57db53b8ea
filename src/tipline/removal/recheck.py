"""Re-checks: is the evidence still served? (docs/removal.md, "Evidence and re-checks").

:func:`recheck` looks at a location again exactly as :func:`tipline.removal.evidence.capture`
did (the same SSRF-safe fetcher, the same media discovery and hashing) and compares what it
finds with the evidence:

- ``online``: any evidence media is still served, the same bytes (SHA-256) or a re-encoded
  copy (PDQ within :data:`PDQ_MATCH_DISTANCE`, both hashes of usable quality). A location
  whose evidence has no media (a text page) is online while its page is byte-identical.
- ``miss``: 404/410, DNS gone, connection refused, timeouts, redirect loops, other HTTP errors,
  or a page that answers 200 but no longer carries the media (a "removed" template is
  detected by hash, not by status). One miss is not a removal: the case state machine
  counts consecutive misses (an outage must not read as a removal). ``transient`` marks
  the misses that look like an outage (5xx, 429, timeouts, refused connections).
- ``blocked``: the location now resolves to an address the SSRF policy refuses.

Network errors are outcomes, never exceptions. ``addresses`` are the addresses the host (and
any redirect host) resolved to, so the caller can re-attribute and notice a move.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from tipline.errors import InvalidSignalError
from tipline.net.fetch import (
    BlockedAddressError,
    FetchConnectError,
    FetchSettings,
    FetchTimeoutError,
    HTTPStatusError,
    ResolveError,
    TooLargeError,
    TooManyRedirectsError,
)
from tipline.removal.evidence import (
    MEDIA_KINDS,
    CaptureLimits,
    EvidenceBundle,
    Survey,
    pdq_usable,
    survey,
)
from tipline.signals.pdq import hamming
from tipline.signals.vpdq import VpdqHash, VpdqMatchOptions, match_vpdq

Outcome = Literal["online", "miss", "blocked"]
#: PDQ distance up to which a served picture is the evidence picture re-encoded
PDQ_MATCH_DISTANCE = 31


@dataclass(frozen=True)
class RecheckResult:
    outcome: Outcome
    #: one line: why (``gone: HTTP 404``, ``2 of 3 evidence media still served``, ...)
    reason: str
    http_status: int | None
    addresses: tuple[str, ...]
    #: SHA-256 of every media file served now
    media_sha256: frozenset[str]
    #: evidence media (their evidence SHA-256) still served, exactly or as a PDQ match
    matched: frozenset[str]
    checked_at: datetime
    #: of ``matched``, those found only by PDQ (a re-encoded copy), with the closest distance
    pdq_matched: tuple[tuple[str, int], ...] = ()
    page_sha256: str | None = None
    final_url: str | None = None
    #: a miss that looks like an outage rather than a removal (5xx, 429, timeout, refused)
    transient: bool = False
    #: media URLs on the page that could not be fetched or hashed, ``url: error``
    media_errors: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "reason": self.reason,
            "http_status": self.http_status,
            "addresses": list(self.addresses),
            "media_sha256": sorted(self.media_sha256),
            "matched": sorted(self.matched),
            "pdq_matched": [list(p) for p in self.pdq_matched],
            "checked_at": self.checked_at.isoformat(),
            "page_sha256": self.page_sha256,
            "final_url": self.final_url,
            "transient": self.transient,
            "media_errors": list(self.media_errors),
        }


def _error_outcome(s: Survey) -> tuple[Outcome, str, bool]:
    err = s.error
    assert err is not None
    if isinstance(err, BlockedAddressError):
        return "blocked", str(err), False
    if isinstance(err, HTTPStatusError):
        if err.status in (404, 410):
            return "miss", f"gone: HTTP {err.status}", False
        transient = err.status >= 500 or err.status == 429
        return "miss", f"HTTP {err.status}: {err}", transient
    if isinstance(err, ResolveError):
        return "miss", f"dns gone: {err}", False
    if isinstance(err, FetchTimeoutError):
        return "miss", str(err), True
    if isinstance(err, FetchConnectError):
        return "miss", str(err), True
    if isinstance(err, TooManyRedirectsError):
        return "miss", f"redirect loop: {err}", False
    if isinstance(err, TooLargeError):
        return "miss", str(err), False
    return "miss", str(err), False


def compare_media(
    evidence_media: tuple[dict[str, Any], ...], found: list[dict[str, Any]]
) -> tuple[frozenset[str], tuple[tuple[str, int], ...]]:
    """Evidence media (SHA-256) served among ``found``: exact matches, and those matched only
    by PDQ (pictures) or vPDQ (videos) with their closest (frame) distance."""
    served = {m["sha256"] for m in found if m.get("sha256")}
    served_pdq = [m["pdq"] for m in found if pdq_usable(m)]
    served_videos = [m["vpdq"] for m in found if m.get("vpdq")]
    exact: set[str] = set()
    near: list[tuple[str, int]] = []
    for ev in evidence_media:
        sha = ev.get("sha256")
        if not sha or ev.get("kind") not in MEDIA_KINDS:
            continue
        if sha in served:
            exact.add(sha)
            continue
        if pdq_usable(ev) and served_pdq:
            distance = min(hamming(ev["pdq"], p) for p in served_pdq)
            if distance <= PDQ_MATCH_DISTANCE:
                near.append((sha, distance))
        elif ev.get("vpdq") and served_videos:
            best = _vpdq_distance(ev["vpdq"], served_videos)
            if best is not None:
                near.append((sha, best))
    return frozenset(exact | {s for s, _ in near}), tuple(sorted(near))


def _vpdq_distance(evidence_frames: list[str], served: list[list[str]]) -> int | None:
    """The best frame distance of a served video that matches the evidence video by vPDQ
    (python-threatexchange's match rule, both ways); None when none does."""
    try:
        ev = VpdqHash.from_strings(evidence_frames)
    except (InvalidSignalError, ValueError, TypeError):
        return None
    opts = VpdqMatchOptions()
    best: int | None = None
    for frames in served:
        try:
            result = match_vpdq(ev, VpdqHash.from_strings(frames), opts)
        except (InvalidSignalError, ValueError, TypeError):
            continue
        if result.is_match(opts) and result.best_distance is not None:
            best = result.best_distance if best is None else min(best, result.best_distance)
    return best


def recheck(
    url: str,
    evidence: EvidenceBundle,
    *,
    fetch_settings: FetchSettings,
    now: datetime | None = None,
    limits: CaptureLimits | None = None,
) -> RecheckResult:
    """Look at ``url`` again and compare with ``evidence`` (see the module docstring)."""
    when = (now or datetime.now(UTC)).astimezone(UTC)
    # media served byte-identical need no PDQ: only the others can be re-encoded copies
    s = survey(url, fetch_settings, limits, known=evidence.media_sha256)
    found_sha = frozenset(
        m["sha256"] for m in s.media if m.get("sha256") and m.get("kind") in MEDIA_KINDS
    )
    media_errors = tuple(f"{m['url']}: {m['error']}" for m in s.media if m.get("error"))
    common: dict[str, Any] = {
        "http_status": s.status,
        "addresses": s.addresses,
        "media_sha256": found_sha,
        "checked_at": when,
        "page_sha256": s.page["sha256"] if s.page else None,
        "final_url": s.result.url if s.result is not None else None,
        "media_errors": media_errors,
    }
    if s.error is not None and not s.media:
        outcome, reason, transient = _error_outcome(s)
        return RecheckResult(
            outcome=outcome, reason=reason, matched=frozenset(), transient=transient, **common
        )
    matched, pdq_matched = compare_media(evidence.media, s.media)
    wanted = len(evidence.media_sha256)
    if matched:
        exact = len(matched) - len(pdq_matched)
        how = f"{exact} exact" + (f", {len(pdq_matched)} by PDQ" if pdq_matched else "")
        return RecheckResult(
            outcome="online",
            reason=f"{len(matched)} of {wanted} evidence media still served ({how})",
            matched=matched,
            pdq_matched=pdq_matched,
            **common,
        )
    if wanted == 0:
        if evidence.page_sha256 is not None and common["page_sha256"] == evidence.page_sha256:
            return RecheckResult(
                outcome="online",
                reason="the page is unchanged (the evidence has no media)",
                matched=frozenset(),
                **common,
            )
        return RecheckResult(
            outcome="miss",
            reason="different content: the page changed (the evidence has no media)",
            matched=frozenset(),
            **common,
        )
    served = f"{len(found_sha)} other media" if found_sha else "no media"
    return RecheckResult(
        outcome="miss",
        reason=(
            f"different content: HTTP {s.status} serves {served}, none of the {wanted} "
            "evidence media"
        ),
        matched=frozenset(),
        **common,
    )
