"""Proving files whole from their structure, without decoding: the checks that stand in for
a decode where bytes go on unchanged (an input sent to fal as it is, fal's result kept)."""

from __future__ import annotations

import io
import random
import struct

import pytest
from PIL import Image, ImageFile

from crystal_watchd.config import FolderConfig
from crystal_watchd.errors import PermanentJobError, RetryableError
from crystal_watchd.images import containers, preflight, render
from crystal_watchd.images.metadata import Metadata
from crystal_watchd.images.render import Target
from crystal_watchd.images.result import ResultImage

NOISY = Image.frombytes("RGB", (160, 120), random.Random(3).randbytes(160 * 120 * 3))


def encoded(fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    NOISY.save(buffer, fmt, **params)
    return buffer.getvalue()


def damaged(reason_part: str, data) -> None:
    with pytest.raises(containers.DamagedFile) as failed:
        containers.check_jpeg(data)
    assert reason_part in str(failed.value)


def test_whole_jpegs_pass_in_every_layout(tmp_path):
    """Baseline, progressive (many scans with tables between them), restart markers, fill
    bytes before a marker, and a camera's data appended after the end marker all pass, from
    bytes and from a file."""
    plain = encoded("JPEG", quality=90)
    variants = [plain, encoded("JPEG", progressive=True), encoded("JPEG", restart_marker_rows=1),
                plain[:2] + b"\xff\xff\xff" + plain[2:], plain + b"\xff\xd8appended preview"]
    with Image.open(io.BytesIO(variants[2])) as im:  # the restart variant really has them
        assert im.info.get("progressive") is None
    assert any(variants[2].find(bytes([0xFF, rst])) > 0 for rst in range(0xD0, 0xD8))
    for data in variants:
        containers.check_jpeg(data)
    (tmp_path / "p.jpg").write_bytes(variants[1])
    containers.check_jpeg(tmp_path / "p.jpg")


def test_a_jpeg_cut_anywhere_is_damaged(tmp_path):
    """A JPEG cut inside its header, inside a scan, or just before its end marker is refused,
    from bytes and from a file (an empty file included)."""
    data = encoded("JPEG", progressive=True)
    for cut in (1, 30, 300, len(data) // 3, len(data) // 2, len(data) - 2, len(data) - 1):
        with pytest.raises(containers.DamagedFile):
            containers.check_jpeg(data[:cut])
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    damaged("cut short", tmp_path / "cut.jpg")
    (tmp_path / "empty.jpg").write_bytes(b"")
    damaged("ends before", tmp_path / "empty.jpg")


def test_foreign_bytes_in_a_jpeg_are_damaged():
    """A marker that cannot appear inside compressed data, a broken segment start, a
    segment length running past the end, and a file with no scan at all are refused."""
    data = bytearray(encoded("JPEG"))
    middle = len(data) * 2 // 3
    data[middle:middle + 2] = b"\xff\x12"
    damaged("marker 0xFF12", bytes(data))
    plain = encoded("JPEG")
    damaged("does not start with 0xFF", plain[:2] + b"\x00" + plain[3:])
    header = plain[:2] + b"\xff\xfe" + struct.pack(">H", 60000) + b"note"
    damaged("ends inside a segment", header)
    damaged("before its image data", b"\xff\xd8\xff\xfe\x00\x04hi\xff\xd9")
    damaged("not a JPEG", b"\x89PNG\r\n\x1a\n")


def test_png_chunk_checksums_prove_the_bytes(tmp_path):
    """A whole PNG passes, from bytes and from a file; one flipped byte in its image data
    fails its checksum; a PNG cut before IEND, and one without image data, are refused."""
    data = encoded("PNG")
    containers.check_png_chunks(data)
    (tmp_path / "whole.png").write_bytes(data)
    containers.check_png_chunks(tmp_path / "whole.png")
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x01
    with pytest.raises(containers.DamagedFile, match="IDAT chunk fails its checksum"):
        containers.check_png_chunks(bytes(flipped))
    with pytest.raises(containers.DamagedFile, match="incomplete"):
        containers.check_png_chunks(data[:-20])
    no_idat = data[:33] + data[-12:]  # signature + IHDR, then IEND
    with pytest.raises(containers.DamagedFile, match="no image data"):
        containers.check_png_chunks(no_idat)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_an_input_sent_as_it_is_is_proven_without_its_pixels(tmp_path, fmt):
    """On the fal path (pixels not kept) a JPEG or PNG input that is whole is accepted as
    it is, without pixels in memory; cut in its compressed data, it fails as damaged, with
    the structure's reason."""
    folder = FolderConfig(name="t", inbox=tmp_path / "in", outbox=tmp_path / "out")
    data = encoded(fmt)
    source = preflight.inspect(data, folder, keep_pixels=False)
    assert source.as_is and source.image is None and (source.width, source.height) == (160, 120)
    cut = data[: len(data) * 3 // 4]
    with pytest.raises(PermanentJobError) as failed:
        preflight.inspect(cut, folder, keep_pixels=False)
    assert failed.value.kind == "corrupt_image"
    assert failed.value.reason.startswith("the image data is damaged or incomplete: the ")


def _target(fmt: str) -> Target:
    return Target(fmt=fmt, meta=Metadata())


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_a_result_kept_as_it_is_is_checked_not_decoded(tmp_path, fmt, monkeypatch):
    """fal's result in the output's format is written with its metadata spliced in and read
    back from its structure: a whole result becomes the output without a decode; a result
    damaged inside (a broken PNG checksum, a foreign marker in a JPEG's data) is refused as a
    download to fetch again."""
    decodes = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decodes.append(self) or None)
    monkeypatch.setattr(containers, "check_png", decodes.append)  # the PNG inflating pass
    whole = tmp_path / f"whole.{fmt.lower()}"
    whole.write_bytes(encoded(fmt))
    written = render.write(ResultImage(path=whole), _target(fmt), tmp_path / "o" / whole.name,
                           "t")
    assert written.fmt == fmt and written.tmp.read_bytes()[-12:] == whole.read_bytes()[-12:]
    assert decodes == []
    bad = bytearray(whole.read_bytes())
    middle = len(bad) * 2 // 3
    if fmt == "PNG":
        bad[middle] ^= 0x01
    else:
        bad[middle:middle + 2] = b"\xff\x12"
    broken = tmp_path / f"broken.{fmt.lower()}"
    broken.write_bytes(bytes(bad))
    with pytest.raises(RetryableError) as failed:
        render.write(ResultImage(path=broken), _target(fmt), tmp_path / "o" / broken.name, "t")
    assert failed.value.kind == "download"
    assert "checksum" in str(failed.value) or "0xFF12" in str(failed.value)
    assert not any(p.name.startswith(".") for p in (tmp_path / "o").iterdir()
                   if "broken" in p.name)
