"""The journal, against both stores (SQLite and PostgreSQL): job identity, supersession,
crash recovery, claims, slots, budget reservations, daemons, and moving between stores."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import pytest

from crystal_watchd.jobs import JobState
from crystal_watchd.journal import SqliteJournal
from crystal_watchd.journal.transfer import export_jobs, import_jobs


@pytest.fixture(params=["sqlite", "postgresql"])
def open_store(request, tmp_path):
    """``open_store(lease=…)`` opens (or reopens) the test's journal in the store under test."""
    opened = []
    if request.param == "sqlite":
        def make(lease: float = 60.0):
            opened.append(SqliteJournal(tmp_path / "j.sqlite3", lease=lease))
            return opened[-1]
    else:
        url = request.getfixturevalue("pg_url")
        from crystal_watchd.journal.postgres import PostgresJournal

        def make(lease: float = 60.0):
            opened.append(PostgresJournal(url, lease=lease))
            return opened[-1]
    make.kind = request.param
    yield make
    for journal in opened:
        with contextlib.suppress(Exception):  # closed by the test already, however it ended
            journal.close()


def test_same_version_is_one_job_and_a_changed_file_is_a_new_one(open_store):
    """path+size+mtime+hash identify a job; a new version supersedes a queued old one."""
    j = open_store()
    first = j.enqueue("f", Path("/in/a.jpg"), "a.jpg", 10, 1, "h1")
    assert first is not None and first.state is JobState.QUEUED
    assert j.enqueue("f", Path("/in/a.jpg"), "a.jpg", 10, 1, "h1") is None
    second = j.enqueue("f", Path("/in/a.jpg"), "a.jpg", 12, 2, "h2")
    assert second is not None and second.id != first.id
    assert j.get(first.id).state is JobState.SUPERSEDED
    assert j.is_known("f", Path("/in/a.jpg"), 12, 2)
    assert not j.is_known("f", Path("/in/a.jpg"), 10, 1)


def test_any_file_name_round_trips(open_store):
    """Paths are stored as bytes: a name that is not valid UTF-8 comes back unchanged."""
    j = open_store()
    odd = Path("/in/" + b"caf\xe9 \xff.jpg".decode("utf-8", "surrogateescape"))
    job = j.enqueue("f", odd, odd.name, 5, 7, "h")
    assert j.get(job.id).path == odd and j.get(job.id).rel == odd.name
    assert (str(odd), 5, 7) in j.known_versions("f")


def test_recover_puts_running_jobs_back_keeping_request_id(open_store):
    """After a crash, RUNNING jobs return to the queue with their backend request id (in a
    shared journal once their lease has run out)."""
    j = open_store(lease=0.3)
    job = j.claim(j.enqueue("f", Path("/in/a.jpg"), "a.jpg", 10, 1, "h"))
    j.submitted(job, "req-123")
    j.close()
    time.sleep(0.4)
    j2 = open_store(lease=0.3)
    assert j2.recover() == 1
    again = j2.get(job.id)
    assert again.state is JobState.QUEUED and again.request_id == "req-123"
    assert again.submissions == 1


def test_ready_queue_honours_backoff_and_excluded_folders(open_store):
    """A job retried later is not ready before its time; paused folders are skipped."""
    j = open_store()
    a = j.enqueue("a", Path("/a/1.jpg"), "1.jpg", 1, 1, "x")
    b = j.enqueue("b", Path("/b/1.jpg"), "1.jpg", 1, 1, "y")
    j.retry_later(j.claim(a), delay=60, kind="transient", reason="try later")
    assert [x.id for x in j.next_ready(now=1e12, limit=5)] == [b.id, a.id]
    assert [x.id for x in j.next_ready(time.time(), limit=5)] == [b.id]
    assert j.next_ready(time.time(), exclude_folders=["b"], limit=5) == []
    assert j.get(a.id).attempts == 1


def test_claim_ready_takes_each_job_once_and_only_paid_when_asked(open_store):
    """claim_ready hands out ready jobs oldest first and never the same job twice;
    ``only_paid`` takes just the jobs that already hold a request."""
    j = open_store()
    ids = [j.enqueue("f", Path(f"/in/{i}.jpg"), f"{i}.jpg", 1, 1, str(i)).id for i in range(5)]
    paid = j.claim(j.get(ids[4]))
    j.submitted(paid, "req-4")
    j.requeue(j.get(ids[4]))
    assert [x.id for x in j.claim_ready(time.time(), limit=1, only_paid=True)] == [ids[4]]
    first = j.claim_ready(time.time(), limit=3)
    assert [x.id for x in first] == ids[:3] and all(x.state is JobState.RUNNING for x in first)
    assert [x.id for x in j.claim_ready(time.time(), limit=5)] == [ids[3]]
    assert j.claim_ready(time.time(), limit=5) == []


