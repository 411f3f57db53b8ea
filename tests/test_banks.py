"""The bank store (the service database, SQLite here; tests/test_store.py runs the same tests
on PostgreSQL too). All signals here are random hex or fixed benign stand-ins."""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tipline.banks import Bank, BankStore, Entry
from tipline.errors import BankError, BankNotFoundError, InvalidSignalError
from tipline.store import migrations
from tipline.store.banks import SqlBankStore, open_bank_store

PDQ_A = "a" * 64
PDQ_B = "b" * 64
MD5_A = "0123456789abcdef" * 2


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlBankStore]:
    s = open_bank_store(tmp_path / "data")
    yield s
    s.close()


def pdq() -> str:
    return secrets.token_hex(32)


def test_open_store_creates_dir_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TIPLINE_DATABASE_URL", raising=False)
    with open_bank_store(tmp_path / "a" / "b") as s:
        assert isinstance(s, SqlBankStore)
        _: BankStore = s  # satisfies the protocol
    assert (tmp_path / "a" / "b" / "tipline.sqlite3").is_file()
    assert not (tmp_path / "a" / "b" / "banks.sqlite3").exists()  # no old-style file


def test_schema_wal_and_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TIPLINE_DATABASE_URL", raising=False)
    open_bank_store(tmp_path).close()
    path = tmp_path / "tipline.sqlite3"
    assert migrations.current(f"sqlite:///{path}") == migrations.head()  # upgraded on open
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # the signal_key index serves lookups and the per-bank dedupe (migration 0013); it is not
    # unique: HMA makes a new content item each time the same hash is added (migration 0005)
    indexes = {
        r[1]: ([c[2] for c in db.execute(f"PRAGMA index_info('{r[1]}')")], r[2])
        for r in db.execute("PRAGMA index_list('bank_entries')")
    }
    assert indexes["ix_bank_entries_signal_key"] == (["signal_key"], 0)
    assert "ix_bank_entries_signal" not in indexes
    assert "ix_bank_entries_bank_id" in {
        r[1] for r in db.execute("PRAGMA index_list('bank_entries')")
    }
    db.close()


def test_not_a_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TIPLINE_DATABASE_URL", raising=False)
    (tmp_path / "tipline.sqlite3").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(BankError, match="cannot open the database"):
        open_bank_store(tmp_path)


def test_bank_crud(store: SqlBankStore) -> None:
    b = store.create_bank(Bank("KNOWN_PDQ", description="stand-in"))
    assert b.created_at > 0 and b.role == "alert" and b.pdq_threshold == 31 and b.enabled
    assert store.get_bank("KNOWN_PDQ") == b
    store.create_bank(Bank("IGNORE_ME", role="ignore", pdq_threshold=10))
    assert [x.name for x in store.list_banks()] == ["IGNORE_ME", "KNOWN_PDQ"]

    b.pdq_threshold = 0
    b.role = "ignore"
    b.enabled = False
    b.description = "changed"
    got = store.update_bank(b)
    assert (got.pdq_threshold, got.role, got.enabled, got.description) == (
        0,
        "ignore",
        False,
        "changed",
    )
    assert store.get_bank("KNOWN_PDQ") == got

    store.add_entries([Entry("KNOWN_PDQ", "pdq", PDQ_A), Entry("KNOWN_PDQ", "pdq", PDQ_B)])
    assert store.delete_bank("KNOWN_PDQ") == 2
    with pytest.raises(BankNotFoundError):
        store.get_bank("KNOWN_PDQ")
    assert list(store.iter_entries()) == []
    assert store.entry_counts() == {"IGNORE_ME": 0}


def test_duplicate_bank(store: SqlBankStore) -> None:
    store.create_bank(Bank("A"))
    with pytest.raises(BankError, match="already exists"):
        store.create_bank(Bank("A"))


@pytest.mark.parametrize("name", ["", "lower", "1ABC", "A-B", "A B", "É", "A\n", "A;DROP"])
def test_bad_names(store: SqlBankStore, name: str) -> None:
    with pytest.raises(BankError, match="invalid bank name"):
        store.create_bank(Bank(name))


