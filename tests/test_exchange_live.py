"""Fetched exchange entries reach the serving processes' live indexes through the bank-change
journal (docs/exchanges.md, "Live indexes"): a real ``tipline worker --drain`` fetches a
``local_file`` exchange beside a real ``tipline serve`` on the same data directory, and
``/m/lookup`` finds the 1,000 new entries within 2 s of the commit; a tombstoned entry stops
matching. In process: re-enables, and a writer that dies between its commit and its journal
lines (the next run journals a reload). The hashes are random 256-bit stand-ins labelled
``DEMO-benign-stand-in``: no real list."""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from hma_compat.conftest import serve_env
from serve_process import running_serve, tipline_exe
from tipline.exchange import store
from tipline.exchange.fetcher import FetchOptions, run_fetch
from tipline.index.journal import JournalWriter
from tipline.service.matching import MatchService
from tipline.store import migrations
from tipline.store.base import default_url, make_engine, session_factory
from tipline.store.media import Keyring, new_key
from tipline.store.tables import BankEntryRow, ExchangeFetchStatusRow

LABEL = "DEMO-benign-stand-in"
N = 1_000
LATENCY_LIMIT = 2.0


def codes(n: int) -> list[str]:
    return [secrets.token_hex(32) for _ in range(n)]


def write_list(path: Path, hashes: list[str]) -> None:
    path.write_text("".join(f"pdq {h}\n" for h in hashes))


