"""The provenance record: what an item says (or a classifier suspects) about how it was made.

"Metadata says AI" and "a classifier suspects AI" are kept apart: findings from embedded
signals (generator metadata, C2PA, IPTC, watermarks, stealth metadata) are *declared*; a
``detector`` finding is *suspected* and can never make the evidence ``strong`` on its own.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
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


_HEX_RE = re.compile(r"^[0-9a-fA-F]{8,64}$")


def cited_model_hashes(findings: Iterable[Finding]) -> Iterator[tuple[str, str]]:
    """``(role, lowercase hex)`` for every model hash the findings cite.

    Roles: ``model`` (a checkpoint's "Model hash": AutoV1 8 hex, AutoV2 10 hex, or a full
    SHA-256), ``lora`` (A1111 "Lora hashes": 12 hex of AutoV3, or of the SHA-256 for non-
    safetensors files), ``base_model`` (kohya's ss_new_sd_model_hash), ``resource`` (Civitai
    "Hashes" entries and other named resources). The model file's own hashes are not cited.
    """
    seen: set[tuple[str, str]] = set()
    for f in findings:
        ev = f.evidence
        for role, key in (("model", "model_hash"), ("base_model", "base_model_hash")):
            yield from _emit(seen, role, ev.get(key))
        for key in ("vae_hash", "refiner_hash"):
            yield from _emit(seen, "model", ev.get(key))
        for key, role in (("loras", "lora"), ("resources", "resource"), ("embeddings", "lora")):
            items = ev.get(key)
            if isinstance(items, list):
                for item in items[:256]:
                    if isinstance(item, dict):
                        yield from _emit(seen, role, item.get("hash"))
        hashes = ev.get("hashes") if f.signal != "model_file" else None
        if isinstance(hashes, dict):
            for name, h in list(hashes.items())[:256]:
                role = "lora" if str(name).lower().startswith("lora") else "resource"
                yield from _emit(seen, role, h)


def _emit(seen: set[tuple[str, str]], role: str, value: object) -> Iterator[tuple[str, str]]:
    if not isinstance(value, str):
        return
    v = value.strip().removeprefix("0x")
    if not _HEX_RE.match(v):
        return
    key = (role, v.lower())
    if key not in seen:
        seen.add(key)
        yield key
