"""Notifications people see, through Apprise (e-mail, ntfy, Matrix, Slack, Telegram, …).

Failed jobs are gathered into one message per ``batch_seconds`` (a shoot that fails at once
sends one message, not two hundred); budget reached, account paused, a folder gone or back
are sent as they happen (once per day, per pause, per change); an optional daily summary
says what was done, what failed and what it cost. Sending happens off the event loop, and a
message that cannot be sent is logged and dropped: notifications never disturb the daemon.
The URLs hold passwords and tokens: they are never logged, only their scheme and host.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .. import logs
from ..config.automation import NotifyConfig, mask_secret_url, read_urls_file
from ..days import local_midnight
from ..events import JobChanged
from ..jobs import JobState

log = logs.get(__name__)
#: Files listed in one failure message; the rest are counted.
LIST_LIMIT = 20
TICK = 1.0


@dataclass(frozen=True)
class Message:
    title: str
    body: str
    #: Apprise's notify type: info, success, warning, failure.
    kind: str = "info"


def notify_urls(config: NotifyConfig) -> list[str]:
    """The configured URLs and those of ``urls_file`` (read now, so a rotated password in the
    file needs no restart)."""
    urls = list(config.urls)
    if config.urls_file is not None:
        urls += read_urls_file(config.urls_file)
    return urls


def invalid_urls(config: NotifyConfig) -> list[str]:
    """The URLs Apprise cannot use, masked (for ``check``)."""
    import apprise

    try:
        urls = notify_urls(config)
    except OSError as exc:
        return [f"urls_file {config.urls_file} cannot be read: {exc.strerror or exc}"]
    bad = []
    for url in urls:
        if not apprise.Apprise().add(url):
            bad.append(f"{mask_secret_url(url)} is not a notification URL Apprise knows")
    if not urls:
        bad.append("no notification URL is configured")
    return bad


def send(config: NotifyConfig, message: Message) -> bool:
    """Send ``message`` to every URL (blocking: call from a thread). False if any failed."""
    import apprise

    try:
        urls = notify_urls(config)
    except OSError as exc:
        log.error("notify_failed", title=message.title,
                  error=f"urls_file cannot be read: {exc.strerror or exc}")
        return False
    for url in urls:
        _hide(url)
    target = apprise.Apprise()
    for url in urls:
        target.add(url)
    try:
        ok = bool(target.notify(body=message.body, title=message.title,
                                notify_type=message.kind))
    except Exception as exc:  # noqa: BLE001 - a notification must never disturb the daemon
        ok = False
        log.error("notify_failed", title=message.title, error=type(exc).__name__)
        return False
    if not ok:
        log.error("notify_failed", title=message.title,
                  targets=[mask_secret_url(u) for u in urls],
                  note="Apprise could not deliver to at least one target")
    else:
        log.info("notify_sent", title=message.title)
    return ok


def _hide(url: str) -> None:
    """Keep a URL and the password in it out of every log line (Apprise's own included)."""
    logs.register_secret(url)
    with contextlib.suppress(ValueError):
        password = urlsplit(url).password
        if password:
            logs.register_secret(unquote(password))
    # Apprise logs each message sent with its target at INFO: not ours to print.
    logging.getLogger("apprise").setLevel(logging.WARNING)


class Alerts:
    """What the daemon tells people. The service calls the ``on_*`` methods; ``run`` sends
    batched failures and the daily summary. ``clock`` gives Unix time (tests move it)."""

    def __init__(self, config: Callable[[], NotifyConfig | None], journal,
                 clock: Callable[[], float] = time.time):
        self.config, self.journal, self.clock = config, journal, clock
        self._failed: list[str] = []
        self._batch_due: float | None = None
        self._budget_day: str | None = None
        self._summary_day: str | None = None
        self._sending: set[asyncio.Task] = set()
        #: The current fal outage (since, cause), and whether it was told.
        self._outage: tuple[float, str] | None = None
        self._outage_told = False

    def _wants(self, event: str) -> NotifyConfig | None:
        config = self.config()
        return config if config is not None and event in config.on else None

    # -- what happens ---------------------------------------------------------------------

    def on_change(self, event: JobChanged) -> None:
        if event.finished and event.job.state == JobState.FAILED:
            config = self._wants("failed")
            if config is None:
                return
            job = event.job
            self._failed.append(f"{job.folder}/{job.rel}: {job.reason or job.error_kind}")
            if self._batch_due is None:
                self._batch_due = self.clock() + config.batch_seconds

    def on_budget_reached(self, daily_usd: float | None) -> None:
        day = time.strftime("%Y-%m-%d", time.localtime(self.clock()))
        if self._budget_day == day or self._wants("budget") is None:
            return
        self._budget_day = day
        self._post(Message("crystal-watchd: today's budget is reached",
                           f"Today's spend has reached the daily budget of ${daily_usd:.2f}. "
                           "New pictures wait in the queue until midnight or until the budget "
                           "is raised (then reload).", "warning"))

    def on_account_paused(self, reason: str) -> None:
        if self._wants("account") is not None:
            self._post(Message("crystal-watchd: fal account paused",
                               f"fal refused work: {reason}. No file is failed; submissions "
                               "wait. Fix the account (key, balance), then reload.",
                               "failure"))

    def on_fal_unreachable(self, since: float, cause: str) -> None:
        """fal went away; told once it has lasted ``unreachable_after`` (see ``tick``)."""
        self._outage, self._outage_told = (since, cause), False

    def on_fal_reachable(self, lasted: float) -> None:
        """fal answers again: told when its going away was."""
        told, self._outage, self._outage_told = self._outage_told, None, False
        if told and self._wants("unreachable") is not None:
            self._post(Message("crystal-watchd: fal is reachable again",
                               f"fal answers again after {_duration(lasted)} away; the waiting "
                               "files are being processed.", "success"))

    def _outage_due(self, now: float) -> None:
        config = self._wants("unreachable")
        if self._outage is None or self._outage_told or config is None:
            return
        since, cause = self._outage
        if now - since >= config.unreachable_after:
            self._outage_told = True
            at = datetime.fromtimestamp(since).strftime("%H:%M")
            self._post(Message("crystal-watchd: waiting for fal",
                               f"fal (or the network to it) has been unreachable since {at} "
                               f"({cause}). No file is failed and nothing is paid twice: "
                               "every file waits and resumes when fal answers.", "warning"))

    def on_folder(self, name: str, inbox: Path, available: bool) -> None:
        if self._wants("folder") is None:
            return
        if available:
            self._post(Message(f"crystal-watchd: folder {name} is back",
                               f"The inbox {inbox} is available again; watching resumes.",
                               "success"))
        else:
            self._post(Message(f"crystal-watchd: folder {name} is unavailable",
                               f"The inbox {inbox} is gone (unmounted share, removed disk?). "
                               "The folder is paused; nothing is treated as deleted.",
                               "warning"))

    # -- sending --------------------------------------------------------------------------

    def _post(self, message: Message) -> None:
        config = self.config()
        if config is None:
            return
        task = asyncio.get_running_loop().create_task(asyncio.to_thread(send, config, message))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            try:
                await self.tick()
            except Exception:
                log.exception("notify_loop_error")

    async def tick(self) -> None:
        """Send what is due at ``clock()``: a batch of failures, the daily summary."""
        now = self.clock()
        if self._batch_due is not None and now >= self._batch_due:
            self.flush()
        self._outage_due(now)
        config = self.config()
        if config is None or config.daily_summary is None or "daily_summary" not in config.on:
            return
        local = datetime.fromtimestamp(now)
        day = local.date().isoformat()
        due = local.strftime("%H:%M") >= config.daily_summary
        if self._summary_day is None and due:
            # Started (or restarted) after today's summary time: today's was sent already
            # or is not ours to send; the next is tomorrow's.
            self._summary_day = day
        elif due and self._summary_day != day:
            self._summary_day = day
            self._post(await self.summary(now))
        elif not due and self._summary_day is None:
            self._summary_day = ""  # looked before the time: today's summary is ours

    def flush(self) -> None:
        """Send the failures gathered so far (if any) in one message."""
        files, self._failed, self._batch_due = self._failed, [], None
        if not files:
            return
        listed = "\n".join(f"- {line}" for line in files[:LIST_LIMIT])
        more = f"\n… and {len(files) - LIST_LIMIT} more" if len(files) > LIST_LIMIT else ""
        self._post(Message(f"crystal-watchd: {len(files)} file{'s' if len(files) != 1 else ''} "
                           "failed", f"{listed}{more}\n\nFix the cause, then retry them "
                           "(web page or 'crystal-watchd retry').", "failure"))

    async def summary(self, now: float) -> Message:
        since = local_midnight(now)
        counts = {r["state"]: r["n"] for r in await self.journal.query(
            "SELECT state, COUNT(*) AS n FROM jobs WHERE finished_at>=? AND state IN (?, ?) "
            "GROUP BY state", (since, JobState.DONE.value, JobState.FAILED.value))}
        spent = await self.journal.spent_since(since)
        done, failed = counts.get("done", 0), counts.get("failed", 0)
        return Message(f"crystal-watchd: {done} done, {failed} failed today",
                       f"Today: {done} done, {failed} failed, spend ${spent:.2f}.",
                       "failure" if failed else "info")

    async def drain(self) -> None:
        """Send what is gathered and wait for messages on their way (end of ``once``, stop)."""
        self.flush()
        await self.drain_sending()

    async def drain_sending(self) -> None:
        """Wait (a while) for the messages on their way."""
        if self._sending:
            # asyncio.wait raises none of the tasks' errors; send() logs its own
            await asyncio.wait(list(self._sending), timeout=30)


def _duration(seconds: float) -> str:
    minutes = seconds / 60
    return f"{minutes:.0f} min" if minutes >= 1 else f"{seconds:.0f} s"
