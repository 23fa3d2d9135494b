"""The real CLI in a subprocess, a real watchdog observer on tmp_path, real SQLite."""

from __future__ import annotations

import json
import os
import signal
import time

from conftest import cli, hidden_files, images_in, make_image, wait_for, write_config
from PIL import Image


def test_several_folders_get_their_own_names_sizes_and_formats(tmp_path, daemons):
    """Each folder's scale, output_format and filename template decide its outputs."""
    config = write_config(tmp_path, [
        {"name": "plain", "inbox": "in/plain", "outbox": "out/plain"},
        {"name": "big", "inbox": "in/big", "outbox": "out/big", "scale_factor": 3,
         "output_format": "png", "filename": "{folder}-{name}-x{scale}.{ext}"},
        {"name": "half", "inbox": "in/half", "outbox": "out/half", "scale_factor": 1.5,
         "output_format": "webp"},
    ])
    d = daemons(config).ready()
    make_image(tmp_path / "in/plain/face.jpg", (40, 30))
    make_image(tmp_path / "in/big/shoe.png", (21, 10))
    make_image(tmp_path / "in/half/cat.jpg", (30, 20))
    d.wait_event("job_done", 3)
    assert images_in(tmp_path / "out/plain") == {"face_x2.jpg": (80, 60)}
    assert images_in(tmp_path / "out/big") == {"big-shoe.png-x3.png": (63, 30)}
    assert images_in(tmp_path / "out/half") == {"cat_x1.5.webp": (45, 30)}
    with Image.open(tmp_path / "out/half/cat_x1.5.webp") as im:
        assert im.format == "WEBP"
    assert d.stop() == 0


