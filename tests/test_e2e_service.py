"""Running as a service: sd_notify on a real socket, SIGHUP reload, graceful stop."""

from __future__ import annotations

import os
import signal
import socket
import time

import yaml
from conftest import fal_env, images_in, make_image, wait_for, write_config


class NotifySocket:
    """A real AF_UNIX datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except (TimeoutError, BlockingIOError):
                return self.messages

    def has(self, prefix: str) -> bool:
        return any(field.startswith(prefix) for m in self.drain() for field in m.split("\n"))


def test_notify_socket_gets_ready_status_watchdog_and_stopping(tmp_path, daemons):
    """READY=1 once watching, STATUS= with counts as work happens, WATCHDOG=1 pings when
    asked for, STOPPING=1 on SIGTERM."""
    notify = NotifySocket(tmp_path / "notify.sock")
    config = write_config(tmp_path, [{"inbox": "in", "outbox": "out"}])
    d = daemons(config, env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "1000000"})
    wait_for(lambda: notify.has("READY=1"), 20, "READY=1")
    make_image(tmp_path / "in/a.jpg")
    d.wait_event("job_done")
    wait_for(lambda: notify.has("WATCHDOG=1"), 5, "WATCHDOG=1")
    statuses = [f for m in notify.drain() for f in m.split("\n") if f.startswith("STATUS=")]
    assert any("queued" in s and "done" in s for s in statuses)
    assert d.stop() == 0
    assert notify.has("STOPPING=1")
    notify.sock.close()


def test_sighup_adds_and_removes_folders_in_the_same_process(tmp_path, daemons):
    """SIGHUP: a new folder is watched and processed, a removed one is no longer watched;
    the PID stays the same and RELOADING=1 then READY=1 are sent."""
    notify = NotifySocket(tmp_path / "notify.sock")
    config = write_config(tmp_path, [{"name": "old", "inbox": "in/old", "outbox": "out/old"}])
    d = daemons(config, env={"NOTIFY_SOCKET": notify.path}).ready()
    pid = d.proc.pid
    data = yaml.safe_load(config.read_text())
    data["folders"] = [{"name": "new", "inbox": "in/new", "outbox": "out/new", "settle": 0.3,
                        "scale_factor": 3}]
    config.write_text(yaml.safe_dump(data))
    os.kill(pid, signal.SIGHUP)
    d.wait_event("config_reloaded")
    assert notify.has("RELOADING=1")
    make_image(tmp_path / "in/new/n.jpg", (10, 10))
    make_image(tmp_path / "in/old/o.jpg", (10, 10))
    d.wait_event("job_done")
    time.sleep(1.0)
    assert images_in(tmp_path / "out") == {"new/n_x3.jpg": (30, 30)}
    assert d.proc.pid == pid and d.proc.poll() is None
    reloaded = d.named("config_reloaded")[0]
    assert reloaded["added"] == ["new"] and reloaded["removed"] == ["old"]
    assert d.stop() == 0


def test_invalid_config_on_sighup_keeps_the_old_one(tmp_path, daemons):
    """A broken config on SIGHUP is logged with each of its problems; none of it applies
    (not even its valid new scale factor): the daemon runs on with the old config."""
    config = write_config(tmp_path, [{"inbox": "in", "outbox": "out"}])
    d = daemons(config).ready()
    broken = yaml.safe_load(config.read_text())
    broken["concurrency"] = 0
    broken["folders"][0]["scale_factor"] = 3  # valid, but in a config that is not
    broken["folders"][0]["scale_fator"] = 3  # a misspelt key
    config.write_text(yaml.safe_dump(broken, sort_keys=False))
    os.kill(d.proc.pid, signal.SIGHUP)
    failed = d.wait_event("reload_failed")[0]
    assert any("concurrency: must be from 1 to 256" in p for p in failed["problems"])
    assert any("scale_fator" in p for p in failed["problems"])
    make_image(tmp_path / "in/still.jpg")
    d.wait_event("job_done")
    assert images_in(tmp_path / "out") == {"still_x2.jpg": (80, 60)}
    assert d.stop() == 0


def test_sigterm_with_jobs_at_fal_exits_in_grace_and_next_start_finishes(
        tmp_path, fakefal, fal_daemons, tls_files):
    """SIGTERM while requests wait at fal: exit 0 within shutdown_grace; the request ids stay
    in the journal and the next start finishes them with no new submission."""
    server = fakefal(latency=4, runners=4)
    config = write_config(tmp_path, [{"inbox": "in", "outbox": "out", "settle": 0.2}],
                          backend="fal", concurrency=3, shutdown_grace=1)
    for i in range(3):
        make_image(tmp_path / f"in/g{i}.png", (10, 8), color=f"#{i}{i}{i}000", fmt="PNG")
    d = fal_daemons(config, fal_env(server, tls_files)).ready()
    d.wait_event("fal_request_submitted", 3)
    started = time.monotonic()
    assert d.stop() == 0
    assert time.monotonic() - started < 5
    assert len(d.named("job_interrupted")) == 3
    d2 = fal_daemons(config, fal_env(server, tls_files)).ready()
    d2.wait_event("job_done", 3, timeout=30)
    assert len(server.submissions) == 3
    assert len(images_in(tmp_path / "out")) == 3
    assert d2.stop() == 0


def test_sighup_lifts_an_account_pause(tmp_path, fakefal, fal_daemons, tls_files):
    """After a 403 pause, fixing the account and sending SIGHUP resumes at once."""
    from fakefal import Faults

    server = fakefal(faults=Faults(locked=True))
    config = write_config(tmp_path, [{"inbox": "in", "outbox": "out"}], backend="fal")
    d = fal_daemons(config, fal_env(server, tls_files)).ready()
    make_image(tmp_path / "in/x.png", (10, 10), fmt="PNG")
    d.wait_event("account_paused")
    server.faults.locked = False
    os.kill(d.proc.pid, signal.SIGHUP)
    d.wait_event("job_done", timeout=15)
    assert not d.named("job_failed")
    assert d.stop() == 0


def test_second_sigint_stops_at_once_and_keeps_the_request(tmp_path, fakefal, fal_daemons,
                                                            tls_files):
    """The first SIGINT waits for in-flight work (up to shutdown_grace); a second one stops
    at once, and the request id survives for the next start (no second submission)."""
    server = fakefal(latency=3, runners=2)
    config = write_config(tmp_path, [{"inbox": "in", "outbox": "out", "settle": 0.2}],
                          backend="fal", shutdown_grace=60)
    make_image(tmp_path / "in/s.png", (10, 8), fmt="PNG")
    d = fal_daemons(config, fal_env(server, tls_files)).ready()
    d.wait_event("fal_request_submitted")
    os.kill(d.proc.pid, signal.SIGINT)
    d.wait_event("waiting_for_jobs")
    time.sleep(0.3)
    assert d.proc.poll() is None  # still waiting for the job
    started = time.monotonic()
    os.kill(d.proc.pid, signal.SIGINT)
    assert d.proc.wait(timeout=10) == 0
    assert time.monotonic() - started < 5
    assert d.named("shutdown_forced") and d.named("job_interrupted")
    d2 = fal_daemons(config, fal_env(server, tls_files)).ready()
    d2.wait_event("job_done", timeout=20)
    assert len(server.submissions) == 1
    assert d2.stop() == 0
