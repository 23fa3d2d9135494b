"""The spend ledger against both stores (SQLite and PostgreSQL): a failed job's billed runs
count in today's spend, the budget and ``status --json``; a ledger row and the job change
that reports it are written together or not at all; the page, ``status --json`` and
``/metrics`` report the same spend; an older journal's recorded costs are back-filled."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest
from conftest import cli, write_config
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from crystal_watchd.daemon.budget import Budget
from crystal_watchd.jobs import JobState
from crystal_watchd.journal import SqliteJournal, ledger, schema
from crystal_watchd.web.metrics import _JournalCollector
from crystal_watchd.web.view import JournalView, LiveState


def _status(config: Path) -> dict:
    return json.loads(cli("status", "--json", "--config", str(config)).stdout)


def _pair(kind: str, tmp_path: Path, request):
    """(opener of the journal, config) of one store: ``status`` in a subprocess reads the
    same journal."""
    folders = [{"inbox": "in", "outbox": "out", "name": "f"}]
    if kind == "sqlite":
        return (lambda: SqliteJournal(tmp_path / "state" / "journal.sqlite3"),
                write_config(tmp_path, folders))
    from crystal_watchd.journal.postgres import PostgresJournal

    url = request.getfixturevalue("pg_url")
    return lambda: PostgresJournal(url), write_config(tmp_path, folders, journal=url)


@pytest.fixture(params=["sqlite", "postgresql"])
def pair(request, tmp_path):
    """(journal, config) in the store under test; ``journal.reopen()`` opens another
    connection to it. The journal is closed afterwards."""
    opener, config = _pair(request.param, tmp_path, request)
    j = opener()
    j.kind, j.reopen = request.param, opener
    yield j, config
    j.close()


def test_a_failed_jobs_cancelled_running_run_counts_everywhere(pair):
    """A job whose request was cancelled while running (billed by fal) and that then fails
    still counts: today's spend, the reservation check, the daily budget, the paid-twice
    count and ``status --json`` (today, total, by day, the folder) all include its run."""
    j, config = pair
    job = j.claim(j.enqueue("f", Path("/in/a.jpg"), "a.jpg", 1, 1, "a"))
    midnight = ledger.day_of(time.time())
    assert j.reserve_budget(job, 0.25, limit=10.0, since=time.time())
    job = j.submitted(job, "req-1")
    j.run_abandoned(job, estimated_usd=0.25)
    j.failed(j.get(job.id), kind="timeout", reason="no result within fal.timeout")
    assert j.get(job.id).state is JobState.FAILED
    assert j.spent_on(midnight) == pytest.approx(0.25)
    assert j.spent_since(time.time() - 60) == pytest.approx(0.25)
    # the reservation is gone with the failure; the billed run is not
    assert j.committed_since(time.time()) == pytest.approx(0.25)
    assert not j.reserve_budget(j.enqueue("f", Path("/in/b.jpg"), "b.jpg", 1, 1, "b"), 0.1,
                                limit=0.25, since=time.time())
    assert j.run(Budget().reached(0.25, time.time(), j.store))
    assert not j.run(Budget().reached(0.26, time.time(), j.store))
    assert j.paid_twice() == 1
    [row] = j.query("SELECT kind, request_id, folder, estimated_usd FROM spend")
    assert dict(row) == {"kind": "cancelled_running", "request_id": "req-1", "folder": "f",
                         "estimated_usd": pytest.approx(0.25)}
    spend = _status(config)["spend"]
    assert spend["today_usd"] == spend["total_usd"] == pytest.approx(0.25)
    assert spend["by_day"] == {midnight: pytest.approx(0.25)}
    assert spend["maybe_paid_twice"] == 1
    assert _status(config)["folders"]["f"]["spend_today_usd"] == pytest.approx(0.25)


def test_a_result_is_recorded_once_per_request_and_a_copy_not_at_all(pair):
    """The result row is written with the outputs: again for the same request (outputs lost
    and fetched again) it is not paid twice; a copy and the local backend cost nothing and
    have no row; a lost reply's run is its own row at its estimate."""
    j, _ = pair
    job = j.claim(j.enqueue("f", Path("/in/a.jpg"), "a.jpg", 1, 1, "a"))
    j.submit_given_up(job, estimated_usd=0.1)  # its answer was lost: no request id
    job = j.submitted(j.get(job.id), "r1")
    job = j.output_written(j.get(job.id), ["/out/a"], megapixels=1.0, cost_usd=0.1)
    j.output_written(job, ["/out/a"], megapixels=1.0, cost_usd=0.1)
    j.done(j.get(job.id))
    copy = j.claim(j.enqueue("f", Path("/in/b.jpg"), "b.jpg", 1, 1, "a"))
    j.done(j.output_written(copy, ["/out/b"], megapixels=None, cost_usd=0.0))
    rows = sorted((r["kind"], r["request_id"]) for r in j.query("SELECT * FROM spend"))
    assert rows == [("lost_reply", None), ("result", "r1")]
    assert j.spent_since(0) == pytest.approx(0.2)


