"""``crystal-watchd journal export|import``: jobs as JSON lines, from one store to another
(a studio that started with the SQLite journal and moves to a shared PostgreSQL one)."""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..config import Config
from ..jobs import JobState
from . import open_journal
from .base import COLUMNS, JournalBase
from .sync import SyncJournal

FORMAT = "crystal-watchd-journal/1"
#: Columns a job carries between stores, beyond the id (each store numbers its own jobs).
EXPORTED = tuple(c.strip() for c in COLUMNS.split(",")) + (
    "settings_key", "reserved_usd", "submit_identity", "submit_sent_at", "paid_twice",
    # the spend guard's: a held picture stays held (with its estimate), an approved one
    # stays approved
    "estimated_usd", "cleared_at", "approved_at")
_BYTES = ("path", "rel")


def export_jobs(journal: SyncJournal) -> list[dict[str, Any]]:
    """Every job as plain values (paths as bytes), oldest first."""
    return journal.run(_export(journal.store))


async def _export(journal: JournalBase) -> list[dict[str, Any]]:
    out = []
    for r in await journal._rows(f"SELECT {', '.join(EXPORTED)} FROM jobs ORDER BY id"):
        row = dict(r)
        row["path"], row["rel"] = bytes(row["path"]), bytes(row["rel"])
        out.append(row)
    return out


def import_jobs(journal: SyncJournal, rows: Iterable[dict[str, Any]]) -> tuple[int, int]:
    """Add exported jobs; a job whose exact version is there already is skipped. Jobs that
    were running come in queued (their request id kept, so they resume, not resubmit).
    Returns (imported, skipped)."""
    return journal.run(_import(journal.store, rows))


async def _import(journal: JournalBase, rows: Iterable[dict[str, Any]]) -> tuple[int, int]:
    imported = skipped = 0
    async with journal.transaction():
        for row in rows:
            values = {k: row.get(k) for k in EXPORTED if k != "id"}
            values["outputs"] = values["outputs"] or "[]"
            values["pending"] = values["pending"] or "[]"
            values["paid_twice"] = values["paid_twice"] or 0  # exports older than the column
            if values["state"] == JobState.RUNNING.value:
                values["state"] = JobState.QUEUED.value
            # Job ids are the store's own: a copy waiting for another job looks for its twin
            # again (by content and settings) when it next comes up.
            values["waits_for"] = None
            if await journal._one("SELECT 1 AS one FROM jobs WHERE folder=? AND path=? AND size=? "
                            "AND mtime_ns=? AND sha256=? AND state=?",
                            (values["folder"], values["path"], values["size"],
                             values["mtime_ns"], values["sha256"], values["state"])):
                skipped += 1
            elif await journal._insert_job(values) is None:
                skipped += 1
            else:
                imported += 1
    return imported, skipped


def _encode(row: dict[str, Any]) -> str:
    # Paths are bytes (any file name); base64 keeps them exact in JSON.
    plain = {k: base64.b64encode(v).decode() if k in _BYTES else v for k, v in row.items()}
    return json.dumps(plain, sort_keys=True)


def _decode(line: str, where: str) -> dict[str, Any]:
    try:
        row = json.loads(line)
        for key in _BYTES:
            row[key] = base64.b64decode(row[key])
        return row
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{where}: not a job line of a journal export ({exc})") from None


def export_file(config: Config, target: Path) -> int:
    """Write every job of ``config``'s journal to ``target`` ('-': stdout); returns how many."""
    journal = open_journal(config)  # not read-only: an older SQLite journal is migrated first
    count = 0
    out = sys.stdout if str(target) == "-" else open(target, "w", encoding="utf-8")
    try:
        out.write(json.dumps({"format": FORMAT}) + "\n")
        for row in export_jobs(journal):
            out.write(_encode(row) + "\n")
            count += 1
    finally:
        journal.close()
        if out is not sys.stdout:
            out.close()
    return count


def _rows(source: Path) -> Iterator[dict[str, Any]]:
    with open(source, encoding="utf-8") as fh:
        header = fh.readline()
        try:
            ok = json.loads(header).get("format") == FORMAT
        except (ValueError, AttributeError):
            ok = False
        if not ok:
            raise ValueError(f"{source}: not a crystal-watchd journal export")
        for number, line in enumerate(fh, start=2):
            if line.strip():
                yield _decode(line, f"{source}:{number}")


def import_file(config: Config, source: Path) -> tuple[int, int]:
    """Add the jobs of an export to ``config``'s journal: (imported, skipped)."""
    rows = list(_rows(source))  # the whole file is checked before anything is written
    journal = open_journal(config)
    try:
        return import_jobs(journal, rows)
    finally:
        journal.close()
