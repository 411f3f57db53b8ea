"""Webhooks: signed HTTP deliveries of hotline events (``match``, ``grade``, ``export``).

* :func:`create_webhook` stores an endpoint with the events it wants and a random signing
  secret, returned once (the caller shows it to the admin; it is never listed again).
* :func:`emit` enqueues one durable ``webhook.deliver`` job per active webhook subscribed to the
  event, **in the caller's transaction**: the deliveries exist exactly when the change that
  caused them is committed.
* The ``webhook.deliver`` handler POSTs the JSON envelope ``{"id", "event", "occurred_at",
  "data"}`` with the headers ``X-Tipline-Event``, ``X-Tipline-Delivery`` (the envelope's id,
  the same on every retry), ``X-Tipline-Timestamp`` (Unix seconds of this attempt) and
  ``X-Tipline-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>``.
  Receivers check it with :func:`verify_signature`.
* A 2xx answer completes the delivery. A connection error, a timeout, a 3xx (redirects are
  never followed), 408, 429 or 5xx raises, so the job queue retries with exponential backoff
  until :data:`MAX_ATTEMPTS` are used up (then the job is ``dead``). Any other 4xx, a refused
  address or an invalid URL raises :class:`~tipline.store.jobs.PermanentJobError`: the job
  goes to ``failed`` at once (a dead letter admins see with ``tipline db jobs``).
* Deliveries go through the SSRF policy of :mod:`tipline.net.fetch`: the host is resolved
  once, every address vetted (private, loopback, link-local and cloud metadata addresses are
  refused unless allow-listed with the ``fetch_allow_hosts`` / ``fetch_allow_networks``
  settings) and the connection pinned to the vetted address.

Documented in docs/actions.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import threading
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from tipline.errors import TiplineError
from tipline.net.fetch import (
    BlockedAddressError,
    FetchError,
    FetchSettings,
    InvalidURLError,
    check_address,
    send_pinned,
)
from tipline.record import Match
from tipline.store.jobs import JobContext, JobQueue, PermanentJobError, register_handler
from tipline.store.tables import Item, Webhook

log = logging.getLogger("tipline.webhooks")

WEBHOOK_EVENTS = ("match", "grade", "export")
DELIVER_KIND = "webhook.deliver"
#: Attempts per delivery (backoff 10 s, 20 s, 40 s ... with jitter: about 20 minutes in all).
MAX_ATTEMPTS = 8
#: Seconds to connect, and to send the body / read the answer.
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 10.0
#: Signatures older than this are refused by :func:`verify_signature` (replay window).
DEFAULT_MAX_AGE_SECONDS = 300.0
MAX_URL_CHARS = 2000
#: Statuses in 4xx that are worth retrying (timeout, rate limit).
RETRYABLE_4XX = frozenset({408, 429})


class WebhookError(TiplineError):
    """A webhook that cannot be created or changed (bad URL, unknown event, no such id)."""


class WebhookNotFoundError(WebhookError):
    pass


class DeliveryError(TiplineError):
    """A delivery attempt that failed and is worth retrying."""


# -- signatures ---------------------------------------------------------------------------------


def _as_bytes(body: bytes | str) -> bytes:
    return body.encode("utf-8") if isinstance(body, str) else body


def sign(secret: str, timestamp: str, body: bytes | str) -> str:
    """The ``X-Tipline-Signature`` value: ``sha256=`` and the hex HMAC-SHA256, keyed with the
    webhook's secret, of ``"<timestamp>.<body>"`` (body as sent, byte for byte)."""
    mac = hmac.new(secret.encode("utf-8"), digestmod=hashlib.sha256)
    mac.update(timestamp.encode("ascii"))
    mac.update(b".")
    mac.update(_as_bytes(body))
    return "sha256=" + mac.hexdigest()


