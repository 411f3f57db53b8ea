"""The PDQ index (``tipline.index.mih``): exact against brute force, updates, persistence.

All codes are random or PDQ hashes of benign procedural images (``bench/synthetic.py``).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tipline.index import mih
from tipline.index.hamming import FlatHammingIndex, codes_from_hex
from tipline.index.mih import (
    MERGE_FACTOR,
    MIHIndex,
    TableLayout,
    default_index,
    numba_available,
    plan_for,
)

# the bank generator is benchmark tooling (bench/), not part of the package
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from synthetic import flip_bits, realistic_bank, realistic_queries, seed_hashes

BACKENDS = ["numpy", "numba"]
Codes = npt.NDArray[np.uint8]


def clumpy(rng: np.random.Generator, n: int, centers: int, max_flip: int) -> Codes:
    """``n`` codes: near-duplicate clumps around a few centers (some low-entropy), plus noise."""
    base = rng.integers(0, 256, (max(centers, 1), 32), dtype=np.uint8)
    base[0] = 0  # the all-zero hash that flat images give
    if centers > 2:
        base[1] = 0xF0  # a low-entropy pattern
    src = base[rng.integers(0, len(base), n)]
    counts = rng.integers(0, max_flip + 1, n).astype(np.int64)
    out = flip_bits(rng, src, counts, np.ones(256))
    uniform = rng.random(n) < 0.2
    out[uniform] = rng.integers(0, 256, (int(uniform.sum()), 32), dtype=np.uint8)
    return out


def flip(code: Codes, bits: list[int]) -> Codes:
    out = code.copy()
    for b in bits:
        out[b // 8] ^= np.uint8(1 << (b % 8))
    return out


def queries_for(rng: np.random.Generator, codes: Codes, nq: int) -> Codes:
    near = codes[rng.integers(0, len(codes), nq)] if len(codes) else np.zeros((0, 32), np.uint8)
    counts = rng.integers(0, 70, len(near)).astype(np.int64)
    q = flip_bits(rng, near, counts, np.ones(256)) if len(near) else near
    return np.concatenate([q, rng.integers(0, 256, (2, 32), dtype=np.uint8)])


def assert_same(index: object, flat: FlatHammingIndex, queries: Codes, radius: int) -> None:
    got = index.search(queries, radius)  # type: ignore[attr-defined]
    want = flat.search(queries, radius)
    assert len(got) == len(want) == len(queries)
    for (gi, gd), (wi, wd) in zip(got, want, strict=True):
        order = np.lexsort((wd, wi))
        assert gi.dtype == np.int64 and gd.dtype == np.int32
        np.testing.assert_array_equal(gi, wi[order], err_msg=f"ids at radius {radius}")
        np.testing.assert_array_equal(gd, wd[order], err_msg=f"distances at radius {radius}")


def small_index(backend: str, bits: int = 12, **kw: int) -> MIHIndex:
    # tiny tables and buffer so that small test data goes through the hashed path and merges
    return MIHIndex(backend=backend, bits=bits, min_table_size=16, buffer_limit=24, **kw)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(0, 400),
    centers=st.integers(1, 6),
    max_flip=st.integers(0, 40),
    bits=st.integers(12, 16),
    radii=st.lists(st.integers(0, 63), min_size=1, max_size=4),
)
def test_exact_against_brute_force(
    backend: str, seed: int, n: int, centers: int, max_flip: int, bits: int, radii: list[int]
) -> None:
    rng = np.random.default_rng(seed)
    codes = clumpy(rng, n, centers, max_flip)
    ids = rng.permutation(n * 3)[:n].astype(np.int64)
    index = small_index(backend, bits)
    index.add(ids, codes)
    flat = FlatHammingIndex()
    flat.add(ids, codes)
    q = queries_for(rng, codes, 12)
    for r in radii:
        assert_same(index, flat, q, r)


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_radius_0_to_63_and_beyond(backend: str) -> None:
    rng = np.random.default_rng(5)
    codes = clumpy(rng, 3000, 8, 30)
    ids = np.arange(len(codes), dtype=np.int64) + 10
    index = MIHIndex(backend=backend, min_table_size=1000, buffer_limit=1000)  # type: ignore[arg-type]
    index.add(ids, codes)
    assert index.stats()["segments"][0]["m"] is not None  # hashed, not scanned
    flat = FlatHammingIndex()
    flat.add(ids, codes)
    q = queries_for(rng, codes, 25)
    for r in [*range(64), 80, 128, 255, 256, 300]:
        assert_same(index, flat, q, r)
    assert [len(x[0]) for x in index.search(q, -1)] == [0] * len(q)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(40, 600), radius=st.integers(0, 63))
def test_numba_and_numpy_paths_agree(seed: int, n: int, radius: int) -> None:
    rng = np.random.default_rng(seed)
    codes = clumpy(rng, n, 4, 20)
    ids = np.arange(n, dtype=np.int64)
    a, b = small_index("numpy", 13), small_index("numba", 13)
    for x in (a, b):
        x.add(ids, codes)
        x.remove(ids[::7])
    # identical build: same order, same tables
    for sa, sb in zip(a._segments, b._segments, strict=True):
        np.testing.assert_array_equal(sa.words, sb.words)
        np.testing.assert_array_equal(sa.ids, sb.ids)
        if sa.offsets is not None:
            np.testing.assert_array_equal(sa.offsets, sb.offsets)
            np.testing.assert_array_equal(sa.positions, sb.positions)  # type: ignore[arg-type]
    q = queries_for(rng, codes, 10)
    for (ia, da), (ib, db) in zip(a.search(q, radius), b.search(q, radius), strict=True):
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(da, db)


@pytest.mark.parametrize("backend", BACKENDS)
def test_adversarial_codes_on_the_pigeonhole_boundary(backend: str) -> None:
    """Codes exactly ``r`` away whose flips are spread so that only one table is within its
    sub-radius (and flips in the bits no table indexes): each must be found, for every r."""
    rng = np.random.default_rng(21)
    bits = 12
    layout = TableLayout.for_size(0, bits)
    m, b = layout.m, layout.bits
    leftover = list(range(m * b, 256))
    query = rng.integers(0, 256, 32, dtype=np.uint8)
    codes, want = [], []
    for r in range(64):
        # the most each table can differ by while the code stays out of the bucket probes
        s, a = divmod(r, m)
        subrad = [s if t <= a else s - 1 for t in range(m)]
        for weak in range(m):
            if subrad[weak] < 0:
                continue
            flips: list[int] = []
            budget = r
            extra = min(len(leftover), int(rng.integers(0, 4)), budget)
            flips += list(rng.choice(leftover, extra, replace=False))
            budget -= extra
            for t in [weak, *[u for u in range(m) if u != weak]]:
                k = subrad[t] + (0 if t == weak else 1)
                k = min(k, budget, b)
                flips += [t * b + int(x) for x in rng.choice(b, k, replace=False)]
                budget -= k
            if budget:  # more flips than the tables can take without a second weak table
                continue
            codes.append(flip(query, flips))
            want.append(r)
    codes_arr = np.stack(codes)
    ids = np.arange(len(codes_arr), dtype=np.int64)
    index = MIHIndex(backend=backend, bits=bits, min_table_size=16, buffer_limit=16)  # type: ignore[arg-type]
    index.add(ids, codes_arr)
    flat = FlatHammingIndex()
    flat.add(ids, codes_arr)
    assert flat.distances(query).tolist() == want
    for r in range(64):
        assert_same(index, flat, query[None, :], r)


def test_both_methods_used_and_plans_are_exact_by_pigeonhole() -> None:
    layout = TableLayout.for_size(10_000_000)
    assert (layout.bits, layout.m) == (23, 11)
    for r in range(64):
        plan = plan_for(layout, r)
        # a code beyond every sub-radius is at least r + 1 away
        assert int(np.sum(plan.subrad + 1)) == r + 1
    index = MIHIndex(min_table_size=100, buffer_limit=100)
    rng = np.random.default_rng(1)
    index.add(np.arange(50_000), rng.integers(0, 256, (50_000, 32), dtype=np.uint8))
    assert index.method_for(31) == "mih"
    assert index.method_for(100) == "scan"


# --------------------------------------------------------------------------- updates


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    ops=st.lists(st.tuples(st.sampled_from(["add", "remove", "search"]), st.integers(1, 60))),
)
def test_adds_and_removes_match_brute_force(backend: str, seed: int, ops: list) -> None:  # type: ignore[type-arg]
    rng = np.random.default_rng(seed)
    pool = clumpy(rng, 2000, 5, 25)
    index = small_index(backend, 12)
    flat = FlatHammingIndex()
    next_id = 0
    added: list[int] = []
    for op, k in ops:
        if op == "add":
            ids = np.arange(next_id, next_id + k, dtype=np.int64)
            if rng.random() < 0.2 and added:  # the same id twice, as FlatHammingIndex allows
                ids[0] = added[0]
            codes = pool[rng.integers(0, len(pool), k)]
            index.add(ids, codes)
            flat.add(ids, codes)
            added.extend(ids.tolist())
            next_id += k
        elif op == "remove" and added:
            gone = rng.choice(added, min(k, len(added)), replace=False).astype(np.int64)
            index.remove(gone)
            flat.remove(gone)
        assert len(index) == len(flat)
        assert_same(index, flat, queries_for(rng, pool, 4), int(rng.integers(0, 64)))


def test_add_is_searchable_at_once_and_merges_without_full_rebuild() -> None:
    rng = np.random.default_rng(3)
    base = rng.integers(0, 256, (40_000, 32), dtype=np.uint8)
    index = MIHIndex(min_table_size=1000, buffer_limit=500)
    index.add(np.arange(len(base)), base)
    main = index._segments[0]
    new = rng.integers(0, 256, (1200, 32), dtype=np.uint8)
    for i in range(0, len(new), 100):
        index.add(np.arange(100) + 100_000 + i, new[i : i + 100])
        got = index.search(new[i : i + 1], 0)[0][0]
        assert got.tolist() == [100_000 + i]
    assert index._segments[0] is main  # the main segment was not rebuilt
    # two buffer flushes: two level-0 tail segments (not merged below MERGE_FACTOR of them)
    assert len(index._segments) == 3 and len(index) == 41_200
    index.remove(np.array([100_000, 5]))
    assert index.search(new[:1], 0)[0][0].size == 0
    assert index.search(base[5:6], 0)[0][0].size == 0
    assert len(index) == 41_198


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_growing_one_batch_at_a_time_rebuilds_each_code_log_n_times(backend: str) -> None:
    """A bank followed through a long fetch (batches of adds into a growing index): each code
    is rebuilt a bounded number of times (about 9 in main-segment rebuilds plus one per tail
    level), not in proportion to the index (the old single tail was rebuilt whole at every
    buffer flush: ~40 rebuilds per code here, growing with n). Results stay exact and the tail
    stays a few segments."""
    if backend == "numba" and not numba_available():
        pytest.skip("numba not installed")
    rng = np.random.default_rng(11)
    limit, n, batch = 64, 40_000, 50
    index = MIHIndex(backend=backend, min_table_size=256, buffer_limit=limit)  # type: ignore[arg-type]
    codes = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    for i in range(0, n, batch):
        index.add(np.arange(i, i + batch), codes[i : i + batch])
        tail = index._segments[1:]
        per_level: dict[int, int] = {}
        for t in tail:
            lv = index.tail_level(t.n_live)
            per_level[lv] = per_level.get(lv, 0) + 1
        assert all(c < MERGE_FACTOR for c in per_level.values()), per_level
    assert len(index) == n
    per_code = index.rebuilt_codes / n
    levels = math.log(n / (8 * limit), MERGE_FACTOR)
    assert per_code <= 10 + levels + 1, per_code
    assert len(index._segments) <= 1 + (MERGE_FACTOR - 1) * (math.ceil(levels) + 1)
    flat = FlatHammingIndex()
    flat.add(np.arange(n), codes)
    queries = np.concatenate([codes[rng.integers(0, n, 6)], codes[-3:]])
    for radius in (0, 31, 64):
        assert_same(index, flat, queries, radius)


@pytest.mark.parametrize("backend", BACKENDS)
def test_tiered_tail_with_removes_stays_exact(backend: str) -> None:
    """Many small batches with removes in between (tail segments merged by level, half-dead
    ones compacted by themselves, the main one rebuilt now and then): always what brute force
    finds, and never MERGE_FACTOR tail segments of one level."""
    rng = np.random.default_rng(21)
    pool = clumpy(rng, 3000, 8, 20)
    index = small_index(backend, 12)
    flat = FlatHammingIndex()
    live: list[int] = []
    next_id = 0
    for step in range(400):
        k = int(rng.integers(1, 40))
        ids = np.arange(next_id, next_id + k, dtype=np.int64)
        codes = pool[rng.integers(0, len(pool), k)]
        index.add(ids, codes)
        flat.add(ids, codes)
        live.extend(ids.tolist())
        next_id += k
        if rng.random() < 0.4 and live:
            recent = np.asarray(live[-150:])  # mostly in the tail: half-dead tail segments
            gone = rng.choice(recent, size=min(len(recent), int(rng.integers(1, 40))))
            index.remove(gone)
            flat.remove(gone)
            drop = set(gone.tolist())
            live = [i for i in live if i not in drop]
        levels = [index.tail_level(t.n_live) for t in index._segments[1:]]
        assert all(levels.count(lv) < MERGE_FACTOR for lv in set(levels)), levels
        if step % 40 == 39:
            assert len(index) == len(flat) == len(live)
            assert_same(index, flat, queries_for(rng, pool, 4), int(rng.integers(0, 48)))
    assert len(index._segments) > 2  # the tail did have several segments


def test_dihedral_hashes_of_one_image_are_one_batch() -> None:
    from tipline.signals.pdq import fast_hash

    yy, xx = np.mgrid[0:128, 0:160]
    img = (128 + 60 * np.sin(xx / 9.0) + 50 * np.cos(yy / 13.0) + (xx * yy) % 37).astype(np.float32)
    variants = [h.hex for h in fast_hash(img, dihedral=True)]
    assert len(set(variants)) == 8
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (5000, 32), dtype=np.uint8)
    # the bank holds the image rotated by 90 degrees (variant 1), plus noise
    bank = np.concatenate([noise, codes_from_hex([variants[1]])])
    index = MIHIndex(min_table_size=1000, buffer_limit=1000)
    index.add(np.arange(len(bank)), bank)
    flat = FlatHammingIndex()
    flat.add(np.arange(len(bank)), bank)
    q = codes_from_hex(variants)
    batch = index.search(q, 31)
    assert batch[1][0].tolist() == [5000] and batch[1][1].tolist() == [0]
    for i in range(8):
        single = index.search(q[i : i + 1], 31)[0]
        np.testing.assert_array_equal(batch[i][0], single[0])
    assert_same(index, flat, q, 31)


# --------------------------------------------------------------------------- persistence


def test_save_open_round_trip_uses_only_npy_and_json(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    codes = clumpy(rng, 5000, 6, 20)
    ids = np.arange(len(codes), dtype=np.int64) * 2 + (1 << 40)  # ids beyond 32 bits
    index = MIHIndex(min_table_size=1000, buffer_limit=300)
    index.add(ids[:4000], codes[:4000])
    index.add(ids[4000:4100], codes[4000:4100])  # stays in the buffer until save
    index.remove(ids[:50])
    flat = FlatHammingIndex()
    flat.add(ids[:4100], codes[:4100])
    flat.remove(ids[:50])
    index.save(tmp_path / "idx")
    files = [p for p in (tmp_path / "idx").rglob("*") if p.is_file()]
    assert {p.suffix for p in files} <= {".npy", ".json", ".bin", ""}
    assert {p.name for p in files if p.suffix == ""} == {"lock"}
    for p in files:
        if p.suffix == ".npy":
            arr = np.load(p, allow_pickle=False)  # raises if anything was pickled
            assert arr.dtype != object
        if p.suffix == ".json":
            json.loads(p.read_text())
    q = queries_for(rng, codes, 20)
    for mmap in (True, False):
        opened = MIHIndex.open(tmp_path / "idx", mmap=mmap)
        assert len(opened) == len(flat)
        for r in (0, 10, 31, 50):
            assert_same(opened, flat, q, r)
        if mmap:
            assert isinstance(opened._segments[0].words, np.memmap)
        opened.close()


def test_log_makes_adds_visible_to_a_second_index(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    codes = rng.integers(0, 256, (3000, 32), dtype=np.uint8)
    writer = MIHIndex(min_table_size=1000)
    writer.add(np.arange(3000), codes)
    writer.save(tmp_path)
    reader = MIHIndex.open(tmp_path, refresh_interval=0.0)
    new = rng.integers(0, 256, (3, 32), dtype=np.uint8)
    writer.add(np.array([7001, 7002, 7003]), new)
    writer.remove(np.array([0]))
    assert reader.search(new, 0)[2][0].tolist() == [7003]
    assert reader.search(codes[:1], 0)[0][0].size == 0
    # a checkpoint starts a new generation; the reader follows it
    writer.save(tmp_path)
    assert json.loads((tmp_path / "MANIFEST.json").read_text())["generation"] == 2
    writer.add(np.array([7004]), new[:1])
    got = reader.search(new[:1], 0)[0][0].tolist()
    assert got == [7001, 7004]
    assert reader._generation == 2 and len(reader) == len(writer) == 3003


def test_torn_log_record_is_ignored_then_repaired(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    index = MIHIndex()
    index.add(np.arange(10), rng.integers(0, 256, (10, 32), dtype=np.uint8))
    index.save(tmp_path)
    log = tmp_path / "gen-000001" / "log.bin"
    with open(log, "ab") as f:
        f.write(b"\x01" * 20)  # a writer died mid-record
    reader = MIHIndex.open(tmp_path)
    assert len(reader) == 10
    code = rng.integers(0, 256, (1, 32), dtype=np.uint8)
    index.add(np.array([99]), code)
    assert log.stat().st_size == 48
    reader.refresh()
    assert reader.search(code, 0)[0][0].tolist() == [99]


def test_second_process_sees_new_entries_within_a_second(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    codes = rng.integers(0, 256, (2000, 32), dtype=np.uint8)
    writer = MIHIndex()
    writer.add(np.arange(2000), codes)
    writer.save(tmp_path)
    new = rng.integers(0, 256, (1, 32), dtype=np.uint8)
    script = textwrap.dedent(
        f"""
        import sys, time
        import numpy as np
        from tipline.index.mih import MIHIndex
        idx = MIHIndex.open({str(tmp_path)!r})
        q = np.frombuffer(bytes.fromhex({new[0].tobytes().hex()!r}), np.uint8).reshape(1, 32)
        print("ready", len(idx), flush=True)
        sys.stdin.readline()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 10:
            ids = idx.search(q, 0)[0][0].tolist()
            if ids:
                print("seen", ids, round(time.monotonic() - t0, 3), flush=True)
                break
            time.sleep(0.01)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(mih.__file__).parents[2])}
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdin is not None and proc.stdout is not None
    assert proc.stdout.readline().split() == ["ready", "2000"]
    proc.stdin.write("go\n")
    proc.stdin.flush()
    writer.add(np.array([424242]), new)
    out, _ = proc.communicate(timeout=60)
    words = out.split()
    assert words[:2] == ["seen", "[424242]"], out
    assert float(words[2]) < 1.0  # refresh_interval is 0.25 s


