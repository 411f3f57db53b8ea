"""The Tipline peer feed, ``/api/v1/exchange``: one Tipline instance sharing banks with another
(hotline to hotline) over a signed, token-authenticated feed with cursors (docs/exchanges.md,
"Tipline peers"; the protocol is :mod:`tipline.exchange.peer`).

* ``GET /api/v1/exchange/shares``: the banks shared with the caller's account.
* ``GET /api/v1/exchange/banks/<bank>/changes?cursor=&limit=``: a signed page of changes
  (``exchange:read``); the caller sends a fresh ``X-Tipline-Nonce``, the answer's signature
  covers it. A bank not shared with the caller is a 404 (whether it exists is not told).
* ``GET /api/v1/exchange/banks/<bank>/list.<te|te-csv|hex|jsonl>``: the shared bank as a hash
  list file (``ETag``), for a peer's ``http_list`` exchange.
* ``POST /api/v1/exchange/banks/<bank>/submissions``: the peer pushes records into its share's
  inbound bank (``exchange:write``, signed), when the share accepts them.
* ``POST /api/v1/exchange/banks/<bank>/opinions``: the peer's opinion of one entry
  (``exchange:write``), a request signed with the share's secret.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from tipline.errors import TiplineError
from tipline.exchange import peer, store
from tipline.exchange.peer import CursorError, ShareError, SignatureError
from tipline.service.auth import Principal, require
from tipline.service.context import AppContext
from tipline.service.errors import HttpError
from tipline.store.exchange_share_tables import ExchangeShareRow

_NONCE = re.compile(r"[A-Za-z0-9_\-]{8,128}")
#: Largest opinion body accepted.
MAX_OPINION_BYTES = 16 * 1024
#: Largest push body accepted (peer.MAX_SUBMISSIONS records fit well within it).
MAX_PUSH_BYTES = 8 * 1024 * 1024


def _target(request: Request) -> str:
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def _secret(bank: str, share: ExchangeShareRow) -> str:
    doc = store.unseal(store.keyring(), peer.share_owner(bank, share.peer), share.secret)
    return str(doc.get("secret") or "")


def _nonce(request: Request) -> str:
    nonce = request.headers.get(peer.NONCE_HEADER, "")
    if not _NONCE.fullmatch(nonce):
        raise HttpError(
            400, f"send a fresh {peer.NONCE_HEADER} header (8 to 128 of A-Z a-z 0-9 _ -)"
        )
    return nonce


def _signed_json(
    bank: str,
    share: ExchangeShareRow,
    headers: dict[str, str],
    nonce: str,
    target: str,
    body: bytes,
    now: float,
) -> dict[str, Any]:
    """A peer's signed POST body: the signature checked (401), then a JSON object (400)."""
    try:
        peer.verify(_secret(bank, share), headers, nonce, "POST", target, body, now)
    except SignatureError as err:
        raise HttpError(401, str(err).replace("page", "request")) from None
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise HttpError(400, "the body is not JSON") from None
    if not isinstance(doc, dict):
        raise HttpError(400, "the body must be a JSON object")
    return doc


