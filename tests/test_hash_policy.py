"""One hashing policy: what is shared uses the reference PDQ pipeline, bit for bit.

The reference is python-threatexchange's, for every mode Pillow decodes:
``threatexchange/signal_type/pdq/pdq_hasher.py`` ``pdq_from_bytes`` ->
``_convert_image_to_correct_array_dimension`` (LA and I;16 through ``convert("RGB")``, every
other mode ``np.asarray(image)`` as it is, a 2-D array stacked to 3 channels) ->
``_pdq_from_numpy_array`` -> ``pdqhash.compute`` (HMA's ``/h/hash`` calls it through
``PdqSignal.hash_from_bytes``). ``python_threatexchange_pdq`` below is that code rewritten.
For palette, CMYK, 1-bit, LAB, YCbCr and HSV images that hashes raw values (palette indices,
the C, M, Y bands...), so the record also carries the hash of the RGB picture
(``convert("RGB")``) as an extra query hash, ``pdq_variants["rgb"]``: never the item's hash,
but looked up, so a JPEG copy of a GIF still matches (docs/formats.md#which-pdq).

Every image here is benign and drawn by this file: gradients, shapes, textures and
checkerboards, saved in the formats Meta's PDQ vectors use (PNG, JPEG, WebP, TIFF).
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pdqhash
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tipline.config import Limits
from tipline.index.bank_index import BankIndex
from tipline.media.decode import decode_luma_fast
from tipline.media.sniff import sniff
from tipline.record import ItemRecord
from tipline.scan.hashing import HashOptions, hash_bytes, signals_for_file
from tipline.scan.runner import RECHECK_MARGIN, pdq_recheck, run_scan
from tipline.signals import pdq

REF = HashOptions(pdq_mode="reference", provenance=False)
FAST = HashOptions(pdq_mode="fast", provenance=False)


def _te_hex(vec: np.ndarray) -> str:
    """python-threatexchange's ``_pdq_from_numpy_array`` formatting: the bits as a binary
    string, ``"%0*X"`` padded to ceil(bits / 4) hex digits, lowercased."""
    bin_str = "".join(str(int(x)) for x in vec)
    return ("%0*X" % ((len(bin_str) + 3) // 4, int(bin_str, 2))).lower()  # noqa: UP031 (as theirs)


def python_threatexchange_pdq(data: bytes) -> tuple[str, int] | None:
    """python-threatexchange's ``pdq_from_bytes``, rewritten from
    ``threatexchange/signal_type/pdq/pdq_hasher.py`` (``_convert_image_to_correct_array_dimension``
    and ``_pdq_from_numpy_array``). None where it raises (``pdqhash.compute`` refuses 32-bit
    I and F arrays, other 16-bit layouts and 2-channel PA arrays)."""
    image = Image.open(io.BytesIO(data))
    if image.mode == "LA" or image.mode == "I;16":
        image = image.convert("RGB")
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.concatenate([array[..., np.newaxis]] * 3, axis=2)
    try:
        vec, quality = pdqhash.compute(array)
    except (ValueError, IndexError):
        return None
    return _te_hex(vec), int(quality)


def rgb_pdq(data: bytes) -> tuple[str, int]:
    """pdqhash on Pillow's ``convert("RGB")``: the hash of the picture itself."""
    vec, quality = pdqhash.compute(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    return _te_hex(vec), int(quality)


def expected(data: bytes) -> tuple[str, int]:
    """What reference mode answers: python-threatexchange's hash; where python-threatexchange
    has none (it raises), the RGB picture's."""
    return python_threatexchange_pdq(data) or rgb_pdq(data)


# ---------------------------------------------------------------------- benign test images


def scene(w: int = 240, h: int = 180, seed: int = 3) -> np.ndarray:
    """H x W x 3 float in 0..1: colour gradients, a few hard-edged shapes, a fine texture."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    out = np.empty((h, w, 3))
    for c in range(3):
        fx, fy, ph = rng.uniform(0.5, 3, size=3)
        out[..., c] = 0.5 + 0.35 * np.sin(fx * x / w * 6.28 + ph) * np.cos(fy * y / h * 6.28)
    for _ in range(4):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(15, 50)
        disk = (x - cx) ** 2 + (y - cy) ** 2 < r * r
        out[disk] = rng.uniform(0, 1, size=3)
    out += 0.05 * (np.sin(x * 1.3) * np.sin(y * 1.1))[..., None]
    return np.clip(out, 0, 1)


def rgb8() -> Image.Image:
    return Image.fromarray((scene() * 255).round().astype(np.uint8))


def grey_values(top: float) -> np.ndarray:
    """The scene's luma scaled to 0..top (a 16-bit or float range)."""
    return scene() @ np.array([0.299, 0.587, 0.114]) * top


def png16_rgb() -> bytes:
    """A 16-bit-per-channel RGB PNG (written by hand: Pillow cannot write one)."""
    arr = (scene() * 65535).round().astype(">u2")
    h, w = arr.shape[:2]
    raw = b"".join(b"\x00" + arr[i].tobytes() for i in range(h))

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def image_in_mode(mode: str) -> Image.Image:
    base = rgb8()
    if mode == "I;16":  # values up to 1000: convert("RGB") clips everything above 255
        return Image.fromarray(grey_values(1000).round().astype(np.uint16))
    if mode == "I":
        return Image.fromarray((grey_values(700) - 100).round().astype(np.int32))
    if mode == "F":
        return Image.fromarray((grey_values(400) - 50).astype(np.float32))
    if mode == "LAB":  # Pillow cannot convert RGB to LAB: build the bands
        lab = (scene() * np.array([255, 200, 180]) + np.array([0, 28, 38])).astype(np.uint8)
        return Image.merge("LAB", [Image.fromarray(lab[..., i]) for i in range(3)])
    if mode == "RGBA":
        alpha = Image.fromarray((scene()[..., 0] * 255).astype(np.uint8))
        im = base.copy()
        im.putalpha(alpha)
        return im
    if mode == "LA":
        im = base.convert("L")
        im.putalpha(Image.fromarray((scene()[..., 1] * 255).astype(np.uint8)))
        return im
    if mode == "PA":
        return image_in_mode("RGBA").convert("PA")
    return base.convert(mode)


def encode(im: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **({"quality": 90} if fmt in ("JPEG", "WEBP") else {}))
    return buf.getvalue()


# (mode written, format, mode Pillow reads back): every mode python-threatexchange's tests and
# Meta's pdq/data/misc-images/modes cover, in the formats those vectors use.
CASES = [
    ("RGB", "JPEG", "RGB"),
    ("RGB", "PNG", "RGB"),
    ("RGB", "WEBP", "RGB"),
    ("RGB", "TIFF", "RGB"),
    ("L", "PNG", "L"),
    ("L", "JPEG", "L"),
    ("LA", "PNG", "LA"),
    ("LA", "TIFF", "LA"),
    ("RGBA", "PNG", "RGBA"),
    ("RGBA", "WEBP", "RGBA"),
    ("RGBA", "TIFF", "RGBA"),
    ("P", "PNG", "P"),
    ("P", "GIF", "P"),
    ("P", "TIFF", "P"),
    ("P", "BMP", "P"),
    ("PA", "TIFF", "PA"),
    ("PA", "WEBP", "RGBA"),
    ("CMYK", "JPEG", "CMYK"),
    ("CMYK", "TIFF", "CMYK"),
    ("1", "PNG", "1"),
    ("1", "TIFF", "1"),
    ("1", "BMP", "1"),
    ("I", "TIFF", "I"),
    ("I", "WEBP", "RGB"),
    ("F", "TIFF", "F"),
    ("F", "WEBP", "RGB"),
    ("I;16", "PNG", "I;16"),
    ("I;16", "TIFF", "I;16"),
    ("LAB", "TIFF", "LAB"),
    ("YCbCr", "TIFF", "YCbCr"),
    ("YCbCr", "JPEG", "RGB"),
    ("HSV", "WEBP", "RGB"),
]


def case_bytes(mode: str, fmt: str) -> bytes:
    return encode(image_in_mode(mode), fmt)


#: modes whose python-threatexchange hash is not of the RGB picture (Meta's modes/P.png is
#: 36 bits from convert("RGB")'s hash, modes/CMYK.jpg 256)
RAW = {"P", "CMYK", "1", "LAB", "YCbCr", "HSV"}
#: modes python-threatexchange cannot hash (pdqhash.compute raises on their arrays)
TE_RAISES = {"I", "F", "PA"}


@pytest.mark.parametrize(("mode", "fmt", "read_as"), CASES, ids=[f"{m}-{f}" for m, f, _ in CASES])
def test_reference_mode_is_python_threatexchange(mode: str, fmt: str, read_as: str) -> None:
    data = case_bytes(mode, fmt)
    assert Image.open(io.BytesIO(data)).mode == read_as  # the file is what the case says
    te = python_threatexchange_pdq(data)
    assert (te is None) == (read_as in TE_RAISES)
    rec = hash_bytes(data, f"x.{fmt.lower()}", REF)
    assert not rec.errors
    assert (rec.pdq, rec.pdq_quality) == expected(data)
    # the RGB picture's hash is an extra query hash exactly where it is another hash (or
    # where python-threatexchange's is unusable: 1-bit images score quality 0)
    rgb_hex, rgb_quality = rgb_pdq(data)
    if read_as in RAW and rgb_quality >= 50 and (rgb_hex != rec.pdq or (rec.pdq_quality or 0) < 50):
        assert rec.pdq_variants == {"rgb": rgb_hex}
    else:
        assert not rec.pdq_variants
        if te is not None:
            assert te == rgb_pdq(data)  # every other mode: the same as the RGB picture's
    # fast mode gives the reference answer for the raw modes (it hashes luma of the picture)
    if read_as in RAW:
        fast = hash_bytes(data, "x", FAST)
        assert (fast.pdq, fast.pdq_variants) == (rec.pdq, rec.pdq_variants)


def test_raw_mode_hashes_differ_from_the_picture() -> None:
    """Why the extra query hash exists: on these modes python-threatexchange's hash is far
    from the picture's, so a JPEG copy of a GIF would not match on it."""
    for mode, fmt in (("P", "GIF"), ("P", "PNG"), ("CMYK", "JPEG")):
        data = case_bytes(mode, fmt)
        te = python_threatexchange_pdq(data)
        assert te is not None and pdq.hamming(te[0], rgb_pdq(data)[0]) > 31


def test_sixteen_bit_rgb_png_is_clipped_like_convert_rgb() -> None:
    data = png16_rgb()
    rec = hash_bytes(data, "x.png", REF)
    assert (rec.pdq, rec.pdq_quality) == expected(data) == rgb_pdq(data)


def test_sixteen_bit_grey_is_clipped_not_scaled() -> None:
    """Meta's I16.png gap: python-threatexchange's ``convert("RGB")`` clips 16-bit values."""
    data = case_bytes("I;16", "PNG")
    values = np.asarray(Image.open(io.BytesIO(data)), dtype=np.float64)
    assert values.max() > 255  # so clipping and scaling disagree
    scaled = (values * (255 / values.max())).astype(np.uint8)
    scaled_hex = pdq.reference_hash(scaled)[0].hex
    for opts in (REF, FAST):
        rec = hash_bytes(data, "x.png", opts)
        assert pdq.hamming(rec.pdq or "", expected(data)[0]) <= (0 if opts is REF else 8)
        assert pdq.hamming(rec.pdq or "", scaled_hex) > 16


class _Bank:
    def __init__(self, name: str, threshold: int = 31) -> None:
        self.name, self.role, self.pdq_threshold, self.enabled = name, "alert", threshold, True


class _Entry:
    def __init__(self, eid: int, signal: str) -> None:
        self.id, self.bank, self.signal_type, self.signal = eid, "B", "pdq", signal
        self.label, self.enabled = "DEMO-benign-stand-in", True


@pytest.mark.parametrize("fmt", ["GIF", "PNG"])
def test_palette_image_finds_a_bank_entry_of_its_picture(fmt: str) -> None:
    """A bank holding the RGB picture's hash (from a JPEG copy, say): the palette file's own
    (python-threatexchange) hash misses it, its ``rgb`` query hash finds it, and the match
    says so; the record's own hash stays python-threatexchange's."""
    data = case_bytes("P", fmt)
    picture = rgb_pdq(data)[0]
    jpeg_copy = hash_bytes(encode(Image.open(io.BytesIO(data)).convert("RGB"), "JPEG"), "c", REF)
    assert pdq.hamming(jpeg_copy.pdq or "", picture) <= 8
    index = BankIndex.build([_Bank("B")], [_Entry(1, jpeg_copy.pdq or "")])
    rec = hash_bytes(data, f"x.{fmt.lower()}", REF)
    assert rec.pdq == python_threatexchange_pdq(data)[0]  # type: ignore[index]
    alone = ItemRecord(path="x", pdq=rec.pdq, pdq_quality=rec.pdq_quality)
    assert index.match(alone) == []
    (m,) = index.match(rec)
    assert (m.entry_id, m.via) == (1, "rgb")
    assert m.to_json()["via"] == "rgb"
    # the record round-trips through JSONL with its query hashes
    assert ItemRecord.from_json(rec.to_json()).pdq_variants == rec.pdq_variants


@pytest.mark.parametrize(("mode", "fmt", "read_as"), CASES, ids=[f"{m}-{f}" for m, f, _ in CASES])
def test_fast_mode_is_close_in_every_mode(mode: str, fmt: str, read_as: str) -> None:
    data = case_bytes(mode, fmt)
    ref, fast = hash_bytes(data, "x", REF), hash_bytes(data, "x", FAST)
    assert not fast.errors
    if (ref.pdq_quality or 0) >= 80:
        assert pdq.hamming(fast.pdq or "", ref.pdq or "") <= 16, (ref.pdq_quality,)


# ---------------------------------------------------------------------- HMA's test images


def hma_checkerboard(cell: int) -> bytes:
    """What HMA's tests/utils.py describes: a 128 x 128 RGB image of ``cell`` px black and
    white squares (white where x // cell + y // cell is odd), saved as JPEG (Pillow's default
    quality). Written from that description."""
    y, x = np.mgrid[0:128, 0:128]
    white = (x // cell + y // cell) % 2 == 1
    px = np.where(white[..., None], np.uint8(255), np.uint8(0)).repeat(3, axis=2)
    buf = io.BytesIO()
    Image.fromarray(px, "RGB").save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture
def service(tmp_path: Path) -> TestClient:
    from tipline.service.app import create_app
    from tipline.service.settings import ServiceSettings
    from tipline.store import migrations

    db_url = f"sqlite:///{tmp_path / 'policy.sqlite3'}"
    migrations.upgrade(db_url)
    settings = ServiceSettings.load(
        env={},
        data_dir=tmp_path / "data",
        database_url=db_url,
        media_mode="hash-only",
        anonymous_permissions="match:read,hash:read,index:read,bank:read,bank:write",
        index_refresh_seconds=0.0,
        inprocess_workers=0,
    )
    return TestClient(create_app(settings, load_index="sync"))


@pytest.mark.parametrize("cell", [8, 16])
def test_service_hashes_hma_checkerboards_as_hma_does(service: TestClient, cell: int) -> None:
    data = hma_checkerboard(cell)
    hex_, quality = expected(data)
    assert quality >= 50
    with service as c:
        r = c.post("/h/hash", files={"photo": ("image1.jpg", data, "image/jpeg")})
        assert r.status_code == 200, r.text
        assert r.json() == {"pdq": hex_}
        c.post("/c/banks", json={"name": "CHECKERS"})
        r = c.post("/c/bank/CHECKERS/content", files={"photo": ("a.jpg", data, "image/jpeg")})
        assert r.status_code == 200, r.text
        assert r.json()["signals"] == {"pdq": hex_}
    # and fast mode falls back to the reference on them (their DCT is mostly ties)
    assert hash_bytes(data, "a.jpg", FAST).pdq == hex_


def test_everything_that_shares_hashes_uses_the_reference(tmp_path: Path) -> None:
    from tipline.service import api_v1, hma
    from tipline.service.settings import ServiceSettings
    from tipline.service.wiring import pipeline_config

    assert HashOptions().pdq_mode == "reference"
    assert hma.HASH_OPTIONS.pdq_mode == "reference"
    assert api_v1.MATCH_OPTIONS.pdq_mode == "reference"
    settings = ServiceSettings.load(env={}, data_dir=tmp_path / "d")
    assert pipeline_config(settings, match=lambda r: []).hash_options.pdq_mode == "reference"
    f = tmp_path / "c.jpg"
    f.write_bytes(hma_checkerboard(8))
    assert signals_for_file(f)["pdq"] == expected(f.read_bytes())[0]


# ---------------------------------------------------------------------- fast mode's guards


def pure_checkerboard_png(w: int = 640, h: int = 480, cell: int = 16) -> bytes:
    y, x = np.mgrid[0:h, 0:w]
    g = np.where((x // cell + y // cell) % 2 == 1, 255, 0).astype(np.uint8)
    return encode(Image.fromarray(g, "L"), "PNG")


def test_fragile_fast_hash_falls_back_to_reference() -> None:
    data = pure_checkerboard_png()
    plane = np.asarray(Image.open(io.BytesIO(data)))
    buf = pdq.buffer_from_luma(plane)
    assert buf is not None
    assert pdq.fragile_bits(plane, buf, *plane.shape) >= pdq.TIE_FRAGILE_LIMIT
    assert pdq.is_fragile(plane, buf, *plane.shape)
    assert pdq.fast_hash_or_none(plane) is None
    assert hash_bytes(data, "c.png", FAST).pdq == expected(data)[0]
    # an ordinary picture is not fragile and keeps the fast answer
    photo = np.asarray(rgb8().convert("L"))
    pbuf = pdq.buffer_from_luma(photo)
    assert pbuf is not None and pdq.fragile_bits(photo, pbuf, *photo.shape) < 8
    assert pdq.fast_hash_or_none(photo) == pdq.fast_hash(photo)


def test_smooth_fields_with_noise_keep_the_fast_answer() -> None:
    """Smooth colour fields with mild noise (the service bench's uploads) have many DCT
    coefficients near the median yet a fast hash a few bits from the reference: fast mode
    must not give up on them (it would cost more than the reference)."""
    rng = np.random.default_rng(7)
    h, w = 900, 1350
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.empty((h, w, 3), np.float32)
    for c in range(3):
        acc = np.zeros((h, w), np.float32)
        for _ in range(4):
            fx, fy, ph = rng.uniform(0.5, 8, 3)
            acc += np.sin(fx * x / w * np.pi + ph) * np.cos(fy * y / h * np.pi)
        img[..., c] = 128 + 30 * acc
    img += rng.normal(0, 9, img.shape).astype(np.float32)
    from conftest import encode as encode_kw

    data = encode_kw(Image.fromarray(img.clip(0, 255).astype(np.uint8)), "JPEG", quality=90)
    luma = decode_luma_fast(data, sniff(data[:512]), Limits())
    fast = pdq.fast_hash_or_none(luma.plane, luma.height, luma.width)
    assert fast is not None  # not judged fragile
    assert pdq.hamming(fast[0].hex, expected(data)[0]) <= 16


def fast_differs_jpeg() -> tuple[bytes, str, str]:
    """A JPEG (scikit-image's coins or moon, resized) whose fast hash is a few bits from its
    reference hash: the first of a few candidates that is."""
    from conftest import encode as encode_kw
    from conftest import photo

    for name, size in (("coins", (1600, 1200)), ("moon", (2400, 1800)), ("chelsea", (2000, 1500))):
        data = encode_kw(photo(name, size=size), "JPEG", quality=90)
        fast = hash_bytes(data, "a.jpg", FAST).pdq or ""
        ref = hash_bytes(data, "a.jpg", REF).pdq or ""
        if fast != ref:
            return data, fast, ref
    raise AssertionError("no candidate's fast hash differs from its reference hash")


def flip_bits(hex_: str, n: int) -> str:
    v = int(hex_, 16)
    for i in range(n):
        v ^= 1 << (i * 7 % 256)
    return f"{v:064x}"


def test_scan_rechecks_near_matches_with_the_reference(tmp_path: Path) -> None:
    data, fast, ref = fast_differs_jpeg()
    assert 0 < pdq.hamming(fast, ref) <= 16
    f = tmp_path / "a.jpg"
    f.write_bytes(data)

    def scan(entries: list[str]) -> list:  # type: ignore[type-arg]
        matcher = BankIndex.build([_Bank("B")], [_Entry(i + 1, s) for i, s in enumerate(entries)])
        out: list = []  # type: ignore[type-arg]
        run_scan([str(f)], FAST, matcher, out.extend, jobs=1)
        return out

    # a banked hash 31 bits from the reference: the reference matches it, so must the scan,
    # and the record holds the reference hash the match was decided on
    at_threshold = flip_bits(ref, 31)
    (rec,) = scan([at_threshold])
    assert rec.pdq == ref
    assert [m.distance for m in rec.matches] == [31]
    # far from every entry: the fast hash stays
    (rec,) = scan([flip_bits(ref, 31 + RECHECK_MARGIN + 20)])
    assert rec.pdq == fast and rec.matches == []
    # without banks nothing is re-checked
    out: list = []  # type: ignore[type-arg]
    run_scan([str(f)], FAST, None, out.extend, jobs=1)
    assert out[0].pdq == fast


def test_recheck_reach_is_threshold_plus_margin() -> None:
    base = "0" * 64
    matcher = BankIndex.build([_Bank("B", threshold=20)], [_Entry(1, base)])
    near = pdq_recheck(matcher)
    assert near is not None
    assert near([flip_bits(base, 20 + RECHECK_MARGIN)])
    assert not near([flip_bits(base, 21 + RECHECK_MARGIN)])
    assert near([flip_bits(base, 200), base])  # any of an item's hashes (dihedral)
    assert pdq_recheck(BankIndex.build([_Bank("B")], [])) is None
