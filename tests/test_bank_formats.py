"""Hash list import/export. Every hash here is random hex or a fixed benign stand-in."""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tipline.banks import (
    Bank,
    Entry,
    detect_format,
    import_file,
    parse_hash_list,
    write_hash_list,
)
from tipline.banks.formats import MAX_LINE_BYTES
from tipline.errors import BankError, BankNotFoundError, MalformedLineError
from tipline.store.banks import SqlBankStore, open_bank_store

PDQ_A = "a" * 64
MD5_A = "0123456789abcdef" * 2
SHA1_A = "0123456789" * 4

HEX_LEN = {"pdq": 64, "md5": 32, "sha1": 40, "sha256": 64}

hex_signal = st.sampled_from(sorted(HEX_LEN)).flatmap(
    lambda t: st.tuples(
        st.just(t),
        st.text(alphabet="0123456789abcdef", min_size=HEX_LEN[t], max_size=HEX_LEN[t]),
    )
)
# Any text that survives UTF-8: commas, quotes, newlines, emoji, right-to-left...
free_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)),
    max_size=40,
)
csv_text = st.one_of(
    free_text,
    st.sampled_from(
        ["a,b", 'say "hi"', '"', ",", "x\ny", "r\r\nn", "名前", "🙂", " lead", "\ttab"]
    ),
)
tag = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc")),
    min_size=1,
    max_size=10,
).filter(lambda t: t.split() == [t])


@st.composite
def entries(draw: st.DrawFn, text: st.SearchStrategy[str] = free_text) -> list[Entry]:
    pairs = draw(st.lists(hex_signal, max_size=15, unique=True))
    return [
        Entry(
            bank="",
            signal_type=t,
            signal=s,
            label=draw(text),
            source=draw(text),
            note=draw(free_text),
            added_at=draw(st.floats(min_value=1, max_value=4e9)),
            enabled=draw(st.booleans()),
            id=i + 1,
            tags=draw(st.lists(tag, max_size=4)),
        )
        for i, (t, s) in enumerate(pairs)
    ]


def roundtrip(items: list[Entry], fmt: str, **kw: object) -> list[Entry]:
    buf = io.StringIO()
    assert write_hash_list(items, fmt, buf) == len(items)
    data = buf.getvalue().encode("utf-8")
    result = parse_hash_list(io.BytesIO(data), fmt, **kw)  # type: ignore[arg-type]
    assert result.errors == []
    return result.entries


# -- round trips -----------------------------------------------------------------------------


@given(entries())
def test_roundtrip_jsonl(items: list[Entry]) -> None:
    got = roundtrip(items, "jsonl")
    for e in items:
        e.id = None
        e.bank = ""
    assert got == items


@given(entries(csv_text))
def test_roundtrip_te_csv(items: list[Entry]) -> None:
    got = roundtrip(items, "te-csv")
    assert [(e.signal_type, e.signal, e.label, e.source, e.tags) for e in got] == [
        (e.signal_type, e.signal, e.label, e.source, e.tags) for e in items
    ]


@given(entries())
def test_roundtrip_te(items: list[Entry]) -> None:
    got = roundtrip(items, "te")
    assert [(e.signal_type, e.signal) for e in got] == [(e.signal_type, e.signal) for e in items]


@given(st.sampled_from(sorted(HEX_LEN)), st.data())
def test_roundtrip_hex(kind: str, data: st.DataObject) -> None:
    sigs = data.draw(
        st.lists(
            st.text(alphabet="0123456789abcdef", min_size=HEX_LEN[kind], max_size=HEX_LEN[kind]),
            max_size=10,
        )
    )
    items = [Entry("", kind, s) for s in sigs]
    got = roundtrip(items, "hex", default_signal_type=kind)
    assert [(e.signal_type, e.signal) for e in got] == [(kind, s) for s in sigs]
    if kind in ("md5", "sha1"):  # guessable from the length
        assert [e.signal for e in roundtrip(items, "hex")] == sigs


