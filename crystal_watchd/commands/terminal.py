"""``once`` on a terminal: a live progress display (rich) with the log lines printed above it.

Per folder: files done, failed and waiting in this run; below, the spend so far. INFO lines
about single jobs are summarised by the display instead of printed (``-v`` prints them,
``-q`` prints only warnings and errors). Off a terminal none of this is used: JSON lines.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ..config import Config
from ..events import Events, JobChanged
from ..jobs import JobState


class ConsoleStream:
    """A text stream for the log handler that prints through rich, above the live display."""

    def __init__(self, console: Console):
        self.console = console

    def write(self, text: str) -> int:
        line = text.rstrip("\n")
        if line:
            self.console.print(Text.from_ansi(line), soft_wrap=True)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return True


class JobLinesFilter(logging.Filter):
    """Drops below-warning lines about one job (they carry ``job_id``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        event = record.msg if isinstance(record.msg, dict) else {}
        return "job_id" not in event


class ProgressView:
    def __init__(self, config: Config, events: Events, console: Console):
        self.folders = [f.name for f in config.folders]
        self.console = console
        self.done: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self.waiting: dict[str, int] = {}
        self.spend = 0.0
        self.megapixels = 0.0
        self.last: str | None = None
        self._live = Live(self._render(), console=console, refresh_per_second=4,
                          transient=False, redirect_stdout=False, redirect_stderr=False)
        events.subscribe(self._on_change)

    def __enter__(self) -> ProgressView:
        self._live.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._live.update(self._render())
        self._live.stop()

    def _on_change(self, event: JobChanged) -> None:
        if not event.finished:
            return
        job = event.job
        if job.state == JobState.DONE:
            self.done[job.folder] += 1
            self.spend += job.cost_usd or 0.0
            self.megapixels += job.output_megapixels or 0.0
            self.last = f"done: {job.folder}/{job.rel}"
        elif job.state == JobState.FAILED:
            self.failed[job.folder] += 1
            self.last = f"failed: {job.folder}/{job.rel} ({job.error_kind})"

    def update(self, waiting: dict[str, int]) -> None:
        """Called by the service while ``once`` runs, with the jobs still waiting per folder."""
        self.waiting = waiting
        self._live.update(self._render())

    def _render(self) -> Group:
        table = Table(box=None, pad_edge=False, header_style="bold")
        for title in ("folder", "done", "failed", "waiting"):
            table.add_column(title, justify="left" if title == "folder" else "right")
        names = [*self.folders, *sorted(set(self.waiting) - set(self.folders))]
        for name in names:
            failed = self.failed[name]
            table.add_row(name, str(self.done[name]),
                          Text(str(failed), style="red" if failed else ""),
                          str(self.waiting.get(name, 0)))
        total_done, total_failed = sum(self.done.values()), sum(self.failed.values())
        summary = Text(f"{total_done} done, {total_failed} failed, "
                       f"{sum(self.waiting.values())} waiting · spend so far "
                       f"${self.spend:.2f} ({self.megapixels:.1f} MP)", style="bold")
        parts: list[Any] = [table, summary]
        if self.last:
            parts.append(Text(self.last, style="dim"))
        return Group(*parts)
