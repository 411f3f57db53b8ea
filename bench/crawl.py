"""Crawl throughput against the local test site (tests/crawl_site.py) on 127.0.0.1.

    .venv/bin/python bench/crawl.py                 # 2,000 HTML pages, 100 media pages
    .venv/bin/python bench/crawl.py --pages 500 --media-pages 20

1. HTML: a crawl of ``/bigsite`` (five links a page, no media), barren rule off, no per-host
   delay, SQLite in a temporary directory: pages/s end to end (fetch, parse, commit of page
   and children in one transaction per page).
2. Media: a crawl of ``/bench/media`` pages with 20 small distinct PNGs each, every image
   hashed (SHA-256, MD5, PDQ) and matched against a bank: media/s end to end.
3. The naive baseline in the same run: one ``httpx.get`` per URL, sequential, for the same
   URLs (no parsing, hashing or database).

Prints the rates, the ratio to the baseline and PASS/FAIL against the issue's targets
(>= 300 pages/s HTML, >= 150 media/s); writes ``bench/out/crawl.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import httpx
from sqlalchemy import select

from crawl_site import IMAGES, Site
from tipline.crawl.engine import Budgets, CrawlConfig, Policy, run_crawl, start_crawl
from tipline.net.fetch import FetchSettings
from tipline.pipeline.stages import PipelineConfig
from tipline.scan.hashing import HashOptions
from tipline.store import migrations
from tipline.store.base import make_engine, session_factory
from tipline.store.crawl_tables import CrawlMedia, CrawlPage


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pages", type=int, default=2000)
    ap.add_argument("--media-pages", type=int, default=100)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    site = Site()
    tmp = Path(tempfile.mkdtemp(prefix="tipline-bench-crawl-"))
    url = f"sqlite:///{tmp / 'bench.sqlite3'}"
    migrations.upgrade(url)
    sf = session_factory(make_engine(url))
    pcfg = PipelineConfig(
        match=IMAGES.bank().match,
        fetch_settings=FetchSettings.build(allow_networks=["127.0.0.0/8"]),
        hash_options=HashOptions(provenance=False),
    )
    cfg = CrawlConfig(pipeline=pcfg, workers=args.workers)
    policy = Policy(barren_pages=0, per_host_delay=0.0, per_host_concurrency=args.workers)
    _ = IMAGES.small

    def crawl(seed: str, budgets: Budgets) -> tuple[int, float]:
        with sf() as s, s.begin():
            c, _ = start_crawl(s, [seed], budgets=budgets, policy=policy)
        t = time.perf_counter()
        run_crawl(sf, c.id, cfg)
        return c.id, time.perf_counter() - t

    html_id, html_s = crawl(
        f"{site.base}/bigsite?n=0", Budgets(max_pages=args.pages, max_depth=100)
    )
    media_id, media_s = crawl(
        f"{site.base}/bench/media?p=0",
        Budgets(max_pages=args.media_pages, max_depth=10_000),
    )
    with sf() as s:
        html_urls = list(s.scalars(select(CrawlPage.url).where(CrawlPage.crawl_id == html_id)))
        media_urls = list(s.scalars(select(CrawlMedia.url).where(CrawlMedia.crawl_id == media_id)))
        media_pages = list(s.scalars(select(CrawlPage.url).where(CrawlPage.crawl_id == media_id)))
    t = time.perf_counter()
    for u in html_urls:
        httpx.get(u)
    base_html_s = time.perf_counter() - t
    t = time.perf_counter()
    for u in media_pages + media_urls:
        httpx.get(u)
    base_media_s = time.perf_counter() - t
    site.stop()
    out = {
        "pages": len(html_urls),
        "pages_per_s": round(len(html_urls) / html_s, 1),
        "baseline_pages_per_s": round(len(html_urls) / base_html_s, 1),
        "media": len(media_urls),
        "media_per_s": round(len(media_urls) / media_s, 1),
        "baseline_media_urls_per_s": round((len(media_urls) + len(media_pages)) / base_media_s, 1),
        "workers": args.workers,
    }
    out["pages_ratio"] = round(out["pages_per_s"] / out["baseline_pages_per_s"], 2)
    out["media_ratio"] = round(out["media_per_s"] / out["baseline_media_urls_per_s"], 2)
    ok_pages = out["pages_per_s"] >= 300
    ok_media = out["media_per_s"] >= 150
    for k, v in out.items():
        print(f"{k:28} {v}")
    print(f"HTML >= 300 pages/s: {'PASS' if ok_pages else 'FAIL'}")
    print(f"media >= 150 media/s: {'PASS' if ok_media else 'FAIL'}")
    dest = Path(__file__).parent / "out"
    dest.mkdir(exist_ok=True)
    (dest / "crawl.json").write_text(json.dumps(out, indent=2))
    return 1 if args.check and not (ok_pages and ok_media) else 0


if __name__ == "__main__":
    raise SystemExit(main())
