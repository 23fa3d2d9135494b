"""The journal's reads: jobs, what is known of a folder, counts and spend, what is ready.

A part of the journal (journal/base.py): it reads through the store it is given.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..jobs import Job, JobState
from . import ledger
from .approvals import CLEARED
from .rows import NOT_WAITING, UNFINISHED, WAITING, fs_bytes, marks, row_to_job
from .store import Store


class JobReads:
    """Reading jobs and totals; no state changes here."""

    def __init__(self, store: Store):
        self.store = store

    async def get(self, job_id: int) -> Job:
        row = await self.store._one(f"SELECT {self.store.columns} FROM jobs WHERE id=?", (job_id,))
        if row is None:
            raise KeyError(job_id)
        return row_to_job(row)

    async def jobs(self, *, state: JobState | None = None, folder: str | None = None) -> list[Job]:
        sql, args = f"SELECT {self.store.columns} FROM jobs WHERE 1=1", []
        if state is not None:
            sql += " AND state=?"
            args.append(state.value)
        if folder is not None:
            sql += " AND folder=?"
            args.append(folder)
        return [row_to_job(r) for r in await self.store._rows(sql + " ORDER BY id", args)]

    async def known_versions(self, folder: str) -> set[tuple[str, int, int]]:
        """(path, size, mtime_ns) of every job of ``folder`` that is not superseded: a file
        found by a scan with one of these is already journaled and needs no hashing."""
        rows = await self.store._rows(
                "SELECT path, size, mtime_ns FROM jobs WHERE folder=? AND state!=?",
                (folder, JobState.SUPERSEDED.value))
        return {(os.fsdecode(bytes(r["path"])), r["size"], r["mtime_ns"]) for r in rows}

    async def is_known(self, folder: str, path: Path, size: int, mtime_ns: int) -> bool:
        return await self.store._one(
            "SELECT 1 AS one FROM jobs WHERE folder=? AND path=? AND size=? AND mtime_ns=? "
            "AND state!=?",
            (folder, fs_bytes(path), size, mtime_ns, JobState.SUPERSEDED.value)) is not None

    async def find_done_output(self, folder: str, sha256: str, settings_key: str) -> Job | None:
        """An earlier finished job with the same content and settings: one that did the work
        itself (not a copy, so a copy always names the job that was paid for), in ``folder``
        if there is one, else in any folder (the settings decide the output, not the folder)."""
        row = await self.store._one(
            f"SELECT {self.store.columns} FROM jobs WHERE sha256=? AND settings_key=? AND state=? "
            "ORDER BY CASE WHEN submissions > 0 THEN 0 ELSE 1 END, "
            "CASE WHEN folder=? THEN 0 ELSE 1 END, id DESC LIMIT 1",
            (sha256, settings_key, JobState.DONE.value, folder))
        return row_to_job(row) if row else None

    async def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for r in await self.store._rows(
                "SELECT folder, state, COUNT(*) AS n FROM jobs GROUP BY folder, state"):
            out.setdefault(r["folder"], {})[r["state"]] = r["n"]
        return out

    async def spent_since(self, since: float) -> float:
        """Dollars of every billed or possibly billed run since ``since`` (a Unix time),
        however its job ended: the spend ledger's sum."""
        return await ledger.spent_since(self.store, since)

    async def spent_on(self, day: str) -> float:
        """Dollars of every billed or possibly billed run on local date ``day``."""
        return await ledger.spent_on(self.store, day)

    async def committed_since(self, since: float) -> float:
        """Spent on the local day of ``since`` (the ledger) plus what unfinished jobs have
        reserved: the dollars no further submission may use."""
        # Two indexed sums, not one pass over every job: a submission waits for this answer
        # in an exclusive transaction, and a journal keeps every job it ever finished.
        spent, spent_args = ledger.spent_sql(ledger.day_of(since))
        row = await self.store._one(
            f"SELECT {spent} + (SELECT COALESCE(SUM(reserved_usd), 0) FROM jobs WHERE state IN "
            f"({marks(UNFINISHED)})) AS usd", (*spent_args, *UNFINISHED))
        return float(row["usd"] or 0.0) if row else 0.0

    async def totals_by_folder(self) -> dict[str, dict[str, float]]:
        """Per folder: submissions, output megapixels of done jobs, and the dollars of every
        billed or possibly billed run (the spend ledger's, however the job ended)."""
        spent = await ledger.by_folder(self.store)
        out: dict[str, dict[str, float]] = {}
        for r in await self.store._rows(
                "SELECT folder, SUM(submissions) AS subs, "
                "SUM(CASE WHEN state=? THEN COALESCE(output_megapixels, 0) ELSE 0 END) AS mp "
                "FROM jobs GROUP BY folder", (JobState.DONE.value,)):
            out[r["folder"]] = {"submissions": r["subs"] or 0, "megapixels": r["mp"] or 0.0,
                                "usd": spent.get(r["folder"], 0.0)}
        return out

    async def latest_finished(self, state: JobState, *, folder: str | None = None,
                              limit: int = 24) -> list[Job]:
        """The jobs that most recently finished in ``state`` (of ``folder``, if given), in
        one query."""
        only = " AND folder=?" if folder is not None else ""
        rows = await self.store._rows(
            f"SELECT {self.store.columns} FROM jobs WHERE state=?{only} "
            "ORDER BY finished_at DESC LIMIT ?",
            (state.value, *((folder,) if folder is not None else ()), limit))
        return [row_to_job(r) for r in rows]

    async def spend_rows(self) -> list[Mapping[str, Any]]:
        """folder, finished_at, cost_usd, output_megapixels of every finished job (the
        megapixels; dollars are summed from the spend ledger)."""
        return await self.store._rows(
                "SELECT folder, finished_at, cost_usd, output_megapixels FROM jobs "
                "WHERE state=?", (JobState.DONE.value,))

    async def oldest_waiting(self) -> dict[str, tuple[str, float]]:
        """folder → (file, since) of its oldest queued or running job."""
        out: dict[str, tuple[str, float]] = {}
        for r in await self.store._rows(
                "SELECT folder, rel, created_at FROM jobs WHERE state IN (?, ?) "
                "ORDER BY created_at DESC", (JobState.QUEUED.value,
                                             JobState.RUNNING.value)):
            out[r["folder"]] = (os.fsdecode(bytes(r["rel"])), r["created_at"])
        return out

    async def last_errors(self, limit: int = 10) -> list[Job]:
        rows = await self.store._rows(
                f"SELECT {self.store.columns} FROM jobs WHERE error_kind IS NOT NULL AND "
                "state IN (?, ?) ORDER BY updated_at DESC LIMIT ?",
                (JobState.FAILED.value, JobState.QUEUED.value, limit))
        return [row_to_job(r) for r in rows]

    def ready_filter(self, now: float, exclude_folders: Iterable[str],
                     only_paid: bool) -> tuple[str, list[Any]]:
        excluded = list(exclude_folders)
        sql = (f"state IN ({marks(WAITING)}) AND next_attempt_at<=?"
               + (f" AND folder NOT IN ({','.join('?' * len(excluded))})" if excluded else "")
               + (" AND (request_id IS NOT NULL OR pending!='[]' OR outputs!='[]')"
                  if only_paid else "")
               + f" AND {NOT_WAITING}"
               # While the spend guard is on, a job it has not judged yet is never taken.
               + (f" AND {CLEARED}" if self.store.spend_guard else ""))
        return sql, [*WAITING, now, *excluded]

    async def next_ready(self, now: float, *, exclude_folders: Iterable[str] = (),
                         limit: int = 1, only_paid: bool = False) -> list[Job]:
        """Queued jobs whose time has come, oldest first. ``only_paid``: just the ones that
        already hold a backend request or an output (resuming them costs nothing more)."""
        where, args = self.ready_filter(now, exclude_folders, only_paid)
        rows = await self.store._rows(f"SELECT {self.store.columns} FROM jobs WHERE {where} "
                                      "ORDER BY next_attempt_at, id LIMIT ?", (*args, limit))
        return [row_to_job(r) for r in rows]

    async def next_wakeup(self, *, exclude_folders: Iterable[str] = ()) -> float | None:
        """When the earliest queued job becomes ready (None if nothing is queued)."""
        excluded = list(exclude_folders)
        row = await self.store._one(
            f"SELECT MIN(next_attempt_at) AS t FROM jobs WHERE state IN ({marks(WAITING)}) "
            f"AND {NOT_WAITING}"
            + (f" AND folder NOT IN ({marks(excluded)})" if excluded else ""),
            (*WAITING, *excluded))
        return row["t"] if row else None

    async def waiting_by_folder(self) -> dict[str, int]:
        """Queued or running jobs per folder."""
        return {r["folder"]: r["n"] for r in await self.store._rows(
            "SELECT folder, COUNT(*) AS n FROM jobs WHERE state IN (?, ?) GROUP BY folder",
            (JobState.QUEUED.value, JobState.RUNNING.value))}

    async def queued_folders(self) -> set[str]:
        return {r["folder"] for r in await self.store._rows(
            f"SELECT DISTINCT folder FROM jobs WHERE state IN ({marks(WAITING)})", WAITING)}

    async def unfinished(self, folders: Iterable[str] | None = None) -> int:
        """Jobs still to finish (of ``folders`` only, if given: a shared journal also holds
        other daemons' folders)."""
        names = list(folders) if folders is not None else None
        row = await self.store._one(
            f"SELECT COUNT(*) AS n FROM jobs WHERE state IN ({marks(UNFINISHED)})"
            + (f" AND folder IN ({marks(names)})" if names else ""),
            (*UNFINISHED, *(names or ())))
        return row["n"] if row else 0

    async def arriving_later(self, folders: Iterable[str], now: float) -> list[Job]:
        """Jobs of ``folders`` still taken to be arriving at ``now``: their grace has not run
        out yet (``once`` leaves them for its next run instead of waiting)."""
        names = list(folders)
        if not names:
            return []
        rows = await self.store._rows(
                f"SELECT {self.store.columns} FROM jobs WHERE state=? AND next_attempt_at>? "
                f"AND folder IN ({','.join('?' * len(names))}) ORDER BY id",
                (JobState.ARRIVING.value, now, *names))
        return [row_to_job(r) for r in rows]
