"""``crystal-watchd journal rebuild``: what the outboxes already hold, journaled as done.

For a journal lost or restored from an older backup: every file in an inbox that the journal
does not know, and whose output its outbox already holds (the output's XMP provenance names
the file's content and the folder's settings), is journaled as done at no cost, so nothing
is paid for again. What no output names stays unknown, for the daemon to process.
"""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path

from ..config import Config
from ..images import provenance
from ..intake.hashing import hash_settled
from ..intake.rules import Rules
from ..journal import open_store
from ..journal.arrivals import Arrival
from .worker import named_for, settings_for


async def rebuild(config: Config) -> dict[str, int]:
    """Folder name → files journaled as done from their outputs."""
    journal = await open_store(config)
    index = provenance.OutboxIndex()
    found: dict[str, int] = {}
    try:
        for folder in config.folders:
            if not folder.inbox.is_dir():
                continue
            rules = Rules(folder)
            known = await journal.known_versions(folder.name)
            new = [(Path(name), st) for name, st in
                   await asyncio.to_thread(lambda r=rules: list(r.scan_names()))
                   if (name, st.st_size, st.st_mtime_ns) not in known]
            settings = settings_for(config, folder, config.backend)
            count = 0
            for hashed in await asyncio.to_thread(hash_settled, new):
                rel = rules.rel(hashed.path)
                if hashed.digest is None or rel is None:
                    continue
                outputs = await asyncio.to_thread(
                    index.find, folder.outbox, hashed.digest, settings.key(), rel,
                    functools.partial(named_for, folder, rel))
                if not outputs:
                    continue
                jobs = await journal.enqueue_many(folder.name, [Arrival(
                    hashed.path, rel, hashed.st.st_size, hashed.st.st_mtime_ns, hashed.digest)])
                for job in jobs:
                    job = await journal.start(job, settings.__dict__, settings.key())
                    job = await journal.output_written(job, [str(p) for p in outputs],
                                                       megapixels=None, cost_usd=0.0)
                    await journal.done(job)
                    count += 1
            found[folder.name] = count
    finally:
        await journal.close()
    return found
