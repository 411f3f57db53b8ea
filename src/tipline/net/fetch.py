"""An SSRF-safe HTTP fetcher: the only way Tipline contacts a URL that an input names.

Every URL a report, a partner or a crawled page hands us is hostile. ``fetch`` therefore:

- accepts only ``http`` and ``https`` URLs without credentials in them;
- resolves the host itself and refuses it when *any* address it resolves to is private,
  loopback, link-local, multicast, reserved, unspecified, carrier-grade NAT (100.64/10),
  IPv6 loopback / unique-local / link-local, a cloud metadata address (169.254.169.254,
  fd00:ec2::254, ...), or an IPv6 form that embeds one of those (IPv4-mapped ``::ffff:a.b.c.d``,
  IPv4-translated, IPv4-compatible, NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16``, Teredo) -
  unless allow-listed (``allow_hosts`` by name, ``allow_networks`` by address; metadata
  addresses only by ``allow_networks``, never by a host name);
- connects to the address it vetted (the URL is rewritten to the IP; ``Host`` and the TLS SNI /
  certificate name stay the original host name), so DNS is asked once and a rebinding answer
  cannot slip a second, different address in between the check and the connection;
- ignores proxy settings from the environment (a proxy would undo the pinning);
- follows redirects itself, re-checking scheme and address on every hop, up to
  ``max_redirects``;
- caps the body (``Content-Length`` checked up front, then counted while streaming, compressed
  bodies decoded with a bounded decoder), and bounds connect, read and total time;
- sniffs the content type from the bytes, never from the ``Content-Type`` header.

The result is a :class:`FetchResult` or a :class:`FetchError` subclass whose ``str`` is a
one-line message (``blocked_address: ...``, ``too_large: ...``). A caller that must record how
it got there (evidence for law enforcement) passes a :class:`FetchTrace`: every hop's URL, the
addresses its host resolved to, the address connected to, the request and response headers,
the status and, over TLS, the server's certificate, filled in even when the fetch then fails.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import ssl
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field

import httpx

from tipline.errors import TiplineError
from tipline.media.sniff import SNIFF_BYTES, MediaType, sniff

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: ``resolver(host, port) -> addresses``; the default uses the system resolver.
Resolver = Callable[[str, int], list[str]]

MiB = 1024 * 1024
REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})

#: Cloud instance-metadata endpoints (AWS, GCP, Azure, OpenStack, Alibaba, Oracle, AWS IPv6).
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "100.100.100.200", "192.0.0.192", "fd00:ec2::254")
)

#: Ranges refused on top of everything ``ipaddress`` does not call global.
_BLOCKED_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",  # "this network", includes 0.0.0.0
        "10.0.0.0/8",
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, includes broadcast
        "::/128",
        "::1/128",
        "fc00::/7",  # unique local
        "fe80::/10",  # link local
        "fec0::/10",  # site local (deprecated)
        "ff00::/8",  # multicast
    )
)

_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_IPV4_COMPAT = ipaddress.ip_network("::/96")
_IPV4_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")


class FetchError(TiplineError):
    """A fetch failed; ``str(err)`` is ``code: one-line reason``."""

    code = "fetch_error"

    def __init__(self, message: str, url: str = "") -> None:
        super().__init__(message)
        self.url = url

    def __str__(self) -> str:
        return f"{self.code}: {super().__str__()}"


class InvalidURLError(FetchError):
    code = "invalid_url"


class BlockedAddressError(FetchError):
    code = "blocked_address"


class ResolveError(FetchError):
    code = "dns_error"


class FetchConnectError(FetchError):
    code = "connect_error"


class FetchTimeoutError(FetchError):
    code = "timeout"


class TooLargeError(FetchError):
    code = "too_large"


class TooManyRedirectsError(FetchError):
    code = "too_many_redirects"


class HTTPStatusError(FetchError):
    code = "http_status"

    def __init__(
        self,
        message: str,
        url: str = "",
        status: int = 0,
        retry_after: float | None = None,
        body: bytes = b"",
    ) -> None:
        super().__init__(message, url)
        self.status = status
        #: the server's ``Retry-After`` in seconds (429, 503), when it sent a usable one
        self.retry_after = retry_after
        #: the start of the answer's body (``fetch(keep_error_bytes=)``; else empty)
        self.body = body


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds, or an HTTP date; None if unusable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(min(int(value), 86_400))
    try:
        from email.utils import parsedate_to_datetime

        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, min(86_400.0, when.timestamp() - time.time()))


@dataclass(frozen=True, slots=True)
class FetchSettings:
    #: host names fetched whatever they resolve to (an internal media server, a test server)
    allow_hosts: frozenset[str] = frozenset()
    #: addresses / networks fetched even though private (e.g. ``10.20.0.0/16``)
    allow_networks: tuple[IPNetwork, ...] = ()
    max_bytes: int = 64 * MiB
    max_redirects: int = 5
    connect_timeout: float = 5.0
    read_timeout: float = 15.0
    #: wall-clock seconds for the whole fetch: DNS, every redirect hop and the body
    total_timeout: float = 60.0
    user_agent: str = "Tipline-fetcher/0.1 (+hotline report verification)"
    #: PEM file of CA certificates to trust instead of the system's (an internal CA)
    ca_file: str | None = None
    #: ``None``: the system resolver (``socket.getaddrinfo``)
    resolver: Resolver | None = field(default=None, compare=False)

    @classmethod
    def build(
        cls,
        allow_hosts: Iterable[str] = (),
        allow_networks: Iterable[str] = (),
        **kw: object,
    ) -> FetchSettings:
        """Settings from plain strings (configuration files, environment)."""
        nets = tuple(ipaddress.ip_network(n.strip(), strict=False) for n in allow_networks)
        hosts = frozenset(h.strip().lower().rstrip(".") for h in allow_hosts if h.strip())
        return cls(allow_hosts=hosts, allow_networks=nets, **kw)  # type: ignore[arg-type]


#: Request headers whose values a trace never keeps (credentials sent to the origin).
_SECRET_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})


@dataclass(slots=True)
class FetchHop:
    """One request of a fetch (one per redirect hop), as far as it got."""

    url: str
    #: every address the host resolved to (an IP literal: itself), before the policy check
    addresses: tuple[str, ...] = ()
    #: the address the request was sent to (None: refused or failed before connecting)
    connected_ip: str | None = None
    #: the headers sent, names lower-cased; credentials replaced by ``[redacted]``
    request_headers: dict[str, str] = field(default_factory=dict)
    status: int | None = None
    #: response headers, names lower-cased
    response_headers: dict[str, str] = field(default_factory=dict)
    #: the server's certificate (DER) when the hop was https
    peer_certificate: bytes | None = None


@dataclass(slots=True)
class FetchTrace:
    """What :func:`fetch` did, hop by hop; pass an empty one in (``trace=``)."""

    hops: list[FetchHop] = field(default_factory=list)


@functools.lru_cache(maxsize=8)
def _tls_context(ca_file: str | None) -> ssl.SSLContext:
    """The client TLS context trusting ``ca_file`` (None: certifi's bundle, as httpx would).
    Built once per CA file: loading the CA bundle is most of a plain fetch's cost (~17 ms)."""
    import certifi

    return ssl.create_default_context(cafile=ca_file or certifi.where())


def _peer_certificate(response: httpx.Response) -> bytes | None:
    stream = response.extensions.get("network_stream")
    if stream is None:
        return None
    ssl_object = stream.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    try:  # an ssl.SSLObject or the low-level _ssl socket: binary_form only positionally
        der = ssl_object.getpeercert(True)
    except (AttributeError, TypeError, ValueError):
        return None
    return bytes(der) if der else None


@dataclass(frozen=True, slots=True)
class FetchResult:
    content: bytes
    #: the URL finally fetched, after redirects
    url: str
    status: int
    #: response headers, names lower-cased
    headers: dict[str, str]
    #: sniffed from the bytes
    media_type: MediaType
    #: every URL visited before ``url``
    redirects: tuple[str, ...] = ()

    @property
    def declared_type(self) -> str:
        return self.headers.get("content-type", "")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, translated, compatible, NAT64, 6to4,
    Teredo), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    low = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if any(ip in n for n in _NAT64) or ip in _IPV4_TRANSLATED:
        return low
    if ip in _IPV4_COMPAT and int(ip) > 1:
        return low
    return None


