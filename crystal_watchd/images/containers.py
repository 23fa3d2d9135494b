"""Work on image files without their pixels: read headers, prove a file whole, swap metadata.

A result that already has the output's format is kept byte for byte: only the container
around the compressed data is rewritten (JPEG APP segments, PNG ancillary chunks), so no
pixel is decoded or re-encoded and nothing is held in memory beyond a small buffer.
"""

from __future__ import annotations

import io
import mmap
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from . import carriers
from .carriers import Blocks
from .completeness import sniff

try:  # Intel's ISA-L inflates about twice as fast as zlib; same streams, same API
    from isal import isal_zlib as _inflater
except ImportError:  # pragma: no cover - platforms without an isal wheel
    _inflater = zlib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHUNK = 1 << 20
#: JPEG markers with no length field.
_STANDALONE = {0x01, *range(0xD0, 0xD8)}
#: Start-of-frame markers (baseline, progressive, lossless …), which carry the size.
_SOF = {*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC), *range(0xCD, 0xD0)}
_EXIF_HEADER = b"Exif\x00\x00"
_ICC_HEADER = b"ICC_PROFILE\x00"
_XMP_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"
_XMP_EXTENSION = b"http://ns.adobe.com/xmp/extension/\x00"
_PHOTOSHOP_HEADER = b"Photoshop 3.0\x00"


class DamagedFile(ValueError):
    """The file is incomplete or its structure is broken."""


@dataclass(frozen=True)
class Info:
    """What a header says: format, size, and how many colour channels."""

    format: str  # JPEG or PNG
    width: int
    height: int
    channels: int  # 1 grey, 2 grey+alpha, 3 colour, 4 colour+alpha (or CMYK in JPEG)
    has_alpha: bool = False


# -- JPEG --------------------------------------------------------------------------------


def _jpeg_segments(fh: BinaryIO) -> list[tuple[int, bytes]]:
    """(marker, payload) of every segment before the scan data; ``fh`` is left at SOS."""
    if fh.read(2) != b"\xff\xd8":
        raise DamagedFile("not a JPEG (no start-of-image marker)")
    segments = []
    while True:
        byte = fh.read(1)
        if not byte:
            raise DamagedFile("the JPEG ends before its image data")
        if byte != b"\xff":
            raise DamagedFile("the JPEG header is damaged (a segment does not start with 0xFF)")
        marker = fh.read(1)
        while marker == b"\xff":  # fill bytes
            marker = fh.read(1)
        if not marker:
            raise DamagedFile("the JPEG ends inside its header")
        code = marker[0]
        if code in _STANDALONE:
            segments.append((code, b""))
            continue
        raw_length = fh.read(2)
        if len(raw_length) < 2:
            raise DamagedFile("the JPEG ends inside its header")
        length = struct.unpack(">H", raw_length)[0]
        payload = fh.read(length - 2)
        if length < 2 or len(payload) != length - 2:
            raise DamagedFile("the JPEG ends inside a header segment")
        if code == 0xDA:  # start of scan: compressed data follows
            fh.seek(-(length + 2), 1)
            return segments
        if code == 0xD9:
            raise DamagedFile("the JPEG ends before its image data")
        segments.append((code, payload))


def jpeg_info(path: Path) -> Info:
    """Size and channels from the frame header; DamagedFile if it has no end marker."""
    with open(path, "rb") as fh:
        segments = _jpeg_segments(fh)
        fh.seek(-2, 2)
        if fh.read(2) != b"\xff\xd9":
            raise DamagedFile("the JPEG has no end-of-image marker (it is incomplete)")
    for code, payload in segments:
        if code in _SOF and len(payload) >= 6:
            height, width = struct.unpack(">HH", payload[1:5])
            channels = payload[5]
            if not width or not height:
                raise DamagedFile("the JPEG declares no size")
            return Info("JPEG", width, height, channels)
    raise DamagedFile("the JPEG has no frame header")


#: Inside entropy-coded data 0xFF is followed by 0x00 (a stuffed byte), a restart marker or
#: another 0xFF (fill); any other byte after it is a real marker, where the scan ends.
_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
#: What may follow a scan: the end, another scan, or the tables and notes between scans.
_AFTER_SCAN = {0xD9, 0xDA, 0xC4, 0xCC, 0xDB, 0xDC, 0xDD, 0xFE, *range(0xE0, 0xF0)}


def check_jpeg(source: bytes | Path) -> None:
    """Prove a JPEG whole without decoding it: every segment's length holds, each scan's
    compressed data runs to a marker that may follow a scan, and the end-of-image marker is
    reached. Catches a file cut short or spliced wrong at a fraction of a decode's cost (the
    bytes after the end marker, such as a camera's appended previews, are not looked at).
    Raises DamagedFile."""
    if isinstance(source, Path):
        with open(source, "rb") as fh:
            if fh.seek(0, 2) < 4:
                raise DamagedFile("the JPEG ends before its image data")
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as view:
                return _walk_jpeg(view)
    return _walk_jpeg(source)


