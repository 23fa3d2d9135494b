"""A corpus of the odd image files studios and cameras produce, built with Pillow and tifffile.

Every case is (file name, bytes, expected): "ok" files must become outputs that decode at
twice the upright input's size; "fail" files must fail with a plain reason before any money
is spent. The base picture has gradients and edges, so an output whose pixels no longer match
its header (the way a corrupt TIFF goes wrong) cannot look right by accident.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable

import numpy as np
import tifffile
from PIL import Image, ImageCms, ImageDraw

W, H = 120, 80


def picture(size: tuple[int, int] = (W, H)) -> Image.Image:
    """An RGB picture with gradients, edges and a dark corner."""
    w, h = size
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None].repeat(w, 1)
    rgb = np.stack([x, y, 255 - x], axis=2).astype(np.uint8)
    image = Image.fromarray(rgb, "RGB")
    draw = ImageDraw.Draw(image)
    draw.rectangle((w // 4, h // 4, w // 2, h // 2), fill=(250, 250, 40))
    draw.rectangle((0, 0, w // 8, h // 8), fill=(0, 0, 0))
    return image


def _save(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def _tiff(array: np.ndarray, **params) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, **params)
    return buffer.getvalue()


def _exif_block(entries: list[tuple[int, int, int, bytes]], extra: bytes = b"") -> bytes:
    """Raw big-endian EXIF: IFD0 with ``entries`` (tag, type, count, 4-byte value or data
    placed after the IFD), so malformed values can be written on purpose."""
    count = len(entries)
    ifd_size = 2 + 12 * count + 4
    data_offset = 8 + ifd_size
    body, tail = b"", b""
    for tag, kind, n, value in entries:
        if len(value) <= 4:
            body += struct.pack(">HHI", tag, kind, n) + value.ljust(4, b"\0")
        else:
            body += struct.pack(">HHII", tag, kind, n, data_offset + len(tail))
            tail += value
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8) + struct.pack(">H", count) + body \
        + b"\0\0\0\0" + tail + extra
    return b"Exif\x00\x00" + tiff


def malformed_exif() -> bytes:
    """XResolution (a RATIONAL) written as text, and a broken rational denominator: the
    kind of EXIF cameras and editors write that makes naive re-encoding crash."""
    return _exif_block([
        (0x010F, 2, 6, b"Canon\0"),
        (0x011A, 2, 3, b"72\0"),  # XResolution as ASCII: Pillow reads a str
        (0x0112, 3, 1, struct.pack(">H", 1)),
        (0x8298, 2, 10, b"(c) Studio"),
    ])


def oversized_exif() -> bytes:
    """EXIF close to the 64 KiB a JPEG segment holds, mostly a maker note."""
    exif = Image.Exif()
    exif[0x010F] = "Nikon"
    exif[0x8769] = {0x927C: b"\x01" * 60_000, 0x9003: "2026:11:24 10:10:10"}
    return exif.tobytes()


def corpus() -> list[tuple[str, bytes, str]]:
    """(file name, content, "ok" | "fail") for every kind of odd file."""
    rgb = picture()
    arr = np.asarray(rgb)
    grey = rgb.convert("L")
    grey_arr = np.asarray(grey)
    deep = (grey_arr.astype(np.uint16) * 257)
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    cases: list[tuple[str, Callable[[], bytes], str]] = [
        ("rgb-lzw.tif", lambda: _save(rgb, "TIFF", compression="tiff_lzw"), "ok"),
        ("grey-8.tif", lambda: _save(grey, "TIFF"), "ok"),
        ("grey-16.tif", lambda: _tiff(deep), "ok"),
        ("fax-g4.tif", lambda: _save(grey.convert("1"), "TIFF", compression="group4"), "ok"),
        ("fax-g3.tif", lambda: _save(grey.convert("1"), "TIFF", compression="group3"), "ok"),
        ("grey-2bit.png", lambda: _save(grey.quantize(4).convert("L"), "PNG", bits=2), "ok"),
        ("grey-4bit.png", lambda: _save(grey, "PNG", bits=4), "ok"),
        ("palette.png", lambda: _save(rgb.quantize(64), "PNG"), "ok"),
        ("palette-tiff.tif", lambda: _save(rgb.quantize(64), "TIFF"), "ok"),
        ("palette-alpha.png", lambda: _save(rgb.quantize(16), "PNG", transparency=0), "ok"),
        ("lab.tif", lambda: _save(_lab(rgb), "TIFF"), "ok"),
        ("cmyk.jpg", lambda: _save(rgb.convert("CMYK"), "JPEG"), "ok"),
        ("cmyk-8.tif", lambda: _save(rgb.convert("CMYK"), "TIFF"), "ok"),
        ("cmyk-16.tif", lambda: _tiff(np.asarray(rgb.convert("CMYK")).astype(np.uint16) * 257,
                                      photometric="separated"), "ok"),
        ("rgb-16.tif", lambda: _tiff(arr.astype(np.uint16) * 257, photometric="rgb"), "ok"),
        ("rgba-16.tif", lambda: _tiff(np.dstack([arr, np.full((H, W), 255, np.uint8)])
                                      .astype(np.uint16) * 257, photometric="rgb",
                                      extrasamples=["unassalpha"]), "ok"),
        # Big-endian 16-bit (Pillow's I;16B), as some scanners and Mac software write them.
        ("grey-16-be.tif", lambda: _tiff(deep, byteorder=">"), "ok"),
        ("rgb-16-be.tif", lambda: _tiff(arr.astype(np.uint16) * 257, photometric="rgb",
                                        byteorder=">"), "ok"),
        ("rgba-16-be.tif", lambda: _tiff(np.dstack([arr, np.full((H, W), 255, np.uint8)])
                                         .astype(np.uint16) * 257, photometric="rgb",
                                         extrasamples=["unassalpha"], byteorder=">"), "ok"),
        ("int32.tif", lambda: _save(grey.convert("I"), "TIFF"), "ok"),
        ("float32.tif", lambda: _tiff(grey_arr.astype(np.float32) / 255), "ok"),
        ("planar-8.tif", lambda: _tiff(arr.transpose(2, 0, 1).copy(), photometric="rgb",
                                       planarconfig="separate"), "ok"),
        ("planar-16.tif", lambda: _tiff((arr.astype(np.uint16) * 257).transpose(2, 0, 1).copy(),
                                        photometric="rgb", planarconfig="separate"), "ok"),
        ("planar-tiled.tif", lambda: _tiff(arr.transpose(2, 0, 1).copy(), photometric="rgb",
                                           planarconfig="separate", tile=(16, 16)), "ok"),
        ("tiled.tif", lambda: _tiff(arr, photometric="rgb", tile=(16, 16)), "ok"),
        ("multipage.tif", lambda: _multipage(rgb), "ok"),
        ("bad-exif.jpg", lambda: _save(rgb, "JPEG", exif=malformed_exif()), "ok"),
        ("big-exif.jpg", lambda: _save(rgb, "JPEG", exif=oversized_exif()), "ok"),
        ("bad-icc.jpg", lambda: _save(rgb, "JPEG", icc_profile=b"\0" * 128), "ok"),
        ("srgb-icc.png", lambda: _save(rgb, "PNG", icc_profile=srgb), "ok"),
        ("zero-tail.jpg", lambda: _save(rgb, "JPEG") + b"\0" * 4096, "ok"),
        ("truncated.jpg", lambda: _noisy_jpeg()[: len(_noisy_jpeg()) // 2], "fail"),
        ("truncated.png", lambda: _save(_noise(), "PNG")[:3000], "fail"),
        ("zero-padded.jpg", lambda: _zero_padded(_noisy_jpeg()), "fail"),
    ]
    return [(name, make(), expected) for name, make, expected in cases]


def _lab(rgb: Image.Image) -> Image.Image:
    transform = ImageCms.buildTransform(ImageCms.createProfile("sRGB"),
                                        ImageCms.createProfile("LAB"), "RGB", "LAB")
    return ImageCms.applyTransform(rgb, transform)


def _multipage(rgb: Image.Image) -> bytes:
    buffer = io.BytesIO()
    rgb.save(buffer, "TIFF", save_all=True, append_images=[rgb.rotate(180), rgb.convert("L")])
    return buffer.getvalue()


def _noise() -> Image.Image:
    return Image.frombytes("RGB", (W, H), np.random.default_rng(7).integers(
        0, 255, (H, W, 3), dtype=np.uint8).tobytes())


def _noisy_jpeg() -> bytes:
    return _save(_noise(), "JPEG", quality=95)


def _zero_padded(data: bytes) -> bytes:
    """The file at its final size with only the first half written (the rest zeros)."""
    half = len(data) // 2
    return data[:half] + b"\0" * (len(data) - half)
