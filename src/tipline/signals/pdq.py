"""PDQ perceptual hashing.

Two ways to get a PDQ hash:

* ``reference``: the C++ reference algorithm through the ``pdqhash`` bindings, run on the fully
  decoded pixels exactly as python-threatexchange / HMA hand them to it
  (``tipline.media.decode.decode_reference``): bit-identical to python-threatexchange's
  ``pdq_from_bytes`` in every mode it hashes, raw palette indices and CMYK bands included; for
  those modes the hash of the RGB picture (``convert("RGB")``) is an extra query hash (see
  docs/formats.md#which-pdq). Everything Tipline answers or stores for exchange with others
  uses it.
* ``fast``: our own implementation of the same algorithm written as two small matrix
  products. PDQ's Jarosz filter followed by decimation to 64x64 is linear and separable, so the
  64x64 buffer is ``Wy @ luma @ Wx.T`` where ``Wy`` (64 x H) and ``Wx`` (64 x W) hold the filter
  weights of the 64 sample rows/columns. Because only 64 rows of the filtered image are ever
  read, this costs O(64 * H * W) instead of the full-image filter passes.

  For JPEGs we decode in the DCT domain at a reduced scale (libjpeg-turbo scaled IDCT, luma
  only). A scaled pixel is (close to) the mean of an s x s block of full-resolution pixels, so we
  give it the summed full-resolution weights of that block: the result approximates the PDQ of
  the full-resolution image (what partners' hash lists hold), not of a naive resize.

  A hash is only as stable as the gaps between its DCT coefficients and their median. Where
  many coefficients sit within the fast path's own error of the median (hard full-contrast
  patterns: pure checkerboards, whose coefficients are exactly equal by symmetry, so float
  rounding alone decides their bits), ``fast_hash_or_none`` says so and the caller computes
  the reference hash instead (``fragile_bits``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image

from tipline.record import MIN_USABLE_QUALITY as MIN_USABLE_QUALITY

PDQ_BITS = 256
PDQ_HEX_LEN = 64
#: Below MIN_USABLE_QUALITY a hash is kept but not used for matching (python-threatexchange /
#: HMA rule); the constant lives with the item record.
#: The distance at which two PDQ hashes are considered a match by default.
DEFAULT_THRESHOLD = 31

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)

FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class PdqHash:
    """A PDQ hash with its quality (0..100)."""

    hex: str
    quality: int

    @property
    def usable(self) -> bool:
        return self.quality >= MIN_USABLE_QUALITY


def _dct_matrix() -> npt.NDArray[np.float64]:
    i = np.arange(1, 17, dtype=np.float64)[:, None]
    j = np.arange(64, dtype=np.float64)[None, :]
    m: npt.NDArray[np.float64] = np.sqrt(2.0 / 64.0) * np.cos((np.pi / 2 / 64.0) * i * (2 * j + 1))
    return m


_DCT = _dct_matrix().astype(np.float32)


def jarosz_window(size: int) -> int:
    """The box-filter window PDQ uses along an axis of ``size`` pixels."""
    return (size + 2 * 64 - 1) // (2 * 64)


def _box_bounds(n: int, window: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Inclusive input range averaged into each output of the reference ``box1DFloat``."""
    half = (window + 2) // 2
    o = np.arange(n, dtype=np.int64)
    lo = np.maximum(o - (window - half), 0)
    hi = np.minimum(o + half - 1, n - 1)
    return lo, hi


def _apply_box_transposed(rows: npt.NDArray[np.float64], window: int) -> npt.NDArray[np.float64]:
    """Return ``rows @ B`` where B is the reference box filter along an axis of len(rows[0]).

    (rows @ B)[:, j] sums rows[:, o] / count(o) over the outputs o whose window covers j. Both
    window edges grow with o, so those o form a contiguous range found by binary search, and the
    sum is a difference of prefix sums: O(rows * n) with no Python loop. (The weights themselves
    come from ``_band_weights``, the same arithmetic on each row's support only.)
    """
    n = rows.shape[1]
    lo, hi = _box_bounds(n, window)
    # Work on the transpose (n x rows): the gathers below then read contiguous memory.
    scaled = rows.T / (hi - lo + 1)[:, None]
    prefix = np.zeros((n + 1, rows.shape[0]))
    np.cumsum(scaled, axis=0, out=prefix[1:])
    j = np.arange(n)
    first = np.searchsorted(hi, j, side="left")
    last = np.searchsorted(lo, j, side="right")
    out: npt.NDArray[np.float64] = (prefix[last] - prefix[first]).T
    return out


