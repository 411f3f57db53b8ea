"""PDQ: reference mode is pdqhash; fast mode stays within the fidelity bounds."""

from __future__ import annotations

import io

import numpy as np
import pdqhash
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import encode, noise_image, photo
from tipline.scan.hashing import HashOptions, hash_bytes
from tipline.signals import pdq


def _pdqhash_hex(rgb: np.ndarray) -> tuple[str, int]:
    """What python-threatexchange does: pdqhash on the array, bits read most significant first."""
    vec, q = pdqhash.compute(rgb)
    bits = "".join(str(int(b)) for b in vec)
    return f"{int(bits, 2):064x}", int(q)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF"])
@pytest.mark.parametrize("seed", [1, 2])
def test_reference_mode_is_bit_identical_to_pdqhash(fmt: str, seed: int) -> None:
    data = encode(noise_image(seed, 300, 200), fmt)
    rec = hash_bytes(data, f"x.{fmt.lower()}", HashOptions(pdq_mode="reference"))
    im = Image.open(io.BytesIO(data))
    rgb = np.asarray(im.convert("RGB"))
    if im.mode == "P":
        # GIFs decode to palette indices, which python-threatexchange hashes as they are
        # (tests/test_hash_policy.py); the RGB picture's hash is then an extra query hash
        raw = np.asarray(im)
        assert (rec.pdq, rec.pdq_quality) == _pdqhash_hex(np.stack([raw] * 3, axis=2))
        assert rec.pdq_variants == {"rgb": _pdqhash_hex(rgb)[0]}
    else:
        assert (rec.pdq, rec.pdq_quality) == _pdqhash_hex(rgb)
    assert not rec.errors


@settings(max_examples=25, deadline=None)
@given(
    w=st.integers(64, 400),
    h=st.integers(64, 400),
    seed=st.integers(0, 2**32 - 1),
)
def test_matrix_formulation_equals_reference_on_same_pixels(w: int, h: int, seed: int) -> None:
    rgb = np.asarray(noise_image(seed % 1000, w, h))
    ref = pdq.reference_hash(rgb)[0]
    ours = pdq.fast_hash(pdq.luma(rgb))[0]
    assert abs(ref.quality - ours.quality) <= 1
    if ref.quality >= pdq.MIN_USABLE_QUALITY:
        # Same pixels, same algorithm; float summation order may flip a coefficient sitting on
        # the median, nothing more. (Flat images have no meaningful bits to compare; images under
        # 64 px are upsampled by the decimation, leaving many coefficients at float noise.)
        assert pdq.hamming(ref.hex, ours.hex) <= 2


def _dense_weights(n: int) -> np.ndarray:
    """The full-width computation: the selection matrix through both box passes."""
    window = pdq.jarosz_window(n)
    picks = ((np.arange(64) + 0.5) * n / 64).astype(np.int64)
    sel = np.zeros((64, n))
    sel[np.arange(64), np.minimum(picks, n - 1)] = 1.0
    return pdq._apply_box_transposed(pdq._apply_box_transposed(sel, window), window)


