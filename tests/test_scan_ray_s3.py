"""Issue 15's "done when": a scan of a bucket on the local S3-compatible server (moto's, on
127.0.0.1: tests/s3_server.py) runs on a two-node local Ray cluster
(``ray.cluster_utils.Cluster``), survives a worker killed mid-task and a driver killed mid-run
(then ``--resume``), and its records equal the local scan's of the same files. Everything runs
inside a loopback-only namespace (tests/ray_netns.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ray_netns import assert_loopback_only, inner, run_inner_tests
from s3_server import MAX_FILE_BYTES, S3Bucket, s3_bucket
from test_scan_s3 import data_dir, records, relative

pytestmark = [pytest.mark.ray, pytest.mark.slow]

__all__ = ["data_dir", "s3_bucket"]  # the fixtures, imported for pytest

#: the object whose task kills its worker (once): the last one planned, so its shard is still
#: to come when the first shards are done and the driver is killed
CRASH_ONCE_KEY = "noise-1"


@pytest.mark.timeout(260)
def test_bucket_scan_on_a_two_node_cluster_in_loopback_namespace() -> None:
    run_inner_tests(sys.modules[__name__], timeout=240)


def _scan(data: Path, env: dict[str, str], *args: str) -> list[str]:
    return [sys.executable, "-m", "tipline", "--data-dir", str(data), "scan", *args]


@inner
def test_bucket_on_two_nodes_survives_worker_and_driver_kills(
    s3_bucket: S3Bucket, data_dir: Path, tmp_path: Path
) -> None:
    limit = ["--max-file-bytes", str(MAX_FILE_BYTES), "--no-progress"]
    # the local scan of the same files, in this process's namespace, before Ray starts
    local_out = tmp_path / "local.jsonl"
    done = subprocess.run(
        _scan(data_dir, s3_bucket.env, str(s3_bucket.local), "-o", str(local_out), *limit),
        env=s3_bucket.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr  # the truncated and the oversize objects
    local = relative(records(local_out), str(s3_bucket.local))
    assert_loopback_only()
    import ray
    from ray.cluster_utils import Cluster

    # the nodes' workers read the bucket: they inherit the endpoint and key from here
    for k, v in s3_bucket.env.items():
        if k.startswith("AWS_"):
            os.environ[k] = v
    os.makedirs(os.path.join(os.environ["RAY_TMPDIR"], "ray"), exist_ok=True)
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        assert ray.cluster_resources().get("CPU") == 2
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        once = tmp_path / "once"
        once.mkdir()
        shards = tmp_path / "shards"
        shards.mkdir()
        env = {
            **os.environ,
            "TIPLINE_RAY_TEST_CRASH": CRASH_ONCE_KEY,
            "TIPLINE_RAY_TEST_CRASH_ONCE": str(once),
        }
        args = ["--ray", cluster.address, s3_bucket.uri, "-o", str(shards), *limit]
        err = tmp_path / "driver.err"
        with err.open("wb") as err_file:
            proc = subprocess.Popen(
                _scan(data_dir, env, *args, "--shard-files", "1"),
                env=env,
                start_new_session=True,
                stdout=subprocess.DEVNULL,
                stderr=err_file,
            )
            deadline = time.time() + 120
            while time.time() < deadline and not list(shards.glob("part-*.done")):
                assert proc.poll() is None, err.read_text()[-3000:]
                time.sleep(0.005)
            os.killpg(proc.pid, signal.SIGKILL)  # the driver, mid-run
            proc.wait()
        planned = len(list(shards.glob("manifest*")))
        done_before = len(list(shards.glob("part-*.done")))
        assert planned == 1 and done_before >= 1
        resumed = subprocess.run(
            _scan(data_dir, env, *args, "--resume"),
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert resumed.returncode == 2, resumed.stderr
        assert (once / "crashed-once").exists()  # a worker was SIGKILLed mid-task, retried
        lines: list[str] = []
        for part in sorted(shards.glob("part-*.jsonl")):
            lines.extend(part.read_text(encoding="utf-8").splitlines())
        merged = tmp_path / "merged.jsonl"
        merged.write_text("\n".join(lines) + "\n", encoding="utf-8")
        remote = relative(records(merged), s3_bucket.uri)  # records() refuses a doubled path
        assert done_before < len(list(shards.glob("part-*.done")))  # the resume did the rest
        assert remote == local
        # the bucket's sub-prefixes (broken/, clips/, sub/) were listed as tasks on the cluster
        flat = tmp_path / "flat.jsonl"
        listed = subprocess.run(
            _scan(data_dir, env, "--ray", cluster.address, s3_bucket.uri, "-o", str(flat), *limit),
            env={k: v for k, v in env.items() if not k.startswith("TIPLINE_RAY_TEST")},
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert listed.returncode == 2, listed.stderr
        assert "listed 3 prefixes as Ray tasks" in listed.stderr
        assert relative(records(flat), s3_bucket.uri) == local
        # the driver's manifest: each object with the listing's size and ETag
        import hashlib
        import json

        rows = [json.loads(line) for line in (shards / "manifest.jsonl").read_text().splitlines()]
        files = {p: n for row in rows[1:] for p, n, _ in row["files"]}
        etags = {k: v for row in rows[1:] for k, v in row.get("etags", {}).items()}
        assert set(files) == {f"{s3_bucket.uri}/{k}" for k in s3_bucket.keys}
        for key in s3_bucket.keys:
            data = (s3_bucket.local / key).read_bytes()
            uri = f"{s3_bucket.uri}/{key}"
            assert files[uri] == len(data), key
            assert etags[uri] == hashlib.md5(data).hexdigest(), key  # S3's single-part ETag
    finally:
        ray.shutdown()
        cluster.shutdown()
