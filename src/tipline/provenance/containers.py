"""Metadata containers of image files, walked by hand with a cap on everything.

Pillow is not used for metadata: it drops PNG text chunks placed after IDAT until the pixels are
decoded, refuses compressed text over 1 MiB (``PngImagePlugin.MAX_TEXT_CHUNK``: big ComfyUI
workflows) and stops at a bad CRC. These walkers read every chunk or segment, never decode pixels,
turn each structural problem into a line in ``ContainerInfo.errors`` and carry on wherever the
structure still allows it.

What is collected: PNG ``tEXt``/``zTXt``/``iTXt``/``eXIf``/``caBX``; JPEG APP1 EXIF and XMP, COM,
APP11 (JUMBF: C2PA presence only) and the frame size; WebP ``EXIF``/``XMP ``/``C2PA``/``ALPH`` and
the VP8/VP8L/VP8X headers; GIF comment and XMP application extensions; TIFF IFDs. From EXIF:
ImageDescription, Make, Model, Software, Artist, Copyright, DocumentName, UserComment and a short
text MakerNote.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

from tipline.media.sniff import MediaType

MiB = 1024 * 1024

#: Chunks/segments/blocks walked in one file before giving up (a crafted file can hold millions).
MAX_CHUNKS = 200_000
#: Text chunks read per file; later ones are counted, reported and skipped.
MAX_TEXT_CHUNKS = 1_024
#: Largest single decoded (decompressed) text value.
MAX_TEXT_BYTES = 16 * MiB
#: Decoded text per file, all chunks together.
MAX_TOTAL_TEXT = 32 * MiB
#: Largest XMP packet kept.
MAX_XMP_BYTES = 4 * MiB
#: Entries read from one EXIF IFD.
MAX_IFD_ENTRIES = 1_000
#: Structural problems reported per file (the rest are counted).
MAX_ERRORS = 32
#: GIF data sub-blocks walked (each may be a single byte).
MAX_GIF_BLOCKS = 500_000

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
XMP_KEY = "XML:com.adobe.xmp"
_JPEG_XMP = b"http://ns.adobe.com/xap/1.0/\x00"
_JPEG_XMP_EXT = b"http://ns.adobe.com/xmp/extension/\x00"

#: EXIF tags kept as text, by IFD.
IFD0_TAGS = {
    0x010D: "DocumentName",
    0x010E: "ImageDescription",
    0x010F: "Make",
    0x0110: "Model",
    0x0131: "Software",
    0x013B: "Artist",
    0x8298: "Copyright",
}
EXIF_IFD_TAGS = {0x9286: "UserComment", 0x927C: "MakerNote", 0x9003: "DateTimeOriginal"}
_EXIF_IFD_POINTER = 0x8769
_TIFF_XMP_TAG = 0x02BC
_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8}


@dataclass(slots=True)
class TextEntry:
    """One text value found in the container."""

    key: str
    value: str
    #: where: png:tEXt, png:zTXt, png:iTXt, jpeg:COM, gif:comment
    source: str
    #: PNG only: the chunk came after the first IDAT (Pillow would not show it before load())
    after_idat: bool = False
    #: PNG only: the chunk's CRC did not match (its text is still used, and reported)
    crc_ok: bool = True


@dataclass(slots=True)
class PngLayout:
    """What the stealth reader needs to decode a PNG's pixels without its text chunks."""

    width: int = 0
    height: int = 0
    bit_depth: int = 0
    color_type: int = 0
    interlace: int = 0
    ihdr: bytes = b""
    plte: bytes | None = None
    trns: bytes | None = None
    #: (start, end) offsets of every IDAT chunk's data, in file order
    idat: list[tuple[int, int]] = field(default_factory=list)


