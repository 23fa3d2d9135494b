"""Preflight checks and output writing: names, formats, metadata, atomic placement."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image, ImageCms

from crystal_watchd.config import FolderConfig
from crystal_watchd.errors import PermanentJobError
from crystal_watchd.images import output, preflight, render
from crystal_watchd.images.result import ResultImage


def folder(tmp_path: Path, **kw) -> FolderConfig:
    return FolderConfig(name="f", inbox=tmp_path / "in", outbox=tmp_path / "out",
                        done_dir=tmp_path / "in/done", failed_dir=tmp_path / "in/failed", **kw)


def encoded(image: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **params)
    return buf.getvalue()


def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def rendered(source: preflight.SourceImage, fmt: str, tmp_path: Path) -> Image.Image:
    """The source's pixels written as ``fmt`` through render.write, opened again."""
    target = render.Target(fmt=fmt, meta=source.meta, grey=source.grey)
    written = render.write(ResultImage(image=source.image), target, tmp_path / "o" / "x", "t")
    out = Image.open(written.tmp)
    out.load()
    return out


def png_bomb(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares a huge size."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        checksum = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + checksum
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) \
        + chunk(b"IEND", b"")


def test_scale_renders_without_trailing_zero_and_subfolders_mirror(tmp_path):
    """{scale} reads 2 not 2.0; a recursive input's subfolder is mirrored in the outbox."""
    f = folder(tmp_path, filename="{stem}_x{scale}_c{creativity}.{ext}", creativity=2.5)
    assert output.render_name(f, "a/b/face.jpeg", scale=2.0, ext="jpeg") == \
        tmp_path / "out/a/b/face_x2_c2.5.jpeg"
    assert output.render_name(f, "x.png", scale=1.25, ext="png", index=1) == \
        tmp_path / "out/x_x1.25_c2.5_2.png"


def test_template_cannot_escape_the_outbox(tmp_path):
    """A name that would leave the outbox is refused as a permanent error."""
    f = folder(tmp_path, filename="{name}")
    with pytest.raises(PermanentJobError):
        output.render_name(f, "a/..", scale=2, ext="png")


def test_ext_follows_output_format(tmp_path):
    """{ext} is the input's own extension for ``same``, else png/jpg/webp."""
    same, jpeg = folder(tmp_path), folder(tmp_path, output_format="jpeg")
    assert output.output_ext(same, Path("a.JPEG"), "JPEG") == "JPEG"
    assert output.output_ext(jpeg, Path("a.png"), "PNG") == "jpg"
    assert output.output_ext(same, Path("a.gif"), "GIF") == "png"


def test_icc_and_exif_carried_over_with_orientation_reset(tmp_path):
    """A rotated JPEG comes out upright, with its ICC profile and EXIF (orientation 1)."""
    image = Image.new("RGB", (40, 20), "green")
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    exif[0x010F] = "StudioCam"
    icc = srgb_icc()
    data = encoded(image, "JPEG", exif=exif.tobytes(), icc_profile=icc)
    source = preflight.inspect(data, folder(tmp_path))
    assert source.reoriented and (source.width, source.height) == (20, 40)
    out = rendered(source, "JPEG", tmp_path)
    assert out.info.get("icc_profile") == icc
    assert out.getexif()[0x0112] == 1 and out.getexif()[0x010F] == "StudioCam"


def test_alpha_kept_in_png_and_flattened_for_jpeg(tmp_path):
    """An alpha PNG keeps alpha as PNG; as JPEG it is flattened onto white."""
    image = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    source = preflight.inspect(encoded(image, "PNG"), folder(tmp_path))
    png = rendered(source, "PNG", tmp_path)
    assert png.mode == "RGBA" and png.getpixel((0, 0))[3] == 0
    jpeg_folder = folder(tmp_path, output_format="jpeg")
    flat = preflight.inspect(encoded(image, "PNG"), jpeg_folder)
    jpg = rendered(flat, "JPEG", tmp_path)
    assert jpg.mode == "RGB" and jpg.getpixel((0, 0)) == (255, 255, 255)


@pytest.mark.parametrize("data, kind", [
    (b"", "empty_file"),
    (b"hello, not an image", "not_an_image"),
    (png_bomb(100_000, 100_000), "input_too_large"),
    (encoded(Image.new("RGB", (1, 5)), "PNG"), "too_small"),
])
def test_bad_inputs_get_specific_reasons(tmp_path, data, kind):
    """Empty, non-image, decompression bomb and 1-pixel-wide inputs fail before any work."""
    with pytest.raises(PermanentJobError) as info:
        preflight.inspect(data, folder(tmp_path))
    assert info.value.kind == kind
    assert info.value.reason


def test_truncated_pixel_data_is_reported(tmp_path):
    """A PNG cut off in its pixel data is refused as damaged."""
    noisy = Image.frombytes("RGB", (100, 100), bytes(range(256)) * 117 + bytes(48))
    data = encoded(noisy, "PNG")
    with pytest.raises(PermanentJobError) as info:
        preflight.inspect(data[: len(data) * 2 // 3], folder(tmp_path))
    assert info.value.kind == "corrupt_image"


def test_sixteen_bit_and_cmyk_become_8_bit(tmp_path):
    """16-bit greyscale and CMYK TIFFs decode into modes every output format can take."""
    grey16 = Image.new("I;16", (8, 8), 65535)
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))
    g = preflight.inspect(encoded(grey16, "TIFF"), folder(tmp_path))
    c = preflight.inspect(encoded(cmyk, "TIFF"), folder(tmp_path))
    assert g.image.mode == "L" and g.image.getpixel((0, 0)) == 255
    assert c.image.mode == "RGB"


def test_oversize_fails_naming_the_largest_scale_or_reduces(tmp_path):
    """Output over 100 MP fails with the largest fitting scale named, or uses it on reduce."""
    with pytest.raises(PermanentJobError) as info:
        preflight.plan(4000, 3000, 4, folder(tmp_path))
    assert "largest scale that fits is ×2.88" in info.value.reason
    reduced = preflight.plan(4000, 3000, 4, folder(tmp_path, oversize="reduce"))
    assert reduced.reduced and reduced.scale == 2.88
    assert reduced.width * reduced.height <= 100e6
    side = preflight.plan(30000, 10, 4, folder(tmp_path, oversize="reduce"))
    assert side.width <= 65535 and side.scale == 2.18


def test_place_never_clobbers_and_is_idempotent(tmp_path):
    """place() refuses a taken name, and finishing an interrupted placement is a no-op."""
    final = tmp_path / "out.png"
    final.write_bytes(b"someone else's")
    tmp = output.write_temp(final, b"ours", "1")
    assert output.place(tmp, final, overwrite=False) is None
    assert final.read_bytes() == b"someone else's"
    other = output.choose_name(final, overwrite=False)
    assert other.name == "out-1.png"
    assert output.place(tmp, other, overwrite=False) == other
    assert other.read_bytes() == b"ours" and not tmp.exists()
    assert output.place(tmp, other, overwrite=False) == other  # a crash-resume repeat