def verify_signature(
    secret: str,
    timestamp: str,
    body: bytes | str,
    header: str,
    *,
    max_age_seconds: float | None = DEFAULT_MAX_AGE_SECONDS,
    now: float | None = None,
) -> bool:
    """For receivers: True when ``header`` (``X-Tipline-Signature``) is the signature of
    ``body`` made at ``timestamp`` (``X-Tipline-Timestamp``) with ``secret``, and the timestamp
    is within ``max_age_seconds`` of ``now`` (None: no age check). Compares in constant time.
    Pass the raw request body, before any JSON parsing."""
    try:
        expected = sign(secret, timestamp, body)
        ts = int(timestamp)
    except (UnicodeError, ValueError):
        return False
    if max_age_seconds is not None:
        current = time.time() if now is None else now
        if abs(current - ts) > max_age_seconds:
            return False
    return hmac.compare_digest(expected.encode("ascii"), header.strip().encode("ascii", "replace"))


def signed_headers(
    secret: str, event: str, delivery_id: str, timestamp: str, body: bytes
) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Tipline-Event": event,
        "X-Tipline-Delivery": delivery_id,
        "X-Tipline-Timestamp": timestamp,
        "X-Tipline-Signature": sign(secret, timestamp, body),
    }


def envelope_body(delivery_id: str, event: str, occurred_at: str, data: Any) -> bytes:
    """The delivered JSON (compact, keys sorted, UTF-8)."""
    doc = {"id": delivery_id, "event": event, "occurred_at": occurred_at, "data": data}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# -- delivery settings --------------------------------------------------------------------------

_settings: FetchSettings | None = None
_settings_lock = threading.Lock()


def configure(settings: FetchSettings | None) -> None:
    """Set (None: reset to the default policy) the address policy deliveries use in this
    process. Timeouts are always at most :data:`CONNECT_TIMEOUT` / :data:`READ_TIMEOUT`."""
    global _settings
    with _settings_lock:
        _settings = None if settings is None else _short(settings)


def _short(settings: FetchSettings) -> FetchSettings:
    return dataclasses.replace(
        settings,
        connect_timeout=min(settings.connect_timeout, CONNECT_TIMEOUT),
        read_timeout=min(settings.read_timeout, READ_TIMEOUT),
        total_timeout=min(settings.total_timeout, CONNECT_TIMEOUT + 2 * READ_TIMEOUT),
        max_redirects=0,
    )


def delivery_settings() -> FetchSettings:
    """The policy :func:`configure` set in this process (``tipline serve`` and ``tipline worker``
    set it from the deployment's fetch settings), else the default policy: public addresses
    only."""
    global _settings
    with _settings_lock:
        if _settings is None:
            _settings = _short(FetchSettings())
        return _settings


# -- managing webhooks --------------------------------------------------------------------------


def check_url(url: str, settings: FetchSettings | None = None) -> str:
    """A usable webhook URL (http/https, a host, no credentials), or :class:`WebhookError`.
    A literal IP address is vetted against the delivery policy now; host names are resolved
    and vetted at every delivery."""
    url = url.strip()
    if not url or len(url) > MAX_URL_CHARS:
        raise WebhookError(f"a webhook URL is 1 to {MAX_URL_CHARS} characters")
    try:
        u = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as err:
        raise WebhookError(f"not a valid URL: {err}") from None
    if u.scheme not in ("http", "https"):
        raise WebhookError("a webhook URL must be http:// or https://")
    if not u.raw_host:
        raise WebhookError("a webhook URL needs a host")
    if u.userinfo:
        raise WebhookError("put no credentials (user:password@) in a webhook URL")
    host = u.raw_host.decode("ascii", "replace").strip("[]")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return url
    try:
        check_address(ip, host, settings or delivery_settings())
    except BlockedAddressError as err:
        raise WebhookError(str(err)) from None
    return url


def _check_events(events: Iterable[str], name: str) -> list[str]:
    """The distinct known events. None at all is allowed for a webhook that only receives
    removal notices: the provider directory names it (``channel = "webhook"``,
    ``webhook = NAME``), so it needs a name."""
    out: list[str] = []
    for event in events:
        e = event.strip().lower()
        if e not in WEBHOOK_EVENTS:
            raise WebhookError(f"unknown event {event!r} (events: {', '.join(WEBHOOK_EVENTS)})")
        if e not in out:
            out.append(e)
    if not out and not name:
        raise WebhookError(
            f"a webhook needs at least one event ({', '.join(WEBHOOK_EVENTS)}), or a name if "
            "it only receives removal notices (the provider directory's webhook = NAME)"
        )
    return out