@dataclass(slots=True)
class ContainerInfo:
    format: str = "other"
    texts: list[TextEntry] = field(default_factory=list)
    #: XMP packets (decoded text), in file order
    xmp: list[str] = field(default_factory=list)
    #: EXIF text values by tag name (IFD0 and Exif IFD), see IFD0_TAGS / EXIF_IFD_TAGS
    exif: dict[str, str] = field(default_factory=dict)
    #: "II" or "MM" when EXIF was found
    exif_byte_order: str | None = None
    #: a C2PA/JUMBF store is embedded (JPEG APP11, PNG caBX, RIFF C2PA); read by the c2pa reader
    c2pa_present: bool = False
    width: int | None = None
    height: int | None = None
    has_alpha: bool = False
    #: WebP: VP8L bitstream, or an ALPH chunk stored losslessly
    lossless: bool = False
    png: PngLayout | None = None
    #: bytes after the PNG IEND / JPEG EOI / GIF trailer (appended data)
    trailing_bytes: int = 0
    #: counts of every chunk/segment type seen, e.g. {"tEXt": 3, "IDAT": 40}
    chunk_counts: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    _errors_dropped: int = 0

    def error(self, message: str) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(message)
        else:
            self._errors_dropped += 1

    def finish(self) -> None:
        if self._errors_dropped:
            self.errors.append(f"... and {self._errors_dropped} more structural problems")
            self._errors_dropped = 0

    def text(self, key: str) -> str | None:
        """The first text value with this key (case-sensitive), or None."""
        for t in self.texts:
            if t.key == key:
                return t.value
        return None

    def count(self, name: str) -> None:
        self.chunk_counts[name] = self.chunk_counts.get(name, 0) + 1


class ChunkError(Exception):
    """One chunk or value could not be read; the walk goes on."""


class _Budget:
    def __init__(self, total: int) -> None:
        self.remaining = total

    def limit(self) -> int:
        return max(0, min(MAX_TEXT_BYTES, self.remaining))

    def take(self, n: int, what: str) -> None:
        if n > MAX_TEXT_BYTES:
            raise ChunkError(f"{what}: {n:,} bytes of text exceeds the {MAX_TEXT_BYTES:,} cap")
        if n > self.remaining:
            raise ChunkError(f"{what}: text budget of {MAX_TOTAL_TEXT:,} bytes per file spent")
        self.remaining -= n


def parse_container(data: bytes, media_type: MediaType) -> ContainerInfo:
    """Walk the metadata of one item. Never raises for malformed input."""
    info = ContainerInfo()
    budget = _Budget(MAX_TOTAL_TEXT)
    try:
        if data.startswith(PNG_SIGNATURE):
            info.format = "png"
            _walk_png(data, info, budget)
        elif data.startswith(b"\xff\xd8\xff"):
            info.format = "jpeg"
            _walk_jpeg(data, info, budget)
        elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            info.format = "webp"
            _walk_webp(data, info, budget)
        elif data[:6] in (b"GIF87a", b"GIF89a"):
            info.format = "gif"
            _walk_gif(data, info, budget)
        elif data[:4] in (b"II*\x00", b"MM\x00*"):
            info.format = "tiff"
            parse_exif(memoryview(data), info, budget, tiff_file=True)
    except (IndexError, struct.error, ValueError) as err:  # a walker bug on odd input
        info.error(f"{info.format}: stopped reading metadata: {type(err).__name__}: {err}")
    info.finish()
    return info


# --- text helpers ------------------------------------------------------------------------------


def decode_text(raw: bytes | memoryview) -> str:
    """UTF-8 if the bytes are valid UTF-8, else Latin-1 (the PNG tEXt charset)."""
    b = bytes(raw)
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return b.decode("latin-1")


def inflate(data: bytes | memoryview, limit: int, what: str, wbits: int = zlib.MAX_WBITS) -> bytes:
    """Decompress at most ``limit`` bytes; more is a bomb (ChunkError), as is corrupt data."""
    d = zlib.decompressobj(wbits)
    try:
        out = d.decompress(data, limit + 1)
    except zlib.error as err:
        raise ChunkError(f"{what}: corrupt compressed data ({err})") from None
    if len(out) > limit or d.unconsumed_tail:
        raise ChunkError(
            f"{what}: compressed text expands past {limit:,} bytes (decompression bomb?); not read"
        )
    if not d.eof:
        raise ChunkError(f"{what}: compressed data is truncated")
    return out


# --- PNG ---------------------------------------------------------------------------------------


