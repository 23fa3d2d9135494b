"""The optional daily spending limit (``budget.daily_usd``)."""

from __future__ import annotations

from collections.abc import Callable

from .. import logs
from ..journal import JournalBase
from ..journal.ledger import day_of

log = logs.get(__name__)


class Budget:
    """Says whether today's spend has reached the limit, logging it once a day."""

    def __init__(self) -> None:
        self._noticed_day: str | None = None
        #: Told the limit once a day when the spend reaches it (notifications).
        self.on_reached: Callable[[float], None] = lambda limit: None

    def reset(self) -> None:
        self._noticed_day = None

    async def reached(self, limit: float | None, now: float, journal: JournalBase) -> bool:
        if limit is None:
            return False
        spent = await journal.spent_on(day_of(now))
        if spent < limit:
            self._noticed_day = None
            return False
        day = day_of(now)
        if self._noticed_day != day:
            self._noticed_day = day
            log.warning("budget_reached", spent_usd=round(spent, 4), daily_usd=limit,
                        note="new submissions wait until tomorrow (or a reload); files stay "
                             "queued; requests already paid for still finish")
            self.on_reached(limit)
        return True
