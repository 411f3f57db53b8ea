"""Tipline peers (docs/exchanges.md, "Tipline peers"): one Tipline instance sharing banks with
another, hotline to hotline.

**Publishing.** :func:`share_bank` shares a bank with a peer (an account here whose API tokens
with ``exchange:read`` read the feed) and makes the HMAC key both sides sign with. The feed
(``GET /api/v1/exchange/banks/<bank>/changes``) answers pages of changes after an opaque cursor:
before each page, :func:`reconcile` compares the bank with what the share has published
(``exchange_share_entries``) and gives every new, changed, disabled or deleted entry the next
number of the share's change sequence, so whoever changed the bank (a grade, an import, a
person) the peer sees it, and a cursor never goes backwards. A disabled or deleted entry is a
tombstone.

**Signing.** Every page is signed: ``X-Tipline-Signature: v1=<hex>``, HMAC-SHA256 over
``<timestamp>\\n<nonce>\\n<METHOD>\\n<path?query>\\n`` + the body, with the timestamp in
``X-Tipline-Timestamp``. The nonce is the reader's own (``X-Tipline-Nonce``, fresh per request),
so a recorded page replayed to it does not verify, and a page older than
:data:`MAX_SKEW_SECONDS` is refused. Requests to the peer (opinions) are signed the same way.

**Fetching.** The ``tipline`` exchange type reads a peer's feed through the SSRF-safe fetcher;
its checkpoint is the cursor. Records are keyed by the publisher's entry (``e<id>``), carry the
partner metadata (which list, which partner, classification, timestamps), and tombstones
disable them here. :meth:`TiplinePeerExchange.submit_opinion` tells the peer what our analysts
concluded about one of its entries (``POST .../opinions``, idempotent per entry).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, insert, select, update
from sqlalchemy.orm import Session

from tipline.banks.bank import Entry, validate_bank_name
from tipline.errors import BankError, TiplineError
from tipline.exchange.api import (
    Checkpoint,
    ConfigField,
    ExchangeConfigError,
    ExchangeError,
    ExchangeFetchError,
    ExchangeRecord,
    ExchangeType,
    FetchContext,
    FetchDelta,
    Opinion,
    PartnerStatusError,
    Problem,
    register,
)
from tipline.exchange.store import named_bank
from tipline.net.fetch import FetchError, HTTPStatusError, fetch, send_pinned
from tipline.signals.types import registered as signal_types
from tipline.store.exchange_share_tables import (
    ExchangeShareEntryRow,
    ExchangeShareOpinionRow,
    ExchangeShareRow,
    ExchangeShareSubmissionRow,
)
from tipline.store.tables import BankEntryRow, BankRow, User

SIGNATURE_HEADER = "X-Tipline-Signature"
TIMESTAMP_HEADER = "X-Tipline-Timestamp"
NONCE_HEADER = "X-Tipline-Nonce"
#: A signed page or request older (or newer) than this is refused.
MAX_SKEW_SECONDS = 300
DEFAULT_PAGE_SIZE = 1_000
MAX_PAGE_SIZE = 10_000
SECRET_PREFIX = "tls_"
_CURSOR_PREFIX = "c1."
_OPINION_CATEGORIES = ("positive", "negative", "not_sure")


class ShareError(ExchangeError):
    """A share operation that cannot be done (no such bank, peer, share)."""


class CursorError(ShareError):
    """A cursor that is not one of this share's (garbage, another share's, from the future)."""


class SignatureError(ExchangeError):
    """A signed page or request that does not verify or is too old."""


# -- signing ---------------------------------------------------------------------------------


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def _key(secret: str) -> bytes:
    return secret.encode("utf-8")


def signature(secret: str, ts: int, nonce: str, method: str, target: str, body: bytes) -> str:
    head = f"{ts}\n{nonce}\n{method.upper()}\n{target}\n".encode()
    return "v1=" + hmac.new(_key(secret), head + body, hashlib.sha256).hexdigest()


def sign_headers(
    secret: str, nonce: str, method: str, target: str, body: bytes, now: float
) -> dict[str, str]:
    ts = int(now)
    return {
        TIMESTAMP_HEADER: str(ts),
        NONCE_HEADER: nonce,
        SIGNATURE_HEADER: signature(secret, ts, nonce, method, target, body),
    }


def verify(
    secret: str,
    headers: Mapping[str, str],
    nonce: str,
    method: str,
    target: str,
    body: bytes,
    now: float,
) -> None:
    """Raise :class:`SignatureError` unless ``headers`` sign ``body`` for this request within
    :data:`MAX_SKEW_SECONDS` of ``now``. ``headers``: names lower-cased."""
    sent = headers.get(SIGNATURE_HEADER.lower(), "")
    raw_ts = headers.get(TIMESTAMP_HEADER.lower(), "")
    if not sent or not raw_ts:
        raise SignatureError("the page is not signed (no signature or timestamp header)")
    try:
        ts = int(raw_ts)
    except ValueError:
        raise SignatureError("the page's timestamp is not a number") from None
    expected = signature(secret, ts, nonce, method, target, body)
    if not hmac.compare_digest(sent.encode(), expected.encode()):
        raise SignatureError(
            "the page's signature does not verify (wrong secret, altered or replayed page)"
        )
    if abs(now - ts) > MAX_SKEW_SECONDS:
        raise SignatureError(
            f"the signed page is stale: signed {int(now - ts)} s from now "
            f"(at most {MAX_SKEW_SECONDS} s; a replay, or a clock that is wrong)"
        )


# -- cursors ---------------------------------------------------------------------------------


def encode_cursor(share_id: int, seq: int) -> str:
    raw = json.dumps([share_id, seq], separators=(",", ":")).encode()
    return _CURSOR_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(share: ExchangeShareRow, cursor: str | None) -> int:
    """The sequence number after which a page starts (0 for none). :class:`CursorError` for a
    cursor that is garbage, another share's, or ahead of the share's sequence."""
    if not cursor:
        return 0
    text = cursor.strip()
    if not text.startswith(_CURSOR_PREFIX) or len(text) > 200:
        raise CursorError("not a cursor of this feed (use the next_cursor a page gave)")
    body = text[len(_CURSOR_PREFIX) :]
    try:
        doc = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise CursorError("not a cursor of this feed (use the next_cursor a page gave)") from None
    if (
        not isinstance(doc, list)
        or len(doc) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in doc)
    ):
        raise CursorError("not a cursor of this feed (use the next_cursor a page gave)")
    share_id, seq = doc
    if share_id != share.id:
        raise CursorError("the cursor belongs to another share (was the bank shared anew?)")
    if seq > share.last_seq:
        raise CursorError(
            f"the cursor is ahead of this feed (change {seq}, the feed is at {share.last_seq})"
        )
    return int(seq)


# -- publishing: shares ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ShareInfo:
    bank: str
    peer: str
    last_seq: int
    published: int
    created_at: float
    last_read_at: float | None
    opinions: int

    def to_json(self) -> dict[str, Any]:
        return {
            "bank": self.bank,
            "peer": self.peer,
            "changes": self.last_seq,
            "published": self.published,
            "created_at": int(self.created_at),
            "last_read_at": None if self.last_read_at is None else int(self.last_read_at),
            "opinions": self.opinions,
        }


def _bank(s: Session, name: str) -> BankRow:
    return named_bank(s, name, ShareError)


def share_bank(
    s: Session,
    bank: str,
    peer: str,
    seal: Any,
    now: float | None = None,
    *,
    accept_into: str | None = None,
) -> str:
    """Share ``bank`` with the account ``peer``; returns the signing secret (shown once; stored
    sealed by ``seal(owner, data) -> bytes``). Sharing again makes a new secret and keeps the
    sequence. ``accept_into``: the bank (created if missing, role alert) the peer's pushed
    records land in; None: the peer may not push (sharing again without it ends pushing)."""
    row = _bank(s, bank)
    inbound_id: int | None = None
    if accept_into is not None:
        try:
            inbound_name = validate_bank_name(accept_into)
        except BankError as err:
            raise ShareError(str(err)) from None
        if inbound_name == row.name:
            raise ShareError("a peer's pushes land in a bank of their own, not the shared one")
        inbound = s.scalar(select(BankRow).where(BankRow.name == inbound_name))
        if inbound is None:
            inbound = BankRow(
                name=inbound_name,
                role="alert",
                pdq_threshold=31,
                enabled=True,
                description=f"records pushed by Tipline peer {peer[:80]}",
                created_at=time.time(),
                enabled_ratio=1.0,
            )
            s.add(inbound)
            s.flush()
        inbound_id = inbound.id
    user = s.scalar(select(User).where(User.username == peer))
    if user is None:
        raise ShareError(
            f"no account named {peer[:80]!r}: create it first (tipline user add {peer[:80]} "
            "--role partner) and give it a token with exchange:read"
        )
    secret = new_secret()
    owner = share_owner(row.name, peer)
    existing = s.scalar(
        select(ExchangeShareRow).where(
            ExchangeShareRow.bank_id == row.id, ExchangeShareRow.peer == peer
        )
    )
    if existing is None:
        s.add(
            ExchangeShareRow(
                bank_id=row.id,
                peer=peer,
                secret=seal(owner, {"secret": secret}),
                last_seq=0,
                created_at=time.time() if now is None else now,
                accept_into_bank_id=inbound_id,
            )
        )
    else:
        existing.secret = seal(owner, {"secret": secret})
        existing.accept_into_bank_id = inbound_id
    s.flush()
    return secret


def share_owner(bank: str, peer: str) -> str:
    """The associated data a share's sealed secret is bound to."""
    return f"exchange-share:{bank}:{peer}"


