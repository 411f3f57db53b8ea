"""Read zip and tar archives as streams: members are hashed in memory, never written to disk.

Every limit is checked against what is actually read, not what headers claim: a member whose
header lies about its size is cut off at the cap, and decompression is abandoned as soon as the
output outgrows the compressed input by more than the allowed ratio.
"""

from __future__ import annotations

import io
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, BinaryIO

from tipline.config import Limits
from tipline.errors import ArchiveLimitError, CorruptArchiveError, ItemError
from tipline.media.sniff import SNIFF_BYTES, MediaType, sniff

CHUNK = 1024 * 1024


@dataclass(slots=True)
class Budget:
    """Uncompressed bytes still allowed for one top-level archive and everything inside it."""

    remaining: int


@dataclass(slots=True)
class Member:
    name: str
    data: bytes | None
    error: ItemError | None = None


def is_archive(mt: MediaType) -> bool:
    return mt.kind in ("archive", "compressed")


def iter_members(
    stream: BinaryIO,
    mt: MediaType,
    compressed_size: int,
    limits: Limits,
    budget: Budget,
    on_limit: Callable[[ItemError], None],
) -> Iterator[Member]:
    """Members of a zip or (possibly compressed) tar. Archive-level problems go to ``on_limit``."""
    if mt.mime == "application/zip":
        yield from _zip_members(stream, limits, budget, on_limit)
    else:
        yield from _tar_members(stream, compressed_size, limits, budget, on_limit)


def _read_capped(
    src: IO[bytes], name: str, compressed: int, limits: Limits, budget: Budget
) -> bytes:
    cap = min(limits.max_member_bytes, budget.remaining)
    ratio_cap = compressed * limits.max_compression_ratio if compressed > 0 else None
    buf = bytearray()
    while True:
        chunk = src.read(CHUNK)
        if not chunk:
            break
        buf += chunk
        if len(buf) > cap:
            budget.remaining -= len(buf)
            if cap == limits.max_member_bytes:
                raise ArchiveLimitError(
                    f"member larger than --max-member-bytes {limits.max_member_bytes:,}; "
                    "not scanned"
                )
            raise ArchiveLimitError(
                f"archive exceeds --max-archive-bytes {limits.max_archive_bytes:,} uncompressed; "
                "not scanned (zip bomb?)"
            )
        if ratio_cap is not None and len(buf) > ratio_cap and len(buf) > CHUNK:
            budget.remaining -= len(buf)
            raise ArchiveLimitError(
                f"compression ratio over {limits.max_compression_ratio:g}:1 "
                f"({compressed:,} bytes expand past {len(buf):,}); not scanned (zip bomb?)"
            )
    budget.remaining -= len(buf)
    return bytes(buf)


def _zip_members(
    stream: BinaryIO, limits: Limits, budget: Budget, on_limit: Callable[[ItemError], None]
) -> Iterator[Member]:
    try:
        zf = zipfile.ZipFile(stream)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise CorruptArchiveError(f"not a readable zip: {err}") from None
    with zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        if len(infos) > limits.max_archive_members:
            on_limit(
                ArchiveLimitError(
                    f"{len(infos):,} members exceed --max-archive-members "
                    f"{limits.max_archive_members:,}; only the first "
                    f"{limits.max_archive_members:,} were scanned"
                )
            )
            infos = infos[: limits.max_archive_members]
        for info in infos:
            if budget.remaining <= 0:
                on_limit(
                    ArchiveLimitError(
                        f"--max-archive-bytes {limits.max_archive_bytes:,} reached; "
                        "remaining members not scanned"
                    )
                )
                return
            if info.flag_bits & 0x1:
                yield Member(
                    info.filename, None, ArchiveLimitError("encrypted member; not scanned")
                )
                continue
            if info.file_size > limits.max_member_bytes:
                yield Member(
                    info.filename,
                    None,
                    ArchiveLimitError(
                        f"member declares {info.file_size:,} bytes, over --max-member-bytes "
                        f"{limits.max_member_bytes:,}; not scanned"
                    ),
                )
                continue
            try:
                with zf.open(info) as src:
                    data = _read_capped(src, info.filename, info.compress_size, limits, budget)
            except ItemError as err:
                yield Member(info.filename, None, err)
                continue
            except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as err:
                yield Member(info.filename, None, CorruptArchiveError(f"cannot read member: {err}"))
                continue
            except Exception as err:  # zlib.error and friends
                yield Member(info.filename, None, CorruptArchiveError(f"cannot read member: {err}"))
                continue
            yield Member(info.filename, data)