IntArray = npt.NDArray[np.int64]


@functools.lru_cache(maxsize=16)
def _band_weights(n: int) -> tuple[IntArray, npt.NDArray[np.float64]]:
    """``full_resolution_weights(n)`` as bands: row i is zero outside columns
    ``starts[i] .. starts[i] + span - 1``, whose values are ``band[i]``.

    Each output row of the two Jarosz passes is non-zero only within one window of its sampled
    pixel, so the passes run on that band alone: ``_apply_box_transposed``'s arithmetic (the
    same divisions, and prefix sums that start at zero where the band starts, since every
    column before it is exactly zero), bit for bit the same weights at ~1/30 of the cost for a
    4000 px axis (the first image of a new size no longer waits ~15 ms for them).
    """
    window = jarosz_window(n)
    picks = np.minimum(((np.arange(64) + 0.5) * n / 64).astype(np.int64), n - 1)
    # Two passes reach at most ``window`` pixels either side of the sampled one.
    span = min(n, 2 * window + 5)
    starts = np.clip(picks - (window + 2), 0, n - span)
    cols = starts[:, None] + np.arange(span)
    lo, hi = _box_bounds(n, window)
    count = (hi - lo + 1)[cols]
    j = np.arange(n)
    first = np.clip(np.searchsorted(hi, j, side="left")[cols] - starts[:, None], 0, span)
    last = np.clip(np.searchsorted(lo, j, side="right")[cols] - starts[:, None], 0, span)
    band = (cols == picks[:, None]).astype(np.float64)
    prefix = np.zeros((64, span + 1))
    for _ in range(2):
        np.cumsum(band / count, axis=1, out=prefix[:, 1:])
        band = np.take_along_axis(prefix, last, 1) - np.take_along_axis(prefix, first, 1)
    return starts, band


# Full-resolution weights are an intermediate (64 x n float64); the scaled ones are what hashing
# reuses, one pair per image size seen, so keep many of those.
@functools.lru_cache(maxsize=16)
def full_resolution_weights(n: int) -> npt.NDArray[np.float64]:
    """64 x n weights: filtered-and-decimated value = weights @ signal, for one axis of n pixels.

    Two Jarosz passes (box filter twice), then the reference decimation that samples rows
    ``int((i + 0.5) * n / 64)``: ``selection @ B @ B`` (``_apply_box_transposed`` twice),
    computed on each row's band (``_band_weights``).
    """
    starts, band = _band_weights(n)
    out = np.zeros((64, n), dtype=np.float64)
    np.put_along_axis(out, starts[:, None] + np.arange(band.shape[1]), band, 1)
    return out


