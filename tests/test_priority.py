"""Triage priorities: the documented formula, auto-confirm and the reason strings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tipline.service.settings import ServiceSettings
from tipline.triage.priority import (
    ItemFacts,
    TriageSettingsError,
    TriageWeights,
    score_cluster,
    score_item,
    score_report,
)

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _match(bank: str = "DEMO_ALERT", distance: int = 0, **kw: object) -> dict[str, object]:
    d: dict[str, object] = {"bank": bank, "distance": distance, "role": "alert"}
    d["signal_type"] = "pdq" if distance else "sha256"
    d.update(kw)
    return d


def test_unknown_with_strong_ai_evidence_outranks_known_alert_match() -> None:
    new = score_item(ItemFacts(ai_evidence="strong", sources=["public_form"]), now=NOW)
    known = score_item(ItemFacts(matches=[_match()], sources=["public_form"]), now=NOW)
    assert new.priority == 20 + 40 + 5
    assert known.priority == 40 + 5
    assert (new.priority or 0) > (known.priority or 0)
    assert "unknown material +20.0" in new.reason
    assert "strong AI-generation evidence +40.0" in new.reason
    assert "alert match in DEMO_ALERT (sha256 distance 0) +40.0" in known.reason


def test_worked_example_from_docs() -> None:
    """docs/pipeline.md: a partner report of an unknown image with weak AI evidence and two
    keyword hits, waiting 6 hours: 20 + 15 + 20 + 10 + 3 = 68."""
    facts = ItemFacts(
        ai_evidence="weak",
        keyword_hits=2,
        sources=["partner_api", "public_form"],
        queued_at=NOW - timedelta(hours=6),
    )
    s = score_item(facts, now=NOW)
    assert s.priority == 68.0
    assert s.reason == (
        "68.0 = unknown material +20.0; weak AI-generation evidence +15.0; "
        "2 keyword hit(s) +20.0; partner report +10.0; 6.0 h waiting +3.0"
    )


def test_auto_confirm_bank_spares_the_analyst() -> None:
    s = score_item(ItemFacts(matches=[_match("CONFIRMED_KNOWN", 3)]), {"CONFIRMED_KNOWN"}, now=NOW)
    assert s.auto_confirmed
    assert s.priority is None
    assert "CONFIRMED_KNOWN" in s.reason and "without a human view" in s.reason


def test_suppressed_alert_match_is_not_an_alert() -> None:
    m = _match("DEMO_ALERT", suppressed_by=7)
    ignore = {"bank": "BENIGN", "distance": 0, "role": "ignore", "signal_type": "sha256"}
    s = score_item(ItemFacts(matches=[m, ignore]), {"DEMO_ALERT"}, now=NOW)
    assert not s.auto_confirmed
    assert s.priority == -30.0
    assert "known benign (BENIGN, DEMO_ALERT)" in s.reason


def test_pdq_distance_lowers_match_weight() -> None:
    near = score_item(ItemFacts(matches=[_match(distance=2)]), now=NOW)
    far = score_item(ItemFacts(matches=[_match(distance=30)]), now=NOW)
    assert (near.priority or 0) > (far.priority or 0)


def test_age_is_capped() -> None:
    w = TriageWeights()
    old = score_item(ItemFacts(queued_at=NOW - timedelta(days=30)), now=NOW)
    assert old.priority == w.unknown_base + w.age_max


def test_keyword_hits_capped() -> None:
    s = score_item(ItemFacts(keyword_hits=50), now=NOW)
    assert s.priority == 20 + 30


def test_cluster_priority() -> None:
    a = score_item(ItemFacts(ai_evidence="strong"), now=NOW)
    b = score_item(ItemFacts(), now=NOW)
    c = score_cluster([a, b, b, b])
    assert c.priority == 60 + 5 * 2
    assert "4 members +10.0" in c.reason
    auto = score_item(ItemFacts(matches=[_match("K")]), {"K"}, now=NOW)
    assert score_cluster([auto, auto]).auto_confirmed


def test_report_priority() -> None:
    a = score_item(ItemFacts(ai_evidence="weak"), now=NOW)
    r = score_report([a], "public_form", NOW, now=NOW)
    assert r.priority == a.priority and "highest item" in r.reason
    empty = score_report([], "partner_api", NOW - timedelta(hours=2), now=NOW)
    assert empty.priority == 20 + 10 + 1
    assert "no media items analysed yet" in empty.reason


def test_weights_configurable() -> None:
    w = ServiceSettings.from_environment({"TIPLINE_TRIAGE_UNKNOWN_BASE": "99", "OTHER": "x"}).triage
    assert w.unknown_base == 99.0
    assert score_item(ItemFacts(), weights=w, now=NOW).priority == 99.0
    with pytest.raises(TriageSettingsError, match="unknown triage weight"):
        TriageWeights.from_mapping({"bogus": 1})
    with pytest.raises(TriageSettingsError, match="not a number"):
        TriageWeights.from_mapping({"ai_weak": "lots"})


def test_exact_match_in_an_auto_dismiss_bank_spares_the_analyst_pdq_does_not() -> None:
    exact = _match("GRADED_BENIGN", 0, role="ignore")  # sha256
    similar = _match("GRADED_BENIGN", 5, role="ignore")  # pdq
    s = score_item(ItemFacts(matches=[exact]), now=NOW, auto_dismiss_banks={"GRADED_BENIGN"})
    assert s.auto_dismissed and not s.auto_confirmed and s.priority is None
    assert "graded not illegal" in s.reason
    near = score_item(ItemFacts(matches=[similar]), now=NOW, auto_dismiss_banks={"GRADED_BENIGN"})
    assert not near.auto_dismissed and near.priority is not None and "known benign" in near.reason
    # an alert match wins over a dismissal: a person looks
    both = score_item(
        ItemFacts(matches=[exact, _match("ALERTS", 4)]),
        now=NOW,
        auto_dismiss_banks={"GRADED_BENIGN"},
    )
    assert not both.auto_dismissed and both.priority is not None
    # without the bank's auto_confirm, an exact benign match only lowers the priority
    plain = score_item(ItemFacts(matches=[exact]), now=NOW)
    assert not plain.auto_dismissed and plain.priority is not None
