"""``crystal-watchd journal export|import``: jobs as JSON lines, from one store to another
(a studio that started with the SQLite journal and moves to a shared PostgreSQL one).

Hook deliveries not yet delivered (pending, or given up and waiting for a retry by hand) go
along, each with its delivery id, so a receiver still drops repeats after the move."""

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

FORMAT = "crystal-watchd-journal/2"
#: Exports this version reads: /1 had job lines only.
READS = ("crystal-watchd-journal/1", FORMAT)
#: A delivery's columns in an export; ``job_id`` is the exporting store's id of its job.
DELIVERY_EXPORTED = ("delivery_id", "job_id", "hook", "event", "payload", "state", "attempts",
                     "next_attempt_at", "last_error", "created_at", "updated_at")
#: Columns a job carries between stores, beyond the id (each store numbers its own jobs).
EXPORTED = tuple(c.strip() for c in COLUMNS.split(",")) + (
    "settings_key", "reserved_usd", "submit_identity", "submit_sent_at",
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


def export_deliveries(journal: SyncJournal) -> list[dict[str, Any]]:
    """Hook deliveries not delivered yet (pending or given up), oldest first."""
    return journal.run(journal.store._rows(
        f"SELECT {', '.join(DELIVERY_EXPORTED)} FROM deliveries WHERE state != ? ORDER BY id",
        ("delivered",)))


def import_jobs(journal: SyncJournal, rows: Iterable[dict[str, Any]],
                deliveries: Iterable[dict[str, Any]] = ()) -> tuple[int, int]:
    """Add exported jobs; a job whose exact version is there already is skipped. Jobs that
    were running come in queued (their request id kept, so they resume, not resubmit).
    Deliveries follow their job (one whose id is there already is skipped). Returns
    (imported, skipped) jobs."""
    return journal.run(_import(journal.store, rows, deliveries))


async def _import(journal: JournalBase, rows: Iterable[dict[str, Any]],
                  deliveries: Iterable[dict[str, Any]] = ()) -> tuple[int, int]:
    imported = skipped = 0
    new_id: dict[int, int] = {}  # the export's job id → this store's
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
            there = await journal._one("SELECT id FROM jobs WHERE folder=? AND path=? AND size=? "
                                       "AND mtime_ns=? AND sha256=? AND state=?",
                                       (values["folder"], values["path"], values["size"],
                                        values["mtime_ns"], values["sha256"], values["state"]))
            job_id = None if there else await journal._insert_job(values)
            if job_id is None:
                skipped += 1
            else:
                imported += 1
            if row.get("id") is not None and (there or job_id is not None):
                new_id[row["id"]] = there["id"] if there else job_id
        for delivery in deliveries:
            if delivery.get("job_id") not in new_id:
                continue  # its job is not in this export
            values = {k: delivery.get(k) for k in DELIVERY_EXPORTED}
            values["job_id"] = new_id[delivery["job_id"]]
            await journal._exec(
                f"INSERT INTO deliveries ({', '.join(values)}) VALUES "
                f"({', '.join('?' for _ in values)}) ON CONFLICT (delivery_id) DO NOTHING",
                tuple(values.values()))
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
        for delivery in export_deliveries(journal):
            out.write(json.dumps({"delivery": dict(delivery)}, sort_keys=True) + "\n")
    finally:
        journal.close()
        if out is not sys.stdout:
            out.close()
    return count


def _rows(source: Path) -> Iterator[dict[str, Any]]:
    """Every line of an export after its header: job rows, and ``{"delivery": …}`` lines."""
    with open(source, encoding="utf-8") as fh:
        header = fh.readline()
        try:
            ok = json.loads(header).get("format") in READS
        except (ValueError, AttributeError):
            ok = False
        if not ok:
            raise ValueError(f"{source}: not a crystal-watchd journal export")
        for number, line in enumerate(fh, start=2):
            if not line.strip():
                continue
            if line.startswith('{"delivery":'):
                try:
                    yield json.loads(line)
                except ValueError as exc:
                    raise ValueError(f"{source}:{number}: not a delivery line ({exc})") from None
            else:
                yield _decode(line, f"{source}:{number}")


def read_export(source: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(job rows, delivery rows) of an export file, all of it checked."""
    lines = list(_rows(source))
    return ([line for line in lines if "delivery" not in line],
            [line["delivery"] for line in lines if "delivery" in line])


def import_file(config: Config, source: Path) -> tuple[int, int]:
    """Add the jobs of an export (and their undelivered hook deliveries) to ``config``'s
    journal: (imported, skipped) jobs."""
    jobs, deliveries = read_export(source)  # the whole file is checked before any write
    journal = open_journal(config)
    try:
        return import_jobs(journal, jobs, deliveries)
    finally:
        journal.close()
