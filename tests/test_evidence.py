"""Evidence bundles (tipline.removal.evidence) against a real local web server on 127.0.0.1.

The pictures are generated here (seeded random colour cells, smoothed): benign patterns, no
real images. Host names resolve through an injected resolver to 127.0.0.1, so no DNS query
leaves the machine; "evil.test" resolves to a private address and must be refused before any
connection is attempted.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tipline.net.fetch import FetchSettings, FetchTrace, fetch
from tipline.removal import evidence
from tipline.removal.evidence import (
    CaptureLimits,
    EvidenceBundle,
    EvidenceError,
    capture,
    certificate_summary,
    export_warc,
    find_media_urls,
    load,
    load_page,
    save,
)
from tipline.store.media import Keyring, new_key

NOW = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)


def make_image(seed: int, fmt: str = "PNG", quality: int = 90, size: int = 256) -> bytes:
    """A benign test picture: 16x16 random colour cells, smoothly upscaled."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    im = Image.fromarray(cells).resize((size, size), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    if fmt == "JPEG":
        im.save(out, "JPEG", quality=quality)
    else:
        im.save(out, fmt)
    return out.getvalue()


@dataclass
class Route:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    gzip: bool = False


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    server_version = "tipline-test-site"
    sys_version = ""
    server: _Server

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        site = self.server.site
        path = self.path.split("?", 1)[0]
        site.hits.append(path)
        route = site.routes.get(path)
        if route is None:
            route = Route(
                404, b"<html><body>not found</body></html>", {"Content-Type": "text/html"}
            )
        if route.delay:
            time.sleep(route.delay)
        body = gzip.compress(route.body) if route.gzip else route.body
        try:
            self.send_response(route.status)
            for k, v in route.headers.items():
                self.send_header(k, v)
            if route.gzip:
                self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    site: Site


class Site:
    """A local web site whose routes a test changes while it runs."""

    def __init__(self, bind: str = "127.0.0.1") -> None:
        self.routes: dict[str, Route] = {}
        self.hits: list[str] = []
        self.httpd = _Server((bind, 0), _Handler)
        self.httpd.site = self
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, path: str, host: str = "site.test") -> str:
        return f"http://{host}:{self.port}{path}"

    def page(self, path: str, html: str, status: int = 200) -> None:
        self.routes[path] = Route(status, html.encode(), {"Content-Type": "text/html"})

    def media(self, path: str, data: bytes, content_type: str = "image/png") -> None:
        self.routes[path] = Route(200, data, {"Content-Type": content_type})

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def resolver_for(answers: dict[str, list[str]]) -> Callable[[str, int], list[str]]:
    def resolve(host: str, port: int) -> list[str]:
        if host not in answers:
            raise OSError(f"[Errno -2] Name or service not known: {host}")
        return list(answers[host])

    return resolve


def local_settings(answers: dict[str, list[str]] | None = None, **kw: Any) -> FetchSettings:
    """Fetch settings that allow the test host names (only) onto loopback."""
    answers = answers or {"site.test": ["127.0.0.1"]}
    allowed = [h for h, addrs in answers.items() if all(a.startswith("127.") for a in addrs)]
    return FetchSettings.build(
        allow_hosts=allowed, resolver=resolver_for(answers), total_timeout=10.0, **kw
    )


@pytest.fixture
def site() -> Iterator[Site]:
    s = Site()
    yield s
    s.close()


@pytest.fixture
def keyring() -> Keyring:
    ring = Keyring()
    ring.add(new_key())
    return ring


PIC_A = make_image(1)
PIC_B = make_image(2)
PIC_C = make_image(3, "JPEG")


def gallery(site: Site) -> None:
    site.page(
        "/gallery",
        f"""<!doctype html><html><head>
        <meta property="og:image" content="/media/c.jpg">
        <title>Gallery</title></head><body>
        <img src="/media/a.png" alt="a">
        <img srcset="/media/b.png 1x, /media/a.png 2x">
        <a href="http://site.test:{site.port}/media/c.jpg#top">c</a>
        <img src="data:image/png;base64,AAAA"> <a href="javascript:void(0)">x</a>
        <a href="/about">about</a>
        </body></html>""",
    )
    site.media("/media/a.png", PIC_A)
    site.media("/media/b.png", PIC_B)
    site.media("/media/c.jpg", PIC_C, "image/jpeg")


