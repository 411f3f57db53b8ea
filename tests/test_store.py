"""The service database: migrations, models and the SQL bank store, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import inspect, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from tipline.store import migrations
from tipline.store.base import Base, make_engine, transaction
from tipline.store.tables import Item, Job, Report, ReportItem, User

TABLES = {
    "reports",
    "items",
    "report_items",
    "clusters",
    "banks",
    "bank_entries",
    "jobs",
    "users",
    "api_tokens",
    "sessions",
    "audit_events",
    "uploads",
    "cluster_claims",
    "grades",
    "exposure_intervals",
    "user_preferences",
    "webhooks",
    "signal_type_settings",
    "exchanges",
    "exchange_api_configs",
    "exchange_fetch_status",
    "exchange_records",
    "hosting_datasets",
    "hosting_ranges",
    "provider_directory",
    "locations",
    "cases",
    "case_events",
    "notices",
    "notice_cases",
    "rechecks",
    "case_intake",
    "crawls",
    "crawl_pages",
    "crawl_media",
    "exchange_shares",
    "exchange_share_entries",
    "exchange_share_opinions",
    "exchange_share_submissions",
    "exchange_feedback",
    "exchange_pushes",
    "exchange_push_entries",
}


def test_upgrade_from_empty_and_twice_is_noop(db_url: str) -> None:
    assert migrations.current(db_url) is None
    migrations.upgrade(db_url)
    assert migrations.current(db_url) == migrations.head()
    eng = make_engine(db_url)
    try:
        before = {t: repr(inspect(eng).get_columns(t)) for t in TABLES}
        migrations.upgrade(db_url)  # again: nothing to do
        assert migrations.current(db_url) == migrations.head()
        insp = inspect(eng)
        assert TABLES | {"alembic_version"} == set(insp.get_table_names())
        assert before == {t: repr(insp.get_columns(t)) for t in TABLES}
    finally:
        eng.dispose()


def test_sqlite_file_is_private(tmp_path: Path) -> None:
    db = tmp_path / "t.sqlite3"
    migrations.upgrade(f"sqlite:///{db}")
    assert db.stat().st_mode & 0o777 == 0o600


def test_schema_matches_models(engine: Engine) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(ctx, Base.metadata) == []


def test_downgrade_to_base(db_url: str) -> None:
    migrations.upgrade(db_url)
    migrations.downgrade(db_url, "base")
    assert migrations.current(db_url) is None
    eng = make_engine(db_url)
    try:
        assert set(inspect(eng).get_table_names()) <= {"alembic_version"}
    finally:
        eng.dispose()


def test_0013_fills_signal_key_and_lookups_use_it(db_url: str) -> None:
    """Entries written before 0013 get their key; after it, ORM inserts and the bank store
    fill it, and a lookup finds entries through it (a wrong key: not found)."""
    from sqlalchemy import text

    from tipline.store.banks import SqlBankStore
    from tipline.store.tables import BankEntryRow, signal_key

    migrations.upgrade(db_url, "0012")
    eng = make_engine(db_url)
    old = ["ab" * 16, "cd" * 16]
    try:
        with eng.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO banks (name, role, pdq_threshold, enabled, description, "
                    "created_at, auto_confirm, enabled_ratio) "
                    "VALUES ('old', 'alert', 31, true, '', 0, false, 1.0)"
                )
            )
            for sig in old:
                conn.execute(
                    text(
                        "INSERT INTO bank_entries (bank_id, signal_type, signal, label, source, "
                        "note, added_at, enabled, tags) "
                        "SELECT id, 'md5', :sig, '', '', '', 0, true, '' FROM banks"
                    ),
                    {"sig": sig},
                )
        migrations.upgrade(db_url)
        with eng.connect() as conn:
            keys = dict(conn.execute(select(BankEntryRow.signal, BankEntryRow.signal_key)).all())
        assert keys == {sig: signal_key(sig) for sig in old}
        assert signal_key(old[0]) != signal_key(old[1])
        store = SqlBankStore(eng)
        assert [e.signal for e in store.lookup("md5", old[0].upper())] == [old[0]]
        with Session(eng) as s, s.begin():
            bank_id = s.scalar(text("SELECT id FROM banks"))
            s.add(BankEntryRow(bank_id=bank_id, signal_type="md5", signal="ef" * 16, added_at=1.0))
        with eng.begin() as conn:
            row = conn.execute(
                select(BankEntryRow.signal_key).where(BankEntryRow.signal == "ef" * 16)
            ).one()
            assert row.signal_key == signal_key("ef" * 16)
            assert [e.signal for e in store.lookup("md5", "ef" * 16)] == ["ef" * 16]
            # lookups go by the key: a row whose key is wrong is not found
            conn.execute(
                text("UPDATE bank_entries SET signal_key = 0 WHERE signal = :s"), {"s": old[1]}
            )
        assert store.lookup("md5", old[1]) == []
    finally:
        eng.dispose()


def test_models_roundtrip(session_factory: sessionmaker[Session]) -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    with transaction(session_factory) as s:
        r = Report(
            reference="TL-2026-000001",
            source="public_form",
            description="neutral test text",
            urls=["https://example.org/a"],
            submitted_at=when,
        )
        i = Item(sha256="0" * 64, media_type="image/jpeg", size=10, vpdq=[{"f": 1}])
        s.add_all([r, i])
        s.flush()
        s.add(ReportItem(report_id=r.id, item_id=i.id, source_url=None))
    with session_factory() as s:
        got = s.scalars(select(Report)).one()
        assert got.submitted_at == when and got.submitted_at.tzinfo is not None
        assert got.urls == ["https://example.org/a"] and got.contact is None
        assert got.status == "received" and got.priority is None
        item = s.scalars(select(Item)).one()
        assert item.vpdq == [{"f": 1}] and item.first_seen.tzinfo is not None
        assert item.first_seen > when


def test_unique_and_check_constraints(session_factory: sessionmaker[Session]) -> None:
    with transaction(session_factory) as s:
        s.add(User(username="ana", password_hash="x", role="analyst"))
    with pytest.raises(IntegrityError), transaction(session_factory) as s:
        s.add(User(username="ana", password_hash="y", role="analyst"))
    with pytest.raises(IntegrityError), transaction(session_factory) as s:
        s.add(User(username="bob", password_hash="y", role="superuser"))
    with pytest.raises(IntegrityError), transaction(session_factory) as s:
        s.add(Report(reference="TL-1", source="email"))
    with pytest.raises(IntegrityError), transaction(session_factory) as s:
        s.add(Job(kind="k", status="paused"))


def test_naive_datetime_refused(session_factory: sessionmaker[Session]) -> None:
    with pytest.raises(Exception, match="naive datetime"), transaction(session_factory) as s:
        s.add(Job(kind="k", run_after=datetime(2026, 1, 1) + timedelta(0)))


# -- SqlBankStore: the bank store's tests (tests/test_banks.py), on both backends -------------

from test_banks import (  # noqa: E402  (the same tests, collected here with the fixture below)
    test_bad_names,
    test_bad_role,
    test_bank_crud,
    test_dedupe,
    test_dedupe_across_batches,
    test_duplicate_bank,
    test_enable_disable,
    test_entries_normalised_and_roundtrip,
    test_generator_error_rolls_back,
    test_ids_unique_across_banks_and_never_reused,
    test_invalid_signal_adds_nothing,
    test_iter_entries_paging,
    test_missing_bank_errors,
    test_remove_entries_only_from_that_bank,
    test_threshold_bounds_ok,
    test_threshold_range,
)
from tipline.banks import Bank, BankStore, Entry  # noqa: E402
from tipline.errors import BankError  # noqa: E402
from tipline.store.banks import SqlBankStore  # noqa: E402

BANK_TESTS = [
    test_bad_names,
    test_bad_role,
    test_bank_crud,
    test_dedupe,
    test_dedupe_across_batches,
    test_duplicate_bank,
    test_enable_disable,
    test_entries_normalised_and_roundtrip,
    test_generator_error_rolls_back,
    test_ids_unique_across_banks_and_never_reused,
    test_invalid_signal_adds_nothing,
    test_iter_entries_paging,
    test_missing_bank_errors,
    test_remove_entries_only_from_that_bank,
    test_threshold_bounds_ok,
    test_threshold_range,
]


@pytest.fixture
def store(engine: Engine) -> Iterator[SqlBankStore]:
    """Overrides test_banks' ``store`` for the tests imported above: same tests, SQL store."""
    s = SqlBankStore(engine)
    yield s
    s.close()


