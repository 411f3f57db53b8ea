"""``/api/v1`` routes for what the hotline does with final grades (docs/actions.md):

* ``GET /api/v1/exports/hashes?format=te-csv|jsonl|iwf-csv&since=`` and
  ``GET /api/v1/exports/urls?since=&until=&delta=&format=text|json&source=auto|cases|items``:
  the hash list of actionable items and the URL list (once removal cases exist: the
  locations still online and confirmed, and a ``since`` delta; ``export:read``);
* ``GET /api/v1/items/{item_id}/ncmec.xml``: a CyberTipline-style report (``export:read``);
* ``GET/POST /api/v1/webhooks``, ``DELETE /api/v1/webhooks/{webhook_id}`` (``webhook:admin``).

Every export is written to a spooled temporary file in one transaction that also commits its
``export.<kind>`` audit event (and the ``export`` webhook jobs); only then is the file streamed,
so no byte leaves without its audit record and large lists never sit in memory.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, TextIO, cast

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from tipline.accounts import Principal
from tipline.actions import exports, ncmec, webhooks
from tipline.audit import log as audit
from tipline.removal import urllist
from tipline.service.auth import client_ip, require
from tipline.service.errors import HttpError

routes = APIRouter(tags=["actions"])

#: Exports up to this size stay in memory; larger ones spill to a temporary file.
SPOOL_BYTES = 8 * 1024 * 1024
CHUNK_CHARS = 64 * 1024


def _sf(request: Request) -> sessionmaker[Session]:
    sf: sessionmaker[Session] = request.app.state.ctx.session_factory
    return sf


def parse_since(value: str | None) -> datetime | None:
    """An ISO date or date-time (UTC when no offset is given); ValueError if not one."""
    if value is None or not value.strip():
        return None
    at = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _stream(spool: TextIO) -> Iterator[bytes]:
    try:
        spool.seek(0)
        while chunk := spool.read(CHUNK_CHARS):
            yield chunk.encode("utf-8")
    finally:
        spool.close()


def _write_export(
    sf: sessionmaker[Session], kind: str, actor: str, ip: str, since: datetime | None
) -> tuple[TextIO, exports.ExportCount]:
    """Write the export to a spool and commit it with its audit event; the caller streams
    (and closes) the spool."""
    spool = cast(
        TextIO,
        tempfile.SpooledTemporaryFile(  # noqa: SIM115 (closed by _stream)
            max_size=SPOOL_BYTES, mode="w+", encoding="utf-8", newline=""
        ),
    )
    try:
        with sf() as s, s.begin():
            count = exports.export(s, kind, spool, actor=actor, ip=ip, since=since)
    except BaseException:
        spool.close()
        raise
    return spool, count


async def _send_export(
    request: Request, principal: Principal, kind: str, since: str | None
) -> Response:
    try:
        when = parse_since(since)
    except ValueError:
        raise HttpError(400, f"since: {str(since)[:40]!r} is not an ISO date or time") from None
    spool, count = await run_in_threadpool(
        _write_export, _sf(request), kind, principal.actor, client_ip(request), when
    )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    name = f"tipline-{kind}-{stamp}{exports.FILE_SUFFIXES[kind]}"
    return StreamingResponse(
        _stream(spool),
        media_type=exports.MEDIA_TYPES[kind] + "; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store",
            "X-Tipline-Export-Count": str(count.items),
        },
    )


@routes.get("/api/v1/exports/hashes")
async def export_hashes(
    request: Request,
    format: str = Query("te-csv", description="te-csv, jsonl or iwf-csv"),
    since: str | None = Query(None, description="only items graded at or after (ISO 8601)"),
    principal: Principal = Depends(require("export:read")),
) -> Response:
    """The hash list of final-graded actionable items (audited as ``export.<format>``)."""
    if format not in exports.HASH_FORMATS:
        raise HttpError(400, f"format must be one of {', '.join(exports.HASH_FORMATS)}")
    return await _send_export(request, principal, format, since)


def _write_url_list(
    sf: sessionmaker[Session],
    actor: str,
    ip: str,
    *,
    since: datetime | None,
    until: datetime | None,
    delta: bool,
    fmt: urllist.ListFormat,
    source: urllist.Source,
) -> tuple[TextIO, int]:
    """:func:`_write_export` for the URL list (removal cases' lifecycle list or, without
    cases, the items' URLs)."""
    spool = cast(
        TextIO,
        tempfile.SpooledTemporaryFile(  # noqa: SIM115 (closed by _stream)
            max_size=SPOOL_BYTES, mode="w+", encoding="utf-8", newline=""
        ),
    )
    try:
        with sf() as s, s.begin():
            result = urllist.export_urls(
                s,
                spool,
                actor=actor,
                ip=ip,
                now=until,
                since=since,
                delta_wanted=delta,
                fmt=fmt,
                source=source,
            )
    except BaseException:
        spool.close()
        raise
    return spool, result.count


@routes.get("/api/v1/exports/urls")
async def export_urls(
    request: Request,
    since: str | None = Query(
        None,
        description="with removal cases: the delta since then (added and removed URLs); "
        "without: only items graded at or after (ISO 8601)",
    ),
    until: str | None = Query(None, description="the list (or delta end) as of then"),
    delta: bool = Query(False, description="the delta explicitly (needs since and cases)"),
    format: str = Query("text", description="text (lines) or json (one object)"),
    source: str = Query("auto", description="auto, cases or items"),
    principal: Principal = Depends(require("export:read")),
) -> Response:
    """The URL list (``export.urls``): once removal cases exist, exactly the locations still
    online and confirmed; before that, the distinct URLs of final-graded actionable items.
    A delta is ``+<TAB>URL`` / ``-<TAB>URL`` lines (docs/removal.md, "URL list")."""
    times: dict[str, datetime | None] = {}
    for name, value in (("since", since), ("until", until)):
        try:
            times[name] = parse_since(value)
        except ValueError:
            raise HttpError(
                400, f"{name}: {str(value)[:40]!r} is not an ISO date or time"
            ) from None
    if format not in ("text", "json"):
        raise HttpError(400, "format must be text or json")
    if source not in urllist.SOURCES:
        raise HttpError(400, f"source must be one of {', '.join(urllist.SOURCES)}")
    try:
        spool, count = await run_in_threadpool(
            lambda: _write_url_list(
                _sf(request),
                principal.actor,
                client_ip(request),
                since=times["since"],
                until=times["until"],
                delta=delta,
                fmt=cast(urllist.ListFormat, format),
                source=source,
            )
        )
    except urllist.UrlListError as err:
        raise HttpError(400, str(err)) from None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    suffix = ".json" if format == "json" else ".txt"
    media = "application/json" if format == "json" else exports.MEDIA_TYPES["urls"]
    return StreamingResponse(
        _stream(spool),
        media_type=media + "; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="tipline-urls-{stamp}{suffix}"',
            "Cache-Control": "no-store",
            "X-Tipline-Export-Count": str(count),
        },
    )


