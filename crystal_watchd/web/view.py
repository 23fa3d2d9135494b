"""What the page shows, read from the journal through indexed queries.

The page never changes a job; it reads through its own read-only connection, on one thread
of its own, so a page view never holds up the event loop where the workers run.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from .. import logs
from ..config.fit import FitTarget
from ..jobs import REPORTED, Job, JobState, report_key
from ..journal import JournalBase, ledger, skipped
from ..journal.outbox import Delivery

T = TypeVar("T")
#: Every state, as ``status --json`` names them.
STATES = REPORTED
CHART_DAYS = 30


@dataclass(frozen=True)
class LiveState:
    """What only the running daemon knows (not in the journal)."""

    backend: str
    in_flight: int
    paused_until: float
    pause_reason: str | None
    over_budget: bool
    daily_usd: float | None
    #: folder → native | polling | polling-fallback | once | unavailable
    watch_modes: dict[str, str] = field(default_factory=dict)
    #: Since when fal has been unreachable (Unix time; None: reachable), and why.
    fal_unreachable_since: float | None = None
    fal_unreachable_cause: str | None = None

    @property
    def paused(self) -> bool:
        return self.paused_until > time.time()

    @property
    def waiting_for_fal(self) -> str | None:
        """"waiting for fal since HH:MM" while fal is unreachable, else None."""
        return waiting_for_fal(self.fal_unreachable_since)


def waiting_for_fal(since: float | None) -> str | None:
    """The words every view shows while fal is unreachable (local time)."""
    if since is None:
        return None
    return f"waiting for fal since {datetime.fromtimestamp(since).strftime('%H:%M')}"


@dataclass
class FolderRow:
    name: str
    counts: dict[str, int]
    oldest_file: str | None = None
    oldest_since: float | None = None


@dataclass
class Overview:
    folders: list[FolderRow]
    spend_today: float
    spend_month: float
    spend_by_day: dict[date, float]
    #: folder → (pictures awaiting approval, their estimated dollars)
    held: dict[str, tuple[int, float]] = field(default_factory=dict)
    #: What fal said it billed beside the estimate of the same runs (``JournalView.bill``).
    bill: dict[str, Any] = field(default_factory=dict)


class JournalView:
    """Read-only queries, run one at a time on a thread that owns the connection."""

    def __init__(self, opener: Callable[[], JournalBase]):
        self._open = opener
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="web-journal")
        self._journal: JournalBase | None = None

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` on the view's thread from any other thread (metrics scrapes)."""
        return self._executor.submit(fn, *args).result()

    @property
    def journal(self) -> JournalBase:
        if self._journal is None:  # created on the view's own thread, used only there
            self._journal = self._open()
        return self._journal

    def close(self) -> None:
        def shut() -> None:
            if self._journal is not None:
                self._journal.close()
        self._executor.submit(shut).result()
        self._executor.shutdown()

    # -- queries (run on the view's thread) -----------------------------------------------

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for folder, states in self.journal.counts().items():
            entry = out.setdefault(folder, dict.fromkeys(STATES, 0))
            for state, n in states.items():
                entry[report_key(state)] = n
        return out

    def totals(self) -> dict[str, dict[str, float]]:
        """Per folder: submissions, output megapixels and dollars of done jobs (what
        ``status --json`` sums as spend)."""
        return self.journal.totals_by_folder()

    def bill(self) -> dict[str, Any]:
        """What fal said it billed (units, usd) over the runs where it said, the estimate of
        those runs (estimated_usd), and whether the two differ."""
        bill: dict[str, Any] = self.journal.run(ledger.billed(self.journal.store))
        return {**bill, "differs": ledger.bill_differs(bill)}

    def overview(self, folder_names: list[str], now: float) -> Overview:
        counts = self.counts()
        rows = {name: FolderRow(name, counts.get(name, dict.fromkeys(STATES, 0)))
                for name in [*folder_names, *sorted(set(counts) - set(folder_names))]}
        for folder, (rel, created) in self.journal.oldest_waiting().items():
            row = rows.get(folder)
            if row is not None:
                row.oldest_file, row.oldest_since = rel, created
        today = datetime.fromtimestamp(now).date()
        first_day = min(today - timedelta(days=CHART_DAYS - 1), today.replace(day=1))
        # The spend ledger's rows carry the daemon's local day: summed by day in SQL.
        by_day = {date.fromisoformat(day): sum(usd.values()) for day, usd in self.journal.run(
            ledger.by_day(self.journal.store, first_day.isoformat())).items()}
        month = sum(usd for day, usd in by_day.items()
                    if (day.year, day.month) == (today.year, today.month))
        chart = {today - timedelta(days=i): by_day.get(today - timedelta(days=i), 0.0)
                 for i in range(CHART_DAYS - 1, -1, -1)}
        return Overview(list(rows.values()), by_day.get(today, 0.0), month, chart,
                        self.held(), self.bill())

    def held(self) -> dict[str, tuple[int, float]]:
        """folder → (pictures the spend guard holds, their estimated dollars)."""
        return self.journal.held()

    def recent(self, limit: int = 24, folder: str | None = None) -> list[Job]:
        return self.journal.latest_finished(JobState.DONE, folder=folder, limit=limit)

    def failures(self, limit: int = 100) -> list[Job]:
        return self.journal.latest_finished(JobState.FAILED, limit=limit)

    def delivery_counts(self) -> dict[str, int]:
        """Hook deliveries per state (none in a journal the daemon has not migrated)."""
        return self.journal.delivery_counts() if self.journal.has("deliveries") else {}

    def given_up(self) -> list[Delivery]:
        return self.journal.given_up() if self.journal.has("deliveries") else []

    def job(self, job_id: int) -> Job | None:
        try:
            return self.journal.get(job_id)
        except KeyError:
            return None


