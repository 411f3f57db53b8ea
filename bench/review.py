"""Review desk speed: the queue (re-scored at read time), grading, the dashboard.

Builds a database of ``--items`` waiting items in clusters of 1-4 (benign made-up hashes, no
media), then times, on one process:

* anchor: the stored-priority query the queue starts from (clusters by priority, top 100);
* ``list_queue`` for an analyst (candidates re-scored with the triage formula, filters, claims);
* ``grade_cluster`` + commit for a stream of clusters (two analysts: pending then final);
* ``stats.dashboard`` (6 aggregate queries).

Prints each time and its ratio to the anchor. No targets are set by the issue; the numbers go
into the issue note. Usage::

    .venv/bin/python bench/review.py                       # SQLite, 20,000 items
    .venv/bin/python bench/review.py --items 100000 --db-url postgresql+psycopg://postgres@127.0.0.1/test
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert, select, text

from tipline.review import stats
from tipline.review.grading import ReviewPolicy, grade_cluster
from tipline.review.queue import Reviewer, claim, list_queue
from tipline.review.taxonomy import load
from tipline.service import auth
from tipline.store import migrations
from tipline.store.base import make_engine, session_factory
from tipline.store.tables import Cluster, Item, ReportItem, User


def _timed(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--db-url", default="")
    ap.add_argument("--grade", type=int, default=200, help="clusters graded in the timing")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tipline-bench-review-"))
    url = args.db_url or f"sqlite:///{tmp / 'bench.sqlite3'}"
    if url.startswith("postgresql"):
        eng = make_engine(url)
        with eng.begin() as c:
            c.execute(text("DROP SCHEMA public CASCADE"))
            c.execute(text("CREATE SCHEMA public"))
        eng.dispose()
    migrations.upgrade(url)
    engine = make_engine(url)
    sf = session_factory(engine)
    rng = random.Random(7)
    now = datetime.now(UTC)
    with sf() as s, s.begin():
        users = [auth.create_user(s, n, "analyst", "bench password 1") for n in ("ana", "ben")]
        s.flush()
        reviewers = [Reviewer(u.id, u.username, u.role) for u in users]
    t0 = time.perf_counter()
    n = 0
    cid = 0
    with sf() as s, s.begin():
        clusters, items = [], []
        while n < args.items:
            cid += 1
            size = rng.randint(1, 4)
            clusters.append(
                {
                    "id": cid,
                    "size": size,
                    "priority": rng.uniform(0, 100),
                    "status": "open",
                    "representative_item_id": n + 1,
                }
            )
            for _ in range(size):
                n += 1
                ev = rng.random()
                items.append(
                    {
                        "id": n,
                        "sha256": f"{n:064x}",
                        "md5": f"{n:032x}",
                        "pdq": f"{rng.getrandbits(256):064x}",
                        "pdq_quality": 100,
                        "status": "hashed",
                        "cluster_id": cid,
                        "first_seen": now - timedelta(hours=rng.uniform(0, 96)),
                        "ai_evidence": "strong" if ev < 0.05 else "weak" if ev < 0.1 else None,
                        "matches": [
                            {"bank": "B", "role": "alert", "signal_type": "pdq", "distance": 10}
                        ]
                        if ev > 0.9
                        else [],
                        "keyword_hits": [],
                        "media_type": "image/jpeg",
                        "size": 1000,
                    }
                )
        s.execute(insert(Cluster), clusters)
        s.execute(insert(Item), items)
    build = time.perf_counter() - t0
    print(
        f"database: {url.split('://')[0]}, {n:,} items in {cid:,} clusters (built in {build:.1f} s)"
    )

    def anchor() -> None:
        with sf() as s:
            s.scalars(select(Cluster).order_by(Cluster.priority.desc()).limit(100)).all()

    def queue() -> None:
        with sf() as s:
            assert len(list_queue(s, reviewers[0], datetime.now(UTC), limit=100)) == 100

    def dash() -> None:
        with sf() as s:
            stats.dashboard(s, datetime.now(UTC))

    a = _timed(anchor, 20)
    q = _timed(queue, 5)
    d = _timed(dash, 3)
    tax = load()
    values = {"uk_category": "not_illegal", "ncmec_category": "none"}
    policy = ReviewPolicy()
    targets = list(range(1, args.grade + 1))
    t = time.perf_counter()
    for who in reviewers:
        for c in targets:
            with sf() as s, s.begin():
                claim(s, c, who, datetime.now(UTC))
                grade_cluster(s, c, who, values, tax, datetime.now(UTC), policy=policy)
    g = (time.perf_counter() - t) / (2 * len(targets))
    with sf() as s:
        finals = s.scalar(
            select(text("count(*)")).select_from(Item).where(Item.graded_at.is_not(None))
        )
        links = s.scalar(select(text("count(*)")).select_from(ReportItem))
        assert s.scalar(select(text("count(*)")).select_from(User)) == 2
    print(f"anchor (stored-priority top 100):   {a * 1000:8.1f} ms")
    print(f"list_queue (re-scored, top 100):    {q * 1000:8.1f} ms   x{q / a:.0f} anchor")
    print(f"dashboard (all numbers):            {d * 1000:8.1f} ms   x{d / a:.0f} anchor")
    print(
        f"claim + grade + commit per cluster: {g * 1000:8.1f} ms   x{g / a:.1f} anchor "
        f"({1 / g:.0f} gradings/s; {finals} items final, {links} report links)"
    )
    engine.dispose()


if __name__ == "__main__":
    main()
