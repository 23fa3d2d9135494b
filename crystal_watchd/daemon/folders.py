"""The daemon's folders: whether each inbox is there, watching and scanning it, and intake
(a settled file hashed and journaled as a queued job).

    watchdog threads ─► _on_event ─► Settler ─► _intake (hash) ─► Journal (queued)
    scans (start, periodic, overflow) ─┘                                   └─► Running.wake

``Service`` (daemon/service.py) builds the intake and hands it the shared ``Running`` state;
the worker's "the file changed" callback is ``FolderIntake.retouch``.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent

from .. import logs
from ..config import Config, FolderConfig
from ..intake.hashing import Hashed, hash_settled
from ..intake.rules import Rules
from ..intake.settle import Settler
from ..intake.watcher import FolderWatcher
from ..journal import JournalBase, skipped
from ..journal.arrivals import Arrival
from ..waits import within
from .notify import Alerts
from .running import Running

log = logs.get(__name__)
HASH_PARALLELISM = 4
#: Bytes of a batch worth another hashing thread.
HASH_BYTES_PER_THREAD = 8 << 20
#: Settled files of one folder hashed and journaled together (one transaction).
INTAKE_BATCH = 500
#: File versions remembered as reported not taken (the journal keeps them for good).
SKIPPED_REMEMBERED = 10_000
#: Seconds a file with a hidden or temporary name must stay so before it is reported as not
#: taken (a copy written as ``.name`` and renamed into place is not worth a line).
TEMPORARY_NAME_GRACE = 3.0
AVAILABILITY_CHECK = 2.0  # seconds between checks that every inbox is still there


class FolderIntake:
    """Folder availability, watching, scanning and intake: from a file seen to a queued job.

    Given the config (a function: a reload replaces it), the journal, the alerts, the shared
    ``Running`` state (it writes ``unavailable`` and sets ``wake``), ``status_changed`` (the
    status line) and ``once`` (scan only, never watch). Owns the watchers, the folders'
    rules, the settler, the scans and intake tasks running, and the files being hashed.
    """

    def __init__(self, config: Callable[[], Config], journal: JournalBase, alerts: Alerts,
                 running: Running, *, status_changed: Callable[[], None], once: bool = False):
        self._config = config
        self._journal = journal
        self._alerts = alerts
        self._running = running
        self._status_changed = status_changed
        self._once = once
        self._rules: dict[str, Rules] = {}
        self.set_rules()
        self._watchers: dict[str, FolderWatcher] = {}
        self.settler = Settler(self._on_stable, on_empty=self._on_empty)
        #: Versions (path, size, mtime) reported as not taken, so each is written once.
        self._skipped: OrderedDict[tuple[Path, int, int], None] = OrderedDict()
        #: Hidden or temporary names waiting out TEMPORARY_NAME_GRACE before they are noted.
        self._temporary: set[Path] = set()
        #: Scans and intake batches running (``Service`` cancels them at shutdown).
        self.tasks: set[asyncio.Task] = set()
        #: Files settled and being hashed, not journaled yet (the spend guard counts them).
        self._hashing: dict[Path, str] = {}
        #: Settled files waiting to be hashed and journaled, per folder, and the task doing it.
        self._settled: dict[str, dict[Path, os.stat_result]] = {}
        self._intake_runner: asyncio.Task | None = None
        self._unreadable: set[tuple[Path, int, int]] = set()
        self._scans_pending = 0
        self._hash_limit = asyncio.Semaphore(HASH_PARALLELISM)

    def set_rules(self) -> None:
        """Which files and directories each folder takes, from the config (and on reload)."""
        self._rules = {f.name: Rules(f) for f in self._config().folders}

    @property
    def scanning(self) -> bool:
        return bool(self._scans_pending)

    def watch_modes(self) -> dict[str, str]:
        """How each configured folder is looked at (the page): its watcher's mode,
        ``unavailable`` or ``scan``."""
        return {f.name: "unavailable" if f.name in self._running.unavailable else
                self._watchers[f.name].mode if f.name in self._watchers else "scan"
                for f in self._config().folders}

    def stop_watching(self) -> None:
        """Stop every watcher (shutdown); what they saw and did not settle is found again by
        the next start's scan."""
        for watcher in self._watchers.values():
            watcher.stop()

    def start_folder(self, folder: FolderConfig) -> None:
        """Watch the folder (not in ``once``) and scan it for what is already there."""
        if not self._once:
            watcher = FolderWatcher(folder, self._rules[folder.name],
                                    asyncio.get_running_loop(), self._on_event)
            watcher.start()
            self._watchers[folder.name] = watcher
        self._scan(folder, folder.inbox)

    def wait_for_inbox(self, folder: FolderConfig) -> None:
        """A missing inbox that was not made: the folder waits as gone, and starts when the
        inbox appears (``housekeeping`` looks every AVAILABILITY_CHECK)."""
        self._running.unavailable.add(folder.name)
        log.warning("inbox_missing", folder=folder.name, inbox=str(folder.inbox),
                    note="not created (it may be a share not mounted yet, or a typo); "
                         "watched as soon as it appears")

    def stop_folder(self, name: str) -> None:
        """Stop watching the folder and forget its unsettled files (its queued jobs stay)."""
        watcher = self._watchers.pop(name, None)
        if watcher is not None:
            watcher.stop()
        self.settler.forget_folder(name)

    def _on_event(self, folder_name: str, event: FileSystemEvent) -> None:
        """Every watchdog event arrives here, in the event loop."""
        folder = self._config().folder(folder_name)
        if folder is None or folder_name in self._running.unavailable or self._running.stopping:
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
        elif kind in ("created", "modified", "closed", "moved"):
            reason = rules.why_not(src)
            if reason is not None:
                self._spawn_intake(self._report_not_taken(folder.name, src, reason))

    async def _report_not_taken(self, folder_name: str, path: Path, reason: str,
                                st: os.stat_result | None = None) -> None:
        """Note a file not taken (seen by the watcher or a scan). A hidden or temporary name
        is mostly a copy or a sync in progress, renamed into place a moment later: it is
        noted only if it is still there under that name after TEMPORARY_NAME_GRACE."""
        if not path.name.startswith((".", "~")):
            await self._note_skipped(folder_name, path, reason, st)
        elif path not in self._temporary:
            self._temporary.add(path)
            self._spawn_intake(self._note_if_left(folder_name, path, reason))

    async def _note_if_left(self, folder_name: str, path: Path, reason: str) -> None:
        try:
            await asyncio.sleep(TEMPORARY_NAME_GRACE)
            await self._note_skipped(folder_name, path, reason)  # looks at it afresh
        finally:
            self._temporary.discard(path)

    def _on_empty(self, folder_name: str, path: Path, st: os.stat_result) -> None:
        self._spawn_intake(self._note_skipped(folder_name, path, "empty file (0 bytes)", st))

    async def _note_skipped(self, folder_name: str, path: Path, reason: str,
                            st: os.stat_result | None = None) -> None:
        """Record a file not taken, once per version: the log, ``status`` and the page
        then say why it did not come out."""
        if st is None:
            try:
                st = await asyncio.to_thread(path.stat)
            except OSError:
                return  # gone already (a temporary file renamed into place)
        key = (path, st.st_size, st.st_mtime_ns)
        if key in self._skipped:
            return
        self._skipped[key] = None
        while len(self._skipped) > SKIPPED_REMEMBERED:
            self._skipped.popitem(last=False)
        rules = self._rules.get(folder_name)
        rel = (rules.rel(path) if rules else None) or path.name
        try:
            if await skipped.note(self._journal, folder_name, rel, st.st_size,
                                  st.st_mtime_ns, reason):
                log.info("file_not_taken", folder=folder_name, file=str(path), reason=reason)
        except Exception as exc:  # noqa: BLE001 - a report about a file must not stop intake
            log.warning("file_not_taken_unrecorded", folder=folder_name, file=str(path),
                        error=str(exc))

    def _track(self, folder: FolderConfig, path: Path) -> None:
        if self.settler.touch(folder.name, path, folder.settle):
            log.debug("file_detected", folder=folder.name, file=str(path))

    def _scan(self, folder: FolderConfig, start: Path) -> None:
        """List ``start`` (in a thread) and track every file version not journaled yet."""
        self._scans_pending += 1
        rules = self._rules[folder.name]

        def list_new(known: set[tuple[str, int, int]],
                     ) -> tuple[list[Path], list[tuple[str, os.stat_result]], int]:
            unwanted: list[tuple[str, os.stat_result]] = []
            new = [Path(name) for name, st in rules.scan_names(start, unwanted)
                   if (name, st.st_size, st.st_mtime_ns) not in known]
            # The newest of the files not taken (a folder of RAW sidecars holds thousands),
            # oldest first, so the newest is the most recent one reported.
            unwanted.sort(key=lambda e: e[1].st_mtime_ns)
            return new, unwanted[-skipped.KEEP:], len(unwanted)

        async def scan() -> None:
            try:
                started = time.monotonic()
                known = await self._journal.known_versions(folder.name)
                new, unwanted, not_taken = await asyncio.to_thread(list_new, known)
                for path in new:
                    self._track(folder, path)
                log.info("folder_scanned", folder=folder.name, directory=str(start), new=len(new),
                         known=len(known), not_taken=not_taken,
                         seconds=round(time.monotonic() - started, 3))
            finally:
                self._scans_pending -= 1
            for name, st in unwanted:
                path = Path(name)
                reason = rules.why_not(path)
                if reason is not None:
                    await self._report_not_taken(folder.name, path, reason, st)

        self._spawn_intake(scan())

    async def scans_done(self) -> None:
        """Return once no scan is running (or the daemon stops)."""
        while self._scans_pending and not self._running.stopping:
            await asyncio.sleep(0.1)

    def rescan_all(self) -> None:
        if self._running.stopping:
            return
        log.info("rescan_started", folders=len(self._config().folders))
        for folder in self._config().folders:
            if folder.name not in self._running.unavailable:
                self._scan(folder, folder.inbox)

    def _spawn_intake(self, coro) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def retouch(self, folder_name: str, path: Path) -> None:
        """The worker's callback: the file changed after it was queued; track it again."""
        folder = self._config().folder(folder_name)
        if folder is not None:
            self._track(folder, path)

    def _on_stable(self, folder_name: str, path: Path, st: os.stat_result) -> None:
        # Counted as incoming (the spend guard) from now until it is journaled or known.
        self._hashing[path] = folder_name
        self._settled.setdefault(folder_name, {})[path] = st
        # Files that settle together are hashed and journaled together, a batch at a time.
        if self._intake_runner is None or self._intake_runner.done():
            self._intake_runner = self._spawn_intake(self._intake_settled())

    def incoming(self, folder_name: str) -> list[Path]:
        """Files of a folder seen but not journaled yet: settling or being hashed."""
        return [*self.settler.paths(folder_name),
                *(p for p, name in self._hashing.items() if name == folder_name)]

    async def _intake_settled(self) -> None:
        """Take settled files a batch of one folder at a time until none is left."""
        while self._settled and not self._running.stopping:
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
        folder, rules = self._config().folder(folder_name), self._rules.get(folder_name)
        if folder is None or rules is None:
            return
        known = await self._journal.known_among(
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
        jobs = await self._journal.enqueue_many(folder_name, arrivals)
        for job in jobs:
            log.info("file_queued", folder=folder_name, file=job.rel, job_id=job.id,
                     size=job.size)
        if jobs:
            self._running.wake.set()
            self._status_changed()

    def _set_available(self, folder: FolderConfig, available: bool) -> None:
        if available == (folder.name not in self._running.unavailable):
            return
        if not available:
            self._running.unavailable.add(folder.name)
            self.stop_folder(folder.name)
            self._alerts.on_folder(folder.name, folder.inbox, available)
            log.warning("folder_unavailable", folder=folder.name, inbox=str(folder.inbox),
                        note="paused; nothing is treated as deleted; resumes when it returns")
        else:
            self._running.unavailable.discard(folder.name)
            log.info("folder_available", folder=folder.name, inbox=str(folder.inbox))
            try:
                folder.outbox.mkdir(parents=True, exist_ok=True)
            except OSError as exc:  # a job waits on an outbox it cannot write; say why now
                log.warning("outbox_not_created", folder=folder.name,
                            outbox=str(folder.outbox), error=str(exc))
            self._alerts.on_folder(folder.name, folder.inbox, available)
            self.start_folder(folder)
            self._running.wake.set()

    async def housekeeping(self) -> None:
        """Every AVAILABILITY_CHECK: is each inbox still there; every rescan_interval: a
        rescan of every folder (what a watcher may have missed)."""
        last_rescan = time.monotonic()
        # Not ``while True``: on Python 3.11 asyncio.wait_for swallows a cancellation that
        # lands just as the wrapped call finishes, and the shutdown would wait forever.
        while not self._running.stopping:
            await asyncio.sleep(AVAILABILITY_CHECK)
            for folder in self._config().folders:
                try:
                    present = await within(asyncio.to_thread(folder.inbox.is_dir), 10)
                except asyncio.TimeoutError:
                    present = False  # a hung network mount is as good as gone
                if self._running.stopping:
                    return
                self._set_available(folder, present)
            if time.monotonic() - last_rescan >= self._config().rescan_interval:
                last_rescan = time.monotonic()
                self.rescan_all()


def may_create_inbox(folder: FolderConfig, config_path: Path) -> bool:
    """Whether a missing inbox may be made: only under the config file's own folder (a
    checkout's example, a folder set up beside its config). Anywhere else it may be a share
    not mounted yet or a mistyped path: made on the local disk under the mount point, it
    would hide what syncs there once the share mounts."""
    return config_path.parent.resolve() in folder.inbox.resolve().parents


def create_dirs(folder: FolderConfig, config_path: Path) -> bool:
    """At start (and on reload): the outbox is made if missing, and the inbox only where
    ``may_create_inbox`` allows. Returns whether the inbox is there to be watched."""
    if not folder.inbox.is_dir():
        if not may_create_inbox(folder, config_path):
            return False
        folder.inbox.mkdir(parents=True, exist_ok=True)
    folder.outbox.mkdir(parents=True, exist_ok=True)
    return True