def unshare_bank(s: Session, bank: str, peer: str) -> bool:
    row = _bank(s, bank)
    share = s.scalar(
        select(ExchangeShareRow).where(
            ExchangeShareRow.bank_id == row.id, ExchangeShareRow.peer == peer
        )
    )
    if share is None:
        return False
    s.execute(delete(ExchangeShareEntryRow).where(ExchangeShareEntryRow.share_id == share.id))
    s.execute(delete(ExchangeShareOpinionRow).where(ExchangeShareOpinionRow.share_id == share.id))
    s.execute(
        delete(ExchangeShareSubmissionRow).where(ExchangeShareSubmissionRow.share_id == share.id)
    )
    s.delete(share)
    return True


def get_share(s: Session, bank: str, peer: str) -> ExchangeShareRow | None:
    """The share of ``bank`` with ``peer`` (None if that bank is not shared with them)."""
    row = s.scalar(select(BankRow).where(BankRow.name == bank))
    if row is None:
        return None
    return s.scalar(
        select(ExchangeShareRow).where(
            ExchangeShareRow.bank_id == row.id, ExchangeShareRow.peer == peer
        )
    )


def list_shares(s: Session, peer: str | None = None) -> list[ShareInfo]:
    from sqlalchemy import func

    q = select(ExchangeShareRow, BankRow.name).join(BankRow, BankRow.id == ExchangeShareRow.bank_id)
    if peer is not None:
        q = q.where(ExchangeShareRow.peer == peer)
    out = []
    for share, bank in s.execute(q.order_by(BankRow.name, ExchangeShareRow.peer)):
        published = s.scalar(
            select(func.count())
            .select_from(ExchangeShareEntryRow)
            .where(ExchangeShareEntryRow.share_id == share.id, ExchangeShareEntryRow.enabled)
        )
        opinions = s.scalar(
            select(func.count())
            .select_from(ExchangeShareOpinionRow)
            .where(ExchangeShareOpinionRow.share_id == share.id)
        )
        out.append(
            ShareInfo(
                bank,
                share.peer,
                int(share.last_seq),
                int(published or 0),
                share.created_at,
                share.last_read_at,
                int(opinions or 0),
            )
        )
    return out


