"""Hashing settled files, many per thread hop: a drop of thousands of small pictures would
otherwise cost a thread hand-over (and a wake of the event loop) per file."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..images.source import sha256_file


@dataclass(frozen=True)
class Hashed:
    """What hashing one settled file found: its digest, or why there is none."""

    path: Path
    st: os.stat_result
    digest: str | None = None
    #: The file was written to while it was hashed: it settles again.
    changed: bool = False
    #: Gone before it was read (deleted or renamed): nothing to do.
    gone: bool = False
    #: It could not be read (permissions, I/O): the error's words.
    error: str | None = None


def hash_settled(files: list[tuple[Path, os.stat_result]]) -> list[Hashed]:
    """Hash each settled file, then stat it again: a digest counts only for the version
    that settled (runs in a thread; blocking is its job)."""
    out = []
    for path, st in files:
        try:
            digest = sha256_file(path)
        except FileNotFoundError:
            out.append(Hashed(path, st, gone=True))
            continue
        except OSError as exc:
            out.append(Hashed(path, st, error=exc.strerror or str(exc)))
            continue
        try:
            now = os.stat(path, follow_symlinks=False)
        except OSError:
            out.append(Hashed(path, st, gone=True))
            continue
        if (now.st_size, now.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
            out.append(Hashed(path, st, changed=True))
        else:
            out.append(Hashed(path, st, digest=digest))
    return out
