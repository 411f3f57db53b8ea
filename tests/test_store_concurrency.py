"""Read-then-write paths that two processes (the service and a worker, two workers, the CLI
beside the service) really run at once, raced on purpose: neither loses the other's update.

Each race is forced, not hoped for: a hook on the engine holds each side right after its read
until the other side has read too (or for ``HOLD`` seconds, when the other side is waiting for
a lock and cannot read yet). Unprotected, both read the same state and both write from it;
protected, the second waits for the first's commit and reads it. SQLite and PostgreSQL.

* A bank add (``dedupe``: a signal the bank holds gives its entry) reads what the bank holds,
  then inserts what it lacks: two adds of the same signals at once used to store each twice
  (grades banked by two workers, an import beside the service, a peer's push twice).
* The triage stage reads the cluster's members (and each report's items) and writes the
  cluster's (the report's) priority from them: two items of one cluster or one report
  triaged at once used to leave a priority computed without the other's new score.
* The banking sweep (after each grading, in whichever process graded) reads final grades not
  yet banked, banks them and marks them: two sweeps at once used to bank and audit one grade
  twice.

Each is protected by a locking read of the row it writes from (the bank, the cluster, the
report; the item, read again under the lock): a row lock on PostgreSQL, ``BEGIN IMMEDIATE``
on SQLite (:mod:`tipline.store.base`). Unprotected, the bank, cluster and banking races fail
on both databases, the report race on SQLite (on PostgreSQL when the stale side commits
last).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from tipline.banks.bank import Bank, Entry
from tipline.pipeline import stages
from tipline.pipeline.stages import PipelineConfig
from tipline.review import grading, prefs
from tipline.review.grading import ReviewPolicy
from tipline.store.banks import SqlBankStore
from tipline.store.base import make_engine
from tipline.store.base import session_factory as make_factory
from tipline.store.tables import (
    AuditEvent,
    Cluster,
    Item,
    Report,
    ReportItem,
    User,
    UserPreference,
)

#: How long a side waits after its read for the other side's read.
HOLD = 1.5
SIGNALS = [f"{n:032x}" for n in range(1, 41)]  # benign stand-in MD5s (counters)


@pytest.fixture
def engines(db_url: str, engine: Engine) -> Iterator[tuple[Engine, Engine]]:
    """Two engines on the migrated test database: two processes' connections."""
    a, b = make_engine(db_url), make_engine(db_url)
    try:
        yield a, b
    finally:
        a.dispose()
        b.dispose()


def _hold_after(engines: tuple[Engine, Engine], is_read: Callable[[str], bool]) -> list[str]:
    """After a statement ``is_read`` picks, each engine's side waits (at most HOLD) for the
    other's; returns the order the reads happened in."""
    barrier = threading.Barrier(2, timeout=HOLD)
    reads: list[str] = []

    for name, eng in zip("ab", engines, strict=True):

        def after(*args: Any, _name: str = name) -> None:
            if not is_read(args[2]):
                return
            reads.append(_name)
            # broken (timed out): the other side is waiting for our lock, so go on alone
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait()

        event.listen(eng, "after_cursor_execute", after)
    return reads