# -- publishing: the change sequence and pages -----------------------------------------------


def _published_doc(
    signal_type: str, signal: str, label: str | None, tags: str | None, meta: Any, added_at: float
) -> dict[str, Any]:
    """What the feed tells a peer about an entry (no notes: they are the hotline's own)."""
    classification = meta.get("classification") if isinstance(meta, dict) else None
    return {
        "signal_type": signal_type,
        "signal": signal,
        "label": label or "",
        "classification": str(classification or label or ""),
        "tags": [t for t in (tags or "").split(",") if t.strip()],
        "added_at": int(added_at),
    }


def _published(entry: BankEntryRow) -> dict[str, Any]:
    return _published_doc(
        entry.signal_type, entry.signal, entry.label, entry.tags, entry.meta, entry.added_at
    )


def _digest(doc: Mapping[str, Any], enabled: bool) -> str:
    return hashlib.sha256(json.dumps([doc, enabled], sort_keys=True).encode()).hexdigest()


def reconcile(s: Session, share: ExchangeShareRow, now: float) -> int:
    """Give every entry of the bank that changed since it was last published (new, label or
    tags changed, disabled or re-enabled, deleted) the next change number. Returns how many
    changed. Runs in the caller's transaction, the share row locked.

    Columns, not ORM objects: a 100k-entry bank is two column reads, the digests, and one
    executemany for the new and one for the changed rows."""
    s.refresh(share, with_for_update=True)
    se = ExchangeShareEntryRow
    seen: dict[int, tuple[int, str, bool]] = {
        int(entry_id): (int(row_id), str(digest), bool(enabled))
        for row_id, entry_id, digest, enabled in s.execute(
            select(se.id, se.entry_id, se.digest, se.enabled).where(se.share_id == share.id)
        )
    }
    seq = int(share.last_seq)
    e = BankEntryRow
    rows = s.execute(
        select(
            e.id,
            e.signal_type,
            e.signal,
            e.label,
            e.tags,
            e.meta,
            e.added_at,
            e.enabled,
            e.disabled_until,
        )
        .where(e.bank_id == share.bank_id)
        .order_by(e.id)
    )
    added: list[dict[str, Any]] = []
    updated: list[dict[str, Any]] = []
    present: set[int] = set()
    for entry_id, st, signal, label, tags, meta, added_at, on, until in rows:
        present.add(entry_id)
        enabled = bool(on) and (until is None or until <= now)
        digest = _digest(_published_doc(st, signal, label, tags, meta, added_at), enabled)
        old = seen.get(entry_id)
        if old is not None and old[1] == digest:
            continue
        if old is None and not enabled:
            continue  # never published, nothing to withdraw
        seq += 1
        if old is None:
            added.append(
                {
                    "share_id": share.id,
                    "entry_id": entry_id,
                    "signal_type": st,
                    "signal": signal,
                    "seq": seq,
                    "enabled": enabled,
                    "digest": digest,
                    "changed_at": now,
                }
            )
        else:
            updated.append({"b_id": old[0], "b_seq": seq, "b_on": enabled, "b_digest": digest})
    for entry_id, (row_id, _, was_enabled) in seen.items():
        if entry_id not in present and was_enabled:  # deleted from the bank: a tombstone
            seq += 1
            updated.append({"b_id": row_id, "b_seq": seq, "b_on": False, "b_digest": ""})
    table = cast(Table, se.__table__)
    if added:
        s.execute(insert(table), added)
    if updated:
        s.execute(
            update(table)
            .where(table.c.id == bindparam("b_id"))
            .values(
                seq=bindparam("b_seq"),
                enabled=bindparam("b_on"),
                digest=bindparam("b_digest"),
                changed_at=now,
            ),
            updated,
        )
    share.last_seq = seq
    s.flush()
    return len(added) + len(updated)


