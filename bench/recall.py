"""Recall beyond plain PDQ against a partner-style bank, with false positives and costs.

    .venv/bin/python bench/recall.py                  # 63 originals, 100,000 unrelated
    .venv/bin/python bench/recall.py --unrelated 5000 # quicker
    .venv/bin/python bench/recall.py --check          # exit 1 if recall < 90% or FP > 0

* **Bank**: the full-resolution reference PDQ (``pdq.reference_hash``) of the originals: the
  scikit-image sample photographs that show no people (``synthetic.PHOTOS``) and procedural
  colour scenes drawn here (gradients, shapes, textures, text-like blocks), 63 in all, in
  landscape, portrait and square shapes, threshold 31 (the bank default).
* **Queries**: each original under 11 transforms (``TRANSFORMS``), saved as JPEG q90 (q50 for
  ``jpeg_q50``) and hashed as ``tipline scan`` does (fast mode, ``hash_bytes``), then matched
  with ``BankIndex.match``. Recall per transform for: plain PDQ, + dihedral, + border
  trimming, + re-crop queries, and all of them (what ``scan`` and the pipeline now do).
* **False positives**: ``--unrelated`` (default 100,000) benign images, 128-256 px, hashed
  in a process pool with every option on: two in three from the synthetic generator's
  procedural kinds (``synthetic.PROCEDURAL``: gradients, radial waves, shapes, value/fractal
  noise, stripes/checkers, text-like pages, near-flat images; colourised), one in three a
  random crop (30-100 % per axis, resized) of a scikit-image sample photograph, as
  ``synthetic``'s seed images are. A photograph is itself a bank original, so its crops are
  compared with the other 62 entries only (leave-one-out: a crop of a banked original is a
  true match). An image whose any query hash is within 31 of an entry it is compared with is a
  false positive; "new" ones are those its own hash does not find (found only through
  dihedral, trimming or re-crop queries). Nothing is cached.
* **Cost**: ms per item of ``hash_bytes`` with each option (same JPEGs, one process), and
  queries per item (PDQ values looked up).
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import io  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image, ImageDraw, ImageFilter, ImageFont  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import synthetic  # noqa: E402
from tipline.index.bank_index import BankIndex  # noqa: E402
from tipline.record import ItemRecord  # noqa: E402
from tipline.scan.hashing import HashOptions, hash_bytes  # noqa: E402
from tipline.signals import pdq, pdq_variants  # noqa: E402
from tipline.signals.types import PDQ  # noqa: E402

THRESHOLD = 31
BASE = HashOptions(pdq_mode="fast", provenance=False)
#: option sets compared: name -> the query groups (``via``) a match may come through
CONFIGS: dict[str, set[str | None]] = {
    "plain": {None},
    "+dihedral": {None, "dihedral"},
    "+trim": {None, "border_trimmed"},
    "+crops": {None, *pdq_variants.CROPS},
    "all": {None, "dihedral", "border_trimmed", *pdq_variants.CROPS},
}
OPTIONS = {
    "plain": BASE,
    "+dihedral": replace(BASE, dihedral=True),
    "+trim": replace(BASE, trim_borders=True),
    "+crops": replace(BASE, crop_queries=True),
    "all": replace(BASE, dihedral=True, trim_borders=True, crop_queries=True),
}

# ----------------------------------------------------------------------------- originals


def _scene(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A benign procedural colour scene: smooth colour fields, shapes, a texture patch and a
    few text-like blocks."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.empty((h, w, 3), np.float32)
    for c in range(3):
        fx, fy, ph = rng.uniform(0.3, 2.5, size=3)
        out[..., c] = 0.5 + 0.4 * np.sin(fx * x / w * 6.28 + ph) * np.cos(fy * y / h * 6.28 + c)
    im = Image.fromarray((np.clip(out, 0, 1) * 255).astype(np.uint8))
    d = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(3, 9))):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        r = rng.uniform(0.04, 0.25) * min(w, h)
        col = tuple(int(v) for v in rng.integers(0, 256, 3))
        box = (cx - r, cy - r * rng.uniform(0.5, 1.5), cx + r, cy + r)
        if rng.random() < 0.5:
            d.ellipse(box, fill=col)
        else:
            d.rectangle(box, fill=col)
    for _ in range(int(rng.integers(0, 4))):  # text-like blocks
        x0, y0 = rng.uniform(0, 0.7) * w, rng.uniform(0, 0.8) * h
        for k in range(int(rng.integers(2, 6))):
            ww = rng.uniform(0.05, 0.25) * w
            d.rectangle((x0, y0 + k * 12, x0 + ww, y0 + k * 12 + 6), fill=(20, 20, 20))
    arr = np.asarray(im, np.float32)
    arr += rng.normal(0, 3, arr.shape).astype(np.float32)
    return np.clip(arr, 0, 255).astype(np.uint8)


SHAPES = ((640, 480), (480, 640), (560, 560), (720, 405))


def originals(n_scenes: int = 45, seed: int = 11) -> list[tuple[str, np.ndarray]]:
    import skimage.data

    out: list[tuple[str, np.ndarray]] = []
    for i, name in enumerate(synthetic.PHOTOS):
        arr = np.asarray(Image.fromarray(getattr(skimage.data, name)()).convert("RGB"))
        w, h = SHAPES[i % len(SHAPES)]
        im = Image.fromarray(arr)
        s = min(w / im.width, h / im.height, 1.5)
        im = im.resize((max(16, int(im.width * s)), max(16, int(im.height * s))), Image.LANCZOS)
        out.append((f"photo:{name}", np.asarray(im)))
    rng = np.random.default_rng(seed)
    for i in range(n_scenes):
        w, h = SHAPES[i % len(SHAPES)]
        out.append((f"scene:{i}", _scene(rng, w, h)))
    return out


# ---------------------------------------------------------------------------- transforms


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    for p in ("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",):
        if Path(p).exists():
            return ImageFont.truetype(p, size)
    return ImageFont.load_default(size)


def _caption(im: Image.Image) -> Image.Image:
    """Meme-style caption band above the picture: white, 18% of its height, black text of
    neutral placeholder words."""
    bh = int(im.height * 0.18)
    out = Image.new("RGB", (im.width, im.height + bh), (255, 255, 255))
    out.paste(im, (0, bh))
    d = ImageDraw.Draw(out)
    d.text((im.width * 0.06, bh * 0.25), "BLUEBIRD TEAPOT-42 WHEN THE", fill=(0, 0, 0),
           font=_font(max(8, int(bh * 0.3))))  # fmt: skip
    return out


def _blur_fill(im: Image.Image) -> Image.Image:
    """The social-video still: the picture centred on a 16:9 frame (9:16 for a landscape
    picture) whose margins are a blurred, zoomed copy of it."""
    w, h = im.size
    if w > h:  # landscape in a portrait frame: blurred bands above and below
        fw, fh = w, int(w * 16 / 9)
    else:
        fh, fw = h, int(h * 16 / 9)
    s = max(fw / w, fh / h)
    bg = im.resize((int(w * s) + 1, int(h * s) + 1), Image.BILINEAR)
    bg = bg.crop(((bg.width - fw) // 2, (bg.height - fh) // 2, (bg.width + fw) // 2,
                  (bg.height + fh) // 2)).resize((fw, fh))  # fmt: skip
    bg = bg.filter(ImageFilter.GaussianBlur(radius=max(fw, fh) / 40))
    bg.paste(im, ((fw - w) // 2, (fh - h) // 2))
    return bg


def _crop(im: Image.Image, pct: float) -> Image.Image:
    dx, dy = int(im.width * pct / 100), int(im.height * pct / 100)
    return im.crop((dx, dy, im.width - dx, im.height - dy))


def _border(im: Image.Image) -> Image.Image:
    p = int(max(im.size) * 0.08)
    out = Image.new("RGB", (im.width + 2 * p, im.height + 2 * p), (0, 0, 0))
    out.paste(im, (p, p))
    return out


TRANSFORMS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "jpeg_q50": lambda im: im,
    "resize_half": lambda im: im.resize((im.width // 2, im.height // 2), Image.BILINEAR),
    "blur": lambda im: im.filter(ImageFilter.GaussianBlur(2)),
    "brightness": lambda im: Image.eval(im, lambda v: min(255, int(v * 1.25 + 10))),
    "rotate_90": lambda im: im.transpose(Image.Transpose.ROTATE_90),
    "flip": lambda im: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
    "border_8pct": _border,
    "crop_2pct": lambda im: _crop(im, 2),
    "crop_5pct": lambda im: _crop(im, 5),
    "caption_band": _caption,
    "pillarbox_blur": _blur_fill,
}


def jpeg(im: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


class _Bank:
    name, role, pdq_threshold, enabled = "B", "alert", THRESHOLD, True


class _Entry:
    def __init__(self, eid: int, signal: str) -> None:
        self.id, self.bank, self.signal_type, self.signal = eid, "B", "pdq", signal
        self.label, self.enabled = "DEMO-benign-stand-in", True


def build_bank(origs: list[tuple[str, np.ndarray]]) -> tuple[BankIndex, list[str]]:
    codes = [pdq.reference_hash(a)[0] for _, a in origs]
    usable = [c.hex for c in codes]
    index = BankIndex.build([_Bank()], [_Entry(i + 1, h) for i, h in enumerate(usable)])
    return index, usable


def restrict(rec: ItemRecord, groups: set[str | None]) -> ItemRecord:
    """The record with only the query hashes of ``groups``."""
    return ItemRecord(
        path=rec.path,
        pdq=rec.pdq,
        pdq_quality=rec.pdq_quality,
        pdq_dihedral=rec.pdq_dihedral if "dihedral" in groups else None,
        pdq_variants={k: v for k, v in (rec.pdq_variants or {}).items() if k in groups} or None,
    )


def recall(
    origs: list[tuple[str, np.ndarray]], index: BankIndex
) -> tuple[dict[str, dict[str, float]], dict[str, list[float]], list[int]]:
    """Per transform and config: share of originals found (their own entry matched)."""
    found: dict[str, dict[str, int]] = {t: dict.fromkeys(CONFIGS, 0) for t in TRANSFORMS}
    times: dict[str, list[float]] = {c: [] for c in OPTIONS}
    queries: list[int] = []
    for i, (_, arr) in enumerate(origs):
        im = Image.fromarray(arr)
        for t, fn in TRANSFORMS.items():
            data = jpeg(fn(im), 50 if t == "jpeg_q50" else 90)
            for c, opts in OPTIONS.items():
                t0 = time.perf_counter()
                rec = hash_bytes(data, "q.jpg", opts)
                matches = index.match(rec)
                times[c].append(time.perf_counter() - t0)
                if c == "all":
                    queries.append(len(PDQ.record_queries(rec)))
                    for cfg, groups in CONFIGS.items():
                        if any(m.entry_id == i + 1 for m in index.match(restrict(rec, groups))):
                            found[t][cfg] += 1
                    del matches
    n = len(origs)
    return ({t: {c: v / n for c, v in row.items()} for t, row in found.items()}, times, queries)


# ---------------------------------------------------------------------------- unrelated

_BANK_CODES: np.ndarray | None = None
_PHOTOS: list[np.ndarray] = []


def _codes(hexes: list[str]) -> np.ndarray:
    return np.frombuffer(b"".join(bytes.fromhex(h) for h in hexes), np.uint8).reshape(-1, 32)


def _unrelated_image(seed: int, k: int) -> tuple[str, int | None, np.ndarray]:
    """Unrelated image ``k``: (kind, the bank entry it must not be compared with, luma)."""
    rng = np.random.default_rng((seed, k))
    h, w = (int(v) for v in rng.integers(128, 257, 2))
    if _PHOTOS and k % 3 == 0:
        j = int(rng.integers(0, len(_PHOTOS)))
        p = _PHOTOS[j]
        ph, pw = p.shape
        ch, cw = int(ph * rng.uniform(0.3, 1.0)), int(pw * rng.uniform(0.3, 1.0))
        y0, x0 = int(rng.integers(0, ph - ch + 1)), int(rng.integers(0, pw - cw + 1))
        crop = synthetic._resize(p[y0 : y0 + ch, x0 : x0 + cw], h, w)
        return f"photo:{synthetic.PHOTOS[j]}", j, np.clip(crop, 0, 255).astype(np.uint8)
    fn = synthetic.PROCEDURAL[k % len(synthetic.PROCEDURAL)]
    planes = [fn(rng, h, w) for _ in range(3)] if rng.random() < 0.5 else [fn(rng, h, w)] * 3
    rgb = np.clip(np.stack(planes, axis=2), 0, 255).astype(np.uint8)
    return fn.__name__, None, np.asarray(Image.fromarray(rgb).convert("L"))


def _unrelated_chunk(args: tuple[int, int, int]) -> tuple[int, int, list[str], int]:
    """(images, images with a usable own hash, false positives as kind:query:distance, how
    many of them the own hash alone does not find)."""
    seed, start, count = args
    assert _BANK_CODES is not None
    full = np.unpackbits(_BANK_CODES, axis=1).astype(np.int16)
    fp_kinds: list[str] = []
    usable = new = 0
    for k in range(start, start + count):
        kind, skip, y = _unrelated_image(seed, k)
        h, w = y.shape
        bank = full if skip is None else np.delete(full, skip, axis=0)
        own = pdq.fast_hash(y, dihedral=True)
        if not own[0].usable:
            hexes: dict[str, list[str]] = {}
        else:
            usable += 1
            hexes = {"own": [own[0].hex], "dihedral": [x.hex for x in own[1:]]}
        for name, v in pdq_variants.variants(y, h, w).items():
            hexes[name] = [v]
        hit: list[str] = []
        for name, vals in hexes.items():
            q = np.unpackbits(_codes(vals), axis=1).astype(np.int16)
            d = (q[:, None, :] != bank[None, :, :]).sum(axis=2)
            if (d <= THRESHOLD).any():
                hit.append(name)
                fp_kinds.append(f"{kind}:{name}:{int(d.min())}")
        new += bool(hit) and "own" not in hit
    return count, usable, fp_kinds, new


def _init(codes: np.ndarray) -> None:
    import skimage.data

    global _BANK_CODES
    _BANK_CODES = codes
    _PHOTOS[:] = [synthetic._to_luma(getattr(skimage.data, n)()) for n in synthetic.PHOTOS]


def unrelated(
    bank_hex: list[str], n: int, jobs: int, seed: int = 777, offset: int = 0
) -> tuple[int, list[str], int]:
    """(usable own hashes, false positives, new false positives) over ``n`` unrelated images;
    the bank's first ``len(synthetic.PHOTOS)`` entries are the photographs, in that order."""
    codes = _codes(bank_hex)
    chunk = 500
    tasks = [(seed, offset + s, min(chunk, n - s)) for s in range(0, n, chunk)]
    fps: list[str] = []
    usable = new = 0
    with ProcessPoolExecutor(jobs, initializer=_init, initargs=(codes,)) as pool:
        for _, u, f, nw in pool.map(_unrelated_chunk, tasks):
            usable += u
            new += nw
            fps.extend(f)
    return usable, fps, new


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--unrelated", type=int, default=100_000)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument(
        "--offset", type=int, default=0, help="unrelated images OFFSET..OFFSET+N-1 (split a run)"
    )
    ap.add_argument("--no-recall", action="store_true", help="false positives only")
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)

    origs = originals()
    index, bank_hex = build_bank(origs)
    print(f"bank: {len(bank_hex)} originals (reference PDQ, threshold {THRESHOLD})")
    overall: dict[str, float] = {}
    if not args.no_recall:
        t0 = time.perf_counter()
        table, times, queries = recall(origs, index)
        print(f"recall ({len(origs)} originals x {len(TRANSFORMS)} transforms, fast-mode scan)")
        print(f"{'transform':16}" + "".join(f"{c:>11}" for c in CONFIGS))
        for t, row in table.items():
            print(f"{t:16}" + "".join(f"{100 * row[c]:10.1f}%" for c in CONFIGS))
        overall = {c: float(np.mean([row[c] for row in table.values()])) for c in CONFIGS}
        print(f"{'ALL':16}" + "".join(f"{100 * overall[c]:10.1f}%" for c in CONFIGS))
        print(f"(recall pass {time.perf_counter() - t0:.0f} s)")
        print("\ncost per item (hash_bytes + BankIndex.match, one process, these JPEGs)")
        base = float(np.median(times["plain"])) * 1000
        for c, ts in times.items():
            ms = float(np.median(ts)) * 1000
            print(f"  {c:10} {ms:7.2f} ms median  (+{ms - base:5.2f} ms)")
        print(
            f"  queries per item with every option: mean {np.mean(queries):.2f}, max {max(queries)}"
        )

    t0 = time.perf_counter()
    usable, fps, new = unrelated(bank_hex, args.unrelated, args.jobs, offset=args.offset)
    photos = len(range(-args.offset % 3, args.unrelated, 3))
    print(
        f"\nfalse positives: {len(fps)} query hashes within {THRESHOLD} of an entry, {new} new "
        f"(not found by the own hash), of {args.unrelated:,} unrelated images "
        f"(#{args.offset:,}.., {photos:,} photograph crops, leave-one-out; "
        f"{usable:,} with a usable own hash; every option on) "
        f"in {time.perf_counter() - t0:.0f} s"
    )
    for f in fps[:20]:
        print("  ", f)
    if args.no_recall:
        ok = not fps
        print(f"\nfalse-positive target (0 at threshold {THRESHOLD}): {'met' if ok else 'NOT met'}")
    else:
        ok = overall["all"] >= 0.90 and not fps
        print(f"\ntarget (>= 90% over the 11 transforms, 0 FP): {'met' if ok else 'NOT met'}")
    return 1 if (args.check and not ok) else 0


if __name__ == "__main__":
    raise SystemExit(main())
