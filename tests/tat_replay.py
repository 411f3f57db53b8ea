"""A local Tech Against Terrorism (TCAP) hash list for the ``tat`` exchange's contract tests: a
real HTTP server on 127.0.0.1 (ThreadingHTTPServer) answering the shapes
python-threatexchange's ``TATHashListAPI`` client reads.

* ``POST /token-auth/tcap/`` (form ``username``, ``password``, ``resend``) answers
  ``{"token": <JWT-shaped stand-in>}`` for the right user, 401 otherwise.
* ``GET /api/hash-list/v2/all?order=asc&after=<ts,id>`` (``Authorization: Bearer``) answers
  the entries after ``(ts, id)`` in (updated_on, id) order, ``page_size`` at a time, with
  ``checkpoint`` the page's last ``"ts,id"`` and ``next`` null on the last page. An entry
  changed again (a deletion) moves to its new place, as the real list's update order does.
* Switches: ``fail`` (a queue of ``(status, headers)`` answers), ``expire_tokens`` (every
  token issued so far answers 401), ``repeat_checkpoint`` (every page names the ``after`` it
  was asked with), ``body`` (a fixed answer), ``huge_page`` (100 MB).
* ``requests``: ``(method, path with query, headers, body)`` of every request.

Entries are benign stand-ins: hashes derived from counters.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

USER, PASSWORD = "tipline-tat", "stand-in-tat-password"


def stand_in_pdq(n: int) -> str:
    return hashlib.sha256(f"stand-in tat pdq {n}".encode()).hexdigest()


def stand_in_md5(n: int) -> str:
    return hashlib.md5(f"stand-in tat md5 {n}".encode()).hexdigest()


@dataclass
class TatEntry:
    id: int
    updated_on: int
    hash_digest: str
    algorithm: str = "PDQ"
    ideology: str = "islamist"
    file_type: str = "image"
    deleted: bool = False

    def doc(self) -> dict[str, Any]:
        return {
            "hash_digest": self.hash_digest,
            "algorithm": self.algorithm,
            "ideology": self.ideology,
            "file_type": self.file_type,
            "deleted": self.deleted,
            "updated_on": self.updated_on,
            "created_on": "2024-01-01T00:00:00Z",
            "id": self.id,
        }


class Replay:
    def __init__(self, page_size: int = 100) -> None:
        self.entries: dict[int, TatEntry] = {}
        self.raw_items: list[Any] = []
        self.page_size = page_size
        self.fail: list[tuple[int, dict[str, str]]] = []
        self.repeat_checkpoint = False
        self.body: bytes | None = None
        self.huge_page = False
        self.tokens: set[str] = set()
        self.issued = 0
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    def add(self, *entries: TatEntry) -> None:
        with self.lock:
            for e in entries:
                self.entries[e.id] = e

    def expire_tokens(self) -> None:
        with self.lock:
            self.tokens.clear()

    def list_requests(self) -> list[str]:
        """The ``after`` of every hash-list request."""
        return [
            (parse_qs(urlsplit(p).query).get("after") or [""])[0]
            for m, p, _, _ in self.requests
            if "/api/hash-list/" in p
        ]

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> Replay:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def page(self, after: str) -> tuple[int, dict[str, Any]]:
        pos: tuple[int, int] = (-1, -1)
        if after:
            try:
                ts, _, ident = after.partition(",")
                pos = (int(float(ts)), int(ident))
            except ValueError:
                return 400, {"error": "after must be 'ts,id'"}
        with self.lock:
            items = sorted(
                (e for e in self.entries.values() if (e.updated_on, e.id) > pos),
                key=lambda e: (e.updated_on, e.id),
            )
        chunk = items[: self.page_size]
        more = len(items) > self.page_size
        docs: list[Any] = list(self.raw_items) if not after else []
        docs.extend(e.doc() for e in chunk)
        cp = f"{chunk[-1].updated_on},{chunk[-1].id}" if chunk else after
        if self.repeat_checkpoint:
            more, cp = True, after or "1,1"
        return 200, {
            "count": len(items),
            "next": "https://tat.invalid/api/hash-list/v2/all?page=next" if more else None,
            "previous": None,
            "checkpoint": cp,
            "results": docs,
        }


def _handler(replay: Replay) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, code: int, doc: Any, headers: dict[str, str] | None = None) -> None:
            body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _route(self, method: str) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            replay.requests.append((method, self.path, dict(self.headers.items()), body))
            if replay.fail:
                code, headers = replay.fail.pop(0)
                self._send(code, {"error": "try later"}, headers)
                return
            if parts.path == "/token-auth/tcap/" and method == "POST":
                form = parse_qs(body.decode("utf-8", "replace"))
                user = (form.get("username") or [""])[0]
                password = (form.get("password") or [""])[0]
                if (user, password) != (USER, PASSWORD):
                    self._send(401, {"error": "bad credentials"})
                    return
                with replay.lock:
                    replay.issued += 1
                    token = f"eyJstand.in-{replay.issued}.sig"
                    replay.tokens.add(token)
                self._send(200, {"token": token, "user": {"username": user}})
                return
            if parts.path == "/api/hash-list/v2/all" and method == "GET":
                auth = self.headers.get("Authorization", "")
                with replay.lock:
                    ok = auth.startswith("Bearer ") and auth[7:] in replay.tokens
                if not ok:
                    self._send(401, {"error": "token not valid"})
                    return
                self._list(parse_qs(parts.query))
                return
            self._send(404, {"error": "not found"})

        def _list(self, query: dict[str, list[str]]) -> None:
            if (query.get("order") or [""])[0] != "asc":
                self._send(400, {"error": "order=asc expected"})
                return
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
            code, doc = replay.page((query.get("after") or [""])[0])
            self._send(code, doc)

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

    return Handler
