"""What an HTML page links to, in canonical form: pages to follow and media to hash (the
crawler's frontier, and the media of an evidence capture: one extractor for both).

Pages are hostile input. :func:`extract` reads HTML with the standard library's tolerant
``html.parser`` (malformed markup gives what could be read, never an exception), in bounded
chunks and time, and returns at most ``max_links`` distinct links:

- ``<a href>``: a page (``via="link"``), or ``next`` with ``rel="next"``; an ``<a>`` that wraps
  an ``<img>`` is a thumbnail's link: to a media file it is the full size (``via="full"``,
  hashed beside the thumbnail), to a page it is ``via="thumb"`` (a viewer page on a media
  host is followed one hop outside the scope);
- ``<img src|data-src|srcset>``, ``<video src|poster>``, ``<source src|srcset>``, ``<embed src>``,
  ``<meta property="og:image|og:video">``, ``<link rel="next">``;
- links to archives, model files and documents by their path's extension.

``<base href>`` sets the base (an http(s) one only); ``javascript:``, ``data:``, ``file:``,
``mailto:`` and other schemes are counted in ``ignored``, never followed.

:func:`canonical_url` is w3lib's ``canonicalize_url`` (query sorted, fragment dropped,
escapes normalised) plus the default port dropped; :func:`url_key` is its SHA-256, the
frontier's unique key.
"""

from __future__ import annotations

import codecs
import hashlib
import re
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Literal
from urllib.parse import urljoin, urlsplit, urlunsplit

from w3lib.url import canonicalize_url

__all__ = ["Link", "PageLinks", "canonical_url", "extract", "link_kind", "url_key"]

#: Longest URL the crawler keeps (longer ones are hostile or broken).
MAX_URL_LENGTH = 4096
_PARSE_CHUNK = 64 * 1024
_DEFAULT_PORTS = {"http": "80", "https": "443"}
_SCHEME_RE = re.compile(r"^\s*([A-Za-z][A-Za-z0-9+.-]*):")

MEDIA_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".jpe",
    ".png",
    ".gif",
    ".webp",
    ".bmp",
    ".tif",
    ".tiff",
    ".heic",
    ".heif",
    ".avif",
    ".mp4",
    ".m4v",
    ".mov",
    ".webm",
    ".mkv",
    ".avi",
    ".mpg",
    ".mpeg",
    ".3gp",
)
ARCHIVE_EXTENSIONS = (".zip", ".tar", ".tgz", ".tar.gz", ".tar.bz2", ".tar.xz", ".7z", ".rar")
MODEL_EXTENSIONS = (".safetensors", ".ckpt", ".gguf", ".pt", ".pth")
DOCUMENT_EXTENSIONS = (".pdf", ".txt", ".docx", ".odt", ".epub", ".rtf")

_OG_MEDIA = frozenset(
    {
        "og:image",
        "og:image:url",
        "og:image:secure_url",
        "twitter:image",
        "og:video",
        "og:video:url",
        "og:video:secure_url",
    }
)

Kind = Literal["page", "media", "archive", "model", "document"]


def canonical_url(url: str) -> str | None:
    """The canonical form of an absolute http(s) URL, or None when it is not one."""
    url = url.strip()
    if not url or len(url) > MAX_URL_LENGTH:
        return None
    try:
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            return None
        if parts.username is not None or parts.password is not None:
            return None
        port = parts.port  # raises ValueError on a bad port
        canon = canonicalize_url(url)
        c = urlsplit(canon)
    except (ValueError, UnicodeError):
        return None
    netloc = c.netloc.lower()
    if port is not None and str(port) == _DEFAULT_PORTS.get(c.scheme, ""):
        netloc = netloc.rsplit(":", 1)[0]
    out = urlunsplit((c.scheme, netloc, c.path or "/", c.query, ""))
    return out if len(out) <= MAX_URL_LENGTH else None


def url_key(canonical: str) -> str:
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def link_kind(url: str, is_model_link: object = None) -> Kind:
    """What a URL's path says it is (the bytes decide later: a "page" that is an image is
    hashed as media)."""
    path = urlsplit(url).path.lower()
    if path.endswith(MEDIA_EXTENSIONS):
        return "media"
    if path.endswith(ARCHIVE_EXTENSIONS):
        return "archive"
    if path.endswith(MODEL_EXTENSIONS) or (callable(is_model_link) and is_model_link(url)):
        return "model"
    if path.endswith(DOCUMENT_EXTENSIONS):
        return "document"
    return "page"


@dataclass(frozen=True, slots=True)
class Link:
    url: str
    kind: Kind
    #: link, next, thumb, full, img, srcset, video, source, og, base...
    via: str


