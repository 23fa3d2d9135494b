"""The journal for commands that run once (``status``, ``retry``, ``approve``, ``journal
export``, ``check``) and for the web page's own thread: the daemon's asynchronous
operations, each run to its end on a private event loop before the call returns. One copy of
every query, used both ways.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class SyncJournal:
    """Wraps an asynchronous store: ``journal.get(7)`` runs ``store.get(7)`` to completion.
    Attributes read and set pass through to the store (``hooks``, ``spend_guard``, …)."""

    def __init__(self, opener: Callable[[], Awaitable[Any]]):
        loop = asyncio.new_event_loop()
        object.__setattr__(self, "_loop", loop)
        try:
            object.__setattr__(self, "store", self.run(opener()))
        except BaseException:
            loop.close()
            raise

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run one of the store's coroutines to its end."""
        return self._loop.run_until_complete(coro)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.store, name)
        if inspect.iscoroutinefunction(value):
            @functools.wraps(value)
            def call(*args: Any, **kwargs: Any) -> Any:
                return self.run(value(*args, **kwargs))
            return call
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.store, name, value)

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self.run(self.store.close())
        finally:
            self._loop.close()
