"""IPTC-IIM and Photoshop image resources: what JPEG (APP13) and TIFF carry besides XMP.

A JPEG's APP13 segment holds Photoshop image resources ("8BIM" blocks); one of them is the
IPTC-IIM record (keywords, caption, by-line, copyright …). The resources that still apply to
an upscaled copy travel with it; those that describe the old pixels (thumbnails, guides and
slices in pixel units, alpha channels, layer state, the old EXIF/XMP/ICC copies that are
carried separately) are left behind. The print resolution resource is rewritten.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

IIM_RESOURCE = 0x0404
RESOLUTION_RESOURCE = 0x03ED
JPEG_HEADER = b"Photoshop 3.0\x00"
#: The IRB bytes one APP13 segment holds (65535 less length and header).
_PER_SEGMENT = 65_533 - len(JPEG_HEADER)
#: Resources that still describe an upscaled copy.
_STILL_APPLY = {
    IIM_RESOURCE,
    0x0425,  # IIM digest: the IIM record travels unchanged, so it still matches
    0x03F3, 0x2710,  # print flags
    0x040A, 0x040B, 0x041E,  # copyright flag, URL, URL list
    0x040D, 0x0419,  # global lighting angle and altitude
    0x0421,  # version info
    0x0426,  # print scale
    0x0428,  # pixel aspect ratio
    0x0BB7,  # clipping path name
    *range(0x07D0, 0x0BB7),  # paths: stored as fractions of the picture, so still right
}


@dataclass(frozen=True)
class Resource:
    id: int
    name: bytes
    data: bytes


def parse_irb(data: bytes) -> list[Resource]:
    """The image resources in ``data``; stops quietly at the first malformed block."""
    out, pos = [], 0
    while pos + 12 <= len(data) and data[pos:pos + 4] == b"8BIM":
        rid = struct.unpack(">H", data[pos + 4:pos + 6])[0]
        name_len = data[pos + 6]
        name = data[pos + 7:pos + 7 + name_len]
        pos += 6 + (1 + name_len) + (1 + name_len) % 2  # Pascal string padded to even
        if pos + 4 > len(data):
            break
        size = struct.unpack(">I", data[pos:pos + 4])[0]
        pos += 4
        if pos + size > len(data):
            break
        out.append(Resource(rid, name, data[pos:pos + size]))
        pos += size + (size % 2)
    return out


def build_irb(resources: list[Resource]) -> bytes:
    out = b""
    for r in resources:
        name = bytes([len(r.name)]) + r.name
        name += b"\0" * (len(name) % 2)
        out += b"8BIM" + struct.pack(">H", r.id) + name + struct.pack(">I", len(r.data))
        out += r.data + b"\0" * (len(r.data) % 2)
    return out


def kept(resources: list[Resource]) -> tuple[Resource, ...]:
    """The resources that still apply to an upscaled copy (IIM and resolution apart)."""
    return tuple(r for r in resources if r.id in _STILL_APPLY and r.id != IIM_RESOURCE)


def resolution(resources: list[Resource]) -> tuple[float, float] | None:
    """The print resolution (pixels per inch) in a ResolutionInfo resource."""
    for r in resources:
        if r.id == RESOLUTION_RESOURCE and len(r.data) >= 16:
            h, h_unit, _, v, v_unit, _ = struct.unpack(">IHHIHH", r.data[:16])
            if h and v:
                h_dpi, v_dpi = h / 65536, v / 65536
                # Unit 2 is pixels per centimetre (Photoshop still stores a Fixed value).
                return (h_dpi * 2.54 if h_unit == 2 else h_dpi,
                        v_dpi * 2.54 if v_unit == 2 else v_dpi)
    return None


def resolution_resource(dpi: tuple[float, float]) -> Resource:
    """A ResolutionInfo resource declaring ``dpi`` in pixels per inch."""
    h, v = (round(d * 65536) for d in dpi)
    return Resource(RESOLUTION_RESOURCE, b"", struct.pack(">IHHIHH", h, 1, 2, v, 1, 2))


def assemble(iim: bytes | None, others: tuple[Resource, ...],
             dpi: tuple[float, float] | None) -> bytes | None:
    """The IRB for an output: the IIM record, the resolution and the resources kept; None
    if the source had none of these (JFIF and EXIF state the resolution well enough)."""
    if not iim and not others:
        return None
    resources = [Resource(IIM_RESOURCE, b"", iim)] if iim else []
    if dpi:
        resources.append(resolution_resource(dpi))
    resources += others
    return build_irb(resources) if resources else None


def jpeg_segments(irb: bytes) -> list[bytes]:
    """APP13 payloads carrying ``irb`` (readers join consecutive Photoshop segments)."""
    return [JPEG_HEADER + irb[i:i + _PER_SEGMENT] for i in range(0, len(irb), _PER_SEGMENT)]


# -- IIM records ---------------------------------------------------------------------------


def datasets(iim: bytes) -> list[tuple[int, int, bytes]]:
    """(record, dataset, value) of every IIM dataset; stops at the first malformed one."""
    out, pos = [], 0
    while pos + 5 <= len(iim) and iim[pos] == 0x1C:
        record, number = iim[pos + 1], iim[pos + 2]
        size = struct.unpack(">H", iim[pos + 3:pos + 5])[0]
        pos += 5
        if size & 0x8000:  # extended dataset: the next (size & 0x7FFF) bytes hold the length
            width = size & 0x7FFF
            if width > 4:
                break
            size = int.from_bytes(iim[pos:pos + width], "big")
            pos += width
        if pos + size > len(iim):
            break
        out.append((record, number, iim[pos:pos + size]))
        pos += size
    return out


def fields(iim: bytes) -> dict[str, list[str]]:
    """Keywords (2:25), caption (2:120), by-lines (2:80) and copyright (2:116) as text."""
    records = datasets(iim)
    utf8 = any(r == 1 and n == 90 and v.startswith(b"\x1b%G") for r, n, v in records)
    out: dict[str, list[str]] = {"keywords": [], "caption": [], "creators": [], "rights": []}
    names = {25: "keywords", 120: "caption", 80: "creators", 116: "rights"}
    for record, number, value in records:
        if record == 2 and number in names:
            out[names[number]].append(_text(value, utf8))
    return out


def _text(value: bytes, utf8: bool) -> str:
    if not utf8:
        try:  # many writers use UTF-8 without saying so; Latin-1 is the old default
            return value.decode("utf-8").strip()
        except UnicodeDecodeError:
            return value.decode("latin-1").strip()
    return value.decode("utf-8", "replace").strip()
