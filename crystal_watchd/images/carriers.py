"""How each output format holds the source's metadata.

One place decides what an output gets (``for_output``) and how each format stores it, so a
re-encoded output and one whose bytes pass through (containers.py) carry the same blocks:

| block      | JPEG                        | PNG                      | TIFF       | WebP   |
|------------|-----------------------------|--------------------------|------------|--------|
| EXIF       | APP1                        | eXIf                     | IFD tags   | EXIF   |
| ICC        | APP2                        | iCCP                     | tag 34675  | ICCP   |
| XMP        | APP1 (+ extended XMP)       | iTXt XML:com.adobe.xmp   | tag 700    | XMP    |
| IPTC-IIM   | APP13 Photoshop resources   | (in XMP, IPTC Core)      | tag 33723  | (XMP)  |
| resolution | JFIF density + EXIF + APP13 | pHYs + EXIF              | X/YRes.    | EXIF   |
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from . import iptc, metadata, provenance, xmp
from .metadata import Metadata

MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "TIFF": "image/tiff", "WEBP": "image/webp",
        "BMP": "image/bmp"}
_EXIF_HEADER = b"Exif\x00\x00"
_ICC_HEADER = b"ICC_PROFILE\x00"
_ICC_PER_SEGMENT = 65_519
_XMP_KEYWORD = b"XML:com.adobe.xmp"


@dataclass(frozen=True)
class Blocks:
    """The metadata one output gets, in the form its format stores."""

    exif: bytes | None = None  # "Exif\0\0" + TIFF, with the output's resolution
    icc: bytes | None = None
    xmp: bytes | None = None  # the packet, brought up to date for this output
    iim: bytes | None = None
    irb: bytes | None = None  # Photoshop resources (IIM included) for JPEG's APP13
    dpi: tuple[float, float] | None = None


def for_output(meta: Metadata, fmt: str, size: tuple[int, int], mode: str,
               dpi: tuple[float, float] | None,
               made: provenance.Provenance | None = None) -> Blocks:
    """What an output of ``fmt``, ``size`` and pixel ``mode`` carries from ``meta``, and
    where it came from (``made``) in the project's XMP namespace."""
    parsed = None
    if meta.xmp:
        try:
            parsed = xmp.parse(meta.xmp)
            xmp.for_output(parsed, size=size, mime=MIME.get(fmt, ""), dpi=dpi)
        except xmp.XmpError:  # checked when read; cannot happen, but never fail a job
            parsed = None
    if made is not None:
        parsed = parsed if parsed is not None else xmp.empty()
        provenance.add(parsed, made)
    packet = xmp.serialize(parsed) if parsed is not None else None
    return Blocks(exif=metadata.exif_with_dpi(meta.exif, dpi), icc=meta.icc_for(mode),
                  xmp=packet, iim=meta.iim, irb=iptc.assemble(meta.iim, meta.irb, dpi),
                  dpi=dpi)


# -- JPEG ----------------------------------------------------------------------------------


def jpeg_segments(blocks: Blocks) -> list[tuple[int, bytes]]:
    """(marker, payload) of every segment holding ``blocks``, in the order readers expect
    after JFIF: EXIF, XMP, ICC, Photoshop resources."""
    out: list[tuple[int, bytes]] = []
    if blocks.exif:
        out.append((0xE1, blocks.exif))
    if blocks.xmp:
        out += [(0xE1, p) for p in xmp.jpeg_segments(xmp.parse(blocks.xmp))]
    if blocks.icc:
        icc = blocks.icc
        parts = [icc[i:i + _ICC_PER_SEGMENT] for i in range(0, len(icc), _ICC_PER_SEGMENT)]
        out += [(0xE2, _ICC_HEADER + bytes([n, len(parts)]) + part)
                for n, part in enumerate(parts, 1)]
    if blocks.irb:
        out += [(0xED, p) for p in iptc.jpeg_segments(blocks.irb)]
    return out


def segment(code: int, payload: bytes) -> bytes:
    return b"\xff" + bytes([code]) + struct.pack(">H", len(payload) + 2) + payload


