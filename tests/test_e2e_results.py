"""What becomes of fal's result, end to end through the real daemon and the fake fal: its
bytes are the output when they can be, conversions are bounded and read back, damaged
downloads are fetched again on the same request, and a paid result is never thrown away."""

from __future__ import annotations

import functools
import io
import os

from conftest import fal_env, make_image, wait_for, write_config
from fakefal import Faults
from PIL import Image, ImageCms

from crystal_watchd.images import containers


def fal_config(tmp_path, folders, **top):
    top.setdefault("retry", {"attempts": 6, "backoff": 0.1, "max_backoff": 0.5})
    top.setdefault("fal", {"timeout": 60})
    return write_config(tmp_path, folders, backend="fal", **top)


@functools.lru_cache(maxsize=1)
def _srgb() -> bytes:
    """One sRGB profile for the whole module (each new one has a new creation time)."""
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _photo(path, fmt, size=(64, 48)):
    """A photo-like file with an ICC profile and camera EXIF."""
    image = Image.radial_gradient("L").resize(size).convert("RGB")
    exif = Image.Exif()
    exif[0x010F] = "StudioCam"
    exif[0x8769] = {0x829A: (1, 250), 0x9003: "2026:11:24 10:00:00"}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".tmp-" + path.name)
    image.save(tmp, fmt, icc_profile=_srgb(), exif=exif.tobytes())
    os.replace(tmp, path)


def _fal_file(server, fmt: str) -> bytes:
    """The one result file fal made (kept by the fake after the daemon's cleanup deletes it;
    inputs uploaded to its storage are files there too, not results)."""
    (name,) = [n for n in server.made if n.endswith(fmt)]
    return server.made[name]


def _decoded(data_or_path) -> bytes:
    source = io.BytesIO(data_or_path) if isinstance(data_or_path, bytes) else data_or_path
    with Image.open(source) as im:
        return im.convert("RGB").tobytes()


def _scan(data: bytes) -> bytes:
    """A JPEG's data from its start-of-scan on."""
    return data[data.index(b"\xff\xda"):]


def _idat(data: bytes) -> bytes:
    import struct

    pos, out = 8, b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IDAT":
            out += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    return out


def test_jpeg_result_is_fals_bytes_with_the_sources_metadata(tmp_path, fakefal, fal_daemons,
                                                              tls_files):
    """A JPEG folder asks fal for JPEG and writes fal's compressed data byte for byte, with
    the source's ICC profile and EXIF spliced in: the pixels are identical to fal's."""
    server = fakefal(latency=0.05)
    config = fal_config(tmp_path, [{"name": "j", "inbox": "in", "outbox": "out"}])
    d = fal_daemons(config, fal_env(server, tls_files)).ready()
    _photo(tmp_path / "in/shot.jpg", "JPEG")
    d.wait_event("job_done")
    assert [s["output_format"] for s in server.submissions] == ["jpg"]
    theirs, ours = _fal_file(server, ".jpg"), (tmp_path / "out/shot_x2.jpg").read_bytes()
    assert _scan(ours) == _scan(theirs)
    assert _decoded(ours) == _decoded(theirs)
    with Image.open(io.BytesIO(ours)) as im:
        assert im.info["icc_profile"] == _srgb()
        exif = im.getexif()
        assert exif[0x010F] == "StudioCam" and exif.get(0x0112, 1) == 1
        assert exif.get_ifd(0x8769)[0x9003] == "2026:11:24 10:00:00"


