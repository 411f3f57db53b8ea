"""Exchange fetch throughput: an ``ncmec`` exchange fetching from a local NCMEC-shaped server
into a bank, end to end (HTTP, XML, the fetcher's batches, the database, the live journal).

    .venv/bin/python bench/exchange.py                      # 1,000,000 entries, SQLite
    .venv/bin/python bench/exchange.py --entries 100000     # quick
    .venv/bin/python bench/exchange.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test

What it does (everything on 127.0.0.1):

1. Starts ``tests/ncmec_replay.py --synthetic N`` in its own process: N benign stand-in
   entries over 10 days (each an image with an MD5 and a PDQ fingerprint unless
   ``--fingerprints pdq``), served in pages of 1,000, newest first, with ``next`` links.
2. Makes a fresh data directory and database (SQLite in it; with ``--database-url`` a
   throwaway database ``tipline_bench_<hex>`` on that server, dropped at the end), adds the
   exchange, and starts ``tipline serve`` on the same data directory.
3. Fetches everything in this process with ``run_fetch`` (one run, no time box), the journal
   going to the serve's index directory. Meanwhile a thread takes a hash already committed
   and asks the serve's ``/m/lookup`` until it matches: the index is matchable mid-fetch.
   RSS of this process is sampled every 0.2 s (``/proc/self/status``).
4. Waits until the serve matches the last committed entry (its journal backlog: reported as
   ``serve_caught_up_after_s``), then adds 1,000 entries on the server, fetches again, and
   times from that fetch's commit to the first ``/m/lookup`` that finds all of three probes
   (target < 2 s).
5. Prints entries/s, records/s, RSS growth, the latencies, PASS/FAIL per target, and writes
   ``bench/out/exchange-<backend>.json``. ``--check`` exits 1 if a target fails.

Targets (issue 12): >= 20,000 entries/s end to end, RSS growth <= 200 MB, matchable during
the fetch, 1,000 new entries visible within 2 s of the commit. Server, fetcher and serve
share the machine: on 2 cores the numbers are a floor.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
sys.path.insert(0, str(ROOT / "tests"))

TARGET_ENTRIES_PER_S = 20_000.0
TARGET_RSS_GROWTH_MB = 200.0
TARGET_VISIBLE_S = 2.0
USER, PASSWORD = "tipline-user", "stand-in-password"


def rss_mb() -> float:
    """Resident set size of this process (MB), from /proc (psutil not needed)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (from /proc; 0.0 if unreadable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_replay(entries: int, fingerprints: str) -> tuple[subprocess.Popen[str], int]:
    cmd = [sys.executable, str(ROOT / "tests" / "ncmec_replay.py"), "--synthetic", str(entries)]
    if fingerprints == "pdq":
        cmd.append("--pdq-only")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if not line or line[0] != "PORT":
        proc.kill()
        raise RuntimeError("the replay server did not start")
    return proc, int(line[1])


def start_serve(data: Path, db_url: str, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIPLINE_")}
    env.update(
        TIPLINE_DATA_DIR=str(data),
        TIPLINE_DATABASE_URL=db_url,
        TIPLINE_MEDIA_MODE="hash-only",
        TIPLINE_LOG_LEVEL="warning",
        TIPLINE_ANONYMOUS_PERMISSIONS="match:read,index:read",
        TIPLINE_INPROCESS_WORKERS="0",
        TIPLINE_JSON_LOGS="false",
    )
    log = open(data / "serve.log", "wb")  # noqa: SIM115 (the child writes it)
    cmd = [sys.executable, "-m", "tipline", "serve", "--port", str(port), "--workers", "1"]
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_ready(url: str, proc: subprocess.Popen[bytes], data: Path) -> None:
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/status", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError("tipline serve exited: " + (data / "serve.log").read_text()[-2000:])
        time.sleep(0.2)
    raise RuntimeError("tipline serve not ready")


def found(http: Any, signal: str) -> bool:
    r = http.get("/m/lookup", params={"signal_type": "pdq", "signal": signal})
    return r.status_code == 200 and bool(r.json().get("NCMEC_BENCH"))


def make_database(server_url: str | None, data: Path) -> tuple[str, Any]:
    """(URL, cleanup): SQLite in the data dir, or a throwaway PostgreSQL database."""
    from tipline.store.base import default_url

    if not server_url:
        return default_url(data), lambda: None
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"tipline_bench_{secrets.token_hex(5)}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return make_url(server_url).set(database=name).render_as_string(hide_password=False), drop


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--database-url", default="", help="a PostgreSQL server (else SQLite)")
    ap.add_argument("--fingerprints", choices=("md5+pdq", "pdq"), default="md5+pdq")
    ap.add_argument("--incremental", type=int, default=1000)
    ap.add_argument(
        "--commit-every", type=int, default=0, help="records per batch (default: the fetcher's)"
    )
    ap.add_argument("--no-serve", action="store_true", help="skip the live /m/lookup checks")
    ap.add_argument("--profile", action="store_true", help="cProfile the fetch (top 30)")
    ap.add_argument("--check", action="store_true", help="exit 1 if a target fails")
    args = ap.parse_args(argv)

    import httpx
    from sqlalchemy import select

    from tipline.exchange import store
    from tipline.exchange.fetcher import FetchOptions, run_fetch
    from tipline.net.fetch import FetchSettings
    from tipline.store import migrations
    from tipline.store.base import make_engine, session_factory
    from tipline.store.media import Keyring, new_key
    from tipline.store.tables import BankEntryRow

    backend = "postgresql" if args.database_url else "sqlite"
    tmp = Path(tempfile.mkdtemp(prefix="tipline-bench-exchange-"))
    data = tmp / "data"
    data.mkdir()
    replay, replay_port = start_replay(args.entries, args.fingerprints)
    db_url, drop_db = make_database(args.database_url or None, data)
    serve = None
    result: dict[str, Any] = {"backend": backend, "entries": args.entries}
    try:
        migrations.upgrade(db_url)
        engine = make_engine(db_url)
        factory = session_factory(engine)
        ring = Keyring()
        ring.add(new_key())
        store.configure(FetchSettings.build(allow_networks=["127.0.0.1/32"]), lambda: ring)
        with factory() as s, s.begin():
            store.create_exchange(
                s,
                "NCMEC_BENCH",
                "ncmec",
                {"base_url": f"http://127.0.0.1:{replay_port}/hashsharing"},
                credentials={"username": USER, "password": PASSWORD},
            )
        url = ""
        if not args.no_serve:
            port = free_port()
            serve = start_serve(data, db_url, port)
            url = f"http://127.0.0.1:{port}"
            wait_ready(url, serve, data)
        opts = FetchOptions(budget_seconds=24 * 3600, index_dir=data / "index")
        if args.commit_every:
            opts.commit_every = args.commit_every

        # -- the big fetch, with RSS sampling and a mid-fetch lookup ----------------------
        done = threading.Event()
        samples: list[float] = []
        mid: dict[str, float] = {}

        def sample() -> None:
            while not done.is_set():
                samples.append(rss_mb())
                time.sleep(0.2)

        def probe(t0: float) -> None:
            if not url:
                return
            with httpx.Client(base_url=url, timeout=10) as http:
                signal = None
                while not done.is_set() and signal is None:
                    with factory() as s:
                        signal = s.scalar(
                            select(BankEntryRow.signal)
                            .where(BankEntryRow.signal_type == "pdq")
                            .limit(1)
                        )
                    if signal is None:
                        time.sleep(0.2)
                mid["committed_at"] = time.monotonic() - t0
                while not done.is_set() and signal is not None:
                    if found(http, signal):
                        mid["matched_at"] = time.monotonic() - t0
                        return
                    time.sleep(0.1)

        def analyze() -> None:
            """PostgreSQL with autovacuum off (a test server): ANALYZE every 10 s as
            autovacuum would, else the planner keeps a fresh table's empty statistics and
            the fetcher's key lookups scan the whole exchange (cost growing with the bank)."""
            from sqlalchemy import text

            with engine.connect() as conn:
                if conn.execute(text("SHOW autovacuum")).scalar() != "off":
                    return
            result["analyze_emulated"] = True
            print("  (autovacuum is off on this server: ANALYZE every 10 s in its place)")
            while not done.wait(10):
                with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                    conn.execute(text("ANALYZE exchange_records, bank_entries"))

        rss0 = rss_mb()
        cpu0 = time.process_time()
        cpu_replay0 = proc_cpu_s(replay.pid)
        cpu_serve0 = proc_cpu_s(serve.pid) if serve is not None else 0.0
        t0 = time.monotonic()
        threads = [
            threading.Thread(target=sample, daemon=True),
            threading.Thread(target=probe, args=(t0,), daemon=True),
        ]
        if backend == "postgresql":
            threads.append(threading.Thread(target=analyze, daemon=True))
        for t in threads:
            t.start()
        if args.profile:
            import cProfile
            import pstats

            prof = cProfile.Profile()
            prof.enable()
        out = run_fetch(factory, "NCMEC_BENCH", opts)
        elapsed = time.monotonic() - t0
        cpu = {
            "fetcher": time.process_time() - cpu0,
            "replay": proc_cpu_s(replay.pid) - cpu_replay0,
            "serve": (proc_cpu_s(serve.pid) - cpu_serve0) if serve is not None else 0.0,
        }
        if args.profile:
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(30)
        done.set()
        for t in threads:
            t.join(5)
        if not out.succeeded:
            raise RuntimeError(f"fetch failed: {out.error}")
        growth = max(samples or [rss0]) - rss0
        result.update(
            seconds=round(elapsed, 2),
            records=out.added,
            batches=out.batches,
            entries_per_s=round(args.entries / elapsed),
            records_per_s=round(out.added / elapsed),
            rss_start_mb=round(rss0, 1),
            rss_growth_mb=round(growth, 1),
            matched_mid_fetch_at_s=mid.get("matched_at"),
            first_commit_at_s=mid.get("committed_at"),
            cpu_us_per_entry={k: round(v * 1e6 / args.entries, 1) for k, v in cpu.items()},
        )
        print(
            f"{backend}: {args.entries:,} entries ({out.added:,} records, {out.batches} batches) "
            f"in {elapsed:.1f} s: {args.entries / elapsed:,.0f} entries/s, "
            f"{out.added / elapsed:,.0f} records/s; RSS {rss0:.0f} MB + {growth:.0f} MB"
        )
        print(
            "  CPU per entry during the fetch: "
            + ", ".join(f"{k} {v * 1e6 / args.entries:.0f} us" for k, v in cpu.items())
        )
        if url:
            print(
                f"  mid-fetch: first commit at {mid.get('committed_at', float('nan')):.1f} s, "
                f"/m/lookup matched it at {mid.get('matched_at', float('nan')):.1f} s "
                f"(fetch ended at {elapsed:.1f} s)"
            )

        # -- the serve catches up with the big fetch (its journal backlog) ----------------
        if url:
            with factory() as s:
                newest = s.scalar(
                    select(BankEntryRow.signal)
                    .where(BankEntryRow.signal_type == "pdq")
                    .order_by(BankEntryRow.id.desc())
                    .limit(1)
                )
            with httpx.Client(base_url=url, timeout=10) as http:
                t_end = time.monotonic()
                while newest and not found(http, newest) and time.monotonic() - t_end < 300:
                    time.sleep(0.05)
                lag = time.monotonic() - t_end
            result["serve_caught_up_after_s"] = round(lag, 2)
            print(f"  the serve matched the last committed entry {lag:.2f} s after the fetch")

        # -- the incremental fetch: 1,000 new entries visible within 2 s ----------------
        if url and args.incremental:
            before = set()
            with factory() as s:
                before = {
                    int(i)
                    for i in s.scalars(
                        select(BankEntryRow.id).order_by(BankEntryRow.id.desc()).limit(1)
                    )
                }
            httpx.post(
                f"http://127.0.0.1:{replay_port}/_replay/add", params={"n": args.incremental}
            ).raise_for_status()
            t1 = time.monotonic()
            inc = run_fetch(factory, "NCMEC_BENCH", opts)
            t_commit = time.monotonic()
            last = max(before or {0})
            with factory() as s:
                fresh = list(
                    s.scalars(
                        select(BankEntryRow.signal)
                        .where(BankEntryRow.id > last, BankEntryRow.signal_type == "pdq")
                        .order_by(BankEntryRow.id)
                    )
                )
            probes = [fresh[0], fresh[len(fresh) // 2], fresh[-1]] if fresh else []
            with httpx.Client(base_url=url, timeout=10) as http:
                while probes and not all(found(http, p) for p in probes):
                    if time.monotonic() - t_commit > 30:
                        break
                    time.sleep(0.01)
                visible = time.monotonic() - t_commit
            result.update(
                incremental_entries=args.incremental,
                incremental_records=inc.added,
                incremental_fetch_s=round(t_commit - t1, 3),
                incremental_visible_s=round(visible, 3),
            )
            print(
                f"  incremental: {args.incremental:,} entries ({inc.added:,} records) fetched in "
                f"{t_commit - t1:.2f} s, visible to /m/lookup {visible:.2f} s after the commit"
            )
        engine.dispose()
    finally:
        store.configure(None, None)
        if serve is not None:
            serve.terminate()
            try:
                serve.wait(15)
            except subprocess.TimeoutExpired:
                serve.kill()
        replay.terminate()
        replay.wait(10)
        drop_db()

    checks = {
        "entries_per_s": result["entries_per_s"] >= TARGET_ENTRIES_PER_S,
        "rss_growth": result["rss_growth_mb"] <= TARGET_RSS_GROWTH_MB,
    }
    if "matched_mid_fetch_at_s" in result and not args.no_serve:
        m = result["matched_mid_fetch_at_s"]
        checks["matchable_mid_fetch"] = m is not None and m < result["seconds"]
    if "incremental_visible_s" in result:
        checks["incremental_visible"] = result["incremental_visible_s"] < TARGET_VISIBLE_S
    for name, ok in checks.items():
        print(f"  {'PASS' if ok else 'FAIL'} {name}")
    result["checks"] = checks
    result["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"exchange-{backend}.json").write_text(json.dumps(result, indent=2))
    return 1 if args.check and not all(checks.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
