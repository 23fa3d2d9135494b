"""The one bounded place where pixels are decoded, resized and encoded.

On a 2-core NAS with 1–2 GB of RAM, eight 48 MP results finishing together would need
several GB if each were decoded at once. Every piece of pixel work goes through this pool:
at most ``workers`` run at a time, and the sum of their estimated memory stays under
``memory_mb`` (a single job larger than that still runs, alone). Waiters are served in
arrival order, so a large image is never starved by a stream of small ones. Jobs waiting
here hold no upscaler slot; a result that needs no pixel change never comes here.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

#: Working memory per pixel of the largest image a piece of work touches: the decoded image
#: (up to 4 bytes), one converted copy, and the encoder's own buffers.
BYTES_PER_PIXEL = 8
#: Below this, work is too small to be worth accounting (headers, thumbnails).
_FLOOR = 4 * 1024 * 1024


def estimate(megapixels: float, bytes_per_pixel: float = BYTES_PER_PIXEL) -> int:
    """Bytes of memory that work on an image of ``megapixels`` may take."""
    return max(_FLOOR, int(megapixels * 1e6 * bytes_per_pixel))


def give_freed_memory_back() -> None:
    """Make large buffers come straight from the kernel and go back to it when freed.

    glibc raises its mmap threshold after a large free, so the next decoded image lands in
    the heap of whichever worker thread made it, and each thread's heap then keeps its peak
    for good: two threads alternating over 48 MP images hold twice the memory one needs.
    A fixed threshold keeps image buffers out of those heaps. No-op off glibc."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD: 1 MiB, which also fixes it
    except (OSError, AttributeError):
        pass


class PixelPool:
    def __init__(self, workers: int, memory_mb: float):
        self.workers = max(1, workers)
        self.budget = int(memory_mb * 1024 * 1024)
        self.running = 0
        self.reserved = 0
        #: The most ever reserved at once (for the benchmark and tests).
        self.peak_reserved = 0
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    def _fits(self, need: int) -> bool:
        return self.running < self.workers and (self.running == 0
                                                or self.reserved + need <= self.budget)

    def _wake(self) -> None:
        while self._waiters:
            need, future = self._waiters[0]
            if future.done():  # cancelled while waiting
                self._waiters.popleft()
                continue
            if not self._fits(need):
                return
            self._waiters.popleft()
            self._take(need)
            future.set_result(None)

    def _take(self, need: int) -> None:
        self.running += 1
        self.reserved += need
        self.peak_reserved = max(self.peak_reserved, self.reserved)

    def _give_back(self, need: int) -> None:
        self.running -= 1
        self.reserved -= need
        self._wake()

    async def run(self, func: Callable[..., T], *args: Any, megapixels: float,
                  bytes_per_pixel: float = BYTES_PER_PIXEL) -> T:
        """Run ``func(*args)`` in a thread once a worker and the memory are free."""
        need = estimate(megapixels, bytes_per_pixel)
        if not self._waiters and self._fits(need):
            self._take(need)
        else:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append((need, future))
            try:
                await future
            except asyncio.CancelledError:
                if future.done() and not future.cancelled():
                    self._give_back(need)  # granted just as we were cancelled
                else:
                    self._waiters = collections.deque(
                        w for w in self._waiters if w[1] is not future)
                    self._wake()
                raise
        try:
            return await asyncio.to_thread(func, *args)
        finally:
            self._give_back(need)