def test_png_result_is_fals_bytes_with_the_sources_chunks(tmp_path, fakefal, fal_daemons,
                                                           tls_files):
    """A PNG folder keeps fal's PNG image data unchanged and carries the source's ICC
    (iCCP) and EXIF (eXIf)."""
    server = fakefal(latency=0.05)
    config = fal_config(tmp_path, [{"name": "p", "inbox": "in", "outbox": "out"}])
    d = fal_daemons(config, fal_env(server, tls_files)).ready()
    _photo(tmp_path / "in/logo.png", "PNG")
    d.wait_event("job_done")
    theirs, ours = _fal_file(server, ".png"), (tmp_path / "out/logo_x2.png").read_bytes()
    assert _idat(ours) == _idat(theirs) and _decoded(ours) == _decoded(theirs)
    containers.check_png(tmp_path / "out/logo_x2.png")
    with Image.open(io.BytesIO(ours)) as im:
        assert im.info["icc_profile"] == _srgb()
        assert im.getexif()[0x010F] == "StudioCam"


def test_webp_output_is_converted_and_carries_metadata(tmp_path, fakefal, fal_daemons,
                                                       tls_files):
    """A WebP folder asks fal for lossless PNG and converts it, at the folder's quality."""
    server = fakefal(latency=0.05)
    config = fal_config(tmp_path, [{"name": "w", "inbox": "in", "outbox": "out",
                                    "output_format": "webp", "webp_quality": 80}])
    d = fal_daemons(config, fal_env(server, tls_files)).ready()
    _photo(tmp_path / "in/a.jpg", "JPEG")
    d.wait_event("job_done")
    assert [s["output_format"] for s in server.submissions] == ["png"]
    with Image.open(tmp_path / "out/a_x2.webp") as im:
        assert im.format == "WEBP" and im.size == (128, 96)
        assert im.info["icc_profile"] == _srgb()


def test_damaged_downloads_are_fetched_again_on_the_same_request(tmp_path, fakefal,
                                                                 fal_daemons, tls_files):
    """Results that arrive whole in length but damaged inside (a flipped PNG byte, a zeroed
    JPEG tail) are refused by the read-back and fetched again: one submission per file."""
    server = fakefal(latency=0.05, faults=Faults(corrupt_first_download=True))
    config = fal_config(tmp_path, [
        {"name": "p", "inbox": "in/p", "outbox": "out/p"},
        {"name": "j", "inbox": "in/j", "outbox": "out/j", "output_format": "jpeg"}])
    d = fal_daemons(config, fal_env(server, tls_files)).ready()
    for i in range(3):
        make_image(tmp_path / f"in/p/{i}.png", (40 + i, 30), fmt="PNG")
        make_image(tmp_path / f"in/j/{i}.png", (40 + i, 30), fmt="PNG")
    d.wait_event("job_done", 6, timeout=60)
    assert len(server.submissions) == 6
    assert len(server.corrupted) == 6
    events = d.events()
    # A PNG's damage shows in its data (read-back: the job retries on the same request); a
    # JPEG's missing end marker already in the download (fetched again in place).
    assert {e["job_id"] for e in events if e.get("event") == "job_retry_scheduled"
            and e["error"] == "download"} == {e["job_id"] for e in d.named("job_done")
                                              if e["outputs"][0].endswith(".png")}
    assert len([e for e in events if e.get("event") == "fal_call_retry"
                and e["call"] == "download"]) == 3
    for path in (tmp_path / "out").rglob("*_x2.*"):
        with Image.open(path) as im:
            im.load()


def test_a_size_webp_cannot_hold_fails_before_any_submission(tmp_path, fakefal, fal_daemons,
                                                             tls_files):
    """9000×100 at ×2 as WebP (16383 px a side at most) fails before anything is paid, with
    the reason; with ``oversize: reduce`` the largest scale that fits is used."""
    server = fakefal(latency=0.05)
    config = fal_config(tmp_path, [
        {"name": "strict", "inbox": "in/s", "outbox": "out/s", "output_format": "webp"},
        {"name": "fit", "inbox": "in/f", "outbox": "out/f", "output_format": "webp",
         "oversize": "reduce"}])
    d = fal_daemons(config, fal_env(server, tls_files)).ready()
    make_image(tmp_path / "in/s/wide.png", (9000, 100), fmt="PNG")
    d.wait_event("job_failed")
    assert server.submissions == [] and server.ledger == []
    (failed,) = d.named("job_failed")
    assert "16383" in failed["reason"] and "WEBP" in failed["reason"]
    make_image(tmp_path / "in/f/wide.png", (9000, 100), fmt="PNG")
    d.wait_event("job_done")
    (output,) = (tmp_path / "out/f").glob("wide_x*.webp")
    with Image.open(output) as im:
        assert im.width <= 16383 and im.width > 9000


