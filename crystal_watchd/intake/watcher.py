"""watchdog observers per folder: native inotify, or polling for network mounts.

Producer / consumer: watchdog's threads produce events, and each one crosses into asyncio
exactly once, through ``loop.call_soon_threadsafe``. Everything after that (ignore rules,
settling, journaling) runs in the event loop.

Recursive folders get one non-recursive watch per wanted directory, so pruned trees
(``@eaDir`` …) never cost an inotify watch; new subdirectories are added as they appear.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
from collections.abc import Callable
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirModifiedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch
from watchdog.observers.polling import PollingObserver

from .. import logs
from ..config import DEFAULT_POLL_SECONDS, FolderConfig
from .rules import Rules

log = logs.get(__name__)

EventSink = Callable[[str, FileSystemEvent], None]
_NETWORK_FS = ("cifs", "smb3", "smbfs", "nfs", "nfs4", "9p", "afs", "ceph", "glusterfs",
               "sshfs", "davfs", "ncpfs", "virtiofs")
# ENOSPC: this user's inotify *watches* ran out (one per directory); EMFILE: its inotify
# *instances* did (one per observer, so one per native folder). Each has its own sysctl.
_LIMIT_SYSCTL = {errno.ENOSPC: ("fs.inotify.max_user_watches", 524288),
                 errno.EMFILE: ("fs.inotify.max_user_instances", 1024)}


def _limit_hint(err: int | None) -> str:
    """What to raise for this errno, in words a user can paste."""
    name, value = _LIMIT_SYSCTL.get(err or 0, _LIMIT_SYSCTL[errno.ENOSPC])
    return (f"raise it with: sysctl {name}={value} (persist in /etc/sysctl.d/), or set "
            "polling for this folder")


#: What the watches ask the kernel for: everything but a file opened or closed after reading.
#: The daemon's own reads (hashing, headers, the upload) cause those, several per picture; a
#: big drop would fill inotify's queue with them (an overflow means a full rescan).
WANTED_EVENTS = [FileCreatedEvent, FileModifiedEvent, FileClosedEvent, FileMovedEvent,
                 FileDeletedEvent, DirCreatedEvent, DirModifiedEvent, DirMovedEvent,
                 DirDeletedEvent]


class _Bridge(FileSystemEventHandler):
    """Runs in watchdog's dispatcher thread; hands each event to the loop and returns."""

    def __init__(self, folder: str, loop: asyncio.AbstractEventLoop, sink: EventSink):
        self._folder, self._loop, self._sink = folder, loop, sink

    def dispatch(self, event: FileSystemEvent) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: we are shutting down
            self._loop.call_soon_threadsafe(self._sink, self._folder, event)


def filesystem_type(path: Path) -> str | None:
    """The type of the filesystem ``path`` lives on, from /proc/self/mounts (Linux)."""
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as fh:
            mounts = [line.split() for line in fh]
    except OSError:
        return None
    best, fstype = "", None
    target = str(path.resolve())
    for fields in mounts:
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) > len(best):
            best, fstype = point, fields[2]
    return fstype


def is_network_fs(fstype: str | None) -> bool:
    return bool(fstype) and (fstype in _NETWORK_FS or fstype.startswith("fuse"))


