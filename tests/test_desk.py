"""The review desk's routes through the real app (TestClient), on SQLite and PostgreSQL:
sign-in redirects, claims, protective media routes, exposure limits, grading forms, CSRF,
preferences and the audit trail. The browser flow is tests/test_desk_browser.py."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tipline.actions import webhooks
from tipline.service import auth
from tipline.service.app import create_app
from tipline.service.settings import ServiceSettings
from tipline.store.media import from_settings
from tipline.store.tables import AuditEvent, Cluster, ExposureInterval, Item, Job, User

PASSWORD = "desk route password"


def _photo(seed: int = 3) -> bytes:
    """A colourful, detailed benign test image (noise plus bands)."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    arr[:, ::20, 0] = 255
    out = io.BytesIO()
    Image.fromarray(arr, "RGB").save(out, "PNG")
    return out.getvalue()


@dataclass
class Desk:
    client: TestClient
    sf: sessionmaker[Session]
    settings: ServiceSettings
    cluster_id: int
    item_id: int


def _make(db_url: str, sf: sessionmaker[Session], tmp_path: Path, **over: object) -> Desk:
    settings = ServiceSettings(
        data_dir=tmp_path, database_url=db_url, inprocess_workers=0, cookie_secure="false", **over
    )  # type: ignore[arg-type]
    ref = from_settings(settings).put(_photo())
    with sf() as s, s.begin():
        for name, role in (
            ("alice", "analyst"),
            ("bob", "analyst"),
            ("audrey", "auditor"),
            ("sam", "senior_analyst"),
        ):
            auth.create_user(s, name, role, PASSWORD)
        cluster = Cluster(size=1, priority=30.0, status="open")
        s.add(cluster)
        s.flush()
        item = Item(
            sha256="ab" * 32,
            md5="cd" * 16,
            media_type="image/png",
            size=1000,
            media_ref=ref,
            status="hashed",
            cluster_id=cluster.id,
            first_seen=datetime.now(UTC) - timedelta(hours=2),
            keyword_hits=["benign-test-keyword"],
            warnings=["name says image/jpeg, content is image/png"],
        )
        s.add(item)
        s.flush()
        cluster.representative_item_id = item.id
        cid, iid = cluster.id, item.id
    app = create_app(settings, load_index="none")
    return Desk(TestClient(app), sf, settings, cid, iid)


@pytest.fixture
def desk(db_url: str, session_factory: sessionmaker[Session], tmp_path: Path) -> Iterator[Desk]:
    d = _make(db_url, session_factory, tmp_path)
    with d.client:
        yield d


def _login(c: TestClient, user: str) -> str:
    c.cookies.clear()
    res = c.post("/api/v1/auth/login", json={"username": user, "password": PASSWORD})
    assert res.status_code == 200, res.text
    return str(res.json()["csrf_token"])


HTML = {"accept": "text/html,application/xhtml+xml"}


def test_signed_out_people_are_sent_to_sign_in_and_machines_get_401(desk: Desk) -> None:
    c = desk.client
    res = c.get("/desk", headers=HTML, follow_redirects=False)
    assert res.status_code == 303 and res.headers["location"] == "/login?next=/desk"
    res = c.get("/desk")
    assert res.status_code == 401 and res.json() == {"message": "authentication required"}
    res = c.get(f"/desk/media/{desk.item_id}/full", headers=HTML)
    assert res.status_code == 401 and b"PNG" not in res.content
    # after signing in through the form, back to the desk
    form = c.get("/login?next=/desk")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert csrf
    res = c.post(
        "/login",
        data={"username": "alice", "password": PASSWORD, "csrf_token": csrf.group(1),
              "next": "/desk"},
        follow_redirects=False,
    )  # fmt: skip
    assert res.status_code == 303 and res.headers["location"] == "/desk"
    page = c.get("/desk")
    assert page.status_code == 200 and f'data-cluster="{desk.cluster_id}"' in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"


def test_wrong_role_gets_no_media_and_a_page_in_words(desk: Desk) -> None:
    c = desk.client
    _login(c, "audrey")
    res = c.get(f"/desk/media/{desk.item_id}/full")
    assert res.status_code == 403 and res.json() == {"message": "permission 'media:view' required"}
    res = c.get("/desk/escalations", headers=HTML)
    assert res.status_code == 403 and "Not allowed" in res.text
    home = c.get("/desk", headers=HTML)
    assert home.status_code == 200 and "does not review material" in home.text


