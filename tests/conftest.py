"""Shared fixtures: config files on tmp_path, images, and the real daemon in a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def write_config(tmp_path: Path, folders: list[dict[str, Any]], **top: Any) -> Path:
    """A config file in tmp_path; folders default to fast settling for tests."""
    data: dict[str, Any] = {"backend": "local", "state_dir": str(tmp_path / "state"),
                            "log": {"format": "json", "level": "debug"},
                            "retry": {"attempts": 3, "backoff": 0.2, "max_backoff": 1},
                            # many daemons run at once in the tests: no page unless asked for
                            "http": None}
    data.update(top)
    data["folders"] = [{"settle": 0.4, **f} for f in folders]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def make_image(path: Path, size: tuple[int, int] = (40, 30), color: str = "red",
               fmt: str | None = None, mode: str = "RGB", **params: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new(mode, size, color)
    # a little structure so the encoders do real work and dedupe tests can tell images apart
    for x in range(0, size[0], 7):
        image.putpixel((x, min(x, size[1] - 1)), (0, 0, 0) if mode == "RGB" else 0)
    tmp = path.with_name(".tmp-" + path.name)
    image.save(tmp, fmt or Image.registered_extensions()[path.suffix.lower()], **params)
    os.replace(tmp, path)
    return path


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60,
        cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the real command line in a subprocess."""
    return subprocess.run([sys.executable, "-m", "crystal_watchd", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})},
                          cwd=cwd)


class Daemon:
    """``crystal-watchd run`` in a subprocess, with its JSON log lines parsed."""

    command: tuple[str, ...] = ("-m", "crystal_watchd")

    def __init__(self, config: Path, *extra: str, env: dict[str, str] | None = None,
                 preexec_fn: Callable[[], None] | None = None, wrapper: tuple[str, ...] = ()):
        self.config = config
        self.log_path = config.parent / f"daemon-{time.monotonic_ns()}.log"
        # PYTHONFAULTHANDLER: a daemon that hangs is sent SIGABRT by ``stop`` and writes
        # every thread's stack to its log, so a hang is diagnosed, not just timed out.
        with open(self.log_path, "w") as log:  # the daemon writes through its own copy
            self.proc = subprocess.Popen(
                [*wrapper, sys.executable, *self.command, "run", "--config", str(config),
                 *extra],
                stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONFAULTHANDLER": "1", **(env or {})},
                preexec_fn=preexec_fn)

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def named(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events() if e.get("event") == event]

    def wait_event(self, event: str, count: int = 1, timeout: float = 20.0) -> list[dict[str, Any]]:
        def enough():
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.text()}")
            found = self.named(event)
            return found if len(found) >= count else None
        return wait_for(enough, timeout, f"{count}× {event}\n{self.text()[-3000:]}")

    def ready(self) -> Daemon:
        self.wait_event("daemon_ready")
        return self

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)  # faulthandler: every thread's stack
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            raise AssertionError(f"the daemon did not stop within {timeout:g} s of signal "
                                 f"{sig}; its log ends:\n{self.text()[-6000:]}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def daemons():
    """Start daemons with ``daemons(config)``; any still running at the end are killed."""
    started: list[Daemon] = []

    def start(config: Path, *extra: str, env: dict[str, str] | None = None) -> Daemon:
        d = Daemon(config, *extra, env=env)
        started.append(d)
        return d

    yield start
    for d in started:
        d.kill()


def images_in(directory: Path) -> dict[str, tuple[int, int]]:
    """name → pixel size of every visible file in ``directory`` (recursively)."""
    out = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            with Image.open(path) as im:
                out[path.relative_to(directory).as_posix()] = im.size
    return out


def hidden_files(directory: Path) -> list[Path]:
    return [p for p in directory.rglob(".*") if p.is_file()]


# -- the fake fal server -------------------------------------------------------------------

FAKE_KEY = "fake-key-id-1234:fake-key-secret-abcdefgh"
BOOTSTRAP = ROOT / "tests" / "fakefal" / "bootstrap.py"


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory):
    """A throwaway CA and a server certificate for 127.0.0.1 (trustme)."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    folder = tmp_path_factory.mktemp("tls")
    ca_file, cert_file, key_file = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.private_key_pem.write_to_path(str(key_file))
    cert_file.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    return {"ca": str(ca_file), "cert": str(cert_file), "key": str(key_file)}


@pytest.fixture
def fakefal(tls_files):
    """Start fake fal servers with ``fakefal(latency=…, runners=…, faults=…)``."""
    from fakefal import FakeFal

    servers = []

    def start(**kw) -> FakeFal:
        server = FakeFal(key=FAKE_KEY, certfile=tls_files["cert"], keyfile=tls_files["key"], **kw)
        servers.append(server.start())
        return server

    yield start
    for server in servers:
        server.stop()


def fal_env(server, tls_files, **extra: str) -> dict[str, str]:
    """Environment for a daemon subprocess that talks to ``server``."""
    return {"FAL_RUN_HOST": server.host, "FAL_QUEUE_RUN_HOST": server.host,
            "SSL_CERT_FILE": tls_files["ca"], "FAKEFAL_BASE_URL": server.base_url,
            "FAL_PLATFORM_URL": server.base_url + "/v1", "FAL_KEY": FAKE_KEY, **extra}


class FalDaemon(Daemon):
    """``crystal-watchd run`` through the bootstrap that points fal_client at the fake."""

    command = (str(BOOTSTRAP),)


@pytest.fixture
def fal_daemons():
    started: list[FalDaemon] = []

    def start(config: Path, env: dict[str, str]) -> FalDaemon:
        d = FalDaemon(config, env=env)
        started.append(d)
        return d

    yield start
    for d in started:
        d.kill()


# -- a throwaway PostgreSQL cluster ----------------------------------------------------------


@pytest.fixture(scope="session")
def pg_cluster():
    """One PostgreSQL cluster for the whole test session (trust auth on 127.0.0.1), stopped
    and removed afterwards; skipped, saying how to install PostgreSQL, where it is missing
    (failed under CI=true)."""
    from pgcluster import Cluster, Unavailable
    from realparts import missing

    try:
        cluster = Cluster()
    except Unavailable as exc:
        missing("PostgreSQL", str(exc))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(pg_cluster):
    """A fresh, empty database in the session's cluster; its URL."""
    return pg_cluster.new_database()
