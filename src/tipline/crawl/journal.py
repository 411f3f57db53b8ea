"""A crawl runner's local results journal: what each completed fetch gave, written the moment
it is known, so a runner killed with ``kill -9`` loses no completed fetch.

The runner commits the pages that finished since its last commit in one transaction (a batch:
the throughput of a crawl depends on it). A page is in flight from its claim to that commit;
its own fetch, the fetch of each of its media files and its evidence capture each complete
somewhere in between. Each one appends a line here **right after it completes** (before the
next fetch of that page starts):

- ``page``: the page's fetch: status, media type, size, error, the links it holds (canonical
  URL, kind, via), its notes (keyword hits, TLSH, model-page matches), matched/flagged;
- ``media``: one media file of a page: its URL, hashes, match result and flags (the row the
  page's commit inserts). A media file whose bytes are kept (matched or flagged, with a report)
  is committed to the database at once instead (its bytes never go into the journal) and its
  line says so;
- ``evidence``: the sealed capture's id.

Never media bytes, never page HTML (the links and the findings only). A runner that takes the
crawl over on this host reads the journals of the crawl's earlier runners before it fetches
anything: a page claimed but not committed that has a ``page`` line is not fetched again; its
media files with a line are not fetched again; only what was still being transferred (or
parsed and hashed: those bytes were never kept) at the kill is fetched a second time.

Lines are JSON, copied into a segment file mapped into memory (``mmap``, ``MAP_SHARED``) that
was allocated in full when it was opened (``posix_fallocate``: a full disk is told then, never
by a ``SIGBUS`` at a write). A line copied into the mapping is in the kernel's page cache at
once, so a ``kill -9`` loses nothing copied (as with ``write`` to an ``O_APPEND`` file, and
neither survives a power cut), and appending a line is a memory copy: no system call, and the
worker thread never releases the GIL for it (a ``write`` each did, and waited to get it back).
The unused end of a segment is zero bytes; a torn last line is skipped when read. Where a
segment cannot be allocated or mapped, lines are appended by one ``write`` each to an
``O_APPEND`` file, as before. A file holds the lines of one runner; a new segment is started
once the next line does not fit in ``SEGMENT_BYTES``, and a segment none of whose pages is
still uncommitted is deleted, so the journal holds about the pages in flight, not the crawl.
Directory ``0700``, files ``0600``.

This is a local file: a runner taking a crawl over on another host has no journal and fetches
the pages the dead runner had in flight again (as without one).
"""

from __future__ import annotations

import contextlib
import json
import logging
import mmap
import os
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("tipline.crawl")

#: a segment's size: a new one is started when the next line does not fit (a longer line gets
#: a segment of its own size)
SEGMENT_BYTES = 4 * 1024 * 1024
#: a line longer than this is not read back (a page's links are capped far below)
MAX_LINE = 8 * 1024 * 1024
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")
#: compact JSON, one encoder for every line (values it cannot encode written as text)
_ENCODE = json.JSONEncoder(separators=(",", ":"), default=str, check_circular=False).encode


def crawl_dir(root: Path, crawl_id: int) -> Path:
    return root / f"crawl-{int(crawl_id)}"


@dataclass(slots=True)
class Entry:
    """What the journals say of one page: its ``page`` line, its media lines (by URL key),
    its evidence line."""

    page: dict[str, Any]
    media: dict[str, dict[str, Any]] = field(default_factory=dict)
    evidence: dict[str, Any] | None = None


def load(root: Path, crawl_id: int) -> dict[int, Entry]:
    """Every page with a ``page`` line in the crawl's journals (oldest file first, a later
    line replacing an earlier one of the same page; media lines merged by URL key). Malformed
    lines are skipped."""
    d = crawl_dir(root, crawl_id)
    if not d.is_dir():
        return {}
    files = []
    for p in d.glob("*.jsonl"):
        try:
            files.append((p.stat().st_mtime_ns, p.name, p))
        except OSError:
            continue
    pages: dict[int, dict[str, Any]] = {}
    media: dict[int, dict[str, dict[str, Any]]] = {}
    evidence: dict[int, dict[str, Any]] = {}
    for _mtime, _name, path in sorted(files):
        try:
            fh = path.open("rb")
        except OSError:
            continue
        with fh:
            try:
                # a mapped segment's unused end is zero bytes; the part after the last
                # newline is a torn line (killed mid-copy) or nothing
                lines = fh.read().rstrip(b"\0").split(b"\n")[:-1]
            except OSError:
                continue
            for raw in lines:
                if len(raw) > MAX_LINE or not raw:
                    continue  # an absurd line
                try:
                    ev = json.loads(raw)
                except ValueError:
                    continue
                if not isinstance(ev, dict) or ev.get("crawl") != crawl_id:
                    continue
                pid = ev.get("id")
                if not isinstance(pid, int) or isinstance(pid, bool):
                    continue
                kind = ev.get("e")
                if kind == "page":
                    pages[pid] = ev
                elif kind == "media" and isinstance(ev.get("m"), dict):
                    key = ev["m"].get("url_key")
                    if isinstance(key, str):
                        media.setdefault(pid, {})[key] = ev["m"]
                elif kind == "evidence":
                    evidence[pid] = ev
    return {pid: Entry(page, media.get(pid, {}), evidence.get(pid)) for pid, page in pages.items()}


