"""The journal: SQLite in ``state_dir``, and the only module that changes a job's state.

It is also the queue. A job becomes durable when the file is detected, before any work or
money is spent on it; a restart reads the queue back from here. WAL mode lets ``status``
read while the daemon writes.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .events import Events, JobChanged
from .jobs import Job, JobState

#: States of a job that waits for ``next_attempt_at`` before a worker takes it.
_WAITING = (JobState.QUEUED.value, JobState.ARRIVING.value)

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    folder TEXT NOT NULL,
    path BLOB NOT NULL,  -- os.fsencode(): file names need not be UTF-8
    rel BLOB NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    request_id TEXT,
    settings TEXT,
    settings_key TEXT,
    outputs TEXT NOT NULL DEFAULT '[]',
    pending TEXT NOT NULL DEFAULT '[]',
    error_kind TEXT,
    reason TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    finished_at REAL,
    output_megapixels REAL,
    cost_usd REAL,
    submissions INTEGER NOT NULL DEFAULT 0,
    waits_for INTEGER  -- an identical job in flight whose output this one will copy
);
CREATE INDEX IF NOT EXISTS jobs_ready ON jobs(state, next_attempt_at);
CREATE INDEX IF NOT EXISTS jobs_path ON jobs(folder, path);
CREATE INDEX IF NOT EXISTS jobs_content ON jobs(folder, sha256, settings_key, state);
-- counts per folder and state, and the latest finished jobs, without a table scan (web page)
CREATE INDEX IF NOT EXISTS jobs_folder_state ON jobs(folder, state);
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs(state, finished_at, cost_usd);
CREATE INDEX IF NOT EXISTS jobs_twins ON jobs(sha256, settings_key);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
SCHEMA_VERSION = "1"
_COLUMNS = ("id, folder, path, rel, size, mtime_ns, sha256, state, attempts, next_attempt_at, "
            "request_id, settings, outputs, pending, error_kind, reason, created_at, updated_at, "
            "finished_at, output_megapixels, cost_usd, submissions, waits_for")
#: Unfinished states: a job in one of them may still produce an output.
_UNFINISHED = (JobState.QUEUED.value, JobState.RUNNING.value, JobState.ARRIVING.value)
#: A queued job may run unless it waits for an identical job that is still unfinished.
_NOT_WAITING = ("(waits_for IS NULL OR waits_for NOT IN "
                f"(SELECT id FROM jobs WHERE state IN {_UNFINISHED!r}))")


def _b(path: Path | str) -> bytes:
    """Paths are stored as the bytes the filesystem uses, so any name round-trips."""
    return os.fsencode(path)


def _row_to_job(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"], folder=row["folder"], path=Path(os.fsdecode(row["path"])),
        rel=os.fsdecode(row["rel"]),
        size=row["size"], mtime_ns=row["mtime_ns"], sha256=row["sha256"],
        state=JobState(row["state"]), attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"], request_id=row["request_id"],
        settings=json.loads(row["settings"]) if row["settings"] else None,
        outputs=json.loads(row["outputs"]), pending=json.loads(row["pending"]),
        error_kind=row["error_kind"], reason=row["reason"], created_at=row["created_at"],
        updated_at=row["updated_at"], finished_at=row["finished_at"],
        output_megapixels=row["output_megapixels"], cost_usd=row["cost_usd"],
        submissions=row["submissions"], waits_for=row["waits_for"],
    )


class Journal:
    def __init__(self, path: Path, *, readonly: bool = False, events: Events | None = None):
        self.path = path
        self.events = events
        if readonly:
            self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, timeout=10)
            self.db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode is durable across a process crash; only a power cut may
            # lose the last transactions, and every file is then found again by a rescan.
            self.db.execute("PRAGMA synchronous=NORMAL")
            with self.db:
                self._add_missing_columns()
                self.db.executescript(SCHEMA)
                self.db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
        self.db.row_factory = sqlite3.Row
        self._columns = _COLUMNS
        have = {r[1] for r in self.db.execute("PRAGMA table_info(jobs)")}
        if readonly and "waits_for" not in have:
            # ``status`` on a journal the daemon has not upgraded yet (it adds the column).
            self._columns = _COLUMNS.replace("waits_for", "NULL AS waits_for")

    def _add_missing_columns(self) -> None:
        """A journal written by an earlier version gains the columns added since."""
        have = {r[1] for r in self.db.execute("PRAGMA table_info(jobs)")}
        if have and "waits_for" not in have:
            self.db.execute("ALTER TABLE jobs ADD COLUMN waits_for INTEGER")

    def close(self) -> None:
        self.db.close()

    # -- reading ---------------------------------------------------------------------

    def get(self, job_id: int) -> Job:
        row = self.db.execute(f"SELECT {self._columns} FROM jobs WHERE id=?", (job_id,)).fetchone()
        if row is None:
            raise KeyError(job_id)
        return _row_to_job(row)

    def jobs(self, *, state: JobState | None = None, folder: str | None = None) -> list[Job]:
        sql, args = f"SELECT {self._columns} FROM jobs WHERE 1=1", []
        if state is not None:
            sql += " AND state=?"
            args.append(state.value)
        if folder is not None:
            sql += " AND folder=?"
            args.append(folder)
        return [_row_to_job(r) for r in self.db.execute(sql + " ORDER BY id", args)]

    def known_versions(self, folder: str) -> set[tuple[str, int, int]]:
        """(path, size, mtime_ns) of every job of ``folder`` that is not superseded: a file
        found by a scan with one of these is already journaled and needs no hashing."""
        rows = self.db.execute(
            "SELECT path, size, mtime_ns FROM jobs WHERE folder=? AND state!=?",
            (folder, JobState.SUPERSEDED.value))
        return {(os.fsdecode(r[0]), r[1], r[2]) for r in rows}

    def is_known(self, folder: str, path: Path, size: int, mtime_ns: int) -> bool:
        return self.db.execute(
            "SELECT 1 FROM jobs WHERE folder=? AND path=? AND size=? AND mtime_ns=? AND state!=?",
            (folder, _b(path), size, mtime_ns, JobState.SUPERSEDED.value)).fetchone() is not None

    def find_done_output(self, folder: str, sha256: str, settings_key: str) -> Job | None:
        """An earlier finished job with the same content and settings: in ``folder`` if
        there is one, else in any folder (the settings decide the output, not the folder)."""
        row = self.db.execute(
            f"SELECT {self._columns} FROM jobs WHERE sha256=? AND settings_key=? AND state=? "
            "ORDER BY folder=? DESC, id DESC LIMIT 1",
            (sha256, settings_key, JobState.DONE.value, folder)).fetchone()
        return _row_to_job(row) if row else None

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for folder, state, n in self.db.execute(
                "SELECT folder, state, COUNT(*) FROM jobs GROUP BY folder, state"):
            out.setdefault(folder, {})[state] = n
        return out

    def spent_since(self, since: float) -> float:
        """Estimated dollars of the jobs finished since ``since`` (a Unix time)."""
        row = self.db.execute("SELECT SUM(cost_usd) FROM jobs WHERE state=? AND finished_at>=?",
                              (JobState.DONE.value, since)).fetchone()
        return row[0] or 0.0

    def next_ready(self, now: float, *, exclude_folders: Iterable[str] = (),
                   limit: int = 1, only_paid: bool = False) -> list[Job]:
        """Queued jobs whose time has come, oldest first. ``only_paid``: just the ones that
        already hold a backend request or an output (resuming them costs nothing more)."""
        excluded = list(exclude_folders)
        marks = ",".join("?" * len(excluded))
        sql = (f"SELECT {self._columns} FROM jobs WHERE state IN (?, ?) AND next_attempt_at<=?"
               + (f" AND folder NOT IN ({marks})" if excluded else "")
               + (" AND (request_id IS NOT NULL OR pending!='[]' OR outputs!='[]')"
                  if only_paid else "")
               + f" AND {_NOT_WAITING}"
               + " ORDER BY next_attempt_at, id LIMIT ?")
        rows = self.db.execute(sql, (*_WAITING, now, *excluded, limit))
        return [_row_to_job(r) for r in rows]

    def next_wakeup(self, *, exclude_folders: Iterable[str] = ()) -> float | None:
        """When the earliest queued job becomes ready (None if nothing is queued)."""
        excluded = list(exclude_folders)
        marks = ",".join("?" * len(excluded))
        row = self.db.execute(
            f"SELECT MIN(next_attempt_at) FROM jobs WHERE state IN (?, ?) AND {_NOT_WAITING}"
            + (f" AND folder NOT IN ({marks})" if excluded else ""),
            (*_WAITING, *excluded)).fetchone()
        return row[0]

    def queued_folders(self) -> set[str]:
        return {r[0] for r in self.db.execute(
            "SELECT DISTINCT folder FROM jobs WHERE state IN (?, ?)", _WAITING)}

    def waiting_by_folder(self) -> dict[str, int]:
        """Queued or running jobs per folder."""
        return dict(self.db.execute(
            "SELECT folder, COUNT(*) FROM jobs WHERE state IN (?, ?) GROUP BY folder",
            (JobState.QUEUED.value, JobState.RUNNING.value)).fetchall())

    def unfinished(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM jobs WHERE state IN (?, ?, ?)",
                               (*_WAITING, JobState.RUNNING.value)).fetchone()[0]

    # -- state changes -----------------------------------------------------------------

    def _update(self, job: Job, **values: Any) -> Job:
        values["updated_at"] = time.time()
        cols = ", ".join(f"{k}=?" for k in values)
        with self.db:
            self.db.execute(f"UPDATE jobs SET {cols} WHERE id=?", (*values.values(), job.id))
        return self._publish(job.state, job.id, values)

    def _publish(self, before: JobState | None, job_id: int, values: dict[str, Any]) -> Job:
        job = self.get(job_id)
        if self.events is not None:
            self.events.publish(JobChanged(job, before, frozenset(values)))
        return job

    def enqueue(self, folder: str, path: Path, rel: str, size: int, mtime_ns: int,
                sha256: str) -> Job | None:
        """Journal a detected file. Returns the new job, or None if this exact version
        (path + size + mtime + hash) is already journaled. Older unfinished versions of the
        same path are superseded: the file changed before we got to it."""
        now = time.time()
        with self.db:
            existing = self.db.execute(
                "SELECT id FROM jobs WHERE folder=? AND path=? AND size=? AND mtime_ns=? "
                "AND sha256=? AND state!=?",
                (folder, _b(path), size, mtime_ns, sha256, JobState.SUPERSEDED.value)).fetchone()
            if existing:
                return None
            self.db.execute(
                "UPDATE jobs SET state=?, reason=?, updated_at=? WHERE folder=? AND path=? "
                "AND state IN (?, ?)",
                (JobState.SUPERSEDED.value, "the file changed before it was processed", now,
                 folder, _b(path), *_WAITING))
            cur = self.db.execute(
                "INSERT INTO jobs (folder, path, rel, size, mtime_ns, sha256, state, created_at, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (folder, _b(path), _b(rel), size, mtime_ns, sha256, JobState.QUEUED.value, now, now))
        return self._publish(None, cur.lastrowid, {"state": JobState.QUEUED.value})

    def recover(self) -> int:
        """At start: jobs a dead process held go back to the queue, keeping their
        request_id and pending outputs so the next attempt resumes rather than redoes."""
        with self.db:
            cur = self.db.execute("UPDATE jobs SET state=?, next_attempt_at=0 WHERE state=?",
                                  (JobState.QUEUED.value, JobState.RUNNING.value))
        return cur.rowcount

    def claim(self, job: Job) -> Job:
        """A worker takes the job: no other dispatch round can pick it again."""
        return self._update(job, state=JobState.RUNNING.value)

    def start(self, job: Job, settings: dict[str, Any], settings_key: str) -> Job:
        """Record the settings the job runs with (the current config's, at this moment)."""
        return self._update(job, state=JobState.RUNNING.value, settings=json.dumps(settings),
                            settings_key=settings_key)

    def submitted(self, job: Job, request_id: str) -> Job:
        """The backend accepted the work: from now on, resume this request, never resubmit
        unless the backend says it no longer has it."""
        with self.db:
            self.db.execute("UPDATE jobs SET request_id=?, submissions=submissions+1, "
                            "updated_at=? WHERE id=?", (request_id, time.time(), job.id))
        return self._publish(job.state, job.id, {"request_id": request_id})

    def wait_for_twin(self, job: Job, settings_key: str) -> Job | None:
        """Pay once for copies arriving together. If another unfinished job has the same
        content and settings and is not itself waiting, ``job`` goes back to the queue
        waiting for it (it is not ready again until that job has finished) and that job is
        returned. Otherwise ``job`` stops waiting for anyone and None is returned: it does
        the work itself. One transaction, so two copies never both wait or both go ahead."""
        with self.db:
            row = self.db.execute(
                "SELECT id FROM jobs WHERE sha256=? AND settings_key=? AND state IN (?, ?, ?) "
                "AND waits_for IS NULL AND id!=? ORDER BY id LIMIT 1",
                (job.sha256, settings_key, *_UNFINISHED, job.id)).fetchone()
            self.db.execute("UPDATE jobs SET waits_for=?, state=?, updated_at=? WHERE id=?",
                            (row[0] if row else None,
                             JobState.QUEUED.value if row else JobState.RUNNING.value,
                             time.time(), job.id))
        return self.get(row[0]) if row else None

    def forget_request(self, job: Job) -> Job:
        return self._update(job, request_id=None)

    def output_pending(self, job: Job, pending: list[list[str]]) -> Job:
        """Temp files are written and fsynced; these [temp, final] renames come next."""
        return self._update(job, pending=json.dumps(pending))

    def output_written(self, job: Job, outputs: list[str], *, megapixels: float | None,
                       cost_usd: float | None) -> Job:
        return self._update(job, outputs=json.dumps(outputs), pending="[]",
                            output_megapixels=megapixels, cost_usd=cost_usd)

    def done(self, job: Job) -> Job:
        return self._update(job, state=JobState.DONE.value, finished_at=time.time(),
                            error_kind=None, reason=None)

    def retry_later(self, job: Job, *, delay: float, kind: str, reason: str,
                    count_attempt: bool = True) -> Job:
        return self._update(job, state=JobState.QUEUED.value, next_attempt_at=time.time() + delay,
                            attempts=job.attempts + (1 if count_attempt else 0),
                            error_kind=kind, reason=reason)

    def arriving(self, job: Job, *, until: float, kind: str, reason: str) -> Job:
        """The file does not decode yet and may still be being written: look again at
        ``until``, without counting an attempt. If a newer version of the file was journaled
        meanwhile, this one is superseded instead."""
        newer = self.db.execute(
            "SELECT 1 FROM jobs WHERE folder=? AND path=? AND id>? AND state!=?",
            (job.folder, _b(job.path), job.id, JobState.SUPERSEDED.value)).fetchone()
        if newer:
            return self.superseded(job, "the file changed while it was being checked")
        return self._update(job, state=JobState.ARRIVING.value, next_attempt_at=until,
                            error_kind=kind, reason=reason)

    def requeue(self, job: Job) -> Job:
        """Back to the queue without counting an attempt (shutdown, paused folder)."""
        return self._update(job, state=JobState.QUEUED.value)

    def failed(self, job: Job, *, kind: str, reason: str, attempts: int | None = None) -> Job:
        return self._update(job, state=JobState.FAILED.value, finished_at=time.time(),
                            error_kind=kind, reason=reason,
                            attempts=job.attempts if attempts is None else attempts)

    def superseded(self, job: Job, reason: str) -> Job:
        return self._update(job, state=JobState.SUPERSEDED.value, reason=reason,
                            finished_at=time.time())

    def moved_source(self, job: Job, path: Path) -> Job:
        """The original now lives at ``path`` (failed_dir, or back in the inbox on retry)."""
        return self._update(job, path=_b(path))

    def retry_failed(self, job: Job, path: Path) -> Job:
        return self._update(job, state=JobState.QUEUED.value, path=_b(path), attempts=0,
                            next_attempt_at=0, finished_at=None, request_id=None, waits_for=None)