def _walk_png(data: bytes, info: ContainerInfo, budget: _Budget) -> None:
    mv = memoryview(data)
    layout = info.png = PngLayout()
    pos, n, text_chunks, seen_idat, ended = 8, 0, 0, False, False
    skipped_text = 0
    size = len(data)
    while pos < size:
        if pos + 8 > size:
            info.error(f"PNG: truncated chunk header at offset {pos}")
            break
        length, ctype = struct.unpack_from(">I4s", data, pos)
        n += 1
        if n > MAX_CHUNKS:
            info.error(f"PNG: more than {MAX_CHUNKS:,} chunks; stopped reading metadata there")
            break
        if not ctype.isalpha():
            info.error(f"PNG: invalid chunk type {ctype!r} at offset {pos}; cannot continue")
            break
        name = ctype.decode("ascii")
        end = pos + 8 + length
        if length > 0x7FFFFFFF or end + 4 > size:
            info.error(
                f"PNG: {name} chunk at offset {pos} claims {length:,} bytes, past the end of "
                "the file (truncated or corrupt)"
            )
            break
        info.count(name)
        body = mv[pos + 8 : end]
        crc_ok = True
        if name not in ("IDAT", "fdAT"):  # pixel data CRCs are the decoder's business
            want = int.from_bytes(data[end : end + 4], "big")
            crc_ok = zlib.crc32(body, zlib.crc32(ctype)) == want
            if not crc_ok:
                info.error(f"PNG: bad CRC in {name} chunk #{n} at offset {pos} (corrupt or edited)")
        if name == "IHDR" and length == 13:
            w, h, bd, ct, _cm, _fm, il = struct.unpack(">IIBBBBB", body)
            info.width, info.height = w, h
            layout.width, layout.height, layout.bit_depth = w, h, bd
            layout.color_type, layout.interlace, layout.ihdr = ct, il, bytes(body)
            info.has_alpha = ct in (4, 6)
        elif name == "IDAT":
            seen_idat = True
            layout.idat.append((pos + 8, end))
        elif name == "PLTE":
            layout.plte = bytes(body)
        elif name == "tRNS":
            layout.trns = bytes(body)
            info.has_alpha = True
        elif name in ("tEXt", "zTXt", "iTXt"):
            text_chunks += 1
            if text_chunks > MAX_TEXT_CHUNKS:
                skipped_text += 1
            else:
                try:
                    key, value = _png_text(name, body, budget)
                except ChunkError as err:
                    info.error(f"PNG {name} chunk #{n}: {err}")
                else:
                    if name == "iTXt" and key == XMP_KEY:
                        if len(value) <= MAX_XMP_BYTES:
                            info.xmp.append(value)
                        else:
                            info.error(f"PNG: XMP packet of {len(value):,} characters not read")
                    else:
                        info.texts.append(TextEntry(key, value, f"png:{name}", seen_idat, crc_ok))
        elif name == "eXIf":
            parse_exif(body, info, budget)
        elif name == "caBX":
            info.c2pa_present = True
        pos = end + 4
        if name == "IEND":
            ended = True
            info.trailing_bytes = size - pos
            break
    if skipped_text:
        info.error(
            f"PNG: {text_chunks:,} text chunks; only the first {MAX_TEXT_CHUNKS:,} were read "
            f"({skipped_text:,} skipped)"
        )
    if not ended and pos >= size:
        info.error("PNG: no IEND chunk (truncated file?)")


def _keyword(body: memoryview, what: str) -> tuple[str, int]:
    sep = bytes(body[:80]).find(b"\x00")
    if sep < 1:
        raise ChunkError(f"{what} has no valid keyword (1-79 bytes then NUL)")
    return bytes(body[:sep]).decode("latin-1"), sep


