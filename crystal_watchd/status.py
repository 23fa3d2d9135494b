"""Operator views of the journal: ``status`` and ``retry``.

Both work with or without a running daemon: SQLite in WAL mode lets them read (and ``retry``
write) beside it, and the daemon's dispatcher picks retried jobs up on its next round.

``status --json`` shape (version 1; fields are only ever added):

    {"version": 1, "journal": str, "daemon_running": bool, "generated_at": iso,
     "folders": {NAME: {"queued", "in_flight", "done", "failed", "superseded", "arriving": int,
                        "oldest_waiting": {"file", "since"} | null,
                        "spend_today_usd", "spend_total_usd": float}},
     "totals": {"queued", "in_flight", "done", "failed", "superseded", "arriving": int},
     "spend": {"today_usd", "total_usd", "today_megapixels", "total_megapixels": float,
               "by_day": {YYYY-MM-DD: usd}},
     "last_errors": [{"job_id", "folder", "file", "error", "reason", "at", "state"}],
     "arriving": [{"job_id", "folder", "file", "reason", "since", "judged_at"}]}

"arriving": files that do not decode yet and are taken to be still being written; each is
judged at ``judged_at`` unless it changes first (see the folder's ``incomplete_grace``).
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import lock
from .config import Config
from .jobs import JobState
from .journal import Journal
from .output import move_file

STATES = ("queued", "in_flight", "done", "failed", "superseded", "arriving")


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds") if ts else None


def _folder_entry() -> dict[str, Any]:
    return {**{s: 0 for s in STATES}, "oldest_waiting": None, "spend_today_usd": 0.0,
            "spend_total_usd": 0.0}


def collect(config: Config, journal_file: Path) -> dict[str, Any]:
    folders: dict[str, dict[str, Any]] = {f.name: _folder_entry() for f in config.folders}
    report: dict[str, Any] = {
        "version": 1, "journal": str(journal_file),
        "daemon_running": lock.held(config.state_dir),
        "generated_at": _iso(datetime.now(timezone.utc).timestamp()),
        "folders": folders, "totals": {s: 0 for s in STATES},
        "spend": {"today_usd": 0.0, "total_usd": 0.0, "today_megapixels": 0.0,
                  "total_megapixels": 0.0, "by_day": {}},
        "last_errors": [], "arriving": [],
    }
    if not journal_file.exists():
        return report
    journal = Journal(journal_file, readonly=True)
    try:
        db = journal.db
        for folder, state, n in db.execute("SELECT folder, state, COUNT(*) FROM jobs "
                                           "GROUP BY folder, state"):
            key = "in_flight" if state == JobState.RUNNING.value else state
            entry = folders.setdefault(folder, _folder_entry())
            entry[key] = entry.get(key, 0) + n
            report["totals"][key] = report["totals"].get(key, 0) + n
        for folder, rel, created in db.execute(
                "SELECT folder, rel, MIN(created_at) FROM jobs WHERE state IN (?, ?) "
                "GROUP BY folder", (JobState.QUEUED.value, JobState.RUNNING.value)):
            folders[folder]["oldest_waiting"] = {"file": os.fsdecode(rel), "since": _iso(created)}
        today = datetime.now().astimezone().date().isoformat()
        spend = report["spend"]
        for folder, day, usd, mp in db.execute(
                "SELECT folder, date(finished_at, 'unixepoch', 'localtime'), "
                "SUM(COALESCE(cost_usd, 0)), SUM(COALESCE(output_megapixels, 0)) FROM jobs "
                "WHERE state=? GROUP BY 1, 2", (JobState.DONE.value,)):
            spend["by_day"][day] = round(spend["by_day"].get(day, 0.0) + usd, 6)
            spend["total_usd"] += usd
            spend["total_megapixels"] += mp
            folders[folder]["spend_total_usd"] = round(folders[folder]["spend_total_usd"] + usd, 6)
            if day == today:
                spend["today_usd"] += usd
                spend["today_megapixels"] += mp
                folders[folder]["spend_today_usd"] = round(
                    folders[folder]["spend_today_usd"] + usd, 6)
        for key in ("today_usd", "total_usd", "today_megapixels", "total_megapixels"):
            spend[key] = round(spend[key], 6)
        for row in db.execute(
                "SELECT id, folder, rel, error_kind, reason, updated_at, state FROM jobs "
                "WHERE error_kind IS NOT NULL AND state IN (?, ?) ORDER BY updated_at DESC LIMIT 10",
                (JobState.FAILED.value, JobState.QUEUED.value)):
            report["last_errors"].append({
                "job_id": row[0], "folder": row[1], "file": os.fsdecode(row[2]), "error": row[3],
                "reason": row[4], "at": _iso(row[5]), "state": row[6]})
        report["arriving"] = _arriving(db)
    finally:
        journal.close()
    return report


def _arriving(db) -> list[dict[str, Any]]:
    rows = db.execute("SELECT id, folder, rel, reason, created_at, next_attempt_at FROM jobs "
                      "WHERE state=? ORDER BY id", (JobState.ARRIVING.value,))
    return [{"job_id": r[0], "folder": r[1], "file": os.fsdecode(r[2]), "reason": r[3],
             "since": _iso(r[4]), "judged_at": _iso(r[5])} for r in rows]


def render(report: dict[str, Any]) -> str:
    lines = [f"journal: {report['journal']} (daemon {'running' if report['daemon_running'] else 'not running'})",
             f"{'folder':<20} {'queued':>7} {'arriving':>8} {'in flight':>9} {'done':>7} "
             f"{'failed':>7}  oldest waiting"]
    for name, f in report["folders"].items():
        oldest = f["oldest_waiting"]
        lines.append(f"{name:<20} {f['queued']:>7} {f.get('arriving', 0):>8} {f['in_flight']:>9} "
                     f"{f['done']:>7} {f['failed']:>7}  "
                     f"{oldest['file'] + ' since ' + oldest['since'] if oldest else '-'}")
    s = report["spend"]
    lines.append(f"spend: today ${s['today_usd']:.2f} ({s['today_megapixels']:.1f} MP), "
                 f"total ${s['total_usd']:.2f} ({s['total_megapixels']:.1f} MP)")
    if report.get("arriving"):
        lines.append("arriving (does not decode yet; judged at the end of its grace "
                     "unless it changes first):")
        for a in report["arriving"]:
            lines.append(f"  [{a['folder']}] {a['file']}: {a['reason']} "
                         f"(judged at {a['judged_at']})")
    if report["last_errors"]:
        lines.append("last errors:")
        for e in report["last_errors"]:
            lines.append(f"  [{e['folder']}] {e['file']}: {e['error']}: {e['reason']} ({e['state']})")
    return "\n".join(lines)


def retry(config: Config, journal_file: Path, paths: list[str]) -> list[str]:
    """Put failed jobs back in the queue, their originals back in the inbox. Returns what
    was retried, one line each."""
    if not journal_file.exists():
        return []
    journal = Journal(journal_file)
    try:
        return retry_jobs(config, journal, paths=paths)
    finally:
        journal.close()


def retry_jobs(config: Config, journal: Journal, *, paths: list[str] = (),
               job_ids: set[int] | None = None) -> list[str]:
    """``retry`` on an open journal (the daemon's web page uses its own): all failed jobs,
    or those named by path or by id."""
    wanted = {str(Path(p).absolute()) for p in paths}
    done: list[str] = []
    if job_ids is None:
        candidates = journal.jobs(state=JobState.FAILED)
    else:
        candidates = [j for j in map(journal.get, sorted(job_ids)) if j.state == JobState.FAILED]
    for job in candidates:
        folder = config.folder(job.folder)
        if folder is None:
            continue
        original = folder.inbox / job.rel
        if wanted and not wanted & {str(job.path), str(original), job.rel}:
            continue
        back = job.path
        if job.path != original and job.path.exists():
            back = move_file(job.path, original)
            report = job.path.with_name(job.path.name + ".error.json")
            report.unlink(missing_ok=True)
        journal.retry_failed(job, back)
        done.append(f"{job.folder}: {job.rel}")
    return done
