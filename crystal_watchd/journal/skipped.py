"""Files an inbox holds that never became jobs, and why (a name the folder does not take,
an empty file): what "why didn't my file come out?" is answered from.

One row per version of a path (path + size + mtime): the same file seen again adds nothing,
so a folder full of ``.txt`` files writes each once. Each folder keeps its most recent
``KEEP`` rows. Written by the daemon that saw the file; read by ``status`` and the page.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Protocol

KEEP = 200


class Writer(Protocol):
    async def _exec(self, sql: str, args: Any = ()) -> int: ...


class Reader(Protocol):
    async def query(self, sql: str, args: Any = ()) -> list[Mapping[str, Any]]: ...

    def has(self, name: str) -> bool: ...


def shown(text: str) -> str:
    """A file name as text any store takes (undecodable bytes shown as U+FFFD)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


async def note(store: Writer, folder: str, rel: str, size: int, mtime_ns: int,
               reason: str, now: float | None = None) -> bool:
    """Record one skipped version; False when it was recorded already."""
    seen = time.time() if now is None else now
    added = await store._exec(
        "INSERT INTO skipped (folder, rel, size, mtime_ns, reason, seen_at) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (folder, rel, size, mtime_ns) DO NOTHING",
        (folder, shown(rel), int(size), int(mtime_ns), reason, seen))
    if added:
        await store._exec(
            "DELETE FROM skipped WHERE folder=? AND id NOT IN (SELECT id FROM skipped "
            "WHERE folder=? ORDER BY seen_at DESC, id DESC LIMIT ?)", (folder, folder, KEEP))
    return bool(added)


async def recent(store: Reader, folder: str | None = None,
                 limit: int = KEEP) -> list[dict[str, Any]]:
    """The most recent skipped files, newest first (all folders, or one)."""
    if not store.has("skipped"):
        return []  # a journal its daemon has not migrated yet
    where, args = ("WHERE folder=? ", (folder,)) if folder else ("", ())
    rows = await store.query(
        "SELECT folder, rel, size, mtime_ns, reason, seen_at FROM skipped "
        f"{where}ORDER BY seen_at DESC, id DESC LIMIT ?", (*args, int(limit)))
    return [dict(r) for r in rows]
