"""A file that does not decode yet: still arriving, or broken for good?

Settling only knows that size and mtime held still. A copy that stalls for longer than
``settle`` (slow Wi-Fi to a NAS share) or a writer that sets the final size first and fills
it in (Windows Explorer over SMB, download managers) looks settled while it is half written.
So a job whose input looks unfinished — a cheap sign from ``completeness``, or a decoder
saying the data is truncated — waits instead of failing, for as long as the file keeps
changing, and at most ``incomplete_grace`` seconds after its last change. Any change makes
a new version of the file (a new job, a fresh grace); the waiting one is superseded.
When the grace runs out with nothing changed, the file is judged as any other.

A cheap sign makes the job wait without a full decode. A file that decodes cleanly and
shows no sign is never delayed.
"""

from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass

from ..config import FolderConfig
from ..errors import PermanentJobError, StillArriving
from ..images import completeness, preflight
from ..jobs import Job


@dataclass(frozen=True)
class Sign:
    """A cheap sign that a file is not finished."""

    reason: str
    #: Zero bytes stand where the content belongs. Such a file can even decode (a JPEG's
    #: decoder reads zeros as grey blocks), but the picture is not the real one.
    unwritten: bool


def unfinished_sign(data: bytes, st: os.stat_result | None = None) -> Sign | None:
    """A sign, from the first and last bytes only, that ``data`` is not a finished image."""
    fh = io.BytesIO(data)
    fmt = completeness.sniff(fh)
    if fmt is None:
        if completeness.unwritten_start(fh):
            return Sign("the file starts with zero bytes: its content is not written yet", True)
        return None  # not an image at all; the decoder says so in its own words
    zeros = completeness.zero_tail(fh)
    missing = completeness.missing_end_marker(fh, fmt)
    if fmt == "JPEG":
        # Phones append megabytes after the end marker (motion photos), so a marker missing
        # near the end means something only when zero bytes stand in its place.
        return Sign(missing, True) if missing and zeros else None
    if missing:
        return Sign(missing, zeros)
    run = completeness.TAIL_WINDOW
    if st is not None and completeness.unallocated_tail(st, run) \
            and completeness.zero_tail(fh, run):
        # Formats without an end marker (TIFF, BMP) may end in black pixels; zeros that
        # were never stored on disk are a size set up front instead. Filesystems that
        # compress zeros away (ZFS, btrfs) look the same, so this sign only makes the file
        # wait: after the grace the decoder alone decides.
        return Sign("the file ends in zero bytes that were never written to disk (its size "
                    "was set before its content)", False)
    return None


def _explained_by_writer(exc: PermanentJobError, data: bytes) -> bool:
    """Whether a decoder's refusal is what a file cut short would give."""
    if exc.kind == "corrupt_image":
        return True
    # Cut inside its header: the signature names a format the rest does not live up to.
    return exc.kind == "not_an_image" and completeness.sniff(io.BytesIO(data)) is not None


def _stat(job: Job) -> os.stat_result | None:
    try:
        return os.stat(job.path, follow_symlinks=False)
    except OSError:
        return None


def inspect(data: bytes, folder: FolderConfig, job: Job, now: float | None = None, *,
            keep_pixels: bool = True) -> preflight.SourceImage:
    """``preflight.inspect``, unless the input looks unfinished: then StillArriving while the
    grace lasts, and after it a failure with the decoder's reason (or the sign's, when zero
    bytes stand where the picture belongs)."""
    now = time.time() if now is None else now
    until = job.created_at + folder.incomplete_grace
    waiting = now < until
    sign = unfinished_sign(data, _stat(job))
    if sign is not None and waiting:
        raise StillArriving(sign.reason, until)
    try:
        source = preflight.inspect(data, folder, keep_pixels=keep_pixels)
    except PermanentJobError as exc:
        if waiting and _explained_by_writer(exc, data):
            raise StillArriving(exc.reason, until) from None
        raise
    if sign is not None and sign.unwritten:
        raise PermanentJobError(f"the image data is damaged or incomplete: {sign.reason}",
                                kind="corrupt_image")
    return source
