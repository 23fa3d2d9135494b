"""XMP packets: read safely, bring up to date for the output, write back.

An XMP packet is where studios keep what matters most to them (keywords, ratings, labels,
captions, credit and rights, Camera Raw and Capture One settings, edit history). It travels
to the output as it was, except for the few properties that describe the old *file* rather
than the picture: its pixel size, orientation, format, embedded thumbnails and the digests
of its old TIFF/EXIF values. Those are updated to the output or removed.

Packets come from untrusted files: the parser refuses any DTD (so no entity expansion, no
external entities), and a packet that does not parse is dropped with a reason.
"""

from __future__ import annotations

import hashlib
import io
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from xml.sax.saxutils import escape, quoteattr

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import iterparse

NS = {
    "x": "adobe:ns:meta/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "xml": "http://www.w3.org/XML/1998/namespace",
    "dc": "http://purl.org/dc/elements/1.1/",
    "xmp": "http://ns.adobe.com/xap/1.0/",
    "xmpNote": "http://ns.adobe.com/xmp/note/",
    "tiff": "http://ns.adobe.com/tiff/1.0/",
    "exif": "http://ns.adobe.com/exif/1.0/",
    "exifEX": "http://cipa.jp/exif/1.0/",
    "photoshop": "http://ns.adobe.com/photoshop/1.0/",
}
_RDF = "{{{}}}".format(NS["rdf"])
_DESCRIPTION = _RDF + "Description"

#: JPEG: the header of the APP1 segment with the main packet, and of extended-XMP parts.
JPEG_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"
JPEG_EXTENSION_HEADER = b"http://ns.adobe.com/xmp/extension/\x00"
#: The largest packet one JPEG APP1 segment holds (65535 less length and header).
JPEG_MAX_STANDARD = 65_504
#: Bytes of extended XMP per APP1 segment (less header, GUID, full length and offset).
JPEG_EXTENSION_PART = 65_458


def _q(prefix: str, name: str) -> str:
    return f"{{{NS[prefix]}}}{name}"


#: Properties that describe the old file: removed from the output's packet.
_STALE = {_q("tiff", n) for n in (
    "Orientation",  # the output's pixels are upright; its EXIF says so
    "BitsPerSample", "Compression", "PhotometricInterpretation", "SamplesPerPixel",
    "PlanarConfiguration", "YCbCrSubSampling", "YCbCrPositioning", "NativeDigest")} | {
    _q("exif", "NativeDigest"), _q("xmp", "Thumbnails"), _q("xmpNote", "HasExtendedXMP")}
#: Properties rewritten with the output's values (only where the packet has them).
_WIDTH = {_q("tiff", "ImageWidth"), _q("exif", "PixelXDimension")}
_HEIGHT = {_q("tiff", "ImageLength"), _q("exif", "PixelYDimension")}
_X_RES, _Y_RES, _RES_UNIT = (_q("tiff", n) for n in ("XResolution", "YResolution",
                                                      "ResolutionUnit"))
_FORMAT = _q("dc", "format")


class XmpError(ValueError):
    """A packet that cannot be used (not XML, a DTD, no RDF)."""


class Packet:
    """A parsed packet: its ``rdf:RDF`` element, and the prefixes the file chose."""

    def __init__(self, rdf: ET.Element, prefixes: dict[str, str]):
        self.rdf = rdf
        self.prefixes = prefixes  # namespace URI → prefix

    def descriptions(self) -> list[ET.Element]:
        return [d for d in self.rdf if d.tag == _DESCRIPTION]

    def has(self, tag: str) -> bool:
        return any(tag in d.attrib or d.find(tag) is not None for d in self.descriptions())

    def add(self, tag: str, element: ET.Element | str) -> None:
        """Add a property (an element, or a simple value) to the first description."""
        descriptions = self.descriptions()
        if not descriptions:
            descriptions = [ET.SubElement(self.rdf, _DESCRIPTION, {_RDF + "about": ""})]
        if isinstance(element, str):
            descriptions[0].set(tag, element)
        else:
            descriptions[0].append(element)


def empty() -> Packet:
    """A packet with no properties."""
    rdf = ET.Element(_RDF + "RDF")
    ET.SubElement(rdf, _DESCRIPTION, {_RDF + "about": ""})
    return Packet(rdf, {})


