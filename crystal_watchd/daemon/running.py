"""What the daemon's parts share while it runs: one small object, passed to each part that
needs it (``Service`` builds it and hands it to ``FolderIntake`` and ``Dispatcher``).

Everything else a part keeps is its own; what is here is written by one part and read by
another, so each field says who writes it and who reads it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

#: In the state directory while fal is unreachable: what ``status`` shows. Not journaled:
#: it is this daemon's view of its way to fal, removed when fal answers or the daemon stops.
REACHABILITY_FILE = "fal-unreachable.json"


@dataclass
class Running:
    """The daemon's shared, mutable run state (one per ``Service``)."""

    #: Set when the daemon is shutting down. Written by ``Service`` (``request_stop``, the
    #: shutdown); read by every loop (``FolderIntake``, ``Dispatcher``, the status line).
    stopping: bool = False
    #: There may be work to start. Set by ``FolderIntake`` (files queued, a folder back),
    #: ``Dispatcher`` (a job finished, the budget full) and ``Service`` (retry, approve,
    #: reload, stop); waited on by ``Dispatcher`` only.
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    #: Job id → the task running it. Written by ``Dispatcher`` (a job started or finished);
    #: read by ``Service`` (shutdown, ``once``'s idle check, the page and the status line).
    inflight: dict[int, asyncio.Task] = field(default_factory=dict)
    #: Folders whose inbox is gone (an unmounted share): neither watched nor dispatched.
    #: Written by ``FolderIntake`` (availability checks) and ``Service.reload`` (a reloaded
    #: folder is looked at afresh); read by ``Dispatcher`` and the page.
    unavailable: set[str] = field(default_factory=set)
    #: Until when every submission waits (Unix time) and why: the account was refused.
    #: Written by ``Dispatcher`` (an account error; lifted on reload); read by
    #: ``Dispatcher``, ``once``'s idle check and the page.
    paused_until: float = 0.0
    pause_reason: str | None = None
    #: Since when fal (or the network to it) has been unreachable, Unix time (None: it is
    #: reachable), and why. Written by ``Service`` (told by the fal backend's breaker);
    #: read by ``Dispatcher`` (no new work is claimed meanwhile), the page, /healthz and
    #: the status line.
    fal_unreachable_since: float | None = None
    fal_unreachable_cause: str | None = None

    def paused(self, now: float) -> bool:
        return now < self.paused_until
