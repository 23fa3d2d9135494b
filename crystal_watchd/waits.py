"""Waiting with a time limit, without losing a cancellation.

On Python 3.10 and 3.11 ``asyncio.wait_for`` swallows a cancellation that arrives as the
awaited thing finishes (CPython gh-86296, fixed in 3.12): the caller's loop runs on as if
nothing had been asked of it. A loop that waits for an event with a limit (the dispatcher,
the hook deliverer, the status stream) and is cancelled at shutdown just as a job finishing
sets that event would never end, and the daemon would not stop. Everything here raises the
caller's cancellation every time; on 3.12 and later it is ``asyncio.wait_for`` itself.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")

__all__ = ["event_set", "within"]


async def within(awaitable: Awaitable[T], timeout: float | None) -> T:
    """``awaitable``'s result, or ``asyncio.TimeoutError`` after ``timeout`` seconds (the
    awaitable is cancelled then). A cancellation of the caller is always raised."""
    if sys.version_info >= (3, 12):
        return await asyncio.wait_for(awaitable, timeout)
    task = asyncio.ensure_future(awaitable)
    try:
        # asyncio.wait never swallows the caller's cancellation: it raises it from here.
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not done:
        task.cancel()
        await asyncio.wait({task})  # its end; a cancellation of the caller still raises
        if task.cancelled():
            raise asyncio.TimeoutError
    return task.result()  # what it returned, or raised, even as the time ran out


async def event_set(event: asyncio.Event, timeout: float | None) -> bool:
    """Wait up to ``timeout`` seconds for ``event``; whether it was set."""
    try:
        await within(event.wait(), timeout)
    except asyncio.TimeoutError:
        return False
    return True
