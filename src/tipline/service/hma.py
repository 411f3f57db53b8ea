"""HMA 2.0-compatible routes (``/status``, ``/h``, ``/m``, ``/c``), HMA 1.1.7's behaviour.

Each route answers as HMA's (``OpenMediaMatch/blueprints/{hashing,matching,curation}.py``,
``schemas/*``): its shapes, status codes and messages; tests/hma_compat replays HMA's own API
tests against ``tipline serve``. In brief:

* errors are ``{"message": "..."}`` with HMA's status codes; a missing or mistyped parameter or
  body field is HMA's 422 with pydantic's error list; distances are strings in ``/m/lookup``
  and ``/m/raw_lookup`` (``"0"``; ``"-"`` for exact types such as ``video_md5``), integers in
  ``/m/compare``;
* bank names follow ``^[A-Z_][A-Z0-9_]*$`` (``validate_bank_name``); banks can be renamed;
  deleting a bank that is not there is fine (200);
* HMA's ``video_md5`` is our ``md5`` of the file bytes; lookups answer under the name asked;
* every content add is a new piece of content (the same hash may be in a bank several times),
  with its note (<= 255 characters, changeable by PUT) and user metadata (``content_id``,
  ``content_uri``, ``json``; other keys refused);
* ``disable_until_ts``: ``0`` disabled, ``1`` enabled, a unix time: disabled until then and
  enabled again by itself (at most five years ahead);
* ``matching_enabled_ratio`` in [0, 1]: each ``/m/lookup`` draws a coin flip
  (``random.Random(seed)``, ``seed`` the request's parameter) and sees the banks whose ratio is
  at least the flip; ``bypass_coinflip=true`` on ``POST /m/lookup`` sees every bank;
  ``/m/raw_lookup`` checks no enabled state at all (HMA's deliberate choice);
* exchanges (``/c/exchanges``, ``/c/exchange/<name>``) are in :mod:`tipline.service.exchanges`.

Where Tipline differs on purpose (authentication above all) docs/api.md says so in one table.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import pydantic
from fastapi import APIRouter, Depends, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from tipline.banks.bank import Bank, Entry, validate_bank_name
from tipline.errors import BankError, BankNotFoundError, InvalidSignalError
from tipline.net.fetch import FetchError, HTTPStatusError, TooLargeError, fetch
from tipline.record import ItemRecord
from tipline.scan.hashing import HashOptions, hash_bytes
from tipline.scan.runner import RECHECK_MARGIN
from tipline.service.auth import iter_routes, require
from tipline.service.errors import HttpError
from tipline.service.matching import Hit, MatchService
from tipline.service.ops import Metrics
from tipline.service.settings import ServiceSettings
from tipline.signals.types import signal_type

#: HMA signal type names we answer to, and the bank signal type each is stored as.
HMA_SIGNAL_TYPES = {
    "pdq": "pdq",
    "video_md5": "md5",
    "md5": "md5",
    "tlsh": "tlsh",
    "text_tlsh": "tlsh",
}
#: HMA's own names (``md5`` is our alias of ``video_md5``), and the content type each hashes.
HMA_NAMES = {"pdq": "photo", "video_md5": "video", "tlsh": "text"}
CONTENT_TYPES = ("photo", "video")
#: HMA's ``INDEX_CACHE_MAX_STALE_SEC``: ``/status`` says ``INDEX-STALE`` past it.
STALE_SECONDS = 65.0
#: HMA refuses a ``disable_until_ts`` more than five years ahead.
FIVE_YEARS = 5 * 365 * 86400
_PYDANTIC = ".".join(pydantic.VERSION.split(".")[:2])
#: Hashing for the API: PDQ and digests only (provenance is for /api/v1/match).
HASH_OPTIONS = HashOptions(provenance=False)


# ------------------------------------------------------------------------- request models


class _BankCreate(BaseModel):
    """HMA's ``BankCreateRequest``."""

    name: str
    enabled_ratio: float | None = None
    enabled: bool | None = None


class _BankUpdate(BaseModel):
    """HMA's ``BankUpdateRequest``."""

    name: str | None = None
    enabled_ratio: float | None = None
    enabled: bool | None = None


