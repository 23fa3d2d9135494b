"""The ``hooks:`` and ``notify:`` settings: what runs or is called after a job, and who hears
about trouble. Parsed with config.py's checks (file, line and key in every problem).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .yamldoc import (
    Doc,
    Section,
    check_placeholders,
    kind_of,
    nonempty_text,
    number,
    path_in,
    text_list,
)

HOOK_EVENTS = ("done", "failed")
HOOK_KEYS = ("name", "on", "folders", "run", "url", "secret_file", "timeout")
HOOK_PLACEHOLDERS = ("input", "output", "folder")
NOTIFY_EVENTS = ("failed", "budget", "account", "folder", "daily_summary")
NOTIFY_KEYS = ("urls", "urls_file", "on", "daily_summary", "batch_seconds")
DEFAULT_HOOK_TIMEOUT = 60.0
DEFAULT_HOOK_ATTEMPTS = 10


@dataclass(frozen=True)
class HookConfig:
    """One post-action: a command (``run``) or a webhook (``url``), for some events and
    folders."""

    name: str
    on: tuple[str, ...]
    #: Empty: every folder.
    folders: tuple[str, ...] = ()
    run: tuple[str, ...] = ()
    #: Kept out of repr: a webhook URL may carry a token.
    url: str | None = field(default=None, repr=False)
    secret_file: Path | None = None
    timeout: float = DEFAULT_HOOK_TIMEOUT

    def wants(self, event: str, folder: str) -> bool:
        return event in self.on and (not self.folders or folder in self.folders)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "on": list(self.on), "folders": list(self.folders) or "all",
                "run": list(self.run) or None,
                "url": mask_secret_url(self.url) if self.url else None,
                "secret_file": str(self.secret_file) if self.secret_file else None,
                "timeout": self.timeout}


@dataclass(frozen=True)
class NotifyConfig:
    """Apprise notifications. The URLs are secrets (passwords, tokens): never printed."""

    urls: tuple[str, ...] = field(default=(), repr=False)
    urls_file: Path | None = None
    on: tuple[str, ...] = NOTIFY_EVENTS
    #: "HH:MM" local time for the day's summary; None: no summary.
    daily_summary: str | None = None
    #: Failed jobs are gathered for this long into one message.
    batch_seconds: float = 60.0

    def describe(self) -> dict[str, Any]:
        return {"urls": [mask_secret_url(u) for u in self.urls],
                "urls_file": str(self.urls_file) if self.urls_file else None,
                "on": list(self.on), "daily_summary": self.daily_summary,
                "batch_seconds": self.batch_seconds}


def mask_secret_url(url: str) -> str:
    """Only the scheme and host of a notification or webhook URL: the rest (user, password,
    token paths) may be secret."""
    match = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://(?:[^@/]*@)?([^/:?#]*)", url)
    if not match:
        return "***"
    return f"{match.group(1)}://{match.group(2) or '***'}/***"


def read_urls_file(path: Path) -> tuple[str, ...]:
    """One URL a line; blank lines and ``#`` comments are skipped."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return tuple(s for s in (line.strip() for line in lines) if s and not s.startswith("#"))


def _events(allowed: tuple[str, ...]):
    def check(value: Any) -> tuple[str, ...]:
        items = text_list(value)
        for item in items:
            if item not in allowed:
                raise ValueError(f"unknown event {item!r}; use {', '.join(allowed)}")
        if not items:
            raise ValueError(f"must name at least one of {', '.join(allowed)}")
        return tuple(dict.fromkeys(items))
    return check


def _argv(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        raise ValueError("must be a list of arguments (no shell), like "
                         "[\"/usr/local/bin/upload\", \"{output}\"]")
    argv = text_list(value)
    if not argv:
        raise ValueError("must name a program")
    for arg in argv:
        try:
            check_placeholders(arg, HOOK_PLACEHOLDERS)
        except ValueError as exc:
            raise ValueError(f"{exc} (in {arg!r})") from None
    return argv


def _http_url(value: Any) -> str:
    url = nonempty_text(value).strip()
    if not url.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL")
    return url


def _clock(value: Any) -> str:
    text = value if isinstance(value, str) else ""
    match = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", text.strip())
    if not match:
        raise ValueError(f"must be a local time like \"18:00\", not {kind_of(value)} {value!r}")
    return f"{int(match.group(1)):02d}:{match.group(2)}"


def parse_hooks(doc: Doc, raw: Any, base: Path, folders: set[str]) -> tuple[HookConfig, ...]:
    """``folders``: the configured folder names (a hook limited to another never runs)."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        doc.problem(("hooks",), f"must be a list of hooks, not {kind_of(raw)}")
        return ()
    hooks: list[HookConfig] = []
    for i, item in enumerate(raw):
        sec = Section(doc, item, ("hooks", i), HOOK_KEYS)
        name = sec.get("name", nonempty_text, f"hook{i + 1}")
        on = sec.get("on", _events(HOOK_EVENTS))
        limit = sec.get("folders", text_list, ())
        for folder in limit:
            if folder not in folders:
                doc.problem(("hooks", i, "folders"), f"no folder is named '{folder}'")
        run = sec.get("run", _argv, ())
        url = sec.get("url", _http_url, None)
        secret = sec.get("secret_file", lambda v: None if v is None else path_in(base)(v), None)
        timeout = sec.get("timeout", number(0.1, 86_400), DEFAULT_HOOK_TIMEOUT)
        if "run" not in sec.data and "url" not in sec.data:
            doc.problem(("hooks", i), "needs run: (a command) or url: (a webhook)")
        elif "run" in sec.data and "url" in sec.data:
            doc.problem(("hooks", i, "url"), "give run: or url:, not both (make two hooks)")
        elif "secret_file" in sec.data and "url" not in sec.data:
            doc.problem(("hooks", i, "secret_file"), "signs webhook bodies; it needs url:")
        if name in {h.name for h in hooks}:
            doc.problem(("hooks", i, "name"), f"hook name '{name}' is used twice")
        if on:
            hooks.append(HookConfig(name=name, on=on, folders=limit, run=run, url=url,
                                    secret_file=secret, timeout=timeout))
    return tuple(hooks)


def parse_notify(doc: Doc, raw: Any, base: Path) -> NotifyConfig | None:
    if raw is None:
        return None
    sec = Section(doc, raw, ("notify",), NOTIFY_KEYS)
    urls = sec.get("urls", text_list, ())
    urls_file = sec.get("urls_file", lambda v: None if v is None else path_in(base)(v), None)
    if not urls and urls_file is None:
        doc.problem(("notify",), "needs urls: (Apprise URLs) or urls_file: (one a line)")
    notify = NotifyConfig(
        urls=urls, urls_file=urls_file,
        on=sec.get("on", _events(NOTIFY_EVENTS), NOTIFY_EVENTS),
        daily_summary=sec.get("daily_summary", lambda v: None if v is None else _clock(v), None),
        batch_seconds=sec.get("batch_seconds", number(1, 86_400), 60.0))
    return notify

