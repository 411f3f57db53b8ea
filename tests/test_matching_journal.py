"""A serving process following the bank-change journal: rotations read through without a
rebuild, and journal adds applied column by column (``BankIndex.add_rows``) index exactly what
``BankIndex.add`` does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tipline.banks.bank import Bank, Entry
from tipline.index import journal
from tipline.index.bank_index import BankIndex
from tipline.service.matching import MatchService
from tipline.store import migrations

BANK = {
    "name": "FOLLOWED",
    "role": "alert",
    "pdq_threshold": 31,
    "enabled": True,
    "description": "",
    "created_at": 0.0,
    "enabled_ratio": 1.0,
}


def _pdq(rng: np.random.Generator, n: int) -> list[str]:
    return [bytes(c).hex() for c in rng.integers(0, 256, (n, 32), dtype=np.uint8)]


def _service(tmp_path: Path) -> MatchService:
    url = f"sqlite:///{tmp_path / 'x.sqlite3'}"
    migrations.upgrade(url)
    svc = MatchService.for_data_dir(tmp_path, url, tmp_path / "index", refresh=3600)
    svc.load()
    svc._stop.set()  # no watcher thread: the test calls catch_up
    return svc


def _rows(first_id: int, signals: list[str]) -> list[journal.EntryRow]:
    return [(first_id + i, "FOLLOWED", "pdq", s, "", True, None) for i, s in enumerate(signals)]


def _count_loads(svc: MatchService) -> list[int]:
    """Counts the service's full rebuilds (``load``) in the list's one element."""
    loads = [0]
    real_load = svc.load

    def counted() -> None:
        loads[0] += 1
        real_load()

    svc.load = counted  # type: ignore[method-assign]
    return loads


def test_a_rotation_is_read_through_without_a_rebuild(tmp_path: Path) -> None:
    """The entries live only in the journal (not the database): a rebuild would lose them, so
    finding every one after rotations proves the rotated file was read to its end."""
    rng = np.random.default_rng(5)
    svc = _service(tmp_path)
    loads = _count_loads(svc)
    path = tmp_path / "index" / journal.JOURNAL
    rotate = 20_000  # bytes: a rotation every few lines
    seen: list[str] = []
    try:
        journal.append(path, {"op": "bank", "bank": BANK, "by": "t"}, rotate)
        next_id = 1
        for _ in range(12):
            batch = _pdq(rng, 60)
            journal.append(path, {**journal.add_op(_rows(next_id, batch)), "by": "t"}, rotate)
            next_id += len(batch)
            seen += batch
            if len(seen) % 120 == 0:  # two lines (at least one rotation) between looks
                svc.catch_up()
        svc.catch_up()
        assert path.with_name(path.name + ".old").exists()
        assert loads[0] == 0
        assert all(svc.lookup("pdq", s) for s in seen)
        assert svc.status()["size"] == len(seen)
        # two rotations between looks: our file is gone, so the service rebuilds (from the
        # database, which holds none of these journal-only entries)
        for _ in range(2):
            big = _pdq(rng, 150)
            journal.append(path, {**journal.add_op(_rows(next_id, big)), "by": "t"}, rotate)
            next_id += len(big)
        svc.catch_up()
        assert loads[0] == 1
    finally:
        svc.close()


def test_a_reload_line_in_the_rotated_part_still_rebuilds(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    svc = _service(tmp_path)
    loads = _count_loads(svc)
    path = tmp_path / "index" / journal.JOURNAL
    try:
        journal.append(path, {"op": "bank", "bank": BANK, "by": "t"}, 4000)
        journal.append(path, {"op": "reload", "by": "t"}, 4000)
        journal.append(path, {**journal.add_op(_rows(1, _pdq(rng, 60))), "by": "t"}, 4000)
        svc.catch_up()
        assert loads[0] == 1
    finally:
        svc.close()


@pytest.mark.parametrize("seed", [0, 1])
def test_add_rows_indexes_what_add_does(seed: int) -> None:
    rng = np.random.default_rng(seed)
    banks = [
        Bank("A", role="alert", pdq_threshold=31),
        Bank("IGN", role="ignore", pdq_threshold=20),
    ]
    pdq = _pdq(rng, 300)
    md5 = [bytes(c).hex() for c in rng.integers(0, 256, (300, 16), dtype=np.uint8)]
    rows: list[list[object]] = []
    for i in range(300):
        bank = "A" if i % 3 else "IGN"
        enabled = bool(i % 7)
        until = 4_000_000_000.0 if i % 11 == 0 else None
        label = f"lbl-{i}" if i % 5 == 0 else ""
        rows.append([2 * i + 1, bank, "md5", md5[i], label, enabled, until])
        rows.append([2 * i + 2, bank, "pdq", pdq[i], label, enabled, until])
    rows.append([9_999, "A", "no-such-type", "x", "", True, None])  # skipped, as add does
    rows.append([rows[5][0], "A", "pdq", pdq[0], "dup", True, None])  # an id seen earlier
    rows.append([9_998, "NEW", "pdq", pdq[1], "", True])  # 6 fields: no until
    rows = json.loads(json.dumps(rows))  # as the journal hands them over
    first, rest = rows[:100], rows[100:]

    def entries(rs: list[list[object]]) -> list[Entry]:
        return [
            Entry(
                bank=str(r[1]),
                signal_type=str(r[2]),
                signal=str(r[3]),
                label=str(r[4]),
                enabled=bool(r[5]),
                id=int(r[0]),  # type: ignore[call-overload]
                disabled_until=r[6] if len(r) > 6 else None,  # type: ignore[arg-type]
            )
            for r in rs
        ]

    by_entries, by_rows = BankIndex(grows=True), BankIndex(grows=True)
    for idx in (by_entries, by_rows):
        for b in banks:
            idx.put_bank(b)
    # the first part indexed before, as a service that built from the database
    by_entries.add(entries(first))
    by_rows.add(entries(first))
    # `add` would index an id repeated within one call twice; journal rows never repeat one
    # and add_rows keeps the first: compare on rows without the repeat
    assert by_entries.add(entries(rest[:-2] + rest[-1:])) == by_rows.add_rows(rest)
    assert by_rows.add_rows(rest) == 0  # idempotent
    for name in ("_slot", "_on", "_until", "_tcode"):
        a, b = getattr(by_entries, name), getattr(by_rows, name)
        common = min(len(a), len(b))  # grown in steps: the longer one's rest is unused (0)
        assert np.array_equal(a[:common], b[:common]), name
        assert not a[common:].any() and not b[common:].any(), name
    assert by_entries._labels == by_rows._labels
    assert by_entries._names == by_rows._names
    assert by_entries.by_signal_type(all_entries=True) == by_rows.by_signal_type(all_entries=True)
    for q in pdq[::17] + md5[::23]:
        st = "pdq" if len(q) == 64 else "md5"
        for kw in ({}, {"all_entries": True}):
            assert by_entries.lookup(st, q, **kw) == by_rows.lookup(st, q, **kw)  # type: ignore[arg-type]
