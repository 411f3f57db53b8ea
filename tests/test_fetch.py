"""The SSRF-safe fetcher. Traffic goes only to a real test server on 127.0.0.1; every private
target below is refused before any connection is attempted (the tests would hang or fail with a
connect error otherwise, and the resolver is stubbed so no DNS leaves the machine)."""

from __future__ import annotations

import gzip
import ipaddress
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tipline.net import fetch as fetch_mod
from tipline.net.fetch import (
    BlockedAddressError,
    FetchConnectError,
    FetchSettings,
    FetchTimeoutError,
    HTTPStatusError,
    InvalidURLError,
    TooLargeError,
    TooManyRedirectsError,
    blocked_reason,
    fetch,
)

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 100


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, code: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(parts.query).items()}
        path = parts.path
        if path == "/image":
            self._send(200, PNG, {"Content-Type": "text/html"})  # lies about its type
        elif path == "/host":
            self._send(200, (self.headers.get("Host") or "").encode())
        elif path == "/redirect":
            self._send(int(q.get("code", "302")), b"", {"Location": q["to"]})
        elif path == "/loop":
            self._send(302, b"", {"Location": "/loop"})
        elif path == "/big-declared":
            self.send_response(200)
            self.send_header("Content-Length", str(10**9))
            self.end_headers()
            self.wfile.write(b"x" * 1024)
        elif path == "/big-stream":
            self.send_response(200)
            self.end_headers()  # no Content-Length: body runs until close
            try:
                for _ in range(64):
                    self.wfile.write(b"y" * 16 * 1024)
            except OSError:
                pass
        elif path == "/gzip-bomb":
            body = gzip.compress(b"\0" * (8 * 1024 * 1024))
            self._send(200, body, {"Content-Encoding": "gzip"})
        elif path == "/gzip":
            self._send(200, gzip.compress(PNG), {"Content-Encoding": "gzip"})
        elif path == "/slow":
            time.sleep(float(q.get("s", "3")))
            self._send(200, b"late")
        elif path == "/drip":
            self.send_response(200)
            self.end_headers()
            try:
                for _ in range(40):
                    self.wfile.write(b"d")
                    self.wfile.flush()
                    time.sleep(0.1)
            except OSError:
                pass
        elif path == "/missing":
            self._send(404, b"no")
        else:
            self._send(200, b"hello")


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _no_dns(host: str, port: int) -> list[str]:
    raise AssertionError(f"DNS lookup of {host} attempted")


@pytest.fixture
def allow_local() -> FetchSettings:
    return FetchSettings.build(allow_networks=["127.0.0.1/32"], resolver=_no_dns)