def router(ctx: AppContext) -> APIRouter:
    """The feed's routes (mounted by the app)."""
    r = APIRouter(tags=["exchange"])
    factory = ctx.session_factory

    def _share(s: Any, bank: str, who: Principal) -> ExchangeShareRow:
        share = peer.get_share(s, bank, who.username) if who.via != "anonymous" else None
        if share is None:
            raise HttpError(404, f"no bank {bank[:80]!r} is shared with {who.username[:80]}")
        return share

    @r.get("/api/v1/exchange/shares")
    async def shares(
        who: Annotated[Principal, Depends(require("exchange:read"))],
    ) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            with factory() as s:
                mine = peer.list_shares(s, who.username)
            return {"shares": [{"bank": i.bank, "changes": i.last_seq} for i in mine]}

        return await run_in_threadpool(run)

    @r.get("/api/v1/exchange/banks/{bank}/changes")
    async def changes(
        bank: str,
        request: Request,
        who: Annotated[Principal, Depends(require("exchange:read"))],
        cursor: Annotated[str | None, Query(max_length=200)] = None,
        limit: Annotated[int, Query(ge=1, le=peer.MAX_PAGE_SIZE)] = peer.DEFAULT_PAGE_SIZE,
    ) -> Response:
        nonce = _nonce(request)
        target = _target(request)

        def run() -> Response:
            now = time.time()
            with factory() as s, s.begin():
                share = _share(s, bank, who)
                try:
                    page = peer.feed_page(s, share, bank, cursor, limit, now)
                except CursorError as err:
                    raise HttpError(400, str(err)) from None
                secret = _secret(bank, share)
            body = json.dumps(page, separators=(",", ":")).encode()
            headers = peer.sign_headers(secret, nonce, "GET", target, body, now)
            headers["Cache-Control"] = "no-store"
            return Response(body, media_type="application/json", headers=headers)

        return await run_in_threadpool(run)

    @r.get("/api/v1/exchange/banks/{bank}/list.{fmt}")
    async def hash_list(
        bank: str,
        fmt: str,
        request: Request,
        who: Annotated[Principal, Depends(require("exchange:read"))],
    ) -> Response:
        """The shared bank as a hash list file, for a peer's ``http_list`` exchange (its
        ``authorization``: ``Bearer`` + the token); ``ETag`` / ``If-None-Match``."""

        def run() -> Response:
            with factory() as s, s.begin():
                share = _share(s, bank, who)
                try:
                    body = peer.published_list(s, share, bank, fmt, time.time())
                except TiplineError as err:
                    raise HttpError(400, str(err)) from None
            etag = '"' + hashlib.sha256(body).hexdigest()[:40] + '"'
            headers = {"ETag": etag, "Cache-Control": "no-cache"}
            sent = request.headers.get("if-none-match", "")
            if etag in [t.strip() for t in sent.split(",")] or sent.strip() == "*":
                return Response(status_code=304, headers=headers)
            media = "application/x-ndjson" if fmt == "jsonl" else "text/plain; charset=utf-8"
            if fmt == "te-csv":
                media = "text/csv; charset=utf-8"
            return Response(body, media_type=media, headers=headers)

        return await run_in_threadpool(run)

    @r.post("/api/v1/exchange/banks/{bank}/submissions")
    async def submissions(
        bank: str,
        request: Request,
        who: Annotated[Principal, Depends(require("exchange:write"))],
    ) -> dict[str, Any]:
        """A peer pushes records (``{"records": {key: record | null}}``, signed) into the
        inbound bank of its share of ``bank``; bad records are per-key problems."""
        nonce = _nonce(request)
        body = await request.body()
        if len(body) > MAX_PUSH_BYTES:
            raise HttpError(413, f"a push is at most {MAX_PUSH_BYTES} bytes: send it in parts")
        headers = {k.lower(): v for k, v in request.headers.items()}
        target = _target(request)

        def run() -> dict[str, Any]:
            now = time.time()
            with factory() as s:  # read and check only: the matcher writes the entries
                share = _share(s, bank, who)
                doc = _signed_json(bank, share, headers, nonce, target, body, now)
                try:
                    plan = peer.plan_submissions(s, share, doc.get("records"), who.username)
                except ShareError as err:
                    raise HttpError(400, str(err)) from None
                share_id = share.id
            # the matcher stores and journals (every serving process's index follows); a crash
            # before the rows below only repeats harmless work: adds dedupe on the signal
            added: dict[str, int] = {}
            if plan.add:
                # the inbound bank may have been made by `tipline exchange share`, outside any
                # serving process: announce it, so every serving process's index holds it
                ctx.matcher.update_bank(ctx.matcher.get_bank(plan.bank))
                ids = ctx.matcher.add_entries(list(plan.add.values()))
                added = dict(zip(plan.add, ids, strict=True))
            if plan.disable:
                ctx.matcher.set_entries_enabled(plan.bank, list(plan.disable.values()), False)
            if plan.enable:
                ctx.matcher.set_entries_enabled(plan.bank, list(plan.enable.values()), True)
            with factory() as s, s.begin():
                row = s.get(ExchangeShareRow, share_id)
                if row is not None:
                    peer.record_submissions(s, row, plan, added, now)
            return {
                "bank": plan.bank,
                "added": len(added),
                "disabled": len(plan.disable),
                "enabled": len(plan.enable),
                "unchanged": plan.unchanged,
                "problems": plan.problems[:100],
            }

        return await run_in_threadpool(run)

    @r.post("/api/v1/exchange/banks/{bank}/opinions")
    async def opinion(
        bank: str,
        request: Request,
        who: Annotated[Principal, Depends(require("exchange:write"))],
    ) -> dict[str, Any]:
        nonce = _nonce(request)
        body = await request.body()
        if len(body) > MAX_OPINION_BYTES:
            raise HttpError(413, f"an opinion is at most {MAX_OPINION_BYTES} bytes")
        headers = {k.lower(): v for k, v in request.headers.items()}
        target = _target(request)

        def run() -> dict[str, Any]:
            now = time.time()
            with factory() as s, s.begin():
                share = _share(s, bank, who)
                doc = _signed_json(bank, share, headers, nonce, target, body, now)
                try:
                    return peer.record_opinion(s, share, doc, now)
                except ShareError as err:
                    raise HttpError(400, str(err)) from None

        return await run_in_threadpool(run)

    return r


__all__ = ["router"]
