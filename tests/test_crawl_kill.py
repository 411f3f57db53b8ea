"""A crawl runner killed with SIGKILL mid-crawl, then resumed: nothing lost, no committed page
fetched again (only the pages in flight at the kill, at most one per worker, are fetched a
second time). SQLite and PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from crawl_site import Site
from tipline.crawl.engine import Budgets, CrawlConfig, Policy, run_crawl, start_crawl
from tipline.net.fetch import FetchSettings
from tipline.pipeline.stages import PipelineConfig
from tipline.scan.hashing import HashOptions
from tipline.store.crawl_tables import CrawlMedia, CrawlPage, CrawlRow

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


JOURNAL_RUNNER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from tipline.crawl.engine import CrawlConfig, run_crawl
    from tipline.net.fetch import FetchSettings
    from tipline.pipeline.stages import PipelineConfig
    from tipline.scan.hashing import HashOptions
    from tipline.store.base import make_engine
    pcfg = PipelineConfig(match=lambda r: [], hash_options=HashOptions(provenance=False),
                          fetch_settings=FetchSettings.build(allow_networks=["127.0.0.0/8"]))
    cfg = CrawlConfig(pipeline=pcfg, workers=2, heartbeat_seconds=0.1, stale_seconds=60.0,
                      journal_dir=Path(sys.argv[3]))
    run_crawl(make_engine(sys.argv[1]), int(sys.argv[2]), cfg)
    """
)


def _fetching(sf: sessionmaker[Session], cid: int) -> list[str]:
    with sf() as s:
        return list(
            s.scalars(
                select(CrawlPage.url).where(
                    CrawlPage.crawl_id == cid, CrawlPage.state == "fetching"
                )
            )
        )


def test_sigkill_with_journal_refetches_no_completed_response(
    db_url: str, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    """The runner is killed while both its workers are inside a media transfer (the site holds
    those responses), after their pages' responses were completely received: the resumed run
    fetches neither page again, nor any media file that was completely received, only the two
    transfers cut off by the kill; every page and every media file is recorded once. The
    resume does not wait for the dead runner's heartbeat (60 s stale): the recorded runner is
    a process of this host that no longer exists, so it is taken over at once."""
    pages = 40
    hang, release = threading.Event(), threading.Event()
    hanging: list[str] = []
    site = Site()

    def on_request(_host: str, path: str) -> None:
        if path.startswith("/bigsite/img/") and hang.is_set():
            with site.lock:
                hanging.append(path)
            release.wait(30)  # a transfer in progress at the kill
        elif path.startswith("/bigsite"):
            time.sleep(0.005)

    site.on_request = on_request
    journal_dir = tmp_path / "journal"
    try:
        with session_factory() as s, s.begin():
            crawl, _ = start_crawl(
                s,
                [f"{site.base}/bigsite?n=0&m=2"],
                budgets=Budgets(max_pages=pages, max_depth=10),
                policy=Policy(barren_pages=0, per_host_delay=0.0, per_host_concurrency=2),
            )
            cid = crawl.id
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        proc = subprocess.Popen(
            [sys.executable, "-c", JOURNAL_RUNNER, db_url, str(cid), str(journal_dir)], env=env
        )
        try:
            deadline = time.monotonic() + 60
            while _done(session_factory, cid) < 8:
                assert proc.poll() is None, "the runner ended before it was killed"
                assert time.monotonic() < deadline
                time.sleep(0.02)
            hang.set()
            # both workers inside a media transfer, every other page committed
            while len(hanging) < 2 or len(_fetching(session_factory, cid)) != 2:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.02)
            time.sleep(0.2)  # nothing else is going on: the two workers wait on the site
            in_flight = [_path(u) for u in _fetching(session_factory, cid)]
            with site.lock:
                completed_at_kill = dict(site.completed)
                hits_at_kill = dict(site.hits)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
        hang.clear()
        release.set()
        # the two pages in flight were completely received (their media were being fetched)
        assert len(in_flight) == 2
        assert all(completed_at_kill.get(("127.0.0.1", p)) == 1 for p in in_flight)
        assert any(p.name.endswith(".jsonl") for p in (journal_dir / f"crawl-{cid}").iterdir())
        pcfg = PipelineConfig(
            match=lambda r: [],
            hash_options=HashOptions(provenance=False),
            fetch_settings=FetchSettings.build(allow_networks=["127.0.0.0/8"]),
        )
        cfg = CrawlConfig(pipeline=pcfg, workers=2, stale_seconds=60.0, journal_dir=journal_dir)
        t = time.monotonic()
        st = run_crawl(session_factory, cid, cfg)  # no take_over: the dead pid is enough
        assert time.monotonic() - t < 30
        assert (st.state, st.stop_reason) == ("stopped", "max_pages")
        assert st.pages_done == pages
    finally:
        release.set()
        site.stop()
    again = {
        k: n - hits_at_kill.get(k, 0) for k, n in site.hits.items() if n > hits_at_kill.get(k, 0)
    }
    # nothing whose response was completely received before the kill was requested again
    assert not [k for k in again if k in completed_at_kill], again
    # what was requested again: only the transfers cut off by the kill (both media), once
    cut_off = {k for k, n in hits_at_kill.items() if n > completed_at_kill.get(k, 0)}
    assert set(again) & cut_off == cut_off and len(cut_off) == 2
    assert all(k[1].startswith("/bigsite/img/") for k in cut_off)
    with session_factory() as s:
        rows = s.scalars(select(CrawlPage).where(CrawlPage.crawl_id == cid)).all()
        media = s.scalars(select(CrawlMedia).where(CrawlMedia.crawl_id == cid)).all()
    done = [p for p in rows if p.state == "done"]
    assert len(done) == pages and len({p.url for p in rows}) == len(rows)
    # none lost: every done page has both its images, each recorded once, with its hashes
    assert all(p.media == 2 for p in done)
    assert len(media) == 2 * pages == len({m.url for m in media})
    assert all(m.sha256 and m.pdq for m in media)
    by_page = Counter(m.page_id for m in media)
    assert all(by_page[p.id] == 2 for p in done)
    # every page committed: the journal is gone
    assert not (journal_dir / f"crawl-{cid}").exists()