def test_slots_are_counted_and_kept_until_released_or_finished(open_store):
    """At most ``limit`` jobs hold a slot; asking again for a held slot is granted without
    taking a second one; a slot frees when released or when its job finishes."""
    j = open_store()
    a, b, c, d = (j.enqueue("f", Path(f"/in/{n}"), n, 1, 1, n) for n in "abcd")
    assert j.acquire_slot(a.id, 2) and j.acquire_slot(b.id, 2)
    assert not j.acquire_slot(c.id, 2)
    assert j.acquire_slot(a.id, 2)
    assert not j.acquire_slot(c.id, 2)  # a's second ask took nothing more
    j.release_slot(a.id)
    assert j.acquire_slot(c.id, 2)
    j.done(j.claim(j.get(c.id)))
    assert j.acquire_slot(d.id, 2)  # the slot c held came free when c finished
    assert not j.acquire_slot(a.id, 2)  # b and d hold both


def test_budget_reservations_never_exceed_the_limit(open_store):
    """A job may reserve only while spend plus reservations are below the limit; a finished
    job's cost replaces its reservation; a failed job's reservation frees its dollars."""
    j = open_store()
    jobs = [j.enqueue("f", Path(f"/in/{i}"), str(i), 1, 1, str(i)) for i in range(4)]
    since = time.time() - 10
    assert j.reserve_budget(jobs[0], 0.4, limit=0.8, since=since)
    assert j.reserve_budget(jobs[0], 0.4, limit=0.8, since=since)  # held already: no new spend
    assert j.reserve_budget(jobs[1], 0.4, limit=0.8, since=since)
    assert not j.reserve_budget(jobs[2], 0.4, limit=0.8, since=since)
    assert j.committed_since(since) == pytest.approx(0.8)
    done = j.output_written(j.claim(jobs[0]), ["/out/0"], megapixels=1.0, cost_usd=0.1)
    j.done(done)
    assert j.committed_since(since) == pytest.approx(0.5)
    assert j.reserve_budget(jobs[2], 0.4, limit=0.8, since=since)
    j.failed(j.claim(jobs[1]), kind="rejected", reason="never billed")
    assert j.reserve_budget(jobs[3], 0.4, limit=0.8, since=since)
    assert j.committed_since(since) == pytest.approx(0.9)


def test_daemons_heartbeat_and_what_they_hold(open_store):
    """A registered daemon is listed alive with the jobs it holds; the heartbeat renews
    its leases; unregistering removes it."""
    j = open_store()
    j.register_daemon("d1", host="nas1", pid=42, state_dir="/var/lib/a",
                      folders={"photos": {"scale_factor": 2}})
    job = j.claim(j.enqueue("photos", Path("/in/a.jpg"), "a.jpg", 1, 1, "h"))
    assert j.heartbeat() == 1
    [d] = j.daemons()
    assert (d.id, d.host, d.pid, d.alive) == ("d1", "nas1", 42, True)
    assert d.working_on == [(job.id, "a.jpg")] and d.folders == {"photos": {"scale_factor": 2}}
    j.unregister_daemon()
    assert j.daemons() == []


def test_export_and_import_move_jobs_between_stores(open_store, tmp_path):
    """Jobs exported from one store import into another with their state, request id and
    outputs; running jobs arrive queued; importing twice adds nothing."""
    source = SqliteJournal(tmp_path / "source.sqlite3")
    done = source.enqueue("f", Path("/in/a.jpg"), "a.jpg", 1, 1, "a")
    source.done(source.output_written(source.claim(done), ["/out/a.jpg"], megapixels=2.0,
                                      cost_usd=0.03))
    running = source.submitted(source.claim(source.enqueue("f", Path("/in/b.jpg"), "b.jpg",
                                                           1, 1, "b")), "req-b")
    rows = list(export_jobs(source))
    target = open_store()
    assert import_jobs(target, rows) == (2, 0)
    assert import_jobs(target, rows) == (0, 2)
    by_rel = {job.rel: job for job in target.jobs()}
    assert by_rel["a.jpg"].state is JobState.DONE and by_rel["a.jpg"].outputs == ["/out/a.jpg"]
    assert by_rel["b.jpg"].state is JobState.QUEUED
    assert by_rel["b.jpg"].request_id == running.request_id == "req-b"
    assert target.spent_since(0) == pytest.approx(0.03)
    source.close()


