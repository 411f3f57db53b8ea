"""`dedupe` clustering at scale: N items (default 1M) on 2 cores (target: under 10 minutes).

Items are the realistic synthetic PDQ bank of ``synthetic.py`` (hashes of benign
procedural and sample images expanded into near-duplicate clumps, mixed with uniform codes),
with a share of exact SHA-256 duplicates. The anchor measured in the same run is the time to
build the index alone, so the ratio says what the radius self-join and union-find add.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from synthetic import realistic_bank  # bench/synthetic.py (run as a script: bench/ is on the path)
from tipline.index.mih import default_index
from tipline.record import ItemRecord
from tipline.triage.clusters import cluster_records


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--threshold", type=int, default=31)
    ap.add_argument("--out", type=Path, default=Path("bench/out"))
    args = ap.parse_args()

    t0 = time.perf_counter()
    codes = realistic_bank(args.items)
    rng = np.random.default_rng(5)
    dup = rng.random(args.items) < 0.05  # 5% exact re-uploads of another item
    src = rng.integers(0, args.items, args.items)
    records = []
    for i in range(args.items):
        j = int(src[i]) if dup[i] else i
        records.append(
            ItemRecord(
                path=f"item{i:08}",
                sha256=f"{j:064x}",
                pdq=codes[j].tobytes().hex(),
                pdq_quality=100,
                size=1000,
            )
        )
    gen_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    idx = default_index(len(codes))
    idx.add(np.arange(len(codes), dtype=np.int64), codes)
    anchor_s = time.perf_counter() - t0
    del idx

    t0 = time.perf_counter()
    clusters = cluster_records(records, args.threshold, jobs=args.jobs)
    cluster_s = time.perf_counter() - t0
    multi = sum(1 for c in clusters if c.size > 1)
    result = {
        "items": args.items,
        "jobs": args.jobs,
        "threshold": args.threshold,
        "generate_s": round(gen_s, 1),
        "index_build_s (anchor)": round(anchor_s, 2),
        "cluster_s": round(cluster_s, 1),
        "ratio_to_anchor": round(cluster_s / anchor_s, 1),
        "clusters": len(clusters),
        "clusters_with_duplicates": multi,
        "largest_cluster": clusters[0].size if clusters else 0,
    }
    for k, v in result.items():
        print(f"{k:28} {v}")
    ok = cluster_s < 600
    print(
        f"target: {args.items:,} items clustered in < 600 s on {args.jobs} cores: "
        f"{'PASS' if ok else 'FAIL'} ({cluster_s:.0f} s)"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cluster.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
