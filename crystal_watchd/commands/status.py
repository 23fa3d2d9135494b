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
               "by_day": {YYYY-MM-DD: usd}, "maybe_paid_twice": int,
               "billed": {"units", "usd", "estimated_usd": float, "differs": bool}},
     "last_errors": [{"job_id", "folder", "file", "error", "reason", "at", "state"}],
     "daemons": [{"id", "host", "pid", "state_dir", "started_at", "heartbeat_at", "alive",
                  "working_on": [{"job_id", "file"}]}],
     "arriving": [{"job_id", "folder", "file", "reason", "since", "judged_at"}],
     "hooks": {"pending", "delivered", "gave_up": int,
               "given_up": [{"id", "delivery_id", "hook", "event", "job_id", "error", "at"}]},
     "awaiting_approval": [{"folder", "pictures": int, "estimated_usd": float, "approve": str}],
     "fal": {"reachable": bool, "unreachable_since": iso | null, "cause": str | null,
             "waiting_for": str | null},
     "not_taken": [{"folder", "file", "size": int, "reason", "seen_at"}]}

"fal": this machine's daemon's view of its way to fal; "waiting_for" is "waiting for fal
since HH:MM" while fal or the network to it is away (no file fails meanwhile).

(each folder entry also counts "awaiting_approval" and has "awaiting_approval_usd")

"maybe_paid_twice": submissions sent again because an earlier one got no answer and could
not be found in fal's request list (see "Money and privacy on fal" in the README).

"billed": what fal said it billed (``x-fal-billable-units`` on the result fetch), over the
runs where it said, beside our estimate of those same runs; ``differs`` when the two are
more than half a cent apart. All zeros while fal has said nothing.

