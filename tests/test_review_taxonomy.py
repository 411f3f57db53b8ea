"""The grading taxonomy: the built-in default, checked grades, and broken taxonomy files.

Everything here is generated field definitions and placeholder values; no media is involved.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tipline.review.taxonomy import Taxonomy, TaxonomyError, load, parse

DEFAULT = load()

VALID_A = {"uk_category": "A", "ncmec_category": "A1"}


# -- the built-in default ------------------------------------------------------------------------


def test_default_loads_with_documented_fields() -> None:
    t = load()
    assert t.name == "tipline-default"
    assert [f.id for f in t.fields] == [
        "uk_category",
        "ncmec_category",
        "age_band",
        "ai_generated",
        "interpol_baseline",
    ]
    assert t.consensus == ("uk_category", "ncmec_category")
    assert t.actionable_field == "uk_category"
    assert t.field("interpol_baseline").kind == "flag"
    assert t.field("ai_generated").show_evidence is True
    assert t.field("age_band").default == "unknown"
    assert t.field("uk_category").default is None
    # load("") and load(None) both mean the default
    assert load("") == t


def test_default_shortcuts_are_unique_and_map_to_options() -> None:
    keys = DEFAULT.shortcuts()
    assert keys["a"] == ("uk_category", "A")
    assert keys["n"] == ("uk_category", "not_illegal")
    assert keys["1"] == ("ncmec_category", "A1")
    assert keys["i"] == ("interpol_baseline", "")
    for fid, value in keys.values():
        f = DEFAULT.field(fid)
        assert f.kind == "flag" if value == "" else f.option(value) is not None


def test_unknown_field_lookup() -> None:
    with pytest.raises(TaxonomyError, match="unknown grading field 'nope'"):
        DEFAULT.field("nope")


# -- validate ------------------------------------------------------------------------------------


def test_validate_fills_defaults() -> None:
    assert DEFAULT.validate(VALID_A) == {
        "uk_category": "A",
        "ncmec_category": "A1",
        "age_band": "unknown",
        "ai_generated": "unknown",
        "interpol_baseline": False,
    }


def test_validate_keeps_given_values() -> None:
    got = DEFAULT.validate(
        {**VALID_A, "age_band": "3-6", "ai_generated": "yes", "interpol_baseline": True}
    )
    assert got["age_band"] == "3-6"
    assert got["ai_generated"] == "yes"
    assert got["interpol_baseline"] is True


def test_validate_rejects_unknown_field() -> None:
    with pytest.raises(TaxonomyError, match=r"unknown grading field\(s\): colour, zz"):
        DEFAULT.validate({**VALID_A, "zz": "1", "colour": "x"})


def test_validate_rejects_unknown_option() -> None:
    with pytest.raises(TaxonomyError, match="'D' is not one of A, B, C, non_photographic"):
        DEFAULT.validate({"uk_category": "D", "ncmec_category": "A1"})


def test_validate_requires_required_fields() -> None:
    with pytest.raises(TaxonomyError, match=r"UK category \(Sentencing Council\): choose one"):
        DEFAULT.validate({"ncmec_category": "A1"})
    with pytest.raises(TaxonomyError, match="choose one"):
        DEFAULT.validate({"uk_category": "B", "ncmec_category": ""})


def test_validate_optional_field_without_default_is_empty() -> None:
    t = parse(
        {
            "name": "t",
            "fields": [
                {"id": "main", "options": [{"value": "x"}, {"value": "y"}]},
                {"id": "extra", "required": False, "options": [{"value": "p"}]},
            ],
        }
    )
    assert t.validate({"main": "x"}) == {"main": "x", "extra": ""}


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        (True, True),
        (False, False),
        (None, False),
        ("", False),
        ("yes", True),
        ("ON", True),
        ("1", True),
        (1, True),
        ("no", False),
        ("off", False),
        ("0", False),
        (0, False),
    ],
)
def test_flags(raw: Any, want: bool) -> None:
    assert DEFAULT.validate({**VALID_A, "interpol_baseline": raw})["interpol_baseline"] is want


def test_flag_rejects_other_text() -> None:
    with pytest.raises(TaxonomyError, match="interpol_baseline: want yes or no"):
        DEFAULT.validate({**VALID_A, "interpol_baseline": "maybe"})


# -- decision, actionable, label ---------------------------------------------------------------


def test_decision_uses_consensus_fields_only() -> None:
    a = DEFAULT.validate({**VALID_A, "age_band": "3-6", "interpol_baseline": True})
    b = DEFAULT.validate(VALID_A)
    c = DEFAULT.validate({"uk_category": "B", "ncmec_category": "A1"})
    assert DEFAULT.decision(a) == "uk_category=A;ncmec_category=A1"
    assert DEFAULT.decision(a) == DEFAULT.decision(b)
    assert DEFAULT.decision(a) != DEFAULT.decision(c)


def test_decision_writes_flags_as_yes_no() -> None:
    t = parse(
        {
            "name": "t",
            "consensus": ["cat", "flagged"],
            "fields": [
                {"id": "cat", "options": [{"value": "x"}]},
                {"id": "flagged", "kind": "flag"},
            ],
        }
    )
    assert t.decision(t.validate({"cat": "x", "flagged": True})) == "cat=x;flagged=yes"
    assert t.decision(t.validate({"cat": "x"})) == "cat=x;flagged=no"


def test_actionable() -> None:
    assert DEFAULT.actionable(DEFAULT.validate(VALID_A)) is True
    for cat in ("B", "C", "non_photographic"):
        assert DEFAULT.actionable({"uk_category": cat}) is True
    not_illegal = DEFAULT.validate({"uk_category": "not_illegal", "ncmec_category": "none"})
    assert DEFAULT.actionable(not_illegal) is False
    assert DEFAULT.actionable({}) is False  # no value: nothing to act on


def test_label() -> None:
    g = DEFAULT.validate({**VALID_A, "age_band": "3-6", "interpol_baseline": True})
    assert DEFAULT.label(g) == "uk_category:A ncmec_category:A1 age_band:3-6 interpol_baseline"
    plain = DEFAULT.validate({"uk_category": "not_illegal", "ncmec_category": "none"})
    assert DEFAULT.label(plain) == "uk_category:not_illegal"


# -- bad taxonomy files --------------------------------------------------------------------------

GOOD_TOML = """
name = "small"
consensus = ["cat"]
[[fields]]
id = "cat"
options = [{ value = "yes", key = "y" }, { value = "no", key = "n", actionable = false }]
[[fields]]
id = "marked"
kind = "flag"
key = "m"
"""


def _write(tmp_path: Path, text: str, name: str = "tax.toml") -> Path:
    p = tmp_path / name
    p.write_text(text, "utf-8")
    return p


def test_custom_file_loads(tmp_path: Path) -> None:
    t = load(_write(tmp_path, GOOD_TOML))
    assert t.name == "small"
    assert t.actionable_field == "cat"  # the first field when not given
    assert t.actionable({"cat": "no"}) is False
    assert t.shortcuts() == {"y": ("cat", "yes"), "n": ("cat", "no"), "m": ("marked", "")}
    assert load(str(_write(tmp_path, GOOD_TOML, "b.toml"))) == t


def test_duplicate_toml_key_is_invalid_toml(tmp_path: Path) -> None:
    p = _write(tmp_path, 'name = "a"\nname = "b"\n' + GOOD_TOML.replace('name = "small"', ""))
    with pytest.raises(TaxonomyError, match=r"taxonomy file .*tax\.toml is not valid TOML"):
        load(p)


def test_duplicate_shortcut_key(tmp_path: Path) -> None:
    p = _write(tmp_path, GOOD_TOML.replace('key = "m"', 'key = "Y"'))
    with pytest.raises(TaxonomyError, match=r"field 'marked': key 'Y' is already used by cat=yes"):
        load(p)


def test_duplicate_field_and_option(tmp_path: Path) -> None:
    twice = GOOD_TOML + '[[fields]]\nid = "cat"\noptions = [{ value = "z" }]\n'
    with pytest.raises(TaxonomyError, match="field 'cat': defined twice"):
        load(_write(tmp_path, twice))
    dup_opt = GOOD_TOML.replace('{ value = "no", key = "n"', '{ value = "yes", key = "n"')
    with pytest.raises(TaxonomyError, match="option 'yes' listed twice"):
        load(_write(tmp_path, dup_opt, "c.toml"))


def test_unknown_consensus_field(tmp_path: Path) -> None:
    p = _write(tmp_path, GOOD_TOML.replace('consensus = ["cat"]', 'consensus = ["cat", "size"]'))
    with pytest.raises(TaxonomyError, match=r"tax\.toml: consensus names unknown field 'size'"):
        load(p)


def test_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(TaxonomyError, match="is not valid TOML"):
        load(_write(tmp_path, "name = \n[[fields"))


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(TaxonomyError, match=r"cannot read taxonomy file .*missing\.toml"):
        load(tmp_path / "missing.toml")
    with pytest.raises(TaxonomyError, match="cannot read taxonomy file"):
        load(tmp_path)  # a directory
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'name = "caf\xe9"\n')
    with pytest.raises(TaxonomyError, match="cannot read taxonomy file"):
        load(bad)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"fields": [{"id": "a", "options": [{"value": "x"}]}]}, "'name' must be a non-empty"),
        ({"name": "t"}, "needs at least one"),
        ({"name": "t", "fields": [1]}, "field 1: must be a table"),
        ({"name": "t", "fields": [{"id": "a b", "options": [{"value": "x"}]}]}, "id may hold"),
        ({"name": "t", "fields": [{"id": "a", "kind": "text"}]}, "kind must be"),
        ({"name": "t", "fields": [{"id": "a"}]}, "a choice needs options"),
        (
            {"name": "t", "fields": [{"id": "a", "kind": "flag", "options": [{"value": "x"}]}]},
            "a flag has no options",
        ),
        # a falsy non-list (options = 0 / false) once crashed with TypeError from len()
        ({"name": "t", "fields": [{"id": "a", "kind": "flag", "options": 0}]}, "no options"),
        ({"name": "t", "fields": [{"id": "a", "kind": "flag", "options": False}]}, "no options"),
        (
            {"name": "t", "fields": [{"id": "a", "options": [{"value": "x", "key": "xy"}]}]},
            "must be one printable character",
        ),
        (
            {"name": "t", "fields": [{"id": "a", "key": "k", "options": [{"value": "x"}]}]},
            "only a flag has its own key",
        ),
        (
            {
                "name": "t",
                "fields": [
                    {
                        "id": "a",
                        "options": [
                            {"value": "x", "default": True},
                            {"value": "y", "default": True},
                        ],
                    }
                ],
            },
            "more than one default option",
        ),
        (
            {"name": "t", "fields": [{"id": "a", "options": [{"value": "x", "actionable": 1}]}]},
            "'actionable' must be true or false",
        ),
        (
            {
                "name": "t",
                "consensus": [],
                "fields": [{"id": "a", "options": [{"value": "x"}]}],
            },
            "consensus must be a non-empty list",
        ),
        (
            {
                "name": "t",
                "actionable_field": "b",
                "fields": [{"id": "a", "options": [{"value": "x"}]}],
            },
            "actionable_field names unknown field 'b'",
        ),
        (
            {
                "name": "t",
                "actionable_field": "f",
                "fields": [{"id": "a", "options": [{"value": "x"}]}, {"id": "f", "kind": "flag"}],
            },
            "actionable_field must be a choice",
        ),
        (
            {"name": "t", "fields": [{"id": f"f{n}", "kind": "flag"} for n in range(51)]},
            "more than 50 fields",
        ),
        (
            {
                "name": "t",
                "fields": [{"id": "a", "options": [{"value": str(n)} for n in range(101)]}],
            },
            "more than 100 options",
        ),
    ],
)
def test_parse_errors_name_the_problem(data: dict[str, Any], message: str) -> None:
    with pytest.raises(TaxonomyError, match=message):
        parse(data, "custom.toml")


# -- properties ----------------------------------------------------------------------------------


def _valid_grade(t: Taxonomy) -> st.SearchStrategy[dict[str, Any]]:
    per_field: dict[str, st.SearchStrategy[Any]] = {}
    for f in t.fields:
        if f.kind == "flag":
            per_field[f.id] = st.sampled_from([True, False, "yes", "no", "1", "0", None, ""])
        else:
            choices: list[Any] = [o.value for o in f.options]
            if f.default is not None or not f.required:
                choices.append(None)
            per_field[f.id] = st.sampled_from(choices)
    required = {
        f.id: per_field[f.id]
        for f in t.fields
        if f.kind == "choice" and f.required and f.default is None
    }
    optional = {k: v for k, v in per_field.items() if k not in required}
    return st.fixed_dictionaries(required, optional=optional)


@given(_valid_grade(DEFAULT))
def test_valid_grades_validate_and_round_trip(values: dict[str, Any]) -> None:
    clean = DEFAULT.validate(values)
    assert set(clean) == {f.id for f in DEFAULT.fields}
    assert isinstance(clean["interpol_baseline"], bool)
    for f in DEFAULT.fields:
        if f.kind == "choice":
            assert DEFAULT.field(f.id).option(clean[f.id]) is not None
    # stored grades validate to themselves, and decide/label the same way
    assert DEFAULT.validate(clean) == clean
    assert DEFAULT.decision(DEFAULT.validate(clean)) == DEFAULT.decision(clean)
    assert DEFAULT.label(clean) == DEFAULT.label(DEFAULT.validate(clean))
    assert DEFAULT.actionable(clean) is (clean["uk_category"] != "not_illegal")


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 200),
    st.floats(allow_nan=True),
    st.text(max_size=6),
    st.sampled_from(["A", "A1", "yes", "flag", "choice", "x", "id", "a"]),
)
_junk = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.sampled_from(
                [
                    "name",
                    "fields",
                    "id",
                    "kind",
                    "options",
                    "value",
                    "key",
                    "label",
                    "default",
                    "actionable",
                    "required",
                    "consensus",
                    "actionable_field",
                    "show_evidence",
                ]
            )
            | st.text(max_size=4),
            inner,
            max_size=6,
        ),
    ),
    max_leaves=30,
)
_junk_field = st.fixed_dictionaries(
    {"id": st.sampled_from(["a", "b", "c", "a_1", ""]) | _scalars},
    optional={
        "kind": st.sampled_from(["choice", "flag"]) | _junk,
        "options": st.lists(
            st.fixed_dictionaries(
                {"value": st.sampled_from(["x", "y", ""]) | _scalars},
                optional={
                    "key": st.sampled_from(["k", "K", "", " ", "kk"]) | _scalars,
                    "default": _junk,
                    "actionable": _junk,
                    "label": _junk,
                },
            )
            | _junk,
            max_size=4,
        )
        | _junk,
        "key": st.sampled_from(["k", "z", ""]) | _scalars,
        "required": _junk,
        "label": _junk,
        "show_evidence": _junk,
    },
)
_junk_taxonomy = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["t", ""]) | _scalars,
        "fields": st.lists(_junk_field | _junk, max_size=4) | _junk,
        "consensus": st.lists(st.sampled_from(["a", "b", "zz"]) | _scalars, max_size=3) | _junk,
        "actionable_field": st.sampled_from(["a", "b", "zz"]) | _junk,
    },
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(_junk_taxonomy)
@example({"name": "t", "fields": [{"id": "a", "kind": "flag", "options": 0.0}]})
def test_junk_taxonomy_raises_only_taxonomy_error(data: dict[str, Any]) -> None:
    try:
        t = parse(data, "junk")
    except TaxonomyError as err:
        assert str(err).startswith("junk")
        return
    # what parses is usable: its defaults validate whenever nothing is required
    assert t.fields
    assert all(c in {f.id for f in t.fields} for c in t.consensus)


@settings(max_examples=300)
@given(
    st.dictionaries(st.sampled_from([f.id for f in DEFAULT.fields]) | st.text(max_size=5), _junk)
)
def test_junk_grades_raise_only_taxonomy_error(values: dict[str, Any]) -> None:
    try:
        clean = DEFAULT.validate(values)
    except TaxonomyError:
        return
    assert DEFAULT.validate(clean) == clean


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200) | st.text(max_size=200).map(lambda s: s.encode("utf-8")))
def test_junk_files_raise_only_taxonomy_error(tmp_path: Path, raw: bytes) -> None:
    p = tmp_path / "junk.toml"
    p.write_bytes(raw)
    try:
        load(p)
    except TaxonomyError as err:
        assert str(p) in str(err)


def test_toml_round_trip_of_default_file() -> None:
    """The default file is plain TOML a hotline can copy: parsing it by hand gives the same."""
    from importlib import resources

    text = resources.files("tipline.review").joinpath("data/taxonomy.toml").read_text("utf-8")
    assert parse(tomllib.loads(text), "default taxonomy") == DEFAULT
