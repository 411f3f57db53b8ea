"""pdq_variants: the blurred-fill frame detector and the boxes trim_box gives (bench/recall.py
measures recall on 63 originals; these pin the geometry on pictures made here).

Every picture is procedural (bench/synthetic.py's generators) or a transformed scikit-image
sample photograph that shows no people.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import recall
import synthetic
from tipline.signals import pdq, pdq_variants


def _picture(seed: int, h: int, w: int) -> Image.Image:
    """A colourful procedural picture with detail everywhere (fractal noise + shapes)."""
    rng = np.random.default_rng(seed)
    planes = [synthetic._proc_fractal(rng, h, w) for _ in range(3)]
    arr = np.clip(np.stack(planes, axis=2), 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def _luma_jpeg(im: Image.Image, quality: int = 90) -> np.ndarray:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("L"))


def _expected(im: Image.Image) -> tuple[int, int, int, int]:
    """Where recall._blur_fill pastes ``im``: (top, bottom, left, right)."""
    w, h = im.size
    if w > h:
        fw, fh = w, int(w * 16 / 9)
    else:
        fh, fw = h, int(h * 16 / 9)
    top, left = (fh - h) // 2, (fw - w) // 2
    return top, top + h, left, left + w


@pytest.mark.parametrize(("h", "w"), [(300, 400), (400, 300), (240, 420), (360, 360)])
def test_blurred_fill_frame_is_found_to_the_line(h: int, w: int) -> None:
    im = _picture(h * w, h, w)
    y = _luma_jpeg(recall._blur_fill(im))
    box = pdq_variants.trim_box(y)
    assert box is not None
    assert np.abs(np.subtract(box, _expected(im))).max() <= 1, (box, _expected(im))


def test_flat_top_of_the_picture_is_not_taken_for_the_frame() -> None:
    """A picture whose top third is a smooth sky (a vertical gradient, no detail): the margin
    ends at the frame, not at the sky's lower edge (the old low-detail-run rule stopped there:
    bench/recall.py's photo:horse)."""
    im = np.asarray(_picture(7, 300, 400)).copy()
    sky = np.linspace(120, 250, 100, dtype=np.float32)[:, None, None]
    im[:100] = np.clip(sky * np.array([0.8, 0.9, 1.0], np.float32), 0, 255).astype(np.uint8)
    pic = Image.fromarray(im)
    y = _luma_jpeg(recall._blur_fill(pic))
    top, bottom, left, right = pdq_variants.trim_box(y) or (0, 0, 0, 0)
    et, eb, el, er = _expected(pic)
    assert abs(top - et) <= 1 and abs(bottom - eb) <= 1 and (left, right) == (el, er)


def test_dark_edge_of_the_picture_is_kept_beside_a_blurred_frame() -> None:
    """A picture dark along its right fifth (night sky, space photographs): with a blurred
    frame above and below, the dark columns are picture, not a border."""
    im = np.asarray(_picture(9, 300, 400)).copy()
    im[:, 320:] = 4
    pic = Image.fromarray(im)
    y = _luma_jpeg(recall._blur_fill(pic))
    box = pdq_variants.trim_box(y)
    assert box is not None and box[2:] == (0, y.shape[1])
    # and the hash of that box is the picture's (within a few bits)
    code = pdq_variants.border_trimmed(y, *y.shape)
    assert code is not None
    assert pdq.hamming(code.hex, pdq.fast_hash(_luma_jpeg(pic))[0].hex) <= 16


def test_off_centre_blurred_margins_are_no_blurred_frame() -> None:
    """Blurred bands of different heights above and below are no centred frame: the detector
    asks for the same margin at both ends."""
    pic = _picture(11, 300, 400)
    bg = pic.resize((400, 520)).filter(ImageFilter.GaussianBlur(12))
    bg.paste(pic, (0, 180))  # 180 rows above, 40 below
    y = np.asarray(bg.convert("L"), dtype=np.float32)
    assert pdq_variants._blur_frame(y) is None
    centred = pic.resize((400, 520)).filter(ImageFilter.GaussianBlur(12))
    centred.paste(pic, (0, 110))
    found = pdq_variants._blur_frame(np.asarray(centred.convert("L"), dtype=np.float32))
    assert found is not None and abs(found[0] - 110) <= 1 and abs(found[1] - 410) <= 1


def test_plain_pictures_have_no_blurred_frame() -> None:
    for seed in range(12):
        y = np.asarray(_picture(seed, 240 + 8 * seed, 320).convert("L"), dtype=np.float32)
        assert pdq_variants._blur_frame(y) is None
        assert pdq_variants._blur_frame(np.ascontiguousarray(y.T)) is None


def test_uniform_border_and_caption_band_still_trimmed() -> None:
    pic = _picture(3, 240, 320)
    y = _luma_jpeg(recall._border(pic))
    p = int(320 * 0.08)
    box = pdq_variants.trim_box(y)
    assert box is not None
    assert np.abs(np.subtract(box, (p, p + 240, p, p + 320))).max() <= 2
    y = _luma_jpeg(recall._caption(pic))
    box = pdq_variants.trim_box(y)
    assert (
        box is not None and abs(box[0] - int(240 * 0.18)) <= 2 and box[1:] == (y.shape[0], 0, 320)
    )


def test_tiny_and_flat_planes() -> None:
    assert pdq_variants._blur_frame(np.zeros((20, 40), np.float32)) is None
    assert pdq_variants._blur_frame(np.full((200, 100), 128, np.float32)) is None
    assert pdq_variants.trim_box(np.full((200, 100), 128, np.float32)) is None