def _png_text(name: str, body: memoryview, budget: _Budget) -> tuple[str, str]:
    key, sep = _keyword(body, name)
    what = f"{name} {key!r}"
    if name == "tEXt":
        plain = body[sep + 1 :]
        budget.take(len(plain), what)
        return key, decode_text(plain)
    if name == "zTXt":
        if len(body) < sep + 2 or body[sep + 1] != 0:
            raise ChunkError(f"{what}: unknown compression method")
        out = inflate(body[sep + 2 :], budget.limit(), what)
        budget.take(len(out), what)
        return key, decode_text(out)
    # iTXt: keyword NUL flag method language NUL translated-keyword NUL text
    if len(body) < sep + 3:
        raise ChunkError(f"{what}: truncated header")
    flag, method = body[sep + 1], body[sep + 2]
    rest = bytes(body[sep + 3 : sep + 3 + 1024])
    lang_end = rest.find(b"\x00")
    tkey_end = rest.find(b"\x00", lang_end + 1) if lang_end >= 0 else -1
    if tkey_end < 0:
        raise ChunkError(f"{what}: language/translated keyword not terminated")
    raw: bytes | memoryview = body[sep + 3 + tkey_end + 1 :]
    if flag == 1:
        if method != 0:
            raise ChunkError(f"{what}: unknown compression method {method}")
        raw = inflate(raw, budget.limit(), what)
    elif flag != 0:
        raise ChunkError(f"{what}: invalid compression flag {flag}")
    budget.take(len(raw), what)
    try:
        return key, bytes(raw).decode("utf-8")
    except UnicodeDecodeError as err:
        raise ChunkError(
            f"{what}: text is not valid UTF-8 ({err.reason} at byte {err.start})"
        ) from None


# --- JPEG --------------------------------------------------------------------------------------

_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _walk_jpeg(data: bytes, info: ContainerInfo, budget: _Budget) -> None:
    mv = memoryview(data)
    pos, n, size = 2, 0, len(data)
    exif_seen = False
    while pos + 4 <= size:
        if data[pos] != 0xFF:
            info.error(f"JPEG: expected a marker at offset {pos}; stopped reading metadata")
            return
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        if marker == 0xD9:
            return
        n += 1
        if n > MAX_CHUNKS:
            info.error(f"JPEG: more than {MAX_CHUNKS:,} segments; stopped reading metadata")
            return
        seglen = int.from_bytes(data[pos + 2 : pos + 4], "big")
        end = pos + 2 + seglen
        if seglen < 2 or end > size:
            info.error(f"JPEG: segment 0xFF{marker:02X} at offset {pos} is truncated or corrupt")
            return
        body = mv[pos + 4 : end]
        name = f"APP{marker - 0xE0}" if 0xE0 <= marker <= 0xEF else f"0xFF{marker:02X}"
        info.count(name)
        if marker == 0xDA:  # start of scan: metadata comes before it
            return
        if marker == 0xE1:
            if bytes(body[:6]) == b"Exif\x00\x00" and not exif_seen:
                exif_seen = True
                parse_exif(body[6:], info, budget)
            elif bytes(body[: len(_JPEG_XMP)]) == _JPEG_XMP:
                _add_xmp(info, body[len(_JPEG_XMP) :], budget)
            elif bytes(body[: len(_JPEG_XMP_EXT)]) == _JPEG_XMP_EXT:
                info.count("ExtendedXMP")
        elif marker == 0xEB:
            if bytes(body[:2]) == b"JP" and b"jumb" in bytes(body[:64]):
                info.c2pa_present = True
        elif marker == 0xFE:
            try:
                budget.take(len(body), "JPEG COM")
            except ChunkError as err:
                info.error(str(err))
            else:
                info.texts.append(
                    TextEntry("comment", decode_text(body).rstrip("\x00"), "jpeg:COM")
                )
        elif marker in _SOF and len(body) >= 5:
            info.height = int.from_bytes(body[1:3], "big")
            info.width = int.from_bytes(body[3:5], "big")
        pos = end


def _add_xmp(info: ContainerInfo, raw: bytes | memoryview, budget: _Budget) -> None:
    if len(raw) > MAX_XMP_BYTES:
        info.error(f"XMP packet of {len(raw):,} bytes exceeds the {MAX_XMP_BYTES:,} cap; not read")
        return
    try:
        budget.take(len(raw), "XMP")
    except ChunkError as err:
        info.error(str(err))
        return
    info.xmp.append(decode_text(raw).rstrip("\x00"))


# --- EXIF / TIFF -------------------------------------------------------------------------------


