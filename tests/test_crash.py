"""SIGKILL at the moments that matter, then a restart: every file ends with exactly one
output, no partial file is ever visible, and fal bills each file once, also when fal had
accepted a request whose answer the journal never saw: the restart finds it in fal's request
list and adopts it instead of paying again.

Every kill point is a state, not a guess at timing: the fake fal holds submissions (before
or after accepting them) or the result downloads, and "writing" holds the daemon inside the
write of its output files (each temp file is a pipe the test does not drain), and the test
kills while it is held. The final wait reads the journal rather than log lines, which a kill
may cut off. ``bench/soak.py`` kills at random moments over many trials.

``Completer.resume`` (a kill after the output was written, before the job was
marked done) is tested on its own below, from that state set up in the journal."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import random
import signal
import sqlite3
import termios
from pathlib import Path

import pytest
from conftest import fal_env, hidden_files, images_in, make_image, wait_for, write_config
from PIL import Image

from crystal_watchd import config as config_module
from crystal_watchd.backends.base import Slots
from crystal_watchd.backends.local import LocalBackend
from crystal_watchd.daemon.worker import JobCallbacks, Worker
from crystal_watchd.jobs import JobState
from crystal_watchd.journal import SqliteJournal

PHASES = ["queued", "submit_unanswered", "waiting_at_fal", "downloading", "writing"]
NAMES = ["c0_x2.webp", "c1_x2.webp", "c2_x2.webp"]


def _noise_png(path: Path, size: tuple[int, int], seed: int) -> None:
    """A PNG of random pixels: its WebP output is far larger than a pipe's 4 KiB."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3)).save(path)


class HeldWrites:
    """The output temp files of jobs 1–3 (``.crystal-watchd-{id}-0.tmp``, output.temp_path's
    naming) made pipes of 4 KiB, opened for reading and never read: the daemon's write of
    each output blocks once 4 KiB are in, so it is held inside writing. ``leave_on_disk``
    then turns each pipe into the regular file of the bytes written so far, which is what
    a kill in the middle of a write leaves behind."""

    def __init__(self, outbox: Path, ids=(1, 2, 3)):
        outbox.mkdir(parents=True, exist_ok=True)
        self.pipes: dict[Path, int] = {}
        for job_id in ids:
            path = outbox / f".crystal-watchd-{job_id}-0.tmp"
            os.mkfifo(path)
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, 4096)
            self.pipes[path] = fd

    def full(self) -> int:
        """How many of the pipes are full (their writer blocked)."""
        count = 0
        for fd in self.pipes.values():
            waiting = bytearray(4)
            fcntl.ioctl(fd, termios.FIONREAD, waiting)
            if int.from_bytes(waiting, "little") >= fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ):
                count += 1
        return count

    def leave_on_disk(self) -> None:
        for path, fd in self.pipes.items():
            try:
                written = os.read(fd, 1 << 20)
            except BlockingIOError:
                written = b""
            os.close(fd)
            path.unlink()
            path.write_bytes(written)


def _states(tmp_path) -> list[str]:
    db = sqlite3.connect(tmp_path / "state" / "journal.sqlite3", timeout=10)
    try:
        return [r[0] for r in db.execute("SELECT state FROM jobs ORDER BY id")]
    finally:
        db.close()


@pytest.mark.parametrize("phase", PHASES)
def test_sigkill_then_restart_loses_nothing_and_pays_once(phase, tmp_path, fakefal, fal_daemons,
                                                          tls_files):
    """Kill the daemon in ``phase``; after a restart each file has one output, nothing is
    half-written, and each file is submitted and billed once (the fake's ledger): a request
    accepted whose answer the kill cut off is adopted from fal's request list."""
    server = fakefal(latency=0.6, runners=4)
    config = write_config(tmp_path, [{"inbox": "in", "outbox": "out", "settle": 0.2,
                                      "output_format": "webp"}], backend="fal", concurrency=3,
                          fal={"timeout": 10},
                          pixels={"workers": 3})  # three encodes at once, to hold all three
    size = (240, 160) if phase == "writing" else (30, 20)
    for i in range(3):
        if phase == "writing":
            _noise_png(tmp_path / f"in/c{i}.png", size, seed=i)
        else:
            make_image(tmp_path / f"in/c{i}.png", size, color=f"#{i}0{i}0{i}0", fmt="PNG")
    held_writes = HeldWrites(tmp_path / "out") if phase == "writing" else None
    if phase == "downloading":
        server.strict.downloads.hold()
    if phase == "queued":
        server.hold_submits("before")  # nothing reaches fal
    elif phase == "submit_unanswered":
        server.hold_submits("after")  # fal accepts, the daemon never hears back
    elif phase == "waiting_at_fal":
        server.hold_submits("before", skip=2)  # two at fal, the third not yet
    d = fal_daemons(config, fal_env(server, tls_files)).ready()
    if phase in ("queued", "submit_unanswered"):
        wait_for(lambda: server.held >= 1, 20, "a held submission")
    elif phase == "waiting_at_fal":
        d.wait_event("fal_request_submitted", 2)
        wait_for(lambda: server.held == 1, 20, "the third submission held")
    elif phase == "downloading":
        wait_for(lambda: server.strict.downloads.held == 3, 20, "three downloads held")
    else:
        assert held_writes is not None
        wait_for(lambda: held_writes.full() == 3, 30, f"three output writes held\n{d.text()}")
    os.kill(d.proc.pid, signal.SIGKILL)
    d.proc.wait()
    server.strict.downloads.release()
    if held_writes is not None:
        held_writes.leave_on_disk()
        assert _states(tmp_path) == ["running"] * 3  # none got past writing
    # Submit calls the dead daemon had under way all reach the gate (or end) first.
    wait_for(lambda: server.in_submit == server.held, 20, "submit calls to settle")
    # Requests fal accepted whose id the journal never saw: the restart must adopt them.
    orphans = len(server.submissions) if phase == "submit_unanswered" else 0
    server.release_submits(drop=True)
    images_in(tmp_path / "out")  # whatever is visible already decodes in full

    d2 = fal_daemons(config, fal_env(server, tls_files)).ready()
    wait_for(lambda: _states(tmp_path) == ["done"] * 3, 40, f"three jobs done\n{d2.text()}")
    out = images_in(tmp_path / "out")
    assert sorted(out) == NAMES
    assert set(out.values()) == {(size[0] * 2, size[1] * 2)}
    assert hidden_files(tmp_path / "out") == []
    assert len(server.submissions) == 3
    submitted: dict[str, int] = {}
    for s in server.submissions:
        submitted[s["input_sha256"]] = submitted.get(s["input_sha256"], 0) + 1
    assert sorted(submitted.values()) == [1, 1, 1]
    assert sorted(server.billed_per_input().values()) == [1, 1, 1]
    if phase == "submit_unanswered":
        assert orphans >= 1
        assert len(d2.named("fal_request_recovered")) == orphans
    if phase in ("downloading", "writing"):
        # Killed after fal's runs: the restart resumes the same requests and downloads again.
        assert len(d2.named("fal_request_resumed")) == 3
    assert d2.stop() == 0