@pytest.mark.parametrize("threshold", [-1, 256, 1000])
def test_threshold_range(store: SqlBankStore, threshold: int) -> None:
    with pytest.raises(BankError, match="threshold"):
        store.create_bank(Bank("A", pdq_threshold=threshold))
    store.create_bank(Bank("B"))
    with pytest.raises(BankError, match="threshold"):
        store.update_bank(Bank("B", pdq_threshold=threshold))
    assert store.get_bank("B").pdq_threshold == 31


def test_threshold_bounds_ok(store: SqlBankStore) -> None:
    assert store.create_bank(Bank("LO", pdq_threshold=0)).pdq_threshold == 0
    assert store.create_bank(Bank("HI", pdq_threshold=255)).pdq_threshold == 255


def test_bad_role(store: SqlBankStore) -> None:
    with pytest.raises(BankError, match="role"):
        store.create_bank(Bank("A", role="block"))  # type: ignore[arg-type]


def test_missing_bank_errors(store: SqlBankStore) -> None:
    for call in (
        lambda: store.get_bank("NOPE"),
        lambda: store.update_bank(Bank("NOPE")),
        lambda: store.delete_bank("NOPE"),
        lambda: store.count_entries("NOPE"),
        lambda: store.iter_entries("NOPE"),
        lambda: store.add_entries([Entry("NOPE", "pdq", PDQ_A)]),
        lambda: store.remove_entries("NOPE", [1]),
    ):
        with pytest.raises(BankNotFoundError):
            call()


def test_entries_normalised_and_roundtrip(store: SqlBankStore) -> None:
    store.create_bank(Bank("A"))
    ids = store.add_entries(
        [
            Entry("A", "PDQ", "  " + PDQ_A.upper() + "\n", label="DEMO-benign-stand-in"),
            Entry("A", "video_md5", MD5_A, source="test", note="n", tags=["x", "y z"]),
        ]
    )
    got = list(store.iter_entries("A"))
    assert [e.id for e in got] == ids
    assert got[0].signal_type == "pdq" and got[0].signal == PDQ_A
    assert got[0].label == "DEMO-benign-stand-in" and got[0].added_at > 0
    assert got[1].signal_type == "md5"  # alias stored under its canonical name
    assert got[1].tags == ["x", "y", "z"]
    assert (got[1].source, got[1].note, got[1].bank) == ("test", "n", "A")
    assert store.get_entry(ids[1]) == got[1]
    assert [e.id for e in store.lookup("video_md5", MD5_A.upper())] == [ids[1]]


def test_invalid_signal_adds_nothing(store: SqlBankStore) -> None:
    store.create_bank(Bank("A"))
    with pytest.raises(InvalidSignalError):
        store.add_entries([Entry("A", "pdq", PDQ_A), Entry("A", "pdq", "xyz")])
    with pytest.raises(InvalidSignalError):
        store.add_entries([Entry("A", "nosuchtype", PDQ_A)])
    assert store.count_entries("A") == 0


def test_generator_error_rolls_back(store: SqlBankStore) -> None:
    store.create_bank(Bank("A"))

    def gen():  # type: ignore[no-untyped-def]
        for _ in range(25_000):  # spans several insert batches
            yield Entry("A", "pdq", pdq())
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        store.add_entries(gen())
    assert store.count_entries("A") == 0


def test_ids_unique_across_banks_and_never_reused(store: SqlBankStore) -> None:
    store.create_bank(Bank("A"))
    store.create_bank(Bank("B"))
    a = store.add_entries([Entry("A", "pdq", pdq()) for _ in range(5)])
    b = store.add_entries([Entry("B", "pdq", pdq()) for _ in range(5)])
    assert len(set(a) | set(b)) == 10
    assert store.remove_entries("A", a[-2:]) == 2
    store.delete_bank("B")
    c = store.add_entries([Entry("A", "pdq", pdq())])
    assert c[0] > max(a + b)


def test_dedupe(store: SqlBankStore) -> None:
    store.create_bank(Bank("A"))
    store.create_bank(Bank("B"))
    first = store.add_entries([Entry("A", "pdq", PDQ_A), Entry("A", "md5", MD5_A)])
    again = store.add_entries(
        [
            Entry("A", "pdq", PDQ_A.upper(), label="other"),
            Entry("A", "pdq", PDQ_B),
            Entry("A", "pdq", PDQ_B),
            Entry("A", "video_md5", MD5_A),
        ]
    )
    assert again[0] == first[0] and again[3] == first[1]
    assert again[1] == again[2] and again[1] not in first
    assert store.count_entries("A") == 3
    assert store.get_entry(first[0]).label == ""  # the existing entry is left as it was
    # the same signal in another bank is a separate entry
    (other,) = store.add_entries([Entry("B", "pdq", PDQ_A)])
    assert other not in first
    assert sorted(e.bank for e in store.lookup("pdq", PDQ_A)) == ["A", "B"]


