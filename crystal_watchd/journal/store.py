"""What the journal's parts (reads, arrivals, daemons, outbox, spend guard, limits) need of
a store: statements, transactions, the database clock, who this daemon is, and where job
changes are published. Each part is given the store in its constructor and uses only this;
the journal (journal/base.py) composes the parts, and a store (journal/sqlite.py,
journal/postgres.py) provides the primitives.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from ..events import Events
from ..jobs import Job, JobState


class Store(Protocol):
    #: True when several daemons may share this journal (leases, global limits matter).
    shared: bool
    #: Seconds a claimed job's lease lasts; the heartbeat renews it.
    lease: float
    #: This daemon's id once registered (leases and heartbeats carry it), else None.
    daemon_id: str | None
    #: (host, state_dir) of the registered daemon.
    home: tuple[str, str] | None
    #: What ``SELECT`` reads for a job (an older journal's missing columns read as NULL).
    columns: str
    #: Where job changes are published (the web page, metrics, the terminal view).
    events: Events | None
    #: The configured hooks (set by the service, again on reload).
    hooks: tuple[Any, ...]
    #: Set by the spend guard while it is on: only cleared jobs may be claimed.
    spend_guard: bool

    async def _rows(self, sql: str, args: Iterable[Any] = ()) -> list[Mapping[str, Any]]: ...

    async def _one(self, sql: str, args: Iterable[Any] = ()) -> Mapping[str, Any] | None: ...

    async def _exec(self, sql: str, args: Iterable[Any] = ()) -> int:
        """Run a statement; the number of rows it changed."""

    def transaction(self, *,
                    exclusive: bool = False) -> contextlib.AbstractAsyncContextManager[None]:
        """Statements inside run in one transaction; ``exclusive`` also serialises it with
        every other exclusive transaction (of any daemon)."""

    def _sql(self, sql: str) -> str:
        """``sql`` with ``{now}`` as the database clock's Unix seconds."""

    async def _insert_job(self, values: dict[str, Any]) -> int | None:
        """Insert one job row; None if this exact version is journaled already."""

    def _mine(self) -> tuple[str, tuple[Any, ...]]:
        """The condition keeping a change to the jobs this daemon still holds."""

    def _publish(self, before: JobState | None, job: Job, values: Mapping[str, Any]) -> Job:
        """Tell readers that ``job`` changed; returns it."""

    def has(self, name: str) -> bool:
        """Whether the journal has table ``name`` (or column ``table.column``)."""

    async def _changed(self, sql: str, args: tuple[Any, ...], spend: Any,
                       now: float) -> Mapping[str, Any] | None:
        """Run an ``UPDATE jobs … RETURNING`` and write ``spend``'s ledger row with it."""

    def _recording(self, spend: Any,
                   outbox: bool = False) -> contextlib.AbstractAsyncContextManager[None]:
        """The transaction a change and its ledger row (or deliveries) need, if any."""