def _walk_jpeg(buf) -> None:
    size = len(buf)
    if buf[:2] != b"\xff\xd8":
        raise DamagedFile("not a JPEG (no start-of-image marker)")
    pos, scans = 2, 0
    while True:
        if pos + 2 > size:
            raise DamagedFile("the JPEG ends before its end-of-image marker (it is incomplete)")
        if buf[pos] != 0xFF:
            raise DamagedFile("the JPEG is damaged (a segment does not start with 0xFF)")
        code = buf[pos + 1]
        if code == 0xFF:  # a fill byte before a marker
            pos += 1
            continue
        if code == 0xD9:
            if not scans:
                raise DamagedFile("the JPEG ends before its image data")
            return
        if code in _STANDALONE:
            pos += 2
            continue
        if pos + 4 > size:
            raise DamagedFile("the JPEG ends inside a segment (it is incomplete)")
        length = (buf[pos + 2] << 8) | buf[pos + 3]
        pos += 2 + length
        if length < 2 or pos > size:
            raise DamagedFile("the JPEG ends inside a segment (it is incomplete)")
        if code != 0xDA:
            continue
        scans += 1
        found = _SCAN_END.search(buf, pos)
        if found is None:
            raise DamagedFile("the JPEG's image data is cut short (no end-of-image marker)")
        pos = found.start()
        if buf[pos + 1] not in _AFTER_SCAN:
            raise DamagedFile(f"the JPEG's image data is damaged (marker 0xFF{buf[pos + 1]:02X} "
                              "inside it)")


def _ours(code: int, payload: bytes) -> bool:
    """Segments the output's metadata replaces: EXIF, XMP, ICC and Photoshop resources."""
    return ((code == 0xE1 and payload.startswith((_EXIF_HEADER, _XMP_HEADER, _XMP_EXTENSION)))
            or (code == 0xE2 and payload.startswith(_ICC_HEADER))
            or (code == 0xED and payload.startswith(_PHOTOSHOP_HEADER)))


def splice_jpeg(source: Path, target: BinaryIO, blocks: Blocks) -> None:
    """Copy the JPEG ``source`` to ``target`` with ``blocks`` in place of its own metadata
    (and its JFIF density set to the output's resolution); the scan data is copied
    unchanged."""
    with open(source, "rb") as fh:
        segments = _jpeg_segments(fh)
        target.write(b"\xff\xd8")
        kept = [(c, p) for c, p in segments if not _ours(c, p)]
        # JFIF (APP0) stays first, as readers expect; ours follow it.
        jfif = kept and kept[0][0] == 0xE0 and kept[0][1].startswith(b"JFIF\x00")
        app0 = kept.pop(0)[1] if jfif else None
        app0 = carriers.jfif(app0, blocks.dpi)
        if app0 is not None:
            target.write(carriers.segment(0xE0, app0))
        for code, payload in carriers.jpeg_segments(blocks):
            target.write(carriers.segment(code, payload))
        for code, payload in kept:
            target.write(carriers.segment(code, payload) if payload or code not in _STANDALONE
                         else b"\xff" + bytes([code]))
        while chunk := fh.read(_CHUNK):
            target.write(chunk)


# -- PNG ---------------------------------------------------------------------------------


def _png_chunks(fh: BinaryIO, *, check: bool):
    """Walk a PNG chunk by chunk without holding a large chunk whole. Yields
    ("start", type, length-bytes), ("data", type, piece)…, ("end", type, crc-bytes), and
    raises DamagedFile if the file ends early or (with ``check``) a CRC is wrong."""
    if fh.read(8) != PNG_SIGNATURE:
        raise DamagedFile("not a PNG (bad signature)")
    while True:
        head = fh.read(8)
        if len(head) < 8:
            raise DamagedFile("the PNG ends before its IEND chunk (it is incomplete)")
        length, kind = struct.unpack(">I4s", head)
        yield "start", kind, head[:4]
        crc = zlib.crc32(kind)
        remaining = length
        while remaining:
            piece = fh.read(min(remaining, _CHUNK))
            if not piece:
                raise DamagedFile("the PNG ends inside a chunk (it is incomplete)")
            remaining -= len(piece)
            if check:
                crc = zlib.crc32(piece, crc)
            yield "data", kind, piece
        stored = fh.read(4)
        if len(stored) < 4:
            raise DamagedFile("the PNG ends inside a chunk (it is incomplete)")
        if check and struct.unpack(">I", stored)[0] != crc & 0xFFFFFFFF:
            raise DamagedFile(f"the PNG's {kind.decode('latin-1')} chunk fails its checksum")
        yield "end", kind, stored
        if kind == b"IEND":
            return


def _ihdr(data: bytes) -> tuple[int, int, int, int, int]:
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", data[:13])
    return width, height, depth, colour, interlace