def _dense_scaled(dense: np.ndarray, scaled: int) -> np.ndarray:
    """Block sums of the dense weights (integer reductions) or proportional block edges."""
    n = dense.shape[1]
    csum = np.concatenate([np.zeros((64, 1)), np.cumsum(dense, axis=1)], axis=1)
    step = max(1, round(n / scaled))
    if -(-n // step) == scaled:
        edges = np.minimum(np.arange(scaled + 1) * step, n)
        return np.diff(csum[:, edges], axis=1).astype(np.float32)
    pos = np.arange(scaled + 1) * (n / scaled)
    lo = np.minimum(np.floor(pos).astype(np.int64), n)
    padded = np.concatenate([dense, np.zeros((64, 1))], axis=1)
    at = csum[:, lo] + (pos - lo)[None, :] * padded[:, lo]
    return np.diff(at, axis=1).astype(np.float32)


@pytest.mark.parametrize("n", [5, 6, 63, 64, 65, 127, 128, 129, 300, 1365, 2448, 3000, 4000, 4001])
def test_banded_weights_equal_the_full_width_passes_bit_for_bit(n: int) -> None:
    dense = _dense_weights(n)
    assert np.array_equal(pdq.full_resolution_weights(n), dense)
    # every row is a weighting of pixels near its sample: sums to 1, nothing negative
    assert np.allclose(dense.sum(axis=1), 1.0) and dense.min() >= 0.0
    # DCT-scaled sizes (ceil), Pillow reduce sizes, and sizes that are no integer reduction
    sizes = {n, *(-(-n // k) for k in (2, 4, 8)), *(max(1, n * 2 // k) for k in (3, 5))}
    for scaled in sorted(sizes):
        assert np.array_equal(pdq.scaled_weights(n, scaled), _dense_scaled(dense, scaled)), scaled


def test_dihedral_matches_pdqhash_order() -> None:
    rgb = np.asarray(photo("chelsea"))
    ref = pdq.reference_hash(rgb, dihedral=True)
    ours = pdq.fast_hash(pdq.luma(rgb), dihedral=True)
    assert [r.hex for r in ref] == [o.hex for o in ours]
    # and the derived variants really are the hashes of the transformed images
    rotated = np.ascontiguousarray(np.rot90(rgb))
    direct = pdq.reference_hash(rotated)[0].hex
    assert min(pdq.hamming(direct, r.hex) for r in ref) <= 8


@pytest.mark.parametrize(
    "name", ["coffee", "rocket", "hubble_deep_field", "brick", "grass", "page"]
)
def test_fast_mode_jpeg_within_fidelity_bounds(name: str) -> None:
    img = photo(name, size=(2400, 1800))
    data = encode(img, "JPEG", quality=90)
    fast = hash_bytes(data, "a.jpg", HashOptions(pdq_mode="fast"))
    ref = hash_bytes(data, "a.jpg", HashOptions(pdq_mode="reference"))
    assert fast.pdq and ref.pdq
    assert pdq.hamming(fast.pdq, ref.pdq) <= 16
    assert abs((fast.pdq_quality or 0) - (ref.pdq_quality or 0)) <= 10


def test_fast_mode_mean_distance_small_across_images() -> None:
    dists = []
    for name in ["coffee", "chelsea", "rocket", "retina", "moon", "coins", "gravel", "text"]:
        data = encode(photo(name, size=(1600, 1200)), "JPEG", quality=92)
        fast = hash_bytes(data, "a.jpg", HashOptions(pdq_mode="fast"))  # default: reference
        ref = hash_bytes(data, "a.jpg", HashOptions(pdq_mode="reference"))
        dists.append(pdq.hamming(fast.pdq or "", ref.pdq or ""))
    assert np.mean(dists) <= 4, dists


def test_low_quality_hash_is_kept_but_flagged_unusable() -> None:
    flat = Image.new("RGB", (200, 200), (120, 130, 140))
    rec = hash_bytes(encode(flat, "PNG"), "flat.png", HashOptions())
    assert rec.pdq is not None and rec.pdq_quality is not None
    assert rec.pdq_quality < pdq.MIN_USABLE_QUALITY
    assert rec.to_json()["pdq_usable"] is False
    assert rec.errors == []


def test_tiny_image_gets_quality_zero() -> None:
    rec = hash_bytes(encode(Image.new("RGB", (3, 3), (9, 9, 9)), "PNG"), "t.png", HashOptions())
    assert rec.pdq_quality == 0


def test_exif_orientation_is_not_applied() -> None:
    """Hashes are of stored pixels, like python-threatexchange: the tag changes nothing."""
    img = photo("rocket")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    tagged = encode(img, "JPEG", quality=95, exif=exif.tobytes())
    plain = encode(img, "JPEG", quality=95)
    for mode in ("fast", "reference"):
        a = hash_bytes(tagged, "a.jpg", HashOptions(pdq_mode=mode))  # type: ignore[arg-type]
        b = hash_bytes(plain, "b.jpg", HashOptions(pdq_mode=mode))  # type: ignore[arg-type]
        assert a.pdq == b.pdq
        # and it is not the hash of the displayed (rotated) image
        shown = np.ascontiguousarray(np.rot90(np.asarray(img), k=-1))
        assert pdq.hamming(a.pdq or "", pdq.reference_hash(shown)[0].hex) > 40


def test_fast_mode_decodes_large_jpegs_at_one_eighth() -> None:
    """A JPEG whose short side stays >= JPEG_MIN_SIDE at 1/8 is decoded at 1/8 (12 MP: 375 px),
    and its fast hash stays within the fidelity bound of full resolution."""
    from tipline.config import Limits
    from tipline.media.decode import JPEG_MIN_SIDE, decode_luma_fast, jpeg_scale
    from tipline.media.sniff import JPEG

    assert jpeg_scale(4000, 3000) == 8
    assert jpeg_scale(2048, 1365) == 2  # 1365 // 8 < 256: 1/2 keeps >= 512
    assert jpeg_scale(4000, 3000, min_side=512) == 4
    assert jpeg_scale(300, 200) == 1
    data = encode(photo("coffee", size=(2800, 2100)), "JPEG", quality=90)
    luma = decode_luma_fast(data, JPEG, Limits())
    assert luma.plane.shape == (-(-2100 // 8), 2800 // 8)  # libjpeg rounds up
    assert min(luma.plane.shape) >= JPEG_MIN_SIDE
    fast = hash_bytes(data, "a.jpg", HashOptions(pdq_mode="fast"))
    ref = hash_bytes(data, "a.jpg", HashOptions(pdq_mode="reference"))
    assert pdq.hamming(fast.pdq or "", ref.pdq or "") <= 16


def test_fragile_one_eighth_decode_tries_the_finer_scale_first() -> None:
    """A fragile hash from the 1/8 plane is decoded again at FAST_MIN_SIDE before the caller
    falls back to the reference; a pure checkerboard is fragile at both."""
    from tipline.config import Limits
    from tipline.media.decode import FAST_MIN_SIDE
    from tipline.media.sniff import JPEG
    from tipline.scan.hashing import fast_pdq

    # a full-contrast checkerboard whose cells do not divide the 1/8 scale (cell 37 at 12 MP):
    # the reduced plane's coefficients move across the median when the scale halves
    yy, xx = np.mgrid[0:3000, 0:4000]
    board = np.where(((yy // 37) + (xx // 37)) % 2 == 0, 255, 0).astype(np.uint8)
    data = encode(Image.fromarray(board).convert("RGB"), "JPEG", quality=95)
    luma, hashes = fast_pdq(data, JPEG, Limits())
    assert hashes is None
    assert min(luma.plane.shape) >= FAST_MIN_SIDE  # the retry ran
    # an ordinary picture keeps its 1/8 plane and fast hash
    luma, hashes = fast_pdq(encode(photo("rocket", (2400, 2048)), "JPEG"), JPEG, Limits())
    assert hashes is not None and min(luma.plane.shape) == 256
