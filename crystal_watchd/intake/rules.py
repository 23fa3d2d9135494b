"""Which files in an inbox are images to process, and which folders are never entered.

Three layers, cheapest first: hidden and temporary names (``.`` / ``~``: rsync, Syncthing,
Nextcloud, macOS, Office), the extension allowlist (``*.part``, ``*.crdownload``,
``*.!sync`` …), and pruned directories (NAS thumbnails, sync-tool metadata, trash), plus the
folder's own outbox/done/failed dirs and its ``ignore`` globs. Pruned directories are never
watched or listed: on NAS trees every ``@eaDir`` would cost an inotify watch.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterator
from pathlib import Path

from ..config import FolderConfig

PRUNED_DIRS = frozenset({
    "@eaDir", "#recycle", "#snapshot",            # Synology
    ".@__thumb", "@Recycle", "@Recently-Snapshot",  # QNAP
    ".stfolder", ".stversions",                   # Syncthing
    ".sync", ".SyncArchive",                      # Resilio
    ".dropbox.cache",                             # Dropbox
    ".Trashes", ".Spotlight-V100", ".fseventsd", ".TemporaryItems", "__MACOSX",  # macOS
    "$RECYCLE.BIN", "System Volume Information",  # Windows
})


class Rules:
    """The ignore rules of one folder. Pure: only ``scan`` touches the disk."""

    def __init__(self, folder: FolderConfig):
        self.folder = folder
        self.root = folder.inbox
        self._extensions = frozenset(e.lower() for e in folder.extensions)
        self._excluded = tuple(folder.excluded_dirs())

    def rel(self, path: Path) -> str | None:
        """``path`` relative to the inbox, or None if it is outside (or the inbox itself)."""
        try:
            rel = path.relative_to(self.root)
        except ValueError:
            return None
        return rel.as_posix() if rel.parts else None

    def _glob_ignored(self, rel: str, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, g) or fnmatch.fnmatchcase(rel, g)
                   for g in self.folder.ignore)

    def wants_dir(self, path: Path) -> bool:
        """Whether a directory (the inbox or below it) is watched and scanned."""
        if path == self.root:
            return True
        rel = self.rel(path)
        if rel is None or not self.folder.recursive:
            return False
        parts = rel.split("/")
        if any(p in PRUNED_DIRS or p.startswith((".", "~")) for p in parts):
            return False
        if any(path == d or d in path.parents for d in self._excluded):
            return False
        return not self._glob_ignored(rel, parts[-1])

    def _wanted_name(self, name: str) -> bool:
        """The name alone: not hidden or temporary, an extension on the allowlist."""
        if name.startswith((".", "~")):
            return False
        return os.path.splitext(name)[1].lower().lstrip(".") in self._extensions

    def why_not(self, path: Path) -> str | None:
        """Why a file in a watched directory is not taken, in words for the user; None for
        one that is (or one in a directory never watched, where nothing is reported)."""
        if not self.wants_dir(path.parent) or self.rel(path) is None:
            return None
        name = path.name
        if name.startswith((".", "~")):
            return "hidden or temporary name (starts with . or ~)"
        extension = os.path.splitext(name)[1].lower().lstrip(".")
        if extension not in self._extensions:
            listed = ", ".join(sorted(self._extensions))
            return (f"extension .{extension} is not in the folder's extensions ({listed})"
                    if extension else f"no extension (the folder takes {listed})")
        if self._glob_ignored(self.rel(path) or name, name):
            return "matches the folder's ignore patterns"
        return None

    def wants_file(self, path: Path) -> bool:
        """Whether a file name could be an image to process (name only, no disk access)."""
        name = path.name
        if not self._wanted_name(name) or not self.wants_dir(path.parent):
            return False
        rel = self.rel(path)
        return rel is not None and not self._glob_ignored(rel, name)

    def scan(self, start: Path | None = None) -> Iterator[tuple[Path, os.stat_result]]:
        """Every wanted regular file below ``start`` (default: the inbox), with its stat."""
        for name, st in self.scan_names(start):
            yield Path(name), st

    def scan_names(self, start: Path | None = None,
                   unwanted: list[tuple[str, os.stat_result]] | None = None,
                   ) -> Iterator[tuple[str, os.stat_result]]:
        """``scan`` with each path as a plain string: a restart compares 100,000 of them with
        the journal and makes a Path only of the few that are new. Regular files the folder
        does not take (their name, the ignore patterns) are appended to ``unwanted``, if
        given, for "why didn't my file come out?".

        Symbolic links are never followed: a link could lead out of the inbox, or make one
        image two jobs. Unreadable directories are skipped (the next scan tries again).
        A directory is judged once, not again for each of its files: an inbox of 100,000
        pictures is listed at the speed of the disk.
        """
        start = start or self.root
        prefix = self.rel(start)
        stack = [(start, f"{prefix}/" if prefix else "")]
        while stack:
            directory, under = stack.pop()
            try:
                entries = list(os.scandir(directory))
            except OSError:
                continue
            for entry in entries:
                try:
                    if entry.is_symlink():
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        path = Path(entry.path)
                        if self.wants_dir(path):
                            stack.append((path, f"{under}{entry.name}/"))
                    elif not entry.is_file(follow_symlinks=False):
                        continue
                    elif (self._wanted_name(entry.name)
                          and not self._glob_ignored(under + entry.name, entry.name)):
                        yield entry.path, entry.stat(follow_symlinks=False)
                    elif unwanted is not None:
                        unwanted.append((entry.path, entry.stat(follow_symlinks=False)))
                except OSError:
                    continue

    def dirs(self) -> Iterator[Path]:
        """The inbox and every directory below it that is watched."""
        yield self.root
        if not self.folder.recursive:
            return
        stack = [self.root]
        while stack:
            try:
                entries = list(os.scandir(stack.pop()))
            except OSError:
                continue
            for entry in entries:
                path = Path(entry.path)
                if entry.is_dir(follow_symlinks=False) and self.wants_dir(path):
                    yield path
                    stack.append(path)
