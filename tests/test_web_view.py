"""The page's overview sums against both stores (SQLite and PostgreSQL): spend today, this
month and per day of the chart, by the daemon's local day, whatever the journal holds."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from test_journal import open_store  # noqa: F401 - the fixture, for both stores

from crystal_watchd.web.view import JournalView


def test_spend_is_summed_by_local_day(open_store, monkeypatch):  # noqa: F811
    """In a zone 5 h 45 min from UTC (Nepal), done jobs finished at known local times (one a
    second before midnight, one at midnight, two yesterday, one 40 days ago): today's, the
    month's and each chart day's dollars are the sums of the literal costs; a queued job
    costs nothing."""
    monkeypatch.setenv("TZ", "Asia/Kathmandu")
    time.tzset()
    try:
        _check_sums(open_store)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def _check_sums(open_store) -> None:  # noqa: F811
    j = open_store()
    now = datetime.now().replace(hour=12, minute=0, second=0, microsecond=0)
    midnight = now.replace(hour=0)
    finished = {  # name: (local time it finished, dollars)
        "late-yesterday.jpg": (midnight - timedelta(seconds=1), 0.25),
        "midnight.jpg": (midnight, 0.5),
        "noon.jpg": (now, 1.0),
        "yesterday.jpg": (midnight - timedelta(hours=5), 2.0),
        "old.jpg": (midnight - timedelta(days=40), 4.0),
    }
    for name, (when, usd) in finished.items():
        job = j.claim(j.enqueue("f", Path(f"/in/{name}"), name, 1, 1, name))
        job = j.done(j.output_written(job, [f"/out/{name}"], megapixels=1.0, cost_usd=usd))
        j._exec("UPDATE jobs SET finished_at=? WHERE id=?", (when.timestamp(), job.id))
        j._exec("UPDATE spend SET created_at=?, day=? WHERE job_id=?",  # its ledger row
                (when.timestamp(), when.date().isoformat(), job.id))
    j.enqueue("f", Path("/in/waiting.jpg"), "waiting.jpg", 1, 1, "w")
    view = JournalView(lambda: open_store())
    try:
        overview = view.run(view.overview, ["f"], now.timestamp())
    finally:
        view.close()
    today, yesterday = now.date(), now.date() - timedelta(days=1)
    assert overview.spend_today == pytest.approx(1.5)
    assert overview.spend_by_day[today] == pytest.approx(1.5)
    assert overview.spend_by_day[yesterday] == pytest.approx(2.25)
    assert sum(overview.spend_by_day.values()) == pytest.approx(3.75)  # "old" is off the chart
    in_month = sum(usd for when, usd in finished.values()
                   if (when.year, when.month) == (today.year, today.month))
    assert overview.spend_month == pytest.approx(in_month)
