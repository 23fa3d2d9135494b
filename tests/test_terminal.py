"""``once`` on a terminal: a live progress display with log lines above it (rich), in a real
pseudo-terminal; off a terminal the output stays JSON lines."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys

from conftest import cli, make_image, write_config

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


def run_on_tty(*args: str) -> tuple[int, str]:
    """The real CLI with stdin/stdout/stderr on a pseudo-terminal; returns (exit, text)."""
    master, slave = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"}
    proc = subprocess.Popen([sys.executable, "-m", "crystal_watchd", *args], stdin=slave,
                            stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    return proc.wait(timeout=60), ANSI.sub("", b"".join(chunks).decode(errors="replace"))


def inboxes(tmp_path, **log):
    config = write_config(tmp_path, [{"name": "photos", "inbox": "in/photos", "outbox": "out/p"},
                                     {"name": "scans", "inbox": "in/scans", "outbox": "out/s"}],
                          log={"format": "auto", "level": "info", **log})
    for i in range(3):
        make_image(tmp_path / f"in/photos/p{i}.jpg", (30 + i, 20))
    make_image(tmp_path / "in/scans/s.png", (20, 20), fmt="PNG")
    (tmp_path / "in/scans/bad.jpg").write_text("not an image")
    return config


def test_once_on_a_terminal_shows_progress_and_summarises_job_lines(tmp_path):
    """The display counts done/failed/waiting per folder and the spend; INFO lines about
    single jobs are not printed, warnings and errors are; no JSON, no hand-drawn bar."""
    config = inboxes(tmp_path)
    code, text = run_on_tty("once", "--config", str(config))
    assert code == 1  # one file failed
    assert re.search(r"photos\s+3\s+0\s+0", text), text
    assert re.search(r"scans\s+1\s+1\s+0", text), text
    assert "4 done, 1 failed, 0 waiting" in text and "spend so far $0.00" in text
    assert "job_failed" in text and "bad.jpg" in text
    assert "daemon_ready" in text
    assert "job_started" not in text and "job_done" not in text
    assert '{"' not in text and "[###" not in text


def test_verbose_and_quiet(tmp_path):
    """-v prints every job's lines too; -q prints only warnings and errors."""
    config = inboxes(tmp_path)
    code, text = run_on_tty("once", "-v", "--config", str(config))
    assert code == 1 and "job_started" in text and "job_done" in text
    for path in (tmp_path / "in/scans/failed").iterdir():
        path.unlink()
    make_image(tmp_path / "in/photos/new.jpg", (12, 12))
    (tmp_path / "in/scans/bad2.jpg").write_text("still not an image")
    code, text = run_on_tty("once", "-q", "--config", str(config))
    assert code == 1 and "job_failed" in text and "bad2.jpg" in text
    assert "daemon_ready" not in text and "job_done" not in text
    assert re.search(r"photos\s+1\s+0\s+0", text), text


def test_once_off_a_terminal_writes_json_lines(tmp_path):
    """Captured output (not a terminal) is JSON lines as before, one object per line."""
    config = inboxes(tmp_path)
    result = cli("once", "--config", str(config))
    assert result.returncode == 1
    events = [json.loads(line)["event"] for line in result.stderr.splitlines() if line.strip()]
    assert "job_done" in events and "job_failed" in events and "daemon_stopped" in events
