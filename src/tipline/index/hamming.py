"""Hamming-distance indexes over 256-bit codes (PDQ).

``HammingIndex`` is the interface the matcher uses; ``FlatHammingIndex`` is exact brute force
(numpy XOR + popcount), fine for banks up to a few hundred thousand entries.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

CODE_BYTES = 32

Codes = npt.NDArray[np.uint8]  # shape (n, 32)
Ids = npt.NDArray[np.int64]


def codes_from_hex(hexes: list[str]) -> Codes:
    if not hexes:
        return np.zeros((0, CODE_BYTES), dtype=np.uint8)
    raw = bytes.fromhex("".join(hexes))
    return np.frombuffer(raw, dtype=np.uint8).reshape(len(hexes), CODE_BYTES).copy()


class HammingIndex(Protocol):
    def add(self, ids: Ids, codes: Codes) -> None: ...
    def remove(self, ids: Ids) -> None: ...
    def search(self, queries: Codes, radius: int) -> list[tuple[Ids, npt.NDArray[np.int32]]]:
        """For each query, the ids within ``radius`` (inclusive) and their distances."""
        ...

    def __len__(self) -> int: ...


class FlatHammingIndex:
    """Exact brute-force search: every query is compared with every live code."""

    def __init__(self) -> None:
        self._words = np.zeros((0, 4), dtype=np.uint64)
        self._ids = np.zeros(0, dtype=np.int64)
        self._live = np.zeros(0, dtype=bool)

    def __len__(self) -> int:
        return int(self._live.sum())

    def add(self, ids: Ids, codes: Codes) -> None:
        codes = np.ascontiguousarray(codes, dtype=np.uint8).reshape(-1, CODE_BYTES)
        words = codes.view(np.uint64).reshape(-1, 4)
        self._words = np.concatenate([self._words, words])
        self._ids = np.concatenate([self._ids, np.asarray(ids, dtype=np.int64)])
        self._live = np.concatenate([self._live, np.ones(len(ids), dtype=bool)])

    def remove(self, ids: Ids) -> None:
        self._live &= ~np.isin(self._ids, np.asarray(ids, dtype=np.int64))

    def distances(self, query: Codes) -> npt.NDArray[np.int32]:
        q = np.ascontiguousarray(query, dtype=np.uint8).reshape(CODE_BYTES).view(np.uint64)
        d: npt.NDArray[np.int32] = np.bitwise_count(self._words ^ q[None, :]).sum(
            axis=1, dtype=np.int32
        )
        return d

    def search(self, queries: Codes, radius: int) -> list[tuple[Ids, npt.NDArray[np.int32]]]:
        out: list[tuple[Ids, npt.NDArray[np.int32]]] = []
        queries = np.ascontiguousarray(queries, dtype=np.uint8).reshape(-1, CODE_BYTES)
        for q in queries:
            d = self.distances(q)
            hit = (d <= radius) & self._live
            out.append((self._ids[hit], d[hit]))
        return out
