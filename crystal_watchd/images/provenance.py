"""Where an output came from, written into the output itself (its XMP), and read back.

Every output carries, in the project's own XMP namespace (``NS_URI``, prefix ``cwd``): the
source's sha256, the settings that made it (and their journal key), the request id at the
upscaler, the model or backend, the estimated cost and the software's version. A
photographer can see which model and settings made a file; and when the journal is lost,
the outbox itself says what was already done, so nothing is paid for again
(``OutboxIndex``).

Only headers are read back: Pillow's ``open`` parses the container's metadata blocks
without decoding a pixel.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from pathlib import Path

from PIL import Image

from . import xmp

#: The project's XMP namespace: stable, documented in docs/journal-recovery.md. ``.invalid``
#: is reserved (RFC 2606): the URI names the namespace and is never fetched.
NS_URI = "https://crystal-watchd.invalid/ns/1.0/"
PREFIX = "cwd"
xmp.NS.setdefault(PREFIX, NS_URI)

_RDF = "{{{}}}".format(xmp.NS["rdf"])
#: Extensions of files an outbox index looks into.
_IMAGES = {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff"}


@dataclass(frozen=True)
class Provenance:
    """What made one output. Field names are the XMP property names (``cwd:SourceSha256``…)."""

    SourceSha256: str
    SettingsKey: str
    Backend: str
    Model: str
    Scale: str
    Creativity: str
    #: The source's path in its inbox (with copies of one picture, which output is whose).
    Source: str = ""
    RequestId: str = ""
    EstimatedCostUsd: str = ""
    Software: str = ""


def _tag(name: str) -> str:
    return f"{{{NS_URI}}}{name}"


def add(packet: xmp.Packet, provenance: Provenance) -> None:
    """Put ``provenance`` into ``packet`` in a description of its own, replacing any the
    packet carried already (a source that is itself an output of ours)."""
    for description in packet.descriptions():
        for key in [k for k in description.attrib if k.startswith(f"{{{NS_URI}}}")]:
            del description.attrib[key]
        for child in [c for c in description if c.tag.startswith(f"{{{NS_URI}}}")]:
            description.remove(child)
    attrs = {_RDF + "about": ""}
    attrs.update({_tag(f.name): str(getattr(provenance, f.name)) for f in fields(provenance)})
    ET.SubElement(packet.rdf, _RDF + "Description", attrs)
    packet.prefixes.setdefault(NS_URI, PREFIX)


def from_packet(data: bytes) -> Provenance | None:
    """The provenance a serialized packet carries, or None."""
    try:
        packet = xmp.parse(data)
    except xmp.XmpError:
        return None
    values = {}
    for description in packet.descriptions():
        for f in fields(Provenance):
            value = description.get(_tag(f.name))
            if value is None:
                child = description.find(_tag(f.name))
                value = child.text if child is not None else None
            if value is not None:
                values[f.name] = value
    try:
        return Provenance(**values)
    except TypeError:  # not ours, or missing what identifies the work
        return None


def read(path: Path) -> Provenance | None:
    """The provenance in an image file's XMP, read from its header only; None if it has
    none or is not an image Pillow knows."""
    try:
        with Image.open(path) as image:
            data = image.info.get("xmp") or image.info.get("XML:com.adobe.xmp")
            if data is None and hasattr(image, "tag_v2"):
                data = image.tag_v2.get(700)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    if isinstance(data, str):
        data = data.encode("utf-8")
    return from_packet(data) if isinstance(data, bytes | bytearray) else None


def _images_under(outbox: Path) -> Iterable[Path]:
    for root, dirs, files in os.walk(outbox):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in _IMAGES:
                yield Path(root) / name


class OutboxIndex:
    """The outputs an outbox already holds, by (source sha256, settings key): built once per
    start and folder, on the first question about a file the journal does not know."""

    def __init__(self) -> None:
        self._by_outbox: dict[Path, dict[tuple[str, str], list[tuple[Provenance, Path]]]] = {}

    def build(self, outbox: Path) -> dict[tuple[str, str], list[tuple[Provenance, Path]]]:
        """Read every output's header once (run it on a thread: it touches the disk)."""
        found = self._by_outbox.get(outbox)
        if found is None:
            found = {}
            for path in sorted(_images_under(outbox)) if outbox.is_dir() else []:
                made = read(path)
                if made is not None:
                    key = (made.SourceSha256, made.SettingsKey)
                    found.setdefault(key, []).append((made, path))
            self._by_outbox[outbox] = found
        return found

    def find(self, outbox: Path, sha256: str, settings_key: str, source: str,
             named: Callable[[Provenance, Path], bool]) -> list[Path]:
        """The outputs in ``outbox`` of this content and these settings that are this
        file's: their provenance names it (``source``, its path in the inbox), or they have
        the name its output gets (``named``: a copy of an identical picture's output carries
        that picture's provenance). Only those still there."""
        return [p for made, p in self.build(outbox).get((sha256, settings_key), [])
                if (made.Source == source_text(source) or named(made, p)) and p.exists()]


def source_text(rel: str) -> str:
    """A source's path as XMP can hold it (a name that is not UTF-8 is kept readable)."""
    return os.fsencode(rel).decode("utf-8", "replace")