def test_claims_are_exclusive_and_media_needs_the_claim(desk: Desk) -> None:
    c = desk.client
    csrf_bob = _login(c, "bob")
    bob_cookies = dict(c.cookies)
    assert c.get(f"/desk/media/{desk.item_id}/preview").status_code == 403
    csrf = _login(c, "alice")
    res = c.post(f"/desk/clusters/{desk.cluster_id}/claim", data={"csrf_token": csrf},
                 follow_redirects=False)  # fmt: skip
    assert res.status_code == 303
    page = c.get(f"/desk/clusters/{desk.cluster_id}")
    assert page.status_code == 200
    assert f'src="/desk/media/{desk.item_id}/preview"' in page.text
    assert f'data-src="/desk/media/{desk.item_id}/full"' in page.text
    assert f' src="/desk/media/{desk.item_id}/full"' not in page.text  # only on a reveal
    # text findings are behind a reveal (<details>), never open by default
    assert '<details class="texts">' in page.text and "benign-test-keyword" in page.text
    # a name that disguised the content is shown with the item's facts
    assert "name says image/jpeg, content is image/png" in page.text
    alice_cookies = dict(c.cookies)
    c.cookies.clear()
    for k, v in bob_cookies.items():
        c.cookies.set(k, v)
    res = c.post(f"/desk/clusters/{desk.cluster_id}/claim", data={"csrf_token": csrf_bob})
    assert res.status_code == 409 and "being reviewed by alice" in res.text
    assert c.get(f"/desk/media/{desk.item_id}/full").status_code == 403
    c.cookies.clear()
    for k, v in alice_cookies.items():
        c.cookies.set(k, v)
    # the claim holder gets a filtered preview: small, greyscale and blurred
    prev = c.get(f"/desk/media/{desk.item_id}/preview")
    assert prev.status_code == 200 and prev.headers["content-type"] == "image/jpeg"
    assert prev.headers["cache-control"] == "no-store"
    im = np.asarray(Image.open(io.BytesIO(prev.content)).convert("RGB")).astype(float)
    assert max(im.shape[:2]) <= 512
    assert np.abs(im[..., 0] - im[..., 2]).max() <= 8
    full = c.get(f"/desk/media/{desk.item_id}/full")
    fim = np.asarray(Image.open(io.BytesIO(full.content)).convert("L")).astype(float)
    assert fim.shape == (300, 400)  # shown at its own size, re-encoded
    detail = lambda a: float(np.abs(np.diff(a, axis=1)).mean())  # noqa: E731
    assert detail(im[..., 0]) * 5 < detail(fim)
    # a view without a claim, CSRF or the right role is refused before any byte; views audited
    with desk.sf() as s:
        modes = [
            (e.actor, e.details.get("mode"))
            for e in s.scalars(select(AuditEvent).where(AuditEvent.action == "media.view"))
        ]
    assert modes == [("user:alice", "preview"), ("user:alice", "reveal")]


def _claim(d: Desk, user: str) -> str:
    csrf = _login(d.client, user)
    res = d.client.post(
        f"/desk/clusters/{d.cluster_id}/claim", data={"csrf_token": csrf}, follow_redirects=False
    )
    assert res.status_code == 303, res.text
    return csrf


def test_grading_form_needs_csrf_valid_answers_then_records(desk: Desk) -> None:
    c = desk.client
    csrf = _claim(desk, "alice")
    url = f"/desk/clusters/{desk.cluster_id}/grade"
    answers = {"uk_category": "not_illegal", "ncmec_category": "none"}
    assert c.post(url, data=answers).status_code == 403  # no CSRF token
    bad = c.post(url, data={"csrf_token": csrf, "uk_category": "Z", "ncmec_category": "none"})
    assert bad.status_code == 400 and "is not one of" in bad.text
    res = c.post(url, data={"csrf_token": csrf, **answers}, follow_redirects=False)
    assert res.status_code == 303 and res.headers["location"] == "/desk?flash=graded"
    with desk.sf() as s:
        item = s.get(Item, desk.item_id)
        assert item is not None and item.status == "in_review" and item.graded_at is None
    # graded: alice's queue no longer holds it, and she cannot grade it again
    assert f'data-cluster="{desk.cluster_id}"' not in c.get("/desk").text
    again = c.post(f"/desk/clusters/{desk.cluster_id}/claim", data={"csrf_token": csrf})
    assert again.status_code == 200 and again.url.path == "/desk"  # nothing left for her
    twice = c.post(url, data={"csrf_token": csrf, **answers})
    assert twice.status_code == 409 and "The grade was not recorded" in twice.text
    # bob agrees: final, dismissed, banked in the not-illegal (ignore) bank
    _claim(desk, "bob")
    csrf_b = _login(c, "bob")
    res = c.post(url, data={"csrf_token": csrf_b, **answers}, follow_redirects=False)
    assert res.status_code == 303
    with desk.sf() as s:
        item = s.get(Item, desk.item_id)
        assert item is not None and item.status == "dismissed" and item.banked_at is not None
        assert item.grade["how"] == "consensus" and item.grade["actionable"] is False
        cluster = s.get(Cluster, desk.cluster_id)
        assert cluster is not None and cluster.status == "closed"


