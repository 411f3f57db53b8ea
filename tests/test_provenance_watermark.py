"""Stable Diffusion invisible watermarks, marked here with invisible-watermark's own encoder.

Images are benign: crops of scikit-image's coffee/rocket photographs and procedural textures.
The encoder tests are skipped where invisible-watermark is not installed (the Makefile installs
it without its torch dependency).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from tipline.findings import ai_evidence
from tipline.media.sniff import GIF, JPEG, PNG, WEBP, MediaType
from tipline.provenance import analyse
from tipline.provenance import watermark as wm

U8 = npt.NDArray[np.uint8]


def _codec() -> tuple[Any, Any]:
    try:
        return wm.reference_codec()
    except ImportError:
        pytest.skip("invisible-watermark is not installed (make installs it with --no-deps)")


def photo(name: str = "coffee", size: tuple[int, int] = (512, 512)) -> U8:
    import skimage.data

    return np.asarray(Image.fromarray(getattr(skimage.data, name)()).resize(size))


def texture(seed: int, size: tuple[int, int] = (512, 512)) -> U8:
    w, h = size
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 4 + 2, w // 4 + 2, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((w + 8, h + 8), Image.Resampling.BICUBIC))[
        4 : 4 + h, 4 : 4 + w
    ]


def mark(rgb: U8, payload: wm.Payload) -> U8:
    """What the SD scripts do: RGB -> BGR -> encode(..., 'dwtDct') -> back to RGB."""
    encoder_cls, _ = _codec()
    enc = encoder_cls()
    enc.set_watermark("bits", list(payload.bits))
    bgr = enc.encode(np.ascontiguousarray(rgb[..., ::-1]), "dwtDct")
    return np.ascontiguousarray(bgr[..., ::-1])


def save(rgb: U8, fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def marked() -> dict[str, U8]:
    # A texture keeps the mark intact through JPEG q95 with a wide margin (a photograph's
    # flat areas lose part of it: the detection rates by format are in the calibration doc).
    return {p.key: mark(texture(11, (768, 512)), p) for p in wm.PAYLOADS}


@pytest.mark.parametrize("payload", wm.PAYLOADS, ids=lambda p: p.key)
def test_marked_photograph_png(payload: wm.Payload) -> None:
    data = save(mark(photo("rocket", (768, 512)), payload), "PNG")
    assert [f.evidence["payload"] for f in wm.read_watermark(data, PNG)] == [payload.key]


# ---------------------------------------------------------------------------------------------


def test_messages_are_the_published_ones() -> None:
    assert bytes(np.packbits(wm.SD_V1.bits)) == b"StableDiffusionV1"
    assert wm.SD_V1.length == 136
    assert bytes(np.packbits(wm.SD_V2.bits)) == b"SDV2"
    assert int("".join(map(str, wm.SDXL.bits)), 2) == 0xB3EC907BB19E
    assert wm.SDXL.length == 48


def test_thresholds_are_far_beyond_chance() -> None:
    for p in wm.PAYLOADS:
        assert p.length // 2 < p.threshold <= p.length
        assert wm.binomial_tail(p.length, p.threshold) < 1e-4 / 3
        assert 0 < p.min_gap < p.length // 2


def test_periodic_images_match_every_rotation_alike() -> None:
    """Stripes give votes that fit ASCII's structure (top bit of every byte is 0) in every
    byte rotation: a high agreement without a lead over the rotations is not a mark."""
    _, x = np.mgrid[0:768, 0:768]
    for period in (4, 8, 16):
        stripes = ((x // period) % 2 * 200 + 20).astype(np.uint8)
        rgb = np.stack([stripes, 255 - stripes, stripes // 2], axis=-1)
        for m in wm.agreements(rgb):
            assert not m.detected
            assert m.gap < m.payload.min_gap or m.agree < m.payload.threshold


def test_binomial_tail() -> None:
    assert wm.binomial_tail(48, 0) == 1.0
    assert wm.binomial_tail(48, 49) == 0.0
    assert wm.binomial_tail(48, 48) == pytest.approx(2.0**-48)
    assert wm.binomial_tail(48, 44) == pytest.approx(7.6e-10, rel=0.05)  # the reference's number


@pytest.mark.parametrize(
    "rgb",
    [photo(), texture(1), np.full((300, 400, 3), (250, 10, 10), np.uint8)],
    ids=["photo", "texture", "saturated"],
)
def test_decoder_matches_the_library_bit_for_bit(rgb: U8) -> None:
    _, decoder_cls = _codec()
    for p in wm.PAYLOADS:
        for img in (rgb, mark(rgb, p)):
            lib = decoder_cls("bits", p.length).decode(
                np.ascontiguousarray(img[..., ::-1]), "dwtDct"
            )
            ours = wm.decode_bits(img, p.length)
            assert np.array_equal(np.asarray(lib, dtype=np.uint8), ours)


def test_u_channel_is_opencvs() -> None:
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    rgb[0, :8] = [[0, 0, 0], [255, 255, 255], [0, 0, 255], [255, 255, 0], [255, 0, 0]] + [
        [0, 255, 0]
    ] * 3
    yuv = cv2.cvtColor(np.ascontiguousarray(rgb[..., ::-1]), cv2.COLOR_BGR2YUV)
    assert np.array_equal(wm.u_channel(rgb), yuv[..., 1])


@pytest.mark.parametrize("payload", wm.PAYLOADS, ids=lambda p: p.key)
@pytest.mark.parametrize(
    ("fmt", "mt", "kw"),
    [("PNG", PNG, {}), ("JPEG", JPEG, {"quality": 95}), ("WEBP", WEBP, {"lossless": True})],
    ids=["png", "jpeg95", "webp-lossless"],
)
def test_marked_images_are_found(
    marked: dict[str, U8], payload: wm.Payload, fmt: str, mt: MediaType, kw: dict[str, Any]
) -> None:
    data = save(marked[payload.key], fmt, **kw)
    findings = wm.read_watermark(data, mt)
    assert [f.evidence["payload"] for f in findings] == [payload.key]
    [f] = findings
    assert f.signal == "watermark" and f.verdict == "ai_generated"
    assert f.generator == payload.generator
    assert f.evidence["bits_agree"] >= payload.threshold
    assert f.confidence > 0.99
    assert ai_evidence([f]) == "strong"


def test_jpeg_420_is_read_from_its_stored_chroma(marked: dict[str, U8]) -> None:
    rgb = marked["sdxl"]
    data = save(rgb, "JPEG", quality=95)  # Pillow's default: 4:2:0
    votes, why = wm.file_votes(data, JPEG, wm.WatermarkSettings())
    assert why is None and votes is not None
    via_chroma = wm.matches_from_votes(votes, (wm.SDXL,))[0].agree
    decoded = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    via_rgb = wm.agreements(decoded, (wm.SDXL,))[0].agree
    assert via_chroma >= wm.SDXL.threshold > via_rgb  # upsampled chroma loses the mark


@pytest.mark.parametrize(
    "make",
    [
        lambda: photo("coffee"),
        lambda: texture(3),
        lambda: np.zeros((512, 512, 3), np.uint8),
        lambda: np.full((512, 512, 3), 255, np.uint8),
        lambda: np.full((512, 640, 3), (0, 0, 255), np.uint8),
        lambda: np.tile(np.linspace(0, 255, 640, dtype=np.uint8)[None, :, None], (480, 1, 3)),
        lambda: (
            (np.indices((512, 512)).sum(0) // 8 % 2 * 255)
            .astype(np.uint8)[..., None]
            .repeat(3, 2)
            .copy()
        ),
    ],
    ids=["photo", "texture", "black", "white", "saturated-blue", "gradient", "checker-8px"],
)
def test_unmarked_benign_images_give_nothing(make: Callable[[], U8]) -> None:
    rgb = make()
    for fmt, mt in (("PNG", PNG), ("JPEG", JPEG)):
        assert wm.read_watermark(save(rgb, fmt), mt) == []


def test_resized_or_cropped_marks_are_lost(marked: dict[str, U8]) -> None:
    """dwtDct only decodes at the resolution and grid it was embedded at."""
    rgb = marked["sd-v1"]
    half = np.asarray(Image.fromarray(rgb).resize((rgb.shape[1] // 2, rgb.shape[0] // 2)))
    assert wm.read_watermark(save(half, "PNG"), PNG) == []
    assert wm.read_watermark(save(np.ascontiguousarray(rgb[4:, 4:]), "PNG"), PNG) == []


def test_cheap_skips() -> None:
    s = wm.WatermarkSettings()

    def why(data: bytes, mt: MediaType) -> str | None:
        return wm.file_votes(data, mt, s)[1]

    assert "256x256" in (why(save(texture(4, (200, 200)), "PNG"), PNG) or "")
    assert "colour" in (why(save(texture(5)[..., 0].copy(), "PNG"), PNG) or "")
    assert "quality" in (why(save(texture(6), "JPEG", quality=60), JPEG) or "")
    assert "does not keep" in (why(save(texture(7), "GIF"), GIF) or "")
    big = save(np.zeros((3000, 4000, 3), np.uint8), "JPEG", quality=90)
    assert "larger than" in (why(big, JPEG) or "")


@pytest.mark.parametrize("quality", [98, 95, 90, 85, 75, 50])
def test_jpeg_quality_estimate(quality: int) -> None:
    im = Image.open(io.BytesIO(save(texture(8, (64, 64)), "JPEG", quality=quality)))
    est = wm.jpeg_quality(im.quantization)  # type: ignore[attr-defined]
    assert est is not None and abs(est - quality) <= 2


def test_broken_file_is_an_error_finding() -> None:
    data = save(texture(9), "PNG")[:400]
    [f] = wm.read_watermark(data, PNG)
    assert f.verdict == "error" and f.error


def test_analyse_runs_it_only_when_asked(
    monkeypatch: pytest.MonkeyPatch, marked: dict[str, U8]
) -> None:
    data = save(marked["sdxl"], "PNG")
    # the environment does not reach the library: the entry point resolves the setting
    monkeypatch.setenv(wm.ENV_ENABLE, "1")
    assert not [f for f in analyse(data, PNG) if f.signal == "watermark"]
    [f] = [f for f in analyse(data, PNG, include_watermarks=True) if f.signal == "watermark"]
    assert f.evidence["payload"] == "sdxl"
