"""The bank-change journal that live match indexes follow (``<index_dir>/changes.jsonl``).

Every process sharing one index directory appends the bank changes it commits as JSON lines,
under an exclusive file lock; every serving process (``tipline.service.matching.MatchService``)
follows the file and applies the same incremental update to its own index. Every operation is
idempotent (applying one twice does no harm). The writer lives here, below the bank store and
the service, so that writers outside the service (``tipline bank``, the exchange fetcher in a
``tipline worker``) write exactly what the service writes.

Operations (``by`` names the writer; a process skips its own):

* ``{"op": "add", "entries": [[id, bank, signal_type, signal, label, enabled, until], ...]}``
* ``{"op": "remove", "bank", "ids"}``, ``{"op": "enable", "bank", "ids", "enabled", "until"}``
* ``{"op": "bank", "bank": {...}}``, ``{"op": "delete_bank", "name"}``,
  ``{"op": "rename_bank", "old", "new"}``
* ``{"op": "reload"}``: rebuild from the database (a bulk change, or a replay after a writer
  may have lost lines).
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

#: The change journal's file name in the index directory.
JOURNAL = "changes.jsonl"
#: Adds larger than this are journalled as "reload" (the other processes rebuild).
JOURNAL_MAX_ADDS = 10_000
#: The journal is rotated past this size (readers finish the old file, then follow the new).
JOURNAL_ROTATE_BYTES = 64 * 1024 * 1024

#: One entry as journalled: (id, bank, signal_type, signal, label, enabled, disabled_until).
EntryRow = tuple[int, str, str, str, str, bool, float | None]


def append(path: Path, op: dict[str, Any], rotate_bytes: int = JOURNAL_ROTATE_BYTES) -> None:
    """One JSON line, appended under an exclusive lock so concurrent writers never interleave;
    past ``rotate_bytes`` the file is renamed to ``<name>.old`` and a new one started."""
    line = (json.dumps(op, separators=(",", ":")) + "\n").encode()
    for _ in range(5):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            st = os.fstat(fd)
            try:
                current = os.stat(path).st_ino
            except FileNotFoundError:
                current = -1
            if current != st.st_ino:
                continue  # another writer rotated it while we waited: write to the new file
            if st.st_size + len(line) > rotate_bytes and st.st_size > 0:
                os.replace(path, path.with_name(path.name + ".old"))
                continue  # readers finish the old file, then follow the new; our line goes there
            os.write(fd, line)
            return
        finally:
            os.close(fd)
    raise OSError(f"could not append to the change journal {path}")


def add_op(entries: Sequence[EntryRow]) -> dict[str, Any]:
    """The journal operation for stored entries: ``add``, or ``reload`` past
    :data:`JOURNAL_MAX_ADDS`."""
    if len(entries) > JOURNAL_MAX_ADDS:
        return {"op": "reload"}
    return {"op": "add", "entries": [list(e) for e in entries]}


class JournalWriter:
    """Appends operations to ``<index_dir>/changes.jsonl`` as ``by``, only where some service
    keeps an index there (the directory exists): with none, a service started later builds
    from the database, which already holds every change."""

    def __init__(self, index_dir: Path, by: str) -> None:
        self.index_dir = index_dir
        self.by = by

    @property
    def active(self) -> bool:
        return self.index_dir.is_dir()

    def write(self, ops: Iterable[dict[str, Any]]) -> int:
        """Append ``ops`` (in order); returns how many. Raises OSError if one could not be
        written (the caller decides how the loss is made good)."""
        if not self.active:
            return 0
        n = 0
        for op in ops:
            append(self.index_dir / JOURNAL, {**op, "by": self.by})
            n += 1
        return n

    def reload(self) -> None:
        self.write([{"op": "reload"}])


__all__ = [
    "JOURNAL",
    "JOURNAL_MAX_ADDS",
    "JOURNAL_ROTATE_BYTES",
    "EntryRow",
    "JournalWriter",
    "add_op",
    "append",
]
