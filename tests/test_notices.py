"""Notices (tipline.removal.notices): a real SMTP receiver on 127.0.0.1 (aiosmtpd) checks
every message; relay down then up, send windows, holds, manual and webhook channels, STARTTLS.
SQLite and PostgreSQL."""

from __future__ import annotations

import email
import email.policy
import ipaddress
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tipline.actions import webhooks
from tipline.net.fetch import FetchSettings
from tipline.removal import cases, notices
from tipline.removal.notices import NoticeSettings, Sender, SmtpSettings
from tipline.removal.providers import ProviderContact
from tipline.store.case_tables import CaseRow, NoticeRow

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # a Monday
HOST = ProviderContact(
    key="asn:64500",
    role="host",
    organisation="Example Hosting Ltd",
    abuse_email="abuse@hosting.example",
    channel="email",
    webhook=None,
    send_window=None,
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    raw: bytes


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address in self.sink.refuse:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = bytes(envelope.original_content or envelope.content)
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        with self.sink.lock:
            self.sink.received.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), msg, raw)
            )
        return "250 OK queued"


@dataclass
class SmtpSink:
    """An aiosmtpd relay on 127.0.0.1 that keeps every message; stop() / start() it to make
    the relay go down and come back on the same port."""

    port: int = field(default_factory=free_port)
    received: list[Received] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)
    tls_context: ssl.SSLContext | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    controller: Controller | None = None

    def start(self) -> None:
        kw: dict[str, Any] = {}
        if self.tls_context is not None:
            kw = {"tls_context": self.tls_context, "require_starttls": True}
        self.controller = Controller(_Handler(self), hostname="127.0.0.1", port=self.port, **kw)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def settings(self, **kw: Any) -> SmtpSettings:
        return SmtpSettings(
            host="127.0.0.1",
            port=self.port,
            starttls=False,
            from_address="notices@hotline.example",
            timeout=5.0,
            **kw,
        )


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    sink.start()
    try:
        yield sink
    finally:
        sink.stop()


def notice_settings(sink: SmtpSink, **kw: Any) -> NoticeSettings:
    return NoticeSettings(
        sender=Sender(
            organisation="Example Hotline",
            name="Content Analysis Team",
            email="reports@hotline.example",
            website="https://hotline.example",
            country="DE",
        ),
        smtp=kw.pop("smtp", sink.settings()),
        **kw,
    )


GRADE = {
    "values": {"uk_category": "A", "ncmec_category": "A1", "age_band": "unknown"},
    "label": "uk_category:A ncmec_category:A1",
    "actionable": True,
    "taxonomy": "tipline-default",
}


def open_attributed(s: Session, url: str, contact: ProviderContact | None = HOST) -> CaseRow:
    case, _ = cases.open_case(s, url, grade=GRADE, now=T0)
    contacts = {"host": contact.to_json()} if contact is not None else {}
    cases.record_attribution(
        s,
        case,
        {
            "asn": 64500,
            "as_name": "EXAMPLE-AS",
            "country": "DE",
            "address": "192.0.2.10",
            "addresses": ["192.0.2.10"],
            "contacts": contacts,
            "datasets": [{"name": "ip2asn-test", "version": "2026-03-01"}],
        },
        hotline_country="DE",
        provider_key=contact.key if contact else None,
        provider_name=contact.organisation if contact else None,
        now=T0,
    )
    cases.record_evidence(s, case, "ab" * 32, now=T0)
    return case


def queue(
    factory: sessionmaker[Session],
    settings: NoticeSettings,
    urls: list[str],
    contact: ProviderContact | None = HOST,
    now: datetime = T0,
) -> tuple[int, str, list[int]]:
    with factory() as s, s.begin():
        rows = [open_attributed(s, u, contact) for u in urls]
        n = notices.queue_notice(
            s, contact=contact, role="host", cases=rows, ladder_step=0, settings=settings, now=now
        )
        return n.id, n.serial, [c.id for c in rows]


