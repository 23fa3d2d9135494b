"""Phone photos: real HEIC (pillow-heif) and AVIF (Pillow) files, made here, go through the
real daemon and come out upright, as JPEG with ``output_format: same``, with ICC and EXIF."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from conftest import cli, fal_env, images_in, write_config
from PIL import Image, ImageCms, features

pillow_heif = pytest.importorskip("pillow_heif", reason="pip install pillow-heif")
pillow_heif.register_heif_opener()
ORIENTATION, MAKE = 0x0112, 0x010F
BLUE, RED = (0, 0, 255), (255, 0, 0)


def phone_photo(path: Path, fmt: str, *, orientation: int = 1) -> Path:
    """A 48×24 red picture with a blue block at its top left, as stored; with orientation 6
    a viewer turns it a quarter clockwise, so upright it is 24×48 with the block top right."""
    image = Image.new("RGB", (48, 24), RED)
    image.paste(BLUE, (0, 0, 12, 8))
    exif = Image.Exif()
    exif[MAKE] = "PhoneMaker"
    exif[ORIENTATION] = orientation
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".tmp-" + path.name)
    image.save(tmp, fmt, exif=exif.tobytes(), icc_profile=icc, quality=95)
    os.replace(tmp, path)
    return path


def _close(pixel, colour) -> bool:
    return all(abs(a - b) < 60 for a, b in zip(pixel, colour, strict=True))


def assert_upright_jpeg(path: Path, size: tuple[int, int], block_top_right: bool) -> None:
    with Image.open(path) as im:
        assert im.format == "JPEG" and im.size == size
        rgb = im.convert("RGB")
        w, h = im.size
        corner_right, corner_left = rgb.getpixel((w - 2, 1)), rgb.getpixel((1, 1))
        assert _close(corner_right if block_top_right else corner_left, BLUE)
        assert _close(corner_left if block_top_right else corner_right, RED)
        assert _close(rgb.getpixel((w // 2, h - 2)), RED)
        assert im.info.get("icc_profile")
        exif = im.getexif()
        assert exif.get(MAKE) == "PhoneMaker" and exif.get(ORIENTATION, 1) == 1


needs_avif = pytest.mark.skipif(not features.check("avif"),
                                reason="this Pillow has no AVIF support (Pillow ≥ 11.2 has it)")


@needs_avif
def test_heic_and_avif_are_taken_by_default_and_written_upright_as_jpeg(tmp_path, daemons):
    """Default extensions take .heic, .heif and .avif; ``output_format: same`` writes JPEG
    for them, upright (a rotated HEIC and an AVIF with EXIF orientation 6), carrying the ICC
    profile and EXIF with the orientation reset."""
    config = write_config(tmp_path, [{"inbox": "in", "outbox": "out", "settle": 0.2}])
    d = daemons(config).ready()
    phone_photo(tmp_path / "in/IMG_0001.HEIC", "HEIF", orientation=6)
    phone_photo(tmp_path / "in/flat.heif", "HEIF")
    phone_photo(tmp_path / "in/IMG_0002.avif", "AVIF", orientation=6)
    d.wait_event("job_done", 3)
    out = tmp_path / "out"
    assert sorted(images_in(out)) == ["IMG_0001_x2.jpg", "IMG_0002_x2.jpg", "flat_x2.jpg"]
    assert_upright_jpeg(out / "IMG_0001_x2.jpg", (48, 96), block_top_right=True)
    assert_upright_jpeg(out / "IMG_0002_x2.jpg", (48, 96), block_top_right=True)
    assert_upright_jpeg(out / "flat_x2.jpg", (96, 48), block_top_right=False)
    assert not d.named("job_failed")
    assert d.stop() == 0


@needs_avif
def test_phone_photos_reach_fal_as_jpeg_or_png_by_result_format(tmp_path, fakefal, fal_daemons,
                                                                tls_files):
    """Through the fake fal: a HEIC whose result is JPEG is uploaded as an upright JPEG; an
    AVIF in a PNG folder is uploaded as PNG; both outputs are upright."""
    server = fakefal(latency=0.1)
    config = write_config(tmp_path, [
        {"name": "same", "inbox": "in/same", "outbox": "out/same", "settle": 0.2},
        {"name": "png", "inbox": "in/png", "outbox": "out/png", "settle": 0.2,
         "output_format": "png"}], backend="fal")
    d = fal_daemons(config, fal_env(server, tls_files)).ready()
    phone_photo(tmp_path / "in/same/IMG_0003.heic", "HEIF", orientation=6)
    phone_photo(tmp_path / "in/png/IMG_0004.avif", "AVIF", orientation=6)
    d.wait_event("job_done", 2)
    sent = {}
    for req in server.requests.values():
        with Image.open(io.BytesIO(req._data)) as im:
            sent[im.format] = im.size
    assert sent == {"JPEG": (24, 48), "PNG": (24, 48)}
    assert_upright_jpeg(tmp_path / "out/same/IMG_0003_x2.jpg", (48, 96), block_top_right=True)
    with Image.open(tmp_path / "out/png/IMG_0004_x2.png") as im:
        assert im.format == "PNG" and im.size == (48, 96)
        assert _close(im.convert("RGB").getpixel((46, 1)), BLUE)
    assert d.stop() == 0


def test_check_warns_about_extensions_nothing_installed_can_decode(tmp_path):
    """``check`` warns (and still passes) for a listed extension no installed library can
    decode: an unknown one always, and .heic when pillow-heif cannot be imported."""
    config = write_config(tmp_path, [{"inbox": "in", "outbox": "out",
                                      "extensions": ["jpg", "heic", "xyz"]}])
    (tmp_path / "in").mkdir()  # a missing inbox is a warning of its own
    ok = cli("check", "--config", str(config))
    assert ok.returncode == 0
    warnings = [line for line in ok.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and ".xyz" in warnings[0] and ".heic" not in warnings[0]
    blocker = tmp_path / "blocked"
    blocker.mkdir()
    (blocker / "pillow_heif.py").write_text("raise ImportError('not installed here')\n")
    without = cli("check", "--config", str(config),
                  env={"PYTHONPATH": os.pathsep.join([str(blocker), os.environ.get(
                      "PYTHONPATH", "")])})
    assert without.returncode == 0
    assert ".heic" in without.stderr and "pillow-heif" in without.stderr
