"""HMA's ``tests/test_hashing.py``, replayed over HTTP (paths below are under
``hasher-matcher-actioner/src/OpenMediaMatch/`` in facebook/ThreatExchange, HMA 1.1.7).

HMA unit-tests ``is_valid_url`` and mocks ``requests.get``; here the same URLs go to
``GET /h/hash`` and the local image server stands in for the remote one. Tipline fetches
through its SSRF-safe fetcher: private, loopback and metadata addresses are refused unless
allow-listed (the test server's 127.0.0.1 is), where HMA allows any host when its allow-list
is empty (docs/api.md, differences)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx

from hma_compat.conftest import Images, serve_env
from serve_process import tipline_exe


def test_valid_urls(client: httpx.Client, images: Images) -> None:
    """tests/test_hashing.py::test_valid_urls; blueprints/hashing.py ``is_valid_url``: http(s)
    URLs with a path, port, query or fragment are fetched and hashed."""
    base = images.url("image1.jpg")
    for url in (base, base + "?query=value", base + "#fragment", base + "?a=1#f"):
        r = client.get("/h/hash", params={"url": url})
        assert r.status_code == 200, (url, r.text)
        assert r.json() == {"pdq": images.pdq["image1.jpg"]}


def test_invalid_schemes(client: httpx.Client) -> None:
    """tests/test_hashing.py::test_invalid_schemes: only http and https (400)."""
    for url in (
        "ftp://example.com",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "ws://example.com",
        "wss://example.com",
    ):
        r = client.get("/h/hash", params={"url": url})
        assert r.status_code == 400 and "message" in r.json(), url


def test_missing_scheme_or_netloc(client: httpx.Client) -> None:
    """tests/test_hashing.py::test_missing_scheme_or_netloc: 400; no url at all is
    schemas/hashing.py's 422."""
    for url in ("example.com", "//example.com", "http://", "https://", ""):
        r = client.get("/h/hash", params={"url": url})
        assert r.status_code == 400, (url, r.text)
    r = client.get("/h/hash")
    assert r.status_code == 422 and r.json()[0]["loc"] == ["url"]


def test_malformed_urls(client: httpx.Client) -> None:
    """tests/test_hashing.py::test_malformed_urls: 400."""
    for url in (
        "not a url",
        "http://",
        "https://",
        "http:///example.com",
        "http://example.com:",
        "http://example.com:abc",
    ):
        r = client.get("/h/hash", params={"url": url})
        assert r.status_code == 400, (url, r.text)


def test_allowed_hostnames(client: httpx.Client, images: Images) -> None:
    """tests/test_hashing.py::test_allowed_hostnames: an allow-listed host is fetched; others
    are refused (Tipline's allow-list is of networks: here 127.0.0.1/32)."""
    assert client.get("/h/hash", params={"url": images.url("image2.jpg")}).status_code == 200
    for url in (
        "http://10.1.2.3/path",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/path",
        "https://evil.invalid/path",
        "https://example.com.evil.invalid/path",
    ):
        r = client.get("/h/hash", params={"url": url})
        assert r.status_code == 400, (url, r.text)


def test_empty_allowed_hostnames(client: httpx.Client, images: Images) -> None:
    """tests/test_hashing.py::test_empty_allowed_hostnames: with no host allow-list every
    host is allowed (HMA). Tipline's equivalent with no network allow-list: public hosts are
    allowed, private ones never; the replay checks the allowed side (the only reachable host
    here is the allow-listed test server) and that a text/plain answer is HMA's 400
    (hashing.py ``_parse_request_content_type``) unless the content type is given."""
    r = client.get("/h/hash", params={"url": images.url("image1.jpg")})
    assert r.status_code == 200
    r = client.get("/h/hash", params={"url": images.url("note.txt")})
    assert r.status_code == 400 and "unsupported url ContentType" in r.json()["message"]
    r = client.get("/h/hash", params={"url": images.url("image1.jpg"), "content_type": "nope"})
    assert r.status_code == 400
    r = client.get("/h/hash", params={"url": images.url("image1.jpg"), "types": "video_md5"})
    assert r.status_code == 400


def test_content_length_validation(client: httpx.Client, images: Images) -> None:
    """tests/test_hashing.py::test_content_length_validation; hashing.py
    ``_check_content_length_stream_response``: a declared length over the limit is 413
    "Content too large"; an acceptable one is not."""
    r = client.get("/h/hash", params={"url": images.url("huge.jpg")})
    assert r.status_code == 413 and "Content too large" in r.text
    r = client.get("/h/hash", params={"url": images.url("image1.jpg")})
    assert r.status_code != 413


def test_content_length_validation_default(client: httpx.Client, images: Images) -> None:
    """tests/test_hashing.py::test_content_length_validation_default: with the default limit
    (HMA 100 MiB; the 200 MiB declared is over Tipline's default too) still 413."""
    r = client.get("/m/lookup", params={"url": images.url("huge.jpg")})
    assert r.status_code == 413 and "Content too large" in r.text


def test_content_length_validation_misconfiguration(tmp_path: Path) -> None:
    """tests/test_hashing.py::test_content_length_validation_misconfiguration: HMA answers
    500 "Service misconfigured" to each request when its size limit is not a number. Tipline
    checks its settings at start: `tipline serve` refuses to start, naming the setting."""
    env = serve_env(tmp_path, TIPLINE_FETCH_MAX_BYTES="not-an-integer")
    proc = subprocess.run(
        [tipline_exe(), "serve", "--port", "1"], env=env, capture_output=True, timeout=60
    )
    assert proc.returncode != 0
    text = (proc.stdout + proc.stderr).decode()
    assert "fetch_max_bytes" in text.lower() and "Traceback" not in text