_EXAMPLE = itertools.count()


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)  # a real database per example: time varies with the machine
@given(entries(csv_text), st.sampled_from(["jsonl", "te-csv", "te"]))
def test_roundtrip_through_store(tmp_path: Path, items: list[Entry], fmt: str) -> None:
    # one bank database for every example (migrating one per example is slow): new banks each
    n = next(_EXAMPLE)
    with open_bank_store(tmp_path / "data") as store:
        store.create_bank(Bank(f"SRC_{n}"))
        store.create_bank(Bank(f"DST_{n}"))
        for e in items:
            e.bank = f"SRC_{n}"
        store.add_entries(items)
        path = tmp_path / f"out-{n}.{fmt}"
        with path.open("w", encoding="utf-8", newline="") as f:
            write_hash_list(store.iter_entries(f"SRC_{n}"), fmt, f)
        report = import_file(store, f"DST_{n}", path, fmt=fmt)
        assert report.added == len(items) and report.duplicates == 0
        src = list(store.iter_entries(f"SRC_{n}"))
        dst = list(store.iter_entries(f"DST_{n}"))
        assert [(e.signal_type, e.signal) for e in dst] == [(e.signal_type, e.signal) for e in src]
        if fmt != "te":
            assert [(e.label, e.source, e.tags) for e in dst] == [
                (e.label, e.source, e.tags) for e in src
            ]


def test_write_hex_refuses_mixed_types() -> None:
    with pytest.raises(BankError, match="one signal type"):
        write_hash_list([Entry("", "pdq", PDQ_A), Entry("", "md5", MD5_A)], "hex", io.StringIO())


def test_te_csv_header_written() -> None:
    buf = io.StringIO()
    write_hash_list([Entry("", "pdq", PDQ_A, label="DEMO-benign-stand-in")], "te-csv", buf)
    assert buf.getvalue().splitlines() == [
        "signal_type,signal_str,collab,category,tags",
        f"pdq,{PDQ_A},,DEMO-benign-stand-in,",
    ]


# -- parsing ---------------------------------------------------------------------------------


def test_te_format_details() -> None:
    text = (
        "# a comment\n"
        "\n"
        f"pdq {PDQ_A.upper()}\n"
        f"  video_md5   {MD5_A}  \r\n"
        f"{SHA1_A}\n"  # bare, guessable
        f"sha256 {'c' * 64}"  # no final newline
    )
    r = parse_hash_list(text, "te")
    assert r.errors == []
    assert [(e.signal_type, e.signal) for e in r.entries] == [
        ("pdq", PDQ_A),
        ("md5", MD5_A),
        ("sha1", SHA1_A),
        ("sha256", "c" * 64),
    ]
    assert all(e.bank == "" and e.id is None for e in r.entries)


def test_te_bare_with_default_type() -> None:
    r = parse_hash_list([PDQ_A, f"md5 {MD5_A}"], "te", default_signal_type="pdq")
    assert [(e.signal_type, e.signal) for e in r.entries] == [("pdq", PDQ_A), ("md5", MD5_A)]


def test_hex_64_needs_signal_type() -> None:
    r = parse_hash_list(f"{MD5_A}\n{PDQ_A}\n", "hex", source_name="bank.txt")
    assert [e.signal for e in r.entries] == [MD5_A]
    (err,) = r.errors
    assert err.line_no == 2
    assert str(err).startswith("bank.txt:2: ") and "--signal-type" in str(err)


def test_hex_rejects_typed_lines() -> None:
    r = parse_hash_list(f"pdq {PDQ_A}\n", "hex", default_signal_type="pdq")
    assert r.entries == [] and r.errors[0].line_no == 1


