"""Scale-out pieces that need no Ray cluster: the banks' columnar snapshot and work units.

Ray itself is never started by these tests (Ray only ever runs inside a loopback-only network
namespace; those tests are not written yet)."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

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


# ---------------------------------------------------------------- shard directories (no Ray)


def _rec(path: str, container: str | None = None) -> ItemRecord:
    return ItemRecord(path=path, container=container)


def test_shard_dir_commit_verify_and_what_it_catches(tmp_path: Path) -> None:
    from tipline.scan.ray_runner import Manifest, ShardDir, ShardError

    root = tmp_path / "out"
    root.mkdir()
    store = ShardDir(root)
    manifest = Manifest(
        ["in"],
        [_rec("missing-arg", None)],
        [[("a.jpg", 1, 0.0), ("b.zip", 2, 0.0)], [("c.jpg", 3, 0.0)]],
    )
    store.create(manifest)
    with pytest.raises(ShardError, match="not empty"):
        store.create(manifest)
    assert store.load() == manifest
    store.start(0)
    store.append(0, manifest.early)
    store.append(0, [_rec("a.jpg"), _rec("b.zip!x.png", "b.zip"), _rec("b.zip")])
    store.commit(0)
    assert store.is_done(0) and not store.is_done(1)
    found = store.verify(manifest)
    assert found.problems == ["shard 1 is not finished (part-00001.jsonl)"]
    # a torn shard (tmp only) is thrown away whole by start()
    store.append(1, [_rec("c.jpg")])
    assert not store.is_done(1)
    store.start(1)
    assert not list(root.glob("*.tmp"))
    store.append(1, [_rec("c.jpg"), _rec("a.jpg"), _rec("zzz.jpg")])
    store.commit(1)
    problems = store.verify(manifest).problems
    assert any("zzz.jpg is not one of its files" in p for p in problems)
    assert any("a.jpg is not one of its files" in p for p in problems)
    assert any("appear more than once: a.jpg" in p for p in problems)
    # a file without its own record is missing; an edited part no longer matches its marker
    store.start(1)
    store.commit(1)
    assert any("1 files have no record: c.jpg" in p for p in store.verify(manifest).problems)
    store.part(1).write_text('{"path": "c.jpg"}\n')
    assert not store.is_done(1)


def test_manifest_refuses_garbage(tmp_path: Path) -> None:
    from tipline.scan.ray_runner import ShardDir, ShardError

    (tmp_path / "manifest.jsonl").write_text('{"format": "something else"}\n')
    with pytest.raises(ShardError, match="not a tipline shard manifest"):
        ShardDir(tmp_path).load()
    (tmp_path / "manifest.jsonl").write_text("\x00\x01 not json")
    with pytest.raises(ShardError, match="unreadable manifest"):
        ShardDir(tmp_path).load()
    with pytest.raises(ShardError, match="nothing to resume"):
        ShardDir(tmp_path / "nope").load()


def test_plan_manifest_cuts_shards_and_keeps_listing_errors(tmp_path: Path) -> None:
    from tipline.scan.ray_runner import plan_manifest

    for i in range(10):
        (tmp_path / f"f{i}.bin").write_bytes(b"x" * i)
    absent = str(tmp_path / "absent")  # listed or an early error record: either way, once
    m = plan_manifest([str(tmp_path), str(tmp_path / "absent")], False, shard_files=4)
    assert [len(s) for s in m.shards[:2]] == [4, 4] and 1 <= len(m.shards[2]) <= 4
    listed = sorted([p for s in m.shards for p, _, _ in s] + [r.path for r in m.early])
    assert listed == sorted([str(tmp_path / f"f{i}.bin") for i in range(10)] + [absent])
    assert m.files + len(m.early) == 11
    assert plan_manifest([], False).shards == [[]]


# ---------------------------------------------------------------- --ray refusals (no Ray)


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["--ray", "local", "--detector-card", "CARD"], {}, "--detector-card"),
        (["--ray", "local", "--c2pa-trust-anchors", "PEM"], {}, "--c2pa-trust-anchors"),
        (["--ray", "local"], {"TIPLINE_C2PA_ALLOWED_LIST": "x.pem"}, "TIPLINE_C2PA_ALLOWED_LIST"),
        (["--ray", "127.0.0.1:1", "--jobs", "2"], {}, "--jobs sizes a --ray local"),
        (["--ray", " "], {}, "give local, auto"),
        (["-o", "DIR"], {}, "only a --ray scan writes shards"),
        (["--ray", "local", "-o", "DIR", "--format", "csv"], {}, "jsonl parts"),
        (["--ray", "local", "-o", "FULL"], {}, "not empty"),
        (["--ray", "local", "--format", "parquet"], {}, "Parquet is written per shard"),
        (["--format", "parquet"], {}, "Parquet is written per shard"),
    ],
)
def test_ray_options_it_cannot_honour_are_refused(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    env: dict[str, str],
    needle: str,
) -> None:
    from typer.testing import CliRunner

    from tipline.cli.app import _register, app

    _register()
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    (tmp_path / "DIR").mkdir()
    (tmp_path / "FULL").mkdir()
    (tmp_path / "FULL" / "x").write_text("x")
    (tmp_path / "CARD").write_text("{}")
    (tmp_path / "PEM").write_text("")
    args = [str(tmp_path / a) if a in ("DIR", "FULL", "CARD", "PEM") else a for a in args]
    res = CliRunner().invoke(
        app, ["--data-dir", str(tmp_path / "data"), "scan", str(tmp_path), *args]
    )
    assert res.exit_code == 2, res.output
    assert needle in " ".join(re.sub("[│╭╮╰╯─]", " ", res.stderr).split())
    assert "ray" not in sys.modules or not __import__("ray").is_initialized()