class Journal:
    """One runner's journal of crawl ``crawl_id`` under ``root`` (thread-safe)."""

    def __init__(self, root: Path, crawl_id: int, runner_id: str) -> None:
        self.crawl_id = int(crawl_id)
        self.dir = crawl_dir(root, crawl_id)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.dir, 0o700)
        self.prefix = _SAFE.sub("_", runner_id)[:100]
        self.lock = threading.Lock()
        self.segment = -1
        self.size = 0
        #: the current segment's mapping and its length (None: appended by ``write``)
        self.map: mmap.mmap | None = None
        self.capacity = 0
        #: segment -> pages with a line in it that are not committed yet
        self.pending: dict[int, set[int]] = {}
        #: page -> segments holding a line of it
        self.page_segments: dict[int, set[int]] = {}
        #: the crawl's id as the end of every line (each event is a JSON object)
        self.tail = b',"crawl":%d}\n' % self.crawl_id
        self.fd = -1
        self._open(SEGMENT_BYTES)

    def _path(self, segment: int) -> Path:
        return self.dir / f"{self.prefix}-{segment:06d}.jsonl"

    def _open(self, need: int) -> None:
        """Start the next segment (a name not taken: never over an earlier file's lines),
        mapped with room for ``need`` bytes at least; else appended to by ``write``."""
        segment = self.segment + 1
        while self._path(segment).exists():
            segment += 1
        self.segment, self.size = segment, 0
        self.pending[segment] = set()
        path = self._path(segment)
        cloexec = getattr(os, "O_CLOEXEC", 0)
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | cloexec, 0o600)
        capacity = max(SEGMENT_BYTES, need)
        try:
            os.posix_fallocate(self.fd, 0, capacity)  # a full disk raises here, not SIGBUS
            self.map = mmap.mmap(self.fd, capacity)  # MAP_SHARED, read and write
            self.capacity = capacity
        except (OSError, ValueError, AttributeError) as err:
            log.debug("crawl %s: journal segment not mapped (%s)", self.crawl_id, err)
            self.map, self.capacity = None, 0
            os.close(self.fd)
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | cloexec
            self.fd = os.open(path, flags, 0o600)

    def _close_segment(self) -> None:
        if self.map is not None:
            self.map.close()
            self.map = None
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, self.size)  # its zero-byte end is not needed
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def write(self, event: dict[str, Any]) -> None:
        """Append one line (``event`` gets the crawl's id); raises nothing: a journal that
        cannot be written costs only the refetch it would have saved."""
        page = int(event["id"])
        if "crawl" in event:  # a line read back (a resumed page's): the id is added below
            event = {k: v for k, v in event.items() if k != "crawl"}
        body = _ENCODE(event).encode()
        line = body[:-1] + self.tail if len(body) > 2 else body[:-1] + self.tail[1:]
        n = len(line)
        with self.lock:
            if self.fd < 0:
                return
            try:
                if self.map is not None and self.size + n > self.capacity:
                    self._rotate(n)
                if self.map is not None:
                    self.map[self.size : self.size + n] = line
                else:
                    os.write(self.fd, line)
            except (OSError, ValueError) as err:
                log.warning("crawl %s: the results journal is not written: %s", self.crawl_id, err)
                return
            self.size += n
            self.pending[self.segment].add(page)
            self.page_segments.setdefault(page, set()).add(self.segment)
            if self.map is None and self.size >= SEGMENT_BYTES:
                self._rotate(0)

    def _rotate(self, need: int) -> None:
        old = self.segment
        self._close_segment()
        self._open(need)
        self._drop_if_done(old)

    def _drop_if_done(self, segment: int) -> None:
        if segment != self.segment and not self.pending.get(segment):
            self.pending.pop(segment, None)
            self._path(segment).unlink(missing_ok=True)

    def committed(self, pages: Iterable[int]) -> None:
        """These pages are in the database now: their lines are no longer needed."""
        with self.lock:
            touched: set[int] = set()
            for page in pages:
                for seg in self.page_segments.pop(page, ()):
                    self.pending.get(seg, set()).discard(page)
                    touched.add(seg)
            for seg in touched:
                self._drop_if_done(seg)

    def remove_others(self) -> None:
        """Delete the crawl's other journals (earlier runners'; read and re-written here)."""
        own = f"{self.prefix}-"
        for p in self.dir.glob("*.jsonl"):
            if not p.name.startswith(own):
                p.unlink(missing_ok=True)

    def close(self, remove: bool = True) -> None:
        """Stop writing; ``remove``: delete this runner's segments (every page committed)."""
        with self.lock:
            self._close_segment()
            if remove:
                for seg in list(self.pending):
                    self._path(seg).unlink(missing_ok=True)
                self.pending.clear()
                self.page_segments.clear()
        if remove:
            with contextlib.suppress(OSError):
                self.dir.rmdir()  # only when empty
