"""Turn one input path into records: the file itself, and archive members when it is one."""

from __future__ import annotations

import errno
import io
import os
import stat
from collections.abc import Callable, Collection
from typing import BinaryIO

from tipline.errors import (
    ArchiveLimitError,
    CorruptArchiveError,
    EmptyFileError,
    FileTooLargeError,
    ItemError,
    NotRegularFileError,
    SymlinkLoopError,
    UnreadableError,
)
from tipline.media.sniff import PYTORCH, SNIFF_BYTES, ZIP, MediaType, sniff
from tipline.record import ItemRecord
from tipline.scan.archives import Budget, is_archive, iter_members
from tipline.scan.hashing import (
    HashOptions,
    add_name_warning,
    digest_stream,
    hash_bytes,
    hash_video_file,
)

Emit = Callable[[ItemRecord], None]


def error_record(path: str, err: BaseException, container: str | None = None) -> ItemRecord:
    return ItemRecord(path=path, errors=[str(err)], container=container)


def scan_file(path: str, options: HashOptions, emit: Emit, skip: Collection[str] = ()) -> None:
    """Hash ``path`` (and its members, if it is an archive), emitting one record per item.

    Records whose path is in ``skip`` (already written by an earlier, interrupted run) are not
    emitted again.
    """
    limits = options.limits
    emit = item_emit(emit, options)
    try:
        st = os.stat(path)
    except OSError as err:
        if err.errno == errno.ELOOP:
            emit(error_record(path, SymlinkLoopError("symbolic link loop; not followed")))
        elif err.errno == errno.ENOENT:
            emit(error_record(path, UnreadableError("no such file (or a dangling link)")))
        else:
            emit(error_record(path, UnreadableError(err.strerror or str(err))))
        return
    if not stat.S_ISREG(st.st_mode):
        if path not in skip:
            emit(error_record(path, NotRegularFileError("not a regular file; not read")))
        return
    if st.st_size > limits.max_file_bytes:
        if path not in skip:
            emit(too_large_record(path, st.st_size, limits.max_file_bytes))
        return
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below; several return paths
    except OSError as err:
        if path not in skip:
            emit(error_record(path, UnreadableError(err.strerror or str(err))))
        return
    with f:
        scan_open_file(f, path, st.st_size, options, emit, skip)


def item_emit(emit: Emit, options: HashOptions) -> Emit:
    """``emit`` with the checks every record of a scan gets (keywords, name vs content)."""
    if options.keywords is not None:
        from tipline.scan.keywords import keyword_emit

        emit = keyword_emit(emit, options.keywords, options.include_text)
    return _checking_names(emit)


def too_large_record(path: str, size: int, max_file_bytes: int) -> ItemRecord:
    message = f"{size:,} bytes exceeds --max-file-bytes {max_file_bytes:,}; not read"
    return ItemRecord(path=path, size=size, errors=[str(FileTooLargeError(message))])


def scan_open_file(
    f: BinaryIO,
    path: str,
    size: int,
    options: HashOptions,
    emit: Emit,
    skip: Collection[str] = (),
    hash_video: Callable[[BinaryIO, str, MediaType, HashOptions], ItemRecord] = hash_video_file,
) -> None:
    """The records of one opened, seekable file of ``size`` bytes (at most --max-file-bytes):
    ``scan_file`` after its checks, and object-storage inputs (``scan.objectstore``), whose
    videos ``hash_video`` decodes from a bounded temporary copy. ``emit`` is an ``item_emit``."""
    limits = options.limits
    try:
        head = f.read(SNIFF_BYTES)
    except OSError as err:
        if path not in skip:
            emit(error_record(path, UnreadableError(err.strerror or str(err))))
        return
    mt = sniff(head)
    if size == 0:
        if path not in skip:
            rec = hash_bytes(b"", path, options, mt)
            rec.errors = [str(EmptyFileError("zero-byte file; nothing to scan"))]
            emit(rec)
        return
    if is_archive(mt):
        f.seek(0)
        _scan_archive(f, path, size, options, emit, skip, depth=1, container=path)
        return
    if mt.kind == "model":  # streamed hashes + header findings (tipline.scan.model_files)
        from tipline.scan.model_files import is_plain_model, model_record

        try:
            if not is_plain_model(f, size, mt):
                _scan_archive(f, path, size, options, emit, skip, 1, container=path)
            elif path not in skip:
                emit(model_record(f, path, size, mt, options))
        except OSError as err:
            emit(error_record(path, UnreadableError(f"read failed: {err.strerror or err}")))
        return
    if path in skip:
        return
    try:
        if mt.is_image and size <= limits.max_image_bytes:
            # read(n) fills one new bytes object straight from the file: `head + f.read()`
            # made two more 12 MP-sized copies (~3.5 ms of page faults per file, measured)
            f.seek(0)
            data = f.read(size + 1)
            if len(data) > size:  # grown since stat: all of it, as before
                data += f.read()
            emit(hash_bytes(data, path, options, mt))
        else:
            f.seek(0)
            # Not decoded: stream the digests without holding the file in memory. Tiny
            # files still go through hash_bytes for the extension check.
            if size <= SNIFF_BYTES:
                emit(hash_bytes(head, path, options, mt))
                return
            if mt.kind == "video":
                emit(hash_video(f, path, mt, options))
                return
            rec = ItemRecord(path=path, media_type=mt.mime)
            digest_stream(f, rec, limits.max_file_bytes)
            if mt.is_image:
                rec.errors.append(
                    f"file_too_large: image of {size:,} bytes exceeds "
                    f"--max-image-bytes {limits.max_image_bytes:,}; only cryptographic "
                    "hashes computed"
                )
            emit(rec)
    except OSError as err:
        emit(error_record(path, UnreadableError(f"read failed: {err.strerror or err}")))


