"""The crawler against a generated benign site on 127.0.0.1 (tests/crawl_site.py): the forum
report crawl ("done when"), scope and policy, budgets, hostile pages, politeness, links.
SQLite and PostgreSQL where the database matters."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from crawl_site import (
    BANKED,
    GUIDE_LABEL,
    GUIDE_TXT,
    IMAGES,
    MODEL_BANKED,
    MODEL_LABEL,
    MODEL_OTHER,
    MODEL_PAGE,
    MODELS,
    Site,
)
from guide_texts import KEYWORDS
from tipline import pipeline
from tipline.crawl import engine as crawl_engine
from tipline.crawl.engine import (
    Budgets,
    CrawlBusyError,
    CrawlConfig,
    CrawlError,
    Policy,
    crawl_report,
    run_crawl,
    start_crawl,
)
from tipline.net.fetch import FetchSettings
from tipline.net.links import canonical_url, extract
from tipline.pipeline.stages import PipelineConfig
from tipline.provenance.keywords import KeywordList, KeywordMatcher
from tipline.scan.hashing import HashOptions
from tipline.service.intake import IntakeContext, IntakeSettings, NewReport, create_reports
from tipline.store.crawl_tables import CrawlMedia, CrawlPage, CrawlRow
from tipline.store.jobs import JobQueue
from tipline.store.tables import Item, ReportItem, Upload


@pytest.fixture(scope="module")
def site_server() -> Iterator[Site]:
    s = Site()
    yield s
    s.stop()


@pytest.fixture
def site(site_server: Site) -> Site:
    site_server.hits.clear()
    return site_server


@pytest.fixture(scope="module")
def pcfg() -> PipelineConfig:
    return PipelineConfig(
        match=IMAGES.bank().match,
        media_store=None,
        fetch_settings=FetchSettings.build(allow_networks=["127.0.0.0/8"]),
        hash_options=HashOptions(provenance=False),
        keywords=KeywordMatcher(KeywordList.parse("\n".join(KEYWORDS))),
    )


@pytest.fixture
def ccfg(pcfg: PipelineConfig) -> Iterator[CrawlConfig]:
    c = CrawlConfig(pipeline=pcfg, workers=4)
    pipeline.configure(pcfg)
    crawl_engine.configure(c)
    yield c
    pipeline.configure(None)
    crawl_engine.configure(None)


FAST = Policy(per_host_delay=0.0, per_host_concurrency=4)


def _crawl(
    sf: sessionmaker[Session],
    cfg: CrawlConfig,
    seeds: list[str],
    budgets: Budgets | None = None,
    policy: Policy = FAST,
) -> tuple[int, crawl_engine.CrawlStatus]:
    with sf() as s, s.begin():
        crawl, _ = start_crawl(s, seeds, budgets=budgets, policy=policy)
        cid = crawl.id
    return cid, run_crawl(sf, cid, cfg)


def _pages(sf: sessionmaker[Session], cid: int) -> dict[str, CrawlPage]:
    with sf() as s:
        rows = s.scalars(select(CrawlPage).where(CrawlPage.crawl_id == cid)).all()
        return {r.url: r for r in rows}


def _media(sf: sessionmaker[Session], cid: int) -> dict[str, CrawlMedia]:
    with sf() as s:
        rows = s.scalars(select(CrawlMedia).where(CrawlMedia.crawl_id == cid)).all()
        return {r.url: r for r in rows}


def _drain(queue: JobQueue, sf: sessionmaker[Session], limit: int = 500) -> list[str]:
    kinds = []
    while (job := queue.run_one("test", session_factory=sf, heartbeat=False)) is not None:
        kinds.append(job.kind)
        assert len(kinds) < limit
    return kinds


# -- the "done when" test ------------------------------------------------------------------------


def _items_by_source(s: Session, report_id: int) -> dict[str | None, Item]:
    """The report's items by the URL each came from."""
    rows = s.execute(
        select(ReportItem.source_url, Item)
        .join(Item, Item.id == ReportItem.item_id)
        .where(ReportItem.report_id == report_id)
    ).all()
    return {src: item for src, item in rows}


