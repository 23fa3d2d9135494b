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


@pytest.mark.parametrize("http, expected", [
    (None, None),
    ({"listen": None, "token": None}, None),
    ({"listen": "", "token": None}, None),
    ({"listen": "127.0.0.1:8765", "token": None}, "http://127.0.0.1:8765/healthz"),
    ({"listen": "0.0.0.0:9000"}, "http://127.0.0.1:9000/healthz"),
    ({"listen": "[::]:8765"}, "http://[::1]:8765/healthz"),
    ({"listen": "[::1]:80"}, "http://[::1]:80/healthz"),
    ({"listen": "localhost:8080", "token": "t"}, "http://localhost:8080/healthz"),
])
def test_choice_between_healthz_and_status(tmp_path, http, expected):
    """An ``http`` section with a listen address means /healthz (a wildcard address reached
    through loopback); no section, a null one or no listen address means ``status``."""
    data = {"backend": "local", "folders": [{"inbox": "in", "outbox": "out"}]}
    if http is not None or expected is not None:
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
    assert (before.returncode, before.stdout.strip()) == (1, "unhealthy: status: daemon not running")
    d = daemons(config).ready()
    during = run_check(config)
    assert (during.returncode, during.stdout.strip()) == (0, "healthy: status: daemon running")
    assert d.stop() == 0
    assert run_check(config).returncode == 1


class _Healthz(BaseHTTPRequestHandler):
    answer = 200
    seen: list[tuple[str, str | None]] = []

    def do_GET(self) -> None:  # noqa: N802
        type(self).seen.append((self.path, self.headers.get("Authorization")))
        body = b'{"alive": true}' if self.answer == 200 else b'{"alive": false}'
        self.send_response(self.answer)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_healthz_answer_decides_when_the_page_is_on(tmp_path):
    """With ``http.listen`` set the check asks GET /healthz there (with the token when one is
    set): 200 is healthy, 503 or nothing listening is unhealthy."""
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
        assert _Healthz.seen[-1] == ("/healthz", "Bearer s3cret")
        assert "s3cret" not in ok.stdout
        _Healthz.answer = 503
        down = run_check(config)
        assert down.returncode == 1 and "503" in down.stdout
    finally:
        server.shutdown()
        server.server_close()
    gone = run_check(config)
    assert gone.returncode == 1 and gone.stdout.startswith("unhealthy:")
