"""Keyword lists: normalisation, whole-word matching, list formats, scan integration.

Only neutral placeholder words are used (``bluebird``, ``teapot-42``, ``lake``...).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tipline.findings import Finding
from tipline.provenance import keywords as kw
from tipline.provenance.keywords import (
    Keyword,
    KeywordList,
    KeywordMatcher,
    item_fields,
    load_demo_list,
    normalise,
)

TERMS = KeywordList(
    [
        Keyword("bluebird", "demo-birds"),
        Keyword("red robin", "demo-birds"),
        Keyword("teapot-42", "demo-objects"),
        Keyword("lake", "demo-places"),
        Keyword("owl", "demo-birds"),
        Keyword("青い鳥", "demo-birds"),
    ]
)
M = KeywordMatcher(TERMS)


def found(text: str) -> set[str]:
    return {h.term for h in M.find(text)}


# ---- normalisation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("BLUEBIRD", "biuebird"),  # case; l and 1 fold to i
        ("Straße", "strasse"),  # casefold
        ("ｂｌｕｅｂｉｒｄ", "biuebird"),  # fullwidth (NFKC)
        ("𝐛𝐥𝐮𝐞𝐛𝐢𝐫𝐝", "biuebird"),  # mathematical bold (NFKC)
        ("bluеbird", "biuebird"),  # Cyrillic e
        ("ВLUЕВIRD", "biuebird"),  # Cyrillic capitals
        ("ΒLUΕBΙRD", "biuebird"),  # Greek capitals
        ("blüébird", "biuebird"),  # diacritics stripped
        ("b\u0336l\u0336u\u0336e\u0336bird", "biuebird"),  # strike-through "zalgo" marks
        ("blue\u200bbi\u00adrd", "biuebird"),  # zero-width space, soft hyphen
        ("b1u3b1rd", "biuebird"),  # leetspeak digits
        ("8lu3b!rd", "biuebird"),  # symbol inside a word
        ("p@$$w0rd", "password"),
        ("wow!!! b|ue", "wow biue"),  # (the price: "cell|cell" reads as one word)
        ("@bluebird", "biuebird"),  # a mention: '@' at a word start stays a separator
        ("bluebird!", "biuebird"),
        ("teapot-42", "teapot a2"),
        ("  red,\n\t robin  ", "red robin"),
        ("b.l.u.e", "b i u e"),  # separators between letters stay word breaks
    ],
)
def test_normalise(text: str, expected: str) -> None:
    assert normalise(text).strip() == expected


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200))
def test_normalise_is_idempotent_and_single_spaced(text: str) -> None:
    n = normalise(text)
    assert normalise(n) == n
    assert "  " not in n


_MIXED = st.text(
    alphabet=st.sampled_from(
        [*"abcdeilo0134 \n\t.,-!@$|_'", *"éеΟßｂ青😀İ", "\u200b", "\u0301", "\u0336", "\ue000"]
    ),
    max_size=400,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(_MIXED)
def test_long_text_fast_paths_equal_the_plain_path(text: str) -> None:
    """Long texts fold only the words around non-ASCII characters and collapse spaces with
    numpy; both must give exactly what the plain path gives."""
    fixed = kw._fix_symbols(text)
    plain = fixed.translate(kw._ASCII_TABLE) if fixed.isascii() else kw._fold_unicode(fixed)
    assert kw._fold_regions(fixed) == plain
    ref = plain
    while "  " in ref:
        ref = ref.replace("  ", " ")
    padded = plain + " " * kw._NUMPY_MIN  # long enough for the numpy collapse
    assert kw._collapse(padded) == (ref + " ").replace("  ", " ")


# ---- matching --------------------------------------------------------------------------------


def test_whole_words_and_phrases() -> None:
    assert found("a bluebird over the lake") == {"bluebird", "lake"}
    assert found("lakes, flake, bluebirds, lakeside") == set()
    assert found("Red robin; RED\nROBIN") == {"red robin"}
    assert found("robin red") == set()
    assert found("teapot 42 / TEAPOT-42 / teapot42") == {"teapot-42"}
    assert found("青い鳥です") == {"青い鳥"}  # no spaces in Japanese: substring match
    hits = {h.term: h.count for h in M.find("lake. Lake! l4ke? LAKE")}
    assert hits == {"lake": 4}


def test_letters_spelled_out_with_separators() -> None:
    assert found("b l u e b i r d") == {"bluebird"}
    assert found("B.L.U.E.B.I.R.D") == {"bluebird"}
    assert found("b-l-u-e-b-i-r-d") == {"bluebird"}
    assert found("b. l. u. e. b. i. r. d.") == {"bluebird"}
    assert found("saw a b l u e b i r d") == {"bluebird"}  # a single-letter word before it
    assert found("r e d r o b i n") == {"red robin"}
    # nothing is joined across words: two words are not one term, and short terms
    # (under 4 letters) are not matched spelled out
    assert found("blue bird") == set()
    assert found("o w l") == set()
    assert found("owl") == {"owl"}


def test_long_text_and_streams_count_the_same(tmp_path: Path) -> None:
    line = "filler words here, a bluebird by the lake; teapot-42 too\n"
    text = line * (kw.CHUNK_CHARS // len(line) * 3)  # several chunks
    n = text.count("bluebird")
    hits = {h.term: h.count for h in M.find(text)}
    assert hits == {"bluebird": n, "lake": n, "teapot-42": n}
    p = tmp_path / "page.txt"
    p.write_text(text, encoding="utf-8")
    with open(p, "rb") as f:
        assert {h.term: h.count for h in M.find_stream(f)} == hits
    assert {h.term for h in M.find_stream(io.BytesIO("bluеbird".encode()))} == {"bluebird"}


# ---- list formats ----------------------------------------------------------------------------


def test_plain_list_format() -> None:
    text = (
        "\ufeff# a comment\n"
        "bluebird\n"
        "# category: demo-objects\n"
        "teapot-42\n"
        "\\# hash-led term\n"
        "   \n"
        "!!!\n"
        "teapot-42\n"
    )
    kl = KeywordList.parse(text)
    assert kl.keywords == [
        Keyword("bluebird", "default"),
        Keyword("teapot-42", "demo-objects"),
        Keyword("# hash-led term", "demo-objects"),
    ]
    assert kl.problems == ["line 7: term has no letters or digits: '!!!'"]


def test_csv_format() -> None:
    text = 'term,category\nbluebird,demo-birds\n"red, robin",demo-birds\nlake\n,x\n'
    kl = KeywordList.parse(text, "csv", default_category="demo-places")
    assert kl.keywords == [
        Keyword("bluebird", "demo-birds"),
        Keyword("red, robin", "demo-birds"),
        Keyword("lake", "demo-places"),
    ]
    assert kl.problems and kl.problems[0].startswith("line 5: empty term")
    with pytest.raises(kw.KeywordListError):
        KeywordList.parse("x", "xml")


_TERM = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),
    min_size=1,
    max_size=40,
).filter(lambda t: kw._term_problem(t) is None)
_CATEGORY = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),
    min_size=1,
    max_size=20,
).filter(lambda c: c.strip() == c and c != "")


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_TERM, _CATEGORY), max_size=30))
def test_list_and_csv_round_trip(pairs: list[tuple[str, str]]) -> None:
    kl = KeywordList([Keyword(t.strip(), c) for t, c in pairs])
    for fmt in ("list", "csv"):
        back = KeywordList.parse(kl.dumps(fmt), fmt)
        assert back.keywords == kl.keywords, fmt
        assert back.problems == []


def test_demo_list_is_neutral_and_loads() -> None:
    kl = load_demo_list()
    assert len(kl) >= 5 and not kl.problems
    assert all(c.startswith("demo-") for c in kl.categories())
    assert "bluebird" in {k.term for k in kl}


# ---- findings and scan -----------------------------------------------------------------------


def test_item_fields_and_findings_keep_terms_private() -> None:
    model = Finding(
        "model_file",
        "model",
        evidence={
            "metadata": {"ss_output_name": "landscape_style_v1"},
            "text": {
                "tag_frequency": {"10_bluebird": {"lake": 3, "mountain": 1}},
                "dataset_dirs": {"10_bluebird": {}},
            },
        },
    )
    image = Finding(
        "generator_metadata",
        "ai_generated",
        evidence={"text": {"prompt": "a teapot-42 on a table", "negative_prompt": "owl"}},
    )
    fields = list(item_fields("/cases/upload.zip!photos/bluebird.png", [model, image]))
    assert ("file_name", "upload.zip") in fields and ("file_name", "photos/bluebird.png") in fields
    got = {(f.evidence["field"], f.evidence["category"]): f for f in M.findings(fields)}
    assert set(got) == {
        ("file_name", "demo-birds"),
        ("dataset_dirs", "demo-birds"),
        ("model_tags", "demo-places"),
        ("prompt", "demo-objects"),
        ("negative_prompt", "demo-birds"),
    }
    f = got[("model_tags", "demo-places")]
    assert f.signal == "keyword" and f.evidence["text"] == ["lake"] and f.evidence["count"] == 1
    assert "lake" not in json.dumps(f.to_json())  # the term is text: withheld by default
    assert "lake" in json.dumps(f.to_json(include_text=True))


def test_scan_with_keywords(tmp_path: Path) -> None:
    import struct

    from tipline.record import ItemRecord
    from tipline.scan.hashing import HashOptions
    from tipline.scan.items import scan_file

    header = json.dumps(
        {
            "lora_unet_a.lora_down.weight": {"dtype": "F16", "shape": [1], "data_offsets": [0, 2]},
            "__metadata__": {"ss_tag_frequency": json.dumps({"5_scenery": {"lake": 2}})},
        }
    ).encode()
    p = tmp_path / "bluebird_style.safetensors"
    p.write_bytes(struct.pack("<Q", len(header)) + header + b"\0\0")
    for include_text in (False, True):
        out: list[ItemRecord] = []
        opts = HashOptions(keywords=M, include_text=include_text)
        scan_file(str(p), opts, out.append)
        (rec,) = out
        assert rec.provenance is not None
        kws = {f.evidence["field"]: f for f in rec.provenance if f.signal == "keyword"}
        assert set(kws) == {"file_name", "model_tags"}
        assert ("text" in kws["model_tags"].evidence) is include_text
        assert ("text" in rec.provenance[0].evidence) is include_text  # captions too
        assert rec.ai_evidence == "strong"


def _cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tipline", *args],
        capture_output=True,
        text=True,
        input=stdin,
        env={**os.environ, "TIPLINE_DATA_DIR": os.devnull},
    )


def test_keywords_cli(tmp_path: Path) -> None:
    lst = tmp_path / "list.csv"
    lst.write_text("term,category\nbluebird,demo-birds\nteapot-42,demo-objects\n")
    page = tmp_path / "page.txt"
    page.write_text("nothing but a T3APOT 42 here\n")
    r = _cli("keywords", "check", "--list", str(lst), "--json", "a B.L.U.E.B.I.R.D", str(page))
    assert r.returncode == 1, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert lines[0]["hits"] == [{"term": "bluebird", "category": "demo-birds", "count": 1}]
    assert lines[1]["source"] == str(page) and lines[1]["hits"][0]["term"] == "teapot-42"
    assert _cli("keywords", "check", "nothing to see").returncode == 0  # demo list
    assert _cli("keywords", "check", "-", stdin="a lake").returncode == 1
    out = tmp_path / "list.txt"
    assert _cli("keywords", "convert", str(lst), str(out)).returncode == 0
    assert KeywordList.load(out).keywords == KeywordList.load(lst).keywords
    assert _cli("keywords", "normalise", "Tеapot-42").stdout.strip() == "teapot a2"
