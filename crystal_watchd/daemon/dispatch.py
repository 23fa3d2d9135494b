"""The daemon's dispatcher: which queued jobs start when (slots and the queue ahead of
them, budget checks, claims, jobs of a dead daemon), and what a finished job or a refused
account changes.

    Journal (queued) ─► Dispatcher.run ─► process (Worker.process, ≤ concurrency ×
                             ▲                  │      PREPARE_AHEAD at once)
                             │                  └─► Journal (done / failed / retry)
                             └── Running.wake ◄── intake, retry, approve, a job finishing

``Service`` (daemon/service.py) builds the dispatcher and hands it the shared ``Running``
state; the worker's callbacks for a refused account or a full budget are its methods.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from .. import logs
from ..config import Config
from ..days import next_midnight
from ..errors import AccountError
from ..jobs import Job, JobState
from ..journal import JournalBase
from ..waits import event_set
from .budget import Budget
from .notify import Alerts
from .running import Running
from .spendguard import SpendGuard

log = logs.get(__name__)
PREPARE_AHEAD = 3
DISPATCH_POLL = 2.0  # seconds; the longest the dispatcher sleeps without looking at the queue
BUDGET_RECHECK = 60.0  # seconds before new submissions try the spent budget again


class Dispatcher:
    """Which queued jobs start when, and what a finished job or a refused account changes.

    Given the config (a function: a reload replaces it), the journal, the spend guard, the
    alerts, the shared ``Running`` state (it writes ``inflight`` and the pause), ``charges``
    (whether the backend bills: the local one never is over budget) and ``status_changed``
    (the status line). Owns the daily budget check, the budget hold after a worker found no
    reservation left, and this run's done and failed counts.
    """

    def __init__(self, config: Callable[[], Config], journal: JournalBase, guard: SpendGuard,
                 alerts: Alerts, running: Running, *, charges: bool,
                 status_changed: Callable[[], None]):
        self._config = config
        self._journal = journal
        self._guard = guard
        self._alerts = alerts
        self._running = running
        self._charges = charges
        self._status_changed = status_changed
        self._budget = Budget()
        self._budget.on_reached = alerts.on_budget_reached
        #: A worker found no budget left to reserve: dispatch only paid work until then.
        self._budget_full_until = 0.0
        self._over_budget_seen = False
        #: Jobs of this run that ended done or failed (``once``'s exit code, the last log).
        self.done = 0
        self.failed = 0

    async def _excluded_folders(self) -> set[str]:
        configured = {f.name for f in self._config().folders}
        return self._running.unavailable | (await self._journal.queued_folders() - configured)

    async def run(self, process: Callable[[Job], Awaitable[JobState]]) -> None:
        """Start queued jobs with ``process`` until the daemon stops."""
        running, journal = self._running, self._journal
        while not running.stopping:
            running.wake.clear()
            now = time.time()
            # Up to three times `concurrency` jobs run at once: a third hold a slot at the
            # upscaler, the others prepare or finish beside them (see backends.base.Slots).
            free = self._config().concurrency * PREPARE_AHEAD - len(running.inflight)
            # fal away: jobs stay queued (those in flight wait behind the backend's breaker).
            unreachable = running.fal_unreachable_since is not None
            paused = running.paused(now) or unreachable
            excluded = await self._excluded_folders()
            over_budget = await self.over_budget(now)
            # Hold what would spend too much at once, before anything is taken.
            if not paused and await self._guard.review(excluded):
                self._status_changed()
            # Jobs of a dead daemon first, even when busy: they may hold the slots at the
            # upscaler that our own jobs wait for.
            orphans = [] if paused else await journal.take_over(
                exclude_folders=excluded, limit=self._config().concurrency)
            if (free > 0 and not paused) or orphans:
                jobs = orphans + (await journal.claim_ready(
                    now, exclude_folders=excluded, limit=free, only_paid=over_budget)
                    if free > 0 and not paused else [])
                for job in jobs:
                    task = asyncio.create_task(process(job), name=f"job-{job.id}")
                    running.inflight[job.id] = task
                    task.add_done_callback(lambda t, job_id=job.id: self._job_finished(job_id, t))
                if jobs:
                    continue
            timeout = None
            wakeup = await journal.next_wakeup(exclude_folders=excluded)
            if wakeup is not None and free > 0 and not unreachable:
                timeout = max(0.05, (running.paused_until if paused else wakeup) - now)
                if over_budget:
                    timeout = max(0.05, min(timeout if wakeup > now else 60.0,
                                            next_midnight(now) - now))
            # Another process (``crystal-watchd retry``) may queue work: look again now and then.
            timeout = min(timeout or DISPATCH_POLL, DISPATCH_POLL)
            await event_set(running.wake, timeout)

    async def over_budget(self, now: float) -> bool:
        """Whether new submissions wait for the budget (read from the journal)."""
        if not self._charges:
            return False
        if now < self._budget_full_until:
            return True
        # Kept for the page, which reads it without a journal query of its own.
        self._over_budget_seen = await self._budget.reached(self._config().budget.daily_usd,
                                                            now, self._journal)
        return self._over_budget_seen

    def over_budget_known(self, now: float) -> bool:
        """What the page shows: the budget hold as last seen, without a journal query."""
        return self._charges and (now < self._budget_full_until or self._over_budget_seen)

    def lift_holds(self) -> None:
        """A reload: the account pause and the budget hold end; the budget is looked at
        afresh (and told again when it is reached)."""
        self._running.paused_until = 0.0
        self._running.pause_reason = None
        self._budget_full_until = 0.0
        self._over_budget_seen = False
        self._budget.reset()

    def _job_finished(self, job_id: int, task: asyncio.Task) -> None:
        self._running.inflight.pop(job_id, None)
        if not task.cancelled() and task.exception() is None:
            state = task.result()
            if state == JobState.DONE:
                self.done += 1
            elif state == JobState.FAILED:
                self.failed += 1
        elif not task.cancelled():
            log.error("job_task_crashed", job_id=job_id, error=repr(task.exception()))
        self._running.wake.set()
        self._status_changed()

    def budget_full(self) -> None:
        """The worker's callback: no budget left to reserve for a submission today."""
        now = time.time()
        daily_usd = self._config().budget.daily_usd
        if now >= self._budget_full_until:
            log.warning("budget_fully_reserved", daily_usd=daily_usd,
                        note="today's budget is spent or reserved by jobs in flight; new "
                             "submissions wait; requests already paid for still finish")
        self._alerts.on_budget_reached(daily_usd)
        # Look again now and then: a reservation freed by a failed job makes room.
        self._budget_full_until = min(now + BUDGET_RECHECK, next_midnight(now))
        self._running.wake.set()

    def account_error(self, exc: AccountError) -> None:
        """The worker's callback: the account was refused; every submission waits."""
        running = self._running
        delay = exc.delay or 300.0
        first = time.time() >= running.paused_until
        running.paused_until = time.time() + delay
        running.pause_reason = exc.reason
        if first:
            self._alerts.on_account_paused(exc.reason)
            log.error("account_paused", reason=exc.reason, resume_in=delay,
                      note="no file is failed; all submissions wait (SIGHUP resumes now)")
