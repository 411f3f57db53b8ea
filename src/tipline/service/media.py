"""Media serving: the stored bytes of an item, only to a person allowed to see them, each view
an audit event written before any byte leaves.

* ``/api/v1/media/{ref}`` (:data:`router`, mounted with authentication): the stored bytes, to a
  holder of ``media:view``.
* ``/desk/media/{item}/preview|full`` (:data:`desk_routes`, the review desk's media): only for
  the holder of the cluster's claim, only while their exposure limits allow. ``preview`` is a
  small blurred greyscale JPEG made on the server (the unfiltered pixels never leave it);
  ``full`` is what a deliberate reveal loads: images re-encoded from decoded pixels (no
  metadata, no payloads), video as stored (with byte ranges, for seeking).

The store itself (encryption, keys, rotation, retention) is :mod:`tipline.store.media`; this
module is only the HTTP surface over it.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from PIL import Image, ImageFilter, ImageOps
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from tipline.accounts import Principal
from tipline.audit import log as audit
from tipline.config import Limits
from tipline.errors import TiplineError
from tipline.media.decode import deadline, open_image
from tipline.media.sniff import sniff
from tipline.review import exposure as exp
from tipline.review import prefs, queue
from tipline.service import desk_core as core
from tipline.service.auth import client_ip, context, require
from tipline.service.errors import HttpError
from tipline.store.media import EncryptedStore, HashOnlyStore, MediaError, MediaNotFound, valid_ref
from tipline.store.tables import Item

MEDIA_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "Cross-Origin-Resource-Policy": "same-origin",
}
PREVIEW_PIXELS = 512
FULL_PIXELS = 2048
#: Pixels a reviewed image may have (larger files are refused as decompression bombs).
VIEW_LIMITS = Limits(max_pixels=80_000_000)


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


# -- the review desk's media ----------------------------------------------------------------------

desk_routes = APIRouter(include_in_schema=False)


def _refused(status: int, message: str) -> HttpError:
    """A media request refused: ``{"message"}``, never cached."""
    return HttpError(status, message, headers={"Cache-Control": "no-store"})


def _encode_view(data: bytes, pixels: int, filters: prefs.ViewPrefs | None) -> bytes:
    mt = sniff(data[:4096])
    with deadline(20, "preparing the image for viewing"):
        im = open_image(data, mt, VIEW_LIMITS)
        if mt.mime == "image/jpeg":
            im.draft("RGB", (pixels, pixels))
        im.load()
        # shown upright for the analyst (hashes stay on the stored pixels)
        with contextlib.suppress(Exception):
            im = ImageOps.exif_transpose(im) or im
        im = im.convert("RGB")
        im.thumbnail((pixels, pixels))
        if filters is not None:
            radius = filters.blur * max(im.size) / PREVIEW_PIXELS
            im = im.filter(ImageFilter.GaussianBlur(radius))
            if filters.greyscale:
                grey = im.convert("L").convert("RGB")
                im = Image.blend(im, grey, filters.greyscale / 100)
        out = io.BytesIO()
        im.save(out, "JPEG", quality=70 if filters is not None else 90)
    return out.getvalue()


def _media(request: Request, p: Principal, item_id: int, mode: str) -> Response:
    cfg = core.config(request)
    rv = core.reviewer(p)
    now = core.now()
    store = context(request).media_store
    sf = core.session_factory(request)
    with sf() as s, s.begin():
        item = s.get(Item, item_id)
        if item is None or item.cluster_id is None:
            raise _refused(404, "no such item")
        if not queue.holds_claim(s, item.cluster_id, rv, now):
            raise _refused(403, "claim the item's cluster before viewing its media")
        st = exp.status(s, rv.user_id, now, cfg.limits)
        if st.blocked:
            raise _refused(403, st.message)
        if not item.media_ref or store is None:
            raise _refused(404, "this item's media is not kept (hash-only)")
        ref, media_type = item.media_ref, item.media_type or ""
        user_prefs = prefs.load(s, rv.user_id)
        exp.beat(s, rv.user_id, now, item.cluster_id)
    try:
        data = store.get(ref)
    except Exception as err:
        raise _refused(404, f"media unavailable: {err}") from None
    is_video = media_type.startswith("video/")
    if mode == "preview" and is_video:
        raise _refused(404, "videos have no preview: reveal to load them")
    try:
        if is_video:
            body, mime, shown = data, media_type, "video"
        elif mode == "preview":
            body, mime, shown = _encode_view(data, PREVIEW_PIXELS, user_prefs), "image/jpeg", mode
        else:
            body, mime, shown = _encode_view(data, FULL_PIXELS, None), "image/jpeg", "reveal"
    except TiplineError as err:
        raise _refused(422, f"cannot show this media: {err}") from None
    headers = dict(MEDIA_HEADERS)
    status = 200
    span = _byte_range(request.headers.get("range"), len(body)) if is_video else None
    if is_video:
        headers["Accept-Ranges"] = "bytes"  # seeking and frame stepping need ranges
    if span is not None:
        start, end = span
        headers["Content-Range"] = f"bytes {start}-{end}/{len(body)}"
        body, status = body[start : end + 1], 206
    if span is None or span[0] == 0:
        # one audit event per view: a player's later range requests (seeks) are the same view
        with sf() as s, s.begin():
            audit.record(
                s,
                p.actor,
                "media.view",
                "media",
                ref,
                client_ip(request),
                {"item_id": item_id, "mode": shown, "bytes": len(body)},
            )
    return Response(body, status_code=status, media_type=mime, headers=headers)


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The one ``bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` range asked for, clipped to the
    body; None for no (or an unusable) range: the whole body is sent."""
    if not header or not header.startswith("bytes=") or "," in header or size == 0:
        return None
    first, _, last = header[6:].strip().partition("-")
    try:
        if first == "":
            n = int(last)
            return (max(0, size - n), size - 1) if n > 0 else None
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start < 0 or start >= size or end < start:
        return None
    return start, min(end, size - 1)


async def _media_route(request: Request, p: Principal, item_id: int, mode: str) -> Response:
    return await run_in_threadpool(_media, request, p, item_id, mode)


@desk_routes.get("/desk/media/{item_id}/preview")
async def media_preview(
    item_id: int, request: Request, p: Principal = Depends(require("media:view"))
) -> Response:
    return await _media_route(request, p, item_id, "preview")


@desk_routes.get("/desk/media/{item_id}/full")
async def media_full(
    item_id: int, request: Request, p: Principal = Depends(require("media:view"))
) -> Response:
    return await _media_route(request, p, item_id, "full")


def desk_router(app_ctx: Any = None) -> APIRouter:
    """The desk's media routes (mounted by ``app.include_routers``)."""
    return desk_routes
