"""The hooks outbox against both stores (SQLite and PostgreSQL): deliveries are written in
the same transaction as the job change they report, claimed once, retried, given up and
retried again by hand with the same delivery id."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from test_journal import open_store  # noqa: F401 - the fixture, for both stores

from crystal_watchd.config import load
from crystal_watchd.config.automation import HookConfig
from crystal_watchd.journal import LeaseLost, SqliteJournal, journal_file
from crystal_watchd.journal.transfer import export_file, import_jobs, read_export

HOOKS = (HookConfig(name="all", on=("done", "failed")),
         HookConfig(name="clients-done", on=("done",), folders=("clients",)))


def _finished_job(j, folder: str, name: str, *, fail: bool = False):
    job = j.claim(j.enqueue(folder, Path(f"/in/{name}"), name, 10, 1, name))
    if fail:
        return j.failed(job, kind="corrupt_image", reason="broken")
    job = j.output_written(job, [f"/out/{name}"], megapixels=1.0, cost_usd=0.016)
    return j.done(job)


def test_a_finished_job_gets_one_delivery_per_matching_hook(open_store):  # noqa: F811
    """done in 'clients' → both hooks; failed in 'other' → only the hook for every folder;
    the stored body carries the job's fields and its own delivery id."""
    j = open_store()
    j.hooks = HOOKS
    done = _finished_job(j, "clients", "a.jpg")
    _finished_job(j, "other", "b.jpg", fail=True)
    claimed = j.claim_deliveries(time.time(), hold=30, limit=10)
    assert sorted((d.hook, d.event, d.job_id == done.id) for d in claimed) == [
        ("all", "done", True), ("all", "failed", False), ("clients-done", "done", True)]
    body = next(d for d in claimed if d.hook == "clients-done").fields
    assert body["outputs"] == ["/out/a.jpg"] and body["cost_usd"] == pytest.approx(0.016)
    assert body["input"] == "/in/a.jpg" and body["folder"] == "clients"
    assert all(d.fields["delivery_id"] == d.delivery_id for d in claimed)
    assert j.claim_deliveries(time.time(), hold=30) == []  # held: nobody takes them twice
    assert j.delivery_counts() == {"pending": 3, "delivered": 0, "gave_up": 0}


def test_no_delivery_without_the_job_change(open_store):  # noqa: F811
    """A change that does not commit (the job was taken over by another daemon) writes no
    delivery: the two share one transaction."""
    j = open_store()
    j.hooks = HOOKS
    job = j.claim(j.enqueue("clients", Path("/in/a.jpg"), "a.jpg", 10, 1, "h"))
    if not j.shared:
        pytest.skip("only a shared journal has other owners")
    j.register_daemon("me", host="h", pid=1, state_dir="/s", folders={})
    j._exec("UPDATE jobs SET owner='someone-else' WHERE id=?", (job.id,))
    with pytest.raises(LeaseLost):
        j.done(job)
    assert j.delivery_counts() == {"pending": 0, "delivered": 0, "gave_up": 0}


def test_failed_attempts_retry_then_give_up_and_retry_by_hand_keeps_the_id(open_store):  # noqa: F811
    """A failed attempt comes back after its delay; giving up stops it; retry_deliveries
    makes it due again with the same delivery id and body; a delivered one stays done."""
    j = open_store()
    j.hooks = HOOKS[:1]
    _finished_job(j, "f", "a.jpg")
    _finished_job(j, "f", "b.jpg")
    first, second = j.claim_deliveries(time.time(), hold=30)
    j.delivery_done(second)
    j.delivery_failed(first, "HTTP 503", retry_in=0.2)
    assert j.claim_deliveries(time.time(), hold=30) == []
    time.sleep(0.3)
    (again,) = j.claim_deliveries(time.time(), hold=30)
    assert (again.delivery_id, again.attempts) == (first.delivery_id, 2)
    j.delivery_failed(again, "HTTP 503", retry_in=None)
    assert j.claim_deliveries(time.time() + 3600, hold=30) == []
    assert [d.delivery_id for d in j.given_up()] == [first.delivery_id]
    assert j.delivery_counts() == {"pending": 0, "delivered": 1, "gave_up": 1}
    assert j.retry_deliveries() == 1
    (third,) = j.claim_deliveries(time.time(), hold=30)
    assert third.delivery_id == first.delivery_id and third.attempts == 1
    assert json.loads(third.payload) == json.loads(first.payload)


def test_a_daemon_claims_only_its_own_hooks_and_orphans_give_up(open_store):  # noqa: F811
    """Daemons sharing a journal may have different hooks: each claims only deliveries of
    hooks it has; deliveries of a hook no longer configured give up with that reason."""
    j = open_store()
    j.hooks = HOOKS
    _finished_job(j, "clients", "a.jpg")
    now = time.time()
    assert j.claim_deliveries(now, hold=30, hooks=[]) == []
    assert j.next_delivery_at(["nobody"]) is None
    (mine,) = j.claim_deliveries(now, hold=30, hooks=["clients-done"])
    assert mine.hook == "clients-done"
    assert j.orphan_deliveries(["clients-done"]) == 1
    (orphan,) = j.given_up()
    assert orphan.hook == "all" and "no hook of this name" in orphan.last_error


def test_undelivered_deliveries_move_with_their_jobs_on_export(open_store, tmp_path):  # noqa: F811
    """`journal export` of a SQLite journal, imported into the store under test: the pending
    and given-up deliveries come along attached to their job's new id, with their delivery
    ids and exact bodies (so a receiver still drops repeats); delivered ones stay behind;
    importing twice adds none."""
    state = tmp_path / "state"
    (tmp_path / "in").mkdir()
    config_file = tmp_path / "c.yaml"
    config_file.write_text(f"state_dir: {state}\nfolders:\n  - inbox: {tmp_path / 'in'}\n"
                           f"    outbox: {tmp_path / 'out'}\n")
    source = SqliteJournal(journal_file(load(config_file)))
    source.hooks = (HookConfig(name="all", on=("done", "failed")),)
    for name in ("z-unrelated.jpg", "a.jpg", "b.jpg", "c.jpg"):  # ids differ between stores
        _finished_job(source, "clients", name, fail=name == "b.jpg")
    pending, gave_up, delivered = [
        d for d in sorted(source.claim_deliveries(time.time(), hold=0, limit=10),
                          key=lambda d: d.job_id)][1:]
    source.delivery_failed(gave_up, "receiver down", retry_in=None)
    source.delivery_done(delivered)
    source.close()
    export = tmp_path / "journal.jsonl"
    export_file(load(config_file), export)

    target = open_store()
    target.enqueue("elsewhere", Path("/in/x.jpg"), "x.jpg", 1, 1, "x")  # shifts the ids
    jobs, deliveries = read_export(export)
    assert len(deliveries) == 3  # z-unrelated's is pending too; c's was delivered
    assert import_jobs(target, jobs, deliveries) == (4, 0)
    assert import_jobs(target, jobs, deliveries) == (0, 4)
    assert target.delivery_counts() == {"pending": 2, "delivered": 0, "gave_up": 1}
    moved = {d.delivery_id: d for d in target.claim_deliveries(time.time() + 3600, hold=0,
                                                                limit=10)}
    assert pending.delivery_id in moved and gave_up.delivery_id not in moved
    ids = {job.rel: job.id for job in target.jobs()}
    assert ids["a.jpg"] != pending.job_id  # a new id there, and the delivery follows it
    assert moved[pending.delivery_id].job_id == ids["a.jpg"]
    assert moved[pending.delivery_id].payload == pending.payload
