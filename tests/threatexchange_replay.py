"""A local ThreatExchange-shaped Graph API server for the ``fb_threatexchange`` exchange's
contract tests: a real HTTP server on 127.0.0.1 (ThreadingHTTPServer) answering
``GET /v21.0/{privacy_group}/threat_updates/`` with Graph's JSON shape (``data``, ``paging``
with ``cursors`` and a ``next`` URL that carries the access token, as Graph's does) and
``POST /v21.0/{descriptor}/reactions``, checking the ``access_token`` on every request
(Graph's ``{"error": {"message", "code": 190}}`` with HTTP 400 otherwise).

Updates are benign stand-ins: ids ``<n>``, hashes derived from counters with SHA-256 / MD5.

Switches: ``fail`` (a queue of ``(status, headers, body)`` answers: 429 with Retry-After,
5xx, a Graph error), ``body`` (a fixed answer: malformed JSON, not an object), ``next_host``
(the ``next`` link names another host), ``repeat_page`` (every page's ``next`` is the page just
fetched), ``huge_page`` (a 100 MB answer). Every request is recorded in ``requests``
(method, path with query, whether the token was good); reactions in ``reactions``.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

VERSION = "v21.0"
APP_ID, APP_SECRET = "1234567890", "stand-in-app-secret"
TOKEN = f"{APP_ID}|{APP_SECRET}"


def stand_in_md5(n: int) -> str:
    return hashlib.md5(f"te stand-in {n}".encode()).hexdigest()


def stand_in_pdq(n: int) -> str:
    return hashlib.sha256(f"te stand-in pdq {n}".encode()).hexdigest()


@dataclass
class Update:
    """One threat update; ``descriptors`` None: the field is left out."""

    id: str
    indicator: str
    type: str
    last_updated: int
    should_delete: bool = False
    descriptors: list[dict[str, Any]] | None = field(
        default_factory=lambda: [
            {
                "id": "d1",
                "owner": {"id": "555", "name": "Example Partner"},
                "tags": ["stand_in_tag"],
                "status": "MALICIOUS",
            }
        ]
    )
    #: replaces the whole JSON (wrong field types)
    raw: Any = None

    def json(self) -> Any:
        if self.raw is not None:
            return self.raw
        doc: dict[str, Any] = {
            "id": self.id,
            "indicator": self.indicator,
            "type": self.type,
            "last_updated": self.last_updated,
            "should_delete": self.should_delete,
        }
        if self.descriptors is not None:
            doc["descriptors"] = {"data": self.descriptors}
        return doc


def pdq_update(n: int, ts: int, **kw: Any) -> Update:
    descs = kw.pop("descriptors", None)
    u = Update(str(n), stand_in_pdq(n), "PDQ", ts, **kw)
    if descs is not None:
        u.descriptors = descs
    return u


class Replay:
    """The server's state and switches (see the module docstring)."""

    def __init__(self) -> None:
        #: privacy group -> updates
        self.groups: dict[str, list[Update]] = {}
        self.tokens = {TOKEN}
        self.fail: list[tuple[int, dict[str, str], bytes]] = []
        self.body: bytes | None = None
        self.next_host: str | None = None
        self.repeat_page = False
        self.huge_page = False
        #: (method, path with query, token good)
        self.requests: list[tuple[str, str, bool]] = []
        #: (descriptor id, reaction)
        self.reactions: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    def add(self, group: str, *updates: Update) -> None:
        with self.lock:
            self.groups.setdefault(group, []).extend(updates)

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def update_requests(self) -> list[str]:
        return [p for m, p, _ in self.requests if m == "GET" and "/threat_updates" in p]

    def start(self) -> Replay:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def page(self, group: str, q: dict[str, list[str]], path: str) -> bytes:
        """Updates of ``[start_time, stop_time]`` in time order, ``limit`` a page, the cursor
        ``after`` an offset (Graph's cursors are opaque: this one is too, to the client)."""
        start = int(q.get("start_time", ["0"])[0])
        stop = int(q.get("stop_time", ["9999999999"])[0])
        limit = int(q.get("limit", ["25"])[0])
        after = int(q.get("after", ["0"])[0] or 0)
        with self.lock:
            items = sorted(
                (u for u in self.groups.get(group, []) if start <= u.last_updated <= stop),
                key=lambda u: u.last_updated,
            )
        chunk = items[after : after + limit]
        doc: dict[str, Any] = {"data": [u.json() for u in chunk]}
        if after + limit < len(items):
            args = {k: v[0] for k, v in q.items()}
            args["after"] = str(after + limit)
            host = self.next_host or self.base_url
            doc["paging"] = {
                "cursors": {"before": str(after), "after": str(after + limit)},
                "next": f"{host}/{VERSION}/{group}/threat_updates/?{urlencode(args)}",
            }
        if self.repeat_page and "after" in q:
            doc["paging"] = {"next": f"{self.base_url}{path}"}
        return json.dumps(doc).encode()


def graph_error(message: str, code: int) -> bytes:
    return json.dumps(
        {"error": {"message": message, "type": "OAuthException", "code": code}}
    ).encode()


def _handler(replay: Replay) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, code: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _route(self, method: str) -> None:
            parts = urlsplit(self.path)
            q = parse_qs(parts.query, keep_blank_values=True)
            form: dict[str, list[str]] = {}
            if method == "POST":
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
            token = (q.get("access_token") or form.get("access_token") or [""])[0]
            good = token in replay.tokens
            replay.requests.append((method, self.path, good))
            if not good:
                self._send(400, graph_error("Invalid OAuth access token.", 190))
                return
            if replay.fail:
                code, headers, body = replay.fail.pop(0)
                self._send(code, body or graph_error("try later", 2), headers)
                return
            segs = parts.path.strip("/").split("/")
            if (
                method == "GET"
                and len(segs) == 3
                and segs[0] == VERSION
                and segs[2] == "threat_updates"
            ):
                self._updates(segs[1], q)
                return
            if (
                method == "POST"
                and len(segs) == 3
                and segs[0] == VERSION
                and segs[2] == "reactions"
            ):
                reaction = (form.get("reaction") or [""])[0]
                replay.reactions.append((segs[1], reaction))
                self._send(200, b'{"success": true}')
                return
            self._send(404, graph_error("Unknown path components", 2500))

        def _updates(self, group: str, q: dict[str, list[str]]) -> None:
            if replay.huge_page:
                size = 100 * 1024 * 1024
                self.send_response(200)
                self.send_header("Content-Length", str(size))
                self.end_headers()
                chunk = b" " * 65536
                try:
                    for _ in range(size // len(chunk)):
                        self.wfile.write(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                return
            if replay.body is not None:
                self._send(200, replay.body)
                return
            self._send(200, replay.page(group, q, self.path))

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

    return Handler
