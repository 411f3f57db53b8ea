"""Safe image decoding: header checks before any pixel is decoded, and every failure typed.

Hashes are computed on the STORED pixels: EXIF orientation is not applied. That is what
python-threatexchange, HMA and the PDQ reference tools do, so our hashes equal the ones in
partners' lists; rotated copies are found with ``--dihedral`` lookups instead.
"""

from __future__ import annotations

import io
import signal
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from struct import error as struct_error  # Pillow raises it on short headers

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageFile, UnidentifiedImageError

from tipline.config import Limits
from tipline.errors import (
    CorruptMediaError,
    DecodeTimeoutError,
    TooManyPixelsError,
    UnsupportedMediaError,
)
from tipline.media.sniff import AVIF, HEIC, JPEG, PNG, MediaType

# We enforce our own pixel limit (Limits.max_pixels) from the header, before decoding; Pillow's
# global guard would otherwise warn or raise with its own fixed number.
Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False

_heif_registered = False


def _register_heif() -> None:
    global _heif_registered
    if not _heif_registered:
        try:
            import pillow_heif

            pillow_heif.register_heif_opener()
        except ImportError:  # pragma: no cover - optional decoder
            pass
        _heif_registered = True


#: Fast mode box-reduces planes (other formats, video frames, query variants) down to at least
#: this many pixels on the short side.
FAST_MIN_SIDE = 512
#: JPEGs are decoded in the DCT domain (libjpeg-turbo scaled IDCT) at 1/8 where the short side
#: stays at least this many pixels, else at 1/4 or 1/2 down to ``FAST_MIN_SIDE``: a 12 MP photo
#: at 1/8 (375 px) is within a few bits of full resolution (bench/hashing.py), and where its
#: hash is fragile the fast path decodes once more at ``FAST_MIN_SIDE`` before giving up
#: (tipline.scan.hashing.fast_pdq).
JPEG_MIN_SIDE = 256


@dataclass(slots=True)
class LumaPlane:
    """A luma plane, possibly decoded at reduced scale, standing in for width x height pixels."""

    plane: npt.NDArray[np.uint8]
    width: int
    height: int
    #: the mode the file decodes to (``TE_RAW_MODES``: the reference hash is not of these pixels)
    mode: str = "L"