# --- discovery ---------------------------------------------------------------------------------


def test_find_media_urls_resolves_dedupes_and_caps() -> None:
    html = b"""<html><head><meta property="og:image" content="https://cdn.test/og.jpg">
    <meta name="twitter:image" content="/tw.png"></head><body>
    <img src="a.png"><img src="a.png#x"><img data-src="/lazy.webp">
    <picture><source srcset="/s1.avif 1x, /s2.avif 2x"></picture>
    <video poster="/poster.jpg"><source src="/clip.mp4"></video>
    <a href="/photo.JPG?size=big">photo</a><a href="/page.html">page</a>
    <img src="data:image/gif;base64,R0lG"><img src="ftp://x.test/a.png"><img src="">
    </body></html>"""
    urls, dropped = find_media_urls(html, "http://site.test/dir/index.html")
    assert urls == [
        "https://cdn.test/og.jpg",
        "http://site.test/tw.png",
        "http://site.test/dir/a.png",
        "http://site.test/lazy.webp",
        "http://site.test/s1.avif",
        "http://site.test/s2.avif",
        "http://site.test/poster.jpg",
        "http://site.test/clip.mp4",
        "http://site.test/photo.JPG?size=big",
    ]
    assert dropped == 0
    capped, dropped = find_media_urls(html, "http://site.test/", limit=3)
    assert len(capped) == 3 and dropped == 6
    # hostile markup: unclosed tags, junk bytes, a broken charset
    junk = b"<img src='/x.png'<<<\xff\xfe<img src=/y.png><scr" + b"\x00" * 100
    urls, _ = find_media_urls(junk, "http://site.test/", content_type="text/html; charset=nope")
    assert "http://site.test/y.png" in urls
    # unterminated declarations: html.parser's close() would back off and rescan per character
    started = time.monotonic()
    urls, _ = find_media_urls(b"<img src=/x.png>" + b"<!" * 500_000, "http://site.test/")
    assert urls == ["http://site.test/x.png"] and time.monotonic() - started < 2
    started = time.monotonic()
    find_media_urls(b"<" * 4_000_000, "http://site.test/", max_seconds=0.3)
    assert time.monotonic() - started < 1.5


# --- capture -----------------------------------------------------------------------------------


def test_capture_records_request_response_dns_and_media(
    site: Site, tmp_path: Path, keyring: Keyring
) -> None:
    gallery(site)
    attribution = {"asn": 64500, "country": "DE", "datasets": [{"name": "ip2asn", "version": "1"}]}
    held = frozenset({hashlib.sha256(PIC_B).hexdigest()})
    b = capture(
        site.url("/gallery"),
        fetch_settings=local_settings(),
        attribution=attribution,
        store_dir=tmp_path,
        keyring=keyring,
        held_media_sha256=held,
        now=NOW,
    )
    assert b.error is None and b.http_status == 200
    assert b.url == site.url("/gallery") and b.captured_at == NOW
    assert b.dns_answers == ("127.0.0.1",) and b.resolved_ip == "127.0.0.1"
    assert b.request_headers["host"] == f"site.test:{site.port}"
    assert b.request_headers["user-agent"].startswith("Tipline-fetcher")
    assert b.response_headers["server"].strip() == "tipline-test-site"
    assert b.tls is None and b.redirects == ()
    page = site.routes["/gallery"].body
    assert b.page_sha256 == hashlib.sha256(page).hexdigest()
    assert b.attribution == attribution
    by_url = {m["url"]: m for m in b.media}
    assert list(by_url) == [site.url(p) for p in ("/media/c.jpg", "/media/a.png", "/media/b.png")]
    for path, data in (("/media/a.png", PIC_A), ("/media/b.png", PIC_B), ("/media/c.jpg", PIC_C)):
        m = by_url[site.url(path)]
        assert m["sha256"] == hashlib.sha256(data).hexdigest()
        assert m["md5"] == hashlib.md5(data).hexdigest()
        assert m["size"] == len(data) and m["status"] == 200 and m["error"] is None
        assert len(m["pdq"]) == 64 and m["pdq_quality"] >= 50
        assert m["held"] is (path == "/media/b.png")
    assert b.media_sha256 == {hashlib.sha256(d).hexdigest() for d in (PIC_A, PIC_B, PIC_C)}
    # the id is the SHA-256 of the canonical encoding
    assert b.sha256 == hashlib.sha256(b.canonical()).hexdigest()
    assert json.loads(b.canonical())["url"] == b.url
    # sealed on disk: neither the page nor any media appears in the clear, no media bytes kept
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert [p.name for p in files] == sorted([f"{b.sha256}.evidence", f"{b.page_sha256}.page"])
    for f in files:
        raw = f.read_bytes()
        assert b"Gallery" not in raw and PIC_A[:64] not in raw
    for data in (PIC_A, PIC_B, PIC_C):
        assert data[100:164] not in b.canonical()
    assert load_page(b, store_dir=tmp_path, keyring=keyring) == page


