"""XMP, IPTC and print resolution at the edges: extended XMP over 64 KB, hostile packets,
Photoshop resources that do or do not still apply, the ``dpi`` setting. Outputs are read
with Pillow and the test's own XMP parse (tests/photometa.py)."""

from __future__ import annotations

import hashlib
import io
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import cli, write_config
from photometa import (
    CAPTION,
    DC,
    KEYWORDS,
    PHOTOSHOP,
    XMP,
    drop,
    exported,
    iim,
    photoshop_app13,
    picture,
    xmp_packet,
    xmp_properties,
)
from photometa import dpi as stated_dpi
from PIL import Image, IptcImagePlugin

from crystal_watchd import config as config_mod
from crystal_watchd.config import FolderConfig
from crystal_watchd.errors import ConfigError
from crystal_watchd.images import preflight, render
from crystal_watchd.images.result import ResultImage

SIZE = (64, 48)


def folder(tmp_path: Path, **kw) -> FolderConfig:
    return FolderConfig(name="f", inbox=tmp_path / "in", outbox=tmp_path / "out",
                        done_dir=tmp_path / "in/done", failed_dir=tmp_path / "in/failed", **kw)


def upscaled(data: bytes, fmt: str, tmp_path: Path, *, through: str | None = None,
             dpi=None) -> Image.Image:
    """``data`` inspected as the daemon does, doubled, and written as ``fmt``: re-encoded
    from pixels, or (``through`` = the result's format) spliced into a result file as fal's
    bytes are. Returns the output, opened."""
    source = preflight.inspect(data, folder(tmp_path))
    bigger = source.image.resize((source.width * 2, source.height * 2))
    target = render.Target(fmt=fmt, meta=source.meta, dpi=dpi)
    if through:
        result_path = tmp_path / f"result.{through.lower()}"
        bigger.save(result_path, through)
        result = ResultImage(path=result_path)
    else:
        result = ResultImage(image=bigger)
    written = render.write(result, target, tmp_path / "out" / f"x.{fmt.lower()}", fmt)
    out = Image.open(written.tmp)
    out.load()
    return out


def _extended_jpeg(history: str) -> bytes:
    """A JPEG whose XMP is split as Photoshop splits a large packet: the keywords in the
    main packet, the long edit history in extended XMP under the MD5 of its bytes."""
    extended = (f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/'
                f'1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" xmlns:photoshop='
                f'"{PHOTOSHOP}"><photoshop:History>{history}</photoshop:History>'
                f'</rdf:Description></rdf:RDF></x:xmpmeta>').encode()
    guid = hashlib.md5(extended).hexdigest().upper()
    main = xmp_packet(*SIZE).replace(
        b'xmp:Rating="5"', f'xmp:Rating="5" xmlns:xmpNote="http://ns.adobe.com/xmp/note/" '
                           f'xmpNote:HasExtendedXMP="{guid}"'.encode()).replace(
        b"<photoshop:History></photoshop:History>", b"")
    segments = b""
    for offset in range(0, len(extended), 60_000):
        payload = (b"http://ns.adobe.com/xmp/extension/\x00" + guid.encode()
                   + struct.pack(">II", len(extended), offset) + extended[offset:offset + 60_000])
        segments += b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    buffer = io.BytesIO()
    picture(SIZE).save(buffer, "JPEG", xmp=main, extra=segments)
    return buffer.getvalue()


@pytest.mark.parametrize("through", [None, "JPEG"])
def test_xmp_over_64kb_travels_as_extended_xmp(tmp_path, through):
    """A JPEG whose XMP (a 150 KB edit history) is too large for one segment is read whole,
    standard and extended parts together, and written back the same way: a main packet of at
    most 65504 bytes pointing to extended parts whose GUID is the MD5 of their bytes, with
    every property kept; re-encoded and passed through alike."""
    history = "cropped; " * 17_000
    out = upscaled(_extended_jpeg(history), "JPEG", tmp_path, through=through)
    main = [p for m, p in out.applist if m == "APP1"
            and p.startswith(b"http://ns.adobe.com/xap/1.0/\x00")]
    assert len(main) == 1 and len(main[0]) - 29 <= 65_504
    props = xmp_properties(out)  # checks each extended GUID against the MD5 of its bytes
    assert props[f"{{{PHOTOSHOP}}}History"] == history.strip()
    assert props[f"{{{DC}}}subject"] == KEYWORDS and props[f"{{{XMP}}}Rating"] == "5"


HOSTILE = {
    "entity expansion": b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa">'
                        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
                        b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>'
                        b'<x:xmpmeta xmlns:x="adobe:ns:meta/">&c;</x:xmpmeta>',
    "external entity": b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM '
                       b'"file:///etc/passwd">]><x:xmpmeta xmlns:x="adobe:ns:meta/">&e;'
                       b'</x:xmpmeta>',
    "not XML": b"<x:xmpmeta xmlns:x='adobe:ns:meta/'><rdf:RDF>",
}


@pytest.mark.parametrize("kind", HOSTILE)
def test_a_hostile_or_broken_packet_is_dropped_with_a_reason(tmp_path, kind):
    """A packet with a DTD (entity expansion, an external entity) or that is not XML is left
    out with a reason naming XMP; the picture still goes through, carrying no XMP and none
    of the entity's content."""
    buffer = io.BytesIO()
    picture(SIZE).save(buffer, "PNG", pnginfo=_itxt(HOSTILE[kind]))
    source = preflight.inspect(buffer.getvalue(), folder(tmp_path))
    assert any(reason.startswith("XMP") for reason in source.meta.dropped), source.meta.dropped
    out = upscaled(buffer.getvalue(), "PNG", tmp_path)
    assert "xmp" not in out.info and "XML:com.adobe.xmp" not in out.info
    assert b"root:" not in Path(out.filename).read_bytes()


