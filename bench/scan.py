"""End-to-end `tipline scan` throughput on 2.8 MP JPEGs (target: >= 100 images/s on 2 cores).

Generates benign images (transformed scikit-image sample photographs), banks a few of them, runs
the real CLI in a subprocess with --jobs N, and prints images/s. The anchor measured in the same
run is a single-process loop that only reads each file and computes its three cryptographic
digests (the I/O floor), so the ratio says how much PDQ, matching and output cost on top.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

PHOTOS = ("coffee", "chelsea", "rocket", "hubble_deep_field", "retina", "immunohistochemistry")


def make_images(folder: Path, count: int, size: tuple[int, int] = (2048, 1365)) -> list[Path]:
    import skimage.data

    rng = np.random.default_rng(7)
    folder.mkdir(parents=True, exist_ok=True)
    bases = [Image.fromarray(getattr(skimage.data, n)()).convert("RGB") for n in PHOTOS]
    paths = []
    for i in range(count):
        base = bases[i % len(bases)]
        angle = float(rng.uniform(-8, 8))
        img = base.rotate(angle, resample=Image.Resampling.BICUBIC).resize(
            size, Image.Resampling.BICUBIC
        )
        arr = np.asarray(img, dtype=np.int16) + rng.normal(0, 2.5, (size[1], size[0], 1)).astype(
            np.int16
        )
        p = folder / f"img{i:05}.jpg"
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(p, quality=90)
        paths.append(p)
    return paths


def digest_floor(paths: list[Path]) -> float:
    start = time.perf_counter()
    for p in paths:
        data = p.read_bytes()
        hashlib.md5(data).digest()
        hashlib.sha1(data).digest()
        hashlib.sha256(data).digest()
    return len(paths) / (time.perf_counter() - start)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--count", type=int, default=400)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("bench/out"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = make_images(root / "media", args.count)
        mb = sum(p.stat().st_size for p in paths) / len(paths) / 1e6
        env = {**os.environ, "TIPLINE_DATA_DIR": str(root / "data")}
        cli = [sys.executable, "-m", "tipline"]
        subprocess.run([*cli, "bank", "create", "BENCH"], env=env, check=True)
        subprocess.run(
            [*cli, "bank", "add", "BENCH", "--file", str(paths[0]), "--file", str(paths[1])],
            env=env,
            check=True,
            capture_output=True,
        )
        floor = digest_floor(paths)
        out = root / "out.jsonl"
        start = time.perf_counter()
        res = subprocess.run(
            [*cli, "scan", str(root / "media"), "-o", str(out), "-j", str(args.jobs)],
            env=env,
            capture_output=True,
            text=True,
        )
        seconds = time.perf_counter() - start
        lines = out.read_text().splitlines()
        matched = sum(1 for line in lines if json.loads(line)["matches"])
        rate = len(lines) / seconds
        result = {
            "images": len(lines),
            "mean_mb": round(mb, 2),
            "jobs": args.jobs,
            "seconds": round(seconds, 2),
            "images_per_s": round(rate, 1),
            "digest_floor_images_per_s_1core": round(floor, 1),
            "ratio_to_floor_per_core": round(rate / args.jobs / floor, 3),
            "matched": matched,
            "exit_status": res.returncode,
        }
    print(
        f"scan end to end, {result['images']} x 2.8 MP JPEG ({mb:.2f} MB mean), "
        f"--jobs {args.jobs} (process start-up included)"
    )
    print(f"  tipline scan: {rate:.1f} images/s  ({seconds:.2f} s)")
    print(f"  anchor, read + MD5/SHA-1/SHA-256 only, 1 core: {floor:.1f} images/s")
    print(f"  ratio scan per core / anchor: {result['ratio_to_floor_per_core']}")
    target = rate >= 100
    print(f"  target >= 100 images/s on {args.jobs} cores: {'PASS' if target else 'FAIL'}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scan.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
