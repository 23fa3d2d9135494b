"""What every journal store does, written once: the reads, and every job state change.

The journal is also the queue. A job becomes durable when the file is detected, before any
work or money is spent on it; a restart reads the queue back from here. The SQL below is the
common dialect of SQLite and PostgreSQL (``?`` placeholders, ``{now}`` for the database
clock); a store supplies the connection, the schema, and the few operations that need its
own locking (claims, concurrency slots, budget reservations).

Every operation is a coroutine: a store never blocks the event loop (SQLite runs on a thread
of its own, PostgreSQL through psycopg's asynchronous API). Commands that run once (``status``,
``retry``, ``journal export``) use the same operations through ``SyncJournal``.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import IllegalTransition, LeaseLost
from ..events import Events, JobChanged
from ..jobs import Job, JobState
from . import ledger
from .approvals import SpendRows
from .arrivals import Arrival, ArrivalRows
from .daemons import DaemonRows
from .limits import LimitRows, SubmitRows
from .outbox import OutboxRows
from .reads import JobReads
from .rows import COLUMNS, UNFINISHED, fs_bytes, into, marks, row_to_job


class _Part:
    """A journal operation one of its parts carries out: ``get = _Part("reads")`` makes
    ``journal.get`` the reads part's ``get``, same name and signature."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __init__(self, part: str):
        self.part = part

    def __get__(self, journal: Any, owner: type | None = None) -> Any:
        if journal is None:
            return self
        return getattr(getattr(journal, self.part), self.name)