def _tipline(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = serve_env(data)
    return subprocess.run(
        [tipline_exe(), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def _worker(data: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            tipline_exe(),
            "worker",
            "--drain",
            "--poll-interval",
            "0.05",
            "--kind",
            "exchange_fetch",
        ],
        env=serve_env(data),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    data = tmp_path / "data"
    data.mkdir()
    with running_serve(serve_env(data), tmp_path / "serve.log") as url:
        yield url, data


def _found(http: httpx.Client, bank: str, signal: str) -> bool:
    r = http.get("/m/lookup", params={"signal_type": "pdq", "signal": signal})
    assert r.status_code == 200, r.text
    return bool(r.json().get(bank))


def test_worker_fetch_reaches_a_running_serve_within_2s(
    served: tuple[str, Path], tmp_path: Path
) -> None:
    url, data = served
    hashes = codes(N)
    lst = tmp_path / "partner.te"
    write_list(lst, hashes)
    added = _tipline(
        data,
        "exchange",
        "add",
        "LIVE_LIST",
        "--type",
        "local_file",
        "--config",
        f"path={lst}",
        "--config",
        "default_signal_type=pdq",
    )
    assert added.returncode == 0, added.stdout + added.stderr
    engine = make_engine(default_url(data))
    factory = session_factory(engine)

    def committed() -> int:
        with factory() as s:
            return int(s.scalar(select(func.count()).select_from(BankEntryRow)) or 0)

    with httpx.Client(base_url=url, timeout=10) as http:
        assert not _found(http, "LIVE_LIST", hashes[0])
        worker = _worker(data)
        deadline = time.monotonic() + 30
        while committed() < N:  # the worker's batch commit (one transaction)
            assert time.monotonic() < deadline, "the worker did not commit"
            time.sleep(0.01)
        t_commit = time.monotonic()
        probes = [hashes[0], hashes[N // 2], hashes[-1]]
        while not all(_found(http, "LIVE_LIST", h) for h in probes):
            assert time.monotonic() - t_commit < LATENCY_LIMIT, "not visible within 2 s"
            time.sleep(0.01)
        latency = time.monotonic() - t_commit
        print(f"\n{N} fetched entries visible to /m/lookup {latency * 1000:.0f} ms after commit")
        assert latency < LATENCY_LIMIT
        _, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, err.decode()[-2000:]
        assert all(_found(http, "LIVE_LIST", h) for h in hashes[::10])

        # the partner withdraws one hash: fetch again, it stops matching
        gone = hashes[7]
        write_list(lst, [h for h in hashes if h != gone])
        fetched = _tipline(data, "exchange", "fetch", "LIVE_LIST")
        assert fetched.returncode == 0, fetched.stdout + fetched.stderr
        t_tomb = time.monotonic()
        while _found(http, "LIVE_LIST", gone):
            assert time.monotonic() - t_tomb < LATENCY_LIMIT, "tombstone not applied within 2 s"
            time.sleep(0.01)
        print(f"tombstone applied {(time.monotonic() - t_tomb) * 1000:.0f} ms after the fetch")
        assert _found(http, "LIVE_LIST", hashes[8])
    with factory() as s:
        st = s.scalar(select(ExchangeFetchStatusRow))
        assert st is not None and "journal_pending" not in (st.stats or {})
    engine.dispose()


# -- in process: re-enables and the crash window ---------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    url = f"sqlite:///{tmp_path / 'x.sqlite3'}"
    migrations.upgrade(url)
    engine = make_engine(url)
    ring = Keyring()
    ring.add(new_key())
    store.configure(None, lambda: ring)
    yield session_factory(engine)
    store.configure(None, None)
    engine.dispose()


def _service(tmp_path: Path) -> MatchService:
    url = f"sqlite:///{tmp_path / 'x.sqlite3'}"
    svc = MatchService.for_data_dir(tmp_path, url, tmp_path / "index", refresh=3600)
    svc.load()  # builds the (empty) index and creates the index directory
    return svc


def _hit(svc: MatchService, signal: str) -> bool:
    return bool(svc.lookup("pdq", signal))


def test_adds_tombstones_and_reenables_follow_the_journal(
    db: sessionmaker[Session], tmp_path: Path
) -> None:
    svc = _service(tmp_path)
    try:
        hashes = codes(50)
        lst = tmp_path / "list.te"
        write_list(lst, hashes)
        with db() as s, s.begin():
            store.create_exchange(s, "JOURNALLED", "local_file", {"path": str(lst)})
        opts = FetchOptions(commit_every=20, index_dir=tmp_path / "index")
        out = run_fetch(db, "JOURNALLED", opts)
        assert out.succeeded and out.added == 50 and out.journalled > 0
        assert not _hit(svc, hashes[0])  # nothing applied before the catch-up
        svc.catch_up()
        assert all(_hit(svc, h) for h in hashes)
        assert {b.name for b in svc.list_banks()} == {"JOURNALLED"}
        # two withdrawn, then one back: disabled, then the same entry enabled again
        write_list(lst, hashes[2:])
        assert run_fetch(db, "JOURNALLED", opts).tombstoned == 2
        svc.catch_up()
        assert not _hit(svc, hashes[0]) and not _hit(svc, hashes[1]) and _hit(svc, hashes[2])
        write_list(lst, hashes[1:])
        back = run_fetch(db, "JOURNALLED", opts)
        assert (back.added, back.changed) == (1, 1)
        svc.catch_up()
        assert _hit(svc, hashes[1]) and not _hit(svc, hashes[0])
        # replaying the whole journal again changes nothing (idempotent)
        svc._offset = 0
        svc.catch_up()
        assert _hit(svc, hashes[1]) and not _hit(svc, hashes[0])
        assert sum(svc.status()["by_signal_type"].values()) == 49
    finally:
        svc.close()


def test_a_batch_committed_but_not_journalled_is_replayed_by_the_next_run(
    db: sessionmaker[Session], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = _service(tmp_path)
    try:
        hashes = codes(30)
        lst = tmp_path / "list.te"
        write_list(lst, hashes)
        with db() as s, s.begin():
            store.create_exchange(s, "CRASHY", "local_file", {"path": str(lst)})
        opts = FetchOptions(index_dir=tmp_path / "index")

        def dies(self: JournalWriter, ops: object) -> int:  # the writer's crash window
            raise OSError("disk full")

        with monkeypatch.context() as m:
            m.setattr(JournalWriter, "write", dies)
            out = run_fetch(db, "CRASHY", opts)
        assert out.succeeded and out.added == 30 and out.journalled == 0
        with db() as s:
            st = s.scalar(select(ExchangeFetchStatusRow))
            assert st is not None and st.stats.get("journal_pending") is True
            assert (
                "journal_pending"
                not in store.status_json(s, store.get_exchange(s, "CRASHY"))["counts"]
            )
        svc.catch_up()
        assert not _hit(svc, hashes[0])  # lost for now...
        again = run_fetch(db, "CRASHY", opts)  # ...until the next run journals a reload
        assert again.succeeded and again.added == 0
        svc.catch_up()
        assert all(_hit(svc, h) for h in hashes)
        with db() as s:
            st = s.scalar(select(ExchangeFetchStatusRow))
            assert st is not None and "journal_pending" not in (st.stats or {})
    finally:
        svc.close()
