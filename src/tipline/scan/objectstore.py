"""Object-storage inputs for ``tipline scan``: ``s3://``, ``gs://`` and ``az://`` URIs.

A URI names one object or a prefix (``s3://bucket/reports/2026``: every object under
``reports/2026/``). The driver lists it into a manifest of :class:`ObjectEntry` (URI, size,
etag, mtime); S3 listings are read a page (1,000 keys) at a time, so a large prefix is never
held as fsspec's full listing. Each object is then read as a seekable remote file, with the
local scan's own analysis (``scan.items.scan_open_file``): archives are opened in place with
ranged reads, a video goes through a temporary copy bounded by --max-file-bytes, and the same
limits and per-item errors apply. The size checked is the one the store reports when the
object is opened, and S3 reads are pinned to that version's ETag, so an object replaced after
listing gets an error, not a mix of two versions.

Nothing a scanned object names is followed: keys are only ever read, never resolved. fsspec
and s3fs (``pip install 'tipline[objectstore]'``; gcsfs or adlfs for ``gs://`` and ``az://``)
are imported only when a URI is scanned. Credentials and endpoint come from the standard AWS
settings (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``,
``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3``), which botocore honours; see
docs/object-storage.md.
"""

from __future__ import annotations

import importlib.util
import tempfile
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, BinaryIO

from tipline.errors import FileTooLargeError, TiplineError, UnreadableError
from tipline.record import ItemRecord
from tipline.scan.hashing import HashOptions, add_vpdq, digest_stream
from tipline.scan.items import error_record, item_emit, scan_open_file, too_large_record

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

    from tipline.media.sniff import MediaType

#: URI schemes scanned as object storage, and the fsspec package each needs.
SCHEMES = {"s3": "s3fs", "gs": "gcsfs", "az": "adlfs"}
#: Keys asked for per S3 listing request (S3's own maximum).
LIST_PAGE = 1000
#: Bytes fetched per ranged read of an object (archives seek; small images fit in one).
BLOCK_BYTES = 8 * 1024 * 1024
#: Copy size when a video is spooled to its temporary file.
_COPY = 1024 * 1024


#: This process's listings (the driver's): URI -> its manifest line, for ``object_size`` and
#: ``listed_entry`` (bounded: a huge listing keeps the first entries, the rest are asked).
_LISTED: dict[str, ObjectEntry] = {}
_LISTED_MAX = 2_000_000


class ObjectStoreError(TiplineError):
    """A URI could not be listed at all (missing bucket, credentials, package): stops the scan."""


@dataclass(frozen=True, slots=True)
class ObjectEntry:
    """One manifest line: an object to scan."""

    uri: str
    size: int
    etag: str | None = None
    mtime: str | None = None


def is_uri(path: str) -> bool:
    """Whether ``path`` names object storage (``s3://bucket/prefix``...) rather than a file."""
    scheme, sep, _ = path.partition("://")
    return bool(sep) and scheme.lower() in SCHEMES


def split_uri(uri: str) -> tuple[str, str, str]:
    """``s3://bucket/some/key`` -> ``("s3", "bucket", "some/key")``."""
    scheme, _, rest = uri.partition("://")
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise ObjectStoreError(f"{uri}: no bucket named (expected {scheme}://BUCKET/PREFIX)")
    return scheme.lower(), bucket, key


def filesystem(scheme: str) -> AbstractFileSystem:
    """The fsspec filesystem for ``scheme`` (one per process; fsspec rebuilds it after a fork)."""
    package = SCHEMES[scheme]
    if importlib.util.find_spec("fsspec") is None or importlib.util.find_spec(package) is None:
        extra = "" if scheme == "s3" else f" {package}"
        raise ObjectStoreError(
            f"{scheme}:// inputs need fsspec and {package}: pip install 'tipline[objectstore]'"
            f"{extra}"
        )
    import fsspec

    return fsspec.filesystem(scheme)


# ---------------------------------------------------------------- listing (the driver)


def iter_objects(uri: str) -> Iterator[ObjectEntry | ItemRecord]:
    """The manifest of ``uri``: the object it names, else every object under it as a prefix,
    in key order; error records for keys that cannot be read. Raises ObjectStoreError when
    the URI cannot be listed at all (no such bucket, refused credentials, no package)."""
    scheme, bucket, key = split_uri(uri)
    fs = filesystem(scheme)
    found = False
    try:
        if scheme == "s3":
            listing = _s3_objects(fs, bucket, key)
        else:
            listing = _walk_objects(fs, scheme, bucket, key)
        for item in listing:
            found = True
            if isinstance(item, ObjectEntry):
                remember(item)
            yield item
    except ObjectStoreError:
        raise
    except Exception as err:  # botocore, aiohttp and fsspec errors, not all OSError
        raise ObjectStoreError(_listing_problem(uri, err)) from None
    if not found:
        yield error_record(uri, UnreadableError("no such object, and no objects under it"))


