"""The metadata an output carries: EXIF, ICC, XMP, IPTC and the print resolution, never the
file's structure.

A TIFF's "EXIF" is its own first IFD: width, strip offsets, bits per sample, planar layout.
Written into another file, those tags make it lie about its pixels, so EXIF is rebuilt from
an allowlist of tags that describe the *photo* (camera, lens, exposure, dates, authorship,
GPS). Anything that cannot be read or written back (malformed values, a profile that does not
parse, an over-long block, an XMP packet that is not XML) is dropped with a reason;
metadata never fails a job. XMP and IPTC are read here and brought up to date for each
output in carriers.py (see xmp.py and iptc.py).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

from PIL import Image, ImageCms, TiffImagePlugin

from . import iptc, xmp

EXIF_ORIENTATION = 0x0112
_EXIF_IFD = 0x8769
_GPS_IFD = 0x8825

#: First-IFD tags that describe the photo (the rest of IFD0 describes the file).
_PHOTO_IFD0 = {
    0x010E,  # ImageDescription
    0x010F,  # Make
    0x0110,  # Model
    0x011A, 0x011B, 0x0128,  # X/YResolution, ResolutionUnit: the intended print size
    0x0131,  # Software
    0x0132,  # DateTime
    0x013B,  # Artist
    0x4746, 0x4749,  # Rating, RatingPercent
    0x8298,  # Copyright
    0x9C9B, 0x9C9C, 0x9C9D, 0x9C9E, 0x9C9F,  # Windows XPTitle/Comment/Author/Keywords/Subject
}
#: Exif-IFD tags that describe the old file, not the photo: dropped.
_STRUCTURAL_EXIF = {
    0x9101,  # ComponentsConfiguration
    0x9102,  # CompressedBitsPerPixel
    0x927C,  # MakerNote: offsets into the old file, meaningless once moved
    0xA002, 0xA003,  # PixelX/YDimension: the old size
    0xA005,  # Interoperability IFD pointer
}
#: The largest EXIF block a JPEG APP1 segment can hold (64 KiB less header and length).
MAX_EXIF_BYTES = 65_527
#: ICC colour spaces and the output modes that they fit.
_ICC_SPACE = {"RGB": "rgb", "GRAY": "grey", "CMYK": "cmyk", "LAB": "lab"}


@dataclass(frozen=True)
class Metadata:
    """What an output may carry, already checked: every block here can be written."""

    exif: bytes | None = None  # "Exif\0\0" + TIFF, orientation 1, no thumbnail
    icc_profile: bytes | None = None
    #: The profile's colour space: rgb, grey, cmyk, lab (None without a profile).
    icc_space: str | None = None
    #: The XMP packet (parsed and checked; any extended XMP folded in, and IPTC Core
    #: fields added from the IIM record where the packet lacked them).
    xmp: bytes | None = None
    #: The IPTC-IIM record, as it was.
    iim: bytes | None = None
    #: Other Photoshop image resources that still apply to an upscaled copy.
    irb: tuple[iptc.Resource, ...] = ()
    #: The source's print resolution in pixels per inch (None when it declares none).
    dpi: tuple[float, float] | None = None
    #: What was left out, and why, for the ``metadata_dropped`` log line.
    dropped: tuple[str, ...] = field(default=())

    def icc_for(self, mode: str) -> bytes | None:
        """The profile, if it describes pixels of ``mode`` (a grey profile on RGB pixels, or
        a CMYK one on pixels already converted to RGB, would misdescribe them)."""
        wanted = ("grey" if mode in ("L", "LA", "I;16", "I", "1")
                  else "cmyk" if mode == "CMYK" else "rgb")
        return self.icc_profile if self.icc_space == wanted else None


def orientation(image: Image.Image) -> int:
    """The EXIF orientation (1–8), 1 when absent or unreadable."""
    try:
        value = image.getexif().get(EXIF_ORIENTATION, 1)
        value = int(value)
    except Exception:  # noqa: BLE001 - malformed EXIF: treat as upright
        return 1
    return value if 1 <= value <= 8 else 1


def _serialisable(tag: int, value: object, ifd: int | None) -> bool:
    probe = Image.Exif()
    try:
        if ifd is None:
            probe[tag] = value
        else:
            probe[ifd] = {tag: value}
        probe.tobytes()
    except Exception:  # noqa: BLE001 - any value Pillow cannot write back is malformed
        return False
    return True


def photo_exif(image: Image.Image) -> tuple[bytes | None, list[str]]:
    """The photo-describing EXIF of ``image`` with orientation 1, and what was dropped."""
    dropped: list[str] = []
    try:
        exif = image.getexif()
        ifd0 = dict(exif.items())
        sub = {_EXIF_IFD: dict(exif.get_ifd(_EXIF_IFD)), _GPS_IFD: dict(exif.get_ifd(_GPS_IFD))}
    except Exception as exc:  # noqa: BLE001 - unparseable EXIF
        return None, [f"EXIF: it cannot be read ({type(exc).__name__}: {exc})"]
    out = Image.Exif()
    bad: list[str] = []
    for tag, value in ifd0.items():
        if tag in _PHOTO_IFD0:
            if _serialisable(tag, value, None):
                out[tag] = value
            else:
                bad.append(f"0x{tag:04x}")
    for ifd, tags in sub.items():
        kept = {}
        for tag, value in tags.items():
            if ifd == _EXIF_IFD and tag in _STRUCTURAL_EXIF:
                continue
            if _serialisable(tag, value, ifd):
                kept[tag] = value
            else:
                bad.append(f"0x{tag:04x}")
        if kept:
            out[ifd] = kept
    if bad:
        dropped.append(f"EXIF tags {', '.join(bad)}: malformed values")
    if not len(out):
        return None, dropped
    out[EXIF_ORIENTATION] = 1
    try:
        data = out.tobytes()
    except Exception as exc:  # noqa: BLE001 - a combination Pillow cannot write
        return None, [*dropped, f"EXIF: it cannot be written back ({exc})"]
    if len(data) > MAX_EXIF_BYTES:
        return None, [*dropped, f"EXIF: {len(data)} bytes, more than a JPEG can hold"]
    return data, dropped


def checked_icc(profile: bytes | None) -> tuple[bytes | None, str | None, list[str]]:
    """``profile`` and its colour space if littleCMS can parse it; else nothing, and why."""
    if not profile:
        return None, None, []
    try:
        parsed = ImageCms.ImageCmsProfile(io.BytesIO(profile))
        space = parsed.profile.xcolor_space.strip().upper()
    except Exception as exc:  # noqa: BLE001 - any parse failure means an unusable profile
        return None, None, [f"ICC profile: it does not parse ({exc})"]
    if space not in _ICC_SPACE:
        return None, None, [f"ICC profile: colour space {space!r} is not carried"]
    return profile, _ICC_SPACE[space], []


def _resources(image: Image.Image) -> list[iptc.Resource]:
    """Photoshop image resources: a JPEG's APP13 segments, a TIFF's tag 34377."""
    if image.format == "JPEG":
        data = b"".join(p[len(iptc.JPEG_HEADER):] for m, p in getattr(image, "applist", [])
                        if m == "APP13" and p.startswith(iptc.JPEG_HEADER))
    elif image.format == "TIFF":
        data = _tiff_bytes(image, 34377)
    else:
        return []
    return iptc.parse_irb(data or b"")


def _tiff_bytes(image: Image.Image, tag: int) -> bytes | None:
    """A TIFF tag's raw bytes (IPTC is often typed LONG, so Pillow's value is a tuple)."""
    tags = getattr(image, "tag_v2", None)
    if tags is None or tag not in tags:
        return None
    # The raw bytes, as Pillow's own IPTC reader takes them: decoded, a LONG-typed block is
    # cut to the single value Pillow expects for this tag.
    raw = getattr(tags, "_tagdata", {}).get(tag)
    if isinstance(raw, bytes):
        return raw
    value = tags[tag]
    return value if isinstance(value, bytes) else None


def _iim(image: Image.Image, resources: list[iptc.Resource]) -> bytes | None:
    for r in resources:
        if r.id == iptc.IIM_RESOURCE and r.data:
            return r.data
    if image.format == "TIFF":
        return _tiff_bytes(image, 33723) or None
    return None


def _xmp(image: Image.Image, iim: bytes | None) -> tuple[bytes | None, list[str]]:
    """The checked XMP packet, with IIM fields it lacks added; or None, and why."""
    raw = image.info.get("xmp") or image.info.get("XML:com.adobe.xmp")
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    try:
        packet = xmp.parse(raw) if raw else xmp.empty()
        guid = xmp.extended_guid(packet) if raw and image.format == "JPEG" else None
        if guid:
            app1 = [p for m, p in getattr(image, "applist", []) if m == "APP1"]
            extended = xmp.jpeg_extended(app1, guid)
            if extended:
                xmp.merge_extended(packet, extended)
    except xmp.XmpError as exc:
        return None, [f"XMP: {exc}"]
    added = []
    if iim:
        f = iptc.fields(iim)
        added = xmp.add_iptc_core(packet, keywords=f["keywords"], caption=next(
            iter(f["caption"]), None), creators=f["creators"], rights=next(iter(f["rights"]),
                                                                           None))
    if not raw and not added:
        return None, []
    return xmp.serialize(packet), []


def source_dpi(image: Image.Image, resources: list[iptc.Resource]) -> tuple[float, float] | None:
    """The print resolution the source declares, in pixels per inch, or None.

    A JPEG's JFIF density counts only with a real unit (unit 0 is an aspect ratio), and
    Pillow's own JPEG "dpi" falls back to 72 when EXIF has none, so JPEG is read here."""
    dpi = None
    if image.format == "JPEG":
        unit, density = image.info.get("jfif_unit"), image.info.get("jfif_density")
        if unit in (1, 2) and density:
            dpi = tuple(d * (2.54 if unit == 2 else 1) for d in density)
    elif image.format in ("PNG", "TIFF"):
        dpi = image.info.get("dpi")
    if not dpi:
        dpi = _exif_dpi(image) or iptc.resolution(resources)
    try:
        # PNG stores pixels per metre, so 300 dpi reads back as 299.9994: snap to whole.
        x, y = (round(float(v)) if abs(float(v) - round(float(v))) < 0.01 else float(v)
                for v in dpi)  # type: ignore[union-attr]
    except (TypeError, ValueError, OverflowError):
        return None
    return (float(x), float(y)) if 1 <= x <= 1e6 and 1 <= y <= 1e6 else None


