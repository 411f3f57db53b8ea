"""A crawled HTML page is parsed once (links and text together,
``tipline.crawl.documents.analyse_page``): the same links as ``tipline.net.links.extract`` and
the same text, title, TLSH and keyword hits as ``analyse_document`` give each on its own, on
the test forum's pages and on hostile markup."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.request import urlopen

import pytest

from crawl_site import Site
from guide_texts import ASSEMBLY_GUIDE_REPOST
from tipline.crawl.documents import analyse_document, analyse_page
from tipline.crawl.models import is_model_link
from tipline.net.links import extract
from tipline.provenance.keywords import KeywordList, KeywordMatcher

KEYWORDS = KeywordMatcher(KeywordList.parse("bookshelf\nwidget\n# category: other\nforum"))

PATHS = [
    "/forum/",
    "/forum/?page=2",
    "/forum/thread/1",
    "/forum/thread/1?page=3",
    "/forum/thread/5",
    "/forum/models/7",
    "/gallery/",
    "/malformed",
    "/odd/dir/page",
    "/many",
    "/bigsite?n=3&m=2",
    "/loop/a",
]

HOSTILE = [
    b"<html><head><title>t &amp; u</title><style>p{}</style></head><body>"
    b"<svg/><p>bookshelf<br/>widget</p><script>var a='<a href=/x>';</script>"
    b"<a href='/y'><img src=/i.png /></a><noscript>no</noscript>tail &amp",
    b"<!doctype html><p>" + b"<!--" * 2000 + b"<a href=/z>z</a>",
    b"<html><meta charset=iso-8859-1><body>caf\xe9 <a href='/caf\xe9'>x</a></body></html>",
    b"\xef\xbb\xbf<html><body><a href=/bom>bom</a> forum text</body></html>",
    b"<html><body><table><tr><td>a<td>b</table><a href=/t><img src=/u.jpg></a>",
    b"<HTML><BODY><A HREF=/upper>UPPER</A><IMG SRC=/upper.gif><TITLE>late</TITLE>",
]


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    s = Site()
    yield s
    s.stop()


def _same(data: bytes, url: str, ctype: str) -> list[str]:
    both = analyse_page(data, ctype, url, KEYWORDS, max_links=2000, is_model_link=is_model_link)
    assert both is not None
    links, doc = both
    want_links = extract(data, url, max_links=2000, content_type=ctype, is_model_link=is_model_link)
    want_doc = analyse_document(data, ctype, url, KEYWORDS)
    if data != HOSTILE[2]:
        assert links.links == want_links.links
    assert (links.dropped, links.ignored) == (want_links.dropped, want_links.ignored)
    assert (doc.text, doc.title, doc.tlsh, doc.kind) == (
        want_doc.text,
        want_doc.title,
        want_doc.tlsh,
        want_doc.kind,
    )
    assert doc.keyword_hits == want_doc.keyword_hits
    assert (doc.sha256, doc.md5, doc.size) == (want_doc.sha256, want_doc.md5, want_doc.size)
    return [ln.url for ln in links.links]


@pytest.mark.parametrize("path", PATHS)
def test_forum_pages_parsed_once_as_twice(site: Site, path: str) -> None:
    url = site.base + path
    with urlopen(url) as resp:  # the site on 127.0.0.1
        data, ctype = resp.read(), resp.headers.get("content-type", "")
    _same(data, url, ctype)


@pytest.mark.parametrize("i", range(len(HOSTILE)))
def test_hostile_markup_parsed_once_as_twice(i: int) -> None:
    urls = _same(HOSTILE[i], "http://127.0.0.1:9/dir/page", "text/html")
    if i == 2:
        # one decoding for both: the page's <meta charset> now reads its links too (extract
        # alone read them as UTF-8 and got U+FFFD)
        assert urls == ["http://127.0.0.1:9/caf%C3%A9"]


def test_thread_with_the_guide_keeps_its_tlsh_and_keywords(site: Site) -> None:
    url = site.base + "/forum/thread/5"
    with urlopen(url) as resp:
        data = resp.read()
    both = analyse_page(data, "text/html", url, KEYWORDS)
    assert both is not None
    _links, doc = both
    assert doc.tlsh and "bookshelf" in ASSEMBLY_GUIDE_REPOST.lower()
    assert any(h.term == "bookshelf" for h in doc.keyword_hits)


def test_not_html_is_left_to_the_two_readers() -> None:
    assert analyse_page(b"plain text, no markup at all", "text/plain", "http://h/x.txt") is None
    assert analyse_page(b"", "text/html", "http://h/") is None
    assert analyse_page(b"%PDF-1.4 ...", "application/pdf", "http://h/x.pdf") is None


def test_not_html_is_hashed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """analyse_page gives a body that is not HTML back unhashed: the caller's
    analyse_document (the engine's fallback) hashes it, once."""
    import hashlib

    from tipline.crawl import documents

    calls: list[int] = []
    real = hashlib.sha256

    class Counting:
        @staticmethod
        def sha256(data: bytes = b"") -> object:
            calls.append(len(data))
            return real(data)

        md5 = staticmethod(hashlib.md5)

    monkeypatch.setattr(documents, "hashlib", Counting)
    body = b"plain text guide, no markup at all " * 40
    for ctype in ("text/plain", "text/html"):
        calls.clear()
        if analyse_page(body, ctype, "http://h/x", KEYWORDS) is None:
            doc = analyse_document(body, ctype, "http://h/x", KEYWORDS)
            assert doc.sha256 == real(body).hexdigest()
        assert calls == [len(body)], ctype
