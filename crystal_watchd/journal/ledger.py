"""The spend ledger: one row per run of a job that fal billed or may have billed, and the
only place spend is summed.

A row is written by the journal change that reports the run, in the same transaction (or
the same statement): the result we took (``output_written``), a request cancelled after it
had started running, a submission sent again because the answer to the first one was lost.
A copy of an earlier output costs nothing and has no row. Each row carries our estimate,
and room for what fal says it billed (``billed_units``, ``billed_usd``) where it says so;
what a row costs is the bill where known, else the estimate. ``day`` is the daemon's local
date when the row was written: the daily budget sums one day's rows, however the job ended
(a failed job's billed runs count too).

The readers below (the budget, ``status``, the page, ``/metrics``) take any store: each is a
coroutine over its ``query``, so a command's ``SyncJournal`` runs it with ``journal.run``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

#: The run whose result we took.
RESULT = "result"
#: A request cancelled (at ``fal.timeout``) after it may have started running.
CANCELLED_RUNNING = "cancelled_running"
#: A submission sent again because the answer to an earlier one was lost and that one could
#: not be found at fal.
LOST_REPLY = "lost_reply"
#: A submission fal refused (422) after it may have billed it.
REJECTED = "rejected"
#: A run paid again, counted in a journal older than the ledger (which did not say why).
RESUBMITTED = "resubmitted"
KINDS = (RESULT, CANCELLED_RUNNING, LOST_REPLY, REJECTED, RESUBMITTED)
#: Runs that may have been paid on top of the one whose result we took.
PAID_AGAIN = (CANCELLED_RUNNING, LOST_REPLY, RESUBMITTED)

#: What a row costs: fal's bill where it said, else our estimate.
USD = "COALESCE(billed_usd, estimated_usd)"
#: What a changed job row must return for its ledger row to be written from it.
SOURCE = "id, folder, request_id, cost_usd, reserved_usd, estimated_usd"
#: The columns a writer fills (the id comes from the database).
WRITTEN = ("job_id, folder, request_id, kind, estimated_usd, billed_units, billed_usd, day, "
           "created_at")

def day_of(ts: float) -> str:
    """The local date of ``ts``, as rows carry it."""
    return time.strftime("%Y-%m-%d", time.localtime(ts))


def rows_of_job(job: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ledger rows an exported job of a journal without a ledger stands for: the same
    rule as the schema's back-fill (``schema.SPEND_BACKFILL``)."""
    at = job.get("finished_at") or job.get("updated_at") or time.time()
    runs = 1 + (job.get("paid_twice") or 0)
    finished = (job.get("cost_usd") or 0) > 0 and job.get("outputs") not in (None, "", "[]")
    each = (job["cost_usd"] / runs if finished
            else job.get("reserved_usd") or job.get("estimated_usd") or 0.0)
    kinds = ([RESULT] if finished and job.get("state") in ("done", "queued", "running")
             else []) + [RESUBMITTED] * (runs - 1)
    return [{"job_id": job.get("id"), "folder": job["folder"],
             "request_id": job.get("request_id") if kind == RESULT else None, "kind": kind,
             "estimated_usd": each, "billed_units": None, "billed_usd": None,
             "day": day_of(at), "created_at": at} for kind in kinds]


@dataclass(frozen=True)
class Entry:
    """A run to record with a job change. A result row costs the job's recorded cost; any
    other the ``estimated_usd`` given (None: the job's reservation or guard estimate)."""

    kind: str
    estimated_usd: float | None = None
    billed_units: float | None = None
    billed_usd: float | None = None
    #: Write the row only if the job has none of this kind for the same request yet (a
    #: result fetched again after its outputs were lost is not paid again).
    once_per_request: bool = False

    def insert(self, source: str, now: float, where: str = "",
               where_args: tuple[Any, ...] = ()) -> tuple[str, tuple[Any, ...]]:
        """``INSERT … SELECT`` of this row from ``source``: the jobs table (``where``
        narrowing it to the job) or a CTE holding the changed row. A job's id, folder and
        request id come from there."""
        result = self.kind == RESULT
        # A result costs what the job recorded; another run what the caller estimates, else
        # the job's reservation or the spend guard's estimate (``source`` returns both).
        usd = "COALESCE(cost_usd, 0)" if result else "COALESCE(?, reserved_usd, estimated_usd, 0)"
        # A result that cost nothing (the local backend, a copy) is no billed run.
        cond = "COALESCE(cost_usd, 0) > 0" if result else "1=1"
        if self.once_per_request:
            cond += (f" AND NOT EXISTS (SELECT 1 FROM spend s WHERE s.job_id={source}.id "
                     f"AND s.kind=? AND s.request_id={source}.request_id)")
        args: tuple[Any, ...] = (
            self.kind, *(() if result else (self.estimated_usd,)),
            self.billed_units, self.billed_usd, day_of(now), now,
            *((self.kind,) if self.once_per_request else ()), *where_args)
        return (f"INSERT INTO spend ({WRITTEN}) SELECT id, folder, request_id, ?, {usd}, ?, ?, "
                f"?, ? FROM {source} WHERE {cond}{where}"), args


