"""Evidence before notice: what a location served, how it was reached, and the hashes of its
media, captured once, sealed, and exportable as WARC for law enforcement (docs/removal.md,
"Evidence and re-checks").

:func:`capture` fetches a location through the SSRF-safe fetcher (:mod:`tipline.net.fetch`,
with a :class:`~tipline.net.fetch.FetchTrace` so every hop's DNS answers, address, headers
and TLS certificate are recorded), finds the media an HTML page carries (``img``/``srcset``,
``video``/``source``, ``og:image``, links to image and video files; bounded in count and
bytes), fetches each and hashes it (SHA-256, MD5, PDQ through the project's own
:func:`tipline.scan.hashing.add_pdq`). Media bytes are never kept: a bundle holds hashes only,
and marks media the case already holds (``held``). A page that is HTML or text is kept, sealed,
beside the bundle (it is what the notice points at); media never are.

The bundle's id is the SHA-256 of its canonical JSON encoding (sorted keys, no spaces, UTF-8),
so it can go into the audit chain and anyone holding the export can check it. Bundles are
sealed with the media store's key and format (:class:`tipline.store.media.EncryptedStore`,
AES-256-GCM, the id as associated data) and stored content-addressed under ``store_dir``:
``<ab>/<sha256>.evidence`` (and ``<ab>/<page sha256>.page``). :func:`load` checks the hash
after decrypting. Network failures are never raised: a refused, unresolvable or failing
location gives a bundle whose ``error`` says why (with the DNS answers that caused a refusal).
"""

from __future__ import annotations

import hashlib
import http
import io
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from tipline.errors import ItemError, TiplineError
from tipline.media.sniff import EMPTY, SNIFF_BYTES, MediaType, sniff
from tipline.net import links
from tipline.net.fetch import (
    FetchError,
    FetchHop,
    FetchResult,
    FetchSettings,
    FetchTrace,
    MiB,
    TooLargeError,
    fetch,
)
from tipline.record import MIN_USABLE_QUALITY, ItemRecord
from tipline.scan.hashing import HashOptions, add_pdq, add_vpdq
from tipline.store.media import (
    EncryptedStore,
    Keyring,
    MediaError,
    MediaNotFound,
    RotateResult,
    rotate,
)

#: Bumped when the bundle's fields change meaning (its hash covers it).
BUNDLE_VERSION = 1
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
#: Media kinds that count as "the media" of a location (what a re-check looks for).
MEDIA_KINDS = frozenset({"image", "video"})
#: links of any kind read from one page while looking for its media
MAX_LINKS_READ = 20_000
#: Reference PDQ (what the pipeline stores for uploads), no provenance: only the hash is needed.
_PDQ_OPTIONS = HashOptions(pdq_mode="reference", provenance=False)


class EvidenceError(TiplineError):
    """An evidence bundle cannot be stored or read: missing, tampered, or not a bundle."""


@dataclass(frozen=True, slots=True)
class CaptureLimits:
    """Bounds on one capture or re-check: hostile pages must not cost unbounded time or bytes."""

    #: largest page (HTML) read; bigger pages are an error recorded in the bundle
    max_page_bytes: int = 8 * MiB
    #: media URLs fetched from one page; the rest are counted (``media_dropped``), not fetched
    max_media: int = 50
    #: largest media file read (each)
    max_media_bytes: int = 32 * MiB
    #: wall-clock seconds for the whole capture; media still waiting then are skipped
    total_seconds: float = 120.0
    #: media fetched at once
    media_workers: int = 4
    #: seconds spent looking for media in one page's HTML
    parse_seconds: float = 5.0


# --------------------------------------------------------------------------------------------
# Media discovery


