"""Guides and other text the crawler finds: the text read out of a document, keyword hits and a
TLSH of it, so a known guide is found by keyword and again when re-posted with small edits.

:func:`analyse_document` takes the bytes of one fetched document and never raises for what is
in them: a document too large, encrypted, malformed or built to exhaust memory (a zip bomb, an
XML entity bomb) gives ``DocumentFindings.error`` (``code: message``), a partial read gives
``warnings``, and the crawl goes on. Nothing in a document is executed or fetched: PDF actions,
links and embedded files are never followed, XML is parsed with defusedxml (no entities, no
DTDs, no external references).

Formats, told by their bytes first (a wrong Content-Type is a warning, not a wrong parse):

* HTML (the page text: ``<script>``, ``<style>``, ``<template>`` and ``<noscript>`` left out,
  block elements as line breaks, the ``<title>`` kept), via the standard library's tolerant
  ``html.parser``;
* plain text (BOM, then the Content-Type charset, then UTF-8, then cp1252);
* PDF, via pypdf: at most ``max_pages`` pages and ``max_seconds`` of extraction; an encrypted
  PDF is read when it opens with the empty password (owner-only protection), else refused;
* DOCX, ODT and EPUB: zip archives of XML, read with :mod:`zipfile` and defusedxml under strict
  caps (member count, each member's and the total inflated size, the compression ratio), since
  the registry readers for them inflate whole members with no cap of their own.

The text is cut at ``max_text_chars``. Its TLSH is of ``tipline.signals.tlsh.normalise_text``
of it, the form banks of guides are made with (``tipline.signals.tlsh.hash_text``).
"""

from __future__ import annotations

import codecs
import hashlib
import io
import logging
import posixpath
import re
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from xml.etree.ElementTree import Element

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from tipline.findings import Finding
from tipline.net.links import PageLinks, _Extractor
from tipline.provenance.keywords import KeywordHit, KeywordList, KeywordMatcher
from tipline.record import ItemRecord
from tipline.signals.tlsh import hash_text

log = logging.getLogger("tipline.crawl.documents")

__all__ = [
    "DocumentFindings",
    "DocumentLimits",
    "analyse_document",
    "document_kind",
]

MIB = 1 << 20


@dataclass(frozen=True, slots=True)
class DocumentLimits:
    """Caps on one document (each one hit is an error or a warning naming it)."""

    #: bytes of the document itself
    max_bytes: int = 64 * MIB
    #: characters of text kept (more: cut, with a warning)
    max_text_chars: int = 4_000_000
    #: PDF pages read (more: the first ones, with a warning)
    max_pages: int = 300
    #: seconds spent extracting text (PDF pages, zip members): the rest is left, with a warning
    max_seconds: float = 20.0
    #: zip containers (DOCX, ODT, EPUB): members, each member and all inflated, and the ratio
    #: of inflated to stored size beyond which a member is a zip bomb
    max_members: int = 2_000
    max_member_bytes: int = 32 * MIB
    max_inflated_bytes: int = 128 * MIB
    max_ratio: int = 200


DEFAULT_LIMITS = DocumentLimits()


