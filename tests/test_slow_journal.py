"""A shared journal far away (a delaying proxy in front of PostgreSQL): the daemon keeps its
event loop free while it waits for the database, so the page answers throughout."""

from __future__ import annotations

import time

import httpx
from conftest import fal_env, images_in, make_image, wait_for, write_config
from delayproxy import DelayProxy

#: Seconds each way between the daemon and the database: more than a VPN between two sites.
DELAY = 0.04
# Enough files that the jobs run for several seconds at concurrency 4 and fal latency 1 s:
# the page is asked many times while they run, even on a loaded machine.
FILES = 32


def test_page_answers_quickly_while_jobs_run_on_a_slow_journal(tmp_path, pg_cluster, pg_url,
                                                               fakefal, fal_daemons, tls_files):
    """With every journal statement 80 ms round trip away, /healthz and / answer each time
    within 2 s (asked over and over while jobs run), and every file gets its output. A
    journal called from the event loop holds the page up for as long as the statements of
    every job in flight take, so this fails with a blocking journal."""
    proxy = DelayProxy("127.0.0.1", pg_cluster.port, DELAY)
    server = fakefal(latency=1.0, runners=8)
    config = write_config(tmp_path, [{"name": "photos", "inbox": "in", "outbox": "out",
                                      "settle": 0.2}],
                          backend="fal", journal=proxy.url(pg_url), concurrency=4,
                          fal={"timeout": 60}, http={"listen": "127.0.0.1:0"})
    try:
        d = fal_daemons(config, fal_env(server, tls_files)).ready()
        url = d.wait_event("http_listening")[0]["url"]
        for i in range(FILES):
            make_image(tmp_path / f"in/p{i:02}.png", (16, 12), color=f"#{i:02x}4080", fmt="PNG")
        worst, asked_while_running = 0.0, 0
        with httpx.Client(base_url=url, timeout=30) as client:
            deadline = time.monotonic() + 120
            while len(d.named("job_done")) < FILES and time.monotonic() < deadline:
                running = bool(d.named("job_started"))
                for path in ("/healthz", "/"):
                    started = time.monotonic()
                    response = client.get(path)
                    worst = max(worst, time.monotonic() - started)
                    assert response.status_code == 200, (path, response.text)
                asked_while_running += running
        wait_for(lambda: len(images_in(tmp_path / "out")) == FILES, 60, "every output")
        assert worst < 2.0, f"the page took {worst:.2f} s to answer"
        assert asked_while_running >= 10, "the page was hardly asked while jobs ran"
        assert d.stop() == 0
    finally:
        proxy.close()