def blocked_reason(ip: IPAddress) -> str | None:
    """Why ``ip`` may not be fetched without an allow-list entry, or None when it may."""
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None:
            why = blocked_reason(inner)
            return f"an IPv6 form of {inner}, {why}" if why else None
    for net in _BLOCKED_NETWORKS:
        if ip.version == net.version and ip in net:
            return _describe(ip)
    if not ip.is_global or ip.is_multicast or ip.is_reserved:
        return _describe(ip)
    return None


def _describe(ip: IPAddress) -> str:
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if isinstance(ip, ipaddress.IPv4Address) and ip in ipaddress.ip_network("100.64.0.0/10"):
        return "a carrier-grade NAT address"
    if ip.is_private:
        return "a private address"
    return "a reserved, non-public address"


def check_address(ip: IPAddress, host: str, settings: FetchSettings) -> None:
    """Raise :class:`BlockedAddressError` unless ``ip`` (which ``host`` resolved to) may be
    fetched. Metadata addresses need an ``allow_networks`` entry; others may also be allowed
    by ``allow_hosts``."""
    why = blocked_reason(ip)
    if why is None:
        return
    if any(ip.version == n.version and ip in n for n in settings.allow_networks):
        return
    if ip not in METADATA_ADDRESSES and host.lower().rstrip(".") in settings.allow_hosts:
        return
    shown = host if host == str(ip) else f"{host} ({ip})"
    raise BlockedAddressError(
        f"refused to fetch {shown}: {why}; allow-list it (allow_hosts / allow_networks) "
        "if it is really wanted",
        host,
    )


