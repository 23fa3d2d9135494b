"""In-process publish/subscribe of job changes.

The journal publishes one ``JobChanged`` after every state change it commits (it is the only
place a job changes), so readers — the web page's live refresh, /metrics, the terminal view —
learn of changes without polling the journal. Subscribers run synchronously in the thread
that changed the job (the event loop): they must be quick and must not raise.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from . import logs
from .jobs import Job, JobState

log = logs.get(__name__)


@dataclass(frozen=True)
class JobChanged:
    #: The job as committed.
    job: Job
    #: Its state before the change (None for a newly journaled job).
    before: JobState | None
    #: The journal columns this change wrote.
    changed: frozenset[str]
    at: float = field(default_factory=time.time)

    @property
    def submitted(self) -> bool:
        """The backend accepted a request for this job (fal bills from here)."""
        return "request_id" in self.changed and self.job.request_id is not None

    @property
    def started(self) -> bool:
        return "settings" in self.changed and self.job.state == JobState.RUNNING

    @property
    def finished(self) -> bool:
        return self.job.state.finished and self.before != self.job.state

    @property
    def retry(self) -> str | None:
        """The error kind when this change schedules another attempt, else None."""
        if (self.job.state == JobState.QUEUED and "next_attempt_at" in self.changed
                and self.before == JobState.RUNNING and self.job.error_kind):
            return self.job.error_kind
        return None


Subscriber = Callable[[JobChanged], None]


class Events:
    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Call ``subscriber`` on every change from now on; returns the unsubscribe call."""
        self._subscribers.append(subscriber)
        return lambda: self._subscribers.remove(subscriber) if subscriber in \
            self._subscribers else None

    def publish(self, event: JobChanged) -> None:
        for subscriber in list(self._subscribers):
            try:
                subscriber(event)
            except Exception:
                log.exception("event_subscriber_failed", job_id=event.job.id)
