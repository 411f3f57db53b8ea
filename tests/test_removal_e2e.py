"""The removal loop end to end (issue 13, "Done when"): a confirmed URL goes, untouched by hand,
through attribution, evidence, notice, re-notice, escalation and removal, and on through
reappearance and a move, driven only by the scheduler's jobs on a frozen clock advanced in
steps.

Everything is real and local: a web site on 127.0.0.1 (and 127.0.0.2, "another country")
serving a benign generated picture, an aiosmtpd relay on 127.0.0.1 receiving the notices, a
tiny ip2asn data set and provider directory imported through the hosting code, the job queue
with its workers. SQLite and PostgreSQL.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from test_notices import SmtpSink
from tipline.audit import log as audit
from tipline.net.fetch import FetchSettings
from tipline.removal import cases, scheduler
from tipline.removal.hosting import import_ip2asn
from tipline.removal.notices import NoticeSettings, Sender
from tipline.removal.providers import parse_directory, replace_directory
from tipline.removal.scheduler import LadderStep, RemovalConfig
from tipline.store.case_tables import CaseRow, NoticeRow, RecheckRow
from tipline.store.jobs import JobQueue
from tipline.store.media import Keyring, ensure_key_file
from tipline.store.tables import Item, Job, Report, ReportItem

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # Monday
HOURS = timedelta(hours=1)
DAY = timedelta(days=1)
SITE_HOST = "shop.example"


def picture(seed: int) -> bytes:
    """A benign generated picture (random colour cells, upscaled)."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(cells).resize((256, 256), Image.Resampling.BICUBIC).save(out, "PNG")
    return out.getvalue()


PICTURE = picture(7)
PAGE = b'<html><body><h1>Gallery</h1><img src="/img/p.png"></body></html>'
REMOVED_PAGE = b"<html><body><h1>This content has been removed</h1></body></html>"