def check_message(got: Received, serial: str, urls: list[str]) -> str:
    """Every notice: headers, serial, the exact URLs, the DSA fields, one text part, no media."""
    msg = got.message
    assert got.mail_from == "notices@hotline.example"
    assert got.rcpt_tos == ["abuse@hosting.example"]
    assert msg["To"] == "abuse@hosting.example"
    assert msg["From"] == "Example Hotline <notices@hotline.example>"
    assert msg["Reply-To"] == "reports@hotline.example"
    assert serial in msg["Subject"] and msg["X-Tipline-Notice"] == serial
    assert msg["Message-ID"] == f"<{serial.lower()}@hotline.example>"
    assert msg["Date"] and msg["Auto-Submitted"] == "auto-generated"
    # never an image or any attachment: one text/plain part
    assert not msg.is_multipart()
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content_disposition() is None
    assert len(list(msg.iter_attachments())) == 0
    assert b"image/" not in got.raw and b"base64" not in got.raw.lower()
    body = msg.get_content().replace("\r\n", "\n")
    assert isinstance(body, str)
    for url in urls:
        assert f". {url}\n" in body
    assert body.count("Category: ") == len(urls)
    assert "ncmec_category A1, uk_category A (taxonomy tipline-default)" in body
    assert "Legal basis: Directive 2011/93/EU" in body
    assert "Statement of good faith" in body
    assert "Notifier: Example Hotline, Content Analysis Team" in body
    assert "Hosting: IP 192.0.2.10, AS64500, EXAMPLE-AS, DE" in body
    assert "Evidence reference: " + "ab" * 32 in body
    return body


def test_notice_by_email_groups_urls(
    session_factory: sessionmaker[Session], smtp: SmtpSink
) -> None:
    settings = notice_settings(smtp)
    urls = ["http://files.example.org/a/1.html", "http://files.example.org/b/2.html"]
    notice_id, serial, case_ids = queue(session_factory, settings, urls)
    assert serial == f"TLN-2026-{notice_id:06d}"
    assert notices.deliver(session_factory, notice_id, settings, now=T0) == "sent"
    assert len(smtp.received) == 1
    body = check_message(smtp.received[0], serial, urls)
    assert "Reminder" not in smtp.received[0].message["Subject"]
    assert "every 24 hours" in " ".join(body.split())
    with session_factory() as s:
        n = s.get(NoticeRow, notice_id)
        assert n is not None and n.state == "sent" and n.sent_at == T0 and n.attempts == 1
        assert n.body_sha256 and len(n.body_sha256) == 64
        for cid in case_ids:
            case = cases.get_case(s, cid)
            assert case.state == "notified" and case.first_notice_at == T0
    # delivered once: another delivery does nothing
    assert notices.deliver(session_factory, notice_id, settings, now=T0) == "skipped"
    assert len(smtp.received) == 1


def test_reminder_and_languages(session_factory: sessionmaker[Session], smtp: SmtpSink) -> None:
    settings = notice_settings(smtp)
    german = ProviderContact(**{**HOST.to_json(), "language": "de", "key": "asn:64501"})
    nid, serial, ids = queue(session_factory, settings, ["http://de.example.org/x"], german)
    assert notices.deliver(session_factory, nid, settings, now=T0) == "sent"
    msg = smtp.received[-1].message
    assert msg["Subject"].startswith(f"[{serial}] Hinweis auf rechtswidrige Inhalte")
    assert msg["Content-Language"] == "de"
    assert "Erklärung über den guten Glauben" in msg.get_content()
    # a language without a template falls back to English; the second round is a reminder
    french = ProviderContact(**{**HOST.to_json(), "language": "fr-CA", "key": "asn:64502"})
    with session_factory() as s, s.begin():
        case = cases.get_case(s, ids[0])
        n = notices.queue_notice(
            s, contact=french, role="host", cases=[case], ladder_step=0, settings=settings, now=T0
        )
        second = n.id
    assert notices.deliver(session_factory, second, settings, now=T0) == "sent"
    msg = smtp.received[-1].message
    assert msg["Content-Language"] == "en"
    assert "] Reminder 1: Notice of illegal content" in msg["Subject"]
    assert "This is reminder 1" in msg.get_content()


