"""The ``hooks:`` and ``notify:`` settings: what runs or is called after a job, and who hears
about trouble: their keys (pydantic models, checked with the rest of the config), the rules
across keys, and the frozen objects the daemon uses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field

from .fields import OptionalPath, Settings, Text, TextList, checked, num, optional
from .yamldoc import Doc, check_placeholders, kind_of, nonempty_text, text_list

HOOK_EVENTS = ("done", "failed")
HOOK_PLACEHOLDERS = ("input", "output", "folder")
NOTIFY_EVENTS = ("failed", "budget", "account", "folder", "unreachable", "daily_summary")
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
    #: fal unreachable this many seconds: tell (and tell again when it is back).
    unreachable_after: float = 600.0

    def describe(self) -> dict[str, Any]:
        return {"urls": [mask_secret_url(u) for u in self.urls],
                "urls_file": str(self.urls_file) if self.urls_file else None,
                "on": list(self.on), "daily_summary": self.daily_summary,
                "batch_seconds": self.batch_seconds,
                "unreachable_after": self.unreachable_after}


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


CLOCK = r"^\s*([01]?\d|2[0-3]):([0-5]\d)\s*$"


def _clock(value: Any) -> str:
    text = value if isinstance(value, str) else ""
    match = re.match(CLOCK, text)
    if not match:
        raise ValueError(f"must be a local time like \"18:00\", not {kind_of(value)} {value!r}")
    return f"{int(match.group(1)):02d}:{match.group(2)}"


class HookSettings(Settings):
    """One action after each job: a command (run) or a webhook (url), not both."""

    model_config = ConfigDict(json_schema_extra={
        "oneOf": [{"required": ["run"]}, {"required": ["url"]}]})

    name: Text = None
    """A name for the log and the page (default hook1, hook2, ...)."""
    on: checked(tuple[Literal[HOOK_EVENTS], ...], _events(HOOK_EVENTS), min_length=1)
    """The job outcomes that trigger it: done, failed."""
    folders: TextList = ()
    """Only for these folders (by name); left out: every folder."""
    run: checked(tuple[str, ...], _argv, min_length=1) = ()
    """A command as a list of arguments (no shell); {input}, {output} and {folder} are
    filled in."""
    url: checked(str, _http_url, pattern="^https?://") = Field(None, repr=False)
    """A webhook: the job is POSTed there as JSON."""
    secret_file: OptionalPath = None
    """A file whose content signs each webhook body (HMAC-SHA256)."""
    timeout: num(0.1, 86_400) = DEFAULT_HOOK_TIMEOUT
    """Seconds a command or webhook call may take."""


class NotifySettings(Settings):
    """Apprise notifications for trouble and a daily summary."""

    model_config = ConfigDict(json_schema_extra={
        "anyOf": [{"required": ["urls"]}, {"required": ["urls_file"]}]})

    urls: TextList = Field((), repr=False)
    """Apprise URLs (secrets: never printed)."""
    urls_file: OptionalPath = None
    """A file with one Apprise URL a line, instead of (or beside) urls."""
    on: checked(tuple[Literal[NOTIFY_EVENTS], ...], _events(NOTIFY_EVENTS),
                min_length=1) = NOTIFY_EVENTS
    """What to tell about: failed, budget, account, folder, unreachable, daily_summary."""
    daily_summary: checked(str | None, optional(_clock), pattern=CLOCK) = None
    """A local time like "18:00" for the day's summary; left out: no summary."""
    batch_seconds: num(1, 86_400) = 60.0
    """Failed jobs are gathered for this long into one message."""
    unreachable_after: num(0, 604_800) = NotifyConfig.unreachable_after
    """Seconds fal (or the network to it) must be unreachable before this is told; its
    return is told too."""


def check_hooks(doc: Doc, raw: Any, folders: set[str]) -> None:
    """What one key cannot say alone: run or url (not both), secret_file only with url,
    distinct names, and folders that exist (``folders``: the configured names)."""
    if not isinstance(raw, list):
        return
    names: set[str] = set()
    for i, item in enumerate(raw):
        if item is None:
            item = {}  # an empty list item: every key left out
        if not isinstance(item, dict):
            continue
        if "run" not in item and "url" not in item:
            doc.problem(("hooks", i), "needs run: (a command) or url: (a webhook)")
        elif "run" in item and "url" in item:
            doc.problem(("hooks", i, "url"), "give run: or url:, not both (make two hooks)")
        elif "secret_file" in item and "url" not in item:
            doc.problem(("hooks", i, "secret_file"), "signs webhook bodies; it needs url:")
        name = item.get("name", hook_name(i))
        if isinstance(name, str) and name in names:
            doc.problem(("hooks", i, "name"), f"hook name '{name}' is used twice")
        names.add(name if isinstance(name, str) else "")
        limit = item.get("folders")
        for folder in limit if isinstance(limit, list) else ():
            if isinstance(folder, str) and folder not in folders:
                doc.problem(("hooks", i, "folders"), f"no folder is named '{folder}'")


def check_notify(doc: Doc, raw: Any) -> None:
    if isinstance(raw, dict) and not raw.get("urls") and raw.get("urls_file") is None:
        doc.problem(("notify",), "needs urls: (Apprise URLs) or urls_file: (one a line)")


def hook_name(i: int) -> str:
    return f"hook{i + 1}"


def build_hooks(hooks: list[HookSettings]) -> tuple[HookConfig, ...]:
    return tuple(HookConfig(name=h.name or hook_name(i), on=h.on, folders=h.folders, run=h.run,
                            url=h.url, secret_file=h.secret_file, timeout=h.timeout)
                 for i, h in enumerate(hooks))


def build_notify(notify: NotifySettings | None) -> NotifyConfig | None:
    if notify is None:
        return None
    return NotifyConfig(urls=notify.urls, urls_file=notify.urls_file, on=notify.on,
                        daily_summary=notify.daily_summary, batch_seconds=notify.batch_seconds,
                        unreachable_after=notify.unreachable_after)
