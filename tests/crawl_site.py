"""A generated, benign test web site for the crawler, served on 127.0.0.1 (and an "image host"
on 127.0.0.2).

The forum (``/forum/``): an index with two pages (pagination), threads with several pages
(``rel="next"`` and "Next" links), posts with thumbnails linking to full-size images
(``<a href=full><img src=thumb></a>``), srcset, og:image. Some full-size images are banked:
photographs that scikit-image ships (coffee, chelsea, astronaut, rocket), the bank holding
their hashes under the label ``DEMO-benign-stand-in``; the rest are procedural noise. Thread 4
has nothing banked over five pages (a barren branch). Thread 5 (on the forum's second page)
holds the guides and models: a post quoting an edited copy of a banked stand-in guide
(tests/guide_texts.py, benign text with placeholder keywords), a link to the same edited guide
as a TXT file, a link to a small generated safetensors LoRA whose SHA-256 is banked (never a
pickle), a link to an unbanked one, and a Civitai-style model page printing the AutoV2 of a
banked model the site does not serve. The gallery (``/gallery/``) links each
thumbnail to a viewer page on the image host (another registrable domain: followed one hop).

Hostile routes for the bad-input tests: a link loop, an infinite calendar, 10,000 links on one
page, a huge page, a slow-loris page, a gzip bomb, wrong Content-Types, malformed HTML, odd
relative links and bases, ``javascript:``/``data:``/``file:`` links, and a redirect to a
private address.

Every request is counted (``site.hits[(host, path)]``) so tests prove what was fetched, and
how many times.
"""

from __future__ import annotations

import gzip
import html
import threading
import time
from collections import Counter
from collections.abc import Callable
from functools import cached_property
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from conftest import encode, noise_image, photo
from tipline.banks.bank import Bank, Entry
from tipline.index.bank_index import BankIndex
from tipline.scan.hashing import HashOptions, hash_bytes

BANK = "DEMO_BENIGN_STAND_IN"
LABEL = "DEMO-benign-stand-in"
GUIDE_LABEL = "DEMO-guide-stand-in"
MODEL_LABEL = "DEMO-model-stand-in"
#: (thread, page) -> the images posted there: (name, banked)
THREADS: dict[tuple[int, int], list[tuple[str, bool]]] = {
    (1, 1): [("coffee", True), ("n1", False)],
    (1, 2): [("n2", False)],
    (1, 3): [("chelsea", True)],
    (2, 1): [("n3", False), ("astronaut", True)],
    (3, 1): [("rocket", True)],
    (3, 2): [("n4", False)],
    (4, 1): [("n5", False)],
    (4, 2): [("n6", False)],
    (4, 3): [("n7", False)],
    (4, 4): [("n8", False)],
    (4, 5): [("n9", False)],
    (5, 1): [("n10", False)],
}
THREAD_PAGES = {t: max(p for tt, p in THREADS if tt == t) for t, _ in THREADS}
GALLERY = ["g1", "g2", "g3"]
BANKED = ("coffee", "chelsea", "astronaut", "rocket")
#: thread 5's guide document and model links (paths on the forum host)
GUIDE_TXT = "/files/bookshelf-guide.txt"
MODEL_BANKED = "/files/models/landscape-lora.safetensors"
MODEL_OTHER = "/files/models/portrait-lora.safetensors"
MODEL_PAGE = "/forum/models/7"


def _safetensors(seed: int, rows: int) -> bytes:
    """A tiny safetensors file (8-byte header length, JSON header, F16 tensor bytes)."""
    import json
    import struct

    import numpy as np

    data = np.random.default_rng(seed).standard_normal((rows, 32)).astype(np.float16).tobytes()
    name = "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"
    header = {
        name: {"dtype": "F16", "shape": [rows, 32], "data_offsets": [0, len(data)]},
        "__metadata__": {"ss_network_module": "networks.lora", "note": "DEMO-benign-stand-in"},
    }
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