def _s3_objects(fs: Any, bucket: str, key: str) -> Iterator[ObjectEntry | ItemRecord]:
    if key and not key.endswith("/"):
        try:
            head = fs.call_s3("head_object", Bucket=bucket, Key=key)
        except FileNotFoundError:
            head = None  # not an object: a prefix (a missing bucket fails the listing below)
        if head is not None:
            yield _entry("s3", bucket, key, head.get("ContentLength", 0), head)
            return
    prefix = key if not key or key.endswith("/") else key + "/"
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": LIST_PAGE}
    while True:
        page = fs.call_s3("list_objects_v2", **kwargs)
        for obj in page.get("Contents", []):
            name = obj["Key"]
            if name.endswith("/"):
                if obj.get("Size", 0):  # fsspec would strip the slash and open another object
                    yield error_record(
                        f"s3://{bucket}/{name}",
                        UnreadableError("object key ends in '/'; not read"),
                    )
                continue  # a zero-byte "folder" marker
            yield _entry("s3", bucket, name, obj.get("Size", 0), obj)
        token = page.get("NextContinuationToken")
        if not page.get("IsTruncated") or not token:
            return
        kwargs["ContinuationToken"] = token


def _walk_objects(
    fs: AbstractFileSystem, scheme: str, bucket: str, key: str
) -> Iterator[ObjectEntry | ItemRecord]:
    """gs:// and az://: fsspec's walk, one listed folder in memory at a time."""
    path = f"{bucket}/{key}".rstrip("/")
    if key and fs.isfile(path):
        yield _entry(scheme, bucket, key, fs.info(path).get("size", 0), fs.info(path))
        return
    for root, _dirs, files in fs.walk(path, detail=True):
        if not isinstance(files, dict):
            continue
        for name in sorted(files):
            info = files[name]
            full = f"{root}/{name}".lstrip("/")
            b, _, k = full.partition("/")
            yield _entry(scheme, b, k, int(info.get("size") or 0), info)


def _entry(scheme: str, bucket: str, key: str, size: Any, info: dict[str, Any]) -> ObjectEntry:
    etag = info.get("ETag") or info.get("etag") or info.get("md5Hash")
    mtime = info.get("LastModified") or info.get("last_modified") or info.get("updated")
    if isinstance(mtime, datetime):
        mtime = mtime.isoformat()
    return ObjectEntry(
        uri=f"{scheme}://{bucket}/{key}",
        size=int(size or 0),
        etag=str(etag).strip('"') if etag else None,
        mtime=str(mtime) if mtime else None,
    )


def _listing_problem(uri: str, err: BaseException) -> str:
    why = _one_line(err)
    if isinstance(err, FileNotFoundError):
        return f"{uri}: no such bucket ({why})"
    if isinstance(err, PermissionError):
        return (
            f"{uri}: access refused ({why}); check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY "
            "/ AWS_PROFILE and the endpoint (AWS_ENDPOINT_URL)"
        )
    return f"{uri}: cannot list ({type(err).__name__}: {why})"


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:300]


# ---------------------------------------------------------------- reading (the workers)


def scan_object(
    uri: str, options: HashOptions, emit: Callable[[ItemRecord], None], skip: Collection[str] = ()
) -> None:
    """``scan_file`` for one object: its record, and its members' if it is an archive.

    Every problem (a missing package, a deleted or replaced object, a read that fails half
    way, a size over the limits) becomes this object's error record; nothing is raised."""
    emit = item_emit(emit, options)
    emitted_own = False

    def emit_noting(record: ItemRecord) -> None:
        nonlocal emitted_own
        emitted_own = emitted_own or record.path == uri
        emit(record)

    try:
        _scan_object(uri, options, emit_noting, skip)
    except Exception as err:  # a remote read has more ways to fail than OSError
        if not emitted_own and uri not in skip:
            emit(error_record(uri, UnreadableError(f"read failed: {_read_problem(err)}")))


def _scan_object(
    uri: str, options: HashOptions, emit: Callable[[ItemRecord], None], skip: Collection[str]
) -> None:
    scheme, bucket, key = split_uri(uri)
    if not key or key.endswith("/"):
        emit(error_record(uri, UnreadableError("names a prefix, not an object; not read")))
        return
    try:
        fs = filesystem(scheme)
        f = fs.open(f"{bucket}/{key}", "rb", block_size=BLOCK_BYTES, cache_type="readahead")
    except ObjectStoreError as err:
        emit(error_record(uri, UnreadableError(str(err))))
        return
    except FileNotFoundError:
        emit(error_record(uri, UnreadableError("no such object (deleted since listing?)")))
        return
    except Exception as err:
        emit(error_record(uri, UnreadableError(f"cannot open: {_read_problem(err)}")))
        return
    with f:
        size = int(f.size)  # what the store says now, not what the listing said
        if size > options.limits.max_file_bytes:
            if uri not in skip:
                emit(too_large_record(uri, size, options.limits.max_file_bytes))
            return
        scan_open_file(f, uri, size, options, emit, skip, hash_video=_video_via_tempfile)


