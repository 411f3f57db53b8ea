"""A crawl runner killed with SIGKILL mid-crawl, then resumed: nothing lost, no committed page
fetched again (only the pages in flight at the kill, at most one per worker, are fetched a
second time). SQLite and PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from crawl_site import Site
from tipline.crawl.engine import Budgets, CrawlConfig, Policy, run_crawl, start_crawl
from tipline.net.fetch import FetchSettings
from tipline.pipeline.stages import PipelineConfig
from tipline.scan.hashing import HashOptions
from tipline.store.crawl_tables import CrawlPage, CrawlRow

RUNNER = textwrap.dedent(
    """
    import sys
    from tipline.crawl.engine import CrawlConfig, run_crawl
    from tipline.net.fetch import FetchSettings
    from tipline.pipeline.stages import PipelineConfig
    from tipline.scan.hashing import HashOptions
    from tipline.store.base import make_engine
    pcfg = PipelineConfig(match=lambda r: [], hash_options=HashOptions(provenance=False),
                          fetch_settings=FetchSettings.build(allow_networks=["127.0.0.0/8"]))
    cfg = CrawlConfig(pipeline=pcfg, workers=2, heartbeat_seconds=0.1, stale_seconds=1.0)
    run_crawl(make_engine(sys.argv[1]), int(sys.argv[2]), cfg)
    """
)

PAGES = 60


@pytest.fixture
def site() -> Iterator[Site]:
    s = Site()
    s.on_request = lambda _h, p: time.sleep(0.04) if p.startswith("/bigsite") else None
    yield s
    s.stop()


def _done(sf: sessionmaker[Session], cid: int) -> int:
    with sf() as s:
        return int(
            s.scalar(
                select(func.count())
                .select_from(CrawlPage)
                .where(CrawlPage.crawl_id == cid, CrawlPage.state == "done")
            )
            or 0
        )


def test_sigkill_mid_crawl_then_resume(
    db_url: str, session_factory: sessionmaker[Session], site: Site
) -> None:
    with session_factory() as s, s.begin():
        crawl, _ = start_crawl(
            s,
            [f"{site.base}/bigsite?n=0"],
            budgets=Budgets(max_pages=PAGES, max_depth=10),
            policy=Policy(barren_pages=0, per_host_delay=0.0, per_host_concurrency=2),
        )
        cid = crawl.id
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", RUNNER, db_url, str(cid)], env=env)
    try:
        deadline = time.monotonic() + 60
        while _done(session_factory, cid) < 15:
            assert proc.poll() is None, "the runner ended before it was killed"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    committed_at_kill = _done(session_factory, cid)
    assert committed_at_kill < PAGES
    with session_factory() as s:
        row = s.get(CrawlRow, cid)
        assert row is not None and row.state == "running"  # it never said goodbye
    # a new runner takes the crawl over once the dead one's heartbeat is stale
    pcfg = PipelineConfig(
        match=lambda r: [],
        hash_options=HashOptions(provenance=False),
        fetch_settings=FetchSettings.build(allow_networks=["127.0.0.0/8"]),
    )
    cfg = CrawlConfig(pipeline=pcfg, workers=2, stale_seconds=1.0)
    time.sleep(1.1)
    t = time.monotonic()
    st = run_crawl(session_factory, cid, cfg)
    resumed_in = time.monotonic() - t
    assert (st.state, st.stop_reason) == ("stopped", "max_pages")
    assert st.pages_done == PAGES and _done(session_factory, cid) == PAGES
    assert resumed_in < 30
    twice = {p: n for (_h, p), n in site.hits.items() if n > 1}
    # at most the two pages in flight at the kill were fetched again; none more than twice
    assert len(twice) <= 2 and all(n == 2 for n in twice.values())
    with session_factory() as s:
        pages = s.scalars(select(CrawlPage).where(CrawlPage.crawl_id == cid)).all()
    assert all(p.state in ("done", "queued") for p in pages)
    assert len({p.url for p in pages}) == len(pages)
