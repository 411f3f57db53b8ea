"""The per-item record that ``scan`` and ``hash`` print (documented in docs/formats.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
    matches: list[Match] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    #: for archive members: the file on disk that holds them
    container: str | None = None

    @property
    def pdq_usable(self) -> bool:
        from tipline.signals.pdq import MIN_USABLE_QUALITY

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
        d["matches"] = [m.to_json() for m in self.matches]
        d["errors"] = list(self.errors)
        if self.container is not None:
            d["container"] = self.container
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
            matches=[
                Match(
                    bank=m["bank"],
                    entry_id=m["entry_id"],
                    signal_type=m["signal_type"],
                    distance=m["distance"],
                    label=m.get("label", ""),
                    role=m.get("role", "alert"),
                    suppressed_by=m.get("suppressed_by"),
                )
                for m in d.get("matches", [])
            ],
            errors=list(d.get("errors", [])),
            container=d.get("container"),
        )
