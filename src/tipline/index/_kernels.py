# mypy: ignore-errors
"""Compiled (numba) kernels for the multi-index hashing index in ``tipline.index.mih``.

Every kernel here has a pure-numpy twin in ``mih.py`` that gives identical results; the tests
run both and compare. This module is imported lazily (only for large indexes), so a tiny bank
never pays numba's import and JIT cost.

Codes are 4 little-endian ``uint64`` words (the 32 bytes of the hex, viewed as ``<u8``).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic


@intrinsic
def _popcnt(typingctx, x):
    if not isinstance(x, types.Integer):
        return None
    sig = types.int64(types.uint64)

    def codegen(context, builder, signature, args):
        v = builder.ctpop(args[0])
        return builder.zext(v, context.get_value_type(types.int64)) if v.type.width < 64 else v

    return sig, codegen


_U = np.uint64


@njit(cache=True, nogil=True, inline="always")
def _dist(words, p, q0, q1, q2, q3):
    return (
        _popcnt(words[p, 0] ^ q0)
        + _popcnt(words[p, 1] ^ q1)
        + _popcnt(words[p, 2] ^ q2)
        + _popcnt(words[p, 3] ^ q3)
    )


@njit(cache=True, nogil=True, inline="always")
def _key(w0, w1, w2, w3, word, shift, kmask):
    """Bits [64*word + shift, +b) of the code as an integer (b given by ``kmask``)."""
    ws = (w0, w1, w2, w3)
    v = ws[word] >> _U(shift)
    if shift > 0 and word < 3:
        v |= ws[word + 1] << _U(64 - shift)
    return v & kmask


@njit(cache=True, nogil=True)
def table_keys(words, word, shift, bits):
    n = words.shape[0]
    kmask = _U((1 << bits) - 1)
    out = np.empty(n, np.uint32)
    for i in range(n):
        out[i] = _key(words[i, 0], words[i, 1], words[i, 2], words[i, 3], word, shift, kmask)
    return out


@njit(cache=True, nogil=True)
def counting_sort(keys, nbuckets):
    """Stable counting sort: (order uint32[n], offsets uint32[nbuckets + 1])."""
    n = keys.shape[0]
    offsets = np.zeros(nbuckets + 1, np.uint32)
    for i in range(n):
        offsets[keys[i] + 1] += 1
    for k in range(nbuckets):
        offsets[k + 1] += offsets[k]
    fill = offsets[:-1].copy()
    order = np.empty(n, np.uint32)
    for i in range(n):
        k = keys[i]
        order[fill[k]] = i
        fill[k] += 1
    return order, offsets


@intrinsic
def _prefetch_row(typingctx, arr, row):
    """Hint the CPU to load ``arr[row, 0]`` (llvm.prefetch, read, high locality)."""
    if not isinstance(arr, types.Array) or arr.ndim != 2:
        return None
    sig = types.void(arr, row)

    def codegen(context, builder, signature, args):
        arrty = signature.args[0]
        ary = context.make_array(arrty)(context, builder, args[0])
        zero = context.get_constant(types.intp, 0)
        row_i = context.cast(builder, args[1], signature.args[1], types.intp)
        ptr = cgutils.get_item_pointer2(
            context,
            builder,
            data=ary.data,
            shape=cgutils.unpack_tuple(builder, ary.shape),
            strides=cgutils.unpack_tuple(builder, ary.strides),
            layout=arrty.layout,
            inds=[row_i, zero],
            wraparound=False,
            boundscheck=False,
        )
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        builder.call(
            fn,
            [
                builder.bitcast(ptr, i8p),
                ir.Constant(i32, 0),
                ir.Constant(i32, 3),
                ir.Constant(i32, 1),
            ],
        )
        return context.get_dummy_value()

    return sig, codegen


#: Candidates are verified in chunks of this many (fixed buffers: growing arrays inside the
#: loops stops LLVM from optimising them).
_CHUNK = 4096


@njit(cache=True, nogil=True)
def _verify(
    words,
    live,
    cand,
    cd,
    nc,
    q0,
    q1,
    q2,
    q3,
    t,
    tmasks,
    subrad,
    radius,
    qi,
    out_q,
    out_p,
    out_d,
    cnt,
):
    for i in range(nc):  # independent loads: the CPU overlaps the cache misses
        cd[i] = _dist(words, cand[i], q0, q1, q2, q3)
    cap = out_q.shape[0]
    for i in range(nc):
        d = cd[i]
        if d > radius:
            continue
        p = cand[i]
        if not live[p]:
            continue
        # reported by an earlier table already?
        dup = False
        for u in range(t):
            if subrad[u] < 0:
                continue
            sd = (
                _popcnt((words[p, 0] ^ q0) & tmasks[u, 0])
                + _popcnt((words[p, 1] ^ q1) & tmasks[u, 1])
                + _popcnt((words[p, 2] ^ q2) & tmasks[u, 2])
                + _popcnt((words[p, 3] ^ q3) & tmasks[u, 3])
            )
            if sd <= subrad[u]:
                dup = True
                break
        if dup:
            continue
        if cnt < cap:
            out_q[cnt] = qi
            out_p[cnt] = p
            out_d[cnt] = d
        cnt += 1
    return cnt


@njit(cache=True, nogil=True)
def mih_search(
    words,  # (n, 4) uint64, in table-0 key order
    live,  # (n,) bool
    offsets,  # (m, 2**bits + 1) uint32
    positions,  # (m - 1, n) uint32: bucket contents of tables 1..m-1
    twords,  # (m,) int64: word holding the table's first bit
    tshifts,  # (m,) int64: bit offset in that word
    tmasks,  # (m, 4) uint64: the table's bits, for sub-distances
    bits,
    masks,  # (K,) uint32: all b-bit masks, by popcount
    nprobe,  # (m,) int64: how many masks to probe per table (0: skip table)
    subrad,  # (m,) int64: sub-radius per table (-1: skipped)
    queries,  # (q, 4) uint64
    radius,
    q_start,  # first query row to process
    cnt,  # hits already in the outputs
    out_q,  # (cap,) int64: query row of each hit
    out_p,  # (cap,) int64: segment row of each hit
    out_d,  # (cap,) int32: distance of each hit
):
    """Appends hits after ``cnt``; returns (hits, next query row). Stops after the first
    query whose hits did not fit, returning its row: grow the outputs and resume there."""
    m = offsets.shape[0]
    kmask = _U((1 << bits) - 1)
    cap = out_q.shape[0]
    maxp = 1
    for t in range(m):
        maxp = max(maxp, nprobe[t])
    lo = np.empty(maxp, np.int64)
    hi = np.empty(maxp, np.int64)
    cand = np.empty(_CHUNK, np.int64)
    cd = np.empty(_CHUNK, np.int64)
    for qi in range(q_start, queries.shape[0]):
        before = cnt
        q0 = queries[qi, 0]
        q1 = queries[qi, 1]
        q2 = queries[qi, 2]
        q3 = queries[qi, 3]
        for t in range(m):
            npb = nprobe[t]
            if npb == 0:
                continue
            key = _key(q0, q1, q2, q3, twords[t], tshifts[t], kmask)
            # phase 1: bucket bounds (independent loads, overlapped by the CPU)
            for j in range(npb):
                k = key ^ _U(masks[j])
                lo[j] = offsets[t, k]
                hi[j] = offsets[t, k + 1]
            # phase 2: collect candidates (prefetching their codes), verify in chunks
            nc = 0
            for j in range(npb):
                for c in range(lo[j], hi[j]):
                    p = c if t == 0 else np.int64(positions[t - 1, c])
                    _prefetch_row(words, p)
                    cand[nc] = p
                    nc += 1
                    if nc == _CHUNK:
                        cnt = _verify(
                            words,
                            live,
                            cand,
                            cd,
                            nc,
                            q0,
                            q1,
                            q2,
                            q3,
                            t,
                            tmasks,
                            subrad,
                            radius,
                            qi,
                            out_q,
                            out_p,
                            out_d,
                            cnt,
                        )
                        nc = 0
            if nc:
                cnt = _verify(
                    words,
                    live,
                    cand,
                    cd,
                    nc,
                    q0,
                    q1,
                    q2,
                    q3,
                    t,
                    tmasks,
                    subrad,
                    radius,
                    qi,
                    out_q,
                    out_p,
                    out_d,
                    cnt,
                )
        if cnt > cap:
            return before, qi
    return cnt, queries.shape[0]


#: Queries compared with each code at once by ``scan_search`` (16 x 4 words fill the AVX-512
#: registers; measured fastest).
SCAN_GROUP = 16


@njit(cache=True, nogil=True)
def scan_search(words, live, count, queries, radius, q_start, cnt, out_q, out_p, out_d):
    """Batched brute force over the first ``count`` rows: each code is loaded once per group
    of ``SCAN_GROUP`` queries and compared with all of them in SIMD lanes (the inner loop runs
    across queries, so it vectorises). Output protocol as ``mih_search``."""
    cap = out_q.shape[0]
    nq = queries.shape[0]
    qt = np.empty((4, SCAN_GROUP), np.uint64)
    dist = np.empty(SCAN_GROUP, np.int64)
    for g0 in range(q_start, nq, SCAN_GROUP):
        g1 = min(nq, g0 + SCAN_GROUP)
        before = cnt
        for j in range(SCAN_GROUP):  # pad a short group with its first query
            src = g0 + j if g0 + j < g1 else g0
            for w in range(4):
                qt[w, j] = queries[src, w]
        for i in range(count):
            w0 = words[i, 0]
            w1 = words[i, 1]
            w2 = words[i, 2]
            w3 = words[i, 3]
            mn = 1 << 20
            for j in range(SCAN_GROUP):
                d = (
                    _popcnt(w0 ^ qt[0, j])
                    + _popcnt(w1 ^ qt[1, j])
                    + _popcnt(w2 ^ qt[2, j])
                    + _popcnt(w3 ^ qt[3, j])
                )
                dist[j] = d
                mn = min(mn, d)
            if mn > radius or not live[i]:
                continue
            for j in range(g1 - g0):
                d = dist[j]
                if d <= radius:
                    if cnt < cap:
                        out_q[cnt] = g0 + j
                        out_p[cnt] = i
                        out_d[cnt] = d
                    cnt += 1
        if cnt > cap:
            return before, g0
    return cnt, nq


@njit(cache=True, nogil=True)
def scan_search_rows(words, live, count, queries, radius, q_start, cnt, out_q, out_p, out_d):
    """Brute force for one or a few queries: blocks of codes stay in cache while each query
    of a group is compared with them. Output protocol as ``mih_search``."""
    block = 2048
    group = 32
    cap = out_q.shape[0]
    dist = np.empty(block, np.int64)
    nq = queries.shape[0]
    for g0 in range(q_start, nq, group):
        g1 = min(nq, g0 + group)
        before = cnt
        for b0 in range(0, count, block):
            b1 = min(count, b0 + block)
            for qi in range(g0, g1):
                q0 = queries[qi, 0]
                q1 = queries[qi, 1]
                q2 = queries[qi, 2]
                q3 = queries[qi, 3]
                hits = 0
                for i in range(b0, b1):
                    d = _dist(words, i, q0, q1, q2, q3)
                    dist[i - b0] = d
                    hits += d <= radius
                if hits == 0:
                    continue
                for i in range(b0, b1):
                    d = dist[i - b0]
                    if d <= radius and live[i]:
                        if cnt < cap:
                            out_q[cnt] = qi
                            out_p[cnt] = i
                            out_d[cnt] = d
                        cnt += 1
        if cnt > cap:
            return before, g0
    return cnt, nq


@njit(cache=True, nogil=True)
def kill_ids(ids, live, count, sorted_remove):
    """Clear ``live`` for rows whose id is in ``sorted_remove``; returns how many were live."""
    killed = 0
    k = sorted_remove.shape[0]
    if k == 0:
        return 0
    lo_id = sorted_remove[0]
    hi_id = sorted_remove[k - 1]
    for i in range(count):
        v = ids[i]
        if v < lo_id or v > hi_id or not live[i]:
            continue
        j = np.searchsorted(sorted_remove, v)
        if j < k and sorted_remove[j] == v:
            live[i] = False
            killed += 1
    return killed
