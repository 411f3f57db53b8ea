"""HMA 2.0-compatible routes (``/status``, ``/h``, ``/m``, ``/c``), HMA's exact shapes.

Compatibility notes (docs/api.md has the full table):

* errors are ``{"message": "..."}`` with HMA's status codes; distances are strings in
  ``/m/lookup`` and ``/m/raw_lookup`` (``"0"``), integers in ``/m/compare`` (as HMA);
* bank names follow ``^[A-Z_][A-Z0-9_]*$`` (``validate_bank_name``);
* HMA's ``video_md5`` is our ``md5`` of the file bytes; lookups answer under the name asked;
* a piece of bank content holds one signal (the PDQ of a photo, the MD5 of a video);
* ``disable_until_ts``: ``0`` disabled, ``1`` (or any past time) enabled; a future timestamp
  disables the content (we do not re-enable it by itself yet, so it reads back as ``0``);
* ``matching_enabled_ratio`` is 1.0 or 0.0 (a bank is on or off; a ratio > 0 turns it on);
* exchanges are not implemented: their list routes answer empty lists.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from tipline.banks.bank import Bank, Entry, validate_bank_name
from tipline.crawl.fetch import FetchError, HTTPStatusError, TooLargeError, fetch
from tipline.errors import BankError, BankNotFoundError, InvalidSignalError
from tipline.record import ItemRecord
from tipline.scan.hashing import HashOptions, hash_bytes
from tipline.service.auth import require
from tipline.service.errors import HttpError
from tipline.service.matching import Hit, MatchService
from tipline.service.ops import Metrics
from tipline.service.settings import ServiceSettings
from tipline.signals.types import signal_type

#: HMA signal type names we answer to, and the bank signal type each is stored as.
HMA_SIGNAL_TYPES = {"pdq": "pdq", "video_md5": "md5", "md5": "md5"}
CONTENT_TYPES = ("photo", "video")
#: Hashing for the API: PDQ and digests only (provenance is for /api/v1/match).
HASH_OPTIONS = HashOptions(provenance=False)


# ------------------------------------------------------------------------- uploads and URLs


@dataclass(slots=True)
class Media:
    data: bytes
    content_type: str  # photo | video
    name: str


async def read_form(request: Request, max_bytes: int, timeout: float = 60.0) -> Any:
    """The multipart form, with size and shape errors as HttpError (413 / 400), and 408 when
    the client takes longer than ``timeout`` seconds to send it (slow-loris)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes + 64 * 1024:
        raise HttpError(413, f"upload of {int(declared):,} bytes exceeds the limit {max_bytes:,}")
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        raise HttpError(400, "expected a multipart/form-data body with one file")
    try:
        async with asyncio.timeout(timeout):
            return await request.form(max_files=4, max_fields=16)
    except TimeoutError:
        raise HttpError(408, f"the upload was not received within {timeout:g} s") from None
    except Exception as err:  # malformed multipart of any kind
        raise HttpError(400, f"malformed multipart body: {str(err)[:200]}") from None


async def read_upload(
    request: Request, max_bytes: int, form: Any = None, timeout: float = 60.0
) -> Media:
    """Exactly one file, in a form field named after its content type (``photo``/``video``)."""
    form = form if form is not None else await read_form(request, max_bytes, timeout)
    files = [(k, v) for k, v in form.multi_items() if isinstance(v, UploadFile)]
    if len(files) != 1:
        raise HttpError(400, f"expected exactly one file, got {len(files)}")
    field, up = files[0]
    if field not in CONTENT_TYPES and field != "file":
        raise HttpError(
            400,
            f"the file field must be named after its content type: photo or video, not {field!r}",
        )
    data = await up.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise HttpError(413, f"upload exceeds the limit of {max_bytes:,} bytes")
    if not data:
        raise HttpError(400, "the uploaded file is empty")
    return Media(data, field, (up.filename or "upload")[:200])