def _scan_archive(
    stream: BinaryIO,
    path: str,
    size: int,
    options: HashOptions,
    emit: Emit,
    skip: Collection[str],
    depth: int,
    container: str,
    budget: Budget | None = None,
) -> None:
    """Emit the archive's own record (digests, archive-level errors) and its members'."""
    limits = options.limits
    budget = budget or Budget(limits.max_archive_bytes)
    mt = sniff(stream.read(SNIFF_BYTES))
    if mt.mime == PYTORCH.mime:  # a zip that is more than a PyTorch model (scan.model_files)
        mt = ZIP
    stream.seek(0)
    own = ItemRecord(path=path, media_type=mt.mime, container=None if depth == 1 else container)
    digest_stream(stream, own, limits.max_file_bytes)
    stream.seek(0)
    if depth > limits.max_archive_depth:
        own.errors.append(
            str(
                ArchiveLimitError(
                    f"archive nested {depth} deep exceeds --max-archive-depth "
                    f"{limits.max_archive_depth}; not opened"
                )
            )
        )
        if path not in skip:
            emit(own)
        return
    seen: dict[str, int] = {}
    try:
        for member in iter_members(
            stream, mt, size, limits, budget, lambda e: own.errors.append(str(e))
        ):
            name = _unique(member.name, seen)
            child = f"{path}!{name}"
            if member.error is not None:
                if child not in skip:
                    emit(error_record(child, member.error, container))
                continue
            data = member.data or b""
            cmt = sniff(data[:SNIFF_BYTES])
            if cmt.kind == "model":
                from tipline.scan.model_files import emit_model_member

                if emit_model_member(data, child, cmt, options, emit, skip, container):
                    continue
            if is_archive(cmt) or cmt.mime == PYTORCH.mime:
                _scan_archive(
                    io.BytesIO(data),
                    child,
                    len(data),
                    options,
                    emit,
                    skip,
                    depth + 1,
                    container,
                    budget,
                )
                continue
            if child in skip:
                continue
            rec = hash_bytes(data, child, options, cmt)
            rec.container = container
            if not data:
                rec.errors.append(str(EmptyFileError("zero-byte member; nothing to scan")))
            emit(rec)
    except CorruptArchiveError as err:
        if mt.kind == "compressed" and depth >= 1 and "not a readable tar" in str(err):
            pass  # a plain .gz/.bz2/.xz file: hashed as a file, nothing to open
        else:
            own.errors.append(str(err))
    except ItemError as err:
        own.errors.append(str(err))
    if path not in skip:
        emit(own)


def _checking_names(emit: Emit) -> Emit:
    """Every record leaves with its name checked against its content (streamed files, videos,
    models and archive members too, not only those hashed in memory)."""

    def checked(record: ItemRecord) -> None:
        add_name_warning(record)
        emit(record)

    return checked


def _unique(name: str, seen: dict[str, int]) -> str:
    """Archives may hold the same name twice; keep record paths unique for --resume."""
    clean = "".join(ch if ch.isprintable() else "?" for ch in name) or "?"
    n = seen.get(clean, 0) + 1
    seen[clean] = n
    return clean if n == 1 else f"{clean}[{n}]"
