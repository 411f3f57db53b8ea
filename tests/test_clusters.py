"""Near-duplicate clustering equals connected components of the "within T" graph."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from conftest import photo
from tipline.cli.app import _register, app
from tipline.record import ItemRecord
from tipline.triage.clusters import cluster_records


def _records(codes: np.ndarray, quality: int = 100) -> list[ItemRecord]:
    return [
        ItemRecord(path=f"i{i:04}", sha256=f"{i:064x}", pdq=bytes(c).hex(), pdq_quality=quality)
        for i, c in enumerate(codes)
    ]


def _components(codes: np.ndarray, t: int) -> set[frozenset[int]]:
    n = len(codes)
    bits = np.unpackbits(codes, axis=1).astype(np.int32)
    d = (bits[:, None, :] != bits[None, :, :]).sum(-1)
    seen: set[int] = set()
    comps = set()
    for s in range(n):
        if s in seen:
            continue
        stack, comp = [s], set()
        while stack:
            x = stack.pop()
            if x in comp:
                continue
            comp.add(x)
            stack.extend(int(y) for y in np.nonzero(d[x] <= t)[0] if y not in comp)
        seen |= comp
        comps.add(frozenset(comp))
    return comps


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), t=st.sampled_from([0, 8, 31, 45]), n=st.integers(1, 60))
def test_clusters_are_connected_components(seed: int, t: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    centres = rng.integers(0, 256, (max(1, n // 6), 32), dtype=np.uint8)
    codes = centres[rng.integers(0, len(centres), n)].copy()
    flips = rng.integers(0, 256, (n, 6))  # near-duplicates: flip up to 6 random bits
    for i in range(n):
        for b in flips[i, : rng.integers(0, 7)]:
            codes[i, b // 8] ^= 1 << (b % 8)
    clusters = cluster_records(_records(codes), t)
    got = {frozenset(int(m.path[1:]) for m in c.members) for c in clusters}
    assert got == _components(codes, t)


def test_exact_duplicates_join_without_pdq() -> None:
    recs = [
        ItemRecord(path="a.txt", sha256="ab" * 32),
        ItemRecord(path="b.txt", sha256="ab" * 32),
        ItemRecord(path="c.txt", sha256="cd" * 32),
    ]
    clusters = cluster_records(recs)
    assert [c.size for c in clusters] == [2, 1]
    assert all(m.exact for m in clusters[0].members)


def test_unusable_pdq_does_not_join() -> None:
    code = np.zeros((2, 32), dtype=np.uint8)
    recs = _records(code, quality=10)
    assert [c.size for c in cluster_records(recs)] == [1, 1]


def test_parallel_equals_serial() -> None:
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 256, (6000, 32), dtype=np.uint8)
    codes[3000:] = codes[:3000]
    codes[3000:, 0] ^= 1
    a = cluster_records(_records(codes), 31, jobs=1)
    b = cluster_records(_records(codes), 31, jobs=2)
    assert [c.to_json() for c in a] == [c.to_json() for c in b]
    assert sum(1 for c in a if c.size == 2) == 3000


def test_dedupe_cli(tmp_path: Path) -> None:
    _register()
    d = tmp_path / "m"
    d.mkdir()
    img = photo("rocket")
    img.save(d / "a.png")
    img.resize((320, 214)).save(d / "b.jpg", quality=80)
    (d / "c.png").write_bytes((d / "a.png").read_bytes())
    img.transpose(Image.Transpose.ROTATE_90).save(d / "r.jpg", quality=90)
    photo("coffee").save(d / "other.jpg")
    runner = CliRunner()
    res = runner.invoke(app, ["--data-dir", str(tmp_path), "dedupe", str(d)])
    assert res.exit_code == 0, res.output
    clusters = [json.loads(line) for line in res.stdout.splitlines()]
    sizes = sorted(c["size"] for c in clusters)
    assert sizes == [1, 1, 3]
    res = runner.invoke(app, ["--data-dir", str(tmp_path), "dedupe", str(d), "--dihedral"])
    assert sorted(json.loads(x)["size"] for x in res.stdout.splitlines()) == [1, 4]
    out = tmp_path / "c.csv"
    runner.invoke(app, ["--data-dir", str(tmp_path), "dedupe", str(d), "-o", str(out)])
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(rows) == 5 and {r["cluster_size"] for r in rows} == {"1", "3"}
    html = tmp_path / "c.html"
    runner.invoke(app, ["--data-dir", str(tmp_path), "dedupe", str(d), "-o", str(html)])
    assert "representative" in html.read_text() and "<img" not in html.read_text()
    # from scan results, no re-hashing
    results = tmp_path / "r.jsonl"
    results.write_text(runner.invoke(app, ["--data-dir", str(tmp_path), "hash", str(d)]).stdout)
    res = runner.invoke(
        app, ["--data-dir", str(tmp_path), "dedupe", "--from-results", str(results)]
    )
    assert sorted(json.loads(x)["size"] for x in res.stdout.splitlines()) == [1, 1, 3]