def parse(data: bytes) -> Packet:
    """Parse ``data``; XmpError if it is not a usable packet. Refuses DTDs and entities."""
    prefixes: dict[str, str] = {}
    root = None
    try:
        for event, item in iterparse(io.BytesIO(data.rstrip(b"\x00 \t\r\n")),
                                     events=("start-ns", "end"), forbid_dtd=True):
            if event == "start-ns":
                prefix, uri = item
                if prefix and uri not in prefixes and prefix not in prefixes.values():
                    prefixes[uri] = prefix
            else:
                root = item
    except DefusedXmlException:
        raise XmpError("it declares a DTD, which XMP never has (refused: a DTD can expand "
                       "entities without bound or read other files)") from None
    except (ET.ParseError, ValueError) as exc:
        raise XmpError(f"it is not well-formed XML ({exc})") from None
    if root is None:
        raise XmpError("it is empty")
    rdf = root if root.tag == _RDF + "RDF" else root.find(f".//{_RDF}RDF")
    if rdf is None:
        raise XmpError("it has no rdf:RDF element")
    return Packet(rdf, prefixes)


def merge_extended(main: Packet, extended: bytes) -> None:
    """Fold a JPEG's extended XMP (the properties too large for one segment) into ``main``."""
    more = parse(extended)
    for uri, prefix in more.prefixes.items():
        if uri not in main.prefixes and prefix not in main.prefixes.values():
            main.prefixes[uri] = prefix
    for description in more.descriptions():
        main.rdf.append(description)


def for_output(packet: Packet, *, size: tuple[int, int], mime: str,
               dpi: tuple[float, float] | None) -> None:
    """Bring ``packet`` up to date for an output of ``size`` pixels in format ``mime``."""
    for description in packet.descriptions():
        for tag in list(description.attrib):
            value = _updated(tag, size, mime, dpi)
            if tag in _STALE:
                del description.attrib[tag]
            elif value is not None:
                description.set(tag, value)
        for child in list(description):
            value = _updated(child.tag, size, mime, dpi)
            if child.tag in _STALE:
                description.remove(child)
            elif value is not None and not len(child):
                child.text = value


def _updated(tag: str, size: tuple[int, int], mime: str,
             dpi: tuple[float, float] | None) -> str | None:
    if tag in _WIDTH:
        return str(size[0])
    if tag in _HEIGHT:
        return str(size[1])
    if tag == _FORMAT:
        return mime
    if dpi and tag in (_X_RES, _Y_RES):
        return _rational(dpi[0] if tag == _X_RES else dpi[1])
    if dpi and tag == _RES_UNIT:
        return "2"  # inches
    return None


def _rational(value: float) -> str:
    return f"{round(value)}/1" if abs(value - round(value)) < 1e-6 else f"{round(value * 100)}/100"


# -- IPTC Core from IIM --------------------------------------------------------------------


def _container(kind: str, items: Iterable[str], lang: bool = False) -> ET.Element:
    holder = ET.Element(_RDF + kind)
    for item in items:
        li = ET.SubElement(holder, _RDF + "li")
        if lang:
            li.set(_q("xml", "lang"), "x-default")
        li.text = item
    return holder


def add_iptc_core(packet: Packet, *, keywords: list[str], caption: str | None,
                  creators: list[str], rights: str | None) -> list[str]:
    """Write IIM fields the packet lacks as their IPTC Core (Dublin Core) properties, so
    formats without an IIM block still carry them. Returns the names of those added."""
    added = []
    for name, values, kind, lang in (("subject", keywords, "Bag", False),
                                     ("description", [caption] if caption else [], "Alt", True),
                                     ("creator", creators, "Seq", False),
                                     ("rights", [rights] if rights else [], "Alt", True)):
        tag = _q("dc", name)
        if values and not packet.has(tag):
            prop = ET.Element(tag)
            prop.append(_container(kind, values, lang))
            packet.add(tag, prop)
            added.append(f"dc:{name}")
    return added


# -- serialising ---------------------------------------------------------------------------


def serialize(packet: Packet, *, wrapper: bool = True, rdf: ET.Element | None = None) -> bytes:
    """The packet as UTF-8 XML inside ``x:xmpmeta`` (and the xpacket wrapper)."""
    prefixes = {**{uri: p for p, uri in NS.items()}, **packet.prefixes}
    used: dict[str, str] = {}
    body = _element(packet.rdf if rdf is None else rdf, prefixes, used)
    declarations = "".join(f" xmlns:{p}={quoteattr(uri)}" for uri, p in sorted(
        used.items(), key=lambda kv: kv[1]) if p != "xml")
    text = f'<x:xmpmeta xmlns:x="adobe:ns:meta/"{declarations}>\n{body}\n</x:xmpmeta>'
    if wrapper:
        text = ('<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n' + text
                + '\n<?xpacket end="w"?>')
    return text.encode("utf-8")


