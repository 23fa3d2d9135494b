"""Watcher pieces that need no daemon: the overflow hook and filesystem detection."""

from __future__ import annotations

import asyncio
import errno
import logging
from pathlib import Path

from crystal_watchd.intake.watcher import OverflowHook, _limit_hint, filesystem_type, is_network_fs


def test_inotify_overflow_log_line_triggers_a_rescan():
    """watchdog only logs a kernel queue overflow; our hook turns that line into a rescan
    (and ignores other warnings)."""
    calls = []

    async def main():
        hook = OverflowHook(asyncio.get_running_loop(), lambda: calls.append("rescan"))
        hook.install()
        try:
            logger = logging.getLogger("watchdog.observers.inotify_c")
            logger.warning("Inotify queue overflowed; filesystem events were lost")
            logger.warning("something else")
            await asyncio.sleep(0.05)
        finally:
            hook.uninstall()

    asyncio.run(main())
    assert calls == ["rescan"]


def test_network_filesystems_are_recognised():
    """SMB, NFS and FUSE mounts call for polling; local filesystems do not."""
    assert all(is_network_fs(t) for t in ("cifs", "nfs4", "fuse.sshfs", "smb3"))
    assert not any(is_network_fs(t) for t in ("ext4", "xfs", "btrfs", None))
    assert filesystem_type(Path("/")) is not None


def test_inotify_limit_hint_names_the_sysctl_for_the_errno():
    """inotify_add_watch fails with ENOSPC when the user's watches run out
    (fs.inotify.max_user_watches); inotify_init fails with EMFILE when the user's instances
    run out (fs.inotify.max_user_instances), per inotify(7). Each hint names its own sysctl."""
    assert "fs.inotify.max_user_watches=" in _limit_hint(errno.ENOSPC)
    assert "max_user_instances" not in _limit_hint(errno.ENOSPC)
    assert "fs.inotify.max_user_instances=" in _limit_hint(errno.EMFILE)
    assert "max_user_watches" not in _limit_hint(errno.EMFILE)


def test_the_watch_never_asks_for_reads_only_for_writes(tmp_path, monkeypatch):
    """A real inotify watch on an inbox: reading its files (as hashing, headers and uploads
    do, several times per picture) brings no event at all, so a big drop cannot fill the
    kernel's queue with the daemon's own reads; writing a new file still does (created,
    closed after writing)."""
    from crystal_watchd.config import FolderConfig
    from crystal_watchd.intake import watcher
    from crystal_watchd.intake.rules import Rules

    inbox = tmp_path / "in"
    inbox.mkdir()
    for i in range(20):
        (inbox / f"old{i}.jpg").write_bytes(b"x" * 100)
    seen: list[str] = []
    original = watcher._Bridge.dispatch

    def spy(self, event):  # every event watchdog hands over, before any filtering of ours
        seen.append(event.event_type)
        original(self, event)

    monkeypatch.setattr(watcher._Bridge, "dispatch", spy)
    folder = FolderConfig(name="f", inbox=inbox, outbox=tmp_path / "out")

    async def main():
        w = watcher.FolderWatcher(folder, Rules(folder), asyncio.get_running_loop(),
                                  lambda *_: None)
        w.start()
        try:
            await asyncio.sleep(0.3)
            for _ in range(3):
                for path in inbox.iterdir():
                    path.read_bytes()
            await asyncio.sleep(0.5)
            reads = list(seen)
            (inbox / "new.jpg").write_bytes(b"y" * 100)
            for _ in range(50):
                if "closed" in seen:
                    break
                await asyncio.sleep(0.05)
            return reads
        finally:
            w.stop()

    reads = asyncio.run(main())
    assert reads == []
    assert {"created", "closed"} <= set(seen) and "opened" not in seen


def test_overflow_triggers_a_rescan_whatever_the_log_level():
    """With watchdog's loggers raised to ERROR (``log.level: error``), a kernel overflow
    record still starts the rescan; other warnings stay hidden at that level."""
    calls = []
    seen = []

    class Collect(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    watchdog_logger = logging.getLogger("watchdog")
    old = watchdog_logger.level
    watchdog_logger.setLevel(logging.ERROR)
    collect = Collect()
    logger = logging.getLogger("watchdog.observers.inotify_c")
    logger.addHandler(collect)

    async def main():
        hook = OverflowHook(asyncio.get_running_loop(), lambda: calls.append("rescan"))
        hook.install()
        try:
            logger.warning("Inotify queue overflowed; filesystem events were lost")
            logger.warning("a warning the user did not ask to see")
            logger.error("an error the user asked to see")
            await asyncio.sleep(0.05)
        finally:
            hook.uninstall()

    try:
        asyncio.run(main())
    finally:
        logger.removeHandler(collect)
        watchdog_logger.setLevel(old)
    assert calls == ["rescan"]
    assert seen == ["an error the user asked to see"]
    assert logger.level == logging.NOTSET  # uninstall put the level back
