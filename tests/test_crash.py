"""SIGKILL at the moments that matter, then a restart: every file ends with exactly one
output, no partial file is ever visible, and fal bills each file once.

The normal suite kills at chosen phases; ``bench/soak.py`` kills at random moments over many
trials."""

from __future__ import annotations

import os
import signal
import time

import pytest
from conftest import fal_env, hidden_files, images_in, make_image, write_config

PHASES = ["queued", "waiting_at_fal", "downloading", "writing"]


@pytest.mark.parametrize("phase", PHASES)
def test_sigkill_then_restart_loses_nothing_and_pays_once(phase, tmp_path, fakefal, fal_daemons,
                                                          tls_files):
    """Kill the daemon in ``phase``; after a restart each file has one output, nothing is
    half-written, and the ledger shows one billed run per file."""
    server = fakefal(latency=0.6, runners=4)
    server.faults.slow["download"] = 0.6 if phase == "downloading" else 0.0
    config = write_config(tmp_path, [{"inbox": "in", "outbox": "out", "settle": 0.2,
                                      "output_format": "webp"}], backend="fal", concurrency=3)
    size = (900, 700) if phase == "writing" else (30, 20)
    for i in range(3):
        make_image(tmp_path / f"in/c{i}.png", size, color=f"#{i}0{i}0{i}0", fmt="PNG")
    d = fal_daemons(config, fal_env(server, tls_files)).ready()
    if phase == "queued":
        d.wait_event("file_queued", 1)
    elif phase == "waiting_at_fal":
        d.wait_event("fal_request_submitted", 2)
    elif phase == "downloading":
        d.wait_event("fal_request_submitted", 3)
        time.sleep(0.6 + 0.3)  # runs done; downloads take 0.6 s each
    else:
        d.wait_event("fal_result_downloaded", 1)
    os.kill(d.proc.pid, signal.SIGKILL)
    d.proc.wait()
    images_in(tmp_path / "out")  # whatever is visible already decodes in full
    d2 = fal_daemons(config, fal_env(server, tls_files)).ready()
    done_before = len(d.named("job_done"))
    d2.wait_event("job_done", 3 - done_before, timeout=40)
    time.sleep(0.5)
    out = images_in(tmp_path / "out")
    assert sorted(out) == ["c0_x2.webp", "c1_x2.webp", "c2_x2.webp"]
    assert set(out.values()) == {(size[0] * 2, size[1] * 2)}
    assert hidden_files(tmp_path / "out") == []
    assert sorted(server.billed_per_input().values()) == [1, 1, 1]
    assert len(server.submissions) == 3
    assert d2.stop() == 0
