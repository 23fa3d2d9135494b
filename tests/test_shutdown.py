"""Shutdown cannot hang on a swallowed cancellation."""

from __future__ import annotations

import asyncio

from conftest import write_config

from crystal_watchd import config as config_mod
from crystal_watchd.daemon import folders as folders_mod
from crystal_watchd.daemon.notify import Alerts
from crystal_watchd.daemon.running import Running
from crystal_watchd.journal import open_store


def test_housekeeping_ends_once_stopping_even_without_a_cancellation(tmp_path, monkeypatch):
    """On Python 3.11 ``asyncio.wait_for`` can swallow the shutdown's cancellation when the
    inbox check it wraps finishes at that instant; the housekeeping loop must still end as
    soon as the service is stopping, or the shutdown waits for it forever."""
    monkeypatch.setattr(folders_mod, "AVAILABILITY_CHECK", 0.01)
    (tmp_path / "in").mkdir()
    config = config_mod.load(write_config(tmp_path, [{"inbox": "in", "outbox": "out"}]))
    running = Running()

    async def main() -> None:
        journal = await open_store(config)
        intake = folders_mod.FolderIntake(lambda: config, journal,
                                          Alerts(lambda: config.notify, journal), running,
                                          status_changed=lambda: None)
        task = asyncio.create_task(intake.housekeeping())
        await asyncio.sleep(0.1)
        assert not task.done()  # it runs until told
        running.stopping = True  # as if the cancellation had been swallowed
        await asyncio.wait_for(task, 2)
        await journal.close()

    asyncio.run(main())
