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