def test_exposure_cap_hides_media_everywhere(
    db_url: str, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    d = _make(db_url, session_factory, tmp_path, exposure_daily_cap_minutes=5)
    with d.client as c:
        csrf = _claim(d, "alice")
        assert c.get(f"/desk/media/{d.item_id}/preview").status_code == 200
        now = datetime.now(UTC)
        with d.sf() as s, s.begin():
            uid = s.scalar(select(User.id).where(User.username == "alice"))
            assert uid is not None
            start = max(now - timedelta(minutes=6), now.replace(hour=0, minute=0, second=0))
            s.add(ExposureInterval(user_id=uid, started_at=start, ended_at=now))
        if (now - now.replace(hour=0, minute=0, second=0)) < timedelta(minutes=5, seconds=30):
            pytest.skip("too close to UTC midnight for a 5-minute exposure today")
        res = c.get(f"/desk/media/{d.item_id}/full")
        assert res.status_code == 403 and "exposure limit" in res.json()["message"]
        page = c.get(f"/desk/clusters/{d.cluster_id}")
        assert "Media hidden" in page.text and "/desk/media/" not in page.text
        beat = c.post(
            "/desk/exposure/beat",
            json={"cluster_id": d.cluster_id},
            headers={auth.CSRF_HEADER: csrf},
        )
        assert beat.status_code == 200 and beat.json()["state"] == "cap"


def test_viewing_preferences_are_remembered_and_checked(desk: Desk) -> None:
    c = desk.client
    csrf = _claim(desk, "alice")
    before = c.get(f"/desk/media/{desk.item_id}/preview").content
    res = c.post(
        "/desk/settings",
        data={"csrf_token": csrf, "blur": "4", "greyscale": "0", "video_speed": "1.0"},
        follow_redirects=False,
    )
    assert res.status_code == 303
    assert 'value="4"' in c.get("/desk/settings").text
    after = np.asarray(
        Image.open(io.BytesIO(c.get(f"/desk/media/{desk.item_id}/preview").content)).convert("RGB")
    ).astype(float)
    assert np.abs(after[..., 0] - after[..., 2]).max() > 30  # colour kept at greyscale 0
    assert before != c.get(f"/desk/media/{desk.item_id}/preview").content
    bad = c.post("/desk/settings", data={"csrf_token": csrf, "blur": "0"})
    assert bad.status_code == 400 and "blur" in bad.text


def test_video_is_not_loaded_until_revealed_then_muted_and_paused(
    db_url: str, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    d = _make(db_url, session_factory, tmp_path)
    fake_video = b"\x00\x00\x00\x18ftypmp42" + bytes(200)  # bytes only: the browser decodes
    ref = from_settings(d.settings).put(fake_video)
    with d.sf() as s, s.begin():
        item = s.get(Item, d.item_id)
        assert item is not None
        item.media_type, item.media_ref = "video/mp4", ref
    with d.client as c:
        _claim(d, "alice")
        page = c.get(f"/desk/clusters/{d.cluster_id}").text
        video = re.search(r"<video[^>]*>", page)
        assert video is not None
        tag = video.group(0)
        assert "muted" in tag and 'preload="none"' in tag and "autoplay" not in tag
        assert f'data-src="/desk/media/{d.item_id}/full"' in tag and " src=" not in tag
        assert 'class="speed"' in page and 'data-step="1"' in page
        assert c.get(f"/desk/media/{d.item_id}/preview").status_code == 404
        res = c.get(f"/desk/media/{d.item_id}/full")
        assert res.status_code == 200 and res.headers["content-type"] == "video/mp4"
        assert res.content == fake_video and res.headers["accept-ranges"] == "bytes"
        # a player's seek: a range, answered 206, and not a second view in the audit trail
        part = c.get(f"/desk/media/{d.item_id}/full", headers={"Range": "bytes=10-19"})
        assert part.status_code == 206 and part.content == fake_video[10:20]
        assert part.headers["content-range"] == f"bytes 10-19/{len(fake_video)}"
        tail = c.get(f"/desk/media/{d.item_id}/full", headers={"Range": "bytes=-5"})
        assert tail.status_code == 206 and tail.content == fake_video[-5:]
        junk = c.get(f"/desk/media/{d.item_id}/full", headers={"Range": "bytes=zz-"})
        assert junk.status_code == 200 and junk.content == fake_video
        with d.sf() as s:
            views = s.scalars(select(AuditEvent).where(AuditEvent.action == "media.view")).all()
        assert [v.details["mode"] for v in views] == ["video", "video"]  # full + junk (whole)


def test_provenance_beside_the_media_and_its_details_behind_a_reveal(desk: Desk) -> None:
    with desk.sf() as s, s.begin():
        item = s.get(Item, desk.item_id)
        assert item is not None
        item.ai_evidence = "strong"
        item.provenance = [
            {"signal": "infotext", "verdict": "ai_generated", "generator": "AUTOMATIC1111",
             "evidence": {"model": "benign-test-model"}, "confidence": 1.0},
        ]  # fmt: skip
    _claim(desk, "alice")
    page = desk.client.get(f"/desk/clusters/{desk.cluster_id}").text
    details = page.index('<details class="texts">')
    assert page.index("infotext: ai_generated (AUTOMATIC1111)") < details
    assert page.index("model=benign-test-model") > details
    assert "AI evidence: strong" in page  # beside the AI-generated question


def test_json_review_api_takes_an_item_to_a_final_grade(desk: Desk) -> None:
    c = desk.client
    tokens = {}
    with desk.sf() as s, s.begin():
        for name in ("alice", "bob"):
            user = s.scalars(select(User).where(User.username == name)).one()
            tokens[name] = auth.create_token(s, user, "desk-api", ["review:grade"])
        webhooks.create_webhook(s, "https://hooks.example.test/grades", ["grade"])

    def call(who: str, method: str, path: str, **kw: object) -> object:
        c.cookies.clear()
        headers = {"Authorization": f"Bearer {tokens[who]}"}
        return c.request(method, path, headers=headers, **kw)  # type: ignore[arg-type]

    tax = call("alice", "GET", "/api/v1/review/taxonomy").json()  # type: ignore[attr-defined]
    assert tax["consensus"] == ["uk_category", "ncmec_category"]
    queue = call("alice", "GET", "/api/v1/review/queue").json()  # type: ignore[attr-defined]
    assert [e["cluster_id"] for e in queue["clusters"]] == [desk.cluster_id]
    assert "unknown material" in queue["clusters"][0]["reason"]
    url = f"/api/v1/review/clusters/{desk.cluster_id}"
    values = {"values": {"uk_category": "C", "ncmec_category": "none"}}
    res = call("alice", "POST", url + "/grade", json=values)
    assert res.status_code == 409 and "claim" in res.json()["message"]  # type: ignore[attr-defined]
    claim = call("alice", "POST", url + "/claim").json()  # type: ignore[attr-defined]
    assert claim["waiting"] == [desk.item_id]
    taken = call("bob", "POST", url + "/claim")
    assert taken.status_code == 409  # type: ignore[attr-defined]
    bad = call("alice", "POST", url + "/grade", json={"values": {"uk_category": "Q"}})
    assert bad.status_code == 400  # type: ignore[attr-defined]
    out = call("alice", "POST", url + "/grade", json=values).json()  # type: ignore[attr-defined]
    assert out == {"outcomes": [{"item_id": desk.item_id, "state": "pending", "grade": None}]}
    call("bob", "POST", url + "/claim")
    out = call("bob", "POST", url + "/grade", json=values).json()  # type: ignore[attr-defined]
    [final] = out["outcomes"]
    assert final["state"] == "final" and final["grade"]["graders"] == ["alice", "bob"]
    with desk.sf() as s:
        item = s.get(Item, desk.item_id)
        assert item is not None and item.status == "confirmed" and item.banked_at is not None
        # the service passes the webhooks sink into review: the final grade is announced
        sent = s.scalars(select(Job).where(Job.kind == webhooks.DELIVER_KIND)).all()
        assert [j.payload["event"] for j in sent] == ["grade"]
        assert sent[0].payload["data"]["item_id"] == desk.item_id
