"""Files that do not decode yet are still arriving: copies that set their size first and
stall, files truncated for good, and clean files that must not wait (the real CLI)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import time
from datetime import datetime
from pathlib import Path

from conftest import cli, fal_env, images_in, write_config
from PIL import Image, ImageChops, ImageStat
from test_e2e_fal import fal_config


def photo(size=(240, 160), seed=1, fmt="JPEG") -> bytes:
    """A noisy picture: its JPEG half written into a zero-filled file still decodes (as
    grey blocks), so only the completeness checks can tell."""
    rng = random.Random(seed)
    image = Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3))
    buffer = io.BytesIO()
    image.save(buffer, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def _at(event: dict) -> float:
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


def _status(config: Path) -> tuple[dict, str]:
    report = cli("status", "--json", "--config", str(config))
    plain = cli("status", "--config", str(config))
    data = json.loads(report.stdout)
    expected = 0 if data["daemon_running"] else 3  # status exits 3 when no daemon runs
    assert report.returncode == expected and plain.returncode == expected, \
        report.stderr + plain.stderr
    return data, plain.stdout


def _failed(inbox: Path) -> list[str]:
    failed = inbox / "failed"
    return sorted(p.name for p in failed.iterdir()) if failed.exists() else []


def test_copy_that_sets_its_size_first_and_stalls_is_submitted_once_complete(
        tmp_path, fakefal, fal_daemons, tls_files):
    """A writer sets the final size (the rest zeros), writes half, stalls for longer than
    settle, then writes the rest: the daemon waits (file_incomplete_waiting, status shows it
    arriving, nothing failed or submitted), then makes one output of the complete picture;
    the fake fal's ledger shows exactly one run, for the complete file's content."""
    server = fakefal(latency=0.1)
    config = fal_config(tmp_path, [{"inbox": "in", "outbox": "out", "settle": 0.4,
                                    "incomplete_grace": 120}])
    d = fal_daemons(config, fal_env(server, tls_files)).ready()
    complete = photo()
    half = len(complete) // 2
    inbox = tmp_path / "in"
    with open(inbox / "copy.jpg", "wb") as fh:
        fh.truncate(len(complete))  # the final size first, as SMB clients do
        fh.write(complete[:half])
        fh.flush()
        waiting = d.wait_event("file_incomplete_waiting")[0]
        assert waiting["file"] == "copy.jpg" and "FFD9" in waiting["reason"]
        report, plain = _status(config)
        assert report["folders"]["in"]["arriving"] == 1
        assert report["folders"]["in"]["queued"] == 0 and report["folders"]["in"]["failed"] == 0
        assert [a["file"] for a in report["arriving"]] == ["copy.jpg"]
        assert "arriving" in plain and "copy.jpg" in plain
        time.sleep(1.0)  # stalled for well over settle: still waiting, nothing sent
        assert server.submissions == [] and _failed(inbox) == []
        fh.write(complete[half:])
    d.wait_event("job_done", timeout=30)
    assert _failed(inbox) == [] and not d.named("job_failed")
    assert len(d.named("file_incomplete_waiting")) == 1
    assert images_in(tmp_path / "out") == {"copy_x2.jpg": (480, 320)}
    assert [(row["input_sha256"], row["outcome"]) for row in server.ledger] == \
        [(hashlib.sha256(complete).hexdigest(), "ok")]
    assert len(server.submissions) == 1
    expected = Image.open(io.BytesIO(complete)).convert("RGB").resize(
        (480, 320), Image.Resampling.BILINEAR)
    with Image.open(tmp_path / "out/copy_x2.jpg") as out:
        # The lower half is where a half-written file would hold grey blocks.
        box = (0, 200, 480, 320)
        diff = ImageStat.Stat(ImageChops.difference(out.convert("RGB").crop(box),
                                                    expected.crop(box))).mean
    assert max(diff) < 12, diff
    report, _ = _status(config)
    assert report["folders"]["in"]["arriving"] == 0 and report["arriving"] == []
    assert d.stop() == 0


def test_file_truncated_for_good_fails_after_the_grace_with_todays_reason(tmp_path, daemons):
    """A file written half and never finished waits out incomplete_grace (nothing moved
    meanwhile), then goes to failed_dir with a plain reason that says the data is damaged or
    incomplete and names the decoder's finding, the same in the log and its .error.json."""
    grace = 3.0
    config = write_config(tmp_path, [{"inbox": "in", "outbox": "out",
                                      "incomplete_grace": grace}])
    d = daemons(config).ready()
    cut = photo(seed=2)[:6000]
    (tmp_path / "in/cut.jpg").write_bytes(cut)
    waiting = d.wait_event("file_incomplete_waiting")[0]
    reason = waiting["reason"]
    # The plain words, and Pillow's own finding for a JPEG cut short ("image file is
    # truncated …"), so the user can tell what was wrong.
    assert reason.startswith("the image data is damaged or incomplete: ")
    assert "truncated" in reason
    assert (tmp_path / "in/cut.jpg").exists() and _failed(tmp_path / "in") == []
    failed = d.wait_event("job_failed", timeout=20)[0]
    queued = d.named("file_queued")[0]
    assert _at(failed) - _at(queued) >= grace - 0.1
    assert (failed["error"], failed["reason"]) == ("corrupt_image", reason)
    assert _failed(tmp_path / "in") == ["cut.jpg", "cut.jpg.error.json"]
    report = json.loads((tmp_path / "in/failed/cut.jpg.error.json").read_text())
    assert report["reason"] == reason and report["error"] == "corrupt_image"
    assert len(d.named("file_incomplete_waiting")) == 1
    assert d.stop() == 0