def entry_key(entry_id: int) -> str:
    return f"e{entry_id}"


def feed_page(
    s: Session,
    share: ExchangeShareRow,
    bank: str,
    cursor: str | None,
    limit: int,
    now: float,
) -> dict[str, Any]:
    """One page of the share's changes after ``cursor``. Raises :class:`CursorError` for a bad
    cursor. The bank is reconciled (a scan of its entries) only when the reader has caught up
    with the published sequence: paging through changes already numbered costs one indexed
    query per page, and what changed meanwhile is numbered once the reader reaches the end."""
    after = decode_cursor(share, cursor)
    if after >= share.last_seq:
        reconcile(s, share, now)
    limit = max(1, min(int(limit), MAX_PAGE_SIZE))
    rows = list(
        s.scalars(
            select(ExchangeShareEntryRow)
            .where(ExchangeShareEntryRow.share_id == share.id, ExchangeShareEntryRow.seq > after)
            .order_by(ExchangeShareEntryRow.seq)
            .limit(limit + 1)
        )
    )
    more = len(rows) > limit
    rows = rows[:limit]
    entries = {
        e.id: e
        for e in s.scalars(
            select(BankEntryRow).where(BankEntryRow.id.in_([r.entry_id for r in rows if r.enabled]))
        )
    }
    changes: list[dict[str, Any]] = []
    for r in rows:
        change: dict[str, Any] = {
            "seq": int(r.seq),
            "key": entry_key(r.entry_id),
            "signal_type": r.signal_type,
            "signal": r.signal,
            "enabled": bool(r.enabled),
            "changed_at": int(r.changed_at),
        }
        entry = entries.get(r.entry_id)
        if r.enabled and entry is not None:
            published = _published(entry)
            for k in ("label", "classification", "tags", "added_at"):
                change[k] = published[k]
        changes.append(change)
    last = int(rows[-1].seq) if rows else after
    share.last_read_at = now
    return {
        "bank": bank,
        "changes": changes,
        "next_cursor": encode_cursor(share.id, last),
        "more": more,
        "latest_seq": int(share.last_seq),
    }


