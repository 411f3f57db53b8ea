"""The per-item record that ``scan`` and ``hash`` print (documented in docs/formats.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tipline.findings import Finding, finding_from_json

#: PDQ hashes of lower quality are kept but never matched (the PDQ paper's recommendation)
MIN_USABLE_QUALITY = 50


@dataclass(slots=True)
class Match:
    bank: str
    entry_id: int
    signal_type: str
    distance: int
    label: str
    role: str = "alert"
    #: id of the ignore-bank entry that suppressed this alert match, if any
    suppressed_by: int | None = None
    #: vpdq matches: % of the item's frames found in the entry, and of the entry's in the item
    query_match_pct: float | None = None
    index_match_pct: float | None = None
    #: model banks: how an image or model cited this entry (``cited_model``, ``cited_lora``,
    #: ``cited_base_model``, ``cited_resource``); PDQ: the query hash that found it when not
    #: the item's own (``dihedral`` or a ``pdq_variants`` name); None when the item's own
    #: hash matched
    via: str | None = None
    #: exchange banks: whose entry this is (``exchange``, ``api``, ``record``: the partner's
    #: record key, and the partner's own fields as fetched: member, entry id, classification,
    #: list), set where the match is stored (:func:`tipline.exchange.partners.annotate`)
    partner: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "bank": self.bank,
            "entry_id": self.entry_id,
            "signal_type": self.signal_type,
            "distance": self.distance,
            "label": self.label,
            "role": self.role,
        }
        if self.suppressed_by is not None:
            d["suppressed_by"] = self.suppressed_by
        if self.query_match_pct is not None:
            d["query_match_pct"] = round(self.query_match_pct, 2)
            d["index_match_pct"] = round(self.index_match_pct or 0.0, 2)
        if self.via is not None:
            d["via"] = self.via
        if self.partner:
            d["partner"] = self.partner
        return d


@dataclass(slots=True)
class ItemRecord:
    path: str
    media_type: str = "application/octet-stream"
    size: int | None = None
    md5: str | None = None
    sha1: str | None = None
    sha256: str | None = None
    pdq: str | None = None
    pdq_quality: int | None = None
    pdq_dihedral: list[str] | None = None
    #: extra PDQ query hashes of the same item, by name (``rgb``, ``border_trimmed``,
    #: ``crop_...``; docs/formats.md): looked up as well, never the item's own hash; a match
    #: found only through one says so in its ``via``
    pdq_variants: dict[str, str] | None = None
    #: videos: vPDQ frames as "pdq_hex,quality,timestamp" strings (see docs/formats.md)
    vpdq: list[str] | None = None
    vpdq_frames: int | None = None
    #: model files (docs/models-and-keywords.md): A1111 legacy hash (8 hex; null under 2 MiB),
    #: A1111 model hash (first 10 hex of sha256), kohya/addnet tensor-data hash (safetensors)
    autov1: str | None = None
    autov2: str | None = None
    autov3: str | None = None
    #: texts (documents, pages): TLSH of the normalised text (``tipline.signals.tlsh``)
    tlsh: str | None = None
    matches: list[Match] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    #: things worth a look that are not errors: a name that disguises the content ("name says
    #: image/jpeg, content is text/plain")
    warnings: list[str] = field(default_factory=list)
    #: for archive members: the file on disk that holds them
    container: str | None = None
    #: AI provenance findings (tipline.provenance); None when not analysed (--no-provenance).
    #: Free text is already dropped unless the scan ran with --include-text.
    provenance: list[Finding] | None = None
    #: none | weak | strong, summarised from ``provenance`` (see docs/provenance.md)
    ai_evidence: str | None = None

    @property
    def pdq_usable(self) -> bool:
        return self.pdq is not None and (self.pdq_quality or 0) >= MIN_USABLE_QUALITY

    @property
    def alert_matches(self) -> list[Match]:
        return [m for m in self.matches if m.role == "alert" and m.suppressed_by is None]

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "path": self.path,
            "media_type": self.media_type,
            "size": self.size,
            "md5": self.md5,
            "sha1": self.sha1,
            "sha256": self.sha256,
            "pdq": self.pdq,
            "pdq_quality": self.pdq_quality,
        }
        if self.pdq is not None:
            d["pdq_usable"] = self.pdq_usable
        if self.pdq_dihedral is not None:
            d["pdq_dihedral"] = self.pdq_dihedral
        if self.pdq_variants:
            d["pdq_variants"] = dict(self.pdq_variants)
        if self.vpdq is not None:
            d["vpdq_frames"] = self.vpdq_frames
            d["vpdq"] = self.vpdq
        if self.autov2 is not None:
            d["autov1"] = self.autov1
            d["autov2"] = self.autov2
            d["autov3"] = self.autov3
        if self.tlsh is not None:
            d["tlsh"] = self.tlsh
        d["matches"] = [m.to_json() for m in self.matches]
        d["errors"] = list(self.errors)
        d["warnings"] = list(self.warnings)
        if self.container is not None:
            d["container"] = self.container
        if self.provenance is not None:
            d["ai_evidence"] = self.ai_evidence
            d["provenance"] = [f.to_json(include_text=True) for f in self.provenance]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ItemRecord:
        return cls(
            path=d["path"],
            media_type=d.get("media_type", "application/octet-stream"),
            size=d.get("size"),
            md5=d.get("md5"),
            sha1=d.get("sha1"),
            sha256=d.get("sha256"),
            pdq=d.get("pdq"),
            pdq_quality=d.get("pdq_quality"),
            pdq_dihedral=d.get("pdq_dihedral"),
            pdq_variants=d.get("pdq_variants") or None,
            vpdq=d.get("vpdq"),
            vpdq_frames=d.get("vpdq_frames"),
            autov1=d.get("autov1"),
            autov2=d.get("autov2"),
            autov3=d.get("autov3"),
            tlsh=d.get("tlsh"),
            matches=[
                Match(
                    bank=m["bank"],
                    entry_id=m["entry_id"],
                    signal_type=m["signal_type"],
                    distance=m["distance"],
                    label=m.get("label", ""),
                    role=m.get("role", "alert"),
                    suppressed_by=m.get("suppressed_by"),
                    query_match_pct=m.get("query_match_pct"),
                    index_match_pct=m.get("index_match_pct"),
                    via=m.get("via"),
                    partner=m.get("partner") if isinstance(m.get("partner"), dict) else None,
                )
                for m in d.get("matches", [])
            ],
            errors=list(d.get("errors", [])),
            warnings=list(d.get("warnings", [])),
            container=d.get("container"),
            provenance=(
                [finding_from_json(f) for f in d["provenance"]]
                if d.get("provenance") is not None
                else None
            ),
            ai_evidence=d.get("ai_evidence"),
        )
