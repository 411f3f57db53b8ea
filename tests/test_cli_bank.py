"""`tipline bank ...` through the CLI. Hashes are random hex or of benign generated images."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

import tipline.cli.app as cli_app
from tipline.store.banks import open_bank_store as open_store

try:
    cli_app._register()
except ImportError:  # the other command modules are not there yet: register ours alone
    import tipline.cli.bank  # noqa: F401

app = cli_app.app
runner = CliRunner()

PDQ_A = "a" * 64
PDQ_B = "b" * 64
MD5_A = "0123456789abcdef" * 2
SHA1_A = "0123456789" * 4


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return tmp_path / "data"


def run(data: Path, *args: str, input: str | None = None) -> Result:
    return runner.invoke(app, ["--data-dir", str(data), "bank", *args], input=input)


def ok(data: Path, *args: str, input: str | None = None) -> Result:
    res = run(data, *args, input=input)
    assert res.exit_code == 0, (res.output, res.exception)
    return res


def fails(data: Path, *args: str, match: str) -> Result:
    res = run(data, *args)
    assert res.exit_code != 0
    text = res.output + (str(res.exception) if res.exception else "")
    assert match in text, text
    if isinstance(res.exception, SystemExit) or res.exception is None:
        assert res.exit_code == 2
    return res


def banks_json(data: Path) -> dict[str, dict[str, Any]]:
    return {b["name"]: b for b in json.loads(ok(data, "list", "--json").stdout)}


def entries_json(data: Path, name: str) -> list[dict[str, Any]]:
    return json.loads(ok(data, "entries", name, "--json", "--limit", "0").stdout)  # type: ignore[no-any-return]


def test_help_lists_commands(data: Path) -> None:
    out = ok(data, "--help").stdout
    for cmd in ("create", "list", "import", "export", "add", "remove", "delete", "set", "entries"):
        assert cmd in out
    assert "--skip-bad-lines" in ok(data, "import", "--help").stdout


def test_create_list_set(data: Path) -> None:
    assert "no banks yet" in ok(data, "list").stdout
    ok(data, "create", "KNOWN_PDQ", "--description", "stand-in")
    ok(data, "create", "FP", "--role", "ignore", "--threshold", "8")
    b = banks_json(data)
    assert b["KNOWN_PDQ"]["role"] == "alert" and b["KNOWN_PDQ"]["pdq_threshold"] == 31
    assert b["KNOWN_PDQ"]["description"] == "stand-in" and b["KNOWN_PDQ"]["entries"] == 0
    assert b["FP"]["role"] == "ignore" and b["FP"]["pdq_threshold"] == 8

    table = ok(data, "list").stdout
    assert "KNOWN_PDQ" in table and "ignore" in table

    ok(data, "set", "KNOWN_PDQ", "--threshold", "20", "--role", "ignore", "--disable")
    b = banks_json(data)["KNOWN_PDQ"]
    assert (b["pdq_threshold"], b["role"], b["enabled"]) == (20, "ignore", False)
    ok(data, "set", "KNOWN_PDQ", "--enable", "--description", "new")
    b = banks_json(data)["KNOWN_PDQ"]
    assert (b["pdq_threshold"], b["enabled"], b["description"]) == (20, True, "new")


def test_create_errors(data: Path) -> None:
    fails(data, "create", "bad-name", match="invalid bank name")
    ok(data, "create", "A")
    fails(data, "create", "A", match="already exists")
    res = run(data, "create", "B", "--threshold", "256")
    assert res.exit_code == 2  # out of range, refused by the option parser
    res = run(data, "create", "B", "--role", "block")
    assert res.exit_code == 2
    fails(data, "set", "NOPE", "--threshold", "3", match="no bank named")


def test_add_entries_remove(data: Path) -> None:
    ok(data, "create", "A")
    res = ok(data, "add", "A", f"pdq:{PDQ_A}", MD5_A, "--label", "DEMO-benign-stand-in")
    assert "added 2" in res.stdout
    ok(data, "add", "A", PDQ_B, "--signal-type", "pdq", "--note", "n")
    res = ok(data, "add", "A", PDQ_B.upper(), "-t", "pdq")
    assert "added 0" in res.stdout and "1 already present" in res.stdout
    rows = entries_json(data, "A")
    assert [(r["signal_type"], r["signal"]) for r in rows] == [
        ("pdq", PDQ_A),
        ("md5", MD5_A),
        ("pdq", PDQ_B),
    ]
    assert rows[0]["label"] == "DEMO-benign-stand-in" and rows[2]["note"] == "n"

    table = ok(data, "entries", "A", "--limit", "2").stdout
    assert "showing 2 of 3" in table

    fails(data, "add", "A", PDQ_A, match="--signal-type")  # 64 hex: PDQ or SHA-256?
    fails(data, "add", "A", "pdq:xyz", match="not a valid pdq signal")
    fails(data, "add", "A", "--label", "x", match="at least one")
    fails(data, "add", "NOPE", f"pdq:{PDQ_A}", match="no bank named")

    res = ok(data, "remove", "A", str(rows[0]["id"]), "999999")
    assert "removed 1" in res.stdout
    assert len(entries_json(data, "A")) == 2
    fails(data, "remove", "A", "999999", match="none of those ids")


def test_import_export_roundtrip(data: Path, tmp_path: Path) -> None:
    src = tmp_path / "list.csv"
    src.write_text(
        "signal_type,signal_str,collab,category,tags\n"
        f'pdq,{PDQ_A},partner,"DEMO-benign-stand-in, ""quoted""",demo test\n'
        f"video_md5,{MD5_A},partner,DEMO-benign-stand-in,\n"
    )
    res = ok(data, "import", "NEW_BANK", str(src))
    assert "imported 2 new entries into NEW_BANK (new bank) from te-csv" in res.stdout

    for fmt, suffix in (("jsonl", ".jsonl"), ("te-csv", ".csv"), ("te", ".txt")):
        out = tmp_path / f"out{suffix}"
        ok(data, "export", "NEW_BANK", "-o", str(out))  # format from the extension
        ok(data, "import", f"COPY_{fmt.replace('-', '_').upper()}", str(out))
        copy = entries_json(data, f"COPY_{fmt.replace('-', '_').upper()}")
        assert [(r["signal_type"], r["signal"]) for r in copy] == [("pdq", PDQ_A), ("md5", MD5_A)]
        if fmt != "te":
            assert copy[0]["label"] == 'DEMO-benign-stand-in, "quoted"'
            assert copy[0]["tags"] == ["demo", "test"] and copy[0]["source"] == "partner"

    stdout = ok(data, "export", "NEW_BANK").stdout  # jsonl on stdout by default
    assert [json.loads(line)["signal"] for line in stdout.splitlines()] == [PDQ_A, MD5_A]
    stdout = ok(data, "export", "NEW_BANK", "--format", "hex", "--signal-type", "md5").stdout
    assert stdout.splitlines() == [MD5_A]
    fails(data, "export", "NEW_BANK", "--format", "hex", match="one signal type")
    fails(data, "export", "NOPE", match="no bank named")