def test_relay_down_then_up_sent_exactly_once(
    session_factory: sessionmaker[Session], smtp: SmtpSink
) -> None:
    settings = notice_settings(smtp)
    nid, serial, _ = queue(session_factory, settings, ["http://down.example.org/p"])
    smtp.stop()  # the relay is down: connection refused
    assert notices.deliver(session_factory, nid, settings, now=T0) == "retry"
    with session_factory() as s:
        n = s.get(NoticeRow, nid)
        assert n is not None and n.state == "queued" and n.attempts == 1
        assert n.last_error and "Connection" in n.last_error
        assert n.send_after == T0 + timedelta(seconds=60)
    assert notices.deliver(session_factory, nid, settings, now=T0 + timedelta(seconds=30)) == (
        "skipped"  # not due before its back-off
    )
    assert notices.deliver(session_factory, nid, settings, now=T0 + timedelta(seconds=61)) == (
        "retry"
    )
    with session_factory() as s:
        n = s.get(NoticeRow, nid)
        assert n is not None and n.send_after == T0 + timedelta(seconds=61 + 120)
    smtp.start()  # back up
    at = T0 + timedelta(seconds=61 + 120)
    assert notices.deliver(session_factory, nid, settings, now=at) == "sent"
    assert notices.deliver(session_factory, nid, settings, now=at) == "skipped"
    assert len(smtp.received) == 1
    check_message(smtp.received[0], serial, ["http://down.example.org/p"])
    with session_factory() as s:
        n = s.get(NoticeRow, nid)
        assert n is not None and n.state == "sent" and n.attempts == 3 and n.last_error is None


def test_interrupted_delivery_resends_with_same_message_id(
    session_factory: sessionmaker[Session], smtp: SmtpSink
) -> None:
    settings = notice_settings(smtp)
    nid, serial, _ = queue(session_factory, settings, ["http://crash.example.org/p"])
    assert notices.deliver(session_factory, nid, settings, now=T0) == "sent"
    with session_factory() as s, s.begin():
        n = s.get(NoticeRow, nid)
        assert n is not None
        n.state = "sending"  # as if the worker died between the relay's 250 and the commit
    assert notices.deliver(session_factory, nid, settings, now=T0) == "sent"
    ids = [r.message["Message-ID"] for r in smtp.received]
    assert ids == [f"<{serial.lower()}@hotline.example>"] * 2  # the recipient can de-duplicate


def test_send_window_respected(session_factory: sessionmaker[Session], smtp: SmtpSink) -> None:
    settings = notice_settings(smtp)
    office = ProviderContact(
        **{**HOST.to_json(), "send_window": "Mon-Fri 09:00-17:00 Europe/Berlin"}
    )
    saturday = datetime(2026, 3, 7, 12, 0, tzinfo=UTC)
    nid, _, _ = queue(session_factory, settings, ["http://office.example.org/"], office, saturday)
    with session_factory() as s:
        n = s.get(NoticeRow, nid)
        assert n is not None and n.send_after == datetime(2026, 3, 9, 8, 0, tzinfo=UTC)
    assert notices.deliver(session_factory, nid, settings, now=saturday) == "skipped"
    assert smtp.received == []
    monday = datetime(2026, 3, 9, 8, 0, tzinfo=UTC)
    assert notices.deliver(session_factory, nid, settings, now=monday) == "sent"
    assert len(smtp.received) == 1


def test_hold_expires_while_notice_is_queued(
    session_factory: sessionmaker[Session], smtp: SmtpSink
) -> None:
    settings = notice_settings(smtp)
    nid, _, (cid,) = queue(session_factory, settings, ["http://held.example.org/"])
    until = T0 + timedelta(hours=2)
    with session_factory() as s, s.begin():
        cases.hold(s, cid, agency="LKA", until=until, by="user:sen", role="senior_analyst", now=T0)
    assert notices.deliver(session_factory, nid, settings, now=T0) == "deferred"
    assert smtp.received == []
    with session_factory() as s:
        n = s.get(NoticeRow, nid)
        assert n is not None and n.state == "queued" and n.send_after == until
    early = T0 + timedelta(hours=1)
    assert notices.deliver(session_factory, nid, settings, now=early) == "skipped"
    with session_factory() as s, s.begin():
        assert cases.expire_holds(s, until) == [cid]
    assert notices.deliver(session_factory, nid, settings, now=until) == "sent"
    assert len(smtp.received) == 1
    with session_factory() as s:
        assert cases.get_case(s, cid).first_notice_at == until


