"""Re-checks (tipline.removal.recheck) against a real local web server on 127.0.0.1 that
serves a page with generated pictures, then removes it, re-serves it, answers with a soft-404
page, serves a re-encoded copy and a different picture. Every network failure is an outcome."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from test_evidence import (
    NOW,
    PIC_A,
    PIC_B,
    Route,
    Site,
    local_settings,
    make_image,
)
from tipline.net.fetch import FetchSettings
from tipline.removal.evidence import EvidenceBundle, capture
from tipline.removal.recheck import PDQ_MATCH_DISTANCE, RecheckResult, recheck
from tipline.signals.pdq import hamming
from tipline.store.media import Keyring, new_key

LATER = datetime(2026, 12, 2, 9, 30, tzinfo=UTC)
SOFT_404 = "<html><body><h1>This content has been removed</h1><img src='/logo.png'></body></html>"
LOGO = make_image(99, size=64)


@pytest.fixture
def site() -> Iterator[Site]:
    s = Site()
    yield s
    s.close()


def serve_original(site: Site) -> None:
    site.page("/post/1", '<html><body><img src="/i/a.png"><img src="/i/b.png"></body></html>')
    site.media("/i/a.png", PIC_A)
    site.media("/i/b.png", PIC_B)
    site.media("/logo.png", LOGO)


@pytest.fixture
def captured(site: Site, tmp_path: Path) -> EvidenceBundle:
    serve_original(site)
    ring = Keyring()
    ring.add(new_key())
    b = capture(
        site.url("/post/1"),
        fetch_settings=local_settings(),
        attribution=None,
        store_dir=tmp_path,
        keyring=ring,
        now=NOW,
    )
    assert len(b.media_sha256) == 2
    return b


def check(
    site: Site,
    evidence: EvidenceBundle,
    path: str = "/post/1",
    settings: FetchSettings | None = None,
) -> RecheckResult:
    settings = settings or local_settings(read_timeout=0.5)
    return recheck(site.url(path), evidence, fetch_settings=settings, now=LATER)


def test_serve_remove_reserve_soft404_reencode(site: Site, captured: EvidenceBundle) -> None:
    online = check(site, captured)
    assert online.outcome == "online" and online.matched == captured.media_sha256
    assert online.reason == "2 of 2 evidence media still served (2 exact)"
    assert online.http_status == 200 and online.addresses == ("127.0.0.1",)
    assert online.checked_at == LATER and online.page_sha256 == captured.page_sha256

    site.routes.pop("/post/1")  # removed: the server's 404
    gone = check(site, captured)
    assert (gone.outcome, gone.reason, gone.http_status) == ("miss", "gone: HTTP 404", 404)
    assert gone.matched == frozenset() and not gone.transient

    serve_original(site)  # re-appeared
    assert check(site, captured).outcome == "online"

    site.page("/post/1", SOFT_404)  # 200, a "removed" template: detected by hash, not status
    soft = check(site, captured)
    assert soft.outcome == "miss" and soft.http_status == 200
    assert soft.reason.startswith("different content: HTTP 200 serves 1 other media")

    # the page back, but one picture re-encoded as JPEG and the other gone: PDQ still matches
    serve_original(site)
    site.media("/i/a.png", make_image(1, "JPEG", quality=30, size=200), "image/jpeg")
    site.routes.pop("/i/b.png")
    reencoded = check(site, captured)
    a_sha = next(m["sha256"] for m in captured.media if m["url"].endswith("/i/a.png"))
    assert reencoded.outcome == "online" and reencoded.matched == {a_sha}
    assert [s for s, _ in reencoded.pdq_matched] == [a_sha]
    assert reencoded.pdq_matched[0][1] <= PDQ_MATCH_DISTANCE
    assert "1 by PDQ" in reencoded.reason
    assert any("/i/b.png: http_status" in e for e in reencoded.media_errors)

    # a different picture at the same URL is not the evidence
    site.media("/i/a.png", make_image(7))
    different = check(site, captured)
    assert different.outcome == "miss" and different.matched == frozenset()
    a_pdq = next(m["pdq"] for m in captured.media if m["sha256"] == a_sha)
    other = next(m for m in captured.media if m["sha256"] != a_sha)
    assert hamming(a_pdq, other["pdq"]) > PDQ_MATCH_DISTANCE  # the patterns really differ

    site.page("/post/1", "<html>gone for good</html>", status=410)
    assert check(site, captured).reason == "gone: HTTP 410"


def test_network_failures_are_outcomes(site: Site, captured: EvidenceBundle) -> None:
    site.routes["/loop"] = Route(302, b"", {"Location": "/loop"})
    loop = check(site, captured, "/loop")
    assert loop.outcome == "miss" and loop.reason.startswith("redirect loop:")

    site.routes["/slow"] = Route(200, b"<html></html>", {"Content-Type": "text/html"}, 2.0)
    slow = check(site, captured, "/slow")
    assert slow.outcome == "miss" and slow.transient and slow.reason.startswith("timeout:")

    site.page("/busy", "<html>try later</html>", status=503)
    busy = check(site, captured, "/busy")
    assert busy.outcome == "miss" and busy.transient and busy.http_status == 503

    dns_gone = recheck(
        site.url("/post/1", host="vanished.test"),
        captured,
        fetch_settings=local_settings(),
        now=LATER,
    )
    assert dns_gone.outcome == "miss" and dns_gone.reason.startswith("dns gone:")
    assert dns_gone.addresses == ()

    with socket.socket() as probe:  # a port nobody listens on: connection refused
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    refused = recheck(
        f"http://site.test:{closed_port}/post/1",
        captured,
        fetch_settings=local_settings(),
        now=LATER,
    )
    assert refused.outcome == "miss" and refused.reason.startswith("connect_error:")
    assert refused.transient and refused.addresses == ("127.0.0.1",)


def test_moved_to_a_private_address_is_blocked(site: Site, captured: EvidenceBundle) -> None:
    settings = local_settings({"site.test": ["10.20.30.40"]})
    before = len(site.hits)
    blocked = check(site, captured, settings=settings)
    assert blocked.outcome == "blocked" and blocked.reason.startswith("blocked_address:")
    assert blocked.addresses == ("10.20.30.40",) and len(site.hits) == before
    # a redirect to another (allowed) host that serves the same media is still online; the
    # addresses of both hops come back for re-attribution
    mirror = Site(bind="127.0.0.2")
    try:
        serve_original(mirror)
        site.routes["/moved"] = Route(
            301, b"", {"Location": f"http://mirror.test:{mirror.port}/post/1"}
        )
        both = local_settings({"site.test": ["127.0.0.1"], "mirror.test": ["127.0.0.2"]})
        moved = recheck(site.url("/moved"), captured, fetch_settings=both, now=LATER)
    finally:
        mirror.close()
    assert moved.outcome == "online" and moved.matched == captured.media_sha256
    assert moved.addresses == ("127.0.0.1", "127.0.0.2")
    assert moved.final_url == f"http://mirror.test:{mirror.port}/post/1"


def test_evidence_without_media_compares_the_page(site: Site, tmp_path: Path) -> None:
    site.page("/text", "<html><body>a text-only listing</body></html>")
    ring = Keyring()
    ring.add(new_key())
    b = capture(
        site.url("/text"),
        fetch_settings=local_settings(),
        attribution=None,
        store_dir=tmp_path,
        keyring=ring,
    )
    assert b.media == ()
    same = check(site, b, "/text")
    assert same.outcome == "online" and same.reason.startswith("the page is unchanged")
    site.page("/text", "<html><body>nothing here</body></html>")
    assert check(site, b, "/text").outcome == "miss"


def test_media_url_evidence_and_html_error_at_the_media_url(site: Site, tmp_path: Path) -> None:
    site.media("/direct.png", PIC_A)
    ring = Keyring()
    ring.add(new_key())
    b = capture(
        site.url("/direct.png"),
        fetch_settings=local_settings(),
        attribution=None,
        store_dir=tmp_path,
        keyring=ring,
    )
    assert check(site, b, "/direct.png").outcome == "online"
    site.page("/direct.png", "<html><h1>Error</h1></html>")  # 200 HTML at the image's URL
    soft = check(site, b, "/direct.png")
    assert soft.outcome == "miss" and soft.media_sha256 == frozenset()
    truncated = replace(b, media=tuple({**m, "pdq": None} for m in b.media))
    site.media("/direct.png", PIC_A[: len(PIC_A) // 2])  # truncated: the bytes differ
    cut = check(site, truncated, "/direct.png")
    assert cut.outcome == "miss" and cut.media_sha256 and not cut.matched
    assert cut.to_json()["outcome"] == "miss"
