"""`tipline scan s3://bucket/prefix` against moto's S3 server on 127.0.0.1 (tests/s3_server.py).

The real CLI runs in a subprocess whose environment alone points at the server. A bucket scan
must give the local scan's records of the same files (hashes, matches, errors), apart from the
path; the zip in the bucket is expanded; a truncated and an oversize object get their own
errors; --resume skips finished URIs; a missing bucket and a refused key stop with one line.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import encode, photo
from s3_server import (
    BUCKET,
    MAX_FILE_BYTES,
    OVERSIZE,
    PREFIX,
    TRUNCATED,
    VIDEO,
    ZIP,
    S3Bucket,
    s3_bucket,
)
from tipline.banks import Bank, Entry
from tipline.scan.hashing import HashOptions, hash_bytes
from tipline.store.banks import open_bank_store

__all__ = ["s3_bucket"]  # the fixture, imported for pytest

pytestmark = pytest.mark.slow

#: Fields that differ between two runs of the same file (timings), or name where it was read.
_VARYING = {"path", "container", "seconds", "elapsed_ms", "timings"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir with alert bank KNOWN: PDQ hashes of two benign photographs in the bucket."""
    data = tmp_path_factory.mktemp("data")
    store = open_bank_store(data)
    store.create_bank(Bank("KNOWN", role="alert"))
    for name, size in (("coffee", (320, 213)), ("chelsea", (240, 160))):
        rec = hash_bytes(encode(photo(name, size), "PNG"), name, HashOptions())
        store.add_entries([Entry("KNOWN", "pdq", rec.pdq or "", label="DEMO-benign-stand-in")])
    store.close()
    return data


