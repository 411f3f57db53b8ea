"""The review desk in a real browser: Debian's Chromium driven by Playwright against a real
``tipline serve`` on 127.0.0.1 (SQLite, encrypted media store, in-process pipeline).

Two analysts take a batch from intake to an exported hash list: log in, claim, reveal, grade a
cluster with the keyboard, reach consensus with a second analyst; a disagreement goes to a
senior analyst; the final hashes are in the graded bank and in the export. Protective defaults
are checked on the page (filtered preview only until a deliberate reveal) and on the media
routes (nothing for an anonymous or wrong-role request, nor for an analyst without the claim).

Screenshots of every page go to ``test-artifacts/screenshots/`` (``TIPLINE_TEST_ARTIFACTS``).
The images are procedural noise made here; grades given in this test are stand-in labels on
benign test images (test-data policy).
"""

from __future__ import annotations

import base64
import io
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from serve_process import running_serve
from tipline.service import auth
from tipline.store import migrations
from tipline.store.base import make_engine, session_factory
from tipline.store.tables import AuditEvent, BankEntryRow, BankRow, Item

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists() and os.environ.get("TIPLINE_REQUIRE_BROWSER") != "1",
        reason="Debian chromium is not installed (make test installs it)",
    ),
]
playwright_sync = pytest.importorskip("playwright.sync_api")

