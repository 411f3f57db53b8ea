"""The publishing side of Tipline peers (tipline.exchange.peer), on SQLite and PostgreSQL: the
change sequence reconciled from the bank (adds, label changes, disables, re-enables, deletions
as tombstones), pages and cursors that never go backwards, cursor errors, shares and opinions,
and signature checks. Hashes are random stand-ins labelled DEMO-benign-stand-in."""

from __future__ import annotations

import secrets
import time
from typing import Any

import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from tipline.accounts import create_user
from tipline.exchange import peer
from tipline.exchange.api import ExchangeConfigError, Opinion
from tipline.store.tables import BankEntryRow, BankRow

LABEL = "DEMO-benign-stand-in"


def _seal(owner: str, data: dict[str, Any]) -> bytes:
    return repr((owner, data)).encode()  # the sealing itself is tested with the exchange store


def _bank(s: Session, n: int) -> tuple[int, list[int]]:
    bank = BankRow(name="SHARED", role="alert", pdq_threshold=31, created_at=time.time())
    s.add(bank)
    s.flush()
    ids = []
    for _ in range(n):
        e = BankEntryRow(
            bank_id=bank.id,
            signal_type="pdq",
            signal=secrets.token_hex(32),
            label=LABEL,
            added_at=time.time(),
        )
        s.add(e)
        s.flush()
        ids.append(e.id)
    return bank.id, ids


def _all(s: Session, share: Any, size: int, cursor: str | None = None) -> tuple[list[Any], str]:
    out: list[Any] = []
    while True:
        page = peer.feed_page(s, share, "SHARED", cursor, size, time.time())
        out += page["changes"]
        before = peer.decode_cursor(share, cursor)
        assert peer.decode_cursor(share, page["next_cursor"]) >= before  # never backwards
        assert all(c["seq"] > before for c in page["changes"])
        cursor = page["next_cursor"]
        if not page["more"]:
            return out, cursor


