"""``.onion`` pages through the operator's Tor SOCKS5h proxy, and only through it.

A ``.onion`` name cannot be resolved or reached directly, and trying would leak it to the
local resolver, so :func:`fetch_onion` refuses unless ``[crawl] tor_proxy`` names a
``socks5h://`` proxy (the proxy resolves the name). Each crawl sends its own SOCKS user name
and password: Tor's ``IsolateSOCKSAuth`` (on by default) then gives every crawl its own
circuits, so two cases are never linked by a shared circuit.

The body is read with the SSRF-safe fetcher's caps (byte limit, bounded gzip decoding, total
time); redirects are followed by hand and only to other ``.onion`` hosts (a hop to the
clearnet would go out through Tor or directly: neither is what the operator configured).

A proxy that does not answer is :class:`TorProxyDownError`: the crawler puts the page back to
wait and goes on with the rest.
"""

from __future__ import annotations

import time
from urllib.parse import quote, urlsplit

import httpx

from tipline.media.sniff import SNIFF_BYTES, sniff
from tipline.net.fetch import (
    REDIRECT_CODES,
    FetchConnectError,
    FetchError,
    FetchResult,
    FetchSettings,
    FetchTimeoutError,
    HTTPStatusError,
    InvalidURLError,
    TooManyRedirectsError,
    read_body,
)

__all__ = ["TorProxyDownError", "fetch_onion", "is_onion", "proxy_url"]


class TorProxyDownError(FetchError):
    code = "tor_proxy_down"


class OnionWithoutProxyError(FetchError):
    code = "onion_without_proxy"


def is_onion(url: str) -> bool:
    try:
        host = (urlsplit(url).hostname or "").rstrip(".").lower()
    except ValueError:
        return False
    return host.endswith(".onion")


def proxy_url(proxy: str, username: str, password: str) -> str:
    """``proxy`` (``socks5h://host:port``) with this crawl's isolation credentials."""
    parts = urlsplit(proxy)
    if parts.scheme not in ("socks5h", "socks5") or not parts.hostname:
        raise InvalidURLError(f"tor_proxy must be socks5h://host:port, not {proxy[:80]!r}", proxy)
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    port = f":{parts.port}" if parts.port else ""
    auth = f"{quote(username, safe='')}:{quote(password, safe='')}@" if username else ""
    # socks5h: the proxy resolves the name (httpx's SOCKS support always sends the name)
    return f"socks5://{auth}{host}{port}"


def fetch_onion(
    url: str,
    settings: FetchSettings,
    *,
    proxy: str,
    username: str,
    password: str,
) -> FetchResult:
    """GET an ``.onion`` URL through ``proxy`` (see the module docstring)."""
    if not proxy:
        raise OnionWithoutProxyError(
            f"{url[:200]}: .onion URLs are fetched only through a Tor proxy ([crawl] tor_proxy)",
            url,
        )
    start = time.monotonic()

    def left() -> float:
        remaining = settings.total_timeout - (time.monotonic() - start)
        if remaining <= 0:
            raise FetchTimeoutError(
                f"fetch of {url[:200]} exceeded the total time limit of "
                f"{settings.total_timeout:g}s",
                url,
            )
        return remaining

    visited: list[str] = []
    current = url
    with httpx.Client(
        proxy=proxy_url(proxy, username, password),
        trust_env=False,
        follow_redirects=False,
        headers={"User-Agent": settings.user_agent, "Accept-Encoding": "gzip, deflate, identity"},
        timeout=httpx.Timeout(
            connect=settings.connect_timeout,
            read=settings.read_timeout,
            write=settings.read_timeout,
            pool=1.0,
        ),
    ) as client:
        while True:
            if not is_onion(current):
                raise InvalidURLError(
                    f"an .onion page redirected off the onion network to {current[:200]}; "
                    "not followed",
                    current,
                )
            left()
            try:
                response = client.send(client.build_request("GET", current), stream=True)
            except httpx.ProxyError as err:  # the proxy answered: the onion is unreachable
                raise FetchConnectError(f"via Tor: {err or type(err).__name__}", current) from None
            except httpx.TimeoutException as err:
                raise FetchTimeoutError(f"via Tor: {type(err).__name__}", current) from None
            except (httpx.ConnectError, OSError) as err:  # nobody listens on the proxy port
                raise TorProxyDownError(
                    f"the Tor proxy does not answer ({err or type(err).__name__})", current
                ) from None
            except httpx.HTTPError as err:
                raise FetchConnectError(f"via Tor: {err or type(err).__name__}", current) from None
            try:
                if response.status_code in REDIRECT_CODES:
                    location = response.headers.get("location")
                    if not location:
                        raise HTTPStatusError(f"redirect without a Location at {current}", current)
                    visited.append(current)
                    if len(visited) > settings.max_redirects:
                        raise TooManyRedirectsError(f"more than {settings.max_redirects} redirects")
                    current = str(httpx.URL(current).join(location))
                    continue
                if not 200 <= response.status_code < 300:
                    raise HTTPStatusError(
                        f"{urlsplit(current).hostname} answered HTTP {response.status_code}",
                        current,
                        status=response.status_code,
                    )
                body = read_body(response, settings, current, left)
                return FetchResult(
                    content=body,
                    url=current,
                    status=response.status_code,
                    headers={k.lower(): v for k, v in response.headers.items()},
                    media_type=sniff(body[:SNIFF_BYTES]),
                    redirects=tuple(visited),
                )
            finally:
                response.close()