PASSWORD = "desk test password"
ARTIFACTS = Path(os.environ.get("TIPLINE_TEST_ARTIFACTS", "test-artifacts")) / "screenshots"
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _image(seed: int, quality: int = 90, size: tuple[int, int] = (320, 240)) -> bytes:
    """A smooth procedural image (blurred noise): distinct per seed, stable under re-encoding."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    im = Image.fromarray(small, "RGB").resize(size, Image.Resampling.BICUBIC)
    out = io.BytesIO()
    im.save(out, "JPEG", quality=quality)
    return out.getvalue()


@dataclass
class Server:
    url: str
    data_dir: Path
    db_url: str
    partner_token: str
    admin_token: str

    def api(
        self, method: str, path: str, token: str | None = None, headers: Any = None, **kw: Any
    ) -> httpx.Response:
        h = {"Authorization": f"Bearer {token or self.admin_token}", **(headers or {})}
        return httpx.request(method, self.url + path, headers=h, timeout=30, **kw)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("desk")
    db_url = f"sqlite:///{data / 'tipline.sqlite3'}"
    migrations.upgrade(db_url)
    engine = make_engine(db_url)
    sf = session_factory(engine)
    with sf() as s, s.begin():
        for name, role in (
            ("alice", "analyst"),
            ("bob", "analyst"),
            ("sam", "senior_analyst"),
            ("audrey", "auditor"),
        ):
            auth.create_user(s, name, role, PASSWORD)
        admin = auth.create_user(s, "root", "admin", PASSWORD)
        partner = auth.create_user(s, "partner1", "partner")
        partner_token = auth.create_token(s, partner, "intake", ["report:submit"])
        admin_token = auth.create_token(s, admin, "test", sorted(auth.PERMISSIONS))
    engine.dispose()
    env = dict(
        os.environ,
        TIPLINE_DATA_DIR=str(data),
        TIPLINE_DATABASE_URL=db_url,
        TIPLINE_JSON_LOGS="false",
        TIPLINE_COOKIE_SECURE="false",
        TIPLINE_LOG_LEVEL="warning",
    )
    with running_serve(env, data / "serve.log", ready_path="/readyz") as url:
        yield Server(url, data, db_url, partner_token, admin_token)


@pytest.fixture(scope="module")
def batch(server: Server) -> dict[str, list[int]]:
    """Two reports through the partner API: a near-duplicate pair (one cluster) and one more
    image (its own cluster); waits until the pipeline has triaged every item."""
    first, second = _image(1), _image(2)
    reports = [
        {"description": "test batch 1", "uploads": [
            {"filename": "a.jpg", "content_base64": base64.b64encode(first).decode()},
            {"filename": "a2.jpg", "content_base64": base64.b64encode(_image(1, 60)).decode()},
        ]},
        {"description": "test batch 2", "urls": ["https://reported.invalid/page"], "uploads": [
            {"filename": "b.jpg", "content_base64": base64.b64encode(second).decode()},
        ]},
    ]  # fmt: skip
    for n, body in enumerate(reports):
        res = server.api(
            "POST",
            "/api/v1/reports",
            server.partner_token,
            headers={"Idempotency-Key": f"batch-{n}"},
            json=body,
        )
        assert res.status_code == 201, res.text
    deadline = time.monotonic() + 90
    clusters: dict[str, list[int]] = {}
    while time.monotonic() < deadline:
        items = server.api("GET", "/api/v1/items?limit=50").json()["items"]
        if len(items) == 3 and all(i["priority"] is not None and i["cluster_id"] for i in items):
            for i in items:
                clusters.setdefault(str(i["cluster_id"]), []).append(i["id"])
            break
        time.sleep(0.3)
    else:
        pytest.fail("the pipeline did not triage the batch in time")
    assert sorted(len(v) for v in clusters.values()) == [1, 2], clusters
    return clusters


def _shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _login(browser: Any, server: Server, username: str) -> Any:
    context = browser.new_context(base_url=server.url, accept_downloads=True)
    page = context.new_page()
    page.goto("/desk")
    assert "/login" in page.url  # not signed in: sent to sign in, back to the desk after
    page.fill('input[name="username"]', username)
    page.fill('input[name="password"]', PASSWORD)
    page.click('button[type="submit"]')
    page.wait_for_url("**/desk")
    return page


def _claim(page: Any, cluster_id: str) -> None:
    page.goto("/desk")
    page.click(f'tr[data-cluster="{cluster_id}"] button.claim')
    page.wait_for_url(f"**/desk/clusters/{cluster_id}")


def _grade_keys(page: Any, keys: str) -> None:
    for k in keys:
        page.keyboard.press(k)
    page.keyboard.press("Enter")
    page.wait_for_url("**/desk?flash=graded")
    assert "Grade recorded" in page.inner_text("#flash")


def _natural_width(page: Any, selector: str) -> int:
    return int(page.eval_on_selector(selector, "el => el.complete ? el.naturalWidth : 0"))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            yield b
        finally:
            b.close()


def test_two_analysts_take_a_batch_to_an_exported_hash_list(
    server: Server, batch: dict[str, list[int]], browser: Any
) -> None:
    pair = next(c for c, ids in batch.items() if len(ids) == 2)
    single = next(c for c, ids in batch.items() if len(ids) == 1)
    item = batch[pair][0]

    # media is never served without auth, nor to a role without media:view
    anon = httpx.get(f"{server.url}/desk/media/{item}/full")
    assert anon.status_code == 401 and not anon.content.startswith(b"\xff\xd8")
    auditor = _login(browser, server, "audrey")
    res = auditor.request.get(f"/desk/media/{item}/preview")
    assert res.status == 403 and res.json() == {"message": "permission 'media:view' required"}
    auditor.goto("/desk")
    _shot(auditor, "auditor-home")

    alice = _login(browser, server, "alice")
    assert alice.locator("table#queue tr[data-cluster]").count() == 2
    _shot(alice, "queue")
    # an analyst without the claim gets nothing either
    assert alice.request.get(f"/desk/media/{item}/preview").status == 403

    _claim(alice, pair)
    # protective default: a filtered preview only; the full image is not even requested
    assert alice.locator("img.preview").count() == 2
    alice.wait_for_function(
        "() => [...document.querySelectorAll('img.preview')]"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )
    assert alice.eval_on_selector_all("img.full", "els => els.every(e => !e.getAttribute('src'))")
    preview = alice.request.get(f"/desk/media/{item}/preview").body()
    im = Image.open(io.BytesIO(preview)).convert("RGB")
    arr = np.asarray(im).astype(int)
    assert max(im.size) <= 512
    assert np.abs(arr[..., 0] - arr[..., 1]).max() <= 8  # greyscale
    _shot(alice, "cluster-filtered")
    # a second analyst cannot take the same job
    bob = _login(browser, server, "bob")
    bob_row = bob.locator(f'tr[data-cluster="{pair}"]')
    assert "with alice" in bob_row.inner_text()
    assert bob_row.locator("button.claim").count() == 0

    # a deliberate reveal, one image
    alice.click(f"#item-{item} button.reveal")
    alice.wait_for_function(
        f"() => {{ const i = document.querySelector('#item-{item} img.full'); "
        "return i && i.complete && i.naturalWidth > 0; }"
    )
    other = batch[pair][1]
    assert not alice.get_attribute(f"#item-{other} img.full", "src")
    _shot(alice, "cluster-revealed")
    # the text findings and grading shortcuts: uk C, ncmec none, submit with Enter
    _grade_keys(alice, "c0")
    _shot(alice, "queue-after-grade")
    assert alice.locator(f'tr[data-cluster="{pair}"]').count() == 0  # graded: gone for alice

    # bob agrees: consensus, final
    _claim(bob, pair)
    _grade_keys(bob, "c0")

    # the single item: alice and bob disagree -> escalated to the senior analyst
    _claim(alice, single)
    _grade_keys(alice, "b0")
    _claim(bob, single)
    _grade_keys(bob, "n0")
    assert bob.locator(f'tr[data-cluster="{single}"]').count() == 0
    sam = _login(browser, server, "sam")
    sam.goto("/desk/escalations")
    _shot(sam, "escalations")
    sam.click(f'tr[data-cluster="{single}"] button.claim')
    sam.wait_for_url(f"**/desk/clusters/{single}")
    _shot(sam, "escalated-cluster")
    _grade_keys(sam, "n0")

    engine = make_engine(server.db_url)
    try:
        with session_factory(engine)() as s:
            items = {i.id: i for i in s.scalars(select(Item))}
            for iid in batch[pair]:
                assert items[iid].status == "confirmed"
                assert items[iid].grade["how"] == "consensus"
                assert sorted(items[iid].grade["graders"]) == ["alice", "bob"]
            lone = items[batch[single][0]]
            assert lone.status == "dismissed" and lone.grade["how"] == "senior"
            graded = s.scalar(select(BankRow).where(BankRow.name == "TIPLINE_GRADED"))
            assert graded is not None and graded.auto_confirm and graded.role == "alert"
            signals = {
                (e.signal_type, e.signal)
                for e in s.scalars(select(BankEntryRow).where(BankEntryRow.bank_id == graded.id))
            }
            for iid in batch[pair]:
                assert ("md5", items[iid].md5) in signals
            benign = s.scalar(select(BankRow).where(BankRow.name == "TIPLINE_NOT_ILLEGAL"))
            assert benign is not None and benign.role == "ignore"
            views = s.scalars(select(AuditEvent).where(AuditEvent.action == "media.view")).all()
            modes = {(e.actor, e.details.get("mode"), e.details.get("item_id")) for e in views}
            assert ("user:alice", "reveal", item) in modes
            assert not any(m == "reveal" and i == other for _a, m, i in modes)
    finally:
        engine.dispose()

    # the export, downloaded in the browser, holds the confirmed hashes
    admin = _login(browser, server, "root")
    admin.goto("/desk/exports")
    _shot(admin, "exports")
    with admin.expect_download() as dl:
        admin.click("#export-iwf-csv")
    text = Path(dl.value.path()).read_text()
    for iid in batch[pair]:
        assert items[iid].md5 in text and items[iid].sha256 in text
    assert lone.md5 not in text  # not illegal: never on the hash list

    # dashboards and the exposure view
    admin.goto("/desk/dashboard")
    assert admin.locator("figure.chart svg").count() >= 4
    _shot(admin, "dashboard")
    admin.goto("/desk/exposure")
    table = admin.inner_text("#exposure-table")
    assert "alice" in table and "bob" in table
    _shot(admin, "exposure")
    alice.goto("/desk/settings")
    _shot(alice, "settings")


@pytest.fixture(scope="module")
def video_item(server: Server, batch: dict[str, list[int]]) -> tuple[str, int]:
    """A short benign clip (moving shapes, VP8 WebM made here) reported after the batch."""
    from tipline.demo.clips import render_clip

    path = render_clip(
        server.data_dir / "clip.webm", "shapes", (160, 120), seconds=2.0, codec="libvpx"
    )
    body = {
        "description": "test clip",
        "uploads": [
            {
                "filename": "clip.webm",
                "content_base64": base64.b64encode(path.read_bytes()).decode(),
            }
        ],
    }
    res = server.api("POST", "/api/v1/reports", server.partner_token, json=body)
    assert res.status_code == 201, res.text
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        items = server.api("GET", "/api/v1/items?limit=50").json()["items"]
        videos = [i for i in items if i["media_type"].startswith("video/")]
        if videos and videos[0]["cluster_id"] and videos[0]["priority"] is not None:
            return str(videos[0]["cluster_id"]), int(videos[0]["id"])
        time.sleep(0.3)
    pytest.fail("the pipeline did not triage the clip in time")


def test_video_loads_only_on_reveal_muted_paused_with_speed_and_frame_step(
    server: Server, video_item: tuple[str, int], browser: Any
) -> None:
    cluster, item = video_item
    page = _login(browser, server, "bob")
    _claim(page, cluster)
    video = f"#item-{item} video"
    # before the reveal: no source at all, nothing fetched
    assert page.eval_on_selector(video, "v => v.hidden && !v.getAttribute('src')")
    page.click(f"#item-{item} button.reveal")
    page.wait_for_function(
        f"() => {{ const v = document.querySelector('{video}'); return v && v.readyState >= 1; }}"
    )
    state = page.eval_on_selector(
        video, "v => ({muted: v.muted, paused: v.paused, autoplay: v.autoplay, d: v.duration})"
    )
    assert state["muted"] and state["paused"] and not state["autoplay"] and state["d"] > 1
    page.select_option(f"#item-{item} select.speed", "2.0")
    assert page.eval_on_selector(video, "v => v.playbackRate") == 2.0
    page.click(f'#item-{item} button.step[data-step="1"]')
    page.click(f'#item-{item} button.step[data-step="1"]')
    page.wait_for_function(
        f"() => Math.abs(document.querySelector('{video}').currentTime - 0.08) < 0.001"
    )
    assert page.eval_on_selector(video, "v => v.paused")
    _shot(page, "video-revealed")
    page.goto("/desk")  # leave the claim to lapse: nothing else to check here