def test_report_naming_one_forum_page_finds_every_banked_image(
    engine: Engine,
    session_factory: sessionmaker[Session],
    site: Site,
    ccfg: CrawlConfig,
    tmp_path: Path,
) -> None:
    """The issue's "done when": a report naming one thread of the forum ends with every banked
    image matched, the guide found by keyword and by TLSH, the model hashes matched (a model
    file's and the ones a model page prints), non-matching media kept only as hashes, evidence
    captures of the pages where something matched, and the crawl saying why it stopped."""
    import hashlib

    from tipline.removal.evidence import load
    from tipline.store.media import Keyring, new_key

    ring = Keyring()
    ring.add(new_key())
    cfg = replace(ccfg, evidence_dir=tmp_path / "ev", keyring=ring)
    crawl_engine.configure(cfg)
    queue = JobQueue(engine)
    ctx = IntakeContext(session_factory, queue, IntakeSettings(secret=b"s"))
    seed = f"{site.base}/forum/thread/1"
    [(report, _)] = create_reports(ctx, [NewReport(urls=[seed])], "partner_api")
    with session_factory() as s, s.begin():
        crawl = crawl_report(s, queue, report.id, policy=FAST)
        cid = crawl.id
    ran = _drain(queue, session_factory)
    assert "crawl" in ran and "analyse" in ran
    with session_factory() as s:
        row = s.get(CrawlRow, cid)
        assert row is not None
        assert (row.state, row.stop_reason) == ("done", "frontier_exhausted")
    media = _media(session_factory, cid)
    images = {u: m for u, m in media.items() if m.via != "model"}
    for name in BANKED:  # every banked full-size image of the forum matched
        m = images[f"{site.base}/img/full/{name}.jpg"]
        assert m.matched and m.matches and m.matches[0]["label"] == "DEMO-benign-stand-in"
        assert m.upload_id is not None
    unmatched = [m for m in images.values() if not m.matched]
    assert len(unmatched) >= 5
    for m in unmatched:  # kept only as hashes, URL and page
        assert m.upload_id is None and m.sha256 and m.pdq and m.page_id is not None
    pages = _pages(session_factory, cid)
    # the model file whose SHA-256 is banked: hashed as it streamed, matched, never kept
    model = media[f"{site.base}{MODEL_BANKED}"]
    assert model.via == "model" and model.error is None
    assert model.sha256 == hashlib.sha256(MODELS[MODEL_BANKED]).hexdigest()
    assert model.size == len(MODELS[MODEL_BANKED])
    assert model.matched and model.matches
    assert [(x["signal_type"], x["label"]) for x in model.matches] == [("sha256", MODEL_LABEL)]
    assert model.flags and model.flags["model"]["format"] == "safetensors"
    assert model.flags["model"]["autov2"] == model.sha256[:10]
    assert model.upload_id is None  # a model file's bytes are never stored
    other = media[f"{site.base}{MODEL_OTHER}"]
    assert other.via == "model" and not other.matched and other.upload_id is None
    assert other.sha256 == hashlib.sha256(MODELS[MODEL_OTHER]).hexdigest()
    thread5 = pages[f"{site.base}/forum/thread/5"]
    assert model.page_id == thread5.id and thread5.matched
    # the guide: the thread quoting it is flagged by keyword (its page text is too far from
    # the banked guide for TLSH), the guide file itself is found by keyword and TLSH
    assert thread5.flagged and thread5.notes
    assert {h["term"] for h in thread5.notes["document"]["keyword_hits"]} == set(KEYWORDS)
    guide = pages[f"{site.base}{GUIDE_TXT}"]
    assert guide.state == "done" and guide.media_type == "text/plain"
    assert guide.matched and guide.flagged and guide.notes
    assert {h["term"] for h in guide.notes["document"]["keyword_hits"]} == set(KEYWORDS)
    [tlsh_match] = guide.notes["document_matches"]
    assert (tlsh_match["signal_type"], tlsh_match["label"]) == ("tlsh", GUIDE_LABEL)
    assert 0 < tlsh_match["distance"] <= 30
    # a Civitai-style model page: the AutoV2 it prints finds the banked full SHA-256
    mpage = pages[f"{site.base}{MODEL_PAGE}"]
    assert mpage.matched and mpage.notes and mpage.notes["model_page_hashes"] == 1
    [cited] = mpage.notes["model_page_matches"]
    assert (cited["label"], cited["via"]) == (MODEL_LABEL, "cited_resource")
    # its bank entry is not in the database here (an in-memory index): no full SHA-256 to
    # key an item by, so it stays a matched page (see the model page test below)
    assert mpage.notes["model_page_item"] == "no full SHA-256 of the model: no item"
    # pages where something matched have a sealed evidence capture; the others none
    captured = {u for u, p in pages.items() if p.evidence_sha256}
    assert captured == {u for u, p in pages.items() if p.matched}
    assert {seed, thread5.url, guide.url, mpage.url} <= captured
    bundle = load(guide.evidence_sha256 or "", store_dir=tmp_path / "ev", keyring=ring)
    assert bundle.url == guide.url and bundle.http_status == 200
    with session_factory() as s:
        uploads = s.scalars(select(Upload).where(Upload.report_id == report.id)).all()
        # the crawl's uploads are exactly the matched images, and their bytes left the table
        kept = [u for u in uploads if u.source_url != seed]
        assert {u.source_url for u in kept} == {m.url for m in images.values() if m.matched}
        assert all(u.data is None for u in kept)
        items = s.scalars(
            select(Item).join(ReportItem).where(ReportItem.report_id == report.id)
        ).all()
        assert {i.status for i in items} <= {"matched", "auto_confirmed", "new", "hashed"}
        # the matched images, and the guide file and the model file: items of the report too
        assert len([i for i in items if i.matches]) == len(kept) + 2
        found = _items_by_source(s, report.id)
        guide_item = found[guide.url]
        assert guide_item.status == "matched" and guide_item.size > 0
        assert [(x["signal_type"], x["label"]) for x in guide_item.matches] == [
            ("tlsh", GUIDE_LABEL)
        ]
        assert guide_item.keyword_hits and guide_item.media_ref is None  # hash-only
        model_item = found[model.url]
        assert model_item.status == "matched" and model_item.sha256 == model.sha256
        assert [(x["signal_type"], x["label"]) for x in model_item.matches] == [
            ("sha256", MODEL_LABEL)
        ]
        assert model_item.media_ref is None  # a model file's bytes are never stored
        assert other.url not in found  # an unmatched model: no item
        # clustered and triaged by the pipeline's jobs, as a kept image is
        assert guide_item.cluster_id is not None and guide_item.priority is not None
        assert model_item.cluster_id is not None and model_item.priority is not None
    assert ran.count("triage") >= len(kept) + 2
    # confirmed by an analyst, each becomes a removal location: the URL it was found at
    from tipline.removal import scheduler
    from tipline.store.case_tables import CaseRow

    with session_factory() as s, s.begin():
        for item_id in (guide_item.id, model_item.id):
            it = s.get(Item, item_id)
            assert it is not None
            it.status = "confirmed"
        scheduler.intake(s, datetime.now(UTC))
    with session_factory() as s:
        case_urls = set(s.scalars(select(CaseRow.url)))
    assert {guide.url, model.url} <= case_urls
    # Arachnid's rule: thread 4 has nothing over its pages; its branch stops after 3
    assert "branch_stopped" in (pages[f"{site.base}/forum/thread/4"].notes or {})
    assert site.fetched("/forum/thread/4?page=2") == 0
    # nothing fetched twice by the crawl: besides the crawl's own fetch, a page has one more
    # for its evidence capture, and the seed one more for the pipeline's fetch of the report's
    # URL (which finds a page, not media)
    by_path = {
        urlsplit(u).path + (f"?{urlsplit(u).query}" if urlsplit(u).query else ""): p
        for u, p in pages.items()
    }
    captured_ids = {p.id for p in pages.values() if p.evidence_sha256}
    on_captured = {urlsplit(u).path for u, m in media.items() if m.page_id in captured_ids}
    for (_h, path), n in site.hits.items():
        if not path.startswith(("/forum/", "/img/", "/files/")):
            continue
        page = by_path.get(path)
        if page is not None:
            expected = 1 + int(bool(page.evidence_sha256)) + int(path == "/forum/thread/1")
            assert n == expected, path
        else:  # media: the crawl's fetch, and where its page was captured, the capture's
            assert 1 <= n <= 1 + int(path in on_captured), path
    # page HTML is not stored anywhere: no upload holds a page
    assert all(not (u.filename or "").startswith(f"{site.base}/forum") for u in kept)


