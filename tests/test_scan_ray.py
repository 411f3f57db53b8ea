"""Scale-out pieces that need no Ray cluster: the banks' columnar snapshot and work units.

Ray itself is never started by these tests (Ray only ever runs inside a loopback-only network
namespace; those tests are not written yet)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

import numpy as np

from tipline.index.bank_index import BankIndex
from tipline.index.columns import bank_columns, index_from_columns
from tipline.record import ItemRecord
from tipline.scan.ray_runner import UNIT_MAX_BYTES, UNIT_MAX_FILES, plan_units


@dataclass
class _Bank:
    name: str
    role: str = "alert"
    pdq_threshold: int = 31
    enabled: bool = True


@dataclass
class _Entry:
    id: int | None
    bank: str
    signal_type: str
    signal: str
    label: str = ""
    enabled: bool = True


def _entries() -> list[_Entry]:
    rng = np.random.default_rng(7)
    out = []
    for i in range(1, 41):
        pdq = "".join(f"{b:02x}" for b in rng.integers(0, 256, 32).tolist())
        out.append(_Entry(i, "DEMO" if i % 2 else "IGN", "pdq", pdq, f"DEMO-benign-stand-in-{i}"))
    out.append(_Entry(41, "DEMO", "md5", "0" * 32))
    out.append(_Entry(None, "DEMO", "md5", "1" * 32))  # no id: left out by both
    return out


def test_columns_payload_is_arrays_not_objects() -> None:
    cols = bank_columns([_Bank("DEMO"), _Bank("IGN", role="ignore")], _entries())
    assert len(cols) == 41
    for name, arr in cols.arrays().items():
        assert isinstance(arr, np.ndarray), name
        assert arr.dtype.kind != "O", name
    assert len(cols.banks) == 2  # one small row per bank, never per entry
    assert (
        cols.digest()
        == bank_columns([_Bank("DEMO"), _Bank("IGN", role="ignore")], _entries()).digest()
    )
    other = bank_columns([_Bank("DEMO"), _Bank("IGN", role="ignore")], _entries()[:-3])
    assert other.digest() != cols.digest()


def test_index_from_columns_matches_like_the_built_index() -> None:
    banks = [_Bank("DEMO"), _Bank("IGN", role="ignore")]
    entries = _entries()
    built = BankIndex.build(banks, entries)
    rebuilt = index_from_columns(bank_columns(banks, entries))
    assert rebuilt.banks() == built.banks()
    for e in [*entries[:6], entries[40]]:
        rec = ItemRecord(path="x.jpg")
        if e.signal_type == "pdq":
            rec.pdq = e.signal
            rec.pdq_quality = 100
        else:
            rec.md5 = e.signal
        got = [(m.bank, m.entry_id, m.label) for m in rebuilt.match(rec)]
        want = [(m.bank, m.entry_id, m.label) for m in built.match(rec)]
        assert got == want and got


def test_units_bounded_by_files_and_bytes() -> None:
    tasks = [(f"f{i}", frozenset[str]()) for i in range(1000)]
    units = plan_units(tasks, workers=2, size_of=lambda p: 1)
    assert [t for u in units for t in u] == tasks
    assert max(len(u) for u in units) <= UNIT_MAX_FILES
    big = plan_units(tasks[:10], workers=1, size_of=lambda p: UNIT_MAX_BYTES)
    assert all(len(u) == 1 for u in big)


def test_cli_import_does_not_import_ray() -> None:
    code = "import sys, tipline.cli.app, tipline.cli.scan; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
