"""Output files: names and atomic placement (encoding lives in render.py).

A final name only ever appears holding a complete, fsynced file: every output is written to
a hidden temp file in the target folder first, then linked (or renamed) into place. The chosen
final name is journaled before the rename, so a crash in between is finished on restart
instead of producing a second copy.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from ..config import FolderConfig
from ..errors import ConversionError, OutputBlockedError, PermanentJobError
from .preflight import target_format

_EXTENSION = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "TIFF": "tif", "BMP": "bmp"}
_name_lock = threading.Lock()


def format_number(value: float) -> str:
    """2.0 → "2", 2.5 → "2.5": how a scale or creativity reads in a file name."""
    return f"{value:g}" if value == int(value) or abs(value) >= 1e-4 else str(value)


def output_ext(folder: FolderConfig, source_path: Path, source_format: str,
               written: str | None = None) -> str:
    """``{ext}``: the input's own extension when keeping its format, else png/jpg/webp.
    ``written`` is the format actually written, when a fallback changed it."""
    fmt = written or target_format(folder, source_format)
    if folder.output_format == "same" and fmt == source_format:
        return source_path.suffix.lstrip(".") or _EXTENSION[fmt]
    return _EXTENSION[fmt]


def render_name(folder: FolderConfig, rel: str, *, scale: float, ext: str,
                index: int = 0) -> Path:
    """The final output path for the input at ``rel`` (relative to the inbox).

    Subfolders of a recursive inbox are mirrored in the outbox. A rendered name that would
    leave the outbox (``..``, separators from odd input names) is refused.
    """
    rel_path = Path(rel)
    name = rel_path.name
    stem = name[: -len(rel_path.suffix)] if rel_path.suffix else name
    rendered = folder.filename.format(
        stem=stem, ext=ext, name=name, scale=format_number(scale),
        creativity=format_number(folder.creativity), folder=folder.name)
    if index:
        base, dot, extension = rendered.rpartition(".")
        rendered = f"{base}_{index + 1}.{extension}" if dot else f"{rendered}_{index + 1}"
    rendered = fit_name(rendered)
    if not rendered or "/" in rendered or "\0" in rendered or rendered in (".", ".."):
        raise PermanentJobError(f"the filename template gives an unusable name {rendered!r}",
                                kind="bad_output_name")
    target = folder.outbox / rel_path.parent / rendered
    resolved = Path(os.path.normpath(target))
    if folder.outbox != resolved and folder.outbox not in resolved.parents:
        raise PermanentJobError(f"output name {rendered!r} would fall outside the outbox",
                                kind="bad_output_name")
    return resolved


#: Longest output name in bytes: 255 (most filesystems) less room for a "-NNNNN" suffix.
MAX_NAME_BYTES = 240


def fit_name(name: str) -> str:
    """Shorten an over-long name (keeping its extension) so the filesystem accepts it."""
    if len(os.fsencode(name)) <= MAX_NAME_BYTES:
        return name
    base, dot, extension = name.rpartition(".")
    if not dot or len(os.fsencode(extension)) > 16:
        base, extension = name, ""
    tail = f".{extension}" if extension else ""
    room = MAX_NAME_BYTES - len(os.fsencode(tail)) - 1
    # Cut by bytes: Linux names are bytes, and fsdecode round-trips a split character.
    return f"{os.fsdecode(os.fsencode(base)[:room])}~{tail}"


def _blocked(exc: OSError, where: Path) -> OutputBlockedError:
    """An OS error writing to the outbox: the job waits until the disk can take it."""
    what = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exhausted",
            errno.EACCES: "permission denied", errno.EPERM: "permission denied",
            errno.EROFS: "the filesystem is read-only", errno.EFBIG: "the file is too large "
            "for this filesystem or process limit"}.get(exc.errno or 0, exc.strerror or str(exc))
    return OutputBlockedError(f"cannot write to {where}: {what}")


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some network filesystems refuse fsync on directories
    finally:
        os.close(fd)


def temp_path(final: Path, tag: str) -> Path:
    """A hidden name beside ``final``: ignored by every watcher, short whatever ``final`` is."""
    return final.parent / f".crystal-watchd-{tag}.tmp"


def write_temp(final: Path, data: bytes | Callable[[BinaryIO], object], tag: str) -> Path:
    """Write ``data`` (bytes, or a function that writes to the file) to a hidden temp file
    beside ``final`` and fsync it."""
    tmp = temp_path(final, tag)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            if callable(data):
                data(fh)
            else:
                fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except Exception as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError) and exc.errno is not None:
            raise _blocked(exc, final.parent) from None
        if isinstance(exc, (OSError, ValueError, TypeError, KeyError, RuntimeError)):
            # An OSError without errno comes from an image codec ("encoder error -2"), not
            # from the disk: waiting would not help, so it is a conversion failure.
            raise ConversionError(f"the output cannot be encoded: {exc}") from None
        raise
    return tmp


def copy_temp(final: Path, source: Path, tag: str) -> Path:
    """Like write_temp, from an existing file (dedupe copies)."""

    def copy(fh: BinaryIO) -> None:
        with open(source, "rb") as src:
            shutil.copyfileobj(src, fh, 1 << 20)

    return write_temp(final, copy, tag)


def choose_name(final: Path, overwrite: bool) -> Path:
    """``final`` itself, or with overwrite off the first free ``name-1.ext``, ``name-2.ext``."""
    if overwrite or not final.exists():
        return final
    stem, suffix = final.stem, final.suffix
    n = 1
    while True:
        candidate = final.with_name(f"{stem}-{n}{suffix}")
        if not candidate.exists():
            return candidate
        n += 1


def place(tmp: Path, final: Path, overwrite: bool) -> Path | None:
    """Move ``tmp`` to ``final`` without ever clobbering (unless ``overwrite``).

    Returns the final path, or None if ``final`` was taken meanwhile by another file (the
    caller picks another name). Idempotent after a crash: if ``final`` is already our file
    (same inode as ``tmp``) or ``tmp`` is gone, the rename already happened.
    """
    with _name_lock:
        if not tmp.exists():
            return final if final.exists() else None
        try:
            if overwrite:
                os.replace(tmp, final)
            else:
                try:
                    os.link(tmp, final)
                except FileExistsError:
                    if os.path.samefile(tmp, final):
                        os.unlink(tmp)
                        return final
                    return None
                except OSError as exc:
                    if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK,
                                         errno.ENOSYS):
                        raise
                    # Filesystems without hard links (some SMB/FUSE mounts): check, then rename.
                    if final.exists():
                        return None
                    os.rename(tmp, final)
                else:
                    os.unlink(tmp)
        except OSError as exc:
            raise _blocked(exc, final.parent) from None
        _fsync_dir(final.parent)
        return final


def unique_path(path: Path) -> Path:
    """``path`` or the first ``name-N.ext`` beside it that does not exist yet."""
    return choose_name(path, overwrite=False)


def move_file(source: Path, target: Path) -> Path:
    """Move a file to ``target`` (or a free name beside it), across filesystems if need be."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with _name_lock:
        final = unique_path(target)
        shutil.move(source, final)
    return final
