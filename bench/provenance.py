"""What AI provenance adds to the per-item work of `tipline scan` on 12 MP JPEGs and PNGs.

Targets: provenance adds at most 20% to the time of scanning a 12 MP JPEG and at most 50% for a
12 MP PNG. Measured in one process (the work a scan worker does per item: digests, decode, PDQ,
provenance), one BLAS thread, files already in memory, each file timed alternately with and
without provenance and the median of the repeats kept.

Images are benign: scikit-image sample photographs (never astronaut or camera) enlarged to
4000x3000 with mild noise, and a procedural landscape. Half of them carry generator metadata
in the formats tests/fixtures_provenance.py writes (A1111 EXIF UserComment, PNG parameters,
a ComfyUI workflow); the RGBA PNGs exercise the stealth-metadata check. No model makes them.

Prints a table and PASS/FAIL for both targets, twice: for every registered reader (what a scan
runs) and for the built-in metadata readers alone. Exit status 1 if a target is missed.

    python bench/provenance.py [--repeats 7] [--out bench/out]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import fixtures_provenance as fx  # noqa: E402
from tipline import provenance  # noqa: E402
from tipline.scan.hashing import HashOptions, hash_bytes  # noqa: E402

SIZE = (4000, 3000)
PHOTOS = ("coffee", "rocket", "hubble_deep_field", "chelsea")
GEN_VERSION = 1
TARGETS = {"jpeg": 0.20, "png": 0.50}
BUILTIN = ("generator_metadata", "iptc", "stealth_metadata")


def _base(i: int) -> np.ndarray:
    import skimage.data

    rng = np.random.default_rng(100 + i)
    if i % 5 == 4:
        small = fx.landscape(800, 600)
    else:
        small = np.asarray(Image.fromarray(getattr(skimage.data, PHOTOS[i % len(PHOTOS)])())
                           .convert("RGB"))  # fmt: skip
    img = Image.fromarray(small).resize(SIZE, Image.Resampling.BICUBIC)
    arr = np.asarray(img, dtype=np.int16) + rng.normal(0, 2.0, (SIZE[1], SIZE[0], 1)).astype(
        np.int16
    )
    return np.clip(arr, 0, 255).astype(np.uint8)


def make_images(folder: Path) -> dict[str, list[Path]]:
    folder = folder / f"provenance-v{GEN_VERSION}"
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, list[Path]] = {"jpeg": [], "png": []}
    comfy = json.dumps({"prompt": fx.COMFY_PROMPT, "workflow": fx.COMFY_WORKFLOW})
    specs = [
        ("jpeg", "plain"), ("jpeg", "a1111"), ("jpeg", "plain"), ("jpeg", "a1111"),
        ("png", "plain"), ("png", "a1111"), ("png", "comfy-rgba"), ("png", "plain-rgba"),
    ]  # fmt: skip
    for i, (fmt, kind) in enumerate(specs):
        p = folder / f"12MP-{i:02}-{kind}.{'jpg' if fmt == 'jpeg' else 'png'}"
        out[fmt].append(p)
        if p.exists():
            continue
        print(f"generating {p.name} ...", file=sys.stderr)
        arr = _base(i)
        if fmt == "jpeg":
            exif = fx._exif_uc(fx.A1111_INFOTEXT) if kind == "a1111" else None
            kw: dict[str, object] = {"quality": 90}
            if exif is not None:
                kw["exif"] = b"Exif\x00\x00" + exif
            Image.fromarray(arr).save(p, "JPEG", **kw)
        else:
            info = PngImagePlugin.PngInfo()
            if kind == "a1111":
                info.add_text("parameters", fx.A1111_INFOTEXT)
            elif kind.startswith("comfy"):
                data = json.loads(comfy)
                info.add_text("prompt", json.dumps(data["prompt"]))
                info.add_text("workflow", json.dumps(data["workflow"]))
            im = Image.fromarray(arr)
            if kind.endswith("rgba"):
                im = im.convert("RGBA")
            im.save(p, "PNG", pnginfo=info, compress_level=6)
    return out


def _time(fn: object, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def measure(paths: list[Path], repeats: int) -> dict[str, float]:
    off = HashOptions(provenance=False)
    on = HashOptions()
    base = full = builtin = 0.0
    for p in paths:
        data = p.read_bytes()
        hash_bytes(data, str(p), on)  # warm up (imports, plugin registration)
        b, f, m = [], [], []
        for _ in range(repeats):  # interleaved so drift hits both sides alike
            b.append(_time(lambda d=data, q=p: hash_bytes(d, str(q), off), 1))
            f.append(_time(lambda d=data, q=p: hash_bytes(d, str(q), on), 1))
            m.append(_time(lambda d=data: provenance.analyse(d, only=BUILTIN), 1))
        base += statistics.median(b)
        full += statistics.median(f)
        builtin += statistics.median(m)
    n = len(paths)
    return {
        "files": n,
        "scan_ms": 1000 * base / n,
        "scan_with_provenance_ms": 1000 * full / n,
        "builtin_readers_ms": 1000 * builtin / n,
        "overhead_all_readers": (full - base) / base,
        "overhead_builtin_readers": builtin / base,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    args = ap.parse_args()
    from threadpoolctl import threadpool_limits

    images = make_images(args.out)
    readers = [r.name for r in provenance.registered_readers() if "image" in r.kinds]
    print(f"image readers registered: {', '.join(readers)}")
    failed = False
    results = {}
    with threadpool_limits(limits=1, user_api="blas"):
        for fmt in ("jpeg", "png"):
            r = measure(images[fmt], args.repeats)
            results[fmt] = r
            print(
                f"\n12 MP {fmt.upper()} ({r['files']} files): scan {r['scan_ms']:.1f} ms/file, "
                f"with provenance {r['scan_with_provenance_ms']:.1f} ms/file; built-in metadata "
                f"readers alone {r['builtin_readers_ms']:.2f} ms/file"
            )
            for what in ("all_readers", "builtin_readers"):
                pct = r[f"overhead_{what}"]
                ok = pct <= TARGETS[fmt]
                failed |= not ok
                print(
                    f"  overhead ({what.replace('_', ' ')}): {100 * pct:+.1f}% "
                    f"(target <= {100 * TARGETS[fmt]:.0f}%): {'PASS' if ok else 'FAIL'}"
                )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "provenance.json").write_text(json.dumps(results, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
