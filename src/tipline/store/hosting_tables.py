"""Hosting attribution tables (docs/removal.md): imported IP-to-ASN data sets and the
operator's provider directory. Defined by issue 13's hosting work."""

from __future__ import annotations

__all__: list[str] = []
