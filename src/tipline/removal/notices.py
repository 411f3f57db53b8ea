"""Notices: one per abuse contact and round, grouping its URLs, sent by e-mail, a signed
webhook or by hand (docs/removal.md, "Notices").

* **Queueing** (:func:`queue_notice`): a ``notices`` row with its cases (``notice_cases``), a
  stable serial (``TLN-2026-000123``, from the row id: it never changes, and the recipient
  quotes it), the contact as it was, the channel and the earliest send time (the contact's
  send window, :func:`tipline.removal.providers.next_send_time`). A contact without an
  address, or with the ``manual`` channel, gives a ``manual_pending`` notice and flags its
  cases: the analyst prints or copies it (``tipline case notify``) and marks it sent. A
  notice is never dropped for want of a contact.
* **Text** (:func:`render_notice`): Jinja2 templates per language in
  ``tipline/removal/templates`` (``notice.<lang>.txt.j2``, ``referral.<lang>.txt.j2``; the
  language falls back to English), the first line being ``Subject: ...``. A notice states the
  legal basis, the category from the grade, the reasons, the exact URLs, the hosting, the
  evidence reference, the good-faith statement and the notifier (EU DSA Article 16(2)). It
  never carries an image or any media: the e-mail is one ``text/plain`` part. A referral to a
  partner hotline adds an ICCAM-shaped record per URL (:func:`iccam_record`).
* **Delivery** (:func:`deliver`): idempotent by serial. The notice row is the durable state;
  a delivery first commits ``sending`` (attempts + 1), then hands the message over, then
  commits ``sent``. A failure before the relay accepted the message puts the notice back to
  ``queued`` with a back-off (``send_after``); the scheduler delivers it again then, so an
  SMTP relay that is down loses nothing and the message is sent once when it is back. A
  permanent refusal (5xx) makes it ``failed`` and flags its cases.

  The one at-least-once window: the relay has accepted the message (``250`` after ``DATA``)
  and the worker dies before ``sent`` is committed. The next delivery finds ``sending`` and
  sends again, with the same ``Message-ID`` (``<serial@sender-domain>``) and the same serial
  in the subject, so the recipient's mail system (and the recipient) can tell it is the same
  notice; the row records ``attempts`` so it shows. Webhook deliveries carry the serial as
  ``X-Tipline-Delivery`` for the receiver to de-duplicate.
* **Re-attribution just before sending** (:class:`Reattribution`): the host may have moved
  while the notice waited (grouping, a send window, a hold, a relay that was down). Once a
  delivery is due, the hosting of every case it names is attributed afresh (outside any
  transaction: DNS and data sets); a case now hosted in another country or AS is ``moved``
  (:func:`tipline.removal.cases.mark_moved`), withdrawn from every notice not yet sent and
  re-routed (:func:`tipline.removal.cases.resume`: the next scheduler pass captures evidence
  at the new host and notifies it). The old host gets the notice only for the cases that
  stayed; a notice left with none is not sent (``failed``, "withdrawn").
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import smtplib
import ssl
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime, formataddr
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from tipline.actions import webhooks
from tipline.audit import log as audit
from tipline.errors import TiplineError
from tipline.net.fetch import BlockedAddressError, FetchError, FetchSettings
from tipline.removal import cases as case_sm
from tipline.removal.hosting import Attribution
from tipline.removal.providers import ProviderContact, next_send_time
from tipline.store.case_tables import CaseRow, NoticeCase, NoticeRow
from tipline.store.tables import Webhook

__all__ = [
    "NOTICE_EVENT",
    "DeliveryError",
    "NoticeError",
    "NoticeSettings",
    "Reattribution",
    "RenderedNotice",
    "Sender",
    "SmtpSettings",
    "build_email",
    "deliver",
    "iccam_record",
    "mark_sent",
    "message_id",
    "notice_entries",
    "queue_notice",
    "render_notice",
    "send_email",
    "serial_for",
    "withdraw_case",
]

log = logging.getLogger(__name__)

NOTICE_EVENT = "removal.notice"
TEMPLATE_DIR = Path(__file__).with_name("templates")
ROLE_LABELS = {
    "host": "hosting provider",
    "site_owner": "site operator",
    "registrar": "domain registrar",
    "upstream": "upstream network",
    "hotline": "partner hotline",
    "police": "law enforcement",
}
#: Back-off of failed deliveries: 1, 2, 4, ... minutes, at most 6 hours; never given up on
#: for a transient failure.
RETRY_BASE_SECONDS = 60.0
RETRY_CAP_SECONDS = 6 * 3600.0
#: After this many failed attempts the notice's cases are flagged (it still retries).
FLAG_AFTER_ATTEMPTS = 5


class NoticeError(TiplineError):
    """A notice operation that cannot be done (one line)."""


class DeliveryError(TiplineError):
    """A delivery attempt failed; ``permanent`` when retrying cannot help."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class SmtpSettings:
    host: str = ""  #: the relay; empty: no e-mail (notices wait for manual sending)
    port: int = 25
    starttls: bool = True
    username: str = ""
    password: str = field(default="", repr=False)
    from_address: str = ""
    timeout: float = 30.0
    #: CA file to trust for STARTTLS (an internal relay); None: the system's
    ca_file: str | None = None


