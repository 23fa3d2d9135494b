"""Waiting for a fal request to finish without hammering fal.

fal's status stream (``GET {status_url}/stream``, server-sent events, one per state change,
ending after COMPLETED) says the moment a request finishes at the cost of one call. A stream
cut on the way (a proxy or NAT dropping a long connection) is opened again, as a browser's
EventSource does, up to STREAM_REOPENS times per request. fal keeps a quiet stream alive
with a comment line (``: …``) every 15 s, which an SSE library drops, so the stream's raw
lines are read here and every line, a comment included, is a sign of life (fal's JS client
counts raw chunks the same way). When it cannot be opened, keeps being cut, or sends nothing
at all for STREAM_SILENCE seconds, the wait goes on by polling: about once a second, a
little faster only around the time the request is expected to end.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from httpx_sse import SSEError, aconnect_sse

from .. import logs
from ..waits import within
from . import falclient

log = logs.get(__name__)

#: Seconds without a line (an event or a keep-alive comment) after which the stream is
#: given up for polling: fal's keep-alive comes every 15 s, so a little more than that.
STREAM_SILENCE = 20.0
#: Times one request's stream is opened again after a cut, before polling takes over.
STREAM_REOPENS = 2
#: Poll intervals (seconds): normally, and right around the expected end of a run.
POLL = 1.0
POLL_NEAR_END = 0.3
#: How long before a running request is expected to finish its slot goes to the next one.
HANDOVER_LEAD = 0.15
STREAM_TIMEOUT = httpx.Timeout(30.0, read=STREAM_SILENCE + 5.0)
_SSE_TYPE = "text/event-stream"


class RunTime:
    """A running estimate of how long requests stay IN_PROGRESS: when to hand a slot on,
    and when polling should look a little more often."""

    def __init__(self) -> None:
        self.estimate: float | None = None

    def observe(self, seconds: float) -> None:
        self.estimate = seconds if self.estimate is None else 0.8 * self.estimate + 0.2 * seconds

    def handover_in(self, running_for: float) -> float | None:
        """Seconds until the slot may be handed on (None while nothing is known)."""
        if self.estimate is None:
            return None
        return max(0.0, self.estimate - HANDOVER_LEAD - running_for)

    def poll_delay(self, running_for: float | None) -> float:
        if self.estimate is None or running_for is None:
            return POLL
        # Runs vary by about half either way; polling faster over all of that would cost
        # more calls than it saves time, so only the middle of it is watched closely.
        if 0.8 * self.estimate <= running_for <= 1.3 * self.estimate + 0.5:
            return POLL_NEAR_END
        return POLL


class StatusWatch:
    """The statuses of one request, streamed while the stream works, polled otherwise."""

    def __init__(self, fal: Any, handle: Any, poll: Callable[[], Awaitable[Any]], bound):
        self._fal, self._handle, self._poll, self._bound = fal, handle, poll, bound
        self._events: asyncio.Queue[Any] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = self._start_stream()
        self._last_event = time.monotonic()
        self._reopens = 0
        #: Status calls made for this request (stream openings and polls).
        self.calls = 1

    @property
    def streaming(self) -> bool:
        return self._task is not None

    async def _stream(self) -> None:
        try:
            async with aconnect_sse(self._handle.client, "GET",
                                    self._handle.status_url + "/stream",
                                    params={"logs": 1}, timeout=STREAM_TIMEOUT) as source:
                response = source.response
                response.raise_for_status()
                if _SSE_TYPE not in response.headers.get("content-type", ""):
                    raise SSEError(f"expected {_SSE_TYPE}, got "
                                   f"{response.headers.get('content-type')!r}")
                async for data in self._events_of(response):
                    status = falclient.parse_status(self._handle, json.loads(data))
                    await self._events.put(status)
                    if isinstance(status, self._fal.Completed):
                        return
        except (httpx.HTTPError, SSEError, ValueError, KeyError, TypeError) as exc:
            await self._events.put(exc)
            return
        await self._events.put(None)  # ended without COMPLETED: cut short

    async def _events_of(self, response: httpx.Response):
        """The data of each event on the stream. Every raw line, a keep-alive comment
        included, counts as a sign of life (``_last_event``)."""
        data: list[str] = []
        async for raw in response.aiter_lines():
            self._last_event = time.monotonic()
            line = raw.rstrip("\r\n")
            if not line:
                if data:
                    yield "\n".join(data)
                data = []
                continue
            if line.startswith(":"):
                continue  # a comment: fal's keep-alive
            name, _, value = line.partition(":")
            if name == "data":
                data.append(value[1:] if value.startswith(" ") else value)
        if data:
            yield "\n".join(data)

    def _start_stream(self) -> asyncio.Task[None]:
        task = asyncio.create_task(self._stream())
        task.add_done_callback(self._stream_ended)
        return task

    def _stream_ended(self, task: asyncio.Task[None]) -> None:
        """The stream's own errors arrive through the queue; anything else it raised (a bug,
        an answer fal-client cannot parse) is logged here, and a stream still in use hands
        it on so that the wait goes on by polling now, not after STREAM_SILENCE."""
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        self._bound.warning("fal_status_stream_failed", error=type(error).__name__,
                            detail=str(error)[:200],
                            note="the stream is given up; the wait goes on by polling")
        if task is self._task:
            self._events.put_nowait(error)

    async def stop(self) -> None:
        """End the stream. Its cancellation is expected and not raised; what else it raised
        was logged when it ended. Waiting through ``asyncio.wait`` keeps the two
        cancellations apart: this task's own (a shutdown) still propagates."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        await asyncio.wait([task])

    async def next(self, wake_at: float) -> Any | None:
        """The next status, or None when ``wake_at`` (monotonic) comes first. Polling when
        the stream is gone: sleeps until the next poll (or ``wake_at``) and polls."""
        if self._task is None:
            return None
        while True:
            now = time.monotonic()
            silence_at = self._last_event + STREAM_SILENCE
            try:
                item = await within(self._events.get(),
                                    max(0.0, min(wake_at, silence_at) - now))
                break
            except asyncio.TimeoutError:
                now = time.monotonic()
                if now >= self._last_event + STREAM_SILENCE:
                    self._bound.info("fal_status_stream_fallback", reason="silent",
                                     silent_for=STREAM_SILENCE)
                    await self.stop()
                    return None
                if now >= wake_at:
                    return None
                # a keep-alive came meanwhile: the stream lives, listen on
        if item is None or isinstance(item, Exception):
            reason = "ended early" if item is None else type(item).__name__
            # A cut connection is worth opening again; an error answer (4xx/5xx) or a body
            # that does not parse would only come back, so those go straight to polling.
            cut = item is None or isinstance(item, (httpx.TransportError, SSEError))
            if cut and self._reopens < STREAM_REOPENS:
                self._reopens += 1
                self.calls += 1
                self._bound.debug("fal_status_stream_reopened", reason=reason,
                                  reopens=self._reopens)
                self._last_event = time.monotonic()
                self._task = self._start_stream()
                return None
            self._bound.info("fal_status_stream_fallback", reason=reason)
            await self.stop()
            return None
        self._last_event = time.monotonic()
        return item

    async def polled(self) -> Any:
        self.calls += 1
        return await self._poll()


