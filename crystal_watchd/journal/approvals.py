"""The spend guard's part of the journal: which pictures it has judged, which it holds for
approval, and the approval that releases them.

A queued job that no worker has taken up yet (``settings`` unset) and no approval released
(``approved_at`` unset) is *pending*: it counts towards its folder's estimate. A pending job
the guard has not looked at yet (``cleared_at`` unset too) is *unjudged*, and never claimed
while the guard is on. The guard either clears the folder's unjudged jobs (all its pending
pictures together are estimated under ``budget.confirm_above_usd``; cleared ones still count
until a worker takes them up) or holds every pending one (``awaiting_approval``). Approving
puts held jobs back in the queue, cleared and approved, so they never count again. Because
this is the journal, daemons sharing one see the same held set, and one approval releases it
for all.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping

from ..jobs import Job, JobState
from .arrivals import chunks
from .rows import COLUMNS, into, row_to_job
from .store import Store

#: A queued job no worker has taken up and no approval released: it counts for its folder.
PENDING = "state=? AND settings IS NULL AND approved_at IS NULL"
#: A pending job the spend guard has not looked at yet.
UNJUDGED = PENDING + " AND cleared_at IS NULL"
#: What a dispatcher may claim while the guard is on: jobs it let go, or taken up before.
CLEARED = "(settings IS NOT NULL OR cleared_at IS NOT NULL)"


def _job(row: Mapping) -> Job:
    return row_to_job(row)


def _parts(estimates: Mapping[int, float]) -> list[dict[int, float]]:
    """``estimates`` in pieces of at most CHUNK jobs."""
    items = list(estimates.items())
    return [dict(part) for part in chunks(items)]


def _returning() -> str:
    return COLUMNS + ", estimated_usd"


class SpendRows:
    """The spend guard's rows, through the store it is given (statements, transactions,
    publishing)."""

    def __init__(self, store: Store):
        self.store = store

    def _folders_sql(self, column_op: str, folders: Iterable[str] | None) -> tuple[str, list]:
        names = list(folders) if folders is not None else None
        if names is None:
            return "", []
        if not names:
            return " AND 1=0" if column_op == "IN" else "", []
        return f" AND folder {column_op} ({','.join('?' * len(names))})", names

    async def unjudged(self, exclude_folders: Iterable[str] = ()) -> list[Job]:
        """Queued jobs the spend guard has still to judge, oldest first."""
        extra, names = self._folders_sql("NOT IN", exclude_folders)
        return [_job(r) for r in await self.store._rows(
            f"SELECT {self.store.columns} FROM jobs WHERE {UNJUDGED}{extra} ORDER BY id",
            (JobState.QUEUED.value, *names))]

    async def pending(self, folders: Iterable[str]) -> dict[str, dict[int, float | None]]:
        """folder → {job id: its recorded estimate (None if unjudged)} of pending jobs."""
        extra, names = self._folders_sql("IN", folders)
        out: dict[str, dict[int, float | None]] = {}
        for r in await self.store._rows(
                f"SELECT id, folder, estimated_usd FROM jobs WHERE {PENDING}{extra}",
                (JobState.QUEUED.value, *names)):
            out.setdefault(r["folder"], {})[r["id"]] = r["estimated_usd"]
        return out

    def _by_id(self, estimates: Mapping[int, float]) -> tuple[str, str, list]:
        """SQL giving each job of ``estimates`` its own estimate in one statement: the
        CASE expression, the id list, and their arguments in that order."""
        cases = " ".join("WHEN ? THEN ?" for _ in estimates)
        args = [v for pair in estimates.items() for v in pair]
        return f"CASE id {cases} END", ",".join("?" * len(estimates)), args

    async def clear_spend(self, estimates: Mapping[int, float]) -> int:
        """Let these unjudged jobs go (their folder is under the threshold), recording each
        one's estimated cost. Returns how many were still unjudged. One statement per few
        hundred jobs (a journal far away costs one round trip for a usual batch; a CASE over
        thousands of ids would cost time squared)."""
        count = 0
        for part in _parts(estimates):
            usd, ids, args = self._by_id(part)
            count += await self.store._exec(f"UPDATE jobs SET cleared_at=?, estimated_usd={usd} "
                                            f"WHERE id IN ({ids}) AND {UNJUDGED}",
                                            (time.time(), *args, *part, JobState.QUEUED.value))
        return count

    async def hold(self, estimates: Mapping[int, float]) -> list[Job]:
        """Hold these pending jobs for approval, recording each one's estimated cost. A job
        a worker took up meanwhile (or an approval released) is left alone. Returns the held
        jobs."""
        rows: list[Mapping] = []
        queued, sources = into(JobState.AWAITING_APPROVAL, only=(JobState.QUEUED,))
        for part in _parts(estimates):
            usd, ids, args = self._by_id(part)
            rows += await self.store._rows(
                f"UPDATE jobs SET state=?, estimated_usd={usd}, updated_at=? "
                f"WHERE id IN ({ids}) AND {PENDING} AND {queued} RETURNING {_returning()}",
                (JobState.AWAITING_APPROVAL.value, *args, time.time(), *part,
                 JobState.QUEUED.value, *sources))
        changed = {"state": JobState.AWAITING_APPROVAL.value, "estimated_usd": None}
        return [self.store._publish(JobState.QUEUED, _job(row), changed)
                for row in sorted(rows, key=lambda r: r["id"])]

    async def held(self, folders: Iterable[str] | None = None) -> dict[str, tuple[int, float]]:
        """folder → (pictures awaiting approval, their estimated dollars)."""
        extra, names = self._folders_sql("IN", folders)
        return {r["folder"]: (r["n"], float(r["usd"] or 0.0)) for r in await self.store._rows(
            "SELECT folder, COUNT(*) AS n, SUM(estimated_usd) AS usd FROM jobs WHERE state=?"
            f"{extra} GROUP BY folder", (JobState.AWAITING_APPROVAL.value, *names))}

    async def held_pictures(self, folders: Iterable[str]
                            | None = None) -> list[tuple[str, str, float]]:
        """(folder, file, estimated dollars) of every picture awaiting approval."""
        extra, names = self._folders_sql("IN", folders)
        return [(r["folder"], os.fsdecode(bytes(r["rel"])), float(r["estimated_usd"] or 0.0))
                for r in await self.store._rows(
                        "SELECT folder, rel, estimated_usd FROM jobs WHERE state=?"
                        f"{extra} ORDER BY folder, id",
                        (JobState.AWAITING_APPROVAL.value, *names))]

    async def approve(self, folders: Iterable[str] | None = None) -> dict[str, tuple[int, float]]:
        """Release every picture held at this moment (of ``folders``, or all): back to the
        queue, cleared and approved, so they never count towards a hold again. Later
        arrivals are judged afresh. Returns folder → (pictures released, their dollars)."""
        extra, names = self._folders_sql("IN", folders)
        held, sources = into(JobState.QUEUED, only=(JobState.AWAITING_APPROVAL,))
        async with self.store.transaction():
            rows = await self.store._rows(
                f"UPDATE jobs SET state=?, cleared_at=?, approved_at=?, updated_at=? "
                f"WHERE {held}{extra} RETURNING {_returning()}",
                (JobState.QUEUED.value, time.time(), time.time(), time.time(),
                 *sources, *names))
        released: dict[str, tuple[int, float]] = {}
        for row in rows:
            job = self.store._publish(JobState.AWAITING_APPROVAL, _job(row),
                                      {"state": JobState.QUEUED.value, "cleared_at": None})
            count, usd = released.get(job.folder, (0, 0.0))
            released[job.folder] = (count + 1, usd + float(row["estimated_usd"] or 0.0))
        return released
