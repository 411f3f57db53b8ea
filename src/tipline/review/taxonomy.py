"""The grading taxonomy: the questions an analyst answers about an item, from a TOML file.

The built-in default (``tipline/review/data/taxonomy.toml``) covers UK categories A/B/C,
non-photographic and not-illegal, NCMEC industry classification A1/A2/B1/B2, age band,
AI-generated yes/no/unknown and the INTERPOL Baseline flag. A hotline replaces it with its own
file (the ``review_taxonomy`` setting); docs/review.md describes the format.

A grade is a mapping ``field id -> value`` (a flag is ``True``/``False``). Two grades *agree*
when their :meth:`Taxonomy.decision` texts are equal: the values of the ``consensus`` fields.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from tipline.errors import TiplineError

MAX_FIELDS = 50
MAX_OPTIONS = 100


class TaxonomyError(TiplineError):
    """A taxonomy file that cannot be used, or a grade that does not fit the taxonomy."""


@dataclass(frozen=True, slots=True)
class Option:
    value: str
    label: str
    key: str = ""
    #: False: choosing this option means "no action" (see Taxonomy.actionable_field).
    actionable: bool = True
    default: bool = False


@dataclass(frozen=True, slots=True)
class Field:
    id: str
    label: str
    kind: str = "choice"  # "choice" (one option) or "flag" (yes/no checkbox)
    required: bool = True
    options: tuple[Option, ...] = ()
    #: Keyboard shortcut that toggles a flag.
    key: str = ""
    #: Show the item's AI-provenance evidence beside this question.
    show_evidence: bool = False

    def option(self, value: str) -> Option | None:
        return next((o for o in self.options if o.value == value), None)

    @property
    def default(self) -> str | None:
        return next((o.value for o in self.options if o.default), None)


@dataclass(frozen=True, slots=True)
class Taxonomy:
    name: str
    fields: tuple[Field, ...]
    consensus: tuple[str, ...]
    actionable_field: str

    def field(self, field_id: str) -> Field:
        for f in self.fields:
            if f.id == field_id:
                return f
        raise TaxonomyError(f"unknown grading field {field_id!r}")

    def validate(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The grade as stored: every field present, flags as bools; one-line errors."""
        unknown = sorted(set(values) - {f.id for f in self.fields})
        if unknown:
            raise TaxonomyError(f"unknown grading field(s): {', '.join(unknown)}")
        out: dict[str, Any] = {}
        for f in self.fields:
            raw = values.get(f.id)
            if f.kind == "flag":
                out[f.id] = _flag(raw, f.id)
                continue
            value = "" if raw is None else str(raw)
            if not value:
                if f.required and f.default is None:
                    raise TaxonomyError(f"{f.label}: choose one")
                out[f.id] = f.default or ""
                continue
            if f.option(value) is None:
                choices = ", ".join(o.value for o in f.options)
                raise TaxonomyError(f"{f.label}: {value[:40]!r} is not one of {choices}")
            out[f.id] = value
        return out

    def decision(self, grade: Mapping[str, Any]) -> str:
        """What independent grades must share to agree: ``field=value;...`` of the consensus
        fields, in taxonomy order."""
        return ";".join(f"{fid}={_text(grade.get(fid))}" for fid in self.consensus)

    def actionable(self, grade: Mapping[str, Any]) -> bool:
        """Whether the grade calls for action (its hashes join the alert bank)."""
        opt = self.field(self.actionable_field).option(str(grade.get(self.actionable_field, "")))
        return opt.actionable if opt is not None else False

    def label(self, grade: Mapping[str, Any]) -> str:
        """A short bank-entry label, e.g. ``uk_category:A ncmec_category:A1 interpol_baseline``."""
        parts = []
        for f in self.fields:
            v = grade.get(f.id)
            if f.kind == "flag":
                if v is True:
                    parts.append(f.id)
            elif v not in (None, "", "unknown", "none"):
                parts.append(f"{f.id}:{v}")
        return " ".join(parts)

    def shortcuts(self) -> dict[str, tuple[str, str]]:
        """key -> (field id, option value or "" for a flag)."""
        out: dict[str, tuple[str, str]] = {}
        for f in self.fields:
            if f.kind == "flag" and f.key:
                out[f.key] = (f.id, "")
            for o in f.options:
                if o.key:
                    out[o.key] = (f.id, o.value)
        return out