def published_list(s: Session, share: ExchangeShareRow, bank: str, fmt: str, now: float) -> bytes:
    """The shared bank's live entries as a hash list file in ``fmt`` (te, te-csv, hex, jsonl),
    for an ``http_list`` exchange at the peer: labels and tags, never notes or sources."""
    import io

    from tipline.banks.formats import check_format, write_hash_list

    fmt = check_format(fmt)
    rows = s.scalars(
        select(BankEntryRow)
        .where(BankEntryRow.bank_id == share.bank_id, BankEntryRow.enabled)
        .order_by(BankEntryRow.id)
    )
    entries = (
        Entry(
            bank,
            e.signal_type,
            e.signal,
            label=e.label or "",
            added_at=e.added_at,
            id=e.id,
            tags=[t for t in (e.tags or "").split(",") if t.strip()],
        )
        for e in rows
        if e.disabled_until is None or e.disabled_until <= now
    )
    out = io.StringIO()
    write_hash_list(entries, fmt, out)
    share.last_read_at = now
    return out.getvalue().encode("utf-8")


MAX_SUBMISSIONS = 5_000


@dataclass(slots=True)
class SubmissionPlan:
    """What a push asks for, checked: new records to add, entries to disable or re-enable."""

    bank: str
    add: dict[str, Entry] = field(default_factory=dict)
    disable: dict[str, int] = field(default_factory=dict)
    enable: dict[str, int] = field(default_factory=dict)
    unchanged: int = 0
    problems: list[dict[str, str]] = field(default_factory=list)


def plan_submissions(
    s: Session, share: ExchangeShareRow, records: Any, partner: str
) -> SubmissionPlan:
    """Check a peer's push (``{key: record | null}``) against what it pushed before. Bad
    records are per-key problems; the rest goes on. :class:`ShareError` if the share takes no
    pushes or the body is not a mapping."""
    if share.accept_into_bank_id is None:
        raise ShareError("this share takes no pushed records (share it with --accept-into)")
    inbound = s.get(BankRow, share.accept_into_bank_id)
    if inbound is None:
        raise ShareError("this share's inbound bank is gone")
    if not isinstance(records, dict):
        raise ShareError("records must be an object: key -> record or null")
    if len(records) > MAX_SUBMISSIONS:
        raise ShareError(f"at most {MAX_SUBMISSIONS} records per push")
    known = {
        r.key: r
        for r in s.scalars(
            select(ExchangeShareSubmissionRow).where(
                ExchangeShareSubmissionRow.share_id == share.id,
                ExchangeShareSubmissionRow.key.in_([str(k)[:200] for k in records]),
            )
        )
    }
    plan = SubmissionPlan(inbound.name)
    types = signal_types()
    for key, rec in records.items():
        if not isinstance(key, str) or not key or len(key) > 200:
            plan.problems.append({"key": str(key)[:80], "reason": "a key is 1 to 200 characters"})
            continue
        prior = known.get(key)
        if rec is None:
            if prior is not None and prior.entry_id is not None and not prior.deleted:
                plan.disable[key] = prior.entry_id
            else:
                plan.unchanged += 1
            continue
        if not isinstance(rec, dict):
            plan.problems.append({"key": key[:80], "reason": "a record is an object or null"})
            continue
        st, signal = rec.get("signal_type"), rec.get("signal")
        if not isinstance(st, str) or st not in types:
            plan.problems.append(
                {"key": key[:80], "reason": f"unknown signal type {str(st)[:32]!r}"}
            )
            continue
        try:
            clean = types[st].normalise(signal if isinstance(signal, str) else "")
        except TiplineError as err:
            plan.problems.append({"key": key[:80], "reason": str(err)[:200]})
            continue
        if prior is not None and prior.entry_id is not None:
            if prior.deleted:
                plan.enable[key] = prior.entry_id
            else:
                plan.unchanged += 1
            continue
        label = rec.get("label")
        raw_meta = rec.get("meta")
        meta_in: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
        partner_meta: dict[str, Any] = {"partner": partner}
        for k in ("list", "classification", "tags", "added_at"):
            v = meta_in.get(k)
            if isinstance(v, str | int | float) or (
                isinstance(v, list) and all(isinstance(t, str) for t in v)
            ):
                partner_meta[k] = v
        plan.add[key] = Entry(
            plan.bank,
            st,
            clean,
            label=label[:500] if isinstance(label, str) else "",
            source=f"peer:{partner}"[:200],
            added_at=time.time(),
            metadata={
                "exchange": {
                    "name": f"peer:{partner}",
                    "api": "tipline",
                    "key": key,
                    "partner": partner_meta,
                }
            },
        )
    return plan


