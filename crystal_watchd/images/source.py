"""Reading an inbox file: never through a symbolic link."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def open_source(path: Path):
    """Open an inbox file for reading without ever following a symbolic link."""
    return os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open_source(path) as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