def test_slowly_written_file_is_taken_once_and_complete(tmp_path, daemons):
    """A file written in chunks over ~3 s (longer than settle) becomes one job, whole."""
    # settle is four times the pause between chunks, so a loaded machine delaying this
    # writer cannot make the file look complete early.
    config = write_config(tmp_path, [{"inbox": "in", "outbox": "out", "settle": 2.0}])
    d = daemons(config).ready()
    source = make_image(tmp_path / "src.png", (300, 200), fmt="PNG", compress_level=0)
    data = source.read_bytes()
    chunks = [data[i:i + len(data) // 6 + 1] for i in range(0, len(data), len(data) // 6 + 1)]
    target = tmp_path / "in" / "slow.png"
    for chunk in chunks:  # reopen and append, like an SMB copy or a phone upload
        with open(target, "ab") as fh:
            fh.write(chunk)
        time.sleep(0.5)
    d.wait_event("job_done")
    time.sleep(1.5)
    assert len(d.named("file_queued")) == 1
    assert not d.named("job_failed")
    assert images_in(tmp_path / "out") == {"slow_x2.png": (600, 400)}
    assert d.stop() == 0


def test_temporary_and_metadata_names_are_ignored(tmp_path, daemons):
    """Sync-tool temporaries, hidden files, disallowed extensions and NAS thumbnail folders
    produce no job; the real image beside them produces exactly one."""
    config = write_config(tmp_path, [{"inbox": "in", "outbox": "out", "recursive": True}])
    d = daemons(config).ready()
    inbox = tmp_path / "in"
    for name in (".face.jpg.Ab12Cd", ".syncthing.face.jpg.tmp", "~syncthing~face.jpg.tmp",
                 ".face.jpg.~1a2b3c", "face.jpg.part", "face.jpg.crdownload", "face.jpg.!sync",
                 "._face.jpg", "~$face.jpg", "notes.txt", "@eaDir/face.jpg/SYNOFILE_THUMB_M.jpg",
                 "#recycle/old.jpg", ".stversions/face.jpg", "sub/.hidden.jpg"):
        make_image(inbox / name, fmt="JPEG")
    (inbox / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    make_image(inbox / "sub" / "real.jpg")
    d.wait_event("job_done")
    time.sleep(1.0)  # anything wrongly taken would be queued by now
    queued = [e["file"] for e in d.named("file_queued")]
    assert queued == ["sub/real.jpg"]
    assert images_in(tmp_path / "out") == {"sub/real_x2.jpg": (80, 60)}
    assert d.stop() == 0


def test_restart_skips_done_work_and_takes_files_dropped_while_down(tmp_path, daemons):
    """After a restart nothing done is redone, and files that arrived meanwhile are processed."""
    config = write_config(tmp_path, [{"inbox": "in", "outbox": "out"}])
    d = daemons(config).ready()
    make_image(tmp_path / "in/one.jpg")
    d.wait_event("job_done")
    assert d.stop() == 0
    make_image(tmp_path / "in/two.jpg", (10, 12))  # dropped while the daemon is down
    d2 = daemons(config).ready()
    d2.wait_event("job_done")
    time.sleep(1.0)
    assert [e["file"] for e in d2.named("file_queued")] == ["two.jpg"]
    assert images_in(tmp_path / "out") == {"one_x2.jpg": (80, 60), "two_x2.jpg": (20, 24)}
    assert d2.stop() == 0


def test_corrupt_file_fails_with_reason_while_others_succeed(tmp_path, daemons):
    """A truncated JPEG and a text file named .jpg go to failed_dir with a readable reason;
    the good image beside them is processed and the daemon keeps running. (The truncated
    one first waits out a short incomplete_grace: it might still be arriving.)"""
    config = write_config(tmp_path, [{"inbox": "in", "outbox": "out", "incomplete_grace": 1}])
    d = daemons(config).ready()
    noisy = Image.frombytes("RGB", (200, 150), os.urandom(200 * 150 * 3))
    noisy.save(tmp_path / "src.jpg", quality=90)
    good = (tmp_path / "src.jpg").read_bytes()
    (tmp_path / "in/truncated.jpg").write_bytes(good[: len(good) // 2])
    (tmp_path / "in/text.jpg").write_text("this is not an image\n")
    make_image(tmp_path / "in/good.jpg")
    d.wait_event("job_failed", 2)
    d.wait_event("job_done", 1)
    failed = tmp_path / "in/failed"
    assert sorted(p.name for p in failed.iterdir()) == [
        "text.jpg", "text.jpg.error.json", "truncated.jpg", "truncated.jpg.error.json"]
    text_report = json.loads((failed / "text.jpg.error.json").read_text())
    assert text_report["error"] == "not_an_image" and "not an image" in text_report["reason"]
    trunc_report = json.loads((failed / "truncated.jpg.error.json").read_text())
    assert trunc_report["error"] == "corrupt_image"
    assert images_in(tmp_path / "out") == {"good_x2.jpg": (80, 60)}
    make_image(tmp_path / "in/after.jpg")  # still running and still working
    d.wait_event("job_done", 2)
    assert d.stop() == 0


def test_identical_content_is_copied_not_processed_again(tmp_path, daemons):
    """The same bytes under another name in the same folder reuse the earlier output."""
    config = write_config(tmp_path, [{"inbox": "in", "outbox": "out"}])
    d = daemons(config).ready()
    first = make_image(tmp_path / "in/a.jpg", (33, 22))
    d.wait_event("job_done")
    (tmp_path / "in/b.jpg").write_bytes(first.read_bytes())
    d.wait_event("job_done", 2)
    dedup = d.named("job_deduplicated")
    assert len(dedup) == 1 and dedup[0]["file"] == "b.jpg"
    out = tmp_path / "out"
    assert (out / "a_x2.jpg").read_bytes() == (out / "b_x2.jpg").read_bytes()
    assert d.stop() == 0


def test_sigterm_mid_backlog_exits_zero_and_leaves_no_partial_output(tmp_path, daemons):
    """SIGTERM while jobs run: exit 0, no temp or partial file in the outbox, and the next
    start finishes the rest with every output decodable."""
    config = write_config(tmp_path, [{"inbox": "in", "outbox": "out", "scale_factor": 6,
                                      "settle": 0.2}], concurrency=2)
    for i in range(12):
        make_image(tmp_path / f"in/img{i:02d}.png", (400, 300), color=f"#{i * 20:02x}4080",
                   fmt="PNG")
    d = daemons(config).ready()
    d.wait_event("job_started", 1)
    assert d.stop() == 0
    assert hidden_files(tmp_path / "out") == []
    done_before = len(images_in(tmp_path / "out"))  # every visible file decodes
    d2 = daemons(config).ready()
    d2.wait_event("job_done", 12 - done_before, timeout=60)
    assert len(images_in(tmp_path / "out")) == 12
    assert all(size == (2400, 1800) for size in images_in(tmp_path / "out").values())
    assert d2.stop() == 0


def test_once_processes_then_exits_with_failures_counted(tmp_path):
    """``once`` handles what is there, exits 1 if a file failed, 0 when all succeeded."""
    # grace 0: the cut-off PNG is judged at once (``once`` never waits out a grace; a file
    # still within it makes ``once`` exit 75, see test_once_cron.py)
    config = write_config(tmp_path, [{"inbox": "in", "outbox": "out", "settle": 0.1,
                                      "incomplete_grace": 0}])
    make_image(tmp_path / "in/ok.jpg")
    (tmp_path / "in/bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    result = cli("once", "--config", str(config))
    assert result.returncode == 1, result.stderr
    assert images_in(tmp_path / "out") == {"ok_x2.jpg": (80, 60)}
    make_image(tmp_path / "in/later.jpg")
    result = cli("once", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert set(images_in(tmp_path / "out")) == {"ok_x2.jpg", "later_x2.jpg"}


def test_originals_move_and_delete(tmp_path, daemons):
    """After success, ``move`` puts the original in done_dir and ``delete`` removes it."""
    config = write_config(tmp_path, [
        {"name": "m", "inbox": "in/m", "outbox": "out/m", "originals": "move",
         "done_dir": "archive"},
        {"name": "d", "inbox": "in/d", "outbox": "out/d", "originals": "delete"},
    ])
    d = daemons(config).ready()
    make_image(tmp_path / "in/m/x.jpg")
    make_image(tmp_path / "in/d/y.jpg")
    d.wait_event("job_done", 2)
    wait_for(lambda: not (tmp_path / "in/d/y.jpg").exists(), 5, "delete")
    assert (tmp_path / "archive/x.jpg").exists() and not (tmp_path / "in/m/x.jpg").exists()
    assert set(images_in(tmp_path / "out")) == {"m/x_x2.jpg", "d/y_x2.jpg"}
    assert d.stop() == 0


def test_name_collisions_never_overwrite(tmp_path, daemons):
    """With overwrite off, an existing output name gets -1; nothing is replaced."""
    config = write_config(tmp_path, [{"inbox": "in", "outbox": "out"}])
    (tmp_path / "out").mkdir()
    (tmp_path / "out/face_x2.jpg").write_bytes(b"keep me")
    d = daemons(config).ready()
    make_image(tmp_path / "in/face.jpg")
    d.wait_event("job_done")
    assert (tmp_path / "out/face_x2.jpg").read_bytes() == b"keep me"
    with Image.open(tmp_path / "out/face_x2-1.jpg") as im:
        assert im.size == (80, 60)
    assert d.stop() == 0


def test_status_and_retry_bring_a_failed_file_back(tmp_path, daemons):
    """``status --json`` counts done/failed per folder; ``retry`` moves a failed original back
    into the inbox and the running daemon processes it."""
    config = write_config(tmp_path, [{"inbox": "in", "outbox": "out"}])
    d = daemons(config).ready()
    make_image(tmp_path / "in/fine.jpg")
    (tmp_path / "in/later.jpg").write_bytes(b"not yet an image")
    d.wait_event("job_failed")
    d.wait_event("job_done")
    report = json.loads(cli("status", "--json", "--config", str(config)).stdout)
    assert report["daemon_running"] is True
    assert report["folders"]["in"]["done"] == 1 and report["folders"]["in"]["failed"] == 1
    assert report["last_errors"][0]["error"] == "not_an_image"
    make_image(tmp_path / "in/failed/later.jpg")  # the user fixes the file in place
    result = cli("retry", "--config", str(config), str(tmp_path / "in/failed/later.jpg"))
    assert result.returncode == 0 and "later.jpg" in result.stdout
    assert not (tmp_path / "in/failed/later.jpg.error.json").exists()
    d.wait_event("job_done", 2)
    assert set(images_in(tmp_path / "out")) == {"fine_x2.jpg", "later_x2.jpg"}
    assert d.stop() == 0


def test_second_daemon_on_same_state_dir_refuses(tmp_path, daemons):
    """Two daemons on one journal: the second exits non-zero with a clear message."""
    config = write_config(tmp_path, [{"inbox": "in", "outbox": "out"}])
    daemons(config).ready()
    result = cli("run", "--config", str(config), timeout=20)
    assert result.returncode == 1
    assert "already using" in result.stderr


def test_sigint_stops_gracefully_without_a_traceback(tmp_path, daemons):
    """One SIGINT (Ctrl-C) on an idle daemon starts a graceful stop; the daemon exits 0
    without a traceback. (A second SIGINT during work: test_e2e_service.)"""
    config = write_config(tmp_path, [{"inbox": "in", "outbox": "out"}])
    d = daemons(config).ready()
    os.kill(d.proc.pid, signal.SIGINT)
    assert d.proc.wait(timeout=20) == 0
    assert "Traceback" not in d.text()
