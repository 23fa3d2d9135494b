"""One version everywhere: the installed package's metadata, ``crystal-watchd --version``,
``crystal_watchd.__version__`` and the CHANGELOG's newest release agree."""

from __future__ import annotations

import re
from importlib import metadata

from conftest import ROOT, cli

import crystal_watchd


def test_package_cli_and_changelog_name_the_same_version():
    """The version pyproject.toml takes from ``__version__`` is what the installed metadata,
    ``--version`` and the CHANGELOG's first dated release say."""
    version = crystal_watchd.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    assert metadata.version("crystal-watchd") == version
    shown = cli("--version")
    assert shown.returncode == 0
    assert shown.stdout.strip() == f"crystal-watchd {version}"
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    releases = re.findall(r"^## \[(\d+\.\d+\.\d+)\] - (\d{4}-\d{2}-\d{2})$", changelog, re.M)
    assert releases and releases[0][0] == version
    assert [r[0] for r in releases] == sorted((r[0] for r in releases),
                                              key=lambda v: tuple(map(int, v.split("."))),
                                              reverse=True)


def test_metrics_and_the_page_name_the_version(tmp_path):
    """``/metrics`` carries ``crystal_watchd_build_info{version=…} 1`` and every page's
    header names the version."""
    from prometheus_client import CollectorRegistry, generate_latest

    from crystal_watchd.journal import SqliteJournal
    from crystal_watchd.web.metrics import _JournalCollector
    from crystal_watchd.web.view import JournalView, LiveState

    SqliteJournal(tmp_path / "j.sqlite3").close()  # a fresh journal
    view = JournalView(lambda: SqliteJournal(tmp_path / "j.sqlite3"))
    try:
        registry = CollectorRegistry()
        registry.register(_JournalCollector(view, lambda: LiveState("local", 0, 0, None, False,
                                                                   None), lambda: ["f"]))
        text = generate_latest(registry).decode()
    finally:
        view.close()
    version = crystal_watchd.__version__
    assert f'crystal_watchd_build_info{{version="{version}"}} 1.0' in text
    base = (ROOT / "crystal_watchd/web/templates/base.html").read_text(encoding="utf-8")
    assert "{{ version }}" in base