def test_a_paid_result_that_cannot_be_converted_is_kept_as_fal_sent_it(tmp_path, fakefal,
                                                                        fal_daemons, tls_files):
    """When the folder's format cannot hold what fal returned (here a result wider than WebP
    allows), fal's own PNG is written instead, with a warning, and the job is done."""
    server = fakefal(latency=0.05, faults=Faults(stretch_results=100))
    config = fal_config(tmp_path, [{"name": "w", "inbox": "in", "outbox": "out",
                                    "output_format": "webp"}])
    d = fal_daemons(config, fal_env(server, tls_files)).ready()
    make_image(tmp_path / "in/strip.png", (100, 10), fmt="PNG")
    d.wait_event("job_done")
    (warning,) = d.named("output_format_fallback")
    assert "WEBP" in warning["reason"]
    assert not list((tmp_path / "out").glob("*.webp"))
    with Image.open(tmp_path / "out/strip_x2.png") as im:
        assert im.size == (20000, 20)
    assert len(server.ledger) == 1


def test_transparency_survives_fal(tmp_path, fakefal, fal_daemons, tls_files):
    """fal returns opaque RGB; the input's alpha is scaled up and attached, so transparent
    and opaque areas stay where they were. JPEG output is flattened onto white instead."""
    server = fakefal(latency=0.05)
    config = fal_config(tmp_path, [
        {"name": "png", "inbox": "in/p", "outbox": "out/p"},
        {"name": "jpg", "inbox": "in/j", "outbox": "out/j", "output_format": "jpeg"}])
    d = fal_daemons(config, fal_env(server, tls_files)).ready()
    cutout = Image.new("RGBA", (40, 20), (200, 30, 30, 255))
    cutout.paste((0, 0, 0, 0), (0, 0, 20, 20))
    for where in ("in/p", "in/j"):
        (tmp_path / where).mkdir(parents=True, exist_ok=True)
        cutout.save(tmp_path / where / ".t.png")
        os.replace(tmp_path / where / ".t.png", tmp_path / where / "cut.png")
    d.wait_event("job_done", 2)
    with Image.open(tmp_path / "out/p/cut_x2.png") as im:
        assert im.mode == "RGBA" and im.size == (80, 40)
        alpha = im.getchannel("A")
        assert alpha.getpixel((5, 20)) == 0 and alpha.getpixel((75, 20)) == 255
    with Image.open(tmp_path / "out/j/cut_x2.jpg") as im:
        assert im.mode == "RGB"
        assert min(im.getpixel((5, 20))) > 240  # white where it was transparent
    assert not list((tmp_path / "state" / "work").glob("*-alpha.png"))


def test_bytes_downloaded_match_the_result_not_a_png_of_it(tmp_path, fakefal, fal_daemons,
                                                          tls_files):
    """For a JPEG folder the download is fal's JPEG (small), not a lossless PNG of it."""
    server = fakefal(latency=0.05)
    config = fal_config(tmp_path, [{"name": "j", "inbox": "in", "outbox": "out"}])
    d = fal_daemons(config, fal_env(server, tls_files)).ready()
    _photo(tmp_path / "in/big.jpg", "JPEG", size=(400, 300))
    d.wait_event("job_done")
    out = tmp_path / "out/big_x2.jpg"
    wait_for(out.exists)
    assert abs(out.stat().st_size - len(_fal_file(server, ".jpg"))) < 4096