def find_media_urls(
    html: bytes,
    base_url: str,
    *,
    limit: int = 50,
    content_type: str = "",
    max_seconds: float = 5.0,
) -> tuple[list[str], int]:
    """Media URLs an HTML page names (absolute, canonical, http(s), deduplicated, document
    order), at most ``limit``; and how many more it named. The crawler's link extractor
    (:func:`tipline.net.links.extract`: the same tags, the same hostile-markup limits), its
    media links only. Parsing stops after ``max_seconds``."""
    found = links.extract(
        html,
        base_url,
        max_links=MAX_LINKS_READ,
        content_type=content_type,
        max_seconds=max_seconds,
    )
    media = [link.url for link in found.links if link.kind == "media"]
    return media[:limit], max(0, len(media) - limit)


# --------------------------------------------------------------------------------------------
# Hashing and TLS


def hash_media(
    data: bytes, media_type: MediaType | None = None, *, known: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """SHA-256, MD5, size and (images) reference PDQ of ``data``. A picture that does not
    decode (truncated, corrupt) still gets its digests; ``error`` says why it has no PDQ.
    ``known``: SHA-256s already matched exactly (a re-check): their PDQ is not computed.
    Videos get their vPDQ frames (``vpdq``, ``vpdq_frames``) instead of a PDQ."""
    mt = media_type or sniff(data[:SNIFF_BYTES])
    sha256 = hashlib.sha256(data).hexdigest()
    out: dict[str, Any] = {
        "sha256": sha256,
        "md5": hashlib.md5(data, usedforsecurity=False).hexdigest(),
        "size": len(data),
        "media_type": mt.mime,
        "kind": mt.kind,
        "pdq": None,
        "pdq_quality": None,
        "error": None,
    }
    if mt.is_image and sha256 not in known:
        record = ItemRecord(path="evidence", media_type=mt.mime)
        try:
            add_pdq(record, data, mt, _PDQ_OPTIONS)
        except ItemError as err:
            out["error"] = str(err)
        except Exception as err:  # a hostile file must not stop the capture
            out["error"] = f"decode_error: {type(err).__name__}: {err}"[:300]
        else:
            out["pdq"], out["pdq_quality"] = record.pdq, record.pdq_quality
    elif mt.kind == "video" and sha256 not in known:
        # vPDQ (the pipeline's sampling), so a re-check finds a re-encoded copy of the video;
        # only videos carry the keys, so picture and page bundles keep their ids
        record = ItemRecord(path="evidence", media_type=mt.mime)
        try:
            add_vpdq(record, data, mt, _PDQ_OPTIONS)
        except Exception as err:  # a hostile file must not stop the capture
            record.errors.append(f"decode_error: {type(err).__name__}: {err}"[:300])
        out["vpdq"] = list(record.vpdq or [])
        out["vpdq_frames"] = record.vpdq_frames or 0
        if record.errors and not record.vpdq:
            out["error"] = record.errors[0][:300]
    return out


def pdq_usable(entry: Mapping[str, Any]) -> bool:
    return bool(entry.get("pdq")) and (entry.get("pdq_quality") or 0) >= MIN_USABLE_QUALITY


def certificate_summary(der: bytes) -> dict[str, Any]:
    """Subject, issuer, SANs, validity and SHA-256 fingerprint of a DER certificate."""
    from cryptography import x509

    fingerprint = hashlib.sha256(der).hexdigest()
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as err:
        return {"sha256_fingerprint": fingerprint, "error": f"unparsable certificate: {err}"}
    san: list[str] = []
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        san = [f"DNS:{n}" for n in ext.get_values_for_type(x509.DNSName)]
        san += [f"IP:{ip}" for ip in ext.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        pass
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "san": san,
        "serial": format(cert.serial_number, "x"),
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "sha256_fingerprint": fingerprint,
        "self_signed": cert.subject == cert.issuer,
    }


# --------------------------------------------------------------------------------------------
# Surveying a location (shared by capture and re-check)


def _hop_json(hop: FetchHop) -> dict[str, Any]:
    return {
        "url": hop.url,
        "addresses": list(hop.addresses),
        "connected_ip": hop.connected_ip,
        "request_headers": dict(hop.request_headers),
        "status": hop.status,
        "response_headers": dict(hop.response_headers),
        "tls": certificate_summary(hop.peer_certificate) if hop.peer_certificate else None,
    }


@dataclass(slots=True)
class Survey:
    """One look at a location: the page fetch, its trace, and every media entry."""

    url: str
    trace: FetchTrace
    result: FetchResult | None = None
    error: FetchError | None = None
    is_page: bool = False
    page: dict[str, Any] | None = None
    media: list[dict[str, Any]] = field(default_factory=list)
    media_dropped: int = 0

    @property
    def status(self) -> int | None:
        return self.trace.hops[-1].status if self.trace.hops else None

    @property
    def addresses(self) -> tuple[str, ...]:
        """Every address the location's host (and redirect hosts) resolved to, in order."""
        seen: dict[str, None] = {}
        for hop in self.trace.hops:
            seen.update(dict.fromkeys(hop.addresses))
        return tuple(seen)


def _is_page(result: FetchResult) -> bool:
    """Text (HTML) is a page; so is an empty body or undecodable bytes declared as HTML
    (e.g. UTF-16). Anything else is the media itself."""
    if result.media_type.kind == "text" or result.media_type == EMPTY:
        return True
    return result.media_type.kind == "other" and "html" in result.declared_type.lower()


def _fetch_media(
    url: str, settings: FetchSettings, deadline: float, known: frozenset[str]
) -> dict[str, Any]:
    """Fetch and hash one media URL; never raises for network or decoding problems."""
    entry: dict[str, Any] = {"url": url}
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        entry["error"] = "skipped: the capture's time budget ran out"
        return entry
    trace = FetchTrace()
    try:
        result = fetch(
            url,
            replace(settings, total_timeout=min(settings.total_timeout, remaining)),
            trace=trace,
        )
    except FetchError as err:
        entry["error"] = str(err)
        result = None
    if trace.hops:
        last = trace.hops[-1]
        entry["status"] = last.status
        entry["connected_ip"] = last.connected_ip
        entry["response_headers"] = dict(last.response_headers)
        if result is not None and len(trace.hops) > 1:
            entry["final_url"] = result.url
    if result is None:
        return entry
    hashed = hash_media(result.content, result.media_type, known=known)
    if hashed["kind"] not in MEDIA_KINDS and hashed["error"] is None:
        hashed["error"] = f"not_media: served {hashed['media_type']} ({result.declared_type[:60]})"
    entry.update(hashed)
    return entry


def survey(
    url: str,
    fetch_settings: FetchSettings,
    limits: CaptureLimits | None = None,
    *,
    known: frozenset[str] = frozenset(),
) -> Survey:
    """Fetch ``url`` and every media it carries, bounded by ``limits``; never raises for
    network errors (``Survey.error``). ``known``: see :func:`hash_media`."""
    lim = limits or CaptureLimits()
    deadline = time.monotonic() + lim.total_seconds
    page_settings = replace(
        fetch_settings,
        max_bytes=min(fetch_settings.max_bytes, max(lim.max_page_bytes, lim.max_media_bytes)),
        total_timeout=min(fetch_settings.total_timeout, lim.total_seconds),
    )
    s = Survey(url=url, trace=FetchTrace())
    try:
        s.result = fetch(url, page_settings, trace=s.trace)
    except FetchError as err:
        s.error = err
        return s
    result = s.result
    if not _is_page(result):
        # the URL is the media itself
        entry: dict[str, Any] = {"url": url, "status": result.status}
        entry.update(hash_media(result.content, result.media_type, known=known))
        s.media.append(entry)
        s.page = {
            "sha256": entry["sha256"],
            "size": entry["size"],
            "media_type": result.media_type.mime,
        }
        return s
    s.is_page = True
    if len(result.content) > lim.max_page_bytes:
        s.error = TooLargeError(
            f"the page is {len(result.content):,} bytes, over the {lim.max_page_bytes:,}-byte "
            "page limit; its media were not looked for",
            url,
        )
    s.page = {
        "sha256": hashlib.sha256(result.content).hexdigest(),
        "size": len(result.content),
        "media_type": result.declared_type[:100] or result.media_type.mime,
    }
    if s.error is not None:
        return s
    urls, s.media_dropped = find_media_urls(
        result.content,
        result.url,
        limit=lim.max_media,
        content_type=result.declared_type,
        max_seconds=lim.parse_seconds,
    )
    media_settings = replace(
        fetch_settings, max_bytes=min(fetch_settings.max_bytes, lim.max_media_bytes)
    )
    if urls:
        with ThreadPoolExecutor(max_workers=max(1, min(lim.media_workers, len(urls)))) as pool:
            s.media = list(
                pool.map(lambda u: _fetch_media(u, media_settings, deadline, known), urls)
            )
    return s


# --------------------------------------------------------------------------------------------
# The bundle


@dataclass(frozen=True)
class EvidenceBundle:
    """What a location served when captured. ``sha256`` is the id (see the module docstring)."""

    sha256: str
    url: str
    captured_at: datetime
    #: the final hop's request and response headers (every hop's are in ``hops``)
    request_headers: dict[str, str]
    response_headers: dict[str, str]
    http_status: int | None
    #: the addresses the location's host resolved to (first hop), as resolve() returned them
    dns_answers: tuple[str, ...]
    #: the address the final hop connected to (None: refused or failed before connecting)
    resolved_ip: str | None
    #: the final hop's certificate summary when it was https
    tls: dict[str, Any] | None
    page_sha256: str | None
    #: {url, sha256, md5, pdq, pdq_quality, size, media_type, kind, status, error, held, ...}
    media: tuple[dict[str, Any], ...]
    attribution: dict[str, Any]
    #: every URL visited before the final one
    redirects: tuple[str, ...]
    final_url: str | None = None
    #: each request: url, addresses, connected_ip, request/response headers, status, tls
    hops: tuple[dict[str, Any], ...] = ()
    page_media_type: str | None = None
    page_size: int | None = None
    #: the page body is sealed beside the bundle (:func:`load_page`)
    page_stored: bool = False
    #: media URLs the page named beyond the count cap (not fetched)
    media_dropped: int = 0
    #: why the location could not be (fully) captured: ``blocked_address: ...``, ``dns_error: ...``
    error: str | None = None
    version: int = BUNDLE_VERSION

    @property
    def media_sha256(self) -> frozenset[str]:
        """SHA-256 of every media file the location served (images, videos)."""
        return frozenset(
            m["sha256"] for m in self.media if m.get("sha256") and m.get("kind") in MEDIA_KINDS
        )

    def to_json(self) -> dict[str, Any]:
        """The bundle as JSON, ``sha256`` included."""
        doc = _body(self)
        doc["sha256"] = self.sha256
        return doc

    def canonical(self) -> bytes:
        """The bytes whose SHA-256 is the id (everything but ``sha256``)."""
        return canonical_json(_body(self))


def canonical_json(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(
        doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def _body(b: EvidenceBundle) -> dict[str, Any]:
    return {
        "version": b.version,
        "url": b.url,
        "final_url": b.final_url,
        "captured_at": b.captured_at.isoformat(),
        "request_headers": b.request_headers,
        "response_headers": b.response_headers,
        "http_status": b.http_status,
        "dns_answers": list(b.dns_answers),
        "resolved_ip": b.resolved_ip,
        "tls": b.tls,
        "page_sha256": b.page_sha256,
        "page_media_type": b.page_media_type,
        "page_size": b.page_size,
        "page_stored": b.page_stored,
        "media": [dict(m) for m in b.media],
        "media_dropped": b.media_dropped,
        "attribution": b.attribution,
        "redirects": list(b.redirects),
        "hops": [dict(h) for h in b.hops],
        "error": b.error,
    }


def _from_body(doc: Mapping[str, Any], sha256: str) -> EvidenceBundle:
    return EvidenceBundle(
        sha256=sha256,
        version=int(doc["version"]),
        url=str(doc["url"]),
        final_url=doc.get("final_url"),
        captured_at=datetime.fromisoformat(doc["captured_at"]),
        request_headers=dict(doc["request_headers"]),
        response_headers=dict(doc["response_headers"]),
        http_status=doc["http_status"],
        dns_answers=tuple(doc["dns_answers"]),
        resolved_ip=doc["resolved_ip"],
        tls=doc["tls"],
        page_sha256=doc["page_sha256"],
        page_media_type=doc.get("page_media_type"),
        page_size=doc.get("page_size"),
        page_stored=bool(doc.get("page_stored")),
        media=tuple(dict(m) for m in doc["media"]),
        media_dropped=int(doc.get("media_dropped", 0)),
        attribution=dict(doc["attribution"]),
        redirects=tuple(doc["redirects"]),
        hops=tuple(dict(h) for h in doc.get("hops", ())),
        error=doc.get("error"),
    )


def _normalised(doc: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """``doc`` as it reads back from its canonical JSON, and its SHA-256."""
    raw = canonical_json(doc)
    return json.loads(raw), hashlib.sha256(raw).hexdigest()


def build_bundle(
    s: Survey,
    *,
    attribution: Mapping[str, Any] | None,
    held_media_sha256: frozenset[str] = frozenset(),
    now: datetime | None = None,
) -> tuple[EvidenceBundle, bytes | None]:
    """The bundle for a survey and the page body to seal with it (None: not a page)."""
    when = (now or datetime.now(UTC)).astimezone(UTC)
    hops = [_hop_json(h) for h in s.trace.hops]
    last = hops[-1] if hops else None
    media = []
    for m in s.media:
        entry = dict(m)
        entry["held"] = bool(entry.get("sha256")) and entry.get("sha256") in held_media_sha256
        media.append(entry)
    # attribution as JSON (datetimes and the like as strings) so it reads back equal
    attribution_json = json.loads(json.dumps(dict(attribution or {}), default=str))
    # a page over the page limit is hashed, not kept
    page_body = s.result.content if s.result is not None and s.is_page and not s.error else None
    doc = {
        "version": BUNDLE_VERSION,
        "url": s.url,
        "final_url": s.result.url if s.result is not None else None,
        "captured_at": when.isoformat(),
        "request_headers": last["request_headers"] if last else {},
        "response_headers": last["response_headers"] if last else {},
        "http_status": last["status"] if last else None,
        "dns_answers": hops[0]["addresses"] if hops else [],
        "resolved_ip": last["connected_ip"] if last else None,
        "tls": last["tls"] if last else None,
        "page_sha256": s.page["sha256"] if s.page else None,
        "page_media_type": s.page["media_type"] if s.page else None,
        "page_size": s.page["size"] if s.page else None,
        "page_stored": page_body is not None,
        "media": media,
        "media_dropped": s.media_dropped,
        "attribution": attribution_json,
        "redirects": [h["url"] for h in hops[:-1]],
        "hops": hops,
        "error": str(s.error) if s.error is not None else None,
    }
    body, digest = _normalised(doc)
    return _from_body(body, digest), page_body


# --------------------------------------------------------------------------------------------
# Storage


class _Vault(EncryptedStore):
    """The media store's sealing, content-addressed by SHA-256 (``<ab>/<sha256><suffix>``)."""

    def __init__(self, root: Path, keyring: Keyring, suffix: str) -> None:
        super().__init__(root, keyring)
        self.suffix = suffix

    def _path(self, ref: str) -> Path:
        if not _SHA256_RE.match(ref):
            raise EvidenceError(f"not an evidence id (64 hex digits): {ref[:80]!r}")
        return self.root / ref[:2] / f"{ref}{self.suffix}"

    def refs(self) -> Iterator[str]:
        if not self.root.is_dir():
            return
        for sub in sorted(self.root.iterdir()):
            if sub.is_dir() and len(sub.name) == 2:
                for f in sorted(sub.glob(f"*{self.suffix}")):
                    if _SHA256_RE.match(f.name[: -len(self.suffix)]):
                        yield f.name[: -len(self.suffix)]

    def put_addressed(self, ref: str, data: bytes, created: datetime) -> Path:
        path = self._path(ref)
        if not path.exists():  # content-addressed: the same content twice is a no-op
            self._write(ref, self._seal(ref, data, int(created.timestamp())))
        return path


def save(
    bundle: EvidenceBundle,
    *,
    store_dir: Path,
    keyring: Keyring,
    page_body: bytes | None = None,
) -> Path:
    """Seal ``bundle`` (and its page) under ``store_dir``; storing it twice is a no-op."""
    if hashlib.sha256(bundle.canonical()).hexdigest() != bundle.sha256:
        raise EvidenceError(f"bundle {bundle.sha256[:16]}... does not match its own hash")
    if page_body is not None:
        page_sha = hashlib.sha256(page_body).hexdigest()
        if page_sha != bundle.page_sha256:
            raise EvidenceError("the page body does not match the bundle's page_sha256")
        _Vault(store_dir, keyring, ".page").put_addressed(page_sha, page_body, bundle.captured_at)
    return _Vault(store_dir, keyring, ".evidence").put_addressed(
        bundle.sha256, bundle.canonical(), bundle.captured_at
    )


def rotate_evidence(*, store_dir: Path, keyring: Keyring) -> RotateResult:
    """Re-encrypt every bundle and page under ``store_dir`` to the active key (after
    ``tipline media rotate-key``, before old keys are dropped). Safe to re-run."""
    done = same = 0
    failed: list[tuple[str, str]] = []
    active = ""
    for suffix in (".evidence", ".page"):
        r = rotate(_Vault(store_dir, keyring, suffix))
        active, done, same = r.active_key, done + r.reencrypted, same + r.unchanged
        failed += r.failed
    return RotateResult(active, done, same, failed)


def _open_sealed(vault: _Vault, ref: str, what: str) -> bytes:
    try:
        return vault.get(ref)
    except MediaNotFound:
        raise EvidenceError(f"no {what} {ref} under {vault.root}") from None
    except MediaError as err:
        raise EvidenceError(f"{what} {ref}: {err}") from None


def load(sha256: str, *, store_dir: Path, keyring: Keyring) -> EvidenceBundle:
    """The bundle ``sha256``, decrypted and checked against its id."""
    sha256 = sha256.strip().lower()
    raw = _open_sealed(_Vault(store_dir, keyring, ".evidence"), sha256, "evidence bundle")
    actual = hashlib.sha256(raw).hexdigest()
    if actual != sha256:
        raise EvidenceError(f"evidence bundle {sha256} is tampered: its content hashes to {actual}")
    try:
        doc = json.loads(raw)
        return _from_body(doc, sha256)
    except (ValueError, KeyError, TypeError) as err:
        raise EvidenceError(f"evidence bundle {sha256} is not a bundle: {err}") from None


def load_page(bundle: EvidenceBundle, *, store_dir: Path, keyring: Keyring) -> bytes | None:
    """The page body sealed with ``bundle`` (None when none was kept), checked by its hash."""
    if not bundle.page_stored or bundle.page_sha256 is None:
        return None
    data = _open_sealed(_Vault(store_dir, keyring, ".page"), bundle.page_sha256, "evidence page")
    if hashlib.sha256(data).hexdigest() != bundle.page_sha256:
        raise EvidenceError(f"evidence page {bundle.page_sha256} is tampered")
    return data


def capture(
    url: str,
    *,
    fetch_settings: FetchSettings,
    attribution: dict[str, Any] | None,
    store_dir: Path,
    keyring: Keyring,
    held_media_sha256: frozenset[str] = frozenset(),
    now: datetime | None = None,
    limits: CaptureLimits | None = None,
) -> EvidenceBundle:
    """Capture ``url`` (see the module docstring), seal it under ``store_dir``, return it.

    Raises only :class:`EvidenceError` / :class:`~tipline.store.media.MediaError` for storage
    problems (no key); what the network did is in the bundle."""
    s = survey(url, fetch_settings, limits)
    bundle, page_body = build_bundle(
        s, attribution=attribution, held_media_sha256=held_media_sha256, now=now
    )
    save(bundle, store_dir=store_dir, keyring=keyring, page_body=page_body)
    return bundle


# --------------------------------------------------------------------------------------------
# WARC export


def _status_line(status: int) -> str:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    return f"{status} {phrase}"


def _request_line(url: str) -> str:
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return f"GET {target} HTTP/1.1"


#: Headers that described the bytes on the wire, not the (decoded) body a WARC record holds.
_WIRE_HEADERS = frozenset({"content-encoding", "transfer-encoding", "content-length"})


def _response_headers(headers: Mapping[str, str], body_length: int) -> list[tuple[str, str]]:
    out = []
    for k, v in headers.items():
        if k.lower() in _WIRE_HEADERS:
            out.append((f"X-Archive-Orig-{k}", v))
        else:
            out.append((k, v))
    out.append(("Content-Length", str(body_length)))
    return out


def export_warc(
    bundles: Iterable[EvidenceBundle],
    out: BinaryIO,
    *,
    store_dir: Path | None = None,
    keyring: Keyring | None = None,
    held_media: Callable[[str], bytes | None] | None = None,
    gzip: bool = True,
) -> int:
    """Write ``bundles`` as WARC/1.1 to ``out``; returns the number of records.

    Per bundle: a request and a response record for every hop that got an answer (the
    captured headers; the final page's body when ``store_dir``/``keyring`` are given and it
    was kept); for each media file that answered, a request and a response record (status and
    captured headers, ``WARC-Tipline-Media-SHA256``; the body only for media the case holds,
    when ``held_media(sha256)`` returns bytes of that hash, else empty with ``WARC-Truncated``:
    media bytes are never exported otherwise) and a ``metadata`` record with its hashes; and
    a ``metadata`` record with the bundle's JSON (``WARC-Tipline-Evidence-SHA256`` says its
    id)."""
    from warcio.statusandheaders import StatusAndHeaders  # type: ignore[import-untyped]
    from warcio.warcwriter import WARCWriter  # type: ignore[import-untyped]

    writer = WARCWriter(out, gzip=gzip, warc_version="WARC/1.1")
    n = 0

    def write(record: Any) -> None:
        nonlocal n
        writer.write_record(record)
        n += 1

    info = writer.create_warcinfo_record(
        "tipline-evidence.warc", {"software": "Tipline evidence export", "format": "WARC/1.1"}
    )
    write(info)
    for b in bundles:
        date = b.captured_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        page: bytes | None = None
        if store_dir is not None and keyring is not None:
            page = load_page(b, store_dir=store_dir, keyring=keyring)
        for i, hop in enumerate(b.hops):
            if hop.get("status") is None:
                continue
            base = {"WARC-Date": date, "WARC-Tipline-Evidence-SHA256": b.sha256}
            if hop.get("connected_ip"):
                base["WARC-IP-Address"] = str(hop["connected_ip"])
            req = writer.create_warc_record(
                hop["url"],
                "request",
                payload=io.BytesIO(b""),
                http_headers=StatusAndHeaders(
                    _request_line(hop["url"]),
                    list(hop["request_headers"].items()),
                    is_http_request=True,
                ),
                warc_headers_dict=dict(base),
            )
            write(req)
            last = i == len(b.hops) - 1
            body = page if last and page is not None else b""
            headers = dict(base)
            headers["WARC-Concurrent-To"] = req.rec_headers.get_header("WARC-Record-ID")
            if not body and last and b.page_size:
                headers["WARC-Truncated"] = "unspecified"  # body kept out of the export
            write(
                writer.create_warc_record(
                    hop["url"],
                    "response",
                    payload=io.BytesIO(body),
                    http_headers=StatusAndHeaders(
                        _status_line(int(hop["status"])),
                        _response_headers(hop["response_headers"], len(body)),
                        protocol="HTTP/1.1",
                    ),
                    warc_headers_dict=headers,
                )
            )
        for m in b.media:
            data = held_media(m["sha256"]) if held_media and m.get("held") else None
            if data is not None and hashlib.sha256(data).hexdigest() != m.get("sha256"):
                data = None  # not the bytes the evidence names: never exported as them
            if m.get("status") is not None and m.get("url"):
                media_base = {"WARC-Date": date, "WARC-Tipline-Evidence-SHA256": b.sha256}
                if m.get("connected_ip"):
                    media_base["WARC-IP-Address"] = str(m["connected_ip"])
                if m.get("sha256"):
                    media_base["WARC-Tipline-Media-SHA256"] = str(m["sha256"])
                media_req = writer.create_warc_record(
                    m["url"],
                    "request",
                    payload=io.BytesIO(b""),
                    http_headers=StatusAndHeaders(
                        _request_line(m["url"]), [], is_http_request=True
                    ),
                    warc_headers_dict=dict(media_base),
                )
                write(media_req)
                body = data if data is not None else b""
                resp_headers = dict(media_base)
                resp_headers["WARC-Concurrent-To"] = media_req.rec_headers.get_header(
                    "WARC-Record-ID"
                )
                if data is None and m.get("size"):
                    # the media bytes are never exported (only what the case holds)
                    resp_headers["WARC-Truncated"] = "unspecified"
                write(
                    writer.create_warc_record(
                        m["url"],
                        "response",
                        payload=io.BytesIO(body),
                        http_headers=StatusAndHeaders(
                            _status_line(int(m["status"])),
                            _response_headers(m.get("response_headers") or {}, len(body)),
                            protocol="HTTP/1.1",
                        ),
                        warc_headers_dict=resp_headers,
                    )
                )
            elif data is not None:
                write(
                    writer.create_warc_record(
                        m["url"],
                        "response",
                        payload=io.BytesIO(data),
                        http_headers=StatusAndHeaders(
                            _status_line(200),
                            _response_headers(m.get("response_headers") or {}, len(data)),
                            protocol="HTTP/1.1",
                        ),
                        warc_headers_dict={"WARC-Date": date},
                    )
                )
            hashes = {k: v for k, v in m.items() if k != "response_headers"}
            hashes["response_headers"] = m.get("response_headers") or {}
            write(
                writer.create_warc_record(
                    m["url"],
                    "metadata",
                    payload=io.BytesIO(canonical_json(hashes)),
                    warc_content_type="application/json",
                    warc_headers_dict={
                        "WARC-Date": date,
                        "WARC-Tipline-Evidence-SHA256": b.sha256,
                    },
                )
            )
        write(
            writer.create_warc_record(
                f"urn:tipline:evidence:{b.sha256}",
                "metadata",
                payload=io.BytesIO(json.dumps(b.to_json(), sort_keys=True).encode("utf-8")),
                warc_content_type="application/json",
                warc_headers_dict={
                    "WARC-Date": date,
                    "WARC-Tipline-Evidence-SHA256": b.sha256,
                    "WARC-Refers-To-Target-URI": b.url,
                },
            )
        )
    return n