@dataclass(slots=True)
class PageLinks:
    links: list[Link] = field(default_factory=list)
    #: distinct links over ``max_links``, not returned
    dropped: int = 0
    #: javascript:, data:, file:, mailto: ... links seen (never followed)
    ignored: int = 0
    #: parsing stopped at the time limit
    truncated: bool = False


class _Extractor(HTMLParser):
    def __init__(self, page_url: str, limit: int, is_model_link: object) -> None:
        super().__init__(convert_charrefs=True)
        self.base = page_url
        self.base_set = False
        self.limit = limit
        self.is_model_link = is_model_link
        self.out = PageLinks()
        self.seen: set[str] = set()
        #: the <a> we are inside: (raw href, rel), to tell thumbnails' links
        self.anchor: tuple[str, str] | None = None
        self.anchor_wraps_img = False

    def _add(self, raw: str | None, via: str, kind: Kind | None = None) -> None:
        if not raw:
            return
        raw = raw.strip()
        if not raw:
            return
        m = _SCHEME_RE.match(raw)
        scheme = m.group(1).lower() if m else ""
        if scheme and scheme not in ("http", "https"):
            self.out.ignored += 1
            return
        try:
            absolute = urljoin(self.base, raw)
        except ValueError:
            self.out.ignored += 1
            return
        canon = canonical_url(absolute)
        if canon is None:
            self.out.ignored += 1
            return
        if canon in self.seen:
            return
        self.seen.add(canon)
        if len(self.out.links) >= self.limit:
            self.out.dropped += 1
            return
        self.out.links.append(Link(canon, kind or link_kind(canon, self.is_model_link), via))

    def _srcset(self, value: str | None) -> None:
        for candidate in (value or "").split(","):
            parts = candidate.split()
            if parts:
                self._add(parts[0], "srcset")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k.lower(): (v or "") for k, v in attrs}
        if tag == "base" and not self.base_set:
            href = a.get("href", "").strip()
            try:
                candidate = urljoin(self.base, href) if href else ""
            except ValueError:
                candidate = ""
            if canonical_url(candidate) is not None:
                self.base = candidate
            self.base_set = True  # only the first <base> counts, as in browsers
        elif tag == "a":
            self._close_anchor()
            self.anchor = (a.get("href", ""), a.get("rel", "").lower())
            self.anchor_wraps_img = False
        elif tag == "img":
            self._add(a.get("src"), "img", "media")
            self._add(a.get("data-src"), "img", "media")
            self._srcset(a.get("srcset"))
            self._srcset(a.get("data-srcset"))
            if self.anchor is not None:
                self.anchor_wraps_img = True
        elif tag in ("video", "audio"):
            self._add(a.get("src"), "video", "media")
            self._add(a.get("poster"), "img", "media")
        elif tag == "embed":
            self._add(a.get("src"), "video", "media")
        elif tag == "source":
            self._add(a.get("src"), "source", "media")
            self._srcset(a.get("srcset"))
        elif tag == "meta":
            prop = (a.get("property") or a.get("name") or "").lower()
            if prop in _OG_MEDIA:
                self._add(a.get("content"), "og", "media")
        elif tag == "link":
            rel = a.get("rel", "").lower().split()
            if "next" in rel:
                self._add(a.get("href"), "next")
            elif "image_src" in rel:
                self._add(a.get("href"), "og", "media")

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self._close_anchor()

    def _close_anchor(self) -> None:
        if self.anchor is None:
            return
        href, rel = self.anchor
        self.anchor = None
        if self.anchor_wraps_img:
            try:
                kind = link_kind(urljoin(self.base, href.strip()), self.is_model_link)
            except ValueError:
                kind = "page"
            self._add(href, "full" if kind == "media" else "thumb")
        else:
            self._add(href, "next" if "next" in rel.split() else "link")

    def finish(self) -> None:
        self._close_anchor()


def charset(content_type: str) -> str:
    m = re.search(r"charset=([\w.:-]+)", content_type, re.I)
    if m:
        try:
            return codecs.lookup(m.group(1)).name
        except LookupError:
            pass
    return "utf-8"


def extract(
    html: bytes,
    page_url: str,
    *,
    max_links: int = 2000,
    content_type: str = "",
    max_seconds: float = 5.0,
    is_model_link: object = None,
) -> PageLinks:
    """The links of an HTML page (see the module docstring)."""
    parser = _Extractor(page_url, max_links, is_model_link)
    text = html.decode(charset(content_type), errors="replace")
    deadline = time.monotonic() + max_seconds
    try:
        for start in range(0, len(text), _PARSE_CHUNK):
            parser.feed(text[start : start + _PARSE_CHUNK])
            if time.monotonic() > deadline:
                parser.out.truncated = True
                break
    except (AssertionError, ValueError):  # html.parser on pathological markup
        pass
    # no close(): on unterminated markup it rescans the rest one character at a time
    parser.finish()
    return parser.out
