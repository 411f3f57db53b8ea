"""Models found on pages: model-file links hashed as they stream, and the hashes model pages print.

Offenders share fine-tuned checkpoints and LoRAs by link. :func:`hash_model_stream` GETs a
model file through the SSRF-safe fetcher (``tipline.net.fetch``, every hop vetted) and feeds
each chunk, as it arrives, into the hashers Civitai and AUTOMATIC1111 use (SHA-256, MD5, SHA-1,
AutoV1, AutoV2, AutoV3: ``tipline.provenance.model_files``); nothing is written to disk and
nothing in the file is ever unpickled or executed. Only the first ``head_bytes`` (96 MiB) and
the last ``tail_bytes`` (16 MiB) are kept in memory, which hold what the header readers need (a
safetensors or GGUF header, a PyTorch zip's ``data.pkl`` and its central directory); the header
readers run on those once the stream ends, and where a reader wanted bytes between the two (a
tensor storage of a multi-GiB checkpoint) it read zeros and the finding says so. A file larger
than ``size_cap`` (16 GiB by default; ``Content-Length`` checked before a byte is read, then
counted) is refused with a per-item error.

The answer (:class:`ModelFindings`) gives an item record (``record()``) that a bank index
matches like a scanned model file: own hashes (sha256, autov1/2/3) against model banks.

Civitai-style model pages print their files' hashes ("SHA256", "AutoV1", "AutoV2", "AutoV3",
in the page text and in the page's JSON): :func:`model_hashes_from_page` extracts them and
:func:`page_record` makes a record that cites them, so a bank holding only a full SHA-256 is
found from an AutoV2 prefix, as for the model hashes an image's metadata cites.
"""

from __future__ import annotations

import hashlib
import io
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import unquote, urlsplit

from tipline.crawl.documents import html_text
from tipline.findings import Finding, ai_evidence
from tipline.media.sniff import SNIFF_BYTES, sniff
from tipline.net.fetch import FetchError, FetchSettings, fetch
from tipline.provenance.model_files import (
    AUTOV1_END,
    AUTOV1_MIN_SIZE,
    AUTOV1_START,
    FORMATS,
    MAX_SAFETENSORS_HEADER,
    ModelHashes,
    inspect_model,
)
from tipline.record import ItemRecord

__all__ = [
    "DEFAULT_SIZE_CAP",
    "ModelFindings",
    "PageModelHash",
    "StreamingModelHasher",
    "analyse_model_stream",
    "hash_model_stream",
    "is_model_link",
    "model_hashes_from_page",
    "page_record",
]

MIB = 1 << 20
#: largest model file streamed (the crawl's ``--model-size-cap``)
DEFAULT_SIZE_CAP = 16 << 30
HEAD_BYTES = 96 * MIB
TAIL_BYTES = 16 * MIB
#: wall-clock seconds for one model download (16 GiB at ~10 MB/s is under half an hour)
DEFAULT_TOTAL_TIMEOUT = 1800.0

#: path endings of model files (a ``.bin`` is often a model: PyTorch, diffusers, LoRAs)
MODEL_EXTENSIONS = (".safetensors", ".sft", ".ckpt", ".gguf", ".pt", ".pth", ".bin")
#: download routes that serve a model without its name in the path (Civitai's API)
_DOWNLOAD_PATHS = re.compile(r"/api/download/models/\d+/?$", re.I)


