"""Hash one item: cryptographic digests of the bytes, PDQ of the pixels."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

from tipline.config import Limits
from tipline.errors import ItemError
from tipline.media.decode import decode_luma_fast, decode_rgb
from tipline.media.sniff import IMAGE_EXTENSIONS, SNIFF_BYTES, MediaType, sniff
from tipline.scan.record import ItemRecord
from tipline.signals import pdq

PdqMode = Literal["fast", "reference"]
CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class HashOptions:
    pdq_mode: PdqMode = "fast"
    dihedral: bool = False
    limits: Limits = field(default_factory=Limits)


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
    elif _named_like_image(path) and mt.kind in ("text", "other"):
        what = "empty" if not data else f"{mt.mime} content"
        record.errors.append(
            f"unsupported_media: named like an image but is {what}; not decodable as an image"
        )
    return record


def add_pdq(record: ItemRecord, data: bytes, mt: MediaType, options: HashOptions) -> None:
    if options.pdq_mode == "reference":
        hashes = pdq.reference_hash(decode_rgb(data, mt, options.limits), options.dihedral)
    else:
        luma = decode_luma_fast(data, mt, options.limits)
        hashes = pdq.fast_hash(luma.plane, luma.height, luma.width, options.dihedral)
    record.pdq = hashes[0].hex
    record.pdq_quality = hashes[0].quality
    if options.dihedral:
        record.pdq_dihedral = [h.hex for h in hashes]


def _named_like_image(path: str) -> bool:
    name = path.rsplit("!", 1)[-1]
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def signals_for_file(path: str | Path, options: HashOptions | None = None) -> dict[str, str]:
    """signal type -> signal for one file on disk (used by ``tipline bank add --file``)."""
    opts = options or HashOptions()
    data = Path(path).read_bytes()
    record = hash_bytes(data, str(path), opts)
    if record.errors and record.pdq is None and sniff(data[:SNIFF_BYTES]).is_image:
        raise ItemError(f"{path}: {record.errors[0]}")
    out = {"md5": record.md5 or "", "sha1": record.sha1 or "", "sha256": record.sha256 or ""}
    if record.pdq is not None and record.pdq_usable:
        out["pdq"] = record.pdq
    return out