def _name(tag: str, prefixes: dict[str, str], used: dict[str, str]) -> str:
    if not tag.startswith("{"):
        return tag
    uri, local = tag[1:].split("}", 1)
    prefix = prefixes.get(uri)
    if prefix is None or (prefix in used.values() and used.get(uri) != prefix):
        prefix = f"ns{len(used) + 1}"
        prefixes[uri] = prefix
    used[uri] = prefix
    return f"{prefix}:{local}"


def _element(elem: ET.Element, prefixes: dict[str, str], used: dict[str, str]) -> str:
    name = _name(elem.tag, prefixes, used)
    attrs = "".join(f" {_name(k, prefixes, used)}={quoteattr(v)}" for k, v in elem.attrib.items())
    inner = escape(elem.text or "") + "".join(
        _element(child, prefixes, used) + escape(child.tail or "") for child in elem)
    return f"<{name}{attrs}>{inner}</{name}>" if inner else f"<{name}{attrs}/>"


def jpeg_segments(packet: Packet) -> list[bytes]:
    """APP1 payloads for a JPEG: the packet, or (if over 64 KB) a standard packet with the
    largest properties moved to extended XMP, split over as many segments as it needs."""
    whole = serialize(packet)
    if len(whole) <= JPEG_MAX_STANDARD:
        return [JPEG_HEADER + whole]
    # Every top-level property (attribute or element), smallest first; the largest move out
    # until the rest fits one segment.
    props: list[tuple[int, str | ET.Element, str]] = []
    for description in packet.descriptions():
        props += [(len(k) + len(v), k, v) for k, v in description.attrib.items()
                  if k != _RDF + "about"]
        props += [(len(ET.tostring(child)), child, "") for child in description]
    props.sort(key=lambda p: p[0])
    moved = 0
    guid = "0" * 32
    while True:
        standard, extended = _split(props[:len(props) - moved], props[len(props) - moved:])
        ext = serialize(packet, rdf=extended, wrapper=False)
        guid = hashlib.md5(ext).hexdigest().upper()
        standard[0].set(_q("xmpNote", "HasExtendedXMP"), guid)
        main = serialize(packet, rdf=standard)
        if len(main) <= JPEG_MAX_STANDARD or moved == len(props):
            break
        moved += 1
    head = JPEG_EXTENSION_HEADER + guid.encode() + len(ext).to_bytes(4, "big")
    return [JPEG_HEADER + main] + [
        head + offset.to_bytes(4, "big") + ext[offset:offset + JPEG_EXTENSION_PART]
        for offset in range(0, len(ext), JPEG_EXTENSION_PART)]


def _split(*groups: list[tuple[int, str | ET.Element, str]]) -> list[ET.Element]:
    """One rdf:RDF per group of properties, each with a single description holding them."""
    out = []
    for group in groups:
        rdf = ET.Element(_RDF + "RDF")
        description = ET.SubElement(rdf, _DESCRIPTION, {_RDF + "about": ""})
        for _, prop, value in group:
            if isinstance(prop, str):
                description.set(prop, value)
            else:
                description.append(prop)
        out.append(rdf)
    return out


def jpeg_extended(app1: Iterable[bytes], guid: str) -> bytes | None:
    """Reassemble the extended XMP with ``guid`` from a JPEG's APP1 payloads."""
    parts: dict[int, bytes] = {}
    total = None
    for payload in app1:
        if not payload.startswith(JPEG_EXTENSION_HEADER):
            continue
        rest = payload[len(JPEG_EXTENSION_HEADER):]
        if rest[:32].decode("latin-1").upper() != guid.upper() or len(rest) < 40:
            continue
        total = int.from_bytes(rest[32:36], "big")
        parts[int.from_bytes(rest[36:40], "big")] = rest[40:]
    if total is None:
        return None
    data = b"".join(parts[k] for k in sorted(parts))
    return data if len(data) == total else None


def extended_guid(packet: Packet) -> str | None:
    """The GUID of the extended XMP a JPEG's main packet points to, if any."""
    tag = _q("xmpNote", "HasExtendedXMP")
    for description in packet.descriptions():
        if tag in description.attrib:
            return description.attrib[tag]
        child = description.find(tag)
        if child is not None and child.text:
            return child.text.strip()
    return None
