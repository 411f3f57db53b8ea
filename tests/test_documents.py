"""tipline.crawl.documents: the guide's text read out of HTML, TXT, PDF, DOCX, ODT and EPUB,
found by keyword and by TLSH against a bank of the plain text; every hostile document (too
large, encrypted, zip and entity bombs, external entities, malformed, wrong Content-Type) is a
per-item error or warning, never an exception. Texts are benign stand-ins."""

from __future__ import annotations

import hashlib
import io
import time
import zipfile
from html import escape

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hst

from doc_builders import (
    BILLION_LAUGHS,
    EXTERNAL_ENTITY,
    docx_xml,
    encrypt_pdf,
    make_docx,
    make_epub,
    make_odt,
    make_pdf,
    zip_with,
)
from guide_texts import ASSEMBLY_GUIDE, ASSEMBLY_GUIDE_REPOST, KEYWORDS, RECIPE
from tipline.banks.bank import Bank, Entry
from tipline.crawl.documents import DocumentLimits, analyse_document, document_kind
from tipline.index.bank_index import BankIndex
from tipline.provenance.keywords import KeywordList, KeywordMatcher
from tipline.signals.tlsh import hash_text
from tipline.signals.types import TLSH

MATCHER = KeywordMatcher(KeywordList.parse("\n".join(KEYWORDS)))
BANKED = hash_text(ASSEMBLY_GUIDE).signal
assert BANKED is not None
BANK = BankIndex.build(
    [Bank("GUIDES")], [Entry("GUIDES", "tlsh", BANKED, label="DEMO-benign-stand-in", id=1)]
)
URL = "http://127.0.0.1/forum/guide"


def html_page(text: str, title: str = "Forum thread") -> bytes:
    paras = "".join(f"<p>{escape(line)}</p>\n" for line in text.splitlines())
    return (
        f"<!DOCTYPE html><html><head><title>{escape(title)}</title>"
        "<style>p { color: teal } .bluebird-free {}</style>"
        "<script>var teapot = 'not page text'; document.write('x')</script></head>"
        f"<body><nav>Home</nav><article>{paras}</article></body></html>"
    ).encode()


