"""Crawls through the service (issue 14, surfaces): a partner's report asks for a crawl
(``"crawl": {...}`` on ``POST /api/v1/reports``), a worker runs it against the generated
benign forum on 127.0.0.1 (tests/crawl_site.py), and ``/api/v1/crawls``, the desk's Crawls
pages and ``/metrics`` show its frontier, what matched and why it stopped. SQLite and
PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from crawl_site import BANKED, IMAGES, Site
from tipline import pipeline
from tipline.crawl import engine as crawl_engine
from tipline.crawl.engine import CrawlConfig, Policy
from tipline.net.fetch import FetchSettings
from tipline.pipeline.stages import PipelineConfig
from tipline.scan.hashing import HashOptions
from tipline.service import auth
from tipline.service.app import create_app
from tipline.service.settings import CrawlSettings, ServiceSettings
from tipline.store.crawl_tables import CrawlRow
from tipline.store.jobs import JobQueue

PASSWORD = "crawl desk password"


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    s = Site()
    yield s
    s.stop()


def _settings(db_url: str, tmp_path: Path) -> ServiceSettings:
    return ServiceSettings(
        data_dir=tmp_path,
        database_url=db_url,
        media_mode="hash-only",
        inprocess_workers=0,
        cookie_secure="false",
        # the hotline's caps: a report may ask for less, never more
        crawl=CrawlSettings(max_pages=200, max_depth=6, per_host_delay=0.0, evidence=False),
    )  # type: ignore[arg-type]


def _tokens(sf: sessionmaker[Session]) -> tuple[str, str]:
    with sf() as s, s.begin():
        partner = auth.create_user(s, "partner1", "partner")
        submit = auth.create_token(s, partner, "t", ["report:submit"])
        auth.create_user(s, "ana", "analyst", PASSWORD)
        analyst = auth.create_user(s, "reader", "analyst")
        read = auth.create_token(s, analyst, "r", ["report:read"])
    return submit, read


def test_a_partner_report_asks_for_a_crawl_and_the_desk_shows_why_it_stopped(
    db_url: str,
    engine: Engine,
    session_factory: sessionmaker[Session],
    site: Site,
    tmp_path: Path,
) -> None:
    submit, read = _tokens(session_factory)
    seed = f"{site.base}/forum/thread/1"
    app = create_app(_settings(db_url, tmp_path), load_index="none")
    pcfg = PipelineConfig(
        match=IMAGES.bank().match,
        media_store=None,
        fetch_settings=FetchSettings.build(allow_networks=["127.0.0.0/8"]),
        hash_options=HashOptions(provenance=False),
    )
    try:
        with TestClient(app) as c:
            h = {"Authorization": f"Bearer {submit}"}
            # bad crawl requests: each a 400 naming the field, nothing stored
            for body, words in (
                ({"urls": [seed], "crawl": "yes"}, "crawl must be true or an object"),
                ({"urls": [seed], "crawl": {"max_pages": 10**9}}, "crawl.max_pages: at most 200"),
                ({"urls": [seed], "crawl": {"max_pages": 0}}, "at least 1"),
                ({"urls": [seed], "crawl": {"max_pages": True}}, "a whole number"),
                ({"urls": [seed], "crawl": {"proxy": "x"}}, "unknown field(s) proxy"),
                (
                    {"uploads": [{"filename": "a.txt", "content_base64": "YQ=="}], "crawl": True},
                    "crawl needs at least one http(s) URL",
                ),
            ):
                res = c.post("/api/v1/reports", json=body, headers=h)
                assert res.status_code == 400, (body, res.text)
                assert words in res.json()["message"], res.json()
            with session_factory() as s:
                assert s.scalars(select(CrawlRow)).all() == []
            res = c.post(
                "/api/v1/reports",
                json={"urls": [seed], "crawl": {"max_pages": 60, "max_depth": 5}},
                headers=h,
            )
            assert res.status_code == 201, res.text
            with session_factory() as s:
                (crawl,) = s.scalars(select(CrawlRow)).all()
                assert crawl.report_id is not None and crawl.seeds == [seed]
                assert crawl.budgets["max_pages"] == 60 and crawl.budgets["max_depth"] == 5
                assert crawl.budgets["max_media"] == 10_000  # the hotline's default
                cid = crawl.id
            # the crawl runs in a worker (here: this process, the site's own bank)
            pipeline.configure(pcfg)
            crawl_engine.configure(CrawlConfig(pipeline=pcfg, workers=4))
            with session_factory() as s, s.begin():
                row = s.get(CrawlRow, cid)
                assert row is not None
                row.policy = {**row.policy, **Policy(per_host_delay=0.0).to_json()}
            queue = JobQueue(engine)
            kinds = []
            while (job := queue.run_one("test", session_factory=session_factory)) is not None:
                kinds.append(job.kind)
                assert len(kinds) < 500
            assert "crawl" in kinds
            r = {"Authorization": f"Bearer {read}"}
            listed = c.get("/api/v1/crawls", headers=r).json()["crawls"]
            assert [x["id"] for x in listed] == [cid]
            doc = c.get(f"/api/v1/crawls/{cid}", headers=r).json()
            assert doc["state"] == "done" and doc["stop_reason"] == "frontier_exhausted"
            assert doc["report"] and doc["report"].startswith("TL-")
            matched = {f["url"] for f in doc["found"] if f["matched"]}
            assert {f"{site.base}/img/full/{n}.jpg" for n in BANKED} <= matched
            assert c.get("/api/v1/crawls/99999", headers=r).status_code == 404
            assert c.get("/api/v1/crawls").status_code == 401
            # the desk: the list and the crawl's page say why it stopped and what matched
            res = c.post("/api/v1/auth/login", json={"username": "ana", "password": PASSWORD})
            assert res.status_code == 200, res.text
            page = c.get("/desk/crawls").text
            row_html = re.search(
                rf'<tr data-crawl="{cid}" data-state="done">(.*?)</tr>', page, re.S
            )
            assert row_html and "frontier_exhausted" in row_html.group(1)
            assert 'href="/desk/crawls" aria-current="page"' in page
            detail = c.get(f"/desk/crawls/{cid}").text
            assert '<dd id="stop-reason">frontier_exhausted</dd>' in detail
            assert detail.count('data-matched="yes"') >= len(BANKED)
            assert f"{site.base}/img/full/{sorted(BANKED)[0]}.jpg" in detail
            assert c.get("/desk/crawls/99999").status_code == 404
            # metrics: read from the database at the scrape
            metrics = c.get("/metrics").text
            assert 'tipline_crawls{state="done"} 1.0' in metrics
            got = re.search(r'tipline_crawl_media\{outcome="matched"\} (\d+)', metrics)
            assert got and int(got.group(1)) == doc["media_matched"] >= len(BANKED)
    finally:
        pipeline.configure(None)
        crawl_engine.configure(None)


def test_metrics_crawl_counts_are_cached_a_few_seconds(
    engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    """Two quick scrapes query the database once; after the TTL the counts are read again
    (an injected clock), and a new crawl shows then."""
    from sqlalchemy import event

    from tipline.crawl.engine import start_crawl
    from tipline.service.crawls_api import CrawlMetricsCache

    statements: list[str] = []

    def count(*args: object) -> None:
        statements.append(str(args[2]))

    now = [100.0]
    cache = CrawlMetricsCache(ttl=5.0, clock=lambda: now[0])
    event.listen(engine, "before_cursor_execute", count)
    try:
        first = cache.get(session_factory)
        queries = len(statements)
        assert queries >= 1 and first["crawls"] == {}
        with session_factory() as s, s.begin():
            start_crawl(s, ["http://127.0.0.1:9/x"])
        statements.clear()
        now[0] += 4.9
        assert cache.get(session_factory) == first  # within the TTL: no query
        assert statements == []
        now[0] += 0.2
        assert cache.get(session_factory)["crawls"] == {"queued": 1}
        assert len(statements) == queries
    finally:
        event.remove(engine, "before_cursor_execute", count)
