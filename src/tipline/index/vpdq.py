"""vPDQ frame index: every unique usable frame of many video hashes in one Hamming index.

A query's frames are searched once at ``opts.distance``; the hits give, for each indexed hash
that shares a frame with the query, exactly the frame counts brute-force matching would (the
index is exact), so hashes sharing no frame are never compared.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from tipline.index.hamming import FlatHammingIndex, HammingIndex, codes_from_hex
from tipline.signals.vpdq import VpdqHash, VpdqMatchOptions, VpdqMatchResult


def _pct(count: int, total: int) -> float:
    # python-threatexchange divides by zero here; an empty side matches nothing.
    return count * 100 / total if total else 0.0


@dataclass(slots=True)
class _Indexed:
    key: int
    n_frames: int
    rows: npt.NDArray[np.int64]
    live: bool = True


@dataclass(slots=True)
class VpdqFrameIndex:
    opts: VpdqMatchOptions = field(default_factory=VpdqMatchOptions)
    index: HammingIndex = field(default_factory=FlatHammingIndex)
    _owners: list[_Indexed] = field(default_factory=list)
    _by_key: dict[int, int] = field(default_factory=dict)
    #: per indexed frame row: owner position, frame number within the owner
    _row_owner: list[npt.NDArray[np.int64]] = field(default_factory=list)
    _row_local: list[npt.NDArray[np.int64]] = field(default_factory=list)
    _rows: int = 0
    _owner_arr: npt.NDArray[np.int64] | None = None
    _local_arr: npt.NDArray[np.int64] | None = None

    def __len__(self) -> int:
        return len(self._by_key)

    def add(self, key: int, h: VpdqHash) -> None:
        if key in self._by_key:
            self.remove([key])
        frames = h.unique_usable(self.opts.quality)
        pos = len(self._owners)
        n = len(frames)
        rows = np.arange(self._rows, self._rows + n, dtype=np.int64)
        self._owners.append(_Indexed(key, n, rows))
        self._by_key[key] = pos
        if not frames:
            return
        self.index.add(rows, codes_from_hex(frames))
        self._row_owner.append(np.full(n, pos, dtype=np.int64))
        self._row_local.append(np.arange(n, dtype=np.int64))
        self._rows += n
        self._owner_arr = self._local_arr = None

    def remove(self, keys: Sequence[int]) -> None:
        for key in keys:
            pos = self._by_key.pop(int(key), None)
            if pos is None:
                continue
            owner = self._owners[pos]
            owner.live = False
            if len(owner.rows):
                self.index.remove(owner.rows)

    def _arrays(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        if self._owner_arr is None or self._local_arr is None:
            empty = np.zeros(0, dtype=np.int64)
            self._owner_arr = np.concatenate(self._row_owner) if self._row_owner else empty
            self._local_arr = np.concatenate(self._row_local) if self._row_local else empty
        return self._owner_arr, self._local_arr

    def search(self, query: VpdqHash) -> Iterator[tuple[int, VpdqMatchResult]]:
        """``(key, result)`` for every indexed hash sharing at least one frame pair within
        ``opts.distance`` with the query; the caller applies ``result.is_match``."""
        q = query.unique_usable(self.opts.quality)
        if not q or not self._rows:
            return
        owner_of, local_of = self._arrays()
        q_hits: dict[int, set[int]] = {}
        x_hits: dict[int, set[int]] = {}
        best: dict[int, int] = {}
        for qi, (rows, dists) in enumerate(
            self.index.search(codes_from_hex(q), self.opts.distance)
        ):
            if not len(rows):
                continue
            owners = owner_of[rows]
            for pos, local, dist in zip(
                owners.tolist(), local_of[rows].tolist(), dists.tolist(), strict=True
            ):
                q_hits.setdefault(pos, set()).add(qi)
                x_hits.setdefault(pos, set()).add(local)
                if dist < best.get(pos, 1 << 30):
                    best[pos] = dist
        for pos in sorted(q_hits):
            owner = self._owners[pos]
            if not owner.live:
                continue
            yield (
                owner.key,
                VpdqMatchResult(
                    _pct(len(q_hits[pos]), len(q)),
                    _pct(len(x_hits[pos]), owner.n_frames),
                    best[pos],
                ),
            )


def duplicate_pairs(
    hashes: Sequence[VpdqHash | None], opts: VpdqMatchOptions | None = None
) -> list[tuple[int, int]]:
    """Index pairs ``(i, j)``, i < j, of hashes that match one way or the other: the frames of
    one are (``opts.query_pct`` %) within ``opts.distance`` of frames of the other, so a copy
    joins its original, and a clip cut from a video joins the video. Found with one frame
    index over all of them, so hashes sharing no frame are never compared."""
    opts = opts or VpdqMatchOptions()
    index = VpdqFrameIndex(opts)
    for i, h in enumerate(hashes):
        if h is not None:
            index.add(i, h)
    pairs: set[tuple[int, int]] = set()
    for i, h in enumerate(hashes):
        if h is None:
            continue
        for j, res in index.search(h):
            if j != i and res.is_match(opts):
                pairs.add((min(i, j), max(i, j)))
    return sorted(pairs)