def test_te_csv_details() -> None:
    text = (
        "\ufeffsignal_type,signal_str,collab,category,tags\n"
        f'pdq,{PDQ_A},Collab One,"stand-in, benign",a b\n'
        f"video_md5,{MD5_A}\n"  # type and signal only
        "\n"
        f'md5,{"e" * 32},c,"multi\nline label",\n'
        f"sha1,{SHA1_A},c,l\n"  # 4 columns: wrong
        f"sha1,{SHA1_A},c,l,t,extra\n"  # 6 columns: wrong
    )
    r = parse_hash_list(text, "te-csv")
    got = [(e.signal_type, e.signal, e.source, e.label, e.tags) for e in r.entries]
    assert got == [
        ("pdq", PDQ_A, "Collab One", "stand-in, benign", ["a", "b"]),
        ("md5", MD5_A, "", "", []),
        ("md5", "e" * 32, "c", "multi\nline label", []),
    ]
    assert [e.line_no for e in r.errors] == [7, 8]
    assert "expected 5 CSV columns" in str(r.errors[0])


def test_te_csv_without_header() -> None:
    r = parse_hash_list(f"pdq,{PDQ_A},,,\n", "te-csv")
    assert r.errors == [] and r.entries[0].signal == PDQ_A


def test_te_csv_bad_quoting_then_recovers() -> None:
    text = f'pdq,{PDQ_A},"x"y,l,\nmd5,{MD5_A},,,\n'
    r = parse_hash_list(text, "te-csv")
    assert [e.line_no for e in r.errors] == [1]
    assert [e.signal for e in r.entries] == [MD5_A]


def test_jsonl_details() -> None:
    lines = [
        f'{{"signal_type": "pdq", "signal": "{PDQ_A}", "label": "l", "tags": "a b", "id": 5}}',
        "",
        f'{{"signal_type": "md5", "signal": "{MD5_A}", "extra": [1, 2]}}',
        "[1, 2]",
        "{not json",
        '{"signal_type": "pdq"}',
        f'{{"signal_type": "pdq", "signal": "{PDQ_A}", "enabled": "yes"}}',
        f'{{"signal_type": "pdq", "signal": "{PDQ_A}", "added_at": NaN}}',
        f'{{"signal_type": "pdq", "signal": "{PDQ_A}", "tags": [1]}}',
        f'{{"signal_type": "pdq", "signal": "{PDQ_A}", "label": 7}}',
        "[" * 100_000 + "]" * 100_000,
    ]
    r = parse_hash_list(lines, "jsonl")
    assert [(e.signal_type, e.label, e.tags, e.id) for e in r.entries] == [
        ("pdq", "l", ["a", "b"], None),
        ("md5", "", [], None),
    ]
    assert [e.line_no for e in r.errors] == [4, 5, 6, 7, 8, 9, 10, 11]


def test_invalid_utf8_and_long_lines() -> None:
    data = (
        f"pdq {PDQ_A}\n".encode()
        + b"md5 \xff\xfe"
        + b"0" * 28
        + b"\n"
        + b"x" * (MAX_LINE_BYTES + 10)
        + b"\n"
        + f"md5 {MD5_A}\n".encode()
        + b"y" * (3 * MAX_LINE_BYTES)  # overlong last line, no newline
    )
    for src in (data, io.BytesIO(data)):
        r = parse_hash_list(src, "te", source_name="f.te")
        assert [e.signal for e in r.entries] == [PDQ_A, MD5_A]
        assert [e.line_no for e in r.errors] == [2, 3, 5]
        assert "UTF-8" in str(r.errors[0]) and "longer than" in str(r.errors[1])


def test_invalid_utf8_in_csv_and_jsonl() -> None:
    csv_data = f"pdq,{PDQ_A},,,\n".encode() + b"md5,\xff,,,\n" + f"md5,{MD5_A},,,\n".encode()
    r = parse_hash_list(csv_data, "te-csv")
    assert [e.line_no for e in r.errors] == [2] and len(r.entries) == 2
    jl = b'{"signal_type": "md5", "signal": "\xff"}\n'
    assert parse_hash_list(jl, "jsonl").errors[0].line_no == 1


def test_unknown_format() -> None:
    with pytest.raises(BankError, match="unknown hash list format"):
        parse_hash_list("", "xml")