@functools.lru_cache(maxsize=512)
def scaled_weights(full: int, scaled: int) -> FloatArray:
    """Weights for an axis decoded at reduced size ``scaled`` standing in for ``full`` pixels.

    JPEG DCT scaling by 1/s and Pillow's ``reduce(s)`` both make reduced pixel k the mean of
    full-resolution pixels [s*k, min(full, s*k + s)) (the last block may be partial), so that
    pixel receives the summed weights of exactly those pixels. Sizes that are not an integer
    reduction fall back to proportional (fractional) block edges.
    """
    if scaled == full:
        return full_resolution_weights(full).astype(np.float32)
    # Cumulative weights along each row's band: zero before it, the row's total after it.
    starts, band = _band_weights(full)
    span = band.shape[1]
    csum = np.zeros((64, span + 1))
    np.cumsum(band, axis=1, out=csum[:, 1:])

    def cumulative(at: IntArray) -> npt.NDArray[np.float64]:
        """Sum of each row's weights over pixels [0, at) (``at`` may be past the last one)."""
        idx = np.clip(at[None, :] - starts[:, None], 0, span)
        out: npt.NDArray[np.float64] = np.take_along_axis(csum, idx, 1)
        return out

    step = max(1, round(full / scaled))
    if -(-full // step) == scaled:
        edges = np.minimum(np.arange(scaled + 1, dtype=np.int64) * step, full)
        out: FloatArray = np.diff(cumulative(edges), axis=1).astype(np.float32)
        return out
    pos = np.arange(scaled + 1, dtype=np.float64) * (full / scaled)
    lo = np.minimum(np.floor(pos).astype(np.int64), full)
    frac = pos - lo
    # cumulative weight at fractional position x = csum[floor x] + frac * w[floor x]
    local = lo[None, :] - starts[:, None]
    inside = (local >= 0) & (local < span)
    w_at = np.where(inside, np.take_along_axis(band, np.clip(local, 0, span - 1), 1), 0.0)
    at = cumulative(lo) + frac[None, :] * w_at
    out = np.diff(at, axis=1).astype(np.float32)
    return out


def quality_of(buffer64: FloatArray) -> int:
    """PDQ's image-domain quality metric on the 64x64 buffer (reference integer arithmetic)."""
    b = buffer64.astype(np.float32)
    dv = np.trunc((b[:-1, :] - b[1:, :]) * np.float32(100) / np.float32(255))
    dh = np.trunc((b[:, :-1] - b[:, 1:]) * np.float32(100) / np.float32(255))
    total = int(np.abs(dv).sum() + np.abs(dh).sum())
    return min(total // 90, 100)


def _bits_to_hex(bits: BoolArray) -> str:
    """Reference bit layout: bit k = coefficient (k // 16, k % 16); hex shows bit 255 first."""
    packed = np.packbits(bits[::-1].astype(np.uint8))
    return packed.tobytes().hex()


def _hash_from_dct(coeffs: FloatArray) -> str:
    flat = coeffs.reshape(-1)
    # Torben's median in the reference returns an element; for an even count that is the lower
    # middle value, which np.partition gives exactly.
    median = np.partition(flat, 127)[127]
    return _bits_to_hex(flat > median)


def dct16(buffer64: FloatArray) -> FloatArray:
    d: FloatArray = _DCT @ buffer64.astype(np.float32) @ _DCT.T
    return d


def hash_from_buffer(buffer64: FloatArray) -> PdqHash:
    """PDQ from the filtered, decimated 64x64 luma buffer."""
    return PdqHash(_hash_from_dct(dct16(buffer64)), quality_of(buffer64))


def dihedral_from_buffer(buffer64: FloatArray) -> list[PdqHash]:
    """The 8 rotations/flips of the image, derived in the DCT domain (as ``pdqhash`` does).

    Order: original, rotate 90, rotate 180, rotate 270, flip x, flip y, flip plus-1 diagonal,
    flip minus-1 diagonal.
    """
    q = quality_of(buffer64)
    b = dct16(buffer64)
    sign = np.where(np.arange(1, 17) % 2 == 1, -1.0, 1.0).astype(np.float32)
    # Coefficient k of a mirrored axis changes sign when k is odd (basis index i + 1).
    # The buffer is indexed [row, col] but the reference names its flips after the DCT's
    # coefficient layout, where x runs down the rows.
    fx = b * sign[:, None]
    fy = b * sign[None, :]
    fxy = b * sign[:, None] * sign[None, :]
    variants = [
        b,  # original
        fy.T,  # rotate 90
        fxy,  # rotate 180
        fx.T,  # rotate 270
        fx,  # flip x
        fy,  # flip y
        b.T,  # transpose
        fxy.T,  # anti-transpose
    ]
    return [PdqHash(_hash_from_dct(v), q) for v in variants]


def luma(rgb: npt.NDArray[np.uint8]) -> FloatArray:
    if rgb.ndim == 2:
        return rgb.astype(np.float32)
    out: FloatArray = rgb[..., :3].astype(np.float32) @ _LUMA
    return out


def buffer_from_luma(
    y: FloatArray | npt.NDArray[np.uint8],
    full_height: int | None = None,
    full_width: int | None = None,
) -> FloatArray | None:
    """The 64x64 PDQ buffer for a luma plane that may stand in for a larger original.

    Returns None for images under 5 px on a side (PDQ gives them quality 0).
    """
    h, w = y.shape[:2]
    fh = full_height or h
    fw = full_width or w
    if fh < 5 or fw < 5 or h < 1 or w < 1:
        return None
    wy = scaled_weights(fh, h)
    wx = scaled_weights(fw, w)
    plane = np.asarray(y, dtype=np.float32)
    buf: FloatArray = np.asarray((wy @ plane) @ wx.T, dtype=np.float32)
    return buf


def fast_hash(
    y: FloatArray | npt.NDArray[np.uint8],
    full_height: int | None = None,
    full_width: int | None = None,
    dihedral: bool = False,
) -> list[PdqHash]:
    """PDQ (and optionally the 7 other dihedral hashes) from a luma plane."""
    buf = buffer_from_luma(y, full_height, full_width)
    if buf is None:
        zero = PdqHash("0" * PDQ_HEX_LEN, 0)
        return [zero] * (8 if dihedral else 1)
    if dihedral:
        return dihedral_from_buffer(buf)
    return [hash_from_buffer(buf)]


#: Fast mode gives up (the caller computes the reference hash) when at least this many DCT
#: coefficients lie within their estimated error of the median. Two errors, two bars, measured
#: on JPEG q90 (bench/_hifreq.py, bench/service.py's uploads, scikit-image photographs):
#:
#: * a reduced plane (the DCT-scaled decode): the change the coefficients see when the plane is
#:   halved once more. Photographs, halftones, line screens, micro text, smooth fields with
#:   noise: 1-10 at risk, 0-4 bits from the reference; a full-contrast checkerboard at 12 MP:
#:   82-130 at risk, up to 20 bits off. Bar: ``FRAGILE_LIMIT``.
#: * a full-resolution plane: exact ties only (rounding order decides them). Photographs 1-16;
#:   smooth colour fields 22-63, 0-4 bits off; full-contrast checkerboards at 640 px 112-115,
#:   48-56 bits off. Bar: ``TIE_FRAGILE_LIMIT``.
FRAGILE_LIMIT = 24
TIE_FRAGILE_LIMIT = 96
#: Coefficients this close to the median (relative to the largest coefficient) are ties that
#: rounding decides: the reference's own float order, or the JPEG's Y plane against luma from
#: its decoded RGB. Hard patterns leave most coefficients at such a tie (HMA's checkerboards:
#: 192 of 256); photographs have 1-13.
_TIE = 1e-3


def _reduced(y: FloatArray | npt.NDArray[np.uint8], full_height: int, full_width: int) -> bool:
    h, w = y.shape[:2]
    return (h, w) != (full_height, full_width) and h >= 10 and w >= 10


def fragile_bits(
    y: FloatArray | npt.NDArray[np.uint8],
    buffer64: FloatArray,
    full_height: int,
    full_width: int,
) -> int:
    """How many hash bits of ``buffer64`` (from plane ``y``) the fast path cannot vouch for.

    A bit is at risk when its coefficient's distance to the median is within the coefficient's
    error. At full resolution the error is rounding (ties, ``_TIE``). For a reduced plane it is
    estimated as the change the same hash sees when the plane is reduced once more (2x2 means,
    which the DCT-scaled decode or box reduction gives exactly one level down): where halving
    the scale moves a coefficient across the median, the scale the plane was decoded at may
    have too. (Ties do not count there: smooth pictures have many coefficients near the median
    whose bits the scale does not move.)
    """
    coeffs = dct16(buffer64).reshape(-1)
    median = np.partition(coeffs, 127)[127]
    gap = np.abs(coeffs - median)
    if _reduced(y, full_height, full_width):
        coarse = buffer_from_luma(_halve(y), full_height, full_width)
        if coarse is not None:
            tol = np.abs(dct16(coarse).reshape(-1) - coeffs)
            return int(np.count_nonzero(gap <= tol))
    tie = _TIE * float(np.abs(coeffs).max())
    return int(np.count_nonzero(gap <= tie))


def is_fragile(
    y: FloatArray | npt.NDArray[np.uint8],
    buffer64: FloatArray,
    full_height: int,
    full_width: int,
) -> bool:
    """Whether the fast path should give up on this hash (see ``FRAGILE_LIMIT``)."""
    bar = FRAGILE_LIMIT if _reduced(y, full_height, full_width) else TIE_FRAGILE_LIMIT
    return fragile_bits(y, buffer64, full_height, full_width) >= bar


def _halve(y: FloatArray | npt.NDArray[np.uint8]) -> FloatArray | npt.NDArray[np.uint8]:
    """2x2 means (a trailing odd row/column averaged alone), as ``Image.reduce(2)`` makes."""
    if y.dtype == np.uint8:
        return np.asarray(Image.fromarray(np.ascontiguousarray(y)).reduce(2))
    plane = np.asarray(y, dtype=np.float32)
    h, w = plane.shape
    padded = np.pad(plane, ((0, h % 2), (0, w % 2)), mode="edge")
    out: FloatArray = padded.reshape((h + 1) // 2, 2, (w + 1) // 2, 2).mean(axis=(1, 3))
    return out


def fast_hash_or_none(
    y: FloatArray | npt.NDArray[np.uint8],
    full_height: int | None = None,
    full_width: int | None = None,
    dihedral: bool = False,
) -> list[PdqHash] | None:
    """``fast_hash``, or None where it is fragile (``is_fragile``): the
    caller then computes the reference hash."""
    fh = full_height or y.shape[0]
    fw = full_width or y.shape[1]
    buf = buffer_from_luma(y, fh, fw)
    if buf is None:
        zero = PdqHash("0" * PDQ_HEX_LEN, 0)
        return [zero] * (8 if dihedral else 1)
    if is_fragile(y, buf, fh, fw):
        return None
    if dihedral:
        return dihedral_from_buffer(buf)
    return [hash_from_buffer(buf)]


def _vector_to_hex(vector: npt.NDArray[np.int64]) -> str:
    """``pdqhash`` returns bits most significant first, as python-threatexchange reads them."""
    return np.packbits(vector.astype(np.uint8)).tobytes().hex()


def reference_hash(rgb: npt.NDArray[np.generic], dihedral: bool = False) -> list[PdqHash]:
    """PDQ through the C++ reference (``pdqhash``) on full decoded pixels: H x W x 3 (or more:
    the first three are read, as ``pdqhash`` does) or H x W, uint8 (or bool: 1-bit images as
    python-threatexchange hands them over)."""
    import pdqhash

    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    elif rgb.shape[2] != 3:
        rgb = np.ascontiguousarray(rgb[..., :3])
    if rgb.shape[0] < 5 or rgb.shape[1] < 5:
        zero = PdqHash("0" * PDQ_HEX_LEN, 0)
        return [zero] * (8 if dihedral else 1)
    if dihedral:
        vectors, quality = pdqhash.compute_dihedral(rgb)
        return [PdqHash(_vector_to_hex(v), int(quality)) for v in vectors]
    vector, quality = pdqhash.compute(rgb)
    return [PdqHash(_vector_to_hex(vector), int(quality))]


def hamming(a: str, b: str) -> int:
    return int.bit_count(int(a, 16) ^ int(b, 16))


def is_valid_hex(signal: str) -> bool:
    if len(signal) != PDQ_HEX_LEN:
        return False
    try:
        int(signal, 16)
    except ValueError:
        return False
    return True
