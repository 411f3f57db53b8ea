"""``tipline scan --ray`` on a real single-node Ray (2 CPUs), inside a loopback-only namespace.

``test_ray_scan_in_loopback_namespace`` re-runs this module's ``@inner`` tests in the namespace
(tests/ray_netns.py); they share one ``ray.init(num_cpus=2)``. Every Ray record is compared,
record for record, with a local ``tipline scan -j 2`` of the same benign generated files.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import encode, noise_image, photo
from ray_netns import assert_loopback_only, inner, run_inner_tests
from tipline.banks import Bank, Entry
from tipline.cli.app import _register, app
from tipline.scan.hashing import HashOptions, hash_bytes
from tipline.store.banks import open_bank_store

pytestmark = [pytest.mark.ray, pytest.mark.slow]

_register()
cli = CliRunner()

CRASH = "crash-me"


@pytest.mark.timeout(280)
def test_ray_scan_in_loopback_namespace() -> None:
    run_inner_tests(sys.modules[__name__], timeout=260)


# ---------------------------------------------------------------- fixtures (inner only)


def _tipline(*args: str) -> list[str]:
    return [sys.executable, "-m", "tipline", *args]


def _records_of(lines: Iterator[str] | list[str]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for line in lines:
        if not line.strip():
            continue
        r = json.loads(line)
        assert r["path"] not in out, f"record twice: {r['path']}"
        out[r["path"]] = r
    return out


def _file_records(path: Path) -> dict[str, dict]:
    return _records_of(path.read_text(encoding="utf-8").splitlines())


def _shard_records(root: Path) -> dict[str, dict]:
    lines: list[str] = []
    for part in sorted(root.glob("part-*.jsonl")):
        lines.extend(part.read_text(encoding="utf-8").splitlines())
    return _records_of(lines)


class Corpus:
    """Benign generated media, a bank of two of them, and the local scan's records."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.media = root / "media"
        self.media.mkdir(parents=True)
        store = open_bank_store(self.data)
        store.create_bank(Bank("KNOWN", role="alert"))
        for name in ("coffee", "rocket"):
            rec = hash_bytes(encode(photo(name), "PNG"), name, HashOptions())
            store.add_entries([Entry("KNOWN", "pdq", rec.pdq or "", label="DEMO-benign-stand-in")])
        store.close()
        for i in range(24):  # transformed copies of the banked photos: matches
            base = photo("coffee" if i % 2 else "rocket", size=(640 - 8 * i, 480))
            if i % 3 == 1:
                base = base.transpose(Image.Transpose.FLIP_LEFT_RIGHT)  # dihedral lookup
            base.save(self.media / f"photo{i:02}.jpg", quality=70 + i)
        for i in range(24):
            noise_image(i, 480, 360).save(self.media / f"noise{i:02}.jpg", quality=85)
        with zipfile.ZipFile(self.media / "pack.zip", "w") as z:
            for i in range(6):
                z.writestr(f"in/m{i}.png", encode(noise_image(100 + i, 200, 150), "PNG"))
        (self.media / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
        noise_image(999, 300, 200).save(self.media / f"{CRASH}.jpg", quality=80)
        self.env = {**os.environ, "TIPLINE_DATA_DIR": str(self.data)}
        local = root / "local.jsonl"
        res = subprocess.run(
            _tipline("scan", str(self.media), "-o", str(local), "-j", "2", "--no-progress"),
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        self.local_rc = res.returncode
        self.local = _file_records(local)
        assert self.local_rc == 2, res.stderr  # broken.jpg cannot be decoded
        assert sum(bool(r["matches"]) for r in self.local.values()) >= 12
        self.files = len(list(self.media.iterdir()))

    def scan(self, *args: str) -> tuple[int, str, str]:
        res = cli.invoke(
            app,
            ["--data-dir", str(self.data), "scan", "--ray", "local", str(self.media), *args],
            catch_exceptions=False,
        )
        return res.exit_code, res.stdout, res.stderr


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return Corpus(tmp_path_factory.mktemp("corpus"))  # before Ray: the local pool forks


@pytest.fixture(scope="module")
def ray_address(corpus: Corpus) -> Iterator[str]:
    """The module's one Ray: 2 CPUs, loopback only, under the temporary RAY_TMPDIR."""
    assert_loopback_only()
    import logging

    import ray

    ctx = ray.init(
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        _temp_dir=os.environ["RAY_TMPDIR"],
        logging_level=logging.ERROR,
        log_to_driver=False,
    )
    try:
        yield str(ctx.address_info["gcs_address"])
    finally:
        ray.shutdown()


def _same_as_local(corpus: Corpus, got: dict[str, dict], except_: set[str] = frozenset()) -> None:
    assert set(got) == set(corpus.local)
    for path, want in corpus.local.items():
        if path not in except_:
            assert got[path] == want, path


# ---------------------------------------------------------------- inner tests


@inner
def test_namespace_has_only_loopback() -> None:
    assert_loopback_only()
    # nothing but 127.0.0.1 is reachable: a UDP "connect" to a public address has no route
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s, pytest.raises(OSError):
        s.connect(("192.0.2.1", 9))


@inner
def test_records_equal_the_local_scan(corpus: Corpus, ray_address: str, tmp_path: Path) -> None:
    out = tmp_path / "ray.jsonl"
    rc, _, err = corpus.scan("-o", str(out), "--progress")
    assert rc == corpus.local_rc, err
    _same_as_local(corpus, _file_records(out))
    assert "workers" in err and "MB/s" in err  # the progress line
    # standard output is a sink too, with the same records
    rc, stdout, _ = corpus.scan("--no-progress")
    assert rc == corpus.local_rc
    _same_as_local(corpus, _records_of(stdout.splitlines()))


@inner
def test_csv_sink_and_file_resume(corpus: Corpus, ray_address: str, tmp_path: Path) -> None:
    out = tmp_path / "r.csv"
    rc, _, err = corpus.scan("-o", str(out), "--no-progress")
    assert rc == corpus.local_rc, err
    assert out.read_text().count(".jpg") >= len(corpus.local) - 7
    # -o FILE --resume after a run cut short: the finished records stay, the rest are added
    journal = tmp_path / "r.jsonl"
    first = sorted(corpus.local)[:10]
    journal.write_text("".join(json.dumps(corpus.local[p]) + "\n" for p in first))
    rc, _, err = corpus.scan("-o", str(journal), "--resume", "--no-progress")
    assert rc == corpus.local_rc, err
    _same_as_local(corpus, _file_records(journal))


@inner
def test_sharded_output_and_resume_of_a_finished_run(
    corpus: Corpus, ray_address: str, tmp_path: Path
) -> None:
    shards = tmp_path / "shards"
    shards.mkdir()
    rc, _, err = corpus.scan("-o", str(shards), "--shard-files", "7", "--no-progress")
    assert rc == corpus.local_rc, err
    parts = sorted(shards.glob("part-*.jsonl"))
    assert len(parts) == -(-corpus.files // 7)
    assert len(list(shards.glob("part-*.done"))) == len(parts)
    assert not list(shards.glob("*.tmp"))
    got = _shard_records(shards)
    crash = str(corpus.media / f"{CRASH}.jpg")
    # the killed driver had the crash hook: had it got that far, its shard holds the crashed
    # record (committed, so resume keeps it)
    crashed = {crash} if any("worker_crashed" in e for e in got[crash]["errors"]) else set()
    _same_as_local(corpus, got, except_=crashed)
    stamps = {p: p.stat().st_mtime_ns for p in parts}
    rc, _, err = corpus.scan("-o", str(shards), "--resume", "--no-progress")
    assert rc == corpus.local_rc, err
    assert {p: p.stat().st_mtime_ns for p in parts} == stamps  # nothing re-done
    # the directory is refused for a new run; a lost part is found by the check
    rc, _, err = corpus.scan("-o", str(shards), "--no-progress")
    assert rc == 2 and "--resume" in err
    parts[1].write_text(parts[1].read_text().splitlines(keepends=True)[0])
    rc, _, err = corpus.scan("-o", str(shards), "--resume", "--no-progress")
    assert rc == corpus.local_rc, err  # its marker no longer matches: re-done
    _same_as_local(corpus, _shard_records(shards))


@inner
def test_parquet_shards_hold_the_same_records(
    corpus: Corpus, ray_address: str, tmp_path: Path
) -> None:
    import pyarrow.parquet as pq

    shards = tmp_path / "shards"
    shards.mkdir()
    args = ("-o", str(shards), "--format", "parquet", "--shard-files", "16", "--no-progress")
    rc, _, err = corpus.scan(*args)
    assert rc == corpus.local_rc, err
    parts = sorted(shards.glob("part-*.parquet"))
    assert len(parts) == len(list(shards.glob("part-*.jsonl"))) == -(-corpus.files // 16)
    jsonl = _shard_records(shards)
    _same_as_local(corpus, jsonl)

    def parquet_records() -> dict[str, dict]:
        rows: dict[str, dict] = {}
        for part in sorted(shards.glob("part-*.parquet")):
            table = pq.read_table(part)
            for row in table.to_pylist():
                rec = json.loads(row["record"])
                assert row["path"] == rec["path"] and row["sha256"] == (rec["sha256"] or "")
                assert row["matched"] == bool(rec["matches"]), rec["path"]
                assert rec["path"] not in rows
                rows[rec["path"]] = rec
        return rows

    assert parquet_records() == jsonl
    assert pq.read_schema(parts[0]).field("size").type == "int64"
    # a lost Parquet part is found (the marker names its SHA-256) and re-done by --resume,
    # which keeps the run's format without being told again
    parts[1].unlink()
    rc, _, err = corpus.scan("-o", str(shards), "--resume", "--no-progress")
    assert rc == corpus.local_rc, err
    assert parts[1].exists() and parquet_records() == _shard_records(shards)


@inner
def test_crashing_file_gets_worker_crashed_record(
    corpus: Corpus, ray_address: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIPLINE_RAY_TEST_CRASH", CRASH)
    out = tmp_path / "ray.jsonl"
    rc, _, err = corpus.scan("-o", str(out), "--no-progress")
    assert rc == 2, err
    got = _file_records(out)
    crashed = [p for p, r in got.items() if any("worker_crashed" in e for e in r["errors"])]
    assert crashed == [str(corpus.media / f"{CRASH}.jpg")]
    _same_as_local(corpus, got, except_=set(crashed))


@inner
def test_worker_killed_mid_run_loses_and_doubles_nothing(
    corpus: Corpus, ray_address: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    once = tmp_path / "once"
    once.mkdir()
    monkeypatch.setenv("TIPLINE_RAY_TEST_CRASH", CRASH)
    monkeypatch.setenv("TIPLINE_RAY_TEST_CRASH_ONCE", str(once))
    shards = tmp_path / "shards"
    shards.mkdir()
    rc, _, err = corpus.scan("-o", str(shards), "--shard-files", "16", "--no-progress")
    assert (once / "crashed-once").exists()  # a worker was SIGKILLed mid-unit
    assert rc == corpus.local_rc, err
    _same_as_local(corpus, _shard_records(shards))


@inner
def test_driver_killed_then_resumed_gives_every_file_once(
    corpus: Corpus, ray_address: str, tmp_path: Path
) -> None:
    shards = tmp_path / "shards"
    shards.mkdir()
    # the driver joins the module's Ray; the crashing file keeps one shard busy (retries),
    # so the kill lands while shards are still to come
    # (os.environ as ray.init left it: RAY_AUTH_MODE=token, the token in the temporary HOME)
    env = {**os.environ, "TIPLINE_DATA_DIR": str(corpus.data), "TIPLINE_RAY_TEST_CRASH": CRASH}
    proc = subprocess.Popen(
        _tipline(
            "scan",
            "--ray",
            ray_address,
            str(corpus.media),
            "-o",
            str(shards),
            "--shard-files",
            "3",
            "--no-progress",
        ),
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "driver.err", "wb"),  # noqa: SIM115 - the child holds it
    )
    deadline = time.time() + 90
    while time.time() < deadline and not list(shards.glob("part-*.done")):
        assert proc.poll() is None, (tmp_path / "driver.err").read_text()[-3000:]
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    planned = -(-corpus.files // 3)
    done_before = len(list(shards.glob("part-*.done")))
    assert 1 <= done_before < planned, "the driver should have been killed part way"
    # as if killed in the middle of a shard's write
    (shards / f"part-{planned - 1:05d}.jsonl.tmp").write_text('{"path": "half')
    rc, _, err = corpus.scan("-o", str(shards), "--resume", "--no-progress")
    assert rc == corpus.local_rc, err
    assert len(list(shards.glob("part-*.done"))) == planned
    assert not list(shards.glob("*.tmp"))
    got = _shard_records(shards)
    crash = str(corpus.media / f"{CRASH}.jpg")
    # the killed driver had the crash hook: had it got that far, its shard holds the crashed
    # record (committed, so resume keeps it)
    crashed = {crash} if any("worker_crashed" in e for e in got[crash]["errors"]) else set()
    _same_as_local(corpus, got, except_=crashed)
