"""HMA's exchange routes (``/c/exchanges``, ``/c/exchange/<name>``, ``/c/exchanges/api...``)
with HMA's shapes, over :mod:`tipline.exchange` (docs/exchanges.md). Credentials go in and
never come out: HMA's ``/c/exchanges/api/<api>`` says only whether they are set."""

from __future__ import annotations

import re
import time
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from tipline.accounts import Principal
from tipline.errors import TiplineError
from tipline.exchange import store
from tipline.exchange.api import ExchangeConfigError, ExchangeError, registered
from tipline.exchange.fetcher import start_chain
from tipline.exchange.push import push_status
from tipline.service.auth import require
from tipline.service.context import AppContext
from tipline.service.errors import HttpError
from tipline.service.hma import _json_object
from tipline.store.jobs import JobQueue


def router(ctx: AppContext) -> APIRouter:
    r = APIRouter(tags=["hma"])
    factory = ctx.session_factory

    def _api(api: str, status: int) -> None:
        if api not in registered():
            if status == 404:
                raise HttpError(404, f"Exchange API {api[:80]!r} not found")
            raise HttpError(400, f"no such Exchange API {api[:80]!r}")

    @r.get("/c/exchanges/apis", dependencies=[Depends(require("bank:read"))])
    async def exchange_apis() -> list[str]:
        return sorted(registered())

    def _api_config(api: str, body: dict[str, Any] | None) -> dict[str, Any]:
        _api(api, 400)
        typ = registered()[api]
        with factory() as s, s.begin():
            if body is not None and "credential_json" in body:
                cred = body["credential_json"]
                if cred is not None and not isinstance(cred, dict):
                    raise HttpError(400, "credential_json must be an object")
                if cred and not typ.credential_fields:
                    raise HttpError(400, f"Exchange API {api!r} takes no credentials")
                try:
                    store.set_api_credentials(s, api, cred or None)
                except ExchangeConfigError as err:
                    raise HttpError(400, str(err)) from None
            has = store.api_has_credentials(s, api)
        return {
            "supports_authentification": bool(typ.credential_fields),
            "has_set_authentification": has,
        }

    @r.get("/c/exchanges/api/{api}", dependencies=[Depends(require("bank:read"))])
    async def exchange_api(api: str) -> dict[str, Any]:
        return await run_in_threadpool(_api_config, api, None)

    @r.post("/c/exchanges/api/{api}", dependencies=[Depends(require("bank:write"))])
    async def exchange_api_update(api: str, request: Request) -> dict[str, Any]:
        _api(api, 400)
        body = await _json_object(request)
        return await run_in_threadpool(_api_config, api, body)

    @r.get("/c/exchanges/api/{api}/schema", dependencies=[Depends(require("bank:read"))])
    async def exchange_api_schema(api: str) -> dict[str, Any]:
        _api(api, 404)
        return registered()[api].schema()

    @r.get("/c/exchanges", dependencies=[Depends(require("bank:read"))])
    async def exchanges() -> list[str]:
        def names() -> list[str]:
            with factory() as s:
                return [ex.name for ex in store.list_exchanges(s)]

        return await run_in_threadpool(names)

    @r.post("/c/exchanges", dependencies=[Depends(require("bank:write"))])
    async def exchange_create(request: Request) -> JSONResponse:
        body = await _json_object(request)
        bank = body.get("bank")
        if bank is None:
            raise HttpError(400, "bank is required")
        if not isinstance(bank, str) or not re.fullmatch(r"[A-Z0-9_]+", bank):
            raise HttpError(400, "Field `bank` must match /^[A-Z0-9_]+$/")
        api_json = body.get("api_json", {})
        if not isinstance(api_json, dict):
            raise HttpError(400, "Field `api_json` must be object")
        api = body.get("api")
        if api is None:
            raise HttpError(400, "Field `api_type` is required")
        if not isinstance(api, str) or api not in registered():
            raise HttpError(400, f"No such exchange type {str(api)[:80]!r}")
        config = {k: v for k, v in api_json.items() if k not in ("name", "api", "enabled")}
        enabled = api_json.get("enabled", True) is not False

        def create() -> None:
            with factory() as s, s.begin():
                try:
                    ex = store.create_exchange(s, bank, api, config, enabled=enabled)
                except ExchangeConfigError as err:
                    raise HttpError(400, f"Failed to parse `api_json` - {err}") from None
                except (ExchangeError, TiplineError) as err:
                    raise HttpError(400, str(err)) from None
                start_chain(JobQueue(ctx.engine), s, ex)

        await run_in_threadpool(create)
        return JSONResponse({"message": "Created successfully"}, status_code=201)

    def _get(name: str) -> dict[str, Any]:
        with factory() as s:
            try:
                return store.exchange_json(s, store.get_exchange(s, name))
            except store.ExchangeNotFound:
                raise HttpError(404, f"Exchange {name[:80]!r} not found") from None

    @r.get("/c/exchange/{name}", dependencies=[Depends(require("bank:read"))])
    async def exchange_get(name: str) -> dict[str, Any]:
        return await run_in_threadpool(_get, name)

    @r.get("/c/exchange/{name}/status", dependencies=[Depends(require("bank:read"))])
    async def exchange_status(name: str) -> dict[str, Any]:
        def status() -> dict[str, Any]:
            with factory() as s:
                try:
                    return store.status_json(s, store.get_exchange(s, name))
                except store.ExchangeNotFound:
                    raise HttpError(404, f"Exchange {name[:80]!r} not found") from None

        return await run_in_threadpool(status)

    @r.put("/c/exchange/{name}", dependencies=[Depends(require("bank:write"))])
    async def exchange_update(name: str, request: Request) -> dict[str, Any]:
        body = await _json_object(request)
        enabled = body.get("enabled")
        if enabled is not None and not isinstance(enabled, bool):
            raise HttpError(400, "enabled must be true or false")

        def update() -> dict[str, Any]:
            with factory() as s, s.begin():
                try:
                    ex = store.get_exchange(s, name)
                except store.ExchangeNotFound:
                    raise HttpError(404, f"Exchange {name[:80]!r} not found") from None
                if enabled is not None and enabled != ex.fetching_enabled:
                    ex.fetching_enabled = enabled
                    if enabled:
                        start_chain(JobQueue(ctx.engine), s, ex)
                return store.exchange_json(s, ex)

        return await run_in_threadpool(update)

    @r.delete("/c/exchange/{name}", dependencies=[Depends(require("bank:write"))])
    async def exchange_delete(name: str) -> dict[str, Any]:
        def delete() -> None:
            with factory() as s, s.begin():
                store.delete_exchange(s, name)

        await run_in_threadpool(delete)
        return {"message": "Exchange deleted"}  # HMA: deleting one that is not there is fine

    # -- Tipline's own view: /api/v1/exchanges (one call: configuration and fetch state) ------

    def _summary(s: Any, ex: Any) -> dict[str, Any]:
        out = store.exchange_json(s, ex)
        out["status"] = store.status_json(s, ex)
        counts = _feedback_counts(s, ex.name)
        if counts is not None:
            out["feedback"] = counts
        out["pushes"] = push_status(s, ex.name)
        return out

    @r.get("/api/v1/exchanges", tags=["exchange"], dependencies=[Depends(require("bank:read"))])
    async def v1_exchanges() -> dict[str, Any]:
        def run() -> dict[str, Any]:
            with factory() as s:
                return {"exchanges": [_summary(s, ex) for ex in store.list_exchanges(s)]}

        return await run_in_threadpool(run)

    @r.get(
        "/api/v1/exchanges/{name}", tags=["exchange"], dependencies=[Depends(require("bank:read"))]
    )
    async def v1_exchange(name: str) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            with factory() as s:
                try:
                    return _summary(s, store.get_exchange(s, name))
                except store.ExchangeNotFound:
                    raise HttpError(404, f"no exchange named {name[:80]!r}") from None

        return await run_in_threadpool(run)

    # -- the desk's Exchanges page: each partner exchange's state at a glance ----------------

    def _exchanges_page(request: Request, p: Principal) -> Response:
        from tipline.service import desk

        with factory() as s:
            rows = [_summary(s, ex) for ex in store.list_exchanges(s)]
        now = time.time()
        for row in rows:
            st = row["status"]
            done = st.get("last_fetch_complete_ts")
            row["last_fetch_age_hours"] = None if done is None else max(0.0, now - done) / 3600
            row["state"] = (
                "failing"
                if st.get("consecutive_failures")
                else "fetching"
                if st.get("running_fetch_start_ts")
                else "up to date"
                if st.get("up_to_date")
                else "never fetched"
                if done is None
                else "catching up"
            )
        return desk.render(request, p, "exchanges.html", title="Exchanges", page="exchanges",
                           exchanges=rows)  # fmt: skip

    @r.get("/desk/exchanges", include_in_schema=False)
    async def exchanges_page(
        request: Request, p: Principal = Depends(require("bank:read"))
    ) -> Response:
        return await run_in_threadpool(_exchanges_page, request, p)

    return r


def _feedback_counts(s: Any, name: str) -> dict[str, Any] | None:
    """The feedback queue's counts for an exchange, once that queue exists (issue 12 item 3)."""
    try:
        from tipline.exchange import feedback  # type: ignore[attr-defined, unused-ignore]
    except ImportError:
        return None
    counts = getattr(feedback, "feedback_counts", None)
    return dict(counts(s, name)) if callable(counts) else None
