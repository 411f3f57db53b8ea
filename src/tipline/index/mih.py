"""Exact radius search over PDQ codes by multi-index hashing (MIH), with a batched scan fallback.

Method (Norouzi et al., "Fast search in Hamming space with multi-index hashing"): split the 256
bits into ``m`` substrings of ``b`` bits (``b`` about log2 of the segment size, so buckets hold
about one code each; ``m = 256 // b``, leftover bits are simply not indexed). For radius ``r``
write ``r = m*s + a``: any code within ``r`` of the query has one of the first ``a + 1``
substrings within ``s`` of the query's, or one of the others within ``s - 1`` (otherwise the
distance would be at least ``(a+1)(s+1) + (m-a-1)s = r + 1``). So probing, per substring, every
bucket key within that sub-radius and verifying each candidate's full distance is *exact*. A
candidate reachable from several substrings is reported only by the first one (its sub-distance
is checked against the earlier tables), so no set or sort is needed to de-duplicate.

For each radius the index compares the estimated cost of the probes with a plain scan and picks
the cheaper; large radii (~45+ at 10M codes) scan. Either way the results are identical to
``FlatHammingIndex``: for each query, the ids within ``radius`` with their distances, sorted by
(id, distance).

Layout (per immutable *segment*): codes as ``uint64[n, 4]`` sorted by the first substring (so
table 0 needs no position array and near-duplicates sit together in memory), ``ids int64[n]``,
a tombstone array ``live bool[n]``, ``offsets uint32[m, 2**b + 1]`` (CSR bucket bounds) and
``positions uint32[m - 1, n]`` (bucket contents of the other tables). Ids are stored as ``uint32``
when they fit. At 10M codes (b = 23, m = 11) that is 320 MB of codes plus 0.82 GB of tables,
ids and tombstones.

Updates: ``add`` appends to a small buffer that is scanned; when it fills it becomes a tail
segment. Tail segments are tiered like an LSM tree: ``MERGE_FACTOR`` segments of one size level
are merged into one of the next, so each code is rebuilt about once per level rather than with
the whole tail at every flush; when the tail grows past 1/8 of the main segment everything is
rebuilt into one (counting sorts, linear time; about 9 rebuilds per code in all, whatever the
size). ``rebuilt_codes`` counts the work. ``remove`` clears ``live`` bits (a segment half dead
is compacted). New entries are searchable as soon as ``add`` returns.

Persistence: ``save(dir)`` writes a generation of ``.npy`` files and JSON (never pickle);
``MIHIndex.open(dir, mmap=True)`` memory-maps them, so a restart or a second process does not
rebuild. After a save the index is *attached* to the directory: every later ``add``/``remove``
is appended to the generation's ``log.bin`` (fixed 48-byte records, under a file lock) and every
attached process applies the log tail on ``refresh()``, which ``search`` calls at most every
``refresh_interval`` seconds. ``save`` on the attached directory checkpoints: it writes a new
generation (unchanged segment files are hard-linked) with an empty log and switches
``MANIFEST.json`` atomically; other processes follow on their next refresh.

The compiled kernels (numba, ``_kernels.py``) are used for large indexes; the pure-numpy path
gives identical results and is used for small ones or when numba is missing.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import itertools
import json
import math
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from tipline.index.hamming import CODE_BYTES, Codes, FlatHammingIndex, HammingIndex, Ids

Words = npt.NDArray[np.uint64]  # (n, 4)
Dists = npt.NDArray[np.int32]
Backend = Literal["auto", "numba", "numpy"]
Result = list[tuple[Ids, Dists]]

FORMAT = "tipline-pdq-mih"
FORMAT_VERSION = 1
#: A log record: op (1 add, 2 remove), 7 pad bytes, id, code. 48 bytes, little-endian.
LOG_DTYPE = np.dtype(
    [("op", "u1"), ("pad", "u1", (7,)), ("id", "<i8"), ("code", "u1", (CODE_BYTES,))]
)
OP_ADD = 1
OP_REMOVE = 2

#: Segments smaller than this are scanned, not hashed.
MIN_TABLE_SIZE = 1 << 15
#: Tail segments (see ``MIHIndex._absorb``) this small are scanned, not hashed.
TAIL_MIN_TABLE_SIZE = 1 << 12
#: Incremental adds collect in a scanned buffer of at most this many codes.
BUFFER_LIMIT = 1 << 14
#: Tail segments are merged this many at a time (see ``MIHIndex._absorb``).
MERGE_FACTOR = 4
#: With ``backend="auto"``, numba kernels are used once the index holds this many codes.
NUMBA_MIN_SIZE = 1 << 14
MIN_BITS = 12
MAX_BITS = 24
#: Radius plans needing more bucket probes than this per table scan instead.
MAX_PROBES = 1 << 16
# Rough per-operation costs (ns) for choosing between probing and scanning.
# (measured at 10M codes, one core: ~45 ns per probe with its candidates; a scan costs ~0.25 ns
# per code and query in batches of 16 queries, ~1.5 ns for a single query)
_COST_PROBE = 25.0
_COST_CANDIDATE = 12.0
_COST_SCAN_BATCHED = 0.25
_COST_SCAN_SINGLE = 1.5
#: An attached writer checkpoints (``save``) after this many log records.
CHECKPOINT_EVERY = 1 << 16


def words_from_codes(codes: Codes) -> Words:
    """(n, 32) uint8 codes -> (n, 4) little-endian uint64 words (a copy)."""
    arr = np.ascontiguousarray(codes, dtype=np.uint8).reshape(-1, CODE_BYTES)
    out: Words = arr.view("<u8").astype(np.uint64).reshape(-1, 4)
    return out


def codes_from_words(words: Words) -> Codes:
    out: Codes = np.ascontiguousarray(words, dtype="<u8").view(np.uint8).reshape(-1, CODE_BYTES)
    return out


# --------------------------------------------------------------------------- layout and plans


@dataclass(frozen=True, slots=True)
class TableLayout:
    """``m`` substrings of ``bits`` bits; table t covers code bits [t*bits, (t+1)*bits)."""

    bits: int
    m: int

    @classmethod
    def for_size(cls, n: int, bits: int | None = None) -> TableLayout:
        if bits is None:
            bits = round(math.log2(max(n, 2)))
        bits = min(max(bits, MIN_BITS), MAX_BITS)
        m = 256 // bits
        return cls(min(256 // m, MAX_BITS), m)

    def start(self, t: int) -> int:
        return t * self.bits

    def word_shift(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        starts = np.arange(self.m, dtype=np.int64) * self.bits
        return starts // 64, starts % 64

    @functools.lru_cache(maxsize=32)  # noqa: B019 (a handful of small frozen layouts)
    def word_masks(self) -> Words:
        """(m, 4) uint64: the bits of each table, for sub-distances (cached: every search
        needs them; callers must not modify the array)."""
        out = np.zeros((self.m, 4), dtype=np.uint64)
        for t in range(self.m):
            for bit in range(self.start(t), self.start(t) + self.bits):
                out[t, bit // 64] |= np.uint64(1) << np.uint64(bit % 64)
        return out


@functools.lru_cache(maxsize=16)
def _masks(bits: int, radius: int) -> npt.NDArray[np.uint32]:
    """All ``bits``-bit masks of popcount <= radius, ordered by popcount."""
    out: list[int] = []
    for k in range(radius + 1):
        for combo in itertools.combinations(range(bits), k):
            v = 0
            for c in combo:
                v |= 1 << c
            out.append(v)
    arr = np.asarray(out, dtype=np.uint32)
    arr.setflags(write=False)
    return arr


def _n_masks(bits: int, radius: int) -> int:
    return sum(math.comb(bits, k) for k in range(radius + 1)) if radius >= 0 else 0


@dataclass(frozen=True, slots=True)
class Plan:
    """Per-table sub-radius (-1: table not probed) and probe count for one radius."""

    subrad: npt.NDArray[np.int64]
    nprobe: npt.NDArray[np.int64]
    max_subrad: int

    @property
    def probes(self) -> int:
        return int(self.nprobe.sum())


@functools.lru_cache(maxsize=512)
def plan_for(layout: TableLayout, radius: int) -> Plan:
    s, a = divmod(radius, layout.m)
    subrad = np.array([s if t <= a else s - 1 for t in range(layout.m)], dtype=np.int64)
    nprobe = np.array([_n_masks(layout.bits, int(r)) for r in subrad], dtype=np.int64)
    return Plan(subrad, nprobe, s)


# --------------------------------------------------------------------------- numba (optional)


@functools.cache
def _kernels() -> ModuleType | None:
    try:
        from tipline.index import _kernels as k
    except ImportError:  # pragma: no cover - numba is a dependency, but keep the numpy path
        return None
    return k


def numba_available() -> bool:
    return _kernels() is not None


# --------------------------------------------------------------------------- numpy twins


def _keys_numpy(words: Words, word: int, shift: int, bits: int) -> npt.NDArray[np.uint32]:
    v = words[:, word] >> np.uint64(shift)
    if shift > 0 and word < 3:
        v = v | (words[:, word + 1] << np.uint64(64 - shift))
    out: npt.NDArray[np.uint32] = (v & np.uint64((1 << bits) - 1)).astype(np.uint32)
    return out


def _counting_sort_numpy(
    keys: npt.NDArray[np.uint32], nbuckets: int
) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.uint32]]:
    order = np.argsort(keys, kind="stable").astype(np.uint32)
    offsets = np.zeros(nbuckets + 1, dtype=np.uint32)
    np.cumsum(np.bincount(keys, minlength=nbuckets), out=offsets[1:])
    return order, offsets


def _ranges(lo: npt.NDArray[np.int64], hi: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Concatenation of ``arange(lo[i], hi[i])`` for all i."""
    lengths = hi - lo
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    ends = np.cumsum(lengths)
    out: npt.NDArray[np.int64] = np.repeat(lo - (ends - lengths), lengths) + np.arange(total)
    return out


