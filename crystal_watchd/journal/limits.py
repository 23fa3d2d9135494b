"""What every daemon on a journal shares and must not overrun: the slots at the upscaler,
the day's budget reservations, and submissions sent without an answer yet (so that a
restart looks for one before paying for another).

Parts of the journal (journal/base.py), through the store they are given: statements in
the common dialect, each serialised where two daemons could race.
"""

from __future__ import annotations

import time
from typing import Any

from ..errors import LeaseLost
from ..jobs import Job
from . import ledger
from .reads import JobReads
from .store import Store


class SubmitRows:
    """Submissions whose answer never came."""

    def __init__(self, store: Store):
        self.store = store

    async def submit_sending(self, job: Job, identity: str, sent_at: float) -> None:
        """A submission is about to be sent: what identifies it at the backend (its unique
        input URL, or a digest of an inline input) and the wall-clock time. Until an answer
        is recorded, a restart looks for this submission before sending another."""
        await self._set_submit(job, "submit_identity=?, submit_sent_at=?", (identity, sent_at))

    async def submit_refused(self, job: Job) -> None:
        """The backend answered without taking the submission (429, 5xx, a rejection):
        nothing is pending there."""
        await self._set_submit(job, "submit_identity=NULL, submit_sent_at=NULL", ())

    async def submit_given_up(self, job: Job, *, estimated_usd: float | None = None) -> None:
        """An unanswered submission could not be found at the backend and is sent again:
        that one may have been billed too (a ``lost_reply`` row in the ledger, at
        ``estimated_usd``, else the job's reservation)."""
        await self._set_submit(job, "submit_identity=NULL, submit_sent_at=NULL, "
                               "paid_twice=paid_twice+1", (),
                               ledger.Entry(ledger.LOST_REPLY, estimated_usd))

    async def run_abandoned(self, job: Job, *, estimated_usd: float | None = None) -> None:
        """A request was cancelled after it may have started running and brought no result:
        fal may bill that run (a ``cancelled_running`` row in the ledger), and the job is
        submitted again."""
        await self._set_submit(job, "paid_twice=paid_twice+1", (),
                               ledger.Entry(ledger.CANCELLED_RUNNING, estimated_usd))

    async def _set_submit(self, job: Job, assignments: str, args: tuple[Any, ...],
                          spend: ledger.Entry | None = None) -> None:
        mine, owner = self.store._mine()
        now = time.time()
        sql = f"UPDATE jobs SET {assignments}, updated_at=? WHERE id=?{mine}"
        if spend is None:
            if not await self.store._exec(sql, (*args, now, job.id, *owner)):
                raise LeaseLost(job.id)
            return
        async with self.store._recording(spend):
            row = await self.store._changed(f"{sql} RETURNING {ledger.SOURCE}",
                                            (*args, now, job.id, *owner), spend, now)
        if row is None:
            raise LeaseLost(job.id)

    async def unanswered_submit(self, job: Job) -> tuple[str, float] | None:
        """(identity, sent_at) of the job's submission still without an answer, if any."""
        row = await self.store._one(
                "SELECT submit_identity, submit_sent_at FROM jobs WHERE id=? AND "
                "request_id IS NULL AND submit_sent_at IS NOT NULL", (job.id,))
        return (row["submit_identity"], row["submit_sent_at"]) if row else None

    async def paid_twice(self) -> int:
        """Runs that may have been billed on top of the result taken (submissions sent
        again, requests cancelled while running): counted in the spend ledger."""
        return await ledger.paid_again(self.store)


class LimitRows:
    """Limits shared by every daemon on the journal; the budget's sums come from ``reads``."""

    def __init__(self, store: Store, reads: JobReads):
        self.store, self.reads = store, reads

    async def acquire_slot(self, job_id: int, limit: int) -> bool:
        """Take one of ``limit`` slots at the upscaler for ``job_id``, counted over every
        daemon. A job keeps its slot until it is released or the job finishes, so a request
        left at the upscaler by a dead daemon stays counted until another daemon resumes it."""
        async with self.store.transaction(exclusive=True):
            row = await self.store._one("SELECT slot_held FROM jobs WHERE id=?", (job_id,))
            if row is None:
                return False
            if row["slot_held"]:
                return True
            held = await self.store._one("SELECT COUNT(*) AS n FROM jobs WHERE slot_held=1")
            if held and held["n"] >= limit:
                return False
            await self.store._exec("UPDATE jobs SET slot_held=1 WHERE id=?", (job_id,))
            return True

    async def release_slot(self, job_id: int) -> None:
        await self.store._exec("UPDATE jobs SET slot_held=0 WHERE id=?", (job_id,))

    async def reserve_budget(self, job: Job, usd: float, *, limit: float, since: float) -> bool:
        """Reserve ``usd`` for ``job`` before it is submitted, if today's spend plus every
        reservation is still below ``limit`` (the rule a single daemon always had: submit while
        under the limit). Atomic across daemons: two cannot both take the last dollar. A job
        that already holds a reservation keeps it (a retry is not a second spend)."""
        async with self.store.transaction(exclusive=True):
            row = await self.store._one("SELECT reserved_usd FROM jobs WHERE id=?", (job.id,))
            if row is not None and row["reserved_usd"] is not None:
                return True
            if await self.reads.committed_since(since) >= limit - 1e-9:
                return False
            await self.store._exec("UPDATE jobs SET reserved_usd=? WHERE id=?", (usd, job.id))
            return True