def test_gallery_media_host_followed_one_hop(
    session_factory: sessionmaker[Session], site: Site, ccfg: CrawlConfig
) -> None:
    cid, st = _crawl(
        session_factory,
        ccfg,
        [f"{site.base}/gallery/"],
        policy=Policy(barren_pages=0, per_host_delay=0.0),
    )
    assert st.state == "done"
    pages = _pages(session_factory, cid)
    view = pages[f"{site.imagehost}/view/g1"]
    assert view.offsite and view.state == "done"
    media = _media(session_factory, cid)
    assert f"{site.imagehost}/full/g1.png" in media  # the full size behind the viewer
    assert f"{site.base}/img/thumb/g1.jpg?2x=" in media  # srcset (canonical form)
    assert site.fetched("/other", "127.0.0.2") == 0  # one hop only


# -- budgets -------------------------------------------------------------------------------------


def test_page_depth_and_media_budgets(
    session_factory: sessionmaker[Session], site: Site, ccfg: CrawlConfig
) -> None:
    seed = f"{site.base}/bigsite?n=0"
    cid, st = _crawl(
        session_factory,
        ccfg,
        [seed],
        Budgets(max_pages=20),
        Policy(barren_pages=0, per_host_delay=0),
    )
    assert (st.state, st.stop_reason) == ("stopped", "max_pages")
    assert st.pages_done + st.pages_failed == 20
    assert len(_pages(session_factory, cid)) <= 20  # the frontier never outgrows the budget

    cid, st = _crawl(
        session_factory,
        ccfg,
        [f"{site.base}/bigsite?n=1000"],
        Budgets(max_depth=1),
        Policy(barren_pages=0, per_host_delay=0),
    )
    assert st.stop_reason == "frontier_exhausted" and st.pages_done == 6
    assert max(p.depth for p in _pages(session_factory, cid).values()) == 1

    cid, st = _crawl(session_factory, ccfg, [f"{site.base}/forum/thread/1"], Budgets(max_media=3))
    assert (st.state, st.stop_reason) == ("stopped", "max_media")
    assert st.media_done == 3

    cid, st = _crawl(
        session_factory, ccfg, [f"{site.base}/forum/thread/2"], Budgets(max_bytes=1000)
    )
    assert st.stop_reason == "max_bytes"


