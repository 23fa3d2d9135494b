"""When is a file complete? When size and mtime have held still for ``settle`` seconds.

The same rule serves native events, polling and rescans, so a slow SMB copy, a phone upload
or a scanner that writes in bursts is taken once, whole. Events only say "look again"; the
decision is always made on a fresh stat. A close-write event does not shorten the wait: some
writers reopen and append chunk by chunk, closing the file after each one.
"""

from __future__ import annotations

import asyncio
import os
import stat
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

#: How often tracked files are stat'ed while any are waiting (seconds).
TICK = 0.2


@dataclass
class _Tracked:
    folder: str
    settle: float
    size: int = -1
    mtime_ns: int = -1
    changed_at: float = 0.0


class Settler:
    """Tracks candidate files per path and calls ``on_stable`` once each one is complete.

    ``on_stable(folder, path, stat)`` is called in the event loop; the path is then no longer
    tracked (a later event or scan starts tracking it again).
    """

    def __init__(self, on_stable: Callable[[str, Path, os.stat_result], None],
                 clock: Callable[[], float] = time.monotonic,
                 on_empty: Callable[[str, Path, os.stat_result], None] | None = None):
        self._on_stable = on_stable
        #: Told of a file that settled empty (it is not taken: nothing to upscale).
        self._on_empty = on_empty
        self._clock = clock
        self._tracked: dict[Path, _Tracked] = {}
        self._wake = asyncio.Event()

    def __len__(self) -> int:
        return len(self._tracked)

    def by_folder(self) -> Counter[str]:
        """Files still settling, per folder."""
        return Counter(t.folder for t in self._tracked.values())

    def paths(self, folder: str) -> list[Path]:
        """Files of ``folder`` still settling."""
        return [p for p, t in self._tracked.items() if t.folder == folder]

    def touch(self, folder: str, path: Path, settle: float) -> bool:
        """Something happened to ``path``: (re)start its quiet period. True if it is new."""
        entry = self._tracked.get(path)
        self._wake.set()
        if entry is None:
            self._tracked[path] = _Tracked(folder, settle, changed_at=self._clock())
            return True
        entry.changed_at = self._clock()
        return False

    def forget(self, path: Path) -> None:
        self._tracked.pop(path, None)

    def forget_folder(self, folder: str) -> None:
        for path in [p for p, t in self._tracked.items() if t.folder == folder]:
            del self._tracked[path]

    @staticmethod
    def _stat(paths: list[Path]) -> dict[Path, os.stat_result | None]:
        out: dict[Path, os.stat_result | None] = {}
        for path in paths:
            try:
                out[path] = os.stat(path, follow_symlinks=False)
            except OSError:
                out[path] = None
        return out

    def check(self, stats: dict[Path, os.stat_result | None] | None = None) -> None:
        """Apply one round of stats; hand over the files that held still long enough."""
        if stats is None:
            stats = self._stat(list(self._tracked))
        now = self._clock()
        for path, st in stats.items():
            entry = self._tracked.get(path)
            if entry is None:
                continue  # forgotten while the stats were taken
            if st is None or not stat.S_ISREG(st.st_mode):
                # Not a regular file (a symbolic link, a directory, a pipe) is never taken.
                # Deleted or renamed before it settled: the rename's own event (or the next
                # scan) brings the new name; the old one is simply forgotten.
                del self._tracked[path]
                continue
            if entry.size < 0:
                # First look: the quiet period runs from the event (or scan) that found it,
                # but a second look is always needed before the file is taken.
                entry.size, entry.mtime_ns = st.st_size, st.st_mtime_ns
                continue
            if (st.st_size, st.st_mtime_ns) != (entry.size, entry.mtime_ns):
                entry.size, entry.mtime_ns, entry.changed_at = st.st_size, st.st_mtime_ns, now
                continue
            if now - entry.changed_at < entry.settle:
                continue
            del self._tracked[path]
            if st.st_size == 0:
                if self._on_empty is not None:
                    self._on_empty(entry.folder, path, st)
                continue  # a placeholder; the write that fills it brings it back
            self._on_stable(entry.folder, path, st)

    async def run(self) -> None:
        while True:
            if not self._tracked:
                self._wake.clear()
                await self._wake.wait()
            # Look again after TICK, or sooner when a file's quiet period ends before that.
            due = min(t.changed_at + t.settle for t in self._tracked.values()) \
                if len(self._tracked) < 2000 else 0.0
            await asyncio.sleep(min(TICK, max(0.01, due - self._clock())))
            paths = list(self._tracked)
            # Thousands of stats (a big drop, a slow share) would stall the event loop.
            stats = await asyncio.to_thread(self._stat, paths) if len(paths) > 200 \
                else self._stat(paths)
            self.check(stats)
