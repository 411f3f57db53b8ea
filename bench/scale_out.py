"""Scale-out benchmark (issue 15): the local pool vs Ray on the same files, same run.

    .venv/bin/python bench/scale_out.py [--files 400] [--size 1600x1200] [--bank 50000]

It re-executes itself inside a loopback-only network namespace (``unshare -rn --pid --fork
--mount-proc``, ``ip link set lo up``) with a temporary HOME and RAY_TMPDIR, and refuses to
start Ray anywhere else. The files are benign JPEGs made here (scaled skimage photographs and
smooth noise); the bank holds random PDQ hashes plus the hashes of a few of the files (labelled
``DEMO-benign-stand-in``). Printed: local ``--jobs 2`` and ``--ray local`` (2 CPUs) files/s and
their ratio (records compared, record for record), Ray's start-up time and first-result
latency, each Ray worker's RSS, the driver's dispatch rate (listing + ``plan_units`` +
submission of no-op tasks), and a projection to N nodes.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INNER = "TIPLINE_RAY_NETNS_INNER"


def _reexec_in_namespace() -> int:
    home = Path(tempfile.mkdtemp(prefix="tb", dir="/tmp"))
    try:
        (home / "ray").mkdir()
        env = {
            **os.environ,
            INNER: "1",
            "HOME": str(home),
            "RAY_TMPDIR": str(home / "ray"),
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        cmd = shlex.join([sys.executable, *sys.argv])
        return subprocess.call(
            [
                "unshare",
                "-rn",
                "--pid",
                "--fork",
                "--mount-proc",
                "sh",
                "-c",
                f"ip link set lo up && exec {cmd}",
            ],
            env=env,
            cwd=ROOT,
        )
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _make_files(root: Path, n: int, size: tuple[int, int]) -> list[Path]:
    import numpy as np
    import skimage.data
    from PIL import Image

    photos = [
        Image.fromarray(getattr(skimage.data, k)()).convert("RGB").resize(size)
        for k in ("coffee", "rocket", "astronaut", "chelsea")
    ]
    out = []
    rng = np.random.default_rng(15)
    for i in range(n):
        if i % 2:
            img = photos[i % 4].rotate(i % 7)
        else:
            small = rng.integers(0, 256, (size[1] // 16, size[0] // 16, 3), dtype=np.uint8)
            img = Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)
        p = root / f"img{i:05}.jpg"
        img.save(p, quality=88)
        out.append(p)
    return out


def _rss_of_ray_workers() -> list[int]:
    import psutil

    rss = []
    for proc in psutil.process_iter(["cmdline", "memory_info"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if cmd.startswith("ray::") and proc.info["memory_info"] is not None:
            rss.append(proc.info["memory_info"].rss)
    return rss


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=400)
    ap.add_argument("--size", default="1600x1200")
    ap.add_argument("--bank", type=int, default=50_000, help="random PDQ entries in the bank")
    ap.add_argument("--dispatch-files", type=int, default=200_000)
    args = ap.parse_args()
    if os.environ.get(INNER) != "1":
        return _reexec_in_namespace()
    ifaces = sorted(name for _, name in socket.if_nameindex())
    if ifaces != ["lo"]:
        print(f"refusing to start Ray: interfaces {ifaces}", file=sys.stderr)
        return 1

    import numpy as np

    from tipline.index.bank_index import BankIndex
    from tipline.index.columns import bank_columns
    from tipline.scan import ray_runner, runner
    from tipline.scan.hashing import HashOptions, hash_bytes

    w, h = (int(v) for v in args.size.split("x"))
    work = Path(tempfile.mkdtemp(prefix="sb", dir="/tmp"))
    try:
        files = _make_files(work, args.files, (w, h))
        total_mb = sum(p.stat().st_size for p in files) / 1e6

        class B:
            def __init__(self, name: str) -> None:
                self.name, self.role, self.pdq_threshold, self.enabled = name, "alert", 31, True

        class E:
            def __init__(self, i: int, sig: str, label: str) -> None:
                self.id, self.bank, self.signal_type, self.signal = i, "DEMO", "pdq", sig
                self.label, self.enabled = label, True

        rng = np.random.default_rng(1)
        entries = [
            E(i + 1, "".join(f"{b:02x}" for b in rng.integers(0, 256, 32).tolist()), "random")
            for i in range(args.bank)
        ]
        for j, p in enumerate(files[1:40:4]):
            rec = hash_bytes(p.read_bytes(), str(p), HashOptions())
            entries.append(E(args.bank + j + 1, rec.pdq or "", "DEMO-benign-stand-in"))
        banks = [B("DEMO")]
        matcher = BankIndex.build(banks, entries)
        columns = bank_columns(banks, entries)
        options = HashOptions()
        paths = [str(work)]

        local: dict[str, dict[str, object]] = {}

        def sink_local(recs: list) -> None:  # type: ignore[type-arg]
            for r in recs:
                local[r.path] = r.to_json()

        t = time.perf_counter()
        runner.run_scan(paths, options, matcher, sink_local, jobs=2)
        local_s = time.perf_counter() - t

        t = time.perf_counter()
        ray_runner.connect("local", num_cpus=2)
        startup_s = time.perf_counter() - t
        got: dict[str, dict[str, object]] = {}
        first = [0.0]

        def sink_ray(recs: list) -> None:  # type: ignore[type-arg]
            if not first[0]:
                first[0] = time.perf_counter() - t
            for r in recs:
                got[r.path] = r.to_json()

        t = time.perf_counter()
        ray_runner.run_scan_ray(paths, options, columns, sink_ray)
        ray_s = time.perf_counter() - t
        same = got == local
        rss = _rss_of_ray_workers()

        # a second run on the warm cluster: steady state (workers started, index cached)
        got.clear()
        t = time.perf_counter()
        ray_runner.run_scan_ray(paths, options, columns, sink_ray)
        ray_warm_s = time.perf_counter() - t
        same = same and got == local

        # driver dispatch: plan_units + submission of no-op tasks, bounded in flight
        import ray

        tasks = [(f"/x/{i:07}.jpg", frozenset[str]()) for i in range(args.dispatch_files)]
        noop = ray.remote(num_cpus=1)(lambda unit: len(unit))
        t = time.perf_counter()
        units = ray_runner.plan_units(tasks, 40, size_of=lambda _p: 300_000)
        plan_s = time.perf_counter() - t
        inflight: list = []  # type: ignore[type-arg]
        done = 0
        for unit in units:
            if len(inflight) >= 40 * ray_runner.INFLIGHT_PER_CPU:
                ready, inflight = ray.wait(inflight, num_returns=1)
                done += sum(ray.get(ready))
            inflight.append(noop.remote(unit))
        done += sum(ray.get(inflight))
        dispatch_s = time.perf_counter() - t
        assert done == len(tasks)
        ray.shutdown()

        local_rate = len(files) / local_s
        ray_rate = len(files) / ray_s
        warm_rate = len(files) / ray_warm_s
        dispatch_rate = len(tasks) / dispatch_s
        per_core = warm_rate / 2
        result = {
            "files": len(files),
            "image": args.size,
            "mb": round(total_mb, 1),
            "bank_entries": len(entries),
            "records_equal": same,
            "local_jobs2_files_s": round(local_rate, 1),
            "ray_local_2cpu_files_s_cold": round(ray_rate, 1),
            "ray_local_2cpu_files_s_warm": round(warm_rate, 1),
            "ratio_cold": round(ray_rate / local_rate, 3),
            "ratio_warm": round(warm_rate / local_rate, 3),
            "ray_startup_s": round(startup_s, 2),
            "ray_first_result_s": round(first[0], 2),
            "ray_worker_rss_mb": [round(r / 1e6) for r in sorted(rss)],
            "dispatch_files": len(tasks),
            "plan_units_s": round(plan_s, 3),
            "dispatch_files_s": round(dispatch_rate),
            "per_core_files_s": round(per_core, 1),
            "projection_files_s": {
                f"{n} nodes x 16 cores": round(min(per_core * 16 * n, dispatch_rate))
                for n in (1, 4, 16, 64)
            },
        }
        print(json.dumps(result, indent=2))
        return 0 if same else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
