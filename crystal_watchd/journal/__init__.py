"""The journal: the only place that changes a job's state, and the queue.

``open_journal(config)`` gives the configured store: a SQLite file in ``state_dir`` by
default, or a PostgreSQL database several daemons share (``journal: postgresql://…``).
"""

from __future__ import annotations

from pathlib import Path

from ..config import Config, mask_url
from ..errors import JournalUnavailable, LeaseLost
from ..events import Events
from .base import JournalBase
from .daemons import DaemonInfo
from .sqlite import SqliteJournal, SqliteStore
from .sync import SyncJournal

__all__ = ["DaemonInfo", "JournalBase", "JournalUnavailable", "LeaseLost", "SqliteJournal",
           "SqliteStore", "SyncJournal", "describe", "journal_file", "open_journal",
           "open_store", "postgres_missing"]

#: What to install when ``journal:`` names PostgreSQL and its driver is not there.
POSTGRES_EXTRA = "pip install 'crystal-watchd[postgres]'"


def journal_file(config: Config) -> Path:
    """Where the embedded SQLite journal lives."""
    return config.state_dir / "journal.sqlite3"


def describe(config: Config) -> str:
    """The journal in words fit for logs and pages (never a password)."""
    return mask_url(config.journal) if config.journal else str(journal_file(config))


def postgres_missing() -> str | None:
    """Why the PostgreSQL journal cannot be used here (its driver is not installed), or
    None. PostgreSQL is an optional extra, so single-machine installs stay light."""
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError as exc:
        return (f"journal: names a PostgreSQL database, but its driver is not installed "
                f"({exc.name} is missing); install the extra: {POSTGRES_EXTRA}")
    return None


#: Connections the daemon keeps open to a PostgreSQL journal, per unit of ``concurrency``
#: (and the bounds): every job in flight makes its own statements, files arriving are looked
#: up and journaled beside them, and a connection opened on demand costs several round trips
#: to a database far away just when the work starts.
CONNECTIONS_PER_SLOT, MIN_CONNECTIONS, MAX_CONNECTIONS = 2, 4, 20


def _store(config: Config, *, readonly: bool, events: Events | None,
           connections: int = 1) -> JournalBase:
    if config.journal:
        problem = postgres_missing()
        if problem:
            raise JournalUnavailable(problem)
        from .postgres import PostgresStore  # imported only when it is asked for

        return PostgresStore(config.journal, password_file=config.journal_password_file,
                             lease=config.journal_lease, events=events,
                             max_connections=max(connections, 4), min_connections=connections)
    return SqliteStore(journal_file(config), readonly=readonly, lease=config.journal_lease,
                       events=events)


async def open_store(config: Config, *, readonly: bool = False,
                     events: Events | None = None) -> JournalBase:
    """The journal ``config`` names, for the daemon: every operation is a coroutine."""
    connections = min(MAX_CONNECTIONS,
                      max(MIN_CONNECTIONS, CONNECTIONS_PER_SLOT * config.concurrency))
    return await _store(config, readonly=readonly, events=events,
                        connections=connections).open()


def open_journal(config: Config, *, readonly: bool = False,
                 events: Events | None = None) -> SyncJournal:
    """The journal ``config`` names, for a command that runs once (or a thread of its own):
    the same operations, each finished before the call returns."""
    return SyncJournal(_store(config, readonly=readonly, events=events).open)
