"""NovelAI "stealth pnginfo": metadata hidden in the least significant bits of the pixels.

Bits are read column-major (x outer, y inner), most significant bit first: a 15-byte magic
(``stealth_pnginfo``/``stealth_pngcomp`` in the alpha LSBs, ``stealth_rgbinfo``/
``stealth_rgbcomp`` in the R, G, B LSBs of each pixel in turn), a 32-bit big-endian payload
length in bits, then the payload (gzip for the ``*comp`` variants).

Cost: for a PNG, only the first rows of IDAT are inflated and only the first column(s) are
unfiltered (a pixel in column 0 depends only on the pixel above it), enough for the 120 bits of
the magic. Only when the magic matches is the whole image decoded, from a minimal PNG rebuilt
from IHDR/PLTE/tRNS/IDAT so that text-chunk traps cannot stop Pillow. WebP has no partial decode:
a lossless WebP or one with lossless alpha is decoded in full.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from tipline.provenance.containers import ChunkError, ContainerInfo, inflate

if TYPE_CHECKING:
    from tipline.provenance import ReadContext

MAGIC_BITS = 15 * 8
HEADER_BITS = MAGIC_BITS + 32
ALPHA_MAGICS = {b"stealth_pnginfo": False, b"stealth_pngcomp": True}
RGB_MAGICS = {b"stealth_rgbinfo": False, b"stealth_rgbcomp": True}
#: Largest payload read (bits).
MAX_PAYLOAD_BITS = 8 * 16 * 1024 * 1024
#: Largest decompressed payload.
MAX_PAYLOAD_BYTES = 16 * 1024 * 1024
#: Inflated bytes allowed for the cheap check (the first rows of a very wide image).
MAX_PROBE_BYTES = 32 * 1024 * 1024


@dataclass(slots=True)
class StealthResult:
    mode: str = ""
    magic: str = ""
    payload: str = ""
    payload_bytes: int = 0
    error: str | None = None


def read_stealth_payload(ctx: ReadContext) -> StealthResult | None:
    """The hidden payload, a result with ``error`` set, or None when there is none."""
    info = ctx.container
    if info.format == "png" and info.png is not None:
        layout = info.png
        if layout.bit_depth != 8 or layout.color_type not in (2, 6) or not layout.idat:
            return None
        if layout.interlace == 0:
            mode = _probe_png(ctx.data, info)
            if mode is None:
                return None
        else:
            mode = None  # Adam7 has no cheap path: decode and look
        return _full(ctx, mode, _minimal_png(ctx.data, info))
    if info.format == "webp" and (info.lossless or info.has_alpha):
        return _full(ctx, None, ctx.data)
    return None


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


class _RowReader:
    """Inflates a PNG's IDAT stream row by row and unfilters only its first ``cols`` pixels."""

    def __init__(self, data: bytes, idat: list[tuple[int, int]], width: int, bpp: int, cols: int):
        self.mv = memoryview(data)
        self.idat = idat
        self.next_chunk = 0
        self.pending: bytes | memoryview = b""
        self.d = zlib.decompressobj()
        self.stride = 1 + width * bpp
        self.bpp = bpp
        self.width_bytes = cols * bpp
        self.buf = bytearray()
        self.prev = bytearray(self.width_bytes)
        #: unfiltered first-columns of each row read so far
        self.rows: list[bytes] = []

    def read_to(self, nrows: int) -> bool:
        """Decode rows until ``nrows`` are available; False if the stream ends or is bad."""
        need = nrows * self.stride
        try:
            while len(self.buf) < need:
                if not self.pending:
                    if self.next_chunk >= len(self.idat):
                        break
                    s, e = self.idat[self.next_chunk]
                    self.next_chunk += 1
                    self.pending = self.mv[s:e]
                self.buf += self.d.decompress(self.pending, need - len(self.buf))
                self.pending = self.d.unconsumed_tail
        except zlib.error:
            return False
        bpp, wb = self.bpp, self.width_bytes
        while len(self.rows) < nrows and (len(self.rows) + 1) * self.stride <= len(self.buf):
            base = len(self.rows) * self.stride
            ftype = self.buf[base]
            line = self.buf[base + 1 : base + 1 + wb]
            prev = self.prev
            cur = bytearray(wb)
            for i in range(wb):
                a = cur[i - bpp] if i >= bpp else 0
                b = prev[i]
                if ftype == 0:
                    v = line[i]
                elif ftype == 1:
                    v = line[i] + a
                elif ftype == 2:
                    v = line[i] + b
                elif ftype == 3:
                    v = line[i] + ((a + b) >> 1)
                elif ftype == 4:
                    v = line[i] + _paeth(a, b, prev[i - bpp] if i >= bpp else 0)
                else:
                    return False  # invalid filter: the decoder will complain, not us
                cur[i] = v & 0xFF
            self.rows.append(bytes(cur))
            self.prev = cur
        return len(self.rows) >= nrows

    def column_major(self, cols: int) -> list[bytes]:
        bpp = self.bpp
        return [row[c * bpp : (c + 1) * bpp] for c in range(cols) for row in self.rows]


