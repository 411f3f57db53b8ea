"""The report pipeline on both databases: a benign image flows from a report to a hashed,
matched, clustered and triaged item; every stage run twice has one effect; a worker that dies
after any commit (before marking its job done) loses nothing and duplicates nothing.

All images are benign (scikit-image sample photographs, procedural noise); the "known" bank
holds their hashes, labelled DEMO-benign-stand-in."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from conftest import encode, noise_image, photo
from tipline import pipeline
from tipline.banks.bank import Bank, Entry
from tipline.index.bank_index import BankIndex
from tipline.net.fetch import FetchSettings
from tipline.pipeline import FollowUp, PipelineConfig, run_stage, stages
from tipline.scan.hashing import HashOptions, hash_bytes
from tipline.service.intake import IntakeContext, IntakeSettings, NewReport, create_reports
from tipline.store.jobs import JobContext, JobQueue, handlers
from tipline.store.tables import (
    BankEntryRow,
    BankRow,
    Cluster,
    Item,
    Job,
    Report,
    ReportItem,
    Upload,
    utcnow,
)

KNOWN = encode(photo("coffee", (320, 240)), "JPEG", quality=90)
#: the same photograph re-encoded smaller: another file (another SHA-256), a near PDQ
KNOWN_COPY = encode(photo("coffee", (300, 225)), "PNG")
UNKNOWN = encode(noise_image(7, 256, 192), "PNG")
BANK = "DEMO_BENIGN_STAND_IN"


def _record(data: bytes) -> Any:
    return hash_bytes(data, "x", HashOptions(provenance=False))


@pytest.fixture
def matcher() -> BankIndex:
    known = _record(KNOWN)
    entries = [
        Entry(BANK, "pdq", known.pdq, label="DEMO-benign-stand-in", id=1),
        Entry(BANK, "sha256", known.sha256, label="DEMO-benign-stand-in", id=2),
    ]
    return BankIndex.build([Bank(BANK, "alert")], entries)


@pytest.fixture
def cfg(matcher: BankIndex) -> Iterator[PipelineConfig]:
    c = PipelineConfig(
        match=matcher.match,
        media_store=None,
        fetch_settings=FetchSettings.build(allow_networks=["127.0.0.1/32"]),
    )
    pipeline.configure(c)
    yield c
    pipeline.configure(None)


def _submit(
    engine: Engine, sf: sessionmaker[Session], uploads: list[bytes], urls: list[str] | None = None
) -> int:
    ctx = IntakeContext(sf, JobQueue(engine), IntakeSettings(secret=b"s"))
    new = NewReport(urls=urls or [], uploads=[(f"f{i}.img", d) for i, d in enumerate(uploads)])
    [(report, _)] = create_reports(ctx, [new], "partner_api")
    return report.id


def _counts(sf: sessionmaker[Session]) -> dict[str, int]:
    with sf() as s:
        return {
            m.__tablename__: int(s.scalar(select(func.count()).select_from(m)) or 0)
            for m in (Item, ReportItem, Cluster, Job, Upload, Report)
        }


def _drain(queue: JobQueue, sf: sessionmaker[Session], limit: int = 100) -> int:
    n = 0
    while queue.run_one("test-worker", session_factory=sf, heartbeat=False) is not None:
        n += 1
        assert n < limit
    return n


def test_upload_flows_to_matched_item(
    engine: Engine, session_factory: sessionmaker[Session], cfg: PipelineConfig
) -> None:
    report_id = _submit(engine, session_factory, [KNOWN_COPY])
    queue = JobQueue(engine)
    _drain(queue, session_factory)
    assert {j.status for j in queue.list()} == {"done"}
    kinds = sorted(j.kind for j in queue.list())
    assert kinds == ["analyse", "cluster", "fetch", "ingest", "triage", "triage"]
    with session_factory() as s:
        item = s.scalars(select(Item)).one()
        assert item.sha256 == _record(KNOWN_COPY).sha256
        assert item.pdq and item.md5 and item.sha1
        assert item.media_type == "image/png"
        assert item.provenance is not None  # provenance was read
        assert item.status == "matched"
        [m] = [m for m in item.matches if m["signal_type"] == "pdq"]
        assert m["bank"] == BANK and m["distance"] <= 31
        assert item.cluster_id is not None
        assert item.priority is not None and f"alert match in {BANK}" in item.priority_reason
        report = s.get(Report, report_id)
        assert report is not None
        assert report.status == "triaged"
        assert report.priority == item.priority
        assert "highest item" in report.priority_reason
        upload = s.scalars(select(Upload)).one()
        assert upload.data is None  # hash-only: the bytes are gone once analysed
        cluster = s.get(Cluster, item.cluster_id)
        assert cluster is not None and cluster.priority is not None


def test_near_duplicates_share_a_cluster_and_unknown_ranks_first(
    engine: Engine, session_factory: sessionmaker[Session], cfg: PipelineConfig
) -> None:
    _submit(engine, session_factory, [KNOWN, KNOWN_COPY, UNKNOWN, KNOWN])  # KNOWN twice
    _submit(engine, session_factory, [KNOWN])  # the same file again: the same item
    _drain(JobQueue(engine), session_factory)
    with session_factory() as s:
        items = {i.sha256: i for i in s.scalars(select(Item))}
        assert len(items) == 3
        known = items[_record(KNOWN).sha256]
        copy = items[_record(KNOWN_COPY).sha256]
        unknown = items[_record(UNKNOWN).sha256]
        assert known.cluster_id == copy.cluster_id != unknown.cluster_id
        assert s.scalar(select(func.count()).select_from(ReportItem)) == 4
        assert "unknown material" in unknown.priority_reason
        cluster = s.get(Cluster, known.cluster_id)
        assert cluster is not None and cluster.size == 2


def test_auto_confirm_bank_spares_analyst(
    engine: Engine, session_factory: sessionmaker[Session], cfg: PipelineConfig
) -> None:
    with session_factory() as s, s.begin():
        s.add(BankRow(name=BANK, role="alert", auto_confirm=True, created_at=0.0))
    report_id = _submit(engine, session_factory, [KNOWN])
    _drain(JobQueue(engine), session_factory)
    with session_factory() as s:
        item = s.scalars(select(Item)).one()
        assert item.status == "auto_confirmed"
        assert item.priority is None
        assert "auto-confirmed" in item.priority_reason and BANK in item.priority_reason
        report = s.get(Report, report_id)
        assert report is not None and report.priority is None


def _stage_twice(
    sf: sessionmaker[Session], queue: JobQueue, kind: str, payload: dict[str, Any], c: Any
) -> list[FollowUp]:
    def enqueue(s: Session, f: FollowUp) -> None:
        queue.enqueue(f.kind, f.payload, dedupe_key=f.dedupe_key, session=s)

    results = []
    snapshots = []
    for _ in range(2):
        with sf() as s, s.begin():
            results.append(run_stage(s, kind, payload, c, enqueue))
        snapshots.append(_counts(sf))
    assert results[0] == results[1], kind
    assert snapshots[0] == snapshots[1], kind
    return results[0]


def test_every_stage_twice_has_one_effect(
    engine: Engine, session_factory: sessionmaker[Session], cfg: PipelineConfig
) -> None:
    report_id = _submit(engine, session_factory, [KNOWN_COPY])
    queue = JobQueue(engine)
    todo = [FollowUp("ingest", {"report_id": report_id}, f"ingest:{report_id}")]
    seen = set()
    while todo:
        f = todo.pop(0)
        if f.dedupe_key in seen:
            continue
        seen.add(f.dedupe_key)
        todo.extend(_stage_twice(session_factory, queue, f.kind, f.payload, cfg))
    assert {k.split(":")[0] for k in seen} == set(pipeline.STAGES)
    c = _counts(session_factory)
    assert (c["items"], c["report_items"], c["clusters"], c["uploads"]) == (1, 1, 1, 1)
    with session_factory() as s:
        keys = list(s.scalars(select(Job.dedupe_key)))
        assert len(keys) == len(set(keys)) == len(seen)


def test_worker_dying_after_each_commit_loses_and_repeats_nothing(
    engine: Engine, session_factory: sessionmaker[Session], cfg: PipelineConfig
) -> None:
    """Simulates kill -9 between a handler's commit and ``complete``: the lease expires, the
    job is leased again and re-run. The end state equals an undisturbed run's."""
    _submit(engine, session_factory, [KNOWN_COPY, UNKNOWN])
    now = [utcnow()]
    queue = JobQueue(engine, lease_seconds=30, clock=lambda: now[0])
    registered = handlers()
    runs = 0
    while True:
        job = queue.lease("doomed-worker", list(pipeline.STAGES))
        if job is None:
            break
        ctx = JobContext(job, session_factory, queue, "doomed-worker")
        registered[job.kind](ctx)  # committed ... and the worker dies here
        now[0] += timedelta(seconds=31)  # its lease runs out
        again = queue.lease("next-worker", [job.kind])
        assert again is not None and again.id == job.id
        registered[again.kind](JobContext(again, session_factory, queue, "next-worker"))
        assert queue.complete(again)
        runs += 1
        assert runs < 50
    c = _counts(session_factory)
    assert (c["items"], c["report_items"], c["clusters"], c["uploads"]) == (2, 2, 2, 2)
    assert {j.status for j in queue.list()} == {"done"}
    with session_factory() as s:
        assert all(i.priority_reason for i in s.scalars(select(Item)))
        assert {r.status for r in s.scalars(select(Report))} == {"triaged"}