# --------------------------------------------------------------------------- matcher, data


def test_default_index_and_matcher_use_it() -> None:
    from tipline.banks.bank import Bank, Entry
    from tipline.index.bank_index import BankIndex
    from tipline.index.signal_index import HammingSignalIndex
    from tipline.record import ItemRecord

    assert isinstance(default_index(10), FlatHammingIndex)
    assert isinstance(default_index(), MIHIndex)
    rng = np.random.default_rng(9)
    codes = rng.integers(0, 256, (600, 32), dtype=np.uint8)
    hexes = [c.tobytes().hex() for c in codes]
    banks = [Bank("ALERTS", role="alert", pdq_threshold=10), Bank("OK", role="ignore")]
    entries = [
        Entry(id=i + 1, bank="ALERTS" if i < 500 else "OK", signal_type="pdq", signal=h)
        for i, h in enumerate(hexes)
    ]
    matcher = BankIndex.build(banks, entries)
    pdq_index = matcher.type_index("pdq")
    assert isinstance(pdq_index, HammingSignalIndex)
    assert isinstance(pdq_index.hamming, MIHIndex)
    near = flip(codes[3], list(range(0, 80, 4)))  # 20 bits from entry 4
    rec = ItemRecord(path="x.jpg", pdq=near.tobytes().hex(), pdq_quality=90)
    assert [m.entry_id for m in matcher.match(rec)] == []  # ALERTS threshold is 10
    rec = ItemRecord(path="x.jpg", pdq=flip(codes[550], [1, 2]).tobytes().hex(), pdq_quality=90)
    assert [(m.entry_id, m.distance, m.role) for m in matcher.match(rec)] == [(551, 2, "ignore")]