async def wait_until_done(fal: Any, handle: Any, *, deadline: float, runtime: RunTime,
                          poll: Callable[[], Awaitable[Any]], bound,
                          nearly_done: Callable[[], Awaitable[None]],
                          timed_out: Callable[[], Awaitable[None]],
                          moved: Callable[[], float] = lambda: 0.0) -> Any:
    """The COMPLETED status of ``handle``'s request. Calls ``nearly_done`` once it is expected
    to finish within HANDOVER_LEAD, and ``timed_out`` past ``deadline`` (which raises, or
    returns when the request turns out to be finished). ``moved`` gives the seconds the
    deadline is put back by (fal was unreachable that long: not the request's time)."""
    request_id = handle.request_id
    watch = StatusWatch(fal, handle, poll, bound)
    seen_logs = 0
    running_since: float | None = None
    last_queued: float | None = None
    handed_over = False
    next_poll = time.monotonic()
    try:
        while True:
            now = time.monotonic()
            if now > deadline + moved():
                await watch.stop()
                await timed_out()
                deadline = float("inf")  # finished after all: fetch it
            handover_at = float("inf")
            if running_since is not None and not handed_over:
                wait = runtime.handover_in(now - running_since)
                handover_at = now + wait if wait is not None else handover_at
            if handover_at <= now:
                handed_over = True
                await nearly_done()
                continue
            if watch.streaming:
                status = await watch.next(min(deadline, handover_at))
                if status is None:
                    continue
            else:
                if next_poll > now:
                    await asyncio.sleep(min(next_poll, handover_at, deadline) - now)
                    continue
                status = await watch.polled()
            now = time.monotonic()
            entries = getattr(status, "logs", None) or []
            for entry in entries[seen_logs:]:
                bound.debug("fal_log", request_id=request_id,
                            message=str(entry.get("message", entry))[:500])
            seen_logs = max(seen_logs, len(entries))
            if isinstance(status, fal.Completed):
                if running_since is not None:
                    runtime.observe(now - running_since)
                bound.debug("fal_request_completed", request_id=request_id,
                            status_calls=watch.calls)
                return status
            if isinstance(status, fal.Queued):
                last_queued = now
                next_poll = now + POLL
                continue
            if running_since is None:
                # Between the last time it was seen queued and now; streamed events are
                # sent as the state changes, so there the time is exact.
                running_since = (now if last_queued is None or watch.streaming
                                 else (last_queued + now) / 2)
            next_poll = now + runtime.poll_delay(now - running_since)
    finally:
        await watch.stop()
