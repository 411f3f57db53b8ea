"""Crawl throughput against the local test site (tests/crawl_site.py) on 127.0.0.1.

    .venv/bin/python bench/crawl.py                 # 2,000 HTML pages, 100 media pages
    .venv/bin/python bench/crawl.py --pages 500 --media-pages 20
    .venv/bin/python bench/crawl.py --pg            # PostgreSQL on 127.0.0.1:5432 too
    .venv/bin/python bench/crawl.py --rss-pages 100000   # RSS over a long crawl

The site runs in its own process (as a crawled site is not in the crawler's process; it
would otherwise take the crawler's GIL); ``--site-in-process`` serves it from a thread of
the bench as before, for comparison.

1. HTML: a crawl of ``/bigsite`` (five links a page, no media), barren rule off, no per-host
   delay, SQLite in a temporary directory (and with ``--pg`` a scratch PostgreSQL database):
   pages/s end to end (fetch, parse, page text keywords and TLSH, claims and commits in
   batches: one transaction per round of claims, one per batch of finished pages).
2. Media: a crawl of ``/bench/media`` pages with 20 small distinct PNGs each, every image
   hashed (SHA-256, MD5, PDQ) and matched against a bank: media/s end to end.
3. The naive baseline in the same run: one ``httpx.get`` per URL, sequential, for the same
   URLs (no parsing, hashing or database).
4. With ``--rss-pages N``: a crawl of N ``/bigsite`` pages, the process's RSS sampled every
   second; prints it at each tenth of the crawl and the growth from the first tenth to the end.

Prints the rates, the ratio to the baseline and PASS/FAIL against the issue's targets
(>= 300 pages/s HTML, >= 150 media/s); writes ``bench/out/crawl.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import httpx
from sqlalchemy import create_engine, select, text
from sqlalchemy.orm import Session, sessionmaker

from crawl_site import IMAGES, Site
from tipline.crawl.engine import Budgets, CrawlConfig, Policy, run_crawl, start_crawl
from tipline.net.fetch import FetchSettings
from tipline.pipeline.stages import PipelineConfig
from tipline.scan.hashing import HashOptions
from tipline.store import migrations
from tipline.store.base import make_engine, session_factory
from tipline.store.crawl_tables import CrawlMedia, CrawlPage

TESTS = Path(__file__).resolve().parent.parent / "tests"
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
PG_DB = "tipline_bench_crawl"


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    import resource

    return pages * resource.getpagesize() / 2**20


class _SiteProcess:
    """tests/crawl_site.py served by a child process."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(TESTS / "crawl_site.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=TESTS,
        )
        assert self.proc.stdout is not None
        port = int(self.proc.stdout.readline())
        self.base = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(30)


def _pg_url() -> str | None:
    try:
        admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(text(f"DROP DATABASE IF EXISTS {PG_DB}"))
            c.execute(text(f"CREATE DATABASE {PG_DB}"))
        admin.dispose()
    except Exception as err:  # no PostgreSQL here: the SQLite numbers still stand
        print(f"PostgreSQL not measured: {type(err).__name__}: {err}"[:300])
        return None
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{PG_DB}"


