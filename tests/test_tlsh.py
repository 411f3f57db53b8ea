"""The ``tlsh`` signal type: validation, distance, the index, banks and their formats, the CLI's
bank import/export and the HMA API; a re-posted guide with small edits is found within the
threshold, an unrelated text is not. Texts are benign stand-ins (tests/guide_texts.py)."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest
import tlsh
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as hst

from doc_builders import make_pdf
from guide_texts import ASSEMBLY_GUIDE, ASSEMBLY_GUIDE_REPOST, RECIPE
from test_cli_bank import entries_json, fails, ok
from test_hma_api import make_settings
from tipline.banks.bank import Bank, Entry
from tipline.banks.formats import FORMATS, parse_hash_list, write_hash_list
from tipline.crawl.documents import analyse_document
from tipline.errors import InvalidSignalError
from tipline.index.bank_index import BankIndex
from tipline.index.signal_index import new_index
from tipline.index.tlsh import TlshSignalIndex, body_codes, body_distances
from tipline.record import ItemRecord
from tipline.service.app import create_app
from tipline.signals.tlsh import (
    DEFAULT_THRESHOLD,
    MIN_BYTES,
    hash_bytes,
    hash_text,
    normalise_signal,
    normalise_text,
)
from tipline.signals.types import TLSH, guess_signal_type, signal_type
from tipline.store import migrations


def sig(text: str) -> str:
    s = hash_text(text).signal
    assert s is not None
    return s


GUIDE = sig(ASSEMBLY_GUIDE)
REPOST = sig(ASSEMBLY_GUIDE_REPOST)
OTHER = sig(RECIPE)


# --------------------------------------------------------------------------- the signal


def test_signals_are_normalised_to_py_tlshs_form() -> None:
    assert GUIDE.startswith("T1") and len(GUIDE) == 72 and GUIDE.upper() == GUIDE
    assert normalise_signal(GUIDE.lower()) == GUIDE
    assert normalise_signal("  " + GUIDE + "\n") == GUIDE
    assert normalise_signal(GUIDE[2:]) == GUIDE  # TLSH 3.x: no version prefix
    assert signal_type("text_tlsh") is TLSH  # python-threatexchange's name
    for junk in ("TNULL", GUIDE[:-1], GUIDE + "0", "T2" + GUIDE[2:], GUIDE[:-1] + "G", "", "T1"):
        with pytest.raises(InvalidSignalError, match="not a valid tlsh signal"):
            TLSH.normalise(junk)


def test_too_short_or_uniform_text_says_why_and_raises_nothing() -> None:
    short = hash_text("only a few words")
    assert short.signal is None and short.reason and "too short" in short.reason
    assert f"at least {MIN_BYTES}" in short.reason
    assert hash_bytes(b"x" * (MIN_BYTES - 1)).signal is None
    uniform = hash_bytes(b"a" * 500)
    assert uniform.signal is None and uniform.reason and "variety" in uniform.reason
    assert hash_text("").signal is None


def test_normalised_text_ignores_case_width_and_wrapping() -> None:
    assert normalise_text("Ｂｏｏｋｓｈｅｌｆ\n\n  GUIDE\t") == "bookshelf guide"
    rewrapped = ASSEMBLY_GUIDE.replace("\n", " ").upper()
    assert sig(rewrapped) == GUIDE


def test_a_reposted_guide_is_within_the_threshold_and_a_recipe_is_not() -> None:
    assert DEFAULT_THRESHOLD == TLSH.default_threshold == 30
    d = TLSH.distance(GUIDE, REPOST)
    assert 0 < d <= DEFAULT_THRESHOLD, d
    assert TLSH.distance(GUIDE, OTHER) > 3 * DEFAULT_THRESHOLD
    # python-threatexchange's comparison (diffxlen), not our own arithmetic
    assert d == tlsh.diffxlen(GUIDE, REPOST)


def test_a_bare_tlsh_line_is_recognised() -> None:
    assert guess_signal_type(GUIDE) is TLSH
    assert guess_signal_type(GUIDE.lower()) is TLSH
    assert guess_signal_type("T1" + "0" * 69) is None


# --------------------------------------------------------------------------- the index

WORDS = ASSEMBLY_GUIDE.split() + RECIPE.split()


@hst.composite
def texts(draw: hst.DrawFn) -> str:
    seed = draw(hst.integers(0, 2**32 - 1))
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 300)))


@settings(max_examples=60, deadline=None)
@given(hst.lists(texts(), min_size=2, max_size=12))
def test_body_distance_is_a_lower_bound_and_the_index_equals_brute_force(
    corpus: list[str],
) -> None:
    signals = [s for s in (hash_text(t).signal for t in corpus) if s]
    if len(signals) < 2:
        return
    codes = body_codes(signals)
    index = new_index("tlsh", None)
    compiled = TlshSignalIndex()
    compiled.kernel_min = 0  # the numba scan however small the index
    for idx in (index, compiled):
        idx.add(list(range(len(signals))), signals)
    compiled.remove([0])
    for q in signals:
        exact = [tlsh.diffxlen(q, s) for s in signals]
        assert all(b <= e for b, e in zip(body_distances(q, codes).tolist(), exact, strict=True))
        for radius in (0, 30, 120):
            want = {i: d for i, d in enumerate(exact) if d <= radius}
            for idx, expect in ((index, want), (compiled, {k: v for k, v in want.items() if k})):
                hits = idx.query([q], radius)
                got = dict(zip(hits.ids.tolist(), hits.distances.tolist(), strict=True))
                assert got == expect


def test_index_add_replace_remove_and_compaction() -> None:
    index = new_index("tlsh", 2)
    rng = random.Random(7)
    texts_ = [" ".join(rng.choice(WORDS) for _ in range(200)) for _ in range(200)]
    signals = [s for s in (hash_text(t).signal for t in texts_) if s]
    assert len(set(signals)) == len(signals) == 200
    index.add(list(range(len(signals))), signals)
    index.add([10_000], ["not a tlsh"])  # a damaged row is skipped, not indexed
    assert len(index) == len(signals)
    index.remove(list(range(150)))
    assert len(index) == len(signals) - 150
    assert index.query([signals[0]], 0).ids.tolist() == []
    assert index.query([signals[160]], 0).ids.tolist() == [160]
    index.add([160], [GUIDE])  # an id added again takes its new signal
    assert index.query([GUIDE], 0).ids.tolist() == [160]
    assert 160 not in index.query([signals[160]], 0).ids.tolist()
    assert index.query(["junk"], 30).ids.tolist() == []
    assert index.prefix("T1") == []


def test_the_bank_index_matches_a_repost_at_the_types_threshold_not_the_pdq_one() -> None:
    # a bank's PDQ threshold of 8 does not apply to TLSH: the type's own 30 does
    banks = [Bank("GUIDES", "alert", 8), Bank("BENIGN", "ignore", 8)]
    idx = BankIndex.build(banks, [Entry("GUIDES", "tlsh", GUIDE, label="DEMO-guide", id=1)])
    [m] = idx.match(ItemRecord(path="page", tlsh=REPOST))
    assert (m.bank, m.entry_id, m.signal_type, m.label) == ("GUIDES", 1, "tlsh", "DEMO-guide")
    assert m.distance == TLSH.distance(GUIDE, REPOST)
    assert idx.match(ItemRecord(path="recipe", tlsh=OTHER)) == []
    assert idx.match(ItemRecord(path="bad", tlsh="not a tlsh")) == []
    [hit] = idx.lookup("tlsh", REPOST)
    assert hit.entry_id == 1
    # an ignore-bank copy of the same text suppresses the alert, as for PDQ
    idx.add([Entry("BENIGN", "tlsh", GUIDE, id=2)])
    matches = idx.match(ItemRecord(path="page", tlsh=REPOST))
    assert {m.entry_id: m.suppressed_by for m in matches} == {1: 2, 2: None}


# --------------------------------------------------------------------------- banks


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_bank_format_round_trips_tlsh(fmt: str) -> None:
    entries = [
        Entry("B", "tlsh", s, label="DEMO-benign-stand-in", id=i)
        for i, s in enumerate((GUIDE, OTHER))
    ]
    buf = io.StringIO()
    write_hash_list(entries, fmt, buf)
    parsed = parse_hash_list(io.StringIO(buf.getvalue()), fmt, default_signal_type="tlsh")
    assert parsed.errors == []
    assert [(e.signal_type, e.signal) for e in parsed.entries] == [
        ("tlsh", GUIDE),
        ("tlsh", OTHER),
    ]


def test_cli_bank_import_export_round_trip(tmp_path: Path) -> None:
    data = tmp_path / "data"
    src = tmp_path / "guides.csv"
    src.write_text(
        "signal_type,signal_str,collab,category,tags\n"
        f"text_tlsh,{GUIDE.lower()},partner,DEMO-benign-stand-in,guide\n"
        f"tlsh,{OTHER},partner,DEMO-benign-stand-in,\n"
    )
    res = ok(data, "import", "GUIDES", str(src))
    assert "imported 2 new entries" in res.stdout
    assert [(r["signal_type"], r["signal"]) for r in entries_json(data, "GUIDES")] == [
        ("tlsh", GUIDE),
        ("tlsh", OTHER),
    ]
    bare = tmp_path / "bare.txt"
    bare.write_text(f"{REPOST}\n")  # a bare "T1..." line needs no --signal-type
    ok(data, "import", "BARE", str(bare))
    assert entries_json(data, "BARE")[0]["signal"] == REPOST
    out = tmp_path / "out.txt"
    ok(data, "export", "GUIDES", "-o", str(out), "--format", "te")
    assert out.read_text().splitlines() == [f"tlsh {GUIDE}", f"tlsh {OTHER}"]
    ok(data, "import", "COPY", str(out))
    assert [r["signal"] for r in entries_json(data, "COPY")] == [GUIDE, OTHER]
    bad = tmp_path / "bad.txt"
    bad.write_text(f"tlsh {GUIDE}\ntlsh TNULL\n")
    fails(data, "import", "BAD", str(bad), match="bad.txt:2: not a valid tlsh signal")


# --------------------------------------------------------------------------- HMA API


@pytest.fixture
def client(db_url: str, tmp_path: Path) -> TestClient:
    migrations.upgrade(db_url)
    app = create_app(make_settings(tmp_path, db_url), load_index="sync")
    with TestClient(app) as c:
        yield c  # type: ignore[misc]


def test_hma_api_takes_tlsh_like_any_other_type(client: TestClient) -> None:
    assert {"name": "tlsh", "enabled_ratio": 1.0} in client.get("/c/signal_type").json()
    assert client.post("/c/banks", json={"name": "GUIDES"}).status_code == 201
    r = client.post("/c/bank/GUIDES/signal", json={"tlsh": GUIDE.lower(), "note": "demo"})
    assert r.status_code == 200, r.text
    cid = r.json()["id"]
    assert r.json()["signals"] == {"tlsh": GUIDE}

    d = TLSH.distance(GUIDE, REPOST)
    r = client.get("/m/lookup", params={"signal_type": "tlsh", "signal": REPOST})
    assert r.json() == {"GUIDES": [{"bank_content_id": cid, "distance": str(d)}]}
    r = client.get("/m/lookup", params={"signal_type": "text_tlsh", "signal": REPOST})
    assert r.json() == {"GUIDES": [{"bank_content_id": cid, "distance": str(d)}]}
    assert client.get("/m/lookup", params={"signal_type": "tlsh", "signal": OTHER}).json() == {}
    r = client.get(
        "/m/raw_lookup",
        params={"signal_type": "tlsh", "signal": GUIDE, "include_distance": "true"},
    )
    assert r.json() == {"matches": [{"bank_content_id": cid, "distance": "0"}]}

    # Tipline's own match API takes it too (distances as integers there)
    r = client.post("/api/v1/match", json={"signals": [{"signal_type": "tlsh", "signal": REPOST}]})
    assert r.status_code == 200, r.text
    [res] = r.json()["results"]
    assert [(m["entry_id"], m["distance"]) for m in res["matches"]] == [(cid, d)]

    r = client.post("/m/compare", json={"tlsh": [GUIDE, REPOST]})
    assert r.json() == {"tlsh": [True, {"distance": d}]}
    far = TLSH.distance(GUIDE, OTHER)
    assert client.post("/m/compare", json={"tlsh": [GUIDE, OTHER]}).json() == {
        "tlsh": [False, {"distance": far}]
    }
    r = client.get("/m/lookup", params={"signal_type": "tlsh", "signal": "TNULL"})
    assert r.status_code == 400 and "not a valid tlsh" in r.json()["message"]
    r = client.post("/c/bank/GUIDES/signal", json={"tlsh": "T1" + "0" * 10})
    assert r.status_code == 400 and "tlsh" in r.json()["message"]

    idx = client.get("/c/signal_type/index", params={"signal_type": "tlsh"}).json()
    assert idx["tlsh"]["db_size"] == idx["tlsh"]["index_size"] == 1
    r = client.get(f"/c/bank/GUIDES/content/{cid}", params={"include_signals": "true"}).json()
    assert r["signals"] == {"tlsh": GUIDE}
    # a type switched off is refused, as for the others
    assert client.put("/c/signal_type/tlsh", json={"enabled_ratio": 0.0}).status_code == 204
    r = client.get("/m/lookup", params={"signal_type": "tlsh", "signal": GUIDE})
    assert r.status_code == 400 and "not enabled" in r.json()["message"]
    assert client.put("/c/signal_type/tlsh", json={"enabled_ratio": 1}).status_code == 204
    assert client.get("/m/lookup", params={"signal_type": "tlsh", "signal": GUIDE}).json()


def test_bank_add_file_banks_a_guide_with_the_tlsh_of_its_text(tmp_path: Path) -> None:
    data = tmp_path / "data"
    guide = tmp_path / "guide.pdf"
    guide.write_bytes(make_pdf(ASSEMBLY_GUIDE.split("\n\n")))
    ok(data, "create", "GUIDES")
    res = ok(data, "add", "GUIDES", "--file", str(guide), "--label", "DEMO-benign-stand-in")
    assert "added 4 entries" in res.stdout  # md5, sha1, sha256 and tlsh
    banked = {r["signal_type"]: r["signal"] for r in entries_json(data, "GUIDES")}
    assert TLSH.distance(banked["tlsh"], GUIDE) <= TLSH.default_threshold
    # the re-post, found on a page, matches the banked PDF's text
    page = f"<html><body><pre>{ASSEMBLY_GUIDE_REPOST}</pre></body></html>".encode()
    found = analyse_document(page, "text/html", "http://127.0.0.1/t/1")
    idx = BankIndex.build([Bank("GUIDES")], [Entry("GUIDES", "tlsh", banked["tlsh"], id=1)])
    assert [m.entry_id for m in idx.match(found.record())] == [1]
    short = tmp_path / "note.txt"
    short.write_text("a short note")
    res = ok(data, "add", "GUIDES", "--file", str(short))
    assert "added 3 entries" in res.stdout and "no tlsh (too short" in res.stderr
