"""A real `tipline worker` fetching an exchange is killed with SIGKILL mid-fetch; a second
worker resumes from the last committed batch: every record lands once, none is lost."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import func, select

from tipline.exchange import store
from tipline.exchange.fetcher import start_chain
from tipline.store import migrations
from tipline.store.base import default_url, make_engine, session_factory
from tipline.store.jobs import JobQueue
from tipline.store.tables import BankEntryRow, ExchangeFetchStatusRow, ExchangeRecordRow

N = 60_000


def _worker(data: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TIPLINE_DATA_DIR": str(data), "TIPLINE_MEDIA_MODE": "hash-only"}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tipline",
            "worker",
            "--drain",
            "--lease-seconds",
            "1.5",
            "--poll-interval",
            "0.1",
            "--kind",
            "exchange_fetch",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def test_sigkill_mid_fetch_resumes_exactly(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    lst = tmp_path / "list.te"
    with lst.open("w") as fh:
        for i in range(N):
            fh.write(f"pdq {hashlib.sha256(f'stand-in {i}'.encode()).hexdigest()}\n")
    url = default_url(data)
    migrations.upgrade(url)
    engine = make_engine(url)
    factory = session_factory(engine)
    with factory() as s, s.begin():
        ex = store.create_exchange(s, "KILLED", "local_file", {"path": str(lst)})
        start_chain(JobQueue(engine), s, ex)
        ex_id = ex.id

    def progress() -> tuple[int, bool]:
        with factory() as s:
            st = s.get(ExchangeFetchStatusRow, ex_id)
            assert st is not None
            return st.fetched_items, st.up_to_date

    w = _worker(data)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done, up = progress()
        if done > 0:
            break
        time.sleep(0.02)
    os.killpg(w.pid, signal.SIGKILL)  # the worker and its child process, as kill -9 does
    w.wait(timeout=10)
    done, up = progress()
    assert 0 < done < N and not up, (done, up)
    time.sleep(1.6)  # the dead worker's lease expires
    w2 = _worker(data)
    _, err = w2.communicate(timeout=60)
    assert w2.returncode == 0, err.decode()[-2000:]
    done, up = progress()
    jobs = [(j.status, j.attempts, j.last_error, j.run_after) for j in JobQueue(engine).list()]
    assert up and done == N, (done, jobs, err.decode()[-1500:])
    with factory() as s:
        assert s.scalar(select(func.count()).select_from(BankEntryRow)) == N
        assert s.scalar(select(func.count(func.distinct(BankEntryRow.signal)))) == N
        assert s.scalar(select(func.count()).select_from(ExchangeRecordRow)) == N
    engine.dispose()
