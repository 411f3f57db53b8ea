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

Lines are JSON, appended by one ``write`` each to a file opened ``O_APPEND`` (a ``kill -9``
loses nothing the kernel accepted; a torn last line is skipped when read). A file holds the
lines of one runner; it is started afresh (a new segment) once over ``SEGMENT_BYTES``, and a
segment none of whose pages is still uncommitted is deleted, so the journal holds about the
pages in flight, not the crawl. Directory ``0700``, files ``0600``.

This is a local file: a runner taking a crawl over on another host has no journal and fetches
the pages the dead runner had in flight again (as without one).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("tipline.crawl")

#: a segment is closed (and a new one started) once it holds this many bytes
SEGMENT_BYTES = 4 * 1024 * 1024
#: a line longer than this is not read back (a page's links are capped far below)
MAX_LINE = 8 * 1024 * 1024
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


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
            for raw in fh:
                if len(raw) > MAX_LINE or not raw.endswith(b"\n"):
                    continue  # a torn last line (killed mid-write) or an absurd one
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
        self.segment = 0
        self.size = 0
        #: segment -> pages with a line in it that are not committed yet
        self.pending: dict[int, set[int]] = {}
        #: page -> segments holding a line of it
        self.page_segments: dict[int, set[int]] = {}
        self.fd = self._open(0)

    def _path(self, segment: int) -> Path:
        return self.dir / f"{self.prefix}-{segment:06d}.jsonl"

    def _open(self, segment: int) -> int:
        self.pending[segment] = set()
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        return os.open(self._path(segment), flags, 0o600)

    def write(self, event: dict[str, Any]) -> None:
        """Append one line (``event`` gets the crawl's id); raises nothing: a journal that
        cannot be written costs only the refetch it would have saved."""
        page = int(event["id"])
        line = json.dumps(
            {**event, "crawl": self.crawl_id}, separators=(",", ":"), default=str
        ).encode()
        with self.lock:
            if self.fd < 0:
                return
            try:
                os.write(self.fd, line + b"\n")
            except OSError as err:
                log.warning("crawl %s: the results journal is not written: %s", self.crawl_id, err)
                return
            self.size += len(line) + 1
            self.pending[self.segment].add(page)
            self.page_segments.setdefault(page, set()).add(self.segment)
            if self.size >= SEGMENT_BYTES:
                self._rotate()

    def _rotate(self) -> None:
        os.close(self.fd)
        old = self.segment
        self.segment += 1
        self.size = 0
        self.fd = self._open(self.segment)
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
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1
            if remove:
                for seg in list(self.pending):
                    self._path(seg).unlink(missing_ok=True)
                self.pending.clear()
                self.page_segments.clear()
        if remove:
            with contextlib.suppress(OSError):
                self.dir.rmdir()  # only when empty