def test_store_load_tamper_and_idempotence(site: Site, tmp_path: Path, keyring: Keyring) -> None:
    gallery(site)
    b = capture(
        site.url("/gallery"),
        fetch_settings=local_settings(),
        attribution=None,
        store_dir=tmp_path,
        keyring=keyring,
        now=NOW,
    )
    assert load(b.sha256, store_dir=tmp_path, keyring=keyring) == b
    path = tmp_path / b.sha256[:2] / f"{b.sha256}.evidence"
    before = (path.stat().st_mtime_ns, path.read_bytes())
    assert save(b, store_dir=tmp_path, keyring=keyring) == path  # a no-op
    assert (path.stat().st_mtime_ns, path.read_bytes()) == before
    # a modified in-memory bundle does not match its id
    with pytest.raises(EvidenceError, match="does not match its own hash"):
        save(replace(b, http_status=404), store_dir=tmp_path, keyring=keyring)
    # another key cannot open it
    other = Keyring()
    other.add(new_key())
    with pytest.raises(EvidenceError, match="not loaded"):
        load(b.sha256, store_dir=tmp_path, keyring=other)
    # one flipped byte
    blob = bytearray(before[1])
    blob[-5] ^= 0x01
    path.write_bytes(bytes(blob))
    with pytest.raises(EvidenceError, match="tampered or corrupt"):
        load(b.sha256, store_dir=tmp_path, keyring=keyring)
    # a valid blob of another bundle moved to this id fails too (the id is associated data)
    b2 = capture(
        site.url("/media/a.png"),
        fetch_settings=local_settings(),
        attribution=None,
        store_dir=tmp_path,
        keyring=keyring,
        now=NOW,
    )
    path.write_bytes((tmp_path / b2.sha256[:2] / f"{b2.sha256}.evidence").read_bytes())
    with pytest.raises(EvidenceError, match="tampered or corrupt"):
        load(b.sha256, store_dir=tmp_path, keyring=keyring)
    with pytest.raises(EvidenceError, match="no evidence bundle"):
        load("0" * 64, store_dir=tmp_path, keyring=keyring)
    with pytest.raises(EvidenceError, match="not an evidence id"):
        load("../../etc/passwd", store_dir=tmp_path, keyring=keyring)


def test_media_url_itself_is_hashed(site: Site, tmp_path: Path, keyring: Keyring) -> None:
    site.media("/direct.png", PIC_A, "application/octet-stream")
    b = capture(
        site.url("/direct.png"),
        fetch_settings=local_settings(),
        attribution=None,
        store_dir=tmp_path,
        keyring=keyring,
    )
    sha = hashlib.sha256(PIC_A).hexdigest()
    assert b.page_sha256 == sha and not b.page_stored
    assert [m["sha256"] for m in b.media] == [sha] and b.media[0]["pdq"]
    assert not list(tmp_path.rglob("*.page"))  # media bytes are never stored


