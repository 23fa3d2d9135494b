"""A real inotify queue overflow: the kernel drops events, and the daemon still takes every
file at once (not at the next periodic rescan), whatever its log level."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from conftest import make_image, wait_for, write_config

QUEUE_LIMIT = Path("/proc/sys/fs/inotify/max_queued_events")
#: Inotify instances take the limit when they are created; the daemon's is made at start,
#: so the limit is lowered only around that moment and put back at once.
SMALL_QUEUE = 16


def _can_lower_the_queue() -> str | None:
    if not QUEUE_LIMIT.exists():
        return "no inotify on this system"
    if not os.access(QUEUE_LIMIT, os.W_OK):
        return "lowering fs.inotify.max_queued_events needs root"
    return None


@pytest.mark.parametrize("level", ["warning", "error"])
def test_files_lost_in_an_overflow_are_found_by_the_rescan_it_starts(tmp_path, daemons, level):
    """The daemon's inotify queue holds 16 events; while it is stopped (SIGSTOP) 40 files
    arrive, far more events than fit. On SIGCONT the kernel reports the overflow, and every
    file comes out within seconds although the periodic rescan is a day away. At level
    ``warning`` the daemon says ``inotify_overflow`` once per overflow; at ``error`` it says
    nothing, and still rescans."""
    why_not = _can_lower_the_queue()
    if why_not:
        if os.environ.get("CI") == "true":
            pytest.fail(f"cannot provoke an inotify overflow: {why_not} (CI=true)")
        pytest.skip(why_not)
    config = write_config(tmp_path, [{"inbox": "in", "outbox": "out", "settle": 0.3}],
                          rescan_interval=86_400, log={"level": level, "format": "json"})
    (tmp_path / "in").mkdir()
    before = QUEUE_LIMIT.read_text()
    QUEUE_LIMIT.write_text(str(SMALL_QUEUE))
    try:
        d = daemons(config)
        # At level error nothing says "ready": a first file coming out says the watch is up.
        make_image(tmp_path / "in/first.jpg")
        wait_for(lambda: (tmp_path / "out/first_x2.jpg").exists(), 30, "the first output")
    finally:
        QUEUE_LIMIT.write_text(before)
    os.kill(d.proc.pid, signal.SIGSTOP)
    try:
        for n in range(40):
            make_image(tmp_path / f"in/p{n:02}.jpg")
    finally:
        os.kill(d.proc.pid, signal.SIGCONT)
    wanted = {f"p{n:02}_x2.jpg" for n in range(40)}
    wait_for(lambda: wanted <= {p.name for p in (tmp_path / "out").iterdir()}, 60,
             "every file lost in the overflow")
    overflows = d.named("inotify_overflow")
    if level == "warning":
        assert overflows, d.text()[-3000:]
        assert overflows[0]["action"] == "rescanning every folder"
    else:
        assert overflows == []
        assert "Inotify queue overflowed" not in d.text()
    assert d.stop() == 0