def _read_problem(err: BaseException) -> str:
    if type(err).__name__ == "FileExpired":
        return "the object changed while it was read (ETag no longer matches); scan it again"
    if isinstance(err, PermissionError):
        return f"access refused ({_one_line(err)})"
    return f"{type(err).__name__}: {_one_line(err)}"


def _video_via_tempfile(
    stream: BinaryIO, uri: str, mt: MediaType, options: HashOptions
) -> ItemRecord:
    """A remote video: copied to a temporary file (at most --max-file-bytes, deleted after)
    that FFmpeg decodes from; digests from the same copy."""
    cap = options.limits.max_file_bytes
    record = ItemRecord(path=uri, media_type=mt.mime)
    with tempfile.NamedTemporaryFile(prefix="tipline-video-", suffix=".bin") as tmp:
        copied = 0
        while chunk := stream.read(_COPY):
            copied += len(chunk)
            if copied > cap:
                record.errors.append(
                    str(FileTooLargeError(f"more than --max-file-bytes {cap:,} read; not read"))
                )
                return record
            tmp.write(chunk)
        tmp.flush()
        tmp.seek(0)
        digest_stream(tmp, record, cap)  # type: ignore[arg-type]
        add_vpdq(record, tmp.name, mt, options)
    return record


def split_listing(uri: str) -> tuple[list[ObjectEntry | ItemRecord], list[str]] | None:
    """For a Ray scan that lists big prefixes as tasks: the objects directly under an
    ``s3://`` prefix and the URIs of its sub-prefixes (one ``Delimiter="/"`` listing, paged),
    each to be listed on its own with :func:`iter_objects`. None where splitting does not
    apply (not S3, a single object, no sub-prefixes): list it whole."""
    scheme, bucket, key = split_uri(uri)
    if scheme != "s3":
        return None
    fs = filesystem(scheme)
    try:
        if key and not key.endswith("/"):
            try:
                fs.call_s3("head_object", Bucket=bucket, Key=key)
                return None  # one object
            except FileNotFoundError:
                pass
        prefix = key if not key or key.endswith("/") else key + "/"
        kwargs: dict[str, Any] = {
            "Bucket": bucket,
            "Prefix": prefix,
            "Delimiter": "/",
            "MaxKeys": LIST_PAGE,
        }
        direct: list[ObjectEntry | ItemRecord] = []
        subs: list[str] = []
        while True:
            page = fs.call_s3("list_objects_v2", **kwargs)
            for obj in page.get("Contents", []):
                name = obj["Key"]
                if name.endswith("/"):
                    if obj.get("Size", 0):
                        direct.append(
                            error_record(
                                f"s3://{bucket}/{name}",
                                UnreadableError("object key ends in '/'; not read"),
                            )
                        )
                    continue
                entry = _entry("s3", bucket, name, obj.get("Size", 0), obj)
                remember(entry)
                direct.append(entry)
            subs.extend(f"s3://{bucket}/{p['Prefix']}" for p in page.get("CommonPrefixes", []))
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                break
            kwargs["ContinuationToken"] = token
    except ObjectStoreError:
        raise
    except Exception as err:  # botocore, aiohttp and fsspec errors, not all OSError
        raise ObjectStoreError(_listing_problem(uri, err)) from None
    if not subs:
        return None
    return direct, subs


def remember(entry: ObjectEntry) -> None:
    """Keep a manifest line listed elsewhere (a listing task) for ``object_size`` and
    ``listed_entry`` in this process."""
    if len(_LISTED) < _LISTED_MAX:
        _LISTED[entry.uri] = entry


def listed_entry(uri: str) -> ObjectEntry | None:
    """The manifest line this process's listing gave ``uri`` (size, ETag, mtime), if any."""
    return _LISTED.get(uri)


def object_size(uri: str) -> int:
    """The size of one object, for balancing work units (``ray_runner.plan_units``): the
    listing's, without a request, for an object this process listed; else asked (0 if that
    fails)."""
    listed = _LISTED.get(uri)
    if listed is not None:
        return listed.size
    try:
        scheme, bucket, key = split_uri(uri)
        return int(filesystem(scheme).info(f"{bucket}/{key}").get("size") or 0)
    except Exception:
        return 0


__all__ = [
    "SCHEMES",
    "ObjectEntry",
    "ObjectStoreError",
    "is_uri",
    "iter_objects",
    "listed_entry",
    "object_size",
    "remember",
    "scan_object",
    "split_listing",
    "split_uri",
]