def parse_exif(
    tiff: bytes | memoryview, info: ContainerInfo, budget: _Budget, tiff_file: bool = False
) -> None:
    """Read the text tags of a TIFF structure (EXIF payload, or a whole TIFF file)."""
    t = memoryview(tiff)
    if len(t) >= 6 and bytes(t[:6]) == b"Exif\x00\x00":  # WebP writers differ on this prefix
        t = t[6:]
    if len(t) < 8 or bytes(t[:2]) not in (b"II", b"MM"):
        info.error("EXIF: not a TIFF structure (bad byte order mark)")
        return
    bo = "<" if bytes(t[:2]) == b"II" else ">"
    info.exif_byte_order = bytes(t[:2]).decode("ascii")
    if struct.unpack_from(bo + "H", t, 2)[0] != 42:
        info.error("EXIF: bad TIFF magic number")
        return
    ifd0 = struct.unpack_from(bo + "I", t, 4)[0]
    entries = _read_ifd(t, ifd0, bo, info, "IFD0")
    for tag, tname in IFD0_TAGS.items():
        if tag in entries:
            _exif_text(info, tname, entries[tag], bo, budget)
    if tiff_file and _TIFF_XMP_TAG in entries:
        _add_xmp(info, entries[_TIFF_XMP_TAG][1], budget)
    ptr = entries.get(_EXIF_IFD_POINTER)
    if ptr is not None and len(ptr[1]) >= 4:
        off = struct.unpack_from(bo + "I", ptr[1], 0)[0]
        if off == ifd0:
            info.error("EXIF: Exif IFD points back at IFD0 (loop)")
            return
        sub = _read_ifd(t, off, bo, info, "Exif IFD")
        for tag, tname in EXIF_IFD_TAGS.items():
            if tag in sub:
                _exif_text(info, tname, sub[tag], bo, budget)


def _read_ifd(
    t: memoryview, off: int, bo: str, info: ContainerInfo, what: str
) -> dict[int, tuple[int, memoryview]]:
    """tag -> (type, raw value bytes) for the entries of one IFD, bounds-checked."""
    out: dict[int, tuple[int, memoryview]] = {}
    if off < 8 or off + 2 > len(t):
        info.error(f"EXIF: {what} offset {off} is outside the EXIF data")
        return out
    count = struct.unpack_from(bo + "H", t, off)[0]
    if count > MAX_IFD_ENTRIES:
        info.error(f"EXIF: {what} claims {count:,} entries; read the first {MAX_IFD_ENTRIES:,}")
        count = MAX_IFD_ENTRIES
    bad = 0
    for i in range(count):
        e = off + 2 + 12 * i
        if e + 12 > len(t):
            info.error(f"EXIF: {what} is truncated after {i} entries")
            break
        tag, typ, n, val = struct.unpack_from(bo + "HHII", t, e)
        unit = _TYPE_SIZES.get(typ)
        if unit is None:
            continue
        nbytes = unit * n
        if nbytes <= 4:
            out[tag] = (typ, t[e + 8 : e + 8 + nbytes])
        elif nbytes > MAX_TEXT_BYTES or val + nbytes > len(t):
            bad += 1
        else:
            out[tag] = (typ, t[val : val + nbytes])
    if bad:
        info.error(f"EXIF: {bad} entries in {what} point outside the data or are too large")
    return out


def _exif_text(
    info: ContainerInfo, name: str, entry: tuple[int, memoryview], bo: str, budget: _Budget
) -> None:
    typ, raw = entry
    try:
        budget.take(len(raw), f"EXIF {name}")
    except ChunkError as err:
        info.error(str(err))
        return
    if name == "UserComment":
        try:
            info.exif[name] = decode_user_comment(bytes(raw), bo)
        except ChunkError as err:
            info.error(f"EXIF UserComment: {err}")
        return
    if name == "MakerNote":
        b = bytes(raw[:65]).rstrip(b"\x00")
        # cameras write binary maker notes; Fooocus writes its metadata scheme as a short word
        if len(raw) <= 64 and b and all(32 <= c < 127 for c in b):
            info.exif[name] = b.decode("ascii")
        return
    if typ not in (1, 2, 7):
        return
    info.exif[name] = decode_text(bytes(raw).rstrip(b"\x00"))


