"""Keeping the SQLite journal whole: SQLite's own check at open, backups with its online
backup API, and recovery of a damaged file (from the newest good backup, or by salvaging
what the damaged file still holds into a new one).

A damaged file is never deleted: recovery renames it aside with a timestamp, so what it
holds stays there for a closer look.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

#: Backups kept in ``state_dir/backups``; the oldest beyond these are removed.
KEEP_BACKUPS = 7
#: Seconds between the daily backups (one at open when the newest is older, and on the
#: heartbeat of a daemon that runs for days).
BACKUP_EVERY = 86400.0
BACKUP_PREFIX, BACKUP_SUFFIX = "journal-", ".sqlite3"
#: The files SQLite keeps beside a journal in WAL mode: renamed aside with it.
SIDECARS = ("-wal", "-shm")


def backups_dir(journal: Path) -> Path:
    return journal.parent / "backups"


def _stamp(now: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))


def is_damage(exc: sqlite3.DatabaseError) -> bool:
    """Whether ``exc`` says the file is damaged (not merely busy, locked or read-only)."""
    if not isinstance(exc, sqlite3.OperationalError):
        return True  # SQLITE_CORRUPT, SQLITE_NOTADB: "malformed", "not a database"
    text = str(exc).lower()
    return "malformed" in text or "not a database" in text or "corrupt" in text


def quick_check(db: sqlite3.Connection) -> str | None:
    """SQLite's ``quick_check`` (cheap: no index is compared with its table): what is wrong,
    or None when the file is whole."""
    rows = [r[0] for r in db.execute("PRAGMA quick_check").fetchall()]
    if rows == ["ok"]:
        return None
    return "; ".join(rows[:3]) + (f" (and {len(rows) - 3} more)" if len(rows) > 3 else "")


def full_check(path: Path) -> str | None:
    """``integrity_check`` of the file at ``path`` (read only): what is wrong, or None."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    except sqlite3.DatabaseError as exc:
        return str(exc)
    try:
        rows = [r[0] for r in db.execute("PRAGMA integrity_check").fetchall()]
        if db.execute("SELECT count(*) FROM sqlite_master WHERE name='jobs'").fetchone()[0] != 1:
            return "it holds no jobs table"
    except sqlite3.DatabaseError as exc:
        return str(exc)
    finally:
        db.close()
    return None if rows == ["ok"] else "; ".join(rows[:3])


def backup(db: sqlite3.Connection, journal: Path, reason: str, now: float | None = None) -> Path:
    """Copy the open journal ``db`` into ``state_dir/backups`` with SQLite's online backup
    API (a consistent copy while the daemon writes), then keep the newest KEEP_BACKUPS."""
    now = time.time() if now is None else now
    where = backups_dir(journal)
    where.mkdir(parents=True, exist_ok=True)
    final = where / f"{BACKUP_PREFIX}{_stamp(now)}-{reason}{BACKUP_SUFFIX}"
    tmp = final.with_name(f".{final.name}.tmp")
    target = sqlite3.connect(tmp)
    try:
        db.backup(target)
    finally:
        target.close()
    os.replace(tmp, final)
    for old in list_backups(journal)[KEEP_BACKUPS:]:
        old.unlink(missing_ok=True)
    return final


def list_backups(journal: Path) -> list[Path]:
    """The backups of ``journal``, newest first (their names sort by time)."""
    where = backups_dir(journal)
    if not where.is_dir():
        return []
    return sorted((p for p in where.iterdir() if p.name.startswith(BACKUP_PREFIX)
                   and p.name.endswith(BACKUP_SUFFIX)), key=lambda p: p.name, reverse=True)


def backup_due(journal: Path, now: float | None = None) -> bool:
    """Whether the newest backup is older than a day (or there is none)."""
    now = time.time() if now is None else now
    newest = list_backups(journal)
    return not newest or now - newest[0].stat().st_mtime >= BACKUP_EVERY


@dataclass(frozen=True)
class Recovered:
    """What ``recover`` did: where the damaged file went, and where the journal came from."""

    aside: Path | None
    source: str
    #: The backup restored, if one was.
    backup: Path | None = None