@pytest.fixture
def no_connect(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Fail the test if the fetcher ever sends a request to a non-loopback address."""
    sent: list[str] = []
    real = httpx.Client.send

    def guarded(self: httpx.Client, request: httpx.Request, **kw: Any) -> httpx.Response:
        host = request.url.host
        sent.append(host)
        assert ipaddress.ip_address(host).is_loopback, f"tried to connect to {host}"
        return real(self, request, **kw)

    monkeypatch.setattr(httpx.Client, "send", guarded)
    return sent


# --- direct SSRF attempts --------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://127.1/",
        "http://2130706433/",
        "http://10.1.2.3/",
        "http://172.16.0.1/",
        "http://172.31.255.255/",
        "http://192.168.1.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.64.0.1/",
        "http://0.0.0.0/",
        "http://[::1]/",
        "http://[::]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:7f00:1]/",
        "http://[::ffff:169.254.169.254]/",
        "http://[64:ff9b::a00:1]/",
        "http://[2002:a00:1::]/",
        "http://[fd00:ec2::254]/",
        "http://[fc00::1]/",
        "http://[fe80::1]/",
        "http://224.0.0.1/",
        "http://255.255.255.255/",
    ],
)
def test_private_targets_refused(url: str, no_connect: list[str]) -> None:
    with pytest.raises(BlockedAddressError) as err:
        fetch(url, FetchSettings(resolver=_no_dns if "[" in url else None))
    assert str(err.value).startswith("blocked_address: refused to fetch")
    assert no_connect == []


def test_public_address_is_not_blocked() -> None:
    assert blocked_reason(ipaddress.ip_address("93.184.216.34")) is None
    assert blocked_reason(ipaddress.ip_address("2606:4700::1111")) is None
    assert blocked_reason(ipaddress.ip_address("::ffff:8.8.8.8")) is None


def test_metadata_needs_network_allow_list() -> None:
    meta = ipaddress.ip_address("169.254.169.254")
    assert blocked_reason(meta) == "a cloud metadata address"
    by_host = FetchSettings.build(allow_hosts=["169.254.169.254"])
    with pytest.raises(BlockedAddressError):
        fetch_mod.check_address(meta, "169.254.169.254", by_host)
    by_net = FetchSettings.build(allow_networks=["169.254.169.254/32"])
    fetch_mod.check_address(meta, "169.254.169.254", by_net)  # no raise


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://example.org/x", "gopher://x/", "/relative", "http://"]
)
def test_non_http_refused(url: str) -> None:
    with pytest.raises(InvalidURLError):
        fetch(url, FetchSettings(resolver=_no_dns))


def test_credentials_in_url_refused() -> None:
    with pytest.raises(InvalidURLError, match="credentials"):
        fetch("http://user:pw@example.org/", FetchSettings(resolver=_no_dns))


def test_dns_name_resolving_to_loopback(no_connect: list[str]) -> None:
    calls: list[str] = []

    def evil(host: str, port: int) -> list[str]:
        calls.append(host)
        return ["127.0.0.1"]

    with pytest.raises(BlockedAddressError, match=r"rebind\.example \(127\.0\.0\.1\)"):
        fetch("http://rebind.example/x", FetchSettings(resolver=evil))
    assert calls == ["rebind.example"]
    assert no_connect == []


def test_dns_answer_mixing_public_and_private_refused(no_connect: list[str]) -> None:
    def mixed(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "10.0.0.5"]

    with pytest.raises(BlockedAddressError, match=r"10\.0\.0\.5"):
        fetch("http://mixed.example/", FetchSettings(resolver=mixed))
    assert no_connect == []


def test_localhost_refused_by_real_resolver(no_connect: list[str]) -> None:
    with pytest.raises(BlockedAddressError, match="localhost"):
        fetch("http://localhost:9/", FetchSettings())
    assert no_connect == []


# --- a real server on 127.0.0.1, allow-listed -----------------------------------------------


def test_fetch_allowed_server_sniffs_bytes(server: str, allow_local: FetchSettings) -> None:
    res = fetch(f"{server}/image", allow_local)
    assert res.content == PNG
    assert res.media_type.mime == "image/png"
    assert res.declared_type == "text/html"
    assert res.url == f"{server}/image"
    assert res.redirects == ()


def test_pinned_connection_keeps_host_header(server: str, no_connect: list[str]) -> None:
    """A name resolved once; the connection goes to the vetted IP, Host stays the name."""
    calls: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        calls.append(host)
        return ["127.0.0.1"]

    port = server.rsplit(":", 1)[1]
    s = FetchSettings.build(allow_hosts=["media.test"], resolver=resolver)
    res = fetch(f"http://media.test:{port}/host", s)
    assert res.content == f"media.test:{port}".encode()
    assert calls == ["media.test"]
    assert no_connect == ["127.0.0.1"]


def test_gzip_body_is_decoded(server: str, allow_local: FetchSettings) -> None:
    assert fetch(f"{server}/gzip", allow_local).content == PNG


@pytest.mark.parametrize(
    "target",
    [
        "http://10.0.0.1/",
        "http://169.254.169.254/latest/meta-data/iam/",
        "http://[::ffff:127.0.0.2]/",
        "http://127.0.0.2:1/",
    ],
)
def test_redirect_to_private_refused_before_connecting(
    server: str, allow_local: FetchSettings, no_connect: list[str], target: str
) -> None:
    with pytest.raises(BlockedAddressError):
        fetch(f"{server}/redirect?to={target}", allow_local)
    assert no_connect == ["127.0.0.1"]  # only the allowed first hop


def test_redirect_to_file_scheme_refused(server: str, allow_local: FetchSettings) -> None:
    with pytest.raises(InvalidURLError):
        fetch(f"{server}/redirect?to=file:///etc/passwd", allow_local)


def test_redirect_followed_within_allowed(server: str, allow_local: FetchSettings) -> None:
    res = fetch(f"{server}/redirect?to=/image&code=307", allow_local)
    assert res.content == PNG
    assert res.url == f"{server}/image"
    assert res.redirects == (f"{server}/redirect?to=/image&code=307",)


def test_redirect_loop_capped(server: str) -> None:
    s = FetchSettings.build(allow_networks=["127.0.0.1/32"], max_redirects=3)
    with pytest.raises(TooManyRedirectsError, match="more than 3 redirects"):
        fetch(f"{server}/loop", s)


def test_declared_oversize_refused(server: str) -> None:
    s = FetchSettings.build(allow_networks=["127.0.0.1/32"], max_bytes=100_000)
    with pytest.raises(TooLargeError, match="declares 1,000,000,000 bytes"):
        fetch(f"{server}/big-declared", s)


def test_streamed_oversize_stopped(server: str) -> None:
    s = FetchSettings.build(allow_networks=["127.0.0.1/32"], max_bytes=100_000)
    with pytest.raises(TooLargeError, match="stopped reading"):
        fetch(f"{server}/big-stream", s)


def test_gzip_bomb_stopped(server: str) -> None:
    s = FetchSettings.build(allow_networks=["127.0.0.1/32"], max_bytes=100_000)
    with pytest.raises(TooLargeError):
        fetch(f"{server}/gzip-bomb", s)


def test_read_timeout(server: str) -> None:
    s = FetchSettings.build(allow_networks=["127.0.0.1/32"], read_timeout=0.3)
    with pytest.raises(FetchTimeoutError):
        fetch(f"{server}/slow?s=2", s)


def test_total_time_limit_against_a_drip(server: str) -> None:
    s = FetchSettings.build(allow_networks=["127.0.0.1/32"], read_timeout=2.0, total_timeout=0.5)
    with pytest.raises(FetchTimeoutError, match="total time limit"):
        fetch(f"{server}/drip", s)


def test_http_error_status(server: str, allow_local: FetchSettings) -> None:
    with pytest.raises(HTTPStatusError, match="HTTP 404") as err:
        fetch(f"{server}/missing", allow_local)
    assert err.value.status == 404


# -- https: the pinned connection still verifies the certificate against the host name ---------


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, str]]:
    import datetime
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    d = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "media.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("media.test")]), False)
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
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(d / "cert.pem", d / "key.pem")
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield httpd.server_address[1], str(d / "cert.pem")
    httpd.shutdown()
    httpd.server_close()


def test_https_pinned_with_sni_and_certificate_check(
    tls_server: tuple[int, str], no_connect: list[str]
) -> None:
    port, ca = tls_server

    def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    ok = FetchSettings.build(allow_hosts=["media.test"], resolver=resolver, ca_file=ca)
    assert fetch(f"https://media.test:{port}/host", ok).content == f"media.test:{port}".encode()
    other = FetchSettings.build(allow_hosts=["other.test"], resolver=resolver, ca_file=ca)
    with pytest.raises(FetchConnectError, match="certificate verify failed"):
        fetch(f"https://other.test:{port}/host", other)
    assert set(no_connect) == {"127.0.0.1"}


def test_odd_ipv4_spellings_and_idn_hosts(no_connect: list[str]) -> None:
    for url in ("http://0x7f.1/", "http://0177.0.0.1/", "http://127.000.000.001/"):
        with pytest.raises((BlockedAddressError, InvalidURLError, fetch_mod.ResolveError)):
            fetch(url, FetchSettings())
    asked: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        asked.append(host)
        return ["10.9.9.9"]

    with pytest.raises(BlockedAddressError):
        fetch("http://bücher.example/", FetchSettings(resolver=resolver))
    assert asked == ["xn--bcher-kva.example"]
    assert no_connect == []
