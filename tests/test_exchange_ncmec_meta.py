"""The ncmec type writes each record's partner metadata as canonical JSON text itself
(:class:`tipline.exchange.meta_json.EncodedMeta`): that text must be exactly what
``json.dumps(meta, sort_keys=True, default=str)`` makes of the same dict, so the fetcher's
digests are the ones databases already hold (an unchanged record is not rewritten)."""

from __future__ import annotations

import hashlib
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from tipline.exchange.api import ExchangeRecord, FetchContext
from tipline.exchange.fetcher import _encoded
from tipline.exchange.meta_json import EncodedMeta, encoded, json_scalar
from tipline.exchange.ncmec import EntriesPage, Entry, _Fetch

CTX = FetchContext("NCMEC_META", {}, {"username": "u", "password": "p"})

text = st.text(max_size=30)
maybe_text = st.none() | text
prints = st.dictionaries(
    st.sampled_from(["md5", "sha1", "pdq", "pdna", "netclean", "other"]),
    st.text(min_size=1, max_size=70),
    max_size=5,
)


def _old_digest(rec: ExchangeRecord) -> str:
    """The digest as the fetcher computed it before the metadata came pre-encoded."""
    doc = json.dumps([rec.signal_type, rec.signal, rec.label, dict(rec.meta)], sort_keys=True)
    return hashlib.sha256(doc.encode()).hexdigest()


@settings(max_examples=300, deadline=None)
@given(
    entry_id=st.text(min_size=1, max_size=40),
    member_id=st.integers(min_value=-(2**70), max_value=2**70),
    member=text,
    entry_type=st.sampled_from(["image", "video"]),
    timestamp=maybe_text,
    classification=maybe_text,
    fingerprints=prints,
)
def test_encoded_metadata_is_json_dumps_sorted(
    entry_id: str,
    member_id: int,
    member: str,
    entry_type: str,
    timestamp: str | None,
    classification: str | None,
    fingerprints: dict[str, str],
) -> None:
    entry = Entry(
        entry_id, member_id, member, entry_type, False, timestamp, classification, fingerprints
    )
    updates, _ = _Fetch(CTX, None)._updates(EntriesPage([entry], "", None, []))
    for rec in updates.values():
        assert rec is not None
        assert type(rec.meta) is EncodedMeta
        assert rec.meta.json == json.dumps(dict(rec.meta), sort_keys=True, default=str)
        digest, meta_text = _encoded(rec)
        assert meta_text == rec.meta.json
        assert digest == _old_digest(rec)


def test_plain_metadata_is_encoded_as_before() -> None:
    rec = ExchangeRecord("pdq", "ab" * 32, "x", {"b": [1, 2], "a": "é", "c": None})
    assert _encoded(rec) == (_old_digest(rec), json.dumps(dict(rec.meta), sort_keys=True))
    assert encoded({}) == "{}"
    empty = ExchangeRecord("md5", "00" * 16)
    assert _encoded(empty)[0] == _old_digest(empty)


@given(st.none() | st.booleans() | st.integers() | st.text())
def test_json_scalar(value: str | int | bool | None) -> None:
    assert json_scalar(value) == json.dumps(value)
