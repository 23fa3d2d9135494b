"""Pictures exported the way Lightroom or Capture One export them, and an independent reader
for what an output carries (Pillow plus a small XMP parse; nothing from crystal_watchd).

Every input carries EXIF (artist, copyright, 300 dpi), an XMP packet (keywords, a 5-star
rating, a credit line, a caption, Camera Raw settings, edit history and the old pixel size),
IPTC-IIM where the format has a place for it, an sRGB ICC profile and 300 dpi.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

from PIL import Image, ImageCms, IptcImagePlugin
from PIL.PngImagePlugin import PngInfo

RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
DC = "http://purl.org/dc/elements/1.1/"
XMP = "http://ns.adobe.com/xap/1.0/"
PHOTOSHOP = "http://ns.adobe.com/photoshop/1.0/"
EXIF = "http://ns.adobe.com/exif/1.0/"
TIFF = "http://ns.adobe.com/tiff/1.0/"
CRS = "http://ns.adobe.com/camera-raw-settings/1.0/"
KEYWORDS = ["dune", "dusk", "Namib"]
CAPTION = "Dune 45 at dusk"
CREDIT = "Studio Kavango"
COPYRIGHT = "(c) 2026 Studio Kavango"
ARTIST = "Ana Kavango"


@functools.lru_cache(maxsize=1)
def srgb() -> bytes:
    """One sRGB profile for the whole run (each new one has a new creation time)."""
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def xmp_packet(width: int, height: int, *, history: str = "") -> bytes:
    """A Lightroom-style packet describing a ``width``×``height`` file."""
    keywords = "".join(f"<rdf:li>{k}</rdf:li>" for k in KEYWORDS)
    caption = f'<rdf:li xml:lang="x-default">{CAPTION}</rdf:li>'
    rights = f'<rdf:li xml:lang="x-default">{COPYRIGHT}</rdf:li>'
    return f"""<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="Adobe XMP Core 7.0">
 <rdf:RDF xmlns:rdf="{RDF}">
  <rdf:Description rdf:about=""
    xmlns:xmp="{XMP}" xmlns:dc="{DC}" xmlns:photoshop="{PHOTOSHOP}" xmlns:exif="{EXIF}"
    xmlns:tiff="{TIFF}" xmlns:crs="{CRS}"
   xmp:Rating="5" xmp:Label="Red" photoshop:Credit="{CREDIT}"
   exif:PixelXDimension="{width}" exif:PixelYDimension="{height}"
   tiff:Orientation="1" crs:Exposure2012="+0.50" crs:Version="16.0">
   <tiff:ImageWidth>{width}</tiff:ImageWidth>
   <tiff:ImageLength>{height}</tiff:ImageLength>
   <dc:format>image/x-original</dc:format>
   <dc:subject><rdf:Bag>{keywords}</rdf:Bag></dc:subject>
   <dc:description><rdf:Alt>{caption}</rdf:Alt></dc:description>
   <dc:rights><rdf:Alt>{rights}</rdf:Alt></dc:rights>
   <photoshop:History>{history}</photoshop:History>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="w"?>""".encode()


def iim() -> bytes:
    """An IPTC-IIM record: UTF-8 declared, keywords, caption, by-line, copyright."""
    def dataset(record: int, number: int, value: bytes) -> bytes:
        return bytes([0x1C, record, number]) + struct.pack(">H", len(value)) + value
    return (dataset(1, 90, b"\x1b%G")
            + b"".join(dataset(2, 25, k.encode()) for k in KEYWORDS)
            + dataset(2, 120, CAPTION.encode()) + dataset(2, 80, ARTIST.encode())
            + dataset(2, 116, COPYRIGHT.encode()))


def _resource(rid: int, data: bytes) -> bytes:
    return b"8BIM" + struct.pack(">HxxI", rid, len(data)) + data + b"\0" * (len(data) % 2)


def photoshop_app13(thumbnail: bytes) -> bytes:
    """An APP13 segment as Photoshop writes it: IIM, 300 dpi resolution info, thumbnail."""
    resolution = struct.pack(">IHHIHH", 300 << 16, 1, 2, 300 << 16, 1, 2)
    payload = b"Photoshop 3.0\x00" + _resource(0x0404, iim()) + _resource(0x03ED, resolution) \
        + _resource(0x040C, thumbnail)
    return b"\xff\xed" + struct.pack(">H", len(payload) + 2) + payload


def exif(*, dpi: bool = True) -> bytes:
    data = Image.Exif()
    data[0x013B] = ARTIST
    data[0x8298] = COPYRIGHT
    if dpi:
        data[0x011A] = data[0x011B] = 300.0
        data[0x0128] = 2
    return data.tobytes()


def picture(size: tuple[int, int]) -> Image.Image:
    return Image.radial_gradient("L").resize(size).convert("RGB")


def exported(fmt: str, size: tuple[int, int] = (64, 48), *, with_xmp: bool = True) -> bytes:
    """A picture as a studio exports it in ``fmt`` (JPEG, PNG, TIFF, WEBP)."""
    image, buffer = picture(size), io.BytesIO()
    packet = xmp_packet(*size) if with_xmp else b""
    if fmt == "JPEG":
        thumb = io.BytesIO()
        image.resize((16, 12)).save(thumb, "JPEG")
        image.save(buffer, "JPEG", exif=exif(), icc_profile=srgb(), dpi=(300, 300), xmp=packet,
                   extra=photoshop_app13(thumb.getvalue()))
    elif fmt == "PNG":
        info = PngInfo()
        info.add_itxt("XML:com.adobe.xmp", packet.decode())
        image.save(buffer, "PNG", exif=exif(), icc_profile=srgb(), dpi=(300, 300), pnginfo=info)
    elif fmt == "TIFF":
        tags = Image.Exif()
        tags.load(exif())
        tags[700] = packet
        tags[33723] = iim()
        image.save(buffer, "TIFF", tiffinfo=tags, icc_profile=srgb(), dpi=(300, 300))
    else:
        image.save(buffer, "WEBP", exif=exif(), icc_profile=srgb(), xmp=packet, lossless=True)
    return buffer.getvalue()


def drop(path: Path, data: bytes) -> None:
    """Put a file into an inbox at once (written aside, then renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".part-" + path.name)
    tmp.write_bytes(data)
    os.replace(tmp, path)