def test_crash_inside_a_stage_rolls_back_and_retries(
    engine: Engine,
    session_factory: sessionmaker[Session],
    cfg: PipelineConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A failure after the stage's writes but before its commit leaves no trace; the retry
    does the work once."""
    _submit(engine, session_factory, [UNKNOWN])
    now = [utcnow()]
    queue = JobQueue(engine, clock=lambda: now[0])
    real = stages.stage_analyse
    fail = [True]

    def flaky(s: Session, payload: dict[str, Any], c: PipelineConfig) -> list[FollowUp]:
        out = real(s, payload, c)
        s.flush()  # the item row was written ...
        if fail[0]:
            fail[0] = False
            raise RuntimeError("simulated crash before commit")
        return out

    monkeypatch.setitem(pipeline.STAGE_FUNCTIONS, "analyse", flaky)
    for _ in range(20):
        if queue.run_one("w", session_factory=session_factory, heartbeat=False) is None:
            now[0] += timedelta(hours=2)  # step over the retry backoff
            if queue.run_one("w", session_factory=session_factory, heartbeat=False) is None:
                break
    c = _counts(session_factory)
    assert (c["items"], c["report_items"], c["clusters"]) == (1, 1, 1)
    analyse = [j for j in queue.list() if j.kind == "analyse"]
    assert len(analyse) == 1 and analyse[0].attempts == 2 and analyse[0].status == "done"


# -- URLs through the safe fetcher ---------------------------------------------------------------


class _Media(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        body, ctype = (KNOWN, "image/jpeg") if self.path == "/img" else (b"<html></html>", "")
        self.send_response(200)
        self.send_header("Content-Type", ctype or "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def media_server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Media)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_reported_urls_fetched_safely(
    engine: Engine,
    session_factory: sessionmaker[Session],
    cfg: PipelineConfig,
    media_server: str,
) -> None:
    urls = [f"{media_server}/img", f"{media_server}/page", "http://169.254.169.254/latest/"]
    report_id = _submit(engine, session_factory, [], urls)
    queue = JobQueue(engine)
    _drain(queue, session_factory)
    fetches = {j.payload.get("url_index"): j for j in queue.list(kind="fetch")}
    assert fetches[0].status == "done"
    assert fetches[1].status == "failed" and "not_media" in (fetches[1].last_error or "")
    assert fetches[2].status == "failed"
    assert "blocked_address" in (fetches[2].last_error or "")
    with session_factory() as s:
        link = s.scalars(select(ReportItem)).one()
        assert link.report_id == report_id and link.source_url == urls[0]
        item = s.get(Item, link.item_id)
        assert item is not None and item.sha256 == _record(KNOWN).sha256
        assert any(m["signal_type"] == "sha256" for m in item.matches)
        report = s.get(Report, report_id)
        assert report is not None and report.status == "triaged"


# -- a real worker process, killed with SIGKILL ---------------------------------------------------


def _job_states(sf: sessionmaker[Session]) -> dict[str, int]:
    with sf() as s:
        rows = s.execute(select(Job.status, func.count()).group_by(Job.status)).all()
        return {str(k): int(v) for k, v in rows}


def _finished(states: dict[str, int]) -> bool:
    return not states.get("queued") and not states.get("running")


def test_kill_9_of_worker_process_loses_and_repeats_nothing(
    db_url: str, engine: Engine, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    """``tipline worker`` processes are SIGKILLed at arbitrary points (whenever a couple more
    jobs have finished, so mid-job is likely); new ones take over once the leases expire. In
    the end every accepted report is processed once in effect."""
    sf = session_factory
    known = _record(KNOWN)
    with sf() as s, s.begin():
        bank = BankRow(name=BANK, role="alert", created_at=time.time())
        s.add(bank)
        s.flush()
        s.add(
            BankEntryRow(
                bank_id=bank.id,
                signal_type="sha256",
                signal=known.sha256,
                label="DEMO-benign-stand-in",
                added_at=time.time(),
            )
        )
    images = [encode(noise_image(100 + i, 128, 96), "PNG") for i in range(5)]
    report_ids = [_submit(engine, sf, [img]) for img in images]
    report_ids.append(_submit(engine, sf, [KNOWN, images[0]]))
    env = {
        **os.environ,
        "TIPLINE_DATA_DIR": str(tmp_path / "data"),
        "TIPLINE_DATABASE_URL": db_url,
        "TIPLINE_MEDIA_MODE": "hash-only",
        "TIPLINE_FETCH_URLS": "0",
        # no removal tick chain: the test wants every job done, and a tick re-enqueues itself
        "TIPLINE_REMOVAL_AUTOSTART": "false",
    }
    cmd = [sys.executable, "-m", "tipline", "worker", "-c", "1", "--lease-seconds", "1"]
    cmd += ["--poll-interval", "0.05"]
    log = (tmp_path / "worker.log").open("wb")
    deadline = time.monotonic() + 240
    kills = 0
    while kills < 3 and not _finished(_job_states(sf)) and time.monotonic() < deadline:
        before = _job_states(sf).get("done", 0)
        proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=log, stderr=log)
        try:
            while time.monotonic() < deadline:
                states = _job_states(sf)
                if states.get("done", 0) >= before + 2 or _finished(states):
                    break
                time.sleep(0.02)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)  # the worker's own process group only
            proc.wait()
        kills += 1
    while not _finished(_job_states(sf)) and time.monotonic() < deadline:
        time.sleep(1.1)  # let the killed workers' leases expire
        subprocess.run([*cmd, "--drain"], env=env, stdout=log, stderr=log, timeout=200, check=False)
    log.close()
    states = _job_states(sf)
    assert set(states) == {"done"}, (states, (tmp_path / "worker.log").read_text()[-3000:])
    c = _counts(sf)
    assert (c["items"], c["report_items"], c["clusters"], c["uploads"]) == (6, 7, 6, 7)
    with sf() as s:
        keys = list(s.scalars(select(Job.dedupe_key)))
        assert len(keys) == len(set(keys))
        reports = list(s.scalars(select(Report).where(Report.id.in_(report_ids))))
        assert len(reports) == 6 and {r.status for r in reports} == {"triaged"}
        item = s.scalars(select(Item).where(Item.sha256 == known.sha256)).one()
        assert [m["bank"] for m in item.matches] == [BANK]
        assert all(i.priority_reason for i in s.scalars(select(Item)))
        assert all(u.data is None for u in s.scalars(select(Upload)))


def test_report_is_processing_until_its_uploads_are_analysed(
    engine: Engine, session_factory: sessionmaker[Session], cfg: PipelineConfig
) -> None:
    report_id = _submit(engine, session_factory, [UNKNOWN])
    queue = JobQueue(engine)

    def enqueue(s: Session, f: FollowUp) -> None:
        queue.enqueue(f.kind, f.payload, dedupe_key=f.dedupe_key, session=s)

    with session_factory() as s, s.begin():
        run_stage(s, "ingest", {"report_id": report_id}, cfg, enqueue)
    with session_factory() as s, s.begin():
        run_stage(s, "triage", {"report_id": report_id}, cfg, enqueue)
    with session_factory() as s:
        report = s.get(Report, report_id)
        assert report is not None and report.status == "processing"
        assert 30.0 <= (report.priority or 0) < 30.5  # unknown_base + partner report + age
        assert "no media items analysed yet" in report.priority_reason
    _drain(queue, session_factory)
    with session_factory() as s:
        report = s.get(Report, report_id)
        assert report is not None and report.status == "triaged"
        assert "highest item" in report.priority_reason


def test_concurrent_cluster_stages_share_one_cluster(
    db_url: str, session_factory: sessionmaker[Session], cfg: PipelineConfig
) -> None:
    """Two workers placing near-duplicates at the same moment: the second waits for the
    first's cluster instead of starting its own (PostgreSQL advisory lock, SQLite write lock)."""
    pdq = "f" * 64
    near = "e" + "f" * 63  # 1 bit away
    with session_factory() as s, s.begin():
        first = Item(sha256="1" * 64, pdq=pdq, pdq_quality=100, status="hashed")
        second = Item(sha256="2" * 64, pdq=near, pdq_quality=100, status="hashed")
        s.add_all([first, second])
        s.flush()
        ids = (first.id, second.id)
    holder = session_factory()
    holder.begin()
    stages.stage_cluster(holder, {"item_id": ids[0]}, cfg)  # holds the lock, not committed
    done = threading.Event()

    def other() -> None:
        with session_factory() as s, s.begin():
            stages.stage_cluster(s, {"item_id": ids[1]}, cfg)
        done.set()

    t = threading.Thread(target=other)
    t.start()
    assert not done.wait(0.5)  # blocked behind the first assignment
    holder.commit()
    holder.close()
    t.join(30)
    assert done.is_set()
    with session_factory() as s:
        a, b = (s.get(Item, i) for i in ids)
        assert a is not None and b is not None
        assert a.cluster_id is not None and a.cluster_id == b.cluster_id
        assert s.scalar(select(func.count()).select_from(Cluster)) == 1


def _zip(members: dict[str, bytes]) -> bytes:
    import io
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return out.getvalue()


def test_uploaded_archive_members_become_items_and_the_archive_a_container(
    engine: Engine, session_factory: sessionmaker[Session], cfg: PipelineConfig
) -> None:
    other = encode(noise_image(77), "PNG")
    inner = _zip({"deep/other.png": other})
    archive = _zip({"a/known.png": KNOWN_COPY, "nested.zip": inner, "empty.txt": b""})
    report_id = _submit(engine, session_factory, [archive])
    queue = JobQueue(engine)
    _drain(queue, session_factory)
    assert {j.status for j in queue.list()} == {"done"}
    with session_factory() as s:
        items = {i.sha256: i for i in s.scalars(select(Item))}
        container = items[_record(archive).sha256]
        assert container.status == "container" and container.cluster_id is None
        assert "archive opened: 2 member(s)" in container.errors
        known = items[_record(KNOWN_COPY).sha256]
        assert known.status == "matched" and known.cluster_id is not None
        nested = items[_record(other).sha256]
        assert nested.status == "hashed" and nested.cluster_id is not None
        linked = set(s.scalars(select(ReportItem.item_id).where(ReportItem.report_id == report_id)))
        assert linked == {container.id, known.id, nested.id}
        names = sorted(u.filename for u in s.scalars(select(Upload)))
        assert names == ["f0.img", "f0.img!a/known.png", "f0.img!nested.zip!deep/other.png"]
        assert all(u.data is None for u in s.scalars(select(Upload)))
        report = s.get(Report, report_id)
        assert report is not None and report.status == "triaged"
    # running the archive's analyse job again changes nothing
    with session_factory() as s, s.begin():
        up = s.scalars(select(Upload).where(Upload.filename == "f0.img")).one()
        assert stages.stage_analyse(s, {"report_id": report_id, "upload_id": up.id}, cfg) == []


def test_zip_bomb_upload_is_cut_off_and_reported_on_the_container(
    engine: Engine, session_factory: sessionmaker[Session], cfg: PipelineConfig
) -> None:
    bomb = _zip({"zeros.bin": bytes(50 * 1024 * 1024), "ok.png": KNOWN_COPY})
    _submit(engine, session_factory, [bomb])
    _drain(JobQueue(engine), session_factory)
    with session_factory() as s:
        container = s.scalars(select(Item).where(Item.status == "container")).one()
        assert any("ratio" in e or "limit" in e for e in container.errors), container.errors
        assert s.scalar(select(func.count()).select_from(Item).where(Item.status == "matched"))


def test_material_graded_not_illegal_is_not_queued_again(
    engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    """An exact copy of a file graded not illegal is auto-dismissed; a similar one is not."""
    benign = _record(KNOWN)
    bank = "TIPLINE_NOT_ILLEGAL"
    matcher = BankIndex.build(
        [Bank(bank, "ignore")],
        [Entry(bank, "sha256", benign.sha256, id=1), Entry(bank, "pdq", benign.pdq, id=2)],
    )
    pipeline.configure(PipelineConfig(match=matcher.match))
    try:
        with session_factory() as s, s.begin():
            s.add(BankRow(name=bank, role="ignore", auto_confirm=True, created_at=0.0))
        _submit(engine, session_factory, [KNOWN, KNOWN_COPY])  # the same file, a resized copy
        _drain(JobQueue(engine), session_factory)
    finally:
        pipeline.configure(None)
    with session_factory() as s:
        same = s.scalars(select(Item).where(Item.sha256 == benign.sha256)).one()
        assert same.status == "auto_dismissed" and same.priority is None
        assert "graded not illegal" in same.priority_reason
        copy = s.scalars(select(Item).where(Item.sha256 != benign.sha256)).one()
        assert copy.status == "hashed" and copy.priority is not None
        assert "known benign" in copy.priority_reason


def test_an_upload_whose_name_disguises_it_keeps_the_warning(
    engine: Engine, session_factory: sessionmaker[Session], cfg: PipelineConfig
) -> None:
    ctx = IntakeContext(session_factory, JobQueue(engine), IntakeSettings(secret=b"s"))
    text = b"teapot-42 bluebird, nothing but words\n" * 30
    new = NewReport(urls=[], uploads=[("photo.jpg", text), ("honest.png", KNOWN_COPY)])
    create_reports(ctx, [new], "partner_api")
    _drain(JobQueue(engine), session_factory)
    with session_factory() as s:
        by_type = {i.media_type: i for i in s.scalars(select(Item))}
    assert by_type["text/plain"].warnings == ["name says image/jpeg, content is text/plain"]
    assert by_type["text/plain"].errors == []
    assert by_type["image/png"].warnings is None