def set_aside(journal: Path, now: float | None = None) -> Path | None:
    """Rename the journal (and its WAL files) to ``journal.sqlite3.damaged-<time>``."""
    if not journal.exists():
        return None
    now = time.time() if now is None else now
    aside = journal.with_name(f"{journal.name}.damaged-{_stamp(now)}")
    n = 1
    while aside.exists():  # a second recovery within the second overwrites nothing
        n += 1
        aside = journal.with_name(f"{journal.name}.damaged-{_stamp(now)}-{n}")
    for tail in ("", *SIDECARS):
        part = Path(f"{journal}{tail}")
        if part.exists():
            os.replace(part, Path(f"{aside}{tail}"))
    return aside


def restore(backup_file: Path, journal: Path) -> None:
    """Copy a good backup into place (through a temporary name: never half a journal)."""
    tmp = journal.with_name(f".{journal.name}.restoring")
    shutil.copyfile(backup_file, tmp)
    os.replace(tmp, journal)


def salvage(damaged: Path, journal: Path) -> str:
    """What the damaged file still holds, into a new journal at ``journal``: the sqlite3
    command's ``.recover`` when it is installed, else a dump row by row of every table
    that can still be read. Returns which way was taken."""
    tmp = journal.with_name(f".{journal.name}.salvage")
    tmp.unlink(missing_ok=True)
    how = "sqlite3 .recover"
    cli = shutil.which("sqlite3")
    if cli is None or not _recover_with_cli(cli, damaged, tmp):
        tmp.unlink(missing_ok=True)
        how = "row-by-row salvage"
        _copy_rows(damaged, tmp)
    os.replace(tmp, journal)
    return how


def _recover_with_cli(cli: str, damaged: Path, target: Path) -> bool:
    dump = subprocess.run([cli, str(damaged), ".recover"], capture_output=True, timeout=3600)
    if dump.returncode != 0 or not dump.stdout:
        return False
    load = subprocess.run([cli, str(target)], input=dump.stdout, capture_output=True,
                          timeout=3600)
    return load.returncode == 0 and full_check(target) is None


def _copy_rows(damaged: Path, target: Path) -> None:
    """Every table's CREATE statement and the rows that still read, one at a time, so one
    damaged page costs the rows on it, not the table."""
    src = sqlite3.connect(f"file:{damaged}?mode=ro", uri=True)
    dst = sqlite3.connect(target, isolation_level=None)
    try:
        try:
            tables = src.execute("SELECT name, sql FROM sqlite_master WHERE type='table' "
                                 "AND name NOT LIKE 'sqlite_%'").fetchall()
        except sqlite3.DatabaseError:
            tables = []  # the catalogue itself is lost: the migration builds a fresh one
        dst.execute("BEGIN")
        for name, sql in tables:
            dst.execute(sql)
            _copy_table(src, dst, name)
        dst.execute("COMMIT")
    finally:
        src.close()
        dst.close()


#: Rowids tried one by one past the last row read before a damaged table is given up.
MISSES_BEFORE_GIVING_UP = 5000


def _copy_table(src: sqlite3.Connection, dst: sqlite3.Connection, name: str) -> None:
    """The rows in rowid order while they read; past a damaged page, rowid by rowid until
    rows read again, or MISSES_BEFORE_GIVING_UP rowids in a row did not."""
    rowid, misses = 0, 0
    while misses < MISSES_BEFORE_GIVING_UP:
        try:
            for row in src.execute(f'SELECT rowid, * FROM "{name}" WHERE rowid>? ORDER BY rowid',
                                   (rowid,)):
                marks = ",".join("?" * (len(row) - 1))
                dst.execute(f'INSERT OR IGNORE INTO "{name}" VALUES ({marks})', row[1:])
                rowid, misses = row[0], 0
            return
        except sqlite3.DatabaseError:
            pass
        rowid += 1  # the row after the last one read is unreadable: try the next
        misses += 1
        try:
            row = src.execute(f'SELECT rowid, * FROM "{name}" WHERE rowid=?',
                              (rowid,)).fetchone()
        except sqlite3.DatabaseError:
            continue
        if row is not None:
            marks = ",".join("?" * (len(row) - 1))
            dst.execute(f'INSERT OR IGNORE INTO "{name}" VALUES ({marks})', row[1:])
            misses = 0
