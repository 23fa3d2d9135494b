"""What only a shared (PostgreSQL) journal does: leases and take-over, claims from several
daemons at once, limits that hold across daemons, schema versions, and connection errors."""

from __future__ import annotations

import socket
import sqlite3
import threading
import time
from pathlib import Path

import psycopg
import pytest
from conftest import wait_for

from crystal_watchd import logs
from crystal_watchd.jobs import JobState
from crystal_watchd.journal import SqliteJournal, postgres
from crystal_watchd.journal import sqlite as sqlite_store
from crystal_watchd.journal.postgres import JournalUnavailable, PostgresJournal


def _daemon(url: str, name: str, lease: float = 60.0) -> PostgresJournal:
    j = PostgresJournal(url, lease=lease)
    j.register_daemon(name, host="host-" + name, pid=1, state_dir="/s/" + name, folders={})
    return j


def test_a_dead_daemons_job_is_taken_over_with_its_request_id(pg_url):
    """A job whose owner stops renewing its lease is claimed by another daemon, request id
    and all; while the owner's heartbeat renews the lease nobody else can take it, even for
    longer than one lease."""
    # The lease is several heartbeat intervals long, so a stall of the loaded test machine
    # between two heartbeats does not end it; the live phase outlasts one lease.
    lease, beat = 1.5, 0.2
    a, b = _daemon(pg_url, "a", lease=lease), _daemon(pg_url, "b", lease=lease)
    job = a.enqueue("f", Path("/in/x.jpg"), "x.jpg", 1, 1, "x")
    [claimed] = a.claim_ready(time.time(), limit=5)
    a.submitted(claimed, "req-x")
    alive_until = time.monotonic() + 1.5 * lease
    while time.monotonic() < alive_until:  # a is alive: its heartbeat keeps the job
        time.sleep(beat)
        last_beat = time.monotonic()  # before the renewal: the lease ends no sooner
        assert a.heartbeat() == 1
        assert b.claim_ready(time.time(), limit=5) == []
    # a died: no heartbeat; b gets the job once the lease has run out, not before.
    [taken] = wait_for(lambda: b.claim_ready(time.time(), limit=5), timeout=30,
                       what="the dead daemon's job to be taken over")
    assert time.monotonic() - last_beat >= lease - 0.05
    assert taken.id == job.id and taken.request_id == "req-x" and taken.submissions == 1
    assert [d.working_on for d in b.daemons() if d.id == "b"] == [[(job.id, "x.jpg")]]
    a.close()
    b.close()


def test_a_daemon_that_lost_its_lease_cannot_touch_the_job_any_more(pg_url):
    """Once another daemon took a job over, every change the old owner tries (output,
    requeue, done, a new request id) is refused with LeaseLost and changes nothing."""
    from crystal_watchd.journal import LeaseLost

    a, b = _daemon(pg_url, "a", lease=0.3), _daemon(pg_url, "b", lease=0.3)
    a.enqueue("f", Path("/in/x.jpg"), "x.jpg", 1, 1, "x")
    [old] = a.claim_ready(time.time())
    old = a.submitted(old, "req-x")
    time.sleep(0.4)
    [taken] = b.claim_ready(time.time())
    for change in (lambda: a.output_pending(old, [["/o/.t", "/o/x", "/o/x"]]),
                   lambda: a.requeue(old), lambda: a.done(old),
                   lambda: a.submitted(old, "req-again")):
        with pytest.raises(LeaseLost):
            change()
    now = b.get(taken.id)
    assert now.state is JobState.RUNNING and now.pending == [] and now.request_id == "req-x"
    assert now.submissions == 1
    b.output_pending(now, [["/o/.t", "/o/x", "/o/x"]])  # the new owner may
    a.close()
    b.close()


def test_a_restart_on_the_same_host_and_state_dir_takes_its_jobs_back_at_once(pg_url):
    """A daemon restarted with the same state_dir (the lock there proves the old one gone)
    gets its earlier run's jobs back without waiting for their leases; another host's jobs
    keep waiting."""
    old = PostgresJournal(pg_url, lease=60)
    old.register_daemon("old", host="nas1", pid=1, state_dir="/s/a", folders={})
    other = PostgresJournal(pg_url, lease=60)
    other.register_daemon("other", host="nas2", pid=1, state_dir="/s/a", folders={})
    mine = old.submitted(old.claim(old.enqueue("f", Path("/in/a"), "a", 1, 1, "a")), "req-a")
    theirs = other.claim(other.enqueue("f", Path("/in/b"), "b", 1, 1, "b"))
    old.close()
    new = PostgresJournal(pg_url, lease=60)
    new.register_daemon("new", host="nas1", pid=2, state_dir="/s/a", folders={})
    assert new.recover() == 1
    assert new.get(mine.id).state is JobState.QUEUED and new.get(mine.id).request_id == "req-a"
    assert new.get(theirs.id).state is JobState.RUNNING
    assert sorted(d.id for d in new.daemons()) == ["new", "other"]
    new.close()
    other.close()


