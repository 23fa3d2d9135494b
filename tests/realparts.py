"""One rule for tests that need a real part of the machine (PostgreSQL, Chromium with
Playwright, rsync, podman): without it they skip on a developer's machine, and FAIL under
``CI=true``, so a CI run cannot go green with a whole area left untested."""

from __future__ import annotations

import os
import shutil

import pytest


def in_ci() -> bool:
    """True where CI sets ``CI=true`` (GitHub Actions, GitLab CI and most others do)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def missing(part: str, how: str) -> None:
    """``part`` is not available here: skip the test, or fail it under CI. ``how`` says how
    to get it."""
    message = f"{part} is not available: {how}"
    if in_ci():
        pytest.fail(f"{message} (CI=true: a missing real part fails the run)", pytrace=False)
    pytest.skip(message)


def need_command(name: str, how: str) -> str:
    """The path of command ``name``, or skip/fail through ``missing``."""
    found = shutil.which(name)
    if found is None:
        missing(name, how)
    return found  # type: ignore[return-value]
