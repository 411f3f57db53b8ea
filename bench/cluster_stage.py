"""The pipeline's cluster stage at scale: placing a new item among N clustered items.

Anchor (same run): the stage's former method, reading every clustered item's PDQ from the
database and scanning them with numpy for each new item. Measured: the stage as it is now
(an in-memory multi-index-hashing index per worker, refreshed with only the assignments made
since it last looked), per item, including its transaction and commit. Half the new items are
near-duplicates of clustered ones (they must join), half are new (they start clusters).

    .venv/bin/python bench/cluster_stage.py                 # 200,000 clustered items, SQLite
    .venv/bin/python bench/cluster_stage.py --items 1000000
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from sqlalchemy import insert, select

from tipline.index.hamming import codes_from_hex
from tipline.pipeline import PipelineConfig, stages
from tipline.store import migrations
from tipline.store.base import make_engine, session_factory
from tipline.store.tables import Cluster, Item


def _flip(pdq: str, bits: int, rng: random.Random) -> str:
    value = int(pdq, 16)
    for b in rng.sample(range(256), bits):
        value ^= 1 << b
    return f"{value:064x}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=200_000)
    ap.add_argument("--new", type=int, default=200)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tipline-bench-cluster-"))
    url = f"sqlite:///{tmp / 'bench.sqlite3'}"
    migrations.upgrade(url)
    engine = make_engine(url)
    sf = session_factory(engine)
    rng = random.Random(11)
    pdqs = [f"{rng.getrandbits(256):064x}" for _ in range(args.items)]
    t = time.perf_counter()
    with sf() as s, s.begin():
        s.execute(insert(Cluster), [{"id": i + 1, "size": 1} for i in range(args.items)])
        for lo in range(0, args.items, 50_000):
            s.execute(
                insert(Item),
                [
                    {
                        "id": i + 1,
                        "sha256": f"{i + 1:064x}",
                        "pdq": pdqs[i],
                        "pdq_quality": 100,
                        "status": "hashed",
                        "cluster_id": i + 1,
                        "clustered_seq": i + 1,
                    }
                    for i in range(lo, min(lo + 50_000, args.items))
                ],
            )
    print(f"{args.items:,} clustered items in SQLite (built in {time.perf_counter() - t:.1f} s)")
    cfg = PipelineConfig(match=lambda record: [])
    new_pdqs = []
    for k in range(args.new):
        if k % 2 == 0:
            new_pdqs.append(_flip(pdqs[rng.randrange(args.items)], 8, rng))
        else:
            new_pdqs.append(f"{rng.getrandbits(256):064x}")
    with sf() as s, s.begin():
        base = args.items + 1
        s.execute(
            insert(Item),
            [
                {
                    "id": base + k,
                    "sha256": f"{base + k:064x}",
                    "pdq": p,
                    "pdq_quality": 100,
                    "status": "hashed",
                }
                for k, p in enumerate(new_pdqs)
            ],
        )

    def old_way(pdq: str) -> None:
        with sf() as s:
            rows = s.execute(
                select(Item.pdq, Item.cluster_id).where(
                    Item.cluster_id.is_not(None), Item.pdq.is_not(None)
                )
            ).all()
            codes = codes_from_hex([str(r[0]) for r in rows])
            dist = np.unpackbits(np.bitwise_xor(codes, codes_from_hex([pdq])), axis=1).sum(1)
            int(np.argmin(dist))

    anchor = statistics.median(_time(old_way, p) for p in new_pdqs[:3])
    first = time.perf_counter()
    times = []
    for k in range(args.new):
        t0 = time.perf_counter()
        with sf() as s, s.begin():
            stages.stage_cluster(s, {"item_id": base + k}, cfg)
        times.append(time.perf_counter() - t0)
    total = time.perf_counter() - first
    with sf() as s:
        joined = sum(
            1
            for k in range(0, args.new, 2)
            if (s.get(Item, base + k) or Item()).cluster_id not in (None, base + k)
            and (s.get(Item, base + k) or Item()).cluster_id <= args.items  # type: ignore[operator]
        )
    per = statistics.median(times[1:])
    print(f"anchor (former full scan, per item):  {anchor * 1000:9.1f} ms")
    print(f"stage now, first item (index build):  {times[0] * 1000:9.1f} ms")
    print(
        f"stage now, per item (median):         {per * 1000:9.2f} ms   {anchor / per:.0f}x faster"
    )
    print(
        f"{args.new} items placed in {total:.1f} s; "
        f"near-duplicates joined: {joined}/{args.new // 2}"
    )
    engine.dispose()


def _time(fn, arg) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    fn(arg)
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
