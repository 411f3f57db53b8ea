"""The service under load: ``/m/lookup`` by PDQ against a large bank, and uploads hashed+matched.

    .venv/bin/python bench/service.py                       # 1M-entry bank (a few minutes)
    .venv/bin/python bench/service.py --entries 100000 --lookups 5000 --uploads 200   # quick

What it does (everything on 127.0.0.1, bounded in count and time):

1. Makes a fresh data dir with a SQLite service database, migrates it, and fills one bank with
   ``--entries`` PDQ codes from ``synthetic.realistic_bank`` (bench/synthetic.py) (seeded).
2. Starts ``tipline serve`` in a separate process (``--workers`` API processes, JSON logs at
   ``warning`` so the access log does not dominate, anonymous ``match:read``) and waits until
   ``/status`` answers ``I-AM-ALIVE`` (the index is built in the background at start).
3. From this process, ``--concurrency`` keep-alive connections (a minimal asyncio HTTP/1.1
   client, so the load generator is cheap) send ``GET /m/lookup?signal_type=pdq&signal=...``
   with ``realistic_queries`` (half fresh codes, half bank entries with 0..40 flips) until
   ``--lookups`` requests or ``--seconds`` pass. Then ``POST /m/lookup`` multipart uploads of
   generated benign 2.8 MP JPEGs (2048x1365, smooth colour fields with noise; never people).
4. Prints requests/s, p50/p99 latency, errors, and PASS/FAIL against the targets
   (>= 1,000 lookups/s with p99 < 50 ms; >= 80 uploads/s); writes ``bench/out/service.json``.

Both the server and the load generator share the machine: on 2 cores the numbers are a floor.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
LOOKUP_TARGET_RPS = 1000.0
LOOKUP_TARGET_P99_MS = 50.0
UPLOAD_TARGET_RPS = 80.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_bank(data_dir: Path, entries: int, seed: int) -> tuple[str, np.ndarray, float]:
    from synthetic import realistic_bank
    from tipline.banks.bank import Bank, Entry
    from tipline.store import migrations
    from tipline.store.banks import SqlBankStore
    from tipline.store.base import default_url

    url = default_url(data_dir)
    migrations.upgrade(url)
    codes = realistic_bank(entries, seed=seed)
    hexes = [bytes(c).hex() for c in codes]
    t0 = time.perf_counter()
    store = SqlBankStore(url)
    store.create_bank(Bank("BENCH_BANK"))
    step = 50_000
    for i in range(0, len(hexes), step):
        store.add_entries(Entry("BENCH_BANK", "pdq", h) for h in hexes[i : i + step])
    store.close()
    return url, codes, time.perf_counter() - t0


def start_server(data_dir: Path, port: int, workers: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update(
        {
            "TIPLINE_DATA_DIR": str(data_dir),
            "TIPLINE_MEDIA_MODE": "hash-only",
            "TIPLINE_LOG_LEVEL": "warning",
            "TIPLINE_ANONYMOUS_PERMISSIONS": "match:read,hash:read,index:read",
            # intake is measured on its own: no pipeline worker fetches the reported URLs
            "TIPLINE_INPROCESS_WORKERS": "0",
            "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1",
        }
    )
    env.pop("TIPLINE_DATABASE_URL", None)
    cmd = [sys.executable, "-m", "tipline", "serve", "--port", str(port), "--workers", str(workers)]
    log = open(data_dir / "server.log", "wb")  # noqa: SIM115 (kept open for the child)
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_ready(port: int, timeout: float) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2) as r:
                if r.read() == b"I-AM-ALIVE":
                    return time.perf_counter() - t0
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"server on port {port} not ready after {timeout:.0f} s")


# ------------------------------------------------------------------------ a tiny HTTP client


async def _request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes
) -> tuple[int, bytes]:
    writer.write(raw)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    body = await reader.readexactly(length) if length else b""
    return status, body


async def run_load(
    port: int, requests: list[bytes], concurrency: int, seconds: float
) -> dict[str, Any]:
    lat: list[float] = []
    errors: dict[str, int] = {}
    next_i = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal next_i
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while next_i < len(requests) and time.perf_counter() < deadline:
                raw = requests[next_i]
                next_i += 1
                t0 = time.perf_counter()
                try:
                    status, _ = await _request(reader, writer, raw)
                except (OSError, asyncio.IncompleteReadError) as err:
                    errors[type(err).__name__] = errors.get(type(err).__name__, 0) + 1
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    continue
                lat.append(time.perf_counter() - t0)
                if status != 200:
                    errors[str(status)] = errors.get(str(status), 0) + 1
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    arr = np.asarray(lat) * 1000 if lat else np.zeros(1)
    return {
        "requests": len(lat),
        "seconds": round(wall, 3),
        "rps": round(len(lat) / wall, 1) if wall else 0.0,
        "p50_ms": round(float(np.percentile(arr, 50)), 2),
        "p99_ms": round(float(np.percentile(arr, 99)), 2),
        "max_ms": round(float(arr.max()), 2),
        "errors": errors,
        "concurrency": concurrency,
    }


def lookup_requests(codes: np.ndarray, n: int, seed: int) -> list[bytes]:
    from synthetic import realistic_queries

    qs = realistic_queries(codes, n, seed=seed + 1)
    return [
        (
            f"GET /m/lookup?signal_type=pdq&signal={bytes(q).hex()} HTTP/1.1\r\n"
            "Host: 127.0.0.1\r\n\r\n"
        ).encode()
        for q in qs
    ]


def benign_jpeg(seed: int, w: int = 2048, h: int = 1365) -> bytes:
    """Smooth colour fields with mild noise: benign, 2.8 MP, quality 90."""
    from PIL import Image

    rng = np.random.default_rng([seed, 77])
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.empty((h, w, 3), dtype=np.float32)
    for c in range(3):
        acc = np.zeros((h, w), dtype=np.float32)
        for _ in range(4):
            fx, fy, ph = rng.uniform(0.5, 8, 3)
            acc += np.sin(fx * x / w * np.pi + ph) * np.cos(fy * y / h * np.pi)
        img[..., c] = 128 + 30 * acc
    img += rng.normal(0, 9, img.shape).astype(np.float32)
    buf = io.BytesIO()
    Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def upload_requests(n: int, distinct: int) -> tuple[list[bytes], int]:
    images = [benign_jpeg(i) for i in range(distinct)]
    out = []
    for i in range(n):
        data = images[i % distinct]
        boundary = f"tiplinebench{i}"
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="photo"; '
                f'filename="b{i}.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
            ).encode()
            + data
            + f"\r\n--{boundary}--\r\n".encode()
        )
        head = (
            "POST /m/lookup HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        out.append(head + body)
    return out, int(np.mean([len(x) for x in images]))


def partner_token(data_dir: Path) -> str:
    """A partner account with a report:submit token, made with the real CLI."""
    env = {**os.environ, "TIPLINE_DATA_DIR": str(data_dir)}
    env.pop("TIPLINE_DATABASE_URL", None)
    cli = [sys.executable, "-m", "tipline"]
    subprocess.run([*cli, "user", "add", "bench_partner", "--role", "partner"], env=env,
                   check=True, capture_output=True)  # fmt: skip
    out = subprocess.run(
        [
            *cli,
            "token",
            "create",
            "--user",
            "bench_partner",
            "--name",
            "bench",
            "--scope",
            "report:submit",
        ],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return next(w for w in out.split() if w.startswith("tl_"))


def ingest_requests(port: int, token: str, reports: int, per_request: int) -> list[bytes]:
    """Bulk partner submissions, each report with its own idempotency key (benign URLs under
    the reserved .invalid domain; nothing fetches them during the benchmark)."""
    out = []
    for start in range(0, reports, per_request):
        body = json.dumps(
            {
                "reports": [
                    {
                        "urls": [f"https://media.example.invalid/item/{i}.jpg"],
                        "description": "benchmark report (benign stand-in)",
                        "idempotency_key": f"bench-{i}",
                    }
                    for i in range(start, min(start + per_request, reports))
                ]
            }
        ).encode()
        head = (
            f"POST /api/v1/reports/bulk HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        out.append(head + body)
    return out


def count_reports(data_dir: Path) -> tuple[int, int]:
    """(reports, distinct idempotency keys) in the service database."""
    import sqlite3

    with sqlite3.connect(data_dir / "tipline.sqlite3") as db:
        n, keys = db.execute(
            "SELECT count(*), count(DISTINCT idempotency_key) FROM reports"
        ).fetchone()
    return int(n), int(keys)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--lookups", type=int, default=30_000, help="at most this many lookups")
    ap.add_argument("--uploads", type=int, default=800, help="at most this many uploads")
    ap.add_argument("--seconds", type=float, default=30.0, help="time cap per phase")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--upload-concurrency", type=int, default=8)
    ap.add_argument("--workers", type=int, default=1, help="API processes")
    ap.add_argument("--seed", type=int, default=20240229)
    ap.add_argument("--reports", type=int, default=10_000, help="reports ingested (bulk API)")
    ap.add_argument("--check", action="store_true", help="exit 1 when a target fails")
    args = ap.parse_args()

    result: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "settings": vars(args),
    }
    with tempfile.TemporaryDirectory(prefix="tipline-bench-service-") as tmp:
        data_dir = Path(tmp)
        print(f"building a {args.entries:,}-entry bank ...", flush=True)
        _, codes, fill_s = build_bank(data_dir, args.entries, args.seed)
        result["bank_fill_seconds"] = round(fill_s, 1)
        print("generating requests ...", flush=True)
        lookups = lookup_requests(codes, args.lookups, args.seed)
        uploads, jpeg_bytes = upload_requests(args.uploads, 8)
        result["upload_jpeg_bytes"] = jpeg_bytes
        port = _free_port()
        proc = start_server(data_dir, port, args.workers)
        try:
            result["server_ready_seconds"] = round(wait_ready(port, 600), 1)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/m/index/status") as r:
                result["index_status"] = json.loads(r.read())
            # warm-up (numba kernels, connection setup), not counted
            asyncio.run(run_load(port, lookups[:500], 4, 30))
            print("lookups ...", flush=True)
            result["lookup"] = asyncio.run(run_load(port, lookups, args.concurrency, args.seconds))
            asyncio.run(run_load(port, uploads[:8], 2, 60))
            print("uploads ...", flush=True)
            result["upload"] = asyncio.run(
                run_load(port, uploads, args.upload_concurrency, args.seconds)
            )
            print(f"ingest of {args.reports:,} reports ...", flush=True)
            bulk = ingest_requests(port, partner_token(data_dir), args.reports, 100)
            first = asyncio.run(run_load(port, bulk, 4, 600))
            after_first = count_reports(data_dir)
            retry = asyncio.run(run_load(port, bulk, 4, 600))  # every request retried
            after_retry = count_reports(data_dir)
            result["ingest"] = {
                "reports": args.reports,
                "reports_per_s": round(args.reports / first["seconds"], 1),
                "errors": first["errors"] or retry["errors"],
                "stored_after_first_pass": after_first[0],
                "stored_after_full_retry": after_retry[0],
                "distinct_keys": after_retry[1],
            }
        finally:
            proc.terminate()
            proc.wait(30)
    lk, up = result["lookup"], result["upload"]
    lk_ok = (
        lk["rps"] >= LOOKUP_TARGET_RPS and lk["p99_ms"] < LOOKUP_TARGET_P99_MS and not lk["errors"]
    )
    up_ok = up["rps"] >= UPLOAD_TARGET_RPS and not up["errors"]
    ing = result["ingest"]
    ing_ok = (
        not ing["errors"]
        and ing["stored_after_first_pass"] == ing["stored_after_full_retry"] == args.reports
        and ing["distinct_keys"] == args.reports
    )
    result["pass"] = {"lookup": lk_ok, "upload": up_ok, "ingest": ing_ok}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "service.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(
        f"lookup  /m/lookup (pdq, {args.entries:,} entries): {lk['rps']:.0f} req/s, "
        f"p50 {lk['p50_ms']} ms, p99 {lk['p99_ms']} ms, errors {lk['errors'] or 0}  "
        f"[target >= {LOOKUP_TARGET_RPS:.0f}/s, p99 < {LOOKUP_TARGET_P99_MS:.0f} ms] "
        f"{'PASS' if lk_ok else 'FAIL'}"
    )
    print(
        f"upload  POST /m/lookup (2.8 MP JPEG, {jpeg_bytes / 1e6:.1f} MB): {up['rps']:.0f} req/s, "
        f"p50 {up['p50_ms']} ms, p99 {up['p99_ms']} ms, errors {up['errors'] or 0}  "
        f"[target >= {UPLOAD_TARGET_RPS:.0f}/s] {'PASS' if up_ok else 'FAIL'}"
    )
    print(
        f"ingest  POST /api/v1/reports/bulk: {ing['reports']:,} reports at "
        f"{ing['reports_per_s']:.0f}/s; stored {ing['stored_after_first_pass']:,}, after a full "
        f"retry {ing['stored_after_full_retry']:,} (nothing lost, no duplicates) "
        f"{'PASS' if ing_ok else 'FAIL'}"
    )
    return 1 if args.check and not (lk_ok and up_ok and ing_ok) else 0


if __name__ == "__main__":
    sys.exit(main())