def _drop_pg() -> None:
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)"))
    admin.dispose()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pages", type=int, default=2000)
    ap.add_argument("--media-pages", type=int, default=100)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--pg", action="store_true", help="also measure on PostgreSQL")
    ap.add_argument("--rss-pages", type=int, default=0, help="a long crawl sampling RSS")
    ap.add_argument("--site-in-process", action="store_true")
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    site: Site | _SiteProcess = Site() if args.site_in_process else _SiteProcess()
    base = site.base
    tmp = Path(tempfile.mkdtemp(prefix="tipline-bench-crawl-"))
    pcfg = PipelineConfig(
        match=IMAGES.bank().match,
        fetch_settings=FetchSettings.build(allow_networks=["127.0.0.0/8"]),
        hash_options=HashOptions(provenance=False),
    )
    cfg = CrawlConfig(pipeline=pcfg, workers=args.workers)
    policy = Policy(barren_pages=0, per_host_delay=0.0, per_host_concurrency=args.workers)

    def database(url: str) -> sessionmaker[Session]:
        migrations.upgrade(url)
        return session_factory(make_engine(url))

    def crawl(sf: sessionmaker[Session], seed: str, budgets: Budgets) -> tuple[int, float]:
        with sf() as s, s.begin():
            c, _ = start_crawl(s, [seed], budgets=budgets, policy=policy)
        t = time.perf_counter()
        run_crawl(sf, c.id, cfg)
        return c.id, time.perf_counter() - t

    sf = database(f"sqlite:///{tmp / 'bench.sqlite3'}")
    html_id, html_s = crawl(sf, f"{base}/bigsite?n=0", Budgets(max_pages=args.pages, max_depth=100))
    media_id, media_s = crawl(
        sf,
        f"{base}/bench/media?p=0",
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
    out: dict[str, Any] = {
        "site": "in process" if args.site_in_process else "own process",
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
    if args.pg and (pg := _pg_url()) is not None:
        try:
            psf = database(pg)
            _id, pg_html_s = crawl(
                psf, f"{base}/bigsite?n=0", Budgets(max_pages=args.pages, max_depth=100)
            )
            _id, pg_media_s = crawl(
                psf,
                f"{base}/bench/media?p=0",
                Budgets(max_pages=args.media_pages, max_depth=10_000),
            )
            out["pg_pages_per_s"] = round(len(html_urls) / pg_html_s, 1)
            out["pg_media_per_s"] = round(len(media_urls) / pg_media_s, 1)
            psf.kw["bind"].dispose()
        finally:
            _drop_pg()
    if args.rss_pages:
        out["rss"] = _rss_run(sf, base, args.rss_pages, cfg, policy)
    site.stop()
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


def _rss_run(
    sf: sessionmaker[Session], base: str, pages: int, cfg: CrawlConfig, policy: Policy
) -> dict[str, Any]:
    """A crawl of ``pages`` pages with the RSS (MiB) sampled every second, by pages done."""
    samples: list[tuple[int, float]] = []
    stop = threading.Event()
    done = [0]

    def progress(st: Any) -> None:
        done[0] = st.pages_done + st.pages_failed

    def sampler() -> None:
        while not stop.wait(1.0):
            samples.append((done[0], _rss_mib()))

    with sf() as s, s.begin():
        c, _ = start_crawl(
            s,
            [f"{base}/bigsite?n=0"],
            budgets=Budgets(max_pages=pages, max_depth=1000, max_seconds=86_400),
            policy=policy,
        )
    start_rss = _rss_mib()
    th = threading.Thread(target=sampler, daemon=True)
    th.start()
    t = time.perf_counter()
    st = run_crawl(sf, c.id, cfg, progress=progress)
    secs = time.perf_counter() - t
    stop.set()
    th.join()
    tenths = []
    for i in range(1, 11):
        mark = pages * i // 10
        at = next((r for n, r in samples if n >= mark), samples[-1][1] if samples else 0.0)
        tenths.append(round(at, 1))
    for i, r in enumerate(tenths, 1):
        print(f"RSS at {i * 10:3}% of {pages} pages: {r} MiB")
    return {
        "pages": st.pages_done + st.pages_failed,
        "pages_per_s": round((st.pages_done + st.pages_failed) / secs, 1),
        "rss_start_mib": round(start_rss, 1),
        "rss_by_tenth_mib": tenths,
        "rss_growth_first_tenth_to_end_mib": round(tenths[-1] - tenths[0], 1),
        "rss_peak_mib": round(max((r for _n, r in samples), default=start_rss), 1),
    }


if __name__ == "__main__":
    raise SystemExit(main())