"arriving": files that do not decode yet and are taken to be still being written; each is
judged at ``judged_at`` unless it changes first (see the folder's ``incomplete_grace``).

"awaiting_approval": per folder, the pictures the spend guard holds because together they
were estimated above ``budget.confirm_above_usd``; nothing is submitted until ``approve``.

"not_taken": files seen in an inbox that never became jobs, newest first, with the reason
(a hidden or temporary name, an extension not in the folder's list, an empty file).
"""

from __future__ import annotations

import json
import shlex
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import journal as journal_mod
from ..config import Config
from ..daemon import lock
from ..daemon.requeue import retry_jobs
from ..daemon.running import REACHABILITY_FILE
from ..jobs import REPORTED, JobState, report_key
from ..journal import ledger, skipped
from ..web.view import waiting_for_fal

#: Every state, under the names the report gives them.
STATES = REPORTED
#: Files not taken that ``status`` reports, newest first.
NOT_TAKEN_SHOWN = 200


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds") if ts else None


def _folder_entry() -> dict[str, Any]:
    return {**{s: 0 for s in STATES}, "oldest_waiting": None, "spend_today_usd": 0.0,
            "spend_total_usd": 0.0, "awaiting_approval_usd": 0.0}


def collect(config: Config, journal_file: Path | None = None) -> dict[str, Any]:
    folders: dict[str, dict[str, Any]] = {f.name: _folder_entry() for f in config.folders}
    shared = bool(getattr(config, "journal", None))
    where = journal_file or journal_mod.journal_file(config)
    report: dict[str, Any] = {
        "version": 1, "journal": journal_mod.describe(config) if shared else str(where),
        "daemon_running": lock.held(config.state_dir),
        "generated_at": _iso(datetime.now(timezone.utc).timestamp()),
        "folders": folders, "totals": {s: 0 for s in STATES},
        "spend": {"today_usd": 0.0, "total_usd": 0.0, "today_megapixels": 0.0,
                  "total_megapixels": 0.0, "by_day": {}, "maybe_paid_twice": 0,
                  "billed": {"units": 0.0, "usd": 0.0, "estimated_usd": 0.0,
                             "differs": False}},
        "last_errors": [], "daemons": [], "arriving": [], "awaiting_approval": [],
        "not_taken": [],
        "hooks": {"pending": 0, "delivered": 0, "gave_up": 0, "given_up": []},
    }
    report["fal"] = _reachability(config, report["daemon_running"])
    if not shared and not where.exists():
        return report
    journal = journal_mod.open_journal(config, readonly=True)
    try:
        for folder, states in journal.counts().items():
            entry = folders.setdefault(folder, _folder_entry())
            for state, n in states.items():
                key = report_key(state)
                entry[key] = entry.get(key, 0) + n
                report["totals"][key] = report["totals"].get(key, 0) + n
        for folder, (rel, created) in journal.oldest_waiting().items():
            folders.setdefault(folder, _folder_entry())["oldest_waiting"] = {
                "file": rel, "since": _iso(created)}
        today = datetime.now().astimezone().date().isoformat()
        spend = report["spend"]
        for row in journal.spend_rows():  # megapixels of finished jobs
            folder, mp = row["folder"], row["output_megapixels"] or 0.0
            day = datetime.fromtimestamp(row["finished_at"]).date().isoformat()
            folders.setdefault(folder, _folder_entry())
            spend["total_megapixels"] += mp
            if day == today:
                spend["today_megapixels"] += mp
        # Dollars from the spend ledger: every billed run, however its job ended.
        for day, by_folder in journal.run(ledger.by_day(journal.store)).items():
            for folder, usd in by_folder.items():
                entry = folders.setdefault(folder, _folder_entry())
                spend["by_day"][day] = round(spend["by_day"].get(day, 0.0) + usd, 6)
                spend["total_usd"] += usd
                entry["spend_total_usd"] = round(entry["spend_total_usd"] + usd, 6)
                if day == today:
                    spend["today_usd"] += usd
                    entry["spend_today_usd"] = round(entry["spend_today_usd"] + usd, 6)
        for key in ("today_usd", "total_usd", "today_megapixels", "total_megapixels"):
            spend[key] = round(spend[key], 6)
        spend["maybe_paid_twice"] = journal.paid_twice()
        bill = journal.run(ledger.billed(journal.store))
        spend["billed"] = {**{k: round(v, 6) for k, v in bill.items()},
                           "differs": ledger.bill_differs(bill)}
        for job in journal.last_errors():
            report["last_errors"].append({
                "job_id": job.id, "folder": job.folder, "file": job.rel, "error": job.error_kind,
                "reason": job.reason, "at": _iso(job.updated_at), "state": job.state.value})
        # A journal of an older version (not migrated yet) has no daemons table.
        daemons = journal.daemons() if journal.has("daemons") else []
        report["daemons"] = [
            {"id": d.id, "host": d.host, "pid": d.pid, "state_dir": d.state_dir,
             "started_at": _iso(d.started_at), "heartbeat_at": _iso(d.heartbeat_at),
             "alive": d.alive, "working_on": [{"job_id": i, "file": f} for i, f in d.working_on]}
            for d in daemons]
        report["arriving"] = [
            {"job_id": job.id, "folder": job.folder, "file": job.rel, "reason": job.reason,
             "since": _iso(job.created_at), "judged_at": _iso(job.next_attempt_at)}
            for job in journal.jobs(state=JobState.ARRIVING)]
        report["hooks"] = _hooks(journal)
        report["awaiting_approval"] = _held(journal, folders)
        report["not_taken"] = [
            {"folder": r["folder"], "file": r["rel"], "size": r["size"],
             "reason": r["reason"], "seen_at": _iso(r["seen_at"])}
            for r in journal.run(skipped.recent(journal.store, limit=NOT_TAKEN_SHOWN))]
    finally:
        journal.close()
    return report


def _reachability(config: Config, daemon_running: bool) -> dict[str, Any]:
    """What the running daemon wrote while fal is unreachable (nothing: reachable)."""
    entry: dict[str, Any] = {"reachable": True, "unreachable_since": None, "cause": None,
                             "waiting_for": None}
    try:
        seen = json.loads((config.state_dir / REACHABILITY_FILE).read_text())
    except (OSError, ValueError):
        return entry
    if not daemon_running or not isinstance(seen, dict) or not seen.get("unreachable_since"):
        return entry  # left by a daemon that is gone
    since = datetime.fromisoformat(seen["unreachable_since"])
    return {"reachable": False, "unreachable_since": seen["unreachable_since"],
            "cause": seen.get("cause"), "waiting_for": waiting_for_fal(since.timestamp())}


def _hooks(journal: journal_mod.JournalBase) -> dict[str, Any]:
    if not journal.has("deliveries"):  # a journal the daemon has not migrated yet has none
        return {"pending": 0, "delivered": 0, "gave_up": 0, "given_up": []}
    counts, given_up = journal.delivery_counts(), journal.given_up()
    return {**counts, "given_up": [
        {"id": d.id, "delivery_id": d.delivery_id, "hook": d.hook, "event": d.event,
         "job_id": d.job_id, "error": d.last_error, "at": _iso(d.updated_at)}
        for d in given_up]}


def _held(journal: journal_mod.JournalBase, folders: dict[str, dict[str, Any]]) -> list:
    if not journal.has("jobs.estimated_usd"):  # a journal not migrated yet holds none
        return []
    held = journal.held()
    out = []
    for folder, (count, usd) in held.items():
        folders.setdefault(folder, _folder_entry())["awaiting_approval_usd"] = round(usd, 4)
        out.append({"folder": folder, "pictures": count, "estimated_usd": round(usd, 4),
                    "approve": f"crystal-watchd approve {shlex.quote(folder)}"})
    return out


def render(report: dict[str, Any]) -> str:
    daemon = "running" if report["daemon_running"] else "not running"
    lines = [f"journal: {report['journal']} (daemon {daemon})",
             *([f"{report['fal']['waiting_for']}: fal or the network to it is away "
                f"({report['fal']['cause']}); files wait, none fails"]
               if report.get("fal", {}).get("waiting_for") else []),
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
    bill = s.get("billed") or {}
    if bill.get("units"):
        lines.append(f"fal billed: ${bill['usd']:.2f} ({bill['units']:.1f} units) for the runs "
                     f"where it said, against an estimate of ${bill['estimated_usd']:.2f}"
                     + (" (they differ)" if bill["differs"] else ""))
    if s.get("maybe_paid_twice"):
        lines.append(f"submissions that may have been paid twice: {s['maybe_paid_twice']} "
                     "(sent again after an answer was lost and fal's request list could not "
                     "show the first)")
    if report.get("daemons"):
        lines.append("daemons:")
        for d in report["daemons"]:
            work = ", ".join(w["file"] for w in d["working_on"][:5]) or "idle"
            more = f" (+{len(d['working_on']) - 5})" if len(d["working_on"]) > 5 else ""
            lines.append(f"  {d['host']} pid {d['pid']} [{d['id']}] "
                         f"{'alive' if d['alive'] else 'gone'}, heartbeat {d['heartbeat_at']}: "
                         f"{work}{more}")
    if report.get("arriving"):
        lines.append("arriving (does not decode yet; judged at the end of its grace "
                     "unless it changes first):")
        for a in report["arriving"]:
            lines.append(f"  [{a['folder']}] {a['file']}: {a['reason']} "
                         f"(judged at {a['judged_at']})")
    if report.get("not_taken"):
        lines.append("seen but not taken (most recent first):")
        for n in report["not_taken"][:20]:
            lines.append(f"  [{n['folder']}] {n['file']}: {n['reason']} (seen {n['seen_at']})")
        if len(report["not_taken"]) > 20:
            lines.append(f"  … {len(report['not_taken']) - 20} more in status --json")
    hooks = report.get("hooks") or {}
    if hooks.get("pending") or hooks.get("gave_up"):
        lines.append(f"hook deliveries: {hooks['pending']} pending, {hooks['gave_up']} gave up"
                     + (" (crystal-watchd retry-hooks tries them again)"
                        if hooks["gave_up"] else ""))
        for d in hooks.get("given_up", [])[:10]:
            lines.append(f"  #{d['id']} {d['hook']} ({d['event']}, job {d['job_id']}): "
                         f"{d['error']}")
    if report.get("awaiting_approval"):
        lines.append("awaiting approval (estimated above budget.confirm_above_usd; nothing "
                     "submitted until approved):")
        for held in report["awaiting_approval"]:
            lines.append(f"  [{held['folder']}] {held['pictures']} picture(s), estimated "
                         f"${held['estimated_usd']:.2f}: run `{held['approve']}`")
    if report["last_errors"]:
        lines.append("last errors:")
        for e in report["last_errors"]:
            lines.append(
                f"  [{e['folder']}] {e['file']}: {e['error']}: {e['reason']} ({e['state']})")
    return "\n".join(lines)


def retry(config: Config, journal_file: Path | None, paths: list[str],
          unmatched: list[str] | None = None) -> list[str]:
    """Put failed jobs back in the queue, their originals back in the inbox. Returns what
    was retried, one line each; the named paths no failed job answers to go to
    ``unmatched`` when it is given."""
    if not getattr(config, "journal", None) and not (
            journal_file or journal_mod.journal_file(config)).exists():
        if unmatched is not None:
            unmatched.extend(paths)
        return []
    journal = journal_mod.open_journal(config)
    try:
        return journal.run(retry_jobs(config, journal.store, paths=paths,
                                      unmatched=unmatched))
    finally:
        journal.close()


def retry_hooks(config: Config, journal_file: Path | None, ids: list[int]) -> int:
    """Hook deliveries that gave up (all, or these ids) are tried again; a running daemon
    delivers them within seconds."""
    if not getattr(config, "journal", None) and not (
            journal_file or journal_mod.journal_file(config)).exists():
        return 0
    journal = journal_mod.open_journal(config)
    try:
        return journal.retry_deliveries(ids or None)
    finally:
        journal.close()