class _ContentMetadata(BaseModel):
    """HMA's ``BankedContentMetadata`` as a client sends it: unknown keys are refused."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    content_id: str | None = None
    content_uri: str | None = None
    json_data: dict[str, Any] | None = Field(None, alias="json")


class _SignalTypeUpdate(BaseModel):
    enabled_ratio: float


def validated(model: type[BaseModel], body: Any) -> Any:
    """``body`` as ``model``; a missing or mistyped field is HMA's 422 with pydantic's list."""
    try:
        return model.model_validate(body)
    except ValidationError as err:
        raise RequestValidationError(json.loads(err.json())) from None


def validation_answer(errors: Sequence[Any]) -> JSONResponse:
    """HMA's answer to a missing or mistyped parameter or body field (flask-openapi3's): 422
    with pydantic's error list, each ``{type, loc, msg, input, url}`` (``loc`` without
    FastAPI's ``query`` / ``body`` prefix)."""
    out = []
    for e in errors:
        loc = [x for x in e.get("loc", ()) if x not in ("query", "body", "path")]
        item: dict[str, Any] = {
            "type": e.get("type", "value_error"),
            "loc": loc,
            "msg": e.get("msg", "invalid"),
            "input": e.get("input"),
        }
        if e.get("ctx"):
            item["ctx"] = {
                k: v if isinstance(v, int | float | str) else str(v) for k, v in e["ctx"].items()
            }
        item["url"] = e.get("url") or f"https://errors.pydantic.dev/{_PYDANTIC}/v/{item['type']}"
        out.append(item)
    return JSONResponse(jsonable_encoder(out), status_code=422)


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
        raise HttpError(400, "Missing multipart/form-data file upload")
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
    if not files:
        raise HttpError(400, "Missing multipart/form-data file upload")
    if len(files) != 1:
        raise HttpError(400, "Only one file allowed per request")
    field, up = files[0]
    if field not in CONTENT_TYPES and field != "file":
        raise HttpError(
            400, f"no such content_type: {field[:40]!r} (name the field photo or video)"
        )
    data = await up.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise HttpError(413, f"upload exceeds the limit of {max_bytes:,} bytes")
    if not data:
        raise HttpError(400, "the uploaded file is empty")
    return Media(data, "photo" if field == "file" else field, (up.filename or "upload")[:200])


def fetch_media(url: str, settings: ServiceSettings, content_type: str | None) -> Media:
    """Through the SSRF-safe fetcher only; its refusals become HMA-style errors. The content
    type is ``content_type`` when given, else the answer's Content-Type (HMA's rule: image/*
    is a photo, video/* a video, anything else refused)."""
    if content_type is not None and content_type not in CONTENT_TYPES:
        raise HttpError(400, f"no such content_type: {content_type[:40]!r}")
    try:
        res = fetch(url, settings.fetch_settings())
    except TooLargeError as err:
        raise HttpError(413, f"Content too large: {err}") from None
    except HTTPStatusError as err:
        raise HttpError(400, f"Failed to fetch URL: {err}") from None
    except FetchError as err:
        raise HttpError(400, f"Invalid or unsafe URL provided: {err}") from None
    ct = content_type
    if ct is None:
        declared = res.declared_type.lower()
        if declared.startswith("image"):
            ct = "photo"
        elif declared.startswith("video"):
            ct = "video"
        else:
            raise HttpError(
                400,
                f"unsupported url ContentType: {res.declared_type[:80]!r}, if you know the "
                "expected type, provide it with the content_type query param",
            )
    return Media(res.content, ct, url[:200])


def hash_media(media: Media, options: HashOptions = HASH_OPTIONS) -> ItemRecord:
    return hash_bytes(media.data, media.name, options)


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


def _hma_name(name: str) -> str:
    return {"md5": "video_md5", "text_tlsh": "tlsh"}.get(name, name)


def _banks_param(banks: str | None) -> set[str] | None:
    if not banks:
        return None
    return {b.strip() for b in banks.split(",") if b.strip()}


def _distance(st_name: str, distance: int) -> str:
    """HMA's ``pretty_str``: the distance for PDQ, ``-`` for exact-match types."""
    return str(distance) if signal_type(st_name).has_distance else "-"


