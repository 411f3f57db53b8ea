"""A two-node Ray cluster (``ray.cluster_utils.Cluster``) that loses a node mid-scan, inside a
loopback-only namespace (tests/ray_netns.py): every file is still scanned exactly once and the
records equal the local scan's."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from ray_netns import assert_loopback_only, inner, run_inner_tests
from test_scan_ray_cluster import Corpus

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.mark.timeout(200)
def test_ray_node_loss_in_loopback_namespace() -> None:
    run_inner_tests(sys.modules[__name__], timeout=180)


@inner
def test_losing_a_node_mid_scan_loses_and_doubles_nothing(tmp_path: Path) -> None:
    corpus = Corpus(tmp_path)  # before Ray: the local pool forks
    assert_loopback_only()
    import ray
    from ray.cluster_utils import Cluster

    from tipline.index.columns import bank_columns
    from tipline.scan import ray_runner, runner
    from tipline.scan.hashing import HashOptions
    from tipline.store.banks import open_bank_store

    # the options `tipline scan` runs with by default (the local scan compared against)
    options = HashOptions(pdq_mode="fast", dihedral=True, trim_borders=True, crop_queries=True)
    store = open_bank_store(corpus.data)
    chosen = runner.chosen_banks(store)
    columns = bank_columns(chosen, (e for b in chosen for e in store.iter_entries(b.name)))
    store.close()
    os.makedirs(os.path.join(os.environ["RAY_TMPDIR"], "ray"), exist_ok=True)  # its default
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "include_dashboard": False,
        },
    )
    try:
        worker = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        assert ray.cluster_resources().get("CPU") == 2
        got: dict[str, dict] = {}
        removed = []

        def sink(recs: list) -> None:
            for r in recs:
                assert r.path not in got, f"record twice: {r.path}"
                got[r.path] = r.to_json()
            if not removed:  # mid-run: the first records are in, most files are not
                cluster.remove_node(worker, allow_graceful=False)
                removed.append(worker)

        summary = ray_runner.run_scan_ray([str(corpus.media)], options, columns, sink)
        assert removed and len(got) == len(corpus.local)
        assert summary.exit_status == corpus.local_rc
        deadline = time.time() + 90  # the GCS marks the killed node dead (health checks)
        while len([n for n in ray.nodes() if n["Alive"]]) != 1 and time.time() < deadline:
            time.sleep(0.5)
        assert len([n for n in ray.nodes() if n["Alive"]]) == 1
        for path, want in corpus.local.items():
            assert got[path] == want, path
    finally:
        ray.shutdown()
        cluster.shutdown()