def scan(
    data: Path, env: dict[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "tipline", "--data-dir", str(data), "scan", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def records(path: Path) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        assert r["path"] not in out, f"duplicate record {r['path']}"
        out[r["path"]] = r
    return out


def relative(recs: dict[str, dict], root: str) -> dict[str, dict]:
    """Records keyed by their path below ``root``, without the fields that name a location."""
    out = {}
    for path, r in recs.items():
        assert path.startswith(root + "/"), path
        out[path[len(root) + 1 :]] = {k: v for k, v in r.items() if k not in _VARYING}
    return out


def test_bucket_scan_equals_local_scan(s3_bucket: S3Bucket, data_dir: Path, tmp_path: Path) -> None:
    limit = ["--max-file-bytes", str(MAX_FILE_BYTES), "--no-progress"]
    local_out, s3_out = tmp_path / "local.jsonl", tmp_path / "s3.jsonl"
    done_local = scan(data_dir, s3_bucket.env, str(s3_bucket.local), "-o", str(local_out), *limit)
    done_s3 = scan(data_dir, s3_bucket.env, s3_bucket.uri, "-o", str(s3_out), "-j", "2", *limit)
    # exit 2: the truncated and the oversize objects could not be (fully) scanned
    assert done_local.returncode == 2, done_local.stderr
    assert done_s3.returncode == 2, done_s3.stderr
    local = relative(records(local_out), str(s3_bucket.local))
    remote = relative(records(s3_out), s3_bucket.uri)
    assert remote == local
    assert len(remote) == len(s3_bucket.keys) + 2 and all(
        r.get("sha256") or r["errors"] for r in remote.values()
    )
    # the zip was opened in place: its members are records whose container is the object
    raw = records(s3_out)
    member = raw[f"{s3_bucket.uri}/{ZIP}!inner/chelsea.jpg"]
    assert member["container"] == f"{s3_bucket.uri}/{ZIP}"
    assert member["matches"] and member["matches"][0]["bank"] == "KNOWN"
    assert f"{s3_bucket.uri}/{ZIP}!noise-3.png" in raw
    assert raw[f"{s3_bucket.uri}/coffee.png"]["matches"][0]["label"] == "DEMO-benign-stand-in"
    assert raw[f"{s3_bucket.uri}/rocket.jpg"]["matches"] == []
    # every object exactly once, plus the zip's two members
    assert len(raw) == len(s3_bucket.keys) + 2
    # the video was decoded from its bounded temporary copy: vPDQ as locally (compared above)
    clip = raw[f"{s3_bucket.uri}/{VIDEO}"]
    assert clip["vpdq"] and not clip["errors"], clip["errors"]
    big = raw[f"{s3_bucket.uri}/{OVERSIZE}"]
    assert big["errors"] and big["errors"][0].startswith("file_too_large:")
    assert "sha256" not in big or big["sha256"] is None  # not read at all
    broken = raw[f"{s3_bucket.uri}/{TRUNCATED}"]
    assert broken["errors"] and broken.get("pdq") is None
    assert broken["sha256"]  # read, hashed, refused by the decoder
    assert "2 matched" in done_s3.stderr  # coffee.png and the zip's chelsea.jpg


def test_resume_skips_finished_uris(s3_bucket: S3Bucket, data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    args = ["--max-file-bytes", str(MAX_FILE_BYTES), "--no-progress", "-j", "1"]
    full = scan(data_dir, s3_bucket.env, s3_bucket.uri, "-o", str(out), *args)
    assert full.returncode == 2, full.stderr
    everything = records(out)
    # an interrupted run: only the first three lines made it to the journal
    lines = out.read_text().splitlines()
    kept = [json.loads(line) for line in lines[:3]]
    out.write_text("".join(line + "\n" for line in lines[:3]))
    again = scan(data_dir, s3_bucket.env, s3_bucket.uri, "-o", str(out), "--resume", *args)
    assert again.returncode == 2, again.stderr
    resumed = records(out)  # raises on a duplicate
    assert set(resumed) == set(everything)
    assert [json.loads(line)["path"] for line in out.read_text().splitlines()[:3]] == [
        r["path"] for r in kept
    ]
    # the items scanned twice would be 3 more than the files: the summary counts each once
    assert f"{len(everything):,} items" in again.stderr


def test_single_object_uri(s3_bucket: S3Bucket, data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "one.jsonl"
    uri = f"s3://{BUCKET}/{PREFIX}/coffee.png"
    done = scan(data_dir, s3_bucket.env, uri, "-o", str(out), "--no-progress")
    assert done.returncode == 1, done.stderr  # it matches KNOWN
    assert list(records(out)) == [uri]


def test_missing_bucket_is_one_line_error(
    s3_bucket: S3Bucket, data_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "x.jsonl"
    done = scan(data_dir, s3_bucket.env, "s3://no-such-bucket/x", "-o", str(out), "--no-progress")
    assert done.returncode == 2
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert lines == [lines[0]] and lines[0].startswith(
        "error: s3://no-such-bucket/x: no such bucket"
    )
    assert "Traceback" not in done.stderr


def test_refused_key_is_one_line_error(s3_bucket: S3Bucket, data_dir: Path, tmp_path: Path) -> None:
    env = dict(s3_bucket.env, AWS_ACCESS_KEY_ID="AKIANOTAKEY0000000000", AWS_SECRET_ACCESS_KEY="x")
    done = scan(data_dir, env, s3_bucket.uri, "-o", str(tmp_path / "x.jsonl"), "--no-progress")
    assert done.returncode == 2
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: {s3_bucket.uri}: access refused"), lines[0]
    assert "AWS_ACCESS_KEY_ID" in lines[0]


def test_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from tipline.scan import objectstore

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "s3fs" else real(name, *a)
    )
    with pytest.raises(objectstore.ObjectStoreError, match=r"pip install 'tipline\[objectstore\]'"):
        list(objectstore.iter_objects("s3://b/p"))
    recs: list = []
    objectstore.scan_object("s3://b/p/a.jpg", HashOptions(), recs.append)
    assert len(recs) == 1 and "tipline[objectstore]" in recs[0].errors[0]


@pytest.fixture
def in_process(s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Bucket]:
    """This process's environment pointed at the server, with a fresh s3fs instance."""
    import s3fs

    for k, v in s3_bucket.env.items():
        if k.startswith("AWS_"):
            monkeypatch.setenv(k, v)
    s3fs.S3FileSystem.clear_instance_cache()
    yield s3_bucket
    s3fs.S3FileSystem.clear_instance_cache()


def test_listing_is_paged_and_keys_are_taken_as_they_are(
    in_process: S3Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    from tipline.record import ItemRecord
    from tipline.scan import objectstore

    s3 = boto3.session.Session().client("s3", endpoint_url=in_process.endpoint)
    odd = {"odd/a.png": b"1", "odd/x/../a.png": b"22", "odd/dir/": b"", "odd/slash/": b"333"}
    for key, body in odd.items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    calls: list[dict] = []
    real = objectstore.filesystem

    def counting(scheme: str):  # type: ignore[no-untyped-def]
        fs = real(scheme)
        call = fs.call_s3

        def spy(method: str, **kw: object) -> object:
            calls.append({"method": method, **kw})
            return call(method, **kw)

        monkeypatch.setattr(fs, "call_s3", spy)
        return fs

    monkeypatch.setattr(objectstore, "filesystem", counting)
    monkeypatch.setattr(objectstore, "LIST_PAGE", 2)
    got = list(objectstore.iter_objects(f"s3://{BUCKET}/{PREFIX}/"))
    assert [e.uri for e in got if not isinstance(e, ItemRecord)] == [
        f"s3://{BUCKET}/{PREFIX}/{k}" for k in in_process.keys
    ]
    sizes = {e.uri: e.size for e in got if not isinstance(e, ItemRecord)}
    assert sizes[f"{in_process.uri}/{OVERSIZE}"] == MAX_FILE_BYTES + 4096
    assert all(not isinstance(e, ItemRecord) and e.etag and e.mtime for e in got)
    pages = [c for c in calls if c["method"] == "list_objects_v2"]
    assert len(pages) == (len(in_process.keys) + 1) // 2  # two keys a page
    # the driver balances work units with the listing's sizes, asking the store nothing more
    from tipline.scan.runner import task_size

    before = len(calls)
    assert {u: task_size(u) for u in sizes} == sizes
    assert len(calls) == before
    # "x/../a.png" is its own object (never normalised into a.png); a "folder" marker is
    # skipped; a key ending in "/" that holds bytes is reported, not opened as another object
    odd_items = list(objectstore.iter_objects(f"s3://{BUCKET}/odd"))
    uris = [e.uri for e in odd_items if not isinstance(e, ItemRecord)]
    assert uris == [f"s3://{BUCKET}/odd/a.png", f"s3://{BUCKET}/odd/x/../a.png"]
    errs = [e for e in odd_items if isinstance(e, ItemRecord)]
    assert [e.path for e in errs] == [f"s3://{BUCKET}/odd/slash/"]
    assert errs[0].errors[0].startswith("unreadable: object key ends in '/'")
    recs: list[ItemRecord] = []
    objectstore.scan_object(f"s3://{BUCKET}/odd/x/../a.png", HashOptions(), recs.append)
    assert len(recs) == 1
    assert recs[0].sha256 == hash_bytes(b"22", "x", HashOptions()).sha256
    # a missing object (deleted since listing) is its own error record
    recs = []
    objectstore.scan_object(f"s3://{BUCKET}/odd/gone.png", HashOptions(), recs.append)
    assert len(recs) == 1 and recs[0].errors[0].startswith("unreadable: no such object")


def test_object_replaced_while_read_is_its_own_error(
    in_process: S3Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first bytes come from one version, the rest would come from another: refused."""
    import boto3

    from tipline.record import ItemRecord
    from tipline.scan import items, objectstore

    s3 = boto3.session.Session().client("s3", endpoint_url=in_process.endpoint)
    key = "swap/coffee.png"
    s3.put_object(Bucket=BUCKET, Key=key, Body=(in_process.local / "coffee.png").read_bytes())
    monkeypatch.setattr(objectstore, "BLOCK_BYTES", 4096)  # the head read fetches only 4 KiB
    real_sniff = items.sniff
    swapped: list[bool] = []

    def swap_then_sniff(head: bytes):  # type: ignore[no-untyped-def]
        if not swapped:
            s3.put_object(Bucket=BUCKET, Key=key, Body=encode(photo("rocket"), "PNG"))
            swapped.append(True)
        return real_sniff(head)

    monkeypatch.setattr(items, "sniff", swap_then_sniff)
    recs: list[ItemRecord] = []
    objectstore.scan_object(f"s3://{BUCKET}/{key}", HashOptions(), recs.append)
    assert swapped and len(recs) == 1, recs
    assert recs[0].pdq is None and recs[0].sha256 is None
    assert recs[0].errors[0].startswith("unreadable: read failed: "), recs[0].errors
    assert "Etag" in recs[0].errors[0] and "no longer exists" in recs[0].errors[0]