def record_submissions(
    s: Session, share: ExchangeShareRow, plan: SubmissionPlan, added: Mapping[str, int], now: float
) -> None:
    """Remember what a push became (after its entries were added, disabled or re-enabled)."""
    keys = [*added, *plan.disable, *plan.enable]
    rows = {
        r.key: r
        for r in s.scalars(
            select(ExchangeShareSubmissionRow).where(
                ExchangeShareSubmissionRow.share_id == share.id,
                ExchangeShareSubmissionRow.key.in_(keys),
            )
        )
    }
    for key in keys:
        row = rows.get(key)
        if row is None:
            row = ExchangeShareSubmissionRow(share_id=share.id, key=key)
            s.add(row)
        if key in added:
            row.entry_id, row.deleted = added[key], False
        else:
            row.deleted = key in plan.disable
        row.updated_at = now
    s.flush()


def record_opinion(
    s: Session, share: ExchangeShareRow, doc: Mapping[str, Any], now: float
) -> dict[str, Any]:
    """A peer's opinion of one of the entries we share (the latest per entry is kept: a
    redelivery changes nothing). Raises :class:`ShareError` for a bad one."""
    key = doc.get("key")
    category = doc.get("category")
    reasons = doc.get("reasons", [])
    if not isinstance(key, str) or not key.startswith("e") or not key[1:].isdigit():
        raise ShareError("key must be an entry key of this feed (e<number>)")
    if category not in _OPINION_CATEGORIES:
        raise ShareError(f"category must be one of {', '.join(_OPINION_CATEGORIES)}")
    if not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons):
        raise ShareError("reasons must be a list of strings")
    reasons = [r[:200] for r in reasons[:20]]
    published = s.scalar(
        select(ExchangeShareEntryRow.id).where(
            ExchangeShareEntryRow.share_id == share.id,
            ExchangeShareEntryRow.entry_id == int(key[1:]),
        )
    )
    if published is None:
        raise ShareError(f"entry {key[:30]} was never published to you")
    row = s.scalar(
        select(ExchangeShareOpinionRow).where(
            ExchangeShareOpinionRow.share_id == share.id, ExchangeShareOpinionRow.entry_key == key
        )
    )
    if row is None:
        row = ExchangeShareOpinionRow(share_id=share.id, entry_key=key, note="")
        s.add(row)
    row.category, row.reasons, row.received_at = str(category), reasons, now
    s.flush()
    return {"key": key, "category": category, "reasons": reasons}


# -- fetching: the ``tipline`` exchange type -------------------------------------------------


def _target(url: str) -> str:
    u = urllib.parse.urlsplit(url)
    return u.path + (f"?{u.query}" if u.query else "")


def _as_record(
    change: Mapping[str, Any], bank: str, partner: str
) -> tuple[str, ExchangeRecord | None] | Problem:
    key = change.get("key")
    if not isinstance(key, str) or not key or len(key) > 64:
        return Problem("malformed", f"seq {change.get('seq')!r}"[:80], "a change without a key")
    if not change.get("enabled", False):
        return key, None
    st = change.get("signal_type")
    signal = change.get("signal")
    types = signal_types()
    if not isinstance(st, str) or st not in types:
        return Problem("unknown_signal_type", key, f"unknown signal type {str(st)[:32]!r}")
    if not isinstance(signal, str):
        return Problem("invalid", key, "the signal is not a string")
    try:
        clean = types[st].normalise(signal)
    except (TiplineError, ValueError) as err:
        return Problem("invalid", key, str(err)[:200])
    meta: dict[str, Any] = {"list": bank, "partner": partner}
    for k in ("classification", "tags", "added_at", "changed_at", "seq"):
        if k in change and isinstance(change[k], str | int | float | list):
            meta[k] = change[k]
    label = change.get("label")
    return key, ExchangeRecord(st, clean, label if isinstance(label, str) else "", meta)


