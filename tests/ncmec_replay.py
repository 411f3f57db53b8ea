"""A local NCMEC-shaped hash sharing server for the ``ncmec`` exchange's contract tests and
``bench/exchange.py``: a real HTTP server on 127.0.0.1 (ThreadingHTTPServer) answering the
XML shapes python-threatexchange's ``NCMECHashAPI`` client reads (``<queryResult>``,
``<images count maxTimestamp>``, ``<image>``/``<deletedImage>``, ``<fingerprints>``,
``<paging><next>``, ``<status>``, ``<availableFeedbackReasons>``) under a base path
(``/hashsharing``), with HTTP basic auth and a switch for each pitfall of the real API.

Entries are benign stand-ins: ids ``e<n>``, hashes derived from counters with SHA-256 / MD5.

* Entries of a window ``[from, to)`` are served **newest first** (not in time order).
* ``next`` links are ``/v2/entries?from=..&to=..&start=..&size=..&max=..``; a link is only
  answered with exactly the from/to it was issued with (else 400, as NCMEC's #1744
  behaviour), and :meth:`Replay.expire_links` makes every link issued so far answer 410.
* Switches: ``fail`` (a queue of ``(status, headers)`` answers: 429 with Retry-After, 5xx),
  ``repeat_page`` (every page's ``next`` is the link just fetched), ``body`` (a fixed answer:
  malformed XML, an entity attack), ``huge_page`` (a 100 MB answer), ``users`` (basic auth).
* Feedback: ``PUT /v2/entries/{esp}/{entry}/{FP}/feedback`` is recorded in ``feedback``
  (the latest vote per ``(esp, entry, FP)``, as a PUT sets it) and ``feedback_log``.

Run alone (the bench does): ``python tests/ncmec_replay.py --synthetic N`` prints
``PORT <n>`` and serves until killed; ``POST /_replay/add?n=K`` adds K new entries stamped
10 s ago.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import sys
import threading
import time
from bisect import bisect_left
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit
from xml.sax.saxutils import escape

NS = "https://hashsharing.ncmec.org/hashsharing/v2"
BASE_PATH = "/hashsharing"
MEMBERS = {42: "Example Member", 43: "Example Member2"}


def iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> int:
    value = text.strip()
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    when = datetime.fromisoformat(value)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp())


def stand_in_md5(n: int) -> str:
    return hashlib.md5(f"stand-in {n}".encode()).hexdigest()


def stand_in_pdq(n: int) -> str:
    return hashlib.sha256(f"stand-in pdq {n}".encode()).hexdigest()


@dataclass
class ReplayEntry:
    id: str
    ts: int
    member_id: int = 42
    entry_type: str = "image"
    deleted: bool = False
    classification: str | None = "A1"
    #: element name -> value; a value starting with ``href:`` is rendered as a link
    fingerprints: dict[str, str] = field(default_factory=dict)

    def xml(self) -> str:
        tag = ("deleted" + self.entry_type.capitalize()) if self.deleted else self.entry_type
        name = escape(MEMBERS.get(self.member_id, f"Member {self.member_id}"))
        parts = [
            f'<{tag}><member id="{self.member_id}">{name}</member>',
            f"<timestamp>{iso(self.ts)}</timestamp><id>{escape(self.id)}</id>",
        ]
        if not self.deleted:
            if self.classification:
                parts.append(f"<classification>{escape(self.classification)}</classification>")
            parts.append("<fingerprints>")
            for k, v in self.fingerprints.items():
                if v.startswith("href:"):
                    parts.append(f'<{k} rel="self" href="{escape(v[5:])}"/>')
                else:
                    parts.append(f"<{k}>{escape(v)}</{k}>")
            parts.append("</fingerprints>")
        parts.append(f"</{tag}>")
        return "".join(parts)


def synthetic_entry(i: int, ts: int, pdq_only: bool = False) -> ReplayEntry:
    prints = (
        {"pdq": stand_in_pdq(i)} if pdq_only else {"md5": stand_in_md5(i), "pdq": stand_in_pdq(i)}
    )
    return ReplayEntry(
        f"e{i}",
        ts,
        member_id=42 if i % 3 else 43,
        classification="A1" if i % 2 else "B1",
        fingerprints=prints,
    )


class Source:
    """The entries: ``synthetic`` generated ones (entry i stamped ``t0 + i * span // n``,
    made on demand: a million cost no memory) and explicit ``extra`` ones."""

    def __init__(
        self, synthetic: int = 0, t0: int = 0, span: int = 1, pdq_only: bool = False
    ) -> None:
        self.n, self.t0, self.span = synthetic, t0, max(1, span)
        self.pdq_only = pdq_only
        self.extra: list[ReplayEntry] = []
        self._extra_ts: list[int] = []
        self.lock = threading.Lock()

    def add(self, *entries: ReplayEntry) -> None:
        with self.lock:
            self.extra.extend(entries)
            self.extra.sort(key=lambda e: e.ts)
            self._extra_ts = [e.ts for e in self.extra]

    def _first_at(self, ts: int) -> int:
        """The first synthetic index stamped >= ts."""
        if ts <= self.t0:
            return 0
        need = (ts - self.t0) * self.n
        return min(self.n, -(-need // self.span))

    def page(self, frm: int, to: int, offset: int, size: int) -> tuple[list[ReplayEntry], int]:
        """Entries ``offset .. offset + size`` of the window ``[frm, to)`` and how many it
        holds, newest first (NCMEC does not answer in time order)."""
        lo, hi = self._first_at(frm), self._first_at(to)
        with self.lock:
            a, b = bisect_left(self._extra_ts, frm), bisect_left(self._extra_ts, to)
            extras = self.extra[a:b][::-1]
        total = len(extras) + hi - lo
        out = extras[offset : offset + size]
        skip = max(0, offset - len(extras))
        for p in range(skip, min(hi - lo, skip + size - len(out))):
            i = hi - 1 - p
            out.append(synthetic_entry(i, self.t0 + i * self.span // self.n, self.pdq_only))
        return out, total


class Replay:
    """The server's state and switches (see the module docstring)."""

    def __init__(self, source: Source | None = None, page_size: int = 1000) -> None:
        self.source = source or Source()
        self.page_size = page_size
        self.users: dict[str, str] = {"tipline-user": "stand-in-password"}
        self.fail: list[tuple[int, dict[str, str]]] = []
        self.repeat_page = False
        self.body: bytes | None = None
        self.huge_page = False
        self.reasons: dict[str, list[tuple[str, str]]] = {
            "MD5": [("01234567-abcd-0123-4567-012345678900", "Example Reason 1")],
            "PDQ": [
                ("01234567-abcd-0123-4567-012345678901", "Not the described content"),
                ("01234567-abcd-0123-4567-012345678902", "Not a match"),
            ],
        }
        self.feedback: dict[tuple[int, str, str], tuple[str, tuple[str, ...]]] = {}
        self.feedback_log: list[tuple[str, str]] = []
        #: (method, path with query, user) of every request
        self.requests: list[tuple[str, str, str]] = []
        #: issued link -> generation; links of older generations are expired
        self.links: dict[str, int] = {}
        self.generation = 0
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    # -- controls -----------------------------------------------------------------------

    def expire_links(self) -> None:
        with self.lock:
            self.generation += 1

    def entry_requests(self) -> list[str]:
        return [p for m, p, _ in self.requests if m == "GET" and "/v2/entries" in p]

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}{BASE_PATH}"

    def start(self, port: int = 0) -> Replay:
        self.server = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    # -- answers ------------------------------------------------------------------------

    def entries_page(self, query: dict[str, list[str]]) -> tuple[int, bytes]:
        try:
            frm_text, to_text = query["from"][0], query["to"][0]
            frm, to = parse_iso(frm_text), parse_iso(to_text)
        except (KeyError, ValueError, IndexError):
            return 400, b"<error>from and to are required</error>"
        start = 1
        if "start" in query:
            link = _link(frm_text, to_text, query)
            with self.lock:
                gen = self.links.get(link)
                current = self.generation
            if gen is None:
                return 400, b"<error>paging link not valid with this from/to</error>"
            if gen < current:
                return 410, b"<error>paging link expired</error>"
            start = int(query["start"][0])
        entries, total = self.source.page(frm, to, start - 1, self.page_size)
        nxt = ""
        if start - 1 + self.page_size < total:
            args = {
                "start": [str(start + self.page_size)],
                "size": [str(self.page_size)],
                "max": [str(total)],
            }
            nxt = _link(frm_text, to_text, args)
            with self.lock:
                self.links[nxt] = self.generation
        if self.repeat_page and "start" in query:
            nxt = _link(frm_text, to_text, query)
        return 200, render_query_result(entries, nxt)


