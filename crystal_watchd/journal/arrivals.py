"""Files becoming jobs, many at a time: a drop of thousands of pictures is journaled in a
few transactions instead of one (and several round trips) per file.

The statements live here once: the SQLite store runs them on its own thread, a whole batch
in one hop (journal/sqlite.py); the PostgreSQL store folds them into one statement per file
(journal/postgres.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from ..jobs import HELD, Job, JobState
from ..jobs import WAITING as WAITING_STATES
from .rows import fs_bytes, into, row_to_job
from .store import Store

#: Parameters per statement kept well under every driver's limit (SQLite's is 32766).
CHUNK = 500

#: This very version (path + size + mtime + hash) is journaled already, by any daemon.
SAME_VERSION = ("SELECT id FROM jobs WHERE folder=? AND path=? AND size=? AND mtime_ns=? "
                "AND sha256=? AND state!=?")
#: Older versions of the path no worker holds (waiting, or held for approval) are superseded.
_OLDER, _OLDER_STATES = into(JobState.SUPERSEDED, only=(*WAITING_STATES, *HELD))
SUPERSEDE = ("UPDATE jobs SET state=?, reason=?, updated_at=? WHERE folder=? AND path=? "
             f"AND {_OLDER} AND NOT (size=? AND mtime_ns=? AND sha256=?)")
INSERT_COLUMNS = ("folder", "path", "rel", "size", "mtime_ns", "sha256", "state", "created_at",
                  "updated_at")
SUPERSEDED_REASON = "the file changed before it was processed"


class Arrival(NamedTuple):
    """A settled, hashed file to journal."""

    path: Path
    rel: str
    size: int
    mtime_ns: int
    sha256: str


def same_version_args(folder: str, a: Arrival) -> tuple[Any, ...]:
    return (folder, fs_bytes(a.path), a.size, a.mtime_ns, a.sha256, JobState.SUPERSEDED.value)


def supersede_args(folder: str, a: Arrival, now: float) -> tuple[Any, ...]:
    return (JobState.SUPERSEDED.value, SUPERSEDED_REASON, now, folder, fs_bytes(a.path),
            *_OLDER_STATES, a.size, a.mtime_ns, a.sha256)


def insert_values(folder: str, a: Arrival, now: float) -> dict[str, Any]:
    return dict(zip(INSERT_COLUMNS, (folder, fs_bytes(a.path), fs_bytes(a.rel), a.size,
                                     a.mtime_ns, a.sha256, JobState.QUEUED.value, now, now),
                    strict=True))


def in_key_order(arrivals: Iterable[Arrival]) -> list[Arrival]:
    """Every daemon writes a batch's rows in the same order, so two daemons journaling the
    same files at once wait for each other instead of deadlocking."""
    return sorted(arrivals, key=lambda a: (fs_bytes(a.path), a.size, a.mtime_ns, a.sha256))


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class ArrivalRows:
    """What the stores' ``enqueue_many`` share: publishing the new jobs, and the look-up
    of which versions a scan found are journaled already."""

    def __init__(self, store: Store):
        self.store = store

    def published(self, rows: Iterable[Mapping[str, Any]]) -> list[Job]:
        queued = {"state": JobState.QUEUED.value}
        return [self.store._publish(None, row_to_job(row), queued) for row in rows]

    async def known_among(self, folder: str,
                          versions: Iterable[tuple[Path, int, int]]) -> set[tuple[str, int, int]]:
        """Which of ``versions`` (path, size, mtime_ns) of ``folder`` are journaled already
        (not superseded): one query per few hundred files, not one per file."""
        paths = sorted({fs_bytes(p) for p, _, _ in versions})
        found: set[tuple[str, int, int]] = set()
        for part in chunks(paths):
            for r in await self.store._rows(
                    "SELECT path, size, mtime_ns FROM jobs WHERE folder=? AND state!=? AND "
                    f"path IN ({','.join('?' * len(part))})",
                    (folder, JobState.SUPERSEDED.value, *part)):
                found.add((os.fsdecode(bytes(r["path"])), r["size"], r["mtime_ns"]))
        return found