def test_wall_time_budget_and_slow_loris(
    session_factory: sessionmaker[Session], site: Site, ccfg: CrawlConfig
) -> None:
    t = time.monotonic()
    cid, st = _crawl(
        session_factory,
        ccfg,
        [f"{site.base}/slow", f"{site.base}/cal?month=0"],
        Budgets(max_seconds=1.5, max_depth=1000),
        Policy(barren_pages=0, per_host_delay=0.2, fetch_seconds=2.0),
    )
    assert time.monotonic() - t < 10
    assert st.stop_reason == "max_seconds"
    slow = _pages(session_factory, cid)[f"{site.base}/slow"]
    assert slow.state == "failed" and (slow.error or "").startswith("timeout")


# -- hostile pages -------------------------------------------------------------------------------


def test_hostile_pages_each_fail_alone_and_the_crawl_goes_on(
    session_factory: sessionmaker[Session], site: Site, ccfg: CrawlConfig
) -> None:
    b = site.base
    seeds = [
        f"{b}/loop/a",
        f"{b}/cal?month=0",
        f"{b}/many",
        f"{b}/huge",
        f"{b}/endless",
        f"{b}/bomb",
        f"{b}/wrongtype",
        f"{b}/malformed",
        f"{b}/odd/dir/page",
        f"{b}/to-private",
    ]
    policy = Policy(
        barren_pages=0, per_host_delay=0, max_links_per_page=300, page_max_bytes=4 * 2**20
    )
    cid, st = _crawl(session_factory, ccfg, seeds, Budgets(max_pages=400, max_depth=3), policy)
    assert st.state in ("done", "stopped")
    pages = _pages(session_factory, cid)
    # loops: each page once
    assert site.fetched("/loop/a") == 1 and site.fetched("/loop/b") == 1
    # the infinite calendar ends at the depth limit, each month once
    months = [p for p in pages.values() if "/cal" in p.url]
    assert max(p.depth for p in months) == 3
    assert all(n == 1 for (_h, p), n in site.hits.items() if p.startswith("/cal"))
    # 10,000 links: the first 300 kept, the rest counted
    many = pages[f"{b}/many"]
    assert many.links == 300 and many.notes and many.notes["links_dropped"] == 9_700
    # size limits: a declared 2 GB, an endless stream, a gzip bomb
    for path in ("/huge", "/endless", "/bomb"):
        assert pages[f"{b}{path}"].state == "failed", path
        assert (pages[f"{b}{path}"].error or "").startswith("too_large"), path
    # wrong Content-Type: the bytes decide
    assert pages[f"{b}/wrongtype"].state == "done" and pages[f"{b}/wrongtype"].links == 1
    img = _media(session_factory, cid)[f"{b}/wrongtype/img"]
    assert img.matched and img.via == "page"
    # malformed HTML: what could be read
    assert f"{b}/malformed/ok" in pages and f"{b}/malformed/bare" in pages
    # odd bases and relative links, javascript:/data:/file:/mailto: ignored
    odd = pages[f"{b}/odd/dir/page"]
    assert f"{b}/odd/base/rel" in pages
    assert f"{b}/up" in pages
    assert f"{b}/odd/base/?q=1" in pages
    assert f"{b}/odd/netpath" in pages and f"{b}/odd/spaced" in pages
    assert odd.notes and odd.notes["links_ignored"] >= 5
    assert not any(u.startswith(("javascript", "data", "file", "mailto")) for u in pages)
    # redirects to private addresses: refused, never connected
    for path in ("/redirect-private", "/redirect-metadata"):
        row = pages[f"{b}{path}"]
        assert row.state == "failed" and (row.error or "").startswith("blocked_address"), path