def _link(frm: str, to: str, query: dict[str, list[str]]) -> str:
    return (
        f"/v2/entries?from={quote(frm)}&to={quote(to)}&start={query['start'][0]}"
        f"&size={query['size'][0]}&max={query['max'][0]}"
    )


def render_query_result(entries: list[ReplayEntry], next_link: str = "") -> bytes:
    """A ``<queryResult>`` page as NCMEC shapes it."""
    out = [f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><queryResult xmlns="{NS}">']
    for kind in ("image", "video"):
        group = [e for e in entries if e.entry_type == kind]
        if group:
            top = max(e.ts for e in group)
            out.append(f'<{kind}s count="{len(group)}" maxTimestamp="{iso(top)}">')
            out.extend(e.xml() for e in group)
            out.append(f"</{kind}s>")
        else:
            out.append(f'<{kind}s count="0"/>')
    if next_link:
        out.append(f"<paging><next>{escape(next_link)}</next></paging>")
    out.append("</queryResult>")
    return "".join(out).encode()


def _handler(replay: Replay) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, code: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(code)
            self.send_header("Content-Type", "application/xml")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _user(self) -> str | None:
            auth = self.headers.get("Authorization", "")
            if not auth.startswith("Basic "):
                return None
            try:
                user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            except ValueError:
                return None
            return user if replay.users.get(user) == password and password else None

        def _route(self, method: str) -> None:
            parts = urlsplit(self.path)
            user = self._user()
            replay.requests.append((method, self.path, user or ""))
            if parts.path == "/_replay/add" and method == "POST":  # the bench's control
                n = int(parse_qs(parts.query).get("n", ["1000"])[0])
                src = replay.source
                now = int(time.time()) - 10
                first = src.n + len(src.extra)
                src.add(*(synthetic_entry(first + k, now, src.pdq_only) for k in range(n)))
                self._send(200, b"<added/>")
                return
            if not parts.path.startswith(BASE_PATH + "/"):
                self._send(404, b"<error>not found</error>")
                return
            path = parts.path[len(BASE_PATH) :]
            if user is None:
                self._send(401, b"<error>unauthorized</error>", {"WWW-Authenticate": "Basic"})
                return
            if method == "GET" and path == "/v2/status":
                body = (
                    f'<?xml version="1.0" encoding="UTF-8"?><status xmlns="{NS}">'
                    f"<ipAddress>127.0.0.1</ipAddress><username>{escape(user)}</username>"
                    f'<member id="1">Stand-in Hotline</member></status>'
                )
                self._send(200, body.encode())
                return
            if method == "GET" and path.startswith("/v2/feedback/") and path.endswith("/reasons"):
                fp = path.split("/")[3]
                items = "".join(
                    f'<reason guid="{g}" name="{escape(n)}" type="{fp}"/>'
                    for g, n in replay.reasons.get(fp, [])
                )
                body = f'<availableFeedbackReasons xmlns="{NS}">{items}</availableFeedbackReasons>'
                self._send(200, body.encode())
                return
            if method == "PUT" and path.startswith("/v2/entries/") and path.endswith("/feedback"):
                self._feedback(path)
                return
            if method == "GET" and path == "/v2/entries":
                self._entries(parse_qs(parts.query))
                return
            self._send(404, b"<error>not found</error>")

        def _entries(self, query: dict[str, list[str]]) -> None:
            if replay.fail:
                code, headers = replay.fail.pop(0)
                self._send(code, b"<error>try later</error>", headers)
                return
            if replay.huge_page:
                size = 100 * 1024 * 1024
                self.send_response(200)
                self.send_header("Content-Length", str(size))
                self.end_headers()
                chunk = b"<!-- padding -->" * 4096
                try:
                    for _ in range(size // len(chunk)):
                        self.wfile.write(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                return
            if replay.body is not None:
                self._send(200, replay.body)
                return
            code, body = replay.entries_page(query)
            self._send(code, body)

        def _feedback(self, path: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode("utf-8", "replace")
            if replay.fail:
                code, headers = replay.fail.pop(0)
                self._send(code, b"<error>try later</error>", headers)
                return
            segs = path.split("/")  # ['', 'v2', 'entries', esp, entry, FP, 'feedback']
            esp, entry, fp = segs[3], segs[4], segs[5]
            replay.feedback_log.append((path, body))
            if "<affirmative" in body:
                vote: tuple[str, tuple[str, ...]] = ("affirmative", ())
            elif "<negative" in body:
                guids = tuple(part.split("</guid>", 1)[0] for part in body.split("<guid>")[1:])
                vote = ("negative", guids)
            else:
                self._send(400, b"<error>no vote</error>")
                return
            replay.feedback[(int(esp), entry, fp)] = vote
            self._send(200, f'<submissionResult xmlns="{NS}"/>'.encode())

        def do_GET(self) -> None:
            self._route("GET")

        def do_PUT(self) -> None:
            self._route("PUT")

        def do_POST(self) -> None:
            self._route("POST")

    return Handler


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--synthetic", type=int, default=0, help="generated entries")
    ap.add_argument("--days", type=float, default=10.0, help="they span this many days")
    ap.add_argument("--page-size", type=int, default=1000)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--pdq-only", action="store_true", help="entries with a PDQ only")
    args = ap.parse_args(argv)
    now = int(time.time())
    span = int(args.days * 86400)
    t0 = now - 3600 - span
    replay = Replay(Source(args.synthetic, t0, span, args.pdq_only), args.page_size).start(
        args.port
    )
    assert replay.server is not None
    print(f"PORT {replay.server.server_address[1]} T0 {t0}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        replay.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