#: model files served by the forum (generated; the banked one's SHA-256 is in ``bank()``)
MODELS = {MODEL_BANKED: _safetensors(1, 8), MODEL_OTHER: _safetensors(2, 8)}
#: a model only the model page names (its AutoV2 printed, its SHA-256 banked)
PAGE_MODEL = _safetensors(3, 8)


def _full(name: str) -> bytes:
    if name in BANKED:
        return encode(photo(name, (320, 240)), "JPEG", quality=90)
    seed = sum(ord(c) * (i + 1) for i, c in enumerate(name))
    return encode(noise_image(seed, 256, 192), "PNG")


class Images:
    """Every image of the site, generated once."""

    @cached_property
    def full(self) -> dict[str, bytes]:
        names = [n for imgs in THREADS.values() for n, _ in imgs] + GALLERY
        return {n: _full(n) for n in names}

    @cached_property
    def thumb(self) -> dict[str, bytes]:
        from io import BytesIO

        from PIL import Image

        out = {}
        for n, data in self.full.items():
            img = Image.open(BytesIO(data)).convert("RGB")
            img.thumbnail((96, 96))
            out[n] = encode(img, "JPEG", quality=80)
        return out

    @cached_property
    def small(self) -> list[bytes]:
        return [encode(noise_image(1000 + i, 64, 48), "PNG") for i in range(20)]

    def bank(self) -> BankIndex:
        """The banked full-size images' PDQ and SHA-256, the stand-in guide's TLSH and two
        model files' SHA-256 (benign stand-ins all)."""
        import hashlib

        from guide_texts import ASSEMBLY_GUIDE
        from tipline.signals.tlsh import hash_text

        entries = []
        for i, n in enumerate(BANKED):
            r = hash_bytes(self.full[n], n, HashOptions(provenance=False))
            entries.append(Entry(BANK, "pdq", r.pdq, label=LABEL, id=2 * i + 1))
            entries.append(Entry(BANK, "sha256", r.sha256, label=LABEL, id=2 * i + 2))
        guide = hash_text(ASSEMBLY_GUIDE).signal
        assert guide is not None
        entries.append(Entry(BANK, "tlsh", guide, label=GUIDE_LABEL, id=101))
        for i, data in enumerate((MODELS[MODEL_BANKED], PAGE_MODEL)):
            sha = hashlib.sha256(data).hexdigest()
            entries.append(Entry(BANK, "sha256", sha, label=MODEL_LABEL, id=102 + i))
        return BankIndex.build([Bank(BANK, "alert")], entries)


IMAGES = Images()


def _page(title: str, body: str, head: str = "") -> bytes:
    return (
        f"<!doctype html><html><head><title>{html.escape(title)}</title>{head}</head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>"
    ).encode()


def _thumb_link(name: str, full_href: str) -> str:
    return (
        f'<div class="post"><a href="{full_href}"><img src="/img/thumb/{name}.jpg" '
        f'alt="{name}"></a></div>'
    )


def _guides_post() -> str:
    """Thread 5's post: the edited guide quoted, and links to the guide file and models."""
    from guide_texts import ASSEMBLY_GUIDE_REPOST

    quoted = html.escape(ASSEMBLY_GUIDE_REPOST).replace("\n\n", "</p><p>")
    return (
        f'<div class="post"><p>{quoted}</p>'
        f'<p><a href="{GUIDE_TXT}">the guide as a text file</a> '
        f'<a href="{MODEL_BANKED}">landscape LoRA</a> '
        f'<a href="{MODEL_OTHER}">portrait LoRA</a> '
        f'<a href="{MODEL_PAGE}">model page</a></p></div>'
    )


