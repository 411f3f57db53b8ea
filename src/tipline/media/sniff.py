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
TEXT = MediaType("text/plain", "text")
EMPTY = MediaType("application/x-empty", "other")
UNKNOWN = MediaType("application/octet-stream", "other")

_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}
_AVIF_BRANDS = {b"avif", b"avis"}

#: Extensions that promise an image or video. Used only to say "named like an image but is not
#: one" when the content disagrees, never to decide how to decode.
IMAGE_EXTENSIONS = {
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".webp", ".bmp", ".dib", ".tif", ".tiff",
    ".heic", ".heif", ".avif",
}  # fmt: skip
VIDEO_EXTENSIONS = {".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi"}


def sniff(head: bytes) -> MediaType:
    """The media type of content starting with ``head`` (pass at least SNIFF_BYTES if you can)."""
    if not head:
        return EMPTY
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
    if _looks_like_text(head):
        return TEXT
    return UNKNOWN


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
