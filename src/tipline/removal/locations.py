"""Locations: a reported URL in canonical form with its registrable domain (docs/hosting.md).

Every URL is hostile input. :func:`parse_location` either returns a :class:`Location` or raises
:class:`InvalidLocationError` with a one-line reason - nothing else.

Canonical form (two spellings of the same resource give the same ``canonical_url``):

- scheme and host lower-case; international names in IDNA (punycode, UTS 46 mapping);
  a trailing dot on the host dropped; IPv4 literals in dotted-quad form (``0x7f.1`` and
  ``2130706433`` are what a browser sends to ``127.0.0.1``), IPv6 literals compressed;
- the scheme's default port dropped, credentials (``user:pass@``) dropped;
- the fragment dropped (it never reaches the server);
- path: dot segments removed, percent-escapes upper-cased, escapes of unreserved characters
  decoded, other characters (spaces, non-ASCII as UTF-8) escaped; an empty path becomes ``/``;
- query: escapes normalised the same way but parameters kept in their order (some sites give
  ``?a=1&b=2`` and ``?b=2&a=1`` different meanings).

The registrable domain comes from the public suffix list bundled with ``tldextract`` (never
fetched, never cached on disk) with its private section on, so ``alice.github.io`` and
``bob.github.io`` are two sites. A host with no known suffix (``localhost``, an IP literal)
is its own registrable domain.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import unquote_to_bytes, urlsplit

import idna
import tldextract

from tipline.errors import TiplineError

__all__ = ["InvalidLocationError", "Location", "parse_location", "registrable_domain"]

#: Schemes a location may have; a URL without one is read as ``http://``.
SCHEMES = frozenset({"http", "https", "ftp"})
DEFAULT_PORTS = {"http": 80, "https": 443, "ftp": 21}
MAX_URL_LENGTH = 8192

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# Characters left as they are in a path or query (RFC 3986 pchar / query, minus '%').
_PATH_SAFE = _UNRESERVED | frozenset(b"!$&'()*+,;=:@/")
_QUERY_SAFE = _PATH_SAFE | frozenset(b"?")
_HEX = frozenset(b"0123456789abcdefABCDEF")
_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_NUMERIC_HOST_RE = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]+)){0,3}\.?$")


class InvalidLocationError(TiplineError):
    """A URL that cannot be a location (no host, bad port, unsupported scheme, ...)."""


@dataclass(frozen=True)
class Location:
    url: str  #: as reported
    canonical_url: str
    scheme: str
    host: str  #: IDNA / literal form, lower-case, IPv6 without brackets
    port: int | None  #: None when the scheme's default
    registrable_domain: str
    is_onion: bool
    #: the host is an IP literal (no DNS involved)
    is_ip: bool = False
    #: path and query of the canonical URL (``/a/b?x=1``)
    path_query: str = "/"


@lru_cache(maxsize=1)
def _extractor() -> tldextract.TLDExtract:
    # suffix_list_urls=() and cache_dir=None: the bundled snapshot only - no network, no disk.
    return tldextract.TLDExtract(
        suffix_list_urls=(), cache_dir=None, include_psl_private_domains=True
    )


@lru_cache(maxsize=65536)
def registrable_domain(host: str) -> str:
    """The registrable domain of an IDNA ``host`` (``alice.github.io`` -> itself,
    ``a.b.example.co.uk`` -> ``example.co.uk``); a host with no public suffix is its own."""
    ext = _extractor()(host)
    if ext.suffix and ext.domain:
        return f"{ext.domain}.{ext.suffix}"
    return host


def registrable_domain_known(host: str) -> bool:
    """Whether ``host`` ends in a public suffix (``example.org`` yes, ``intranet`` no)."""
    return bool(_extractor()(host).suffix)


def _normalise_escapes(text: str, safe: frozenset[int]) -> str:
    """Percent-encoding in one normal form: escapes of unreserved bytes decoded, other escapes
    upper-cased, unsafe characters (as UTF-8) escaped; a stray '%' becomes '%25'."""
    raw = text.encode("utf-8", "surrogatepass")
    out: list[str] = []
    i = 0
    n = len(raw)
    while i < n:
        b = raw[i]
        if b == 0x25:  # '%'
            if i + 2 < n and raw[i + 1] in _HEX and raw[i + 2] in _HEX:
                value = int(raw[i + 1 : i + 3], 16)
                out.append(chr(value) if value in _UNRESERVED else f"%{value:02X}")
                i += 3
                continue
            out.append("%25")
        elif b in safe:
            out.append(chr(b))
        else:
            out.append(f"%{b:02X}")
        i += 1
    return "".join(out)


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4 on an absolute path."""
    segments = path.split("/")
    out: list[str] = []
    for seg in segments[1:]:
        if seg == ".":
            continue
        if seg == "..":
            if out:
                out.pop()
            continue
        out.append(seg)
    # A path ending in '.' or '..' names a directory: keep the trailing slash.
    if segments[-1] in (".", ".."):
        out.append("")
    return "/" + "/".join(out)


