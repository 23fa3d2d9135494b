"""The embedded journal: one SQLite file in ``state_dir``, one daemon.

WAL mode lets ``status`` read while the daemon writes. The operations themselves are in
journal/base.py and its parts, shared with the PostgreSQL store; statements run on a thread
of the journal's own. The schema is journal/schema.py's.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from ..errors import JournalDamaged
from ..events import Events
from ..jobs import Job
from . import schema, sqlitecare
from .arrivals import (
    SAME_VERSION,
    SUPERSEDE,
    Arrival,
    chunks,
    in_key_order,
    insert_values,
    same_version_args,
    supersede_args,
)
from .base import COLUMNS, JournalBase
from .sync import SyncJournal

T = TypeVar("T")

#: The first step's script (with ``meta``): what a journal of 0.1 was made of.
SCHEMA = ";\n".join([schema.META, *schema.statements(schema.STEPS[0], schema.SQLITE)]) + ";"
#: The version a migrated journal records in ``meta``.
SCHEMA_VERSION = str(schema.SCHEMA_VERSION)


class SqliteStore(JournalBase):
    """The SQLite journal. One thread of its own owns the connection and runs every
    statement, so the event loop never waits for the disk; a lock keeps a transaction's
    statements together (nothing of another coroutine runs inside it)."""

    db_clock = "((julianday('now') - 2440587.5) * 86400.0)"

    def __init__(self, path: Path, *, readonly: bool = False, lease: float = 60.0,
                 events: Events | None = None):
        super().__init__()
        self.path = path
        self.readonly = readonly
        self.events = events
        self.lease = lease
        self.db: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")
        self._lock = asyncio.Lock()
        #: Set while the current task is inside ``transaction()``.
        self._in_tx: contextvars.ContextVar[bool] = contextvars.ContextVar(
            f"sqlite_tx_{id(self)}", default=False)

    async def open(self) -> SqliteStore:
        await self._call(self._connect)
        return self

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    def _connect(self) -> None:  # on the journal's thread, as everything below
        try:
            self._open_checked()
        except sqlite3.DatabaseError as exc:
            if self.db is not None:
                self.db.close()
                self.db = None
            if not sqlitecare.is_damage(exc):
                raise
            raise JournalDamaged(str(self.path), str(exc)) from None

    def _open_checked(self) -> None:
        # check_same_thread off: tests and benchmarks peek at the file through ``db``.
        existed = self.path.exists() and self.path.stat().st_size > 0
        if self.readonly:
            self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10,
                                      check_same_thread=False)
            self._check()
            self._fill_missing_columns()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=10, isolation_level=None,
                                      check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode is durable across a process crash; only a power cut may
            # lose the last transactions, and every file is then found again by a rescan.
            self.db.execute("PRAGMA synchronous=NORMAL")
            if existed:
                self._check()
                if schema.after(self._version()):
                    sqlitecare.backup(self.db, self.path, "before-migration")
            self._migrate()
            if existed and sqlitecare.backup_due(self.path):
                # a full disk must not stop the start: the heartbeat tries again, and logs
                with contextlib.suppress(OSError, sqlite3.Error):
                    sqlitecare.backup(self.db, self.path, "daily")
        self.db.row_factory = sqlite3.Row

    def _check(self) -> None:
        """SQLite's quick check of a journal that was there before: a damaged one is refused
        here, with its file named, rather than failing somewhere in the first statements."""
        problem = sqlitecare.quick_check(self.db)
        if problem is not None:
            raise JournalDamaged(str(self.path), problem)

    def _version(self) -> int:
        """The schema step the journal has (0 for one from before ``meta``)."""
        if not self.db.execute("SELECT 1 FROM sqlite_master WHERE name='meta'").fetchone():
            return 0
        row = self.db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        return int(row[0]) if row else 0

    async def backup_if_due(self) -> Path | None:
        """The daily backup of a daemon that runs for days (its heartbeat asks)."""
        if self.readonly or self.db is None or not sqlitecare.backup_due(self.path):
            return None
        async with self._lock:  # never inside another coroutine's transaction
            return await self._call(sqlitecare.backup, self.db, self.path, "daily")

    def _migrate(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.execute(schema.META)
            row = self.db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            for step in schema.after(int(row[0]) if row else 0):
                for statement in schema.statements(step, schema.SQLITE):
                    if not self._has_column_already(statement):
                        self.db.execute(statement)
            self.db.execute("INSERT INTO meta VALUES ('schema', ?) ON CONFLICT (key) "
                            "DO UPDATE SET value=excluded.value", (SCHEMA_VERSION,))
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _has_column_already(self, statement: str) -> bool:
        """An ``ADD COLUMN`` whose column a pre-release journal already has is skipped."""
        words = statement.split()
        if words[:2] != ["ALTER", "TABLE"] or "COLUMN" not in words:
            return False
        column = words[words.index("COLUMN") + 1]
        return column in {r[1] for r in self.db.execute(f"PRAGMA table_info({words[2]})")}

    def _fill_missing_columns(self) -> None:
        """A read-only look (``status``) at a journal the daemon has not migrated yet: what
        it lacks is noted (``has``), and the job columns it lacks read as NULL."""
        gaps = set()
        for table, columns in schema.tables().items():
            have = {r[1] for r in self.db.execute(f"PRAGMA table_info({table})")}
            gaps |= {table} if not have else {f"{table}.{c.name}" for c in columns
                                              if c.name not in have}
        self.schema_gaps = frozenset(gaps)
        self.columns = ", ".join(c if self.has(f"jobs.{c}") else f"NULL AS {c}"
                                 for c in (c.strip() for c in COLUMNS.split(",")))

    def _fetch(self, sql: str, args: tuple[Any, ...]) -> list[Mapping[str, Any]]:
        return self.db.execute(sql, args).fetchall()

    def _count(self, sql: str, args: tuple[Any, ...]) -> int:
        return self.db.execute(sql, args).rowcount

    async def _run(self, fn: Callable[[str, tuple[Any, ...]], T], sql: str,
                   args: Iterable[Any]) -> T:
        self.round_trips += 1
        if self._in_tx.get():
            return await self._call(fn, self._sql(sql), tuple(args))
        # Outside a transaction a statement commits on its own, but waits for any
        # transaction of another coroutine to end rather than landing inside it.
        async with self._lock:
            return await self._call(fn, self._sql(sql), tuple(args))

    async def close(self) -> None:
        if self.db is not None:
            await self._call(self.db.close)
        self._thread.shutdown(wait=False)

    async def _rows(self, sql: str, args: Iterable[Any] = ()) -> list[Mapping[str, Any]]:
        return await self._run(self._fetch, sql, args)

    async def _exec(self, sql: str, args: Iterable[Any] = ()) -> int:
        return await self._run(self._count, sql, args)

    @contextlib.asynccontextmanager
    async def transaction(self, *, exclusive: bool = False) -> AsyncIterator[None]:
        if self._in_tx.get():
            yield
            return
        async with self._lock:
            # IMMEDIATE takes the write lock at once: a check-then-write cannot interleave
            # with another writer (``retry`` run beside the daemon).
            await self._call(self.db.execute, "BEGIN IMMEDIATE")
            token = self._in_tx.set(True)
            try:
                yield
            except BaseException:
                await self._call(self.db.execute, "ROLLBACK")
                raise
            else:
                await self._call(self.db.execute, "COMMIT")
            finally:
                self._in_tx.reset(token)

    async def _insert_job(self, values: dict[str, Any]) -> int | None:
        return await self._run(lambda q, a: self.db.execute(q, a).lastrowid,
                               _insert_sql(values), values.values())

    async def enqueue_many(self, folder: str, arrivals: Sequence[Arrival]) -> list[Job]:
        """As the base's, with the whole batch in one hop to the journal's thread: a drop of
        thousands of files costs a few hops, not several per file."""
        if not arrivals:
            return []
        ordered = in_key_order(arrivals)
        async with self._lock:
            self.round_trips += 1
            rows = await self._call(self._enqueue_batch, folder, ordered, time.time())
        return self.arrivals.published(rows)

    def _enqueue_batch(self, folder: str, arrivals: list[Arrival],
                       now: float) -> list[sqlite3.Row]:  # on the journal's thread
        ids = []
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for a in arrivals:
                if self.db.execute(SAME_VERSION, same_version_args(folder, a)).fetchone():
                    continue
                self.db.execute(SUPERSEDE, supersede_args(folder, a, now))
                values = insert_values(folder, a, now)
                ids.append(self.db.execute(_insert_sql(values),
                                           tuple(values.values())).lastrowid)
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
        rows = []
        for part in chunks(ids):
            rows += self.db.execute(f"SELECT {self.columns} FROM jobs WHERE id IN "
                                    f"({','.join('?' * len(part))}) ORDER BY id",
                                    tuple(part)).fetchall()
        return rows


def _insert_sql(values: Mapping[str, Any]) -> str:
    """The statement inserting one job with ``values``' columns."""
    return f"INSERT INTO jobs ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})"


class SqliteJournal(SyncJournal):
    """The SQLite journal for one-shot commands and tests: the same operations, each run to
    its end before the call returns."""

    def __init__(self, path: Path, *, readonly: bool = False, lease: float = 60.0,
                 events: Events | None = None):
        super().__init__(SqliteStore(path, readonly=readonly, lease=lease, events=events).open)

