"""Odd real-world files through the real daemon, both backends: every file ends as an output
that decodes at the right size, or as a failure with a plain reason and nothing billed."""

from __future__ import annotations

import json
import os

import pytest
from conftest import fal_env, wait_for, write_config
from corpus import H, W, corpus, picture
from PIL import Image, ImageChops, ImageStat

SANE = {"L", "LA", "RGB", "RGBA"}


def _run(tmp_path, backend, files, fakefal, fal_daemons, daemons, tls_files, **folder):
    """Drop ``files`` at once into one inbox; return (daemon, fake server or None) once every
    job has finished."""
    inbox = tmp_path / "in"
    inbox.mkdir()
    top = {"backend": backend, "concurrency": 4}
    server = None
    if backend == "fal":
        server = fakefal(latency=0.05, runners=8)
        top["fal"] = {"timeout": 60}
    # Files cut short wait incomplete_grace for the rest to arrive; a second here.
    config = write_config(tmp_path, [{"name": "odd", "inbox": "in", "outbox": "out",
                                      "incomplete_grace": 1, **folder}], **top)
    d = (fal_daemons(config, fal_env(server, tls_files)) if server else daemons(config)).ready()
    for name, data, _ in files:
        tmp = inbox / f".part-{name}"
        tmp.write_bytes(data)
        os.replace(tmp, inbox / name)

    def finished():
        return len(d.named("job_done")) + len(d.named("job_failed")) >= len(files)

    wait_for(finished, 90, "every corpus file to finish\n" + d.text()[-3000:])
    return d, server


@pytest.mark.parametrize("backend", ["local", "fal"])
def test_every_odd_file_becomes_a_sound_output_or_a_plain_failure(
        tmp_path, backend, fakefal, fal_daemons, daemons, tls_files):
    """Each mode and layout (1-bit fax, 2/4-bit grey, palette, Lab, CMYK 8/16, 16-bit RGB(A)
    and grey in either byte order, 32-bit int and float, planar, tiled and multipage TIFF),
    malformed and oversized EXIF, an ICC profile that does not parse, truncated and
    zero-padded files: outputs decode at twice the input's size in a sane mode, failures have
    a reason and cost nothing, no internal errors, and nothing is retried more than
    retry.attempts times."""
    files = corpus()
    d, server = _run(tmp_path, backend, files, fakefal, fal_daemons, daemons, tls_files)
    out, failed = tmp_path / "out", tmp_path / "in" / "failed"
    outputs = 0
    for name, _, expected in files:
        stem = name.rsplit(".", 1)[0]
        made = [p for p in out.glob(f"{stem}_x2.*")]
        if expected == "ok":
            assert len(made) == 1, f"{name}: outputs {made}\n{d.text()[-2000:]}"
            with Image.open(made[0]) as im:
                im.load()
                assert im.size == (2 * W, 2 * H), f"{name}: {im.size}"
                assert im.mode in SANE, f"{name}: mode {im.mode}"
            outputs += 1
        else:
            assert not made, f"{name} should have failed"
            report = json.loads((failed / f"{name}.error.json").read_text())
            assert report["reason"] and report["error"] != "internal", report
    events = d.events()
    assert not [e for e in events if e.get("event") == "job_internal_error"]
    assert not [e for e in events if e.get("error") == "internal"]
    retries: dict[int, int] = {}
    for e in events:
        if e.get("event") == "job_retry_scheduled":
            retries[e["job_id"]] = retries.get(e["job_id"], 0) + 1
    assert all(n <= 3 for n in retries.values()), retries  # retry.attempts is 3 in tests
    dropped = {e["file"]: e["dropped"] for e in events if e.get("event") == "metadata_dropped"}
    assert "0x011a" in " ".join(dropped["bad-exif.jpg"])
    assert "ICC" in " ".join(dropped["bad-icc.jpg"])
    if server is not None:
        billed = [row for row in server.ledger if row["outcome"] == "ok"]
        assert len(billed) == outputs == len(server.submissions)


def _mean_difference(a: Image.Image, b: Image.Image) -> float:
    return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) / len(a.getbands())


@pytest.mark.parametrize("backend", ["local", "fal"])
def test_tiff_outputs_are_valid_with_pixels_where_they_were(
        tmp_path, backend, fakefal, fal_daemons, daemons, tls_files):
    """8-bit RGB LZW, 8-bit grey and 16-bit grey TIFFs (little- and big-endian) come out as
    TIFFs of 240×160 whose pixels, scaled back down, match the input (a header that
    disagrees with its strips would scramble them)."""
    names = (("rgb-lzw", "RGB"), ("grey-8", "L"), ("grey-16", "L"), ("grey-16-be", "L"),
             ("rgb-16-be", "RGB"))
    files = [f for f in corpus() if f[0] in {f"{name}.tif" for name, _ in names}]
    _run(tmp_path, backend, files, fakefal, fal_daemons, daemons, tls_files)
    reference = picture()
    for name, mode in names:
        path = tmp_path / "out" / f"{name}_x2.tif"
        with Image.open(path) as im:
            assert im.format == "TIFF" and im.size == (240, 160) and im.mode == mode, name
            small = im.resize((W, H), Image.Resampling.BOX)
        assert _mean_difference(small, reference.convert(mode)) < 8, name
