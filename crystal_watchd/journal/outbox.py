"""The outbox: hook deliveries, journaled in the same transaction as the job change they
report, so a crash between the two can lose neither. The delivery loop (daemon/hooks.py)
takes due rows from here and records how each attempt went; a delivery keeps its id across
retries so a receiver can drop repeats (delivery is at least once).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..jobs import Job, JobState
from .store import Store

PENDING, DELIVERED, GAVE_UP = "pending", "delivered", "gave_up"
DELIVERY_STATES = (PENDING, DELIVERED, GAVE_UP)
#: The hook event a job's new state stands for.
EVENT_OF_STATE = {JobState.DONE.value: "done", JobState.FAILED.value: "failed"}
DELIVERY_COLUMNS = ("id, delivery_id, job_id, hook, event, payload, state, attempts, "
                    "next_attempt_at, last_error, created_at, updated_at")


@dataclass(frozen=True)
class Delivery:
    id: int
    delivery_id: str
    job_id: int
    hook: str
    event: str
    #: The exact JSON body sent (and signed) at every attempt.
    payload: str
    state: str
    attempts: int
    next_attempt_at: float
    last_error: str | None
    created_at: float
    updated_at: float

    @property
    def fields(self) -> dict[str, Any]:
        return json.loads(self.payload)


def job_fields(job: Job, event: str) -> dict[str, Any]:
    """What a hook is told about a job (the JSON body, and the CW_* variables)."""
    return {"event": event, "job_id": job.id, "folder": job.folder, "file": job.rel,
            "input": os.fsdecode(job.path), "outputs": list(job.outputs),
            "cost_usd": job.cost_usd, "reason": job.reason, "error": job.error_kind,
            "request_id": job.request_id, "finished_at": job.finished_at}


class OutboxRows:
    """The outbox operations of a journal, through the store it is given (its statements,
    transactions, and the configured ``hooks``)."""

    def __init__(self, store: Store):
        self.store = store

    async def add_deliveries(self, job: Job, values: dict[str, Any]) -> None:
        """Inside the job change's transaction: one row per hook that wants this change."""
        event = EVENT_OF_STATE.get(values.get("state"))  # type: ignore[arg-type]
        if event is None:
            return
        now = time.time()
        for hook in self.store.hooks:
            if not hook.wants(event, job.folder):
                continue
            delivery_id = str(uuid.uuid4())
            body = {"delivery_id": delivery_id, "hook": hook.name, **job_fields(job, event)}
            await self.store._exec(
                    "INSERT INTO deliveries (delivery_id, job_id, hook, event, payload, "
                    "state, attempts, next_attempt_at, created_at, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, 0, 0, ?, ?)",
                    (delivery_id, job.id, hook.name, event,
                     json.dumps(body, sort_keys=True), PENDING, now, now))

    def wants_deliveries(self, values: dict[str, Any]) -> bool:
        return bool(self.store.hooks) and values.get("state") in EVENT_OF_STATE

    async def _deliveries(self, where: str, args: Iterable[Any] = (), *,
                          limit: int = 100) -> list[Delivery]:
        rows = await self.store._rows(f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE {where} "
                                      "ORDER BY next_attempt_at, id LIMIT ?", (*args, limit))
        return [Delivery(**dict(r)) for r in rows]

    async def claim_deliveries(self, now: float, hold: float, limit: int = 8, *,
                               hooks: Iterable[str] | None = None) -> list[Delivery]:
        """Due deliveries (of the ``hooks`` named, if given: daemons sharing a journal may
        have different hooks), each taken for ``hold`` seconds (a daemon that dies
        mid-attempt leaves it to be tried again after that) and counted as one more
        attempt."""
        names = list(hooks) if hooks is not None else None
        if names is not None and not names:
            return []
        only = f" AND hook IN ({','.join('?' * len(names))})" if names else ""
        claimed = []
        for d in await self._deliveries(f"state=? AND next_attempt_at<=?{only}",
                                        (PENDING, now, *(names or ())), limit=limit):
            # Taken only if nobody else took it since we read it (another daemon on a
            # shared journal): the row must still say what we read.
            if await self.store._exec(
                    "UPDATE deliveries SET next_attempt_at=?, attempts=attempts+1, "
                    "updated_at=? WHERE id=? AND state=? AND next_attempt_at=?",
                    (now + hold, now, d.id, PENDING, d.next_attempt_at)):
                claimed.append(Delivery(**{**d.__dict__, "attempts": d.attempts + 1}))
        return claimed

    async def next_delivery_at(self, hooks: Iterable[str]) -> float | None:
        names = list(hooks)
        if not names:
            return None
        row = await self.store._one(
                "SELECT MIN(next_attempt_at) AS t FROM deliveries WHERE state=? "
                f"AND hook IN ({','.join('?' * len(names))})", (PENDING, *names))
        return row["t"] if row else None

    async def orphan_deliveries(self, hooks: Iterable[str]) -> int:
        """Pending deliveries of hooks no longer configured give up (one daemon's journal
        only: with a shared one another daemon may still have the hook)."""
        names = list(hooks)
        only = f" AND hook NOT IN ({','.join('?' * len(names))})" if names else ""
        return await self.store._exec(
            f"UPDATE deliveries SET state=?, last_error=?, updated_at=? WHERE state=?{only}",
            (GAVE_UP, "no hook of this name is configured any more", time.time(), PENDING,
             *names))

    async def delivery_done(self, delivery: Delivery) -> None:
        await self.store._exec(
                "UPDATE deliveries SET state=?, last_error=NULL, updated_at=? WHERE id=?",
                (DELIVERED, time.time(), delivery.id))

    async def delivery_failed(self, delivery: Delivery, error: str, *,
                              retry_in: float | None) -> None:
        """Try again in ``retry_in`` seconds, or give up (None)."""
        now = time.time()
        await self.store._exec(
                "UPDATE deliveries SET state=?, last_error=?, next_attempt_at=?, updated_at=? "
                "WHERE id=?", (GAVE_UP if retry_in is None else PENDING, error[:2000],
                               now + (retry_in or 0), now, delivery.id))

    async def retry_deliveries(self, ids: Iterable[int] | None = None) -> int:
        """Given-up deliveries (all, or those with these ids) are tried again from scratch,
        with the same delivery id."""
        wanted = list(ids) if ids is not None else []
        only = f" AND id IN ({','.join('?' * len(wanted))})" if wanted else ""
        return await self.store._exec(
                "UPDATE deliveries SET state=?, attempts=0, next_attempt_at=0, "
                f"updated_at=? WHERE state=?{only}",
                (PENDING, time.time(), GAVE_UP, *wanted))

    async def delivery_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(DELIVERY_STATES, 0)
        for r in await self.store._rows(
                "SELECT state, COUNT(*) AS n FROM deliveries GROUP BY state"):
            counts[r["state"]] = r["n"]
        return counts

    async def given_up(self, limit: int = 100) -> list[Delivery]:
        return await self._deliveries("state=?", (GAVE_UP,), limit=limit)