def _dist_numpy(words: Words, q: Words) -> npt.NDArray[np.int64]:
    d: npt.NDArray[np.int64] = np.bitwise_count(words ^ q).sum(axis=-1, dtype=np.int64)
    return d


Hits = tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int32]]


def _scan_numpy(
    words: Words, live: npt.NDArray[np.bool_], count: int, queries: Words, radius: int
) -> Hits:
    qs: list[npt.NDArray[np.int64]] = []
    ps: list[npt.NDArray[np.int64]] = []
    ds: list[npt.NDArray[np.int64]] = []
    if count == 0 or len(queries) == 0:
        return _empty_hits()
    qstep = max(1, min(len(queries), (1 << 22) // max(count, 1)))
    cstep = max(1, (1 << 22) // qstep)
    for c0 in range(0, count, cstep):
        c1 = min(count, c0 + cstep)
        block = words[c0:c1]
        lv = live[c0:c1]
        for q0 in range(0, len(queries), qstep):
            qb = queries[q0 : q0 + qstep]
            d = _dist_numpy(block[None, :, :], qb[:, None, :])
            qi, pi = np.nonzero((d <= radius) & lv[None, :])
            qs.append(qi.astype(np.int64) + q0)
            ps.append(pi.astype(np.int64) + c0)
            ds.append(d[qi, pi])
    if not qs:
        return _empty_hits()
    return np.concatenate(qs), np.concatenate(ps), np.concatenate(ds).astype(np.int32)


def _run_kernel(fn: Any, args: tuple[Any, ...], nq: int) -> Hits:
    """Call a resumable kernel (see ``_kernels.mih_search``), growing its outputs as needed."""
    cap = 64 * nq + 4096
    out_q = np.empty(cap, dtype=np.int64)
    out_p = np.empty(cap, dtype=np.int64)
    out_d = np.empty(cap, dtype=np.int32)
    cnt, nxt = 0, 0
    while True:
        cnt, nxt = fn(*args, nxt, cnt, out_q, out_p, out_d)
        if nxt >= nq:
            return out_q[:cnt], out_p[:cnt], out_d[:cnt]
        cap *= 2
        out_q = _resized(out_q[:cnt], cap)
        out_p = _resized(out_p[:cnt], cap)
        out_d = _resized(out_d[:cnt], cap)


def _scan_cost(nq: int) -> float:
    """Estimated scan cost per code and query (ns)."""
    if nq <= 1:
        return _COST_SCAN_SINGLE
    return _COST_SCAN_BATCHED * max(1.0, 16 / nq)


def _scan(
    words: Words,
    live: npt.NDArray[np.bool_],
    count: int,
    queries: Words,
    radius: int,
    use_numba: bool,
) -> Hits:
    k = _kernels() if use_numba else None
    if k is None:
        return _scan_numpy(words, live, count, queries, radius)
    fn = k.scan_search if len(queries) > 1 else k.scan_search_rows
    return _run_kernel(fn, (words, live, count, queries, radius), len(queries))


def _empty_hits() -> Hits:
    z = np.zeros(0, dtype=np.int64)
    return z, z.copy(), np.zeros(0, dtype=np.int32)


# --------------------------------------------------------------------------- segments


@dataclass
class _Segment:
    """An immutable block of codes (apart from ``live``), hashed into tables when large."""

    words: Words
    ids: npt.NDArray[Any]  # int64, or uint32 when every id fits (saves 4 bytes a code)
    live: npt.NDArray[np.bool_]
    layout: TableLayout | None = None
    offsets: npt.NDArray[np.uint32] | None = None
    positions: npt.NDArray[np.uint32] | None = None
    files: Path | None = None  # directory holding this segment's immutable arrays
    n_live: int = field(init=False)

    def __post_init__(self) -> None:
        self.n_live = int(np.count_nonzero(self.live))

    def __len__(self) -> int:
        return len(self.ids)

    def live_rows(self) -> tuple[Words, Ids]:
        ids = np.asarray(self.ids)
        if self.n_live == len(ids):
            return np.asarray(self.words), ids.astype(np.int64)
        return np.asarray(self.words)[self.live], ids[self.live].astype(np.int64)

    def ids_at(self, rows: npt.NDArray[np.int64]) -> Ids:
        out: Ids = np.asarray(self.ids)[rows].astype(np.int64)
        return out

    def nbytes(self) -> int:
        total = self.words.nbytes + self.ids.nbytes + self.live.nbytes
        if self.offsets is not None and self.positions is not None:
            total += self.offsets.nbytes + self.positions.nbytes
        return int(total)

    @classmethod
    def build(
        cls,
        words: Words,
        ids: Ids,
        *,
        use_numba: bool,
        bits: int | None = None,
        min_table_size: int = MIN_TABLE_SIZE,
    ) -> _Segment:
        words = np.ascontiguousarray(words, dtype=np.uint64)
        ids = _compact_ids(np.asarray(ids, dtype=np.int64))
        n = len(ids)
        if n >= 1 << 32:
            raise ValueError("a segment holds at most 2**32 - 1 codes")
        if n < min_table_size:
            return cls(words.copy(), ids.copy(), np.ones(n, dtype=bool))
        layout = TableLayout.for_size(n, bits)
        k = _kernels() if use_numba else None
        nb = 1 << layout.bits
        tw, ts = layout.word_shift()
        offsets = np.empty((layout.m, nb + 1), dtype=np.uint32)
        positions = np.empty((layout.m - 1, n), dtype=np.uint32)
        for t in range(layout.m):
            if k is not None:
                keys = k.table_keys(words, int(tw[t]), int(ts[t]), layout.bits)
                order, offs = k.counting_sort(keys, nb)
            else:
                keys = _keys_numpy(words, int(tw[t]), int(ts[t]), layout.bits)
                order, offs = _counting_sort_numpy(keys, nb)
            offsets[t] = offs
            if t == 0:
                words = words[order]
                ids = ids[order]
            else:
                positions[t - 1] = order
            del keys, order
        return cls(words, ids, np.ones(n, dtype=bool), layout, offsets, positions)

    # ---- search

    def uses_tables(self, radius: int, nq: int = 16) -> bool:
        """Whether probing the tables is estimated cheaper than a scan for ``nq`` queries."""
        if self.layout is None:
            return False
        plan = plan_for(self.layout, radius)
        if int(plan.nprobe.max()) > MAX_PROBES:
            return False
        n = len(self.ids)
        per_bucket = n / float(1 << self.layout.bits)
        cost_mih = plan.probes * (_COST_PROBE + per_bucket * _COST_CANDIDATE)
        return cost_mih < n * _scan_cost(nq)

    def search(self, queries: Words, radius: int, use_numba: bool) -> Hits:
        words = np.asarray(self.words)
        if not self.uses_tables(radius, len(queries)):
            return _scan(words, self.live, len(self.ids), queries, radius, use_numba)
        assert self.layout is not None and self.offsets is not None and self.positions is not None
        layout = self.layout
        plan = plan_for(layout, radius)
        masks = _masks(layout.bits, plan.max_subrad)
        tw, ts = layout.word_shift()
        offsets = np.asarray(self.offsets)
        positions = np.asarray(self.positions)
        k = _kernels() if use_numba else None
        if k is not None:
            args = (
                words,
                self.live,
                offsets,
                positions,
                tw,
                ts,
                layout.word_masks(),
                layout.bits,
                masks,
                plan.nprobe,
                plan.subrad,
                queries,
                radius,
            )
            return _run_kernel(k.mih_search, args, len(queries))
        return self._mih_numpy(queries, radius, plan, masks, tw, ts)

    def _mih_numpy(
        self,
        queries: Words,
        radius: int,
        plan: Plan,
        masks: npt.NDArray[np.uint32],
        tw: npt.NDArray[np.int64],
        ts: npt.NDArray[np.int64],
    ) -> Hits:
        assert self.layout is not None and self.offsets is not None and self.positions is not None
        bits = self.layout.bits
        qs: list[npt.NDArray[np.int64]] = []
        ps: list[npt.NDArray[np.int64]] = []
        ds: list[npt.NDArray[np.int64]] = []
        for qi in range(len(queries)):
            q = queries[qi : qi + 1]
            cands: list[npt.NDArray[np.int64]] = []
            for t in range(self.layout.m):
                npb = int(plan.nprobe[t])
                if npb == 0:
                    continue
                key = _keys_numpy(q, int(tw[t]), int(ts[t]), bits)[0]
                ks = (masks[:npb] ^ key).astype(np.int64)
                lo = self.offsets[t, ks].astype(np.int64)
                hi = self.offsets[t, ks + 1].astype(np.int64)
                idx = _ranges(lo, hi)
                cands.append(idx if t == 0 else self.positions[t - 1, idx].astype(np.int64))
            if not cands:
                continue
            pos = np.unique(np.concatenate(cands))
            d = _dist_numpy(self.words[pos], q)
            keep = (d <= radius) & self.live[pos]
            ps.append(pos[keep])
            ds.append(d[keep])
            qs.append(np.full(int(keep.sum()), qi, dtype=np.int64))
        if not qs:
            return _empty_hits()
        return np.concatenate(qs), np.concatenate(ps), np.concatenate(ds).astype(np.int32)

    def kill(self, sorted_ids: Ids, use_numba: bool) -> int:
        k = _kernels() if use_numba else None
        if k is not None:
            killed = int(k.kill_ids(np.asarray(self.ids), self.live, len(self.ids), sorted_ids))
        else:
            hit = self.live & np.isin(np.asarray(self.ids), sorted_ids)
            killed = int(hit.sum())
            self.live[hit] = False
        self.n_live -= killed
        return killed

    # ---- persistence

    _ARRAYS = ("words", "ids", "offsets", "positions")

    def save(self, folder: Path) -> dict[str, Any]:
        folder.mkdir(parents=True, exist_ok=True)
        for name in self._ARRAYS:
            arr = getattr(self, name)
            if arr is None:
                continue
            dst = folder / f"{name}.npy"
            src = self.files / f"{name}.npy" if self.files is not None else None
            if src is not None and src.exists():
                try:
                    os.link(src, dst)
                except OSError:
                    shutil.copyfile(src, dst)
            else:
                np.save(dst, np.asarray(arr), allow_pickle=False)
        np.save(folder / "live.npy", self.live, allow_pickle=False)
        self.files = folder
        return {
            "n": len(self.ids),
            "n_live": self.n_live,
            "bits": self.layout.bits if self.layout else None,
            "m": self.layout.m if self.layout else None,
        }

    @classmethod
    def load(cls, folder: Path, meta: dict[str, Any], mmap: bool) -> _Segment:
        mode: Literal["r"] | None = "r" if mmap else None

        def arr(name: str) -> Any:
            return np.load(folder / f"{name}.npy", mmap_mode=mode, allow_pickle=False)

        layout = None
        offsets = positions = None
        if meta.get("bits"):
            layout = TableLayout(int(meta["bits"]), int(meta["m"]))
            offsets = arr("offsets")
            positions = arr("positions")
        live = np.array(np.load(folder / "live.npy", allow_pickle=False), dtype=bool)
        seg = cls(arr("words"), arr("ids"), live, layout, offsets, positions, folder)
        if len(seg.ids) != meta["n"] or seg.words.shape != (meta["n"], 4):
            raise ValueError(f"corrupt index segment {folder}")
        return seg


# --------------------------------------------------------------------------- the index


class MIHIndex:
    """Exact Hamming radius search for 256-bit codes; see the module docstring.

    Implements ``HammingIndex``. Not thread-safe: use one instance per thread or a lock.
    """

    def __init__(
        self,
        *,
        backend: Backend = "auto",
        bits: int | None = None,
        buffer_limit: int = BUFFER_LIMIT,
        min_table_size: int = MIN_TABLE_SIZE,
        refresh_interval: float = 0.25,
        checkpoint_every: int = CHECKPOINT_EVERY,
    ) -> None:
        if backend not in ("auto", "numba", "numpy"):
            raise ValueError(f"unknown backend {backend!r}")
        if backend == "numba" and not numba_available():
            raise RuntimeError("numba is not installed")
        self.backend: Backend = backend
        self.bits = bits
        self.buffer_limit = max(1, buffer_limit)
        self.min_table_size = max(1, min_table_size)
        self.refresh_interval = refresh_interval
        self.checkpoint_every = checkpoint_every
        self._segments: list[_Segment] = []
        self._bwords: Words = np.zeros((0, 4), dtype=np.uint64)
        self._bids: Ids = np.zeros(0, dtype=np.int64)
        self._blive: npt.NDArray[np.bool_] = np.zeros(0, dtype=bool)
        self._bcount = 0
        self._bdead = 0
        #: codes put into segment builds so far (rebuild work; see ``_absorb``)
        self.rebuilt_codes = 0
        # attachment to a directory (see save/open)
        self._path: Path | None = None
        self._generation = 0
        self._log_fd: int | None = None
        self._log_pos = 0
        self._last_refresh = 0.0

    # ---- HammingIndex

    def __len__(self) -> int:
        return sum(s.n_live for s in self._segments) + self._bcount - self._bdead

    @property
    def use_numba(self) -> bool:
        if self.backend == "numpy":
            return False
        if self.backend == "numba":
            return True
        total = sum(len(s) for s in self._segments) + self._bcount
        return total >= NUMBA_MIN_SIZE and numba_available()

    def add(self, ids: Ids, codes: Codes) -> None:
        ids_arr, words = self._check(ids, codes)
        if self._path is not None:
            rec = np.zeros(len(ids_arr), dtype=LOG_DTYPE)
            rec["op"] = OP_ADD
            rec["id"] = ids_arr
            rec["code"] = codes_from_words(words)
            self._append_log(rec)
        else:
            self._apply_add(ids_arr, words)

    def add_hex(self, ids: Ids, hexes: list[str]) -> None:
        """``add`` for 64-hex PDQ strings."""
        from tipline.index.hamming import codes_from_hex

        self.add(ids, codes_from_hex(hexes))

    def remove(self, ids: Ids) -> None:
        ids_arr = np.asarray(ids, dtype=np.int64).reshape(-1)
        if self._path is not None:
            rec = np.zeros(len(ids_arr), dtype=LOG_DTYPE)
            rec["op"] = OP_REMOVE
            rec["id"] = ids_arr
            self._append_log(rec)
        else:
            self._apply_remove(ids_arr)

    def search(self, queries: Codes, radius: int) -> Result:
        q = words_from_codes(queries)
        if (
            self._path is not None
            and time.monotonic() - self._last_refresh >= self.refresh_interval
        ):
            self.refresh()
        nq = len(q)
        if nq == 0:
            return []
        if radius < 0:
            return [_empty_result() for _ in range(nq)]
        radius = min(int(radius), 256)
        use_numba = self.use_numba
        parts: list[tuple[npt.NDArray[np.int64], Ids, npt.NDArray[np.int32]]] = []
        for seg in self._segments:
            if seg.n_live == 0:
                continue
            qi, p, d = seg.search(q, radius, use_numba)
            if len(qi):
                parts.append((qi, seg.ids_at(p), d))
        if self._bcount:
            qi, p, d = _scan(self._bwords, self._blive, self._bcount, q, radius, use_numba)
            if len(qi):
                parts.append((qi, self._bids[p], d))
        return _assemble(parts, nq)

    # ---- introspection

    def stats(self) -> dict[str, Any]:
        return {
            "entries": len(self),
            "segments": [
                {
                    "n": len(s),
                    "n_live": s.n_live,
                    "bits": s.layout.bits if s.layout else None,
                    "m": s.layout.m if s.layout else None,
                    "bytes": s.nbytes(),
                }
                for s in self._segments
            ],
            "buffer": self._bcount,
            "rebuilt_codes": self.rebuilt_codes,
            "backend": "numba" if self.use_numba else "numpy",
            "path": str(self._path) if self._path else None,
            "generation": self._generation,
        }

    def method_for(self, radius: int, nq: int = 16) -> str:
        """'mih' or 'scan': what the largest segment uses at ``radius`` for ``nq`` queries."""
        if not self._segments:
            return "scan"
        big = max(self._segments, key=len)
        return "mih" if big.uses_tables(radius, nq) else "scan"

    # ---- in-memory updates

    @staticmethod
    def _check(ids: Ids, codes: Codes) -> tuple[Ids, Words]:
        ids_arr = np.asarray(ids, dtype=np.int64).reshape(-1)
        words = words_from_codes(codes)
        if len(ids_arr) != len(words):
            raise ValueError(f"{len(ids_arr)} ids for {len(words)} codes")
        return ids_arr, words

    def _apply_add(self, ids: Ids, words: Words) -> None:
        n = len(ids)
        if n == 0:
            return
        if self._bcount + n >= self.buffer_limit:
            bw, bi = self._buffer_live_rows()
            self._clear_buffer()
            self._absorb(np.concatenate([bw, words]), np.concatenate([bi, ids]))
            return
        need = self._bcount + n
        if need > len(self._bids):
            cap = max(need, 2 * len(self._bids), 64)
            self._bwords = _resized(self._bwords, cap)
            self._bids = _resized(self._bids, cap)
            self._blive = _resized(self._blive, cap)
        self._bwords[self._bcount : need] = words
        self._bids[self._bcount : need] = ids
        self._blive[self._bcount : need] = True
        self._bcount = need

    def _apply_remove(self, ids: Ids) -> None:
        if len(ids) == 0:
            return
        sorted_ids = np.unique(ids)
        use_numba = self.use_numba
        for seg in self._segments:
            seg.kill(sorted_ids, use_numba)
        if self._bcount:
            hit = self._blive[: self._bcount] & np.isin(self._bids[: self._bcount], sorted_ids)
            self._blive[: self._bcount][hit] = False
            self._bdead += int(hit.sum())
        # compact a segment when half of it is dead: the main one with everything, a tail
        # segment by itself; a tail segment shrunk into a lower level may fill that level
        segs = self._segments
        if segs and segs[0].n_live * 2 < len(segs[0]):
            self._absorb(np.zeros((0, 4), dtype=np.uint64), np.zeros(0, dtype=np.int64), True)
        elif len(segs) > 1:
            tail = [t if t.n_live * 2 >= len(t) else self._rebuilt([t]) for t in segs[1:]]
            self._segments = segs[:1] + self._merge_tail([t for t in tail if len(t)])

    def _buffer_live_rows(self) -> tuple[Words, Ids]:
        live = self._blive[: self._bcount]
        return self._bwords[: self._bcount][live], self._bids[: self._bcount][live]

    def _clear_buffer(self) -> None:
        self._bwords = np.zeros((0, 4), dtype=np.uint64)
        self._bids = np.zeros(0, dtype=np.int64)
        self._blive = np.zeros(0, dtype=bool)
        self._bcount = self._bdead = 0

    def flush(self) -> None:
        """Move buffered adds into a hashed segment now (``save`` does this)."""
        if self._bcount:
            bw, bi = self._buffer_live_rows()
            self._clear_buffer()
            if len(bi):
                self._absorb(bw, bi)

    def _build(self, words: Words, ids: Ids, tail: bool = False) -> _Segment:
        self.rebuilt_codes += len(ids)
        return _Segment.build(
            words,
            ids,
            use_numba=self.use_numba or (self.backend == "auto" and len(ids) >= NUMBA_MIN_SIZE),
            bits=self.bits,
            # a tail segment gets tables sooner: lookups probe several small ones, and a
            # single query scans at ~1.5 ns a code (the cost model still picks per query)
            min_table_size=min(self.min_table_size, TAIL_MIN_TABLE_SIZE)
            if tail
            else self.min_table_size,
        )

    def _rebuilt(self, segs: list[_Segment]) -> _Segment:
        """One segment of the live rows of ``segs``."""
        rows = [s.live_rows() for s in segs]
        return self._build(
            np.concatenate([r[0] for r in rows]), np.concatenate([r[1] for r in rows]), True
        )

    def tail_level(self, n: int) -> int:
        """A tail segment's level: 0 below ``buffer_limit * MERGE_FACTOR`` codes, then one
        more per factor of ``MERGE_FACTOR``."""
        level, cap = 0, self.buffer_limit * MERGE_FACTOR
        while n >= cap:
            level, cap = level + 1, cap * MERGE_FACTOR
        return level

    def _merge_tail(self, tail: list[_Segment]) -> list[_Segment]:
        """Merge ``MERGE_FACTOR`` tail segments of one level into one of the next, lowest level
        first, until no level holds that many (tiered, as an LSM tree: a code is rebuilt about
        once per level, log(n) times, instead of with the whole tail at every buffer flush)."""
        while True:
            levels: dict[int, list[int]] = {}
            for j, t in enumerate(tail):
                levels.setdefault(self.tail_level(t.n_live), []).append(j)
            full = sorted(lv for lv, js in levels.items() if len(js) >= MERGE_FACTOR)
            if not full:
                return tail
            js = levels[full[0]][:MERGE_FACTOR]
            merged = self._rebuilt([tail[j] for j in js])
            tail = [t for j, t in enumerate(tail) if j not in js]
            if len(merged):
                tail.append(merged)

    def _absorb(self, words: Words, ids: Ids, compact: bool = False) -> None:
        """Merge new live rows into the segments: a main segment plus a tiered tail.

        The main segment is rebuilt with everything when the tail has grown to 1/8 of it
        (about 9 rebuilds of each code in all, whatever the size); the tail is levels of
        segments merged ``MERGE_FACTOR`` at a time, so a flush rebuilds only a buffer's worth
        and each code is rebuilt once per level. Lookups probe the main segment and a few
        small ones."""
        segs = self._segments
        if not segs:
            if len(ids):
                self._segments = [self._build(words, ids)]
            return
        main = segs[0]
        tail_live = sum(s.n_live for s in segs[1:])
        everything = (
            compact
            or (tail_live + len(ids)) * 8 >= main.n_live
            or main.layout is None
            or main.n_live * 2 < len(main)
        )
        if everything:
            rows = [s.live_rows() for s in segs]
            rows.append((words, ids))
            self._segments = []  # let the old arrays go before building
            del segs, main
            w = np.concatenate([r[0] for r in rows])
            i = np.concatenate([r[1] for r in rows])
            del rows
            self._segments = [self._build(w, i)] if len(i) else []
            return
        tail = segs[1:]
        if len(ids):
            tail.append(self._build(words, ids, True))
        self._segments = [main, *self._merge_tail(tail)]

    # ---- persistence

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write a snapshot generation to ``path`` and attach to it (see module docstring)."""
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        attached_here = self._path is not None and self._path.resolve() == root.resolve()
        with _flock(root):
            if attached_here:
                self._sync_locked()
            self.flush()
            gen = _read_manifest(root).get("generation", 0) + 1 if _has_manifest(root) else 1
            gdir = root / f"gen-{gen:06d}"
            if gdir.exists():
                shutil.rmtree(gdir)
            gdir.mkdir()
            segs = []
            for j, seg in enumerate(self._segments):
                meta = seg.save(gdir / f"seg-{j}")
                meta["dir"] = f"seg-{j}"
                segs.append(meta)
            _write_json(gdir / "index.json", {"segments": segs, "entries": len(self)})
            (gdir / "log.bin").touch()
            _write_json(
                root / "MANIFEST.json",
                {"format": FORMAT, "version": FORMAT_VERSION, "generation": gen},
            )
            self._attach(root, gen, 0)
            # keep the previous generation for readers that are switching over
            for old in root.glob("gen-*"):
                if old.is_dir() and old.name < f"gen-{gen - 1:06d}":
                    shutil.rmtree(old, ignore_errors=True)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        mmap: bool = True,
        *,
        backend: Backend = "auto",
        refresh_interval: float = 0.25,
        checkpoint_every: int = CHECKPOINT_EVERY,
    ) -> MIHIndex:
        """Open an index written by ``save``: memory-mapped arrays plus the log tail."""
        index = cls(
            backend=backend, refresh_interval=refresh_interval, checkpoint_every=checkpoint_every
        )
        index._mmap = mmap
        index._load(Path(path))
        return index

    _mmap = True

    def _load(self, root: Path) -> None:
        last: Exception | None = None
        for _ in range(5):  # a writer may switch generations while we read
            try:
                manifest = _read_manifest(root)
                if manifest.get("format") != FORMAT or manifest.get("version") != FORMAT_VERSION:
                    raise ValueError(f"{root} is not a {FORMAT} v{FORMAT_VERSION} index")
                gen = int(manifest["generation"])
                gdir = root / f"gen-{gen:06d}"
                info = json.loads((gdir / "index.json").read_text())
                segs = [_Segment.load(gdir / m["dir"], m, self._mmap) for m in info["segments"]]
                self._segments = segs
                self._clear_buffer()
                self._attach(root, gen, 0)
                self._read_log()
                return
            except FileNotFoundError as e:
                last = e
                time.sleep(0.05)
        raise last if last else FileNotFoundError(root)

    def _attach(self, root: Path, gen: int, pos: int) -> None:
        self.close()
        self._path = root
        self._generation = gen
        self._log_fd = os.open(root / f"gen-{gen:06d}" / "log.bin", os.O_RDONLY)
        self._log_pos = pos
        self._last_refresh = time.monotonic()

    def close(self) -> None:
        """Detach from the directory (the in-memory index stays usable)."""
        if self._log_fd is not None:
            os.close(self._log_fd)
        self._log_fd = None
        self._path = None

    def __del__(self) -> None:
        try:
            if self._log_fd is not None:
                os.close(self._log_fd)
        except Exception:  # interpreter shutdown
            pass

    def refresh(self) -> int:
        """Apply what other processes appended (or a new generation). Returns records applied."""
        if self._path is None:
            return 0
        self._last_refresh = time.monotonic()
        if _read_manifest(self._path).get("generation") != self._generation:
            self._load(self._path)
            return -1
        return self._read_log()

    def _sync_locked(self) -> None:
        assert self._path is not None
        if _read_manifest(self._path).get("generation") != self._generation:
            self._load(self._path)
        else:
            self._read_log()

    def _read_log(self) -> int:
        assert self._log_fd is not None
        size = os.fstat(self._log_fd).st_size
        rs = LOG_DTYPE.itemsize
        usable = (size - self._log_pos) // rs * rs
        if usable <= 0:
            return 0
        data = os.pread(self._log_fd, usable, self._log_pos)
        usable = len(data) // rs * rs
        rec = np.frombuffer(data[:usable], dtype=LOG_DTYPE)
        self._log_pos += usable
        ops = rec["op"]
        # apply runs of equal ops in order
        cuts = np.flatnonzero(np.diff(ops.astype(np.int16))) + 1
        for run in np.split(np.arange(len(rec)), cuts):
            if not len(run):
                continue
            op = int(ops[run[0]])
            if op == OP_ADD:
                self._apply_add(rec["id"][run].astype(np.int64), words_from_codes(rec["code"][run]))
            elif op == OP_REMOVE:
                self._apply_remove(rec["id"][run].astype(np.int64))
            else:
                raise ValueError(f"corrupt index log record op={op}")
        return len(rec)

    def _append_log(self, rec: npt.NDArray[Any]) -> None:
        assert self._path is not None
        root = self._path
        with _flock(root):
            self._sync_locked()
            log = root / f"gen-{self._generation:06d}" / "log.bin"
            fd = os.open(log, os.O_WRONLY | os.O_APPEND)
            try:
                size = os.fstat(fd).st_size
                if size % LOG_DTYPE.itemsize:  # a writer died mid-record: drop the torn tail
                    os.ftruncate(fd, size - size % LOG_DTYPE.itemsize)
                os.write(fd, rec.tobytes())
                size = os.fstat(fd).st_size
            finally:
                os.close(fd)
            self._read_log()
        if self.checkpoint_every and size // LOG_DTYPE.itemsize >= self.checkpoint_every:
            self.save(root)


def _resized(a: npt.NDArray[Any], cap: int) -> npt.NDArray[Any]:
    out = np.zeros((cap, *a.shape[1:]), dtype=a.dtype)
    out[: len(a)] = a
    return out


def _compact_ids(ids: Ids) -> npt.NDArray[Any]:
    if len(ids) and int(ids.min()) >= 0 and int(ids.max()) < 1 << 32:
        return ids.astype(np.uint32)
    return np.ascontiguousarray(ids, dtype=np.int64)


def _empty_result() -> tuple[Ids, Dists]:
    return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int32)


def _assemble(
    parts: list[tuple[npt.NDArray[np.int64], Ids, npt.NDArray[np.int32]]], nq: int
) -> Result:
    if not parts:
        return [_empty_result() for _ in range(nq)]
    qi = np.concatenate([p[0] for p in parts])
    ids = np.concatenate([p[1] for p in parts])
    d = np.concatenate([p[2] for p in parts]).astype(np.int32)
    if nq < 1 << 22 and int(ids.min()) >= 0 and int(ids.max()) < 1 << 32:
        # one sort of packed (query, id, distance) keys: 22 + 32 + 9 bits
        key = (qi.astype(np.uint64) << np.uint64(41)) | (ids.astype(np.uint64) << np.uint64(9))
        key = np.sort(key | d.astype(np.uint64))
        qi = (key >> np.uint64(41)).astype(np.int64)
        ids = ((key >> np.uint64(9)) & np.uint64(0xFFFFFFFF)).astype(np.int64)
        d = (key & np.uint64(511)).astype(np.int32)
    else:
        order = np.lexsort((d, ids, qi))
        qi, ids, d = qi[order], ids[order], d[order]
    bounds = np.searchsorted(qi, np.arange(nq + 1))
    return [(ids[bounds[i] : bounds[i + 1]], d[bounds[i] : bounds[i + 1]]) for i in range(nq)]


def _has_manifest(root: Path) -> bool:
    return (root / "MANIFEST.json").exists()


def _read_manifest(root: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((root / "MANIFEST.json").read_text())
    return data


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@contextlib.contextmanager
def _flock(root: Path) -> Iterator[None]:
    fd = os.open(root / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def default_index(size_hint: int | None = None) -> HammingIndex:
    """The index the matcher uses: brute force for tiny banks, MIH otherwise.

    ``MIHIndex`` itself scans small banks with numpy, so the only reason to return the flat
    index is to keep tiny lookups free of any setup; both give identical results.
    """
    if size_hint is not None and size_hint < 256:
        return FlatHammingIndex()
    return MIHIndex()
