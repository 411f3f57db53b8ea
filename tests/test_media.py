"""Media identification by magic bytes and safe decoding of hostile images."""

from __future__ import annotations

import hashlib
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from conftest import encode, noise_image
from tipline.config import Limits
from tipline.errors import CorruptMediaError, TooManyPixelsError
from tipline.media import sniff as s
from tipline.media.decode import decode_luma_fast, decode_rgb
from tipline.scan.hashing import HashOptions, hash_bytes


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [("JPEG", s.JPEG), ("PNG", s.PNG), ("GIF", s.GIF), ("WEBP", s.WEBP), ("BMP", s.BMP),
     ("TIFF", s.TIFF), ("AVIF", s.AVIF)],
)  # fmt: skip
def test_sniff_by_content(fmt: str, expected: s.MediaType) -> None:
    data = encode(noise_image(3), fmt)
    assert s.sniff(data[: s.SNIFF_BYTES]) == expected


def test_sniff_heic() -> None:
    import pillow_heif

    pillow_heif.register_heif_opener()
    data = encode(noise_image(4), "HEIF")
    assert s.sniff(data[:512]) == s.HEIC
    rec = hash_bytes(data, "photo.heic", HashOptions())
    assert rec.pdq and not rec.errors


def test_sniff_other_kinds() -> None:
    assert s.sniff(b"") == s.EMPTY
    assert s.sniff(b"hello world\n") == s.TEXT
    assert s.sniff(b"PK\x03\x04rest") == s.ZIP
    assert s.sniff(b"\x1f\x8b\x08\x00") == s.GZIP
    assert s.sniff(bytes(range(256))) == s.UNKNOWN


def test_extension_is_ignored_for_decoding() -> None:
    png = encode(noise_image(5), "PNG")
    rec = hash_bytes(png, "misnamed.jpg", HashOptions())
    assert rec.media_type == "image/png" and rec.pdq and not rec.errors


def test_text_named_jpg_is_a_clear_item_warning() -> None:
    rec = hash_bytes(b"this is not a picture\n", "holiday.jpg", HashOptions())
    assert rec.media_type == "text/plain"
    assert rec.pdq is None
    assert rec.md5 == hashlib.md5(b"this is not a picture\n").hexdigest()
    assert rec.errors == []
    assert rec.warnings == ["name says image/jpeg, content is text/plain"]


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF"])
def test_truncated_image_is_a_corrupt_media_error(fmt: str) -> None:
    data = encode(noise_image(6, 400, 300), fmt)
    cut = data[: len(data) // 2]
    for mode in ("fast", "reference"):
        rec = hash_bytes(cut, f"cut.{fmt.lower()}", HashOptions(pdq_mode=mode))  # type: ignore[arg-type]
        assert rec.pdq is None
        assert rec.sha256 and len(rec.errors) == 1
        assert rec.errors[0].startswith("corrupt_media:"), rec.errors


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def bomb_png(side: int = 30000) -> bytes:
    """A valid 1-bit PNG of side x side pixels whose compressed size is tiny."""
    row = b"\x00" + b"\x00" * ((side + 7) // 8)
    comp = zlib.compressobj(9)
    body = b"".join(comp.compress(row * 1000) for _ in range(side // 1000)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")
    )


def test_decompression_bomb_png_is_refused_before_decoding() -> None:
    data = bomb_png()
    assert len(data) < 1_000_000
    with pytest.raises(TooManyPixelsError, match="900,000,000 pixels"):
        decode_luma_fast(data, s.PNG, Limits())
    with pytest.raises(TooManyPixelsError):
        decode_rgb(data, s.PNG, Limits())
    rec = hash_bytes(data, "bomb.png", HashOptions())
    assert rec.errors and rec.errors[0].startswith("too_many_pixels:") and rec.sha256


def test_pixel_limit_is_configurable() -> None:
    data = encode(noise_image(7, 300, 200), "PNG")
    rec = hash_bytes(data, "a.png", HashOptions(limits=Limits(max_pixels=50_000)))
    assert rec.errors and "too_many_pixels" in rec.errors[0]


def test_lying_png_dimensions_are_an_error() -> None:
    real = encode(noise_image(8, 100, 100), "PNG")
    # claim a larger size in IHDR (CRC fixed up): the pixel data is too short for it
    ihdr = struct.pack(">IIBBBBB", 3000, 3000, 8, 2, 0, 0, 0)
    lying = real[:8] + _chunk(b"IHDR", ihdr) + real[8 + 25 :]
    rec = hash_bytes(lying, "liar.png", HashOptions())
    assert rec.pdq is None and rec.errors and rec.errors[0].startswith("corrupt_media:")


def test_garbage_after_magic_is_an_error() -> None:
    with pytest.raises(CorruptMediaError):
        decode_rgb(b"\xff\xd8\xff" + b"\x00" * 100, s.JPEG, Limits())


def test_decode_timeout() -> None:
    big = encode(noise_image(9, 3000, 3000), "PNG")
    rec = hash_bytes(big, "slow.png", HashOptions(limits=Limits(max_decode_seconds=0.001)))
    assert rec.errors and rec.errors[0].startswith("decode_timeout:")


def test_cmyk_and_palette_and_16bit_images_hash() -> None:
    base = noise_image(10, 200, 150)
    for img, fmt in [
        (base.convert("CMYK"), "JPEG"),
        (base.convert("P"), "PNG"),
        (base.convert("L"), "PNG"),
        (base.convert("RGBA"), "PNG"),
        (Image.fromarray(np.asarray(base.convert("L"), dtype=np.uint16) * 200), "PNG"),
    ]:
        rec = hash_bytes(encode(img, fmt), f"x.{fmt.lower()}", HashOptions())
        assert rec.pdq and not rec.errors, (img.mode, rec.errors)


def test_png_with_huge_or_broken_text_chunks_still_hashes() -> None:
    """Pillow refuses zTXt over 1 MiB and text chunks with bad CRCs; PDQ must not be lost."""
    png = encode(noise_image(11, 200, 150), "PNG")
    ztxt = _chunk(b"zTXt", b"workflow\x00\x00" + zlib.compress(b"{" + b" " * 3_000_000 + b"}"))
    bad = bytearray(_chunk(b"tEXt", b"parameters\x00hello"))
    bad[-1] ^= 0xFF  # break the CRC
    ihdr_end = 8 + 25
    doctored = png[:ihdr_end] + ztxt + bytes(bad) + png[ihdr_end:]
    clean = hash_bytes(png, "a.png", HashOptions(provenance=False))
    for mode in ("fast", "reference"):
        rec = hash_bytes(doctored, "b.png", HashOptions(pdq_mode=mode, provenance=False))  # type: ignore[arg-type]
        assert rec.errors == [] and rec.pdq is not None
        if mode == "fast":
            assert rec.pdq == clean.pdq