@dataclass(frozen=True)
class Sender:
    """Who sends notices: the notifier a DSA Article 16 notice names."""

    organisation: str = "Tipline hotline"
    name: str = ""  #: a team or person, optional
    email: str = ""
    website: str = ""
    address: str = ""
    country: str = ""  #: ISO alpha-2 of the hotline


@dataclass(frozen=True)
class NoticeSettings:
    sender: Sender = field(default_factory=Sender)
    smtp: SmtpSettings = field(default_factory=SmtpSettings)
    legal_basis: str = (
        "Directive 2011/93/EU (Articles 5 and 25) and the national law of the hosting country"
    )
    #: extra template directory searched before the bundled templates
    template_dir: Path | None = None
    recheck_hours: float = 24.0


@dataclass(frozen=True)
class RenderedNotice:
    subject: str
    text: str
    language: str  #: the template language used (after the fallback)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(f"{self.subject}\n{self.text}".encode()).hexdigest()


def _one_line(value: Any, limit: int = 500) -> str:
    text = " ".join(str(value or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _aware(at: datetime | None) -> datetime | None:
    if at is None:
        return None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _stamp(at: datetime | None) -> str:
    at = _aware(at)
    return at.strftime("%Y-%m-%d %H:%M UTC") if at is not None else "unknown"


def serial_for(notice_id: int, at: datetime) -> str:
    """``TLN-<year>-<id, 6 digits or more>``."""
    return f"TLN-{at.year:04d}-{notice_id:06d}"


def _domain(address: str) -> str:
    return address.rsplit("@", 1)[-1].strip().lower() if "@" in address else "tipline.invalid"


def message_id(serial: str, from_address: str) -> str:
    """The Message-ID every delivery of ``serial`` carries (the same on every retry)."""
    return f"<{serial.lower()}@{_domain(from_address)}>"


# -- ICCAM-shaped referral records --------------------------------------------------------------


def _classification(grade: Mapping[str, Any] | None) -> str:
    values = (grade or {}).get("values") or {}
    if values.get("interpol_baseline") in (True, "yes", "true"):
        return "Baseline"
    return "National" if (grade or {}).get("actionable", True) else "Not-illegal"


def iccam_record(case: CaseRow, *, hotline_reference: str, analyst: str = "") -> dict[str, Any]:
    """One URL of an ICCAM-shaped report (reference note, section 2): the URL, hosting
    country, IP, ISP/organisation and AS, the assessment and the actions so far."""
    attribution = case.attribution or {}
    actions: list[dict[str, Any]] = []
    if case.first_notice_at is not None:
        actions.append({"actionType": "ISP", "actionDate": _aware(case.first_notice_at)})
    if case.removed_at is not None:
        actions.append({"actionType": "CR", "actionDate": _aware(case.removed_at)})
    if case.moved_at is not None:
        actions.append({"actionType": "MO", "actionDate": _aware(case.moved_at)})
    return {
        "urlString": case.url,
        "hotlineReference": hotline_reference,
        "hostingCountryCode": case.country,
        "hostingIpAddress": attribution.get("address")
        or next(iter(attribution.get("addresses") or []), None),
        "hostingIsp": case.as_name or case.provider_name,
        "hostingOrganization": {
            "organizationName": case.provider_name or case.as_name,
            "autonomousSystemNumber": case.asn,
            "isContentDeliveryNetwork": bool(attribution.get("is_cdn")),
        },
        "isSourceUrl": True,
        "contentType": "website",
        "assessment": {
            "assessingAnalystName": analyst,
            "classification": _classification(case.grade),
            "grade": (case.grade or {}).get("label"),
            "assessedAt": _json_default(_aware(case.confirmed_at)),
        },
        "actions": [
            {**a, "actionDate": a["actionDate"].isoformat().replace("+00:00", "Z")} for a in actions
        ],
        "hotlineReceivedDate": _json_default(_aware(case.reported_at)),
    }


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return str(value)


# -- queueing -----------------------------------------------------------------------------------


def _channel(contact: ProviderContact | None, smtp: SmtpSettings) -> tuple[str, str | None, str]:
    """(channel, address, why manual) for a contact."""
    if contact is None:
        return "manual", None, "no contact known"
    if contact.channel == "webhook":
        if contact.webhook:
            return "webhook", contact.webhook, ""
        return "manual", None, "webhook channel without a webhook name"
    if contact.channel == "email":
        if not contact.abuse_email:
            return "manual", None, "no abuse e-mail address"
        if not smtp.host or not smtp.from_address:
            return "manual", contact.abuse_email, "no SMTP relay configured"
        return "email", contact.abuse_email, ""
    return "manual", contact.abuse_email, "the contact asks for manual notices (a portal)"


def queue_notice(
    session: Session,
    *,
    contact: ProviderContact | None,
    role: str,
    cases: Sequence[CaseRow],
    ladder_step: int,
    settings: NoticeSettings,
    kind: str = "notice",
    contact_key: str | None = None,
    counted: bool = True,
    now: datetime | None = None,
) -> NoticeRow:
    """Queue one notice to ``contact`` naming ``cases`` (each moves to notified/escalated).

    The send time respects the contact's send window; a contact that cannot be reached
    automatically gives a ``manual_pending`` notice and flags the cases."""
    at = _aware(now) or datetime.now(UTC)
    if not cases:
        raise NoticeError("a notice needs at least one case")
    channel, address, why_manual = _channel(contact, settings.smtp)
    key = contact_key or (contact.key if contact is not None else f"none:{role}")
    send_after = at
    if contact is not None and channel != "manual":
        try:
            send_after = next_send_time(contact, at)
        except (TiplineError, ValueError):
            send_after = at  # a window that no longer parses: send now rather than never
    urls = [c.url for c in cases]
    notice = NoticeRow(
        serial=f"pending-{uuid.uuid4().hex}",  # 40 characters; the real one needs the id
        contact_key=key[:300],
        role=role,
        organisation=(contact.organisation if contact is not None else "")[:2000],
        channel=channel,
        address=address,
        language=(contact.language if contact is not None else "en") or "en",
        kind=kind,
        ladder_step=ladder_step,
        state="manual_pending" if channel == "manual" else "queued",
        attempts=0,
        send_after=send_after,
        created_at=at,
        urls=urls,
        contact=contact.to_json() if contact is not None else None,
    )
    session.add(notice)
    session.flush()
    notice.serial = serial_for(notice.id, at)
    if kind == "referral":
        notice.record = {
            "hotlineReference": notice.serial,
            "urls": [
                iccam_record(c, hotline_reference=f"{notice.serial}/{i + 1}")
                for i, c in enumerate(cases)
            ],
        }
        notice.record = json.loads(json.dumps(notice.record, default=_json_default))
    moves: list[dict[str, Any]] = []
    for case in cases:
        session.add(NoticeCase(notice_id=notice.id, case_id=case.id, url=case.url))
        before, after = case_sm.record_notice(
            session,
            case,
            serial=notice.serial,
            ladder_step=ladder_step,
            role=role,
            counted=counted,
            now=at,
            audit_event=False,
        )
        moves.append({"case": case.id, "from": before, "to": after, "url": case.url})
        if channel == "manual":
            case_sm.set_flag(
                case,
                f"notice {notice.serial} ({ROLE_LABELS.get(role, role)}) must be sent by hand: "
                f"{why_manual}",
            )
    # one audit event for the notice and every case transition it made (cheaper than one
    # per case when a notice groups thousands of URLs, and the same record)
    audit.record(
        session,
        "system",
        "notice.queued",
        "notice",
        notice.serial,
        None,
        {
            "contact": notice.contact_key,
            "role": role,
            "kind": kind,
            "channel": channel,
            "ladder_step": ladder_step,
            "at": at.isoformat(),
            "transitions": moves,
        },
    )
    return notice


# -- text -------------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _environment(extra_dir: str | None) -> jinja2.Environment:
    dirs = [extra_dir] if extra_dir else []
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader([*dirs, str(TEMPLATE_DIR)]),
        autoescape=False,  # plain text: no markup to escape; values are one-line strings
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def _template(env: jinja2.Environment, kind: str, language: str) -> tuple[jinja2.Template, str]:
    base = "referral" if kind == "referral" else "notice"
    tried = [language.lower(), language.lower().split("-", 1)[0], "en"]
    for lang in dict.fromkeys(tried):
        try:
            return env.get_template(f"{base}.{lang}.txt.j2"), lang
        except jinja2.TemplateNotFound:
            continue
    raise NoticeError(f"no template {base}.en.txt.j2")


def _category(grade: Mapping[str, Any] | None) -> str:
    if not grade:
        return "confirmed by the hotline's analysts"
    values = grade.get("values") or {}
    parts = [f"{k} {v}" for k, v in sorted(values.items()) if v not in (None, "", False, "unknown")]
    label = ", ".join(_one_line(p, 80) for p in parts) or _one_line(grade.get("label"), 200)
    taxonomy = grade.get("taxonomy")
    return f"{label} (taxonomy {taxonomy})" if taxonomy else label


def notice_entries(session: Session, notice: NoticeRow) -> list[dict[str, Any]]:
    """One entry per case the notice names, in the notice's URL order."""
    rows = session.execute(
        select(CaseRow)
        .join(NoticeCase, NoticeCase.case_id == CaseRow.id)
        .where(NoticeCase.notice_id == notice.id)
        .order_by(CaseRow.id)
    ).scalars()
    out = []
    for case in rows:
        attribution = case.attribution or {}
        ip = attribution.get("address") or next(iter(attribution.get("addresses") or []), None)
        hosting = ", ".join(
            p
            for p in (
                f"IP {ip}" if ip else "",
                f"AS{case.asn}" if case.asn is not None else "",
                _one_line(case.as_name or case.provider_name or "", 120),
                case.country or "",
            )
            if p
        )
        out.append(
            {
                "case_id": case.id,
                "url": case.url,
                "category": _category(case.grade),
                "reasons": (
                    "assessed by the hotline's analysts as child sexual abuse material; "
                    "making it available is a criminal offence"
                ),
                "confirmed_at": _stamp(case.confirmed_at),
                "hosting": hosting or "unknown",
                "last_seen": _stamp(case.last_checked_at or case.confirmed_at),
                "evidence": case.evidence_sha256,
                "notice_count": case.notice_count,
            }
        )
    order = {u: i for i, u in enumerate(notice.urls or [])}
    out.sort(key=lambda e: order.get(e["url"], len(order)))
    return out


def render_notice(session: Session, notice: NoticeRow, settings: NoticeSettings) -> RenderedNotice:
    """The notice's subject and text (the same for every delivery of this serial)."""
    env = _environment(str(settings.template_dir) if settings.template_dir else None)
    template, lang = _template(env, notice.kind, notice.language or "en")
    entries = notice_entries(session, notice)
    reminder = max((e["notice_count"] for e in entries), default=1) - 1
    sender = settings.sender
    context = {
        "serial": notice.serial,
        "created_at": _stamp(notice.created_at),
        "reminder": reminder if reminder > 0 else 0,
        "recipient": {
            "organisation": _one_line(notice.organisation, 200),
            "role_label": ROLE_LABELS.get(notice.role, notice.role),
        },
        "sender": {
            "organisation": _one_line(sender.organisation, 200),
            "name": _one_line(sender.name, 200),
            "email": _one_line(sender.email, 200),
            "website": _one_line(sender.website, 200),
            "address": _one_line(sender.address, 300),
            "country": _one_line(sender.country, 8),
        },
        "legal_basis": _one_line(settings.legal_basis, 1000),
        "entries": entries,
        "recheck_hours": f"{settings.recheck_hours:g}",
        "hosting_country": next(
            (c for c in (e["hosting"].rsplit(", ", 1)[-1] for e in entries) if len(c) == 2), None
        ),
        "record_json": json.dumps(
            notice.record or {}, indent=2, sort_keys=True, ensure_ascii=False
        ),
    }
    text = template.render(**context)
    first, _, body = text.partition("\n")
    if not first.startswith("Subject: "):
        raise NoticeError(f"template for {notice.kind}/{lang} must start with 'Subject: '")
    return RenderedNotice(_one_line(first.removeprefix("Subject: "), 900), body.lstrip("\n"), lang)


# -- e-mail -------------------------------------------------------------------------------------


def build_email(
    notice: NoticeRow, rendered: RenderedNotice, settings: NoticeSettings, sent_at: datetime
) -> EmailMessage:
    """The e-mail: one text/plain part, no attachments; Message-ID from the serial."""
    smtp, sender = settings.smtp, settings.sender
    if not notice.address:
        raise DeliveryError(f"notice {notice.serial} has no address", permanent=True)
    msg = EmailMessage(policy=SMTP_POLICY)
    msg["From"] = formataddr((_one_line(sender.organisation, 200), smtp.from_address))
    msg["To"] = _one_line(notice.address, 300)
    if sender.email and sender.email != smtp.from_address:
        msg["Reply-To"] = sender.email
    msg["Subject"] = rendered.subject
    msg["Date"] = format_datetime(_aware(sent_at) or datetime.now(UTC))
    msg["Message-ID"] = message_id(notice.serial, smtp.from_address)
    msg["X-Tipline-Notice"] = notice.serial
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(rendered.text, subtype="plain", charset="utf-8")
    msg["Content-Language"] = rendered.language  # after set_content, which drops Content-*
    return msg


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def send_email(msg: EmailMessage, smtp: SmtpSettings) -> None:
    """Hand ``msg`` to the relay (STARTTLS when configured; login only over TLS or to a
    loopback relay). Raises :class:`DeliveryError` (``permanent`` for 5xx refusals)."""
    if not smtp.host:
        raise DeliveryError("no SMTP relay configured", permanent=True)
    if smtp.username and not smtp.starttls and not _loopback(smtp.host):
        raise DeliveryError("SMTP login without STARTTLS refused", permanent=True)
    try:
        with smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout) as client:
            client.ehlo()
            if smtp.starttls:
                context = ssl.create_default_context(cafile=smtp.ca_file)
                client.starttls(context=context)
                client.ehlo()
            if smtp.username:
                client.login(smtp.username, smtp.password)
            client.send_message(msg, from_addr=smtp.from_address, to_addrs=[str(msg["To"])])
    except smtplib.SMTPRecipientsRefused as err:
        codes = [code for code, _ in err.recipients.values()]
        raise DeliveryError(
            f"recipient refused: {codes}", permanent=all(c >= 500 for c in codes)
        ) from None
    except smtplib.SMTPResponseException as err:
        text = (
            err.smtp_error.decode("utf-8", "replace")
            if isinstance(err.smtp_error, bytes)
            else str(err.smtp_error)
        )
        raise DeliveryError(
            f"relay answered {err.smtp_code}: {_one_line(text, 200)}",
            permanent=err.smtp_code >= 500 and err.smtp_code not in (530, 535),
        ) from None
    except smtplib.SMTPNotSupportedError as err:
        raise DeliveryError(f"relay does not support it: {err}", permanent=True) from None
    except (smtplib.SMTPException, OSError, ssl.SSLError) as err:
        raise DeliveryError(f"{type(err).__name__}: {_one_line(err, 200)}") from None


# -- webhook ------------------------------------------------------------------------------------


def _send_webhook(
    session: Session,
    notice: NoticeRow,
    rendered: RenderedNotice,
    sent_at: datetime,
    settings: FetchSettings,
) -> None:
    hook = session.scalar(
        select(Webhook).where(Webhook.name == notice.address, Webhook.active.is_(True))
    )
    if hook is None:
        raise DeliveryError(f"no active webhook named {notice.address!r}", permanent=True)
    data = {
        "serial": notice.serial,
        "kind": notice.kind,
        "role": notice.role,
        "language": rendered.language,
        "urls": list(notice.urls or []),
        "subject": rendered.subject,
        "text": rendered.text,
        "record": notice.record,
    }
    occurred = (_aware(sent_at) or datetime.now(UTC)).isoformat()
    body = webhooks.envelope_body(notice.serial, NOTICE_EVENT, occurred, data)
    headers = webhooks.signed_headers(
        hook.secret, NOTICE_EVENT, notice.serial, str(int(time.time())), body
    )
    try:
        status = webhooks.post_signed(hook.url, body, headers, settings)
    except BlockedAddressError as err:
        raise DeliveryError(f"webhook address refused: {err}", permanent=True) from None
    except FetchError as err:
        raise DeliveryError(f"webhook: {_one_line(err, 200)}") from None
    if 200 <= status < 300:
        return
    raise DeliveryError(
        f"webhook answered HTTP {status}",
        permanent=400 <= status < 500 and status not in (408, 429),
    )


# -- delivery -----------------------------------------------------------------------------------


def _retry_delay(attempts: int) -> timedelta:
    return timedelta(
        seconds=min(RETRY_CAP_SECONDS, RETRY_BASE_SECONDS * 2.0 ** max(0, min(attempts - 1, 30)))
    )


def _held_until(session: Session, notice_id: int) -> datetime | None:
    """The latest hold expiry among the notice's held cases (None: none held)."""
    rows = session.scalars(
        select(CaseRow.hold_until)
        .join(NoticeCase, NoticeCase.case_id == CaseRow.id)
        .where(NoticeCase.notice_id == notice_id, CaseRow.state == "held")
    )
    found = [_aware(r) for r in rows if r is not None]
    return max(found) if found else None  # type: ignore[type-var]


def _live_case_ids(session: Session, notice_id: int) -> list[int]:
    return list(
        session.scalars(
            select(CaseRow.id)
            .join(NoticeCase, NoticeCase.case_id == CaseRow.id)
            .where(NoticeCase.notice_id == notice_id, CaseRow.state.not_in(("closed", "removed")))
        )
    )


@dataclass(frozen=True)
class Reattribution:
    """How :func:`deliver` re-runs the hosting attribution just before a notice goes out
    (the scheduler builds it from its configuration)."""

    #: a URL's fresh attribution (DNS, data sets, directory): run outside any transaction
    attribute: Callable[[str], Attribution]
    #: store it on the case (in the delivery's transaction); True when the case moved
    apply: Callable[[Session, CaseRow, Attribution], bool]


def _window_time(contact: ProviderContact | None, now: datetime) -> datetime:
    if contact is None:
        return now
    try:
        return next_send_time(contact, now)
    except (TiplineError, ValueError):
        return now  # a window that no longer parses: send now rather than never


def _due_urls(session: Session, notice_id: int, now: datetime) -> list[tuple[int, str]]:
    """``(case id, URL)`` of the live cases of a notice that would go out now (nothing when
    it is not due, held, outside its window or has nothing left to send)."""
    notice = session.get(NoticeRow, notice_id)
    if notice is None or notice.state not in ("queued", "sending"):
        return []
    if (_aware(notice.send_after) or now) > now or _held_until(session, notice.id) is not None:
        return []
    contact = ProviderContact(**notice.contact) if notice.contact else None
    if _window_time(contact, now) > now:
        return []
    ids = _live_case_ids(session, notice_id)
    rows = session.execute(select(CaseRow.id, CaseRow.url).where(CaseRow.id.in_(ids)))
    return sorted((int(i), str(u)) for i, u in rows)


def _fresh_attributions(
    factory: sessionmaker[Session], notice_id: int, how: Reattribution, now: datetime
) -> dict[int, Attribution]:
    with factory() as s:
        due = _due_urls(s, notice_id, now)
    fresh: dict[int, Attribution] = {}
    for case_id, url in due:
        try:
            attribution = how.attribute(url)
        except Exception as err:  # an attribution that fails must not stop the notice
            log.warning("case %s: re-attribution before notice failed: %s", case_id, err)
            continue
        # an answer that knows nothing (DNS failed, no data set) keeps the known hosting
        if attribution.error is None and (
            attribution.asn is not None or attribution.country is not None
        ):
            fresh[case_id] = attribution
    return fresh


def withdraw_case(session: Session, case: CaseRow, *, reason: str, now: datetime) -> list[str]:
    """Take ``case`` out of every notice naming it that has not been sent (its URL, its
    referral record); the round it was counted in did not happen. Returns the serials."""
    rows = list(
        session.scalars(
            select(NoticeRow)
            .join(NoticeCase, NoticeCase.notice_id == NoticeRow.id)
            .where(
                NoticeCase.case_id == case.id,
                NoticeRow.state.in_(("queued", "sending", "manual_pending")),
            )
            .order_by(NoticeRow.id)
            .with_for_update()
        )
    )
    if not rows:
        return []
    serials = [n.serial for n in rows]
    session.execute(
        delete(NoticeCase).where(
            NoticeCase.case_id == case.id, NoticeCase.notice_id.in_([n.id for n in rows])
        )
    )
    for notice in rows:
        notice.urls = [u for u in (notice.urls or []) if u != case.url]
        if isinstance(notice.record, dict) and isinstance(notice.record.get("urls"), list):
            kept = [r for r in notice.record["urls"] if (r or {}).get("urlString") != case.url]
            notice.record = {**notice.record, "urls": kept}
        if not notice.urls:
            notice.state = "failed"
            notice.last_error = _one_line(f"withdrawn before it was sent: {reason}", 1000)
    case.notice_count = max(0, (case.notice_count or 0) - 1)
    audit.record(
        session,
        "system",
        "notice.withdrawn",
        "case",
        str(case.id),
        None,
        {"serials": serials, "url": case.url, "reason": reason, "at": now.isoformat()},
    )
    return serials


def _reattribute(
    session: Session,
    notice: NoticeRow,
    fresh: Mapping[int, Attribution],
    how: Reattribution,
    now: datetime,
) -> list[int]:
    """Apply the fresh attributions; withdraw and re-route the cases that moved. Returns
    their ids."""
    moved: list[int] = []
    for case_id in _live_case_ids(session, notice.id):
        attribution = fresh.get(case_id)
        case = session.get(CaseRow, case_id, with_for_update=True)
        if attribution is None or case is None or case.state in ("held", "moved"):
            continue
        if not how.apply(session, case, attribution):
            continue
        moved.append(case_id)
        withdraw_case(
            session,
            case,
            reason=f"case {case_id} moved before notice {notice.serial} went out",
            now=now,
        )
        # nothing went to the old host for this round: route it afresh, as at first
        case_sm.resume(session, case_id, by="system", now=now)
    return moved


def deliver(
    factory: sessionmaker[Session],
    notice_id: int,
    settings: NoticeSettings,
    *,
    now: datetime,
    webhook_settings: FetchSettings | None = None,
    reattribution: Reattribution | None = None,
) -> str:
    """Deliver one queued notice (see the module docstring). Returns ``"sent"``,
    ``"deferred"`` (a hold or the send window: ``send_after`` moved), ``"retry"`` (a
    transient failure: back to ``queued`` after a back-off), ``"failed"`` (a permanent
    refusal), ``"rerouted"`` (every case it names moved: withdrawn, not sent) or
    ``"skipped"`` (nothing to send: already sent, manual, or not due).

    With ``reattribution``, every case's hosting is attributed afresh once the notice is
    due, and a case that moved is withdrawn and re-routed instead of notified to the old
    host."""
    now = _aware(now) or datetime.now(UTC)
    fresh = (
        _fresh_attributions(factory, notice_id, reattribution, now)
        if reattribution is not None
        else {}
    )
    with factory() as s, s.begin():
        notice = s.get(NoticeRow, notice_id, with_for_update=True)
        if notice is None or notice.state not in ("queued", "sending"):
            return "skipped"
        if (_aware(notice.send_after) or now) > now:
            return "skipped"
        held = _held_until(s, notice.id)
        if held is not None:
            notice.send_after = max(held, now)
            return "deferred"
        if not _live_case_ids(s, notice.id):
            notice.state = "failed"
            notice.last_error = "nothing to send: every case it names is removed or closed"
            return "skipped"
        contact = ProviderContact(**notice.contact) if notice.contact else None
        window = _window_time(contact, now)
        if window > now:
            notice.send_after = window
            return "deferred"
        if fresh and reattribution is not None:
            _reattribute(s, notice, fresh, reattribution, now)
            if not _live_case_ids(s, notice.id):
                notice.state = "failed"
                notice.last_error = (
                    "withdrawn before it was sent: every case it names moved (re-routed) or ended"
                )
                return "rerouted"
        rendered = render_notice(s, notice, settings)
        if notice.state == "sending":
            # a delivery died after 'sending' was committed: the relay may have the message;
            # send again under the same Message-ID (the at-least-once window, see above)
            notice.last_error = "previous delivery interrupted; sent again with the same id"
        notice.state = "sending"
        notice.attempts = (notice.attempts or 0) + 1
        notice.subject = rendered.subject
        notice.body_sha256 = rendered.sha256
        channel = notice.channel
        if channel == "email":
            notice.message_id = message_id(notice.serial, settings.smtp.from_address)
            email = build_email(notice, rendered, settings, now)
        attempts = notice.attempts
    error: DeliveryError | None = None
    try:
        with factory() as s:
            if channel == "email":
                send_email(email, settings.smtp)
            elif channel == "webhook":
                row = s.get(NoticeRow, notice_id)
                assert row is not None
                _send_webhook(
                    s, row, rendered, now, webhook_settings or webhooks.delivery_settings()
                )
            else:
                raise DeliveryError(
                    f"channel {channel} is not delivered automatically", permanent=True
                )
    except DeliveryError as err:
        error = err
    with factory() as s, s.begin():
        notice = s.get(NoticeRow, notice_id, with_for_update=True)
        if notice is None:
            return "skipped"
        if error is None:
            notice.state, notice.sent_at, notice.sent_by = "sent", now, "system"
            notice.last_error = None
            case_sm.record_notice_sent(s, _live_case_ids(s, notice_id), now)
            return "sent"
        notice.last_error = _one_line(str(error), 1000)
        if error.permanent:
            notice.state = "failed"
            _flag_cases(s, notice_id, f"notice {notice.serial} failed: {notice.last_error}")
            return "failed"
        notice.state = "queued"
        notice.send_after = now + _retry_delay(attempts)
        if attempts >= FLAG_AFTER_ATTEMPTS:
            _flag_cases(
                s,
                notice_id,
                f"notice {notice.serial}: {attempts} failed attempts, still "
                f"retrying: {notice.last_error}",
            )
        return "retry"


def _flag_cases(session: Session, notice_id: int, why: str) -> None:
    for case in session.scalars(
        select(CaseRow)
        .join(NoticeCase, NoticeCase.case_id == CaseRow.id)
        .where(NoticeCase.notice_id == notice_id)
    ):
        case_sm.set_flag(case, why)


def mark_sent(
    session: Session,
    serial: str,
    *,
    by: str,
    settings: NoticeSettings,
    now: datetime | None = None,
) -> NoticeRow:
    """An analyst sent a manual (or failed) notice by hand: record it as sent."""
    at = _aware(now) or datetime.now(UTC)
    notice = session.scalar(select(NoticeRow).where(NoticeRow.serial == serial).with_for_update())
    if notice is None:
        raise NoticeError(f"no notice {serial}")
    if notice.state == "sent":
        raise NoticeError(f"notice {serial} was already sent at {_stamp(notice.sent_at)}")
    rendered = render_notice(session, notice, settings)
    notice.state, notice.sent_at, notice.sent_by = "sent", at, by
    notice.subject, notice.body_sha256 = rendered.subject, rendered.sha256
    notice.attempts = (notice.attempts or 0) + 1
    ids = _live_case_ids(session, notice.id)
    case_sm.record_notice_sent(session, ids, at)
    for case in session.scalars(select(CaseRow).where(CaseRow.id.in_(ids))):
        if case.flag and serial in case.flag:
            case_sm.set_flag(case, None)
    audit.record(session, by, "notice.mark_sent", "notice", serial, None, {"cases": ids})
    return notice


def notices_for_contacts(session: Session, keys: Iterable[str]) -> list[NoticeRow]:
    return list(session.scalars(select(NoticeRow).where(NoticeRow.contact_key.in_(list(keys)))))
