"""The output path's parts on their own: container surgery, the pixel pool, and what the
worker does with an error it did not expect."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import threading
import time
import zlib

import pytest
from PIL import Image, ImageCms

from crystal_watchd import config as config_module
from crystal_watchd.backends.base import Slots
from crystal_watchd.backends.local import LocalBackend
from crystal_watchd.daemon.worker import JobCallbacks, Worker
from crystal_watchd.errors import ConversionError, OutputBlockedError
from crystal_watchd.images import carriers, containers
from crystal_watchd.images.metadata import Metadata, photo_exif
from crystal_watchd.images.output import write_temp
from crystal_watchd.images.pixels import PixelPool
from crystal_watchd.jobs import JobState
from crystal_watchd.journal import SqliteJournal


def _jpeg(size=(64, 48), **params) -> bytes:
    buffer = io.BytesIO()
    Image.radial_gradient("L").resize(size).convert("RGB").save(buffer, "JPEG", **params)
    return buffer.getvalue()


def test_jpeg_splice_keeps_scan_data_and_splits_a_large_profile(tmp_path):
    """An ICC profile over one segment's capacity is split across APP2 segments, readers
    reassemble it, and the compressed scan data is byte for byte the original."""
    source = tmp_path / "in.jpg"
    source.write_bytes(_jpeg(icc_profile=b"old-profile" * 10))
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    big = profile + b"\0" * 150_000  # padding after the tagged data keeps it parseable
    meta = Metadata(icc_profile=big, icc_space="rgb")
    out = io.BytesIO()
    containers.splice_jpeg(source, out, carriers.for_output(meta, "JPEG", (64, 48), "RGB", None))
    data = out.getvalue()
    original = source.read_bytes()
    assert data[data.index(b"\xff\xda"):] == original[original.index(b"\xff\xda"):]
    with Image.open(io.BytesIO(data)) as im:
        assert im.info["icc_profile"] == big
        im.load()


def test_a_grey_profile_is_not_put_on_colour_pixels(tmp_path):
    """A greyscale source's profile would misdescribe fal's RGB result: it is left out."""
    source = tmp_path / "in.jpg"
    source.write_bytes(_jpeg())
    out = io.BytesIO()
    grey = Metadata(icc_profile=b"grey", icc_space="grey")
    containers.splice_jpeg(source, out, carriers.for_output(grey, "JPEG", (64, 48), "RGB", None))
    with Image.open(io.BytesIO(out.getvalue())) as im:
        assert "icc_profile" not in im.info


def test_png_check_finds_damage_the_length_cannot(tmp_path):
    """A flipped byte inside the image data, a missing IEND and short image data are each
    refused; the intact file passes and reports its size."""
    buffer = io.BytesIO()
    Image.radial_gradient("L").save(buffer, "PNG")
    good = buffer.getvalue()
    path = tmp_path / "r.png"
    path.write_bytes(good)
    assert containers.check_png(path).width == 256
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x01
    path.write_bytes(bytes(flipped))
    with pytest.raises(containers.DamagedFile):
        containers.check_png(path)
    path.write_bytes(good[:-12])
    assert containers.complete(path) is not None
    # A well-formed PNG whose IDAT holds too few rows for its header.
    import struct

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))
    short = (containers.PNG_SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 8, 0, 0, 0, 0))
             + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b""))
    path.write_bytes(short)
    with pytest.raises(containers.DamagedFile):
        containers.check_png(path)


def test_exif_keeps_the_photo_and_drops_the_file_structure():
    """TIFF structure tags (size, strips, bits) and the maker note never reach an output;
    camera, exposure and GPS do."""
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x010F] = "Cam"
    exif[0x8769] = {0x829A: (1, 60), 0xA002: 4000, 0x927C: b"vendor"}
    exif[0x8825] = {0x0001: "N"}
    Image.new("RGB", (8, 8)).save(buffer, "TIFF", exif=exif.tobytes())
    with Image.open(buffer) as im:
        data, dropped = photo_exif(im)
    assert not dropped
    kept = Image.Exif()
    kept.load(data)
    assert kept[0x010F] == "Cam" and 0x0100 not in kept and 0x0111 not in kept
    assert 0x829A in kept.get_ifd(0x8769) and 0xA002 not in kept.get_ifd(0x8769)
    assert 0x927C not in kept.get_ifd(0x8769) and kept.get_ifd(0x8825)[0x0001] == "N"


def test_codec_errors_are_conversion_failures_and_disk_errors_wait(tmp_path):
    """An encoder's OSError without errno is a conversion failure (retrying cannot help);
    a full disk is an OS error and waits."""
    def codec(fh):
        raise OSError("encoder error -2 when writing image file")

    def disk(fh):
        import errno
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(ConversionError):
        write_temp(tmp_path / "a.tif", codec, "t")
    with pytest.raises(OutputBlockedError):
        write_temp(tmp_path / "a.tif", disk, "t")
    assert not list(tmp_path.glob(".*.tmp"))


def test_pixel_pool_bounds_workers_and_memory_in_arrival_order():
    """Work runs at most ``workers`` at a time and within the memory budget; a job larger
    than the budget runs alone; waiters are served first come, first served."""
    pool = PixelPool(workers=2, memory_mb=100)
    running: set[str] = set()
    peak, order, overlapped = [0], [], set()
    lock = threading.Lock()

    def work(name):
        with lock:
            running.add(name)
            peak[0] = max(peak[0], len(running))
            order.append(name)
            if len(running) > 1:
                overlapped.update(running)
        time.sleep(0.05)
        with lock:
            running.discard(name)

    async def main():
        # 48 MP decoded is at least 48e6 × 3 bytes (RGB), well over the 100 MB budget, so
        # it runs alone.
        await asyncio.gather(pool.run(work, "small1", megapixels=1),
                             pool.run(work, "huge", megapixels=48),
                             pool.run(work, "small2", megapixels=1),
                             pool.run(work, "small3", megapixels=1))

    asyncio.run(main())
    assert order == ["small1", "huge", "small2", "small3"]
    assert peak[0] <= 2 and pool.running == 0 and pool.reserved == 0
    # The huge job never shared the budget: nothing ran beside it.
    assert "huge" not in overlapped


class _Broken(LocalBackend):
    async def upscale(self, request):
        raise RuntimeError("unexpected state")


def test_an_unexpected_error_is_retried_once_then_fails_naming_it(tmp_path):
    """A bug is not looped on: the first unexpected exception retries, the second fails the
    file with the exception named in its .error.json."""
    (tmp_path / "in").mkdir()
    image = tmp_path / "in" / "a.png"
    Image.new("RGB", (8, 8), "red").save(image)
    cfg = config_module.parse(json.dumps({
        "backend": "local", "state_dir": str(tmp_path / "state"),
        "folders": [{"inbox": str(tmp_path / "in"), "outbox": str(tmp_path / "out")}]}),
        tmp_path / "c.yaml")
    (tmp_path / "state").mkdir()
    journal = SqliteJournal(tmp_path / "state" / "j.sqlite3")
    st = image.stat()
    job = journal.enqueue("in", image, "a.png", st.st_size, st.st_mtime_ns,
                          hashlib.sha256(image.read_bytes()).hexdigest())
    # The worker runs as in the daemon, on the event loop with the journal's own store.
    worker = Worker(cfg, journal.store, _Broken(Slots(1)),
                    JobCallbacks(lambda *a: None, lambda e: None))
    assert journal.run(worker.process(journal.claim(job))) == JobState.QUEUED
    assert journal.run(worker.process(journal.claim(journal.get(job.id)))) == JobState.FAILED
    report = json.loads((tmp_path / "in" / "failed" / "a.png.error.json").read_text())
    assert report["error"] == "internal" and "RuntimeError: unexpected state" in report["reason"]
    journal.close()
