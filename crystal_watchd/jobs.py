"""What a job is. Only journal.py changes a job's state; everything else reads it."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class JobState(str, enum.Enum):
    #: Journaled and waiting for a worker; after a transient failure also waiting for
    #: ``next_attempt_at``. The journal is the queue: nothing waits only in memory.
    QUEUED = "queued"
    #: A worker holds it. After a crash it is put back to QUEUED at start; a recorded
    #: ``request_id`` or pending output lets the next attempt resume instead of redo.
    RUNNING = "running"
    #: Output written and the original handled. Never processed again.
    DONE = "done"
    #: Failed for good (permanent error or attempts exhausted). The original sits in
    #: ``failed_dir`` with a ``.error.json``; ``retry`` puts it back to QUEUED.
    FAILED = "failed"
    #: The source changed or disappeared before it was processed; a newer job (if any)
    #: stands for it. Nothing was charged, nothing is owed.
    SUPERSEDED = "superseded"
    #: The file does not decode yet and may still be being written (a stalled copy, a size
    #: set up front): nothing is moved or submitted. It is looked at again at
    #: ``next_attempt_at``, the end of the folder's ``incomplete_grace``; a change to the
    #: file supersedes it with a new version first.
    ARRIVING = "arriving"
    #: Queued, but its folder's pictures waiting to be submitted were estimated together
    #: above ``budget.confirm_above_usd``: nothing is submitted until someone approves
    #: (``crystal-watchd approve``, the page's Approve, or a reload that raises the limit).
    #: Approval puts it back to QUEUED, released for spending. Nothing was charged.
    AWAITING_APPROVAL = "awaiting_approval"

    @property
    def finished(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.SUPERSEDED)


@dataclass(frozen=True)
class Settings:
    """The per-job settings that decide the output; two jobs with equal settings and equal
    content produce the same image, so the second may copy the first's output."""

    backend: str
    scale_factor: float
    creativity: float
    output_format: str
    #: ``fal.result_format`` the job ran with (auto or png; empty for the local backend): a
    #: JPEG passed through from fal and one encoded here from fal's PNG are different files.
    result_format: str = ""
    #: The folder's ``dpi``: the same pixels with another print resolution are another file.
    dpi: str | float = "keep"
    #: The folder's ``fit`` target as plain data (None: ``scale_factor`` decides): two
    #: folders fitting to different sizes make different outputs of the same picture.
    fit: dict[str, Any] | None = None

    def key(self) -> str:
        # Defaults are left out so that keys journaled before ``dpi`` and ``fit`` existed
        # still match.
        data = {k: v for k, v in self.__dict__.items()
                if not (k == "dpi" and v == "keep") and not (k == "fit" and v is None)}
        return json.dumps(data, sort_keys=True)


@dataclass
class Job:
    id: int
    folder: str
    path: Path
    rel: str
    size: int
    mtime_ns: int
    sha256: str
    state: JobState
    attempts: int = 0
    next_attempt_at: float = 0.0
    request_id: str | None = None
    settings: dict[str, Any] | None = None
    outputs: list[str] = field(default_factory=list)
    pending: list[list[str]] = field(default_factory=list)
    error_kind: str | None = None
    reason: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    finished_at: float | None = None
    output_megapixels: float | None = None
    cost_usd: float | None = None
    submissions: int = 0
    #: The identical job (same content and settings) whose output this one copies; while
    #: that job is unfinished this one is not ready.
    waits_for: int | None = None
    #: Runs of this job that fal may have billed without a result to show for them: a
    #: submission sent again because its answer was lost and it could not be found, or a
    #: request cancelled at ``fal.timeout`` after it had started running.
    paid_twice: int = 0