def pdf_of(text: str, pages: int = 3) -> bytes:
    lines = text.splitlines()
    per = -(-len(lines) // pages)
    return make_pdf(["\n".join(lines[i : i + per]) for i in range(0, len(lines), per)], "Guide")


FORMATS = {
    "html": (lambda t: html_page(t), "text/html; charset=utf-8"),
    "text": (lambda t: t.encode("utf-8"), "text/plain"),
    "pdf": (pdf_of, "application/pdf"),
    "docx": (
        lambda t: make_docx(t, "Guide"),
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ),
    "odt": (lambda t: make_odt(t, "Guide"), "application/vnd.oasis.opendocument.text"),
    "epub": (
        lambda t: make_epub(t.split("\n\n"), "Guide"),
        "application/epub+zip",
    ),
}


def tlsh_matches(found: object) -> list[int]:
    rec = found.record()  # type: ignore[attr-defined]
    return [m.entry_id for m in BANK.match(rec) if m.signal_type == "tlsh"]


# --------------------------------------------------------------------------- every format


@pytest.mark.parametrize("kind", FORMATS)
def test_a_reposted_guide_in_every_format_is_found_by_keyword_and_tlsh(kind: str) -> None:
    build, ctype = FORMATS[kind]
    data = build(ASSEMBLY_GUIDE_REPOST)
    found = analyse_document(data, ctype, URL, MATCHER)
    assert found.error is None, found.error
    assert found.kind == kind and found.warnings == []
    assert "cam lock a quarter turn clockwise" in " ".join(found.text.split())
    assert {h.term for h in found.keyword_hits} == set(KEYWORDS)
    assert found.flagged and found.findings and found.findings[0].signal == "keyword"
    assert found.sha256 == hashlib.sha256(data).hexdigest()
    assert found.md5 == hashlib.md5(data).hexdigest()
    assert found.tlsh is not None and found.tlsh_reason is None
    assert TLSH.distance(found.tlsh, BANKED) <= TLSH.default_threshold
    assert tlsh_matches(found) == [1]
    if kind != "text":
        assert found.title in ("Guide", "Forum thread")
    rec = found.record()
    assert rec.path == URL and rec.sha256 == found.sha256 and rec.tlsh == found.tlsh


@pytest.mark.parametrize("kind", FORMATS)
def test_an_unrelated_document_matches_nothing(kind: str) -> None:
    build, ctype = FORMATS[kind]
    found = analyse_document(build(RECIPE + "\n\n" + RECIPE.upper()), ctype, URL, MATCHER)
    assert found.error is None and found.keyword_hits == [] and not found.flagged
    assert found.tlsh is not None and tlsh_matches(found) == []


def test_page_text_leaves_out_scripts_styles_and_keeps_the_title() -> None:
    found = analyse_document(html_page("A short page about bluebird sightings."), "text/html", URL)
    assert found.title == "Forum thread"
    assert "not page text" not in found.text and "color" not in found.text
    assert found.text.splitlines() == ["Home", "A short page about bluebird sightings."]
    assert found.tlsh is None and found.tlsh_reason and "too short" in found.tlsh_reason
    assert found.keyword_hits == []  # no matcher given: no keyword pass


def test_keywords_in_the_url_and_title_count_too() -> None:
    page = html_page("Nothing of note here at all, only a long walk by the river.", "teapot-42")
    found = analyse_document(page, "text/html", "http://127.0.0.1/bluebird/", MATCHER)
    assert {(f.evidence["field"], f.evidence["text"][0]) for f in found.findings} == {
        ("url", "bluebird"),
        ("title", "teapot-42"),
    }


def test_charsets() -> None:
    text = "Crème brûlée for the bluebird café, with a pinch of salt and lemon zest on top."
    for data, ctype in (
        (text.encode("latin-1"), "text/plain; charset=ISO-8859-1"),
        (b"\xef\xbb\xbf" + text.encode(), "text/plain"),
        (text.encode("utf-16"), "text/plain"),
        (text.encode("cp1252"), "text/plain"),  # no charset, not UTF-8: cp1252
        (
            b'<html><head><meta charset="iso-8859-1"></head><body>'
            + text.encode("latin-1")
            + b"</body></html>",
            "text/html",
        ),
    ):
        found = analyse_document(data, ctype, URL, MATCHER)
        assert found.error is None and text in found.text, (ctype, found.text)
        assert [h.term for h in found.keyword_hits] == ["bluebird"]
    found = analyse_document(text.encode(), "text/plain; charset=nonsense-9", URL)
    assert text in found.text and any("unknown charset" in w for w in found.warnings)


# --------------------------------------------------------------------------- caps


def test_a_document_over_the_size_cap_is_refused_unread() -> None:
    limits = DocumentLimits(max_bytes=1000)
    found = analyse_document(b"bluebird " * 200, "text/plain", URL, MATCHER, limits)
    assert found.error and found.error.startswith("document_too_large:")
    assert found.text == "" and found.keyword_hits == [] and found.tlsh is None
    assert found.sha256 == hashlib.sha256(b"bluebird " * 200).hexdigest()  # still hashed


def test_text_is_cut_at_the_cap() -> None:
    limits = DocumentLimits(max_text_chars=500)
    found = analyse_document((ASSEMBLY_GUIDE * 3).encode(), "text/plain", URL, None, limits)
    assert len(found.text) == 500 and "text cut at 500 characters" in found.warnings


def test_a_pdf_with_more_pages_than_the_cap_is_read_up_to_it() -> None:
    data = make_pdf([f"Page {i} of the bluebird manual, nothing else." for i in range(8)])
    found = analyse_document(data, "application/pdf", URL, MATCHER, DocumentLimits(max_pages=3))
    assert found.error is None and found.pages == 8
    assert "only the first 3 of 8 pages read" in found.warnings
    assert "Page 2 of" in found.text and "Page 3 of" not in found.text
    assert found.keyword_hits[0].count == 3


def test_encrypted_pdfs() -> None:
    plain = pdf_of(ASSEMBLY_GUIDE)
    locked = analyse_document(encrypt_pdf(plain, "secret"), "application/pdf", URL, MATCHER)
    assert locked.error and locked.error.startswith("encrypted_document:")
    assert locked.text == "" and locked.tlsh is None
    # owner-only protection (an empty user password) opens: the text is read
    open_ = analyse_document(encrypt_pdf(plain, ""), "application/pdf", URL, MATCHER)
    assert open_.error is None and "bluebird" in open_.text
    assert any("encrypted" in w for w in open_.warnings)


def test_zip_bombs_are_refused() -> None:
    # one member inflating 40 MiB of spaces from a few KiB: over the ratio
    bomb = make_docx("x", document_xml=docx_xml("bluebird") + " " * (40 << 20))
    found = analyse_document(bomb, "application/octet-stream", URL, MATCHER)
    assert found.kind == "docx" and found.error and found.error.startswith("zip_bomb:")
    # over the per-member cap, and too many members
    big = make_docx(ASSEMBLY_GUIDE * 4)
    found = analyse_document(big, "", URL, None, DocumentLimits(max_member_bytes=4096))
    assert found.error and found.error.startswith("zip_bomb:") and "inflates" in found.error
    many = make_epub([f"Chapter {i} text." for i in range(60)])
    found = analyse_document(many, "", URL, None, DocumentLimits(max_members=20))
    assert found.error and found.error.startswith("zip_bomb:") and "members" in found.error
    # all members together over the total cap
    found = analyse_document(
        make_epub([ASSEMBLY_GUIDE] * 6), "", URL, None, DocumentLimits(max_inflated_bytes=8000)
    )
    assert found.error and found.error.startswith("zip_bomb:")


@pytest.mark.parametrize("prolog", [BILLION_LAUGHS, EXTERNAL_ENTITY])
def test_entity_bombs_and_external_entities_are_refused(prolog: str) -> None:
    doc = make_docx(
        "x",
        document_xml=docx_xml("bluebird &lol3; teapot-42", prolog)
        if prolog is BILLION_LAUGHS
        else docx_xml("bluebird &xxe;", prolog),
    )
    found = analyse_document(doc, "", URL, MATCHER)
    assert found.error and found.error.startswith("unsafe_xml:"), found.error
    assert "lollol" not in found.text and found.keyword_hits == []


def test_malformed_documents_are_item_errors() -> None:
    guide_pdf = pdf_of(ASSEMBLY_GUIDE)
    docx = make_docx(ASSEMBLY_GUIDE)
    cases = {
        "truncated pdf": (guide_pdf[: len(guide_pdf) // 3], "application/pdf"),
        "pdf header only": (b"%PDF-1.7\n", "application/pdf"),
        "truncated docx": (docx[: len(docx) // 2], ""),
        "docx with broken xml": (make_docx("", document_xml="<w:document><w:body>"), ""),
        "docx without document.xml": (zip_with([("word/document.xml/", b"")]), ""),
        "zip of nothing known": (zip_with([("a.txt", "hello")]), "application/zip"),
        "binary": (bytes(range(256)) * 4, "application/octet-stream"),
        "empty": (b"", "text/plain"),
    }
    for name, (data, ctype) in cases.items():
        found = analyse_document(data, ctype, URL, MATCHER)
        assert found.error, name
        code = found.error.split(":")[0]
        assert code in {
            "corrupt_document",
            "unsupported_document",
            "empty_document",
        }, (name, found.error)


def test_one_bad_epub_chapter_leaves_the_others() -> None:
    epub = make_epub(["First chapter about the bluebird.", "Second chapter, teapot-42."])
    buf = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(epub)) as src, zipfile.ZipFile(buf, "w") as dst:
        for info in src.infolist():
            if info.filename.endswith("ch01.xhtml"):
                continue  # named in the spine, missing from the archive
            dst.writestr(info, src.read(info))
    found = analyse_document(buf.getvalue(), "application/epub+zip", URL, MATCHER)
    assert found.error is None and "First chapter" in found.text
    assert [h.term for h in found.keyword_hits] == ["bluebird"]


def test_the_bytes_decide_the_kind_and_a_wrong_content_type_is_a_warning() -> None:
    pdf = pdf_of(ASSEMBLY_GUIDE)
    found = analyse_document(pdf, "text/html", URL, MATCHER)
    assert found.kind == "pdf" and found.error is None
    assert found.warnings == ["Content-Type says text/html, content is pdf"]
    assert document_kind(make_odt("a\nb"), "application/zip")[0] == "odt"
    assert document_kind(b"<p>fragment</p>", "text/html") == ("html", None)
    assert document_kind(b"plain words", "text/plain") == ("text", None)
    assert document_kind(b"<html><body>x</body></html>", "text/plain") == ("html", None)


# --------------------------------------------------------------------------- hostile input


def _assert_sane(found: object) -> None:
    f = found  # the answer is always complete: a kind, hashes, an error or text
    assert f.kind  # type: ignore[attr-defined]
    assert len(f.sha256) == 64  # type: ignore[attr-defined]
    assert f.error is None or ":" in f.error  # type: ignore[attr-defined]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hst.binary(max_size=4096), hst.sampled_from([c for _, c in FORMATS.values()] + [""]))
def test_random_bytes_never_raise(data: bytes, ctype: str) -> None:
    _assert_sane(analyse_document(data, ctype, URL, MATCHER))


_SEEDS = [
    pdf_of(ASSEMBLY_GUIDE),
    make_docx(ASSEMBLY_GUIDE),
    make_odt(ASSEMBLY_GUIDE),
    make_epub([ASSEMBLY_GUIDE, RECIPE]),
    html_page(ASSEMBLY_GUIDE),
]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    hst.sampled_from(range(len(_SEEDS))),
    hst.lists(hst.tuples(hst.integers(0, 1 << 20), hst.integers(0, 255)), max_size=12),
    hst.one_of(hst.none(), hst.integers(0, 1 << 20)),
)
def test_mutated_documents_never_raise(
    seed: int, flips: list[tuple[int, int]], cut: int | None
) -> None:
    data = bytearray(_SEEDS[seed])
    for pos, value in flips:
        data[pos % len(data)] = value
    if cut is not None:
        data = data[: max(1, cut % (len(data) + 1))]
    _assert_sane(analyse_document(bytes(data), "", URL, MATCHER))


def test_markup_that_makes_the_html_parser_quadratic_is_stopped_at_the_time_cap() -> None:
    # 100,000 unclosed comments: html.parser searches each one to the end of the page
    bomb = b"<html><body><p>bluebird</p>" + b"<!--" * 100_000
    start = time.monotonic()
    found = analyse_document(bomb, "text/html", URL, MATCHER, DocumentLimits(max_seconds=0.5))
    assert time.monotonic() - start < 5
    assert found.error is None and "text extraction stopped after 0.5 s" in found.warnings
    assert [h.term for h in found.keyword_hits] == ["bluebird"]  # what was read is kept
