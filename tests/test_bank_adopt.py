"""Old ``banks.sqlite3`` files: read read-only and adopted into the bank store.

The old files are written by the test itself (tests/legacy_bank_file.py, plain sqlite3, the old
schema). Every signal is random hex or a fixed benign stand-in.
"""

from __future__ import annotations

import hashlib
import secrets
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

import tipline.cli.app as cli_app
from legacy_bank_file import write_old_bank_file
from tipline.banks import Bank, Entry, LegacyBankFile, adopt_banks
from tipline.errors import BankError
from tipline.store import migrations
from tipline.store.banks import SqlBankStore, open_bank_store

cli_app._register()
runner = CliRunner()

PDQ_A = "a" * 64
PDQ_B = "b" * 64
MD5_A = "0123456789abcdef" * 2
SHA1_A = "0123456789" * 4

OLD_BANKS = [
    Bank("KNOWN", pdq_threshold=20, description="DEMO-benign-stand-in", created_at=1000.5),
    Bank("IGNORE_ME", role="ignore", enabled=False, created_at=2000.0),
    Bank("EMPTY", created_at=3000.0),
]
OLD_ENTRIES = [
    Entry("KNOWN", "pdq", PDQ_A, label="DEMO-benign-stand-in", tags=["a", "b"], added_at=10.0),
    Entry("KNOWN", "md5", MD5_A, source="test", note="n", enabled=False, added_at=11.0),
    Entry("IGNORE_ME", "pdq", PDQ_B, added_at=12.0),
    Entry("IGNORE_ME", "sha1", SHA1_A, label="L", added_at=13.0),
]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def old_file(tmp_path: Path) -> Path:
    return write_old_bank_file(tmp_path / "old" / "banks.sqlite3", OLD_BANKS, OLD_ENTRIES)


@pytest.fixture
def db_url_sqlite(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'service.sqlite3'}"
    migrations.upgrade(url)
    return url


@pytest.fixture
def store(db_url_sqlite: str) -> Iterator[SqlBankStore]:
    with SqlBankStore(db_url_sqlite) as s:
        yield s


def summary(store: SqlBankStore) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    banks = [
        (b.name, b.role, b.pdq_threshold, b.enabled, b.description, b.created_at)
        for b in store.list_banks()
    ]
    entries = [
        (e.bank, e.signal_type, e.signal, e.label, e.source, e.note, e.added_at, e.enabled, e.tags)
        for e in store.iter_entries()
    ]
    return banks, entries


# -- the reader ------------------------------------------------------------------------------


def test_reader_lists_banks_and_entries(old_file: Path) -> None:
    with LegacyBankFile(old_file) as f:
        assert [(b.name, b.role, b.pdq_threshold, b.enabled) for b in f.list_banks()] == [
            ("EMPTY", "alert", 31, True),
            ("IGNORE_ME", "ignore", 31, False),
            ("KNOWN", "alert", 20, True),
        ]
        got = list(f.iter_entries())
        assert [e.id for e in got] == [1, 2, 3, 4]
        assert [(e.bank, e.signal_type, e.signal, e.tags, e.enabled) for e in got] == [
            ("KNOWN", "pdq", PDQ_A, ["a", "b"], True),
            ("KNOWN", "md5", MD5_A, [], False),
            ("IGNORE_ME", "pdq", PDQ_B, [], True),
            ("IGNORE_ME", "sha1", SHA1_A, [], True),
        ]
        assert (got[1].source, got[1].note, got[1].added_at) == ("test", "n", 11.0)
        assert f.entry_counts() == {"EMPTY": 0, "IGNORE_ME": 2, "KNOWN": 2}
        f.check()


def test_reader_cannot_write(old_file: Path) -> None:
    with LegacyBankFile(old_file) as f:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            f._db.execute("DELETE FROM entries")
        assert sum(f.entry_counts().values()) == 4


