"""Retrying one fal call in place, before the worker's own backoff takes over.

A transient refusal (429, 5xx, a network error) is tried again a few times with a short,
doubling pause, or fal's Retry-After when that is longer; every call to fal (submissions,
polls, result fetches, uploads, downloads, cancels) goes through the same loop so that
they all wait alike.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from .. import logs
from ..errors import FalUnreachable, RetryableError

log = logs.get(__name__)

T = TypeVar("T")

#: Transient errors of one call retried in place before the worker's backoff takes over.
IN_PLACE_RETRIES = 6
#: The pause before the second attempt, doubled after each further one, up to PAUSE_MAX.
PAUSE_FIRST = 0.2
PAUSE_MAX = 5.0


class RetryNow(Exception):
    """Raised by an attempt that already spent its own time (an unanswered submission
    looked for at fal): the next attempt starts at once, with no pause. ``error`` is
    what the caller gets when no attempt is left."""

    def __init__(self, error: RetryableError):
        super().__init__(error.reason)
        self.error = error


def pause(attempt: int, error: RetryableError) -> float:
    """Seconds to wait after the failed ``attempt`` (counted from 0)."""
    return max(error.delay or 0.0, min(PAUSE_FIRST * 2 ** attempt, PAUSE_MAX))


async def retry_in_place(call: str, once: Callable[[], Awaitable[T]], *,
                         attempts: int = IN_PLACE_RETRIES) -> T:
    """``await once()``, again after a RetryableError (pausing) or a RetryNow (not), up to
    ``attempts`` times in all; the last attempt's error is raised. Any other error is
    raised at once, and so is FalUnreachable (the breaker's to wait out)."""
    for attempt in range(attempts):
        last = attempt == attempts - 1
        try:
            return await once()
        except RetryNow as again:
            if last:
                raise again.error from None
        except FalUnreachable:
            raise  # not retried here: the breaker waits for fal, once for every call
        except RetryableError as exc:
            if last:
                raise
            delay = pause(attempt, exc)
            log.debug("fal_call_retry", call=call, error=exc.reason, retry_in=delay)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable: the last attempt returns or raises")
