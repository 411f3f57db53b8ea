"""Partner metadata that carries its canonical JSON text, made once by the exchange type.

The fetcher stores each record's partner metadata as JSON and keys "did this record change"
on a SHA-256 over ``json.dumps(meta, sort_keys=True, default=str)`` (the text databases
already hold digests of). Encoding a small dict with sorted keys costs more than everything
else the fetcher does with a record, and a type that parses a page knows its metadata's shape:
it can write that same text directly. :class:`EncodedMeta` is the metadata dict with that
text beside it; the fetcher uses :attr:`EncodedMeta.json` instead of encoding again.

The text must be exactly ``canonical(meta)`` (tests check the types that make it, with
arbitrary values). An :class:`EncodedMeta` is not to be changed after it is made: its text
would no longer say what it holds.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

#: ``json.dumps(obj, sort_keys=True, default=str)`` without building an encoder per call.
canonical = json.JSONEncoder(sort_keys=True, default=str).encode
#: A string as JSON (the C encoder ``json.dumps`` uses by default: ASCII, escaped).
json_str = json.encoder.encode_basestring_ascii


class EncodedMeta(dict[str, Any]):
    """A metadata dict and its canonical JSON text (``canonical(self)``, made by whoever made
    the dict)."""

    __slots__ = ("json",)

    json: str


def encoded(meta: Mapping[str, Any]) -> str:
    """``canonical(meta)``: the text an :class:`EncodedMeta` carries, else encoded now."""
    if type(meta) is EncodedMeta:
        return meta.json
    return canonical(dict(meta))


def json_scalar(value: str | int | bool | None) -> str:
    """A string, an int, a bool or None as ``json.dumps`` writes it."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return json_str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return int.__repr__(value)


__all__ = ["EncodedMeta", "canonical", "encoded", "json_scalar", "json_str"]
