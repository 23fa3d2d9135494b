"""A photographer's metadata survives the upscale, through the real daemon on both backends:
XMP (keywords, rating, credit), IPTC, EXIF, the ICC profile and the print resolution, with
nothing left that describes the old file. Outputs are read with Pillow and a small XMP parse
of the test's own (tests/photometa.py), never with the code under test."""

from __future__ import annotations

import pytest
from conftest import fal_env, write_config
from photometa import (
    ARTIST,
    CAPTION,
    COPYRIGHT,
    CREDIT,
    CRS,
    DC,
    EXIF,
    KEYWORDS,
    PHOTOSHOP,
    TIFF,
    XMP,
    drop,
    exported,
    srgb,
    xmp_properties,
)
from photometa import dpi as stated_dpi
from photometa import iptc as iptc_of
from PIL import Image

SIZE = (64, 48)
EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "TIFF": "tif", "WEBP": "webp"}


def _run(tmp_path, backend, fakefal, fal_daemons, daemons, tls_files, folders, files):
    """Start the daemon on ``folders``, drop ``files`` ({relative path: bytes}) and wait
    until every one is done."""
    top = {"backend": backend}
    env = None
    if backend == "fal":
        server = fakefal(latency=0.05)
        top["fal"] = {"timeout": 60}
        env = fal_env(server, tls_files)
    config = write_config(tmp_path, folders, **top)
    d = (fal_daemons(config, env) if env else daemons(config)).ready()
    for rel, data in files.items():
        drop(tmp_path / rel, data)
    d.wait_event("job_done", len(files), timeout=60)
    assert not d.named("job_failed"), d.text()[-3000:]
    return d


@pytest.mark.parametrize("backend", ["local", "fal"])
def test_xmp_iptc_icc_and_print_resolution_survive_in_every_format(
        tmp_path, backend, fakefal, fal_daemons, daemons, tls_files):
    """JPEG, PNG, TIFF and WebP exports with EXIF, XMP, IPTC, ICC and 300 dpi come out at ×2
    with the XMP keywords, rating, credit, caption and Camera Raw settings; the XMP's pixel
    size is the output's (or gone), its orientation and old format gone; IPTC keywords and
    caption in JPEG and TIFF; the sRGB profile; the EXIF artist; and 300 dpi with ``dpi:
    keep`` or 600 dpi with ``dpi: scale``, the same in every place the format states it."""
    folders = [{"name": "keep", "inbox": "in/keep", "outbox": "out/keep"},
               {"name": "scale", "inbox": "in/scale", "outbox": "out/scale", "dpi": "scale"}]
    files = {f"in/{policy}/shot.{ext}": exported(fmt, SIZE)
             for policy in ("keep", "scale") for fmt, ext in EXTENSIONS.items()}
    _run(tmp_path, backend, fakefal, fal_daemons, daemons, tls_files, folders, files)
    for policy, expected_dpi in (("keep", 300), ("scale", 600)):
        for fmt, ext in EXTENSIONS.items():
            where = f"{policy}/{ext}"
            with Image.open(tmp_path / f"out/{policy}/shot_x2.{ext}") as im:
                assert im.format == fmt and im.size == (128, 96), where
                props = xmp_properties(im)
                assert props.get(f"{{{DC}}}subject") == KEYWORDS, where
                assert props.get(f"{{{XMP}}}Rating") == "5", where
                assert props.get(f"{{{PHOTOSHOP}}}Credit") == CREDIT, where
                assert props.get(f"{{{DC}}}description") == [CAPTION], where
                assert props.get(f"{{{CRS}}}Exposure2012") == "+0.50", where
                for key, value in ((f"{{{EXIF}}}PixelXDimension", "128"),
                                   (f"{{{EXIF}}}PixelYDimension", "96"),
                                   (f"{{{TIFF}}}ImageWidth", "128"),
                                   (f"{{{TIFF}}}ImageLength", "96")):
                    assert props.get(key, value) == value, (where, key, props.get(key))
                assert f"{{{TIFF}}}Orientation" not in props, where
                assert props.get(f"{{{DC}}}format", "") != "image/x-original", where
                if fmt in ("JPEG", "TIFF"):
                    iptc = iptc_of(im)
                    assert iptc[(2, 25)] == [k.encode() for k in KEYWORDS], where
                    assert iptc[(2, 120)] == CAPTION.encode(), where
                assert im.info.get("icc_profile") == srgb(), where
                exif = im.getexif()
                assert exif.get(0x013B) == ARTIST and exif.get(0x8298) == COPYRIGHT, where
                stated = stated_dpi(im)
                assert stated, where
                for place, value in stated.items():
                    assert value == pytest.approx((expected_dpi, expected_dpi), abs=0.01), \
                        (where, place, value)
                if fmt == "JPEG":
                    assert set(stated) == {"jfif", "exif"}, where


@pytest.mark.parametrize("backend", ["local", "fal"])
def test_iptc_without_xmp_reaches_png_and_webp_as_xmp(tmp_path, backend, fakefal,
                                                       fal_daemons, daemons, tls_files):
    """A JPEG with IPTC-IIM but no XMP, written as PNG (fal's PNG passes through) and as WebP
    (re-encoded): keywords, caption, creator and copyright arrive in a new XMP packet."""
    folders = [{"name": "png", "inbox": "in/p", "outbox": "out/p", "output_format": "png"},
               {"name": "webp", "inbox": "in/w", "outbox": "out/w", "output_format": "webp"}]
    source = exported("JPEG", SIZE, with_xmp=False)
    _run(tmp_path, backend, fakefal, fal_daemons, daemons, tls_files, folders,
         {"in/p/tagged.jpg": source, "in/w/tagged.jpg": source})
    for path in (tmp_path / "out/p/tagged_x2.png", tmp_path / "out/w/tagged_x2.webp"):
        with Image.open(path) as im:
            props = xmp_properties(im)
            assert props.get(f"{{{DC}}}subject") == KEYWORDS, path
            assert props.get(f"{{{DC}}}description") == [CAPTION], path
            assert props.get(f"{{{DC}}}creator") == [ARTIST], path
            assert props.get(f"{{{DC}}}rights") == [COPYRIGHT], path
