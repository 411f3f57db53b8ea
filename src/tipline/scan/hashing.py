"""Hash one item: cryptographic digests of the bytes, PDQ of the pixels."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Literal

import numpy as np
import numpy.typing as npt
from PIL import Image

from tipline.config import Limits
from tipline.errors import ItemError
from tipline.media.decode import (
    FAST_MIN_SIDE,
    TE_RAW_MODES,
    LumaPlane,
    ReferencePixels,
    deadline,
    decode_luma_fast,
    decode_reference,
)
from tipline.media.sniff import JPEG, SNIFF_BYTES, MediaType, disguise_warning, sniff
from tipline.media.video import VideoMode, VideoSource
from tipline.record import MIN_USABLE_QUALITY, ItemRecord
from tipline.signals import pdq, pdq_variants

if TYPE_CHECKING:
    from tipline.provenance.keywords import KeywordMatcher

PdqMode = Literal["fast", "reference"]
#: A re-checked fast hash whose quality is this close to the usable bound (50) is recomputed
#: with the reference too: whether it is matched at all depends on that bound. Measured: fast
#: and reference qualities differ by at most 1 (24 JPEGs: photographs, text, smooth fields).
QUALITY_RECHECK_MARGIN = 3
CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class HashOptions:
    """How an item is hashed.

    The hashing policy (docs/formats.md#which-pdq): ``pdq_mode="reference"`` (the default) is
    what everything that answers or stores a hash for others uses (the HMA API, bank content,
    the pipeline's stored PDQ and so exports, ``bank add --file``); ``"fast"`` is for the speed
    paths whose hashes stay inside one run (``scan``, ``hash``, ``dedupe``), where a scan
    re-checks near matches with the reference hash (``pdq_recheck``).
    """

    pdq_mode: PdqMode = "reference"
    #: the 7 other rotations/flips of the PDQ hash, looked up too (almost free: derived from
    #: the same DCT). Off here (the HMA routes answer as HMA); on in ``scan`` and the pipeline
    dihedral: bool = False
    #: extra PDQ query hashes (``record.pdq_variants``, tipline.signals.pdq_variants): the
    #: picture inside a border / letterbox / caption band / blurred fill (``border_trimmed``)
    #: and re-crop queries (``CROPS``). Off here; on in ``scan`` and the pipeline
    trim_borders: bool = False
    crop_queries: bool = False
    limits: Limits = field(default_factory=Limits)
    #: vPDQ frame sampling: "fast" (keyframes) or "reference" (exactly as the vpdq package)
    video_mode: VideoMode = "fast"
    #: AI provenance findings (record.provenance / ai_evidence); off with --no-provenance
    provenance: bool = True
    #: keep prompts, captions and authors in the provenance evidence (--include-text)
    include_text: bool = False
    #: decode SD/SDXL invisible watermarks (--watermarks; costly on generator-sized images)
    watermarks: bool = False
    #: run the learned detector configured by --detector-card (a ranking signal, never a verdict)
    detectors: bool = False
    #: scan --keywords: the user's keyword list (tipline.scan.keywords applies it to every record)
    keywords: KeywordMatcher | None = field(default=None, compare=False)
    #: fast mode only: given an item's fast PDQ hashes, whether any is near a bank entry (within
    #: a bank threshold plus a margin, ``tipline.scan.runner.pdq_recheck``); if so the item's
    #: PDQ is recomputed with the reference pipeline, so matches are decided on reference hashes
    pdq_recheck: Callable[[Sequence[str]], bool] | None = field(default=None, compare=False)


class _Digests:
    def __init__(self) -> None:
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.sha1 = hashlib.sha1(usedforsecurity=False)
        self.sha256 = hashlib.sha256()
        self.size = 0

    def update(self, chunk: bytes | memoryview) -> None:
        self.md5.update(chunk)
        self.sha1.update(chunk)
        self.sha256.update(chunk)
        self.size += len(chunk)

    def fill(self, record: ItemRecord) -> None:
        record.md5 = self.md5.hexdigest()
        record.sha1 = self.sha1.hexdigest()
        record.sha256 = self.sha256.hexdigest()
        record.size = self.size


def digest_stream(stream: BinaryIO, record: ItemRecord, max_bytes: int) -> None:
    """Stream the cryptographic digests of a file too large to hold in memory."""
    d = _Digests()
    while chunk := stream.read(CHUNK):
        d.update(chunk)
        if d.size > max_bytes:
            break
    d.fill(record)


def hash_bytes(
    data: bytes, path: str, options: HashOptions, media_type: MediaType | None = None
) -> ItemRecord:
    """The record for one in-memory item. Item problems land in ``record.errors``."""
    mt = media_type or sniff(data[:SNIFF_BYTES])
    record = ItemRecord(path=path, media_type=mt.mime)
    d = _Digests()
    d.update(data)
    d.fill(record)
    if mt.is_image:
        if len(data) > options.limits.max_image_bytes:
            record.errors.append(
                f"file_too_large: image of {len(data):,} bytes exceeds --max-image-bytes "
                f"{options.limits.max_image_bytes:,}; only cryptographic hashes computed"
            )
        else:
            try:
                add_pdq(record, data, mt, options)
            except ItemError as err:
                record.errors.append(str(err))
    elif mt.kind == "video" and data:
        add_vpdq(record, data, mt, options)
    if options.provenance and data:
        add_provenance(record, data, mt, options)
    add_name_warning(record)
    return record


def add_name_warning(record: ItemRecord) -> None:
    """Say when the item's name claims another type than its content (once per record)."""
    if record.sha256 is None and record.md5 is None:
        return  # never read: nothing to compare the name with
    w = disguise_warning(record.path, record.media_type)
    if w is not None and w not in record.warnings:
        record.warnings.append(w)


def add_provenance(record: ItemRecord, data: bytes, mt: MediaType, options: HashOptions) -> None:
    """AI provenance findings for items some reader handles; never adds to ``record.errors``."""
    from tipline import provenance

    if not (mt.is_image or provenance.has_readers(mt.kind)):
        return
    record.provenance = provenance.analyse(
        data,
        mt,
        # with --keywords the text stays until the keyword pass, which drops it afterwards
        include_text=options.include_text or options.keywords is not None,
        include_watermarks=options.watermarks,
        include_detectors=options.detectors,
        max_pixels=options.limits.max_pixels,
        max_decode_seconds=options.limits.max_decode_seconds,
    )
    record.ai_evidence = provenance.ai_evidence(record.provenance)


def add_pdq(record: ItemRecord, data: bytes, mt: MediaType, options: HashOptions) -> None:
    variants: dict[str, str] = {}
    luma: LumaPlane | None = None
    if options.pdq_mode == "reference":
        hashes, px = _reference_pdq(data, mt, options, variants)
        if options.trim_borders or options.crop_queries:
            luma = query_plane(px.pixels)
    else:
        luma, fast = fast_pdq(data, mt, options.limits, options.dihedral)
        # None: fragile, the fast path cannot vouch for its bits; near a bank entry: a scan's
        # matches are decided on reference hashes
        recheck = options.pdq_recheck
        if fast is None or (
            recheck is not None
            and (
                abs(fast[0].quality - MIN_USABLE_QUALITY) <= QUALITY_RECHECK_MARGIN
                or recheck([h.hex for h in fast])
            )
        ):
            hashes, _ = _reference_pdq(data, mt, options, variants)
        else:
            hashes = fast
    record.pdq = hashes[0].hex
    record.pdq_quality = hashes[0].quality
    if options.dihedral:
        record.pdq_dihedral = [h.hex for h in hashes]
    if luma is not None and (options.trim_borders or options.crop_queries):
        for name, value in pdq_variants.variants(
            luma.plane, luma.height, luma.width, options.trim_borders, options.crop_queries
        ).items():
            if value != record.pdq and name not in variants:
                variants[name] = value
    if variants:
        record.pdq_variants = variants


def fast_pdq(
    data: bytes, mt: MediaType, limits: Limits, dihedral: bool = False
) -> tuple[LumaPlane, list[pdq.PdqHash] | None]:
    """Fast-mode PDQ of an image: its DCT-scaled (JPEG) or box-reduced luma plane and the
    hashes, or None where the fast path cannot vouch for the bits (fragile, or a mode whose
    reference hash is not of these pixels): the caller then computes the reference hash.

    A JPEG decoded below ``FAST_MIN_SIDE`` (1/8 of a 12 MP photo) whose hash is fragile is
    decoded once more at ``FAST_MIN_SIDE`` first: the coarser plane's error estimate (one
    level coarser still) is the looser one, and a finer decode costs less than the reference.
    """
    luma = decode_luma_fast(data, mt, limits)
    if luma.mode in TE_RAW_MODES:
        return luma, None
    fast = pdq.fast_hash_or_none(luma.plane, luma.height, luma.width, dihedral)
    scaled_below = min(luma.plane.shape) < min(FAST_MIN_SIDE, luma.width, luma.height)
    if fast is None and mt == JPEG and scaled_below:
        luma = decode_luma_fast(data, mt, limits, min_side=FAST_MIN_SIDE)
        fast = pdq.fast_hash_or_none(luma.plane, luma.height, luma.width, dihedral)
    return luma, fast


def query_plane(rgb: npt.NDArray[np.uint8]) -> LumaPlane:
    """The luma plane extra query hashes are computed from: box-reduced to about
    ``FAST_MIN_SIDE`` px on the short side, standing in for the full image."""
    im = Image.fromarray(rgb).convert("L")
    factor = min(im.size) // FAST_MIN_SIDE
    if factor >= 2:
        im = im.reduce(factor)
    return LumaPlane(np.asarray(im, dtype=np.uint8), rgb.shape[1], rgb.shape[0])


def _reference_pdq(
    data: bytes, mt: MediaType, options: HashOptions, variants: dict[str, str]
) -> tuple[list[pdq.PdqHash], ReferencePixels]:
    """python-threatexchange's PDQ (``decode_reference``); for the modes where that hashes raw
    values (palette indices, CMYK bands...), the hash of the RGB picture goes to ``variants``
    as ``rgb``: a query hash only, so a JPEG or PNG copy of the same picture still matches
    (1-bit images: the same bits, but usable where python-threatexchange's quality is 0)."""
    px = decode_reference(data, mt, options.limits)
    hashes = pdq.reference_hash(px.te, options.dihedral)
    if px.rgb is not None:
        rgb = pdq.reference_hash(px.rgb)[0]
        if rgb.usable and (rgb.hex != hashes[0].hex or not hashes[0].usable):
            variants["rgb"] = rgb.hex
    return hashes, px


def add_vpdq(record: ItemRecord, source: VideoSource, mt: MediaType, options: HashOptions) -> None:
    """vPDQ of a video (a path or its bytes) into ``record.vpdq``. Problems go to
    ``record.errors``; frames hashed before a problem (a truncated file, a limit) are kept."""
    from tipline.media.video import sample_frames
    from tipline.signals.vpdq import VpdqFrame, VpdqHash, hash_sample

    frames: list[VpdqFrame] = []
    try:
        with deadline(options.limits.max_video_decode_seconds, "video decoding"):
            for sample in sample_frames(source, mt, options.limits, options.video_mode):
                h = hash_sample(sample)
                frames.append(VpdqFrame(h.hex, h.quality, sample.timestamp))
    except ItemError as err:
        record.errors.append(str(err))
    if frames:
        record.vpdq = VpdqHash(tuple(frames)).to_strings()
        record.vpdq_frames = len(frames)


def hash_video_file(stream: BinaryIO, path: str, mt: MediaType, options: HashOptions) -> ItemRecord:
    """A video on disk: digests streamed from ``stream``, vPDQ decoded from ``path`` (never
    read into memory)."""
    record = ItemRecord(path=path, media_type=mt.mime)
    digest_stream(stream, record, options.limits.max_file_bytes)
    add_vpdq(record, path, mt, options)
    return record


def signals_for_file(path: str | Path, options: HashOptions | None = None) -> dict[str, str]:
    """signal type -> signal for one file on disk (used by ``tipline bank add --file``)."""
    opts = options or HashOptions()
    with open(path, "rb") as f:
        mt = sniff(f.read(SNIFF_BYTES))
        if mt.kind == "video":
            # Banks hold reference-sampled vPDQ (what partners share): every frame the
            # reference samples, so fast-mode scans of any copy find the frames they sample.
            if options is None:
                opts = HashOptions(video_mode="reference")
            f.seek(0)
            record = hash_video_file(f, str(path), mt, opts)
            if record.vpdq is None:
                raise ItemError(f"{path}: {record.errors[0] if record.errors else 'no frames'}")
            from tipline.signals.vpdq import VpdqHash

            return {
                "md5": record.md5 or "",
                "sha1": record.sha1 or "",
                "sha256": record.sha256 or "",
                "vpdq": VpdqHash.from_strings(record.vpdq).to_te_json(),
            }
        if mt.kind == "model":  # streamed: model files can be many GB
            from tipline.provenance.model_files import inspect_model

            size = f.seek(0, os.SEEK_END)
            hashes = inspect_model(f, size, mt).hashes
            if hashes is None:
                raise ItemError(f"{path}: model file could not be hashed")
            return hashes.signals()
    data = Path(path).read_bytes()
    record = hash_bytes(data, str(path), opts)
    if record.errors and record.pdq is None and sniff(data[:SNIFF_BYTES]).is_image:
        raise ItemError(f"{path}: {record.errors[0]}")
    out = {"md5": record.md5 or "", "sha1": record.sha1 or "", "sha256": record.sha256 or ""}
    if record.pdq is not None and record.pdq_usable:
        out["pdq"] = record.pdq
    return out
