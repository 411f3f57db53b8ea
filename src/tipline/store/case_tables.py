"""Removal-loop tables (docs/removal.md): locations, cases and their transitions, holds,
evidence bundles, notices and re-checks. Defined by issue 13's case work."""

from __future__ import annotations

__all__: list[str] = []
