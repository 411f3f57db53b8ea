"""Matches against an exchange bank carry the partner's metadata (issue 12, item 5): an entry
fetched from the NCMEC-shaped replay server (tests/ncmec_replay.py, a real server on
127.0.0.1) matches a reported benign image; the stored match names the exchange, the partner
member, its entry id and classification; the review desk shows them and the CyberTipline-style
report states them. SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import io
import re
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ncmec_replay import Replay, ReplayEntry, Source
from test_exchange_ncmec import NOW, _configure, add, fetch_until_done
from tipline import pipeline
from tipline.actions.ncmec import cybertip_xml
from tipline.exchange import partners, store
from tipline.exchange.fetcher import FetchOptions, run_fetch
from tipline.service import auth
from tipline.service.app import create_app
from tipline.service.settings import ServiceSettings
from tipline.store.tables import Item

PASSWORD = "partner metadata password"


def _photo() -> bytes:
    rng = np.random.default_rng(12)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8), "RGB").save(out, "PNG")
    return out.getvalue()


@pytest.fixture
def replay() -> Iterator[Replay]:
    r = Replay(Source(), page_size=100).start()
    yield r
    r.stop()


def test_partner_metadata_reaches_the_match_the_desk_and_the_report(
    db_url: str, session_factory: sessionmaker[Session], tmp_path: Path, replay: Replay
) -> None:
    photo = _photo()
    md5 = hashlib.md5(photo).hexdigest()
    replay.source.add(
        ReplayEntry(
            "entry-7", NOW - 7200, member_id=43, classification="B1", fingerprints={"md5": md5}
        )
    )
    _configure()
    try:
        add(session_factory, replay)
        fetch_until_done(session_factory, FetchOptions(budget_seconds=0.0))
        # a second exchange whose credentials the partner rejects: failing, visible
        add(session_factory, replay, name="REJECTED", creds={"username": "x", "password": "y"})
        assert not run_fetch(session_factory, "REJECTED", FetchOptions()).succeeded
    finally:
        store.configure(None, None)
    with session_factory() as s, s.begin():
        auth.create_user(s, "sam", "senior_analyst", PASSWORD)
    settings = ServiceSettings(
        data_dir=tmp_path,
        database_url=db_url,
        media_mode="hash-only",
        inprocess_workers=1,
        cookie_secure="false",
    )  # type: ignore[arg-type]
    try:
        with TestClient(create_app(settings, load_index="sync")) as c:
            page = c.get("/report")
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
            assert csrf
            res = c.post(
                "/report",
                data={"csrf_token": csrf.group(1), "description": "benign test"},
                files={"upload": ("p.png", photo, "image/png")},
            )
            assert res.status_code == 200, res.text
            deadline = time.monotonic() + 120
            item = None
            while time.monotonic() < deadline:
                with session_factory() as s:
                    item = s.scalar(select(Item).where(Item.md5 == md5))
                    if item is not None and item.matches and item.cluster_id:
                        break
                time.sleep(0.05)
            assert item is not None and item.matches, "the report's item never matched"
            (match,) = item.matches
            assert match["bank"] == "NCMEC"
            partner = match["partner"]
            assert partner["exchange"] == "NCMEC" and partner["api"] == "ncmec"
            assert partner["member_id"] == 43 and partner["member"] == "Example Member2"
            assert partner["entry_id"] == "entry-7" and partner["classification"] == "B1"
            # the desk's cluster page says which partner's list matched and how it was classed
            res = c.post("/api/v1/auth/login", json={"username": "sam", "password": PASSWORD})
            assert res.status_code == 200, res.text
            token = res.json()["csrf_token"]
            claim = c.post(
                f"/desk/clusters/{item.cluster_id}/claim",
                data={"csrf_token": token},
                follow_redirects=False,
            )
            assert claim.status_code == 303, claim.text
            desk = c.get(f"/desk/clusters/{item.cluster_id}").text
            assert "via NCMEC: Example Member2" in desk and "classified B1" in desk
            # the desk's Exchanges page: each exchange's state, last fetch, items and errors
            page = c.get("/desk/exchanges")
            assert page.status_code == 200, page.text
            rows = dict(re.findall(r'<tr data-exchange="([^"]+)" data-state="([^"]+)">', page.text))
            assert rows == {"NCMEC": "up to date", "REJECTED": "failing"}
            assert 'href="/desk/exchanges" aria-current="page"' in page.text
            assert "401" in page.text or "rejected" in page.text.lower()
            c.cookies.clear()
            assert (
                c.get("/desk/exchanges", headers={"accept": "application/json"}).status_code == 401
            )
        # the CyberTipline-style report states the partner match
        with session_factory() as s, s.begin():
            row = s.get(Item, item.id)
            assert row is not None
            row.grade = {"actionable": True, "values": {"ncmec_category": "B1"}}
            row.graded_at = row.first_seen
        with session_factory() as s:
            xml = cybertip_xml(s, item.id)
        assert (
            "<value>exchange NCMEC, partner Example Member2, member id 43, entry entry-7, "
            "classification B1, bank NCMEC</value>" in xml
        )
    finally:
        pipeline.configure(None)


def test_hostile_partner_fields_are_bounded() -> None:
    meta = {
        "exchange": {
            "name": "peer",
            "api": "tipline",
            "key": "k" * 1000,
            "partner": {
                **{f"f{i}": "x" * 5000 for i in range(100)},
                "nested": {"name": "Partner Org"},
                "list_of": [1, 2, 3],
            },
        }
    }
    out = partners.partner_of(meta)
    assert out is not None
    assert len(out) <= partners.MAX_FIELDS + 3
    assert all(len(str(v)) <= partners.MAX_TEXT for v in out.values())
    assert "list_of" not in out
    assert partners.partner_of({"exchange": "not a mapping"}) is None
    assert partners.partner_of(None) is None