def _numeric_ipv4(host: str) -> str | None:
    """Dotted-quad form of a host a browser reads as IPv4 (``2130706433``, ``0x7f.1``)."""
    if not _NUMERIC_HOST_RE.match(host):
        return None
    try:
        return socket.inet_ntoa(socket.inet_aton(host.rstrip(".")))
    except OSError:
        raise InvalidLocationError(f"host {host!r} is neither a name nor an IPv4 address") from None


def _canonical_host(raw: str) -> tuple[str, bool]:
    """(host, is_ip) of the netloc's host part, or InvalidLocationError."""
    if raw.startswith("["):
        if not raw.endswith("]"):
            raise InvalidLocationError("unterminated IPv6 literal in host")
        inner = raw[1:-1].split("%", 1)[0]  # a zone id means nothing off the local link
        try:
            return str(ipaddress.IPv6Address(inner)), True
        except ValueError:
            raise InvalidLocationError(f"bad IPv6 literal {raw[:80]!r}") from None
    host = raw.rstrip(".").lower()
    if not host:
        raise InvalidLocationError("URL has no host")
    if "%" in host:
        try:
            host = _percent_decode_host(host)
        except ValueError:
            raise InvalidLocationError(f"bad percent-escape in host {raw[:80]!r}") from None
    ipv4 = _numeric_ipv4(host)
    if ipv4 is not None:
        return ipv4, True
    try:
        # UTS 46 maps full-width dots, case and compatibility forms the way browsers do.
        encoded = idna.encode(host, uts46=True, transitional=False).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError):
        # Not a valid IDNA name; allow plain ASCII host names with '_' (seen on real sites).
        if re.fullmatch(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*", host) and all(
            0 < len(label) <= 63 for label in host.split(".")
        ):
            encoded = host
        else:
            raise InvalidLocationError(f"host {raw[:80]!r} is not a valid domain name") from None
    if len(encoded) > 253:
        raise InvalidLocationError("host name longer than 253 characters")
    # the mapping can make a number of what was not one ("²" -> "2"): an address, as browsers
    # see it (WHATWG: domain to ASCII first, then the IPv4 parser), so canonical stays canonical
    ipv4 = _numeric_ipv4(encoded.lower())
    if ipv4 is not None:
        return ipv4, True
    return encoded.lower(), False


def _percent_decode_host(host: str) -> str:
    return unquote_to_bytes(host).decode("utf-8")


def parse_location(url: str) -> Location:
    """The :class:`Location` of ``url``; raises :class:`InvalidLocationError` only."""
    if not isinstance(url, str):
        raise InvalidLocationError(f"a URL must be text, not {type(url).__name__}")
    text = url.strip()
    if not text:
        raise InvalidLocationError("empty URL")
    if len(text) > MAX_URL_LENGTH:
        raise InvalidLocationError(f"URL longer than {MAX_URL_LENGTH} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        # Browsers strip tab/newline; anything else control is not a URL.
        text = text.replace("\t", "").replace("\n", "").replace("\r", "")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
            raise InvalidLocationError("URL contains control characters")
    text = text.replace("\\", "/")  # browsers read backslashes in http(s) URLs as slashes
    if not _SCHEME_RE.match(text):
        text = "http://" + text.lstrip("/")
    elif "://" not in text[:32]:
        scheme_only = text.split(":", 1)[0].lower()
        if scheme_only in SCHEMES:
            text = f"{scheme_only}://" + text.split(":", 1)[1].lstrip("/")
        elif re.match(r"^[^/?#]*:\d+(?:[/?#]|$)", text):
            text = "http://" + text  # host:port/path without a scheme
    try:
        parts = urlsplit(text)
        raw_port = parts.port
    except ValueError as err:
        raise InvalidLocationError(f"not a valid URL: {err}") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise InvalidLocationError(f"unsupported scheme {scheme[:20]!r} (http, https or ftp)")
    netloc = parts.netloc.rsplit("@", 1)[-1]  # credentials are never part of a location
    if netloc.startswith("["):
        host_part = netloc[: netloc.find("]") + 1] if "]" in netloc else netloc
    else:
        host_part = netloc.rsplit(":", 1)[0] if ":" in netloc else netloc
    host, is_ip = _canonical_host(host_part)
    port = None if raw_port in (None, DEFAULT_PORTS[scheme]) else raw_port
    if port == 0:
        raise InvalidLocationError("port 0 is not a valid port")
    path = _remove_dot_segments(_normalise_escapes(parts.path or "/", _PATH_SAFE))
    if not path.startswith("/"):
        path = "/" + path
    query = _normalise_escapes(parts.query, _QUERY_SAFE) if parts.query else ""
    path_query = path + (f"?{query}" if query else "")
    host_in_url = f"[{host}]" if ":" in host else host
    port_in_url = f":{port}" if port is not None else ""
    canonical = f"{scheme}://{host_in_url}{port_in_url}{path_query}"
    return Location(
        url=url,
        canonical_url=canonical,
        scheme=scheme,
        host=host,
        port=port,
        registrable_domain=host if is_ip else registrable_domain(host),
        is_onion=not is_ip and (host == "onion" or host.endswith(".onion")),
        is_ip=is_ip,
        path_query=path_query,
    )
