"""fal or the network away for longer than the whole retry budget: the real daemon in a
subprocess, the real fal_client over TLS to the fake, whose outage mode refuses every
connection or answers 503 on every endpoint and logs every attempt."""

from __future__ import annotations

import json
import socket
import time
import urllib.request

import pytest
from conftest import cli, fal_env, images_in, make_image, wait_for, write_config

#: The retry budget of these configs: 2 attempts 0.2 s apart. With the in-place retries of
#: one call (six, up to 5 s apart) a job met by an outage failed within about 15 s before
#: the breaker; the outages below last longer than that.
RETRY = {"attempts": 2, "backoff": 0.2, "max_backoff": 0.5}
OUTAGE = 22.0


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _config(tmp_path, port):
    return write_config(tmp_path, [{"inbox": "in", "outbox": "out"}], backend="fal",
                        retry=RETRY, fal={"timeout": 60}, concurrency=2,
                        http={"listen": f"127.0.0.1:{port}", "token": None})


def _healthz(port) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as answer:
        assert answer.status == 200
        return json.loads(answer.read())


def _start_outage_with_requests_running(server, d, tmp_path, mode):
    """Four files; once two are running at fal, fal goes away."""
    for i in range(4):
        make_image(tmp_path / f"in/p{i}.png", (24 + i, 16), fmt="PNG")
    d.wait_event("fal_request_submitted", 2, timeout=60)
    server.outage.begin(mode)
    return time.monotonic()


@pytest.mark.parametrize("mode", ["refused", "503"])
def test_an_outage_longer_than_the_retry_budget_fails_nothing(tmp_path, fakefal, fal_daemons,
                                                              tls_files, mode):
    """Connections refused (or 503 everywhere) for longer than every attempt and backoff put
    together: requests already running at fal and a file arriving meanwhile all end done,
    each billed once; nothing fails and no attempt is counted; fal_unreachable and
    fal_reachable_again are logged once each; /healthz stays 200 and says since when fal is
    away, ``status`` says "waiting for fal since"; while away, the fake sees fewer than 30
    requests a minute (refused connections counted); outputs land soon after fal is back."""
    server = fakefal(latency=3.0, runners=2)
    port = _port()
    config = _config(tmp_path, port)
    d = fal_daemons(config, fal_env(server, tls_files)).ready()
    began = _start_outage_with_requests_running(server, d, tmp_path, mode)
    down = d.wait_event("fal_unreachable", timeout=30)[0]
    assert down["cause"] and down["since"]
    make_image(tmp_path / "in/late.png", (20, 20), fmt="PNG")  # arrives during the outage
    health = wait_for(lambda: (h := _healthz(port)) and not h["fal_reachable"] and h, 10,
                      "healthz says fal is unreachable")
    assert health["status"] == "ok" and health["fal_unreachable_since"]
    assert health["waiting_for"].startswith("waiting for fal since ")
    report = json.loads(cli("status", "--json", "--config", str(config)).stdout)
    assert report["fal"]["reachable"] is False
    assert report["fal"]["waiting_for"].startswith("waiting for fal since ")
    assert "waiting for fal since " in cli("status", "--config", str(config)).stdout
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as page:
        assert "Waiting for fal since " in page.read().decode()
    time.sleep(max(0.0, began + OUTAGE - time.monotonic()))
    assert not d.named("job_failed") and not d.named("job_retry_scheduled")
    server.outage.end()
    back = d.wait_event("fal_reachable_again", timeout=90)[0]
    back_at = time.monotonic()
    assert back["lasted"] >= OUTAGE - 5
    during = server.outage.during()
    minutes = max(1.0, (server.outage.ended - server.outage.began) / 60)
    assert len(during) / minutes < 30, during
    d.wait_event("job_done", 5, timeout=60)
    done_at = time.monotonic()
    assert done_at - back_at < 20, "the outputs came long after fal was back"
    assert len(images_in(tmp_path / "out")) == 5
    assert sorted(server.billed_per_input().values()) == [1] * 5
    assert len(d.named("fal_unreachable")) == 1 and len(d.named("fal_reachable_again")) == 1
    assert not d.named("job_failed") and not d.named("job_retry_scheduled")
    assert "trying backup domain" not in d.text()
    assert _healthz(port)["fal_reachable"] is True
    assert d.stop() == 0


def test_sigterm_during_an_outage_stops_cleanly_and_loses_nothing(tmp_path, fakefal,
                                                                  fal_daemons, tls_files):
    """SIGTERM while fal answers 503 everywhere: the daemon stops at once with exit 0, no
    file failed or moved; the next start, with fal back, resumes the requests it had at fal
    (no second charge) and finishes every file."""
    server = fakefal(latency=3.0, runners=2)
    port = _port()
    config = _config(tmp_path, port)
    env = fal_env(server, tls_files)
    d = fal_daemons(config, env).ready()
    _start_outage_with_requests_running(server, d, tmp_path, "503")
    d.wait_event("fal_unreachable", timeout=30)
    time.sleep(3)
    started = time.monotonic()
    assert d.stop() == 0
    assert time.monotonic() - started < 10, "the stop waited for fal"
    assert not d.named("job_failed") and not d.named("job_retry_scheduled")
    assert d.named("job_waiting_for_fal")
    assert not (tmp_path / "failed").exists() or not any((tmp_path / "failed").iterdir())
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == [f"p{i}.png" for i in range(4)]
    submitted = len(server.submissions)
    server.outage.end()
    again = fal_daemons(config, env).ready()
    again.wait_event("job_done", 4, timeout=60)
    assert len(again.named("fal_request_resumed")) >= 1
    assert len(server.submissions) == 4 and submitted >= 2
    assert sorted(server.billed_per_input().values()) == [1] * 4
    assert again.stop() == 0
