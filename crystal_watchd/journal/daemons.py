"""Daemons on a journal: who they are, their heartbeat, and what each holds.

Every daemon has a row (host, pid, a random id, its folders' settings) that its heartbeat
keeps fresh, and the same heartbeat renews the leases of the jobs it holds; ``status`` lists
them and ``check`` compares their folder settings.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any

from ..jobs import JobState
from .store import Store

#: A daemon whose heartbeat is older than this many leases is listed as gone.
GONE_AFTER_LEASES = 3


@dataclass(frozen=True)
class DaemonInfo:
    """Who a daemon is (host, pid, a random id) and what it last told the journal."""

    id: str
    host: str
    pid: int
    state_dir: str
    started_at: float
    heartbeat_at: float
    #: folder name → its effective settings, to spot daemons that disagree on a folder.
    folders: dict[str, Any]
    #: ``(job id, file)`` of the jobs it holds right now.
    working_on: list[tuple[int, str]]
    alive: bool


class DaemonRows:
    """The daemon operations of a journal, through the store it is given (its statements,
    transactions, ``lease`` and ``daemon_id``)."""

    def __init__(self, store: Store):
        self.store = store

    async def register_daemon(self, daemon_id: str, *, host: str, pid: int, state_dir: str,
                              folders: dict[str, Any]) -> None:
        """Announce this daemon; its leases and heartbeat carry ``daemon_id`` from now on."""
        self.store.daemon_id, self.store.home = daemon_id, (host, state_dir)
        now = time.time()
        async with self.store.transaction():
            # Rows of daemons gone for a day (killed, host lost) are dropped; newer ones stay
            # so ``status`` shows what stopped recently.
            await self.store._exec(self.store._sql(
                "DELETE FROM daemons WHERE id=? OR heartbeat_at<{now}-86400"), (daemon_id,))
            await self.store._exec(self.store._sql(
                "INSERT INTO daemons (id, host, pid, state_dir, started_at, heartbeat_at, "
                "folders) VALUES (?, ?, ?, ?, ?, {now}, ?)"),
                (daemon_id, host, pid, state_dir, now, json.dumps(folders, sort_keys=True)))

    async def heartbeat(self, folders: dict[str, Any] | None = None) -> int:
        """Tell the others we are alive and renew the leases of our jobs; returns how many."""
        store = self.store
        if store.daemon_id is None:
            return 0
        async with store.transaction():
            if folders is not None:
                await store._exec(store._sql("UPDATE daemons SET heartbeat_at={now}, folders=? "
                                             "WHERE id=?"),
                                  (json.dumps(folders, sort_keys=True), store.daemon_id))
            else:
                await store._exec(store._sql("UPDATE daemons SET heartbeat_at={now} WHERE id=?"),
                                  (store.daemon_id,))
            return await store._exec(
                store._sql("UPDATE jobs SET lease_until={now}+? WHERE owner=? AND state=?"),
                (store.lease, store.daemon_id, JobState.RUNNING.value))

    async def unregister_daemon(self) -> None:
        if self.store.daemon_id is not None:
            await self.store._exec("DELETE FROM daemons WHERE id=?", (self.store.daemon_id,))

    async def daemons(self) -> list[DaemonInfo]:
        """Every daemon that announced itself, with what it holds; ``alive`` if its last
        heartbeat is recent (a few leases)."""
        now_row = await self.store._one(self.store._sql("SELECT {now} AS now"))
        now = float(now_row["now"]) if now_row else time.time()
        working: dict[str, list[tuple[int, str]]] = {}
        for r in await self.store._rows(
                "SELECT id, owner, rel FROM jobs WHERE state=? AND owner IS NOT NULL "
                "ORDER BY id", (JobState.RUNNING.value,)):
            working.setdefault(r["owner"], []).append((r["id"], os.fsdecode(bytes(r["rel"]))))
        return [DaemonInfo(id=r["id"], host=r["host"], pid=r["pid"], state_dir=r["state_dir"],
                           started_at=r["started_at"], heartbeat_at=r["heartbeat_at"],
                           folders=json.loads(r["folders"] or "{}"),
                           working_on=working.get(r["id"], []),
                           alive=now - r["heartbeat_at"] < GONE_AFTER_LEASES * self.store.lease)
                for r in await self.store._rows(
                        "SELECT id, host, pid, state_dir, started_at, heartbeat_at, "
                        "folders FROM daemons ORDER BY started_at")]
