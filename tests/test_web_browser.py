"""The web page in a real browser: Debian's chromium driven by Playwright, against the real
daemon (CLI in a subprocess) talking to the fake fal server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import fal_env, make_image, wait_for, write_config
from PIL import Image, ImageStat
from realparts import missing

CHROMIUM = Path(os.environ.get("CRYSTAL_WATCHD_CHROMIUM", "/usr/bin/chromium"))
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
HOW = ("needs Debian's chromium and the Playwright package: `apt-get install chromium` and "
       "`pip install playwright` (no browser download is needed)")


@pytest.fixture
def browser():
    """A headless chromium from the system, never one Playwright downloads."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("Playwright", HOW)
    if not CHROMIUM.exists():
        missing(f"chromium ({CHROMIUM})", HOW)
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        try:
            yield instance
        finally:
            instance.close()


def assert_not_blank(path: Path) -> None:
    """A screenshot with real content: several colours and visible contrast."""
    with Image.open(path) as image:
        rgb = image.convert("RGB")
        colours = rgb.getcolors(maxcolors=1 << 16)
        assert colours is None or len(colours) > 20, f"{path.name} looks blank"
        assert max(ImageStat.Stat(rgb.convert("L")).stddev) > 10, f"{path.name} has no contrast"


def test_page_lists_folders_shows_thumbnails_live_and_retries(tmp_path, browser, fakefal,
                                                             fal_daemons, tls_files):
    """The overview lists every folder; a processed file's before/after thumbnails appear
    on the open recent-jobs page without a reload; a failure shows up live on the failures
    page, and its Retry button re-queues it so it then succeeds. Each page's screenshot is
    saved and is not blank; with JavaScript off the pages still render and Retry works."""
    server = fakefal(latency=0.2)
    config = write_config(tmp_path, [
        {"name": "photos", "inbox": "in/photos", "outbox": "out/photos"},
        {"name": "scans", "inbox": "in/scans", "outbox": "out/scans", "scale_factor": 3}],
        backend="fal", fal={"timeout": 60}, http={"listen": "127.0.0.1:0"},
        retry={"attempts": 2, "backoff": 0.2, "max_backoff": 1})
    d = fal_daemons(config, fal_env(server, tls_files)).ready()
    url = d.wait_event("http_listening")[0]["url"]
    shots = tmp_path / "screenshots"
    # The page's own CSP forbids eval; the test's waiting helpers need it, the page doesn't.
    page = browser.new_page(viewport={"width": 1100, "height": 800}, bypass_csp=True)

    first = page.goto(url)
    assert "script-src 'self'" in first.headers["content-security-policy"]
    rows = page.locator("table.folders tr.folder")
    assert rows.count() == 2
    assert [rows.nth(i).get_attribute("data-folder") for i in range(2)] == ["photos", "scans"]

    page.goto(url + "jobs")
    assert "No finished jobs yet" in page.inner_text("main")
    page.wait_for_function("document.documentElement.className === 'live'")
    make_image(tmp_path / "in/photos/harbour.jpg", (480, 320), color="#3a7bd5")
    for kind in ("before", "after"):  # appear and load with no reload of the page
        page.wait_for_function(
            f"""() => {{ const img = document.querySelector('img[src$="/{kind}.jpg"]');
                         return img && img.complete && img.naturalWidth > 0; }}""",
            timeout=20_000)
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1
    widths = page.evaluate("[...document.querySelectorAll('.pair img')].map(i => i.naturalWidth)")
    assert widths == [320, 320]  # longest side 320 px, before and after
    page.goto(url)  # the overview again, now with a finished job and spend
    assert page.locator("tr.folder[data-folder=photos] td").nth(3).inner_text() == "1"
    page.screenshot(path=shots / "overview.png", full_page=True)
    page.goto(url + "jobs")
    page.wait_for_function("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
    page.screenshot(path=shots / "jobs.png", full_page=True)

    server.faults.reject_inputs = True
    page.goto(url + "failures")
    page.wait_for_function("document.documentElement.className === 'live'")
    make_image(tmp_path / "in/scans/receipt.png", (64, 48), color="#d0a020", fmt="PNG")
    page.wait_for_selector("section.failure", timeout=20_000)
    assert "fal rejected the input" in page.inner_text("section.failure .reason")
    assert "receipt.png.error.json" in page.inner_text("section.failure")
    page.screenshot(path=shots / "failures.png", full_page=True)
    assert (tmp_path / "in/scans/failed/receipt.png").exists()

    server.faults.reject_inputs = False
    page.click("section.failure button")
    page.wait_for_url("**/jobs/2")
    page.wait_for_function("document.getElementById('job-state').textContent === 'done'",
                           timeout=20_000)
    assert (tmp_path / "out/scans/receipt_x3.png").exists()
    assert not (tmp_path / "in/scans/failed/receipt.png").exists()
    page.wait_for_function("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
    page.screenshot(path=shots / "job.png", full_page=True)
    assert len(server.submissions) == 3  # harbour once, receipt rejected once, then retried
    d.wait_event("retry_requested")

    still = browser.new_context(java_script_enabled=False).new_page()
    still.goto(url)
    assert still.locator("tr.folder").count() == 2
    assert still.locator("noscript").count() == 1
    still.goto(url + "jobs/2")
    assert "done" in still.inner_text("#job-state")
    # Retry with JavaScript off: the button is a plain form post.
    server.faults.reject_inputs = True
    make_image(tmp_path / "in/scans/ledger.png", (64, 48), color="#20a0d0", fmt="PNG")
    wait_for(lambda: (tmp_path / "in/scans/failed/ledger.png").exists(), 20, "ledger failed")
    server.faults.reject_inputs = False
    still.goto(url + "failures")
    assert "ledger.png" in still.inner_text("section.failure")
    still.click("section.failure button")
    d.wait_event("retry_requested", 2)
    wait_for(lambda: (tmp_path / "out/scans/ledger_x3.png").exists(), 20, "ledger retried")
    assert not (tmp_path / "in/scans/failed/ledger.png").exists()
    assert len(server.submissions) == 5  # ledger rejected once, then retried

    for name in ("overview", "jobs", "failures", "job"):
        assert_not_blank(shots / f"{name}.png")
    assert d.stop() == 0


def test_login_form_with_a_token(tmp_path, browser, daemons):
    """With a token the browser is sent to the login form; a wrong token is refused, the
    right one opens the page, and the form token then guards its buttons."""
    config = write_config(tmp_path, [{"name": "photos", "inbox": "in", "outbox": "out"}],
                          http={"listen": "127.0.0.1:0", "token": "browser-token-42a7c9"})
    d = daemons(config).ready()
    url = d.wait_event("http_listening")[0]["url"]
    page = browser.new_page()
    response = page.goto(url + "failures")
    assert response.status == 401
    page.fill("input[name=token]", "not-it")
    page.click("button")
    assert "not right" in page.inner_text("main")
    page.fill("input[name=token]", "browser-token-42a7c9")
    page.click("button")
    page.wait_for_url("**/failures")
    assert page.inner_text("h1") == "Failures"
    page.screenshot(path=tmp_path / "login.png")
    assert_not_blank(tmp_path / "login.png")
    cookies = {c["name"]: c for c in page.context.cookies()}
    session = cookies["crystal_watchd_session"]
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    assert d.stop() == 0