@contextmanager
def deadline(seconds: float, what: str = "decoding") -> Iterator[None]:
    """Raise DecodeTimeoutError if the block runs longer than ``seconds``.

    Uses SIGALRM, so it only arms in the main thread of a process (scan workers are processes);
    elsewhere the block runs without a time limit. Pillow decodes in chunks and returns to Python
    between them, which is where the signal lands.
    """
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def _expired(signum: int, frame: object) -> None:
        raise DecodeTimeoutError(f"{what} took longer than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, _expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


#: PNG chunks that affect pixels. Everything else (text, ICC, C2PA, private chunks) is dropped
#: before Pillow sees the file: Pillow refuses compressed text over 1 MiB and text chunks with a
#: bad CRC, which would cost the image its PDQ hash (big ComfyUI workflows hit the first).
_PNG_PIXEL_CHUNKS = {b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND", b"sBIT", b"gAMA"}
_PNG_TEXT_CHUNKS = {b"tEXt", b"zTXt", b"iTXt"}


def png_pixels_only(data: bytes) -> bytes:
    """The PNG without its ancillary non-pixel chunks, or ``data`` unchanged if it has no text
    chunks or cannot be walked (Pillow then reports the damage itself)."""
    pos, n = 8, len(data)
    keep: list[tuple[int, int]] = []
    has_text = False
    while pos + 12 <= n:
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if length > 0x7FFFFFFF or end > n:
            return data
        if kind in _PNG_PIXEL_CHUNKS:
            keep.append((pos, end))
        elif kind in _PNG_TEXT_CHUNKS:
            has_text = True
        pos = end
        if kind == b"IEND":
            break
    if not has_text:
        return data
    return data[:8] + b"".join(data[a:b] for a, b in keep)


def open_image(data: bytes, media_type: MediaType, limits: Limits) -> Image.Image:
    """Parse the header only and check the pixel count; raises typed errors."""
    if not media_type.is_image:
        raise UnsupportedMediaError(f"not an image ({media_type.mime})")
    if media_type in (HEIC, AVIF):
        _register_heif()
    if media_type == PNG:
        data = png_pixels_only(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise CorruptMediaError(f"{media_type.mime} header could not be parsed") from None
    except (OSError, ValueError, SyntaxError, EOFError, struct_error) as err:
        raise CorruptMediaError(f"{media_type.mime} header is invalid: {_short(err)}") from None
    width, height = im.size
    if width <= 0 or height <= 0:
        raise CorruptMediaError(f"image claims impossible dimensions {width}x{height}")
    if width * height > limits.max_pixels:
        raise TooManyPixelsError(
            f"{width}x{height} = {width * height:,} pixels exceeds the limit of "
            f"{limits.max_pixels:,} (decompression bomb?); raise --max-pixels to decode it"
        )
    return im


#: Bytes handed to Pillow's decoder per call (Pillow's default is 64 KiB). libjpeg-turbo leaves
#: its fast Huffman path for the last few KiB of every buffer (it must be able to suspend mid-MCU
#: there), so small chunks cost ~4% of a 12 MP decode (28.6 -> 27.3 ms at 1/8, one core); 4 MiB
#: still returns to Python every ~0.1 s at worst, where ``deadline``'s signal lands.
DECODE_CHUNK = 4 * 1024 * 1024


def _load(im: Image.Image, media_type: MediaType) -> None:
    if isinstance(im, ImageFile.ImageFile):
        im.decodermaxblock = max(im.decodermaxblock, DECODE_CHUNK)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im.load()
    except DecodeTimeoutError:
        raise
    except MemoryError:
        raise CorruptMediaError("ran out of memory decoding the image") from None
    except (OSError, ValueError, SyntaxError, EOFError, struct_error, IndexError, TypeError) as err:
        msg = _short(err)
        if "truncated" in msg or "broken data stream" in msg or isinstance(err, EOFError):
            raise CorruptMediaError(f"truncated {media_type.mime}: {msg}") from None
        raise CorruptMediaError(f"cannot decode {media_type.mime}: {msg}") from None


def jpeg_scale(width: int, height: int, min_side: int = JPEG_MIN_SIDE) -> int:
    """The DCT-domain reduction (8, 4, 2 or 1): 1/8 where the short side stays >= ``min_side``,
    else the largest that keeps it >= ``FAST_MIN_SIDE`` (coarser 1/4 and 1/2 planes of smaller
    images were measured to drift up to 20 bits on text and halftones)."""
    short = min(width, height)
    if short // 8 >= min_side:
        return 8
    for scale in (4, 2):
        if short // scale >= FAST_MIN_SIDE:
            return scale
    return 1


def decode_luma_fast(
    data: bytes, media_type: MediaType, limits: Limits, min_side: int = JPEG_MIN_SIDE
) -> LumaPlane:
    """Luma for fast PDQ: JPEGs scaled in the DCT domain (short side >= ``min_side``), other
    formats box-reduced (short side >= ``FAST_MIN_SIDE``)."""
    with deadline(limits.max_decode_seconds):
        im = open_image(data, media_type, limits)
        width, height = im.size
        mode = im.mode
        if media_type == JPEG:
            # Pillow picks the largest reduction with size // request >= scale in both axes.
            s = jpeg_scale(width, height, min_side)
            im.draft("L", (max(1, width // s), max(1, height // s)))
        _load(im, media_type)
        if im.mode not in ("L",):
            im = _to_luma(im)
        short = min(im.size)
        factor = short // FAST_MIN_SIDE
        if factor >= 2:
            # Box reduction keeps each pixel the mean of a block, which is what the weights assume.
            im = im.reduce(factor)
        plane = np.asarray(im, dtype=np.uint8)
        return LumaPlane(plane, width, height, mode)


def decode_rgb(data: bytes, media_type: MediaType, limits: Limits) -> npt.NDArray[np.uint8]:
    """Fully decoded RGB pixels (first frame): Pillow's ``convert("RGB")`` of whatever mode
    the file decodes to (16-bit and float values are clipped to 0..255, alpha is dropped,
    palettes are looked up, CMYK is inverted naively). The reference PDQ hashes
    ``decode_reference`` instead (docs/formats.md#which-pdq)."""
    with deadline(limits.max_decode_seconds):
        im = open_image(data, media_type, limits)
        _load(im, media_type)
        if im.mode != "RGB":
            im = _convert(im, "RGB")
        return np.asarray(im, dtype=np.uint8)


#: Modes whose ``np.asarray`` python-threatexchange hands to ``pdqhash`` as they are (after
#: stacking a 2-D array to 3 channels) and whose hash then differs from ``convert("RGB")``'s:
#: palette indices, CMYK's C, M, Y bands, 1-bit's booleans, LAB/YCbCr/HSV bands as R, G, B.
TE_RAW_MODES = frozenset({"P", "CMYK", "1", "LAB", "YCbCr", "HSV"})


@dataclass(slots=True)
class ReferencePixels:
    """What the reference hashes: ``te``, the array python-threatexchange hands ``pdqhash``
    (H x W x 3 or 4, uint8 or bool), and ``rgb``, Pillow's ``convert("RGB")`` where that is a
    different picture (``TE_RAW_MODES``; None otherwise: ``te`` is then the RGB pixels)."""

    te: npt.NDArray[np.generic]
    rgb: npt.NDArray[np.uint8] | None
    mode: str

    @property
    def pixels(self) -> npt.NDArray[np.uint8]:
        """The image's own RGB pixels (for query variants)."""
        if self.rgb is not None:
            return self.rgb
        out: npt.NDArray[np.uint8] = np.asarray(self.te[..., :3], dtype=np.uint8)
        return out


def te_array(im: Image.Image) -> npt.NDArray[np.generic] | None:
    """python-threatexchange's ``_convert_image_to_correct_array_dimension``
    (``threatexchange/signal_type/pdq/pdq_hasher.py``): LA and I;16 through
    ``convert("RGB")``, every other mode ``np.asarray`` as it is, a 2-D array stacked to 3
    channels. None where ``pdqhash.compute`` refuses that array (python-threatexchange raises:
    32-bit I and F, other 16-bit layouts, 2-channel PA)."""
    if im.mode in ("LA", "I;16"):
        im = _convert(im, "RGB")
    arr = np.asarray(im)
    if arr.ndim == 2:
        arr = np.concatenate([arr[..., np.newaxis]] * 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] < 3 or arr.dtype not in (np.uint8, np.bool_):
        return None
    return arr


def decode_reference(data: bytes, media_type: MediaType, limits: Limits) -> ReferencePixels:
    """Fully decoded pixels (first frame) as the reference hashes them: python-threatexchange's
    array (``te_array``), and ``convert("RGB")`` where that differs; where
    python-threatexchange has no hash (``te_array`` is None), ``convert("RGB")`` is both."""
    with deadline(limits.max_decode_seconds):
        im = open_image(data, media_type, limits)
        _load(im, media_type)
        mode = im.mode
        te = te_array(im)
        if te is None:
            rgb = np.asarray(_convert(im, "RGB"), dtype=np.uint8)
            return ReferencePixels(rgb, None, mode)
        if mode in TE_RAW_MODES:
            return ReferencePixels(te, np.asarray(_convert(im, "RGB"), dtype=np.uint8), mode)
        return ReferencePixels(te, None, mode)


def _to_luma(im: Image.Image) -> Image.Image:
    """Luma with the reference's semantics (``convert("RGB")`` then luma): Pillow's own
    ``convert("L")`` is the same conversion (it clips 16-bit and float values exactly as
    ``convert("RGB")`` does) within rounding; modes it cannot convert directly (LAB) go
    through RGB."""
    try:
        return im.convert("L")
    except ValueError:
        return _convert(im, "RGB").convert("L")


def _convert(im: Image.Image, mode: str) -> Image.Image:
    try:
        return im.convert(mode)
    except (OSError, ValueError) as err:
        raise CorruptMediaError(f"cannot convert {im.mode} pixels: {_short(err)}") from None


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text[:200]
