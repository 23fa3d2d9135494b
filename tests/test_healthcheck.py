"""The container's health check (container/healthcheck.py) and the ``status`` exit code it
relies on when the web page is off. The image itself is tested by container/test."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, cli, write_config

SCRIPT = ROOT / "container" / "healthcheck.py"
_spec = importlib.util.spec_from_file_location("container_healthcheck", SCRIPT)
healthcheck = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(healthcheck)


def run_check(config: Path) -> subprocess.CompletedProcess:
    """The script as the engine runs it; PUID/PGID are ours so dropping root is a no-op."""
    env = {**os.environ, "CRYSTAL_WATCHD_CONFIG": str(config), "PUID": str(os.getuid()),
           "PGID": str(os.getgid()), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True,
                          env=env, timeout=60)


def test_status_exit_code_says_whether_the_daemon_runs(tmp_path, daemons):
    """``status`` exits 3 with no daemon on the journal, 0 while one runs, 3 again after it
    stopped; the JSON says the same."""
    config = write_config(tmp_path, [{"inbox": "in", "outbox": "out"}])
    before = cli("status", "--json", "--config", str(config))
    assert before.returncode == 3, before.stderr
    assert '"daemon_running": false' in before.stdout
    d = daemons(config).ready()
    during = cli("status", "--json", "--config", str(config))
    assert during.returncode == 0, during.stderr
    assert '"daemon_running": true' in during.stdout
    assert d.stop() == 0
    assert cli("status", "--config", str(config)).returncode == 3


ABSENT = object()


@pytest.mark.parametrize("http, expected", [
    (ABSENT, "http://127.0.0.1:8765/healthz"),
    (None, None),
    ({}, "http://127.0.0.1:8765/healthz"),
    ({"listen": None, "token": None}, "http://127.0.0.1:8765/healthz"),
    ({"listen": "127.0.0.1:8765", "token": None}, "http://127.0.0.1:8765/healthz"),
    ({"listen": "0.0.0.0:9000", "token": "t"}, "http://127.0.0.1:9000/healthz"),
    ({"listen": "[::]:8765"}, "http://[::1]:8765/healthz"),
    ({"listen": "[::1]:80"}, "http://[::1]:80/healthz"),
    ({"listen": "localhost:8080"}, "http://localhost:8080/healthz"),
    ({"listen": "127.0.0.1:0"}, None),
])
def test_choice_between_healthz_and_status(tmp_path, http, expected):
    """The page is on unless ``http: null`` (absent means the default address), so /healthz
    is asked there, a wildcard address through loopback; ``http: null`` or a port picked at
    random means ``status``."""
    data = {"backend": "local", "folders": [{"inbox": "in", "outbox": "out"}]}
    if http is not ABSENT:
        data["http"] = http
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(data))
    if expected is None:
        assert healthcheck.choose(config) == ("status", str(config))
    else:
        assert healthcheck.choose(config) == ("http", expected)


def test_unreadable_or_missing_config_falls_back_to_status(tmp_path):
    """A config that is missing or not YAML leaves the decision to ``status``, which then
    reports the problem itself."""
    broken = tmp_path / "broken.yaml"
    broken.write_text("http: [unclosed\n")
    assert healthcheck.choose(broken) == ("status", str(broken))
    assert healthcheck.choose(tmp_path / "absent.yaml")[0] == "status"
    result = run_check(tmp_path / "absent.yaml")
    assert result.returncode == 1
    assert result.stdout.startswith("unhealthy: status: exit 78")


def test_fallback_follows_the_daemon(tmp_path, daemons):
    """Without the web page the check is unhealthy before the daemon starts, healthy while
    it runs, unhealthy once it stopped."""
    config = write_config(tmp_path, [{"inbox": "in", "outbox": "out"}])
    before = run_check(config)
    assert (before.returncode, before.stdout.strip()) == (
        1, "unhealthy: status: daemon not running")
    d = daemons(config).ready()
    during = run_check(config)
    assert (during.returncode, during.stdout.strip()) == (0, "healthy: status: daemon running")
    assert d.stop() == 0
    assert run_check(config).returncode == 1


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_healthz_of_the_real_page_decides_while_it_answers(tmp_path, daemons):
    """With the page on, the check asks the daemon's own /healthz (200: healthy); once the
    daemon is gone nothing answers there and ``status`` says it is not running."""
    port = free_port()
    config = write_config(tmp_path, [{"inbox": "in", "outbox": "out"}],
                          http={"listen": f"127.0.0.1:{port}"})
    d = daemons(config).ready()
    during = run_check(config)
    assert during.returncode == 0, during.stdout + during.stderr
    assert during.stdout.strip() == f"healthy: http://127.0.0.1:{port}/healthz: 200"
    assert d.stop() == 0
    after = run_check(config)
    assert after.returncode == 1
    assert after.stdout.startswith(f"unhealthy: http://127.0.0.1:{port}/healthz: ")
    assert after.stdout.rstrip().endswith("(no answer); status: daemon not running")


def test_no_answer_on_the_page_leaves_it_to_status(tmp_path, daemons):
    """A daemon running without its page (the port was taken, say) is still healthy: when
    nothing answers on the page's address, ``status`` decides."""
    config = write_config(tmp_path, [{"inbox": "in", "outbox": "out"}])
    d = daemons(config).ready()
    seen_by_check = tmp_path / "check.yaml"
    data = yaml.safe_load(config.read_text())
    data["http"] = {"listen": f"127.0.0.1:{free_port()}"}
    seen_by_check.write_text(yaml.safe_dump(data))
    result = run_check(seen_by_check)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.rstrip().endswith("(no answer); status: daemon running")
    assert d.stop() == 0


class _Healthz(BaseHTTPRequestHandler):
    answer = 200
    seen: list[str] = []

    def do_GET(self) -> None:
        type(self).seen.append(self.path)
        body = b'{"alive": true}' if self.answer == 200 else b'{"alive": false}'
        self.send_response(self.answer)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_503_from_healthz_is_unhealthy(tmp_path):
    """/healthz answering 503 (the daemon's loop or journal is stuck) is unhealthy even
    though something answers; 200 is healthy. The page's token is never sent or shown."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Healthz)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"http": {"listen": f"0.0.0.0:{port}", "token": "s3cret"},
                                      "folders": [{"inbox": "in", "outbox": "out"}]}))
    try:
        _Healthz.answer = 200
        ok = run_check(config)
        assert ok.returncode == 0 and ok.stdout.startswith("healthy:"), ok.stdout + ok.stderr
        assert _Healthz.seen[-1] == "/healthz"
        assert "s3cret" not in ok.stdout
        _Healthz.answer = 503
        down = run_check(config)
        assert down.returncode == 1
        assert down.stdout.strip() == f"unhealthy: http://127.0.0.1:{port}/healthz: 503"
    finally:
        server.shutdown()
        server.server_close()