class JournalBase:
    """The job store: the state changes, written once, and the parts it is composed of
    (each given this store). Subclasses set ``db_clock`` and implement the primitives
    below (the ``Store`` interface, journal/store.py)."""

    #: SQL for "now" in Unix seconds on the database's clock (leases and heartbeats use it,
    #: so daemons on hosts whose clocks disagree still agree on when a lease ends).
    db_clock = ""
    #: True when several daemons may share this journal (leases, global limits matter).
    shared = False
    lease: float = 60.0
    daemon_id: str | None = None
    #: (host, state_dir) of the registered daemon.
    home: tuple[str, str] | None = None
    #: What ``SELECT`` reads for a job (a read-only look at an older journal fills columns it
    #: does not have yet with NULL).
    columns = COLUMNS
    #: Tables and ``table.column``s of the schema this journal lacks: only ever any in a
    #: read-only look at a journal its daemon has not migrated yet.
    schema_gaps: frozenset[str] = frozenset()
    #: Where job changes are published (the web page, metrics, the terminal view).
    events: Events | None = None
    #: The configured hooks (set by the service, again on reload): which deliveries a
    #: finished job gets.
    hooks: tuple[Any, ...] = ()
    #: Set by the spend guard while it is on: only cleared jobs may be claimed.
    spend_guard = False
    #: Round trips to the database so far (statements, and a transaction's begin and end):
    #: what the benchmark reports per job.
    round_trips = 0

    def __init__(self) -> None:
        self.reads = JobReads(self)
        self.arrivals = ArrivalRows(self)
        self.daemon_rows = DaemonRows(self)
        self.outbox = OutboxRows(self)
        self.spend = SpendRows(self)
        self.submits = SubmitRows(self)
        self.limits = LimitRows(self, self.reads)

    # -- what the parts do, under the journal's names ----------------------------------------

    get = _Part("reads")
    jobs = _Part("reads")
    known_versions = _Part("reads")
    is_known = _Part("reads")
    find_done_output = _Part("reads")
    counts = _Part("reads")
    spent_since = _Part("reads")
    spent_on = _Part("reads")
    committed_since = _Part("reads")
    totals_by_folder = _Part("reads")
    latest_finished = _Part("reads")
    spend_rows = _Part("reads")
    oldest_waiting = _Part("reads")
    last_errors = _Part("reads")
    next_ready = _Part("reads")
    next_wakeup = _Part("reads")
    waiting_by_folder = _Part("reads")
    queued_folders = _Part("reads")
    unfinished = _Part("reads")
    arriving_later = _Part("reads")

    known_among = _Part("arrivals")

    register_daemon = _Part("daemon_rows")
    heartbeat = _Part("daemon_rows")
    unregister_daemon = _Part("daemon_rows")
    daemons = _Part("daemon_rows")

    claim_deliveries = _Part("outbox")
    next_delivery_at = _Part("outbox")
    orphan_deliveries = _Part("outbox")
    delivery_done = _Part("outbox")
    delivery_failed = _Part("outbox")
    retry_deliveries = _Part("outbox")
    delivery_counts = _Part("outbox")
    given_up = _Part("outbox")

    unjudged = _Part("spend")
    pending = _Part("spend")
    clear_spend = _Part("spend")
    hold = _Part("spend")
    held = _Part("spend")
    held_pictures = _Part("spend")
    approve = _Part("spend")

    submit_sending = _Part("submits")
    submit_refused = _Part("submits")
    submit_given_up = _Part("submits")
    run_abandoned = _Part("submits")
    unanswered_submit = _Part("submits")
    paid_twice = _Part("submits")

    acquire_slot = _Part("limits")
    release_slot = _Part("limits")
    reserve_budget = _Part("limits")

    # -- primitives a store provides -------------------------------------------------------

    async def _rows(self, sql: str, args: Iterable[Any] = ()) -> list[Mapping[str, Any]]:
        raise NotImplementedError

    async def _exec(self, sql: str, args: Iterable[Any] = ()) -> int:
        """Run a statement; returns the number of rows it changed."""
        raise NotImplementedError

    def transaction(self, *,
                    exclusive: bool = False) -> contextlib.AbstractAsyncContextManager[None]:
        """Statements inside run in one transaction; ``exclusive`` also serialises it with
        every other exclusive transaction (of any daemon) for check-then-write operations."""
        raise NotImplementedError

    async def open(self) -> JournalBase:
        """Connect (and migrate); returns the store itself."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def backup_if_due(self) -> Path | None:
        """Back the journal up if its daily backup is due; the file written, or None. A
        PostgreSQL journal is backed up with the database's own tools (pg_dump)."""
        return None

    def has(self, name: str) -> bool:
        """Whether the journal has table ``name`` (or column ``table.column``): readers of
        an older journal skip what it cannot have, and any other failure surfaces."""
        return name not in self.schema_gaps

    def _sql(self, sql: str) -> str:
        return sql.replace("{now}", self.db_clock)

    async def query(self, sql: str, args: Iterable[Any] = ()) -> list[Mapping[str, Any]]:
        """Read-only SQL in the dialect both stores speak, for readers (the web page); rows
        by column name."""
        return await self._rows(sql, args)

    async def _one(self, sql: str, args: Iterable[Any] = ()) -> Mapping[str, Any] | None:
        rows = await self._rows(sql, args)
        return rows[0] if rows else None

    # -- state changes ---------------------------------------------------------------------

    def _mine(self) -> tuple[str, tuple[Any, ...]]:
        """The condition that keeps a daemon's changes to the jobs it still holds: one whose
        lease ran out and was taken over is another daemon's now."""
        if self.shared and self.daemon_id is not None:
            return " AND (owner IS NULL OR owner=?)", (self.daemon_id,)
        return "", ()

    #: True when a store writes a job change and its ledger row in one statement (no
    #: transaction around them needed).
    records_in_one_statement = False

    async def _changed(self, sql: str, args: tuple[Any, ...], spend: ledger.Entry | None,
                       now: float) -> Mapping[str, Any] | None:
        """Run ``sql`` (an ``UPDATE jobs … RETURNING`` at least ``ledger.SOURCE``), and
        write ``spend``'s ledger row for the changed job. The caller holds a transaction
        unless ``records_in_one_statement``."""
        row = await self._one(sql, args)
        if row is not None and spend is not None:
            await self._exec(*spend.insert("jobs", now, " AND jobs.id=?", (row["id"],)))
        return row

    def _recording(self, spend: ledger.Entry | None,
                   outbox: bool = False) -> contextlib.AbstractAsyncContextManager[None]:
        """The transaction a change needs: its deliveries, or its ledger row where the store
        writes that in a statement of its own, go with it or not at all."""
        needed = outbox or (spend is not None and not self.records_in_one_statement)
        return self.transaction() if needed else contextlib.nullcontext()

    async def _update(self, job: Job, spend: ledger.Entry | None = None, **values: Any) -> Job:
        values["updated_at"] = time.time()
        cols = ", ".join(f"{k}=?" for k in values)
        mine, owner = self._mine()
        target = JobState(values["state"]) if "state" in values else None
        guard, sources = into(target) if target else ("", ())
        outbox = self.outbox.wants_deliveries(values)
        returning = COLUMNS + (", reserved_usd, estimated_usd" if spend is not None else "")
        # One statement, one round trip: the changed row comes back with the update. A
        # change that hooks report writes its deliveries in the same transaction, and a
        # billed run its ledger row.
        async with self._recording(spend, outbox):
            row = await self._changed(
                f"UPDATE jobs SET {cols} WHERE id=?{mine}"
                f"{' AND ' + guard if guard else ''} RETURNING {returning}",
                (*values.values(), job.id, *owner, *sources), spend, values["updated_at"])
            if row is not None and outbox:
                await self.outbox.add_deliveries(row_to_job(row), values)
        if row is None:
            await self._refused(job.id, target, bool(mine))
        return self._publish(job.state, row_to_job(row), values)

    async def _refused(self, job_id: int, target: JobState | None, guarded: bool) -> None:
        """Why a guarded change of one job changed nothing: raises KeyError (no such job),
        LeaseLost (another daemon holds it) or IllegalTransition (its state forbids it)."""
        row = await self._one("SELECT state, owner FROM jobs WHERE id=?", (job_id,))
        if row is None:
            raise KeyError(job_id)
        if target is None or (guarded and row["owner"] not in (None, self.daemon_id)):
            raise LeaseLost(job_id)
        raise IllegalTransition(job_id, row["state"], target.value)

    def _publish(self, before: JobState | None, job: Job, values: Mapping[str, Any]) -> Job:
        """Tell readers (page, metrics, terminal) that ``job`` changed; returns it."""
        if self.events is not None:
            self.events.publish(JobChanged(job, before, frozenset(values)))
        return job

    async def _insert_job(self, values: dict[str, Any]) -> int | None:
        """Insert one job row; None if this exact version is journaled already."""
        raise NotImplementedError

    async def enqueue_many(self, folder: str, arrivals: Sequence[Arrival]) -> list[Job]:
        """Journal settled files of ``folder`` in one transaction, each as ``enqueue`` does:
        a version journaled already (by any daemon) is skipped, older unfinished versions
        of its path are superseded. Returns the new jobs, in path order. Each store does it
        in as few round trips as it can (journal/arrivals.py has the shared statements)."""
        raise NotImplementedError

    async def enqueue(self, folder: str, path: Path, rel: str, size: int, mtime_ns: int,
                      sha256: str) -> Job | None:
        """Journal a detected file. Returns the new job, or None if this exact version
        (path + size + mtime + hash) is already journaled (by any daemon). Older unfinished
        versions of the same path are superseded: the file changed before we got to it."""
        jobs = await self.enqueue_many(folder, [Arrival(path, rel, size, mtime_ns, sha256)])
        return jobs[0] if jobs else None

    async def recover(self) -> int:
        """At start: jobs a dead process held go back to the queue, keeping their
        request_id and pending outputs so the next attempt resumes rather than redoes. In a
        shared journal only jobs whose lease ran out are taken back (others are alive), and
        those of an earlier run on this host and ``state_dir``: the lock there says that
        daemon is gone, so its jobs need not wait for their leases."""
        running, sources = into(JobState.QUEUED, only=(JobState.RUNNING,))
        if not self.shared:
            return await self._exec(f"UPDATE jobs SET state=?, next_attempt_at=0 WHERE {running}",
                                    (JobState.QUEUED.value, *sources))
        async with self.transaction():
            earlier = [r["id"] for r in await self._rows(
                "SELECT id FROM daemons WHERE host=? AND state_dir=? AND id!=?",
                (*self.home, self.daemon_id))] if self.home else []
            count = await self._exec(self._sql(
                f"UPDATE jobs SET state=?, next_attempt_at=0 WHERE {running} AND "
                "(lease_until IS NULL OR lease_until<{now}"
                + (f" OR owner IN ({marks(earlier)})" if earlier else "") + ")"),
                (JobState.QUEUED.value, *sources, *earlier))
            if earlier:
                await self._exec(f"DELETE FROM daemons WHERE id IN ({marks(earlier)})", earlier)
        return count

    async def claim(self, job: Job) -> Job:
        """A worker takes the job: no other dispatch round (nor daemon) can pick it again."""
        claimable, sources = into(JobState.RUNNING)
        row = await self._one(self._sql(
            "UPDATE jobs SET state=?, owner=?, lease_until={now}+?, updated_at=? WHERE id=? "
            f"AND {claimable} RETURNING {COLUMNS}"),
            (JobState.RUNNING.value, self.daemon_id, self.lease, time.time(), job.id, *sources))
        if row is None:
            await self._refused(job.id, JobState.RUNNING, False)
        return row_to_job(row)

    async def claim_ready(self, now: float, *, exclude_folders: Iterable[str] = (), limit: int = 1,
                          only_paid: bool = False) -> list[Job]:
        """Take up to ``limit`` ready jobs for this daemon, oldest first."""
        return [await self.claim(job) for job in await self.next_ready(
            now, exclude_folders=exclude_folders, limit=limit, only_paid=only_paid)]

    async def take_over(self, *, exclude_folders: Iterable[str] = (), limit: int = 1) -> list[Job]:
        """Jobs of dead daemons whose leases ran out; only a shared journal has any."""
        return []

    async def start(self, job: Job, settings: dict[str, Any], settings_key: str) -> Job:
        """Record the settings the job runs with (the current config's, at this moment)."""
        return await self._update(job, state=JobState.RUNNING.value, settings=json.dumps(settings),
                                  settings_key=settings_key, started_at=time.time())

    async def submitted(self, job: Job, request_id: str) -> Job:
        """The backend accepted the work: from now on, resume this request, never resubmit
        unless the backend says it no longer has it."""
        mine, owner = self._mine()
        now = time.time()
        row = await self._one("UPDATE jobs SET request_id=?, submissions=submissions+1, "
                              "submit_identity=NULL, submit_sent_at=NULL, updated_at=?, "
                              f"submitted_at=? WHERE id=?{mine} RETURNING {COLUMNS}",
                              (request_id, now, now, job.id, *owner))
        if row is None:
            raise LeaseLost(job.id)
        return self._publish(job.state, row_to_job(row), {"request_id": request_id})

    async def wait_for_twin(self, job: Job, settings_key: str) -> Job | None:
        """Pay once for copies arriving together. If another unfinished job has the same
        content and settings and is not itself waiting, ``job`` goes back to the queue
        waiting for it (it is not ready again until that job has finished) and that job is
        returned. Otherwise ``job`` stops waiting for anyone and None is returned: it does
        the work itself. One serialised statement, so two copies (in any daemons) never
        both wait or both go ahead."""
        unfinished = UNFINISHED
        running, sources = into(JobState.QUEUED, only=(JobState.RUNNING,))
        rows = await self._serialised(
            f"WITH twin AS (SELECT id FROM jobs WHERE sha256=? AND settings_key=? AND "
            f"state IN ({marks(unfinished)}) AND waits_for IS NULL AND id!=? ORDER BY id "
            "LIMIT 1) UPDATE jobs SET waits_for=(SELECT id FROM twin), state=CASE WHEN EXISTS "
            f"(SELECT 1 FROM twin) THEN ? ELSE ? END, updated_at=? WHERE id=? AND {running} "
            "RETURNING waits_for",
            (job.sha256, settings_key, *unfinished, job.id, JobState.QUEUED.value,
             JobState.RUNNING.value, time.time(), job.id, *sources))
        if not rows:
            await self._refused(job.id, JobState.QUEUED, False)
        twin = rows[0]["waits_for"]
        return await self.get(twin) if twin is not None else None

    async def _serialised(self, sql: str, args: Iterable[Any]) -> list[Mapping[str, Any]]:
        """One check-then-write statement, serialised with every other of any daemon; its
        rows. A store may send it in fewer round trips."""
        async with self.transaction(exclusive=True):
            return await self._rows(sql, args)

    async def forget_request(self, job: Job) -> Job:
        return await self._update(job, request_id=None)

    async def output_pending(self, job: Job, pending: list[list[str]]) -> Job:
        """Temp files are written and fsynced; these [temp, final] renames come next."""
        return await self._update(job, pending=json.dumps(pending))

    async def output_written(self, job: Job, outputs: list[str], *, megapixels: float | None,
                             cost_usd: float | None, billed_units: float | None = None,
                             billed_usd: float | None = None) -> Job:
        """The outputs are in place; ``cost_usd`` is the run whose result they are (written
        to the ledger with this change, once per request; ``billed_*`` where fal said what
        it billed). The budget reservation is spent now, so it no longer counts."""
        spend = ledger.Entry(ledger.RESULT, billed_units=billed_units, billed_usd=billed_usd,
                             once_per_request=True)
        return await self._update(job, spend, outputs=json.dumps(outputs), pending="[]",
                                  output_megapixels=megapixels, cost_usd=cost_usd,
                                  reserved_usd=None)

    async def done(self, job: Job) -> Job:
        return await self._update(job, state=JobState.DONE.value, finished_at=time.time(),
                                  error_kind=None, reason=None, slot_held=0, reserved_usd=None)

    async def retry_later(self, job: Job, *, delay: float, kind: str, reason: str,
                          count_attempt: bool = True) -> Job:
        return await self._update(job, state=JobState.QUEUED.value,
                                  next_attempt_at=time.time() + delay,
                                  attempts=job.attempts + (1 if count_attempt else 0),
                                  error_kind=kind, reason=reason)

    async def arriving(self, job: Job, *, until: float, kind: str, reason: str) -> Job:
        """The file does not decode yet and may still be being written: look again at
        ``until``, without counting an attempt. If a newer version of the file was journaled
        meanwhile, this one is superseded instead."""
        newer = await self._one("SELECT 1 AS one FROM jobs WHERE folder=? AND path=? AND id>? "
                                "AND state!=?", (job.folder, fs_bytes(job.path), job.id,
                                                 JobState.SUPERSEDED.value))
        if newer:
            return await self.superseded(job, "the file changed while it was being checked")
        return await self._update(job, state=JobState.ARRIVING.value, next_attempt_at=until,
                                  error_kind=kind, reason=reason)

    async def requeue(self, job: Job) -> Job:
        """Back to the queue without counting an attempt (shutdown, paused folder)."""
        return await self._update(job, state=JobState.QUEUED.value)

    async def failed(self, job: Job, *, kind: str, reason: str, attempts: int | None = None,
                     billed: ledger.Entry | None = None) -> Job:
        """The job ends without an output. ``billed``: a last run fal may have billed (a
        rejection), recorded with this change; runs billed earlier are in the ledger already
        and keep counting."""
        return await self._update(job, billed, state=JobState.FAILED.value,
                                  finished_at=time.time(), error_kind=kind, reason=reason,
                                  slot_held=0, reserved_usd=None,
                                  attempts=job.attempts if attempts is None else attempts)

    async def superseded(self, job: Job, reason: str) -> Job:
        return await self._update(job, state=JobState.SUPERSEDED.value, reason=reason,
                                  finished_at=time.time(), slot_held=0, reserved_usd=None)

    async def moved_source(self, job: Job, path: Path) -> Job:
        """The original now lives at ``path`` (failed_dir, or back in the inbox on retry)."""
        return await self._update(job, path=fs_bytes(path))

    async def retry_failed(self, job: Job, path: Path) -> Job:
        return await self._update(job, state=JobState.QUEUED.value, path=fs_bytes(path),
                                  attempts=0, next_attempt_at=0, finished_at=None,
                                  request_id=None, waits_for=None)
