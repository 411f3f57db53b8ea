"""Retention: media older than the deployment keeps it is deleted, each deletion audited.

``tipline media purge`` runs :func:`purge` over the encrypted media store
(:mod:`tipline.store.media`); every blob it deletes commits a ``media.purge`` audit event and
clears the items' ``media_ref`` in the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from tipline.audit import log as audit
from tipline.store.media import EncryptedStore, HashOnlyStore, MediaError, MediaNotFound
from tipline.store.tables import Item


@dataclass(frozen=True, slots=True)
class PurgeResult:
    purged: list[str]
    kept: int


def purge(
    store: HashOnlyStore | EncryptedStore,
    factory: sessionmaker[Session],
    retention_days: float,
    *,
    actor: str = "system:retention",
    now: datetime | None = None,
) -> PurgeResult:
    """Delete blobs older than ``retention_days`` (0 or less: keep forever).

    Each deletion commits one ``media.purge`` audit event and clears ``items.media_ref`` in the
    same transaction as the file is removed; if the removal fails the event rolls back.
    """
    if retention_days <= 0 or not isinstance(store, EncryptedStore):
        return PurgeResult([], 0)
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(days=retention_days)
    purged: list[str] = []
    kept = 0
    for ref in list(store.refs()):
        try:
            created = store.created_at(ref)
        except MediaNotFound:
            continue
        except MediaError:
            created = datetime.fromtimestamp(0, UTC)  # unreadable header: past any retention
        if created >= cutoff:
            kept += 1
            continue
        with factory() as s, s.begin():
            s.execute(update(Item).where(Item.media_ref == ref).values(media_ref=None))
            audit.record(
                s,
                actor,
                "media.purge",
                "media",
                ref,
                None,
                {"created": audit.format_time(created), "retention_days": retention_days},
            )
            store.delete(ref)
        purged.append(ref)
    return PurgeResult(purged, kept)
