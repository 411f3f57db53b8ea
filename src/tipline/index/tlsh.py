"""The ``tlsh`` index kind: TLSH digests searched within a distance, by a vectorised scan.

A TLSH distance (``diffxlen``) is the body distance (128 buckets of 2 bits: per bucket the
difference of the two values, 6 where it is 3) plus header terms (checksum, quartile ratios)
that are never negative. So the body distance alone is a lower bound: every entry is scanned
(one 256x256 per-byte table, up to 32 look-ups per entry), and only those whose body distance
is within the radius are compared exactly with py-tlsh. Small indexes scan with numpy; from
``kernel_min`` entries on, a numba kernel stops each entry's sum once it passes the radius.
The scan is linear in the bank: measured on the 2-core development machine, one query at
radius 30 over 1,000,000 entries takes about 11 ms compiled (130 ms with numpy). Text banks
are small next to image banks; an index that avoids the full scan (TLSH's own tree, buckets
by body prefix) can replace this class behind the same ``SignalIndex`` interface if needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from tipline.errors import InvalidSignalError
from tipline.signals.tlsh import BODY_OFFSET, distance, normalise_signal

if TYPE_CHECKING:
    from tipline.index.signal_index import IndexHits

BODY_BYTES = 32


def _byte_table() -> npt.NDArray[np.uint8]:
    """Body distance of every pair of bytes (4 buckets of 2 bits each)."""
    a = np.arange(256)[:, None]
    b = np.arange(256)[None, :]
    total = np.zeros((256, 256), np.uint8)
    for shift in (0, 2, 4, 6):
        d = np.abs(((a >> shift) & 3) - ((b >> shift) & 3))
        total += np.where(d == 3, 6, d).astype(np.uint8)
    return total


_TABLE = _byte_table()
_POS = np.arange(BODY_BYTES)


def body_codes(signals: Sequence[str]) -> npt.NDArray[np.uint8]:
    """The 32 body bytes of each normalised digest, as an ``(n, 32)`` array."""
    raw = bytes.fromhex("".join(s[BODY_OFFSET:] for s in signals))
    return np.frombuffer(raw, np.uint8).reshape(len(signals), BODY_BYTES)


def body_distances(query: str, codes: npt.NDArray[np.uint8]) -> npt.NDArray[np.int32]:
    """Lower bounds of the distance from ``query`` to every row of ``codes``."""
    q = body_codes([query])[0]
    rows = _TABLE[q]  # (32, 256): the distance of each query byte to any byte
    out: npt.NDArray[np.int32] = rows[_POS, codes].sum(axis=1, dtype=np.int32)
    return out


class TlshSignalIndex:
    #: from this many rows on, the compiled scan (``_tlsh_kernel``, ~15x faster, stops each
    #: row's sum at the radius) replaces the numpy one
    kernel_min = 20_000

    def __init__(self, size_hint: int | None = None) -> None:
        cap = max(int(size_hint or 0), 16)
        self._codes = np.zeros((cap, BODY_BYTES), np.uint8)
        self._ids = np.full(cap, -1, np.int64)  # -1: a free row
        self._n = 0  # rows in use (live or removed)
        self._row_of: dict[int, int] = {}
        self._signal_of: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self._row_of)

    def add(self, ids: Sequence[int], signals: Sequence[str]) -> None:
        good_ids: list[int] = []
        good: list[str] = []
        for i, s in zip(ids, signals, strict=True):
            try:
                good.append(normalise_signal(s))
            except InvalidSignalError:
                continue  # validated on import; a damaged row cannot match anything
            good_ids.append(int(i))
        if not good:
            return
        self.remove(good_ids)  # an id added again replaces its old signal
        need = self._n + len(good)
        if need > len(self._ids):
            cap = max(need, 2 * len(self._ids))
            codes = np.zeros((cap, BODY_BYTES), np.uint8)
            codes[: self._n] = self._codes[: self._n]
            ids_arr = np.full(cap, -1, np.int64)
            ids_arr[: self._n] = self._ids[: self._n]
            self._codes, self._ids = codes, ids_arr
        rows = slice(self._n, need)
        self._codes[rows] = body_codes(good)
        self._ids[rows] = good_ids
        for k, (i, s) in enumerate(zip(good_ids, good, strict=True)):
            self._row_of[i] = self._n + k
            self._signal_of[i] = s
        self._n = need

    def remove(self, ids: Sequence[int]) -> None:
        for i in ids:
            row = self._row_of.pop(int(i), None)
            if row is not None:
                self._ids[row] = -1
                self._signal_of.pop(int(i), None)
        if self._n > 64 and len(self._row_of) < self._n // 2:
            self._compact()

    def _compact(self) -> None:
        live = self._ids[: self._n] >= 0
        codes, ids = self._codes[: self._n][live], self._ids[: self._n][live]
        n = len(ids)
        self._codes[:n], self._ids[:n] = codes, ids
        self._ids[n : self._n] = -1
        self._n = n
        self._row_of = {int(i): r for r, i in enumerate(ids.tolist())}

    def query(self, values: Sequence[str], radius: int) -> IndexHits:
        # signal_index registers this kind, so it is imported here, not at the top
        from tipline.index.signal_index import IndexHits, merge_hits

        if radius < 0 or not values or not self._row_of:
            return IndexHits.empty()
        codes, ids = self._codes[: self._n], self._ids[: self._n]
        found: list[int] = []
        dists: list[int] = []
        for v in values:
            try:
                q = normalise_signal(v)
            except InvalidSignalError:
                continue
            for row in self._candidates(q, codes, ids >= 0, radius).tolist():
                eid = int(ids[row])
                d = distance(q, self._signal_of[eid])
                if d <= radius:
                    found.append(eid)
                    dists.append(d)
        return merge_hits(found, dists)

    def _candidates(
        self,
        query: str,
        codes: npt.NDArray[np.uint8],
        live: npt.NDArray[np.bool_],
        radius: int,
    ) -> npt.NDArray[np.int64]:
        """Rows whose body distance (a lower bound) is within ``radius``."""
        if len(codes) >= self.kernel_min:
            from tipline.index._tlsh_kernel import within

            rows: npt.NDArray[np.int64] = within(
                _TABLE, body_codes([query])[0], codes, live, radius
            )
            return rows
        return np.nonzero((body_distances(query, codes) <= radius) & live)[0].astype(np.int64)

    def prefix(self, prefix: str) -> list[int]:
        return []
