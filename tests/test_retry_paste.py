"""``retry`` as a user meets it: the hint in ``.error.json`` pasted into a shell, and a path
that matches no failed job (the real CLI and daemon in subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import cli, wait_for, write_config

NAME = 'Café "x".jpg'


def test_error_json_retry_hint_works_pasted_into_bash(tmp_path, daemons):
    """A failed file named with an accent and double quotes gets an ``.error.json`` in UTF-8
    (the name as it is, not ``\\u00e9``) whose ``retry`` is a shell-quoted command; run as
    it is through ``bash -c`` it puts that very file back in the inbox and says so."""
    config = write_config(tmp_path, [{"name": "photos", "inbox": "in", "outbox": "out"}])
    d = daemons(config).ready()
    (tmp_path / "in").mkdir(exist_ok=True)
    (tmp_path / "in" / NAME).write_text("not an image")
    d.wait_event("job_failed")
    report_path = tmp_path / "in/failed" / (NAME + ".error.json")
    wait_for(report_path.exists, 10, "error report")
    raw = report_path.read_bytes()
    assert "Café".encode() in raw and b"\\u00e9" not in raw
    command = json.loads(raw)["retry"]
    assert command.startswith("crystal-watchd retry ")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    pasted = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env,
                            timeout=60)
    assert pasted.returncode == 0, pasted.stderr
    assert f"retrying photos: {NAME}" in pasted.stdout
    wait_for(lambda: len(d.named("job_failed")) >= 2, 20,
             "the retried file failed again (it is still not an image)")
    assert d.stop() == 0


def test_retry_of_a_path_no_failed_job_has_says_so_and_fails(tmp_path):
    """``retry /nonexistent/foo.jpg`` prints that nothing matched and exits 1, with or
    without a journal; ``retry`` with no path and nothing failed still exits 0."""
    config = write_config(tmp_path, [{"name": "photos", "inbox": "in", "outbox": "out"}])
    for _ in range(2):  # before the journal exists, then after `check` has made one
        result = cli("retry", "/nonexistent/foo.jpg", "--config", str(config))
        assert result.returncode == 1
        assert "no failed job matches /nonexistent/foo.jpg" in result.stderr
        assert "retrying" not in result.stdout
        cli("once", "--config", str(config))
    assert cli("retry", "--config", str(config)).returncode == 0
