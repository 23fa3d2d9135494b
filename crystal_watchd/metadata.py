"""The metadata an output carries: the photo's EXIF and ICC profile, never the file's structure.

A TIFF's "EXIF" is its own first IFD: width, strip offsets, bits per sample, planar layout.
Written into another file, those tags make it lie about its pixels, so EXIF is rebuilt from
an allowlist of tags that describe the *photo* (camera, lens, exposure, dates, authorship,
GPS). Anything that cannot be read or written back (malformed values, a profile that does not
parse, an over-long block) is dropped with a reason; metadata never fails a job.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

from PIL import Image, ImageCms

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
    #: What was left out, and why, for the ``metadata_dropped`` log line.
    dropped: tuple[str, ...] = field(default=())

    def icc_for(self, mode: str) -> bytes | None:
        """The profile, if it describes pixels of ``mode`` (a grey profile on RGB pixels, or
        a CMYK one on pixels already converted to RGB, would misdescribe them)."""
        wanted = "grey" if mode in ("L", "LA", "I;16", "I", "1") else "rgb"
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


def read(image: Image.Image) -> Metadata:
    """Everything ``image`` may pass on to its output, each block checked."""
    exif, dropped_exif = photo_exif(image)
    icc, space, dropped_icc = checked_icc(image.info.get("icc_profile"))
    return Metadata(exif=exif, icc_profile=icc, icc_space=space,
                    dropped=(*dropped_exif, *dropped_icc))
