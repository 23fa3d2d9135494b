"""``crystal-watchd journal export|import``: jobs as JSON lines, from one store to another
(a studio that started with the SQLite journal and moves to a shared PostgreSQL one).

Hook deliveries not yet delivered (pending, or given up and waiting for a retry by hand) go
along, each with its delivery id, so a receiver still drops repeats after the move; so does
the spend ledger, so the day's budget and the spend totals survive the move."""

from __future__ import annotations

import base64
import contextlib
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..config import Config
from ..jobs import JobState
from . import ledger, open_journal
from .base import COLUMNS, JournalBase
from .sync import SyncJournal

FORMAT = "crystal-watchd-journal/3"
#: Exports this version reads: /1 had job lines only, /2 no spend ledger (its jobs' recorded
#: costs become ledger rows as the migration makes them).
READS = ("crystal-watchd-journal/1", "crystal-watchd-journal/2", FORMAT)
#: Lines of an export that are not jobs, by their one key.
EXTRA_LINES = ("delivery", "spend")
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
#: A spend ledger row's columns in an export; ``job_id`` is the exporting store's id.
SPEND_EXPORTED = tuple(c.strip() for c in ledger.WRITTEN.split(","))


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


def export_spend(journal: SyncJournal) -> list[dict[str, Any]]:
    """Every row of the spend ledger, oldest first."""
    return [dict(r) for r in journal.run(journal.store._rows(
        f"SELECT {', '.join(SPEND_EXPORTED)} FROM spend ORDER BY id"))]


def import_jobs(journal: SyncJournal, rows: Iterable[dict[str, Any]],
                deliveries: Iterable[dict[str, Any]] = (),
                spend: Iterable[dict[str, Any]] | None = None) -> tuple[int, int]:
    """Add exported jobs; a job whose exact version is there already is skipped. Jobs that
    were running come in queued (their request id kept, so they resume, not resubmit).
    Deliveries follow their job (one whose id is there already is skipped), and so do
    spend ledger rows (of jobs imported now; None: an export without a ledger, whose jobs'
    rows are made from their recorded costs). Returns (imported, skipped) jobs."""
    return journal.run(_import(journal.store, rows, deliveries, spend))


async def _import(journal: JournalBase, rows: Iterable[dict[str, Any]],
                  deliveries: Iterable[dict[str, Any]] = (),
                  spend: Iterable[dict[str, Any]] | None = None) -> tuple[int, int]:
    imported = skipped = 0
    new_id: dict[int, int] = {}  # the export's job id → this store's
    added: dict[int, int] = {}  # the same, for jobs added by this import
    made: list[dict[str, Any]] = []  # ledger rows of an export without a ledger
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
            if job_id is not None:
                added[row.get("id")] = job_id
                if spend is None:
                    made += ledger.rows_of_job(row)
        for entry in (made if spend is None else spend):
            if entry.get("job_id") not in added:
                continue  # its job was there already, with its ledger rows
            values = {k: entry.get(k) for k in SPEND_EXPORTED}
            values["job_id"] = added[entry["job_id"]]
            await journal._exec(f"INSERT INTO spend ({', '.join(values)}) VALUES "
                                f"({', '.join('?' for _ in values)})", tuple(values.values()))
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
    try:
        with (contextlib.nullcontext(sys.stdout) if str(target) == "-"
              else open(target, "w", encoding="utf-8")) as out:
            out.write(json.dumps({"format": FORMAT}) + "\n")
            for row in export_jobs(journal):
                out.write(_encode(row) + "\n")
                count += 1
            for delivery in export_deliveries(journal):
                out.write(json.dumps({"delivery": dict(delivery)}, sort_keys=True) + "\n")
            for entry in export_spend(journal):
                out.write(json.dumps({"spend": entry}, sort_keys=True) + "\n")
    finally:
        journal.close()
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
            kind = next((k for k in EXTRA_LINES if line.startswith(f'{{"{k}":')), None)
            if kind is not None:
                try:
                    yield json.loads(line)
                except ValueError as exc:
                    raise ValueError(f"{source}:{number}: not a {kind} line ({exc})") from None
            else:
                yield _decode(line, f"{source}:{number}")


def read_export(source: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(job rows, delivery rows) of an export file, all of it checked."""
    jobs, deliveries, _ = read_export_ledger(source)
    return jobs, deliveries


def read_export_ledger(source: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]],
                                              list[dict[str, Any]] | None]:
    """(job rows, delivery rows, spend ledger rows) of an export file, all of it checked;
    the ledger is None in an export older than the ledger."""
    with open(source, encoding="utf-8") as fh:
        has_ledger = FORMAT in fh.readline()
    lines = list(_rows(source))
    return ([line for line in lines if not any(k in line for k in EXTRA_LINES)],
            [line["delivery"] for line in lines if "delivery" in line],
            [line["spend"] for line in lines if "spend" in line] if has_ledger else None)


def import_file(config: Config, source: Path) -> tuple[int, int]:
    """Add the jobs of an export (and their undelivered hook deliveries) to ``config``'s
    journal: (imported, skipped) jobs."""
    jobs, deliveries, spend = read_export_ledger(source)  # all checked before any write
    journal = open_journal(config)
    try:
        return import_jobs(journal, jobs, deliveries, spend)
    finally:
        journal.close()