def _system_resolve(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


_RESOLVER_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="tipline-dns")


def resolve(host: str, port: int, settings: FetchSettings, timeout: float) -> list[IPAddress]:
    """Every address ``host`` resolves to (an IP literal resolves to itself)."""
    bare = host.strip("[]")
    try:
        return [ipaddress.ip_address(bare)]
    except ValueError:
        pass
    resolver = settings.resolver or _system_resolve
    try:
        raw = _RESOLVER_POOL.submit(resolver, bare, port).result(timeout=max(timeout, 0.001))
    except FutureTimeout:
        raise FetchTimeoutError(f"resolving {bare} took longer than {timeout:.1f}s", host) from None
    except (OSError, UnicodeError) as err:
        raise ResolveError(f"cannot resolve {bare}: {err}", host) from None
    addrs: list[IPAddress] = []
    for a in raw:
        try:
            addrs.append(ipaddress.ip_address(a.split("%", 1)[0]))
        except ValueError:
            continue
    if not addrs:
        raise ResolveError(f"{bare} resolved to no usable address", host)
    return addrs


def _parse(url: str) -> httpx.URL:
    try:
        u = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as err:
        raise InvalidURLError(f"not a valid URL: {url[:200]!r} ({err})", url) from None
    if u.scheme not in ("http", "https"):
        raise InvalidURLError(
            f"only http and https URLs are fetched, not {u.scheme or 'a relative URL'!r}", url
        )
    if not u.raw_host:
        raise InvalidURLError(f"URL has no host: {url[:200]!r}", url)
    if u.userinfo:
        raise InvalidURLError("URLs with credentials (user:password@) are not fetched", url)
    return u


def _origin(u: httpx.URL) -> tuple[str, str, int | None]:
    return (u.scheme, u.host.lower(), u.port)


def _host(u: httpx.URL) -> str:
    """The host as sent on the wire: IDNA (punycode) for international names."""
    return u.raw_host.decode("ascii", "replace")


