"""Watcher pieces that need no daemon: the overflow hook and filesystem detection."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from crystal_watchd.watcher import OverflowHook, filesystem_type, is_network_fs


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