def test_deny_list_and_scope(
    session_factory: sessionmaker[Session], site: Site, ccfg: CrawlConfig
) -> None:
    cid, st = _crawl(
        session_factory,
        ccfg,
        [f"{site.base}/gallery/"],
        policy=Policy(per_host_delay=0, deny_domains=("127.0.0.2",), barren_pages=0),
    )
    assert st.state == "done"
    assert not any(h == "127.0.0.2" for (h, _p) in site.hits if _p.startswith("/view/g"))
    assert not any(p.host == "127.0.0.2" for p in _pages(session_factory, cid).values())


def test_bad_seeds(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as s, s.begin(), pytest.raises(CrawlError, match="no seed"):
        start_crawl(s, ["javascript:alert(1)", "file:///etc/passwd", "", "ftp://x/"])
    with session_factory() as s, s.begin():
        crawl, errors = start_crawl(s, ["http://127.0.0.1:1/a", "data:text/html,x"])
        assert len(errors) == 1 and "data:" in errors[0]
        assert crawl.seeds == ["http://127.0.0.1:1/a"]


# -- politeness and runners ----------------------------------------------------------------------


def test_per_host_concurrency_and_delay(
    session_factory: sessionmaker[Session], site: Site, ccfg: CrawlConfig
) -> None:
    site.max_active.clear()
    site.times.clear()

    def slow(_host: str, path: str) -> None:
        if path.startswith("/bigsite"):
            time.sleep(0.02)

    site.on_request = slow
    try:
        _cid, st = _crawl(
            session_factory,
            ccfg,
            [f"{site.base}/bigsite?n=5000"],
            Budgets(max_pages=12),
            Policy(barren_pages=0, per_host_concurrency=1, per_host_delay=0.1),
        )
    finally:
        site.on_request = None
    assert st.pages_done == 12
    assert site.max_active["127.0.0.1"] == 1
    starts = site.times["127.0.0.1"]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 0.1


def test_a_live_runner_is_not_doubled(
    session_factory: sessionmaker[Session], site: Site, ccfg: CrawlConfig
) -> None:
    with session_factory() as s, s.begin():
        crawl, _ = start_crawl(s, [f"{site.base}/loop/a"], policy=FAST)
        crawl.runner, crawl.runner_seen_at = "other:1", crawl_engine.datetime.now(crawl_engine.UTC)
        cid = crawl.id
    with pytest.raises(CrawlBusyError, match="being run by other:1"):
        run_crawl(session_factory, cid, ccfg)
    st = run_crawl(session_factory, cid, ccfg, take_over=True)
    assert st.state == "done"


def test_stop_event_pauses_and_resume_finishes(
    session_factory: sessionmaker[Session], site: Site, ccfg: CrawlConfig
) -> None:
    stop = threading.Event()
    seen: list[Any] = []

    def progress(st: crawl_engine.CrawlStatus) -> None:
        seen.append(st)
        if st.pages_done >= 3:
            stop.set()

    site.on_request = lambda _h, _p: time.sleep(0.01)
    try:
        with session_factory() as s, s.begin():
            crawl, _ = start_crawl(
                s,
                [f"{site.base}/bigsite?n=9000"],
                budgets=Budgets(max_pages=30),
                policy=Policy(barren_pages=0, per_host_delay=0.0, per_host_concurrency=1),
            )
            cid = crawl.id
        cfg1 = CrawlConfig(pipeline=ccfg.pipeline, workers=1, heartbeat_seconds=0.05)
        st = run_crawl(session_factory, cid, cfg1, stop=stop, progress=progress)
        assert st.state == "paused" and 3 <= st.pages_done < 30
        st = run_crawl(session_factory, cid, ccfg)
    finally:
        site.on_request = None
    assert (st.state, st.pages_done) == ("stopped", 30)
    assert all(n == 1 for (_h, p), n in site.hits.items() if p.startswith("/bigsite?n=9"))


# -- links ---------------------------------------------------------------------------------------


def test_link_shapes() -> None:
    page = b"""<html><head><base href="/base/">
    <meta property="og:image" content="/og.jpg"><link rel="next" href="p2"></head><body>
    <a href="/full/a.jpg"><img src="/thumb/a.jpg" srcset="/t/a-1x.jpg 1x, /t/a-2x.jpg 2x"></a>
    <a href="/view/7"><img src="/thumb/b.jpg"></a>
    <video poster="/poster.jpg"><source src="/v.mp4"></video>
    <a href="/files/pack.zip">zip</a><a href="/m/model.safetensors">m</a><a href="/g.pdf">g</a>
    <a href="javascript:void(0)">j</a><a href="data:,x">d</a><a href="file:///x">f</a>
    <a href="page.html?b=2&a=1#frag">p</a><a href="page.html?a=1&b=2">same</a>
    </body></html>"""
    found = extract(page, "http://Example.org:80/dir/index.html")
    got = {(ln.url, ln.kind, ln.via) for ln in found.links}
    e = "http://example.org"
    assert (f"{e}/full/a.jpg", "media", "full") in got
    assert (f"{e}/thumb/a.jpg", "media", "img") in got
    assert (f"{e}/t/a-2x.jpg", "media", "srcset") in got
    assert (f"{e}/view/7", "page", "thumb") in got
    assert (f"{e}/poster.jpg", "media", "img") in got
    assert (f"{e}/v.mp4", "media", "source") in got
    assert (f"{e}/og.jpg", "media", "og") in got
    assert (f"{e}/base/p2", "page", "next") in got
    assert (f"{e}/files/pack.zip", "archive", "link") in got
    assert (f"{e}/m/model.safetensors", "model", "link") in got
    assert (f"{e}/g.pdf", "document", "link") in got
    assert (f"{e}/base/page.html?a=1&b=2", "page", "link") in got  # one canonical URL
    assert found.ignored == 3


def test_canonical_urls() -> None:
    assert canonical_url("HTTP://EXAMPLE.org:80/a/../b?z=1&a=2#x") == "http://example.org/b?a=2&z=1"
    assert canonical_url("https://example.org:443") == "https://example.org/"
    assert canonical_url("http://example.org:8080/x") == "http://example.org:8080/x"
    for bad in (
        "javascript:x",
        "file:///etc",
        "http://u:p@example.org/",
        "http://x:99999/",
        "/rel",
    ):
        assert canonical_url(bad) is None, bad
    assert canonical_url("http://example.org/" + "a" * 5000) is None


def test_many_links_are_capped_quickly() -> None:
    page = b"".join(b'<a href="/l/%d">x</a>' % i for i in range(10_000))
    t = time.monotonic()
    found = extract(page, "http://example.org/", max_links=2000)
    assert time.monotonic() - t < 2
    assert len(found.links) == 2000 and found.dropped == 8000


def test_matched_pages_get_a_sealed_evidence_capture(
    session_factory: sessionmaker[Session], site: Site, ccfg: CrawlConfig, tmp_path: Path
) -> None:
    from tipline.removal.evidence import load, load_page
    from tipline.store.media import Keyring, new_key

    ring = Keyring()
    ring.add(new_key())
    cfg = CrawlConfig(pipeline=ccfg.pipeline, evidence_dir=tmp_path / "ev", keyring=ring)
    cid, st = _crawl(session_factory, cfg, [f"{site.base}/forum/thread/2"], Budgets(max_depth=0))
    assert st.state == "done"
    page = _pages(session_factory, cid)[f"{site.base}/forum/thread/2"]
    assert page.matched and page.evidence_sha256
    bundle = load(page.evidence_sha256, store_dir=tmp_path / "ev", keyring=ring)
    assert bundle.url == f"{site.base}/forum/thread/2" and bundle.http_status == 200
    assert b"Thread 2 page 1" in (load_page(bundle, store_dir=tmp_path / "ev", keyring=ring) or b"")
    # a page where nothing matched: no capture, no HTML kept
    cid, _ = _crawl(session_factory, cfg, [f"{site.base}/forum/thread/4"], Budgets(max_depth=0))
    assert _pages(session_factory, cid)[f"{site.base}/forum/thread/4"].evidence_sha256 is None


def test_a_batch_commit_records_every_page_once_and_a_taken_over_runner_writes_nothing(
    session_factory: sessionmaker[Session], site: Site, ccfg: CrawlConfig
) -> None:
    """The runner's batched commit: the results of several pages in one transaction, a child
    two of them found inserted once; after a take-over the old runner's batch is refused
    whole (its pages stay queued for the new runner, no child, no counter written)."""
    from sqlalchemy import update

    # both threads link back to the forum's index (a child the batch finds twice)
    seeds = [f"{site.base}/forum/thread/2", f"{site.base}/forum/thread/3"]
    with session_factory() as s, s.begin():
        crawl, _ = start_crawl(s, seeds, budgets=Budgets(max_pages=50), policy=FAST)
        crawl.runner = "old"
        cid = crawl.id
        s.flush()
        s.refresh(crawl)
        runner = crawl_engine._Runner(session_factory, crawl, ccfg, "old")

    def claim_and_fetch() -> list[crawl_engine._Outcome]:
        with session_factory() as s, s.begin():
            rows = s.scalars(
                select(CrawlPage)
                .where(CrawlPage.crawl_id == cid, CrawlPage.state == "queued")
                .order_by(CrawlPage.id)
            ).all()
            for r in rows:
                r.state = "fetching"
            tasks = [
                crawl_engine._PageTask(r.id, r.url, r.depth, r.barren, r.offsite, 0, r.via)
                for r in rows
            ]
        return [runner.process(t) for t in tasks]

    outs = claim_and_fetch()
    assert len(outs) == 2 and all(o.children for o in outs)
    assert runner.commit_many(outs) == 2
    pages = _pages(session_factory, cid)
    assert all(pages[u].state == "done" for u in seeds)
    index = f"{site.base}/forum/"
    assert pages[index].parent_id == pages[seeds[0]].id  # once, from the first page
    assert set(pages) == {*seeds, index, f"{site.base}/forum/thread/3?page=2"}
    media = _media(session_factory, cid)
    assert media[f"{site.base}/img/full/astronaut.jpg"].page_id == pages[seeds[0]].id
    with session_factory() as s:
        row = s.get(CrawlRow, cid)
        assert row is not None and row.pages_done == 2 and row.media_done == len(media)
        # astronaut (thread 2) and rocket (thread 3), full size and thumbnail (PDQ)
        assert row.media_matched == sum(m.matched for m in media.values()) == 4

    # taken over between the fetch and the commit: nothing of the batch is written
    outs = claim_and_fetch()[:3]
    with session_factory() as s, s.begin():
        s.execute(update(CrawlRow).where(CrawlRow.id == cid).values(runner="new"))
        s.execute(
            update(CrawlPage)
            .where(CrawlPage.crawl_id == cid, CrawlPage.state == "fetching")
            .values(state="queued")
        )
    assert runner.commit_many(outs) == 0
    after = _pages(session_factory, cid)
    assert len(after) == len(pages)  # no child inserted
    assert all(after[o.task.url].state == "queued" for o in outs)
    with session_factory() as s:
        row = s.get(CrawlRow, cid)
        assert row is not None and row.pages_done == 2 and row.runner == "new"
    runner.close()


@pytest.fixture
def hook_receiver() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    """A real HTTP server on 127.0.0.1 that records every webhook POST it gets."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from tipline.actions import webhooks

    got: list[tuple[dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            got.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    t.start()
    webhooks.configure(FetchSettings.build(allow_networks=["127.0.0.1/32"]))
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/hook", got
    finally:
        webhooks.configure(None)
        httpd.shutdown()
        httpd.server_close()


def test_a_model_page_hash_is_an_item_and_crawl_items_send_match_webhooks(
    engine: Engine,
    session_factory: sessionmaker[Session],
    site: Site,
    ccfg: CrawlConfig,
    hook_receiver: tuple[str, list[tuple[dict[str, str], bytes]]],
) -> None:
    """A Civitai-style page printing only the AutoV2 of a banked model: the model (by the
    bank entry's full SHA-256) is a hash-only item of the crawl's report, its source the page.
    Each item the crawl adds (that model, the matched model file, the TLSH-matched guide) sends
    the "match" webhook the analyse stage sends for a matched upload: signed, delivered to a
    real receiver on 127.0.0.1, once per item."""
    import hashlib
    import json

    from crawl_site import BANK, PAGE_MODEL
    from tipline.actions import webhooks
    from tipline.store.tables import BankEntryRow, BankRow

    url, got = hook_receiver
    # the banks as the database holds them (the matcher is built from these rows: same ids)
    page_sha = hashlib.sha256(PAGE_MODEL).hexdigest()
    file_sha = hashlib.sha256(MODELS[MODEL_BANKED]).hexdigest()
    with session_factory() as s, s.begin():
        bank = BankRow(name=BANK, role="alert", created_at=time.time())
        s.add(bank)
        s.flush()
        for eid, sha in ((102, file_sha), (103, page_sha)):
            s.add(
                BankEntryRow(
                    id=eid,
                    bank_id=bank.id,
                    signal_type="sha256",
                    signal=sha,
                    label=MODEL_LABEL,
                    added_at=time.time(),
                )
            )
        _hook, secret = webhooks.create_webhook(s, url, ["match"], "crawl test")
    queue = JobQueue(engine)
    ctx = IntakeContext(session_factory, queue, IntakeSettings(secret=b"s"))
    seed = f"{site.base}/forum/thread/5"
    [(report, _)] = create_reports(ctx, [NewReport(urls=[seed])], "partner_api")
    with session_factory() as s, s.begin():
        crawl = crawl_report(s, queue, report.id, policy=replace(FAST, barren_pages=1))
        cid = crawl.id
    ran = _drain(queue, session_factory)
    assert "crawl" in ran and webhooks.DELIVER_KIND in ran
    pages = _pages(session_factory, cid)
    mpage = pages[f"{site.base}{MODEL_PAGE}"]
    assert mpage.matched and mpage.notes and mpage.notes["model_page_item"] == [page_sha]
    guide_url = f"{site.base}{GUIDE_TXT}"
    model_url = f"{site.base}{MODEL_BANKED}"
    with session_factory() as s:
        found = _items_by_source(s, report.id)
    item = found[mpage.url]
    assert item.sha256 == page_sha and item.status == "matched" and item.media_ref is None
    assert [(x["signal_type"], x["label"], x["via"]) for x in item.matches] == [
        ("sha256", MODEL_LABEL, "cited_resource")
    ]
    assert item.cluster_id is not None and item.priority is not None  # clustered, triaged
    # one signed "match" delivery per crawl item
    events = {}
    for headers, body in got:
        assert headers["x-tipline-event"] == "match"
        assert webhooks.verify_signature(
            secret, headers["x-tipline-timestamp"], body, headers["x-tipline-signature"]
        )
        data = json.loads(body)["data"]
        assert data["report_id"] == report.id
        assert data["sha256"] not in events  # once per item
        events[data["sha256"]] = data
    expect = {
        page_sha: found[mpage.url],
        file_sha: found[model_url],
        found[guide_url].sha256: found[guide_url],
    }
    assert set(expect) <= set(events)
    for sha, it in expect.items():
        assert events[sha]["item_id"] == it.id
        assert events[sha]["matches"] and all(m["distance"] >= 0 for m in events[sha]["matches"])
    assert events[found[guide_url].sha256]["matches"][0]["signal_type"] == "tlsh"
    # a matched image of the crawl (an upload: the analyse stage's own event) is there too,
    # and nothing else: every event is an item of the report
    assert set(events) <= {i.sha256 for i in found.values()}