class TiplinePeerExchange(ExchangeType):
    """Another Tipline instance's shared bank, read from its signed ``/api/v1/exchange`` feed."""

    name = "tipline"
    description = (
        "A bank another Tipline instance shares with this one (hotline to hotline): its "
        "signed, token-authenticated /api/v1/exchange feed, read from a cursor."
    )
    config_fields = (
        ConfigField("url", "string", required=True, help="The peer's base URL (https://...)."),
        ConfigField("bank", "string", required=True, help="The peer's bank shared with us."),
        ConfigField(
            "partner",
            "string",
            help="The partner's name in match records (default: the URL's host).",
        ),
        ConfigField("page_size", "number", default=DEFAULT_PAGE_SIZE, help="Changes per page."),
        ConfigField(
            "feedback",
            "boolean",
            default=True,
            help="Send analysts' grades of matched entries back to the peer as opinions.",
        ),
    )
    credential_fields = (
        ConfigField(
            "token", "string", required=True, help="Our API token at the peer (exchange:read)."
        ),
        ConfigField(
            "secret", "string", required=True, help="The share's signing secret (tls_...)."
        ),
    )
    accepts_opinions = True
    accepts_submissions = True

    def validate_config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        out = super().validate_config(config)
        url = str(out["url"]).strip().rstrip("/")
        if not url.lower().startswith(("http://", "https://")):
            raise ExchangeConfigError("tipline config: url must be http:// or https://")
        out["url"] = url
        try:
            out["bank"] = validate_bank_name(str(out["bank"]))
        except BankError as err:
            raise ExchangeConfigError(f"tipline config: {err}") from None
        if not 1 <= int(out["page_size"]) <= MAX_PAGE_SIZE:
            raise ExchangeConfigError(f"tipline config: page_size must be 1 to {MAX_PAGE_SIZE}")
        if not out.get("partner"):
            out["partner"] = urllib.parse.urlsplit(url).netloc
        return out

    def validate_credentials(self, credentials: Mapping[str, Any]) -> dict[str, Any]:
        out = super().validate_credentials(credentials)
        if not str(out["secret"]).startswith(SECRET_PREFIX):
            raise ExchangeConfigError(f"tipline credentials: secret must start {SECRET_PREFIX}")
        return out

    def _creds(self, ctx: FetchContext) -> tuple[str, str]:
        creds = ctx.credentials or {}
        token, secret = creds.get("token"), creds.get("secret")
        if not token or not secret:
            raise ExchangeFetchError("no credentials set (token and secret of the share)")
        return str(token), str(secret)

    def _feed(self, ctx: FetchContext) -> str:
        bank = urllib.parse.quote(str(ctx.config["bank"]), safe="")
        return f"{ctx.config['url']}/api/v1/exchange/banks/{bank}"

    def fetch_iter(self, ctx: FetchContext, checkpoint: Checkpoint | None) -> Iterator[FetchDelta]:
        token, secret = self._creds(ctx)
        cursor = str(checkpoint.state.get("cursor") or "") if checkpoint is not None else ""
        size = int(ctx.config.get("page_size") or DEFAULT_PAGE_SIZE)
        bank, partner = str(ctx.config["bank"]), str(ctx.config.get("partner") or "")
        while True:
            query = urllib.parse.urlencode(
                {"limit": size, **({"cursor": cursor} if cursor else {})}
            )
            url = f"{self._feed(ctx)}/changes?{query}"
            nonce = secrets.token_urlsafe(18)
            headers = {
                "Authorization": f"Bearer {token}",
                "Accept": "application/json",
                NONCE_HEADER: nonce,
            }
            try:
                res = fetch(url, ctx.fetch_settings, headers=headers)
            except HTTPStatusError as err:
                raise ExchangeFetchError(
                    _refusal(err.status, bool(cursor), bank) + f" ({err})",
                    retry_after=err.retry_after,
                ) from None
            except FetchError as err:
                raise ExchangeFetchError(f"the peer's feed cannot be read: {err}") from None
            if res.redirects:
                raise ExchangeFetchError("the peer's feed redirected: refused (sign the real URL)")
            try:
                verify(secret, res.headers, nonce, "GET", _target(url), res.content, ctx.clock())
            except SignatureError as err:
                raise ExchangeFetchError(f"refused the peer's page: {err}") from None
            try:
                doc = json.loads(res.content)
            except (ValueError, UnicodeDecodeError):
                raise ExchangeFetchError("the peer's page is not JSON") from None
            changes = doc.get("changes") if isinstance(doc, dict) else None
            nxt = doc.get("next_cursor") if isinstance(doc, dict) else None
            if not isinstance(changes, list) or not isinstance(nxt, str) or not nxt:
                raise ExchangeFetchError("the peer's page has no changes list or next_cursor")
            updates: dict[str, ExchangeRecord | None] = {}
            problems: list[Problem] = []
            for change in changes:
                got = (
                    _as_record(change, bank, partner)
                    if isinstance(change, dict)
                    else Problem("malformed", "page", "a change that is not an object")
                )
                if isinstance(got, Problem):
                    problems.append(got)
                else:
                    updates[got[0]] = got[1]
            more = bool(doc.get("more"))
            cp = Checkpoint({"cursor": nxt}, int(ctx.clock()), up_to_date=not more)
            yield FetchDelta(updates, cp, problems)
            if not more:
                return
            if nxt == cursor:
                raise ExchangeFetchError("the peer's page did not advance its cursor")
            cursor = nxt

    def submit_records(
        self, ctx: FetchContext, records: Mapping[str, ExchangeRecord | None]
    ) -> dict[str, str]:
        """Push records to the peer (``POST .../submissions``, signed; chunks of
        :data:`MAX_SUBMISSIONS`); the peer keeps them by key, so a redelivery changes nothing.
        Returns the per-key problems the peer's answers name (those records were skipped, the
        rest taken)."""
        token, secret = self._creds(ctx)
        url = f"{self._feed(ctx)}/submissions"
        items = list(records.items())
        problems: dict[str, str] = {}
        for start in range(0, len(items), MAX_SUBMISSIONS):
            chunk = {
                k: None
                if r is None
                else {"signal_type": r.signal_type, "signal": r.signal, "label": r.label,
                      "meta": dict(r.meta)}
                for k, r in items[start : start + MAX_SUBMISSIONS]
            }  # fmt: skip
            body = json.dumps({"records": chunk}, sort_keys=True).encode()
            headers = {
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
                **sign_headers(
                    secret, secrets.token_urlsafe(18), "POST", _target(url), body, ctx.clock()
                ),
            }
            status, text, wait = _post(url, body, headers, ctx)
            if status in (400, 403, 404):
                raise ExchangeError(f"the peer refused the push ({status}): {text[:300]}")
            if status >= 300:
                raise PartnerStatusError(
                    f"the peer answered {status} to the push: {text[:200]}", status, wait, text
                )
            try:
                answer = json.loads(text)
            except (ValueError, RecursionError):
                answer = {}
            found = answer.get("problems", []) if isinstance(answer, dict) else []
            for p in found if isinstance(found, list) else []:
                if isinstance(p, dict) and str(p.get("key")) in chunk:
                    problems[str(p.get("key"))] = str(p.get("reason"))[:300]
        return problems

    def submit_opinion(self, ctx: FetchContext, opinion: Opinion) -> None:
        token, secret = self._creds(ctx)
        body = json.dumps(
            {
                "key": opinion.record_key,
                "category": opinion.category,
                "reasons": list(opinion.reasons),
            },
            sort_keys=True,
        ).encode()
        url = f"{self._feed(ctx)}/opinions"
        headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            **sign_headers(
                secret, secrets.token_urlsafe(18), "POST", _target(url), body, ctx.clock()
            ),
        }
        status, text, wait = _post(url, body, headers, ctx)
        if status in (400, 404):
            raise ExchangeError(f"the peer refused the opinion ({status}): {text[:200]}")
        if status >= 300:
            raise PartnerStatusError(
                f"the peer answered {status} to the opinion: {text[:200]}", status, wait, text
            )