def test_daemons_claiming_at_once_never_share_a_job(pg_url):
    """Three daemons claiming in a loop from one queue: every job is claimed exactly once."""
    seed = _daemon(pg_url, "seed")
    for i in range(150):
        seed.enqueue("f", Path(f"/in/{i}.jpg"), f"{i}.jpg", 1, 1, str(i))
    claimed: dict[str, list[int]] = {}

    def work(name: str) -> None:
        j = _daemon(pg_url, name)
        mine = claimed.setdefault(name, [])
        while batch := j.claim_ready(time.time(), limit=7):
            mine.extend(x.id for x in batch)
        j.close()

    threads = [threading.Thread(target=work, args=(n,)) for n in ("a", "b", "c")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for ids in claimed.values() for i in ids]
    assert len(every) == 150 and len(set(every)) == 150
    assert sum(1 for ids in claimed.values() if ids) >= 2  # the work really was split
    seed.close()


def test_slots_and_budget_hold_across_daemons_racing(pg_url):
    """Many daemons asking for slots and budget at the same moment never get more than the
    limits allow in total."""
    seed = _daemon(pg_url, "seed")
    jobs = [seed.enqueue("f", Path(f"/in/{i}"), str(i), 1, 1, str(i)) for i in range(24)]
    since = time.time() - 5
    granted_slots: list[int] = []
    granted_budget: list[int] = []
    together = threading.Barrier(6)

    def ask(k: int) -> None:
        j = _daemon(pg_url, f"d{k}")
        together.wait()
        for job in jobs[k::6]:
            if j.acquire_slot(job.id, 5):
                granted_slots.append(job.id)
            if j.reserve_budget(job, 0.25, limit=2.0, since=since):
                granted_budget.append(job.id)
        j.close()

    threads = [threading.Thread(target=ask, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(granted_slots) == 5
    spare = next(job for job in jobs if job.id not in granted_slots)
    assert not seed.acquire_slot(spare.id, 5)  # all five are held, seen from another daemon
    assert len(granted_budget) == 8 and seed.committed_since(since) == pytest.approx(2.0)
    seed.close()


def test_schema_is_versioned_and_a_newer_one_is_refused(pg_url):
    """The schema version is recorded; opening again does not migrate twice; a database of
    a newer crystal-watchd is refused with a clear message."""
    PostgresJournal(pg_url).close()
    PostgresJournal(pg_url).close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_version")]
        assert versions == list(range(1, postgres.SCHEMA_VERSION + 1))
        conn.execute("INSERT INTO schema_version VALUES (99)")
    with pytest.raises(JournalUnavailable, match="cannot migrate.*newer"):
        PostgresJournal(pg_url)


def test_an_unreachable_journal_is_a_clear_error_without_the_password(monkeypatch):
    """A database nobody listens on gives JournalUnavailable naming the host, and neither
    the message nor the object shows the password."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr("crystal_watchd.journal.postgres.CONNECT_TIMEOUT", 2.0)
    url = f"postgresql://cw:s3cr3t-pass@127.0.0.1:{port}/cw"
    with pytest.raises(JournalUnavailable) as err:
        PostgresJournal(url)
    assert f"127.0.0.1:{port}" in str(err.value) and "s3cr3t-pass" not in str(err.value)
    assert "cw:***@" in str(err.value)
    assert "s3cr3t-pass" not in logs.scrub("connecting with s3cr3t-pass")


def test_password_file_is_used_and_never_shown(pg_cluster, tmp_path):
    """``journal_password_file`` is read, its password kept out of logs; a missing file is a
    clear error."""
    with psycopg.connect(pg_cluster.url, autocommit=True) as conn:
        conn.execute("CREATE ROLE cwpass LOGIN PASSWORD 'file-pass-123'")
        conn.execute("CREATE DATABASE cwpass OWNER cwpass")
    secret = tmp_path / "pw"
    secret.write_text("file-pass-123\n")
    url = pg_cluster.url.replace("postgres@", "cwpass@").rsplit("/", 1)[0] + "/cwpass"
    j = PostgresJournal(url, password_file=secret)
    assert "file-pass-123" not in logs.scrub("password is file-pass-123")
    assert "file-pass-123" not in repr(j.url)
    j.close()
    with pytest.raises(JournalUnavailable, match="cannot be read"):
        PostgresJournal(url, password_file=tmp_path / "missing")


def test_a_version_1_sqlite_journal_is_migrated_in_place(tmp_path):
    """A journal written by 0.1 (schema 1) gains the new columns at start, jobs intact."""
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    from crystal_watchd.journal.sqlite import SCHEMA

    db.executescript(SCHEMA)
    db.execute("INSERT INTO meta VALUES ('schema', '1')")
    db.execute("INSERT INTO jobs (folder, path, rel, size, mtime_ns, sha256, state, created_at, "
               "updated_at) VALUES ('f', ?, ?, 1, 1, 'h', 'queued', 1, 1)", (b"/in/a", b"a"))
    db.commit()
    db.close()
    j = SqliteJournal(path)
    [job] = j.jobs()
    assert job.state is JobState.QUEUED and j.acquire_slot(job.id, 1)
    assert j.db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0] \
        == sqlite_store.SCHEMA_VERSION
    j.close()


def test_slots_held_by_a_dead_daemon_go_to_whoever_takes_its_jobs_over(pg_url):
    """A dead daemon's jobs keep their slots (their requests may still be at fal), so a new
    job waits; the daemon that takes those jobs over, however busy, resumes them at once in
    the slots they hold, and when they finish the waiting job gets its turn."""
    import asyncio

    from crystal_watchd.daemon.shared import SharedSlots

    dead = _daemon(pg_url, "dead", lease=0.3)
    for name in ("x", "y", "z"):
        dead.enqueue("f", Path(f"/in/{name}"), name, 1, 1, name)
    x, y, z = dead.claim_ready(time.time(), limit=3)
    for job in (x, y):
        assert dead.acquire_slot(job.id, 2)
        dead.submitted(job, f"req-{job.rel}")
    dead.requeue(z)

    async def scenario() -> list[str]:
        # The daemon that takes over runs as the service does: on the event loop.
        # Only the dead daemon's lease is short; the living one's never runs out in this test.
        alive = await postgres.PostgresStore(pg_url, lease=60).open()
        await alive.register_daemon("alive", host="host-alive", pid=1, state_dir="/s/alive",
                                    folders={})
        slots = SharedSlots(alive, 2)
        [mine] = await alive.claim_ready(time.time())
        waiting = asyncio.create_task(slots.acquire(mine.id))
        await asyncio.sleep(0.3)
        assert not waiting.done()  # both slots are the dead daemon's
        await asyncio.sleep(0.2)  # its leases run out
        await alive.heartbeat()  # ours do not
        taken = await alive.take_over(limit=5)
        assert sorted(j.request_id for j in taken) == ["req-x", "req-y"]
        for job in taken:
            await asyncio.wait_for(slots.acquire(job.id), 10)  # held already: no wait
        assert not waiting.done()
        for job in taken:
            await slots.release(job.id)
        await asyncio.wait_for(waiting, 10)
        await alive.close()
        return [j.rel for j in taken]

    assert sorted(asyncio.run(scenario())) == ["x", "y"]
    # Exactly one slot is held now (the job that waited): one more is granted, then none.
    w, v = (dead.enqueue("f", Path(f"/in/{n}"), n, 1, 1, n) for n in "wv")
    assert dead.acquire_slot(w.id, 2) and not dead.acquire_slot(v.id, 2)
    dead.close()


def test_a_postgresql_journal_without_the_extra_is_a_config_error_naming_it(tmp_path):
    """PostgreSQL is an optional extra: with its driver missing, ``check`` and ``run`` on a
    config whose ``journal:`` names PostgreSQL exit 78 (a configuration error) and say which
    extra to install, without the password."""
    from conftest import cli, write_config

    hidden = tmp_path / "no-psycopg" / "psycopg"
    hidden.mkdir(parents=True)
    # What an install without the extra looks like to Python.
    (hidden / "__init__.py").write_text(
        "raise ImportError(\"No module named 'psycopg'\", name='psycopg')\n")
    config = write_config(tmp_path, [{"name": "f", "inbox": "in", "outbox": "out"}],
                          journal="postgresql://crystal:s3cret-pw@db.lan/crystal")
    for command in ("check", "run"):
        result = cli(command, "--config", str(config),
                     env={"PYTHONPATH": str(hidden.parent)}, timeout=60)
        assert result.returncode == 78, result.stderr
        assert "pip install 'crystal-watchd[postgres]'" in result.stderr
        assert str(config) in result.stderr and "s3cret-pw" not in result.stderr


def test_each_step_of_a_job_is_one_round_trip_on_postgresql(pg_url):
    """Against a database far away every round trip counts: journaling a file, claiming
    several jobs, a state change, a slot at fal, the look for a twin and a heartbeat renewing
    every lease of the daemon each take exactly one."""
    j = _daemon(pg_url, "far")
    store = j.store

    def trips(call):
        before = store.round_trips
        result = call()
        return store.round_trips - before, result

    for i in range(3):
        assert trips(lambda i=i: j.enqueue("f", Path(f"/in/{i}"), str(i), 1, 1, str(i)))[0] == 1
    count, claimed = trips(lambda: j.claim_ready(time.time(), limit=3))
    assert count == 1 and len(claimed) == 3
    assert trips(lambda: j.start(claimed[0], {"scale_factor": 2}, "k"))[0] == 1
    assert trips(lambda: j.wait_for_twin(claimed[0], "k")) == (1, None)
    assert trips(lambda: j.acquire_slot(claimed[0].id, 8)) == (1, True)
    assert trips(lambda: j.heartbeat({})) == (1, 3)
    j.close()
