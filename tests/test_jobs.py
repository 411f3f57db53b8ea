"""The durable job queue and `tipline worker`, on SQLite and PostgreSQL (fixture ``engine``)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

import jobs_helpers
from tipline.cli.app import _register, app
from tipline.store.base import make_engine, transaction
from tipline.store.jobs import (
    JobError,
    JobQueue,
    backoff_seconds,
    handler_modules,
    load_handler_modules,
    register_handler,
    register_handler_modules,
)
from tipline.store.tables import Job

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def queue(engine: Engine, clock: Clock) -> JobQueue:
    return JobQueue(engine, lease_seconds=60, backoff_base=10, clock=clock, rng=random.Random(1))


@pytest.fixture
def effects(engine: Engine) -> Callable[[], dict[int, int]]:
    with engine.begin() as conn:
        conn.execute(text(jobs_helpers.EFFECTS_DDL))

    def read() -> dict[int, int]:
        with engine.connect() as conn:
            return {
                r[0]: r[1] for r in conn.execute(text("SELECT job_id, attempt FROM job_effects"))
            }

    return read


def test_enqueue_lease_complete(queue: JobQueue) -> None:
    jid = queue.enqueue("test.effect", {"n": 1})
    job = queue.lease("w1")
    assert job is not None and job.id == jid and job.attempts == 1
    assert job.payload == {"n": 1} and job.kind == "test.effect"
    assert queue.lease("w2") is None  # held by w1
    assert queue.get(jid).status == "running"  # type: ignore[union-attr]
    assert queue.complete(job)
    info = queue.get(jid)
    assert info is not None and info.status == "done" and info.lease_owner is None
    assert queue.lease("w2") is None
    assert queue.counts() == {"queued": 0, "running": 0, "done": 1, "failed": 0, "dead": 0}


def test_dedupe_key_makes_enqueue_idempotent(queue: JobQueue) -> None:
    a = queue.enqueue("test.effect", {"x": 1}, dedupe_key="hash:abc")
    b = queue.enqueue("test.effect", {"x": 2}, dedupe_key="hash:abc")
    c = queue.enqueue("test.effect", {"x": 3}, dedupe_key="hash:def")
    assert a == b != c
    assert len(queue.list()) == 2
    job = queue.lease("w")
    assert job is not None and queue.complete(job)
    # still deduped once done: re-running a stage does not enqueue its follow-up twice
    assert queue.enqueue("test.effect", dedupe_key="hash:abc") == a


def test_enqueue_in_caller_transaction(
    queue: JobQueue, session_factory: sessionmaker[Session]
) -> None:
    with pytest.raises(RuntimeError), transaction(session_factory) as s:
        queue.enqueue("test.effect", session=s)
        queue.enqueue("test.effect", dedupe_key="k", session=s)
        raise RuntimeError("report insert failed")
    assert queue.list() == []
    with transaction(session_factory) as s:
        jid = queue.enqueue("test.effect", session=s)
    assert [j.id for j in queue.list()] == [jid]


def test_bad_payloads_refused(queue: JobQueue) -> None:
    with pytest.raises(JobError, match="JSON object"):
        queue.enqueue("k", [1, 2])  # type: ignore[arg-type]
    with pytest.raises(JobError, match="plain JSON"):
        queue.enqueue("k", {"b": b"bytes"})
    with pytest.raises(JobError, match="plain JSON"):
        queue.enqueue("k", {"f": float("nan")})
    with pytest.raises(JobError, match="kind"):
        queue.enqueue("", {})
    assert queue.list() == []


def test_kinds_and_run_after(queue: JobQueue, clock: Clock) -> None:
    later = queue.enqueue("a", run_after=clock.now + timedelta(seconds=30))
    b = queue.enqueue("b")
    assert queue.lease("w", ["a"]) is None  # not due yet
    assert queue.lease("w", []) is None
    job = queue.lease("w", ["a", "b"])
    assert job is not None and job.id == b
    clock.advance(31)
    job = queue.lease("w", ["a"])
    assert job is not None and job.id == later


def test_expired_lease_is_released(queue: JobQueue, clock: Clock) -> None:
    jid = queue.enqueue("test.effect")
    first = queue.lease("dead-worker", lease_seconds=10)
    assert first is not None
    clock.advance(5)
    assert queue.lease("w2") is None
    clock.advance(6)
    second = queue.lease("w2")
    assert second is not None and second.id == jid and second.attempts == 2
    # the first worker lost its lease: it can neither complete, fail nor extend it
    assert not queue.complete(first)
    assert queue.fail(first, "late") == "lost"
    assert not queue.heartbeat(first)
    assert queue.heartbeat(second)
    assert queue.complete(second)
    assert queue.get(jid).status == "done"  # type: ignore[union-attr]


def test_heartbeat_keeps_the_lease(queue: JobQueue, clock: Clock) -> None:
    queue.enqueue("test.effect")
    job = queue.lease("w1", lease_seconds=10)
    assert job is not None
    for _ in range(5):
        clock.advance(8)
        assert queue.heartbeat(job, lease_seconds=10)
        assert queue.lease("w2") is None
    assert queue.complete(job)


def test_retries_with_backoff_then_dead_letter(queue: JobQueue, clock: Clock) -> None:
    jid = queue.enqueue("test.flaky", max_attempts=3)
    delays = []
    for attempt in (1, 2):
        job = queue.run_one("w", heartbeat=False)
        assert job is not None and job.attempts == attempt
        info = queue.get(jid)
        assert info is not None and info.status == "queued"
        assert info.last_error == f"RuntimeError: transient failure on attempt {attempt}"
        delay = (info.run_after - clock.now).total_seconds()
        # exponential with jitter: base * 2**(attempt-1) times a factor in [0.5, 1]
        assert 10 * 2 ** (attempt - 1) * 0.5 <= delay <= 10 * 2 ** (attempt - 1)
        delays.append(delay)
        assert queue.run_one("w", heartbeat=False) is None  # backing off
        clock.advance(delay)
    assert delays[1] > delays[0] * 0.99
    job = queue.run_one("w", heartbeat=False)
    assert job is not None and job.attempts == 3
    info = queue.get(jid)
    assert info is not None and info.status == "dead" and "attempt 3" in (info.last_error or "")
    clock.advance(10_000)
    assert queue.run_one("w", heartbeat=False) is None
    assert [j.id for j in queue.list(status="dead")] == [jid]

    # an operator requeues it; it succeeds on its next try
    assert queue.requeue([jid]) == 1
    assert queue.run_one("w", heartbeat=False) is not None
    assert queue.get(jid).status == "queued"  # type: ignore[union-attr]


def test_flaky_job_eventually_succeeds(queue: JobQueue, clock: Clock) -> None:
    jid = queue.enqueue("test.flaky", {"succeed_on": 2})
    assert queue.run_one("w", heartbeat=False) is not None
    clock.advance(3600)
    assert queue.run_one("w", heartbeat=False) is not None
    info = queue.get(jid)
    assert info is not None and info.status == "done" and info.attempts == 2


def test_permanent_error_fails_without_retry(queue: JobQueue, clock: Clock) -> None:
    jid = queue.enqueue("test.permanent")
    assert queue.run_one("w", heartbeat=False) is not None
    info = queue.get(jid)
    assert info is not None and info.status == "failed" and info.attempts == 1
    assert "invalid input" in (info.last_error or "")
    clock.advance(10_000)
    assert queue.run_one("w", heartbeat=False) is None
    assert queue.requeue(status="failed") == 1


def test_worker_dying_on_last_attempt_goes_dead(queue: JobQueue, clock: Clock) -> None:
    jid = queue.enqueue("test.effect", max_attempts=2)
    for _ in range(2):
        assert queue.lease("w", lease_seconds=5) is not None  # and the worker "dies"
        clock.advance(6)
    assert queue.lease("w") is None
    info = queue.get(jid)
    assert info is not None and info.status == "dead" and "lease expired" in (info.last_error or "")


def test_unregistered_kinds_are_not_leased_by_run_one(queue: JobQueue) -> None:
    queue.enqueue("nobody.handles.this")
    assert queue.run_one("w") is None
    assert queue.counts()["queued"] == 1


def test_register_handler_conflict() -> None:
    def other(ctx: object) -> None:
        pass

    with pytest.raises(JobError, match="already registered"):
        register_handler("test.effect", other)
    register_handler("test.effect", jobs_helpers.effect)  # same function again: fine


def test_handler_modules_are_registered_from_above(monkeypatch: pytest.MonkeyPatch) -> None:
    from tipline.store import registry

    # tipline.cli.app (imported above, as by every worker process) names the deployment's
    assert handler_modules()[:2] == ("tipline.pipeline", "tipline.actions.webhooks")
    monkeypatch.setattr(registry, "_MODULES", [])
    register_handler_modules("jobs_helpers", "tipline.no_such_handlers", "jobs_helpers")
    assert handler_modules() == ("jobs_helpers", "tipline.no_such_handlers")
    # a registered module that is missing stops the worker: no silent skipping
    with pytest.raises(JobError, match=r"cannot import handler module 'tipline\.no_such_handlers'"):
        load_handler_modules()
    monkeypatch.setattr(registry, "_MODULES", ["jobs_helpers"])
    load_handler_modules()  # importable: fine
    with pytest.raises(JobError, match="cannot import"):
        load_handler_modules(["tipline.no_such_handlers"])  # an --import one: an error too


def test_backoff_seconds() -> None:
    rng = random.Random(7)
    for attempt in range(1, 30):
        d = backoff_seconds(attempt, base=2, cap=100, rng=rng)
        full = min(100, 2 * 2 ** (attempt - 1))
        assert full / 2 <= d <= full


def test_concurrent_leases_never_share_a_job(engine: Engine) -> None:
    n_jobs, n_threads = 120, 4
    JobQueue(engine).enqueue("test.effect")  # warm up the schema cache
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM jobs"))
    ids = {JobQueue(engine).enqueue("test.effect", {"i": i}) for i in range(n_jobs)}
    got: list[int] = []
    lock = threading.Lock()
    errors: list[BaseException] = []
    barrier = threading.Barrier(n_threads)

    def work(name: str) -> None:
        eng = make_engine(str(engine.url.render_as_string(hide_password=False)))
        q = JobQueue(eng)
        try:
            barrier.wait()
            while True:
                job = q.lease(name)
                if job is None:
                    with eng.connect() as conn:
                        left = conn.scalar(
                            select(func.count()).select_from(Job).where(Job.status == "queued")
                        )
                    if not left:
                        return
                    continue
                with lock:
                    got.append(job.id)
                assert q.complete(job)
        except BaseException as err:  # reported below
            errors.append(err)
        finally:
            eng.dispose()

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    dupes = [j for j, n in Counter(got).items() if n > 1]
    assert dupes == []
    assert set(got) == ids
    assert JobQueue(engine).counts()["done"] == n_jobs


# -- the worker command, as real processes --------------------------------------------------


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(ROOT / "src"), env.get("PYTHONPATH", "")])
    return env


@pytest.fixture
def worker_proc() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(
            [sys.executable, "-m", "tipline", "worker", "--import", "jobs_helpers", *args],
            env=_env(),
            cwd=TESTS,
            start_new_session=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        started.append(p)
        return p

    yield start
    for p in started:  # a failed test must not leave workers behind
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def _wait_for(cond: Callable[[], bool], what: str, timeout: float = 90.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def test_sigkilled_worker_job_is_retried_and_takes_effect_once(
    engine: Engine,
    effects: Callable[[], dict[int, int]],
    tmp_path: Path,
    worker_proc: Callable[..., subprocess.Popen[bytes]],
) -> None:
    queue = JobQueue(engine)
    log, ready = tmp_path / "runs.log", tmp_path / "ready"
    jid = queue.enqueue(
        "test.effect", {"log": str(log), "ready": str(ready), "hang_on_first": True}
    )
    proc = worker_proc(
        "--database-url", _url(engine), "--concurrency", "1", "--lease-seconds", "1",
        "--poll-interval", "0.1",
    )  # fmt: skip
    _wait_for(ready.exists, "the handler to commit its effect and hang")
    os.kill(int(ready.read_text()), signal.SIGKILL)  # the worker process running the job
    _wait_for(lambda: queue.get(jid).status == "done", "the job to be retried")  # type: ignore[union-attr]

    info = queue.get(jid)
    assert info is not None and info.attempts == 2
    runs = log.read_text().split()
    assert len(runs) == 6 and runs[1] == "1" and runs[4] == "2" and runs[2] != runs[5]
    assert effects() == {jid: 1}  # the effect happened once: the retry was a no-op

    # SIGTERM: graceful stop
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out.decode(errors="replace")
    assert b"starting another" in out


def test_worker_processes_drain_the_queue(
    engine: Engine,
    effects: Callable[[], dict[int, int]],
    tmp_path: Path,
    worker_proc: Callable[..., subprocess.Popen[bytes]],
) -> None:
    queue = JobQueue(engine)
    log = tmp_path / "runs.log"
    ids = [queue.enqueue("test.effect", {"log": str(log)}) for _ in range(40)]
    flaky = queue.enqueue("test.permanent")
    proc = worker_proc("--database-url", _url(engine), "--concurrency", "3", "--drain")
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out.decode(errors="replace")
    assert set(effects()) == set(ids)
    jobs = [j for j in queue.list(limit=1000) if j.id in ids]
    assert {(j.status, j.attempts) for j in jobs} == {("done", 1)}  # each leased exactly once
    runs = [line.split() for line in log.read_text().splitlines()]
    assert sorted(int(r[0]) for r in runs) == sorted(ids)  # each ran exactly once
    assert queue.get(flaky).status == "failed"  # type: ignore[union-attr]


# -- the db commands ------------------------------------------------------------------------


def test_db_cli(db_url: str) -> None:
    _register()
    runner = CliRunner()
    res = runner.invoke(app, ["db", "current", "--database-url", db_url])
    assert res.exit_code == 0 and "(empty)" in res.output
    res = runner.invoke(app, ["worker", "--database-url", db_url, "--import", "jobs_helpers"])
    assert res.exit_code == 2 and "tipline db upgrade" in res.output
    res = runner.invoke(app, ["db", "upgrade", "--database-url", db_url])
    assert res.exit_code == 0 and "upgraded from (empty)" in res.output, res.output
    res = runner.invoke(app, ["db", "upgrade", "--database-url", db_url])
    assert res.exit_code == 0 and "already at schema" in res.output
    res = runner.invoke(app, ["db", "current", "--database-url", db_url])
    assert "up to date" in res.output

    eng = make_engine(db_url)
    try:
        q = JobQueue(eng)
        jid = q.enqueue("test.effect", max_attempts=1)
        job = q.lease("w")
        assert job is not None and q.fail(job, RuntimeError("benign test failure")) == "dead"
    finally:
        eng.dispose()
    res = runner.invoke(app, ["db", "jobs", "--status", "dead", "--database-url", db_url])
    assert res.exit_code == 0 and "dead: 1" in res.output and "benign test failure" in res.output
    res = runner.invoke(app, ["worker", "--dead", "--database-url", db_url])
    assert res.exit_code == 0 and f"{jid}" in res.output
    res = runner.invoke(app, ["db", "jobs", "--status", "bogus", "--database-url", db_url])
    assert res.exit_code == 2
    res = runner.invoke(app, ["db", "requeue", "--database-url", db_url])
    assert res.exit_code == 0 and "requeued 1" in res.output


def test_purge_finished_jobs(queue: JobQueue, clock: Clock) -> None:
    old = queue.enqueue("test.effect")
    job = queue.lease("w")
    assert job is not None and queue.complete(job)
    clock.advance(86400 * 3)
    recent = queue.enqueue("test.effect")
    job = queue.lease("w")
    assert job is not None and queue.complete(job)
    waiting = queue.enqueue("test.effect")
    with pytest.raises(JobError):
        queue.purge(timedelta(days=1), status="queued")
    assert queue.purge(timedelta(days=1)) == 1
    assert {j.id for j in queue.list()} == {recent, waiting} and queue.get(old) is None