def _probe_png(data: bytes, info: ContainerInfo) -> str | None:
    """'alpha' or 'rgb' if the first pixels carry a stealth magic, else None. Cheap: the first
    8 rows decide for almost every image (the magic's first byte), 120 rows at most."""
    layout = info.png
    assert layout is not None
    w, h = layout.width, layout.height
    bpp = 4 if layout.color_type == 6 else 3
    if w <= 0 or h <= 0:
        return None
    rows = min(h, MAGIC_BITS)
    cols = min(w, -(-MAGIC_BITS // rows))  # columns holding the first 120 pixels
    if rows * (1 + w * bpp) > MAX_PROBE_BYTES:
        return None
    reader = _RowReader(data, layout.idat, w, bpp, cols)
    if cols == 1 and rows >= 8:
        # first magic byte: alpha bits of pixels 0-7, or RGB bits of pixels 0-2 (column 0)
        if not reader.read_to(8):
            return None
        px = reader.column_major(1)
        alpha_ok = bpp == 4 and _bits_to_bytes([p[3] & 1 for p in px[:8]]) == b"s"
        rgb_ok = _bits_to_bytes([ch & 1 for p in px[:3] for ch in p[:3]][:8]) == b"s"
        if not (alpha_ok or rgb_ok):
            return None
    if not reader.read_to(rows):
        return None
    order = reader.column_major(cols)
    if bpp == 4 and len(order) >= MAGIC_BITS:
        magic = _bits_to_bytes([p[3] & 1 for p in order[:MAGIC_BITS]])
        if magic in ALPHA_MAGICS:
            return "alpha"
    rgb = [ch & 1 for p in order[: MAGIC_BITS // 3] for ch in p[:3]]
    if len(rgb) == MAGIC_BITS and _bits_to_bytes(rgb) in RGB_MAGICS:
        return "rgb"
    return None


def _bits_to_bytes(bits: list[int]) -> bytes:
    return np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes()


def _chunk(ctype: bytes, body: bytes) -> bytes:
    return (
        struct.pack(">I", len(body))
        + ctype
        + body
        + struct.pack(">I", zlib.crc32(body, zlib.crc32(ctype)))
    )


def _minimal_png(data: bytes, info: ContainerInfo) -> bytes:
    layout = info.png
    assert layout is not None
    idat = b"".join(data[s:e] for s, e in layout.idat)
    parts = [b"\x89PNG\r\n\x1a\n", _chunk(b"IHDR", layout.ihdr)]
    if layout.plte is not None:
        parts.append(_chunk(b"PLTE", layout.plte))
    if layout.trns is not None:
        parts.append(_chunk(b"tRNS", layout.trns))
    parts += [_chunk(b"IDAT", idat), _chunk(b"IEND", b"")]
    return b"".join(parts)


def _full(ctx: ReadContext, mode: str | None, image_bytes: bytes) -> StealthResult | None:
    from PIL import Image

    from tipline.errors import TiplineError
    from tipline.media.decode import deadline

    info = ctx.container
    if info.width and info.height and info.width * info.height > ctx.max_pixels:
        return StealthResult(error="image too large for the stealth metadata check")
    try:
        with deadline(ctx.max_decode_seconds, "stealth metadata check"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            src = Image.open(io.BytesIO(image_bytes))
            if src.size[0] * src.size[1] > ctx.max_pixels:
                return StealthResult(error="image too large for the stealth metadata check")
            has_alpha = "A" in src.getbands() or "transparency" in src.info
            arr = np.asarray(src.convert("RGBA" if has_alpha else "RGB"), dtype=np.uint8)
    except TiplineError as err:
        return StealthResult(error=f"stealth metadata check: {err}")
    except (OSError, ValueError, SyntaxError, EOFError, struct.error) as err:
        return StealthResult(error=f"stealth metadata check: could not decode pixels ({err})")
    modes = [mode] if mode else (["alpha", "rgb"] if arr.shape[2] == 4 else ["rgb"])
    for m in modes:
        result = _extract(arr, m)
        if result is not None:
            return result
    return None


def _bits(arr: npt.NDArray[np.uint8], mode: str, n: int) -> npt.NDArray[np.uint8]:
    """The first ``n`` payload bits, column-major."""
    h = arr.shape[0]
    per_px = 1 if mode == "alpha" else 3
    cols = min(arr.shape[1], -(-n // (h * per_px)))
    if mode == "alpha":
        out = (arr[:, :cols, 3] & np.uint8(1)).T.reshape(-1)
    else:
        out = (arr[:, :cols, :3] & np.uint8(1)).transpose(1, 0, 2).reshape(-1)
    return out[:n].astype(np.uint8, copy=False)


def _extract(arr: npt.NDArray[np.uint8], mode: str) -> StealthResult | None:
    if mode == "alpha" and arr.shape[2] < 4:
        return None
    capacity = arr.shape[0] * arr.shape[1] * (1 if mode == "alpha" else 3)
    if capacity < HEADER_BITS:
        return None
    head = _bits(arr, mode, HEADER_BITS)
    magic = np.packbits(head[:MAGIC_BITS]).tobytes()
    table = ALPHA_MAGICS if mode == "alpha" else RGB_MAGICS
    if magic not in table:
        return None
    name = magic.decode("ascii")
    length = int.from_bytes(np.packbits(head[MAGIC_BITS:]).tobytes(), "big")
    if length > MAX_PAYLOAD_BITS or HEADER_BITS + length > capacity:
        return StealthResult(
            mode,
            name,
            error=f"{name}: payload length {length:,} bits is "
            "impossible for this image (corrupt or crafted)",
        )
    payload = np.packbits(_bits(arr, mode, HEADER_BITS + length)[HEADER_BITS:]).tobytes()
    if table[magic]:
        try:
            payload = inflate(payload, MAX_PAYLOAD_BYTES, name, wbits=16 + zlib.MAX_WBITS)
        except ChunkError as err:
            return StealthResult(mode, name, error=str(err))
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as err:
        return StealthResult(mode, name, error=f"{name}: payload is not UTF-8 ({err.reason})")
    return StealthResult(mode, name, text, len(payload))
