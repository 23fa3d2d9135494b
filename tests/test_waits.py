"""Waiting with a time limit never loses a cancellation: a loop that waits for an event and
is cancelled at shutdown just as the event is set ends (on Python 3.10 and 3.11,
``asyncio.wait_for`` swallows that cancellation and such a loop runs on)."""

import asyncio
import contextlib
import sys

import pytest

from crystal_watchd.waits import event_set, within


async def _cancelled_as_the_event_is_set(wait) -> bool:
    """A ``while True`` loop around ``wait(event, 5)``, cancelled the moment the wait is
    over but before the loop has seen it; whether the loop ended cancelled."""
    event = asyncio.Event()

    async def loop() -> None:
        while True:
            event.clear()
            await wait(event, 5)

    task = asyncio.create_task(loop())
    await asyncio.sleep(0)       # the loop now waits
    event.set()
    await asyncio.sleep(0)       # the inner wait is over; the loop has not run yet
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=1)
    task.cancel()
    await asyncio.wait({task}, timeout=1)
    return bool(done) and task.cancelled()


def test_event_set_raises_a_cancellation_that_arrives_as_the_event_is_set():
    """``event_set`` lets the cancellation through: the loop ends."""
    assert asyncio.run(_cancelled_as_the_event_is_set(event_set))


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="wait_for keeps cancellations there")
def test_the_race_is_real_with_asyncio_wait_for():
    """The same loop on ``asyncio.wait_for`` runs on after the cancel (so the test above
    would catch a return to it)."""
    async def wait(event, timeout):
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)

    assert not asyncio.run(_cancelled_as_the_event_is_set(wait))


def test_within_returns_the_result_or_times_out():
    """``within`` returns what the awaitable returned, raises its error, and raises
    ``TimeoutError`` (cancelling it) when the time runs out."""
    async def main():
        assert await within(asyncio.sleep(0, "x"), 1) == "x"
        with pytest.raises(ZeroDivisionError):
            await within(_divide(), 1)
        slow = asyncio.ensure_future(asyncio.sleep(10))
        with pytest.raises(asyncio.TimeoutError):
            await within(slow, 0.05)
        assert slow.cancelled()
        assert await event_set(asyncio.Event(), 0.01) is False

    async def _divide():
        return 1 / 0

    asyncio.run(main())


def test_within_raises_the_callers_cancellation_and_cancels_the_awaitable():
    """A caller cancelled while it waits is cancelled, and so is what it waited for."""
    async def main():
        inner = asyncio.ensure_future(asyncio.sleep(10))
        outer = asyncio.create_task(within(inner, 5))
        await asyncio.sleep(0.01)
        outer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await outer
        await asyncio.sleep(0)
        assert inner.cancelled()

    asyncio.run(main())


def test_the_package_waits_only_through_waits():
    """No module but ``waits`` calls ``asyncio.wait_for``: each use elsewhere is a loop that
    may never stop on Python 3.10 and 3.11."""
    from pathlib import Path

    import crystal_watchd

    package = Path(crystal_watchd.__file__).parent
    users = sorted(str(p.relative_to(package)) for p in package.rglob("*.py")
                   if "asyncio.wait_for(" in p.read_text() and p.name != "waits.py")
    assert users == []