def test_no_contact_is_manual_not_dropped(
    session_factory: sessionmaker[Session], smtp: SmtpSink
) -> None:
    settings = notice_settings(smtp)
    nid, serial, (cid,) = queue(session_factory, settings, ["http://nobody.example.org/"], None)
    with session_factory() as s:
        n = s.get(NoticeRow, nid)
        assert n is not None and n.state == "manual_pending" and n.channel == "manual"
        case = cases.get_case(s, cid)
        assert case.state == "notified"
        assert case.flag is not None and serial in case.flag and "no contact known" in case.flag
        text = notices.render_notice(s, n, settings)
        assert "http://nobody.example.org/" in text.text and serial in text.subject
    assert notices.deliver(session_factory, nid, settings, now=T0) == "skipped"
    assert smtp.received == []
    with session_factory() as s, s.begin():
        notices.mark_sent(s, serial, by="user:ann", settings=settings, now=T0 + timedelta(hours=1))
    with session_factory() as s, s.begin():
        n = s.get(NoticeRow, nid)
        assert n is not None and n.state == "sent" and n.sent_by == "user:ann"
        case = cases.get_case(s, cid)
        assert case.flag is None and case.first_notice_at == T0 + timedelta(hours=1)
        with pytest.raises(notices.NoticeError, match="already sent"):
            notices.mark_sent(s, serial, by="user:ann", settings=settings)
        with pytest.raises(notices.NoticeError, match="no notice"):
            notices.mark_sent(s, "TLN-1999-000001", by="user:ann", settings=settings)


def test_contact_without_address_and_no_relay_are_manual(
    session_factory: sessionmaker[Session], smtp: SmtpSink
) -> None:
    settings = notice_settings(smtp)
    no_address = ProviderContact(**{**HOST.to_json(), "abuse_email": None})
    nid, _, _ = queue(session_factory, settings, ["http://noaddr.example.org/"], no_address)
    unconfigured = notice_settings(smtp, smtp=SmtpSettings())
    nid2, _, _ = queue(session_factory, unconfigured, ["http://norelay.example.org/"])
    with session_factory() as s:
        for notice_id, why in ((nid, "no abuse e-mail address"), (nid2, "no SMTP relay")):
            n = s.get(NoticeRow, notice_id)
            assert n is not None and n.state == "manual_pending"
            case = s.scalar(select(CaseRow).where(CaseRow.url == n.urls[0]))
            assert case is not None and case.flag is not None and why in case.flag


def test_permanent_refusal_fails_and_flags(
    session_factory: sessionmaker[Session], smtp: SmtpSink
) -> None:
    settings = notice_settings(smtp)
    smtp.refuse.add("abuse@hosting.example")
    nid, serial, (cid,) = queue(session_factory, settings, ["http://refused.example.org/"])
    assert notices.deliver(session_factory, nid, settings, now=T0) == "failed"
    with session_factory() as s:
        n = s.get(NoticeRow, nid)
        assert n is not None and n.state == "failed" and "550" in (n.last_error or "")
        flag = cases.get_case(s, cid).flag
        assert flag is not None and f"notice {serial} failed" in flag


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "relay.pem", tmp / "relay.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_starttls_relay(session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    sink = SmtpSink(tls_context=server_ctx)
    sink.start()
    try:
        tls = sink.settings().__class__(
            **{**sink.settings().__dict__, "starttls": True, "ca_file": str(cert)}
        )
        settings = notice_settings(sink, smtp=tls)
        nid, serial, _ = queue(session_factory, settings, ["http://tls.example.org/"])
        assert notices.deliver(session_factory, nid, settings, now=T0) == "sent"
        assert len(sink.received) == 1 and sink.received[0].message["X-Tipline-Notice"] == serial
        # a relay that requires STARTTLS refuses a client that does not use it: retried
        plain = notice_settings(sink)
        nid2, _, _ = queue(session_factory, plain, ["http://plain.example.org/"])
        assert notices.deliver(session_factory, nid2, plain, now=T0) in ("retry", "failed")
        assert len(sink.received) == 1
        # login in clear text to a remote relay is refused before connecting
        remote = SmtpSettings(
            host="relay.example.net",
            username="u",
            password="p",
            starttls=False,
            from_address="n@hotline.example",
        )
        with pytest.raises(notices.DeliveryError, match="without STARTTLS"):
            notices.send_email(EmailMessage(), remote)
    finally:
        sink.stop()