def test_import_duplicates_and_defaults(data: Path, tmp_path: Path) -> None:
    src = tmp_path / "hashes.txt"
    src.write_text(f"{PDQ_A}\n{PDQ_B}\n{PDQ_A}\n")
    res = ok(data, "import", "A", str(src), "-t", "pdq", "--label", "L", "--source", "S")
    assert "imported 2 new entries" in res.stdout and "1 already present" in res.stdout
    assert {(r["label"], r["source"]) for r in entries_json(data, "A")} == {("L", "S")}


def test_import_malformed(data: Path, tmp_path: Path) -> None:
    src = tmp_path / "bank.txt"
    lines = [f"pdq {i:064x}" for i in range(1, 7)] + ["pdq not-hex"] + [f"md5 {MD5_A}"]
    src.write_text("\n".join(lines) + "\n")
    fails(data, "import", "A", str(src), match="bank.txt:7: not a valid pdq signal")
    assert "A" not in banks_json(data)  # nothing imported, the new bank removed again

    ok(data, "create", "A")
    fails(data, "import", "A", str(src), match="bank.txt:7")
    assert banks_json(data)["A"]["entries"] == 0

    res = ok(data, "import", "A", str(src), "--skip-bad-lines")
    assert "imported 7 new entries" in res.stdout and "1 bad lines skipped" in res.stdout
    assert "bank.txt:7" in res.stderr


