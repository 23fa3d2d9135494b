"""Cheap completeness checks (end markers, zero tails) and the still-arriving policy."""

from __future__ import annotations

import io
import os
import random
from pathlib import Path

import pytest
from PIL import Image

from crystal_watchd.config import FolderConfig
from crystal_watchd.errors import PermanentJobError
from crystal_watchd.images import completeness, preflight
from crystal_watchd.intake import arrival
from crystal_watchd.jobs import Job, JobState

# Noise compresses badly, so every format gives a file of tens of kilobytes.
NOISY = Image.frombytes("RGB", (160, 120), random.Random(7).randbytes(160 * 120 * 3))


def encoded(fmt: str, image: Image.Image = NOISY, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def preallocated_half(data: bytes) -> bytes:
    """What a writer that set the final size first holds after writing half."""
    half = len(data) // 2
    return data[:half] + bytes(len(data) - half)


class CountingReader(io.BytesIO):
    """A file object that counts how many bytes were read from it."""

    def __init__(self, data: bytes):
        super().__init__(data)
        self.bytes_read = 0

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self.bytes_read += len(chunk)
        return chunk


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP"])
def test_sniff_names_the_format_from_the_first_bytes(fmt):
    """The signature alone names each supported format, the way Pillow does."""
    assert completeness.sniff(io.BytesIO(encoded(fmt))) == fmt


def test_sniff_knows_nothing_of_text_or_zeros():
    """Text and zero bytes have no image signature."""
    assert completeness.sniff(io.BytesIO(b"plain text, not a picture")) is None
    assert completeness.sniff(io.BytesIO(bytes(64))) is None


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP"])
def test_complete_files_have_their_end(fmt):
    """A finished JPEG, PNG, GIF or WebP shows no missing end."""
    assert completeness.missing_end_marker(io.BytesIO(encoded(fmt)), fmt) is None


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP"])
def test_half_written_files_miss_their_end(fmt):
    """Cut in half, or half written into a file whose size was set first, the end is
    missing and the reason says what is missing."""
    data = encoded(fmt)
    for partial in (data[: len(data) // 2], preallocated_half(data)):
        reason = completeness.missing_end_marker(io.BytesIO(partial), fmt)
        assert reason, (fmt, len(partial))


def test_missing_marker_reason_names_the_marker():
    """The reasons are plain words naming what is missing."""
    jpeg = completeness.missing_end_marker(io.BytesIO(encoded("JPEG")[:-2]), "JPEG")
    png = completeness.missing_end_marker(io.BytesIO(encoded("PNG")[:-12]), "PNG")
    zeros = completeness.missing_end_marker(io.BytesIO(preallocated_half(encoded("JPEG"))), "jpeg")
    assert "end-of-image marker (FFD9)" in jpeg and "IEND" in png
    assert "zero bytes" in zeros


def test_trailing_bytes_after_the_end_marker_are_allowed():
    """Cameras append their own data after the end marker (and some pad with zeros); the
    marker still counts. Megabytes of trailer (a motion photo's video) push it out of reach,
    which the policy treats as no sign at all (see the arrival tests)."""
    jpeg, png = encoded("JPEG"), encoded("PNG")
    trailer = os.urandom(20_000)
    assert completeness.missing_end_marker(io.BytesIO(jpeg + trailer), "JPEG") is None
    assert completeness.missing_end_marker(io.BytesIO(jpeg + bytes(50_000)), "JPEG") is None
    assert completeness.missing_end_marker(io.BytesIO(png + trailer), "PNG") is None
    assert completeness.missing_end_marker(io.BytesIO(png + bytes(9_000)), "PNG") is None
    no_marker = bytes(range(1, 255))  # never FF: no FFD9 in the trailer itself
    far = jpeg + no_marker * (completeness.TAIL_WINDOW // len(no_marker) + 1)
    assert completeness.missing_end_marker(io.BytesIO(far), "JPEG") is not None


def test_webp_shorter_than_its_header_says():
    """A WebP file shorter than its RIFF size is unfinished, with the numbers in the reason."""
    data = encoded("WEBP")
    reason = completeness.missing_end_marker(io.BytesIO(data[:100]), "WEBP")
    assert reason == f"the file holds 100 of the {len(data)} bytes its WebP header declares"


def test_formats_without_an_end_marker_are_not_judged_by_one():
    """TIFF and BMP have no end marker; the check says nothing about them."""
    for fmt in ("TIFF", "BMP"):
        data = encoded(fmt)
        assert completeness.missing_end_marker(io.BytesIO(data[:300]), fmt) is None


def test_zero_tail_counts_a_long_run_only():
    """A long run of zero bytes at the end counts; a short one or none does not."""
    data = encoded("PNG")
    assert completeness.zero_tail(io.BytesIO(preallocated_half(data)))
    assert not completeness.zero_tail(io.BytesIO(data))
    assert not completeness.zero_tail(io.BytesIO(data + bytes(completeness.ZERO_RUN - 1)))
    assert completeness.zero_tail(io.BytesIO(data + bytes(completeness.ZERO_RUN)))
    assert completeness.trailing_zeros(io.BytesIO(b"\1" + bytes(70_000))) == 70_000
    assert completeness.trailing_zeros(io.BytesIO(b"\1" + bytes(70_000)), 100) == 100


def test_checks_work_on_paths_too(tmp_path):
    """The same answers from a path as from an open file."""
    good, half = tmp_path / "good.jpg", tmp_path / "half.jpg"
    good.write_bytes(encoded("JPEG"))
    half.write_bytes(preallocated_half(encoded("JPEG")))
    assert completeness.sniff(good) == "JPEG"
    assert completeness.missing_end_marker(good, "JPEG") is None
    assert completeness.missing_end_marker(str(half), "JPEG")
    assert completeness.zero_tail(half) and not completeness.zero_tail(good)


def test_a_big_unwritten_file_is_judged_from_its_tail_only(tmp_path):
    """A 64 MB file whose size was set up front and whose start is written: the checks read
    a small part of it, not the whole file."""
    data = encoded("JPEG")
    big = CountingReader(data + bytes(64 * 1024 * 1024))
    assert completeness.zero_tail(big)
    assert completeness.missing_end_marker(big, "JPEG")
    assert completeness.sniff(big) == "JPEG"
    assert big.bytes_read <= completeness.MAX_PADDING + 3 * completeness.TAIL_WINDOW


def test_unwritten_start_and_unallocated_tail(tmp_path):
    """A file of zeros has an unwritten start; one extended with truncate() stores fewer
    bytes than its size (on filesystems that keep holes, which tmp_path does here)."""
    assert completeness.unwritten_start(io.BytesIO(bytes(100)))
    assert not completeness.unwritten_start(io.BytesIO(encoded("BMP")))
    sparse = tmp_path / "sparse.bmp"
    with open(sparse, "wb") as fh:
        fh.write(encoded("BMP")[:1000])
        fh.truncate(4 * 1024 * 1024)
    written = tmp_path / "written.bmp"
    written.write_bytes(encoded("BMP")[:1000] + bytes(4 * 1024 * 1024 - 1000))
    st = sparse.stat()
    if st.st_blocks * 512 >= st.st_size:
        pytest.skip("this filesystem does not keep holes in files")
    assert completeness.unallocated_tail(st)
    assert not completeness.unallocated_tail(written.stat())


# -- the still-arriving policy ------------------------------------------------------------


def folder(tmp_path: Path, **kw) -> FolderConfig:
    return FolderConfig(name="f", inbox=tmp_path / "in", outbox=tmp_path / "out",
                        done_dir=tmp_path / "in/done", failed_dir=tmp_path / "in/failed", **kw)


def job_for(path: Path, data: bytes, created_at: float) -> Job:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    st = path.stat()
    return Job(id=1, folder="f", path=path, rel=path.name, size=st.st_size,
               mtime_ns=st.st_mtime_ns, sha256="x", state=JobState.RUNNING,
               created_at=created_at)


def test_preallocated_half_jpeg_waits_without_decoding_then_fails(tmp_path):
    """A JPEG half written into a file of its final size decodes (as grey blocks), so only
    the cheap sign catches it: it waits during the grace; after it, it fails plainly."""
    data = preallocated_half(encoded("JPEG"))
    preflight.inspect(data, folder(tmp_path))  # the decoder alone would take it
    f = folder(tmp_path, incomplete_grace=60)
    job = job_for(tmp_path / "in/a.jpg", data, created_at=1000.0)
    with pytest.raises(arrival.StillArriving) as waiting:
        arrival.inspect(data, f, job, now=1059.0)
    assert waiting.value.until == 1060.0 and "FFD9" in waiting.value.reason
    with pytest.raises(PermanentJobError) as failed:
        arrival.inspect(data, f, job, now=1060.0)
    assert failed.value.kind == "corrupt_image"
    assert failed.value.reason.startswith("the image data is damaged or incomplete: ")


def test_truncated_file_waits_then_fails_with_the_decoders_reason(tmp_path):
    """A JPEG cut short (no zeros) fails to decode: that waits during the grace, and after
    it fails with exactly the reason the decoder gives."""
    data = encoded("JPEG")[:3000]
    f = folder(tmp_path, incomplete_grace=5)
    job = job_for(tmp_path / "in/t.jpg", data, created_at=100.0)
    with pytest.raises(PermanentJobError) as today:
        preflight.inspect(data, f)
    with pytest.raises(arrival.StillArriving) as waiting:
        arrival.inspect(data, f, job, now=101.0)
    assert waiting.value.reason == today.value.reason
    with pytest.raises(PermanentJobError) as failed:
        arrival.inspect(data, f, job, now=105.0)
    assert (failed.value.kind, failed.value.reason) == (today.value.kind, today.value.reason)


def test_header_cut_short_waits_but_text_fails_at_once(tmp_path):
    """A file cut inside its header (the signature says PNG) waits; a text file named .jpg
    is not an image and fails at once, whatever the grace."""
    f = folder(tmp_path, incomplete_grace=300)
    png = encoded("PNG")[:20]
    with pytest.raises(arrival.StillArriving):
        arrival.inspect(png, f, job_for(tmp_path / "in/p.png", png, created_at=0), now=1)
    text = b"this is not an image\n"
    with pytest.raises(PermanentJobError) as failed:
        arrival.inspect(text, f, job_for(tmp_path / "in/t.jpg", text, created_at=0), now=1)
    assert failed.value.kind == "not_an_image"


@pytest.mark.parametrize("extra", [b"", bytes(8000), os.urandom(3_000_000)],
                         ids=["plain", "zero-padded", "motion-photo-trailer"])
def test_clean_files_are_not_delayed(tmp_path, extra):
    """Files that decode cleanly pass at once, including a JPEG padded with zeros after its
    end marker and one with megabytes appended after it (as phones add a video)."""
    f = folder(tmp_path, incomplete_grace=300)
    for name, fmt in (("a.jpg", "JPEG"), ("b.png", "PNG"), ("c.webp", "WEBP"),
                      ("d.tif", "TIFF"), ("e.bmp", "BMP")):
        data = encoded(fmt) + (extra if fmt == "JPEG" else b"")
        source = arrival.inspect(data, f, job_for(tmp_path / "in" / name, data, 0), now=1)
        assert (source.width, source.height) == NOISY.size


def test_png_without_iend_waits_then_is_decoded(tmp_path):
    """A PNG missing only its end chunk waits during the grace; afterwards the decoder
    decides (Pillow reads it) and the file is used."""
    data = encoded("PNG")[:-12]
    f = folder(tmp_path, incomplete_grace=10)
    job = job_for(tmp_path / "in/n.png", data, created_at=0)
    with pytest.raises(arrival.StillArriving) as waiting:
        arrival.inspect(data, f, job, now=9.9)
    assert "IEND" in waiting.value.reason
    assert arrival.inspect(data, f, job, now=10).width == NOISY.width


def test_sparse_bmp_waits_only_while_the_grace_lasts(tmp_path):
    """A BMP whose size was set up front (a hole at the end) waits; after the grace the
    decoder decides, since filesystems that compress zeros look the same."""
    data = encoded("BMP", Image.new("RGB", (300, 300), "white"))
    path = tmp_path / "in/s.bmp"
    path.parent.mkdir(parents=True)
    with open(path, "wb") as fh:
        fh.write(data[:1000])
        fh.truncate(len(data))
    st = path.stat()
    if st.st_blocks * 512 + completeness.TAIL_WINDOW > st.st_size:
        pytest.skip("this filesystem does not keep holes in files")
    content = path.read_bytes()
    job = Job(id=1, folder="f", path=path, rel="s.bmp", size=st.st_size,
              mtime_ns=st.st_mtime_ns, sha256="x", state=JobState.RUNNING, created_at=0)
    f = folder(tmp_path, incomplete_grace=10)
    with pytest.raises(arrival.StillArriving) as waiting:
        arrival.inspect(content, f, job, now=5)
    assert "never written" in waiting.value.reason
    assert arrival.inspect(content, f, job, now=10).width == 300


def test_zero_grace_judges_at_once(tmp_path):
    """incomplete_grace 0 never waits: a truncated file fails straight away as before."""
    data = encoded("PNG")[:2000]
    f = folder(tmp_path, incomplete_grace=0)
    with pytest.raises(PermanentJobError):
        arrival.inspect(data, f, job_for(tmp_path / "in/z.png", data, created_at=50), now=50)