def _exif_dpi(image: Image.Image) -> tuple[float, float] | None:
    try:
        exif = image.getexif()
        x, y, unit = exif.get(0x011A), exif.get(0x011B, exif.get(0x011A)), exif.get(0x0128, 2)
        if x is None or unit not in (2, 3):
            return None
        factor = 2.54 if unit == 3 else 1
        return float(x) * factor, float(y) * factor
    except Exception:  # noqa: BLE001 - malformed EXIF resolution: as if there were none
        return None


def output_dpi(source: tuple[float, float] | None, policy: str | float,
               scale: float) -> tuple[float, float] | None:
    """The resolution an output declares under the folder's ``dpi`` setting: the source's
    (``keep``, so it prints larger), the source's times the scale (``scale``, so it prints at
    the same size), or a fixed number."""
    if isinstance(policy, (int, float)):
        return float(policy), float(policy)
    if source is None:
        return None
    return source if policy == "keep" else (source[0] * scale, source[1] * scale)


def exif_with_dpi(exif: bytes | None, dpi: tuple[float, float] | None) -> bytes | None:
    """``exif`` with X/YResolution in inches set to ``dpi`` (a new block if there was none)."""
    if dpi is None:
        return exif
    out = Image.Exif()
    if exif:
        out.load(exif)
    out[0x011A], out[0x011B] = (_fraction(d) for d in dpi)
    out[0x0128] = 2
    out.setdefault(EXIF_ORIENTATION, 1)
    data = out.tobytes()
    return data if len(data) <= MAX_EXIF_BYTES else exif


def _fraction(value: float) -> TiffImagePlugin.IFDRational:
    return TiffImagePlugin.IFDRational(round(value * 100), 100) if value != round(value) \
        else TiffImagePlugin.IFDRational(round(value), 1)


def read(image: Image.Image) -> Metadata:
    """Everything ``image`` may pass on to its output, each block checked."""
    exif, dropped_exif = photo_exif(image)
    icc, space, dropped_icc = checked_icc(image.info.get("icc_profile"))
    resources = _resources(image)
    iim = _iim(image, resources)
    packet, dropped_xmp = _xmp(image, iim)
    return Metadata(exif=exif, icc_profile=icc, icc_space=space, xmp=packet, iim=iim,
                    irb=iptc.kept(resources), dpi=source_dpi(image, resources),
                    dropped=(*dropped_exif, *dropped_icc, *dropped_xmp))