def _path(url: str) -> str:
    u = urlsplit(url)
    return u.path + (f"?{u.query}" if u.query else "")


def test_runner_gone_only_for_an_ended_process_of_this_host() -> None:
    from tipline.crawl.engine import _runner_id, runner_gone

    mine = _runner_id()
    host, pid, ns, token = mine.split(":")
    assert int(pid) == os.getpid() and not runner_gone(mine)  # this process
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert runner_gone(f"{host}:{child.pid}:{ns}:{token}")  # ended (and reaped)
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    time.sleep(0.5)  # ended, not reaped yet: a zombie has ended too
    assert runner_gone(f"{host}:{zombie.pid}:{ns}:{token}")
    zombie.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert not runner_gone(f"{host}:{live.pid}:{ns}:{token}")
    finally:
        live.kill()
        live.wait()
    # another host, another PID namespace, an old or malformed id: not known to be gone
    assert not runner_gone(f"elsewhere.example:{child.pid}:{ns}:{token}")
    assert not runner_gone(f"{host}:{child.pid}:1:{token}")
    assert not runner_gone(f"{host}:{child.pid}:{token}")
    assert not runner_gone(f"{host}:x:{ns}:{token}")
    assert not runner_gone(None)


def test_journal_lines_survive_without_close_torn_tail_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The journal's mapped segments: a line copied in is read back with no close (as after
    kill -9), a torn last line and the zero-byte end are skipped, a line longer than a segment
    gets one of its own, and committed segments are deleted."""
    from tipline.crawl import journal as J

    j = J.Journal(tmp_path, 7, "host:1:ns:ab")
    assert j.map is not None  # mapped (a write per line only where it cannot be)
    j.write({"e": "page", "id": 1, "found": [["http://h/a", "page", "a"]]})
    j.write({"e": "media", "id": 1, "m": {"url_key": "k", "url": "http://h/i.png"}})
    j.write({"e": "page", "id": 2, "crawl": 7})  # a line read back, written again
    j.map[j.size : j.size + 9] = b'{"e":"pag'  # killed mid-copy
    got = J.load(tmp_path, 7)
    assert sorted(got) == [1, 2]
    assert got[1].page["found"] == [["http://h/a", "page", "a"]]
    assert got[1].media["k"]["url"] == "http://h/i.png"
    assert got[2].page == {"e": "page", "id": 2, "crawl": 7}
    monkeypatch.setattr(J, "SEGMENT_BYTES", 1000)
    j2 = J.Journal(tmp_path, 7, "host:2:ns:cd")
    for i in range(20):
        j2.write({"e": "page", "id": 100 + i, "x": "y" * 100})
    j2.write({"e": "page", "id": 200, "x": "z" * 5000})
    assert j2.segment >= 3 and j2.capacity >= 5000
    assert len(J.load(tmp_path, 7)) == 2 + 21
    j2.committed(range(100, 201))
    assert len(list((tmp_path / "crawl-7").glob("host_2_ns_cd-*.jsonl"))) == 1  # the current
    j2.close()
    j.close()
    assert not (tmp_path / "crawl-7").exists()
