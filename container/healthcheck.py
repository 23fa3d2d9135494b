"""The container's HEALTHCHECK: exit 0 while the daemon is alive, 1 otherwise.

With the web page on (a top-level ``http:`` section with a ``listen`` address) it asks
``GET /healthz`` there, which also knows whether the daemon is stuck; without it, it runs
``crystal-watchd status --json``, whose exit code says whether a daemon holds the journal's
lock. The engine runs health checks as root: the check drops to PUID:PGID first, so that
nothing it touches in /config/state ends up owned by root.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

DEFAULT_CONFIG = "/config/config.yaml"
TIMEOUT = 10.0


def _http_section(config: Path) -> dict[str, Any] | None:
    try:
        data = yaml.safe_load(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    http = data.get("http") if isinstance(data, dict) else None
    if isinstance(http, dict) and isinstance(http.get("listen"), str) and http["listen"].strip():
        return http
    return None


def _healthz_url(listen: str) -> str:
    """``host:port`` as the page listens on it → a URL reachable from inside the container
    (a wildcard address is reached through loopback)."""
    host, _, port = listen.strip().rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "*"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/healthz"


def choose(config: Path) -> tuple[str, str]:
    """Which check to run: ``("http", url)`` when the config turns the web page on, else
    ``("status", config path)``."""
    http = _http_section(config)
    if http is not None:
        return "http", _healthz_url(http["listen"])
    return "status", str(config)


def check_http(url: str, token: str | None) -> tuple[bool, str]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
            return answer.status == 200, f"{url}: {answer.status}"
    except urllib.error.HTTPError as exc:
        return False, f"{url}: {exc.code}"
    except (OSError, ValueError) as exc:
        return False, f"{url}: {getattr(exc, 'reason', exc)}"


def check_status(config: str) -> tuple[bool, str]:
    try:
        done = subprocess.run([sys.executable, "-m", "crystal_watchd", "status", "--json",
                               "--config", config], capture_output=True, text=True,
                              timeout=TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"status: {exc}"
    if done.returncode == 0:
        return True, "status: daemon running"
    if done.returncode == 3:
        return False, "status: daemon not running"
    return False, f"status: exit {done.returncode}: {done.stderr.strip()[-300:]}"


def _drop_root() -> None:
    if os.getuid() != 0:
        return
    uid, gid = int(os.environ.get("PUID", "1000")), int(os.environ.get("PGID", "1000"))
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)


def main() -> int:
    _drop_root()
    config = Path(os.environ.get("CRYSTAL_WATCHD_CONFIG") or DEFAULT_CONFIG)
    kind, target = choose(config)
    if kind == "http":
        token = (_http_section(config) or {}).get("token")
        healthy, detail = check_http(target, token if isinstance(token, str) else None)
    else:
        healthy, detail = check_status(target)
    print(("healthy: " if healthy else "unhealthy: ") + detail)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