def test_synthetic_bank_is_seeded_and_clumpy() -> None:
    sh = seed_hashes(bases=24)
    assert sh.codes.shape[1] == 32 and len(sh.codes) >= 24 * 4
    assert abs(float(sh.weights.mean()) - 1.0) < 1e-9
    a = realistic_bank(3000, seed=1, bases=24)
    b = realistic_bank(3000, seed=1, bases=24)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, realistic_bank(3000, seed=2, bases=24))
    # clumpy: far more close pairs than uniform codes would have (none within 31 among 3000)
    flat = FlatHammingIndex()
    flat.add(np.arange(len(a)), a)
    close = sum(len(ids) - 1 for ids, _ in flat.search(a[:300], 31))
    assert close > 100
    q = realistic_queries(a, 40, bases=24)
    assert q.shape == (40, 32)


def test_exact_index_shared_signals_removes_and_re_adds() -> None:
    """One id per signal is kept bare, several as a set: lookups, removes and re-adds behave as
    a dict of sets would."""
    from tipline.index.signal_index import ExactIndex

    a, b, c = "a" * 32, "b" * 32, "c" * 32
    idx = ExactIndex()
    idx.add([1, 2, 3], [a, a, b])
    assert idx.query([a], 0).ids.tolist() == [1, 2] and idx.query([b], 0).ids.tolist() == [3]
    idx.add([4], [a])
    idx.remove([1, 2])
    assert idx.query([a], 0).ids.tolist() == [4]
    idx.add([4], [c])  # re-added with a new signal: the old one no longer finds it
    assert idx.query([a], 0).ids.size == 0 and idx.query([c], 0).ids.tolist() == [4]
    idx.add([5, 5], [a, b])  # one id twice in one call: the last signal wins
    assert idx.query([a], 0).ids.size == 0 and idx.query([b], 0).ids.tolist() == [3, 5]
    idx.add([3], [b])  # the same signal again: nothing changes
    assert idx.query([b, c], 0).ids.tolist() == [3, 4, 5] and len(idx) == 3
    idx.remove([3, 5, 99])
    assert idx.query([b], 0).ids.size == 0 and len(idx) == 1
    assert idx.prefix("c" * 12) == [4]