def decode_user_comment(raw: bytes, byte_order: str = ">") -> str:
    """EXIF UserComment: 8-byte character code, then the text (A1111: UNICODE + UTF-16)."""
    head, body = raw[:8], raw[8:]
    if head == b"UNICODE\x00":
        return _decode_utf16(body, byte_order)
    if head == b"ASCII\x00\x00\x00":
        return decode_text(body.rstrip(b"\x00"))
    if head == b"JIS\x00\x00\x00\x00\x00":
        try:
            return body.rstrip(b"\x00").decode("shift_jis")
        except UnicodeDecodeError as err:
            raise ChunkError(f"JIS text does not decode ({err.reason})") from None
    if head == b"\x00" * 8:
        return decode_text(body.rstrip(b"\x00"))
    return decode_text(raw.rstrip(b"\x00"))  # no character code: some tools write bare UTF-8


def _decode_utf16(body: bytes, byte_order: str) -> str:
    if body[:2] in (b"\xfe\xff", b"\xff\xfe"):
        enc = "utf-16-be" if body[:2] == b"\xfe\xff" else "utf-16-le"
        body = body[2:]
    else:
        # A1111 (piexif) writes UTF-16-BE whatever the TIFF byte order; others follow the TIFF
        # order. Text is mostly ASCII, so the zero bytes tell which half of each pair is high.
        sample = body[:512]
        even = sample[0::2].count(0)
        odd = sample[1::2].count(0)
        if even != odd:
            enc = "utf-16-be" if even > odd else "utf-16-le"
        else:
            enc = "utf-16-be" if byte_order in (">", "MM") else "utf-16-le"
    if len(body) % 2:
        if body.endswith(b"\x00"):
            body = body[:-1]
        else:
            raise ChunkError("UTF-16 text has an odd number of bytes")
    try:
        text = body.decode(enc)
    except UnicodeDecodeError as err:
        raise ChunkError(f"not valid {enc.upper()} ({err.reason} at byte {err.start})") from None
    return text.rstrip("\x00")


# --- WebP --------------------------------------------------------------------------------------


def _walk_webp(data: bytes, info: ContainerInfo, budget: _Budget) -> None:
    mv = memoryview(data)
    riff_end = 8 + int.from_bytes(data[4:8], "little")
    if riff_end > len(data):
        info.error(f"WebP: RIFF size says {riff_end:,} bytes, file has {len(data):,} (truncated)")
        riff_end = len(data)
    info.trailing_bytes = max(0, len(data) - riff_end)
    pos, n = 12, 0
    while pos + 8 <= riff_end:
        fourcc = bytes(data[pos : pos + 4])
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        n += 1
        if n > MAX_CHUNKS:
            info.error(f"WebP: more than {MAX_CHUNKS:,} chunks; stopped reading metadata")
            return
        end = pos + 8 + size
        name = fourcc.decode("latin-1")
        if end > riff_end:
            info.error(f"WebP: {name!r} chunk at offset {pos} runs past the end (truncated)")
            return
        info.count(name)
        body = mv[pos + 8 : end]
        if fourcc == b"VP8X" and size >= 10:
            info.has_alpha = bool(body[0] & 0x10)
            info.width = 1 + int.from_bytes(body[4:7], "little")
            info.height = 1 + int.from_bytes(body[7:10], "little")
        elif fourcc == b"VP8L" and size >= 5 and body[0] == 0x2F:
            info.lossless = True
            bits = int.from_bytes(body[1:5], "little")
            info.width = info.width or (bits & 0x3FFF) + 1
            info.height = info.height or ((bits >> 14) & 0x3FFF) + 1
            info.has_alpha = info.has_alpha or bool((bits >> 28) & 1)
        elif fourcc == b"VP8 " and size >= 10 and info.width is None:
            info.width = int.from_bytes(body[6:8], "little") & 0x3FFF
            info.height = int.from_bytes(body[8:10], "little") & 0x3FFF
        elif fourcc == b"ALPH" and size >= 1:
            info.has_alpha = True
            if body[0] & 0x03 in (0, 1):  # uncompressed or lossless: LSBs survive
                info.lossless = True
        elif fourcc == b"EXIF":
            parse_exif(body, info, budget)
        elif fourcc == b"XMP ":
            _add_xmp(info, body, budget)
        elif fourcc == b"C2PA":
            info.c2pa_present = True
        pos = end + (size & 1)