def vet_url(
    url: str, settings: FetchSettings, timeout: float = 10.0
) -> tuple[httpx.URL, IPAddress]:
    """Parse and check ``url``; returns it with the address to connect to. Every address the
    host resolves to must pass (so a DNS answer mixing public and private addresses fails)."""
    return _vet(url, settings, timeout, None)


def _vet(
    url: str, settings: FetchSettings, timeout: float, hop: FetchHop | None
) -> tuple[httpx.URL, IPAddress]:
    u = _parse(url)
    port = u.port or (443 if u.scheme == "https" else 80)
    addrs = resolve(_host(u), port, settings, timeout)
    if hop is not None:
        hop.addresses = tuple(str(a) for a in addrs)
    for ip in addrs:
        check_address(ip, _host(u), settings)
    return u, addrs[0]


def _pinned_request(
    client: httpx.Client,
    u: httpx.URL,
    ip: IPAddress,
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    content: bytes | None = None,
) -> httpx.Request:
    """A request for ``u`` that connects to ``ip``: the URL carries the IP, ``Host`` and SNI the
    name, so TLS still verifies the certificate against the name."""
    host_literal = f"[{ip}]" if ip.version == 6 else str(ip)
    target = u.copy_with(host=host_literal.strip("[]"))
    host_header = _host(u) if u.port is None else f"{_host(u)}:{u.port}"
    if ":" in _host(u) and u.port is None:
        host_header = f"[{_host(u)}]"
    elif ":" in _host(u):
        host_header = f"[{_host(u)}]:{u.port}"
    extensions: dict[str, object] = {}
    if u.scheme == "https":
        try:
            ipaddress.ip_address(_host(u))
        except ValueError:
            extensions["sni_hostname"] = _host(u)
    req = client.build_request(
        method,
        target,
        headers={**(headers or {}), "Host": host_header},
        content=content,
        extensions=extensions,
    )
    return req


@dataclass(frozen=True)
class SentResponse:
    """What :func:`send_pinned` keeps of an answer: status, headers and the body's start."""

    status: int
    headers: httpx.Headers
    text: str


def send_pinned(
    method: str,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    settings: FetchSettings,
    *,
    user_agent: str | None = None,
    keep_bytes: int = 0,
) -> SentResponse:
    """Send ``body`` (a POST or PUT) to ``url`` under the address policy: every address the
    host resolves to checked, connected to the checked one, no proxies, no redirects followed.
    At most ``keep_bytes`` of the answer's body are read. Raises a :class:`FetchError`."""
    s = settings
    u, ip = _vet(url, s, s.connect_timeout, None)
    with httpx.Client(
        trust_env=False,
        follow_redirects=False,
        verify=_tls_context(s.ca_file),
        headers={"User-Agent": user_agent or s.user_agent},
        timeout=httpx.Timeout(
            connect=s.connect_timeout, read=s.read_timeout, write=s.read_timeout, pool=1.0
        ),
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=0),
    ) as client:
        # identity: the kept bytes are the text itself, and nothing is ever decompressed
        asked = {"Accept-Encoding": "identity", **headers}
        request = _pinned_request(client, u, ip, method=method, headers=asked, content=body)
        try:
            response = client.send(request, stream=True)
        except httpx.TimeoutException as err:
            raise FetchTimeoutError(f"{_host(u)}: {type(err).__name__}", url) from None
        except httpx.HTTPError as err:
            raise FetchConnectError(f"{_host(u)}: {type(err).__name__}: {err}"[:300], url) from None
        try:
            kept = bytearray()
            if keep_bytes > 0:
                try:
                    for chunk in response.iter_raw():
                        kept += chunk
                        if len(kept) >= keep_bytes:
                            break
                except httpx.HTTPError:
                    pass  # the status is the answer; a body cut short only shortens the text
            text = bytes(kept[:keep_bytes]).decode("utf-8", "replace")
            return SentResponse(response.status_code, response.headers, text)
        finally:
            response.close()


