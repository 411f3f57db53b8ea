"""Media serving: the stored bytes of an item, to a person who holds ``media:view``.

The store itself (encryption, keys, rotation, retention) is :mod:`tipline.store.media`; this
module is only the HTTP surface over it, with the audit event written before any byte leaves.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from tipline.accounts import Principal
from tipline.audit import log as audit
from tipline.service.auth import client_ip, context, require
from tipline.service.errors import HttpError
from tipline.store.media import EncryptedStore, HashOnlyStore, MediaError, MediaNotFound, valid_ref


def view_media(
    store: HashOnlyStore | EncryptedStore,
    factory: sessionmaker[Session],
    principal: Principal | None,
    ref: str,
    ip: str | None,
) -> bytes:
    """The bytes of ``ref`` for ``principal``, who must hold ``media:view``; the view is
    committed as a ``media.view`` audit event before any byte is returned."""
    if principal is None or not principal.can("media:view"):
        raise HttpError(403, "permission 'media:view' required")
    data = store.get(ref)
    with factory() as s, s.begin():
        audit.record(s, principal.actor, "media.view", "media", ref, ip, {"bytes": len(data)})
    return data


router = APIRouter(tags=["media"])


@router.get("/api/v1/media/{ref}")
async def get_media(
    ref: str, request: Request, principal: Principal = Depends(require("media:view"))
) -> Response:
    """The stored bytes of one item (``items.media_ref``). Every view is an audit event."""
    ctx = context(request)
    store = ctx.media_store
    if store is None or not valid_ref(ref):
        raise HttpError(404, "no such media")
    try:
        data = await run_in_threadpool(
            view_media, store, ctx.session_factory, principal, ref, client_ip(request)
        )
    except MediaNotFound as err:
        raise HttpError(404, str(err)) from None
    except MediaError as err:
        raise HttpError(500, str(err)) from None
    return Response(
        data,
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="{ref}"',
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
        },
    )