@pytest.mark.parametrize("change", ["output_written", "run_abandoned", "submit_given_up"])
def test_the_ledger_row_and_the_state_change_are_atomic(pair, change):
    """With every insert into the ledger refused (a trigger), the change that reports a
    billed run fails whole: the job is exactly as it was and the ledger is empty."""
    j, _ = pair
    job = j.submitted(j.claim(j.enqueue("f", Path("/in/a.jpg"), "a.jpg", 1, 1, "a")), "r1")
    before = j.get(job.id)
    if j.kind == "sqlite":
        j._exec("CREATE TRIGGER no_spend BEFORE INSERT ON spend "
                "BEGIN SELECT RAISE(ABORT, 'refused'); END")
    else:
        j._exec("CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'refused'; END $$")
        j._exec("CREATE TRIGGER no_spend BEFORE INSERT ON spend FOR EACH ROW "
                "EXECUTE FUNCTION refuse()")
    with pytest.raises(Exception, match="refused"):  # each driver raises its own class
        if change == "output_written":
            j.output_written(before, ["/out/a"], megapixels=1.0, cost_usd=0.1)
        else:
            getattr(j, change)(before, estimated_usd=0.1)
    after = j.get(job.id)
    assert (after.outputs, after.cost_usd, after.paid_twice, after.updated_at) == (
        before.outputs, before.cost_usd, before.paid_twice, before.updated_at)
    assert j.query("SELECT COUNT(*) AS n FROM spend")[0]["n"] == 0


def test_page_status_and_metrics_report_the_same_spend(pair):
    """Done jobs in two folders, one with a run paid again, and a failed job with a billed
    cancelled run: the page's today and per-folder dollars, ``status --json``'s and the
    ``crystal_watchd_spend_dollars`` samples are the same sums."""
    j, config = pair
    for name, folder, usd in (("a", "f", 0.5), ("b", "f", 0.25), ("c", "g", 1.0)):
        job = j.submitted(j.claim(j.enqueue(folder, Path(f"/in/{name}"), name, 1, 1, name)),
                          f"r-{name}")
        if name == "b":
            j.run_abandoned(job, estimated_usd=0.25)
        j.done(j.output_written(j.get(job.id), [f"/out/{name}"], megapixels=1.0, cost_usd=usd))
    failed = j.submitted(j.claim(j.enqueue("g", Path("/in/d"), "d", 1, 1, "d")), "r-d")
    j.run_abandoned(failed, estimated_usd=2.0)
    j.failed(j.get(failed.id), kind="timeout", reason="gave up")
    view = JournalView(j.reopen)
    try:
        overview = view.run(view.overview, ["f", "g"], time.time())
        totals = view.run(view.totals)
        registry = CollectorRegistry()
        registry.register(_JournalCollector(view, lambda: LiveState("fal", 0, 0, None, False,
                                                                   None), lambda: ["f", "g"]))
        samples = {s.labels.get("folder"): s.value
                   for family in text_string_to_metric_families(generate_latest(registry)
                                                                .decode())
                   for s in family.samples if s.name == "crystal_watchd_spend_dollars_total"}
    finally:
        view.close()
    report = _status(config)
    assert report["spend"]["total_usd"] == pytest.approx(4.0)
    assert overview.spend_today == pytest.approx(report["spend"]["today_usd"])
    assert sum(samples.values()) == pytest.approx(report["spend"]["total_usd"])
    for folder in ("f", "g"):
        assert samples[folder] == pytest.approx(report["folders"][folder]["spend_total_usd"])
        assert totals[folder]["usd"] == pytest.approx(samples[folder])