class _Decoder:
    """Bounded gzip/deflate decoding: never produces more than the remaining budget."""

    def __init__(self, encoding: str) -> None:
        enc = encoding.strip().lower()
        if enc in ("", "identity"):
            self._z: zlib._Decompress | None = None
        elif enc in ("gzip", "x-gzip"):
            self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif enc == "deflate":
            self._z = zlib.decompressobj()
        else:
            raise FetchError(f"unsupported content-encoding {encoding[:40]!r}")

    def feed(self, chunk: bytes, budget: int) -> bytes:
        if self._z is None:
            return chunk
        try:
            out = self._z.decompress(chunk, budget + 1)
        except zlib.error as err:
            raise FetchError(f"corrupt compressed body: {err}") from None
        if self._z.unconsumed_tail or len(out) > budget:
            raise TooLargeError("the decompressed body is over the byte limit; stopped reading")
        return out


def fetch(
    url: str,
    settings: FetchSettings | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    trace: FetchTrace | None = None,
    sink: Callable[[bytes], None] | None = None,
    keep_error_bytes: int = 0,
) -> FetchResult:
    """GET ``url`` safely (see the module docstring). Raises a :class:`FetchError`.

    ``trace``: filled with every hop (see :class:`FetchTrace`), also when this raises.

    ``headers``: extra request headers (``Authorization``, ``If-None-Match``, ...), sent to
    ``url``'s own origin only, never to a redirect's other host. With a conditional header
    (``If-None-Match`` / ``If-Modified-Since``), a ``304 Not Modified`` is a result (status 304,
    empty content), not an error.

    ``sink``: the body is handed to it chunk by chunk as it arrives (decoded, under the same
    caps) instead of being kept; ``content`` is then only its first ``SNIFF_BYTES`` (what the
    media type is sniffed from). For bodies too large to hold: model files the crawler hashes.

    ``keep_error_bytes``: at most this many bytes of an error answer's body (decoded, within
    the time left) are kept on the :class:`HTTPStatusError` (an API's error object, read from
    the one answer instead of asking again); 0, the default: none are read."""
    s = settings or FetchSettings()
    extra = dict(headers or {})
    conditional = any(k.lower() in ("if-none-match", "if-modified-since") for k in extra)
    origin = _origin(_parse(url))
    start = time.monotonic()

    def left() -> float:
        remaining = s.total_timeout - (time.monotonic() - start)
        if remaining <= 0:
            raise FetchTimeoutError(
                f"fetch of {url[:200]} exceeded the total time limit of {s.total_timeout:g}s", url
            )
        return remaining

    visited: list[str] = []
    current = url
    with httpx.Client(
        trust_env=False,
        follow_redirects=False,
        verify=_tls_context(s.ca_file),
        headers={"User-Agent": s.user_agent},
        timeout=httpx.Timeout(
            connect=s.connect_timeout, read=s.read_timeout, write=s.read_timeout, pool=1.0
        ),
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=0),
    ) as client:
        while True:
            hop = None
            if trace is not None:
                hop = FetchHop(url=current)
                trace.hops.append(hop)
            u, ip = _vet(current, s, min(left(), s.connect_timeout), hop)
            request = _pinned_request(
                client, u, ip, headers={"Accept-Encoding": "gzip, deflate, identity"}
            )
            if extra and _origin(u) == origin:
                request.headers.update(extra)
            if hop is not None:
                hop.connected_ip = str(ip)
                hop.request_headers = {
                    k.lower(): "[redacted]" if k.lower() in _SECRET_HEADERS else v
                    for k, v in request.headers.items()
                }
            try:
                response = client.send(request, stream=True)
            except httpx.TimeoutException as err:
                raise FetchTimeoutError(f"{_host(u)}: {type(err).__name__}", current) from None
            except httpx.HTTPError as err:
                raise FetchConnectError(
                    f"{_host(u)}: {err or type(err).__name__}", current
                ) from None
            if hop is not None:
                hop.status = response.status_code
                hop.response_headers = {k.lower(): v for k, v in response.headers.items()}
                if u.scheme == "https":
                    hop.peer_certificate = _peer_certificate(response)
            try:
                if response.status_code in REDIRECT_CODES:
                    location = response.headers.get("location")
                    if not location:
                        raise HTTPStatusError(
                            f"redirect {response.status_code} without a Location", current
                        )
                    visited.append(current)
                    if len(visited) > s.max_redirects:
                        raise TooManyRedirectsError(
                            f"more than {s.max_redirects} redirects starting at {url[:200]}", url
                        )
                    try:
                        current = str(u.join(location))
                    except (httpx.InvalidURL, ValueError) as err:
                        raise InvalidURLError(
                            f"bad redirect Location {location[:200]!r}: {err}", current
                        ) from None
                    continue
                if response.status_code == 304 and conditional:
                    return FetchResult(
                        content=b"",
                        url=current,
                        status=304,
                        headers={k.lower(): v for k, v in response.headers.items()},
                        media_type=sniff(b""),
                        redirects=tuple(visited),
                    )
                if not 200 <= response.status_code < 300:
                    raise HTTPStatusError(
                        f"{_host(u)} answered HTTP {response.status_code}",
                        current,
                        status=response.status_code,
                        retry_after=_retry_after(response.headers.get("retry-after")),
                        body=_error_body(response, keep_error_bytes, left),
                    )
                body = read_body(response, s, current, left, sink)
                headers = {k.lower(): v for k, v in response.headers.items()}
                return FetchResult(
                    content=body,
                    url=current,
                    status=response.status_code,
                    headers=headers,
                    media_type=sniff(body[:SNIFF_BYTES]),
                    redirects=tuple(visited),
                )
            finally:
                response.close()


