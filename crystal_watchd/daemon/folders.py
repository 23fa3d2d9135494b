"""The daemon's folders: whether each inbox is there, watching and scanning it, and intake
(a settled file hashed and journaled as a queued job).

    watchdog threads ─► _on_event ─► Settler ─► _intake (hash) ─► Journal (queued) ─► wake
    scans (start, periodic, overflow) ─┘

Part of ``Service`` (daemon/service.py), which owns the state these methods share.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from pathlib import Path

from watchdog.events import FileSystemEvent

from .. import logs
from ..config import FolderConfig
from ..intake.hashing import Hashed, hash_settled
from ..intake.watcher import FolderWatcher
from ..journal.arrivals import Arrival

log = logs.get(__name__)
HASH_PARALLELISM = 4
#: Bytes of a batch worth another hashing thread.
HASH_BYTES_PER_THREAD = 8 << 20
#: Settled files of one folder hashed and journaled together (one transaction).
INTAKE_BATCH = 500
AVAILABILITY_CHECK = 2.0  # seconds between checks that every inbox is still there


class Folders:
    """Folder availability, watching, scanning and intake, for ``Service``."""

    def _start_folder(self, folder: FolderConfig) -> None:
        """Watch the folder (not in ``once``) and scan it for what is already there."""
        if not self.once:
            watcher = FolderWatcher(folder, self._rules[folder.name],
                                    asyncio.get_running_loop(), self._on_event)
            watcher.start()
            self._watchers[folder.name] = watcher
        self._scan(folder, folder.inbox)

    def _stop_folder(self, name: str) -> None:
        """Stop watching the folder and forget its unsettled files (its queued jobs stay)."""
        watcher = self._watchers.pop(name, None)
        if watcher is not None:
            watcher.stop()
        self.settler.forget_folder(name)

    def _on_event(self, folder_name: str, event: FileSystemEvent) -> None:
        """Every watchdog event arrives here, in the event loop."""
        folder = self.config.folder(folder_name)
        if folder is None or folder_name in self._unavailable or self._stopping:
            return
        rules, kind = self._rules[folder_name], event.event_type
        src = Path(os.fsdecode(event.src_path))
        dest = Path(os.fsdecode(event.dest_path)) if getattr(event, "dest_path", "") else None
        if event.is_directory:
            if kind == "deleted" and src == folder.inbox:
                self._set_available(folder, False)
            if kind in ("deleted", "moved") and folder_name in self._watchers:
                self._watchers[folder_name].remove_dir(src)
            new_dir = dest if kind == "moved" else src if kind == "created" else None
            if new_dir is not None and new_dir != folder.inbox and rules.wants_dir(new_dir):
                self._watchers[folder_name].add_dir(new_dir)
                self._scan(folder, new_dir)
            return
        if kind in ("deleted", "moved"):
            self.settler.forget(src)
            if kind == "deleted" or dest is None:
                return
            src = dest
        if rules.wants_file(src):
            self._track(folder, src)

    def _track(self, folder: FolderConfig, path: Path) -> None:
        if self.settler.touch(folder.name, path, folder.settle):
            log.debug("file_detected", folder=folder.name, file=str(path))

    def _scan(self, folder: FolderConfig, start: Path) -> None:
        """List ``start`` (in a thread) and track every file version not journaled yet."""
        self._scans_pending += 1
        rules = self._rules[folder.name]

        def list_new(known: set[tuple[str, int, int]]) -> list[Path]:
            return [Path(name) for name, st in rules.scan_names(start)
                    if (name, st.st_size, st.st_mtime_ns) not in known]

        async def scan() -> None:
            try:
                started = time.monotonic()
                known = await self.journal.known_versions(folder.name)
                new = await asyncio.to_thread(list_new, known)
                for path in new:
                    self._track(folder, path)
                log.info("folder_scanned", folder=folder.name, directory=str(start), new=len(new),
                         known=len(known), seconds=round(time.monotonic() - started, 3))
            finally:
                self._scans_pending -= 1

        self._spawn_intake(scan())

    async def _scans_done(self) -> None:
        """Return once no scan is running (or the daemon stops)."""
        while self._scans_pending and not self._stopping:
            await asyncio.sleep(0.1)

    def rescan_all(self) -> None:
        if self._stopping:
            return
        log.info("rescan_started", folders=len(self.config.folders))
        for folder in self.config.folders:
            if folder.name not in self._unavailable:
                self._scan(folder, folder.inbox)

    def _spawn_intake(self, coro) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self._intake_tasks.add(task)
        task.add_done_callback(self._intake_tasks.discard)
        return task

    def _retouch(self, folder_name: str, path: Path) -> None:
        folder = self.config.folder(folder_name)
        if folder is not None:
            self._track(folder, path)

    def _on_stable(self, folder_name: str, path: Path, st: os.stat_result) -> None:
        # Counted as incoming (the spend guard) from now until it is journaled or known.
        self._hashing[path] = folder_name
        self._settled.setdefault(folder_name, {})[path] = st
        # Files that settle together are hashed and journaled together, a batch at a time.
        if self._intake_runner is None or self._intake_runner.done():
            self._intake_runner = self._spawn_intake(self._intake_settled())

    def _incoming(self, folder_name: str) -> list[Path]:
        """Files of a folder seen but not journaled yet: settling or being hashed."""
        return [*self.settler.paths(folder_name),
                *(p for p, name in self._hashing.items() if name == folder_name)]

    async def _intake_settled(self) -> None:
        """Take settled files a batch of one folder at a time until none is left."""
        while self._settled and not self._stopping:
            name = next(iter(self._settled))
            waiting = self._settled[name]
            batch = dict(itertools.islice(waiting.items(), INTAKE_BATCH))
            for path in batch:
                del waiting[path]
            if not waiting:
                del self._settled[name]
            try:
                await self._intake(name, batch)
            finally:
                again = self._settled.get(name, {})
                for path in batch:
                    if path not in again:  # settled anew meanwhile: still incoming
                        self._hashing.pop(path, None)

    async def _intake(self, folder_name: str, batch: dict[Path, os.stat_result]) -> None:
        """Hash the settled files not journaled yet and journal them in one transaction."""
        folder, rules = self.config.folder(folder_name), self._rules.get(folder_name)
        if folder is None or rules is None:
            return
        known = await self.journal.known_among(
            folder_name, [(p, st.st_size, st.st_mtime_ns) for p, st in batch.items()])
        todo = [(p, st) for p, st in batch.items()
                if (str(p), st.st_size, st.st_mtime_ns) not in known]

        async def hash_part(part: list[tuple[Path, os.stat_result]]) -> list[Hashed]:
            async with self._hash_limit:
                return await asyncio.to_thread(hash_settled, part)

        # Threads only pay off for big files: small ones are mostly Python's own work, which
        # several threads would just pass the GIL around for.
        total = sum(st.st_size for _, st in todo)
        ways = max(1, min(HASH_PARALLELISM, total // HASH_BYTES_PER_THREAD))
        parts = [todo[i::ways] for i in range(ways)]
        arrivals = []
        for found in await asyncio.gather(*(hash_part(p) for p in parts if p)):
            for h in found:
                if h.changed:
                    self._track(folder, h.path)  # written to while we hashed: settle again
                elif h.error is not None:
                    version = (h.path, h.st.st_size, h.st.st_mtime_ns)
                    if version not in self._unreadable:  # once per version, not every rescan
                        self._unreadable.add(version)
                        log.warning("file_unreadable", folder=folder_name, file=str(h.path),
                                    error=h.error)
                elif h.digest is not None:
                    arrivals.append(Arrival(h.path, rules.rel(h.path) or h.path.name,
                                            h.st.st_size, h.st.st_mtime_ns, h.digest))
        jobs = await self.journal.enqueue_many(folder_name, arrivals)
        for job in jobs:
            log.info("file_queued", folder=folder_name, file=job.rel, job_id=job.id,
                     size=job.size)
        if jobs:
            self._wake.set()
            self._notify_status()

    def _set_available(self, folder: FolderConfig, available: bool) -> None:
        if available == (folder.name not in self._unavailable):
            return
        if not available:
            self._unavailable.add(folder.name)
            self._stop_folder(folder.name)
            self.alerts.on_folder(folder.name, folder.inbox, available)
            log.warning("folder_unavailable", folder=folder.name, inbox=str(folder.inbox),
                        note="paused; nothing is treated as deleted; resumes when it returns")
        else:
            self._unavailable.discard(folder.name)
            log.info("folder_available", folder=folder.name, inbox=str(folder.inbox))
            self.alerts.on_folder(folder.name, folder.inbox, available)
            self._start_folder(folder)
            self._wake.set()

    async def _housekeeping(self) -> None:
        last_rescan = time.monotonic()
        # Not ``while True``: on Python 3.11 asyncio.wait_for swallows a cancellation that
        # lands just as the wrapped call finishes, and the shutdown would wait forever.
        while not self._stopping:
            await asyncio.sleep(AVAILABILITY_CHECK)
            for folder in self.config.folders:
                try:
                    present = await asyncio.wait_for(asyncio.to_thread(folder.inbox.is_dir), 10)
                except asyncio.TimeoutError:
                    present = False  # a hung network mount is as good as gone
                if self._stopping:
                    return
                self._set_available(folder, present)
            if time.monotonic() - last_rescan >= self.config.rescan_interval:
                last_rescan = time.monotonic()
                self.rescan_all()


def create_dirs(folder: FolderConfig) -> None:
    """Missing inbox and outbox folders are created at start (and on reload)."""
    for directory in (folder.inbox, folder.outbox):
        directory.mkdir(parents=True, exist_ok=True)