def error_report(job: Job, failed_dir: Path | None) -> dict[str, Any] | None:
    """The ``.error.json`` beside a failed original, if it can be read."""
    candidates = [job.path.with_name(job.path.name + ".error.json")]
    if failed_dir is not None:
        candidates.append(failed_dir / (job.rel + ".error.json"))
    for path in candidates:
        try:
            with open(path, "rb") as fh:
                data = json.loads(fh.read(256 * 1024))
            return data if isinstance(data, dict) else None
        except (OSError, ValueError):
            continue
    return None


def scrubbed(report: dict[str, Any] | None) -> str | None:
    return None if report is None else logs.scrub(json.dumps(report, indent=2))


def when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "–"


def ago(ts: float | None) -> str:
    if not ts:
        return "–"
    seconds = max(0, time.time() - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"


def job_spend(view: JournalView, job_id: int) -> dict[str, float | None]:
    """The job's estimate and what fal billed for it (run on the view's thread)."""
    journal = view.journal
    return journal.run(ledger.of_job(journal.store, job_id))


#: Settings the local backend takes no notice of (it only scales).
LOCAL_IGNORES = ("creativity",)


def settings_shown(settings: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The settings a job was run with, as the job page lists them: empty values (no
    ``result_format`` for the local backend, no ``fit``) left out, and what the local
    backend ignores said to be ignored."""
    shown = []
    local = (settings or {}).get("backend") == "local"
    for key, value in sorted((settings or {}).items()):
        if value in ("", None):
            continue
        text = json.dumps(value, sort_keys=True) if isinstance(value, dict) else str(value)
        if local and key in LOCAL_IGNORES:
            text += " (ignored by the local backend)"
        elif key == "scale_factor" and (settings or {}).get("fit"):
            text += " (not used: the fit decides each picture's factor)"
        shown.append((key, text))
    return shown


def scale_shown(settings: dict[str, Any] | None) -> str:
    """How a job's size was chosen, in a few words: ``×2``, or the fit's target."""
    if not settings:
        return "×?"
    fit = FitTarget.from_plain(settings.get("fit"))
    return f"fit to {fit.describe()}" if fit else f"×{settings.get('scale_factor', '?')}"


def attempts_shown(job: Job) -> int:
    """Runs of the job: a done job ran at least once, though its first run counts as no
    retry in the journal's ``attempts``."""
    return max(job.attempts, 1) if job.state == JobState.DONE else job.attempts


#: Files not taken the overview lists, newest first.
NOT_TAKEN_SHOWN = 50


def not_taken(view: JournalView) -> dict[str, list[Any]]:
    """What has not come out and why: files seen but not taken, and files taken to be
    still arriving (with since when), for the overview (run on the view's thread)."""
    journal = view.journal
    skipped_rows = journal.run(skipped.recent(journal.store, limit=NOT_TAKEN_SHOWN))
    return {"skipped": skipped_rows, "arriving": journal.jobs(state=JobState.ARRIVING)}


def phases_shown(job: Job, seen: dict[str, float]) -> list[tuple[str, float]]:
    """The job page's timings, in order: what the journal keeps (queued, started, submitted,
    finished; these survive a restart) with what this daemon saw happen (``seen``: the
    output written, a retry). After a retry only the times since it are the attempt's."""
    phases = {"queued": job.created_at, "started": job.started_at,
              "submitted": job.submitted_at}
    if job.state in (JobState.DONE, JobState.FAILED):
        phases[job.state.value] = job.finished_at
    retried = seen.get("retried")
    phases = {name: at for name, at in phases.items()
              if at is not None and (retried is None or name == "queued" or at >= retried)}
    phases.update(seen)
    return sorted(phases.items(), key=lambda kv: kv[1])