def test_dedupe_across_batches(store: SqlBankStore) -> None:
    store.create_bank(Bank("A"))
    sigs = [pdq() for _ in range(12_000)]
    ids = store.add_entries(Entry("A", "pdq", s) for s in sigs)
    assert ids == sorted(ids) and len(set(ids)) == len(sigs)
    mixed = sigs[::7] + [pdq() for _ in range(100)]
    ids2 = store.add_entries(Entry("A", "pdq", s) for s in mixed)
    by_sig = dict(zip(sigs, ids, strict=True))
    assert ids2[: len(sigs[::7])] == [by_sig[s] for s in sigs[::7]]
    assert store.count_entries("A") == 12_100


def test_enable_disable(store: SqlBankStore) -> None:
    store.create_bank(Bank("A"))
    store.create_bank(Bank("B"))
    a = store.add_entries([Entry("A", "pdq", pdq()) for _ in range(3)])
    b = store.add_entries([Entry("B", "pdq", pdq()), Entry("B", "pdq", pdq(), enabled=False)])
    assert store.set_entries_enabled("A", [a[0], b[0]], False) == 1  # b[0] is not in A
    assert [e.id for e in store.iter_entries("A", enabled_only=True)] == a[1:]
    assert [e.id for e in store.iter_entries("A")] == a
    assert [e.id for e in store.iter_entries(None, enabled_only=True)] == [a[1], a[2], b[0]]
    assert not store.get_entry(b[1]).enabled

    bank_b = store.get_bank("B")
    bank_b.enabled = False
    store.update_bank(bank_b)
    assert [e.id for e in store.iter_entries(None, enabled_only=True)] == a[1:]
    assert list(store.iter_entries("B", enabled_only=True)) == []
    assert len(list(store.iter_entries("B"))) == 2
    assert store.lookup("pdq", store.get_entry(b[0]).signal) == []
    assert len(store.lookup("pdq", store.get_entry(b[0]).signal, enabled_only=False)) == 1

    assert store.set_entries_enabled("A", [a[0]], True) == 1
    assert [e.id for e in store.iter_entries("A", enabled_only=True)] == a


def test_remove_entries_only_from_that_bank(store: SqlBankStore) -> None:
    store.create_bank(Bank("A"))
    store.create_bank(Bank("B"))
    a = store.add_entries([Entry("A", "pdq", pdq()) for _ in range(3)])
    b = store.add_entries([Entry("B", "pdq", pdq())])
    assert store.remove_entries("A", [a[0], b[0], 999_999]) == 1
    assert store.count_entries("A") == 2 and store.count_entries("B") == 1


def test_iter_entries_paging(store: SqlBankStore) -> None:
    store.create_bank(Bank("A"))
    ids = store.add_entries([Entry("A", "pdq", pdq()) for _ in range(30)])
    assert [e.id for e in store.iter_entries("A", limit=10)] == ids[:10]
    assert [e.id for e in store.iter_entries("A", limit=5, offset=25)] == ids[25:]
    assert [e.id for e in store.iter_entries("A", offset=28)] == ids[28:]


def test_persistence(tmp_path: Path) -> None:
    with open_bank_store(tmp_path) as s:
        s.create_bank(Bank("A", pdq_threshold=12))
        (i,) = s.add_entries([Entry("A", "pdq", PDQ_A, tags=["t"])])
    with open_bank_store(tmp_path) as s:
        assert s.get_bank("A").pdq_threshold == 12
        e = s.get_entry(i)
        assert (e.signal, e.tags) == (PDQ_A, ["t"])


def test_bulk_import_assigns_unique_ids(store: SqlBankStore) -> None:
    # speed is measured in bench/, not asserted here (machines are noisy)
    store.create_bank(Bank("BULK"))
    entries = [Entry("BULK", "pdq", pdq()) for _ in range(50_000)]
    ids = store.add_entries(entries)
    assert len(set(ids)) == 50_000
    assert store.count_entries("BULK") == 50_000
