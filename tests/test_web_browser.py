"""The web page in a real browser: Debian's chromium driven by Playwright, against the real
daemon (CLI in a subprocess) talking to the fake fal server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import Daemon, fal_env, make_image, wait_for, write_config
from PIL import Image, ImageChops, ImageStat
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


DOCS = Path(__file__).resolve().parent.parent / "docs"


def _portrait(path: Path, size: tuple[int, int]) -> Image.Image:
    """A deterministic picture with detail at every scale (seeded noise, smoothed and
    sharp), saved as a PNG so the daemon's output is the only lossy step."""
    import random

    rng = random.Random(7)
    coarse = Image.new("RGB", (size[0] // 20, size[1] // 20))
    coarse.putdata([(rng.randrange(256), rng.randrange(256), rng.randrange(256))
                    for _ in range(coarse.width * coarse.height)])
    picture = coarse.resize(size, Image.Resampling.BICUBIC)
    fine = Image.effect_noise(size, 40).convert("RGB")
    picture = Image.blend(picture, fine, 0.35)
    from PIL import ImageDraw

    draw = ImageDraw.Draw(picture)  # a face: skin, eyes and strands of hair to judge
    w, h = size
    draw.ellipse((w * 0.25, h * 0.2, w * 0.75, h * 0.75), fill=(224, 180, 150))
    for cx in (0.4, 0.6):
        draw.ellipse((w * (cx - 0.05), h * 0.4, w * (cx + 0.05), h * 0.45), fill="white")
        draw.ellipse((w * (cx - 0.02), h * 0.41, w * (cx + 0.02), h * 0.44), fill=(60, 90, 40))
    for i in range(0, w, 3):
        draw.line((i, 0, w * 0.5 + (i - w * 0.5) * 0.6, h * 0.25), fill=(70 + i % 40, 40, 20))
    picture = Image.blend(picture, fine, 0.12)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)
    return picture


def _portrait_job(tmp_path: Path, daemons, size: tuple[int, int]) -> tuple[Daemon, str]:
    """A daemon on the local backend with its page, and one portrait upscaled: the daemon
    and its page's URL."""
    config = write_config(tmp_path, [{"name": "portraits", "inbox": "in", "outbox": "out"}],
                          http={"listen": "127.0.0.1:0"})
    d = daemons(config).ready()
    url = d.wait_event("http_listening")[0]["url"]
    _portrait(tmp_path / "in/portrait.png", size)
    d.wait_event("job_done")
    return d, url


def _open_compare(page, url: str, job_id: int, timeout: float = 30):
    """Open a job's compare view and wait until the after is drawn; the page's response.
    Waits by asking the page (``evaluate``), which works under the page's own CSP too."""
    response = page.goto(f"{url}jobs/{job_id}/compare")
    wait_for(lambda: page.evaluate("() => !!(window.crystalCompare && crystalCompare.viewer"
                                   ".world.getItemCount() === 2 && crystalCompare.viewer.world"
                                   ".getItemAt(1).getFullyLoaded())"),
             timeout, "the compare view drawn")
    return response


def _settle(page) -> None:
    page.wait_for_function("() => { const v = crystalCompare.viewer; return !v.viewport"
                           ".getZoom(true) || (Math.abs(v.viewport.getZoom(true) - v.viewport"
                           ".getZoom(false)) < 1e-9 && v.world.getItemAt(1).getFullyLoaded() "
                           "&& v.world.getItemAt(0).getFullyLoaded()); }", timeout=30_000)
    page.wait_for_timeout(300)


def test_compare_view_at_100_percent_is_the_output_pixel_for_pixel(tmp_path, browser, daemons):
    """In chromium (device scale factor 1) the compare view of a portrait zoomed with the
    key "1" draws the output's pixels 1:1: a crop of the screenshot matches the output
    file at the same place (and not one a few pixels off); "t" shows the before alone and
    then the after alone; the split slider moves with the arrow keys and the after's clip
    follows; the download links give the files' bytes. The split view at 100 % is saved as
    docs/compare-100.png."""
    d, url = _portrait_job(tmp_path, daemons, (500, 700))
    output_path = next((tmp_path / "out").iterdir())
    output = Image.open(output_path).convert("RGB")
    page = browser.new_page(viewport={"width": 1000, "height": 900}, device_scale_factor=1,
                            bypass_csp=True)
    _open_compare(page, url, 1)
    page.keyboard.press("t")
    page.keyboard.press("t")  # split → before → after
    assert page.inner_text("#toggle") == "after"
    page.keyboard.press("1")
    _settle(page)
    assert page.inner_text("#zoom-level") == "100 % of the output"
    origin = page.evaluate("""() => { const a = crystalCompare.viewer.world.getItemAt(1);
        const p = a.imageToViewerElementCoordinates(new OpenSeadragon.Point(0, 0));
        return [p.x, p.y]; }""")
    shot = tmp_path / "at100.png"
    page.locator("#viewer").screenshot(path=shot)
    screen = Image.open(shot).convert("RGB")
    box = (screen.width // 2 - 100, screen.height // 2 - 100,
           screen.width // 2 + 100, screen.height // 2 + 100)
    seen = screen.crop(box)
    ox, oy = round(origin[0]), round(origin[1])

    def file_at(dx: int, dy: int) -> Image.Image:
        return output.crop((box[0] - ox + dx, box[1] - oy + dy,
                            box[2] - ox + dx, box[3] - oy + dy))

    def difference(a: Image.Image, b: Image.Image) -> float:
        return max(ImageStat.Stat(ImageChops.difference(a, b)).mean)

    exact = min(difference(seen, file_at(dx, dy)) for dx in (-1, 0, 1) for dy in (-1, 0, 1))
    assert exact < 5, exact
    assert difference(seen, file_at(4, 4)) > 2 * exact + 2  # the check can tell

    page.keyboard.press("t")  # → split
    assert page.inner_text("#toggle") == "split"
    page.focus("#split")
    for _ in range(10):
        page.keyboard.press("ArrowRight")
    assert page.evaluate("document.getElementById('split').value") == "60"
    clip_x = page.evaluate("crystalCompare.viewer.world.getItemAt(1).getClip().x")
    assert clip_x == round(output.width * 0.6)
    for _ in range(20):
        page.keyboard.press("ArrowLeft")
    assert page.evaluate("document.getElementById('split').value") == "40"
    page.keyboard.press("0")  # fit, then 100 % around the eyes for the documentation
    _settle(page)
    page.evaluate("crystalCompare.viewer.viewport.panTo(crystalCompare.viewer.world"
                  ".getItemAt(1).imageToViewportCoordinates(500, 600), true)")
    page.keyboard.press("1")
    _settle(page)
    page.screenshot(path=DOCS / "compare-100.png")
    assert_not_blank(DOCS / "compare-100.png")

    for link, path in (("/jobs/1/original", tmp_path / "in/portrait.png"),
                       ("/jobs/1/outputs/0", output_path)):
        body = page.request.get(url.rstrip("/") + link).body()
        assert body == path.read_bytes(), link
    page.goto(f"{url}jobs/1")
    page.screenshot(path=DOCS / "job-page.png", full_page=True)
    assert d.stop() == 0


def test_compare_view_works_under_the_pages_own_csp(tmp_path, browser, daemons):
    """With the page's Content-Security-Policy enforced (no bypass), the compare view loads
    both pictures and zooms, and the browser reports no violation of the policy (the viewer
    injects no stylesheet, runs no eval, loads nothing from elsewhere)."""
    d, url = _portrait_job(tmp_path, daemons, (300, 400))
    page = browser.new_page(viewport={"width": 900, "height": 700})
    messages: list[str] = []
    page.on("console", lambda m: messages.append(m.text))
    page.on("pageerror", lambda e: messages.append(f"page error: {e}"))
    response = _open_compare(page, url, 1)
    assert "style-src 'self'" in response.headers["content-security-policy"]
    page.keyboard.press("1")
    wait_for(lambda: page.inner_text("#zoom-level") == "100 % of the output", 10,
             "zoomed to 100 %")
    page.wait_for_timeout(500)
    violations = [m for m in messages if "Content Security Policy" in m or "page error" in m]
    assert violations == []
    assert d.stop() == 0


def _rss_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for {pid}")


def test_a_96_megapixel_output_opens_within_the_memory_bound(tmp_path, browser, daemons):
    """A 96 MP output (12000 × 8000 JPEG) opens in the compare view quickly: the time to the
    first tile and to a fully drawn first view, and the daemon's peak RSS while the page
    tiles it (first view, then 100 % in the middle), are printed; both stay under generous
    bounds (the pixel pool's memory budget is the design bound)."""
    config = write_config(tmp_path, [{"name": "big", "inbox": "in", "outbox": "out"}],
                          http={"listen": "127.0.0.1:0"}, pixels={"memory_mb": 512})
    d = daemons(config).ready()
    url = d.wait_event("http_listening")[0]["url"]
    source = Image.merge("RGB", [Image.effect_noise((600, 400), 90).resize((6000, 4000))
                                 for _ in range(3)])
    (tmp_path / "in").mkdir(exist_ok=True)
    source.save(tmp_path / "in/.big.jpg", quality=90)
    del source
    (tmp_path / "in/.big.jpg").rename(tmp_path / "in/big.jpg")
    d.wait_event("job_done", timeout=180)
    with Image.open(next((tmp_path / "out").iterdir())) as out:
        assert out.size == (12000, 8000)
    pid = d.proc.pid
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # peak RSS from here on
    before_mb = _rss_mb(pid, "VmRSS")
    page = browser.new_page(viewport={"width": 1200, "height": 800}, device_scale_factor=1,
                            bypass_csp=True)
    import time

    started = time.monotonic()
    page.goto(f"{url}jobs/1/compare")
    page.wait_for_function("() => window.crystalCompare && crystalCompare.viewer.world"
                           ".getItemCount() === 2 && performance.getEntriesByType('resource')"
                           ".some(e => e.name.includes('_files/'))", timeout=30_000)
    first_tile = time.monotonic() - started
    page.wait_for_function("crystalCompare.viewer.world.getItemAt(1).getFullyLoaded() && "
                           "crystalCompare.viewer.world.getItemAt(0).getFullyLoaded()",
                           timeout=60_000)
    first_view = time.monotonic() - started
    page.keyboard.press("1")
    _settle(page)
    full_detail = time.monotonic() - started
    peak_mb = _rss_mb(pid, "VmHWM")
    print(f"\n96 MP compare view: first tile {first_tile:.2f} s, first view {first_view:.2f} s,"
          f" 100 % detail {full_detail:.2f} s; daemon RSS {before_mb:.0f} MB before, "
          f"peak {peak_mb:.0f} MB")
    assert first_view < 15, first_view
    assert peak_mb < 1200, peak_mb
    assert d.stop() == 0