@pytest.mark.parametrize(
    ("name", "head", "want"),
    [
        ("a.jsonl", b"", "jsonl"),
        ("a.csv", b"", "te-csv"),
        ("a.txt", b"# hi\n\n" + f"pdq {PDQ_A}\n".encode(), "te"),
        ("a.txt", f"{MD5_A}\n".encode(), "te"),
        ("simple.pdq.te", f"{PDQ_A},123,x\n".encode(), "te-csv"),
        ("a.te", b'{"signal_type": "pdq"}\n', "jsonl"),
        ("list", b"signal_type,signal_str,collab,category,tags\n", "te-csv"),
        ("empty.txt", b"", "te"),
    ],
)
def test_detect_format(name: str, head: bytes, want: str) -> None:
    assert detect_format(Path(name), head) == want


# -- import_file -----------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlBankStore]:
    s = open_bank_store(tmp_path / "data")
    s.create_bank(Bank("KNOWN"))
    yield s
    s.close()


def test_import_file_counts_duplicates(store: SqlBankStore, tmp_path: Path) -> None:
    p = tmp_path / "bank.txt"
    p.write_text(f"pdq {PDQ_A}\nmd5 {MD5_A}\npdq {PDQ_A.upper()}\n")
    r = import_file(store, "KNOWN", p, label="DEMO-benign-stand-in", source="test")
    assert (r.added, r.duplicates, r.skipped_lines, r.format) == (2, 1, [], "te")
    assert {(e.label, e.source) for e in store.iter_entries("KNOWN")} == {
        ("DEMO-benign-stand-in", "test")
    }
    r = import_file(store, "KNOWN", p)
    assert (r.added, r.duplicates) == (0, 3)


def test_import_malformed_imports_nothing(store: SqlBankStore, tmp_path: Path) -> None:
    p = tmp_path / "bank.txt"
    good = [f"pdq {i:064x}" for i in range(1, 30_001)]  # spans several insert batches
    lines = [*good[:6], "pdq nothex", *good[6:], "md5 short"]
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(MalformedLineError) as info:
        import_file(store, "KNOWN", p)
    assert info.value.line_no == 7
    assert str(info.value).startswith("bank.txt:7: not a valid pdq signal")
    assert store.count_entries("KNOWN") == 0

    r = import_file(store, "KNOWN", p, skip_bad_lines=True)
    assert r.added == 30_000
    assert [(e.line_no, e.source) for e in r.skipped_lines] == [
        (7, "bank.txt"),
        (len(lines), "bank.txt"),
    ]


def test_import_binary_garbage(store: SqlBankStore, tmp_path: Path) -> None:
    p = tmp_path / "garbage.bin"
    p.write_bytes(bytes(range(256)) * 50 + b"\n" + f"pdq {PDQ_A}\n".encode())
    with pytest.raises(MalformedLineError):
        import_file(store, "KNOWN", p, fmt="te")
    r = import_file(store, "KNOWN", p, fmt="te", skip_bad_lines=True)
    assert r.added == 1 and r.skipped_lines


def test_import_hex_ambiguous(store: SqlBankStore, tmp_path: Path) -> None:
    p = tmp_path / "list.txt"
    p.write_text(f"{PDQ_A}\n")
    with pytest.raises(MalformedLineError, match=r"list.txt:1: .*--signal-type"):
        import_file(store, "KNOWN", p, fmt="hex")
    assert import_file(store, "KNOWN", p, fmt="hex", default_signal_type="pdq").added == 1


def test_import_missing_bank_or_file(store: SqlBankStore, tmp_path: Path) -> None:
    p = tmp_path / "x.txt"
    p.write_text(f"pdq {PDQ_A}\n")
    with pytest.raises(BankNotFoundError):
        import_file(store, "NOPE", p)
    with pytest.raises(BankError, match="cannot read"):
        import_file(store, "KNOWN", tmp_path / "missing.txt")