class _Hook(BaseHTTPRequestHandler):
    got: ClassVar[list[tuple[dict[str, str], bytes]]] = []
    status = 200

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        type(self).got.append(({k: v for k, v in self.headers.items()}, body))
        self.send_response(type(self).status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_webhook_channel_signed(session_factory: sessionmaker[Session], smtp: SmtpSink) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Hook.got = []
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/notices"
        allow = FetchSettings.build(allow_networks=["127.0.0.0/8"])
        with session_factory() as s, s.begin():
            # a notice-only webhook: no events, named by the provider directory
            hook, secret = webhooks.create_webhook(s, url, [], "portal-api", settings=allow)
            assert hook.events == []
            with pytest.raises(webhooks.WebhookError, match="or a name"):
                webhooks.create_webhook(s, url, [], "  ", settings=allow)
            # the ordinary events never reach it
            assert webhooks.emit(s, "export", {"kind": "urls"}) == []
        contact = ProviderContact(
            **{**HOST.to_json(), "channel": "webhook", "webhook": "portal-api"}
        )
        settings = notice_settings(smtp)
        nid, serial, _ = queue(session_factory, settings, ["http://hooked.example.org/"], contact)
        _Hook.status = 503
        assert notices.deliver(session_factory, nid, settings, now=T0, webhook_settings=allow) == (
            "retry"
        )
        _Hook.status = 200
        later = T0 + timedelta(minutes=5)
        assert (
            notices.deliver(session_factory, nid, settings, now=later, webhook_settings=allow)
            == "sent"
        )
        headers, body = _Hook.got[-1]
        assert headers["X-Tipline-Delivery"] == serial
        assert headers["X-Tipline-Event"] == notices.NOTICE_EVENT
        assert webhooks.verify_signature(
            secret, headers["X-Tipline-Timestamp"], body, headers["X-Tipline-Signature"]
        )
        doc = json.loads(body)
        assert doc["id"] == serial and doc["data"]["urls"] == ["http://hooked.example.org/"]
        assert serial in doc["data"]["subject"]
        assert smtp.received == []
    finally:
        server.shutdown()
        server.server_close()


def test_notice_only_webhook_from_cli(
    db_url: str, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    """``tipline webhook add URL --name NAME`` with no --event: a notice-only webhook."""
    from typer.testing import CliRunner

    from tipline.cli.app import _register, app

    _register()
    runner = CliRunner()
    env = {"TIPLINE_DATABASE_URL": db_url, "TIPLINE_DATA_DIR": str(tmp_path)}
    url = "https://portal.example.org/notices"
    res = runner.invoke(app, ["webhook", "add", url], env=env)
    assert res.exit_code != 0 and "or a name if it only receives removal notices" in res.output
    res = runner.invoke(app, ["webhook", "add", url, "--name", "portal-api"], env=env)
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["webhook", "list"], env=env)
    assert "notices-only" in res.stdout and url in res.stdout
    with session_factory() as s:
        (hook,) = webhooks.list_webhooks(s)
        assert (hook.name, hook.events) == ("portal-api", [])


def test_referral_carries_iccam_record(
    session_factory: sessionmaker[Session], smtp: SmtpSink
) -> None:
    settings = notice_settings(smtp)
    partner = ProviderContact(
        key="country:FR",
        role="hotline",
        organisation="Partner Hotline FR",
        abuse_email="abuse@hosting.example",
        channel="email",
        webhook=None,
        send_window=None,
    )
    with session_factory() as s, s.begin():
        case = open_attributed(s, "http://abroad.example.org/p")
        n = notices.queue_notice(
            s,
            contact=partner,
            role="hotline",
            kind="referral",
            cases=[case],
            ladder_step=0,
            settings=settings,
            now=T0,
        )
        nid, serial = n.id, n.serial
        record = n.record["urls"][0]
        assert record["urlString"] == "http://abroad.example.org/p"
        assert record["hostingCountryCode"] == "DE" and record["hostingIpAddress"] == "192.0.2.10"
        assert record["hostingOrganization"]["autonomousSystemNumber"] == 64500
        assert record["assessment"]["classification"] == "National"
        assert record["hotlineReference"] == f"{serial}/1"
    assert notices.deliver(session_factory, nid, settings, now=T0) == "sent"
    body = smtp.received[0].message.get_content()
    assert f"[{serial}] Referral of 1 URL" in smtp.received[0].message["Subject"]
    assert '"urlString": "http://abroad.example.org/p"' in body
    assert not smtp.received[0].message.is_multipart()