def test_clean_files_are_not_delayed(tmp_path, daemons):
    """With the default grace (300 s), files that decode cleanly go straight through: plain
    JPEG, PNG, WebP, a JPEG zero-padded after its end marker, and one with a large trailer
    after it (as phones append a video)."""
    config = write_config(tmp_path, [{"inbox": "in", "outbox": "out"}])
    d = daemons(config).ready()
    inbox = tmp_path / "in"
    files = {
        "plain.jpg": photo(seed=3),
        "plain.png": photo(seed=4, fmt="PNG"),
        "plain.webp": photo(seed=5, fmt="WEBP"),
        "padded.jpg": photo(seed=6) + bytes(16_384),
        "motion.jpg": photo(seed=7) + bytes(range(1, 255)) * 2000,
    }
    for name, data in files.items():
        (inbox / ("." + name)).write_bytes(data)
        os.rename(inbox / ("." + name), inbox / name)
    d.wait_event("job_done", len(files), timeout=20)
    assert not d.named("file_incomplete_waiting") and not d.named("job_failed")
    done = {e["file"]: _at(e) for e in d.named("job_done")}
    queued = {e["file"]: _at(e) for e in d.named("file_queued")}
    assert all(done[name] - queued[name] < 10 for name in files)
    assert len(images_in(tmp_path / "out")) == len(files)
    assert d.stop() == 0


def test_arriving_files_survive_a_restart(tmp_path, daemons):
    """Stopped while two files are arriving: status (daemon stopped) still shows them.
    One is finished while the daemon is down and is processed after the restart; the other
    never is and fails once its grace has run out — in the new process."""
    config = write_config(tmp_path, [{"inbox": "in", "outbox": "out", "incomplete_grace": 4}])
    d1 = daemons(config).ready()
    inbox = tmp_path / "in"
    finished, abandoned = photo(seed=8, fmt="PNG"), photo(seed=9)
    for name, data in (("finished.png", finished), ("abandoned.jpg", abandoned)):
        with open(inbox / name, "wb") as fh:
            fh.truncate(len(data))
            fh.write(data[: len(data) // 2])
    d1.wait_event("file_incomplete_waiting", 2)
    assert d1.stop() == 0
    assert not d1.named("job_failed")
    report, plain = _status(config)
    assert report["daemon_running"] is False and report["folders"]["in"]["arriving"] == 2
    with open(inbox / "finished.png", "r+b") as fh:
        fh.seek(len(finished) // 2)
        fh.write(finished[len(finished) // 2:])
    d2 = daemons(config).ready()
    d2.wait_event("job_done", timeout=20)
    failed = d2.wait_event("job_failed", timeout=20)[0]
    assert failed["file"] == "abandoned.jpg" and failed["error"] == "corrupt_image"
    assert "FFD9" in failed["reason"]
    assert set(images_in(tmp_path / "out")) == {"finished_x2.png"}
    assert _failed(inbox) == ["abandoned.jpg", "abandoned.jpg.error.json"]
    report, _ = _status(config)
    assert report["folders"]["in"]["arriving"] == 0
    assert report["folders"]["in"]["done"] == 1 and report["folders"]["in"]["failed"] == 1
    assert d2.stop() == 0
