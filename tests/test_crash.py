"""SIGKILL at the moments that matter, then a restart: every file ends with exactly one
output, no partial file is ever visible, and fal bills each file once, also when fal had
accepted a request whose answer the journal never saw: the restart finds it in fal's request
list and adopts it instead of paying again.

Every kill point is a state, not a guess at timing: the fake fal holds submissions (before
or after accepting them) or a download, and the test kills while it is held. The final
wait reads the journal rather than log lines, which a kill may cut off. ``bench/soak.py``
kills at random moments over many trials."""

from __future__ import annotations

import os
import signal
import sqlite3

import pytest
from conftest import fal_env, hidden_files, images_in, make_image, wait_for, write_config

PHASES = ["queued", "submit_unanswered", "waiting_at_fal", "downloading", "writing"]
NAMES = ["c0_x2.webp", "c1_x2.webp", "c2_x2.webp"]


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
    server.faults.slow["download"] = 0.6 if phase == "downloading" else 0.0
    config = write_config(tmp_path, [{"inbox": "in", "outbox": "out", "settle": 0.2,
                                      "output_format": "webp"}], backend="fal", concurrency=3,
                          fal={"timeout": 10})
    size = (900, 700) if phase == "writing" else (30, 20)
    for i in range(3):
        make_image(tmp_path / f"in/c{i}.png", size, color=f"#{i}0{i}0{i}0", fmt="PNG")
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
        d.wait_event("fal_request_submitted", 3)
        wait_for(lambda: server.calls["download"] >= 1, 20, "a download under way")
    else:
        d.wait_event("fal_result_downloaded", 1)
    os.kill(d.proc.pid, signal.SIGKILL)
    d.proc.wait()
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
    assert d2.stop() == 0