def test_two_daemons_racing_for_one_file_record_one_job(open_store):
    """Several daemons (connections) journaling the same file version at once: one job."""
    first = open_store()
    results: list = []
    together = threading.Barrier(4)

    def intake():
        j = open_store()  # its own connection, as another daemon has
        together.wait()
        results.append(j.enqueue("f", Path("/in/same.jpg"), "same.jpg", 9, 9, "same"))

    threads = [threading.Thread(target=intake) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r is not None for r in results) == 1
    assert len(first.jobs()) == 1


def test_unfinished_counts_only_the_folders_asked_for(open_store):
    """``once`` waits for its own folders only: other daemons' folders are not counted."""
    j = open_store()
    j.enqueue("mine", Path("/a/1"), "1", 1, 1, "1")
    j.claim(j.enqueue("mine", Path("/a/2"), "2", 1, 1, "2"))
    j.enqueue("theirs", Path("/b/1"), "1", 1, 1, "3")
    j.done(j.claim(j.enqueue("mine", Path("/a/3"), "3", 1, 1, "4")))
    assert j.unfinished() == 3
    assert j.unfinished(["mine"]) == 2 and j.unfinished(["nobody"]) == 0


def test_a_copy_waits_for_its_twin_and_is_ready_once_that_job_finishes(open_store):
    """wait_for_twin: same content and settings as an unfinished job → the copy waits and is
    not ready (nor a wake-up) until that job finishes; other settings or content never wait."""
    j = open_store()

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

    from crystal_watchd.journal.sqlite import SCHEMA

    path = tmp_path / "j.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(SCHEMA.replace(",\n    waits_for INTEGER", "").split("CREATE INDEX")[0])
    db.execute("INSERT INTO jobs (folder, path, rel, size, mtime_ns, sha256, state, created_at,"
               " updated_at) VALUES ('f', x'2f612e6a7067', x'612e6a7067', 1, 1, 'h', 'queued',"
               " 0, 0)")
    db.commit()
    db.close()
    assert SqliteJournal(path, readonly=True).jobs()[0].waits_for is None
    j = SqliteJournal(path)
    assert [job.path for job in j.next_ready(now=1e12)] == [Path("/a.jpg")]


def test_arriving_jobs_wait_for_their_time_and_yield_to_a_new_version(open_store):
    """An arriving job is not taken before ``until``, is taken after it, counts as
    unfinished, keeps its attempts; a new version of the file supersedes it."""
    j = open_store()
    job = j.start(j.claim(j.enqueue("f", Path("/in/a.jpg"), "a.jpg", 10, 1, "h1")), {}, "k")
    waiting = j.arriving(job, until=1000.0, kind="file_incomplete", reason="no end")
    assert waiting.state is JobState.ARRIVING and waiting.attempts == 0
    assert (waiting.error_kind, waiting.reason) == ("file_incomplete", "no end")
    assert j.next_ready(999.0) == [] and j.next_wakeup() == 1000.0
    assert [x.id for x in j.next_ready(1000.0)] == [job.id]
    assert j.unfinished() == 1 and j.is_known("f", Path("/in/a.jpg"), 10, 1)
    newer = j.enqueue("f", Path("/in/a.jpg"), "a.jpg", 20, 2, "h2")
    assert j.get(job.id).state is JobState.SUPERSEDED and newer.state is JobState.QUEUED


def test_a_job_found_stale_while_checked_is_superseded_not_arriving(open_store):
    """If a newer version was journaled while a worker checked the old one, the old one is
    superseded instead of waiting."""
    j = open_store()
    old = j.claim(j.enqueue("f", Path("/in/a.jpg"), "a.jpg", 10, 1, "h1"))
    j.enqueue("f", Path("/in/a.jpg"), "a.jpg", 20, 2, "h2")  # a running job is not touched
    assert j.get(old.id).state is JobState.RUNNING
    result = j.arriving(old, until=5.0, kind="file_incomplete", reason="no end")
    assert result.state is JobState.SUPERSEDED


def test_an_unanswered_submission_survives_a_restart_until_answered(open_store):
    """What identifies a submission sent without an answer is kept across a restart; an
    answer (a request id, or a refusal) clears it; giving up on it counts one submission
    that may have been paid twice."""
    j = open_store()
    job = j.claim(j.enqueue("f", Path("/in/a.jpg"), "a.jpg", 10, 1, "h"))
    other = j.claim(j.enqueue("f", Path("/in/b.jpg"), "b.jpg", 10, 1, "h2"))
    assert j.unanswered_submit(job) is None
    j.submit_sending(job, "sha256:abc", 1000.5)
    j.submit_sending(other, "https://cdn/x.png", 1001.0)
    j.close()
    j = open_store()
    j.recover()
    assert j.unanswered_submit(job) == ("sha256:abc", 1000.5)
    j.submitted(job, "req-1")
    assert j.unanswered_submit(job) is None and j.get(job.id).request_id == "req-1"
    j.submit_refused(other)
    assert j.unanswered_submit(other) is None
    assert j.paid_twice() == 0
    j.submit_sending(other, "https://cdn/x.png", 1002.0)
    j.submit_given_up(other)
    j.submit_sending(other, "https://cdn/x.png", 1003.0)
    j.submit_given_up(other)
    assert j.unanswered_submit(other) is None and j.paid_twice() == 2