def test_sql_store_is_a_bank_store(store: SqlBankStore) -> None:
    _: BankStore = store  # satisfies the protocol


def test_sql_store_needs_migrated_database(db_url: str) -> None:
    with pytest.raises(BankError, match="tipline db upgrade"):
        SqlBankStore(db_url)


def test_sql_store_persists_across_instances(db_url: str) -> None:
    migrations.upgrade(db_url)
    with SqlBankStore(db_url) as s:
        s.create_bank(Bank("A", pdq_threshold=12))
        (i,) = s.add_entries([Entry("A", "pdq", "c" * 64, tags=["t"])])
    with SqlBankStore(db_url) as s:
        assert s.get_bank("A").pdq_threshold == 12
        e = s.get_entry(i)
        assert (e.signal, e.tags, e.bank) == ("c" * 64, ["t"], "A")
        assert s.entry_counts() == {"A": 1}


def test_copy_offline_banks_into_service_db(db_url: str, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from legacy_bank_file import write_old_bank_file
    from tipline.cli.app import _register, app
    from tipline.store.banks import open_bank_store, service_db_has_banks

    data = tmp_path / "data"
    write_old_bank_file(
        data / "banks.sqlite3",
        [
            Bank("KNOWN", pdq_threshold=20, description="benign stand-in"),
            Bank("IGNORE_ME", role="ignore", enabled=False),
        ],
        [
            Entry("KNOWN", "pdq", "d" * 64, label="L", tags=["a", "b"]),
            Entry("KNOWN", "md5", "e" * 32, enabled=False),
            Entry("IGNORE_ME", "pdq", "f" * 64),
        ],
    )
    assert not service_db_has_banks(db_url)
    migrations.upgrade(db_url)
    _register()
    runner = CliRunner()
    args = ["--data-dir", str(data), "db", "import-banks", "--database-url", db_url]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "2 bank(s) adopted, 0 already there; 3 entries adopted, 0 already" in res.output
    res = runner.invoke(app, args)  # again: nothing new
    assert res.exit_code == 0, res.output
    assert "0 bank(s) adopted, 2 already there; 0 entries adopted, 3 already" in res.output
    assert "(3 entries in the service database" in res.output

    with open_bank_store(data, db_url) as s:
        assert isinstance(s, SqlBankStore)
        known = s.get_bank("KNOWN")
        assert (known.pdq_threshold, known.description) == (20, "benign stand-in")
        assert not s.get_bank("IGNORE_ME").enabled and s.get_bank("IGNORE_ME").role == "ignore"
        entries = list(s.iter_entries("KNOWN"))
        assert [(e.signal_type, e.enabled, e.tags) for e in entries] == [
            ("pdq", True, ["a", "b"]),
            ("md5", False, []),
        ]
        assert entries[0].label == "L"


def test_bank_tools_adopt_offline_banks_automatically(db_url: str, tmp_path: Path) -> None:
    """`tipline bank` and `scan` open the service database, migrating it and adopting banks an
    older version kept in banks.sqlite3, so CLI and service always see the same banks."""
    from legacy_bank_file import write_old_bank_file
    from tipline.store.banks import open_bank_store, service_db_has_banks

    data = tmp_path / "data"
    write_old_bank_file(
        data / "banks.sqlite3",
        [Bank("OLD", pdq_threshold=18)],
        [Entry("OLD", "md5", "a" * 32, label="L")],
    )
    assert not service_db_has_banks(db_url)
    with open_bank_store(data, db_url) as s:
        assert isinstance(s, SqlBankStore)
        assert s.get_bank("OLD").pdq_threshold == 18
        assert [e.signal for e in s.iter_entries("OLD")] == ["a" * 32]
    assert service_db_has_banks(db_url)
    with open_bank_store(data, db_url) as s:  # adopted once: no duplicates on reopen
        assert s.count_entries("OLD") == 1
