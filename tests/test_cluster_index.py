"""The cluster stage's in-memory index of clustered items: incremental refresh by assignment
order, nearest-cluster search, and a database that was emptied or replaced."""

from __future__ import annotations

import random

from sqlalchemy import delete
from sqlalchemy.orm import Session, sessionmaker

from tipline.store.tables import Cluster, Item
from tipline.triage.cluster_index import ClusterIndex, next_seq


def _hex(rng: random.Random) -> str:
    return f"{rng.getrandbits(256):064x}"


def _flip(pdq: str, bits: int) -> str:
    value = int(pdq, 16)
    for b in range(bits):
        value ^= 1 << (b * 6)
    return f"{value:064x}"


def _add(s: Session, pdq: str, cluster: Cluster, n: int) -> Item:
    item = Item(sha256=f"{n:064x}", pdq=pdq, pdq_quality=100, status="hashed")
    s.add(item)
    s.flush()
    item.cluster_id = cluster.id
    item.clustered_seq = next_seq(s)
    s.flush()
    return item


def test_refresh_reads_only_new_assignments_and_finds_the_nearest(
    session_factory: sessionmaker[Session],
) -> None:
    rng = random.Random(5)
    base = [_hex(rng) for _ in range(40)]
    with session_factory() as s, s.begin():
        clusters = [Cluster(size=1) for _ in range(40)]
        s.add_all(clusters)
        s.flush()
        for n, (pdq, c) in enumerate(zip(base, clusters, strict=True), 1):
            _add(s, pdq, c, n)
        ids = [c.id for c in clusters]
    index = ClusterIndex()
    with session_factory() as s:
        assert index.refresh(s) == 40
        assert index.refresh(s) == 0  # nothing new
        assert index.nearest(_flip(base[7], 5), 31) == (ids[7], 5)
        assert index.nearest(_flip(base[7], 40), 31) is None  # too far
    with session_factory() as s, s.begin():
        later = Cluster(size=1)
        s.add(later)
        s.flush()
        extra = _hex(rng)
        _add(s, extra, later, 41)
        later_id = later.id
    with session_factory() as s:
        assert index.refresh(s) == 1
        assert index.nearest(extra, 0) == (later_id, 0)
        assert len(index) == 41 and index.seq == 41


def test_an_emptied_and_refilled_database_is_noticed(
    session_factory: sessionmaker[Session],
) -> None:
    rng = random.Random(9)
    old = _hex(rng)
    with session_factory() as s, s.begin():
        c = Cluster(size=1)
        s.add(c)
        s.flush()
        for n in range(1, 4):
            _add(s, _flip(old, n), c, n)
    index = ClusterIndex()
    with session_factory() as s:
        index.refresh(s)
        assert index.nearest(old, 10) is not None
    with session_factory() as s, s.begin():  # replaced: same size, other content
        s.execute(delete(Item))
        s.execute(delete(Cluster))
        c2 = Cluster(size=1)
        s.add(c2)
        s.flush()
        new = _hex(rng)
        for n in range(11, 15):
            _add(s, _flip(new, n - 10), c2, n)
        c2_id = c2.id
    with session_factory() as s:
        index.refresh(s)
        assert index.nearest(old, 10) is None
        hit = index.nearest(new, 10)
        assert hit is not None and hit[0] == c2_id
        assert len(index) == 4