def test_a_batch_is_journaled_as_each_file_alone_would_be(open_store):
    """``enqueue_many`` skips a version journaled already, supersedes a path's older queued
    version and queues the new files, all in one call; the jobs come back in path order."""
    from crystal_watchd.journal.arrivals import Arrival

    j = open_store()
    old_a = j.enqueue("f", Path("/in/a.jpg"), "a.jpg", 10, 1, "a1")
    known_b = j.enqueue("f", Path("/in/b.jpg"), "b.jpg", 10, 1, "b1")
    jobs = j.enqueue_many("f", [Arrival(Path("/in/c.jpg"), "c.jpg", 30, 3, "c1"),
                                Arrival(Path("/in/b.jpg"), "b.jpg", 10, 1, "b1"),
                                Arrival(Path("/in/a.jpg"), "a.jpg", 11, 2, "a2")])
    assert [(job.rel, job.size, job.sha256, job.state) for job in jobs] == [
        ("a.jpg", 11, "a2", JobState.QUEUED), ("c.jpg", 30, "c1", JobState.QUEUED)]
    assert j.get(old_a.id).state is JobState.SUPERSEDED
    assert j.get(known_b.id).state is JobState.QUEUED
    assert len(j.jobs(state=JobState.QUEUED)) == 3
    assert j.enqueue_many("f", []) == []


def test_known_among_names_only_journaled_versions(open_store):
    """``known_among`` answers for many files at once which versions are journaled: a
    superseded version, another size or mtime, another folder and an unseen path are not."""
    j = open_store()
    j.enqueue("f", Path("/in/a.jpg"), "a.jpg", 10, 1, "a1")
    j.enqueue("f", Path("/in/a.jpg"), "a.jpg", 11, 2, "a2")  # supersedes (10, 1)
    j.enqueue("f", Path("/in/b.jpg"), "b.jpg", 5, 5, "b")
    j.enqueue("g", Path("/in/c.jpg"), "c.jpg", 7, 7, "c")
    asked = [(Path("/in/a.jpg"), 10, 1), (Path("/in/a.jpg"), 11, 2), (Path("/in/b.jpg"), 5, 6),
             (Path("/in/b.jpg"), 5, 5), (Path("/in/c.jpg"), 7, 7), (Path("/in/d.jpg"), 1, 1)]
    assert j.known_among("f", asked) == {("/in/a.jpg", 11, 2), ("/in/b.jpg", 5, 5)}
    many = [(Path(f"/in/x{i}.jpg"), 1, 1) for i in range(1200)]
    assert j.known_among("f", many) == set()


def test_a_big_batch_costs_one_hop_on_sqlite_and_one_round_trip_on_postgresql(open_store):
    """1,200 files: the embedded journal takes them in one hop to its thread; PostgreSQL in
    one transaction of one statement per file, all sent at once (one round trip)."""
    from crystal_watchd.journal.arrivals import Arrival

    j = open_store()
    before = j.store.round_trips
    jobs = j.enqueue_many("f", [Arrival(Path(f"/in/{i:04d}.jpg"), f"{i:04d}.jpg", 1, 1, str(i))
                                for i in range(1200)])
    assert len(jobs) == 1200 and [job.rel for job in jobs] == [f"{i:04d}.jpg"
                                                                for i in range(1200)]
    assert j.store.round_trips - before == 1


def test_superseding_reads_only_the_rows_of_the_path(tmp_path):
    """SQLite looks a path's unfinished versions up by folder, path and state, not through
    every queued job of the folder (which made a big drop cost time squared)."""
    from crystal_watchd.journal.arrivals import SUPERSEDE

    j = SqliteJournal(tmp_path / "j.sqlite3")
    try:
        plan = " ".join(r[3] for r in j.store.db.execute("EXPLAIN QUERY PLAN " + SUPERSEDE,
                                                         [1] * SUPERSEDE.count("?")))
    finally:
        j.close()
    assert "jobs_path_state (folder=? AND path=? AND state=?)" in plan
