""".onion pages only through the Tor proxy: a real SOCKS5 server on 127.0.0.1 (written here,
RFC 1928 + RFC 1929) stands in for Tor and maps the test's onion name to the local site; it
records every CONNECT with the credentials it came with."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from crawl_site import IMAGES, Site
from tipline.crawl.engine import CrawlConfig, Policy, run_crawl, start_crawl
from tipline.net.fetch import FetchSettings
from tipline.pipeline.stages import PipelineConfig
from tipline.scan.hashing import HashOptions
from tipline.store.crawl_tables import CrawlPage, CrawlRow

ONION = "forumexampleabcdefghijklmnopqrstuvwxyz234567abcdefghijklm.onion"


class Socks5:
    """A SOCKS5 proxy with user/password auth; ``.onion`` names go to ``target``."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.connects: list[tuple[str, int, str, str]] = []
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sock.listen(16)
        self.running = True
        threading.Thread(target=self._serve, daemon=True).start()

    def close(self) -> None:
        self.running = False
        self.sock.close()

    def _serve(self) -> None:
        while self.running:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._client, args=(conn,), daemon=True).start()

    @staticmethod
    def _read(conn: socket.socket, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            part = conn.recv(n - len(buf))
            if not part:
                raise ConnectionError("closed")
            buf += part
        return buf

    def _client(self, conn: socket.socket) -> None:
        try:
            _ver, nmethods = self._read(conn, 2)
            methods = self._read(conn, nmethods)
            user = password = ""
            if 2 in methods:
                conn.sendall(b"\x05\x02")
                _v, ulen = self._read(conn, 2)
                user = self._read(conn, ulen).decode()
                (plen,) = self._read(conn, 1)
                password = self._read(conn, plen).decode()
                conn.sendall(b"\x01\x00")
            else:
                conn.sendall(b"\x05\x00")
            _v, cmd, _rsv, atyp = self._read(conn, 4)
            if atyp == 3:
                (n,) = self._read(conn, 1)
                host = self._read(conn, n).decode()
            elif atyp == 1:
                host = socket.inet_ntoa(self._read(conn, 4))
            else:
                host = socket.inet_ntop(socket.AF_INET6, self._read(conn, 16))
            (port,) = struct.unpack("!H", self._read(conn, 2))
            self.connects.append((host, port, user, password))
            if cmd != 1 or not host.endswith(".onion"):
                conn.sendall(b"\x05\x02\x00\x01" + b"\0" * 6)  # not allowed: onions only
                return
            upstream = socket.create_connection(self.target)
            conn.sendall(b"\x05\x00\x00\x01" + b"\0" * 6)
        except (ConnectionError, OSError, ValueError):
            conn.close()
            return

        def pipe(a: socket.socket, b: socket.socket) -> None:
            try:
                while data := a.recv(65536):
                    b.sendall(data)
            except OSError:
                pass
            finally:
                for s in (a, b):
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)

        threading.Thread(target=pipe, args=(conn, upstream), daemon=True).start()
        pipe(upstream, conn)


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    s = Site()
    yield s
    s.stop()


def _cfg(proxy: str) -> CrawlConfig:
    pcfg = PipelineConfig(
        match=IMAGES.bank().match,
        fetch_settings=FetchSettings.build(allow_networks=["127.0.0.0/8"]),
        hash_options=HashOptions(provenance=False),
    )
    return CrawlConfig(pipeline=pcfg, tor_proxy=proxy, proxy_retry_seconds=0.2)


POLICY = Policy(per_host_delay=0.0, barren_pages=0)


def test_onion_reached_only_through_the_proxy_with_per_crawl_credentials(
    session_factory: sessionmaker[Session], site: Site
) -> None:
    proxy = Socks5(("127.0.0.1", site.port))
    site.hits.clear()
    try:
        cfg = _cfg(f"socks5h://127.0.0.1:{proxy.port}")
        ids = []
        for _ in range(2):
            with session_factory() as s, s.begin():
                crawl, _ = start_crawl(
                    s,
                    [f"http://{ONION}:{site.port}/forum/thread/3", f"{site.base}/loop/a"],
                    policy=POLICY,
                )
                ids.append(crawl.id)
            st = run_crawl(session_factory, crawl.id, cfg)
            assert st.state == "done"
        with session_factory() as s:
            rows = {c.id: c for c in s.scalars(select(CrawlRow))}
            pages = s.scalars(select(CrawlPage).where(CrawlPage.crawl_id == ids[0])).all()
        onion_pages = [p for p in pages if p.host == ONION]
        assert onion_pages and all(p.state == "done" for p in onion_pages)
        # the onion's thread page linked its images: fetched through the proxy as well
        hosts = {h for h, _p, _u, _pw in proxy.connects}
        assert hosts == {ONION}  # the clearnet seed never went through Tor
        creds = {(u, pw) for _h, _p, u, pw in proxy.connects}
        # one SOCKS identity per crawl: Tor gives each its own circuits
        assert creds == {(rows[i].tor_username, rows[i].tor_password) for i in ids}
        assert site.fetched("/loop/a") == 2  # clearnet, directly, once per crawl
    finally:
        proxy.close()


def test_onion_without_proxy_fails_and_never_goes_direct(
    session_factory: sessionmaker[Session], site: Site
) -> None:
    with session_factory() as s, s.begin():
        crawl, _ = start_crawl(s, [f"http://{ONION}/x", f"{site.base}/loop/b"], policy=POLICY)
    st = run_crawl(session_factory, crawl.id, _cfg(""))
    assert st.state == "done" and st.pages_failed == 1
    with session_factory() as s:
        row = s.scalars(select(CrawlPage).where(CrawlPage.host == ONION)).one()
    assert row.state == "failed" and (row.error or "").startswith("onion_without_proxy")


def test_proxy_down_onion_waits_rest_goes_on_then_resumes(
    session_factory: sessionmaker[Session], site: Site
) -> None:
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()  # nothing listens there: the proxy is "down"
    with session_factory() as s, s.begin():
        crawl, _ = start_crawl(
            s, [f"http://{ONION}:{site.port}/loop/a", f"{site.base}/forum/"], policy=POLICY
        )
        cid = crawl.id
    st = run_crawl(session_factory, cid, _cfg(f"socks5h://127.0.0.1:{port}"))
    assert st.state == "waiting" and "Tor proxy" in (st.stop_reason or "")
    assert st.pages_done >= 5 and st.pages_waiting == 1  # the clearnet part went on
    with session_factory() as s:
        onion = s.scalars(select(CrawlPage).where(CrawlPage.host == ONION)).one()
        assert onion.state == "queued" and (onion.error or "").startswith("tor_proxy_down")
    # the proxy comes up on that port: the next run fetches the onion part
    proxy = Socks5.__new__(Socks5)
    proxy.target, proxy.connects, proxy.running = ("127.0.0.1", site.port), [], True
    proxy.sock = socket.socket()
    proxy.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    proxy.sock.bind(("127.0.0.1", port))
    proxy.sock.listen(16)
    proxy.port = port
    threading.Thread(target=proxy._serve, daemon=True).start()
    try:
        st = run_crawl(session_factory, cid, _cfg(f"socks5h://127.0.0.1:{port}"))
    finally:
        proxy.close()
    assert st.state == "done" and st.pages_waiting == 0
    assert {h for h, *_ in proxy.connects} == {ONION}