def test_reader_reads_an_unfinished_write_ahead_log(tmp_path: Path) -> None:
    """An old tool that stopped before checkpointing left rows in banks.sqlite3-wal: they are
    read too, and neither file is changed."""
    src = write_old_bank_file(tmp_path / "src" / "banks.sqlite3", [Bank("A")])
    db = sqlite3.connect(src)
    db.execute("PRAGMA wal_autocheckpoint = 0")
    db.execute(
        "INSERT INTO entries (bank_id, signal_type, signal, added_at) VALUES (1, 'pdq', ?, 1.0)",
        (PDQ_A,),
    )
    db.commit()
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("banks.sqlite3", "banks.sqlite3-wal"):
        shutil.copyfile(src.parent / name, copy / name)
    db.close()
    path, wal = copy / "banks.sqlite3", copy / "banks.sqlite3-wal"
    assert wal.stat().st_size > 0
    before = (digest(path), digest(wal))
    with LegacyBankFile(path) as f:
        assert [e.signal for e in f.iter_entries()] == [PDQ_A]
    assert (digest(path), digest(wal)) == before


# -- adoption --------------------------------------------------------------------------------


def test_adopt_copies_everything(old_file: Path, store: SqlBankStore) -> None:
    report = adopt_banks(old_file, store)
    assert (report.banks_adopted, report.banks_skipped) == (3, 0)
    assert (report.entries_adopted, report.entries_skipped) == (4, 0)
    banks, entries = summary(store)
    assert banks == [
        ("EMPTY", "alert", 31, True, "", 3000.0),
        ("IGNORE_ME", "ignore", 31, False, "", 2000.0),
        ("KNOWN", "alert", 20, True, "DEMO-benign-stand-in", 1000.5),
    ]
    assert entries == [
        ("KNOWN", "pdq", PDQ_A, "DEMO-benign-stand-in", "", "", 10.0, True, ["a", "b"]),
        ("KNOWN", "md5", MD5_A, "", "test", "n", 11.0, False, []),
        ("IGNORE_ME", "pdq", PDQ_B, "", "", "", 12.0, True, []),
        ("IGNORE_ME", "sha1", SHA1_A, "L", "", "", 13.0, True, []),
    ]


def test_adopt_twice_adds_nothing(old_file: Path, store: SqlBankStore) -> None:
    adopt_banks(old_file, store)
    first = summary(store)
    report = adopt_banks(old_file, store)
    assert (report.banks_adopted, report.banks_skipped) == (0, 3)
    assert (report.entries_adopted, report.entries_skipped) == (0, 4)
    assert summary(store) == first
    assert "0 bank(s) adopted, 3 already there; 0 entries adopted, 4 already there" in str(report)


def test_adopt_keeps_what_the_store_has(old_file: Path, store: SqlBankStore) -> None:
    """A bank the store already has keeps its settings there; only entries it lacks are added."""
    store.create_bank(Bank("KNOWN", pdq_threshold=5, description="mine"))
    (mine,) = store.add_entries([Entry("KNOWN", "pdq", PDQ_A, label="kept")])
    report = adopt_banks(old_file, store)
    assert (report.banks_adopted, report.banks_skipped) == (2, 1)
    assert (report.entries_adopted, report.entries_skipped) == (3, 1)
    known = store.get_bank("KNOWN")
    assert (known.pdq_threshold, known.description) == (5, "mine")
    assert store.get_entry(mine).label == "kept"
    assert store.entry_counts() == {"EMPTY": 0, "IGNORE_ME": 2, "KNOWN": 2}


def test_adopt_leaves_the_file_as_it_was(old_file: Path, store: SqlBankStore) -> None:
    before = digest(old_file)
    files = sorted(p.name for p in old_file.parent.iterdir())
    adopt_banks(old_file, store)
    adopt_banks(old_file, store)
    assert digest(old_file) == before
    assert sorted(p.name for p in old_file.parent.iterdir()) == files  # no -wal, no -shm


