"""Operations: Prometheus metrics, structured JSON logs with a request id, health and readiness.

* ``GET /metrics`` -- Prometheus text format: ``tipline_http_requests_total`` and
  ``tipline_http_request_seconds`` by method, route template and status;
  ``tipline_matches_total`` by bank; ``tipline_index_entries``; ``tipline_index_loaded``;
  ``tipline_crawls`` by state, ``tipline_crawl_pages`` / ``tipline_crawl_media`` by outcome and
  ``tipline_crawl_bytes`` (read from the database at each scrape).
  Metrics are per process (scrape each API process, or put them behind one port each).
* ``GET /healthz`` -- liveness: the process answers (200 ``{"status": "ok"}``).
* ``GET /readyz`` -- readiness: the database answers and the match index is loaded
  (200, else 503 with the failing checks).
* Logs: one JSON object per line on stderr (``ts``, ``level``, ``logger``, ``msg``,
  ``request_id`` and any ``extra`` fields); every request logs method, route, status and ms.
  A client's ``X-Request-ID`` is kept (sanitised), else one is made; it is echoed in the response.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from tipline.service.matching import MatchService

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
access_log = logging.getLogger("tipline.access")
log = logging.getLogger("tipline.service")
_RID_OK = re.compile(r"[A-Za-z0-9._:-]{1,64}")


# ------------------------------------------------------------------------------------ logging

_STD_ATTRS = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record; ``extra={...}`` fields are kept as keys."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = request_id_var.get()
        if rid:
            out["request_id"] = rid
        for k, v in record.__dict__.items():
            if k not in _STD_ATTRS and not k.startswith(("_", "color_")):
                out[k] = v if isinstance(v, str | int | float | bool | None) else str(v)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def configure_logging(level: str = "info", json_logs: bool = True) -> None:
    """Route the ``tipline`` loggers (and uvicorn's) to stderr, JSON or plain."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if json_logs else logging.Formatter("%(levelname)s %(name)s %(message)s")
    )
    for name in ("tipline", "uvicorn", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers[:] = [handler]
        lg.setLevel(level.upper())
        lg.propagate = False
    logging.getLogger("uvicorn.access").disabled = True  # our access log replaces it


# ------------------------------------------------------------------------------------ metrics


class Metrics:
    """One registry per app, so several apps (tests) never collide. With several API
    processes (``PROMETHEUS_MULTIPROC_DIR`` set by ``tipline serve --workers N``), every
    process writes its values to files there and ``/metrics`` reports the sum of all of them,
    whichever process answers."""

    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "tipline_http_requests",
            "HTTP requests by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "tipline_http_request_seconds",
            "HTTP request latency by method and route template",
            ["method", "route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
            registry=self.registry,
        )
        self.matches = Counter(
            "tipline_matches", "Matches returned, by bank", ["bank"], registry=self.registry
        )
        self.index_entries = Gauge(
            "tipline_index_entries",
            "Enabled entries in the match index",
            registry=self.registry,
            multiprocess_mode="max",
        )
        self.index_loaded = Gauge(
            "tipline_index_loaded",
            "1 when the match index is loaded",
            registry=self.registry,
            multiprocess_mode="min",
        )
        # crawls run in worker processes: these are read from the database at each scrape
        self.crawls = Gauge(
            "tipline_crawls",
            "Crawls by state",
            ["state"],
            registry=self.registry,
            multiprocess_mode="max",
        )
        self.crawl_pages = Gauge(
            "tipline_crawl_pages",
            "Pages crawled, by outcome (done, failed, queued: the frontier)",
            ["outcome"],
            registry=self.registry,
            multiprocess_mode="max",
        )
        self.crawl_media = Gauge(
            "tipline_crawl_media",
            "Media files crawled, by outcome (hashed, matched, flagged, kept)",
            ["outcome"],
            registry=self.registry,
            multiprocess_mode="max",
        )
        self.crawl_bytes = Gauge(
            "tipline_crawl_bytes",
            "Bytes fetched by crawls",
            registry=self.registry,
            multiprocess_mode="max",
        )

    def exposition(self) -> bytes:
        """The Prometheus text of this process, or of all processes in multiprocess mode."""
        if not self.multiprocess:
            return bytes(generate_latest(self.registry))
        from prometheus_client import multiprocess

        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        return bytes(generate_latest(merged))

    def count_matches(self, banks: list[str]) -> None:
        if not banks:
            return
        counts: dict[str, int] = {}
        for b in banks:
            counts[b] = counts.get(b, 0) + 1
        for b, n in counts.items():  # one labelled counter update per bank, not per match
            self.matches.labels(bank=b).inc(n)


class RequestMiddleware:
    """Request id, access log line and metrics, as plain ASGI (cheap on the lookup path)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = ""
        for k, v in scope.get("headers", ()):
            if k == b"x-request-id":
                cand = v.decode("latin-1")
                rid = cand if _RID_OK.fullmatch(cand) else ""
                break
        rid = rid or uuid.uuid4().hex
        token = request_id_var.set(rid)
        status = 500
        counted = False
        t0 = time.perf_counter()
        method = scope.get("method", "")

        def count() -> None:
            # Counted before the response starts, so a client that has its answer never scrapes
            # a total without it (another process's /metrics included).
            nonlocal counted
            if not counted:
                counted = True
                template = getattr(scope.get("route"), "path", None) or "<unmatched>"
                self.metrics.requests.labels(method, template, str(status)).inc()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", rid.encode()))
                message = {**message, "headers": headers}
                count()
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - t0
            route = scope.get("route")
            template = getattr(route, "path", None) or "<unmatched>"
            count()
            self.metrics.latency.labels(method, template).observe(elapsed)
            if access_log.isEnabledFor(logging.INFO):
                access_log.info(
                    "request",
                    extra={
                        "method": method,
                        "route": template,
                        "path": scope.get("path", "")[:200],
                        "status": status,
                        "ms": round(elapsed * 1000, 2),
                    },
                )
            request_id_var.reset(token)


# ------------------------------------------------------------------------------------ routes


def _crawl_gauges(metrics: Metrics, factory: sessionmaker[Session]) -> None:
    from tipline.service.crawls_api import crawl_metrics_cached

    try:  # cached a few seconds: a scrape storm does not query the database each time
        m = crawl_metrics_cached(factory)
    except SQLAlchemyError:  # the database is away: the scrape still answers
        log.warning("metrics: crawl counts unavailable (database error)")
        return
    for state in ("queued", "running", "done", "stopped", "failed", *m["crawls"]):
        metrics.crawls.labels(state=state).set(m["crawls"].get(state, 0))
    for outcome, n in (*m["pages"].items(), ("queued", m["frontier"])):
        metrics.crawl_pages.labels(outcome=outcome).set(n)
    for outcome, n in m["media"].items():
        metrics.crawl_media.labels(outcome=outcome).set(n)
    metrics.crawl_bytes.set(m["bytes"])


def router(
    matcher: MatchService, metrics: Metrics, factory: sessionmaker[Session] | None = None
) -> APIRouter:
    r = APIRouter(tags=["operations"])

    @r.get("/metrics", include_in_schema=False, dependencies=[])
    def get_metrics() -> Response:
        metrics.index_entries.set(matcher.index_size())
        metrics.index_loaded.set(1 if matcher.loaded else 0)
        if factory is not None:
            _crawl_gauges(metrics, factory)
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @r.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @r.get("/readyz")
    def readyz(request: Request) -> JSONResponse:
        checks: dict[str, str] = {}
        try:
            matcher.ping()
            checks["database"] = "ok"
        except Exception as err:  # any failure means "not ready"; the reason is shown
            checks["database"] = f"error: {type(err).__name__}: {str(err)[:200]}"
        checks["index"] = "ok" if matcher.loaded else "not loaded"
        ready = all(v == "ok" for v in checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "checks": checks},
            status_code=200 if ready else 503,
        )

    return r


PUBLIC_ROUTES = ("/metrics", "/healthz", "/readyz", "/status", "/status/live")
