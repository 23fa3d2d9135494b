"""The journal: the only place that changes a job's state, and the queue.

``open_journal(config)`` gives the configured store: a SQLite file in ``state_dir`` by
default, or a PostgreSQL database several daemons share (``journal: postgresql://…``).
"""

from __future__ import annotations

from pathlib import Path

from ..config import Config, mask_url
from ..events import Events
from .base import JournalBase, JournalUnavailable, LeaseLost
from .daemons import DaemonInfo
from .sqlite import Journal

__all__ = ["DaemonInfo", "Journal", "JournalBase", "JournalUnavailable", "LeaseLost",
           "describe", "journal_file", "open_journal"]


def journal_file(config: Config) -> Path:
    """Where the embedded SQLite journal lives."""
    return config.state_dir / "journal.sqlite3"


def describe(config: Config) -> str:
    """The journal in words fit for logs and pages (never a password)."""
    return mask_url(config.journal) if config.journal else str(journal_file(config))


def open_journal(config: Config, *, readonly: bool = False,
                 events: Events | None = None) -> JournalBase:
    """The journal ``config`` names. PostgreSQL is imported only when it is asked for."""
    if config.journal:
        from .postgres import PostgresJournal

        return PostgresJournal(config.journal, password_file=config.journal_password_file,
                               lease=config.journal_lease, events=events)
    return Journal(journal_file(config), readonly=readonly,
                   lease=config.journal_lease, events=events)
