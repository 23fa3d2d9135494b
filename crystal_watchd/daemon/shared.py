"""What a daemon needs to share a journal with others: who it is, and slots at the
upscaler counted over every daemon."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass

from .. import logs
from ..backends.base import Slots
from ..journal import JournalBase
from ..waits import event_set

log = logs.get(__name__)
#: How often a daemon waiting for a global slot looks again (the others free them).
SLOT_POLL = 0.05


@dataclass(frozen=True)
class Identity:
    """Host name, pid and a random id: unique even for two daemons in one container image."""

    id: str
    host: str
    pid: int

    @classmethod
    def new(cls) -> Identity:
        host = socket.gethostname()
        return cls(id=f"{host}-{os.getpid()}-{secrets.token_hex(3)}", host=host, pid=os.getpid())


class SharedSlots(Slots):
    """``concurrency`` requests at the upscaler over every daemon on the journal.

    Each job takes a slot in the journal before submitting (or resuming) and keeps it until
    its request completes. The slot stays with the job, not the daemon, so a request left at
    the upscaler by a dead daemon is still counted until another daemon takes the job over
    (and that daemon's resume gets the slot back at once). No local limit is added on top:
    this daemon's own requests are among the ones counted, and a local limit could keep a
    taken-over job from the slot it already holds. Slots are never lent early: a lent slot
    would let one more request reach the upscaler than ``concurrency`` allows.
    """

    def __init__(self, journal: JournalBase, limit: int):
        super().__init__(limit)
        self.journal = journal
        self._turn = asyncio.Lock()
        self._freed = asyncio.Event()

    def try_lend(self) -> bool:
        return False

    async def acquire(self, owner: int | None = None) -> None:
        if owner is None:
            await super().acquire()
            return
        # A job that holds its slot already (taken over) or finds one free goes at once;
        # the others ask one at a time, in turn, so waiting costs one query per poll.
        if not await self.journal.acquire_slot(owner, self.limit):
            async with self._turn:
                while not await self.journal.acquire_slot(owner, self.limit):
                    self._freed.clear()
                    await event_set(self._freed, SLOT_POLL)
        self.used += 1

    async def release(self, owner: int | None = None) -> None:
        if owner is None:
            await super().release()
            return
        self.used -= 1
        await self.journal.release_slot(owner)
        self._freed.set()


#: Folder settings that decide what a file becomes; daemons sharing a folder must agree on
#: them. Paths, polling and settling are each host's own business.
COMPARED = ("scale_factor", "creativity", "output_format", "filename", "overwrite", "originals",
            "recursive", "extensions", "ignore", "max_input_megapixels",
            "max_output_megapixels", "oversize", "fit")


def folder_settings(config) -> dict[str, dict[str, object]]:
    """folder name → the settings compared between daemons, as plain data."""
    return {f.name: {k: _plain(getattr(f, k)) for k in COMPARED} for f in config.folders}


def _plain(value: object) -> object:
    if isinstance(value, tuple):
        return list(value)
    return value.plain() if hasattr(value, "plain") else value


def disagreements(config, journal: JournalBase) -> list[str]:
    """One line per setting where a live daemon on the journal treats a folder of the same
    name differently from ``config``."""
    mine = folder_settings(config)
    lines = []
    for daemon in journal.daemons():
        if not daemon.alive:
            continue
        for name, theirs in daemon.folders.items():
            ours = mine.get(name)
            if ours is None:
                continue
            for key in COMPARED:
                if key in theirs and theirs[key] != ours[key]:
                    lines.append(f"folder '{name}': {key} is {ours[key]!r} here but "
                                 f"{theirs[key]!r} on daemon {daemon.id} ({daemon.host}, "
                                 f"{daemon.state_dir})")
    return lines


async def register(journal: JournalBase, config) -> Identity:
    """Announce a new daemon on the journal; its leases and heartbeat carry its id."""
    me = Identity.new()
    await journal.register_daemon(me.id, host=me.host, pid=me.pid, state_dir=str(config.state_dir),
                            folders=folder_settings(config))
    return me


async def keep_alive(journal: JournalBase, current_config: Callable[[], object]) -> None:
    """Renew this daemon's leases and heartbeat row a third of a lease apart, publishing its
    folder settings (as they are after any reload) so ``check`` can compare daemons."""
    while True:
        config = current_config()
        await asyncio.sleep(max(0.2, min(config.journal_lease / 3, 20.0)))
        try:
            await journal.heartbeat(folder_settings(current_config()))
            written = await journal.backup_if_due()
            if written is not None:
                log.info("journal_backed_up", file=str(written))
        except Exception as exc:  # noqa: BLE001 - a blip must not stop the daemon
            log.warning("heartbeat_failed", error=str(exc),
                        note="leases run out if the journal stays unreachable")
