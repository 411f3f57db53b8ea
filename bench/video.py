"""Benchmark vPDQ video hashing: Tipline fast vs Tipline reference vs the ``vpdq`` package.

Clips are 1080p H.264 made by this script (cached under ``bench/out/videos/``): pans, zooms
and a slideshow with hard cuts over scikit-image sample photographs and a procedural animation
(``tipline.demo.clips``), with film grain so the bit rate is camera-like (several Mbit/s), each
with a different keyframe interval (the encoder's default of up to 250 frames, 2 s and 1 s).
Copies are re-encoded (another quality and keyframe interval) and resized (720p, 360p).

Speed: seconds of hashing per minute of video (CPU seconds of this single-threaded process,
BLAS and decoders limited to one thread; --pin also pins it to one CPU), for each mode and for
``vpdq.computeHash`` (when the package is installed; it needs FFmpeg's development headers to
build). Real-time factor = 60 / that.

Agreement: a bank holds the reference-mode hashes of the originals (what partners' vpdq lists
hold). Every clip and copy is matched against it with the python-threatexchange rule (query >=
80 %, index >= 0 %, distance <= 31, quality >= 50) once hashed in reference mode and once in
fast mode; the decisions must be the same. Also reported: the same with a bank hashed in fast
mode, and whether reference mode is bit-identical to the ``vpdq`` package.

    .venv/bin/python bench/video.py            # ~2-3 minutes the first time (clips are made)
    .venv/bin/python bench/video.py --check    # exit 1 if a target fails
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402

from tipline.config import Limits  # noqa: E402
from tipline.demo.clips import encode_frames, frame_source, transcode  # noqa: E402
from tipline.index.vpdq import VpdqFrameIndex  # noqa: E402
from tipline.media.sniff import MP4  # noqa: E402
from tipline.media.video import VideoMode, sample_frames  # noqa: E402
from tipline.signals.vpdq import (  # noqa: E402
    VpdqFrame,
    VpdqHash,
    VpdqMatchOptions,
    hash_sample,
)

HERE = Path(__file__).resolve().parent
GEN_VERSION = 1
FPS = 30
HD = (1920, 1080)
TARGET_REALTIME = 30.0
LIMITS = Limits()

#: (name, clip kind, seconds, keyframe interval in frames or None for x264's default)
ORIGINALS: tuple[tuple[str, str, float, int | None], ...] = (
    ("pan-coffee", "pan-coffee", 20.0, None),
    ("slideshow", "slideshow", 20.0, 60),
    ("shapes", "shapes", 20.0, 30),
)
#: (suffix, size or None, crf, keyframe interval)
COPIES: tuple[tuple[str, tuple[int, int] | None, int, int | None], ...] = (
    ("reencoded", None, 30, 48),
    ("720p", (1280, 720), 26, None),
    ("360p", (640, 360), 26, 90),
)


def _grainy(
    fn: Callable[[float], npt.NDArray[np.uint8]], n: int
) -> Iterator[npt.NDArray[np.uint8]]:
    """Frames with monochrome film grain (8 noise fields cycled), like sensor noise."""
    rng = np.random.default_rng(1)
    fields = [rng.normal(0, 5, (HD[1], HD[0], 1)).astype(np.int16) for _ in range(8)]
    for i in range(n):
        f = fn(i / FPS).astype(np.int16)
        f += fields[i % len(fields)]
        yield np.clip(f, 0, 255).astype(np.uint8)


def build(out: Path, log: Callable[[str], None]) -> dict[str, dict[str, Any]]:
    """name -> {path, original, variant, seconds}; made once and cached."""
    d = out / "videos" / f"v{GEN_VERSION}"
    d.mkdir(parents=True, exist_ok=True)
    clips: dict[str, dict[str, Any]] = {}
    for name, kind, seconds, gop in ORIGINALS:
        p = d / f"{name}-1080p.mp4"
        if not p.exists():
            t = time.perf_counter()
            n = round(seconds * FPS)
            tmp = p.with_suffix(".tmp.mp4")
            encode_frames(tmp, _grainy(frame_source(kind, HD, seconds), n), HD, FPS, gop=gop)
            tmp.rename(p)
            log(f"  made {p.name} in {time.perf_counter() - t:.0f} s")
        clips[p.stem] = {"path": p, "original": name, "variant": "original", "seconds": seconds}
        for suffix, size, crf, cgop in COPIES:
            c = d / f"{name}-{suffix}.mp4"
            if not c.exists():
                t = time.perf_counter()
                tmp = c.with_suffix(".tmp.mp4")
                transcode(p, tmp, size, crf=crf, gop=cgop)
                tmp.rename(c)
                log(f"  made {c.name} in {time.perf_counter() - t:.0f} s")
            clips[c.stem] = {"path": c, "original": name, "variant": suffix, "seconds": seconds}
    return clips


def hash_clip(path: Path, mode: VideoMode) -> VpdqHash:
    frames = []
    for s in sample_frames(path, MP4, LIMITS, mode):
        h = hash_sample(s)
        frames.append(VpdqFrame(h.hex, h.quality, s.timestamp))
    return VpdqHash(tuple(frames))


def vpdq_package(path: Path) -> VpdqHash:
    import vpdq

    feats = vpdq.computeHash(str(path), seconds_per_hash=1.0, thread_count=1)
    return VpdqHash(tuple(VpdqFrame(f.hex, f.quality, f.timestamp) for f in feats))


def timed(fn: Callable[[], VpdqHash], repeats: int) -> tuple[VpdqHash, float, float]:
    """(result, best CPU seconds, best wall seconds) over ``repeats`` runs."""
    best_cpu = best_wall = float("inf")
    result = VpdqHash()
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        result = fn()
        best_cpu = min(best_cpu, time.process_time() - c0)
        best_wall = min(best_wall, time.perf_counter() - w0)
    return result, best_cpu, best_wall


@dataclass
class Decision:
    query: str
    entry: str
    reference: bool
    fast: bool
    fast_bank: bool
    ref_pct: float
    fast_pct: float


def decisions(
    names: list[str],
    originals: list[str],
    hashes: dict[str, dict[str, VpdqHash]],
    opts: VpdqMatchOptions,
) -> list[Decision]:
    banks: dict[str, VpdqFrameIndex] = {}
    for mode in ("reference", "fast"):
        idx = VpdqFrameIndex(opts)
        for i, o in enumerate(originals):
            idx.add(i, hashes[mode][o])
        banks[mode] = idx
    out = []
    for q in names:
        ref = dict(banks["reference"].search(hashes["reference"][q]))
        fast = dict(banks["reference"].search(hashes["fast"][q]))
        ff = dict(banks["fast"].search(hashes["fast"][q]))
        for i, o in enumerate(originals):
            r, f, b = ref.get(i), fast.get(i), ff.get(i)
            out.append(
                Decision(
                    q,
                    o,
                    bool(r and r.is_match(opts)),
                    bool(f and f.is_match(opts)),
                    bool(b and b.is_match(opts)),
                    r.query_pct if r else 0.0,
                    f.query_pct if f else 0.0,
                )
            )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per clip and hasher")
    ap.add_argument("--out", type=Path, default=HERE / "out")
    ap.add_argument("--pin", action="store_true", help="pin the process to one CPU")
    ap.add_argument("--no-vpdq", action="store_true", help="skip the vpdq package")
    ap.add_argument("--check", action="store_true", help="exit 1 if a target fails")
    args = ap.parse_args()
    cpu = None
    if args.pin and hasattr(os, "sched_setaffinity"):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)

    def log(msg: str) -> None:
        print(msg, flush=True)

    log("clips (1080p H.264, cached):")
    clips = build(args.out, log)
    have_vpdq = False
    if not args.no_vpdq:
        try:
            import vpdq  # noqa: F401

            have_vpdq = True
        except ImportError:
            log("the vpdq package is not installed: its column is skipped")

    # -- speed on the 1080p originals
    originals = [n for n, c in clips.items() if c["variant"] == "original"]
    speed: dict[str, dict[str, float]] = {"fast": {}, "reference": {}, "vpdq": {}}
    hashes: dict[str, dict[str, VpdqHash]] = {"fast": {}, "reference": {}, "vpdq": {}}
    total_seconds = sum(clips[n]["seconds"] for n in originals)
    log(f"\nspeed: {len(originals)} clips, {total_seconds:.0f} s of 1080p30 video")
    header = f"{'clip':18s} {'keyint':>7s} {'Mbit/s':>6s} " + " ".join(
        f"{h:>16s}" for h in ("fast s/min", "reference s/min", "vpdq s/min")
    )
    log(header)
    for n in originals:
        p: Path = clips[n]["path"]
        secs = clips[n]["seconds"]
        mbps = p.stat().st_size * 8 / secs / 1e6
        gop = next(g for name, _, _, g in ORIGINALS if f"{name}-1080p" == n)
        row = f"{n:18s} {gop or 'x264':>7} {mbps:6.1f} "
        for mode in ("fast", "reference", "vpdq"):
            if mode == "vpdq" and not have_vpdq:
                row += f" {'-':>16s}"
                continue
            repeats = args.repeats if mode == "fast" else 1
            fn = (
                (lambda p=p: vpdq_package(p))
                if mode == "vpdq"
                else (lambda p=p, m=mode: hash_clip(p, m))
            )  # type: ignore[misc]
            h, cpu_s, _wall = timed(fn, repeats)
            hashes[mode][n] = h
            speed[mode][n] = cpu_s
            row += f" {cpu_s / secs * 60:9.2f} ({len(h):3d}f)"
        log(row)
    per_min = {m: sum(v.values()) / total_seconds * 60 for m, v in speed.items() if v}
    log(
        "total            "
        + "".join(f"  {m}: {s:.2f} s/min ({60 / s:.0f}x real time)" for m, s in per_min.items())
    )
    if "vpdq" in per_min:
        log(
            f"ratios: fast is {per_min['vpdq'] / per_min['fast']:.1f}x faster than vpdq, "
            f"reference {per_min['vpdq'] / per_min['reference']:.2f}x vpdq's speed"
        )

    # -- hashes of the copies (not timed)
    copies = [n for n in clips if n not in originals]
    for n in copies:
        for mode in ("fast", "reference"):
            hashes[mode][n] = hash_clip(clips[n]["path"], mode)  # type: ignore[arg-type]
    identical = None
    if have_vpdq:
        same = [
            hashes["reference"][n].to_te_json() == hashes["vpdq"][n].to_te_json() for n in originals
        ]
        identical = all(same)
        log(f"\nreference mode vs vpdq package: {sum(same)}/{len(same)} clips bit-identical")

    # -- match agreement
    opts = VpdqMatchOptions()
    names = list(clips)
    ds = decisions(names, originals, hashes, opts)
    agree = sum(d.reference == d.fast for d in ds)
    agree_ff = sum(d.reference == d.fast_bank for d in ds)
    expected = sum(
        d.reference == (clips[d.query]["original"] == clips[d.entry]["original"]) for d in ds
    )
    log(f"\nmatch decisions, {len(names)} clips x {len(originals)} banked originals:")
    log(
        f"{'query':22s} {'banked':18s} {'ref':>5s} {'fast':>5s} {'ref q%':>7s} "
        f"{'fast q%':>7s} {'fast bank':>9s}"
    )
    for d in ds:
        if d.reference or d.fast or d.fast_bank:
            log(
                f"{d.query:22s} {d.entry:18s} {d.reference!s:>5s} {d.fast!s:>5s} "
                f"{d.ref_pct:7.1f} {d.fast_pct:7.1f} {d.fast_bank!s:>9s}"
            )
    log(f"fast query vs reference bank: {agree}/{len(ds)} decisions equal to reference mode")
    log(f"fast query vs fast bank:      {agree_ff}/{len(ds)} decisions equal to reference mode")
    log(f"reference mode finds every copy and nothing else: {expected}/{len(ds)}")

    fast_rt = 60 / per_min["fast"]
    targets = {
        f"fast mode >= {TARGET_REALTIME:.0f}x real time on one core": fast_rt >= TARGET_REALTIME,
        "fast mode: same match decisions as reference mode": agree == len(ds),
    }
    if identical is not None:
        targets["reference mode bit-identical to the vpdq package"] = identical
    log("")
    for name, ok in targets.items():
        log(f"{'PASS' if ok else 'FAIL'}  {name}")

    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "machine": {
            "python": platform.python_version(),
            "cpu": platform.processor(),
            "pinned_cpu": cpu,
        },
        "seconds_per_minute": per_min,
        "realtime_factor": {m: 60 / s for m, s in per_min.items()},
        "per_clip_cpu_seconds": speed,
        "frames": {m: {n: len(h) for n, h in v.items()} for m, v in hashes.items()},
        "agreement": {
            "fast_vs_reference_bank": [agree, len(ds)],
            "fast_vs_fast_bank": [agree_ff, len(ds)],
        },
        "reference_identical_to_vpdq": identical,
        "targets": targets,
    }
    (args.out / "video.json").write_text(json.dumps(result, indent=2, default=str))
    return 1 if args.check and not all(targets.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
