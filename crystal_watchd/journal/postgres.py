"""The shared journal: PostgreSQL, so several daemons split the work of the same folders.

Each job is claimed with ``FOR UPDATE SKIP LOCKED`` and a lease its daemon renews with every
heartbeat; when a daemon dies its leases run out and another daemon takes the job over, with
its journaled request id, so the request is fetched rather than paid for again. Concurrency
slots and budget reservations are checked and taken inside one transaction serialised by an
advisory lock, so the limits hold across daemons. The schema (journal/schema.py) is
created and migrated here.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from .. import logs
from ..config import mask_url
from ..errors import JournalUnavailable
from ..events import Events
from ..jobs import Job, JobState
from . import ledger, schema
from .arrivals import (
    SAME_VERSION,
    SUPERSEDE,
    Arrival,
    in_key_order,
    insert_values,
    same_version_args,
    supersede_args,
)
from .base import COLUMNS, JournalBase, row_to_job
from .rows import into
from .sync import SyncJournal

log = logs.get(__name__)

#: Key of the advisory lock that serialises check-then-write transactions (slots, budget,
#: migrations) across every daemon on the database.
ADVISORY_KEY = 0x63727973  # "crys"
CONNECT_TIMEOUT = 10.0
SCHEMA_VERSION = schema.SCHEMA_VERSION




def _password(url: str, password_file: Path | None) -> str | None:
    """The password from the URL or ``journal_password_file`` (libpq itself also reads
    PGPASSWORD and ~/.pgpass when neither gives one)."""
    parts = urlsplit(url)
    if parts.password:
        return unquote(parts.password)
    if password_file is not None:
        try:
            return password_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise JournalUnavailable(f"journal_password_file {password_file} cannot be read: "
                                     f"{exc.strerror or exc}") from None
    return None


class PostgresStore(JournalBase):
    """The shared journal through psycopg's asynchronous API: a statement in flight holds
    up only the coroutine waiting for it, never the event loop."""

    db_clock = "extract(epoch from clock_timestamp())::double precision"
    shared = True

    def __init__(self, url: str, *, password_file: Path | None = None, lease: float = 60.0,
                 max_connections: int = 8, min_connections: int = 1,
                 events: Events | None = None):
        super().__init__()
        self.url = mask_url(url)
        self._dsn = url  # may hold the password: never logged, shown or repr'd
        self.lease = lease
        self.events = events
        self.max_connections = max_connections
        self.min_connections = min(min_connections, max_connections)
        self._password = _password(url, password_file)
        if self._password:
            logs.register_secret(self._password)
        # A database that vanishes without a word (a host lost) must turn into an error in
        # seconds, not a hang.
        self._kwargs: dict[str, Any] = {
            "autocommit": True, "row_factory": dict_row,
            "connect_timeout": int(CONNECT_TIMEOUT), "keepalives": 1, "keepalives_idle": 10,
            "keepalives_interval": 3, "keepalives_count": 3, "tcp_user_timeout": 20_000}
        if self._password and password_file is not None:
            self._kwargs["password"] = self._password
        #: The connection of the transaction the current task is in, if any.
        self._tx_conn: contextvars.ContextVar[psycopg.AsyncConnection | None] = \
            contextvars.ContextVar(f"pg_tx_{id(self)}", default=None)
        self.pool: AsyncConnectionPool | None = None

    def __repr__(self) -> str:
        return f"PostgresStore({self.url!r})"

    async def open(self) -> PostgresStore:
        # One plain connection first: a wrong host or password fails at once with libpq's
        # own words, instead of the pool retrying until its timeout.
        problem = await self._connect_error()
        if problem:
            raise JournalUnavailable(
                f"cannot reach the journal database {self.url}: "
                + (problem.replace(self._password, "***") if self._password else problem))
        self.pool = AsyncConnectionPool(self._dsn, kwargs=self._kwargs,
                                        min_size=self.min_connections,
                                        max_size=self.max_connections, open=False,
                                        name="journal", timeout=CONNECT_TIMEOUT)
        try:
            await self.pool.open(wait=True, timeout=CONNECT_TIMEOUT)
        except PoolTimeout:
            await self.pool.close()
            raise JournalUnavailable(f"cannot reach the journal database {self.url}: "
                                     f"no connection within {CONNECT_TIMEOUT:g} s") from None
        try:
            await self._migrate()
        except psycopg.Error as exc:
            await self.pool.close()
            raise JournalUnavailable(f"cannot migrate the journal database {self.url}: "
                                     f"{exc}") from None
        return self

    async def _connect_error(self) -> str | None:
        try:
            conn = await psycopg.AsyncConnection.connect(self._dsn, **self._kwargs)
        except psycopg.Error as exc:
            return " ".join(str(exc).split()) or type(exc).__name__
        await conn.close()
        return None

    async def _migrate(self) -> None:
        """Run the schema's steps the database lacks. ``meta`` holds the version, as in the
        embedded journal; ``schema_version`` lists the steps run, so a crystal-watchd of
        before the shared numbering (which read only that) refuses a newer schema. A
        database without ``meta`` is of that time: its numbers are mapped, then rewritten."""
        async with self.transaction(exclusive=True):
            await self._exec("CREATE TABLE IF NOT EXISTS schema_version "
                             "(version INTEGER NOT NULL)")
            await self._exec(schema.META)
            row = await self._one("SELECT MAX(version) AS v FROM schema_version")
            listed = (row["v"] if row else None) or 0
            row = await self._one("SELECT value FROM meta WHERE key='schema'")
            version = int(row["value"]) if row else schema.LEGACY_POSTGRES.get(listed, listed)
            if max(version, listed if row else 0) > SCHEMA_VERSION or (
                    row is None and listed not in schema.LEGACY_POSTGRES):
                raise psycopg.errors.FeatureNotSupported(
                    f"schema version {max(version, listed)} is newer than this crystal-watchd "
                    f"({SCHEMA_VERSION}); upgrade it")
            if row is None and listed:
                await self._exec("DELETE FROM schema_version")
                for number in range(1, version + 1):
                    await self._exec("INSERT INTO schema_version VALUES (?)", (number,))
            for step in schema.after(version):
                for statement in schema.statements(step, schema.POSTGRES):
                    await self._exec(statement)
                await self._exec("INSERT INTO schema_version VALUES (?)", (step.number,))
                log.info("journal_migrated", journal=self.url, version=step.number)
            await self._exec("INSERT INTO meta VALUES ('schema', ?) ON CONFLICT (key) "
                             "DO UPDATE SET value=excluded.value", (str(SCHEMA_VERSION),))

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()

    # -- primitives ------------------------------------------------------------------------

    def _sql(self, sql: str) -> str:
        return super()._sql(sql).replace("?", "%s")

    @contextlib.asynccontextmanager
    async def _conn(self) -> AsyncIterator[psycopg.AsyncConnection]:
        self.round_trips += 1
        conn = self._tx_conn.get()
        if conn is not None:
            yield conn
        else:
            async with self.pool.connection() as conn:
                yield conn

    async def _rows(self, sql: str, args: Iterable[Any] = ()) -> list[Mapping[str, Any]]:
        async with self._conn() as conn:
            cursor = await conn.execute(self._sql(sql), tuple(args))
            return await cursor.fetchall()

    async def _exec(self, sql: str, args: Iterable[Any] = ()) -> int:
        async with self._conn() as conn:
            return (await conn.execute(self._sql(sql), tuple(args))).rowcount

    @contextlib.asynccontextmanager
    async def transaction(self, *, exclusive: bool = False) -> AsyncIterator[None]:
        if self._tx_conn.get() is not None:
            yield
            return
        self.round_trips += 2  # BEGIN and COMMIT
        async with self.pool.connection() as conn, conn.transaction():
            token = self._tx_conn.set(conn)
            try:
                if exclusive:
                    await self._exec("SELECT pg_advisory_xact_lock(?)", (ADVISORY_KEY,))
                yield
            finally:
                self._tx_conn.reset(token)

    async def _insert_job(self, values: dict[str, Any]) -> int | None:
        cols = ", ".join(values)
        row = await self._one(f"INSERT INTO jobs ({cols}) VALUES "
                              f"({', '.join('?' * len(values))}) "
                              "ON CONFLICT (folder, path, size, mtime_ns, sha256) "
                              "WHERE state <> 'superseded' DO NOTHING RETURNING id",
                              tuple(values.values()))
        return row["id"] if row else None

    # -- one statement where the embedded store needs several --------------------------------

    records_in_one_statement = True

    async def _changed(self, sql: str, args: tuple[Any, ...], spend: ledger.Entry | None,
                       now: float) -> Mapping[str, Any] | None:
        """As the base's, in one statement (one round trip, atomic without a transaction):
        the update in a CTE, the ledger row inserted from the row it changed."""
        if spend is None:
            return await self._one(sql, args)
        insert, insert_args = spend.insert("changed", now)
        return await self._one(f"WITH changed AS ({sql}), recorded AS ({insert}) "
                               "SELECT * FROM changed", (*args, *insert_args))

    async def enqueue_many(self, folder: str, arrivals: Sequence[Arrival]) -> list[Job]:
        """As the base's, one statement per file, all of them sent at once with the
        transaction around them (psycopg's pipeline mode): a drop of a hundred files costs
        one round trip to a journal across a VPN, not a hundred. Each statement supersedes
        older unfinished versions of the path (unless this very version is journaled
        already) and inserts the new job unless another daemon did so a moment ago; the new
        row comes back with the insert."""
        if not arrivals:
            return []
        now = time.time()
        returning = ", ".join(c.strip() for c in COLUMNS.split(","))
        statements = []
        for a in in_key_order(arrivals):
            values = insert_values(folder, a, now)
            statements.append((
                "WITH known AS (" + SAME_VERSION + "), "
                "older AS (" + SUPERSEDE + " AND NOT EXISTS (SELECT 1 FROM known) "
                f"RETURNING id) INSERT INTO jobs ({', '.join(values)}) "
                f"SELECT {', '.join('?' * len(values))} "
                "WHERE NOT EXISTS (SELECT 1 FROM known) "
                "ON CONFLICT (folder, path, size, mtime_ns, sha256) "
                f"WHERE state <> 'superseded' DO NOTHING RETURNING {returning}",
                (*same_version_args(folder, a), *supersede_args(folder, a, now),
                 *values.values())))
        if self._tx_conn.get() is not None:  # inside a caller's transaction: its connection
            rows = [await self._one(sql, args) for sql, args in statements]
            return self.arrivals.published([r for r in rows if r is not None])
        rows = await self._in_one_trip(statements)
        return self.arrivals.published([r[0] for r in rows if r])

    async def heartbeat(self, folders: dict[str, Any] | None = None) -> int:
        """As the base's, in one statement: the daemon's row and every lease it holds."""
        if self.daemon_id is None:
            return 0
        folders_sql = ", folders=?" if folders is not None else ""
        args = (json.dumps(folders, sort_keys=True),) if folders is not None else ()
        row = await self._one(self._sql(
            f"WITH me AS (UPDATE daemons SET heartbeat_at={{now}}{folders_sql} WHERE id=?), "
            "renewed AS (UPDATE jobs SET lease_until={now}+? WHERE owner=? AND state=? "
            "RETURNING 1) SELECT COUNT(*) AS n FROM renewed"),
            (*args, self.daemon_id, self.lease, self.daemon_id, JobState.RUNNING.value))
        return row["n"] if row else 0

    async def _in_one_trip(self, statements: Sequence[tuple[str, tuple[Any, ...]]],
                           ) -> list[list[Mapping[str, Any]]]:
        """``statements`` (SQL in the store's words, arguments) in one transaction that goes
        out in one round trip: begin, the statements and commit sent together (pipeline
        mode); each statement's rows. Written out rather than with ``conn.transaction()``,
        which in pipeline mode waits for the server at its start and its end (four round
        trips instead of one)."""
        self.round_trips += 1
        async with self.pool.connection() as conn:
            try:
                async with conn.pipeline():
                    await conn.execute("BEGIN")
                    cursors = [await conn.execute(self._sql(sql), args)
                               for sql, args in statements]
                    await conn.execute("COMMIT")
                return [await cursor.fetchall() for cursor in cursors]
            except BaseException:
                if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    await conn.rollback()
                raise

    async def _serialised(self, sql: str, args: Iterable[Any]) -> list[Mapping[str, Any]]:
        """One check-then-write statement in a transaction serialised with every other
        (the advisory lock), in one round trip. The lock is held only while the server runs
        them, not for the network's round trips, so daemons far from the database do not
        queue behind each other's latency. Under READ COMMITTED the statement sees every
        transaction committed before the lock was granted."""
        _, rows = await self._in_one_trip([("SELECT pg_advisory_xact_lock(?)", (ADVISORY_KEY,)),
                                           (sql, tuple(args))])
        return rows

    async def acquire_slot(self, job_id: int, limit: int) -> bool:
        """As the base's, in one round trip: a job that holds its slot keeps it, another
        takes one while fewer than ``limit`` are held."""
        return bool(await self._serialised(
            "UPDATE jobs SET slot_held=1 WHERE id=? AND (slot_held=1 OR "
            "(SELECT COUNT(*) FROM jobs WHERE slot_held=1) < ?) RETURNING id", (job_id, limit)))

    # -- claims ------------------------------------------------------------------------------

    async def claim_ready(self, now: float, *, exclude_folders: Iterable[str] = (), limit: int = 1,
                          only_paid: bool = False) -> list[Job]:
        """Take up to ``limit`` jobs: ready queued ones, and running ones whose daemon let
        the lease run out (it died). Rows another daemon is claiming are skipped, not
        waited for."""
        where, args = self.reads.ready_filter(now, exclude_folders, only_paid)
        expired, expired_args = self._expired_filter(exclude_folders, only_paid)
        return await self._claim(f"({where}) OR ({expired})", [*args, *expired_args], limit)

    async def take_over(self, *, exclude_folders: Iterable[str] = (), limit: int = 1) -> list[Job]:
        """Take up to ``limit`` jobs of dead daemons (their leases ran out). A daemon does
        this even when it is busy: such a job may hold a slot at the upscaler that everyone
        else is waiting for."""
        expired, args = self._expired_filter(exclude_folders, False)
        return await self._claim(expired, args, limit)

    def _expired_filter(self, exclude_folders: Iterable[str],
                        only_paid: bool) -> tuple[str, list[Any]]:
        excluded = list(exclude_folders)
        sql = ("state=? AND lease_until<{now}"
               + (f" AND folder NOT IN ({','.join('?' * len(excluded))})" if excluded else "")
               + (" AND (request_id IS NOT NULL OR pending!='[]' OR outputs!='[]')"
                  if only_paid else ""))
        return sql, [JobState.RUNNING.value, *excluded]

    async def _claim(self, where: str, args: list[Any], limit: int) -> list[Job]:
        returning = ", ".join("jobs." + c.strip() for c in COLUMNS.split(","))
        claimable, sources = into(JobState.RUNNING)
        rows = await self._rows(
            "WITH picked AS (SELECT id, state AS was_state, owner AS was_owner FROM jobs "
            f"WHERE ({where}) AND {claimable} ORDER BY next_attempt_at, id LIMIT ? "
            "FOR UPDATE SKIP LOCKED) UPDATE jobs SET state=?, owner=?, lease_until={now}+?, "
            "updated_at=? FROM picked WHERE jobs.id=picked.id "
            f"RETURNING {returning}, picked.was_state, picked.was_owner",
            (*args, *sources, limit, JobState.RUNNING.value, self.daemon_id, self.lease,
             time.time()))
        for row in rows:
            if row["was_state"] == JobState.RUNNING.value:
                log.warning("job_lease_taken_over", job_id=row["id"],
                            previous_owner=row["was_owner"], request_id=row["request_id"],
                            note="its daemon stopped renewing the lease; resuming its request")
        return sorted((row_to_job(r) for r in rows), key=lambda j: (j.next_attempt_at, j.id))


class PostgresJournal(SyncJournal):
    """The shared journal for one-shot commands and tests: the same operations, each run to
    its end before the call returns."""

    def __init__(self, url: str, *, password_file: Path | None = None, lease: float = 60.0,
                 max_connections: int = 4, events: Events | None = None):
        super().__init__(PostgresStore(url, password_file=password_file, lease=lease,
                                       max_connections=max_connections, events=events).open)