@dataclass(slots=True)
class DocumentFindings:
    url: str
    content_type: str
    #: html | text | pdf | docx | odt | epub | unknown
    kind: str
    size: int
    sha256: str
    md5: str
    text: str = ""
    title: str | None = None
    #: PDF pages (all of them, read or not), EPUB chapters
    pages: int | None = None
    tlsh: str | None = None
    #: why there is no TLSH (too short, no text, an error)
    tlsh_reason: str | None = None
    keyword_hits: list[KeywordHit] = field(default_factory=list)
    #: one ``keyword`` finding per (category, field), as a scan's
    findings: list[Finding] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: ``code: message`` when the document could not be read (text may be partial or empty)
    error: str | None = None

    @property
    def flagged(self) -> bool:
        return bool(self.keyword_hits)

    def record(self) -> ItemRecord:
        """An item record for matching (``BankIndex.match``: sha256, md5, tlsh) and storage."""
        return ItemRecord(
            path=self.url,
            media_type=_MEDIA_TYPES.get(self.kind, self.content_type or "application/octet-stream"),
            size=self.size,
            md5=self.md5,
            sha256=self.sha256,
            tlsh=self.tlsh,
            errors=[self.error] if self.error else [],
            warnings=list(self.warnings),
            provenance=list(self.findings),
        )

    def to_json(self, include_text: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {
            "url": self.url,
            "content_type": self.content_type,
            "kind": self.kind,
            "size": self.size,
            "sha256": self.sha256,
            "md5": self.md5,
            "title": self.title,
            "pages": self.pages,
            "text_chars": len(self.text),
            "tlsh": self.tlsh,
            "tlsh_reason": self.tlsh_reason,
            "keywords": [
                {"category": h.category, "count": h.count}
                | ({"term": h.term} if include_text else {})
                for h in self.keyword_hits
            ],
            "warnings": list(self.warnings),
            "error": self.error,
        }
        if include_text:
            d["text"] = self.text
        return d


_MEDIA_TYPES = {
    "html": "text/html",
    "text": "text/plain",
    "pdf": "application/pdf",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "odt": "application/vnd.oasis.opendocument.text",
    "epub": "application/epub+zip",
}
_BY_CONTENT_TYPE = {v: k for k, v in _MEDIA_TYPES.items()} | {
    "application/xhtml+xml": "html",
    "application/x-pdf": "pdf",
    "text/markdown": "text",
    "text/csv": "text",
}


class _DocumentError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")


# --------------------------------------------------------------------------- what it is


def _sniff(data: bytes) -> str:
    head = data[:1024]
    if head.startswith(b"%PDF-") or b"%PDF-" in head[:1024]:
        return "pdf"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    low = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if low.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in low:
        return "html"
    if b"\x00" in head and not head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "unknown"
    return "text"


def document_kind(data: bytes, content_type: str) -> tuple[str, str | None]:
    """What a document is, by its bytes (then by its Content-Type), and a warning where the two
    disagree."""
    declared = _BY_CONTENT_TYPE.get(content_type.split(";")[0].strip().lower())
    sniffed = _sniff(data)
    if sniffed == "zip":
        sniffed = _zip_kind(data) or "zip"
    # an HTML fragment without <html> is still the page the server sent
    kind = declared if sniffed == "text" and declared in ("html", "text") else sniffed
    warning = None
    if declared and declared != kind and not (declared == "text" and kind == "html"):
        warning = f"Content-Type says {content_type.split(';')[0].strip()}, content is {kind}"
    return kind, warning


def _zip_kind(data: bytes) -> str | None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = set(zf.namelist()[:5000])
            if "mimetype" in names:
                info = zf.getinfo("mimetype")
                if info.file_size <= 200:
                    mime = zf.read(info).decode("ascii", "replace").strip()
                    if mime == "application/epub+zip":
                        return "epub"
                    if mime.startswith("application/vnd.oasis.opendocument.text"):
                        return "odt"
            if "word/document.xml" in names:
                return "docx"
    except Exception:  # hostile bytes: any failure to read it means "not one of ours"
        return None
    return None


# --------------------------------------------------------------------------- the entry point


def _new_findings(data: bytes, content_type: str, url: str) -> DocumentFindings:
    """The findings of a document not read yet: its size and digests."""
    return DocumentFindings(
        url=url,
        content_type=content_type,
        kind="unknown",
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        md5=hashlib.md5(data, usedforsecurity=False).hexdigest(),
    )


def analyse_document(
    data: bytes,
    content_type: str,
    url: str,
    keywords: KeywordMatcher | KeywordList | None = None,
    limits: DocumentLimits = DEFAULT_LIMITS,
) -> DocumentFindings:
    """Text, keyword hits and TLSH of one document; every problem in it is a per-item error or
    a warning in the answer, never an exception."""
    out = _new_findings(data, content_type, url)
    try:
        if len(data) > limits.max_bytes:
            raise _DocumentError(
                "document_too_large", f"{len(data)} bytes, the limit is {limits.max_bytes}"
            )
        if not data:
            raise _DocumentError("empty_document", "no bytes")
        out.kind, warning = document_kind(data, content_type)
        if warning:
            out.warnings.append(warning)
        reader = _READERS.get(out.kind)
        if reader is None:
            raise _DocumentError(
                "unsupported_document", f"not a document Tipline reads ({out.kind})"
            )
        reader(data, content_type, limits, out)
    except _DocumentError as err:
        out.error = str(err)
    except RecursionError:
        out.error = "corrupt_document: nested too deeply to read"
    except MemoryError:
        out.error = "document_too_large: out of memory reading it"
    except Exception as err:  # hostile input: a parser's own failure is this item's error
        log.debug("document %s could not be read", url[:200], exc_info=True)
        out.error = f"corrupt_document: {type(err).__name__}: {str(err)[:200]}"
    if len(out.text) > limits.max_text_chars:
        out.text = out.text[: limits.max_text_chars]
        out.warnings.append(f"text cut at {limits.max_text_chars} characters")
    _finish(out, keywords)
    return out


def _finish(out: DocumentFindings, keywords: KeywordMatcher | KeywordList | None) -> None:
    if out.text.strip():
        result = hash_text(out.text)
        out.tlsh, out.tlsh_reason = result.signal, result.reason
    else:
        out.tlsh_reason = "no text" if not out.error else "not read"
    if keywords is None:
        return
    matcher = keywords if isinstance(keywords, KeywordMatcher) else KeywordMatcher(keywords)
    fields = [("url", out.url), ("title", out.title or ""), ("text", out.text)]
    out.keyword_hits = matcher.find("\n".join(v for _, v in fields if v))
    out.findings = matcher.findings(fields)


# --------------------------------------------------------------------------- text and HTML


_CHARSET = re.compile(r"charset=[\"']?([\w.:-]+)", re.I)
_META_CHARSET = re.compile(rb"<meta[^>]+charset=[\"']?([\w.:-]+)", re.I)


def _decode(data: bytes, content_type: str, out: DocumentFindings) -> str:
    for bom, enc in (
        (codecs.BOM_UTF8, "utf-8"),
        (codecs.BOM_UTF16_LE, "utf-16-le"),
        (codecs.BOM_UTF16_BE, "utf-16-be"),
    ):
        if data.startswith(bom):
            return data[len(bom) :].decode(enc, "replace")
    m = _CHARSET.search(content_type)
    charset = m.group(1) if m else None
    if charset is None and out.kind == "html":
        meta = _META_CHARSET.search(data[:4096])
        charset = meta.group(1).decode("ascii", "replace") if meta else None
    if charset:
        try:
            return data.decode(codecs.lookup(charset).name, "replace")
        except LookupError:
            out.warnings.append(f"unknown charset {charset[:40]!r}, read as UTF-8")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace")


def _read_text(
    data: bytes, content_type: str, limits: DocumentLimits, out: DocumentFindings
) -> None:
    out.text = _decode(data, content_type, out)


_SKIP = {"script", "style", "template", "noscript", "svg", "head"}
_BLOCK = {
    "p", "div", "br", "li", "ul", "ol", "tr", "td", "th", "table", "section", "article",
    "h1", "h2", "h3", "h4", "h5", "h6", "pre", "blockquote", "header", "footer", "hr", "dd",
    "dt", "main", "nav", "aside", "figure", "figcaption",
}  # fmt: skip


class _Stopped(Exception):
    """The deadline passed while the parser was working."""


class _TextParser(HTMLParser):
    """Visible text of a page; tolerant of any markup (the standard library's parser).

    html.parser is quadratic on some hostile markup (100,000 unclosed ``<!--``: each one
    searched to the end of the page), calling ``handle_data`` at every step, so the deadline
    is checked there and stops the parse."""

    def __init__(self, max_chars: int, deadline: float) -> None:
        super().__init__(convert_charrefs=True)
        self.deadline = deadline
        self.parts: list[str] = []
        self.chars = 0
        self.max_chars = max_chars
        self.skip = 0
        self.in_title = False
        self.title: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self.in_title = True
        elif tag in _SKIP:
            self.skip += 1
        elif tag in _BLOCK:
            self.parts.append("\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self.in_title = False
        elif tag in _SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag in _BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if time.monotonic() > self.deadline:
            raise _Stopped
        if self.in_title:
            if sum(map(len, self.title)) < 1000:
                self.title.append(data)
            return
        if self.skip or self.chars > self.max_chars:
            return
        self.parts.append(data)
        self.chars += len(data)


#: seconds one HTML text extraction may take when the caller gives no deadline
HTML_SECONDS = 10.0


def html_text(html: str, max_chars: int, deadline: float | None = None) -> tuple[str, str | None]:
    """Visible text and title of an HTML document (fed in chunks; what was read by the
    ``deadline``, default ``HTML_SECONDS`` from now, when it passes)."""
    p = _TextParser(max_chars, deadline or time.monotonic() + HTML_SECONDS)
    try:
        for i in range(0, len(html), 65536):
            p.feed(html[i : i + 65536])
            if p.chars > max_chars or time.monotonic() > p.deadline:
                break
        p.close()
    except _Stopped:
        pass
    return _text_of(p)


def _text_of(p: _TextParser) -> tuple[str, str | None]:
    text = re.sub(r"[ \t\r\f\v]+", " ", "".join(p.parts))
    text = re.sub(r" *\n[\n ]*", "\n", text).strip()
    title = re.sub(r"\s+", " ", "".join(p.title)).strip() or None
    return text, title


class _PageParser(_Extractor):
    """One pass over a crawled page: its links (:class:`tipline.net.links.PageLinks`) and its
    visible text (what :func:`html_text` gives), so the page is parsed once, not twice."""

    def __init__(
        self, page_url: str, limit: int, is_model_link: object, max_chars: int, deadline: float
    ) -> None:
        super().__init__(page_url, limit, is_model_link)
        self.text = _TextParser(max_chars, deadline)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        super().handle_starttag(tag, attrs)
        self.text.handle_starttag(tag, attrs)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        # the links as html.parser's default (start, then end), the text as _TextParser's
        _Extractor.handle_starttag(self, tag, attrs)
        _Extractor.handle_endtag(self, tag)
        self.text.handle_startendtag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        super().handle_endtag(tag)
        self.text.handle_endtag(tag)

    def handle_data(self, data: str) -> None:
        self.text.handle_data(data)


#: seconds the links of one page may take (as :func:`tipline.net.links.extract`)
LINK_SECONDS = 5.0


def analyse_page(
    data: bytes,
    content_type: str,
    url: str,
    keywords: KeywordMatcher | KeywordList | None = None,
    *,
    max_links: int = 2000,
    is_model_link: object = None,
    limits: DocumentLimits = DEFAULT_LIMITS,
) -> tuple[PageLinks, DocumentFindings] | None:
    """An HTML page's links and its text's findings (keywords, TLSH) from **one** parse; the
    same as :func:`tipline.net.links.extract` and :func:`analyse_document` each give. None when
    the bytes are not an HTML document :func:`analyse_document` would read as such (too large,
    empty, another kind): then the caller does both as before."""
    if not data or len(data) > limits.max_bytes:
        return None
    kind, warning = document_kind(data, content_type)
    if kind != "html":
        return None  # not hashed here: the caller's analyse_document hashes it, once
    out = _new_findings(data, content_type, url)
    out.kind = kind
    if warning:
        out.warnings.append(warning)
    start = time.monotonic()
    deadline = start + limits.max_seconds
    parser = _PageParser(url, max_links, is_model_link, limits.max_text_chars, deadline)
    html = _decode(data, content_type, out)
    link_deadline = start + LINK_SECONDS
    try:
        for i in range(0, len(html), 65536):
            parser.feed(html[i : i + 65536])
            if time.monotonic() > link_deadline:
                parser.out.truncated = True
                break
        else:
            parser.close()
    except _Stopped:
        parser.out.truncated = True
    except (AssertionError, ValueError):  # html.parser on pathological markup
        pass
    parser.finish()
    out.text, out.title = _text_of(parser.text)
    if parser.out.truncated:
        out.warnings.append(f"text extraction stopped after {time.monotonic() - start:.1f} s")
    if len(out.text) > limits.max_text_chars:
        out.text = out.text[: limits.max_text_chars]
        out.warnings.append(f"text cut at {limits.max_text_chars} characters")
    _finish(out, keywords)
    return parser.out, out


def _read_html(
    data: bytes, content_type: str, limits: DocumentLimits, out: DocumentFindings
) -> None:
    deadline = time.monotonic() + limits.max_seconds
    out.text, out.title = html_text(
        _decode(data, content_type, out), limits.max_text_chars, deadline
    )
    if time.monotonic() > deadline:
        out.warnings.append(f"text extraction stopped after {limits.max_seconds:g} s")


# --------------------------------------------------------------------------- PDF


def _read_pdf(
    data: bytes, content_type: str, limits: DocumentLimits, out: DocumentFindings
) -> None:
    from pypdf import PdfReader
    from pypdf.errors import FileNotDecryptedError, PdfReadError

    # a hostile PDF's complaints ("EOF marker not found") are this item's, not the log's
    logging.getLogger("pypdf").setLevel(logging.CRITICAL)

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
    except PdfReadError as err:
        raise _DocumentError("corrupt_document", f"not a readable PDF: {str(err)[:200]}") from None
    if reader.is_encrypted:
        try:
            ok = reader.decrypt("")
        except (NotImplementedError, PdfReadError, FileNotDecryptedError, ValueError) as err:
            raise _DocumentError(
                "encrypted_document", f"PDF encryption not readable: {err}"
            ) from None
        if not ok:
            raise _DocumentError("encrypted_document", "the PDF needs a password to open")
        out.warnings.append("PDF is encrypted with an empty user password (read)")
    total = len(reader.pages)
    out.pages = total
    meta_title = None
    try:
        meta = reader.metadata
        meta_title = str(meta.title) if meta is not None and meta.title else None
    except Exception:  # broken metadata: the text is what matters
        out.warnings.append("PDF metadata unreadable")
    out.title = meta_title[:1000] if meta_title else None
    deadline = time.monotonic() + limits.max_seconds
    parts: list[str] = []
    chars = 0
    read = 0
    for i in range(min(total, limits.max_pages)):
        if time.monotonic() > deadline:
            out.warnings.append(f"text extraction stopped after {limits.max_seconds:g} s")
            break
        try:
            page_text = reader.pages[i].extract_text() or ""
        except Exception as err:  # one bad page: the others are still read
            out.warnings.append(f"page {i + 1} unreadable: {type(err).__name__}")
            continue
        read += 1
        parts.append(page_text)
        chars += len(page_text)
        if chars > limits.max_text_chars:
            break
    if total > limits.max_pages:
        out.warnings.append(f"only the first {limits.max_pages} of {total} pages read")
    if total and not read:
        raise _DocumentError("corrupt_document", "no page of the PDF could be read")
    out.text = "\n".join(parts)


# --------------------------------------------------------------------------- zip containers


class _Zip:
    """A zip container read under the caps: every member inflated is counted."""

    def __init__(self, data: bytes, limits: DocumentLimits) -> None:
        try:
            self.zf = zipfile.ZipFile(io.BytesIO(data))
            infos = self.zf.infolist()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
            raise _DocumentError("corrupt_document", f"not a readable zip: {err}") from None
        if len(infos) > limits.max_members:
            raise _DocumentError(
                "zip_bomb", f"{len(infos)} members, the limit is {limits.max_members}"
            )
        self.infos = {i.filename: i for i in infos}
        self.limits = limits
        self.inflated = 0
        self.deadline = time.monotonic() + limits.max_seconds

    def names(self) -> list[str]:
        return list(self.infos)

    def read(self, name: str) -> bytes:
        info = self.infos.get(name)
        if info is None:
            raise _DocumentError("corrupt_document", f"member {name[:100]!r} missing")
        if info.flag_bits & 0x1:
            raise _DocumentError("encrypted_document", f"member {name[:100]!r} is encrypted")
        cap = min(self.limits.max_member_bytes, self.limits.max_inflated_bytes - self.inflated)
        if info.file_size > cap:
            raise _DocumentError(
                "zip_bomb", f"member {name[:100]!r} inflates to {info.file_size} bytes"
            )
        if (
            info.compress_size
            and info.file_size / info.compress_size > self.limits.max_ratio
            and (info.file_size > MIB)
        ):
            raise _DocumentError(
                "zip_bomb",
                f"member {name[:100]!r} inflates {info.file_size // info.compress_size}x",
            )
        try:
            with self.zf.open(info) as f:
                raw = f.read(cap + 1)  # the header's size may lie: read no more than the cap
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as err:
            raise _DocumentError("corrupt_document", f"member {name[:100]!r}: {err}") from None
        if len(raw) > cap:
            raise _DocumentError("zip_bomb", f"member {name[:100]!r} inflates past {cap} bytes")
        self.inflated += len(raw)
        return raw

    def xml(self, name: str) -> Element:
        try:
            return SafeET.fromstring(self.read(name))
        except DefusedXmlException as err:
            raise _DocumentError("unsafe_xml", f"{name[:100]}: {type(err).__name__}") from None
        except SafeET.ParseError as err:
            raise _DocumentError("corrupt_document", f"{name[:100]}: {err}") from None

    def late(self) -> bool:
        return time.monotonic() > self.deadline


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _paragraphs(
    root: Element, para: set[str], text_tags: set[str], breaks: set[str]
) -> Iterator[str]:
    """Text of each paragraph element, in document order (iteratively: no recursion limit)."""
    for el in root.iter():
        if _local(el.tag) not in para:
            continue
        buf: list[str] = []
        for sub in el.iter():
            name = _local(sub.tag)
            if name in text_tags and sub.text:
                buf.append(sub.text)
            elif name in breaks:
                buf.append(" ")
        yield "".join(buf)


def _read_docx(
    data: bytes, content_type: str, limits: DocumentLimits, out: DocumentFindings
) -> None:
    z = _Zip(data, limits)
    root = z.xml("word/document.xml")
    out.text = "\n".join(_paragraphs(root, {"p"}, {"t"}, {"tab", "br", "cr"}))
    try:
        core = z.xml("docProps/core.xml") if "docProps/core.xml" in z.infos else None
    except _DocumentError as err:
        out.warnings.append(str(err))
        core = None
    if core is not None:
        for el in core.iter():
            if _local(el.tag) == "title" and el.text:
                out.title = el.text.strip()[:1000] or None


def _odf_text(el: Element) -> str:
    """Text of an ODF paragraph: its text and its spans', tails included, iteratively."""
    buf: list[str] = []
    stack: list[tuple[Element, bool]] = [(el, False)]
    while stack:
        node, done = stack.pop()
        if done:
            if node is not el and node.tail:
                buf.append(node.tail)
            continue
        name = _local(node.tag)
        if name in ("tab", "s", "line-break"):
            buf.append(" ")
        elif node.text:
            buf.append(node.text)
        stack.append((node, True))
        stack.extend((child, False) for child in reversed(list(node)))
    return "".join(buf)


def _read_odt(
    data: bytes, content_type: str, limits: DocumentLimits, out: DocumentFindings
) -> None:
    z = _Zip(data, limits)
    root = z.xml("content.xml")
    paras = [_odf_text(el) for el in root.iter() if _local(el.tag) in ("p", "h")]
    out.text = "\n".join(paras)
    if "meta.xml" in z.infos:
        try:
            for el in z.xml("meta.xml").iter():
                if _local(el.tag) == "title" and el.text:
                    out.title = el.text.strip()[:1000] or None
        except _DocumentError as err:
            out.warnings.append(str(err))


def _read_epub(
    data: bytes, content_type: str, limits: DocumentLimits, out: DocumentFindings
) -> None:
    z = _Zip(data, limits)
    chapters = _epub_spine(z, out)
    parts: list[str] = []
    chars = 0
    for name in chapters:
        if z.late():
            out.warnings.append(f"text extraction stopped after {limits.max_seconds:g} s")
            break
        try:
            raw = z.read(name)
        except _DocumentError as err:
            if err.args[0].startswith("zip_bomb"):
                raise
            out.warnings.append(str(err))
            continue
        text, title = html_text(
            raw.decode("utf-8", "replace"), limits.max_text_chars - chars, z.deadline
        )
        out.title = out.title or title
        parts.append(text)
        chars += len(text)
        if chars > limits.max_text_chars:
            break
    out.pages = len(chapters)
    out.text = "\n".join(parts)


def _epub_spine(z: _Zip, out: DocumentFindings) -> list[str]:
    """Chapters in reading order (the OPF's spine), or every (X)HTML member by name."""
    try:
        container = z.xml("META-INF/container.xml")
        opf_path = next(
            (el.get("full-path") for el in container.iter() if _local(el.tag) == "rootfile"),
            None,
        )
        if opf_path:
            opf = z.xml(opf_path)
            base = posixpath.dirname(opf_path)
            items = {
                el.get("id", ""): el.get("href", "")
                for el in opf.iter()
                if _local(el.tag) == "item" and el.get("href")
            }
            for el in opf.iter():
                if _local(el.tag) == "title" and el.text and not out.title:
                    out.title = el.text.strip()[:1000] or None
            spine = [
                posixpath.normpath(posixpath.join(base, items[ref]))
                for el in opf.iter()
                if _local(el.tag) == "itemref" and (ref := el.get("idref")) in items
            ]
            found = [s for s in spine if s in z.infos]
            if found:
                return found
    except _DocumentError as err:
        if err.args[0].startswith(("zip_bomb", "unsafe_xml")):
            raise
        out.warnings.append(f"EPUB spine unreadable ({err}): chapters read by name")
    return sorted(n for n in z.names() if n.lower().endswith((".xhtml", ".html", ".htm")))


def _read_zip(
    data: bytes, content_type: str, limits: DocumentLimits, out: DocumentFindings
) -> None:
    raise _DocumentError(
        "unsupported_document", "a zip archive that is not a readable DOCX, ODT or EPUB"
    )


_READERS = {
    "zip": _read_zip,
    "text": _read_text,
    "html": _read_html,
    "pdf": _read_pdf,
    "docx": _read_docx,
    "odt": _read_odt,
    "epub": _read_epub,
}
