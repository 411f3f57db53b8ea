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
5. ``--resume-check`` (alone; ``--pg`` adds PostgreSQL): ``tipline crawl`` of ``/bigsite`` as a
   subprocess on a fresh database, killed with SIGKILL once ``--kill-at`` pages are committed,
   then at once ``tipline crawl --resume ID --take-over`` (``--no-take-over``: without it,
   retried until the dead runner's heartbeat is stale); the site (own process) logs every
   request. Measures the seconds from the kill to the resumed run's first request and first
   committed page and to its end, the duplicate fetches (all of them, and those beyond the
   documented allowance: the pages in flight at the kill) and that the final crawl holds every
   page once (none lost). PASS: first page within 5 s, no duplicate beyond the allowance, none
   lost; writes ``bench/out/crawl_resume.json``.

Prints the rates, the ratio to the baseline and PASS/FAIL against the issue's targets
(>= 300 pages/s HTML, >= 150 media/s); writes ``bench/out/crawl.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import httpx
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from crawl_site import IMAGES, Site
from tipline.crawl.engine import Budgets, CrawlConfig, Policy, run_crawl, start_crawl
from tipline.net.fetch import FetchSettings
from tipline.pipeline.stages import PipelineConfig
from tipline.scan.hashing import HashOptions
from tipline.store import migrations
from tipline.store.base import make_engine, session_factory
from tipline.store.crawl_tables import CrawlMedia, CrawlPage, CrawlRow

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
    ap.add_argument(
        "--no-journal", action="store_true", help="run without the results journal (as before)"
    )
    ap.add_argument("--check", action="store_true")
    ap.add_argument(
        "--resume-check", action="store_true", help="kill -9 a crawl, resume it (alone)"
    )
    ap.add_argument("--resume-pages", type=int, default=2000)
    ap.add_argument("--kill-at", type=int, default=500, help="committed pages at the kill")
    ap.add_argument(
        "--resume-media", type=int, default=0, help="with --resume-check: images per page"
    )
    ap.add_argument(
        "--no-take-over",
        action="store_true",
        help="resume without --take-over (retried until the dead runner's heartbeat is stale)",
    )
    args = ap.parse_args()
    if args.resume_check:
        return _resume_check(args)
    site: Site | _SiteProcess = Site() if args.site_in_process else _SiteProcess()
    base = site.base
    tmp = Path(tempfile.mkdtemp(prefix="tipline-bench-crawl-"))
    pcfg = PipelineConfig(
        match=IMAGES.bank().match,
        fetch_settings=FetchSettings.build(allow_networks=["127.0.0.0/8"]),
        hash_options=HashOptions(provenance=False),
    )
    cfg = CrawlConfig(
        pipeline=pcfg,
        workers=args.workers,
        journal_dir=None if args.no_journal else tmp / "journal",
    )
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
        "journal": not args.no_journal,
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


#: the test site in its own process, each request logged (wall clock, R, host, path) to
#: argv[1] when it arrives and again (C) when its response was written to the end
_LOGGED_SITE = """
import sys, threading, time
sys.path.insert(0, sys.argv[2])
from crawl_site import Site
log = open(sys.argv[1], "a", buffering=1)
lock = threading.Lock()
def logged(what):
    def write(host, path):
        with lock:
            log.write(f"{time.time():.6f} {what} {host} {path}\\n")
    return write
site = Site()
site.on_request = logged("R")
site.on_complete = logged("C")
for httpd in site.servers:  # a killed crawler's connections reset: not worth a traceback
    httpd.handle_error = lambda *a: None
print(site.port, flush=True)
sys.stdin.read()
site.stop()
log.close()
"""


def _tipline_env(tmp: Path, workers: int) -> dict[str, str]:
    env = {
        **os.environ,
        "TIPLINE_DATA_DIR": str(tmp / "data"),
        "TIPLINE_FETCH_ALLOW_NETWORKS": "127.0.0.0/8",
        "TIPLINE_CRAWL_WORKERS": str(workers),
        "TIPLINE_CRAWL_PER_HOST_CONCURRENCY": str(workers),
        "TIPLINE_CRAWL_PER_HOST_DELAY": "0",
        "TIPLINE_CRAWL_EVIDENCE": "false",
    }
    env.pop("TIPLINE_DATABASE_URL", None)
    return env


#: seconds after the kill in which a logged request is still the killed runner's
LATE = 0.25


def _resume_once(
    url: str,
    base: str,
    log: Path,
    tmp: Path,
    pages: int,
    kill_at: int,
    workers: int,
    take_over: bool = True,
    media: int = 0,
) -> dict[str, Any]:
    """One crawl killed with SIGKILL after ``kill_at`` committed pages, resumed at once."""
    migrations.upgrade(url)
    engine = make_engine(url)
    sf = session_factory(engine)
    env = _tipline_env(tmp, workers)
    tipline = [sys.executable, "-m", "tipline", "crawl", "--database-url", url, "--json"]
    log.write_text("")

    def pages_by_state(cid: int) -> dict[str, int]:
        with sf() as s:
            rows = s.execute(
                select(CrawlPage.state, func.count())
                .where(CrawlPage.crawl_id == cid)
                .group_by(CrawlPage.state)
            ).all()
        return {str(st): int(n) for st, n in rows}

    first = subprocess.Popen(
        [
            *tipline,
            f"{base}/bigsite?n=0" + (f"&m={media}" if media else ""),
            "--max-pages",
            str(pages),
            "--max-depth",
            "1000",
            "--max-seconds",
            "86400",
            "--barren",
            "0",
            "--delay",
            "0",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        cid: int | None = None
        while True:
            if first.poll() is not None:
                err = first.stderr.read() if first.stderr else ""
                raise RuntimeError(f"the first run ended before the kill: {err[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no {kill_at} pages committed in 120 s")
            with sf() as s:
                cid = cid or s.scalar(select(CrawlRow.id).order_by(CrawlRow.id.desc()).limit(1))
            if cid is not None and pages_by_state(cid).get("done", 0) >= kill_at:
                break
            time.sleep(0.01)
        os.kill(first.pid, signal.SIGKILL)
        t_kill = time.time()
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    assert cid is not None
    with sf() as s:
        in_flight = {
            _path(u)
            for u in s.scalars(
                select(CrawlPage.url).where(
                    CrawlPage.crawl_id == cid, CrawlPage.state == "fetching"
                )
            )
        }
    at_kill = pages_by_state(cid)
    t_start = time.time()
    refused = 0
    while True:  # without --take-over: refused until the dead runner's heartbeat is stale
        res = subprocess.run(
            [*tipline, "--resume", str(cid), *(() if not take_over else ("--take-over",))],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if take_over or res.returncode == 0 or "is being run by" not in res.stderr:
            break
        refused += 1
        time.sleep(0.2)
    t_end = time.time()
    if res.returncode != 0:
        raise RuntimeError(f"the resume failed ({res.returncode}): {res.stderr[-2000:]}")
    summary = json.loads(res.stdout)
    requests: list[tuple[float, str]] = []
    first_complete: dict[str, float] = {}
    for line in log.read_text().splitlines():
        ts, what, _host, path = line.split(" ", 3)
        if what == "R":
            requests.append((float(ts), path))
        else:
            first_complete.setdefault(path, float(ts))
    hits = Counter(p for _t, p in requests)
    #: requests of a URL whose response had been written to the end before (a page or media
    #: file fetched again although it was completely received; the site cannot tell how
    #: much of the last few ms reached the crawler, so this is an upper bound)
    again_complete = [(t, p) for t, p in requests if p in first_complete and t > first_complete[p]]
    #: requests the killed runner sent just before the kill are logged a few ms after it (the
    #: site's threads read them late); the resumed process needs far longer than LATE to
    #: start, so its first request is the first one logged LATE or more after the kill
    late = sum(1 for t, _p in requests if t_kill <= t < t_kill + LATE)
    after = sorted(t for t, _p in requests if t >= t_kill + LATE)
    kill_dt = datetime.fromtimestamp(t_kill, UTC)
    with sf() as s:
        done = [
            (_path(u), at)
            for u, at in s.execute(
                select(CrawlPage.url, CrawlPage.fetched_at).where(
                    CrawlPage.crawl_id == cid, CrawlPage.state == "done"
                )
            )
        ]
        final = s.get(CrawlRow, cid)
        assert final is not None
        final_state = (final.state, final.stop_reason)
    engine.dispose()
    resumed_commits = sorted(at for _p, at in done if at is not None and at >= kill_dt)
    dups = {p: n - 1 for p, n in hits.items() if n > 1}
    #: pages fetched again beyond those in flight at the kill (the old allowance)
    beyond = sum(n - (1 if p in in_flight else 0) for p, n in dups.items() if "/img/" not in p)
    done_paths = [p for p, _at in done]
    #: a committed page the site never served would be a bookkeeping error; a page never
    #: committed (fewer distinct pages than the budget) is lost
    unserved = [p for p in done_paths if hits[p] == 0]
    return {
        "pages": pages,
        "images_per_page": media,
        "killed_at_pages_done": at_kill.get("done", 0),
        "in_flight_at_kill": len(in_flight),
        "state_after": f"{final_state[0]} ({final_state[1]})",
        "resume_pages_done": summary["pages_done"],
        "take_over": take_over,
        "resumes_refused": refused,
        "kill_to_resume_process_start_s": round(t_start - t_kill, 3),
        "killed_runner_requests_logged_late": late,
        "kill_to_first_request_s": round(after[0] - t_kill, 3) if after else None,
        "kill_to_first_committed_page_s": (
            round(resumed_commits[0].timestamp() - t_kill, 3) if resumed_commits else None
        ),
        "kill_to_end_s": round(t_end - t_kill, 3),
        "resumed_pages_per_s": round(
            (len(done_paths) - at_kill.get("done", 0)) / max(t_end - t_start, 1e-9), 1
        ),
        "requests": len(requests),
        "duplicate_fetches": sum(dups.values()),
        "duplicate_fetches_beyond_allowance": beyond,
        "completed_responses_requested_again": len(again_complete),
        "completed_requested_again_pages": sum(1 for _t, p in again_complete if "/img/" not in p),
        "pages_done_final": len(done_paths),
        "pages_done_distinct": len(set(done_paths)),
        "pages_lost": max(0, pages - len(set(done_paths))),
        "pages_committed_never_served": len(unserved),
        "pages_left_fetching": _fetching_left(url, cid),
    }


def _fetching_left(url: str, cid: int) -> int:
    """Pages of crawl ``cid`` still claimed (``fetching``) after the resumed run ended."""
    engine = make_engine(url)
    try:
        with engine.connect() as c:
            return int(
                c.execute(
                    select(func.count())
                    .select_from(CrawlPage)
                    .where(CrawlPage.crawl_id == cid, CrawlPage.state == "fetching")
                ).scalar_one()
            )
    finally:
        engine.dispose()


def _path(url: str) -> str:
    u = urlsplit(url)
    return u.path + (f"?{u.query}" if u.query else "")


def _resume_check(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="tipline-bench-resume-"))
    log = tmp / "requests.log"
    proc = subprocess.Popen(
        [sys.executable, "-c", _LOGGED_SITE, str(log), str(TESTS)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=TESTS,
    )
    assert proc.stdout is not None and proc.stdin is not None
    base = f"http://127.0.0.1:{int(proc.stdout.readline())}"
    out: dict[str, Any] = {"workers": args.workers}
    try:
        dbs = [("sqlite", f"sqlite:///{tmp / 'resume.sqlite3'}")]
        if args.pg and (pg := _pg_url()) is not None:
            dbs.append(("postgresql", pg))
        for name, url in dbs:
            try:
                out[name] = _resume_once(
                    url,
                    base,
                    log,
                    tmp,
                    args.resume_pages,
                    args.kill_at,
                    args.workers,
                    take_over=not args.no_take_over,
                    media=args.resume_media,
                )
            finally:
                if name == "postgresql":
                    _drop_pg()
    finally:
        proc.stdin.close()
        proc.wait(30)
    ok = True
    for name in ("sqlite", "postgresql"):
        if name not in out:
            continue
        r = out[name]
        print(f"-- {name}")
        for k, v in r.items():
            print(f"{k:36} {v}")
        first = r["kill_to_first_committed_page_s"]
        passed = (
            first is not None
            and first <= 5.0
            and r["duplicate_fetches_beyond_allowance"] == 0
            and r["completed_responses_requested_again"] == 0
            and r["pages_lost"] == 0
            and r["pages_done_final"] == r["pages_done_distinct"] == r["pages"]
        )
        r["pass"] = passed
        ok = ok and passed
        print(
            f"{name}: resume within 5 s, no completed response requested again, none lost: "
            f"{'PASS' if passed else 'FAIL'}"
        )
    dest = Path(__file__).parent / "out"
    dest.mkdir(exist_ok=True)
    (dest / "crawl_resume.json").write_text(json.dumps(out, indent=2))
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    raise SystemExit(main())
