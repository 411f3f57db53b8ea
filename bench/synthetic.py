"""Seeded generator of realistic, benign PDQ banks for benchmarks and tests.

Uniform random codes flatter any Hamming index: every bucket of a multi-index hash holds about
the same number of codes. Real hash lists are clumpy: near-duplicate variants of one image, many
images of the same kind (whose hashes share low-frequency bits), low-detail images whose hashes
crowd together. This module makes banks with that structure from real PDQ hashes of benign
images, without hashing millions of images:

1. **Seed hashes** (``seed_hashes``): ``fast_hash`` of a few thousand images made here: the
   non-person sample photographs that scikit-image ships (random crops) and procedural images
   (linear/radial gradients, shapes, value noise at several scales, fractal noise, stripes and
   checkers, text-like blocks, near-flat low-detail images). Each base image also yields
   near-duplicate variants (crop, resize, brightness, contrast, gamma, noise, blur, small
   rotation, a watermark box, padding), which are hashed too. No image shows a person.
2. **Bit-flip weights**: how often each of the 256 bits differs between a variant and its
   original, measured on the seed hashes (+1 smoothing, mean 1). Perturbations use these
   weights, so they flip the bits that real edits flip.
3. **Expansion** (``realistic_bank``) of ``n`` codes, default mix (``Mix``):

   - 35% ``uniform``: uniform random 256-bit codes;
   - 45% ``derived``: a seed hash with 32..120 weighted bit flips (skewed to ~60): distinct
     images that still share structure (and bucket keys) with their parent, so every seed
     hash carries a halo of correlated codes;
   - 17% ``clusters``: near-duplicate clusters around seed or derived codes; cluster sizes
     follow a Zipf law (exponent 1.6, 2..5000 members), members lie 0..40 bits from their
     center (geometric, mean ~6; ~5% exact duplicates);
   - 3% ``low_entropy``: codes within 0..20 bits of hashes of near-flat and stripe/checker
     images and of the all-zero hash (what flat images give).

   The parts are shuffled together. 10M codes take well under a minute (vectorised numpy;
   the seed hashes take a few seconds and are cached per process).

``realistic_queries`` draws lookups against a bank: half new codes from the same mix (a
different seed: mostly misses, some landing in the bank's halos), half bank entries with 0..40
weighted bit flips (hits and near misses).

The data is benign stand-in data: it contains no real hash list.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from tipline.signals.pdq import fast_hash

DEFAULT_SEED = 20261124
GENERATOR_VERSION = 1

Codes = npt.NDArray[np.uint8]
Luma = npt.NDArray[np.float32]

# Sample photographs shipped with scikit-image that show no people.
PHOTOS = (
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "retina",
    "immunohistochemistry",
    "coins",
    "moon",
    "page",
    "horse",
    "brick",
    "grass",
    "gravel",
    "text",
    "clock",
    "cell",
    "colorwheel",
    "logo",
)


@dataclass(frozen=True, slots=True)
class Mix:
    uniform: float = 0.35
    derived: float = 0.45
    clusters: float = 0.17
    low_entropy: float = 0.03


# --------------------------------------------------------------------------- images


def _f32(x: Any) -> Luma:
    out: Luma = np.asarray(x, dtype=np.float32)
    return out


def _to_luma(a: npt.NDArray[np.generic]) -> Luma:
    x = np.asarray(a)
    if x.dtype == bool:
        x = x.astype(np.float32) * 255
    x = x.astype(np.float32)
    if x.ndim == 3:
        x = x[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    if x.max() <= 1.0:
        x = x * 255
    out: Luma = np.ascontiguousarray(x, dtype=np.float32)
    return out


def _resize(img: Luma, h: int, w: int) -> Luma:
    """Bilinear resize (numpy only)."""
    sh, sw = img.shape
    ys = np.clip((np.arange(h) + 0.5) * sh / h - 0.5, 0, sh - 1)
    xs = np.clip((np.arange(w) + 0.5) * sw / w - 0.5, 0, sw - 1)
    y0 = np.floor(ys).astype(int)
    x0 = np.floor(xs).astype(int)
    y1 = np.minimum(y0 + 1, sh - 1)
    x1 = np.minimum(x0 + 1, sw - 1)
    fy = (ys - y0)[:, None].astype(np.float32)
    fx = (xs - x0)[None, :].astype(np.float32)
    top = img[y0][:, x0] * (1 - fx) + img[y0][:, x1] * fx
    bot = img[y1][:, x0] * (1 - fx) + img[y1][:, x1] * fx
    out: Luma = (top * (1 - fy) + bot * fy).astype(np.float32)
    return out


def _grid(h: int, w: int) -> tuple[Luma, Luma]:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return yy / max(h - 1, 1), xx / max(w - 1, 1)


def _value_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> Luma:
    g = rng.random((cells + 1, cells + 1)).astype(np.float32)
    return _resize(g, h, w)


def _proc_gradient(rng: np.random.Generator, h: int, w: int) -> Luma:
    yy, xx = _grid(h, w)
    a = rng.uniform(0, 2 * np.pi)
    v = np.cos(a) * xx + np.sin(a) * yy
    v = (v - v.min()) / (np.ptp(v) + 1e-6)
    return _f32((255 * v ** rng.uniform(0.5, 2.0)).astype(np.float32))


def _proc_radial(rng: np.random.Generator, h: int, w: int) -> Luma:
    yy, xx = _grid(h, w)
    cy, cx = rng.random(2)
    r = np.hypot(yy - cy, xx - cx)
    f = rng.uniform(1, 12)
    return _f32((127 + 120 * np.cos(f * r * np.pi + rng.uniform(0, 6))).astype(np.float32))


def _proc_shapes(rng: np.random.Generator, h: int, w: int) -> Luma:
    yy, xx = _grid(h, w)
    img = np.full((h, w), rng.uniform(0, 255), dtype=np.float32)
    for _ in range(int(rng.integers(1, 12))):
        c = rng.uniform(0, 255)
        cy, cx = rng.random(2)
        s = rng.uniform(0.03, 0.4)
        if rng.random() < 0.5:
            img[np.hypot(yy - cy, xx - cx) < s] = c
        else:
            img[(abs(yy - cy) < s) & (abs(xx - cx) < s * rng.uniform(0.3, 3))] = c
    return img


def _proc_noise(rng: np.random.Generator, h: int, w: int) -> Luma:
    cells = int(rng.choice([2, 3, 4, 6, 8, 12, 16, 32, 64]))
    return 255 * _value_noise(rng, h, w, cells)


def _proc_fractal(rng: np.random.Generator, h: int, w: int) -> Luma:
    v = np.zeros((h, w), dtype=np.float32)
    amp = 1.0
    for cells in (2, 4, 8, 16, 32):
        v += amp * _value_noise(rng, h, w, cells)
        amp *= rng.uniform(0.4, 0.7)
    return _f32((255 * (v - v.min()) / (np.ptp(v) + 1e-6)).astype(np.float32))


def _proc_stripes(rng: np.random.Generator, h: int, w: int) -> Luma:
    yy, xx = _grid(h, w)
    a = rng.uniform(0, np.pi)
    f = rng.uniform(2, 40)
    v = np.sin(2 * np.pi * f * (np.cos(a) * xx + np.sin(a) * yy))
    if rng.random() < 0.4:  # checker
        v = v * np.sin(2 * np.pi * f * (np.cos(a + np.pi / 2) * xx + np.sin(a + np.pi / 2) * yy))
    return _f32((127 + 120 * np.sign(v) * np.abs(v) ** rng.uniform(0.1, 1)).astype(np.float32))


def _proc_text(rng: np.random.Generator, h: int, w: int) -> Luma:
    """Lines of dark 'words' (rectangles) on a light page."""
    img = np.full((h, w), rng.uniform(200, 255), dtype=np.float32)
    line_h = int(rng.integers(4, 14))
    y = int(rng.integers(2, 10))
    while y + line_h < h - 2:
        x = int(rng.integers(2, 12))
        while x < w - 8:
            ww = int(rng.integers(3, 30))
            img[y : y + line_h - 2, x : min(w - 2, x + ww)] = rng.uniform(0, 80)
            x += ww + int(rng.integers(2, 8))
        y += line_h + int(rng.integers(1, 6))
    return img


def _proc_flat(rng: np.random.Generator, h: int, w: int) -> Luma:
    """Low-detail images: a flat level with a faint gradient and faint noise."""
    yy, xx = _grid(h, w)
    base = rng.uniform(10, 245)
    v = base + rng.uniform(0, 6) * (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1))
    return (v + rng.normal(0, rng.uniform(0.1, 1.5), (h, w))).astype(np.float32)


PROCEDURAL: tuple[Callable[[np.random.Generator, int, int], Luma], ...] = (
    _proc_gradient,
    _proc_radial,
    _proc_shapes,
    _proc_noise,
    _proc_fractal,
    _proc_stripes,
    _proc_text,
    _proc_flat,
)
LOW_ENTROPY_KINDS = ("_proc_flat", "_proc_stripes")


def _variant(rng: np.random.Generator, img: Luma) -> Luma:
    """One near-duplicate edit of ``img``."""
    return _f32(_edit(rng, img))


def _edit(rng: np.random.Generator, img: Luma) -> Any:
    h, w = img.shape
    kind = int(rng.integers(0, 10))
    if kind == 0:  # crop 2..8%
        c = rng.uniform(0.02, 0.08)
        dy, dx = int(h * c * rng.random()), int(w * c * rng.random())
        return img[dy : h - int(h * c) + dy, dx : w - int(w * c) + dx]
    if kind == 1:  # resize
        s = rng.uniform(0.4, 0.9)
        return _resize(img, max(8, int(h * s)), max(8, int(w * s)))
    if kind == 2:
        return np.clip(img + rng.uniform(-40, 40), 0, 255)
    if kind == 3:
        return np.clip((img - 128) * rng.uniform(0.6, 1.4) + 128, 0, 255)
    if kind == 4:
        return 255 * (np.clip(img, 0, 255) / 255) ** rng.uniform(0.6, 1.6)
    if kind == 5:
        return np.clip(img + rng.normal(0, rng.uniform(2, 10), img.shape), 0, 255)
    if kind == 6:  # 3x3 box blur
        p = np.pad(img, 1, mode="edge")
        return sum(p[i : i + h, j : j + w] for i in range(3) for j in range(3)) / 9
    if kind == 7:  # small rotation (nearest neighbour)
        a = np.deg2rad(rng.uniform(-4, 4))
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        cy, cx = h / 2, w / 2
        sy = np.clip(np.cos(a) * (yy - cy) - np.sin(a) * (xx - cx) + cy, 0, h - 1).astype(int)
        sx = np.clip(np.sin(a) * (yy - cy) + np.cos(a) * (xx - cx) + cx, 0, w - 1).astype(int)
        return img[sy, sx]
    if kind == 8:  # watermark box in a corner
        out = img.copy()
        bh, bw = max(2, h // rng.integers(6, 12)), max(2, w // rng.integers(4, 8))
        out[h - bh :, w - bw :] = rng.uniform(0, 255)
        return out
    pad = max(1, int(min(h, w) * rng.uniform(0.02, 0.06)))
    return np.pad(img, pad, constant_values=float(rng.uniform(0, 255)))


def _bases(rng: np.random.Generator, count: int) -> Iterator[tuple[str, Luma]]:
    import skimage.data

    photos = []
    for name in PHOTOS:
        try:
            photos.append(_to_luma(getattr(skimage.data, name)()))
        except Exception:  # pragma: no cover - a sample missing from this scikit-image
            continue
    for i in range(count):
        h = int(rng.integers(64, 200))
        w = int(rng.integers(64, 200))
        if photos and i % 3 == 0:  # random crops of the sample photographs, resized
            p = photos[int(rng.integers(0, len(photos)))]
            ph, pw = p.shape
            ch = int(ph * rng.uniform(0.3, 1.0))
            cw = int(pw * rng.uniform(0.3, 1.0))
            y0 = int(rng.integers(0, ph - ch + 1))
            x0 = int(rng.integers(0, pw - cw + 1))
            yield "photo", _resize(p[y0 : y0 + ch, x0 : x0 + cw], h, w)
        else:
            fn = PROCEDURAL[int(rng.integers(0, len(PROCEDURAL)))]
            yield fn.__name__, fn(rng, h, w)


@dataclass(frozen=True)
class SeedHashes:
    codes: Codes  # (n, 32)
    family: npt.NDArray[np.int32]  # base image number
    original: npt.NDArray[np.bool_]  # True for the unedited base image
    low_entropy: npt.NDArray[np.bool_]  # from a flat or stripe/checker image
    weights: npt.NDArray[np.float64]  # (256,) bit-flip weights, mean 1, in code-bit order


def _hex_codes(hexes: list[str]) -> Codes:
    raw = bytes.fromhex("".join(hexes))
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, 32).copy()


@functools.lru_cache(maxsize=4)
def seed_hashes(seed: int = DEFAULT_SEED, bases: int = 400) -> SeedHashes:
    """PDQ hashes of ``bases`` benign images and 3..14 near-duplicate variants of each."""
    rng = np.random.default_rng([seed, GENERATOR_VERSION])
    hexes: list[str] = []
    family: list[int] = []
    original: list[bool] = []
    low: list[bool] = []
    for b, (kind, img) in enumerate(_bases(rng, bases)):
        n_var = int(rng.integers(3, 15))
        for v in range(n_var + 1):
            im = img if v == 0 else _variant(rng, img)
            if v and rng.random() < 0.3:
                im = _variant(rng, im)  # some variants get two edits
            hexes.append(fast_hash(np.ascontiguousarray(im, dtype=np.float32))[0].hex)
            family.append(b)
            original.append(v == 0)
            low.append(kind in LOW_ENTROPY_KINDS)
    codes = _hex_codes(hexes)
    fam = np.asarray(family, dtype=np.int32)
    orig = np.asarray(original, dtype=bool)
    # per-bit flip frequency between each variant and its original
    bits = np.unpackbits(codes, axis=1)
    first = np.flatnonzero(orig)
    ref = bits[first[np.searchsorted(first, np.arange(len(codes)), side="right") - 1]]
    flips = (bits != ref)[~orig].sum(axis=0).astype(np.float64) + 1.0
    weights = flips / flips.mean()
    return SeedHashes(codes, fam, orig, np.asarray(low, dtype=bool), weights)


# --------------------------------------------------------------------------- expansion


def flip_bits(
    rng: np.random.Generator,
    codes: Codes,
    counts: npt.NDArray[np.int64],
    weights: npt.NDArray[np.float64],
    chunk: int = 1 << 16,
) -> Codes:
    """Flip about ``counts[i]`` bits of row i, bit j with probability ~ counts[i]*w_j/256.

    Exactly ``counts[i]`` distinct bits, drawn without replacement with the given weights
    (exponential-race sampling), so distances to the source are exact.
    """
    out = codes.copy()
    logw = np.log(weights).astype(np.float32)
    maxk = int(counts.max()) if len(counts) else 0
    if maxk == 0:
        return out
    for c0 in range(0, len(codes), chunk):
        c1 = min(len(codes), c0 + chunk)
        k = counts[c0:c1]
        # race: smallest Exp(1)/w wins; keys = log(E) - log(w)
        u = rng.random((c1 - c0, 256), dtype=np.float32)
        keys = np.log(-np.log(u + np.float32(1e-12))) - logw
        kk = min(maxk, 256)
        top = np.argpartition(keys, kk - 1, axis=1)[:, :kk] if kk < 256 else np.argsort(keys, 1)
        ranks = np.argsort(np.take_along_axis(keys, top, axis=1), axis=1)
        chosen = np.take_along_axis(top, ranks, axis=1)  # by increasing key
        sel = np.arange(kk)[None, :] < k[:, None]
        mask = np.zeros((c1 - c0, 256), dtype=bool)
        rows = np.broadcast_to(np.arange(c1 - c0)[:, None], chosen.shape)
        mask[rows[sel], chosen[sel]] = True
        out[c0:c1] ^= np.packbits(mask, axis=1)
    return out


def _flip_bernoulli(
    rng: np.random.Generator,
    codes: Codes,
    rates: npt.NDArray[np.float64],
    weights: npt.NDArray[np.float64],
    chunk: int = 1 << 17,
) -> Codes:
    """Flip bit j of row i with probability min(1, rates[i] * w_j) (fast, for large counts)."""
    out = codes.copy()
    w = weights.astype(np.float32)
    for c0 in range(0, len(codes), chunk):
        c1 = min(len(codes), c0 + chunk)
        p = np.minimum(rates[c0:c1, None].astype(np.float32) * w[None, :], 1.0)
        mask = rng.random((c1 - c0, 256), dtype=np.float32) < p
        out[c0:c1] ^= np.packbits(mask, axis=1)
    return out


def uniform_bank(n: int, seed: int = DEFAULT_SEED) -> Codes:
    rng = np.random.default_rng([seed, 1])
    return rng.integers(0, 256, (n, 32), dtype=np.uint8)


def _zipf_sizes(rng: np.random.Generator, total: int, a: float, lo: int, hi: int) -> list[int]:
    sizes: list[int] = []
    left = total
    while left > 0:
        batch = np.clip(rng.zipf(a, 4096) + lo - 1, lo, hi)
        for s in batch.tolist():
            s = min(s, left)
            sizes.append(s)
            left -= s
            if left <= 0:
                break
    return sizes


def realistic_bank(
    n: int,
    seed: int = DEFAULT_SEED,
    mix: Mix | None = None,
    *,
    shuffle: bool = True,
    bases: int = 400,
) -> Codes:
    """``n`` PDQ codes (uint8[n, 32]) with the clumpy structure of real lists (see module doc).

    ``bases`` is the number of seed images (the seed hashes are the same for a given seed and
    ``bases``); the benchmark uses the default."""
    mix = mix or Mix()
    sh = seed_hashes(DEFAULT_SEED, bases)
    rng = np.random.default_rng([seed, 2])
    total = mix.uniform + mix.derived + mix.clusters + mix.low_entropy
    n_uni = int(n * mix.uniform / total)
    n_der = int(n * mix.derived / total)
    n_low = int(n * mix.low_entropy / total)
    n_clu = n - n_uni - n_der - n_low
    parts: list[Codes] = [rng.integers(0, 256, (n_uni, 32), dtype=np.uint8)]
    # derived distinct images: 32..120 flips, skewed towards ~60
    parents = sh.codes[rng.integers(0, len(sh.codes), n_der)]
    k = 32 + np.round(88 * rng.beta(1.6, 3.0, n_der))
    derived = _flip_bernoulli(rng, parents, k / 256.0, sh.weights)
    parts.append(derived)
    # near-duplicate clusters around seed or derived codes
    sizes = np.asarray(_zipf_sizes(rng, n_clu, 1.6, 2, 5000), dtype=np.int64)
    pool = np.concatenate([sh.codes, derived[: max(1, min(len(derived), 10 * len(sizes)))]])
    centers = pool[rng.integers(0, len(pool), len(sizes))]
    members = np.repeat(centers, sizes, axis=0)
    dist = np.minimum(rng.geometric(1 / 6.5, len(members)) - 1, 40)
    dist[rng.random(len(members)) < 0.05] = 0
    parts.append(flip_bits(rng, members, dist.astype(np.int64), sh.weights))
    # low-entropy codes: near flat/stripe-image hashes and the all-zero hash
    low_src = np.concatenate([sh.codes[sh.low_entropy], np.zeros((1, 32), dtype=np.uint8)])
    centers = low_src[rng.integers(0, len(low_src), n_low)]
    dist = np.minimum(rng.geometric(1 / 4.0, n_low) - 1, 20)
    parts.append(flip_bits(rng, centers, dist.astype(np.int64), sh.weights))
    out = np.concatenate(parts)
    if shuffle:
        out = out[rng.permutation(len(out))]
    return out


def realistic_queries(
    bank: Codes, n: int, seed: int = DEFAULT_SEED + 1, *, bases: int = 400
) -> Codes:
    """Lookups: half fresh codes from the same mix, half bank entries with 0..40 bit flips."""
    rng = np.random.default_rng([seed, 3])
    fresh = realistic_bank(n - n // 2, seed=seed + 7919, bases=bases)
    src = bank[rng.integers(0, len(bank), n // 2)]
    dist = rng.integers(0, 41, n // 2).astype(np.int64)
    near = flip_bits(rng, src, dist, seed_hashes(DEFAULT_SEED, bases).weights)
    out = np.concatenate([fresh, near])
    return out[rng.permutation(len(out))]


def uniform_queries(bank: Codes, n: int, seed: int = DEFAULT_SEED + 1) -> Codes:
    """Half uniform random codes, half bank entries with 0..40 uniformly chosen bit flips."""
    rng = np.random.default_rng([seed, 4])
    fresh = rng.integers(0, 256, (n - n // 2, 32), dtype=np.uint8)
    src = bank[rng.integers(0, len(bank), n // 2)]
    dist = rng.integers(0, 41, n // 2).astype(np.int64)
    near = flip_bits(rng, src, dist, np.ones(256))
    out = np.concatenate([fresh, near])
    return out[rng.permutation(len(out))]