class Store(Protocol):
    async def query(self, sql: str, args: Any = ()) -> list[Mapping[str, Any]]: ...

    def has(self, name: str) -> bool: ...


async def _query(store: Store, sql: str,
                 args: tuple[Any, ...] = ()) -> list[Mapping[str, Any]]:
    if not store.has("spend"):
        return []  # a read-only look at a journal its daemon has not migrated yet
    return await store.query(sql, args)


async def _usd(store: Store, sql: str, args: tuple[Any, ...] = ()) -> float:
    rows = await _query(store, sql, args)
    return float(rows[0]["usd"] or 0.0) if rows else 0.0


async def spent_on(store: Store, day: str) -> float:
    """Dollars of every billed or possibly billed run on local date ``day``."""
    return await _usd(store, f"SELECT SUM({USD}) AS usd FROM spend WHERE day=?", (day,))


async def spent_since(store: Store, since: float) -> float:
    """Dollars of every billed or possibly billed run since the Unix time ``since``."""
    return await _usd(store, f"SELECT SUM({USD}) AS usd FROM spend WHERE created_at>=?",
                      (since,))


def spent_sql(day: str) -> tuple[str, tuple[Any, ...]]:
    """A scalar subquery of ``day``'s spend, for statements that need it inside theirs."""
    return f"(SELECT COALESCE(SUM({USD}), 0) FROM spend WHERE day=?)", (day,)


async def by_folder(store: Store) -> dict[str, float]:
    """folder → dollars of every run ever recorded."""
    rows = await _query(store, f"SELECT folder, SUM({USD}) AS usd FROM spend GROUP BY folder")
    return {r["folder"]: float(r["usd"] or 0.0) for r in rows}


async def by_day(store: Store, since_day: str = "") -> dict[str, dict[str, float]]:
    """local date → folder → dollars, of ``since_day`` and later (all days by default)."""
    out: dict[str, dict[str, float]] = {}
    for r in await _query(store, f"SELECT day, folder, SUM({USD}) AS usd FROM spend "
                               "WHERE day>=? GROUP BY day, folder", (since_day,)):
        out.setdefault(r["day"], {})[r["folder"]] = float(r["usd"] or 0.0)
    return out


async def paid_again(store: Store) -> int:
    """Runs that may have been paid on top of the result taken (``maybe_paid_twice``)."""
    marks = ",".join("?" * len(PAID_AGAIN))
    rows = await _query(store, f"SELECT COUNT(*) AS n FROM spend WHERE kind IN ({marks})",
                        PAID_AGAIN)
    return int(rows[0]["n"]) if rows else 0


async def billed(store: Store) -> dict[str, float]:
    """What fal said it billed beside our estimate, over the rows where it said:
    ``units``, ``usd`` and ``estimated_usd`` (zeros while fal has said nothing)."""
    rows = await _query(store, "SELECT SUM(billed_units) AS units, SUM(billed_usd) AS usd, "
                        "SUM(estimated_usd) AS estimated FROM spend "
                        "WHERE billed_units IS NOT NULL OR billed_usd IS NOT NULL")
    row = dict(rows[0]) if rows else {}  # a sqlite3.Row has no .get
    return {"units": float(row.get("units") or 0.0), "usd": float(row.get("usd") or 0.0),
            "estimated_usd": float(row.get("estimated") or 0.0)}


#: Dollars by which fal's bill and our estimate may differ before they are said to differ.
BILL_TOLERANCE_USD = 0.005


def bill_differs(bill: dict[str, float]) -> bool:
    """Whether what fal said it billed (``billed()``) differs from the estimate."""
    return abs(bill["usd"] - bill["estimated_usd"]) > BILL_TOLERANCE_USD


async def of_job(store: Store, job_id: int) -> dict[str, float | None]:
    """One job's runs: ``estimated_usd`` over all of them; ``billed_usd`` and
    ``billed_units`` over those fal said it billed (None where it said nothing)."""
    rows = await _query(store, "SELECT SUM(estimated_usd) AS estimated, SUM(billed_usd) AS usd,"
                        " SUM(billed_units) AS units, COUNT(*) AS runs FROM spend "
                        "WHERE job_id=?", (int(job_id),))
    row = dict(rows[0]) if rows else {}
    return {"estimated_usd": float(row.get("estimated") or 0.0),
            "billed_usd": None if row.get("usd") is None else float(row["usd"]),
            "billed_units": None if row.get("units") is None else float(row["units"]),
            "runs": float(row.get("runs") or 0)}
