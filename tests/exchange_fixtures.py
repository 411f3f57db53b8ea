"""The set-up the exchange tests share. The exchange store with a credential key and a fetch
policy of 127.0.0.1 only (:func:`exchange_store`), on the test database or on a migrated
SQLite file of its own (:func:`sqlite_db`); and the service (feedback, pushes, StopNCII): the
real app on a test database (SQLite or PostgreSQL) that grades in one analyst's step, fetches
only from 127.0.0.1 and keeps no media; accounts with API tokens; a benign image reported and
run through the real pipeline; a cluster claimed and graded through the review API."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from tipline import pipeline
from tipline.exchange import store
from tipline.net.fetch import FetchSettings
from tipline.service import auth, wiring
from tipline.service.app import create_app
from tipline.service.intake import IntakeContext, IntakeSettings, NewReport, create_reports
from tipline.service.settings import ServiceSettings
from tipline.store import migrations
from tipline.store.base import make_engine, session_factory
from tipline.store.jobs import JobQueue
from tipline.store.media import Keyring, new_key
from tipline.store.tables import Item, User

#: Fetches allowed to the loopback replay servers only.
LOCAL = FetchSettings.build(allow_networks=["127.0.0.1/32"])


@contextmanager
def exchange_store(sf: sessionmaker[Session]) -> Iterator[sessionmaker[Session]]:
    """``sf`` with the exchange store configured: a new credential key (credentials sealed at
    rest) and the :data:`LOCAL` fetch policy; unconfigured on the way out."""
    ring = Keyring()
    ring.add(new_key())
    store.configure(LOCAL, lambda: ring)
    try:
        yield sf
    finally:
        store.configure(None, None)


@contextmanager
def sqlite_db(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    """A migrated SQLite file of its own under ``tmp_path``, the exchange store configured."""
    url = f"sqlite:///{tmp_path / 'x.sqlite3'}"
    migrations.upgrade(url)
    engine = make_engine(url)
    try:
        with exchange_store(session_factory(engine)) as sf:
            yield sf
    finally:
        engine.dispose()


def service_app(db_url: str, tmp_path: Path) -> tuple[FastAPI, ServiceSettings]:
    """The service on ``db_url`` (data under ``tmp_path/data``), no in-process workers (the
    test runs each job), one analyst's grade final, fetches allowed to 127.0.0.1 only, hashes
    kept and no media. Creating it sets the credential key and the fetch policy."""
    settings = ServiceSettings(
        data_dir=tmp_path / "data",
        database_url=db_url,
        inprocess_workers=0,
        cookie_secure="false",
        review_consensus=1,
        fetch_allow_networks="127.0.0.1/32",
        media_mode="hash-only",
    )  # type: ignore[arg-type]
    settings.data_dir.mkdir()
    return create_app(settings, load_index="sync"), settings


def user_token(
    s: Session, name: str, role: str, scopes: Sequence[str], purpose: str = "exchange-test"
) -> str:
    """A new account ``name`` with ``role`` and an API token with ``scopes`` (in ``s``'s
    transaction)."""
    auth.create_user(s, name, role, f"{purpose} password")
    user = s.scalars(select(User).where(User.username == name)).one()
    return auth.create_token(s, user, purpose, list(scopes))


@contextmanager
def serving(app: FastAPI, settings: ServiceSettings) -> Iterator[TestClient]:
    """A client inside the app's lifespan (which loads the index: fetched entries are in it),
    with the pipeline matching through that index; the pipeline is reset on the way out."""
    client = TestClient(app)
    with client:
        pipeline.configure(
            wiring.pipeline_config(settings, match=app.state.ctx.matcher.match_record)
        )
        try:
            yield client
        finally:
            pipeline.configure(None)


def report(sf: sessionmaker[Session], engine: Engine, image: bytes) -> Item:
    """Report ``image`` through the partner API's intake and run the pipeline (hash, match,
    cluster, triage) over it: its item, detached."""
    ctx = IntakeContext(sf, JobQueue(engine), IntakeSettings(secret=b"s"))
    create_reports(ctx, [NewReport(uploads=[("photo.png", image)])], "partner_api")
    queue = JobQueue(engine)
    for _ in range(50):
        if queue.run_one("pipeline", list(pipeline.STAGES), session_factory=sf) is None:
            break
    with sf() as s:
        item = s.scalars(select(Item).where(Item.md5 == hashlib.md5(image).hexdigest())).one()
        s.expunge(item)
    return item


def grade(client: TestClient, token: str, item: Item, values: dict[str, str]) -> dict[str, Any]:
    """Claim ``item``'s cluster and grade it with ``values`` as ``token``'s account: the
    review API's answer."""
    url = f"/api/v1/review/clusters/{item.cluster_id}"
    client.cookies.clear()
    headers = {"Authorization": f"Bearer {token}"}
    assert client.post(url + "/claim", headers=headers).status_code == 200
    res = client.post(url + "/grade", headers=headers, json={"values": values})
    assert res.status_code == 200, res.text
    return dict(res.json())
