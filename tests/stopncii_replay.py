"""A local StopNCII-shaped hash API for the ``stop_ncii`` exchange's contract tests: a real
HTTP server on 127.0.0.1 (ThreadingHTTPServer) under ``/v1``, answering the JSON shapes
python-threatexchange's ``StopNCIIAPI`` client reads, with the headers checked and a switch
for each fault.

Records are benign stand-ins: hashes derived from counters with SHA-256 / MD5.

* ``GET /v1/FetchHashes?startTimestamp=&pageSize=&nextPageToken=``: the records with
  ``lastModtimestamp >= startTimestamp`` in (time, key) order, ``pageSize`` at a time; a page
  token is only valid with the ``startTimestamp`` it was issued for (else 400). The last page
  of a set has ``hasMoreRecords`` false and ``nextSetTimestamp`` one past its newest record.
  A record changed again (a withdrawal) replaces the old version, as StopNCII's records do.
* Keys: ``Ocp-Apim-Subscription-Key`` must be :attr:`Replay.subscription_key` (else 401) and
  ``x-functions-key`` the endpoint's function key (else 403).
* Switches: ``fail`` (a queue of ``(status, headers)`` answers: 429 with Retry-After, 5xx),
  ``repeat_token`` (every page names the token it was asked with, the first page a fixed one),
  ``body`` (a fixed answer: malformed JSON, a list, wrong types), ``huge_page`` (100 MB).
* ``POST /v1/SubmitFeedback``: each body in ``feedback_log``; the latest
  ``(feedbackValue, tags)`` per ``(signalType, hashValue)`` in ``feedback``.
* ``POST /v1/SubmitHashes`` (its own function key): the body's shape is checked (``count``
  equal to the records, each with an integer ``lastModtimestamp``, a known ``signalType``, a
  ``hashValue`` string and ``CSPFeedbacks`` of ``{feedbackValue, tags}``; else 400), each
  body in ``submit_log``, the latest ``(feedbackValue, tags)`` per ``(signalType,
  hashValue)`` in ``submitted``; with ``publish_submissions`` a submitted hash is also a
  record the next FetchHashes lists (as StopNCII shares CSPs' hashes), status Active.
* Every request: ``(method, path with query, headers)`` in ``requests``.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

BASE_PATH = "/v1"
SUBSCRIPTION_KEY = "stand-in-subscription"
FETCH_KEY = "stand-in-fetch-key"
FEEDBACK_KEY = "stand-in-feedback-key"
SUBMIT_KEY = "stand-in-submit-key"
SIGNAL_TYPES = ("ImagePDQ", "VideoMD5", "VideoTMK", "Text", "URL")


def stand_in_pdq(n: int) -> str:
    return hashlib.sha256(f"stand-in ncii pdq {n}".encode()).hexdigest()


def stand_in_md5(n: int) -> str:
    return hashlib.md5(f"stand-in ncii md5 {n}".encode()).hexdigest()


@dataclass
class HashRec:
    ts: int
    hash_value: str
    signal_type: str = "ImagePDQ"
    status: str = "Active"
    cases: dict[str, str] = field(default_factory=lambda: {"case-1": "Active"})

    @property
    def key(self) -> tuple[str, str]:
        return (self.signal_type, self.hash_value)

    def doc(self) -> dict[str, Any]:
        return {
            "lastModtimestamp": self.ts,
            "signalType": self.signal_type,
            "hashValue": self.hash_value,
            "hashStatus": self.status,
            "caseNumbers": dict(self.cases),
            "CSPFeedbacks": [],
        }


class Replay:
    """The server's state and switches (see the module docstring)."""

    def __init__(self, page_size_cap: int = 800) -> None:
        self.records: dict[tuple[str, str], HashRec] = {}
        #: extra raw items (hostile records) served at the head of every set
        self.raw_items: list[Any] = []
        self.page_size_cap = page_size_cap
        self.subscription_key = SUBSCRIPTION_KEY
        self.function_keys = {
            "FetchHashes": FETCH_KEY,
            "SubmitFeedback": FEEDBACK_KEY,
            "SubmitHashes": SUBMIT_KEY,
        }
        self.fail: list[tuple[int, dict[str, str]]] = []
        self.repeat_token = False
        self.body: bytes | None = None
        self.huge_page = False
        self.feedback: dict[tuple[str, str], tuple[str, tuple[str, ...]]] = {}
        self.feedback_log: list[dict[str, Any]] = []
        self.submitted: dict[tuple[str, str], tuple[str, tuple[str, ...]]] = {}
        self.submit_log: list[dict[str, Any]] = []
        self.publish_submissions = False
        #: the lastModtimestamp a published submission gets (then one more each)
        self.publish_ts = 1_000_000
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        #: issued token -> (startTimestamp, offset)
        self.tokens: dict[str, tuple[int, int]] = {}
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    def add(self, *recs: HashRec) -> None:
        with self.lock:
            for r in recs:
                self.records[r.key] = r

    def remove(self, *keys: tuple[str, str]) -> None:
        """Forget records outright (no withdrawal: they just stop being listed)."""
        with self.lock:
            for k in keys:
                self.records.pop(k, None)

    def fetch_requests(self) -> list[dict[str, list[str]]]:
        return [parse_qs(urlsplit(p).query) for m, p, _ in self.requests if "/FetchHashes" in p]

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}{BASE_PATH}"

    def start(self) -> Replay:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def page(self, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        try:
            start = int(query["startTimestamp"][0])
            size = max(1, min(self.page_size_cap, int(query["pageSize"][0])))
        except (KeyError, ValueError, IndexError):
            return 400, {"error": "startTimestamp and pageSize are required"}
        token = (query.get("nextPageToken") or [""])[0]
        offset = 0
        if token:
            with self.lock:
                issued = self.tokens.get(token)
            if issued is None or issued[0] != start:
                return 400, {"error": "nextPageToken is not valid with this startTimestamp"}
            offset = issued[1]
        with self.lock:
            items: list[Any] = list(self.raw_items)
            recs = sorted(
                (r for r in self.records.values() if r.ts >= start),
                key=lambda r: (r.ts, r.key),
            )
            items.extend(r.doc() for r in recs)
        chunk = items[offset : offset + size]
        more = offset + size < len(items)
        nxt = ""
        if more:
            nxt = f"tok-{start}-{offset + size}"
            with self.lock:
                self.tokens[nxt] = (start, offset + size)
        if self.repeat_token:
            more, nxt = True, token or "tok-repeat"
            with self.lock:
                self.tokens[nxt] = (start, offset)
        newest = max((r.ts for r in recs), default=start - 1)
        return 200, {
            "count": len(chunk),
            "nextPageToken": nxt,
            "nextSetTimestamp": None if more else newest + 1,
            "hasMoreRecords": more,
            "hashRecords": chunk,
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
            replay.requests.append((method, self.path, dict(self.headers.items())))
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if not parts.path.startswith(BASE_PATH + "/"):
                self._send(404, {"error": "not found"})
                return
            endpoint = parts.path[len(BASE_PATH) + 1 :]
            if self.headers.get("Ocp-Apim-Subscription-Key") != replay.subscription_key:
                self._send(401, {"error": "bad subscription key"})
                return
            want = replay.function_keys.get(endpoint)
            if want is None:
                self._send(404, {"error": "no such endpoint"})
                return
            if self.headers.get("x-functions-key") != want:
                self._send(403, {"error": "bad function key"})
                return
            if replay.fail:
                code, headers = replay.fail.pop(0)
                self._send(code, {"error": "try later"}, headers)
                return
            if endpoint == "FetchHashes" and method == "GET":
                self._fetch(parse_qs(parts.query))
            elif endpoint == "SubmitFeedback" and method == "POST":
                self._feedback(body)
            elif endpoint == "SubmitHashes" and method == "POST":
                self._submit(body)
            else:
                self._send(405, {"error": "method not allowed"})

        def _fetch(self, query: dict[str, list[str]]) -> None:
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
            code, doc = replay.page(query)
            self._send(code, doc)

        def _feedback(self, body: bytes) -> None:
            try:
                doc = json.loads(body)
                items = doc["hashFeedbacks"]
                assert isinstance(items, list) and doc["count"] == len(items)
                votes = [
                    (
                        (str(i["signalType"]), str(i["hashValue"])),
                        (str(i["feedbackValue"]), tuple(i["tags"])),
                    )
                    for i in items
                ]
            except (ValueError, KeyError, TypeError, AssertionError):
                self._send(400, {"error": "bad feedback body"})
                return
            replay.feedback_log.append(doc)
            for k, v in votes:
                replay.feedback[k] = v
            self._send(200, {"count": len(votes)})

        def _submit(self, body: bytes) -> None:
            try:
                doc = json.loads(body)
                items = doc["hashRecords"]
                assert isinstance(items, list) and doc["count"] == len(items)
                got = []
                for i in items:
                    assert isinstance(i["lastModtimestamp"], int)
                    assert i["signalType"] in SIGNAL_TYPES
                    assert isinstance(i["hashValue"], str) and i["hashValue"]
                    [fb] = i["CSPFeedbacks"]
                    assert isinstance(fb["feedbackValue"], str)
                    assert all(isinstance(t, str) for t in fb["tags"])
                    got.append(
                        (
                            (i["signalType"], i["hashValue"]),
                            (fb["feedbackValue"], tuple(fb["tags"])),
                        )
                    )
            except (ValueError, KeyError, TypeError, AssertionError):
                self._send(400, {"error": "bad SubmitHashes body"})
                return
            with replay.lock:
                replay.submit_log.append(doc)
                for k, v in got:
                    replay.submitted[k] = v
                    if replay.publish_submissions:
                        replay.publish_ts += 1
                        replay.records[k] = HashRec(replay.publish_ts, k[1], signal_type=k[0])
            self._send(200, {"count": len(got)})

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

    return Handler