def _old_rows(insert) -> None:
    """Jobs of a journal from before the ledger: done (one paid twice, its cost covering
    both runs), failed after a run paid again, queued with none."""
    now = time.time()
    for i, (state, cost, twice, estimate) in enumerate((
            ("done", 0.3, 0, None), ("done", 0.8, 1, None), ("failed", None, 1, 0.2),
            ("queued", None, 0, 0.5))):
        insert(f"f{i % 2}", f"/in/{i}".encode(), state, cost, twice, estimate,
               "[]" if cost is None else '["/out/x"]', now - 100 + i)


INSERT_OLD = ("INSERT INTO jobs (folder, path, rel, size, mtime_ns, sha256, state, created_at, "
              "updated_at, finished_at, cost_usd, paid_twice, estimated_usd, outputs, request_id) "
              "VALUES ({marks})")


def _check_backfill(j) -> None:
    rows = sorted((r["folder"], r["kind"], round(r["estimated_usd"], 6), r["day"])
                  for r in j.query("SELECT folder, kind, estimated_usd, day FROM spend"))
    day = ledger.day_of(time.time() - 100)
    assert rows == [("f0", "resubmitted", 0.2, day), ("f0", "result", 0.3, day),
                    ("f1", "resubmitted", 0.4, day), ("f1", "result", 0.4, day)]
    assert j.spent_since(0) == pytest.approx(1.3)  # the old total plus the failed job's run
    assert j.paid_twice() == 2


#: The schema's steps before the one that adds the spend ledger.
LEDGER_STEP = next(step.number for step in schema.STEPS
                   if any(getattr(c, "name", "") == "spend" for c in step.changes))
BEFORE_LEDGER = tuple(step for step in schema.STEPS if step.number < LEDGER_STEP)


def test_an_old_sqlite_journal_is_back_filled(tmp_path):
    """A SQLite journal at the schema before the ledger: on open, each done job's cost
    becomes its result row (split evenly with the runs it counted as paid twice), a failed
    job's paid-twice run a row at its estimate; a queued job has none."""
    path = tmp_path / "j.sqlite3"
    db = sqlite3.connect(path)
    db.execute(schema.META)
    for step in BEFORE_LEDGER:
        for statement in schema.statements(step, schema.SQLITE):
            db.execute(statement)
    db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(BEFORE_LEDGER[-1].number),))

    def insert(folder, p, state, cost, twice, estimate, outputs, at):
        db.execute(INSERT_OLD.format(marks=", ".join("?" * 15)),
                   (folder, p, p, 1, 1, p.decode(), state, at, at,
                    at if state in ("done", "failed") else None, cost, twice, estimate,
                    outputs, "req" if cost else None))
    _old_rows(insert)
    db.commit()
    db.close()
    j = SqliteJournal(path)
    try:
        _check_backfill(j)
    finally:
        j.close()


def test_an_old_postgresql_journal_is_back_filled(pg_url):
    """As for SQLite: a PostgreSQL journal migrated to the schema before the ledger gets
    the same rows when a daemon of this version opens it."""
    import psycopg

    from crystal_watchd.journal import postgres

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        conn.execute(schema.META)
        for step in BEFORE_LEDGER:
            for statement in schema.statements(step, schema.POSTGRES):
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version VALUES (%s)", (step.number,))
        conn.execute("INSERT INTO meta VALUES ('schema', %s)", (str(BEFORE_LEDGER[-1].number),))

        def insert(folder, p, state, cost, twice, estimate, outputs, at):
            conn.execute(INSERT_OLD.format(marks=", ".join(["%s"] * 15)),
                         (folder, p, p, 1, 1, p.decode(), state, at, at,
                          at if state in ("done", "failed") else None, cost, twice, estimate,
                          outputs, "req" if cost else None))
        _old_rows(insert)
    j = postgres.PostgresJournal(pg_url)
    try:
        _check_backfill(j)
    finally:
        j.close()
