"""A job's row: the columns read back, the state groups queries use, paths as bytes."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..errors import IllegalTransition
from ..jobs import UNFINISHED as UNFINISHED_STATES
from ..jobs import WAITING as WAITING_STATES
from ..jobs import Job, JobState, ordered, predecessors

COLUMNS = ("id, folder, path, rel, size, mtime_ns, sha256, state, attempts, next_attempt_at, "
           "request_id, settings, outputs, pending, error_kind, reason, created_at, updated_at, "
           "finished_at, output_megapixels, cost_usd, submissions, waits_for, paid_twice, "
           "started_at, submitted_at")
#: The values of jobs.WAITING and jobs.UNFINISHED, as SQL arguments.
WAITING = ordered(WAITING_STATES)
UNFINISHED = ordered(UNFINISHED_STATES)
#: A queued job may run unless it waits for an identical job that is still unfinished.
NOT_WAITING = ("(waits_for IS NULL OR waits_for NOT IN "
               f"(SELECT id FROM jobs WHERE state IN {UNFINISHED!r}))")


def into(target: JobState, *, only: Iterable[JobState]
         | None = None) -> tuple[str, tuple[str, ...]]:
    """The guard of every statement that changes a job's state: ``state IN (…)`` over the
    states ``jobs.TRANSITIONS`` lets a job change to ``target`` from (just those of ``only``,
    for a statement meant for some of them; naming one the table forbids is refused at
    once). A row in any other state is left alone."""
    sources = predecessors(target)
    if only is not None:
        wanted = frozenset(only)
        for before in wanted - sources:
            raise IllegalTransition(None, before.value, target.value)
        sources = wanted
    values = ordered(sources)
    return f"state IN ({', '.join('?' * len(values))})", values


def marks(values: Iterable[Any]) -> str:
    """``?, ?, …``: one placeholder per value."""
    return ", ".join("?" for _ in values)


def fs_bytes(path: Path | str) -> bytes:
    """Paths are stored as the bytes the filesystem uses, so any name round-trips."""
    return os.fsencode(path)


def row_to_job(row: Mapping[str, Any]) -> Job:
    return Job(
        id=row["id"], folder=row["folder"], path=Path(os.fsdecode(bytes(row["path"]))),
        rel=os.fsdecode(bytes(row["rel"])),
        size=row["size"], mtime_ns=row["mtime_ns"], sha256=row["sha256"],
        state=JobState(row["state"]), attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"], request_id=row["request_id"],
        settings=json.loads(row["settings"]) if row["settings"] else None,
        outputs=json.loads(row["outputs"]), pending=json.loads(row["pending"]),
        error_kind=row["error_kind"], reason=row["reason"], created_at=row["created_at"],
        updated_at=row["updated_at"], finished_at=row["finished_at"],
        output_megapixels=row["output_megapixels"], cost_usd=row["cost_usd"],
        submissions=row["submissions"], waits_for=row["waits_for"], paid_twice=row["paid_twice"],
        started_at=row["started_at"], submitted_at=row["submitted_at"],
    )