class _NoUpscaler(LocalBackend):
    async def upscale(self, request):
        raise AssertionError("a resumed completion must not upscale again")


def _resume_setup(tmp_path: Path, originals: str = "move"):
    """A journal holding the state a kill leaves after the output's temp file was written
    and its final name journaled, before the rename and before the job was marked done."""
    inbox, outbox, state = tmp_path / "in", tmp_path / "out", tmp_path / "state"
    for d in (inbox, outbox, state):
        d.mkdir()
    source = make_image(inbox / "a.png", (8, 8), fmt="PNG")
    cfg = config_module.parse(json.dumps({
        "backend": "local", "state_dir": str(state),
        "folders": [{"name": "in", "inbox": str(inbox), "outbox": str(outbox),
                     "originals": originals}]}), tmp_path / "c.yaml")
    journal = SqliteJournal(state / "journal.sqlite3")
    st = source.stat()
    job = journal.enqueue("in", source, "a.png", st.st_size, st.st_mtime_ns,
                          hashlib.sha256(source.read_bytes()).hexdigest())
    job = journal.submitted(journal.claim(job), "req-a")
    tmp, final = outbox / f".crystal-watchd-{job.id}-0.tmp", outbox / "a_x2.png"
    make_image(tmp, (16, 16), fmt="PNG")
    job = journal.output_pending(job, [[str(tmp), str(final), str(final)]])
    # The worker runs as in the daemon, on the event loop with the journal's own store.
    worker = Worker(cfg, journal.store, _NoUpscaler(Slots(1)),
                    JobCallbacks(lambda *a: None, lambda e: None))
    return journal, worker, job, tmp, final


def test_resume_completion_places_the_written_output_and_finishes(tmp_path):
    """After a kill between writing the output and marking the job done, the restart's
    worker renames the journaled temp file into place, moves the original to done_dir and
    marks the job done, without upscaling again."""
    journal, worker, job, tmp, final = _resume_setup(tmp_path)
    requeued = journal.requeue(job)  # what recover() does with a running job at start
    assert journal.run(worker.process(journal.claim(requeued))) == JobState.DONE
    assert not tmp.exists() and images_in(tmp_path / "out") == {"a_x2.png": (16, 16)}
    done = journal.get(job.id)
    assert done.outputs == [str(final)] and done.pending == [] and done.request_id == "req-a"
    assert (tmp_path / "in/done/a.png").exists() and not (tmp_path / "in/a.png").exists()
    journal.close()


def test_resume_completion_after_the_rename_only_finishes(tmp_path):
    """Killed after the rename but before the journal recorded it: the final file is the
    output (no second copy, no ``-1`` name) and the job is done."""
    journal, worker, job, tmp, final = _resume_setup(tmp_path, originals="keep")
    os.rename(tmp, final)
    assert journal.run(worker.process(journal.claim(journal.requeue(job)))) == JobState.DONE
    assert images_in(tmp_path / "out") == {"a_x2.png": (16, 16)}
    assert journal.get(job.id).outputs == [str(final)]
    assert (tmp_path / "in/a.png").exists()  # originals: keep
    journal.close()


def test_resume_completion_with_the_output_lost_processes_again(tmp_path):
    """Temp file and final name both gone (someone cleaned the outbox): the job goes back to
    the queue with its pending output forgotten and its request kept, to fetch the result
    again rather than pay for it twice."""
    journal, worker, job, tmp, final = _resume_setup(tmp_path)
    tmp.unlink()
    assert journal.run(worker.process(journal.claim(journal.requeue(job)))) == JobState.QUEUED
    again = journal.get(job.id)
    assert again.pending == [] and again.outputs == [] and again.request_id == "req-a"
    assert again.error_kind == "internal" and images_in(tmp_path / "out") == {}
    journal.close()