def jfif(payload: bytes | None, dpi: tuple[float, float] | None) -> bytes | None:
    """A JFIF APP0 payload declaring ``dpi`` (``payload`` patched, or a new one); None
    to leave things as they are."""
    if dpi is None:
        return payload
    density = struct.pack(">BHH", 1, *(max(1, min(65535, round(d))) for d in dpi))
    if payload and payload.startswith(b"JFIF\x00") and len(payload) >= 12:
        return payload[:7] + density + payload[12:]
    return b"JFIF\x00\x01\x01" + density + b"\x00\x00"


# -- PNG -----------------------------------------------------------------------------------


def png_chunks(blocks: Blocks) -> list[tuple[bytes, bytes]]:
    """(type, data) of the chunks holding ``blocks``, to go between IHDR and IDAT."""
    out: list[tuple[bytes, bytes]] = []
    if blocks.icc:
        out.append((b"iCCP", b"icc\x00\x00" + zlib.compress(blocks.icc)))
    if blocks.dpi:
        ppm = (round(d / 0.0254) for d in blocks.dpi)
        out.append((b"pHYs", struct.pack(">IIB", *ppm, 1)))
    if blocks.exif:
        out.append((b"eXIf", blocks.exif[len(_EXIF_HEADER):]))
    if blocks.xmp:
        # Uncompressed, as the XMP specification asks, so that simple readers find it.
        out.append((b"iTXt", _XMP_KEYWORD + b"\x00\x00\x00\x00\x00" + blocks.xmp))
    return out


def png_replaces(kind: bytes, data: bytes, new: list[tuple[bytes, bytes]]) -> bool:
    """Whether a chunk of a PNG passing through is superseded by ``new``'s."""
    kinds = {k for k, _ in new}
    if kind == b"sRGB":
        return b"iCCP" in kinds  # a PNG may not hold both
    if kind == b"iTXt":
        return b"iTXt" in kinds and data.startswith(_XMP_KEYWORD + b"\x00")
    return kind in kinds


# -- TIFF and WebP -------------------------------------------------------------------------


def save_params(blocks: Blocks, fmt: str) -> dict[str, object]:
    """Pillow save() parameters that write ``blocks`` (JPEG's go in as raw segments)."""
    if fmt == "JPEG":
        params: dict[str, object] = {"extra": b"".join(
            segment(c, p) for c, p in jpeg_segments(blocks))}
        if blocks.dpi:
            params["dpi"] = blocks.dpi
        return params
    params = {"icc_profile": blocks.icc} if blocks.icc else {}
    if fmt == "PNG":
        # Pillow writes known chunks only from its own parameters; the XMP goes in as is.
        info = PngInfo()
        for kind, data in png_chunks(blocks):
            if kind == b"iTXt":
                info.add(kind, data)
        params.update(pnginfo=info, icc_profile=blocks.icc)
        if blocks.exif:
            params["exif"] = blocks.exif
        if blocks.dpi:
            params["dpi"] = blocks.dpi
    elif fmt == "WEBP":
        if blocks.exif:
            params["exif"] = blocks.exif
        if blocks.xmp:
            params["xmp"] = blocks.xmp
    elif fmt == "TIFF":
        params["tiffinfo"] = _tiff_tags(blocks)
        if blocks.dpi:
            params["dpi"] = blocks.dpi
        else:  # Pillow writes a resolution of 1 regardless: say it has no unit, not 1 dpi
            params["resolution_unit"] = 1
    return params


def _tiff_tags(blocks: Blocks) -> Image.Exif:
    """The TIFF's own tags besides the pixel layout: the EXIF block's, XMP (700, BYTE) and
    IPTC (33723, UNDEFINED); Pillow types known tags itself."""
    tags = Image.Exif()
    if blocks.exif:
        tags.load(blocks.exif)
    if blocks.xmp:
        tags[700] = blocks.xmp
    if blocks.iim:
        tags[33723] = blocks.iim
    return tags
