"""Identify content by its leading bytes, never by its file name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MediaKind = Literal["image", "video", "archive", "compressed", "model", "text", "other"]

#: How many leading bytes ``sniff`` wants to see (tar's magic sits at offset 257).
SNIFF_BYTES = 512


@dataclass(frozen=True, slots=True)
class MediaType:
    mime: str
    kind: MediaKind

    @property
    def is_image(self) -> bool:
        return self.kind == "image"


JPEG = MediaType("image/jpeg", "image")
PNG = MediaType("image/png", "image")
GIF = MediaType("image/gif", "image")
WEBP = MediaType("image/webp", "image")
BMP = MediaType("image/bmp", "image")
TIFF = MediaType("image/tiff", "image")
HEIC = MediaType("image/heic", "image")
AVIF = MediaType("image/avif", "image")
ZIP = MediaType("application/zip", "archive")
TAR = MediaType("application/x-tar", "archive")
GZIP = MediaType("application/gzip", "compressed")
BZIP2 = MediaType("application/x-bzip2", "compressed")
XZ = MediaType("application/x-xz", "compressed")
MP4 = MediaType("video/mp4", "video")
QUICKTIME = MediaType("video/quicktime", "video")
WEBM = MediaType("video/webm", "video")
AVI = MediaType("video/x-msvideo", "video")
#: Model files (see tipline.provenance.model_files). safetensors and pickle have no registered type.
SAFETENSORS = MediaType("application/x-safetensors", "model")
GGUF = MediaType("application/x-gguf", "model")
#: PyTorch >= 1.6 zip archive whose first member is ``<name>/data.pkl``.
PYTORCH = MediaType("application/x-pytorch", "model")
#: A pickle stream (legacy PyTorch .ckpt/.pt/.pth/.bin): protocol 2 to 5.
PICKLE = MediaType("application/x-python-pickle", "model")
TEXT = MediaType("text/plain", "text")
EMPTY = MediaType("application/x-empty", "other")
UNKNOWN = MediaType("application/octet-stream", "other")

_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}
_AVIF_BRANDS = {b"avif", b"avis"}

#: What a file name's extension claims: the type it names, and the content types that keep
#: that promise (container families whose brands vary: MP4/QuickTime, Matroska/WebM, PyTorch's
#: zip or pickle). Extensions that promise nothing in particular (.bin, .dat) are not here.
_ISO_VIDEO = frozenset({"video/mp4", "video/quicktime"})
_TORCH = frozenset({"application/x-pytorch", "application/x-python-pickle", "application/zip"})
NAME_CLAIMS: dict[str, tuple[str, frozenset[str]]] = {
    **{e: ("image/jpeg", frozenset({"image/jpeg"})) for e in (".jpg", ".jpeg", ".jpe", ".jfif")},
    ".png": ("image/png", frozenset({"image/png"})),
    ".gif": ("image/gif", frozenset({"image/gif"})),
    ".webp": ("image/webp", frozenset({"image/webp"})),
    ".bmp": ("image/bmp", frozenset({"image/bmp"})),
    ".dib": ("image/bmp", frozenset({"image/bmp"})),
    ".tif": ("image/tiff", frozenset({"image/tiff"})),
    ".tiff": ("image/tiff", frozenset({"image/tiff"})),
    ".heic": ("image/heic", frozenset({"image/heic", "image/avif"})),
    ".heif": ("image/heic", frozenset({"image/heic", "image/avif"})),
    ".avif": ("image/avif", frozenset({"image/avif"})),
    ".mp4": ("video/mp4", _ISO_VIDEO),
    ".m4v": ("video/mp4", _ISO_VIDEO),
    ".mov": ("video/quicktime", _ISO_VIDEO),
    ".webm": ("video/webm", frozenset({"video/webm"})),
    ".mkv": ("video/x-matroska", frozenset({"video/webm"})),
    ".avi": ("video/x-msvideo", frozenset({"video/x-msvideo"})),
    ".zip": ("application/zip", frozenset({"application/zip", "application/x-pytorch"})),
    ".tar": ("application/x-tar", frozenset({"application/x-tar"})),
    ".gz": ("application/gzip", frozenset({"application/gzip"})),
    ".tgz": ("application/gzip", frozenset({"application/gzip"})),
    ".bz2": ("application/x-bzip2", frozenset({"application/x-bzip2"})),
    ".xz": ("application/x-xz", frozenset({"application/x-xz"})),
    ".safetensors": ("application/x-safetensors", frozenset({"application/x-safetensors"})),
    ".gguf": ("application/x-gguf", frozenset({"application/x-gguf"})),
    ".ckpt": ("application/x-pytorch", _TORCH),
    ".pt": ("application/x-pytorch", _TORCH),
    ".pth": ("application/x-pytorch", _TORCH),
    ".pkl": ("application/x-python-pickle", frozenset({"application/x-python-pickle"})),
    ".txt": ("text/plain", frozenset({"text/plain"})),
}


def disguise_warning(name: str, content_mime: str) -> str | None:
    """``name says image/jpeg, content is text/plain`` when a file's name promises another type
    than its bytes are (the bytes always decide how it is read); None when they agree, when the
    name promises nothing we know, or when there was no content to judge."""
    base = name.rsplit("!", 1)[-1].rsplit("/", 1)[-1]
    dot = base.rfind(".")
    if dot <= 0 or content_mime in (EMPTY.mime, ""):
        return None
    claim = NAME_CLAIMS.get(base[dot:].lower())
    if claim is None or content_mime in claim[1]:
        return None
    return f"name says {claim[0]}, content is {content_mime}"


def sniff(head: bytes) -> MediaType:
    """The media type of content starting with ``head`` (pass at least SNIFF_BYTES if you can)."""
    if not head:
        return EMPTY
    if _looks_like_safetensors(head):
        return SAFETENSORS
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return GIF
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return WEBP
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return AVI
    if head[:2] == b"BM" and len(head) >= 14:
        return BMP
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return TIFF
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        brands = {brand} | {head[i : i + 4] for i in range(16, min(len(head), 64), 4)}
        if brand in _AVIF_BRANDS or (brand == b"mif1" and brands & _AVIF_BRANDS):
            return AVIF
        if brand in _HEIF_BRANDS:
            return HEIC
        if brand == b"qt  ":
            return QUICKTIME
        return MP4
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return WEBM
    if head[:4] == b"GGUF":
        return GGUF
    if head[:4] == b"PK\x03\x04" and _first_zip_member(head).split(b"/")[-1] == b"data.pkl":
        return PYTORCH
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return ZIP
    if len(head) >= 262 and head[257:262] == b"ustar":
        return TAR
    if head[:2] == b"\x1f\x8b":
        return GZIP
    if head[:3] == b"BZh":
        return BZIP2
    if head[:6] == b"\xfd7zXZ\x00":
        return XZ
    if len(head) >= 3 and head[0] == 0x80 and 2 <= head[1] <= 5 and head[2] in _PICKLE_OPCODES:
        return PICKLE
    if _looks_like_text(head):
        return TEXT
    return UNKNOWN


#: First bytes of the opcode that follows PROTO in real pickles (any opcode would be legal; a
#: narrower set keeps random binary from being called a pickle).
_PICKLE_OPCODES = frozenset(b"}]()\x8a\x95cK\x8cXUTCB\x88\x89NMJGq")


def _looks_like_safetensors(head: bytes) -> bool:
    """u64 little-endian header length (under 1 TiB), then a JSON object: ``{"`` or ``{}``."""
    return (
        len(head) >= 10
        and head[5:8] == b"\x00\x00\x00"
        and head[8:9] == b"{"
        and head[9:10] in (b'"', b"}", b" ", b"\n", b"\r", b"\t")
        and int.from_bytes(head[:8], "little") >= 2
    )


def _first_zip_member(head: bytes) -> bytes:
    if len(head) < 30:
        return b""
    n = int.from_bytes(head[26:28], "little")
    return head[30 : 30 + n]


def _looks_like_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as err:
        # A multi-byte character cut by the sniff window is still text.
        if err.start < len(head) - 4:
            return False
    return True
