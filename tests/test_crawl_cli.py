"""``tipline crawl`` as a user runs it: a real subprocess against the local test site."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from crawl_site import Site


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    s = Site()
    yield s
    s.stop()


def _tipline(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "TIPLINE_DATA_DIR": str(tmp_path / "data"),
        "TIPLINE_FETCH_ALLOW_NETWORKS": "127.0.0.0/8",
        "TIPLINE_CRAWL_PER_HOST_DELAY": "0",
    }
    env.pop("TIPLINE_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "tipline", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_crawl_json_summary_and_resume(tmp_path: Path, site: Site) -> None:
    res = _tipline(tmp_path, "crawl", f"{site.base}/bigsite?n=0", "--max-pages", "7", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert (out["state"], out["stop_reason"]) == ("stopped", "max_pages")
    assert out["pages_done"] == 7 and out["budget_left"]["pages"] == 0
    # a finished crawl resumed: nothing more to do, its summary again
    again = _tipline(tmp_path, "crawl", "--resume", str(out["crawl_id"]))
    assert again.returncode == 0, again.stderr
    assert f"crawl {out['crawl_id']}: stopped (max_pages)" in again.stdout


def test_crawl_refuses_bad_seeds_in_one_line(tmp_path: Path) -> None:
    res = _tipline(tmp_path, "crawl", "file:///etc/passwd", "javascript:alert(1)")
    assert res.returncode == 2
    assert res.stderr.strip().startswith("error: no seed is an http(s) URL")
    assert len(res.stderr.strip().splitlines()) == 1
    res = _tipline(tmp_path, "crawl", "--resume", "999")
    assert res.returncode == 2 and "crawl 999 does not exist" in res.stderr


def test_database_url_is_also_the_database_whose_banks_are_matched(
    tmp_path: Path, site: Site
) -> None:
    """``--database-url`` names where the crawl is stored *and* the banks it matches against:
    a fresh database elsewhere works (it crashed with "no bank tables" when the matcher opened
    the default data directory's database instead)."""
    other = tmp_path / "elsewhere" / "crawl.sqlite3"
    other.parent.mkdir()
    url = f"sqlite:///{other}"
    res = _tipline(
        tmp_path, "crawl", f"{site.base}/bigsite?n=0", "--max-pages", "3", "--json",
        "--database-url", url,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["pages_done"] == 3
    assert other.exists()
    assert not (tmp_path / "data" / "tipline.sqlite3").exists()  # the default was not used