def test_adopt_many_entries(tmp_path: Path, store: SqlBankStore) -> None:
    sigs = [secrets.token_hex(32) for _ in range(6_000)]  # several store batches
    path = write_old_bank_file(
        tmp_path / "banks.sqlite3", [Bank("BULK")], [Entry("BULK", "pdq", s) for s in sigs]
    )
    assert adopt_banks(path, store).entries_adopted == 6_000
    assert [e.signal for e in store.iter_entries("BULK")] == sigs
    assert adopt_banks(path, store).entries_skipped == 6_000


def test_open_bank_store_adopts_once(old_file: Path, tmp_path: Path) -> None:
    data = old_file.parent
    url = f"sqlite:///{tmp_path / 'auto.sqlite3'}"
    before = digest(old_file)
    with open_bank_store(data, url) as s:
        assert s.entry_counts() == {"EMPTY": 0, "IGNORE_ME": 2, "KNOWN": 2}
        s.delete_bank("EMPTY")
    with open_bank_store(data, url) as s:  # has banks now: not adopted again
        assert s.entry_counts() == {"IGNORE_ME": 2, "KNOWN": 2}
    assert digest(old_file) == before


# -- hostile files ---------------------------------------------------------------------------


def _garbage(path: Path) -> None:
    path.write_bytes(b"this is not sqlite" * 300)


def _truncated(path: Path) -> None:
    sigs = [secrets.token_hex(32) for _ in range(3_000)]
    write_old_bank_file(path, [Bank("A")], [Entry("A", "pdq", s) for s in sigs])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _header_only(path: Path) -> None:
    write_old_bank_file(path, [Bank("A")], [Entry("A", "pdq", PDQ_A)])
    path.write_bytes(path.read_bytes()[:100])


def _other_database(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE reports (id INTEGER PRIMARY KEY, body TEXT)")
    db.commit()
    db.close()


def _missing_columns(path: Path) -> None:
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE schema_version (version INTEGER);"
        "INSERT INTO schema_version VALUES (1);"
        "CREATE TABLE banks (id INTEGER PRIMARY KEY, name TEXT);"
        "CREATE TABLE entries (id INTEGER PRIMARY KEY, bank_id INTEGER, signal TEXT);"
    )
    db.close()


def _newer(path: Path) -> None:
    write_old_bank_file(path, [Bank("A")], version=2)


def _bad_role(path: Path) -> None:
    write_old_bank_file(path, [Bank("A")])
    db = sqlite3.connect(path)
    db.execute("PRAGMA ignore_check_constraints = ON")
    db.execute("UPDATE banks SET role = 'block'")
    db.commit()
    db.close()


def _bad_name(path: Path) -> None:
    write_old_bank_file(path, [Bank("lower case\nname")])


def _bad_signal(path: Path) -> None:
    write_old_bank_file(path, [Bank("A")], [Entry("A", "pdq", PDQ_A), Entry("A", "pdq", "xyz")])


def _blob_label(path: Path) -> None:
    write_old_bank_file(path, [Bank("A")], [Entry("A", "pdq", PDQ_A)])
    db = sqlite3.connect(path)
    db.execute("UPDATE entries SET label = ?", (b"\x00\x01",))
    db.commit()
    db.close()


def _orphan_entry(path: Path) -> None:
    write_old_bank_file(path, [Bank("A")], [Entry("A", "pdq", PDQ_A)])
    db = sqlite3.connect(path)
    db.execute("UPDATE entries SET bank_id = 99")
    db.commit()
    db.close()


