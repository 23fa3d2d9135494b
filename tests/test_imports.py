"""Importing the package has no side effect on other libraries; only the program's entry
point imports its libraries lean (without rich), each checked in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT

HIDDEN = ("rich", "click", "pygments")


def child(code: str) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON object as its last line."""
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])


REPORT = f"""
import json, sys
hidden = {HIDDEN!r}
placeholders = sorted(n for n, m in sys.modules.items()
                      if m is None and n.split(".")[0] in hidden)
loaded = sorted(n for n in hidden if sys.modules.get(n) is not None)
"""


def test_importing_the_package_leaves_rich_click_and_pygments_alone():
    """``import crystal_watchd`` and ``crystal_watchd.cli`` leave no None placeholder for
    rich, click or pygments in sys.modules, structlog (imported on the way) still sees rich,
    rich imports afterwards, and a rich imported before stays the very same module."""
    after = child(
        "import crystal_watchd, crystal_watchd.cli, crystal_watchd.config\n"
        "import structlog, structlog.dev" + REPORT +
        "import rich.console\n"
        "print(json.dumps({'placeholders': placeholders,"
        " 'structlog_sees_rich': structlog.dev.rich is not None,"
        " 'rich_console': rich.console.Console.__name__}))")
    assert after == {"placeholders": [], "structlog_sees_rich": True,
                     "rich_console": "Console"}
    before = child(
        "import rich, click, pygments\n"
        "first = {n: id(__import__(n)) for n in ('rich', 'click', 'pygments')}\n"
        "import crystal_watchd, crystal_watchd.cli" + REPORT +
        "same = all(id(sys.modules[n]) == first[n] for n in first)\n"
        "print(json.dumps({'placeholders': placeholders, 'same': same}))")
    assert before == {"placeholders": [], "same": True}


def test_the_entry_point_still_keeps_rich_out():
    """``python -m crystal_watchd --version`` (``crystal_watchd.__main__.main``) loads none
    of rich, click or pygments, and leaves no placeholder behind for them."""
    report = child(
        "import sys\n"
        "sys.argv = ['crystal-watchd', '--version']\n"
        "from crystal_watchd.__main__ import main\n"
        "try:\n"
        "    code = main()\n"
        "except SystemExit as stop:\n"
        "    code = stop.code\n"
        "import structlog, httpx" + REPORT +
        "print()\n"
        "print(json.dumps({'code': code, 'loaded': loaded, 'placeholders': placeholders,"
        " 'structlog': 'structlog' in sys.modules}))")
    assert report == {"code": 0, "loaded": [], "placeholders": [], "structlog": True}