class _CountingReader(io.RawIOBase):
    """Counts compressed bytes consumed so tar streams can enforce the ratio limit."""

    def __init__(self, inner: BinaryIO) -> None:
        self.inner = inner
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.inner.read(len(b))
        n = len(data)
        b[:n] = data
        self.count += n
        return n


def _tar_members(
    stream: BinaryIO,
    compressed_size: int,
    limits: Limits,
    budget: Budget,
    on_limit: Callable[[ItemError], None],
) -> Iterator[Member]:
    counter = _CountingReader(stream)
    reader = io.BufferedReader(counter, CHUNK)
    try:
        tf = tarfile.open(fileobj=reader, mode="r|*")  # noqa: SIM115 - iterated below
    except (tarfile.TarError, OSError, EOFError) as err:
        raise CorruptArchiveError(f"not a readable tar: {err}") from None
    count = 0
    total_out = 0
    try:
        for info in tf:
            if not info.isfile():
                continue
            count += 1
            if count > limits.max_archive_members:
                on_limit(
                    ArchiveLimitError(
                        f"more than --max-archive-members {limits.max_archive_members:,} "
                        "members; the rest were not scanned"
                    )
                )
                return
            if budget.remaining <= 0:
                on_limit(
                    ArchiveLimitError(
                        f"--max-archive-bytes {limits.max_archive_bytes:,} reached; "
                        "remaining members not scanned"
                    )
                )
                return
            if info.size > limits.max_member_bytes:
                yield Member(
                    info.name,
                    None,
                    ArchiveLimitError(
                        f"member of {info.size:,} bytes over --max-member-bytes "
                        f"{limits.max_member_bytes:,}; not scanned"
                    ),
                )
                continue
            src = tf.extractfile(info)
            if src is None:
                continue
            try:
                data = _read_capped(src, info.name, 0, limits, budget)
            except ItemError as err:
                yield Member(info.name, None, err)
                continue
            total_out += len(data)
            consumed = max(counter.count, 1)
            if total_out > CHUNK and total_out / consumed > limits.max_compression_ratio:
                on_limit(
                    ArchiveLimitError(
                        f"compression ratio over {limits.max_compression_ratio:g}:1; "
                        "stopped reading (bomb?)"
                    )
                )
                return
            yield Member(info.name, data)
    except (tarfile.TarError, OSError, EOFError) as err:
        on_limit(CorruptArchiveError(f"archive is truncated or corrupt: {err}"))
    except Exception as err:  # zlib/lzma/bz2 errors surface as various types
        on_limit(CorruptArchiveError(f"archive is truncated or corrupt: {err}"))


def sniff_bytes(data: bytes) -> MediaType:
    return sniff(data[:SNIFF_BYTES])


@dataclass(slots=True)
class Expanded:
    """What :func:`expand` found: the leaf members (not archives) with their paths inside
    the archive (``inner/a.jpg``, nested as ``inner.zip!b.jpg``), and every problem met."""

    members: list[tuple[str, bytes]]
    errors: list[str]


def expand(data: bytes, limits: Limits) -> Expanded:
    """Every non-archive member of an in-memory zip or tar, nested archives opened up to
    ``limits.max_archive_depth`` with one shared byte budget (the service's uploads; ``tipline
    scan`` streams instead). A nested archive past the depth limit is kept as a member."""
    out = Expanded([], [])
    budget = Budget(limits.max_archive_bytes)

    def walk(blob: bytes, prefix: str, depth: int) -> None:
        mt = sniff_bytes(blob)
        seen: set[str] = set()
        try:
            for m in iter_members(
                io.BytesIO(blob),
                mt,
                len(blob),
                limits,
                budget,
                lambda e: out.errors.append(f"{prefix or 'archive'}: {e}"),
            ):
                name = "".join(ch if ch.isprintable() else "?" for ch in m.name) or "?"
                while name in seen:
                    name += "_"
                seen.add(name)
                path = f"{prefix}!{name}" if prefix else name
                if m.error is not None:
                    out.errors.append(f"{path}: {m.error}")
                    continue
                member = m.data or b""
                if not member:
                    continue
                if is_archive(sniff_bytes(member)) and depth < limits.max_archive_depth:
                    walk(member, path, depth + 1)
                else:
                    out.members.append((path, member))
        except ItemError as err:
            out.errors.append(f"{prefix or 'archive'}: {err}")

    walk(data, "", 1)
    return out