def test_redirects_and_gzip_recorded(site: Site, tmp_path: Path, keyring: Keyring) -> None:
    gallery(site)
    site.routes["/gallery"].gzip = True
    site.routes["/old"] = Route(301, b"", {"Location": "/gallery"})
    b = capture(
        site.url("/old"),
        fetch_settings=local_settings(),
        attribution=None,
        store_dir=tmp_path,
        keyring=keyring,
    )
    assert b.redirects == (site.url("/old"),)
    assert b.final_url == site.url("/gallery")
    assert [h["status"] for h in b.hops] == [301, 200]
    assert b.hops[0]["response_headers"]["location"] == "/gallery"
    assert b.response_headers["content-encoding"] == "gzip"
    assert b.page_sha256 == hashlib.sha256(site.routes["/gallery"].body).hexdigest()
    assert len(b.media_sha256) == 3


def test_private_address_refused_and_recorded(site: Site, tmp_path: Path, keyring: Keyring) -> None:
    settings = local_settings({"site.test": ["127.0.0.1"], "evil.test": ["10.0.0.7"]})
    b = capture(
        f"http://evil.test:{site.port}/gallery",
        fetch_settings=settings,
        attribution={"error": "private address 10.0.0.7 refused"},
        store_dir=tmp_path,
        keyring=keyring,
    )
    assert b.error is not None and b.error.startswith("blocked_address:")
    assert "10.0.0.7" in b.error
    assert b.dns_answers == ("10.0.0.7",) and b.resolved_ip is None and b.http_status is None
    assert b.media == () and site.hits == []
    assert load(b.sha256, store_dir=tmp_path, keyring=keyring) == b
    # a redirect from an allowed host to the private one is refused at that hop
    site.routes["/jump"] = Route(302, b"", {"Location": f"http://evil.test:{site.port}/x"})
    b = capture(
        site.url("/jump"),
        fetch_settings=settings,
        attribution=None,
        store_dir=tmp_path,
        keyring=keyring,
    )
    assert b.error is not None and b.error.startswith("blocked_address:")
    assert [h["addresses"] for h in b.hops] == [["127.0.0.1"], ["10.0.0.7"]]
    assert site.hits == ["/jump"]


def test_hostile_locations_are_recorded_not_raised(
    site: Site, tmp_path: Path, keyring: Keyring
) -> None:
    site.routes["/loop"] = Route(302, b"", {"Location": "/loop"})
    site.page("/huge", "<html>" + "x" * 50_000 + "</html>")
    site.routes["/slow"] = Route(200, b"<html>late</html>", {"Content-Type": "text/html"}, 2.0)
    site.page("/missing-page", "<html>gone</html>", status=404)

    def grab(path: str, **kw: Any) -> EvidenceBundle:
        return capture(
            site.url(path),
            fetch_settings=local_settings(read_timeout=0.5),
            attribution=None,
            store_dir=tmp_path,
            keyring=keyring,
            **kw,
        )

    loop = grab("/loop")
    assert loop.error is not None and loop.error.startswith("too_many_redirects:")
    assert len(loop.redirects) == 5
    huge = grab("/huge", limits=CaptureLimits(max_page_bytes=10_000, max_media_bytes=10_000))
    assert huge.error is not None and huge.error.startswith("too_large:")
    assert huge.page_sha256 is None  # stopped while reading
    # read (the fetch cap admits media of this size) but over the page limit: hashed, not kept
    big = grab("/huge", limits=CaptureLimits(max_page_bytes=10_000, max_media_bytes=100_000))
    assert big.error is not None and big.error.startswith("too_large: the page is")
    assert big.page_sha256 == hashlib.sha256(site.routes["/huge"].body).hexdigest()
    assert not big.page_stored and not list(tmp_path.rglob("*.page"))
    slow = grab("/slow")
    assert slow.error is not None and slow.error.startswith("timeout:")
    missing = grab("/missing-page")
    assert missing.http_status == 404 and missing.error is not None
    assert missing.error.startswith("http_status:") and missing.page_sha256 is None
    gone = capture(
        site.url("/x", host="nowhere.test"),
        fetch_settings=local_settings(),
        attribution=None,
        store_dir=tmp_path,
        keyring=keyring,
    )
    assert gone.error is not None and gone.error.startswith("dns_error:")
    for b in (loop, huge, big, slow, missing, gone):
        assert load(b.sha256, store_dir=tmp_path, keyring=keyring) == b


