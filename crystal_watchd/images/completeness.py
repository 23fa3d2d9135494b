"""Cheap signs that an image file is not finished, read from its first and last bytes only.

A file being copied can hold still longer than ``settle`` (a stalled SMB copy, a download
manager between chunks), and many writers set the final size first and fill in the rest:
such a file ends in zero bytes until it is done. These checks spot that without decoding
the pixels, and never read a whole file into memory: they look at the header, the tail and
the size. They work on a path or on an open binary file (which is left open, at any position).

Each check answers one question; what to do about the answer is the caller's business.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

Source = str | os.PathLike | BinaryIO

#: How far before the end an end marker may sit: some cameras append a few kilobytes of
#: their own data after a JPEG's end-of-image marker.
TAIL_WINDOW = 64 * 1024
#: Zero bytes at the very end that count as "a long run": never the end of a compressed
#: format's data, and more than any writer pads a finished file with.
ZERO_RUN = 4096
#: After a run of zero padding the end marker must sit right before it, within this slack.
PADDING_SLACK = 16
#: No writer pads a finished file with more zero bytes than this; looking further back for
#: the end marker is pointless (and would read a large unwritten file's whole tail).
MAX_PADDING = 1024 * 1024
_BLOCK = 64 * 1024

# Pillow's names for the formats whose first bytes are recognised here.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"BM", "BMP"),
)
# The bytes that end each format with an end marker (PNG: the IEND chunk and its fixed CRC).
_END_MARKERS = {"JPEG": b"\xff\xd9", "PNG": b"IEND\xaeB`\x82", "GIF": b"\x3b"}
# How far before the end each marker may sit. A GIF's one-byte trailer also occurs inside
# its compressed data, so it must be the last byte (writers add nothing after it).
_TRAILER_ROOM = {"JPEG": TAIL_WINDOW, "PNG": TAIL_WINDOW, "GIF": 1}
_MARKER_NAMES = {"JPEG": "JPEG end-of-image marker (FFD9)", "PNG": "PNG end chunk (IEND)",
                 "GIF": "GIF trailer"}


@contextmanager
def _opened(source: Source) -> Iterator[BinaryIO]:
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as fh:
            yield fh
    else:
        yield source


def _size(fh: BinaryIO) -> int:
    return fh.seek(0, os.SEEK_END)


def _read_at(fh: BinaryIO, offset: int, length: int) -> bytes:
    fh.seek(max(0, offset))
    return fh.read(max(0, length))


def _head(fh: BinaryIO, length: int = 16) -> bytes:
    return _read_at(fh, 0, length)


def sniff(source: Source) -> str | None:
    """The image format named by the file's first bytes (Pillow's name), or None."""
    with _opened(source) as fh:
        head = _head(fh)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return next((fmt for magic, fmt in _SIGNATURES if head.startswith(magic)), None)


def trailing_zeros(source: Source, limit: int | None = None, *, end: int | None = None) -> int:
    """How many zero bytes the file ends with (before offset ``end`` if given), counting
    back at most ``limit`` bytes."""
    with _opened(source) as fh:
        stop = _size(fh) if end is None else min(end, _size(fh))
        limit = stop if limit is None else min(limit, stop)
        count = 0
        while count < limit:
            length = min(_BLOCK, limit - count)
            block = _read_at(fh, stop - count - length, length)
            stripped = block.rstrip(b"\x00")
            count += len(block) - len(stripped)
            if stripped or len(block) < length:
                break
        return min(count, limit)


def zero_tail(source: Source, run: int = ZERO_RUN) -> bool:
    """Whether the file ends in at least ``run`` zero bytes: what a file whose size was set
    up front looks like before its writer has filled it in."""
    return trailing_zeros(source, run) >= run


def missing_end_marker(source: Source, fmt: str | None) -> str | None:
    """Why the file lacks the end its format requires, in plain words; None if it has one
    (or the format has no end marker to look for).

    JPEG, PNG and GIF end in a marker; some writers add their own bytes after a JPEG's or
    PNG's, so it may sit anywhere in the last ``TAIL_WINDOW`` bytes — except before zero
    padding, which must follow the marker directly. A WebP file must be as long as its RIFF
    header says, and the data it declares must not end in a long run of zero bytes.
    """
    fmt = (fmt or "").upper()
    with _opened(source) as fh:
        size = _size(fh)
        if fmt == "WEBP":
            return _webp_shortfall(fh, size)
        marker = _END_MARKERS.get(fmt)
        if marker is None:
            return None
        zeros = trailing_zeros(fh, MAX_PADDING)
        if zeros >= MAX_PADDING:
            return f"no {_MARKER_NAMES[fmt]}: the file ends in {MAX_PADDING}+ zero bytes"
        end = size - zeros
        window = _TRAILER_ROOM[fmt]
        if zeros >= ZERO_RUN:
            window = min(window, len(marker) + PADDING_SLACK)
        tail = _read_at(fh, end - window, min(window, end))
    if marker in tail:
        return None
    what = _MARKER_NAMES[fmt]
    if zeros >= ZERO_RUN:
        return f"no {what} before the {zeros} zero bytes that end the file"
    return f"no {what} near the end of the file"


def _webp_shortfall(fh: BinaryIO, size: int) -> str | None:
    head = _head(fh, 12)
    if len(head) < 12:
        return "the file ends inside its WebP header"
    declared = struct.unpack("<I", head[4:8])[0] + 8
    if size < declared:
        return f"the file holds {size} of the {declared} bytes its WebP header declares"
    zeros = trailing_zeros(fh, ZERO_RUN, end=declared)
    if zeros >= ZERO_RUN:
        return f"the WebP data ends in {ZERO_RUN}+ zero bytes, never written"
    return None


def unallocated_tail(st: os.stat_result, run: int = ZERO_RUN) -> bool:
    """Whether fewer bytes are stored on disk than the file's size by at least ``run``: a
    size set up front (truncate, SMB's set-end-of-file) whose end was not written yet.
    Filesystems that compress zeros away report the same; callers combine it with other
    signs."""
    blocks = getattr(st, "st_blocks", None)
    return blocks is not None and blocks * 512 + run <= st.st_size


def unwritten_start(source: Source, length: int = 16) -> bool:
    """Whether the file starts with zero bytes: no image format does, so the writer has
    set the size but not written the beginning yet."""
    with _opened(source) as fh:
        head = _head(fh, length)
    return len(head) == length and not head.strip(b"\x00")
