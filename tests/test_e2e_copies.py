"""Copies of one picture arriving together are paid for once: the real daemon, the real
fal_client and the fake fal. The fake holds the first submission until every copy is
journaled, so the copies are certainly in flight together, whatever the machine's load."""

from __future__ import annotations

import json
import os
import signal
import sqlite3

from conftest import fal_env, images_in, make_image, wait_for, write_config

COPIES_A = ["photo.jpg", "photo (1).jpg", "photo.sync-conflict-20261124-101010-ABCDEFG.jpg",
            "photo copy.jpg", "photo copy 2.jpg", "photo - Copy.jpg"]
COPIES_B = ["photo.jpg", "IMG_0001.jpg"]


def _config(tmp_path, **top):
    top.setdefault("retry", {"attempts": 4, "backoff": 0.2, "max_backoff": 1})
    folders = [{"name": "a", "inbox": "in/a", "outbox": "out/a", "settle": 0.2},
               {"name": "b", "inbox": "in/b", "outbox": "out/b", "settle": 0.2,
                "filename": "{folder}-{stem}.{ext}"}]
    return write_config(tmp_path, folders, backend="fal", concurrency=4, **top)


def _drop_copies(tmp_path, names_a, names_b) -> bytes:
    picture = make_image(tmp_path / "picture.jpg", (36, 24), color="#3070a0").read_bytes()
    for folder, names in (("a", names_a), ("b", names_b)):
        (tmp_path / "in" / folder).mkdir(parents=True, exist_ok=True)
        for name in names:
            tmp = tmp_path / "in" / folder / f".part-{name}"
            tmp.write_bytes(picture)
            os.replace(tmp, tmp.with_name(name))
    return picture


def _jobs(tmp_path) -> list[dict]:
    db = sqlite3.connect(tmp_path / "state" / "journal.sqlite3")
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT id, folder, state, waits_for FROM jobs")]
    finally:
        db.close()


def test_eight_copies_in_two_folders_make_eight_outputs_from_one_billed_run(
        tmp_path, fakefal, fal_daemons, tls_files):
    """Six identical files in one folder and two in another with the same settings, all in
    flight together: eight outputs (each folder's own names), one submission, one billed
    run, and every copy's job_deduplicated names the job that was paid for."""
    server = fakefal(latency=0.3, runners=8)
    server.hold_submits("before")
    d = fal_daemons(_config(tmp_path), fal_env(server, tls_files)).ready()
    _drop_copies(tmp_path, COPIES_A, COPIES_B)
    waiting = d.wait_event("job_waiting_for_twin", 7)
    wait_for(lambda: server.held == 1, 10, "the first submission to be held")
    server.release_submits()
    done = d.wait_event("job_done", 8)
    d.wait_event("job_deduplicated", 7)

    out_a, out_b = images_in(tmp_path / "out/a"), images_in(tmp_path / "out/b")
    assert sorted(out_a) == sorted(n.replace(".jpg", "_x2.jpg") for n in COPIES_A)
    assert sorted(out_b) == sorted(f"b-{n}" for n in COPIES_B)
    assert set(out_a.values()) | set(out_b.values()) == {(72, 48)}
    contents = {p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    assert len(contents) == 1
    assert len(server.submissions) == 1
    assert list(server.billed_per_input().values()) == [1]
    paid = [e["job_id"] for e in d.named("fal_request_submitted")]
    assert len(paid) == 1
    assert {e["same_as_job"] for e in waiting} == set(paid)
    copies = d.named("job_deduplicated")
    assert {e["same_as_job"] for e in copies} == set(paid)
    assert {e["job_id"] for e in copies} | set(paid) == {e["job_id"] for e in done}
    costs = [e["cost_usd"] for e in done]
    assert sorted(costs)[:-1] == [0.0] * 7 and costs.count(0.0) == 7
    assert d.stop() == 0


def test_copies_keep_waiting_across_a_restart(tmp_path, fakefal, fal_daemons, tls_files):
    """SIGKILL while copies wait for the job in flight: the waiting is in the journal, so
    after the restart the copies are not even started until that job is done, and the
    picture is still paid for once."""
    server = fakefal(latency=0.3, runners=4)
    server.hold_submits("before")  # fal never sees the first daemon's submission
    # The restart cannot know fal never took it: it looks for it for fal.timeout first.
    config = _config(tmp_path, fal={"timeout": 10})
    d = fal_daemons(config, fal_env(server, tls_files)).ready()
    _drop_copies(tmp_path, COPIES_A[:3], COPIES_B[:1])
    d.wait_event("job_waiting_for_twin", 3)
    wait_for(lambda: server.held == 1, 10, "the first submission to be held")
    os.kill(d.proc.pid, signal.SIGKILL)
    d.proc.wait()
    wait_for(lambda: server.in_submit == server.held, 20, "submit calls to settle")
    rows = _jobs(tmp_path)
    leader = [r["id"] for r in rows if r["waits_for"] is None]
    assert len(leader) == 1
    assert sorted(r["waits_for"] for r in rows if r["waits_for"] is not None) == leader * 3
    server.release_submits(drop=True)  # that client is gone: fal never accepts its request

    d2 = fal_daemons(config, fal_env(server, tls_files)).ready()
    d2.wait_event("job_done", 4, timeout=60)
    events = d2.events()
    leader_done = next(i for i, e in enumerate(events)
                       if e.get("event") == "job_done" and e.get("job_id") == leader[0])
    for i, e in enumerate(events):
        if e.get("event") in ("job_started", "job_waiting_for_twin") \
                and e.get("job_id") != leader[0]:
            assert i > leader_done, f"a copy started before the job it waits for: {e}"
    assert len(images_in(tmp_path / "out/a")) == 3 and len(images_in(tmp_path / "out/b")) == 1
    assert len(server.submissions) == 1
    assert list(server.billed_per_input().values()) == [1]
    assert d2.stop() == 0


def test_when_the_first_copy_fails_the_next_one_is_tried_on_its_own(tmp_path, fakefal,
                                                                      fal_daemons, tls_files):
    """The job the copies wait for fails for good (fal rejects that run): the next copy is
    submitted on its own, the last one copies its output, and only the failed file ends in
    failed_dir."""
    server = fakefal(latency=0.2, runners=4)
    server.faults.reject_runs = 1
    server.hold_submits("before")
    d = fal_daemons(_config(tmp_path), fal_env(server, tls_files)).ready()
    _drop_copies(tmp_path, COPIES_A[:3], [])
    d.wait_event("job_waiting_for_twin", 2)
    wait_for(lambda: server.held == 1, 10, "the first submission to be held")
    server.release_submits()
    failed = d.wait_event("job_failed")
    d.wait_event("job_done", 2)
    d.wait_event("job_deduplicated", 1)

    submitted = [e["job_id"] for e in d.named("fal_request_submitted")]
    assert len(submitted) == 2 and submitted[0] == failed[0]["job_id"]
    assert d.named("job_deduplicated")[0]["same_as_job"] == submitted[1]
    assert len(images_in(tmp_path / "out/a")) == 2
    reports = list((tmp_path / "in/a/failed").glob("*.error.json"))
    assert len(reports) == 1 and json.loads(reports[0].read_text())["error"] == "rejected"
    assert list(server.billed_per_input().values()) == [1]
    assert d.stop() == 0
