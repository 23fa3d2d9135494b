"""The journal: job identity, supersession, crash recovery, and what status reads."""

from __future__ import annotations

from pathlib import Path

from crystal_watchd.jobs import JobState
from crystal_watchd.journal import Journal


def test_same_version_is_one_job_and_a_changed_file_is_a_new_one(tmp_path):
    """path+size+mtime+hash identify a job; a new version supersedes a queued old one."""
    j = Journal(tmp_path / "j.sqlite3")
    first = j.enqueue("f", Path("/in/a.jpg"), "a.jpg", 10, 1, "h1")
    assert first is not None and first.state is JobState.QUEUED
    assert j.enqueue("f", Path("/in/a.jpg"), "a.jpg", 10, 1, "h1") is None
    second = j.enqueue("f", Path("/in/a.jpg"), "a.jpg", 12, 2, "h2")
    assert second is not None and second.id != first.id
    assert j.get(first.id).state is JobState.SUPERSEDED
    assert j.is_known("f", Path("/in/a.jpg"), 12, 2)
    assert not j.is_known("f", Path("/in/a.jpg"), 10, 1)


def test_recover_puts_running_jobs_back_keeping_request_id(tmp_path):
    """After a crash, RUNNING jobs return to the queue with their backend request id."""
    path = tmp_path / "j.sqlite3"
    j = Journal(path)
    job = j.claim(j.enqueue("f", Path("/in/a.jpg"), "a.jpg", 10, 1, "h"))
    j.submitted(job, "req-123")
    j.close()
    j2 = Journal(path)
    assert j2.recover() == 1
    again = j2.get(job.id)
    assert again.state is JobState.QUEUED and again.request_id == "req-123"
    assert again.submissions == 1


def test_ready_queue_honours_backoff_and_excluded_folders(tmp_path):
    """A job retried later is not ready before its time; paused folders are skipped."""
    j = Journal(tmp_path / "j.sqlite3")
    a = j.enqueue("a", Path("/a/1.jpg"), "1.jpg", 1, 1, "x")
    b = j.enqueue("b", Path("/b/1.jpg"), "1.jpg", 1, 1, "y")
    j.retry_later(j.claim(a), delay=60, kind="transient", reason="try later")
    assert [x.id for x in j.next_ready(now=1e12, limit=5)] == [b.id, a.id]
    import time
    assert [x.id for x in j.next_ready(time.time(), limit=5)] == [b.id]
    assert j.next_ready(time.time(), exclude_folders=["b"], limit=5) == []
    assert j.get(a.id).attempts == 1


def test_arriving_jobs_wait_for_their_time_and_yield_to_a_new_version(tmp_path):
    """An arriving job is not taken before ``until``, is taken after it, counts as
    unfinished, keeps its attempts; a new version of the file supersedes it."""
    j = Journal(tmp_path / "j.sqlite3")
    job = j.start(j.claim(j.enqueue("f", Path("/in/a.jpg"), "a.jpg", 10, 1, "h1")), {}, "k")
    waiting = j.arriving(job, until=1000.0, kind="file_incomplete", reason="no end")
    assert waiting.state is JobState.ARRIVING and waiting.attempts == 0
    assert (waiting.error_kind, waiting.reason) == ("file_incomplete", "no end")
    assert j.next_ready(999.0) == [] and j.next_wakeup() == 1000.0
    assert [x.id for x in j.next_ready(1000.0)] == [job.id]
    assert j.unfinished() == 1 and j.is_known("f", Path("/in/a.jpg"), 10, 1)
    newer = j.enqueue("f", Path("/in/a.jpg"), "a.jpg", 20, 2, "h2")
    assert j.get(job.id).state is JobState.SUPERSEDED and newer.state is JobState.QUEUED


def test_a_job_found_stale_while_checked_is_superseded_not_arriving(tmp_path):
    """If a newer version was journaled while a worker checked the old one, the old one is
    superseded instead of waiting."""
    j = Journal(tmp_path / "j.sqlite3")
    old = j.claim(j.enqueue("f", Path("/in/a.jpg"), "a.jpg", 10, 1, "h1"))
    j.enqueue("f", Path("/in/a.jpg"), "a.jpg", 20, 2, "h2")  # a running job is not touched
    assert j.get(old.id).state is JobState.RUNNING
    result = j.arriving(old, until=5.0, kind="file_incomplete", reason="no end")
    assert result.state is JobState.SUPERSEDED