def fetch_media(url: str, settings: ServiceSettings, content_type: str | None) -> Media:
    """Through the SSRF-safe fetcher only; its refusals become HMA-style errors."""
    try:
        res = fetch(url, settings.fetch_settings())
    except TooLargeError as err:
        raise HttpError(413, str(err)) from None
    except HTTPStatusError as err:
        raise HttpError(400, str(err)) from None
    except FetchError as err:
        raise HttpError(400, str(err)) from None
    ct = content_type or ("video" if res.media_type.kind == "video" else "photo")
    return Media(res.content, ct, url[:200])


def hash_media(media: Media) -> ItemRecord:
    return hash_bytes(media.data, media.name, HASH_OPTIONS)


def signals_of(
    record: ItemRecord, content_type: str, types: set[str] | None = None
) -> dict[str, str]:
    """HMA's hash answer: ``{"pdq": hex}`` for photos (``""`` under quality 50), ``video_md5``
    for videos."""
    out: dict[str, str] = {}
    if content_type == "video" or record.media_type.startswith("video/"):
        if record.md5:
            out["video_md5"] = record.md5
    else:
        out["pdq"] = record.pdq if record.pdq_usable and record.pdq else ""
    if types is not None:
        out = {k: v for k, v in out.items() if k in types}
    return out


def _parse_types(types: str | None) -> set[str] | None:
    if not types:
        return None
    wanted = {t.strip() for t in types.split(",") if t.strip()}
    unknown = wanted - set(HMA_SIGNAL_TYPES)
    if unknown:
        raise HttpError(400, f"unknown signal type(s): {', '.join(sorted(unknown))}")
    return wanted


def _banks_param(banks: str | None) -> set[str] | None:
    if not banks:
        return None
    return {b.strip() for b in banks.split(",") if b.strip()}


