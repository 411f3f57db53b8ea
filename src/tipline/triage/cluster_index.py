"""The clustered items' PDQ hashes, in memory, for the pipeline's cluster stage.

Placing a new item means finding the nearest already-clustered item within the cluster
threshold. Reading every clustered item's hash from the database for each new item costs
O(items) per item; instead each worker process keeps a multi-index-hashing index
(:class:`tipline.index.mih.MIHIndex`) of them and, before each search, reads only the
assignments made since it last looked: items carry ``clustered_seq``, a number given in
assignment order (assignments are serialised by the cluster stage), so "what is new" is one
indexed range query.

A database that was emptied or replaced (its highest ``clustered_seq`` went down) is noticed
and the index rebuilt.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tipline.index.hamming import codes_from_hex
from tipline.index.mih import MIHIndex
from tipline.store.tables import Item

#: Rows read per refresh query.
BATCH = 50_000


class ClusterIndex:
    """Clustered items of one database: item id -> cluster id, searchable by PDQ."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._index = MIHIndex()
        self._cluster_of: dict[int, int] = {}
        self._seq = 0
        self._last: tuple[int, int, str] = (0, 0, "")

    def __len__(self) -> int:
        return len(self._cluster_of)

    @property
    def seq(self) -> int:
        """The highest assignment this index has seen."""
        return self._seq

    def refresh(self, session: Session) -> int:
        """Read assignments made since the last refresh; returns how many were added."""
        with self._lock:
            top = session.scalar(select(func.max(Item.clustered_seq))) or 0
            if self._seq and (top < self._seq or not self._still_there(session)):
                self._reset()  # the database was emptied or replaced
            added = 0
            while self._seq < top:
                rows = session.execute(
                    select(Item.id, Item.pdq, Item.cluster_id, Item.clustered_seq, Item.sha256)
                    .where(Item.clustered_seq > self._seq)
                    .order_by(Item.clustered_seq)
                    .limit(BATCH)
                ).all()
                if not rows:
                    break
                fresh = [
                    (int(r[0]), str(r[1]), int(r[2]))
                    for r in rows
                    if r[1] and r[2] is not None and int(r[0]) not in self._cluster_of
                ]
                if fresh:
                    ids = np.asarray([f[0] for f in fresh], dtype=np.int64)
                    self._index.add(ids, codes_from_hex([f[1] for f in fresh]))
                    self._cluster_of.update((f[0], f[2]) for f in fresh)
                    added += len(fresh)
                self._seq = int(rows[-1][3] or 0)
                self._last = (self._seq, int(rows[-1][0]), str(rows[-1][4]))
            return added

    def _still_there(self, session: Session) -> bool:
        """Whether the newest assignment this index read is still the same item."""
        seq, item_id, sha256 = self._last
        row = session.execute(select(Item.id, Item.sha256).where(Item.clustered_seq == seq)).first()
        return row is not None and (int(row[0]), str(row[1])) == (item_id, sha256)

    def nearest(self, pdq: str, radius: int) -> tuple[int, int] | None:
        """``(cluster id, distance)`` of the nearest clustered item within ``radius`` bits."""
        with self._lock:
            if not self._cluster_of:
                return None
            ids, dists = self._index.search(codes_from_hex([pdq]), radius)[0]
            if len(ids) == 0:
                return None
            best = int(np.argmin(dists))
            return self._cluster_of[int(ids[best])], int(dists[best])


_INDEXES: dict[str, ClusterIndex] = {}
_INDEXES_LOCK = threading.Lock()


def for_session(session: Session) -> ClusterIndex:
    """This process's index for the session's database."""
    bind: Any = session.get_bind()
    key = bind.url.render_as_string(hide_password=True)
    with _INDEXES_LOCK:
        idx = _INDEXES.get(key)
        if idx is None:
            idx = _INDEXES[key] = ClusterIndex()
        return idx


def reset_all() -> None:
    """Forget every index (tests that recreate databases under the same URL)."""
    with _INDEXES_LOCK:
        _INDEXES.clear()


def next_seq(session: Session) -> int:
    """The next assignment number (call with cluster assignment serialised)."""
    return int(session.scalar(select(func.max(Item.clustered_seq))) or 0) + 1


__all__ = ["ClusterIndex", "for_session", "next_seq", "reset_all"]