def _refusal(status: int, had_cursor: bool, bank: str) -> str:
    """What a refused feed request means, in words (the status line follows it)."""
    if status in (401, 403):
        return f"the peer refused our token ({status}): check the credentials' token and scopes"
    if status == 404:
        return f"the peer shares no bank {bank} with our account (unshared, or a wrong bank)"
    if status == 400 and had_cursor:
        return (
            "the peer refused our cursor (its share was made anew or restored): remove this "
            "exchange and its bank, then add it again"
        )
    return f"the peer refused the feed ({status})"


def _post(
    url: str, body: bytes, headers: dict[str, str], ctx: FetchContext
) -> tuple[int, str, float | None]:
    """POST through the address policy (vetted, pinned address, no proxies, no redirects);
    the status, the start of the answer (for the error message) and the peer's Retry-After
    (seconds) if it sent one."""
    try:
        sent = send_pinned("POST", url, body, headers, ctx.fetch_settings, keep_bytes=2000)
    except FetchError as err:
        raise ExchangeFetchError(f"the peer: {err}") from None
    wait = (sent.headers.get("retry-after") or "").strip()
    return sent.status, sent.text[:500], float(min(int(wait), 86_400)) if wait.isdigit() else None


register(TiplinePeerExchange)

__all__ = [
    "MAX_SKEW_SECONDS",
    "NONCE_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "CursorError",
    "ShareError",
    "ShareInfo",
    "SignatureError",
    "SubmissionPlan",
    "TiplinePeerExchange",
    "decode_cursor",
    "encode_cursor",
    "entry_key",
    "feed_page",
    "get_share",
    "list_shares",
    "plan_submissions",
    "published_list",
    "reconcile",
    "record_opinion",
    "record_submissions",
    "share_bank",
    "share_owner",
    "sign_headers",
    "signature",
    "unshare_bank",
    "verify",
]
