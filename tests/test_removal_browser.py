"""The Removal pages in a real browser (issue 13, "Done when"): a confirmed URL goes through
the real scheduler on a frozen clock (tests/test_removal_e2e.py's world: a local site that
serves, then answers 404; an aiosmtpd relay) until it is removed; then Debian's Chromium,
driven by Playwright against a real ``tipline serve`` on the same SQLite database, finds the
case on the Removal page, opens it with its history and evidence, and the statistics page
shows its time to removal, checked against the case's own timestamps.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from serve_process import running_serve
from test_notices import SmtpSink
from test_removal_e2e import DAY, confirmed_report, make_world
from tipline.removal import scheduler
from tipline.service import auth
from tipline.store import migrations
from tipline.store.base import make_engine, session_factory

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists() and os.environ.get("TIPLINE_REQUIRE_BROWSER") != "1",
        reason="Debian chromium is not installed (make test installs it)",
    ),
]
playwright_sync = pytest.importorskip("playwright.sync_api")

PASSWORD = "removal browser password"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
ARTIFACTS = Path(os.environ.get("TIPLINE_TEST_ARTIFACTS", "test-artifacts")) / "screenshots"


def _hours(h: float) -> str:
    """What the statistics page prints for a duration (cases_api._hours)."""
    return f"{h:.1f} h" if h < 48 else f"{h / 24:.1f} d"


@pytest.fixture
def removed_case(tmp_path: Path) -> Iterator[tuple[Path, str, Any]]:
    """A case driven to "removed" by the scheduler, in the data directory serve will use."""
    data = tmp_path / "data"
    data.mkdir()
    db_url = f"sqlite:///{data / 'tipline.sqlite3'}"
    migrations.upgrade(db_url)
    engine = make_engine(db_url)
    sf = session_factory(engine)
    smtp = SmtpSink()
    smtp.start()
    world = make_world(sf, data, smtp)
    try:
        with sf() as s, s.begin():
            auth.create_user(s, "alice", "analyst", PASSWORD)
        confirmed_report(world, world.url)
        scheduler.start(world.queue, world.config)
        world.run_jobs()  # day 0: attribution, evidence, the first notice
        world.advance(DAY)  # day 1: still online, a reminder
        world.site.mode = "gone"
        for _ in range(3):  # days 2-4: three misses in a row
            world.advance(DAY)
        case = world.case()
        assert case.state == "removed" and len(smtp.received) == 2
        yield data, db_url, case
    finally:
        scheduler.configure(None)
        world.site.close()
        world.mirror.close()
        smtp.stop()
        engine.dispose()


@pytest.fixture
def server(removed_case: tuple[Path, str, Any]) -> Iterator[str]:
    data, db_url, _case = removed_case
    env = dict(
        os.environ,
        TIPLINE_DATA_DIR=str(data),
        TIPLINE_DATABASE_URL=db_url,
        TIPLINE_COOKIE_SECURE="false",
        TIPLINE_LOG_LEVEL="warning",
        TIPLINE_JSON_LOGS="false",
        # nothing steps the case on the real clock while the browser looks at it
        TIPLINE_INPROCESS_WORKERS="0",
    )
    with running_serve(env, data / "serve.log", ready_path="/readyz") as url:
        yield url


def test_removed_case_on_the_removal_and_statistics_pages(
    server: str, removed_case: tuple[Path, str, Any]
) -> None:
    _data, _url, case = removed_case
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            page = browser.new_context(base_url=server).new_page()
            page.goto("/desk")
            page.fill('input[name="username"]', "alice")
            page.fill('input[name="password"]', PASSWORD)
            page.click('button[type="submit"]')
            page.wait_for_url("**/desk")
            page.click('nav a[href="/desk/removal"]')
            page.wait_for_url("**/desk/removal")
            row = page.locator(f'table#removal-cases tr[data-case="{case.id}"]')
            assert row.count() == 1 and row.get_attribute("data-state") == "removed"
            assert case.url in row.inner_text() and "Example Host DE" in row.inner_text()
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "removal-list.png"), full_page=True)

            row.locator("a").first.click()
            page.wait_for_url(f"**/desk/removal/cases/{case.id}")
            assert page.inner_text("#case-state") == "removed"
            states = page.eval_on_selector_all(
                "table#case-events tr[data-to]", "rows => rows.map(r => r.dataset.to)"
            )
            assert states == ["confirmed", "evidence_captured", "notified", "notified", "removed"]
            assert case.evidence_sha256 in page.inner_text("#case-evidence")
            assert page.locator("table#case-notices tr[data-serial]").count() == 2
            outcomes = page.inner_text("#case-rechecks")
            assert outcomes.count("miss") == 3 and outcomes.count("online") == 1
            from_notice = (case.removed_at - case.first_notice_at).total_seconds() / 3600
            assert f"Time to removal, from the first notice\t{_hours(from_notice)}" in (
                page.inner_text("#case-timeline")
            )
            assert page.locator("#hold-form").count() == 0  # an analyst: no hold form
            page.screenshot(path=str(ARTIFACTS / "removal-case.png"), full_page=True)

            page.goto("/desk/removal/stats")
            expected = {
                "report": case.removed_at - case.reported_at,
                "confirmation": case.removed_at - case.confirmed_at,
                "notice": case.removed_at - case.first_notice_at,
            }
            for origin, took in expected.items():
                cells = page.locator(f'#removal-origins tr[data-origin="{origin}"] td')
                assert cells.nth(1).inner_text() == "1" and cells.nth(2).inner_text() == "1"
                median = page.inner_text(f'#removal-origins tr[data-origin="{origin}"] .median')
                assert median == _hours(took.total_seconds() / 3600), origin
            assert page.locator("figure.chart svg").count() == 2
            page.screenshot(path=str(ARTIFACTS / "removal-stats.png"), full_page=True)
        finally:
            browser.close()