def _hits_by_bank(hits: list[Hit]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    # one answer can hold thousands of hits of one signal type: ask the type once
    by_distance: dict[str, bool] = {}
    for h in hits:
        lst = out.get(h.bank)
        if lst is None:
            lst = out[h.bank] = []
        has = by_distance.get(h.signal_type)
        if has is None:
            has = by_distance[h.signal_type] = signal_type(h.signal_type).has_distance
        lst.append({"bank_content_id": h.entry_id, "distance": str(h.distance) if has else "-"})
    return out


def _ratio(b: Bank) -> float:
    """HMA's ``matching_enabled_ratio``: 0 for a disabled bank."""
    return float(b.enabled_ratio) if b.enabled else 0.0


def _bank_json(b: Bank) -> dict[str, Any]:
    return {"name": b.name, "matching_enabled_ratio": _ratio(b)}


def _set_ratio(bank: Bank, ratio: float) -> None:
    """HMA's ratio on our bank: 0 disables it (the ratio it had is kept for `tipline bank
    enable`), anything else enables it at that ratio."""
    if not 0.0 <= ratio <= 1.0:
        raise HttpError(400, f"enabled_ratio must be a number from 0 to 1, not {ratio!r}")
    bank.enabled = ratio > 0
    if ratio > 0:
        bank.enabled_ratio = ratio


async def _json_body(request: Request) -> Any:
    try:
        return await request.json()
    except (ValueError, UnicodeDecodeError):
        raise HttpError(400, "the body must be a JSON object") from None


async def _json_object(request: Request) -> dict[str, Any]:
    body = await _json_body(request)
    if not isinstance(body, dict):
        raise HttpError(400, "the body must be a JSON object")
    return body


def _note(value: Any) -> str | None:
    """HMA's note rule: empty is none, else a string of at most 255 characters."""
    if not value:
        return None
    if not isinstance(value, str):
        raise HttpError(400, "note should be a string")
    if len(value) > 255:
        raise HttpError(400, "note must be at most 255 characters")
    return value


def _metadata(raw: Any) -> dict[str, Any] | None:
    """HMA's content metadata: an object with ``content_id``, ``content_uri`` and ``json``
    only (``collab`` is the exchanges' own and dropped)."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise HttpError(400, "metadata should be a json object")
    raw = {k: v for k, v in raw.items() if k != "collab"}
    try:
        meta = _ContentMetadata.model_validate(raw)
    except ValidationError as err:
        raise HttpError(400, f"Invalid metadata: {err}") from None
    dumped = meta.model_dump(by_alias=True, exclude_none=True)
    return dumped or None


def _disable_ts(e: Entry) -> int:
    if not e.enabled:
        return 0
    if e.disabled_until is not None:
        return int(e.disabled_until)
    return 1


def _coinflip(seed: str | None, bypass: bool = False) -> float:
    """HMA's coin flip: ``random.Random(seed)`` (the request's ``seed``, e.g. the client's
    content id, so one item always gets the same answer; none: a fresh one each time)."""
    if bypass:
        return 0.0
    # unseeded: the module's generator (a fresh Random() per request costs ~10 us to seed)
    return random.Random(seed).random() if seed is not None else random.random()


# ------------------------------------------------------------------------- the router


def router(service: MatchService, settings: ServiceSettings, metrics: Metrics) -> APIRouter:
    r = APIRouter(tags=["hma"])
    max_up = settings.max_upload_bytes
    up_t = settings.upload_timeout_seconds

    def enabled_types() -> dict[str, float]:
        ratios = service.signal_type_ratios()
        return {n: ratios.get(n, 1.0) for n in HMA_NAMES}

    def check_type(st_name: str) -> str:
        """HMA's checks of a signal type name; returns our stored type's name."""
        if st_name not in HMA_SIGNAL_TYPES:
            raise HttpError(400, f"No such SignalType {st_name[:40]!r}")
        if enabled_types()[_hma_name(st_name)] <= 0:
            raise HttpError(400, f"SignalType {st_name!r} is not enabled")
        return HMA_SIGNAL_TYPES[st_name]

    def lookup(
        st_name: str,
        signal: str,
        banks: set[str] | None,
        *,
        coinflip: float | None = None,
        all_banks: bool = False,
        all_entries: bool = False,
    ) -> list[Hit]:
        ours = check_type(st_name)
        try:
            hits = service.lookup(
                ours,
                signal,
                banks,
                labels=False,
                coinflip=coinflip,
                all_banks=all_banks,
                all_entries=all_entries,
            )
        except InvalidSignalError as err:
            raise HttpError(400, f"invalid signal: {err}") from None
        metrics.count_matches([h.bank for h in hits])
        return hits

    def wanted_types(content_type: str, types: str | None) -> set[str]:
        """HMA's ``types`` parameter against the enabled types of the content type."""
        on = {
            n for n, ratio in enabled_types().items() if ratio > 0 and HMA_NAMES[n] == content_type
        }
        if not on:
            raise HttpError(400, f"no enabled signal type for {content_type}")
        if types is None:
            return on
        out: set[str] = set()
        for name in types.split(","):
            name = _hma_name(name.strip())
            if not name:
                continue
            if name not in on:
                raise HttpError(400, f"signal type {name[:40]!r} doesn't exist or is disabled")
            out.add(name)
        if not out:
            raise HttpError(400, "empty signal type selection")
        return out

    def lookup_options() -> HashOptions:
        """For a hash that only decides matches and is never answered nor stored (POST
        /m/lookup, GET /m/lookup?url=): the fast PDQ, re-hashed with the reference when it
        lies within any bank's threshold plus RECHECK_MARGIN of a banked PDQ (or its quality
        near the usable bound), so the matches are the reference hash's, at a fraction of
        its cost."""
        return replace(
            HASH_OPTIONS,
            pdq_mode="fast",
            pdq_recheck=lambda values: service.pdq_near(values, RECHECK_MARGIN),
        )

    async def hashes_of(
        media: Media, types: str | None, *, for_lookup: bool = False
    ) -> dict[str, str]:
        wanted = wanted_types(media.content_type, types)
        options = lookup_options() if for_lookup else HASH_OPTIONS
        record = await run_in_threadpool(hash_media, media, options)
        return signals_of(record, media.content_type, wanted)

    def lookup_hashes(
        hashes: dict[str, str],
        banks: set[str] | None,
        coinflip: float,
        all_banks: bool = False,
    ) -> dict[str, Any]:
        return {
            st: _hits_by_bank(lookup(st, value, banks, coinflip=coinflip, all_banks=all_banks))
            if value
            else {}
            for st, value in hashes.items()
        }

    # -- core

    @r.get("/status", response_class=PlainTextResponse)
    async def status() -> PlainTextResponse:
        if not service.loaded:
            return PlainTextResponse("INDEX-NOT-LOADED", status_code=503)
        if service.stale(STALE_SECONDS):
            return PlainTextResponse("INDEX-STALE", status_code=503)
        return PlainTextResponse("I-AM-ALIVE")

    @r.get("/status/live", response_class=PlainTextResponse)
    async def status_live() -> PlainTextResponse:
        return PlainTextResponse("I-AM-ALIVE")

    @r.get("/site-map")
    async def site_map(request: Request) -> list[str]:
        """Every route of the service, sorted (HMA's ``/site-map``)."""
        return sorted({route.path for route in iter_routes(request.app)})

    @r.get("/openapi/openapi.json")
    async def hma_openapi(request: Request) -> dict[str, Any]:
        """The HMA-compatible part of the OpenAPI spec, where HMA serves its own (HMA's
        title, so clients that look for it find it); ``/openapi.json`` has all of Tipline."""
        spec = dict(request.app.openapi())
        spec["info"] = {
            **spec.get("info", {}),
            "title": "Open Media Match API",
            "description": "Tipline's HMA 2.0-compatible API (see /openapi.json for all).",
        }
        spec["paths"] = {
            p: v
            for p, v in spec.get("paths", {}).items()
            if p in ("/status", "/status/live", "/site-map") or p.startswith(HMA_PREFIXES)
        }
        return spec

    # -- hasher

    @r.get("/h/hash", dependencies=[Depends(require("hash:read"))])
    async def hash_url(
        url: str = Query(...), content_type: str | None = None, types: str | None = None
    ) -> dict[str, str]:
        media = await run_in_threadpool(fetch_media, url, settings, content_type)
        return await hashes_of(media, types)

    @r.post("/h/hash", dependencies=[Depends(require("hash:read"))])
    async def hash_upload(request: Request, types: str | None = None) -> dict[str, str]:
        media = await read_upload(request, max_up, timeout=up_t)
        return await hashes_of(media, types)

    # -- matcher

    @r.get("/m/raw_lookup", dependencies=[Depends(require("match:read"))])
    async def raw_lookup(
        signal_type: str = Query(...),
        signal: str = Query(...),
        banks: str | None = None,
        include_distance: bool = False,
    ) -> JSONResponse:
        # HMA checks no enabled state here (not the content's, not the bank's)
        hits = lookup(signal_type, signal, _banks_param(banks), all_entries=True)
        if include_distance:
            return JSONResponse(
                {
                    "matches": [
                        {
                            "bank_content_id": h.entry_id,
                            "distance": _distance(h.signal_type, h.distance),
                        }
                        for h in hits
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
        types: str | None = None,
        banks: str | None = None,
        seed: str | None = None,
    ) -> JSONResponse:
        wanted = _banks_param(banks)
        flip = _coinflip(seed)
        if url:
            media = await run_in_threadpool(fetch_media, url, settings, content_type)
            hashes = await hashes_of(media, types, for_lookup=True)
            out = lookup_hashes(hashes, wanted, flip)
            if signal_type is not None:
                return JSONResponse(out.get(signal_type, {}))
            return JSONResponse(out)
        if not signal or not signal_type:
            raise HttpError(400, "Either url or both signal and signal_type are required")
        # a JSONResponse skips FastAPI's (slow, recursive) encoder: answers can hold thousands
        # of matches when a query lands in a near-duplicate cluster
        return JSONResponse(_hits_by_bank(lookup(signal_type, signal, wanted, coinflip=flip)))

    @r.post("/m/lookup", dependencies=[Depends(require("match:read"))])
    async def lookup_post(
        request: Request,
        banks: str | None = None,
        seed: str | None = None,
        bypass_coinflip: str = "false",
    ) -> JSONResponse:
        media = await read_upload(request, max_up, timeout=up_t)
        hashes = await hashes_of(media, None, for_lookup=True)
        bypass = bypass_coinflip == "true"
        flip = _coinflip(seed, bypass)
        return JSONResponse(lookup_hashes(hashes, _banks_param(banks), flip, all_banks=bypass))

    @r.post("/m/compare", dependencies=[Depends(require("match:read"))])
    async def compare(request: Request) -> dict[str, Any]:
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise HttpError(400, "Request input was not a dict")
        out: dict[str, Any] = {}
        for st, pair in body.items():
            if not isinstance(pair, list):
                raise HttpError(400, f"Comparison hashes for {st[:40]} was not a list")
            if len(pair) != 2:
                raise HttpError(400, "Comparison hash list length must be exactly 2")
            t = signal_type(check_type(st))
            if not all(isinstance(x, str) for x in pair):
                raise HttpError(400, f"Invalid {st} hash: hashes are strings")
            try:
                a, b = t.normalise(pair[0]), t.normalise(pair[1])
            except InvalidSignalError as err:
                raise HttpError(400, f"Invalid {st} hash: {err}") from None
            d = t.distance(a, b)
            if t.has_distance:
                out[st] = [d <= t.default_threshold, {"distance": d}]
            else:
                # HMA answers 500 here (its no-distance result does not serialise); what it
                # means: the match, with an empty similarity
                out[st] = [d == 0, {}]
        return out

    def index_sizes() -> dict[str, dict[str, int | float]]:
        st = service.status()
        every = st.get("all_by_signal_type", {})
        stats = service.signal_type_stats()
        out: dict[str, dict[str, int | float]] = {}
        for name in HMA_NAMES:
            ours = HMA_SIGNAL_TYPES[name]
            db_size, newest = stats.get(ours, (0, 0.0))
            out[name] = {"db": db_size, "index": int(every.get(ours, 0)), "newest": newest}
        return out

    def one_type(signal_type: str | None) -> list[str]:
        if signal_type is None:
            return list(HMA_NAMES)
        if _hma_name(signal_type) not in HMA_NAMES:
            raise HttpError(400, f"No such signal type {signal_type[:40]!r}")
        return [_hma_name(signal_type)]

    @r.get("/m/index/status", dependencies=[Depends(require("index:read"))])
    async def index_status(signal_type: str | None = None) -> dict[str, Any]:
        names = one_type(signal_type)
        if not service.loaded:
            return {n: {"present": False, "built_to": -1, "size": 0} for n in names}
        sizes = await run_in_threadpool(index_sizes)
        return {
            n: {
                "present": True,
                "built_to": int(sizes[n]["newest"]) if sizes[n]["index"] else -1,
                "size": int(sizes[n]["index"]),
            }
            for n in names
        }

    # -- curator: banks

    @r.get("/c/banks", dependencies=[Depends(require("bank:read"))])
    def banks_list() -> list[dict[str, Any]]:
        return [_bank_json(b) for b in service.list_banks()]

    @r.post("/c/banks", status_code=201, dependencies=[Depends(require("bank:write"))])
    async def banks_create(request: Request) -> JSONResponse:
        body: _BankCreate = validated(_BankCreate, await _json_object(request))
        validate_bank_name(body.name)
        bank = Bank(name=body.name)
        # HMA: an explicit ratio, else ``enabled``, else 1.0
        if body.enabled_ratio is not None:
            _set_ratio(bank, body.enabled_ratio)
        elif body.enabled is not None:
            _set_ratio(bank, 1.0 if body.enabled else 0.0)
        try:
            service.get_bank(body.name)
        except BankNotFoundError:
            pass
        else:
            raise HttpError(403, "Bank already exists")
        created = await run_in_threadpool(service.create_bank, bank)
        return JSONResponse(_bank_json(created), status_code=201)

    @r.get("/c/bank/{name}", dependencies=[Depends(require("bank:read"))])
    def bank_get(name: str) -> dict[str, Any]:
        return _bank_json(get_bank(name))

    def get_bank(name: str, message: str | None = None) -> Bank:
        try:
            return service.get_bank(name)
        except BankNotFoundError:
            raise HttpError(404, message or f"bank {name[:200]!r} not found") from None

    @r.put("/c/bank/{name}", dependencies=[Depends(require("bank:write"))])
    async def bank_update(name: str, request: Request) -> dict[str, Any]:
        body: _BankUpdate = validated(_BankUpdate, await _json_object(request))
        bank = await run_in_threadpool(get_bank, name, "Bank not found")
        if body.name is not None and body.name != name:
            validate_bank_name(body.name)
            try:
                bank = await run_in_threadpool(service.rename_bank, name, body.name)
            except BankError as err:
                if "already exists" in str(err):
                    raise HttpError(403, "Bank name already exists") from None
                raise
        if body.enabled is not None:
            _set_ratio(bank, 1.0 if body.enabled else 0.0)
        if body.enabled_ratio is not None:
            _set_ratio(bank, body.enabled_ratio)
        return _bank_json(await run_in_threadpool(service.update_bank, bank))

    @r.delete("/c/bank/{name}", dependencies=[Depends(require("bank:write"))])
    def bank_delete(name: str) -> dict[str, Any]:
        with contextlib.suppress(BankNotFoundError):  # HMA: one that is not there is fine
            service.delete_bank(name)
        return {"message": "Done"}

    # -- curator: content

    def add_content(
        bank: str,
        signals: dict[str, str],
        note: str | None,
        uri: str,
        metadata: dict[str, Any] | None,
    ) -> dict[str, Any]:
        get_bank(bank)  # 404 before anything else
        if not signals:
            raise HttpError(400, "No signals given")
        for st in signals:
            check_type(st)
        usable = {k: v for k, v in signals.items() if v}
        if not usable:
            raise HttpError(400, "no usable signal (PDQ quality below 50?)")
        if len(usable) > 1:
            raise HttpError(400, 'give exactly one signal, e.g. {"pdq": "<64 hex>"}')
        label = str((metadata or {}).get("content_id") or "")[:255]
        entries = [
            Entry(
                bank=bank,
                signal_type=HMA_SIGNAL_TYPES[st],
                signal=v,
                label=label,
                source=uri[:1000],
                note=note or "",
                metadata=metadata,
            )
            for st, v in usable.items()
        ]
        try:
            ids = service.add_entries(entries, dedupe=False)  # HMA: always a new content item
        except InvalidSignalError as err:
            st = next(iter(usable))
            raise HttpError(400, f"Invalid {st} signal: {err}") from None
        return {
            "id": ids[0],
            "signals": {
                _hma_name(e.signal_type): signal_type(e.signal_type).normalise(e.signal)
                for e in entries
            },
        }

    @r.post("/c/bank/{name}/content", dependencies=[Depends(require("bank:write"))])
    async def content_add(
        name: str,
        request: Request,
        url: str | None = None,
        content_type: str | None = None,
        types: str | None = None,
    ) -> dict[str, Any]:
        await run_in_threadpool(get_bank, name)
        ctype = request.headers.get("content-type", "")
        raw_meta: Any = None
        raw_note: Any = None
        form = None
        if ctype.startswith("application/json"):
            body = await _json_body(request)
            if isinstance(body, dict):
                raw_meta, raw_note = body.get("metadata"), body.get("note")
        elif ctype.startswith("multipart/form-data"):
            form = await read_form(request, max_up, up_t)
            if "metadata" in form:
                try:
                    raw_meta = json.loads(str(form["metadata"]))
                except ValueError:
                    raise HttpError(400, "metadata form field must be valid JSON") from None
            raw_note = form.get("note")
        meta = _metadata(raw_meta)
        note = _note(raw_note)
        if url:
            media = await run_in_threadpool(fetch_media, url, settings, content_type)
        elif form is not None and any(isinstance(v, UploadFile) for _, v in form.multi_items()):
            media = await read_upload(request, max_up, form, up_t)
        else:
            raise HttpError(400, "Neither `url` nor multipart file upload was received")
        sigs = await hashes_of(media, types if url else None)
        return await run_in_threadpool(add_content, name, sigs, note, url or "", meta)

    @r.post("/c/bank/{name}/signal", dependencies=[Depends(require("bank:write"))])
    async def signal_add(name: str, request: Request) -> dict[str, Any]:
        await run_in_threadpool(get_bank, name)
        body = await _json_object(request)
        note = _note(body.pop("note", None))
        for st, value in body.items():
            if st not in HMA_SIGNAL_TYPES:
                raise HttpError(400, f"No such signal type {st[:40]}")
            if not isinstance(value, str):
                raise HttpError(400, f"Invalid {st} signal: not a string")
        return await run_in_threadpool(add_content, name, body, note, "", None)

    def content_entry(name: str, cid: int) -> tuple[Bank, Entry]:
        bank = get_bank(name)
        try:
            e = service.get_entry(cid)
        except BankError:
            raise HttpError(404, f"content '{cid}' not found") from None
        if e.bank != name:
            raise HttpError(404, f"content '{cid}' not found in bank {name}")
        return bank, e

    def content_json(name: str, cid: int, signals: bool, metadata: bool) -> dict[str, Any]:
        bank, e = content_entry(name, cid)
        out: dict[str, Any] = {
            "id": cid,
            "disable_until_ts": _disable_ts(e),
            "original_media_uri": e.source or None,
            "bank": _bank_json(bank),
        }
        if signals:
            out["signals"] = {_hma_name(e.signal_type): e.signal}
        if metadata and e.metadata:
            out["metadata"] = {
                "content_id": e.metadata.get("content_id"),
                "content_uri": e.metadata.get("content_uri"),
                "json": e.metadata.get("json"),
                "collab": None,
            }
        if e.note:
            out["note"] = e.note
        return out

    @r.get("/c/bank/{name}/content/{cid}", dependencies=[Depends(require("bank:read"))])
    def content_get(
        name: str, cid: int, include_signals: str = "false", include_metadata: str = "true"
    ) -> dict[str, Any]:
        return content_json(
            name, cid, include_signals.lower() == "true", include_metadata.lower() == "true"
        )

    def update_content(name: str, cid: int, body: dict[str, Any]) -> dict[str, Any]:
        bank, e = content_entry(name, cid)
        kw: dict[str, Any] = {}
        if "disable_until_ts" in body:
            raw = body["disable_until_ts"]
            try:
                if isinstance(raw, bool) or raw is None:
                    raise ValueError
                ts = int(raw)
            except (TypeError, ValueError):
                raise HttpError(400, f"Invalid int: '{str(raw)[:40]}'") from None
            if ts < 0:
                raise HttpError(400, "disable_until_ts must be a non-negative integer")
            if ts > time.time() + FIVE_YEARS:
                raise HttpError(400, "disable_until_ts must be less than 5 years in the future")
            kw["enabled"] = ts != 0
            kw["disabled_until"] = float(ts) if ts > 1 else None
        if "note" in body:
            kw["note"] = _note(body["note"]) or ""
        if kw:
            e = service.update_entry(name, cid, **kw)
        # HMA answers its content record as stored
        return {
            "id": cid,
            "disable_until_ts": _disable_ts(e),
            "collab_metadata": {},
            "original_media_uri": e.source or None,
            "bank": _bank_json(bank),
            "user_metadata": e.metadata or None,
            "note": e.note or None,
        }

    @r.put("/c/bank/{name}/content/{cid}", dependencies=[Depends(require("bank:write"))])
    async def content_update(name: str, cid: int, request: Request) -> dict[str, Any]:
        body = await _json_object(request)
        return await run_in_threadpool(update_content, name, cid, body)

    @r.delete("/c/bank/{name}/content/{cid}", dependencies=[Depends(require("bank:write"))])
    def content_delete(name: str, cid: int) -> dict[str, Any]:
        get_bank(name)
        return {"deleted": service.remove_entries(name, [cid])}

    # -- curator: signal and content types

    @r.get("/c/signal_type", dependencies=[Depends(require("bank:read"))])
    def signal_types() -> list[dict[str, Any]]:
        return [{"name": n, "enabled_ratio": ratio} for n, ratio in enabled_types().items()]

    @r.put("/c/signal_type/{name}", dependencies=[Depends(require("bank:write"))])
    async def signal_type_update(name: str, request: Request) -> Response:
        body = await _json_object(request)
        if body.get("enabled_ratio") is None:
            raise HttpError(400, "enabled_ratio is required")
        try:
            ratio = float(body["enabled_ratio"])
        except (TypeError, ValueError):
            raise HttpError(400, f"Invalid float: '{str(body['enabled_ratio'])[:40]}'") from None
        if _hma_name(name) not in HMA_NAMES:
            raise HttpError(404, f"No such signal type {name[:40]!r}")
        if not 0.0 <= ratio <= 1.0:
            raise HttpError(400, "enabled_ratio must be a number from 0 to 1")
        # HMA answers 500 here (a route registered twice); what it means: stored, 204
        await run_in_threadpool(service.set_signal_type_ratio, _hma_name(name), ratio)
        return Response(status_code=204)

    @r.get("/c/signal_type/index", dependencies=[Depends(require("index:read"))])
    async def signal_type_index(signal_type: str | None = None) -> dict[str, Any]:
        names = one_type(signal_type)
        sizes = await run_in_threadpool(index_sizes)
        out: dict[str, Any] = {}
        for n in names:
            db, idx, newest = (sizes[n][k] for k in ("db", "index", "newest"))
            built = int(newest) if idx and idx == db else (int(newest) if idx else -1)
            out[n] = {
                "db_size": int(db),
                "index_size": int(idx),
                "index_out_of_date": db != idx,
                "newest_db_item": int(newest) if db else -1,
                "index_built_to": built,
            }
        return out

    @r.get("/c/content_type", dependencies=[Depends(require("bank:read"))])
    async def content_types() -> list[dict[str, Any]]:
        return [{"name": c, "enabled": True} for c in CONTENT_TYPES]

    # -- curator: exchanges live in tipline.service.exchanges (the same /c/ prefix)

    return r


HMA_PREFIXES = ("/status", "/h/", "/m/", "/c/")
