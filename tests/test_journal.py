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


def test_a_copy_waits_for_its_twin_and_is_ready_once_that_job_finishes(tmp_path):
    """wait_for_twin: same content and settings as an unfinished job → the copy waits and is
    not ready (nor a wake-up) until that job finishes; other settings or content never wait."""
    j = Journal(tmp_path / "j.sqlite3")
    def started(folder: str, name: str, key: str):
        job = j.enqueue(folder, Path(f"/{folder}/{name}"), name, 1, 1, "h")
        return j.start(j.claim(job), {}, key)

    first = started("a", "1.jpg", "k")
    assert j.wait_for_twin(first, "k") is None
    copy = started("b", "2.jpg", "k")
    assert j.wait_for_twin(copy, "k").id == first.id
    other = started("b", "3.jpg", "k2")
    assert j.wait_for_twin(other, "k2") is None
    j.done(other)
    assert j.get(copy.id).state is JobState.QUEUED and j.get(copy.id).waits_for == first.id
    assert j.next_ready(now=1e12, limit=5) == [] and j.next_wakeup() is None
    j.done(first)
    assert [x.id for x in j.next_ready(now=1e12, limit=5)] == [copy.id]
    assert j.find_done_output("b", "h", "k").id == first.id  # across folders


def test_an_older_journal_gains_the_waiting_column(tmp_path):
    """A journal written before jobs could wait for each other opens (read-only for status,
    then read-write for the daemon, which adds the column) without losing a job."""
    import sqlite3

    from crystal_watchd.journal import SCHEMA

    path = tmp_path / "j.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(SCHEMA.replace(",\n    waits_for INTEGER", "").split("CREATE INDEX")[0])
    db.execute("INSERT INTO jobs (folder, path, rel, size, mtime_ns, sha256, state, created_at,"
               " updated_at) VALUES ('f', x'2f612e6a7067', x'612e6a7067', 1, 1, 'h', 'queued',"
               " 0, 0)")
    db.commit()
    db.close()
    assert Journal(path, readonly=True).jobs()[0].waits_for is None
    j = Journal(path)
    assert [job.path for job in j.next_ready(now=1e12)] == [Path("/a.jpg")]
