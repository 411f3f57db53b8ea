"""The Tipline peer feed, ``/api/v1/exchange``: one Tipline instance sharing banks with another
(hotline to hotline) over a signed, token-authenticated feed with cursors (docs/exchanges.md).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter


def router(ctx: Any = None) -> APIRouter:
    """The feed's routes (mounted by the app)."""
    return APIRouter()


__all__ = ["router"]
