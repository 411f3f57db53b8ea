"""The provenance record: what an item says (or a classifier suspects) about how it was made.

"Metadata says AI" and "a classifier suspects AI" are kept apart: findings from embedded
signals (generator metadata, C2PA, IPTC, watermarks, stealth metadata) are *declared*; a
``detector`` finding is *suspected* and can never make the evidence ``strong`` on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Signal = Literal[
    "generator_metadata",
    "c2pa",
    "iptc",
    "watermark",
    "stealth_metadata",
    "model_file",
    "detector",
    "keyword",
]
Verdict = Literal["ai_generated", "ai_edited", "not_ai", "unknown", "model", "error"]
Evidence = Literal["none", "weak", "strong"]

#: Signals whose positive verdict is a declaration embedded by the generating tool.
DECLARED: frozenset[str] = frozenset(
    {"generator_metadata", "c2pa", "iptc", "watermark", "stealth_metadata"}
)


@dataclass(slots=True)
class Finding:
    signal: Signal
    verdict: Verdict
    #: the tool or model family, e.g. "AUTOMATIC1111", "ComfyUI", "NovelAI", "SDXL"
    generator: str | None = None
    #: structured facts (model name/hash, LoRAs, seed...). Free text (prompts, captions,
    #: authors) goes under ``evidence["text"]`` and is dropped unless --include-text.
    evidence: dict[str, Any] = field(default_factory=dict)
    #: 0..1, how sure this finding is of its verdict
    confidence: float = 1.0
    #: for verdict "error": why this signal could not be read (the item's scan goes on)
    error: str | None = None

    def to_json(self, include_text: bool = False) -> dict[str, Any]:
        ev = dict(self.evidence)
        if not include_text:
            ev.pop("text", None)
        d: dict[str, Any] = {
            "signal": self.signal,
            "verdict": self.verdict,
            "generator": self.generator,
            "evidence": ev,
            "confidence": round(self.confidence, 4),
        }
        if self.error is not None:
            d["error"] = self.error
        return d


def ai_evidence(findings: list[Finding]) -> Evidence:
    """Summary for triage: strong = a declared AI signal; weak = only suspicion or hints."""
    declared_ai = ("ai_generated", "ai_edited")
    strong = any(
        (f.signal in DECLARED and f.verdict in declared_ai and f.confidence >= 0.9)
        or (f.signal == "model_file" and f.verdict == "model")
        for f in findings
    )
    if strong:
        return "strong"
    weak = any(
        f.verdict in ("ai_generated", "ai_edited", "model")
        or (f.signal == "keyword" and f.verdict != "error")
        for f in findings
    )
    return "weak" if weak else "none"


def finding_from_json(d: dict[str, Any]) -> Finding:
    """Inverse of ``Finding.to_json`` (used by ``--resume`` to read back earlier records)."""
    return Finding(
        signal=d["signal"],
        verdict=d["verdict"],
        generator=d.get("generator"),
        evidence=dict(d.get("evidence") or {}),
        confidence=float(d.get("confidence", 1.0)),
        error=d.get("error"),
    )
