"""Handlers that must not hide what they catch: a cancellation (a shutdown) goes on up, and
an error nobody expected is logged and dealt with, not dropped."""

from __future__ import annotations

import asyncio
import contextlib
import types

import fal_client
from aiohttp.test_utils import make_mocked_request

from crystal_watchd.backends import waiting
from crystal_watchd.web.app import WebServer


class Said:
    """A bound logger that keeps what it was told."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, dict]] = []

    def _say(self, event: str, **kw) -> None:
        self.lines.append((event, kw))

    info = debug = warning = error = _say

    def named(self, event: str) -> list[dict]:
        return [kw for e, kw in self.lines if e == event]


def fake_handle(stream):
    """A fal request handle whose HTTP client opens status streams with ``stream``."""
    client = types.SimpleNamespace(stream=stream)
    return types.SimpleNamespace(client=client, request_id="req-1",
                                 status_url="https://fal.invalid/requests/req-1/status",
                                 _parse_status=lambda data: data)


def test_a_cancelled_event_stream_handler_stays_cancelled():
    """The page's /events handler, cancelled (as the server's shutdown does), ends cancelled
    instead of returning as if the browser had left, and unsubscribes on the way out."""
    server = types.SimpleNamespace(_streams=set())

    async def main():
        request = make_mocked_request("GET", "/events")
        handler = asyncio.create_task(WebServer.stream(server, request))
        for _ in range(200):
            if server._streams:
                break
            await asyncio.sleep(0.01)
        assert server._streams, "the handler never subscribed"
        handler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(handler, 5)
        return handler

    handler = asyncio.run(main())
    assert handler.cancelled()
    assert not server._streams


def test_an_unexpected_stream_error_is_logged_and_polling_takes_over_at_once():
    """A status stream that dies of an error it does not expect (here a RuntimeError on
    opening) is logged with that error and the wait goes on by polling straight away,
    not only after STREAM_SILENCE of nothing."""
    said = Said()
    polls = []

    @contextlib.asynccontextmanager
    async def broken_stream(*args, **kwargs):
        raise RuntimeError("the stream broke in an unforeseen way")
        yield  # pragma: no cover - an async generator that raises first

    async def poll():
        polls.append(1)
        return fal_client.Completed(logs=None, metrics={})

    async def nothing():
        return None

    async def main():
        return await asyncio.wait_for(waiting.wait_until_done(
            fal_client, fake_handle(broken_stream), deadline=float("inf"),
            runtime=waiting.RunTime(), poll=poll, bound=said, nearly_done=nothing,
            timed_out=nothing), waiting.STREAM_SILENCE / 3)

    status = asyncio.run(main())
    assert isinstance(status, fal_client.Completed) and polls
    failed = said.named("fal_status_stream_failed")
    assert len(failed) == 1 and failed[0]["error"] == "RuntimeError"
    assert "unforeseen" in failed[0]["detail"]
    assert [kw["reason"] for kw in said.named("fal_status_stream_fallback")] == ["RuntimeError"]


def test_stopping_the_stream_keeps_the_callers_own_cancellation():
    """While a status watch waits for its stream to end, cancelling the task that stops it
    (a shutdown) cancels that task: the stream's expected cancellation is not confused
    with the caller's own."""
    said = Said()

    async def main():
        cancelled_once = asyncio.Event()

        @contextlib.asynccontextmanager
        async def stubborn_stream(*args, **kwargs):
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled_once.set()
                await asyncio.sleep(2)  # winds down slowly, as a closing connection may
                raise
            yield  # pragma: no cover - never reached

        async def poll():
            return None

        watch = waiting.StatusWatch(fal_client, fake_handle(stubborn_stream), poll, said)
        await asyncio.sleep(0.05)
        stopper = asyncio.create_task(watch.stop())
        await asyncio.wait_for(cancelled_once.wait(), 5)
        stopper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(stopper, 5)
        return stopper

    stopper = asyncio.run(main())
    assert stopper.cancelled()
    assert not said.named("fal_status_stream_failed")
