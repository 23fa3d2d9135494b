"""``crystal-watchd journal check`` and ``journal recover``, and the words every command
prints for a damaged journal: which file, what is wrong, and the command that recovers."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ..config import Config, mask_url
from ..errors import JournalDamaged, JournalUnavailable
from ..journal import journal_file, open_journal, sqlitecare

EXIT_OK, EXIT_FAILURES, EXIT_CONFIG = 0, 1, 78


def recover_command(config: Config) -> str:
    return f"crystal-watchd journal recover --config {config.path}"


def damaged_lines(exc: JournalDamaged, config: Config) -> list[str]:
    """What a refused command prints for a damaged journal."""
    return [f"crystal-watchd: {exc}",
            "  stop every crystal-watchd using it, then recover it (the damaged file is kept, "
            "renamed aside; nothing already paid for is paid again):",
            f"  {recover_command(config)}"]


def pg_dump_hint(config: Config) -> str:
    return (f"back a PostgreSQL journal up with the database's own tools, e.g. "
            f"pg_dump '{mask_url(config.journal)}' > crystal-watchd.sql (and pg_restore/psql "
            "to bring it back)")


def _jobs_in(path: Path) -> int:
    """How many jobs a journal file holds (-1 if it cannot be read)."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return int(db.execute("SELECT count(*) FROM jobs").fetchone()[0])
        finally:
            db.close()
    except sqlite3.DatabaseError:
        return -1


def check(config: Config) -> tuple[list[str], int]:
    """SQLite's full ``integrity_check`` of the journal, and its backups; a PostgreSQL
    journal is opened (and migrated) and pointed at pg_dump."""
    if config.journal:
        try:
            open_journal(config).close()
        except JournalUnavailable as exc:
            return [f"crystal-watchd: journal: {exc}"], EXIT_FAILURES
        return [f"journal OK: {mask_url(config.journal)}", pg_dump_hint(config)], EXIT_OK
    path = journal_file(config)
    backups = sqlitecare.list_backups(path)
    kept = (f"{len(backups)} backup(s) in {sqlitecare.backups_dir(path)}, newest "
            f"{backups[0].name}" if backups else f"no backup yet in {sqlitecare.backups_dir(path)}")
    if not path.exists():
        return [f"no journal yet at {path} (the first start makes one)", kept], EXIT_OK
    problem = sqlitecare.full_check(path)
    if problem is None:
        return [f"journal OK: {path} ({_jobs_in(path)} job(s))", kept], EXIT_OK
    return [*damaged_lines(JournalDamaged(str(path), problem), config), kept], EXIT_CONFIG


def recover(config: Config) -> tuple[list[str], int]:
    """Bring a damaged journal back: the damaged file renamed aside (never deleted), then
    whichever holds more jobs of the newest good backup and what SQLite's recovery salvages
    from the damaged file. The caller holds the state lock (no daemon runs)."""
    if config.journal:
        return [f"crystal-watchd: the journal is PostgreSQL ({mask_url(config.journal)}): "
                "recover it with the database's own tools", pg_dump_hint(config)], EXIT_FAILURES
    path = journal_file(config)
    if path.exists() and sqlitecare.full_check(path) is None:
        return [f"journal OK: {path}; nothing to recover"], EXIT_OK
    lines = []
    aside = sqlitecare.set_aside(path)
    if aside is not None:
        lines.append(f"the damaged journal was renamed to {aside}")
    good = next((b for b in sqlitecare.list_backups(path) if sqlitecare.full_check(b) is None),
                None)
    salvaged, how = None, ""
    if aside is not None:
        salvaged = path.with_name(f".{path.name}.salvaged")
        try:
            how = sqlitecare.salvage(aside, salvaged)
        except (sqlite3.DatabaseError, OSError) as exc:
            lines.append(f"nothing could be salvaged from it ({exc})")
            salvaged = None
    if salvaged is not None and (good is None or _jobs_in(salvaged) >= _jobs_in(good)):
        salvaged.replace(path)
        lines.append(f"recovered {_jobs_in(path)} job(s) from it ({how})")
    elif good is not None:
        sqlitecare.restore(good, path)
        lines.append(f"restored the backup {good} ({_jobs_in(path)} job(s))")
    else:
        lines.append("no good backup and nothing salvaged: a new journal is started")
    if salvaged is not None:
        salvaged.unlink(missing_ok=True)
    try:
        open_journal(config).close()  # brings it up to this version's schema
    except JournalUnavailable as exc:
        return [*lines, f"crystal-watchd: the recovered journal cannot be used: {exc}"], \
            EXIT_FAILURES
    lines.append(f"journal OK: {path}")
    # What the journal brought back lacks (jobs after the backup, rows on a damaged page),
    # the outputs themselves say was done.
    return [*lines, *rebuild(config)[0]], EXIT_OK


def rebuild(config: Config) -> tuple[list[str], int]:
    """``journal rebuild``: what the outboxes hold, journaled as done (daemon/rebuild.py).
    The caller holds the state lock."""
    import asyncio

    from ..daemon.rebuild import rebuild as rebuild_from_outboxes

    found = asyncio.run(rebuild_from_outboxes(config))
    return [f"{name}: {count} file(s) journaled as done from the outputs that name them"
            for name, count in found.items()], EXIT_OK
