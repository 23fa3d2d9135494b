"""Notifications through real Apprise to real endpoints on loopback: its ``json://`` to an
HTTP server and ``mailto://`` to an aiosmtpd server. The clock is moved by hand for the
batching and the daily summary; the daemon end to end for failures, folders and ``check``."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from datetime import datetime
from pathlib import Path

import pytest
from conftest import cli, make_image, wait_for, write_config
from receivers import Receiver, SmtpReceiver

from crystal_watchd.config.automation import NotifyConfig
from crystal_watchd.daemon.notify import Alerts
from crystal_watchd.events import Events
from crystal_watchd.journal import SqliteJournal

PASSWORD = "n0t-in-any-log-9f3a"


@pytest.fixture
def endpoints():
    http, smtp = Receiver(), SmtpReceiver()
    yield http, smtp
    http.down()
    smtp.stop()


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


def _setup(tmp_path: Path, endpoints, **notify):
    http, smtp = endpoints
    config = NotifyConfig(urls=(f"json://127.0.0.1:{http.port}/notify",
                                smtp.url("studio", PASSWORD)), **notify)
    journal = SqliteJournal(tmp_path / "j.sqlite3")
    journal.events = Events()
    clock = Clock(time.time())
    alerts = Alerts(lambda: config, journal.store, clock=clock)
    journal.events.subscribe(alerts.on_change)
    return journal, alerts, clock


def _fail(journal: SqliteJournal, name: str, reason: str = "broken") -> None:
    journal.run(_afail(journal.store, name, reason))


async def _afail(store, name: str, reason: str = "broken") -> None:
    """A job fails, as the daemon records it (from the event loop)."""
    job = await store.claim(await store.enqueue("shoot", Path(f"/in/{name}"), name, 10, 1, name))
    await store.failed(job, kind="corrupt_image", reason=reason)


def _titles(http: Receiver) -> list[str]:
    return [p.json["title"] for p in http.all()]


def test_failures_are_batched_into_one_message_per_minute(tmp_path, endpoints):
    """Three failures within a minute make one message (JSON and e-mail alike) listing the
    three files, sent when the minute is over, not before; a later failure makes the next."""
    http, smtp = endpoints
    journal, alerts, clock = _setup(tmp_path, endpoints)

    async def scenario():
        start = clock.now
        for i, name in enumerate(("a.jpg", "b.jpg", "c.jpg")):
            clock.now = start + i * 10
            await _afail(journal.store, name, reason=f"reason {name}")
        clock.now = start + 59
        await alerts.tick()
        await alerts.drain_sending()
        assert http.all() == [] and smtp.messages == []
        clock.now = start + 60.5
        await alerts.tick()
        await alerts.drain_sending()
        clock.now = start + 70
        await _afail(journal.store, "d.jpg")
        clock.now = start + 131
        await alerts.tick()
        await alerts.drain_sending()

    asyncio.run(scenario())
    journal.close()
    assert _titles(http) == ["crystal-watchd: 3 files failed", "crystal-watchd: 1 file failed"]
    first = http.all()[0].json["message"]
    assert all(f"shoot/{n}: reason {n}" in first for n in ("a.jpg", "b.jpg", "c.jpg"))
    assert "d.jpg" in http.all()[1].json["message"]
    assert smtp.subjects() == _titles(http)
    assert set(smtp.logins) == {("studio", PASSWORD)}  # one login per message


def test_budget_account_and_folder_messages(tmp_path, endpoints):
    """Budget reached is said once a day; an account pause and a folder going away and
    coming back each send a message, to both endpoints."""
    http, smtp = endpoints
    journal, alerts, clock = _setup(tmp_path, endpoints)

    async def scenario():
        alerts.on_budget_reached(5.0)
        alerts.on_budget_reached(5.0)  # the same day: said already
        alerts.on_account_paused("fal says: user is locked (HTTP 403)")
        alerts.on_folder("shoot", Path("/mnt/nas/shoot"), False)
        alerts.on_folder("shoot", Path("/mnt/nas/shoot"), True)
        clock.now += 86400
        alerts.on_budget_reached(5.0)  # a new day
        await alerts.drain_sending()

    asyncio.run(scenario())
    journal.close()
    titles = sorted(_titles(http))
    assert titles == sorted([
        "crystal-watchd: today's budget is reached", "crystal-watchd: fal account paused",
        "crystal-watchd: folder shoot is unavailable", "crystal-watchd: folder shoot is back",
        "crystal-watchd: today's budget is reached"])
    paused = next(p.json for p in http.all() if "account" in p.json["title"])
    assert "user is locked" in paused["message"] and paused["type"] == "failure"
    assert "$5.00" in next(p.json["message"] for p in http.all() if "budget" in p.json["title"])
    assert sorted(smtp.subjects()) == titles


def test_daily_summary_is_sent_once_at_its_time_with_todays_counts(tmp_path, endpoints):
    """At daily_summary (18:00 local) one message says today's done, failed and spend; not
    before 18:00, and not again the same day."""
    http, smtp = endpoints
    journal, alerts, clock = _setup(tmp_path, endpoints, daily_summary="18:00",
                                    on=("daily_summary",))
    for name, usd in (("a.jpg", 0.25), ("b.jpg", 0.5)):
        job = journal.claim(journal.enqueue("shoot", Path(f"/in/{name}"), name, 10, 1, name))
        journal.done(journal.output_written(job, [f"/out/{name}"], megapixels=1.0,
                                            cost_usd=usd))
    _fail(journal, "c.jpg")
    today = datetime.now()
    at_six = today.replace(hour=18, minute=0, second=0, microsecond=0).timestamp()

    async def scenario():
        clock.now = at_six - 60
        await alerts.tick()
        clock.now = at_six + 1
        await alerts.tick()
        clock.now = at_six + 3600
        await alerts.tick()
        await alerts.drain()

    asyncio.run(scenario())
    summaries = [p.json for p in http.all() if "today" in p.json["title"]]
    assert len(summaries) == 1

    # A daemon (re)started after 18:00 does not send today's summary again; tomorrow's, yes.
    late = Alerts(lambda: alerts.config(), journal.store, clock=Clock(at_six + 7200))

    async def restarted():
        await late.tick()
        await late.drain_sending()
        assert len(http.all()) == 1
        late.clock.now = at_six + 86400 + 1
        await late.tick()
        await late.drain_sending()

    asyncio.run(restarted())
    journal.close()
    assert len(http.all()) == 2
    assert summaries[0]["title"] == "crystal-watchd: 2 done, 1 failed today"
    assert "spend $0.75" in summaries[0]["message"]
    # tomorrow counts tomorrow's jobs: none yet
    assert smtp.subjects() == ["crystal-watchd: 2 done, 1 failed today",
                               "crystal-watchd: 0 done, 0 failed today"]


def test_daemon_notifies_failures_and_a_folder_gone_and_back_and_never_logs_the_urls(
        tmp_path, daemons, endpoints):
    """The real daemon: two broken files make one failure message; the inbox removed and
    made again makes an "unavailable" and a "back" message; a target that is down is logged
    (notify_failed) and the daemon goes on; the mail password and the URLs appear nowhere in
    the log."""
    http, smtp = endpoints
    (tmp_path / "notify-urls").write_text(f"# studio mail\n{smtp.url('studio', PASSWORD)}\n")
    config = write_config(tmp_path, [{"name": "shoot", "inbox": "in", "outbox": "out"}],
                          notify={"urls": [f"json://127.0.0.1:{http.port}/hook"],
                                  "urls_file": "notify-urls", "batch_seconds": 1})
    assert cli("check", "--config", str(config)).returncode == 0
    d = daemons(config).ready()
    (tmp_path / "in/x.jpg").write_bytes(b"not a picture")
    (tmp_path / "in/y.png").write_bytes(b"not one either")
    d.wait_event("job_failed", 2)
    wait_for(lambda: len(smtp.messages) >= 1, what="the failure message")
    shutil.rmtree(tmp_path / "in")
    wait_for(lambda: len(http.all()) >= 2, what="the folder message")
    (tmp_path / "in").mkdir()
    wait_for(lambda: len(http.all()) >= 3, what="the folder back message")
    http.down()  # a target that cannot be reached: logged, the daemon carries on
    (tmp_path / "in/z.jpg").write_bytes(b"broken too")
    d.wait_event("notify_failed", timeout=30)
    make_image(tmp_path / "in/ok.jpg")
    d.wait_event("job_done")
    assert d.stop() == 0
    assert _titles(http) == ["crystal-watchd: 2 files failed",
                             "crystal-watchd: folder shoot is unavailable",
                             "crystal-watchd: folder shoot is back"]
    assert smtp.subjects() == [*_titles(http), "crystal-watchd: 1 file failed"]
    log = d.text()
    assert PASSWORD not in log and str(http.port) + "/hook" not in log
    assert len(d.named("notify_sent")) == 3


def test_check_rejects_a_url_apprise_does_not_know_and_notify_test_sends_one(
        tmp_path, endpoints):
    """``check`` exits 78 naming (masked) a URL Apprise cannot use; ``notify-test`` sends one
    message to every URL and exits 0, and 1 when a target cannot be reached."""
    http, smtp = endpoints
    bad = write_config(tmp_path, [{"inbox": "in", "outbox": "out"}],
                       notify={"urls": [f"nosuch://user:{PASSWORD}@example.com/x"]})
    run = cli("check", "--config", str(bad))
    assert run.returncode == 78 and "nosuch://example.com" in run.stderr
    assert PASSWORD not in run.stdout + run.stderr
    good = write_config(tmp_path, [{"inbox": "in", "outbox": "out"}],
                        notify={"urls": [f"json://127.0.0.1:{http.port}/t",
                                         smtp.url("studio", PASSWORD)]})
    shown = cli("check", "--config", str(good))
    assert shown.returncode == 0 and PASSWORD not in shown.stdout + shown.stderr
    assert json.loads(shown.stdout)["notify"]["urls"] == ["json://127.0.0.1/***",
                                                          "mailto://127.0.0.1/***"]
    sent = cli("notify-test", "--config", str(good))
    assert sent.returncode == 0, sent.stderr
    assert _titles(http) == ["crystal-watchd: test notification"]
    assert smtp.subjects() == ["crystal-watchd: test notification"]
    http.down()
    failed = cli("notify-test", "--config", str(good))
    assert failed.returncode == 1 and PASSWORD not in failed.stdout + failed.stderr


def test_fal_daemon_notifies_a_paused_account_and_a_reached_budget(
        tmp_path, endpoints, fakefal, fal_daemons, tls_files):
    """Through the fake fal: a locked account (403) sends one "account paused" message; with
    the account working again and a tiny budget, the first paid job makes the next one wait
    and one "budget reached" message is sent."""
    from conftest import fal_env
    from fakefal import Faults
    from test_e2e_fal import fal_config

    http, _ = endpoints
    server = fakefal(faults=Faults(locked=True))
    notify = {"urls": [f"json://127.0.0.1:{http.port}/n"], "on": ["account", "budget"]}
    config = fal_config(tmp_path, [{"inbox": "in", "outbox": "out", "settle": 0.2}],
                        concurrency=1, notify=notify)
    d = fal_daemons(config, fal_env(server, tls_files)).ready()
    make_image(tmp_path / "in/a.png", (10, 10), fmt="PNG")
    d.wait_event("account_paused")
    wait_for(lambda: _titles(http) == ["crystal-watchd: fal account paused"],
             what="the account message")
    assert "403" in http.all()[0].json["message"] or "lock" in http.all()[0].json["message"]
    assert d.stop() == 0

    server.faults.locked = False
    config = fal_config(tmp_path, [{"inbox": "in", "outbox": "out", "settle": 0.2}],
                        concurrency=1, notify=notify, budget={"daily_usd": 0.00001})
    d2 = fal_daemons(config, fal_env(server, tls_files)).ready()
    d2.wait_event("job_done")
    make_image(tmp_path / "in/b.png", (10, 10), color="blue", fmt="PNG")
    d2.wait_event("budget_reached")
    wait_for(lambda: len(http.all()) >= 2, what="the budget message")
    time.sleep(1.0)
    assert _titles(http) == ["crystal-watchd: fal account paused",
                             "crystal-watchd: today's budget is reached"]
    assert d2.stop() == 0


def test_fal_unreachable_is_told_after_its_delay_and_its_return_too(tmp_path, endpoints):
    """fal away: nothing is sent before ``unreachable_after``; then one "waiting for fal"
    message naming the time it went away, however many ticks follow, and one when it is
    back. A short outage (back before the delay) sends nothing at all."""
    http, _ = endpoints
    journal, alerts, clock = _setup(tmp_path, endpoints, unreachable_after=600.0)

    async def scenario():
        since = clock.now
        alerts.on_fal_unreachable(since, "fal submit failed: cannot connect")
        clock.now += 599
        await alerts.tick()
        await alerts.drain_sending()
        assert _titles(http) == []
        for _ in range(3):
            clock.now += 60
            await alerts.tick()
        alerts.on_fal_reachable(1200.0)
        clock.now += 60
        alerts.on_fal_unreachable(clock.now, "fal status returned 503")  # a short one
        clock.now += 30
        await alerts.tick()
        alerts.on_fal_reachable(30.0)
        await alerts.drain_sending()
        return since

    since = asyncio.run(scenario())
    journal.close()
    assert sorted(_titles(http)) == ["crystal-watchd: fal is reachable again",
                                     "crystal-watchd: waiting for fal"]
    away = next(p.json for p in http.all() if p.json["title"].endswith("waiting for fal"))
    back = next(p.json for p in http.all() if p.json["title"].endswith("again"))
    assert time.strftime("%H:%M", time.localtime(since)) in away["message"]
    assert "cannot connect" in away["message"] and "20 min" in back["message"]