def test_import_no_create_and_missing_file(data: Path, tmp_path: Path) -> None:
    src = tmp_path / "x.txt"
    src.write_text(f"pdq {PDQ_A}\n")
    fails(data, "import", "A", str(src), "--no-create", match="no bank named")
    fails(data, "import", "A", str(tmp_path / "missing.txt"), match="cannot read")
    fails(data, "import", "bad name", str(src), match="invalid bank name")
    fails(data, "import", "A", str(src), "-t", "nosuch", match="unknown signal type")


def test_import_stdin(data: Path) -> None:
    res = ok(data, "import", "A", "-", "--format", "te", input=f"md5 {MD5_A}\nsha1 {SHA1_A}\n")
    assert "imported 2" in res.stdout


def test_delete(data: Path) -> None:
    ok(data, "create", "A")
    ok(data, "add", "A", MD5_A)
    res = run(data, "delete", "A", input="n\n")
    assert res.exit_code != 0 and "A" in banks_json(data)
    res = ok(data, "delete", "A", input="y\n")
    assert "deleted bank A (1 entries)" in res.stdout
    ok(data, "create", "B")
    ok(data, "delete", "B", "--yes")
    assert banks_json(data) == {}
    fails(data, "delete", "B", "--yes", match="no bank named")


def test_data_dir_used(data: Path) -> None:
    ok(data, "create", "A")
    with open_store(data) as store:
        assert [b.name for b in store.list_banks()] == ["A"]


def test_add_file(data: Path, tmp_path: Path) -> None:
    hashing = pytest.importorskip("tipline.scan.hashing")
    if not hasattr(hashing, "signals_for_file"):
        pytest.skip("signals_for_file not available yet")
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(7)  # a benign procedural noise image
    img = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).resize((256, 256))
    path = tmp_path / "noise.png"
    img.save(path)
    expected = {k: v for k, v in hashing.signals_for_file(path).items() if v}

    ok(data, "create", "A")
    res = ok(data, "add", "A", "--file", str(path), "--label", "DEMO-benign-stand-in")
    assert f"added {len(expected)}" in res.stdout
    got = {r["signal_type"]: r["signal"] for r in entries_json(data, "A")}
    assert got == expected
    fails(data, "add", "A", "--file", str(tmp_path / "missing.png"), match="cannot read")


def test_set_review_settings_auto_confirm_and_consensus(data: Path) -> None:
    ok(data, "create", "TRUSTED_LIST")
    res = ok(data, "set", "TRUSTED_LIST", "--auto-confirm", "--consensus", "3")
    assert "auto-confirm, consensus 3" in res.output
    with open_store(data) as store:
        assert store.review_settings("TRUSTED_LIST") == (True, 3)
    res = ok(data, "set", "TRUSTED_LIST", "--no-auto-confirm", "--consensus", "0")
    assert "auto-confirm" not in res.output and "consensus" not in res.output
    with open_store(data) as store:
        assert store.review_settings("TRUSTED_LIST") == (False, None)
    fails(data, "set", "TRUSTED_LIST", "--consensus", "11", match="less than or equal to 10")
    fails(data, "set", "NO_SUCH_BANK", "--auto-confirm", match="NO_SUCH_BANK")
