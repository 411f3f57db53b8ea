"""Crawls: a crawl per report or seed list, its frontier of pages and the media found.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 02:40:00

"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