class Site:
    """Both servers and their request counts; ``stop()`` when done."""

    def __init__(self) -> None:
        self.hits: Counter[tuple[str, str]] = Counter()
        self.lock = threading.Lock()
        #: called with each (host, path) before it is answered (tests slow things down)
        self.on_request: Callable[[str, str], None] | None = None
        #: called with each (host, path) whose response was written to the end
        self.on_complete: Callable[[str, str], None] | None = None
        #: responses written to the end (a request cut off before is not counted)
        self.completed: Counter[tuple[str, str]] = Counter()
        self.active: Counter[str] = Counter()
        self.max_active: Counter[str] = Counter()
        self.times: dict[str, list[float]] = {}
        self.servers: list[ThreadingHTTPServer] = []
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                host = self.server.server_address[0]
                with site.lock:
                    site.hits[(str(host), self.path)] += 1
                    site.active[str(host)] += 1
                    site.max_active[str(host)] = max(
                        site.max_active[str(host)], site.active[str(host)]
                    )
                    site.times.setdefault(str(host), []).append(time.monotonic())
                try:
                    if site.on_request is not None:
                        site.on_request(str(host), self.path)
                    site.route(self, str(host))
                    self.wfile.flush()
                    with site.lock:
                        site.completed[(str(host), self.path)] += 1
                    if site.on_complete is not None:
                        site.on_complete(str(host), self.path)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    with site.lock:
                        site.active[str(host)] -= 1

        for addr in ("127.0.0.1", "127.0.0.2"):
            port = self.servers[0].server_address[1] if self.servers else 0
            httpd = ThreadingHTTPServer((addr, port), Handler)
            httpd.daemon_threads = True
            threading.Thread(target=httpd.serve_forever, daemon=True).start()
            self.servers.append(httpd)
        self.port = self.servers[0].server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.imagehost = f"http://127.0.0.2:{self.port}"

    def stop(self) -> None:
        for httpd in self.servers:
            httpd.shutdown()
            httpd.server_close()

    def fetched(self, path: str, host: str = "127.0.0.1") -> int:
        return self.hits[(host, path)]

    # -- routes ---------------------------------------------------------------------------

    def send(
        self,
        h: BaseHTTPRequestHandler,
        body: bytes,
        ctype: str = "text/html; charset=utf-8",
        status: int = 200,
        headers: dict[str, str] | None = None,
    ) -> None:
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(body)

    def route(self, h: BaseHTTPRequestHandler, host: str) -> None:
        u = urlsplit(h.path)
        q = {k: v[0] for k, v in parse_qs(u.query).items()}
        p = u.path
        if host == "127.0.0.2":
            if p.startswith("/view/"):
                name = p.rsplit("/", 1)[1]
                body = _page(
                    f"image {name}",
                    f'<img src="/full/{name}.png"><a href="/other">more</a>',
                    head=f'<meta property="og:image" content="/full/{name}.png">',
                )
                return self.send(h, body)
            if p.startswith("/full/"):
                name = p.rsplit("/", 1)[1].split(".")[0]
                return self.send(h, IMAGES.full[name], "image/png")
            return self.send(h, _page("image host", '<a href="/view/g1">x</a>'))
        if p.startswith("/img/thumb/"):
            name = p.rsplit("/", 1)[1].split(".")[0]
            return self.send(h, IMAGES.thumb[name], "image/jpeg")
        if p.startswith("/img/full/"):
            name = p.rsplit("/", 1)[1].split(".")[0]
            ctype = "image/jpeg" if name in BANKED else "image/png"
            return self.send(h, IMAGES.full[name], ctype)
        if p in ("/forum/", "/forum"):
            page = int(q.get("page", "1"))
            threads = [1, 2] if page == 1 else [3, 4, 5]
            body = "".join(f'<p><a href="/forum/thread/{t}">Thread {t}</a></p>' for t in threads)
            if page == 1:
                body += '<a rel="next" href="/forum/?page=2">Next</a>'
            return self.send(h, _page(f"Forum page {page}", body))
        if p.startswith("/forum/thread/"):
            t = int(p.rsplit("/", 1)[1])
            page = int(q.get("page", "1"))
            if (t, page) not in THREADS:
                return self.send(h, _page("not found", ""), status=404)
            posts = "".join(
                _thumb_link(n, f"/img/full/{n}.{'jpg' if b else 'png'}")
                for n, b in THREADS[(t, page)]
            )
            if t == 5:
                posts += _guides_post()
            nav = '<a href="/forum/">Back to the forum</a>'
            head = ""
            if page < THREAD_PAGES[t]:
                nav += f' <a href="/forum/thread/{t}?page={page + 1}">Next</a>'
                head = f'<link rel="next" href="/forum/thread/{t}?page={page + 1}">'
            return self.send(h, _page(f"Thread {t} page {page}", posts + nav, head))
        if p == GUIDE_TXT:
            from guide_texts import ASSEMBLY_GUIDE_REPOST

            return self.send(h, ASSEMBLY_GUIDE_REPOST.encode(), "text/plain; charset=utf-8")
        if p in MODELS:
            return self.send(h, MODELS[p], "application/octet-stream")
        if p == MODEL_PAGE:
            import hashlib

            v2 = hashlib.sha256(PAGE_MODEL).hexdigest()[:10].upper()
            body = (
                '<table class="file-details"><tr><td>AutoV2</td>'
                f"<td><code>{v2}</code></td></tr></table>"
            )
            return self.send(h, _page("Portrait LoRA v2 (model page)", body))
        if p == "/gallery/":
            body = "".join(
                f'<a href="{self.imagehost}/view/{n}"><img src="/img/thumb/{n}.jpg" '
                f'srcset="/img/thumb/{n}.jpg 1x, /img/thumb/{n}.jpg?2x 2x"></a>'
                for n in GALLERY
            )
            return self.send(h, _page("Gallery", body))
        return self.hostile(h, p, q)

    def hostile(self, h: BaseHTTPRequestHandler, p: str, q: dict[str, str]) -> None:
        if p in ("/loop/a", "/loop/b"):
            other = "/loop/b" if p == "/loop/a" else "/loop/a"
            body = f'<a href="{other}">other</a><a href="{p}#self">self</a><a href="./a">a</a>'
            return self.send(h, _page("loop", body))
        if p == "/cal":
            month = int(q.get("month", "0"))
            body = f'<a href="/cal?month={month + 1}">next month</a>'
            body += f'<a href="/cal?month={month - 1}">previous month</a>'
            return self.send(h, _page(f"calendar {month}", body))
        if p == "/many":
            body = "".join(f'<a href="/many/{i}">{i}</a>' for i in range(10_000))
            return self.send(h, _page("many links", body))
        if p.startswith("/many/"):
            return self.send(h, _page("leaf", ""))
        if p == "/huge":
            # declares 2 GB: refused up front, nothing read
            h.send_response(200)
            h.send_header("Content-Type", "text/html")
            h.send_header("Content-Length", str(2 * 1024**3))
            h.end_headers()
            h.wfile.write(b"<html>" + b" " * 65536)
            return None
        if p == "/endless":
            # no length, streams until the reader gives up
            h.send_response(200)
            h.send_header("Content-Type", "text/html")
            h.send_header("Connection", "close")
            h.end_headers()
            chunk = b"<p>filler</p>" * 5000
            try:
                for _ in range(20_000):
                    h.wfile.write(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass
            return None
        if p == "/slow":
            h.send_response(200)
            h.send_header("Content-Type", "text/html")
            h.send_header("Content-Length", "100000")
            h.end_headers()
            try:
                for _ in range(60):
                    h.wfile.write(b" ")
                    h.wfile.flush()
                    time.sleep(0.5)
            except (BrokenPipeError, ConnectionResetError):
                pass
            return None
        if p == "/bomb":
            body = gzip.compress(b"<html>" + b"\0" * (200 * 1024 * 1024), compresslevel=9)
            return self.send(h, body, "text/html", headers={"Content-Encoding": "gzip"})
        if p == "/wrongtype":
            # an HTML page that says it is an image, and an image that says it is HTML
            body = '<a href="/wrongtype/img">picture</a>'
            return self.send(h, _page("wrong type", body), "image/jpeg")
        if p == "/wrongtype/img":
            return self.send(h, IMAGES.full["coffee"], "text/html")
        if p == "/malformed":
            body = (
                b"<html><body><div><a href='/malformed/ok'>ok<p><a href=/malformed/bare>b"
                b"<img src='/img/thumb/n1.jpg'<<<<><a href=\"/malformed/x\"><table><tr><td>"
                b"\xff\xfe<!-- unterminated comment <a href='/never'>"
            )
            return self.send(h, body)
        if p.startswith("/malformed/"):
            return self.send(h, _page("ok", ""))
        if p == "/odd/dir/page":
            body = (
                '<base href="../base/">'
                '<a href="rel">relative to base</a>'
                '<a href="../../up">dots past the root</a>'
                '<a href="?q=1">query only</a>'
                f'<a href="//127.0.0.1:{self.port}/odd/netpath">network path</a>'
                '<a href="  /odd/spaced  ">spaces</a>'
                '<a href="javascript:alert(1)">js</a>'
                '<a href="data:text/html,hi">data</a>'
                '<a href="file:///etc/passwd">file</a>'
                '<a href="mailto:x@example.org">mail</a>'
                '<a href="http://[::1">broken</a>'
                '<a href="http://127.0.0.1:99999/bad-port">bad port</a>'
            )
            return self.send(h, _page("odd", body))
        if p.startswith("/odd/") or p in ("/up", "/base/rel"):
            return self.send(h, _page("odd leaf", ""))
        if p == "/to-private":
            body = '<a href="/redirect-private">x</a><a href="/redirect-metadata">y</a>'
            return self.send(h, _page("redirects", body))
        if p == "/redirect-private":
            return self.send(h, b"", status=302, headers={"Location": "http://10.1.2.3/admin"})
        if p == "/redirect-metadata":
            return self.send(
                h, b"", status=302, headers={"Location": "http://169.254.169.254/latest/"}
            )
        if p == "/bench/media":
            # a page of 20 distinct small images (for bench/crawl.py's media rate)
            k = int(q.get("p", "0"))
            body = "".join(f'<img src="/bench/img/{k}-{i}.png">' for i in range(20))
            body += f'<a href="/bench/media?p={k + 1}">next</a>'
            return self.send(h, _page(f"media {k}", body))
        if p.startswith("/bench/img/"):
            n = int(p.rsplit("/", 1)[1].split("-")[1].split(".")[0])
            return self.send(h, IMAGES.small[n % len(IMAGES.small)], "image/png")
        if p == "/bigsite":
            # ?m=K: K images a page too (their own URLs), and the links keep m
            n, m = int(q.get("n", "0")), min(int(q.get("m", "0")), 20)
            width = 5
            more = f"&amp;m={m}" if m else ""
            body = "".join(
                f'<a href="/bigsite?n={n * width + i + 1}{more}">p</a>' for i in range(width)
            )
            body += "".join(f'<img src="/bigsite/img/{n}-{i}.png">' for i in range(m))
            return self.send(h, _page(f"page {n}", body))
        if p.startswith("/bigsite/img/"):
            n = int(p.rsplit("/", 1)[1].split("-")[1].split(".")[0])
            return self.send(h, IMAGES.small[n % len(IMAGES.small)], "image/png")
        return self.send(h, _page("not found", ""), status=404)


def main() -> None:
    """Serve the site in its own process (bench/crawl.py): print the port, serve until stdin
    closes."""
    import sys

    _ = IMAGES.small, IMAGES.full, IMAGES.thumb
    site = Site()
    print(site.port, flush=True)
    sys.stdin.read()
    site.stop()


if __name__ == "__main__":
    main()
