"""The rule for tests that need a real part: skip on a developer's machine, fail under CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _run_needing_a_missing_command(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess:
    test = tmp_path / "test_needs_part.py"
    test.write_text("from realparts import need_command\n\n"
                    "def test_part():\n"
                    "    need_command('no-such-command-cw-test', 'nowhere')\n")
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    env["PYTHONPATH"] = str(HERE)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-rs", str(test)], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=60)


def test_missing_part_skips_outside_ci(tmp_path):
    """Without CI a test whose command is missing is reported as skipped, naming the part."""
    result = _run_needing_a_missing_command(tmp_path, None)
    assert result.returncode == 0, result.stdout
    assert "1 skipped" in result.stdout
    assert "no-such-command-cw-test is not available" in result.stdout


def test_missing_part_fails_under_ci(tmp_path):
    """With CI=true the same test fails, so the run cannot pass with the area untested."""
    result = _run_needing_a_missing_command(tmp_path, "true")
    assert result.returncode == 1, result.stdout
    assert "1 failed" in result.stdout
    assert "CI=true" in result.stdout