@routes.get("/api/v1/items/{item_id}/ncmec.xml")
async def ncmec_xml(
    item_id: int, request: Request, principal: Principal = Depends(require("export:read"))
) -> Response:
    """A CyberTipline-style XML report for one actionable item (``export.ncmec``)."""
    reporter = ncmec.Reporter.from_settings(getattr(request.app.state, "settings", None))
    ip = client_ip(request)

    def run() -> str:
        with _sf(request)() as s, s.begin():
            xml = ncmec.cybertip_xml(s, item_id, reporter)
            exports.record_export(
                s,
                "ncmec",
                exports.ExportCount(1, 1),
                actor=principal.actor,
                ip=ip,
                target_id=item_id,
            )
        return xml

    try:
        xml = await run_in_threadpool(run)
    except ncmec.ItemNotFoundError as err:
        raise HttpError(404, str(err)) from None
    except ncmec.NotActionableError as err:
        raise HttpError(409, str(err)) from None
    return Response(
        xml,
        media_type="application/xml",
        headers={
            "Content-Disposition": f'attachment; filename="ncmec-item-{item_id}.xml"',
            "Cache-Control": "no-store",
        },
    )


@routes.get("/api/v1/webhooks")
async def list_webhooks(
    request: Request, _p: Principal = Depends(require("webhook:admin"))
) -> Response:
    """Webhooks with their events and last delivery status (never their secrets)."""

    def run() -> list[dict[str, Any]]:
        with _sf(request)() as s:
            return [webhooks.webhook_json(h) for h in webhooks.list_webhooks(s)]

    return JSONResponse({"webhooks": await run_in_threadpool(run)})


@routes.post("/api/v1/webhooks")
async def create_webhook(
    request: Request, principal: Principal = Depends(require("webhook:admin"))
) -> Response:
    """Add a webhook: ``{"url", "events": ["match", "grade", "export"], "name"}``. The answer
    holds the signing ``secret``; it is shown this once."""
    try:
        body = await request.json()
    except ValueError:
        raise HttpError(400, "body is not valid JSON") from None
    if not isinstance(body, dict):
        raise HttpError(400, 'want {"url": ..., "events": [...], "name": ...}')
    url, events, name = body.get("url"), body.get("events"), body.get("name", "")
    if not isinstance(url, str) or not url:
        raise HttpError(400, "url is required")
    if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
        raise HttpError(400, f"events must be a list, from: {', '.join(webhooks.WEBHOOK_EVENTS)}")
    if not isinstance(name, str):
        raise HttpError(400, "name must be a string")
    app_settings = getattr(request.app.state, "settings", None)
    policy = app_settings.fetch_settings() if app_settings is not None else None
    ip = client_ip(request)

    def run() -> dict[str, Any]:
        with _sf(request)() as s, s.begin():
            hook, secret = webhooks.create_webhook(s, url, events, name, settings=policy)
            out = {"webhook": webhooks.webhook_json(hook), "secret": secret}
            audit.record(
                s,
                principal.actor,
                "webhook.create",
                "webhook",
                hook.id,
                ip,
                {"name": hook.name, "events": hook.events},
            )
        return out

    try:
        created = await run_in_threadpool(run)
    except webhooks.WebhookError as err:
        raise HttpError(400, str(err)) from None
    return JSONResponse(created, status_code=201, headers={"Cache-Control": "no-store"})


@routes.delete("/api/v1/webhooks/{webhook_id}")
async def delete_webhook(
    webhook_id: int, request: Request, principal: Principal = Depends(require("webhook:admin"))
) -> Response:
    """Remove a webhook (queued deliveries for it are dropped)."""
    ip = client_ip(request)

    def run() -> None:
        with _sf(request)() as s, s.begin():
            webhooks.delete_webhook(s, webhook_id)
            audit.record(s, principal.actor, "webhook.delete", "webhook", webhook_id, ip, {})

    try:
        await run_in_threadpool(run)
    except webhooks.WebhookNotFoundError as err:
        raise HttpError(404, str(err)) from None
    return JSONResponse({"message": f"webhook {webhook_id} deleted"})


def router(app_ctx: Any = None) -> APIRouter:
    """For the service's ``OPTIONAL_ROUTERS``."""
    return routes
