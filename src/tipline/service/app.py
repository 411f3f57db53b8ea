"""The web service: ``create_app(settings)`` builds the FastAPI app.

**Adding a router (other modules):** append one line to ``OPTIONAL_ROUTERS`` below, naming a
function ``router(ctx: AppContext) -> APIRouter`` as ``"module:function"``. Modules not present
yet are skipped, so the line can land before the module does.

What the app holds (``app.state.ctx``, an :class:`AppContext`): the settings, the database
engine and session factory (``tipline.store.base``), the :class:`MatchService` (banks plus the
live match index) and the Prometheus metrics.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from starlette.exceptions import HTTPException as StarletteHTTPException

from tipline import __version__
from tipline.errors import BankError, BankNotFoundError
from tipline.service import api_v1, hma, ops
from tipline.service.hma import HMA_PREFIXES, ApiError
from tipline.service.matching import IndexNotLoadedError, MatchService
from tipline.service.ops import Metrics, RequestMiddleware, request_id_var
from tipline.service.settings import ServiceSettings
from tipline.store.base import make_engine, session_factory

log = logging.getLogger("tipline.service")

LoadMode = Literal["background", "sync", "none"]


@dataclass(slots=True)
class AppContext:
    settings: ServiceSettings
    engine: Engine
    session_factory: sessionmaker[Session]
    matcher: MatchService
    metrics: Metrics


#: Routers of other modules, ``"module:function"``, each ``function(ctx) -> APIRouter``.
#: Append one line per router; a module that does not exist yet is skipped.
OPTIONAL_ROUTERS: list[str] = [
    "tipline.service.intake:router",
    "tipline.service.reports:router",
    "tipline.service.actions_api:router",
    "tipline.service.desk:router",
]


def include_routers(app: FastAPI, ctx: AppContext) -> None:
    """Every router of the service. Order matters only for identical paths."""
    app.include_router(ops.router(ctx.matcher, ctx.metrics))
    app.include_router(hma.router(ctx.matcher, ctx.settings, ctx.metrics))
    app.include_router(api_v1.router(ctx.matcher, ctx.settings, ctx.metrics))
    for spec in OPTIONAL_ROUTERS:
        module, _, func = spec.partition(":")
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name == module:
                log.info("optional router %s not installed", spec)
                continue
            raise
        factory: Callable[[AppContext], APIRouter] = getattr(mod, func or "router")
        app.include_router(factory(ctx))


def _install_auth(app: FastAPI, ctx: AppContext) -> None:
    """Authentication (tipline.service.auth) when that module is present."""
    try:
        auth = importlib.import_module("tipline.service.auth")
    except ModuleNotFoundError:
        log.warning("tipline.service.auth is missing: routes are NOT protected")
        return
    from datetime import timedelta

    from tipline.service.media_store import from_settings

    s = ctx.settings
    secure: bool | Literal["auto"] = (
        "auto" if s.cookie_secure == "auto" else s.cookie_secure == "true"
    )
    anon = frozenset(p.strip() for p in s.anonymous_permissions.split(",") if p.strip())
    auth.install_auth(
        app,
        auth.AuthContext(
            session_factory=ctx.session_factory,
            media_store=from_settings(s),
            cookie_secure=secure,
            session_idle=timedelta(minutes=s.session_idle_minutes),
            session_max=timedelta(hours=s.session_max_hours),
            anonymous_permissions=anon,
        ),
    )


def _is_hma(path: str) -> bool:
    return path == "/status" or path.startswith(HMA_PREFIXES)


def _install_errors(app: FastAPI) -> None:
    """Every error is ``{"message": ...}`` (HMA's shape), with the request id on 5xx."""

    def msg(status: int, message: str, **extra: Any) -> JSONResponse:
        return JSONResponse({"message": message, **extra}, status_code=status)

    @app.exception_handler(ApiError)
    async def _api(_r: Request, exc: ApiError) -> JSONResponse:
        return msg(exc.status, exc.message)

    @app.exception_handler(BankNotFoundError)
    async def _nf(_r: Request, exc: BankNotFoundError) -> JSONResponse:
        return msg(404, str(exc))

    @app.exception_handler(IndexNotLoadedError)
    async def _nl(_r: Request, exc: IndexNotLoadedError) -> JSONResponse:
        return msg(503, "INDEX-NOT-LOADED: " + str(exc))

    @app.exception_handler(BankError)
    async def _bank(_r: Request, exc: BankError) -> JSONResponse:
        text = str(exc)
        return msg(403 if "already exists" in text else 400, text)

    async def _db_down(_r: Request, exc: Exception) -> JSONResponse:
        log.error("database unavailable: %s", str(exc)[:300])
        return JSONResponse(
            {
                "message": "the database is unavailable; retry shortly",
                "request_id": request_id_var.get(),
            },
            status_code=503,
            headers={"Retry-After": "5"},
        )

    app.add_exception_handler(OperationalError, _db_down)
    app.add_exception_handler(sqlite3.OperationalError, _db_down)

    @app.exception_handler(DBAPIError)
    async def _dbapi(r: Request, exc: DBAPIError) -> JSONResponse:
        if exc.connection_invalidated:
            return await _db_down(r, exc)
        log.exception("database error")
        return msg(500, "internal database error", request_id=request_id_var.get())

    @app.exception_handler(RequestValidationError)
    async def _invalid(r: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for e in exc.errors()[:5]:
            where = ".".join(str(x) for x in e.get("loc", ()) if x not in ("body", "query"))
            parts.append(f"{where}: {e.get('msg', 'invalid')}" if where else e.get("msg", ""))
        text = "invalid request: " + "; ".join(parts)
        if _is_hma(r.url.path):
            return msg(400, text)
        return msg(422, text)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_r: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            {"message": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(Exception)
    async def _crash(_r: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return msg(500, "internal error", request_id=request_id_var.get())


def create_app(
    settings: ServiceSettings | None = None,
    *,
    load_index: LoadMode = "background",
    matcher: MatchService | None = None,
) -> FastAPI:
    """The service app. ``load_index``: build the match index in a background thread at start
    (``/status`` answers ``INDEX-NOT-LOADED`` until it is ready), synchronously, or not at all.
    The database must already be migrated (``tipline serve`` runs ``db upgrade`` first)."""
    settings = settings or ServiceSettings.load()
    engine = make_engine(settings.db_url)
    matcher = matcher or MatchService.for_data_dir(
        settings.data_dir,
        settings.db_url,
        settings.index_path,
        settings.index_refresh_seconds,
        engine=engine,
    )
    metrics = Metrics()
    ctx = AppContext(settings, engine, session_factory(engine), matcher, metrics)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if load_index == "sync":
            matcher.load()
        elif load_index == "background":
            threading.Thread(target=_load_quietly, args=(matcher,), daemon=True).start()
        stop = threading.Event()
        workers = _start_pipeline(ctx, stop)
        threading.Thread(target=_bank_pending_grades, args=(ctx,), daemon=True).start()
        try:
            yield
        finally:
            stop.set()
            for t in workers:
                t.join(10)
            matcher.close()
            engine.dispose()

    app = FastAPI(
        title="Tipline",
        version=__version__,
        summary="Hotline service: HMA 2.0-compatible match API, banks, reports and triage.",
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    app.state.settings = settings
    _install_errors(app)
    _install_auth(app, ctx)
    include_routers(app, ctx)
    app.add_middleware(RequestMiddleware, metrics=metrics)
    return app


def _start_pipeline(ctx: AppContext, stop: threading.Event) -> list[threading.Thread]:
    """In-process pipeline workers (``inprocess_workers``), matching with this process's
    live index, when the pipeline module is present."""
    if ctx.settings.inprocess_workers <= 0:
        return []
    try:
        pipeline = importlib.import_module("tipline.service.pipeline")
    except ModuleNotFoundError:
        return []
    import dataclasses

    from tipline.service.media_store import from_settings

    s = ctx.settings
    base = pipeline._config_from_settings()  # keywords and other pipeline extras from env
    pipeline.configure(
        dataclasses.replace(
            base,
            match=ctx.matcher.match_record,
            media_store=from_settings(s) if s.media_mode != "hash-only" else None,
            fetch_settings=s.fetch_settings(),
        )
    )
    threads: list[threading.Thread] = pipeline.start_workers(
        ctx.engine, stop, count=ctx.settings.inprocess_workers
    )
    return threads


def _bank_pending_grades(ctx: AppContext) -> None:
    """Final grades whose hashes did not reach the banks (a crash right after grading) are
    banked at start-up."""
    from tipline.review.grading import ReviewPolicy, bank_final_grades

    s = ctx.settings
    try:
        policy = ReviewPolicy(s.review_consensus, s.review_bank, s.review_benign_bank)
        while bank_final_grades(ctx.session_factory, ctx.matcher, policy, limit=500) >= 500:
            pass
    except Exception:
        log.exception("could not bank pending final grades; the next grading retries")


def _load_quietly(matcher: MatchService) -> None:
    try:
        matcher.load()
    except Exception:
        log.exception("could not load the match index; /status answers INDEX-NOT-LOADED")