def _text(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    return "" if v is None else str(v)


def _flag(raw: Any, fid: str) -> bool:
    if isinstance(raw, bool):
        return raw
    if raw is None or raw == "":
        return False
    low = str(raw).strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise TaxonomyError(f"{fid}: want yes or no, not {str(raw)[:20]!r}")


def _str(d: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
    v = d.get(key, default)
    if not isinstance(v, str) or (default is None and not v.strip()):
        raise TaxonomyError(f"{where}: {key!r} must be a non-empty string")
    return v.strip()


def _bool(d: Mapping[str, Any], key: str, where: str, default: bool) -> bool:
    v = d.get(key, default)
    if not isinstance(v, bool):
        raise TaxonomyError(f"{where}: {key!r} must be true or false")
    return v


def parse(data: Mapping[str, Any], source: str = "taxonomy") -> Taxonomy:
    """Build and check a taxonomy from parsed TOML; every problem names where it is."""
    name = _str(data, "name", source)
    raw_fields = data.get("fields")
    if not isinstance(raw_fields, list) or not raw_fields:
        raise TaxonomyError(f"{source}: needs at least one [[fields]] table")
    if len(raw_fields) > MAX_FIELDS:
        raise TaxonomyError(f"{source}: more than {MAX_FIELDS} fields")
    fields: list[Field] = []
    keys: dict[str, str] = {}

    def claim_key(key: str, owner: str, where: str) -> None:
        if not key:
            return
        if len(key) != 1 or not key.isprintable() or key.isspace():
            raise TaxonomyError(f"{where}: key {key!r} must be one printable character")
        if key.lower() in keys:
            raise TaxonomyError(f"{where}: key {key!r} is already used by {keys[key.lower()]}")
        keys[key.lower()] = owner

    for n, rf in enumerate(raw_fields, 1):
        where = f"{source}: field {n}"
        if not isinstance(rf, dict):
            raise TaxonomyError(f"{where}: must be a table")
        fid = _str(rf, "id", where)
        where = f"{source}: field {fid!r}"
        if not fid.replace("_", "").isalnum():
            raise TaxonomyError(f"{where}: id may hold letters, digits and underscores only")
        if any(f.id == fid for f in fields):
            raise TaxonomyError(f"{where}: defined twice")
        kind = _str(rf, "kind", where, "choice")
        if kind not in ("choice", "flag"):
            raise TaxonomyError(f"{where}: kind must be 'choice' or 'flag'")
        options: list[Option] = []
        raw_opts = rf.get("options", [])
        if kind == "choice" and (not isinstance(raw_opts, list) or not raw_opts):
            raise TaxonomyError(f"{where}: a choice needs options")
        if kind == "flag" and raw_opts != []:  # also options = 0 / false: not a list
            raise TaxonomyError(f"{where}: a flag has no options")
        if len(raw_opts) > MAX_OPTIONS:
            raise TaxonomyError(f"{where}: more than {MAX_OPTIONS} options")
        for ro in raw_opts:
            if not isinstance(ro, dict):
                raise TaxonomyError(f"{where}: each option must be a table")
            value = _str(ro, "value", where)
            if any(o.value == value for o in options):
                raise TaxonomyError(f"{where}: option {value!r} listed twice")
            key = _str(ro, "key", where, "")
            claim_key(key, f"{fid}={value}", where)
            options.append(
                Option(
                    value=value,
                    label=_str(ro, "label", where, value) or value,
                    key=key,
                    actionable=_bool(ro, "actionable", where, True),
                    default=_bool(ro, "default", where, False),
                )
            )
        if sum(o.default for o in options) > 1:
            raise TaxonomyError(f"{where}: more than one default option")
        key = _str(rf, "key", where, "")
        if key and kind != "flag":
            raise TaxonomyError(f"{where}: only a flag has its own key (give options keys)")
        claim_key(key, fid, where)
        fields.append(
            Field(
                id=fid,
                label=_str(rf, "label", where, fid) or fid,
                kind=kind,
                required=_bool(rf, "required", where, True),
                options=tuple(options),
                key=key,
                show_evidence=_bool(rf, "show_evidence", where, False),
            )
        )
    ids = [f.id for f in fields]
    consensus = data.get("consensus", ids)
    if not isinstance(consensus, list) or not consensus:
        raise TaxonomyError(f"{source}: consensus must be a non-empty list of field ids")
    for c in consensus:
        if c not in ids:
            raise TaxonomyError(f"{source}: consensus names unknown field {c!r}")
    actionable_field = _str(data, "actionable_field", source, ids[0])
    if actionable_field not in ids:
        raise TaxonomyError(f"{source}: actionable_field names unknown field {actionable_field!r}")
    if next(f for f in fields if f.id == actionable_field).kind != "choice":
        raise TaxonomyError(f"{source}: actionable_field must be a choice")
    return Taxonomy(name, tuple(fields), tuple(consensus), actionable_field)


def load(path: str | Path | None = None) -> Taxonomy:
    """The taxonomy in ``path``, or the built-in default when ``path`` is empty."""
    if not path:
        text = resources.files("tipline.review").joinpath("data/taxonomy.toml").read_text("utf-8")
        return parse(tomllib.loads(text), "default taxonomy")
    p = Path(path)
    try:
        text = p.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise TaxonomyError(f"cannot read taxonomy file {p}: {err}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise TaxonomyError(f"taxonomy file {p} is not valid TOML: {err}") from None
    return parse(data, str(p))


__all__ = ["Field", "Option", "Taxonomy", "TaxonomyError", "load", "parse"]