def _both(a: Callable[[], Any], b: Callable[[], Any]) -> list[Any]:
    out: list[Any] = [None, None]
    errors: list[BaseException] = []

    def run(i: int, fn: Callable[[], Any]) -> None:
        try:
            out[i] = fn()
        except BaseException as err:  # reported below, in the test's thread
            errors.append(err)

    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate((a, b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    return out


def test_two_bank_adds_of_the_same_signals_store_each_once(
    engines: tuple[Engine, Engine],
) -> None:
    stores = [SqlBankStore(e) for e in engines]
    stores[0].create_bank(Bank("RACE", description="benign stand-in"))
    reads = _hold_after(engines, lambda sql: "min(bank_entries.id)" in sql)
    entries = [Entry("RACE", "md5", s, label="DEMO-benign-stand-in") for s in SIGNALS]
    ids_a, ids_b = _both(
        lambda: stores[0].add_entries(entries), lambda: stores[1].add_entries(entries)
    )
    assert len(reads) == 2
    assert ids_a == ids_b  # the second add found the first's entries
    assert stores[0].count_entries("RACE") == len(SIGNALS)  # not 2 x 40


CFG = PipelineConfig(match=lambda *_a, **_k: [])
OLD = datetime.now(UTC) - timedelta(hours=100)  # the age part is at its cap: scores are stable


def _race_triage(
    engines: tuple[Engine, Engine],
    sf: sessionmaker[Session],
    ids: list[int],
    target: type[Cluster | Report],
    target_id: int,
    marker: str,
    stale: Callable[[float], float],
) -> tuple[float, float | None]:
    """Triage items ``ids`` once, one after the other: ``target``'s priority then is the
    expected one. Then item 1's priority is made stale (1000, what triage replaces; item 2's
    is left as triage computes it, so its triage writes only ``target``) and ``target``'s
    ``stale(expected)``, and both items are triaged at once, each side held after its read
    whose SQL holds ``marker``. Returns (expected, ``target``'s priority after the race)."""
    for i in ids:
        with sf() as s, s.begin():
            stages.stage_triage(s, {"item_id": i}, CFG)
    with sf() as s, s.begin():
        row = s.get(target, target_id)
        item = s.get(Item, ids[0])
        assert row is not None and row.priority is not None and item is not None
        expected = row.priority
        item.priority, item.priority_reason = 1000.0, "stale"
        row.priority = stale(expected)
    reads = _hold_after(engines, lambda sql: marker in sql)
    factories = [make_factory(e) for e in engines]

    def triage(n: int) -> None:
        with factories[n]() as s, s.begin():
            stages.stage_triage(s, {"item_id": ids[n]}, CFG)

    _both(lambda: triage(0), lambda: triage(1))
    assert len(reads) == 2
    with sf() as s:
        after = s.get(target, target_id)
        assert after is not None
        return expected, after.priority


def test_two_triages_in_one_cluster_keep_both_scores(
    engines: tuple[Engine, Engine], session_factory: sessionmaker[Session]
) -> None:
    """Two items of one cluster triaged at once: the cluster's priority comes from item 1's
    new score, not its stale one."""
    with session_factory() as s, s.begin():
        cluster = Cluster(size=2)
        s.add(cluster)
        s.flush()
        items = [
            Item(sha256=f"{n:064x}", md5=f"{n:032x}", cluster_id=cluster.id, first_seen=OLD)
            for n in (1, 2)
        ]
        s.add_all(items)
        s.flush()
        ids, cluster_id = [i.id for i in items], cluster.id
    expected, got = _race_triage(
        engines, session_factory, ids, Cluster, cluster_id, "items.cluster_id =", lambda e: 1000 + e
    )
    assert got == expected  # not 1000 + ...


def test_two_triages_in_one_report_keep_both_scores(
    engines: tuple[Engine, Engine], session_factory: sessionmaker[Session]
) -> None:
    """Two items of one report (no clusters) triaged at once: the report's priority comes from
    item 1's new score, not its stale one."""
    with session_factory() as s, s.begin():
        report = Report(reference="RACE-1", source="partner_api", submitted_at=OLD)
        s.add(report)
        s.flush()
        items = [Item(sha256=f"{n:064x}", md5=f"{n:032x}", first_seen=OLD) for n in (1, 2)]
        s.add_all(items)
        s.flush()
        s.add_all(ReportItem(report_id=report.id, item_id=i.id) for i in items)
        ids, report_id = [i.id for i in items], report.id
    # the report's stale priority is neither: whoever writes it last decides
    expected, got = _race_triage(
        engines, session_factory, ids, Report, report_id, "FROM items JOIN report_items",
        lambda _e: -1.0,
    )  # fmt: skip
    assert got == expected  # not 1000


def test_two_banking_sweeps_bank_a_grade_once(
    engines: tuple[Engine, Engine], session_factory: sessionmaker[Session]
) -> None:
    """Two processes' sweeps (each runs after a grading) read the same final grade not yet
    banked: its hashes are banked once, and it is marked and audited once."""
    with session_factory() as s, s.begin():
        item = Item(
            sha256=f"{7:064x}",
            md5=f"{7:032x}",
            grade={"actionable": True, "label": "uk_category:C", "graders": ["alice"]},
            graded_at=datetime.now(UTC),
        )
        s.add(item)
        s.flush()
        item_id = item.id
    stores = [SqlBankStore(e) for e in engines]
    stores[0].create_bank(Bank("TIPLINE_GRADED", description="benign stand-in"))
    reads = _hold_after(engines, lambda sql: "items.banked_at IS NULL" in sql)
    factories = [make_factory(e) for e in engines]

    def sweep(n: int) -> int:
        return grading.bank_final_grades(factories[n], stores[n], ReviewPolicy())

    done = _both(lambda: sweep(0), lambda: sweep(1))
    assert len(reads) == 2 and sorted(done) == [0, 1]
    assert stores[0].count_entries("TIPLINE_GRADED") == 2  # its MD5 and SHA-256
    with session_factory() as s:
        events = s.scalars(
            select(AuditEvent).where(
                AuditEvent.action == "review.banked", AuditEvent.target_id == str(item_id)
            )
        ).all()
        assert len(events) == 1


def test_triage_locks_the_cluster_before_writing_its_item(
    db_url: str, engines: tuple[Engine, Engine], session_factory: sessionmaker[Session]
) -> None:
    """Grading locks the cluster, then each item; triage must take them in the same order.
    While a grader holds the cluster, a triage of one of its items waits without holding the
    item's row (before: it had already written the item, so the grader's item lock waited
    for the triage and the triage for the grader's cluster: a deadlock on PostgreSQL)."""
    if not db_url.startswith("postgresql"):
        pytest.skip("row locks: SQLite's one write lock cannot deadlock")
    with session_factory() as s, s.begin():
        cluster = Cluster(size=1)
        s.add(cluster)
        s.flush()
        item = Item(sha256=f"{9:064x}", md5=f"{9:032x}", cluster_id=cluster.id, first_seen=OLD)
        s.add(item)
        s.flush()
        item.priority = 1000.0  # stale: triage writes a new one
        item_id, cluster_id = item.id, cluster.id
    grader, triager = (make_factory(e) for e in engines)
    done = threading.Event()
    errors: list[BaseException] = []

    def triage() -> None:
        try:
            with triager() as s, s.begin():
                stages.stage_triage(s, {"item_id": item_id}, CFG)
        except BaseException as err:  # reported in the test's thread
            errors.append(err)
        finally:
            done.set()

    with grader() as g, g.begin():
        assert g.get(Cluster, cluster_id, with_for_update=True) is not None
        thread = threading.Thread(target=triage)
        thread.start()
        assert not done.wait(HOLD)  # the triage waits for the grader's cluster lock
        # the grader's next step, the item's lock, is free: no deadlock
        g.execute(select(Item.id).where(Item.id == item_id).with_for_update(nowait=True))
    thread.join(timeout=30)
    assert done.is_set() and not errors, errors
    with session_factory() as s:
        row = s.get(Item, item_id)
        assert row is not None and row.priority != 1000.0


def test_two_first_preference_saves_at_once_both_land(
    engines: tuple[Engine, Engine], session_factory: sessionmaker[Session]
) -> None:
    """Two tabs save a user's first viewing preferences at once: neither fails on the user's
    key (before: both read no row and both inserted one), the later save is kept."""
    with session_factory() as s, s.begin():
        user = User(username="ana", password_hash="-", role="analyst")
        s.add(user)
        s.flush()
        uid = user.id
    reads = _hold_after(engines, lambda sql: "FROM user_preferences" in sql)
    factories = [make_factory(e) for e in engines]
    chosen = [prefs.ViewPrefs(blur=12), prefs.ViewPrefs(blur=30)]

    def save(n: int) -> None:
        with factories[n]() as s, s.begin():
            prefs.save(s, uid, chosen[n])

    _both(lambda: save(0), lambda: save(1))
    assert reads == []  # one statement, no read to race on
    with session_factory() as s:
        assert prefs.load(s, uid) in chosen
        assert s.scalar(select(func.count()).select_from(UserPreference)) == 1