HOSTILE: dict[str, tuple[Callable[[Path], None], str]] = {
    "garbage": (_garbage, "not a usable old Tipline bank file: file is not a database"),
    "truncated": (_truncated, "not a usable old Tipline bank file"),
    "header only": (_header_only, "not a usable old Tipline bank file"),
    "empty": (lambda p: p.write_bytes(b""), "no schema_version table"),
    "other database": (_other_database, "no schema_version table"),
    "missing columns": (_missing_columns, "table banks lacks role, pdq_threshold"),
    "newer schema": (_newer, "written by a newer Tipline (schema 2"),
    "bad role": (_bad_role, "bank A: role 'block' is not alert or ignore"),
    "bad name": (_bad_name, "invalid bank name"),
    "bad signal": (_bad_signal, "entry 2: not a valid pdq signal"),
    "blob label": (_blob_label, "entry 1: a text field holds something else"),
    "orphan entry": (_orphan_entry, "entry 1: belongs to no bank"),
}


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_hostile_file_is_a_clear_error(kind: str, tmp_path: Path, store: SqlBankStore) -> None:
    make, message = HOSTILE[kind]
    path = tmp_path / "banks.sqlite3"
    make(path)
    with pytest.raises(BankError, match="^" + str(path).replace("\\", "\\\\")) as info:
        adopt_banks(path, store)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert store.list_banks() == []  # checked whole before anything is written


# -- the CLI ---------------------------------------------------------------------------------


def import_banks(data: Path, url: str, *args: str) -> Result:
    cmd = ["--data-dir", str(data), "db", "import-banks", "--database-url", url, *args]
    return runner.invoke(cli_app.app, cmd)


def test_cli_import_banks_adopts_then_adds_nothing(
    old_file: Path, db_url_sqlite: str, tmp_path: Path
) -> None:
    before = digest(old_file)
    res = import_banks(old_file.parent, db_url_sqlite)
    assert res.exit_code == 0, res.output
    assert "3 bank(s) adopted, 0 already there; 4 entries adopted, 0 already there" in res.output
    res = import_banks(tmp_path / "elsewhere", db_url_sqlite, "--from", str(old_file))
    assert res.exit_code == 0, res.output
    assert "0 bank(s) adopted, 3 already there; 0 entries adopted, 4 already there" in res.output
    assert "(4 entries in the service database" in res.output
    assert digest(old_file) == before
    with SqlBankStore(db_url_sqlite) as s:
        assert s.entry_counts() == {"EMPTY": 0, "IGNORE_ME": 2, "KNOWN": 2}


def test_cli_import_banks_without_a_file(tmp_path: Path, db_url_sqlite: str) -> None:
    res = import_banks(tmp_path / "data", db_url_sqlite)
    assert res.exit_code == 2
    assert "error: no bank file at" in res.output and "Traceback" not in res.output


@pytest.mark.parametrize("kind", ["garbage", "truncated", "other database", "bad signal"])
def test_cli_import_banks_hostile_file(kind: str, tmp_path: Path, db_url_sqlite: str) -> None:
    make, message = HOSTILE[kind]
    path = tmp_path / "data" / "banks.sqlite3"
    path.parent.mkdir()
    make(path)
    res = import_banks(path.parent, db_url_sqlite)
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert res.exception is None or isinstance(res.exception, SystemExit)
    with SqlBankStore(db_url_sqlite) as s:
        assert s.list_banks() == []


def test_cli_bank_list_with_a_corrupt_old_file(tmp_path: Path) -> None:
    """`tipline bank` adopts an old file in the data directory by itself: a bad one stops it
    with one line saying what to do, not a traceback (and not silently without its banks)."""
    data = tmp_path / "data"
    data.mkdir()
    _garbage(data / "banks.sqlite3")
    url = f"sqlite:///{tmp_path / 'auto.sqlite3'}"
    res = runner.invoke(
        cli_app.app, ["--data-dir", str(data), "bank", "list"], env={"TIPLINE_DATABASE_URL": url}
    )
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert "move it out of the data directory" in lines[0]


def test_cli_bank_list_adopts_an_old_file(old_file: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'auto.sqlite3'}"
    env = {"TIPLINE_DATABASE_URL": url}
    res = runner.invoke(cli_app.app, ["--data-dir", str(old_file.parent), "bank", "list"], env=env)
    assert res.exit_code == 0, res.output
    assert {"KNOWN", "IGNORE_ME", "EMPTY"} <= set(res.output.split())