def test_the_change_sequence_follows_the_bank(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as s, s.begin():
        create_user(s, "peer-b", "partner", None)
        _, ids = _bank(s, 25)
        secret = peer.share_bank(s, "SHARED", "peer-b", _seal)
        assert secret.startswith("tls_")
        share = peer.get_share(s, "SHARED", "peer-b")
        assert share is not None
        changes, cursor = _all(s, share, 10)
        assert [c["key"] for c in changes] == [f"e{i}" for i in ids]
        assert [c["seq"] for c in changes] == list(range(1, 26))
        assert all(c["enabled"] and c["label"] == LABEL for c in changes)
        # nothing changed: an empty page with the same cursor
        page = peer.feed_page(s, share, "SHARED", cursor, 10, time.time())
        assert page["changes"] == [] and page["next_cursor"] == cursor
        # a disable, a label change, a deletion, a new entry; then a re-enable
        s.execute(update(BankEntryRow).where(BankEntryRow.id == ids[0]).values(enabled=False))
        s.execute(update(BankEntryRow).where(BankEntryRow.id == ids[1]).values(label="other"))
        s.execute(delete(BankEntryRow).where(BankEntryRow.id == ids[2]))
        more, cursor2 = _all(s, share, 2, cursor)
        by_key = {c["key"]: c for c in more}
        assert set(by_key) == {f"e{ids[0]}", f"e{ids[1]}", f"e{ids[2]}"}
        assert by_key[f"e{ids[0]}"]["enabled"] is False
        assert by_key[f"e{ids[1]}"]["enabled"] and by_key[f"e{ids[1]}"]["label"] == "other"
        assert by_key[f"e{ids[2]}"]["enabled"] is False  # deleted: a tombstone
        assert min(c["seq"] for c in more) == 26
        s.execute(update(BankEntryRow).where(BankEntryRow.id == ids[0]).values(enabled=True))
        back, _ = _all(s, share, 10, cursor2)
        assert [(c["key"], c["enabled"]) for c in back] == [(f"e{ids[0]}", True)]
        # from scratch: each entry once, at its latest state
        fresh, _ = _all(s, share, 7)
        assert len(fresh) == 25 and len({c["key"] for c in fresh}) == 25
        # the share's listing
        [info] = peer.list_shares(s)
        assert (info.bank, info.peer, info.published) == ("SHARED", "peer-b", 24)


def test_bad_cursors_and_shares_are_clear_errors(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as s, s.begin():
        create_user(s, "peer-b", "partner", None)
        _bank(s, 3)
        with pytest.raises(peer.ShareError, match="no account"):
            peer.share_bank(s, "SHARED", "nobody", _seal)
        with pytest.raises(peer.ShareError, match="no bank"):
            peer.share_bank(s, "MISSING", "peer-b", _seal)
        peer.share_bank(s, "SHARED", "peer-b", _seal)
        share = peer.get_share(s, "SHARED", "peer-b")
        assert share is not None
        page = peer.feed_page(s, share, "SHARED", None, 10, time.time())
        for bad in ("x", "c1.", "c1.@@@", "c1.WzEsMiwzXQ", "c1.eyJhIjoxfQ", "c1." + "A" * 300):
            with pytest.raises(peer.CursorError):
                peer.feed_page(s, share, "SHARED", bad, 10, time.time())
        with pytest.raises(peer.CursorError, match="ahead"):
            peer.feed_page(s, share, "SHARED", peer.encode_cursor(share.id, 4), 10, time.time())
        with pytest.raises(peer.CursorError, match="another share"):
            peer.feed_page(s, share, "SHARED", peer.encode_cursor(share.id + 9, 1), 10, 0.0)
        assert peer.decode_cursor(share, page["next_cursor"]) == 3
        # opinions: a bad one is refused, the same one twice is one row
        key = page["changes"][0]["key"]
        for doc, why in (
            ({"key": "zzz", "category": "positive"}, "entry key"),
            ({"key": key, "category": "great"}, "category"),
            ({"key": key, "category": "negative", "reasons": "no"}, "reasons"),
            ({"key": "e99999", "category": "negative"}, "never published"),
        ):
            with pytest.raises(peer.ShareError, match=why):
                peer.record_opinion(s, share, doc, time.time())
        peer.record_opinion(s, share, {"key": key, "category": "negative"}, time.time())
        peer.record_opinion(s, share, {"key": key, "category": "positive"}, time.time())
        assert peer.list_shares(s)[0].opinions == 1
        assert peer.unshare_bank(s, "SHARED", "peer-b") is True
        assert peer.unshare_bank(s, "SHARED", "peer-b") is False
        assert s.scalars(select(BankEntryRow)).all()  # the bank stays


def test_signatures_verify_only_the_exact_request_in_time() -> None:
    secret = peer.new_secret()
    body = b'{"changes":[]}'
    now = time.time()
    h = {
        k.lower(): v
        for k, v in peer.sign_headers(secret, "nonce-1234", "GET", "/x?a=1", body, now).items()
    }
    peer.verify(secret, h, "nonce-1234", "GET", "/x?a=1", body, now + 10)
    for args in (
        (peer.new_secret(), h, "nonce-1234", "GET", "/x?a=1", body, now),  # other secret
        (secret, h, "nonce-9999", "GET", "/x?a=1", body, now),  # replayed to another request
        (secret, h, "nonce-1234", "GET", "/x?a=2", body, now),  # another page
        (secret, h, "nonce-1234", "GET", "/x?a=1", body + b" ", now),  # altered
        (secret, h, "nonce-1234", "GET", "/x?a=1", body, now + 301),  # stale
        (secret, {}, "nonce-1234", "GET", "/x?a=1", body, now),  # unsigned
        (secret, {**h, "x-tipline-timestamp": "soon"}, "nonce-1234", "GET", "/x?a=1", body, now),
    ):
        with pytest.raises(peer.SignatureError):
            peer.verify(*args)  # type: ignore[arg-type]


def test_the_peer_type_checks_its_configuration() -> None:
    typ = peer.TiplinePeerExchange()
    ok = typ.validate_config({"url": "https://peer.example.org/", "bank": "TIPLINE_GRADED"})
    assert ok["url"] == "https://peer.example.org" and ok["partner"] == "peer.example.org"
    for bad in (
        {"url": "ftp://x", "bank": "A"},
        {"url": "https://x", "bank": "lower case"},
        {"url": "https://x", "bank": "A", "page_size": 0},
        {"url": "https://x"},
    ):
        with pytest.raises(ExchangeConfigError):
            typ.validate_config(bad)
    with pytest.raises(ExchangeConfigError, match="tls_"):
        typ.validate_credentials({"token": "tl_x", "secret": "plain"})
    assert typ.accepts_opinions and isinstance(Opinion("e1", "pdq", "0" * 64, "positive"), Opinion)


def test_a_push_is_checked_per_record(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as s, s.begin():
        create_user(s, "peer-b", "partner", None)
        _bank(s, 1)
        peer.share_bank(s, "SHARED", "peer-b", _seal)
        share = peer.get_share(s, "SHARED", "peer-b")
        assert share is not None
        with pytest.raises(peer.ShareError, match="accept-into"):
            peer.plan_submissions(s, share, {}, "peer-b")
        with pytest.raises(peer.ShareError, match="own"):
            peer.share_bank(s, "SHARED", "peer-b", _seal, accept_into="SHARED")
        peer.share_bank(s, "SHARED", "peer-b", _seal, accept_into="FROM_B")
        assert s.scalar(select(BankRow.role).where(BankRow.name == "FROM_B")) == "alert"
        with pytest.raises(peer.ShareError, match="object"):
            peer.plan_submissions(s, share, ["x"], "peer-b")
        good = secrets.token_hex(32)
        plan = peer.plan_submissions(
            s,
            share,
            {
                "e1": {"signal_type": "pdq", "signal": good.upper(), "label": LABEL,
                       "meta": {"list": "B_LIST", "classification": "C", "note": "dropped"}},
                "e2": {"signal_type": "pdq", "signal": "not-hex"},
                "e3": {"signal_type": "nope", "signal": good},
                "e4": "a string",
                "e5": None,
                "": {"signal_type": "pdq", "signal": good},
            },
            "peer-b",
        )  # fmt: skip
        assert plan.bank == "FROM_B" and list(plan.add) == ["e1"] and plan.unchanged == 1
        entry = plan.add["e1"]
        assert entry.signal == good and entry.metadata is not None
        partner = entry.metadata["exchange"]["partner"]
        assert partner == {"partner": "peer-b", "list": "B_LIST", "classification": "C"}
        assert sorted(p["key"] for p in plan.problems) == ["", "e2", "e3", "e4"]
        # once recorded: the same record again is unchanged, a withdrawal disables it
        s.add(BankEntryRow(bank_id=1, signal_type="pdq", signal=good, added_at=0.0))
        s.flush()
        eid = s.scalar(select(BankEntryRow.id).where(BankEntryRow.signal == good))
        assert eid is not None
        peer.record_submissions(s, share, plan, {"e1": eid}, time.time())
        again = peer.plan_submissions(s, share, {"e1": {"signal_type": "pdq", "signal": good}}, "b")
        assert not again.add and again.unchanged == 1
        gone = peer.plan_submissions(s, share, {"e1": None}, "peer-b")
        assert gone.disable == {"e1": eid}
        peer.record_submissions(s, share, gone, {}, time.time())
        back = peer.plan_submissions(s, share, {"e1": {"signal_type": "pdq", "signal": good}}, "b")
        assert back.enable == {"e1": eid}
        with pytest.raises(peer.ShareError, match="at most"):
            peer.plan_submissions(s, share, {f"k{i}": None for i in range(5001)}, "peer-b")