def create_webhook(
    session: Session,
    url: str,
    events: Iterable[str],
    name: str = "",
    *,
    settings: FetchSettings | None = None,
) -> tuple[Webhook, str]:
    """Add an active webhook; returns it and its signing secret (shown to the admin once).

    ``events`` may be empty for a webhook that only receives removal notices (it must then
    have a ``name``, which the provider directory refers to)."""
    if isinstance(events, str):
        events = [events]
    name = name.strip()
    if len(name) > 200:
        raise WebhookError("a webhook name is at most 200 characters")
    checked = _check_events(events, name)
    url = check_url(url, settings)
    secret = "whsec_" + secrets.token_urlsafe(32)
    hook = Webhook(name=name, url=url, secret=secret, events=checked, active=True)
    session.add(hook)
    session.flush()
    return hook, secret


def list_webhooks(session: Session) -> list[Webhook]:
    return list(session.scalars(select(Webhook).order_by(Webhook.id)))


def get_webhook(session: Session, webhook_id: int) -> Webhook:
    hook = session.get(Webhook, webhook_id)
    if hook is None:
        raise WebhookNotFoundError(f"no webhook with id {webhook_id}")
    return hook


def delete_webhook(session: Session, webhook_id: int) -> Webhook:
    """Remove a webhook; deliveries still queued for it finish without sending anything."""
    hook = get_webhook(session, webhook_id)
    session.delete(hook)
    session.flush()
    return hook


def set_active(session: Session, webhook_id: int, active: bool) -> Webhook:
    """Enable or disable a webhook. A disabled webhook gets no new deliveries, and queued ones
    finish without sending."""
    hook = get_webhook(session, webhook_id)
    hook.active = active
    return hook


def webhook_json(hook: Webhook) -> dict[str, Any]:
    """A webhook for listing: never its secret."""
    return {
        "id": hook.id,
        "name": hook.name,
        "url": hook.url,
        "events": list(hook.events or []),
        "active": hook.active,
        "created_at": hook.created_at.isoformat() if hook.created_at else None,
        "last_status": hook.last_status,
        "last_delivery_at": hook.last_delivery_at.isoformat() if hook.last_delivery_at else None,
    }


# -- emitting -----------------------------------------------------------------------------------


def _engine(session: Session) -> Engine:
    bind = session.get_bind()
    return bind if isinstance(bind, Engine) else bind.engine


def emit(session: Session, event: str, data: Any, *, queue: JobQueue | None = None) -> list[int]:
    """Enqueue one delivery job per active webhook subscribed to ``event``, in ``session``'s
    transaction (committed, or rolled back, with the caller's change). Returns the job ids.
    ``data`` must be JSON-serialisable (datetimes and other values become strings)."""
    if event not in WEBHOOK_EVENTS:
        raise WebhookError(f"unknown event {event!r} (events: {', '.join(WEBHOOK_EVENTS)})")
    hooks = [
        h
        for h in session.scalars(
            select(Webhook).where(Webhook.active.is_(True)).order_by(Webhook.id)
        )
        if event in (h.events or [])
    ]
    if not hooks:
        return []
    q = queue or JobQueue(_engine(session))
    plain = json.loads(json.dumps(data, default=str))
    occurred_at = datetime.now(UTC).isoformat()
    ids: list[int] = []
    for hook in hooks:
        delivery_id = str(uuid.uuid4())
        payload = {
            "webhook_id": hook.id,
            "event": event,
            "id": delivery_id,
            "occurred_at": occurred_at,
            "data": plain,
        }
        ids.append(
            q.enqueue(
                DELIVER_KIND,
                payload,
                dedupe_key=f"webhook:{delivery_id}",
                max_attempts=MAX_ATTEMPTS,
                session=session,
            )
        )
    return ids


