# mypy: ignore-errors
"""Compiled (numba) scan of the ``tlsh`` index: rows whose body distance to a query is within a
radius, each row's sum stopped as soon as it passes the radius. The numpy twin in
``tipline.index.tlsh`` gives the same rows (tests/test_tlsh.py runs both). Imported lazily, only
for indexes large enough to repay numba's import and first-call compile."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def rows_within(table, query, codes, n, radius, live, out):
    """Write the rows (< n, live) within ``radius`` of ``query`` into ``out``; return how many."""
    k = 0
    width = codes.shape[1]
    for r in range(n):
        if not live[r]:
            continue
        d = 0
        for j in range(width):
            d += table[query[j], codes[r, j]]
            if d > radius:
                break
        if d <= radius:
            out[k] = r
            k += 1
    return k


def within(table: np.ndarray, query: np.ndarray, codes: np.ndarray, live: np.ndarray, radius: int):
    out = np.empty(len(codes), np.int64)
    k = rows_within(table, query, codes, len(codes), radius, live, out)
    return out[:k]