def _hits_by_bank(hits: list[Hit]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for h in hits:
        lst = out.get(h.bank)
        if lst is None:
            lst = out[h.bank] = []
        lst.append({"bank_content_id": h.entry_id, "distance": str(h.distance)})
    return out


def _bank_json(b: Bank) -> dict[str, Any]:
    return {"name": b.name, "matching_enabled_ratio": 1.0 if b.enabled else 0.0}


def _enabled_from(body: dict[str, Any], default: bool) -> bool:
    if "enabled" in body and body["enabled"] is not None:
        return bool(body["enabled"])
    if "enabled_ratio" in body and body["enabled_ratio"] is not None:
        try:
            return float(body["enabled_ratio"]) > 0
        except (TypeError, ValueError):
            raise HttpError(400, "enabled_ratio must be a number between 0 and 1") from None
    return default


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise HttpError(400, "the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise HttpError(400, "the body must be a JSON object")
    return body


# ------------------------------------------------------------------------- the router


def router(service: MatchService, settings: ServiceSettings, metrics: Metrics) -> APIRouter:
    r = APIRouter(tags=["hma"])
    max_up = settings.max_upload_bytes
    up_t = settings.upload_timeout_seconds

    def lookup(st_name: str, signal: str, banks: set[str] | None) -> list[Hit]:
        if st_name not in HMA_SIGNAL_TYPES:
            raise HttpError(400, f"unknown signal type {st_name!r} (known: pdq, video_md5)")
        try:
            hits = service.lookup(HMA_SIGNAL_TYPES[st_name], signal, banks, labels=False)
        except InvalidSignalError as err:
            raise HttpError(400, f"invalid {st_name} signal: {err}") from None
        metrics.count_matches([h.bank for h in hits])
        return hits

    def lookup_record(record: ItemRecord, content_type: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for st, value in signals_of(record, content_type).items():
            out[st] = _hits_by_bank(lookup(st, value, None)) if value else {}
        return out

    # -- core

    @r.get("/status", response_class=PlainTextResponse)
    async def status() -> PlainTextResponse:
        if not service.loaded:
            return PlainTextResponse("INDEX-NOT-LOADED", status_code=503)
        return PlainTextResponse("I-AM-ALIVE")

    @r.get("/status/live", response_class=PlainTextResponse)
    async def status_live() -> PlainTextResponse:
        return PlainTextResponse("I-AM-ALIVE")

    # -- hasher

    @r.get("/h/hash", dependencies=[Depends(require("hash:read"))])
    async def hash_url(
        url: str = Query(...), content_type: str | None = None, types: str | None = None
    ) -> dict[str, str]:
        if content_type is not None and content_type not in CONTENT_TYPES:
            raise HttpError(400, f"unknown content type {content_type!r} (photo or video)")
        wanted = _parse_types(types)
        media = await run_in_threadpool(fetch_media, url, settings, content_type)
        record = await run_in_threadpool(hash_media, media)
        return signals_of(record, media.content_type, wanted)

    @r.post("/h/hash", dependencies=[Depends(require("hash:read"))])
    async def hash_upload(request: Request, types: str | None = None) -> dict[str, str]:
        wanted = _parse_types(types)
        media = await read_upload(request, max_up, timeout=up_t)
        record = await run_in_threadpool(hash_media, media)
        return signals_of(record, media.content_type, wanted)

    # -- matcher

    @r.get("/m/raw_lookup", dependencies=[Depends(require("match:read"))])
    async def raw_lookup(
        signal_type: str,
        signal: str,
        banks: str | None = None,
        include_distance: bool = False,
    ) -> JSONResponse:
        hits = lookup(signal_type, signal, _banks_param(banks))
        if include_distance:
            return JSONResponse(
                {
                    "matches": [
                        {"bank_content_id": h.entry_id, "distance": str(h.distance)} for h in hits
                    ]
                }
            )
        return JSONResponse({"matches": [h.entry_id for h in hits]})

    @r.get("/m/lookup", dependencies=[Depends(require("match:read"))])
    async def lookup_get(
        signal_type: str | None = None,
        signal: str | None = None,
        url: str | None = None,
        content_type: str | None = None,
        banks: str | None = None,
    ) -> JSONResponse:
        if url:
            if signal is not None:
                raise HttpError(400, "give either url or signal_type and signal, not both")
            media = await run_in_threadpool(fetch_media, url, settings, content_type)
            record = await run_in_threadpool(hash_media, media)
            return JSONResponse(lookup_record(record, media.content_type))
        if not signal_type or signal is None:
            raise HttpError(400, "give signal_type and signal, or url")
        # a JSONResponse skips FastAPI's (slow, recursive) encoder: answers can hold thousands
        # of matches when a query lands in a near-duplicate cluster
        return JSONResponse(_hits_by_bank(lookup(signal_type, signal, _banks_param(banks))))

    @r.post("/m/lookup", dependencies=[Depends(require("match:read"))])
    async def lookup_post(request: Request) -> JSONResponse:
        media = await read_upload(request, max_up, timeout=up_t)
        record = await run_in_threadpool(hash_media, media)
        return JSONResponse(lookup_record(record, media.content_type))

    @r.post("/m/compare", dependencies=[Depends(require("match:read"))])
    async def compare(request: Request) -> dict[str, Any]:
        body = await _json_body(request)
        out: dict[str, Any] = {}
        for st, pair in body.items():
            if st not in HMA_SIGNAL_TYPES:
                raise HttpError(400, f"unknown signal type {st!r}")
            if (
                not isinstance(pair, list)
                or len(pair) != 2
                or not all(isinstance(x, str) for x in pair)
            ):
                raise HttpError(400, f"{st}: want a list of exactly two hashes")
            t = signal_type(HMA_SIGNAL_TYPES[st])
            try:
                a, b = t.normalise(pair[0]), t.normalise(pair[1])
            except InvalidSignalError as err:
                raise HttpError(400, str(err)) from None
            d = t.distance(a, b)
            out[st] = [d <= t.default_threshold, {"distance": d}]
        return out

    @r.get("/m/index/status", dependencies=[Depends(require("index:read"))])
    async def index_status(signal_type: str | None = None) -> dict[str, Any]:
        if signal_type is not None and signal_type not in HMA_SIGNAL_TYPES:
            raise HttpError(400, f"unknown signal type {signal_type!r}")
        st = service.status()
        by = st.get("by_signal_type", {})
        names = [signal_type] if signal_type else ["pdq", "video_md5"]
        return {
            n: {
                "present": bool(st.get("loaded")),
                "built_to": st.get("built_at", -1),
                "size": int(by.get(HMA_SIGNAL_TYPES[n], 0)),
            }
            for n in names
        }

    # -- curator: banks

    @r.get("/c/banks", dependencies=[Depends(require("bank:read"))])
    def banks_list() -> list[dict[str, Any]]:
        return [_bank_json(b) for b in service.list_banks()]

    @r.post("/c/banks", status_code=201, dependencies=[Depends(require("bank:write"))])
    async def banks_create(request: Request) -> JSONResponse:
        body = await _json_body(request)
        name = body.get("name")
        if not isinstance(name, str):
            raise HttpError(400, "name is required")
        validate_bank_name(name)
        bank = Bank(name=name, enabled=_enabled_from(body, True))
        try:
            service.get_bank(name)
        except BankNotFoundError:
            pass
        else:
            raise HttpError(403, f"bank {name} already exists")
        created = await run_in_threadpool(service.create_bank, bank)
        return JSONResponse(_bank_json(created), status_code=201)

    @r.get("/c/bank/{name}", dependencies=[Depends(require("bank:read"))])
    def bank_get(name: str) -> dict[str, Any]:
        return _bank_json(service.get_bank(name))

    @r.put("/c/bank/{name}", dependencies=[Depends(require("bank:write"))])
    async def bank_update(name: str, request: Request) -> dict[str, Any]:
        body = await _json_body(request)
        bank = await run_in_threadpool(service.get_bank, name)
        new_name = body.get("name")
        if new_name is not None and new_name != name:
            if isinstance(new_name, str):
                validate_bank_name(new_name)
            raise HttpError(400, "renaming a bank is not supported; create a new bank instead")
        bank.enabled = _enabled_from(body, bank.enabled)
        return _bank_json(await run_in_threadpool(service.update_bank, bank))

    @r.delete("/c/bank/{name}", dependencies=[Depends(require("bank:write"))])
    def bank_delete(name: str) -> dict[str, Any]:
        service.delete_bank(name)
        return {"message": "Done"}

    # -- curator: content

    def add_content(
        bank: str, signals: dict[str, str], note: str, uri: str, metadata: dict[str, Any]
    ) -> dict[str, Any]:
        service.get_bank(bank)  # 404 before anything else
        usable = {k: v for k, v in signals.items() if v}
        if not usable:
            raise HttpError(400, "no usable signal (PDQ quality below 50?)")
        if len(note) > 255:
            raise HttpError(400, "note is longer than 255 characters")
        label = str(metadata.get("content_id") or "")[:255]
        source = str(metadata.get("content_uri") or uri or "")[:1000]
        entries = [
            Entry(
                bank=bank,
                signal_type=HMA_SIGNAL_TYPES[st],
                signal=v,
                label=label,
                source=source,
                note=note,
            )
            for st, v in usable.items()
        ]
        try:
            ids = service.add_entries(entries)
        except InvalidSignalError as err:
            raise HttpError(400, str(err)) from None
        return {"id": ids[0], "signals": usable}

    @r.post("/c/bank/{name}/content", dependencies=[Depends(require("bank:write"))])
    async def content_add(name: str, request: Request, url: str | None = None) -> dict[str, Any]:
        await run_in_threadpool(service.get_bank, name)
        meta: dict[str, Any] = {}
        note = ""
        if url:
            media = await run_in_threadpool(fetch_media, url, settings, None)
            form = None
            if request.headers.get("content-type", "").startswith("multipart/form-data"):
                form = await read_form(request, max_up, up_t)
        else:
            form = await read_form(request, max_up, up_t)
            media = await read_upload(request, max_up, form, up_t)
        if form is not None:
            raw_meta = form.get("metadata")
            if isinstance(raw_meta, str) and raw_meta.strip():
                try:
                    meta = json.loads(raw_meta)
                except ValueError:
                    raise HttpError(400, "metadata must be a JSON object") from None
                if not isinstance(meta, dict):
                    raise HttpError(400, "metadata must be a JSON object")
            raw_note = form.get("note")
            note = raw_note if isinstance(raw_note, str) else ""
        record = await run_in_threadpool(hash_media, media)
        sigs = signals_of(record, media.content_type)
        return await run_in_threadpool(add_content, name, sigs, note, url or "", meta)

    @r.post("/c/bank/{name}/signal", dependencies=[Depends(require("bank:write"))])
    async def signal_add(name: str, request: Request) -> dict[str, Any]:
        body = await _json_body(request)
        note = body.pop("note", "") or ""
        if not isinstance(note, str):
            raise HttpError(400, "note must be a string")
        sigs = {k: v for k, v in body.items() if k in HMA_SIGNAL_TYPES}
        unknown = set(body) - set(HMA_SIGNAL_TYPES)
        if unknown:
            raise HttpError(400, f"unknown signal type(s): {', '.join(sorted(unknown))}")
        if len(sigs) != 1 or not isinstance(next(iter(sigs.values())), str):
            raise HttpError(400, 'give exactly one signal, e.g. {"pdq": "<64 hex>"}')
        return await run_in_threadpool(add_content, name, sigs, note, "", {})

    def content_json(name: str, cid: int, signals: bool, metadata: bool) -> dict[str, Any]:
        bank = service.get_bank(name)
        try:
            e = service.get_entry(cid)
        except BankError:
            raise HttpError(404, f"bank content {cid} not found") from None
        if e.bank != name:
            raise HttpError(404, f"bank content {cid} not found in bank {name}")
        out: dict[str, Any] = {
            "id": cid,
            "disable_until_ts": 1 if e.enabled else 0,
            "original_media_uri": e.source or None,
            "bank": _bank_json(bank),
        }
        if signals:
            st = "video_md5" if e.signal_type == "md5" else e.signal_type
            out["signals"] = {st: e.signal}
        if metadata:
            out["metadata"] = {"content_id": e.label or None, "content_uri": e.source or None}
        if e.note:
            out["note"] = e.note
        return out

    @r.get("/c/bank/{name}/content/{cid}", dependencies=[Depends(require("bank:read"))])
    def content_get(
        name: str, cid: int, include_signals: bool = False, include_metadata: bool = False
    ) -> dict[str, Any]:
        return content_json(name, cid, include_signals, include_metadata)

    @r.put("/c/bank/{name}/content/{cid}", dependencies=[Depends(require("bank:write"))])
    async def content_update(name: str, cid: int, request: Request) -> dict[str, Any]:
        body = await _json_body(request)
        current = await run_in_threadpool(content_json, name, cid, False, False)
        if "note" in body and (body["note"] or "") != current.get("note", ""):
            raise HttpError(400, "changing a note is not supported; delete and re-add the content")
        if "disable_until_ts" in body:
            ts = body["disable_until_ts"]
            if not isinstance(ts, int) or isinstance(ts, bool) or ts < 0:
                raise HttpError(400, "disable_until_ts must be 0, 1 or a unix timestamp")
            enabled = ts != 0 and ts <= time.time()
            await run_in_threadpool(service.set_entries_enabled, name, [cid], enabled)
        return await run_in_threadpool(content_json, name, cid, False, False)

    @r.delete("/c/bank/{name}/content/{cid}", dependencies=[Depends(require("bank:write"))])
    def content_delete(name: str, cid: int) -> dict[str, Any]:
        service.get_bank(name)
        return {"deleted": service.remove_entries(name, [cid])}

    # -- curator: types and (absent) exchanges

    @r.get("/c/signal_type", dependencies=[Depends(require("bank:read"))])
    async def signal_types() -> dict[str, Any]:
        return {"pdq": {"enabled_ratio": 1.0}, "video_md5": {"enabled_ratio": 1.0}}

    @r.get("/c/signal_type/index", dependencies=[Depends(require("index:read"))])
    async def signal_type_index() -> dict[str, Any]:
        return await index_status(None)

    @r.get("/c/content_type", dependencies=[Depends(require("bank:read"))])
    async def content_types() -> list[str]:
        return list(CONTENT_TYPES)

    @r.get("/c/exchanges", dependencies=[Depends(require("bank:read"))])
    async def exchanges() -> list[Any]:
        return []

    @r.get("/c/exchanges/apis", dependencies=[Depends(require("bank:read"))])
    async def exchange_apis() -> list[Any]:
        return []

    return r


HMA_PREFIXES = ("/status", "/h/", "/m/", "/c/")
