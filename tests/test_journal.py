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
