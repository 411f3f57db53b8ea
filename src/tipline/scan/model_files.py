"""Model files in a scan: streamed hashes and header findings instead of the generic digests.

A model file (safetensors, GGUF, PyTorch zip, pickle) gets one record with md5/sha1/sha256,
``autov1``/``autov2``/``autov3`` and a ``model_file`` provenance finding, all from one pass over
the file (tipline.provenance.model_files). A zip that only *starts* like a PyTorch archive but holds
other members, or hides media as tensor storages, is scanned as an ordinary archive instead, so
nothing can be hidden from the scan by naming its first member ``x/data.pkl``.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Collection
from typing import BinaryIO

from tipline.findings import ai_evidence
from tipline.media.sniff import PYTORCH, MediaType
from tipline.provenance.model_files import inspect_model, torch_zip_layout
from tipline.record import ItemRecord
from tipline.scan.hashing import HashOptions


def is_plain_model(f: BinaryIO, size: int, mt: MediaType) -> bool:
    """False for a PyTorch-looking zip that must be scanned as an archive (extra members)."""
    if mt.mime != PYTORCH.mime:
        return True
    layout = torch_zip_layout(f, size)
    return layout.error is not None or (not layout.unexpected and not layout.embedded_media)


def model_record(
    f: BinaryIO, path: str, size: int, mt: MediaType, options: HashOptions
) -> ItemRecord:
    """The record of one model file read from ``f`` (seekable; never read whole)."""
    rep = inspect_model(f, size, mt)
    rec = ItemRecord(path=path, media_type=mt.mime, size=size)
    h = rep.hashes
    if h is not None:
        rec.size = h.size
        rec.md5, rec.sha1, rec.sha256 = h.md5, h.sha1, h.sha256
        rec.autov1, rec.autov2, rec.autov3 = h.autov1, h.autov2, h.autov3
    else:
        rec.errors.append("unreadable: model file could not be hashed")
    if options.provenance:
        keep_text = options.include_text or options.keywords is not None
        if not keep_text:
            for finding in rep.findings:
                finding.evidence.pop("text", None)
        rec.provenance = rep.findings
        rec.ai_evidence = ai_evidence(rec.provenance)
    return rec


def emit_model_member(
    data: bytes,
    path: str,
    mt: MediaType,
    options: HashOptions,
    emit: Callable[[ItemRecord], None],
    skip: Collection[str],
    container: str,
) -> bool:
    """An archive member that sniffed as a model: emit its record and return True, or return
    False when it is a zip to be scanned as a nested archive instead."""
    bio = io.BytesIO(data)
    if not is_plain_model(bio, len(data), mt):
        return False
    if path not in skip:
        rec = model_record(bio, path, len(data), mt, options)
        rec.container = container
        emit(rec)
    return True
