"""The container's HEALTHCHECK: exit 0 while the daemon is alive, 1 otherwise.

With the web page on (``http:`` absent means the default page on loopback; ``http: null``
turns it off) it asks ``GET /healthz``, which also knows whether the daemon's loop and journal
still work: 200 is healthy, anything else not. When the page is off, or nothing answers on its
address (the port was taken, so the daemon runs without a page), it runs
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

import yaml

from crystal_watchd.config import DEFAULT_HTTP_LISTEN

DEFAULT_CONFIG = "/config/config.yaml"
#: Seconds; both together stay within the HEALTHCHECK --timeout.
HTTP_TIMEOUT, STATUS_TIMEOUT = 5.0, 10.0


def _listen(config: Path) -> str | None:
    """The page's ``host:port`` as the config sets it, or None when the page is off. Read
    leniently: a config the daemon refuses is for ``status`` to report."""
    try:
        data = yaml.safe_load(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if not isinstance(data, dict):
        return None
    if "http" not in data:
        return DEFAULT_HTTP_LISTEN
    http = data["http"]
    if http is None:
        return None
    listen = http.get("listen") if isinstance(http, dict) else None
    return listen.strip() if isinstance(listen, str) and listen.strip() else DEFAULT_HTTP_LISTEN


def _healthz_url(listen: str) -> str | None:
    """``host:port`` as the page listens on it → a URL reachable from inside the container
    (a wildcard address is reached through loopback); None for a port chosen at random."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if not port.isdigit() or int(port) == 0:
        return None
    if host in ("", "0.0.0.0", "*"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/healthz"


def choose(config: Path) -> tuple[str, str]:
    """Which check to run first: ``("http", url)`` when the config has the web page on, else
    ``("status", config path)``."""
    listen = _listen(config)
    url = _healthz_url(listen) if listen else None
    return ("http", url) if url else ("status", str(config))


def check_http(url: str) -> tuple[bool | None, str]:
    """(healthy, detail); healthy is None when nothing answered at all."""
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as answer:
            return answer.status == 200, f"{url}: {answer.status}"
    except urllib.error.HTTPError as exc:
        return False, f"{url}: {exc.code}"
    except (OSError, ValueError) as exc:
        return None, f"{url}: {getattr(exc, 'reason', exc)}"


def check_status(config: str) -> tuple[bool, str]:
    try:
        done = subprocess.run([sys.executable, "-m", "crystal_watchd", "status", "--json",
                               "--config", config], capture_output=True, text=True,
                              timeout=STATUS_TIMEOUT)
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
    healthy, detail = check_http(target) if kind == "http" else (None, "")
    if healthy is None:
        healthy, status_detail = check_status(str(config))
        detail = f"{detail} (no answer); {status_detail}" if detail else status_detail
    print(("healthy: " if healthy else "unhealthy: ") + detail)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