def _itxt(packet: bytes):
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add(b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + packet)
    return info


@pytest.mark.parametrize("through", [None, "JPEG"])
def test_photoshop_resources_that_still_apply_travel_and_thumbnails_do_not(tmp_path,
                                                                           through):
    """Of a JPEG's Photoshop resources, the IPTC record travels; the old thumbnail does not;
    the resolution resource states the output's resolution (here a fixed 240 dpi, the same
    as JFIF and EXIF)."""
    thumb = io.BytesIO()
    picture((16, 12)).save(thumb, "JPEG")
    buffer = io.BytesIO()
    picture(SIZE).save(buffer, "JPEG", dpi=(300, 300), extra=photoshop_app13(thumb.getvalue()))
    out = upscaled(buffer.getvalue(), "JPEG", tmp_path, through=through, dpi=(240.0, 240.0))
    resources = out.info["photoshop"]
    assert 0x0404 in resources and 0x040C not in resources
    resolution = resources[0x03ED]
    assert (resolution["XResolution"], resolution["YResolution"]) == (240, 240)
    assert stated_dpi(out) == {"jfif": (240.0, 240.0), "exif": (240.0, 240.0)}
    assert IptcImagePlugin.getiptcinfo(out)[(2, 120)] == CAPTION.encode()


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "TIFF"])
def test_a_source_without_a_resolution_gets_none_unless_a_number_is_set(tmp_path, fmt):
    """``dpi: keep`` with a source that states no resolution writes none (no invented 72);
    a fixed number is written in the format's own place."""
    buffer = io.BytesIO()
    picture(SIZE).save(buffer, "PNG")
    plain = upscaled(buffer.getvalue(), fmt, tmp_path)
    assert stated_dpi(plain) == {}
    fixed = upscaled(buffer.getvalue(), fmt, tmp_path, dpi=(240.0, 240.0))
    for value in stated_dpi(fixed).values():
        assert value == pytest.approx((240, 240), abs=0.01)
    assert stated_dpi(fixed)


def test_dpi_setting_is_checked_and_shown_by_check(tmp_path):
    """``dpi`` takes keep, scale or a number; anything else is an error naming file, line and
    key; ``check`` shows the effective value of every folder."""
    text = ("backend: local\nfolders:\n  - inbox: a\n    outbox: oa\n    dpi: scale\n"
            "  - inbox: b\n    outbox: ob\n    dpi: 240\n  - inbox: c\n    outbox: oc\n")
    parsed = config_mod.parse(text, tmp_path / "c.yaml")
    assert [f.dpi for f in parsed.folders] == ["scale", 240.0, "keep"]
    with pytest.raises(ConfigError) as info:
        config_mod.parse(text.replace("dpi: 240", "dpi: high"), tmp_path / "c.yaml")
    assert [str(p) for p in info.value.problems] == [
        f"{tmp_path / 'c.yaml'}:8: folders[1].dpi: must be keep, scale or a number of pixels "
        "per inch, not 'high'"]
    config = write_config(tmp_path, [{"inbox": "in", "outbox": "out", "dpi": "scale"}])
    result = cli("check", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert '"dpi": "scale"' in result.stdout


def test_a_hostile_packet_never_fails_the_job(tmp_path, daemons):
    """Through the real daemon: a PNG with an entity-expansion packet is upscaled, and the
    log says the XMP was dropped and why."""
    config = write_config(tmp_path, [{"inbox": "in", "outbox": "out"}], backend="local")
    d = daemons(config).ready()
    buffer = io.BytesIO()
    picture(SIZE).save(buffer, "PNG", pnginfo=_itxt(HOSTILE["entity expansion"]))
    drop(tmp_path / "in/evil.png", buffer.getvalue())
    d.wait_event("job_done")
    (warning,) = d.named("metadata_dropped")
    assert any("XMP" in reason and "DTD" in reason for reason in warning["dropped"])
    with Image.open(tmp_path / "out/evil_x2.png") as im:
        assert im.size == (128, 96)


@pytest.mark.parametrize("byteorder", ["<", ">"])
def test_iptc_typed_long_in_a_tiff_travels_whole(tmp_path, byteorder):
    """Photoshop types a TIFF's IPTC block (tag 33723) as LONG; all of it reaches the
    output, in either byte order, not just the first four bytes."""
    data = iim() + b"\0" * (-len(iim()) % 4)
    values = struct.unpack(f"{byteorder}{len(data) // 4}I", data)
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.asarray(picture(SIZE)), photometric="rgb", byteorder=byteorder,
                     extratags=[(33723, "I", len(values), values, True)])
    with warnings.catch_warnings():  # Pillow notes that the tag has more than one value
        warnings.simplefilter("ignore")
        out = upscaled(buffer.getvalue(), "TIFF", tmp_path)
    info = IptcImagePlugin.getiptcinfo(out)
    assert info[(2, 25)] == [k.encode() for k in KEYWORDS] and info[(2, 120)] == CAPTION.encode()


def test_reading_every_export_keeps_its_metadata(tmp_path):
    """Reading: each Lightroom-style export yields its XMP, its IPTC where the format has
    it, and 300 dpi; nothing is reported dropped."""
    for fmt in ("JPEG", "PNG", "TIFF", "WEBP"):
        meta = preflight.inspect(exported(fmt, SIZE), folder(tmp_path)).meta
        assert meta.xmp and meta.dropped == (), fmt
        assert (meta.iim is not None) == (fmt in ("JPEG", "TIFF")), fmt
        assert meta.dpi == pytest.approx((300, 300)), fmt
