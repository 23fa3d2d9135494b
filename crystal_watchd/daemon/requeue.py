"""Putting failed jobs back in the queue, their originals back in the inbox (``retry``, and
the web page's Retry through the running daemon)."""

from __future__ import annotations

import shlex
from pathlib import Path

from ..config import Config
from ..images.output import move_file
from ..jobs import JobState
from ..journal import JournalBase


def retry_command(config_path: Path, original: Path) -> str:
    """The ``retry`` command line for one failed file, quoted for a POSIX shell so that it
    works pasted as it is, whatever the names hold (spaces, quotes, accents)."""
    return shlex.join(["crystal-watchd", "retry", "--config", str(Path(config_path).absolute()),
                       str(Path(original).absolute())])


async def retry_jobs(config: Config, journal: JournalBase, *,
                     paths: list[str] = (), job_ids: set[int] | None = None,
                     unmatched: list[str] | None = None) -> list[str]:
    """``retry`` on an open journal (the daemon's web page uses its own): all failed jobs,
    or those named by path or by id. The named paths no failed job answers to are added to
    ``unmatched`` when it is given."""
    named = {p: str(Path(p).absolute()) for p in paths}
    wanted = set(named.values()) | set(paths)
    matched: set[str] = set()
    done: list[str] = []
    if job_ids is None:
        candidates = await journal.jobs(state=JobState.FAILED)
    else:
        candidates = [j for j in [await journal.get(i) for i in sorted(job_ids)]
                      if j.state == JobState.FAILED]
    for job in candidates:
        folder = config.folder(job.folder)
        if folder is None:
            continue
        original = folder.inbox / job.rel
        names = wanted & {str(job.path), str(original), job.rel}
        if wanted and not names:
            continue
        matched |= names
        back = job.path
        if job.path != original and job.path.exists():
            back = move_file(job.path, original)
            report = job.path.with_name(job.path.name + ".error.json")
            report.unlink(missing_ok=True)
        await journal.retry_failed(job, back)
        done.append(f"{job.folder}: {job.rel}")
    if unmatched is not None:
        unmatched.extend(p for p, full in named.items() if not {p, full} & matched)
    return done