class FolderWatcher:
    """The observer and watches of one folder."""

    def __init__(self, folder: FolderConfig, rules: Rules, loop: asyncio.AbstractEventLoop,
                 sink: EventSink):
        self.folder, self.rules = folder, rules
        self._handler = _Bridge(folder.name, loop, sink)
        self._observer: BaseObserver | None = None
        self._watches: dict[Path, ObservedWatch] = {}
        self.mode = "polling" if folder.polling else "native"

    def start(self) -> None:
        fstype = filesystem_type(self.folder.inbox)
        if self.mode == "native" and is_network_fs(fstype):
            log.warning("network_filesystem_without_polling", folder=self.folder.name,
                        inbox=str(self.folder.inbox), fstype=fstype,
                        hint="native events often never arrive on network mounts; set "
                             "polling: true for this folder (a rescan still runs "
                             "periodically)")
        try:
            self._start(self.mode)
        except OSError as exc:
            if self.mode != "native" or exc.errno not in (errno.ENOSPC, errno.EMFILE):
                raise
            log.error("inotify_limit_reached", folder=self.folder.name, error=str(exc),
                      hint=_limit_hint(exc.errno),
                      fallback=f"polling every {DEFAULT_POLL_SECONDS:g}s")
            self.stop()
            self.mode = "polling-fallback"
            self._start(self.mode)
        log.info("folder_watched", folder=self.folder.name, inbox=str(self.folder.inbox),
                 mode=self.mode, directories=len(self._watches), fstype=fstype)

    def _start(self, mode: str) -> None:
        if mode == "native":
            self._observer = Observer()
        else:
            self._observer = PollingObserver(timeout=self.folder.polling or DEFAULT_POLL_SECONDS)
        self._observer.daemon = True
        self._observer.start()
        for directory in self.rules.dirs():
            self.add_dir(directory)

    def add_dir(self, directory: Path) -> None:
        if self._observer is None or directory in self._watches:
            return
        try:
            self._watches[directory] = self._observer.schedule(
                self._handler, str(directory), recursive=False, event_filter=WANTED_EVENTS)
        except FileNotFoundError:
            pass  # gone again before we got to it
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EMFILE) and self.mode == "native" \
                    and directory == self.folder.inbox:
                raise
            if exc.errno in (errno.ENOSPC, errno.EMFILE):
                log.error("inotify_limit_reached", folder=self.folder.name,
                          directory=str(directory), hint=_limit_hint(exc.errno),
                          fallback=f"the periodic rescan covers {directory}")
            else:
                log.warning("directory_not_watched", folder=self.folder.name,
                            directory=str(directory), error=str(exc))

    def remove_dir(self, directory: Path) -> None:
        for path in [p for p in self._watches if p == directory or directory in p.parents]:
            watch = self._watches.pop(path)
            if self._observer is not None:
                with contextlib.suppress(KeyError, OSError):
                    self._observer.unschedule(watch)

    def stop(self) -> None:
        observer, self._observer = self._observer, None
        self._watches.clear()
        if observer is not None:
            observer.stop()
            observer.join(timeout=5)


#: watchdog's loggers that report a kernel queue overflow (IN_Q_OVERFLOW).
_OVERFLOW_LOGGERS = ("watchdog.observers.inotify_c", "watchdog.observers.inotify")


class OverflowHook(logging.Filter):
    """watchdog handles an inotify queue overflow internally and only logs it; we watch its
    loggers for that record and answer with a full rescan, so no dropped event loses a file.

    A filter on watchdog's own loggers, with their level held at WARNING while installed:
    the configured ``log.level`` (``error``, say) decides whether the record is printed, never
    whether the rescan happens."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_overflow: Callable[[], None]):
        super().__init__()
        self._loop, self._on_overflow = loop, on_overflow
        #: Per logger: the level it had (put back at uninstall) and the level it let through.
        self._levels: dict[str, tuple[int, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if "overflow" in record.getMessage().lower():
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to rescan
                self._loop.call_soon_threadsafe(self._overflowed)
            return False  # said in our own words, as ``inotify_overflow``
        _, shown = self._levels.get(record.name, (logging.NOTSET, logging.WARNING))
        return record.levelno >= shown

    def _overflowed(self) -> None:  # in the event loop
        log.warning("inotify_overflow", reason="the kernel's inotify queue overflowed: "
                    "events were lost", action="rescanning every folder",
                    hint="raise fs.inotify.max_queued_events if this repeats")
        self._on_overflow()

    def install(self) -> None:
        for name in _OVERFLOW_LOGGERS:
            logger = logging.getLogger(name)
            self._levels[name] = (logger.level, logger.getEffectiveLevel())
            logger.setLevel(logging.WARNING)
            logger.addFilter(self)

    def uninstall(self) -> None:
        for name, (level, _) in self._levels.items():
            logger = logging.getLogger(name)
            logger.removeFilter(self)
            logger.setLevel(level)
        self._levels.clear()