class Site:
    """A web server on one loopback address whose behaviour the test switches."""

    def __init__(self, address: str, port: int = 0) -> None:
        site = self
        self.mode = "serve"  # serve | gone | soft404 | slow
        self.hits = 0
        self.slow_started = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                site.hits += 1
                if site.mode == "slow":
                    site.slow_started.set()
                    time.sleep(30)
                if site.mode == "gone":
                    return self._send(404, b"not found", "text/plain")
                if self.path.startswith("/img/p.png"):
                    if site.mode == "soft404":
                        return self._send(404, b"", "text/plain")
                    return self._send(200, PICTURE, "image/png")
                if site.mode == "soft404":
                    return self._send(200, REMOVED_PAGE, "text/html")
                return self._send(200, PAGE, "text/html")

            def _send(self, status: int, body: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((address, port), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now


@dataclass
class World:
    factory: sessionmaker[Session]
    engine: Engine
    queue: JobQueue
    clock: Clock
    smtp: SmtpSink
    site: Site
    mirror: Site
    config: RemovalConfig
    address: dict[str, str] = field(default_factory=lambda: {SITE_HOST: "127.0.0.1"})

    @property
    def url(self) -> str:
        return f"http://{SITE_HOST}:{self.site.port}/gallery.html"

    def run_jobs(self, limit: int = 200) -> list[str]:
        """Run every due job (the workers' loop, without threads)."""
        ran: list[str] = []
        while len(ran) < limit:
            job = self.queue.run_one("worker-1", session_factory=self.factory, heartbeat=False)
            if job is None:
                return ran
            ran.append(job.kind)
        raise AssertionError(f"jobs never ran dry: {ran[-10:]}")

    def advance(self, delta: timedelta) -> list[str]:
        self.clock.now += delta
        return self.run_jobs()

    def case(self) -> CaseRow:
        with self.factory() as s:
            row = s.scalar(select(CaseRow).order_by(CaseRow.id.desc()).limit(1))
            assert row is not None
            return row

    def notices(self) -> list[NoticeRow]:
        with self.factory() as s:
            return list(s.scalars(select(NoticeRow).order_by(NoticeRow.id)))


IP2ASN = (
    "127.0.0.1\t127.0.0.1\t64500\tDE\tEXAMPLE-HOST-DE\n"
    "127.0.0.2\t127.0.0.2\t64501\tFR\tEXAMPLE-HOST-FR\n"
)
DIRECTORY = """
[[provider]]
asn = 64500
organisation = "Example Host DE"
abuse_email = "abuse@host-de.example"

[[provider]]
domain = "shop.example"
role = "site_owner"
organisation = "Shop Operator"
abuse_email = "owner@shop.example"

[[provider]]
key = "country:FR"
role = "hotline"
organisation = "Partner Hotline FR"
abuse_email = "referrals@hotline-fr.example"
"""
LADDER = (LadderStep("host", 0), LadderStep("site_owner", 2), LadderStep("police", 5))


def make_world(session_factory: sessionmaker[Session], tmp: Path, smtp: SmtpSink) -> World:
    bind = session_factory().get_bind()
    assert isinstance(bind, Engine)
    clock = Clock()
    queue = JobQueue(bind, clock=clock, lease_seconds=120)
    site = Site("127.0.0.1")
    mirror = Site("127.0.0.2", site.port)  # the same content, "moved" to another country
    ensure_key_file(tmp / "media.key")
    keyring = Keyring.load(tmp / "media.key", {})
    world_address = {SITE_HOST: "127.0.0.1"}

    def fetch_resolve(host: str, port: int) -> list[str]:
        return [world_address[host]] if host in world_address else []

    fetch = FetchSettings.build(
        allow_networks=["127.0.0.0/8"],
        resolver=fetch_resolve,
        connect_timeout=2.0,
        read_timeout=5.0,
        total_timeout=10.0,
    )
    config = RemovalConfig(
        evidence_dir=tmp / "evidence",
        keyring=lambda: keyring,
        hotline_country="DE",
        recheck_hours=24,
        misses_to_remove=3,
        watch_days=30,
        ladder=LADDER,
        notices=NoticeSettings(
            sender=Sender(organisation="Example Hotline", email="reports@hotline.example"),
            smtp=smtp.settings(),
        ),
        fetch_settings=fetch,
        resolver=lambda host: fetch_resolve(host, 80),
        tick_seconds=3600,
        group_delay_seconds=0,
    )
    scheduler.configure(config)
    data = tmp / "ip2asn-v4.tsv"
    data.write_text(IP2ASN)
    with session_factory() as s, s.begin():
        import_ip2asn(s, data, version="2026-03-01")
        replace_directory(s, parse_directory(DIRECTORY.encode(), "providers.toml"))
    world = World(session_factory, bind, queue, clock, smtp, site, mirror, config, world_address)
    return world


@pytest.fixture
def world(
    session_factory: sessionmaker[Session], tmp_path: Path, smtp: SmtpSink
) -> Iterator[World]:
    w = make_world(session_factory, tmp_path, smtp)
    try:
        yield w
    finally:
        scheduler.configure(None)
        w.site.close()
        w.mirror.close()


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    sink.start()
    try:
        yield sink
    finally:
        sink.stop()


GRADE = {
    "values": {"uk_category": "A", "ncmec_category": "A1"},
    "label": "uk_category:A ncmec_category:A1",
    "actionable": True,
    "taxonomy": "tipline-default",
}


def confirmed_report(w: World, url: str, *, sha: str | None = None) -> tuple[int, int]:
    """A report whose URL was fetched and whose item analysts confirmed (what grading leaves)."""
    with w.factory() as s, s.begin():
        report = Report(
            reference=f"TL-2026-{hashlib.sha256(url.encode()).hexdigest()[:8]}",
            source="public_form",
            urls=[url],
            submitted_at=w.clock.now - 6 * HOURS,
            status="closed",
        )
        item = Item(
            sha256=sha or hashlib.sha256(PICTURE).hexdigest(),
            media_type="image/png",
            size=len(PICTURE),
            status="confirmed",
            grade=GRADE,
            graded_at=w.clock.now - HOURS,
        )
        s.add_all([report, item])
        s.flush()
        s.add(ReportItem(report_id=report.id, item_id=item.id, source_url=url))
        return report.id, item.id


def test_confirmed_url_to_removal_reappearance_and_move(world: World) -> None:
    w = world
    received = w.smtp.received
    report_id, item_id = confirmed_report(w, w.url)
    scheduler.start(w.queue, w.config)

    # day 0: intake, attribution, evidence, first notice to the host
    kinds = w.run_jobs()
    assert kinds[0] == scheduler.TICK_KIND and scheduler.STEP_KIND in kinds
    case = w.case()
    assert (case.report_id, case.item_id) == (report_id, item_id)
    assert case.url == w.url and case.state == "notified"
    assert (case.asn, case.country, case.routing) == (64500, "DE", "in_country")
    assert case.provider_name == "Example Host DE"
    assert case.attribution["datasets"] == [{"name": "ip2asn-v4", "version": "2026-03-01"}]
    assert case.evidence_sha256 and case.first_notice_at == T0
    assert case.reported_at == T0 - 6 * HOURS and case.confirmed_at == T0 - HOURS
    assert len(received) == 1
    first = received[0].message
    assert first["To"] == "abuse@host-de.example" and w.url in first.get_content()
    assert not first.is_multipart()

    # nothing happens before the re-check is due
    assert scheduler.STEP_KIND not in w.advance(12 * HOURS)
    assert len(received) == 1

    # day 1: still online -> re-notice (a reminder) to the host
    w.advance(12 * HOURS)
    case = w.case()
    assert case.state == "notified" and case.notice_count == 2
    assert len(received) == 2 and "Reminder 1" in received[1].message["Subject"]
    assert received[1].message["To"] == "abuse@host-de.example"

    # day 2: still online, 2 notices sent -> escalated to the site owner
    w.advance(DAY)
    case = w.case()
    assert case.state == "escalated" and case.escalation_level == 1
    assert len(received) == 3 and received[2].message["To"] == "owner@shop.example"

    # days 3-5: 404, a soft-404 (200 with a "removed" page), 404: three misses -> removed
    w.site.mode = "gone"
    w.advance(DAY)
    assert w.case().consecutive_misses == 1 and w.case().state == "escalated"
    w.site.mode = "soft404"
    w.advance(DAY)
    assert w.case().consecutive_misses == 2 and w.case().state == "escalated"
    w.site.mode = "gone"
    w.advance(DAY)
    case = w.case()
    assert case.state == "removed" and case.removed_at == T0 + 5 * DAY
    assert len(received) == 3  # no notice about removed content

    # day 6: still gone, watched; day 7: back -> reappeared, back on the ladder
    w.advance(DAY)
    assert w.case().state == "removed"
    w.site.mode = "serve"
    w.advance(DAY)
    case = w.case()
    assert case.state == "escalated" and case.reappeared_at == T0 + 7 * DAY
    assert len(received) == 4 and w.url in received[3].message.get_content()

    # day 8: the host moved to another country -> moved, stops, waits for an analyst
    w.address[SITE_HOST] = "127.0.0.2"
    w.advance(DAY)
    case = w.case()
    assert case.state == "moved" and case.next_action == "manual"
    assert case.flag and "AS64500/DE to AS64501/FR" in case.flag
    w.advance(DAY)
    w.advance(DAY)
    assert w.case().state == "moved" and len(received) == 4

    # every notice went out exactly once, each with its own serial
    serials = [r.message["X-Tipline-Notice"] for r in received]
    assert len(set(serials)) == 4
    assert [n.state for n in w.notices()] == ["sent"] * 4
    with w.factory() as s:
        events = [(e.from_state, e.to_state) for e in cases.case_events(s, case.id)]
        assert events == [
            (None, "confirmed"),
            ("confirmed", "evidence_captured"),
            ("evidence_captured", "notified"),
            ("notified", "notified"),
            ("notified", "escalated"),
            ("escalated", "removed"),
            ("removed", "reappeared"),
            ("reappeared", "escalated"),
            ("escalated", "moved"),
        ]
        outcomes = [r.outcome for r in s.scalars(select(RecheckRow).order_by(RecheckRow.id))]
        assert outcomes == ["online", "online", "miss", "miss", "miss", "miss", "online", "online"]
        assert audit.verify(s).ok
        dead = s.scalar(select(func.count()).select_from(Job).where(Job.status != "done"))
        assert dead == 1  # only the next tick, waiting


def test_abroad_is_referred_to_partner_hotline(world: World) -> None:
    w = world
    w.address[SITE_HOST] = "127.0.0.2"  # hosted in FR; the hotline is in DE
    confirmed_report(w, f"http://{SITE_HOST}:{w.site.port}/abroad.html")
    scheduler.start(w.queue, w.config)
    w.run_jobs()
    case = w.case()
    assert case.routing == "abroad" and case.country == "FR" and case.state == "notified"
    (got,) = w.smtp.received
    assert got.message["To"] == "referrals@hotline-fr.example"
    assert "Referral of 1 URL hosted in FR" in got.message["Subject"]
    body = got.message.get_content()
    assert '"hostingCountryCode": "FR"' in body and '"autonomousSystemNumber": 64501' in body


# the DE host reads its mail only from 10:00 UTC on weekdays (T0 is Monday 08:00)
WINDOWED_DIRECTORY = DIRECTORY.replace(
    'abuse_email = "abuse@host-de.example"',
    'abuse_email = "abuse@host-de.example"\nsend_window = "Mon-Fri 10:00-17:00 UTC"',
)


def _windowed(w: World) -> None:
    with w.factory() as s, s.begin():
        replace_directory(s, parse_directory(WINDOWED_DIRECTORY.encode(), "providers.toml"))


def test_host_moved_while_the_notice_waited_is_rerouted(world: World) -> None:
    """Re-attribution just before a notice goes out (issue 13 item 1): the notice waits for
    the host's send window, the site moves to another country meanwhile; the old host gets
    nothing, the case is recorded as moved and re-routed to the partner hotline."""
    w = world
    _windowed(w)
    confirmed_report(w, w.url)
    scheduler.start(w.queue, w.config)
    w.run_jobs()
    (waiting,) = w.notices()
    assert waiting.state == "queued" and waiting.send_after == T0 + 2 * HOURS
    assert waiting.address == "abuse@host-de.example" and w.smtp.received == []
    w.address[SITE_HOST] = "127.0.0.2"  # the resolver now answers with the FR address
    w.advance(2 * HOURS)  # 10:00: the window opens, the delivery re-attributes first
    old = w.notices()[0]
    assert old.state == "failed" and old.urls == [] and old.sent_at is None
    assert old.last_error and "withdrawn before it was sent" in old.last_error
    case = w.case()
    assert case.next_action == "prepare" and case.flag is None
    w.advance(HOURS)  # the next pass captures evidence at the new host and refers it
    case = w.case()
    assert (case.state, case.country, case.asn, case.routing) == ("notified", "FR", 64501, "abroad")
    assert case.notice_count == 1 and case.first_notice_at == T0 + 3 * HOURS
    (got,) = w.smtp.received
    assert got.message["To"] == "referrals@hotline-fr.example"
    assert '"hostingCountryCode": "FR"' in got.message.get_content()
    w.advance(HOURS)
    assert len(w.smtp.received) == 1  # nothing ever goes to the old host
    with w.factory() as s:
        events = [(e.from_state, e.to_state) for e in cases.case_events(s, case.id)]
        assert events == [
            (None, "confirmed"),
            ("confirmed", "evidence_captured"),
            ("evidence_captured", "notified"),
            ("notified", "moved"),
            ("moved", "moved"),  # re-routed (resume)
            ("moved", "evidence_captured"),
            ("evidence_captured", "notified"),
        ]
        moved = cases.case_events(s, case.id)[3].details
        assert "AS64500/DE to AS64501/FR" in moved["reason"]
        withdrawn = audit_events(s, "notice.withdrawn")
        assert [e.details["serials"] for e in withdrawn] == [[old.serial]]
        assert audit.verify(s).ok


def test_failed_reattribution_keeps_the_planned_notice(world: World) -> None:
    """At send time DNS answers nothing: the known hosting stands and the notice goes out."""
    w = world
    _windowed(w)
    confirmed_report(w, w.url)
    scheduler.start(w.queue, w.config)
    w.run_jobs()
    del w.address[SITE_HOST]
    w.advance(2 * HOURS)
    (got,) = w.smtp.received
    assert got.message["To"] == "abuse@host-de.example"
    case = w.case()
    assert (case.state, case.country, case.asn) == ("notified", "DE", 64500)
    assert w.notices()[0].state == "sent"


def audit_events(s: Session, action: str) -> list[Any]:
    from tipline.store.tables import AuditEvent

    return list(s.scalars(select(AuditEvent).where(AuditEvent.action == action)))


def test_no_contact_and_bad_urls_are_flagged_not_dropped(world: World) -> None:
    w = world
    with w.factory() as s, s.begin():
        replace_directory(s, [])  # nobody to tell
    confirmed_report(w, w.url)
    confirmed_report(w, "javascript:alert(1)", sha="1" * 64)
    confirmed_report(w, "http://exa mple.org/x", sha="2" * 64)
    scheduler.start(w.queue, w.config)
    w.run_jobs()
    case = w.case()
    assert case.state == "notified" and case.flag and "must be sent by hand" in case.flag
    (notice,) = w.notices()
    assert notice.state == "manual_pending" and notice.urls == [case.url]
    assert w.smtp.received == []
    with w.factory() as s:
        from tipline.store.case_tables import CaseIntake

        intake = {i.url: i for i in s.scalars(select(CaseIntake))}
        assert intake["javascript:alert(1)"].case_id is None
        assert "unsupported scheme" in (intake["javascript:alert(1)"].error or "")
        assert intake["http://exa mple.org/x"].error
        assert s.scalar(select(func.count()).select_from(CaseRow)) == 1
    # a second pass does not look at them again
    w.advance(HOURS)
    with w.factory() as s:
        assert s.scalar(select(func.count()).select_from(CaseRow)) == 1


def test_hold_blocks_notices_until_it_expires(world: World) -> None:
    w = world
    confirmed_report(w, w.url)
    with w.factory() as s, s.begin():
        scheduler.intake(s, w.clock.now)
        case = s.scalar(select(CaseRow))
        assert case is not None
        cases.hold(
            s,
            case.id,
            agency="LKA",
            until=T0 + 2 * DAY,
            by="user:sen",
            role="senior_analyst",
            now=T0,
        )
    scheduler.start(w.queue, w.config)
    for _ in range(3):
        w.advance(12 * HOURS)
    assert w.case().state == "held" and w.smtp.received == [] and w.site.hits == 0
    w.advance(12 * HOURS)  # T0 + 2 days: the tick releases it and the case goes on
    case = w.case()
    assert case.state == "notified" and len(w.smtp.received) == 1
    assert case.first_notice_at == T0 + 2 * DAY


def test_smtp_down_during_the_loop_is_retried_once(world: World) -> None:
    w = world
    confirmed_report(w, w.url)
    w.smtp.stop()
    scheduler.start(w.queue, w.config)
    w.run_jobs()
    (notice,) = w.notices()
    assert notice.state == "queued" and notice.attempts == 1 and w.case().first_notice_at is None
    w.advance(2 * HOURS)  # back-off over, but the relay is still down
    assert w.notices()[0].attempts == 2
    w.smtp.start()
    w.advance(HOURS)
    assert w.notices()[0].state == "sent" and len(w.smtp.received) == 1
    w.advance(HOURS)
    assert len(w.smtp.received) == 1


def test_stale_step_does_nothing_twice(world: World) -> None:
    """A step job that runs again (its worker lost the lease after committing) is stale."""
    w = world
    confirmed_report(w, w.url)
    with w.factory() as s, s.begin():
        scheduler.intake(s, w.clock.now)
        case = s.scalar(select(CaseRow))
        assert case is not None
        case_id, version = case.id, case.version
    now = w.clock.now
    assert scheduler.step_case(w.factory, case_id, version, w.config, now) == "evidence"
    assert scheduler.step_case(w.factory, case_id, version, w.config, now) == "stale"
    scheduler.group_notices(w.factory, w.config, now)
    scheduler.group_notices(w.factory, w.config, now)
    assert len(w.notices()) == 1


WORKER = textwrap.dedent(
    """
    import sys
    from datetime import datetime
    from pathlib import Path

    from tipline.net.fetch import FetchSettings
    from tipline.removal import scheduler
    from tipline.store.base import make_engine, session_factory
    from tipline.store.jobs import JobQueue
    from tipline.store.media import Keyring

    url, when, evidence, address, key_file = sys.argv[1:6]
    now = datetime.fromisoformat(when)
    engine = make_engine(url)
    fetch = FetchSettings.build(
        allow_networks=["127.0.0.0/8"], resolver=lambda host, port: [address]
    )
    scheduler.configure(
        scheduler.RemovalConfig(
            evidence_dir=Path(evidence),
            keyring=lambda: Keyring.load(Path(key_file), {}),
            fetch_settings=fetch,
            resolver=lambda host: [address], hotline_country="DE", group_delay_seconds=0,
        )
    )
    queue = JobQueue(engine, clock=lambda: now, lease_seconds=120)
    print("running", flush=True)
    queue.run_one("doomed-worker", [scheduler.STEP_KIND], heartbeat=False)
    """
)


@pytest.mark.slow
def test_recheck_worker_killed_mid_run(world: World, tmp_path: Path) -> None:
    """A worker SIGKILLed while re-checking: its lease expires, the job runs again, and the
    notice goes out once."""
    w = world
    confirmed_report(w, w.url)
    scheduler.start(w.queue, w.config)
    w.run_jobs()
    assert len(w.smtp.received) == 1
    w.clock.now += DAY
    with w.factory() as s, s.begin():
        scheduler.enqueue_due(s, w.queue, w.clock.now, limit=10)
    w.site.mode = "slow"
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    proc = subprocess.Popen(
        [
            sys.executable,
            str(script),
            w.engine.url.render_as_string(hide_password=False),
            w.clock.now.isoformat(),
            str(w.config.evidence_dir),
            "127.0.0.1",
            str(tmp_path / "media.key"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert w.site.slow_started.wait(30), proc.stderr.read().decode() if proc.stderr else ""
        proc.kill()
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    with w.factory() as s:
        job = s.scalar(select(Job).where(Job.kind == scheduler.STEP_KIND, Job.status == "running"))
        assert job is not None and job.lease_owner == "doomed-worker"
    w.site.mode = "serve"
    w.clock.now += timedelta(minutes=1)
    assert scheduler.STEP_KIND not in w.run_jobs()  # the lease still holds it
    w.clock.now += timedelta(minutes=3)  # the lease has expired
    kinds = w.run_jobs()
    assert scheduler.STEP_KIND in kinds
    assert len(w.smtp.received) == 2 and w.case().notice_count == 2
    w.advance(HOURS)
    assert len(w.smtp.received) == 2
