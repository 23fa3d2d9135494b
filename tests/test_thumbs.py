"""Thumbnails: 320 px JPEGs, large JPEGs decoded reduced, and a cache capped in bytes."""

from __future__ import annotations

import asyncio
import os
import time

from conftest import make_image
from PIL import Image

from crystal_watchd.images.pixels import PixelPool
from crystal_watchd.jobs import Job, JobState
from crystal_watchd.web import thumbs


def done_job(job_id: int, source, output) -> Job:
    return Job(id=job_id, folder="f", path=source, rel=source.name, size=1, mtime_ns=1,
               sha256="0" * 64, state=JobState.DONE, outputs=[str(output)])


def test_thumbnail_is_a_320px_jpeg_upright_and_flattened(tmp_path):
    """Longest side 320 px, JPEG, EXIF orientation applied, transparency on white."""
    tall = make_image(tmp_path / "tall.jpg", (600, 400), exif=_rotated_exif())
    assert thumbs.render(tall, tmp_path / "t1.jpg") > 0
    with Image.open(tmp_path / "t1.jpg") as im:
        assert im.format == "JPEG" and im.size == (213, 320)  # turned upright
    clear = Image.new("RGBA", (1000, 500), (0, 0, 0, 0))
    clear.save(tmp_path / "clear.png")
    thumbs.render(tmp_path / "clear.png", tmp_path / "t2.jpg")
    with Image.open(tmp_path / "t2.jpg") as im:
        assert im.size == (320, 160) and im.getpixel((10, 10))[0] > 240


def test_large_jpeg_is_never_decoded_at_full_size(tmp_path, monkeypatch):
    """draft() makes the JPEG decoder scale down while decoding: the pixels actually
    decoded for a 4000×3000 JPEG are at most 1/8 per side larger than needed."""
    big = make_image(tmp_path / "big.jpg", (4000, 3000))
    decoded = []
    original_load = Image.Image.load

    def spy(self):
        decoded.append(self.size)
        return original_load(self)

    monkeypatch.setattr(Image.Image, "load", spy)
    thumbs.render(big, tmp_path / "t.jpg")
    assert decoded and max(w for w, _ in decoded) <= 1000, decoded


def test_cache_drops_the_oldest_beyond_its_cap(tmp_path):
    """Once the folder passes its byte cap, the oldest thumbnails go first, down to 90 %."""
    source = make_image(tmp_path / "src.jpg", (900, 600), color="teal")

    async def scenario():
        one = thumbs.render(source, tmp_path / "probe.jpg")
        cache = thumbs.ThumbCache(tmp_path / "thumbs", cap_bytes=int(one * 2 * 4.5),
                                  pixels=PixelPool(1, 64))
        for job_id in range(1, 7):
            job = done_job(job_id, source, source)
            for kind in thumbs.KINDS:
                assert await cache.get(job, kind) == cache.path(job_id, kind)
                stamp = time.time() - 1000 + job_id * 10  # job 1 oldest
                os.utime(cache.path(job_id, kind), (stamp, stamp))
        return cache

    cache = asyncio.run(scenario())
    left = sorted(p.name for p in (tmp_path / "thumbs").iterdir())
    assert sum(p.stat().st_size for p in (tmp_path / "thumbs").iterdir()) <= cache.cap_bytes
    assert "6-after.jpg" in left and "1-before.jpg" not in left


def test_missing_source_is_not_retried_on_every_view(tmp_path):
    """A job whose original is gone has no 'before' thumbnail (None), and asking again does
    not try again."""
    output = make_image(tmp_path / "out.jpg", (100, 80))

    async def scenario():
        cache = thumbs.ThumbCache(tmp_path / "thumbs", cap_bytes=10**7, pixels=PixelPool(1, 64))
        job = done_job(1, tmp_path / "gone.jpg", output)
        assert await cache.get(job, "before") is None
        assert (1, "before") in cache._unmakeable
        assert await cache.get(job, "before") is None
        assert await cache.get(job, "after") == cache.path(1, "after")

    asyncio.run(scenario())


def _rotated_exif() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    return exif.tobytes()


def test_sixteen_bit_tiff_thumbnail_is_tone_mapped_not_white(tmp_path):
    """A 16-bit grayscale TIFF gradient (dark to light, left to right) gives a "before"
    thumbnail that is not white and keeps the gradient's order; a 12-bit one (nothing above
    4095) and a float one do too."""
    cases = {"I;16": 65535, "I;16-12bit": 4095, "F": 1.0}
    for name, top in cases.items():
        mode = "F" if name == "F" else "I;16"
        image = Image.new(mode, (640, 64))
        image.putdata([x / 639 * top for x in range(640)] * 64)
        source = tmp_path / f"gradient-{name.replace(';', '')}.tif"
        image.save(source)
        with Image.open(source) as check:
            assert check.mode == mode
        dest = tmp_path / f"thumb-{name.replace(';', '')}.jpg"
        thumbs.render(source, dest)
        with Image.open(dest) as thumb:
            assert thumb.size == (320, 32)
            row = [thumb.getpixel((x, 16))[0] for x in [*range(0, 320, 32), 319]]
        assert row != [255] * len(row), name
        assert row == sorted(row) and row[-1] - row[0] > 200, (name, row)
        assert row[0] < 20 and row[-1] > 235, (name, row)
