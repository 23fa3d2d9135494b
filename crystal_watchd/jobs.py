"""What a job is, and the states it may pass through.

Only the journal (crystal_watchd/journal/) changes a job's state, and only along an edge of
``TRANSITIONS``; everything else reads it. Every group of states a query or a report uses is
named here once.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
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
        return self in FINISHED


_Q, _R, _D, _F = JobState.QUEUED, JobState.RUNNING, JobState.DONE, JobState.FAILED
_S, _A, _H = JobState.SUPERSEDED, JobState.ARRIVING, JobState.AWAITING_APPROVAL

#: Where a journaled file starts (``enqueue``; ``journal import`` brings a job in the state
#: it was exported in, a running one as queued).
INITIAL = _Q

#: Every state change the journal makes: state → the states it may change to. The journal
#: refuses any other (``IllegalTransition``).
TRANSITIONS: Mapping[JobState, frozenset[JobState]] = MappingProxyType({
    _Q: frozenset({
        _R,  # claim: a worker takes it
        _H,  # hold: its folder's pending pictures together are estimated above the limit
        _S,  # a newer version of the file was journaled before a worker took it
    }),
    _A: frozenset({
        _R,  # claim: its grace ran out, a worker looks at the file again
        _S,  # a newer version of the file was journaled meanwhile
    }),
    _R: frozenset({
        _R,  # start records the settings; take_over claims a dead daemon's job, lease run out
        _Q,  # retry_later, requeue (shutdown, pause), recover at start, wait_for_twin
        _D,  # the output is written and the original handled
        _F,  # a permanent error, or attempts exhausted
        _S,  # the source changed or vanished while it ran
        _A,  # the file does not decode yet: it may still be being written
    }),
    _H: frozenset({
        _Q,  # approve: released for spending
        _S,  # a newer version of the file was journaled while it was held
    }),
    _F: frozenset({
        _Q,  # retry_failed: ``retry`` puts the original back in the inbox
    }),
    _D: frozenset(),  # never processed again
    _S: frozenset(),  # a newer job, if any, stands for it
})

#: States a job is never taken up from again on its own (only ``retry`` revives a failed one).
FINISHED = frozenset({_D, _F, _S})
#: States of a job that waits for ``next_attempt_at`` before a worker claims it.
WAITING = frozenset({_Q, _A})
#: States of a job that may still produce an output without anyone's say.
UNFINISHED = WAITING | {_R}
#: States of a job that waits for a person (an approval), not for time or a worker.
HELD = frozenset({_H})


def predecessors(target: JobState) -> frozenset[JobState]:
    """The states a job may change to ``target`` from."""
    return frozenset(s for s, nexts in TRANSITIONS.items() if target in nexts)


def allowed(before: JobState, after: JobState) -> bool:
    return after in TRANSITIONS[before]


def ordered(states: Iterable[JobState]) -> tuple[str, ...]:
    """Values of ``states`` in declaration order: stable SQL arguments and report keys."""
    wanted = set(states)
    return tuple(s.value for s in JobState if s in wanted)


def report_key(state: JobState | str) -> str:
    """What ``status``, the page and ``/metrics`` call a state (a running job is in flight)."""
    value = JobState(state).value
    return "in_flight" if value == JobState.RUNNING.value else value


#: The per-state keys ``status --json``, the page and ``/metrics`` report: every state.
REPORTED = tuple(report_key(s) for s in JobState)


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
    #: When this job's latest attempt started, and when the backend took its request (the
    #: job page's timings; None before it happened, and in a journal older than them).
    started_at: float | None = None
    submitted_at: float | None = None