def is_model_link(url: str) -> bool:
    """An http(s) link whose path names a model file (``.safetensors``, ``.ckpt``, ``.gguf``,
    ``.pt``/``.pth``, ``.bin``), or a model download route; query and fragment ignored."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return False
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return False
    path = unquote(parts.path).lower().rstrip("/")
    return path.endswith(MODEL_EXTENSIONS) or bool(_DOWNLOAD_PATHS.search(parts.path))


# --------------------------------------------------------------------------- streaming


class StreamingModelHasher:
    """Every model hash in one pass over chunks as they arrive, keeping only the head and tail.

    AutoV3 is the SHA-256 from ``8 + N`` on, ``N`` the little-endian length in a safetensors
    file's first 8 bytes; it is computed for any stream whose first 8 bytes give a plausible
    ``N`` and kept only if the file then reads as safetensors."""

    def __init__(self, head_bytes: int = HEAD_BYTES, tail_bytes: int = TAIL_BYTES) -> None:
        self.head_bytes, self.tail_bytes = head_bytes, tail_bytes
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._sha1 = hashlib.sha1(usedforsecurity=False)
        self._sha256 = hashlib.sha256()
        self._v1 = hashlib.sha256()
        self._v3: Any = None
        self._v3_start: int | None = None
        self.size = 0
        self._head = bytearray()
        self._tail = bytearray()

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        pos, n = self.size, len(chunk)
        view = memoryview(chunk)
        self._md5.update(chunk)
        self._sha1.update(chunk)
        self._sha256.update(chunk)
        end = pos + n
        if pos < AUTOV1_END and end > AUTOV1_START:
            self._v1.update(view[max(0, AUTOV1_START - pos) : AUTOV1_END - pos])
        if len(self._head) < self.head_bytes:
            self._head += view[: self.head_bytes - len(self._head)]
        if self._v3_start is None and len(self._head) >= 8:
            (n_header,) = struct.unpack("<Q", bytes(self._head[:8]))
            self._v3_start = 8 + n_header if n_header <= MAX_SAFETENSORS_HEADER else -1
            if self._v3_start > 0:
                self._v3 = hashlib.sha256()  # pos < 8 <= start: nothing of it went by yet
        if self._v3 is not None and self._v3_start is not None and end > self._v3_start:
            self._v3.update(view[max(0, self._v3_start - pos) :])
        if self.tail_bytes:
            self._tail += view[-self.tail_bytes :]
        if len(self._tail) > 2 * self.tail_bytes:
            del self._tail[: len(self._tail) - self.tail_bytes]
        self.size = end

    def hashes(self, safetensors: bool) -> ModelHashes:
        full = self._sha256.hexdigest()
        v3 = self._v3.hexdigest() if safetensors and self._v3 is not None else None
        return ModelHashes(
            size=self.size,
            md5=self._md5.hexdigest(),
            sha1=self._sha1.hexdigest(),
            sha256=full,
            autov1=self._v1.hexdigest()[:8] if self.size >= AUTOV1_MIN_SIZE else None,
            autov2=full[:10],
            autov3=v3,
        )

    def kept(self) -> _KeptParts:
        tail = bytes(self._tail[-self.tail_bytes :]) if self.tail_bytes else b""
        return _KeptParts(bytes(self._head), tail, self.size)


class _KeptParts(io.RawIOBase):
    """A read-only, seekable view of a stream of which only the head and the tail were kept;
    the bytes between read as zeros (``holes_read`` then says so)."""

    def __init__(self, head: bytes, tail: bytes, size: int) -> None:
        self.head, self.tail, self.size = head, tail, size
        self.tail_start = size - len(tail)
        self.pos = 0
        self.holes_read = False

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, buffer: Any) -> int:
        mv = memoryview(buffer).cast("B")
        want = min(len(mv), max(0, self.size - self.pos))
        done = 0
        while done < want:
            p = self.pos + done
            if p < len(self.head):
                piece = self.head[p : p + want - done]
            elif p >= self.tail_start:
                piece = self.tail[p - self.tail_start : p - self.tail_start + want - done]
            else:
                self.holes_read = True
                gap = min(want - done, max(len(self.head), self.tail_start) - p)
                piece = bytes(gap)
            mv[done : done + len(piece)] = piece
            done += len(piece)
        self.pos += done
        return done


@dataclass(slots=True)
class ModelFindings:
    url: str
    #: the URL finally fetched (after redirects)
    final_url: str = ""
    size: int = 0
    #: safetensors | gguf | pytorch-zip | pickle | unknown
    format: str = "unknown"
    hashes: ModelHashes | None = None
    #: the ``model_file`` finding of the header readers (architecture, metadata, pickle globals)
    finding: Finding | None = None
    warnings: list[str] = field(default_factory=list)
    #: ``code: message`` when the file could not be fetched or hashed
    error: str | None = None

    # the hashes by name (None when not hashed); ``record()`` carries them all for matching
    @property
    def sha256(self) -> str | None:
        return self.hashes.sha256 if self.hashes else None

    @property
    def md5(self) -> str | None:
        return self.hashes.md5 if self.hashes else None

    @property
    def autov1(self) -> str | None:
        return self.hashes.autov1 if self.hashes else None

    @property
    def autov2(self) -> str | None:
        return self.hashes.autov2 if self.hashes else None

    @property
    def autov3(self) -> str | None:
        return self.hashes.autov3 if self.hashes else None

    def record(self) -> ItemRecord:
        """An item record a bank index matches like a scanned model file."""
        media = next(
            (m for m, f in FORMATS.items() if f == self.format), "application/octet-stream"
        )
        rec = ItemRecord(path=self.url, media_type=media, size=self.size or None)
        h = self.hashes
        if h is not None:
            rec.md5, rec.sha1, rec.sha256 = h.md5, h.sha1, h.sha256
            rec.autov1, rec.autov2, rec.autov3 = h.autov1, h.autov2, h.autov3
        if self.error:
            rec.errors.append(self.error)
        rec.warnings = list(self.warnings)
        if self.finding is not None:
            rec.provenance = [self.finding]
            rec.ai_evidence = ai_evidence(rec.provenance)
        return rec

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "final_url": self.final_url or self.url,
            "size": self.size,
            "format": self.format,
            "hashes": self.hashes.to_json() if self.hashes else None,
            "finding": self.finding.to_json() if self.finding else None,
            "warnings": list(self.warnings),
            "error": self.error,
        }


def _finish(hasher: StreamingModelHasher, out: ModelFindings) -> ModelFindings:
    out.size = hasher.size
    if not hasher.size:
        out.error = "empty_file: the model link answered no bytes"
        return out
    kept = hasher.kept()
    mt = sniff(kept.head[:SNIFF_BYTES])
    out.format = FORMATS.get(mt.mime, "unknown")
    report = inspect_model(io.BufferedReader(kept), hasher.size, mt, hashes=False)
    out.hashes = hasher.hashes(safetensors=out.format == "safetensors")
    report.finding.evidence["hashes"] = out.hashes.to_json()
    if kept.holes_read:
        note = (
            f"the header readers wanted bytes beyond the first {hasher.head_bytes // MIB} MiB "
            f"and the last {hasher.tail_bytes // MIB} MiB, which were not kept: read as zeros"
        )
        out.warnings.append(note)
        report.finding.evidence.setdefault("warnings", []).append(note)
    if report.treat_as_archive:
        out.warnings.append("a PyTorch-looking zip with other members: not unpacked from a link")
    out.finding = report.finding
    if out.format == "unknown":
        out.warnings.append(f"not a model file: content is {mt.mime}")
    return out


def analyse_model_stream(
    chunks: Iterable[bytes],
    url: str = "",
    *,
    head_bytes: int = HEAD_BYTES,
    tail_bytes: int = TAIL_BYTES,
) -> ModelFindings:
    """Hashes and header findings of a model file given as chunks (the fetcher's, or any)."""
    hasher = StreamingModelHasher(head_bytes, tail_bytes)
    for chunk in chunks:
        hasher.feed(chunk)
    return _finish(hasher, ModelFindings(url=url, final_url=url))


def hash_model_stream(
    url: str,
    settings: FetchSettings | None = None,
    size_cap: int = DEFAULT_SIZE_CAP,
    *,
    total_timeout: float = DEFAULT_TOTAL_TIMEOUT,
    head_bytes: int = HEAD_BYTES,
    tail_bytes: int = TAIL_BYTES,
) -> ModelFindings:
    """GET a model link through the SSRF-safe fetcher and hash it as it streams (see the
    module docstring). Never raises for the link or the file: a fetch failure (refused
    address, timeout, over ``size_cap``, an HTTP error) is ``error``, nothing hashed."""
    s = replace(
        settings or FetchSettings(),
        max_bytes=size_cap,
        total_timeout=max((settings or FetchSettings()).total_timeout, total_timeout),
    )
    hasher = StreamingModelHasher(head_bytes, tail_bytes)
    out = ModelFindings(url=url)
    try:
        result = fetch(url, s, sink=hasher.feed)
    except FetchError as err:
        out.error = str(err)
        out.size = hasher.size
        return out
    out.final_url = result.url
    return _finish(hasher, out)


# --------------------------------------------------------------------------- model pages


@dataclass(frozen=True, slots=True)
class PageModelHash:
    """A model hash a page prints: ``algorithm`` is the Tipline signal type (sha256, autov1,
    autov2, autov3), ``value`` lowercase hex."""

    algorithm: str
    value: str


#: hash names as Civitai prints them -> (signal type, hex lengths accepted)
_NAMES: dict[str, tuple[str, tuple[int, ...]]] = {
    "sha256": ("sha256", (64,)),
    "sha-256": ("sha256", (64,)),
    "autov1": ("autov1", (8,)),
    "autov2": ("autov2", (10,)),
    "autov3": ("autov3", (12, 64)),
}
_LABELLED = re.compile(
    r"\b(SHA-?256|AutoV[123])\b[\s:=\"'>]{0,12}(?:<[^>]{0,200}>\s*){0,4}([0-9A-Fa-f]{8,64})\b",
    re.I,
)
_JSON_PAIR = re.compile(r"\"(SHA256|AutoV[123])\"\s*:\s*\"([0-9A-Fa-f]{8,64})\"", re.I)
#: a model page's hashes are few; anything beyond this is not a model page
MAX_PAGE_HASHES = 256


def model_hashes_from_page(html: str | bytes, max_chars: int = 8_000_000) -> list[PageModelHash]:
    """The model hashes a Civitai-style page prints (its visible text, its markup and its
    embedded JSON), in page order, each once; a value of the wrong length for its name is
    left out."""
    page = html.decode("utf-8", "replace") if isinstance(html, bytes) else html
    page = page[:max_chars]
    text, _ = html_text(page, max_chars)
    out: dict[tuple[str, str], None] = {}
    for source in (text, page):
        for rx in (_LABELLED, _JSON_PAIR):
            for m in rx.finditer(source):
                name, value = m.group(1).lower(), m.group(2).lower()
                st, lengths = _NAMES[name]
                if len(value) in lengths:
                    out.setdefault((st, value), None)
                if len(out) >= MAX_PAGE_HASHES:
                    break
    return [PageModelHash(st, v) for st, v in out]


def page_record(url: str, hashes: Iterable[PageModelHash]) -> ItemRecord:
    """An item record of a model page citing the hashes it prints (role ``resource``): a bank
    index finds each through the types that answer a hash of its length (a 10-hex AutoV2 finds
    an AutoV2 entry, and a full SHA-256 entry it starts)."""
    cited = [{"name": h.algorithm, "hash": h.value} for h in hashes]
    finding = Finding(
        "model_file",
        "unknown",
        evidence={"source": "model_page", "url": url[:2000], "resources": cited},
    )
    return ItemRecord(path=url, media_type="text/html", provenance=[finding], ai_evidence="none")