# --- GIF ---------------------------------------------------------------------------------------


def _walk_gif(data: bytes, info: ContainerInfo, budget: _Budget) -> None:
    size = len(data)
    if size < 13:
        info.error("GIF: truncated header")
        return
    info.width = int.from_bytes(data[6:8], "little")
    info.height = int.from_bytes(data[8:10], "little")
    packed = data[10]
    pos = 13
    if packed & 0x80:
        pos += 3 * (2 ** ((packed & 7) + 1))
    blocks = 0
    while pos < size:
        b = data[pos]
        if b == 0x3B:  # trailer
            info.trailing_bytes = size - pos - 1
            return
        if b == 0x21:
            if pos + 2 > size:
                break
            label = data[pos + 1]
            start = pos + 2
            parts, pos, blocks = _gif_subblocks(data, start, blocks, keep=label in (0xFE, 0xFF))
            if pos < 0:
                info.error(
                    f"GIF: more than {MAX_GIF_BLOCKS:,} data blocks; stopped reading metadata"
                    if blocks > MAX_GIF_BLOCKS
                    else f"GIF: extension 0x{label:02X} at offset {start - 2} is truncated"
                )
                return
            if label == 0xFE:
                info.count("comment")
                _gif_comment(info, b"".join(parts), budget)
            elif label == 0xFF and parts and parts[0] == b"XMP DataXMP":
                info.count("XMP")
                raw = data[start + 12 : pos]
                cut = raw.find(b"<?xpacket end")
                stop = raw.find(b">", cut) if cut >= 0 else -1
                if stop >= 0:
                    _add_xmp(info, raw[: stop + 1], budget)
                else:
                    info.error("GIF: XMP application extension without an xpacket end")
        elif b == 0x2C:
            if pos + 10 > size:
                break
            info.count("image")
            flags = data[pos + 9]
            pos += 10
            if flags & 0x80:
                pos += 3 * (2 ** ((flags & 7) + 1))
            pos += 1  # LZW minimum code size
            _, pos, blocks = _gif_subblocks(data, pos, blocks, keep=False)
            if pos < 0:
                info.error(
                    f"GIF: more than {MAX_GIF_BLOCKS:,} data blocks; stopped reading metadata"
                    if blocks > MAX_GIF_BLOCKS
                    else "GIF: image data is truncated"
                )
                return
        else:
            info.error(f"GIF: unexpected block 0x{b:02X} at offset {pos}; stopped reading")
            return
        if blocks > MAX_GIF_BLOCKS:
            info.error(f"GIF: more than {MAX_GIF_BLOCKS:,} data blocks; stopped reading metadata")
            return
    info.error("GIF: no trailer (truncated file?)")


def _gif_subblocks(data: bytes, pos: int, blocks: int, keep: bool) -> tuple[list[bytes], int, int]:
    """(parts, position after the terminator or -1 if truncated, blocks walked so far)."""
    parts: list[bytes] = []
    kept = 0
    size = len(data)
    while pos < size:
        n = data[pos]
        pos += 1
        if n == 0:
            return parts, pos, blocks
        blocks += 1
        if blocks > MAX_GIF_BLOCKS or pos + n > size:
            return parts, -1, blocks
        if keep and kept <= MAX_TEXT_BYTES:
            parts.append(data[pos : pos + n])
            kept += n
        pos += n
    return parts, -1, blocks


def _gif_comment(info: ContainerInfo, raw: bytes, budget: _Budget) -> None:
    try:
        budget.take(len(raw), "GIF comment")
    except ChunkError as err:
        info.error(str(err))
        return
    info.texts.append(TextEntry("comment", decode_text(raw).rstrip("\x00"), "gif:comment"))
