"""A job's state table (jobs.TRANSITIONS) as the journal enforces it, on both stores: every
allowed edge is taken, every forbidden one refused with the row left as it was; the groups
of states the queries use cover every state once; status and /metrics report every state."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import cli, write_config
from test_journal import open_store  # noqa: F401 - the fixture, for both stores

from crystal_watchd.errors import IllegalTransition, JournalError
from crystal_watchd.jobs import (
    FINISHED,
    HELD,
    REPORTED,
    TRANSITIONS,
    UNFINISHED,
    WAITING,
    JobState,
    predecessors,
    report_key,
)
from crystal_watchd.journal import SqliteJournal
from crystal_watchd.journal.rows import into
from crystal_watchd.web.metrics import _JournalCollector
from crystal_watchd.web.view import JournalView, LiveState

ALL = tuple(JobState)


def _change(j, job, target: JobState):
    """Ask the journal for ``target`` through the operation the daemon uses for it."""
    if target is JobState.RUNNING:
        return j.claim(job)
    if target is JobState.QUEUED:
        return j.requeue(job)
    if target is JobState.DONE:
        return j.done(job)
    if target is JobState.FAILED:
        return j.failed(job, kind="rejected", reason="test")
    if target is JobState.SUPERSEDED:
        return j.superseded(job, "test")
    if target is JobState.ARRIVING:
        return j.arriving(job, until=time.time() + 60, kind="file_incomplete", reason="test")
    held = j.hold({job.id: 0.5})
    if not held:
        raise IllegalTransition(job.id, j.get(job.id).state.value, target.value)
    return held[0]


def _row(j, job_id: int) -> tuple:
    [r] = j._rows("SELECT state, attempts, reason, finished_at, owner FROM jobs WHERE id=?",
                  (job_id,))
    return tuple(r[k] for k in ("state", "attempts", "reason", "finished_at", "owner"))


def test_every_edge_of_the_table_is_taken_and_every_other_refused(open_store):  # noqa: F811
    """For every pair of states (49 of them) a job is put in the first and asked to change
    to the second: an edge of the table succeeds and leaves the job in the second state;
    any other pair raises IllegalTransition and the row (state, attempts, reason, finish
    time, owner) is exactly as before."""
    j = open_store()
    taken = refused = 0
    for n, (before, after) in enumerate((b, a) for b in ALL for a in ALL):
        job = j.enqueue("f", Path(f"/in/{n}.jpg"), f"{n}.jpg", 1, 1, f"h{n}")
        j._exec("UPDATE jobs SET state=? WHERE id=?", (before.value, job.id))
        job = j.get(job.id)
        was = _row(j, job.id)
        if after in TRANSITIONS[before]:
            assert _change(j, job, after).state is after, (before, after)
            assert j.get(job.id).state is after
            taken += 1
        else:
            with pytest.raises(IllegalTransition) as err:
                _change(j, job, after)
            assert (err.value.before, err.value.after) == (before.value, after.value)
            assert isinstance(err.value, JournalError)
            assert _row(j, job.id) == was, (before, after)
            refused += 1
    assert taken == sum(len(v) for v in TRANSITIONS.values()) and taken + refused == 49


def test_bulk_changes_touch_only_the_states_they_leave_from(open_store):  # noqa: F811
    """With one job in every state: recover moves only the running one (to queued),
    approve only the held one, a new version of every file supersedes only the waiting and
    held versions, retry_failed takes the failed one back, and a twin check refuses a job
    that is not running."""
    j = open_store()
    jobs = {}
    for s in ALL:
        job = j.enqueue("f", Path(f"/in/{s.value}.jpg"), s.value, 1, 1, s.value)
        j._exec("UPDATE jobs SET state=? WHERE id=?", (s.value, job.id))
        jobs[s] = job.id

    def states():
        return {s: j.get(i).state for s, i in jobs.items()}

    assert j.recover() == 1
    assert states() == {**{s: s for s in ALL}, JobState.RUNNING: JobState.QUEUED}
    j._exec("UPDATE jobs SET state=? WHERE id=?", ("running", jobs[JobState.RUNNING]))
    assert j.approve() == {"f": (1, 0.0)}
    assert states() == {**{s: s for s in ALL}, JobState.AWAITING_APPROVAL: JobState.QUEUED}
    j._exec("UPDATE jobs SET state=? WHERE id=?",
            ("awaiting_approval", jobs[JobState.AWAITING_APPROVAL]))
    with pytest.raises(IllegalTransition):
        j.wait_for_twin(j.get(jobs[JobState.DONE]), "k")
    failed = j.get(jobs[JobState.FAILED])
    assert j.retry_failed(failed, failed.path).state is JobState.QUEUED
    j._exec("UPDATE jobs SET state=? WHERE id=?", ("failed", jobs[JobState.FAILED]))
    for s in ALL:
        j.enqueue("f", Path(f"/in/{s.value}.jpg"), s.value, 2, 2, s.value + "-new")
    superseded = {s for s, now in states().items() if now is JobState.SUPERSEDED}
    assert superseded == {JobState.QUEUED, JobState.ARRIVING, JobState.AWAITING_APPROVAL,
                          JobState.SUPERSEDED}
    assert states()[JobState.RUNNING] is JobState.RUNNING


def test_state_groups_cover_every_state_once_and_agree_with_the_table():
    """Every state is finished, unfinished or held, and only one of them; a finished job
    goes nowhere but back to the queue (retry); waiting states are left only for a worker
    or a newer version; every state is reported under its own key."""
    groups = (FINISHED, UNFINISHED, HELD)
    for state in ALL:
        assert sum(state in g for g in groups) == 1, state
    assert all(TRANSITIONS[s] <= {JobState.QUEUED} for s in FINISHED)
    assert all(TRANSITIONS[s] <= {JobState.RUNNING, JobState.SUPERSEDED} | HELD
               for s in WAITING)
    assert WAITING < UNFINISHED
    assert len(set(REPORTED)) == len(ALL) and report_key(JobState.RUNNING) == "in_flight"
    assert predecessors(JobState.QUEUED) == {JobState.RUNNING, JobState.FAILED,
                                             JobState.AWAITING_APPROVAL}


def test_a_statement_meant_for_a_forbidden_edge_is_refused_before_it_runs():
    """The guard a bulk statement is built with refuses a source state the table does not
    allow for its target (done → running, say), so such a statement cannot be written."""
    with pytest.raises(IllegalTransition, match="done to running"):
        into(JobState.RUNNING, only=(JobState.DONE,))
    sql, args = into(JobState.SUPERSEDED, only=(JobState.QUEUED,))
    assert sql == "state IN (?)" and args == ("queued",)


def test_status_and_metrics_agree_for_every_state(tmp_path):
    """A journal with jobs in every state (a different number in each, arriving and held
    ones included): `status --json` (the real command) and /metrics' crystal_watchd_jobs
    give the same count for every state of the folder, none of them zero."""
    config = write_config(tmp_path, [{"name": "f", "inbox": "in", "outbox": "out"}])
    j = SqliteJournal(tmp_path / "state" / "journal.sqlite3")
    expected = {}
    n = 0
    for count, state in enumerate(ALL, start=1):
        for _ in range(count):
            n += 1
            job = j.enqueue("f", Path(f"/in/{n}.jpg"), f"{n}.jpg", 1, 1, f"h{n}")
            j._exec("UPDATE jobs SET state=?, finished_at=? WHERE id=?",
                    (state.value, time.time() if state.finished else None, job.id))
        expected[report_key(state)] = count
    j.close()
    status = cli("status", "--json", "--config", str(config))
    assert status.stdout, status.stderr
    report = json.loads(status.stdout)
    view = JournalView(lambda: SqliteJournal(tmp_path / "state" / "journal.sqlite3",
                                             readonly=True))
    live = LiveState(backend="local", in_flight=0, paused_until=0.0, pause_reason=None,
                     over_budget=False, daily_usd=None)
    try:
        [jobs] = [f for f in _JournalCollector(view, lambda: live, lambda: ["f"]).collect()
                  if f.name == "crystal_watchd_jobs"]
    finally:
        view.close()
    metrics = {s.labels["state"]: s.value for s in jobs.samples if s.labels["folder"] == "f"}
    assert set(metrics) == set(REPORTED)
    for key in REPORTED:
        assert report["folders"]["f"][key] == metrics[key] == expected[key], key
