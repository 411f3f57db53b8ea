"""The removal scheduler's tick chain starts exactly once (``scheduler.ensure_started``):
``tipline serve`` and every ``tipline worker`` call it at start-up, so it must be idempotent
within a process, across restarts and across processes starting at the same moment."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import update
from sqlalchemy.engine import Engine

from tipline.removal import scheduler
from tipline.store.base import session_factory
from tipline.store.jobs import JobQueue
from tipline.store.media import Keyring
from tipline.store.tables import Job

SRC = Path(__file__).resolve().parents[1] / "src"

#: Started twice at once: each process sleeps until the same wall-clock instant, then starts.
STARTER = """
import sys, time
from pathlib import Path
from tipline.removal import scheduler
from tipline.store.base import make_engine
from tipline.store.jobs import JobQueue
from tipline.store.media import Keyring
url, at, evidence = sys.argv[1], float(sys.argv[2]), sys.argv[3]
cfg = scheduler.RemovalConfig(evidence_dir=Path(evidence), keyring=lambda: Keyring())
engine = make_engine(url)
time.sleep(max(0.0, at - time.time()))
print("started" if scheduler.ensure_started(JobQueue(engine), cfg) is not None else "present")
"""


def _live_ticks(queue: JobQueue) -> list[int]:
    return [
        j.id
        for status in ("queued", "running")
        for j in queue.list(status, scheduler.TICK_KIND, limit=100)
    ]


def _config(tmp_path: Path) -> scheduler.RemovalConfig:
    return scheduler.RemovalConfig(evidence_dir=tmp_path, keyring=lambda: Keyring())


def test_ensure_started_is_idempotent_and_restarts_a_dead_chain(
    engine: Engine, tmp_path: Path
) -> None:
    queue = JobQueue(engine)
    cfg = _config(tmp_path)
    first = scheduler.ensure_started(queue, cfg)
    assert first is not None
    assert scheduler.ensure_started(queue, cfg) is None  # a second start-up finds the chain
    assert _live_ticks(queue) == [first]
    # the tick is running (leased by a worker): still one chain
    with session_factory(engine)() as s, s.begin():
        s.execute(update(Job).where(Job.id == first).values(status="running"))
    assert scheduler.ensure_started(queue, cfg) is None
    # the chain died (its last tick dead, none queued): the next start-up starts it again
    with session_factory(engine)() as s, s.begin():
        s.execute(update(Job).where(Job.id == first).values(status="dead"))
    again = scheduler.ensure_started(queue, cfg)
    assert again is not None and again != first
    assert _live_ticks(queue) == [again]


def test_two_processes_starting_at_once_make_one_chain(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    at = time.time() + 3.0  # both interpreters are up and connected by then
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", STARTER, db_url, repr(at), str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        outs.append(out.strip())
    assert sorted(outs) == ["present", "started"]
    assert len(_live_ticks(JobQueue(engine))) == 1


def test_a_second_notice_round_in_the_same_second_gets_its_own_group_job(
    engine: Engine, tmp_path: Path
) -> None:
    """With no grouping delay the group job's key is per second: a round decided after that
    second's group job ran must not wait for the next tick."""
    from datetime import UTC, datetime

    queue = JobQueue(engine, clock=lambda: datetime(2026, 12, 7, 10, 0, 0, 250000, tzinfo=UTC))
    cfg = scheduler.RemovalConfig(
        evidence_dir=tmp_path, keyring=lambda: Keyring(), group_delay_seconds=0
    )
    factory = session_factory(engine)
    scheduler._local.queue = queue  # as inside a running step job
    try:
        scheduler._enqueue_group(factory, cfg, queue.clock())
        scheduler._enqueue_group(factory, cfg, queue.clock())  # still queued: one job
        (first,) = queue.list("queued", scheduler.GROUP_KIND)
        with factory() as s, s.begin():
            s.execute(update(Job).where(Job.id == first.id).values(status="done"))
        scheduler._enqueue_group(factory, cfg, queue.clock())
    finally:
        scheduler._local.queue = None
    (second,) = queue.list("queued", scheduler.GROUP_KIND)
    assert second.id != first.id