# -- reading outputs -----------------------------------------------------------------------


def packets(im: Image.Image) -> list[bytes]:
    """Every XMP packet in an opened file; for JPEG the main packet and, if it points to
    one, the reassembled extended XMP (checked against its GUID, the MD5 of its bytes)."""
    if im.format == "JPEG":
        app1 = [p for m, p in im.applist if m == "APP1"]
        main = [p[29:] for p in app1 if p.startswith(b"http://ns.adobe.com/xap/1.0/\x00")]
        out = list(main)
        parts: dict[bytes, dict[int, bytes]] = {}
        for p in app1:
            if p.startswith(b"http://ns.adobe.com/xmp/extension/\x00"):
                rest = p[35:]
                parts.setdefault(rest[:32], {})[struct.unpack(">I", rest[36:40])[0]] = rest[40:]
        for guid, pieces in parts.items():
            data = b"".join(pieces[k] for k in sorted(pieces))
            assert hashlib.md5(data).hexdigest().upper().encode() == guid
            out.append(data)
        return out
    if im.format == "TIFF":
        return [bytes(im.tag_v2[700])] if 700 in im.tag_v2 else []
    raw = im.info.get("xmp") or im.info.get("XML:com.adobe.xmp")
    return [raw.encode() if isinstance(raw, str) else raw] if raw else []


def xmp_properties(im: Image.Image) -> dict[str, object]:
    """Every property of every rdf:Description, as ``{uri}name`` → text or list of texts."""
    out: dict[str, object] = {}
    for packet in packets(im):
        root = ET.fromstring(packet.strip(b"\x00 \n"))
        for description in root.iter(f"{{{RDF}}}Description"):
            for key, value in description.attrib.items():
                out[key] = value
            for child in description:
                items = [li.text or "" for li in child.iter(f"{{{RDF}}}li")]
                out[child.tag] = items if items else (child.text or "").strip()
    return out


def iptc(im: Image.Image) -> dict[tuple[int, int], object]:
    info = IptcImagePlugin.getiptcinfo(im)  # type: ignore[arg-type]
    return info or {}


def dpi(im: Image.Image) -> dict[str, tuple[float, float]]:
    """Every place the file states its print resolution, as pixels per inch."""
    out: dict[str, tuple[float, float]] = {}
    if im.format == "JPEG" and im.info.get("jfif_unit") == 1:
        out["jfif"] = tuple(float(d) for d in im.info["jfif_density"])  # type: ignore[assignment]
    if im.format in ("PNG", "TIFF") and "dpi" in im.info:
        out["header"] = tuple(float(d) for d in im.info["dpi"])  # type: ignore[assignment]
    ifd0 = im.getexif()
    if 0x011A in ifd0 and (im.format != "TIFF"):
        unit = 2.54 if ifd0.get(0x0128) == 3 else 1.0
        out["exif"] = (float(ifd0[0x011A]) * unit, float(ifd0.get(0x011B, ifd0[0x011A])) * unit)
    return out
