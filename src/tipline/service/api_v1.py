"""Our own versioned API, ``/api/v1``: banks and entries, matching, index status.

Reports, items and jobs routes live in the pipeline's module; this file is banks and matching.
Errors are ``{"message": ...}`` like the HMA routes. The OpenAPI spec is at ``/openapi.json``.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from tipline.banks.bank import DEFAULT_PDQ_THRESHOLD, Bank, Entry, validate_bank_name
from tipline.banks.formats import parse_hash_list
from tipline.errors import BankError, InvalidSignalError
from tipline.record import ItemRecord
from tipline.scan.hashing import HashOptions, hash_bytes
from tipline.service.auth import require
from tipline.service.bodies import read_limited_body
from tipline.service.errors import HttpError
from tipline.service.hma import read_upload
from tipline.service.matching import MatchService
from tipline.service.ops import Metrics
from tipline.service.settings import ServiceSettings

PREFIX = "/api/v1"
#: Uploads to /api/v1/match: hashes plus AI provenance evidence (no watermark decoding).
MATCH_OPTIONS = HashOptions(provenance=True)
MAX_SIGNALS = 1000


class BankIn(BaseModel):
    name: str = Field(description="HMA's rule: ^[A-Z_][A-Z0-9_]*$")
    role: Literal["alert", "ignore"] = "alert"
    pdq_threshold: int = Field(DEFAULT_PDQ_THRESHOLD, ge=0, le=128)
    enabled: bool = True
    description: str = Field("", max_length=2000)


class BankPatch(BaseModel):
    role: Literal["alert", "ignore"] | None = None
    pdq_threshold: int | None = Field(None, ge=0, le=128)
    enabled: bool | None = None
    description: str | None = Field(None, max_length=2000)
    #: action this alert bank's matches without a human view
    auto_confirm: bool | None = None
    #: agreeing analysts an item matching this bank needs (0: the service default)
    consensus_required: int | None = Field(None, ge=0, le=10)


class BankOut(BaseModel):
    name: str
    role: str
    pdq_threshold: int
    enabled: bool
    description: str
    created_at: float
    entries: int | None = None
    auto_confirm: bool | None = None
    consensus_required: int | None = None


class EntryIn(BaseModel):
    signal_type: str = Field(description="pdq, md5 (video_md5), sha1, sha256, autov1/2/3")
    signal: str = Field(max_length=100_000)
    label: str = Field("", max_length=255)
    source: str = Field("", max_length=1000)
    note: str = Field("", max_length=2000)
    tags: list[str] = Field(default_factory=list, max_length=32)
    enabled: bool = True


class EntriesIn(BaseModel):
    entries: list[EntryIn] = Field(max_length=10_000)


class EntryOut(BaseModel):
    id: int
    bank: str
    signal_type: str
    signal: str
    label: str
    source: str
    note: str
    added_at: float
    enabled: bool
    tags: list[str]


class EntryPatch(BaseModel):
    enabled: bool


class SignalIn(BaseModel):
    signal_type: str
    signal: str = Field(max_length=100_000)


class MatchIn(BaseModel):
    signals: list[SignalIn] = Field(max_length=MAX_SIGNALS)
    banks: list[str] | None = None


class MatchOut(BaseModel):
    bank: str
    entry_id: int
    signal_type: str
    distance: int
    label: str
    role: str
    suppressed_by: int | None = None


def _bank_out(b: Bank, entries: int | None = None, store: Any = None) -> BankOut:
    review = getattr(store, "review_settings", None)
    auto, need = review(b.name) if review is not None else (None, None)
    return BankOut(
        name=b.name,
        role=b.role,
        pdq_threshold=b.pdq_threshold,
        enabled=b.enabled,
        description=b.description,
        created_at=b.created_at,
        entries=entries,
        auto_confirm=auto,
        consensus_required=need,
    )


def _entry_out(e: Entry) -> EntryOut:
    return EntryOut(
        id=e.id or 0,
        bank=e.bank,
        signal_type=e.signal_type,
        signal=e.signal,
        label=e.label,
        source=e.source,
        note=e.note,
        added_at=e.added_at,
        enabled=e.enabled,
        tags=list(e.tags),
    )


def _item_json(record: ItemRecord) -> dict[str, Any]:
    return {
        "media_type": record.media_type,
        "size": record.size,
        "md5": record.md5,
        "sha1": record.sha1,
        "sha256": record.sha256,
        "pdq": record.pdq,
        "pdq_quality": record.pdq_quality,
        "errors": list(record.errors),
    }


def router(service: MatchService, settings: ServiceSettings, metrics: Metrics) -> APIRouter:
    r = APIRouter(prefix=PREFIX, tags=["banks and matching"])

    @r.get("/banks", dependencies=[Depends(require("bank:read"))])
    def banks_list() -> list[BankOut]:
        return [
            _bank_out(b, service.count_entries(b.name), service.store) for b in service.list_banks()
        ]

    @r.post("/banks", status_code=201, dependencies=[Depends(require("bank:write"))])
    def banks_create(body: BankIn) -> BankOut:
        validate_bank_name(body.name)
        return _bank_out(service.create_bank(Bank(**body.model_dump())), 0)

    @r.get("/banks/{name}", dependencies=[Depends(require("bank:read"))])
    def bank_get(name: str) -> BankOut:
        return _bank_out(service.get_bank(name), service.count_entries(name), service.store)

    @r.patch("/banks/{name}", dependencies=[Depends(require("bank:write"))])
    def bank_patch(name: str, body: BankPatch) -> BankOut:
        bank = service.get_bank(name)
        changes = body.model_dump(exclude_none=True)
        auto = changes.pop("auto_confirm", None)
        need = changes.pop("consensus_required", None)
        if auto is not None or need is not None:
            setter = getattr(service.store, "set_review_settings", None)
            if setter is None:
                raise HttpError(400, "this bank store has no review settings")
            setter(name, auto_confirm=auto, consensus=need)
        for k, v in changes.items():
            setattr(bank, k, v)
        if changes:
            bank = service.update_bank(bank)
        return _bank_out(bank, service.count_entries(name), service.store)

    @r.delete("/banks/{name}", dependencies=[Depends(require("bank:write"))])
    def bank_delete(name: str) -> dict[str, int]:
        return {"deleted_entries": service.delete_bank(name)}

    @r.get("/banks/{name}/entries", dependencies=[Depends(require("bank:read"))])
    def entries_list(
        name: str, limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0)
    ) -> list[EntryOut]:
        service.get_bank(name)
        out: list[EntryOut] = []
        for i, e in enumerate(service.iter_entries(name)):
            if i < offset:
                continue
            if len(out) >= limit:
                break
            out.append(_entry_out(e))
        return out

    @r.post("/banks/{name}/entries", status_code=201, dependencies=[Depends(require("bank:write"))])
    def entries_add(name: str, body: EntriesIn) -> dict[str, list[int]]:
        service.get_bank(name)
        entries = [Entry(bank=name, **e.model_dump()) for e in body.entries]
        try:
            return {"ids": service.add_entries(entries)}
        except InvalidSignalError as err:
            raise HttpError(400, str(err)) from None

    @r.post(
        "/banks/{name}/import",
        dependencies=[Depends(require("bank:write"))],
        openapi_extra={"requestBody": {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    async def bank_import(
        name: str,
        request: Request,
        format: Literal["te", "hex", "jsonl", "te-csv"] = "te",
        signal_type: str | None = None,
        skip_bad_lines: bool = False,
        label: str = Query("", max_length=255),
    ) -> dict[str, Any]:
        """Import a hash list (the request body; formats as ``tipline bank import``).

        All or nothing: the first malformed line is a 400 naming it, unless ``skip_bad_lines``
        (then good lines are added and up to 100 bad ones listed). Signals the bank already
        holds count as duplicates. Entries are matchable when the response is sent."""
        await run_in_threadpool(service.get_bank, name)
        data = await read_limited_body(
            request, settings.max_upload_bytes, settings.upload_timeout_seconds
        )
        try:
            parsed = parse_hash_list(data, format, default_signal_type=signal_type)
        except BankError as err:
            raise HttpError(400, str(err)) from None
        if parsed.errors and not skip_bad_lines:
            raise HttpError(
                400,
                f"{parsed.errors[0]} (nothing imported; skip_bad_lines=true "
                "imports the good lines)",
            )
        for e in parsed.entries:
            e.bank = name
            e.label = e.label or label
        before = service.count_entries(name)
        try:
            ids = await run_in_threadpool(service.add_entries, parsed.entries)
        except InvalidSignalError as err:
            raise HttpError(400, str(err)) from None
        added = service.count_entries(name) - before
        return {
            "format": format,
            "added": added,
            "duplicates": len(ids) - added,
            "skipped_lines": len(parsed.errors),
            "errors": [str(e) for e in parsed.errors[:100]],
        }

    @r.get("/banks/{name}/entries/{entry_id}", dependencies=[Depends(require("bank:read"))])
    def entry_get(name: str, entry_id: int) -> EntryOut:
        e = service.get_entry(entry_id)
        if e.bank != name:
            raise HttpError(404, f"no entry {entry_id} in bank {name}")
        return _entry_out(e)

    @r.patch("/banks/{name}/entries/{entry_id}", dependencies=[Depends(require("bank:write"))])
    def entry_patch(name: str, entry_id: int, body: EntryPatch) -> EntryOut:
        if not service.set_entries_enabled(name, [entry_id], body.enabled):
            raise HttpError(404, f"no entry {entry_id} in bank {name}")
        return _entry_out(service.get_entry(entry_id))

    @r.delete("/banks/{name}/entries/{entry_id}", dependencies=[Depends(require("bank:write"))])
    def entry_delete(name: str, entry_id: int) -> dict[str, int]:
        n = service.remove_entries(name, [entry_id])
        if not n:
            raise HttpError(404, f"no entry {entry_id} in bank {name}")
        return {"deleted": n}

    @r.post(
        "/match",
        dependencies=[Depends(require("match:read"))],
        openapi_extra={
            "requestBody": {
                "content": {
                    "application/json": {"schema": MatchIn.model_json_schema()},
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "properties": {"file": {"type": "string", "format": "binary"}},
                        }
                    },
                }
            }
        },
    )
    async def match(request: Request) -> dict[str, Any]:
        """Signals (JSON) or an upload (multipart, one file field). Uploads are hashed and
        answered with the item's hashes, its matches and its AI provenance evidence."""
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("multipart/form-data"):
            media = await read_upload(
                request, settings.max_upload_bytes, timeout=settings.upload_timeout_seconds
            )
            record = await run_in_threadpool(hash_bytes, media.data, media.name, MATCH_OPTIONS)
            matches = await run_in_threadpool(service.match_record, record)
            metrics.count_matches([m.bank for m in matches if m.suppressed_by is None])
            return {
                "item": _item_json(record),
                "matches": [m.to_json() for m in matches],
                "ai_evidence": record.ai_evidence,
                "provenance": [f.to_json() for f in record.provenance or []],
            }
        try:
            body = MatchIn.model_validate_json(await request.body())
        except ValueError as err:
            raise HttpError(422, f"invalid match request: {str(err)[:500]}") from None
        banks = set(body.banks) if body.banks else None
        results: list[dict[str, Any]] = []
        for s in body.signals:
            try:
                hits = service.lookup(s.signal_type, s.signal, banks)
            except InvalidSignalError as err:
                results.append(
                    {
                        "signal_type": s.signal_type,
                        "signal": s.signal[:200],
                        "error": str(err),
                        "matches": [],
                    }
                )
                continue
            metrics.count_matches([h.bank for h in hits])
            results.append(
                {
                    "signal_type": s.signal_type,
                    "signal": s.signal,
                    "matches": [
                        {
                            "bank": h.bank,
                            "entry_id": h.entry_id,
                            "signal_type": h.signal_type,
                            "distance": h.distance,
                            "label": h.label,
                        }
                        for h in hits
                    ],
                }
            )
        return {"results": results}

    @r.get("/index/status", dependencies=[Depends(require("index:read"))])
    def index_status() -> dict[str, Any]:
        return service.status()

    return r