_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def png_info(path: Path) -> Info:
    """Size and channels from IHDR (no check of the rest)."""
    with open(path, "rb") as fh:
        if fh.read(8) != PNG_SIGNATURE:
            raise DamagedFile("not a PNG (bad signature)")
        length, kind = struct.unpack(">I4s", fh.read(8))
        if kind != b"IHDR" or length < 13:
            raise DamagedFile("the PNG has no header chunk")
        width, height, _, colour, _ = _ihdr(fh.read(13))
    channels = 3 if colour == 3 else _PNG_CHANNELS.get(colour, 3)
    return Info("PNG", width, height, channels, has_alpha=colour in (4, 6))


def png_has_iend(path: Path) -> bool:
    """Cheap completeness: the file ends with an IEND chunk."""
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        if fh.tell() < 12:
            return False
        fh.seek(-12, 2)
        return fh.read(12)[4:8] == b"IEND"


def check_png_chunks(source: bytes | Path) -> None:
    """Prove a PNG's bytes are the ones its encoder wrote: every chunk whole and matching its
    CRC, up to IEND, with image data present. No inflating: for bytes that are not changed
    (fal's result kept as it is, an input sent as it is) the checksums are the proof."""
    with open(source, "rb") if isinstance(source, Path) else io.BytesIO(source) as fh:
        idat = False
        for event, kind, _ in _png_chunks(fh, check=True):
            idat = idat or (event == "start" and kind == b"IDAT")
    if not idat:
        raise DamagedFile("the PNG has no image data")


def check_png(path: Path) -> Info:
    """Prove a PNG whole without building the image: every chunk's CRC, and the compressed
    pixel data inflated (into a small rolling buffer) to exactly the size IHDR promises."""
    info = png_info(path)
    inflate = _inflater.decompressobj()
    produced = 0
    ihdr = b""
    with open(path, "rb") as fh:
        for event, kind, data in _png_chunks(fh, check=True):
            if event != "data":
                continue
            if kind == b"IHDR":
                ihdr += data
            elif kind == b"IDAT":
                while data:
                    try:
                        produced += len(inflate.decompress(data, _CHUNK))
                    except (zlib.error, _inflater.error) as exc:
                        raise DamagedFile(f"the PNG's image data is damaged ({exc})") from None
                    data = inflate.unconsumed_tail
    header = _ihdr(ihdr) if len(ihdr) >= 13 else None
    if header is None:
        raise DamagedFile("the PNG has no header chunk")
    produced += len(inflate.flush())
    if not inflate.eof:
        raise DamagedFile("the PNG's image data is cut short")
    width, height, depth, colour, interlace = header
    if not interlace:
        bits = depth * _PNG_CHANNELS.get(colour, 1)
        expected = height * (1 + (width * bits + 7) // 8)
        if produced != expected:
            raise DamagedFile(f"the PNG's image data has {produced} bytes, not {expected}")
    return info


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(
        ">I", zlib.crc32(data, zlib.crc32(kind)) & 0xFFFFFFFF)


def splice_png(source: Path, target: BinaryIO, blocks: Blocks) -> None:
    """Copy the PNG ``source`` to ``target`` with ``blocks``' chunks (iCCP, pHYs, eXIf, XMP
    iTXt) in place of its own; every other chunk, the pixel data included, is copied
    unchanged."""
    new = carriers.png_chunks(blocks)
    with open(source, "rb") as fh:
        target.write(PNG_SIGNATURE)
        chunks = _png_chunks(fh, check=False)
        for event, kind, data in chunks:
            if event == "start" and kind == b"iTXt":
                data = _whole_chunk(chunks, kind, data)  # its keyword says if it is XMP
                if not carriers.png_replaces(kind, data[8:-4], new):
                    target.write(data)
                continue
            if carriers.png_replaces(kind, b"", new):
                continue
            if event == "start":
                target.write(data + kind)
            else:
                target.write(data)  # pieces, then the chunk's own CRC: all unchanged
            if event == "end" and kind == b"IHDR":
                for new_kind, new_data in new:
                    target.write(_chunk(new_kind, new_data))


def _whole_chunk(chunks, kind: bytes, length: bytes) -> bytes:
    """A text chunk read whole (length, type, data, CRC) from the chunk walker."""
    out = length + kind
    for event, _, data in chunks:
        out += data
        if event == "end":
            return out
    return out


def info(path: Path) -> Info:
    """The header of a JPEG or PNG file."""
    fmt = sniff(path)
    if fmt == "JPEG":
        return jpeg_info(path)
    if fmt == "PNG":
        return png_info(path)
    raise DamagedFile("neither a JPEG nor a PNG")


def complete(path: Path, expected_size: int | None = None) -> str | None:
    """Why a downloaded result is not complete (length, end marker), or None. Cheap: reads
    headers and the tail only; the output's read-back proves the pixel data."""
    size = path.stat().st_size
    if expected_size is not None and size != expected_size:
        return f"{size} of {expected_size} bytes"
    fmt = sniff(path)
    try:
        if fmt == "JPEG":
            jpeg_info(path)
        elif fmt == "PNG":
            if not png_has_iend(path):
                return "the PNG has no IEND chunk"
            png_info(path)
        else:
            return "it is neither a JPEG nor a PNG"
    except (DamagedFile, struct.error) as exc:
        return str(exc)
    return None
