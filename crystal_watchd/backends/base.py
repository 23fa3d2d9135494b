"""The seam every backend plugs into: one job's upright image in, result images out."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from ..images.pixels import PixelPool
from ..images.preflight import Plan, SourceImage
from ..images.result import ResultImage

T = TypeVar("T")


async def _nothing(*args: Any) -> None:
    return None


@dataclass(frozen=True)
class SubmitTrail:
    """The journal's record of a submission sent and not yet answered, so that a lost answer
    (or a crash before it arrived) leads to looking for the request, not to paying again."""

    #: (identity, wall-clock time sent) of a submission journaled earlier without an answer.
    unanswered: tuple[str, float] | None = None
    #: Record (identity, sent_at) before the submission is sent.
    sending: Callable[[str, float], Awaitable[None]] = _nothing
    #: The backend answered without taking it (nothing pending there).
    refused: Callable[[], Awaitable[None]] = _nothing
    #: It could not be found and is sent again: it may have been paid twice.
    given_up: Callable[[], Awaitable[None]] = _nothing
    #: A request cancelled after it may have started running, without a result: fal may
    #: bill that run, and the job is submitted again.
    abandoned: Callable[[], Awaitable[None]] = _nothing


@dataclass(frozen=True)
class UpscaleRequest:
    job_id: int
    source: SourceImage
    #: The original file's bytes, for backends that can send them as they are.
    data: bytes
    source_name: str
    plan: Plan
    creativity: float
    #: A request the backend accepted earlier (journaled): resume it, never resubmit.
    request_id: str | None
    #: Called with the backend's request id as soon as it has one, before any waiting;
    #: the worker journals it so a crash resumes rather than pays again.
    on_submitted: Callable[[str], Awaitable[None]]
    #: Called when a journaled request is gone for good, before submitting anew.
    on_forgotten: Callable[[], Awaitable[None]]
    work_dir: Path = field(default=Path("."))
    #: What to ask the upscaler for: "jpg" when the folder writes JPEG and the result's bytes
    #: can be the output, else lossless "png".
    result_format: str = "png"
    #: The bounded pool every decode, resize and encode runs in (None: a plain thread).
    pixels: PixelPool | None = None
    trail: SubmitTrail = field(default_factory=SubmitTrail)

    async def pixel_work(self, func: Callable[..., T], *args: Any, megapixels: float) -> T:
        if self.pixels is None:
            return await asyncio.to_thread(func, *args)
        return await self.pixels.run(func, *args, megapixels=megapixels)


class Slots:
    """How many requests may be at the upscaler at once (``concurrency``).

    Jobs prepare (decode, upload) and finish (download, write) outside a slot, so the next
    request is ready the moment one completes and the upscaler never waits for our disk or
    network. Resizable, because a reload may change ``concurrency``.
    """

    def __init__(self, limit: int, ahead: int = 0):
        self.limit = limit
        self.used = 0
        #: How many slots may be handed on early (``fal.queue_ahead``); 0 makes ``limit``
        #: a hard cap on requests submitted and not finished.
        self.ahead = ahead
        #: Slots handed on early whose request has not completed yet. Capped at ``ahead``,
        #: so at most ``limit + ahead`` requests are ever at the upscaler, even if they hang.
        self.lent = 0
        self._changed: asyncio.Condition | None = None

    def try_lend(self) -> bool:
        if self.lent >= self.ahead:
            return False
        self.lent += 1
        return True

    def returned(self) -> None:
        self.lent -= 1

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    async def acquire(self, owner: int | None = None) -> None:
        """Take a slot; ``owner`` (a job id) matters to slots shared between daemons."""
        changed = self._condition()
        async with changed:
            await changed.wait_for(lambda: self.used < self.limit)
            self.used += 1

    async def release(self, owner: int | None = None) -> None:
        changed = self._condition()
        async with changed:
            self.used -= 1
            changed.notify_all()

    async def __aenter__(self) -> Slots:
        await self.acquire()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.release()

    async def resize(self, limit: int) -> None:
        changed = self._condition()
        async with changed:
            self.limit = limit
            changed.notify_all()


class Backend(Protocol):
    name: str
    slots: Slots

    async def upscale(self, request: UpscaleRequest) -> list[ResultImage]:
        """Upscale one image. Raise errors from crystal_watchd.errors; never retry on your own
        beyond what keeps a single request alive (the worker owns backoff)."""
        ...

    async def aclose(self) -> None: ...

    # Optional: ``async def output_written(self, request_id: str) -> None``, called once a
    # job's outputs are safely in place (the fal backend tidies what it left at fal).
