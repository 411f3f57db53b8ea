"""The web service: ``create_app(settings)`` builds the FastAPI app.

**Adding a router:** import its module below and add one ``app.include_router(...)`` line to
:func:`include_routers`. Every router is mounted explicitly; a module that fails to import
stops the start (nothing is skipped silently).

What the app holds: ONE :class:`~tipline.service.context.AppContext` (``app.state.ctx``): the
settings, the database engine and session factory (``tipline.store.base``), the
:class:`MatchService` (banks plus the live match index), the Prometheus metrics, and everything
the routes need (authentication, the intake and desk contexts, the pipeline configuration),
all built in :func:`create_app` at start-up from the settings: a bad setting stops the start
instead of failing a request.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from starlette.exceptions import HTTPException as StarletteHTTPException

from tipline import __version__, pipeline
from tipline.errors import BankError, BankNotFoundError, TiplineError
from tipline.review.exposure import ExposureLimits
from tipline.review.grading import ReviewPolicy, bank_final_grades
from tipline.review.taxonomy import load as load_taxonomy
from tipline.service import (
    actions_api,
    api_v1,
    auth,
    cases_api,
    crawls_api,
    desk,
    desk_core,
    errors,
    exchange_feed,
    exchanges,
    hma,
    intake,
    media,
    ops,
    reports,
    review_api,
    wiring,
)
from tipline.service.context import AppContext
from tipline.service.hma import HMA_PREFIXES
from tipline.service.matching import IndexNotLoadedError, MatchService
from tipline.service.ops import Metrics, RequestMiddleware, request_id_var
from tipline.service.settings import ServiceSettings
from tipline.store.base import make_engine, session_factory
from tipline.store.jobs import JobQueue
from tipline.store.media import from_settings

log = logging.getLogger("tipline.service")

LoadMode = Literal["background", "sync", "none"]


class StartupError(TiplineError):
    """The service cannot start with these settings (the message says which and why)."""


def include_routers(app: FastAPI, ctx: AppContext) -> None:
    """Every router of the service. Order matters only for identical paths."""
    app.include_router(ops.router(ctx.matcher, ctx.metrics, ctx.session_factory))
    app.include_router(hma.router(ctx.matcher, ctx.settings, ctx.metrics))
    app.include_router(exchanges.router(ctx))  # HMA's /c/exchange* routes
    app.include_router(exchange_feed.router(ctx))  # /api/v1/exchange: Tipline peers' feed
    app.include_router(api_v1.router(ctx.matcher, ctx.settings, ctx.metrics))
    app.include_router(intake.router(ctx))
    app.include_router(reports.router(ctx))
    app.include_router(actions_api.router(ctx))
    app.include_router(cases_api.router(ctx))  # /api/v1/cases and the desk's Removal pages
    app.include_router(crawls_api.router(ctx))  # /api/v1/crawls and the desk's Crawls pages
    app.include_router(review_api.router(ctx))  # the review desk as JSON
    app.include_router(desk.router(ctx))  # the review desk's pages
    app.include_router(media.desk_router(ctx))  # the media those pages show
    app.include_router(media.router)  # stored media by ref, for API clients


def _auth_context(s: ServiceSettings, factory: sessionmaker[Session]) -> auth.AuthContext:
    """Authentication for every route. Fails the start (never open) when it cannot be set
    up: an unknown anonymous permission, an unusable media store."""
    secure: bool | Literal["auto"] = (
        "auto" if s.cookie_secure == "auto" else s.cookie_secure == "true"
    )
    anon = frozenset(p.strip() for p in s.anonymous_permissions.split(",") if p.strip())
    unknown = sorted(anon - set(auth.PERMISSIONS))
    if unknown:
        raise StartupError(
            f"setting anonymous_permissions: unknown permission(s) {', '.join(unknown)} "
            f"(known: {', '.join(sorted(auth.PERMISSIONS))})"
        )
    try:
        store = from_settings(s)
    except Exception as err:
        raise StartupError(f"cannot set up authentication (media store): {err}") from err
    return auth.AuthContext(
        session_factory=factory,
        media_store=store,
        cookie_secure=secure,
        session_idle=timedelta(minutes=s.session_idle_minutes),
        session_max=timedelta(hours=s.session_max_hours),
        anonymous_permissions=anon,
    )


def _route_contexts(
    s: ServiceSettings, engine: Engine, factory: sessionmaker[Session]
) -> tuple[intake.IntakeContext, desk_core.DeskConfig]:
    """The intake and review-desk contexts, built now rather than on their first request."""
    overrides: dict[str, Any] = {"secret": s.secret_key.encode()} if s.secret_key else {}
    try:
        intake_ctx = intake.IntakeContext(
            factory,
            JobQueue(engine),
            intake.IntakeSettings.from_service(s, **overrides),
            crawl_defaults=wiring.crawl_defaults(s),
        )
        desk_cfg = desk_core.DeskConfig(
            taxonomy=load_taxonomy(s.review_taxonomy or None),
            limits=ExposureLimits(
                s.exposure_daily_cap_minutes,
                s.exposure_break_after_minutes,
                s.exposure_break_minutes,
            ),
            policy=review_policy(s),
            weights=s.triage,
            claim_minutes=s.review_claim_minutes,
            sla_hours=s.review_sla_hours,
        )
    except TiplineError:
        raise
    except Exception as err:
        raise StartupError(f"cannot start the service: {err}") from err
    return intake_ctx, desk_cfg


def review_policy(s: ServiceSettings) -> ReviewPolicy:
    return ReviewPolicy(s.review_consensus, s.review_bank, s.review_benign_bank)


def _is_hma(path: str) -> bool:
    return path == "/status" or path.startswith(HMA_PREFIXES)


def _install_errors(app: FastAPI) -> None:
    """Every error is ``{"message": ...}`` (HMA's shape), with the request id on 5xx: routes
    raise :class:`~tipline.service.errors.HttpError`; the errors of the layers below (banks,
    the index, the database, validation) are mapped to statuses here."""

    def msg(status: int, message: str, **extra: Any) -> JSONResponse:
        return JSONResponse({"message": message, **extra}, status_code=status)

    # every refusal of a route or dependency: the one HttpError handler (service.errors)
    errors.install(app)

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
        if _is_hma(r.url.path):
            return hma.validation_answer(exc.errors())  # HMA's 422 with pydantic's list
        parts = []
        for e in exc.errors()[:5]:
            where = ".".join(str(x) for x in e.get("loc", ()) if x not in ("body", "query"))
            parts.append(f"{where}: {e.get('msg', 'invalid')}" if where else e.get("msg", ""))
        text = "invalid request: " + "; ".join(parts)
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
    settings = settings or ServiceSettings.from_environment()
    wiring.configure_process(settings)  # readers and webhook deliveries, process-wide
    engine = make_engine(settings.db_url)
    matcher = matcher or MatchService.for_data_dir(
        settings.data_dir,
        settings.db_url,
        settings.index_path,
        settings.index_refresh_seconds,
        engine=engine,
    )
    metrics = Metrics()
    factory = session_factory(engine)
    try:
        auth_ctx = _auth_context(settings, factory)
        intake_ctx, desk_cfg = _route_contexts(settings, engine, factory)
        ctx = AppContext(
            settings=settings,
            engine=engine,
            session_factory=factory,
            matcher=matcher,
            metrics=metrics,
            auth=auth_ctx,
            intake=intake_ctx,
            desk=desk_cfg,
            # the in-process workers' configuration: the one `tipline worker` builds, matching
            # with this process's live index
            pipeline=wiring.pipeline_config(settings, match=matcher.match_record)
            if settings.inprocess_workers > 0
            else None,
        )
    except Exception:
        engine.dispose()
        raise

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if load_index == "sync":
            matcher.load()
            _freeze_loaded_objects()
        elif load_index == "background":
            threading.Thread(target=_load_quietly, args=(matcher,), daemon=True).start()
        stop = threading.Event()
        workers = _start_pipeline(ctx, stop)
        if workers and ctx.settings.removal.autostart:
            _start_removal_chain(ctx)
        threading.Thread(
            target=_bank_pending_grades, args=(ctx,), name=BANK_PENDING_THREAD, daemon=True
        ).start()
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
    app.state.ctx = ctx  # the one thing requests read from the app
    _install_errors(app)
    assert ctx.auth is not None
    auth.install_auth(app, ctx.auth)  # sign-in routes, the audit-writes middleware
    include_routers(app, ctx)
    app.add_middleware(RequestMiddleware, metrics=metrics)
    return app


def _start_pipeline(ctx: AppContext, stop: threading.Event) -> list[threading.Thread]:
    """In-process pipeline workers (``inprocess_workers``), matching with this process's
    live index; they run the removal loop's jobs too (ticks, steps, notice groups, sends), the
    feedback to exchanges and the pushes of banks to them, so the embedded mode needs no
    ``tipline worker`` beside it
    (exchange fetches and crawls, long-running, stay with ``tipline worker``)."""
    if ctx.pipeline is None or ctx.settings.inprocess_workers <= 0:
        return []
    from tipline.exchange import feedback, push  # register the feedback and push senders
    from tipline.removal import scheduler  # registers the removal handlers

    pipeline.configure(ctx.pipeline)
    threads: list[threading.Thread] = pipeline.start_workers(
        ctx.engine,
        stop,
        count=ctx.settings.inprocess_workers,
        extra_kinds=(*scheduler.JOB_KINDS, feedback.JOB_KIND, push.JOB_KIND),
    )
    return threads


def _start_removal_chain(ctx: AppContext) -> None:
    """The removal scheduler's tick chain, started with the in-process workers unless it runs
    already (idempotent across restarts and processes; the in-process workers and any
    ``tipline worker`` run the ticks)."""
    from tipline.removal import scheduler

    try:
        scheduler.ensure_started(JobQueue(ctx.engine))
    except Exception:
        log.exception("could not start the removal scheduler; `tipline case scheduler --start`")


#: The start-up thread that banks pending final grades (tests wait for it before writing).
BANK_PENDING_THREAD = "tipline-bank-pending-grades"


def _bank_pending_grades(ctx: AppContext) -> None:
    """Final grades whose hashes did not reach the banks (a crash right after grading) are
    banked at start-up."""
    try:
        policy = review_policy(ctx.settings)
        while bank_final_grades(ctx.session_factory, ctx.matcher, policy, limit=500) >= 500:
            pass
    except Exception:
        log.exception("could not bank pending final grades; the next grading retries")


def _load_quietly(matcher: MatchService) -> None:
    try:
        matcher.load()
    except Exception:
        log.exception("could not load the match index; /status answers INDEX-NOT-LOADED")
        return
    _freeze_loaded_objects()


def _freeze_loaded_objects() -> None:
    """Move what start-up built (the bank index's tables, modules, routes) out of the garbage
    collector's sight: a full collection would otherwise walk them all (~150 ms at 200k
    entries), a pause every few thousand requests that lands in the lookups' p99."""
    gc.collect()
    gc.freeze()
