"""The spend guard (``budget.confirm_above_usd``) end to end: the real CLI in a subprocess,
the real fal_client over TLS to the fake fal, whose ledger says what was billed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from conftest import BOOTSTRAP, cli, fal_env, make_image, wait_for, write_config

#: 100×100 at ×2 is 200×200 = 0.04 output MP, $0.00064 at fal's $0.016 per MP: 60 of them
#: are $0.0384, well above this threshold, and one alone well below it.
SIDE, PER_PICTURE = 100, 200 * 200 / 1e6 * 0.016
THRESHOLD = 0.01


def guard_config(tmp_path: Path, **top) -> Path:
    top.setdefault("retry", {"attempts": 6, "backoff": 0.2, "max_backoff": 1})
    top.setdefault("fal", {"timeout": 60})
    top.setdefault("budget", {"confirm_above_usd": THRESHOLD})
    return write_config(tmp_path, [{"name": "shoot", "inbox": "in", "outbox": "out",
                                    "settle": 0.3}], backend="fal", concurrency=4, **top)


def pictures(folder: Path, count: int, prefix: str = "p") -> list[Path]:
    """``count`` distinct PNGs (distinct content, so none is a free copy of another)."""
    return [make_image(folder / f"{prefix}{i:03}.png", (SIDE, SIDE),
                       color=f"#{i % 256:02x}{(i * 7) % 256:02x}{(i * 13) % 256:02x}", fmt="PNG")
            for i in range(count)]


def drop(staging: Path, inbox: Path) -> None:
    """Move every staged picture into the inbox at once (a shoot copied in by mistake)."""
    inbox.mkdir(parents=True, exist_ok=True)
    for path in sorted(staging.iterdir()):
        os.rename(path, inbox / path.name)


def status(config: Path) -> dict:
    return json.loads(cli("status", "--json", "--config", str(config)).stdout)


def test_a_mass_drop_is_held_unbilled_until_approved_then_billed_once(tmp_path, fakefal,
                                                                    fal_daemons, tls_files):
    """60 pictures dropped into a running daemon's inbox, estimated above the threshold, are
    held: fal bills nothing, one ``spend_approval_needed`` line names the folder, the count
    and the estimate, and ``status`` (text and JSON) and /metrics show them. ``approve``
    releases them and fal bills each exactly once. A single picture arriving afterwards is
    judged afresh and goes straight through."""
    server = fakefal(latency=0.05, runners=8)
    config = guard_config(tmp_path, http={"listen": "127.0.0.1:0"})
    pictures(tmp_path / "staging", 60)
    d = fal_daemons(config, fal_env(server, tls_files)).ready()
    url = d.wait_event("http_listening")[0]["url"]
    drop(tmp_path / "staging", tmp_path / "in")
    d.wait_event("spend_approval_needed")
    wait_for(lambda: status(config)["totals"]["awaiting_approval"] == 60, 30, "60 held")
    time.sleep(1.0)  # time enough for anything wrongly let go to reach fal
    assert server.submissions == [] and server.billed_per_input() == {}
    [needed] = d.named("spend_approval_needed")
    expected = 60 * PER_PICTURE
    assert needed["folder"] == "shoot" and needed["count"] == 60
    assert abs(needed["estimated_usd"] - round(expected, 2)) < 1e-9
    assert "crystal-watchd approve shoot" in needed["note"]

    report = status(config)
    [held] = report["awaiting_approval"]
    assert held["folder"] == "shoot" and held["pictures"] == 60
    assert abs(held["estimated_usd"] - expected) < 1e-6
    assert report["folders"]["shoot"]["awaiting_approval"] == 60
    text = cli("status", "--config", str(config)).stdout
    assert "[shoot] 60 picture(s), estimated $0.04" in text
    metrics = urllib.request.urlopen(url + "metrics", timeout=10).read().decode()
    assert 'crystal_watchd_awaiting_approval{folder="shoot"} 60.0' in metrics
    assert 'crystal_watchd_jobs{folder="shoot",state="awaiting_approval"} 60.0' in metrics

    approved = cli("approve", "--config", str(config))
    assert approved.returncode == 0, approved.stderr
    assert "approved 60 picture(s) in 'shoot', estimated $0.04" in approved.stdout
    d.wait_event("job_done", 60, timeout=90)
    billed = server.billed_per_input()
    assert len(billed) == 60 and set(billed.values()) == {1}
    assert len(d.named("spend_approval_needed")) == 1

    make_image(tmp_path / "in/single.png", (SIDE, SIDE), color="#123456", fmt="PNG")
    d.wait_event("job_done", 61, timeout=30)
    assert len(server.billed_per_input()) == 61
    assert len(d.named("spend_approval_needed")) == 1  # never held
    assert status(config)["totals"]["awaiting_approval"] == 0
    assert d.stop() == 0


def test_a_single_picture_below_the_threshold_goes_straight_through(tmp_path, fakefal,
                                                                   fal_daemons, tls_files):
    """One picture estimated below the threshold is submitted at once: no hold, no
    approval line, billed once."""
    server = fakefal(latency=0.05)
    config = guard_config(tmp_path)
    d = fal_daemons(config, fal_env(server, tls_files)).ready()
    make_image(tmp_path / "in/one.png", (SIDE, SIDE), fmt="PNG")
    d.wait_event("job_done")
    assert list(server.billed_per_input().values()) == [1]
    assert not d.named("spend_approval_needed")
    assert d.stop() == 0


def test_first_start_over_a_full_inbox_says_what_it_would_cost_and_holds(
        tmp_path, fakefal, fal_daemons, tls_files):
    """A first start over an inbox that already holds 30 pictures logs how many there are
    and what they would cost, holds them (nothing billed) and says so in systemd's STATUS=;
    a picture arriving meanwhile, cheap as it is, joins the held set; a SIGHUP after raising
    the threshold above their estimate releases all 31, each billed once."""
    from test_e2e_service import NotifySocket

    notify = NotifySocket(tmp_path / "notify.sock")
    server = fakefal(latency=0.05, runners=8)
    config = guard_config(tmp_path)
    pictures(tmp_path / "in", 30)
    d = fal_daemons(config, fal_env(server, tls_files, NOTIFY_SOCKET=notify.path)).ready()
    [backlog] = d.wait_event("inbox_backlog")
    assert backlog["folder"] == "shoot" and backlog["count"] == 30
    assert abs(backlog["estimated_usd"] - round(30 * PER_PICTURE, 2)) < 1e-9
    d.wait_event("spend_approval_needed")
    wait_for(lambda: status(config)["totals"]["awaiting_approval"] == 30, 30, "30 held")
    assert server.billed_per_input() == {}
    wait_for(lambda: notify.has("STATUS=0 queued, 0 in flight, 0 done, 0 failed, "
                                "30 awaiting approval"), 10, "STATUS= saying 30 are held")
    make_image(tmp_path / "in/late.png", (SIDE, SIDE), color="#abcdef", fmt="PNG")
    wait_for(lambda: status(config)["totals"]["awaiting_approval"] == 31, 30, "31 held")
    assert server.billed_per_input() == {} and len(d.named("spend_approval_needed")) == 1
    config.write_text(config.read_text().replace(f"confirm_above_usd: {THRESHOLD}",
                                                 "confirm_above_usd: 1"))
    os.kill(d.proc.pid, signal.SIGHUP)
    d.wait_event("job_done", 31, timeout=60)
    assert [(e["source"], e["count"]) for e in d.named("spend_approved")] == [
        ("configuration", 31)]
    billed = server.billed_per_input()
    assert len(billed) == 31 and set(billed.values()) == {1}
    assert d.stop() == 0
    notify.sock.close()


def run_once(config: Path, server, tls_files, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BOOTSTRAP), "once", "--config", str(config),
                           *extra], env={**os.environ, **fal_env(server, tls_files)},
                          capture_output=True, text=True, timeout=120)


def test_once_holds_without_billing_and_exits_75_until_approved(tmp_path, fakefal, tls_files):
    """``once`` over 20 pictures above the threshold spends nothing, names every held
    picture with its estimate and exits 75; ``once --approve`` then spends, billing each
    picture once, and exits 0."""
    server = fakefal(latency=0.05, runners=8)
    config = guard_config(tmp_path)
    pictures(tmp_path / "in", 20)
    held = run_once(config, server, tls_files)
    assert held.returncode == 75, held.stderr[-3000:]
    assert server.submissions == [] and server.billed_per_input() == {}
    assert "shoot: 20 picture(s) awaiting approval, estimated $0.01" in held.stderr
    assert f"p007.png  ${PER_PICTURE:.4f}" in held.stderr
    assert "once --approve" in held.stderr
    spent = run_once(config, server, tls_files, "--approve")
    assert spent.returncode == 0, spent.stderr[-3000:]
    billed = server.billed_per_input()
    assert len(billed) == 20 and set(billed.values()) == {1}
    assert status(config)["totals"]["done"] == 20


def test_check_estimates_each_inbox_backlog_from_headers(tmp_path):
    """``check`` reports, per folder, the pictures in the inbox and their estimated cost in
    its JSON and in one line, saying when they would wait for approval."""
    config = guard_config(tmp_path)
    pictures(tmp_path / "in", 25)
    make_image(tmp_path / "in/wide.jpg", (300, 100))  # ×2: 600×200 = 0.12 MP
    result = cli("check", "--config", str(config))
    assert result.returncode == 0, result.stderr
    folder = json.loads(result.stdout)["folders"][0]
    expected = 25 * PER_PICTURE + 0.12 * 0.016
    assert folder["backlog"]["pictures"] == 26
    assert abs(folder["backlog"]["estimated_usd"] - round(expected, 4)) < 1e-9
    assert json.loads(result.stdout)["budget"]["confirm_above_usd"] == THRESHOLD
    assert (f"folder 'shoot': 26 picture(s) in the inbox not processed yet, estimated "
            f"${expected:.2f}") in result.stderr
    assert "they wait for approval" in result.stderr


def test_daemons_on_a_shared_journal_hold_together_and_one_approval_releases_both(
        tmp_path, pg_url, fakefal, fal_daemons, tls_files):
    """Two daemons on one PostgreSQL journal watching one inbox: a 40-picture drop above
    the threshold is held (nothing billed) whichever daemon took each picture in, both
    daemons' ``status`` show the same held set, and one ``approve`` run against either
    releases it: both daemons then work on it and fal bills each picture exactly once."""
    from test_e2e_shared import shared_config

    server = fakefal(latency=0.2, runners=16)
    budget = {"confirm_above_usd": THRESHOLD}
    configs = [shared_config(tmp_path, name, pg_url, budget=budget) for name in ("a", "b")]
    first, second = (fal_daemons(c, fal_env(server, tls_files)).ready() for c in configs)
    pictures(tmp_path / "staging", 40)
    drop(tmp_path / "staging", tmp_path / "inbox")
    wait_for(lambda: status(configs[0])["totals"]["awaiting_approval"] == 40, 30, "40 held")
    time.sleep(1.0)
    assert server.billed_per_input() == {}
    assert first.named("spend_approval_needed") or second.named("spend_approval_needed")
    assert status(configs[1])["awaiting_approval"] == status(configs[0])["awaiting_approval"]
    approved = cli("approve", "studio", "--config", str(configs[1]))
    assert "approved 40 picture(s) in 'studio'" in approved.stdout, approved.stderr
    wait_for(lambda: status(configs[0])["totals"]["done"] == 40, 60, "40 done")
    billed = server.billed_per_input()
    assert len(billed) == 40 and set(billed.values()) == {1}
    assert first.named("job_done") and second.named("job_done")
    assert first.stop() == 0 and second.stop() == 0


def test_the_pages_approve_button_releases_a_held_folder(tmp_path, fakefal, fal_daemons,
                                                         tls_files):
    """With a token on the page: a POST to /approve without the token, or without the
    session's form token, is refused and releases nothing; in the real browser, signed in,
    the overview shows the held folder with its count and estimate, and its Approve button
    releases it: fal then bills each picture once and the section goes away."""
    import httpx
    from realparts import missing
    from test_web_browser import CHROMIUM, FLAGS, HOW, assert_not_blank

    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("Playwright", HOW)
    if not CHROMIUM.exists():
        missing(f"chromium ({CHROMIUM})", HOW)
    token = "approve-token-5be3d1"
    server = fakefal(latency=0.05, runners=8)
    config = guard_config(tmp_path, http={"listen": "127.0.0.1:0", "token": token})
    pictures(tmp_path / "in", 20)
    d = fal_daemons(config, fal_env(server, tls_files)).ready()
    url = d.wait_event("http_listening")[0]["url"]
    wait_for(lambda: status(config)["totals"]["awaiting_approval"] == 20, 30, "20 held")
    with httpx.Client(base_url=url, follow_redirects=False) as client:
        assert client.post("/approve", data={"folder": "shoot"}).status_code == 401
        bearer = {"Authorization": f"Bearer {token}"}
        assert client.post("/approve", data={"folder": "shoot"},
                           headers=bearer).status_code == 403
    assert status(config)["totals"]["awaiting_approval"] == 20

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 800})
            page.goto(url)
            page.fill("input[name=token]", token)
            page.click("button")
            page.wait_for_selector("#held")
            row = page.locator("tr.held-folder[data-folder=shoot]")
            assert row.locator("td.count").inner_text() == "20"
            assert row.locator("td.estimate").inner_text() == f"${20 * PER_PICTURE:.2f}"
            page.screenshot(path=tmp_path / "held.png", full_page=True)
            assert_not_blank(tmp_path / "held.png")
            assert server.billed_per_input() == {}
            row.locator("button").click()
            d.wait_event("job_done", 20, timeout=60)
            page.goto(url)
            assert page.locator("#held").count() == 0
        finally:
            browser.close()
    billed = server.billed_per_input()
    assert len(billed) == 20 and set(billed.values()) == {1}
    assert [e["source"] for e in d.named("spend_approved")] == ["web"]
    assert d.stop() == 0


def test_confirm_above_usd_defaults_to_50_null_turns_it_off_and_is_checked(tmp_path):
    """Left out, the threshold is $50; ``null`` turns the guard off; a negative value or
    text is a config error naming file, line and key (exit 78)."""
    from crystal_watchd.config import parse

    base = "backend: fal\nfolders:\n  - {inbox: in, outbox: out}\n"
    assert parse(base, tmp_path / "c.yaml").budget.confirm_above_usd == 50
    off = parse(base + "budget:\n  confirm_above_usd: null\n", tmp_path / "c.yaml")
    assert off.budget.confirm_above_usd is None
    bad = tmp_path / "bad.yaml"
    bad.write_text(base + "budget:\n  daily_usd: 10\n  confirm_above_usd: -1\n")
    result = cli("check", "--config", str(bad))
    assert result.returncode == 78 and "Traceback" not in result.stderr
    assert f"{bad}:6: budget.confirm_above_usd: must be from 0 to 1e+09, not -1" \
        in result.stderr
