"""The fal reachability breaker on its own: when it opens, how it probes, when it lets the
waiting calls go, and what it tells."""

from __future__ import annotations

import asyncio
import time

import pytest

from crystal_watchd.backends.reachability import ProbeAnswer, Reachability
from crystal_watchd.errors import FalUnreachable


def test_probes_double_with_jitter_and_the_waiting_calls_resume_once_answered():
    """Opened once however many calls fail; probes come at first × 2ⁿ (±25 %) up to the
    longest; a call waiting meanwhile returns only after a probe is answered, within the
    resume spread; the listeners hear the opening once and the closing once with its
    length; the lost time counts the outage."""
    probed: list[float] = []
    told: list[tuple[bool, float | None]] = []

    async def scenario() -> float:
        start = time.monotonic()

        async def probe() -> ProbeAnswer:
            probed.append(time.monotonic() - start)
            return ProbeAnswer(len(probed) >= 4, "refused")

        breaker = Reachability(probe, first=0.1, longest=0.3, resume_spread=0.05)
        breaker.listeners.append(lambda state, lasted: told.append((state.since is None,
                                                                   lasted)))
        for _ in range(5):
            breaker.failed("fal submit failed: cannot connect")
        assert not breaker.reachable and breaker.state.cause.startswith("fal submit")
        await breaker.wait()
        assert breaker.reachable
        waited = time.monotonic() - start
        assert breaker.lost_seconds() == pytest.approx(waited, abs=0.1)
        await breaker.aclose()
        return waited

    waited = asyncio.run(scenario())
    gaps = [b - a for a, b in zip([0.0, *probed], probed, strict=False)]
    assert len(probed) == 4
    for gap, nominal in zip(gaps, (0.1, 0.2, 0.3, 0.3), strict=True):
        assert nominal * 0.75 - 0.02 <= gap <= nominal * 1.25 + 0.1, gaps
    assert probed[-1] <= waited <= probed[-1] + 0.05 + 0.1
    assert [up for up, _ in told] == [False, True]
    assert told[1][1] == pytest.approx(probed[-1], abs=0.1)


def test_retry_after_holds_the_next_probe_back():
    """A Retry-After longer than the interval (from the failing call, then from a probe)
    is waited out before the next probe."""
    probed: list[float] = []

    async def scenario() -> None:
        start = time.monotonic()

        async def probe() -> ProbeAnswer:
            probed.append(time.monotonic() - start)
            if len(probed) == 1:
                return ProbeAnswer(False, "fal answered 429", retry_after=0.4)
            return ProbeAnswer(True)

        breaker = Reachability(probe, first=0.05, longest=0.05, resume_spread=0.0)
        breaker.failed("fal status returned 429", retry_after=0.3)
        await breaker.wait()
        await breaker.aclose()

    asyncio.run(scenario())
    assert probed[0] >= 0.3 and probed[1] - probed[0] >= 0.4


def test_release_lets_waiting_calls_give_up_at_a_stop():
    """At a stop while fal is away, a call waiting for it raises FalUnreachable at once
    (its job goes back to the queue), and nothing opens the breaker again."""
    async def scenario() -> None:
        async def probe() -> ProbeAnswer:
            return ProbeAnswer(False, "refused")

        breaker = Reachability(probe, first=30.0)
        breaker.failed("cannot connect")
        waiting = asyncio.ensure_future(breaker.wait())
        await asyncio.sleep(0.05)
        assert not waiting.done()
        breaker.release()
        with pytest.raises(FalUnreachable):
            await asyncio.wait_for(waiting, 1)
        await breaker.aclose()

    asyncio.run(scenario())

