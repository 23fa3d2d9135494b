"""One view per daemon of whether fal can be reached: a circuit breaker.

A call that fails for a reason that is not the picture's (connection refused or reset, DNS,
TLS, a timeout, 502/503/504, 429) opens it. While it is open no fal call is made: every call
waits in ``wait()``, so jobs stay where they are (queued, or in flight with their request
id) and no attempt is spent. One cheap probe (the storage token call, which bills nothing:
see probe.py) runs at a growing interval with jitter, honouring Retry-After; the first one
answered closes the breaker, and the waiting calls resume spread over a few seconds, so
several daemons on one account do not come back in the same instant.

While open the only traffic is the probe: a few requests a minute whatever the queue.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from .. import logs
from ..errors import FalUnreachable

log = logs.get(__name__)

#: The probe's first interval (seconds), doubled after each unanswered probe up to PROBE_MAX.
PROBE_FIRST = 2.0
PROBE_MAX = 60.0
#: Every probe interval varies by this fraction either way (no lockstep between daemons).
PROBE_JITTER = 0.25
#: Once fal answers, waiting calls resume within this many seconds, each at a random moment.
RESUME_SPREAD = 2.0


@dataclass(frozen=True)
class ProbeAnswer:
    """What one probe found: ``answered`` (fal replied, whatever it said about the account),
    else why not and how long fal asked us to wait."""

    answered: bool
    cause: str = ""
    retry_after: float | None = None


@dataclass(frozen=True)
class Outage:
    """The breaker's state as the daemon shows it (status, /healthz, the page)."""

    #: Unix time the outage began (None: fal is reachable).
    since: float | None = None
    cause: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {"reachable": self.since is None,
                "unreachable_since": _iso(self.since) if self.since else None,
                "cause": self.cause}


class Reachability:
    """The breaker. ``probe`` makes one cheap call; ``listeners`` hear ``(Outage, lasted)``
    whenever it opens (lasted None) or closes (lasted: the outage's seconds)."""

    def __init__(self, probe: Callable[[], Awaitable[ProbeAnswer]], *,
                 first: float = PROBE_FIRST, longest: float = PROBE_MAX,
                 jitter: float = PROBE_JITTER, resume_spread: float = RESUME_SPREAD):
        self._probe = probe
        self._first, self._longest, self._jitter = first, longest, jitter
        self._resume_spread = resume_spread
        self._up = asyncio.Event()
        self._up.set()
        self._task: asyncio.Task[None] | None = None
        self._retry_after: float | None = None
        self.state = Outage()
        self._down_mono: float | None = None
        #: Seconds spent unreachable in earlier outages (``lost_seconds`` adds the current).
        self._lost = 0.0
        #: Probes sent in all (tests and the bench read it).
        self.probes = 0
        self.listeners: list[Callable[[Outage, float | None], None]] = []
        #: The daemon is stopping: calls waiting for fal give up instead (see ``release``).
        self._released = False

    @property
    def reachable(self) -> bool:
        return self.state.since is None

    def lost_seconds(self) -> float:
        """Seconds fal has been unreachable since this daemon started: a request's own
        deadline is moved on by the outages it sat through."""
        current = 0.0 if self._down_mono is None else time.monotonic() - self._down_mono
        return self._lost + current

    def failed(self, cause: str, retry_after: float | None = None) -> None:
        """A call failed for a reason that is not the picture's: open the breaker (once)."""
        if self._released:
            return  # stopping: nothing more is waited for
        if retry_after:
            self._retry_after = max(self._retry_after or 0.0, retry_after)
        if not self.reachable:
            return
        self.state = Outage(since=time.time(), cause=cause)
        self._down_mono = time.monotonic()
        self._up.clear()
        log.warning("fal_unreachable", cause=cause, since=_iso(self.state.since),
                    note="no new work is sent to fal; every job waits where it is and no "
                         "attempt is counted; one probe checks now and then")
        self._task = asyncio.get_running_loop().create_task(self._probing(),
                                                            name="fal-probe")
        self._tell(None)

    async def wait(self) -> None:
        """Return once fal is (or is again) reachable; after an outage, at a random moment
        within the resume spread. Raises FalUnreachable once ``release`` was called while
        fal is away."""
        if self.reachable:
            return
        await self._up.wait()
        if not self.reachable:
            raise FalUnreachable("the daemon is stopping while fal is unreachable")
        await asyncio.sleep(random.uniform(0.0, self._resume_spread))

    def release(self) -> None:
        """The daemon is stopping: calls waiting for fal end now (their jobs go back to the
        queue with their request ids) instead of holding the shutdown for its grace."""
        self._released = True
        self._up.set()

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])

    async def _probing(self) -> None:
        interval = self._first
        while True:
            pause = interval * random.uniform(1 - self._jitter, 1 + self._jitter)
            retry_after, self._retry_after = self._retry_after, None
            await asyncio.sleep(max(pause, retry_after or 0.0))
            self.probes += 1
            answer = await self._probe()
            if answer.answered:
                self._closed()
                return
            log.debug("fal_probe_unanswered", cause=answer.cause)
            if answer.retry_after:
                self._retry_after = answer.retry_after
            interval = min(interval * 2, self._longest)

    def _closed(self) -> None:
        lasted = time.monotonic() - (self._down_mono or time.monotonic())
        self._lost += lasted
        since = self.state.since
        self.state, self._down_mono, self._task = Outage(), None, None
        log.info("fal_reachable_again", lasted=round(lasted, 1), since=_iso(since),
                 probes=self.probes, note="waiting work resumes")
        self._up.set()
        self._tell(lasted)

    def _tell(self, lasted: float | None) -> None:
        for listener in self.listeners:
            try:
                listener(self.state, lasted)
            except Exception:  # a listener's bug must not stop the breaker
                log.exception("fal_reachability_listener_failed")


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds") if ts else None