def emit_match(session: Session, item: Item, report_id: int, matches: list[Match]) -> list[int]:
    """The ``match`` event (called by the pipeline's analyse stage when an item matched at
    least one alert bank): the item, the report and which banks matched."""
    data = {
        "item_id": item.id,
        "report_id": report_id,
        "sha256": item.sha256,
        "matches": [
            {"bank": m.bank, "signal_type": m.signal_type, "distance": m.distance} for m in matches
        ],
    }
    return emit(session, "match", data)


# -- delivering ---------------------------------------------------------------------------------


def post_signed(url: str, body: bytes, headers: dict[str, str], settings: FetchSettings) -> int:
    """POST ``body`` to ``url`` through the SSRF policy (vetted, pinned address; no proxies;
    no redirects followed); returns the HTTP status. Raises a :class:`FetchError`."""
    sent = send_pinned("POST", url, body, headers, settings, user_agent="Tipline-webhooks/0.1")
    return sent.status


def _payload_fields(payload: dict[str, Any]) -> tuple[int, str, str, str, Any]:
    webhook_id = payload.get("webhook_id")
    event = payload.get("event")
    delivery_id = payload.get("id")
    occurred_at = payload.get("occurred_at")
    if not isinstance(webhook_id, int) or isinstance(webhook_id, bool):
        raise PermanentJobError(f"webhook job payload needs an integer webhook_id: {webhook_id!r}")
    if event not in WEBHOOK_EVENTS:
        raise PermanentJobError(f"webhook job payload has an unknown event {event!r}")
    if not isinstance(delivery_id, str) or not isinstance(occurred_at, str):
        raise PermanentJobError("webhook job payload needs string id and occurred_at")
    assert isinstance(event, str)
    return webhook_id, event, delivery_id, occurred_at, payload.get("data")


def _record_status(ctx: JobContext, webhook_id: int, status: str) -> None:
    with ctx.session_factory() as s, s.begin():
        hook = s.get(Webhook, webhook_id)
        if hook is not None:
            hook.last_status = status[:200]
            hook.last_delivery_at = datetime.now(UTC)


def deliver(ctx: JobContext) -> None:
    """The ``webhook.deliver`` job handler (see the module docstring for what each outcome
    does). Idempotent for receivers: a retry carries the same ``X-Tipline-Delivery``."""
    webhook_id, event, delivery_id, occurred_at, data = _payload_fields(ctx.payload)
    with ctx.session_factory() as s:
        hook = s.get(Webhook, webhook_id)
        if hook is None or not hook.active:
            why = "deleted" if hook is None else "disabled"
            log.info("webhook %s is %s: delivery %s dropped", webhook_id, why, delivery_id)
            return
        url, secret = hook.url, hook.secret
    body = envelope_body(delivery_id, event, occurred_at, data)
    timestamp = str(int(time.time()))
    headers = signed_headers(secret, event, delivery_id, timestamp, body)
    try:
        status = post_signed(url, body, headers, delivery_settings())
    except (BlockedAddressError, InvalidURLError) as err:
        _record_status(ctx, webhook_id, str(err))
        raise PermanentJobError(f"webhook {webhook_id}: {err}") from None
    except FetchError as err:
        _record_status(ctx, webhook_id, str(err))
        raise DeliveryError(f"webhook {webhook_id}: {err}") from None
    _record_status(ctx, webhook_id, f"HTTP {status}")
    if 200 <= status < 300:
        return
    if 400 <= status < 500 and status not in RETRYABLE_4XX:
        raise PermanentJobError(
            f"webhook {webhook_id} answered HTTP {status}: not retried (fix the endpoint, "
            "then requeue the job)"
        )
    raise DeliveryError(f"webhook {webhook_id} answered HTTP {status}; will retry")


register_handler(DELIVER_KIND, deliver)


__all__ = [
    "DELIVER_KIND",
    "MAX_ATTEMPTS",
    "WEBHOOK_EVENTS",
    "DeliveryError",
    "WebhookError",
    "WebhookNotFoundError",
    "check_url",
    "configure",
    "create_webhook",
    "delete_webhook",
    "deliver",
    "delivery_settings",
    "emit",
    "emit_match",
    "envelope_body",
    "get_webhook",
    "list_webhooks",
    "post_signed",
    "set_active",
    "sign",
    "signed_headers",
    "verify_signature",
    "webhook_json",
]
