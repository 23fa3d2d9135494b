"""The daemon's dispatcher: which queued jobs start when (slots and the queue ahead of
them, budget checks, claims, jobs of a dead daemon), and what a finished job or a refused
account changes.

    Journal (queued) ─► _dispatch ─► Worker.process (≤ concurrency × PREPARE_AHEAD at once)
                             ▲                         └─► Journal (done / failed / retry)
                             └── wake ◄── intake, retry, approve, a job finishing

Part of ``Service`` (daemon/service.py), which owns the state these methods share.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from .. import logs
from ..days import next_midnight
from ..errors import AccountError
from ..jobs import JobState

log = logs.get(__name__)
PREPARE_AHEAD = 3
DISPATCH_POLL = 2.0  # seconds; the longest the dispatcher sleeps without looking at the queue
BUDGET_RECHECK = 60.0  # seconds before new submissions try the spent budget again


class Dispatch:
    """Scheduling of queued jobs onto workers, for ``Service``."""

    async def _excluded_folders(self) -> set[str]:
        configured = {f.name for f in self.config.folders}
        return self._unavailable | (await self.journal.queued_folders() - configured)

    async def _dispatch(self) -> None:
        while not self._stopping:
            self._wake.clear()
            now = time.time()
            # Up to three times `concurrency` jobs run at once: a third hold a slot at the
            # upscaler, the others prepare or finish beside them (see backends.base.Slots).
            free = self.config.concurrency * PREPARE_AHEAD - len(self._inflight)
            paused = now < self._paused_until
            excluded = await self._excluded_folders()
            over_budget = await self._over_budget(now)
            # Hold what would spend too much at once, before anything is taken.
            if not paused and await self.guard.review(excluded):
                self._notify_status()
            # Jobs of a dead daemon first, even when busy: they may hold the slots at the
            # upscaler that our own jobs wait for.
            orphans = [] if paused else await self.journal.take_over(
                exclude_folders=excluded, limit=self.config.concurrency)
            if (free > 0 and not paused) or orphans:
                jobs = orphans + (await self.journal.claim_ready(
                    now, exclude_folders=excluded, limit=free, only_paid=over_budget)
                    if free > 0 and not paused else [])
                for job in jobs:
                    task = asyncio.create_task(self.worker.process(job), name=f"job-{job.id}")
                    self._inflight[job.id] = task
                    task.add_done_callback(lambda t, job_id=job.id: self._job_finished(job_id, t))
                if jobs:
                    continue
            timeout = None
            wakeup = await self.journal.next_wakeup(exclude_folders=excluded)
            if wakeup is not None and free > 0:
                timeout = max(0.05, (self._paused_until if paused else wakeup) - now)
                if over_budget:
                    timeout = max(0.05, min(timeout if wakeup > now else 60.0,
                                            next_midnight(now) - now))
            # Another process (``crystal-watchd retry``) may queue work: look again now and then.
            timeout = min(timeout or DISPATCH_POLL, DISPATCH_POLL)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _over_budget(self, now: float) -> bool:
        if self.backend.name == "local":
            return False
        if now < self._budget_full_until:
            return True
        # Kept for the page, which reads it without a journal query of its own.
        self._over_budget_seen = await self._budget.reached(self.config.budget.daily_usd, now,
                                                            self.journal)
        return self._over_budget_seen

    def _job_finished(self, job_id: int, task: asyncio.Task) -> None:
        self._inflight.pop(job_id, None)
        if not task.cancelled() and task.exception() is None:
            state = task.result()
            if state == JobState.DONE:
                self._done_this_run += 1
            elif state == JobState.FAILED:
                self._failed_this_run += 1
        elif not task.cancelled():
            log.error("job_task_crashed", job_id=job_id, error=repr(task.exception()))
        self._wake.set()
        self._notify_status()

    def _budget_full(self) -> None:
        now = time.time()
        if now >= self._budget_full_until:
            log.warning("budget_fully_reserved", daily_usd=self.config.budget.daily_usd,
                        note="today's budget is spent or reserved by jobs in flight; new "
                             "submissions wait; requests already paid for still finish")
        self.alerts.on_budget_reached(self.config.budget.daily_usd)
        # Look again now and then: a reservation freed by a failed job makes room.
        self._budget_full_until = min(now + BUDGET_RECHECK, next_midnight(now))
        self._wake.set()

    def _account_error(self, exc: AccountError) -> None:
        delay = exc.delay or 300.0
        first = time.time() >= self._paused_until
        self._paused_until = time.time() + delay
        self._pause_reason = exc.reason
        if first:
            self.alerts.on_account_paused(exc.reason)
            log.error("account_paused", reason=exc.reason, resume_in=delay,
                      note="no file is failed; all submissions wait (SIGHUP resumes now)")