def _error_body(response: httpx.Response, limit: int, left: Callable[[], float]) -> bytes:
    """At most ``limit`` bytes of an error answer's body, decoded; what cannot be read in
    time or decoded is left out (the status is the answer)."""
    if limit <= 0:
        return b""
    kept = bytearray()
    try:
        decoder = _Decoder(response.headers.get("content-encoding", ""))
        for chunk in response.iter_raw():
            left()
            kept += decoder.feed(chunk, limit - len(kept))
            if len(kept) >= limit:
                break
    except (FetchError, httpx.HTTPError):
        pass
    return bytes(kept[:limit])


def read_body(
    response: httpx.Response,
    s: FetchSettings,
    url: str,
    left: Callable[[], float],
    sink: Callable[[bytes], None] | None = None,
) -> bytes:
    """A streamed response's body under the fetch limits (declared and counted size, the
    time left, bounded decompression); handed to ``sink`` chunk by chunk instead when given.
    Public for fetchers with their own transport (the crawler's SOCKS client)."""
    declared = response.headers.get("content-length")
    if declared is not None:
        try:
            n = int(declared)
        except ValueError:
            n = -1
        if n > s.max_bytes:
            raise TooLargeError(
                f"{url[:200]} declares {n:,} bytes, over the {s.max_bytes:,}-byte limit", url
            )
    decoder = _Decoder(response.headers.get("content-encoding", ""))
    parts: list[bytes] = []
    size = 0
    try:
        # no chunk_size: httpx would gather 64 KiB before yielding, so a server trickling
        # bytes (slow-loris) would never meet the total time check between chunks
        for chunk in response.iter_raw():
            left()
            out = decoder.feed(chunk, s.max_bytes - size)
            size += len(out)
            if size > s.max_bytes:
                raise TooLargeError(
                    f"{url[:200]} sent more than the {s.max_bytes:,}-byte limit; stopped reading",
                    url,
                )
            if sink is None:
                parts.append(out)
                continue
            if out:
                sink(out)
            if size - len(out) < SNIFF_BYTES:
                parts.append(out[: SNIFF_BYTES - (size - len(out))])
    except httpx.TimeoutException as err:
        raise FetchTimeoutError(f"reading {url[:200]}: {type(err).__name__}", url) from None
    except httpx.HTTPError as err:
        raise FetchConnectError(f"reading {url[:200]}: {err or type(err).__name__}", url) from None
    return b"".join(parts)