def test_hostile_media_get_per_item_errors(site: Site, tmp_path: Path, keyring: Keyring) -> None:
    links = "".join(f'<img src="/m/{i}.png">' for i in range(200))
    site.page(
        "/many",
        '<img src="/bad/error.png"><img src="/bad/cut.png"><img src="/bad/slow.png">' + links,
    )
    site.page("/bad/error.png", "<html><h1>500 Internal error</h1></html>")
    site.media("/bad/cut.png", PIC_A[: len(PIC_A) // 2])
    site.routes["/bad/slow.png"] = Route(200, PIC_B, {"Content-Type": "image/png"}, 2.0)
    for i in range(200):
        site.media(f"/m/{i}.png", PIC_C)
    started = time.monotonic()
    b = capture(
        site.url("/many"),
        fetch_settings=local_settings(read_timeout=0.5),
        attribution=None,
        store_dir=tmp_path,
        keyring=keyring,
        limits=CaptureLimits(max_media=8),
    )
    assert time.monotonic() - started < 5
    assert len(b.media) == 8 and b.media_dropped == 195
    assert sum(p.startswith("/m/") for p in site.hits) == 5  # only the capped links fetched
    error, cut, slow = b.media[:3]
    assert error["kind"] == "text" and error["error"].startswith("not_media:")
    assert cut["sha256"] == hashlib.sha256(PIC_A[: len(PIC_A) // 2]).hexdigest()
    assert cut["pdq"] is None and cut["error"]
    assert slow["error"].startswith("timeout:") and "sha256" not in slow
    assert b.media_sha256 == {cut["sha256"], hashlib.sha256(PIC_C).hexdigest()}


def test_time_budget_skips_remaining_media(site: Site, tmp_path: Path, keyring: Keyring) -> None:
    site.page("/p", "".join(f'<img src="/s/{i}.png">' for i in range(6)))
    for i in range(6):
        site.routes[f"/s/{i}.png"] = Route(200, PIC_A, {"Content-Type": "image/png"}, 0.4)
    b = capture(
        site.url("/p"),
        fetch_settings=local_settings(),
        attribution=None,
        store_dir=tmp_path,
        keyring=keyring,
        limits=CaptureLimits(total_seconds=0.6, media_workers=1),
    )
    errors = [m.get("error") or "" for m in b.media]
    assert any(e.startswith("skipped:") for e in errors)
    assert any(m.get("sha256") for m in b.media)


# --- TLS ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Site, str, bytes]]:
    import datetime as dt
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    d = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "secure.test")])
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(0xBEEF)
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("secure.test")]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    (d / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    s = Site()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(d / "cert.pem", d / "key.pem")
    s.httpd.socket = ctx.wrap_socket(s.httpd.socket, server_side=True)
    yield s, str(d / "cert.pem"), cert.public_bytes(serialization.Encoding.DER)
    s.close()


def test_https_capture_summarises_the_certificate(
    tls_site: tuple[Site, str, bytes], tmp_path: Path, keyring: Keyring
) -> None:
    s, ca_file, der = tls_site
    s.media("/pic.png", PIC_A)
    settings = local_settings({"secure.test": ["127.0.0.1"]}, ca_file=ca_file)
    b = capture(
        f"https://secure.test:{s.port}/pic.png",
        fetch_settings=settings,
        attribution=None,
        store_dir=tmp_path,
        keyring=keyring,
    )
    assert b.error is None and b.tls is not None
    assert b.tls["subject"] == "CN=secure.test" and b.tls["issuer"] == "CN=secure.test"
    assert b.tls["san"] == ["DNS:secure.test"] and b.tls["serial"] == "beef"
    assert b.tls["not_before"] == "2026-01-01T00:00:00+00:00"
    assert b.tls["not_after"].startswith("2035-12-30")
    assert b.tls["sha256_fingerprint"] == hashlib.sha256(der).hexdigest()
    assert b.tls["self_signed"] is True
    # the trace is the fetcher's own: a plain fetch with a trace sees the same certificate
    trace = FetchTrace()
    fetch(f"https://secure.test:{s.port}/pic.png", settings, trace=trace)
    assert trace.hops[0].peer_certificate == der
    assert certificate_summary(b"not a certificate")["error"].startswith("unparsable")


# --- WARC --------------------------------------------------------------------------------------


def test_export_warc_reads_back(site: Site, tmp_path: Path, keyring: Keyring) -> None:
    from warcio.archiveiterator import ArchiveIterator

    gallery(site)
    site.routes["/start"] = Route(302, b"", {"Location": "/gallery"})
    held = hashlib.sha256(PIC_B).hexdigest()
    b1 = capture(
        site.url("/start"),
        fetch_settings=local_settings(),
        attribution={"asn": 64500},
        store_dir=tmp_path,
        keyring=keyring,
        held_media_sha256=frozenset({held}),
        now=NOW,
    )
    b2 = capture(
        f"http://evil.test:{site.port}/",
        fetch_settings=local_settings({"site.test": ["127.0.0.1"], "evil.test": ["10.1.1.1"]}),
        attribution=None,
        store_dir=tmp_path,
        keyring=keyring,
        now=NOW,
    )
    out = io.BytesIO()
    count = export_warc(
        [b1, b2],
        out,
        store_dir=tmp_path,
        keyring=keyring,
        held_media=lambda sha: PIC_B if sha == held else None,
    )
    out.seek(0)
    records = []
    for rec in ArchiveIterator(out):
        body = rec.content_stream().read()
        records.append((rec.rec_type, rec.rec_headers.get_header("WARC-Target-URI"), rec, body))
    assert len(records) == count
    assert records[0][0] == "warcinfo"
    assert all(r[2].rec_headers.protocol == "WARC/1.1" for r in records)
    kinds = [(t, u) for t, u, _, _ in records[1:]]
    gallery_url = site.url("/gallery")
    assert kinds[:4] == [
        ("request", site.url("/start")),
        ("response", site.url("/start")),
        ("request", gallery_url),
        ("response", gallery_url),
    ]
    page_response = records[4]
    assert page_response[3] == site.routes["/gallery"].body
    assert page_response[2].http_headers.get_statuscode() == "200"
    assert page_response[2].rec_headers.get_header("WARC-IP-Address") == "127.0.0.1"
    media_meta = [json.loads(r[3]) for r in records if r[0] == "metadata" and r[1] != b1.url]
    media_meta = [m for m in media_meta if "sha256" in m and "md5" in m]
    assert {m["sha256"] for m in media_meta} == b1.media_sha256
    # no media bytes in the export, except the one the case holds
    whole = b"".join(r[3] for r in records)
    assert PIC_A[100:200] not in whole and PIC_C[100:200] not in whole
    held_records = [r for r in records if r[0] == "response" and r[3] == PIC_B]
    assert len(held_records) == 1
    # every media file that answered: a request and a response record (headers; no body but
    # the held one), tied together and to the media's hash
    media_urls = {m["url"]: m for m in b1.media}
    media_records = [r for r in records if r[1] in media_urls and r[0] in ("request", "response")]
    assert len(media_records) == 2 * len(b1.media)
    requests = {r[2].rec_headers.get_header("WARC-Record-ID"): r for r in media_records[::2]}
    for req, resp in zip(media_records[::2], media_records[1::2], strict=True):
        assert (req[0], resp[0], req[1]) == ("request", "response", resp[1])
        concurrent = resp[2].rec_headers.get_header("WARC-Concurrent-To")
        assert requests[concurrent] is req
        sha = media_urls[resp[1]]["sha256"]
        assert resp[2].rec_headers.get_header("WARC-Tipline-Media-SHA256") == sha
        assert resp[2].http_headers.get_statuscode() == "200"
        assert resp[2].rec_headers.get_header("WARC-IP-Address") == "127.0.0.1"
        if sha == held:
            assert resp[3] == PIC_B and resp[2].rec_headers.get_header("WARC-Truncated") is None
        else:
            assert resp[3] == b"" and resp[2].rec_headers.get_header("WARC-Truncated")
    # held bytes that do not hash to the evidence are never exported as them
    out2 = io.BytesIO()
    export_warc([b1], out2, held_media=lambda sha: PIC_A)
    assert PIC_A[100:200] not in gzip.decompress(out2.getvalue())
    bundles = [
        json.loads(r[3])
        for r in records
        if r[0] == "metadata" and (r[1] or "").startswith("urn:tipline:evidence:")
    ]
    assert [x["sha256"] for x in bundles] == [b1.sha256, b2.sha256]
    assert (
        hashlib.sha256(
            evidence.canonical_json({k: v for k, v in bundles[0].items() if k != "sha256"})
        ).hexdigest()
        == b1.sha256
    )
    assert bundles[1]["error"].startswith("blocked_address:")


def test_attribution_is_kept_as_json_and_a_missing_key_is_an_error(
    site: Site, tmp_path: Path, keyring: Keyring
) -> None:
    from tipline.store.media import MediaError

    site.media("/x.png", PIC_A)
    at = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    b = capture(
        site.url("/x.png"),
        fetch_settings=local_settings(),
        attribution={"at": at, "addresses": ("127.0.0.1",), "asn": None},
        store_dir=tmp_path,
        keyring=keyring,
    )
    assert b.attribution == {"at": str(at), "addresses": ["127.0.0.1"], "asn": None}
    assert load(b.sha256, store_dir=tmp_path, keyring=keyring).attribution == b.attribution
    with pytest.raises(MediaError, match="no media key"):
        capture(
            site.url("/x.png"),
            fetch_settings=local_settings(),
            attribution=None,
            store_dir=tmp_path / "other",
            keyring=Keyring(),
        )


def test_rotate_evidence_to_a_new_key(site: Site, tmp_path: Path, keyring: Keyring) -> None:
    from tipline.removal.evidence import rotate_evidence

    gallery(site)
    b = capture(
        site.url("/gallery"),
        fetch_settings=local_settings(),
        attribution=None,
        store_dir=tmp_path,
        keyring=keyring,
    )
    fresh = new_key()
    keyring.add(fresh)
    result = rotate_evidence(store_dir=tmp_path, keyring=keyring)
    assert (result.reencrypted, result.unchanged, result.failed) == (2, 0, [])
    assert rotate_evidence(store_dir=tmp_path, keyring=keyring).unchanged == 2
    only_new = Keyring()
    only_new.add(fresh)
    assert load(b.sha256, store_dir=tmp_path, keyring=only_new) == b
    assert load_page(b, store_dir=tmp_path, keyring=only_new) == site.routes["/gallery"].body


def test_cli_rotate_key_reencrypts_evidence(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``tipline media rotate-key --drop-old`` re-seals the evidence bundles too: after it,
    they open with the new key alone."""
    from typer.testing import CliRunner

    from tipline.cli.app import _register, app
    from tipline.store import media as ms

    _register()
    monkeypatch.delenv(ms.KEY_ENV, raising=False)
    for name in ("TIPLINE_CONFIG", "TIPLINE_REMOVAL_EVIDENCE_DIR"):
        monkeypatch.delenv(name, raising=False)
    key_file = tmp_path / "media.key"
    ms.ensure_key_file(key_file)
    gallery(site)
    b = capture(
        site.url("/gallery"),
        fetch_settings=local_settings(),
        attribution=None,
        store_dir=tmp_path / "evidence",
        keyring=Keyring.load(key_file, {}),
    )
    runner = CliRunner()
    env = {"TIPLINE_DATA_DIR": str(tmp_path)}
    res = runner.invoke(app, ["media", "rotate-key", "--drop-old"], env=env)
    assert res.exit_code == 0, res.output
    assert "re-encrypted 2 evidence files" in res.output and "dropped 1 old key" in res.output
    only_new = Keyring.load(key_file, {})
    assert len(only_new.keys) == 1
    assert load(b.sha256, store_dir=tmp_path / "evidence", keyring=only_new) == b
    assert load_page(b, store_dir=tmp_path / "evidence", keyring=only_new) == (
        site.routes["/gallery"].body
    )
    # a damaged bundle: reported, the run goes on, and the old keys are kept
    bad = tmp_path / "evidence" / "ab" / ("ab" + "0" * 62 + ".evidence")
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_bytes(b"not a sealed blob")
    res = runner.invoke(app, ["media", "rotate-key", "--drop-old"], env=env)
    assert res.exit_code == 1
    assert "failed evidence ab000" in res.output and "old keys kept" in res.output
    assert len(Keyring.load(key_file, {}).keys) == 2
    assert load(b.sha256, store_dir=tmp_path / "evidence", keyring=Keyring.load(key_file, {})) == b
    # a custom evidence directory comes from the [removal] setting
    other = tmp_path / "elsewhere"
    moved = capture(
        site.url("/gallery"),
        fetch_settings=local_settings(),
        attribution=None,
        store_dir=other,
        keyring=Keyring.load(key_file, {}),
    )
    bad.unlink()
    res = runner.invoke(
        app,
        ["media", "rotate-key", "--drop-old"],
        env={**env, "TIPLINE_REMOVAL_EVIDENCE_DIR": str(other)},
    )
    assert res.exit_code == 0, res.output
    assert str(other) in res.output
    assert load(moved.sha256, store_dir=other, keyring=Keyring.load(key_file, {})) == moved


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_attribution_from_hosting_goes_in_as_given(
    site: Site, tmp_path: Path, keyring: Keyring, session_factory: Any
) -> None:
    """H1's Attribution.to_json() passes through the canonical encoding unchanged."""
    from tipline.removal.hosting import attribute

    gallery(site)
    settings = local_settings()
    with session_factory() as session:
        attribution = attribute(
            session,
            site.url("/gallery"),
            resolver=lambda host: ["127.0.0.1"],
            fetch_settings=settings,
            now=NOW,
        ).to_json()
    assert attribution["addresses"] == ["127.0.0.1"] and attribution["at"] == NOW.isoformat()
    b = capture(
        site.url("/gallery"),
        fetch_settings=settings,
        attribution=attribution,
        store_dir=tmp_path,
        keyring=keyring,
        now=NOW,
    )
    assert b.attribution == attribution
    assert load(b.sha256, store_dir=tmp_path, keyring=keyring).attribution == attribution


def test_videos_in_evidence_get_vpdq_and_recheck_finds_a_reencode() -> None:
    """A video found in evidence carries its vPDQ frames; a re-check that finds the same
    video re-encoded (another codec, other bytes) counts it as still served; another video,
    or a truncated one, does not (the truncated one keeps its digests and says why)."""
    from test_video import encode
    from tipline.removal.evidence import hash_media
    from tipline.removal.recheck import compare_media

    clip = encode()  # benign generated noise frames
    entry = hash_media(clip)
    assert entry["kind"] == "video" and entry["pdq"] is None and entry["error"] is None
    assert entry["vpdq_frames"] >= 1 and len(entry["vpdq"]) == entry["vpdq_frames"]
    assert "vpdq" not in hash_media(PIC_A)  # pictures keep their PDQ only
    reencoded = hash_media(encode(codec="mpeg4"))
    assert reencoded["sha256"] != entry["sha256"]
    matched, near = compare_media((entry,), [reencoded])
    assert matched == {entry["sha256"]} and near[0][0] == entry["sha256"]
    assert compare_media((entry,), [hash_media(encode(size=(96, 72)))]) == (frozenset(), ())
    broken = hash_media(clip[: len(clip) // 3])
    assert broken["sha256"] == hashlib.sha256(clip[: len(clip) // 3]).hexdigest()
    assert broken["vpdq"] == [] and "corrupt_media" in broken["error"]
    assert compare_media((entry,), [broken]) == (frozenset(), ())
    # a hostile evidence entry (frames that are not vPDQ strings) matches nothing
    assert compare_media(({**entry, "vpdq": ["zz"], "sha256": "e" * 64},), [reencoded]) == (
        frozenset(),
        (),
    )
