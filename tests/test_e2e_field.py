"""Hard cases from the field: odd writers, moves, hostile inputs, limits, vanishing shares."""

from __future__ import annotations

import ctypes
import io
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import Daemon, hidden_files, images_in, make_image, write_config
from PIL import Image
from realparts import need_command
from test_images import png_bomb


def _slow_write(path: Path, data: bytes, chunks: int = 3, pause: float = 0.15) -> None:
    step = len(data) // chunks + 1
    with open(path, "wb") as fh:
        for i in range(0, len(data), step):
            fh.write(data[i:i + step])
            fh.flush()
            time.sleep(pause)


def _png(size=(24, 16), color="purple") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def test_sync_tools_and_downloaders_yield_one_job_per_image(tmp_path, daemons):
    """rsync, Syncthing, Nextcloud, Resilio and browsers write under a temporary name and then
    rename; macOS and Synology add metadata files. Each real image is exactly one job."""
    config = write_config(tmp_path, [{"inbox": "in", "outbox": "out", "recursive": True}])
    d = daemons(config).ready()
    inbox = tmp_path / "in"
    writers = {  # temporary name → final name
        ".rsync.jpg.Xa12bC": "rsync.jpg",
        ".syncthing.st1.jpg.tmp": "st1.jpg",
        "~syncthing~st2.jpg.tmp": "st2.jpg",
        ".nc1.jpg.~4f2a9c": "nc1.jpg",
        "nc2.jpg.part": "nc2.jpg",
        "resilio.jpg.!sync": "resilio.jpg",
        "browser.jpg.crdownload": "browser.jpg",
    }
    for i, (temp, final) in enumerate(writers.items()):
        buffer = io.BytesIO()
        Image.new("RGB", (20 + i, 10), "teal").save(buffer, "JPEG")
        _slow_write(inbox / temp, buffer.getvalue())
        os.rename(inbox / temp, inbox / final)
    (inbox / "._rsync.jpg").write_bytes(b"\0\5\26\7 AppleDouble")
    (inbox / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    make_image(inbox / "@eaDir/rsync.jpg/SYNOFILE_THUMB_XL.jpg")
    d.wait_event("job_done", len(writers))
    time.sleep(1.0)
    queued = sorted(e["file"] for e in d.named("file_queued"))
    assert queued == sorted(writers.values())
    assert len(images_in(tmp_path / "out")) == len(writers)
    assert d.stop() == 0


def test_real_rsync_copy_is_one_job(tmp_path, daemons):
    """A real rsync (temp file, then rename) into the inbox gives one complete job."""
    rsync = need_command("rsync", "apt-get install rsync")
    config = write_config(tmp_path, [{"inbox": "in", "outbox": "out"}])
    d = daemons(config).ready()
    src = tmp_path / "src"
    make_image(src / "synced.png", (200, 120), fmt="PNG")
    subprocess.run([rsync, "-a", f"{src}/", f"{tmp_path / 'in'}/"], check=True)
    d.wait_event("job_done")
    time.sleep(1.0)
    assert [e["file"] for e in d.named("file_queued")] == ["synced.png"]
    assert images_in(tmp_path / "out") == {"synced_x2.png": (400, 240)}
    assert d.stop() == 0


def test_file_written_over_ten_seconds_is_taken_once_complete(tmp_path, daemons):
    """A phone-upload-like writer appends a chunk a second for 10 s; settle is 2.5 s (room
    for this writer to be delayed on a loaded machine without the file looking complete)."""
    config = write_config(tmp_path, [{"inbox": "in", "outbox": "out", "settle": 2.5}])
    d = daemons(config).ready()
    data = make_image(tmp_path / "src.png", (400, 300), fmt="PNG", compress_level=0).read_bytes()
    step = len(data) // 10 + 1
    target = tmp_path / "in" / "upload.png"
    for i in range(0, len(data), step):
        with open(target, "ab") as fh:
            fh.write(data[i:i + step])
        time.sleep(1.0)
    d.wait_event("job_done", timeout=30)
    time.sleep(2.0)
    assert len(d.named("file_queued")) == 1 and not d.named("job_failed")
    assert images_in(tmp_path / "out") == {"upload_x2.png": (800, 600)}
    assert d.stop() == 0


def test_moves_renames_and_deletions(tmp_path, daemons):
    """A file moved in from elsewhere (no write events) is taken; one renamed before it
    settled is taken once under its new name; one deleted before it settled is forgotten."""
    # settle is well above the 0.3 s before the rename and the deletion, so a loaded machine
    # delaying this test cannot let either file settle first.
    config = write_config(tmp_path, [{"inbox": "in", "outbox": "out", "settle": 2.0}])
    d = daemons(config).ready()
    outside = make_image(tmp_path / "elsewhere/moved.jpg", (12, 12))
    os.rename(outside, tmp_path / "in/moved.jpg")
    (tmp_path / "in/draft.png").write_bytes(_png())
    time.sleep(0.3)
    os.rename(tmp_path / "in/draft.png", tmp_path / "in/final.png")
    (tmp_path / "in/gone.png").write_bytes(_png(color="yellow"))
    time.sleep(0.3)
    (tmp_path / "in/gone.png").unlink()
    d.wait_event("job_done", 2)
    time.sleep(1.5)
    assert sorted(e["file"] for e in d.named("file_queued")) == ["final.png", "moved.jpg"]
    assert set(images_in(tmp_path / "out")) == {"final_x2.png", "moved_x2.jpg"}
    assert not d.named("job_failed") and "Traceback" not in d.text()
    assert d.stop() == 0


def test_hostile_inputs_never_crash_and_each_gets_a_plain_outcome(tmp_path, daemons):
    """Empty files wait; non-images, bombs fail with reasons; animated, 16-bit, CMYK, grey
    and alpha images work (first frame, alpha kept); odd and over-long names work; links out
    of the inbox and directories named like images are ignored."""
    config = write_config(tmp_path, [{"inbox": "in", "outbox": "out", "output_format": "png"}])
    d = daemons(config).ready()
    inbox = tmp_path / "in"
    (inbox / "empty.jpg").touch()
    (inbox / "text.jpg").write_text("plain text\n")
    (inbox / "bomb.png").write_bytes(png_bomb(60_000, 60_000))
    frames = [Image.new("RGB", (10, 8), c) for c in ("red", "green", "blue")]
    frames[0].save(inbox / "anim.webp", save_all=True, append_images=frames[1:])
    Image.new("I;16", (9, 9), 40000).save(inbox / "deep.tif")
    Image.new("CMYK", (9, 9), (0, 200, 200, 0)).save(inbox / "print.tiff")
    Image.new("L", (9, 9), 128).save(inbox / "grey.jpg")
    Image.new("RGBA", (9, 9), (0, 0, 255, 60)).save(inbox / "alpha.png")
    odd_names = [os.fsdecode(b"caf\xe9-latin1.png"), "with space 'quote\" and\nnewline.png",
                 "l" + "o" * 240 + "ng.png"]
    for name in odd_names:
        (inbox / name).write_bytes(_png(color="orange"))
    secret = make_image(tmp_path / "outside/secret.jpg")
    os.symlink(secret, inbox / "link.jpg")
    (inbox / "folder.jpg").mkdir()
    d.wait_event("job_failed", 2)
    d.wait_event("job_done", 5 + len(odd_names))
    time.sleep(1.0)
    failures = {e["file"]: e["error"] for e in d.named("job_failed")}
    assert failures == {"text.jpg": "not_an_image", "bomb.png": "input_too_large"}
    out = images_in(tmp_path / "out")
    assert out["anim_x2.png"] == (20, 16) and d.named("animated_first_frame_only")
    assert out["deep_x2.png"] == (18, 18) and out["print_x2.png"] == (18, 18)
    with Image.open(tmp_path / "out/alpha_x2.png") as im:
        assert im.mode == "RGBA" and im.getpixel((3, 3))[3] == 60
    with Image.open(tmp_path / "out/grey_x2.png") as im:
        assert im.mode == "L"
    assert os.fsdecode(b"caf\xe9-latin1_x2.png") in out
    assert "with space 'quote\" and\nnewline_x2.png" in out
    assert any(name.startswith("looo") and len(os.fsencode(name)) <= 255 for name in out)
    assert "link_x2.png" not in out and "folder_x2.png" not in out
    assert (inbox / "empty.jpg").exists()  # waits for content, not failed
    assert d.proc.poll() is None and "Traceback" not in d.text()
    assert d.stop() == 0


def test_full_outbox_waits_and_retries_without_partial_files(tmp_path, daemons):
    """With writes capped (RLIMIT_FSIZE) the job waits and retries, leaves no partial file
    and keeps the original; lifting the cap lets it finish."""
    config = write_config(tmp_path, [{"inbox": "in", "outbox": "out"}],
                          retry={"attempts": 2, "backoff": 0.2, "max_backoff": 0.5})
    limit = 2_000_000

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    d = Daemon(config, preexec_fn=cap).ready()
    try:
        noisy = Image.frombytes("RGB", (700, 500), os.urandom(700 * 500 * 3))
        noisy.save(tmp_path / "src.png")
        original = (tmp_path / "src.png").read_bytes()
        (tmp_path / "in/noise.png").write_bytes(original)  # output PNG ≈ 4 MB > cap
        d.wait_event("job_waiting_for_outbox", 3)
        assert images_in(tmp_path / "out") == {} and hidden_files(tmp_path / "out") == []
        assert (tmp_path / "in/noise.png").read_bytes() == original
        assert not d.named("job_failed")  # more waits than retry.attempts, never failed
        resource.prlimit(d.proc.pid, resource.RLIMIT_FSIZE,
                         (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        d.wait_event("job_done", timeout=20)
        assert images_in(tmp_path / "out") == {"noise_x2.png": (1400, 1000)}
        assert d.stop() == 0
    finally:
        d.kill()


def _without_root_powers() -> tuple[str, ...]:
    """As root, permissions do not apply; drop the capabilities that bypass them."""
    if os.geteuid() != 0:
        return ()
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: permissions cannot be made to apply")
    return ("setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner", "--")


def test_unreadable_file_reported_once_and_unwritable_outbox_waits(tmp_path):
    """Permission denied on an input is logged once (not in a loop, and not failed); an
    outbox the daemon cannot write to makes jobs wait, and they finish once it is fixed."""
    (tmp_path / "out").mkdir(mode=0o555)
    config = write_config(tmp_path, [{"inbox": "in", "outbox": "out"}], rescan_interval=1,
                          retry={"attempts": 2, "backoff": 0.2, "max_backoff": 0.5})
    d = Daemon(config, wrapper=_without_root_powers()).ready()
    try:
        make_image(tmp_path / "in/locked.jpg").chmod(0o000)
        make_image(tmp_path / "in/open.jpg")
        d.wait_event("file_unreadable")
        d.wait_event("job_waiting_for_outbox", 2)
        time.sleep(2.5)  # at least two more rescans (rescan_interval 1 s)
        assert len(d.named("file_unreadable")) == 1
        assert not d.named("job_failed")
        (tmp_path / "out").chmod(0o755)
        d.wait_event("job_done", timeout=20)
        assert set(images_in(tmp_path / "out")) == {"open_x2.jpg"}
        assert d.stop() == 0
    finally:
        d.kill()
        (tmp_path / "in/locked.jpg").chmod(0o644)


#: Runs the daemon in its own user namespace where no inotify instance may be created:
#: the kernel's real EMFILE, without touching the limit every other process of this user
#: (other tests, other people's daemons on a shared machine) depends on.
_NO_INOTIFY = ("unshare", "--user", "--map-root-user", "sh", "-c",
               'echo 0 > /proc/sys/user/max_inotify_instances && exec "$@"', "sh")


def _user_namespaces_work() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run([*_NO_INOTIFY, "true"], capture_output=True)
    return probe.returncode == 0


def test_inotify_exhaustion_falls_back_to_polling(tmp_path):
    """With no inotify instance left for this user (EMFILE), the folder is polled instead, the
    log names the sysctl that limits instances (not the one for watches), and files are still
    processed."""
    config = write_config(tmp_path, [{"inbox": "in", "outbox": "out"}])
    hogged = []
    if _user_namespaces_work():
        d = Daemon(config, wrapper=_NO_INOTIFY)
    else:  # no user namespaces: use up this user's instances for the daemon's start
        libc = ctypes.CDLL(None, use_errno=True)
        while (fd := libc.inotify_init()) >= 0:
            hogged.append(fd)
            if len(hogged) > 10_000:
                for fd in hogged:
                    os.close(fd)
                pytest.skip("no per-user inotify instance limit here, and no user namespaces "
                            "(unshare --user) to set one")
        d = Daemon(config)
    try:
        try:
            d.ready()
        finally:
            for fd in hogged:
                os.close(fd)
        event = d.named("inotify_limit_reached")
        assert event and "fs.inotify.max_user_instances" in event[0]["hint"]
        assert "max_user_watches" not in event[0]["hint"]
        assert d.named("folder_watched")[0]["mode"] == "polling-fallback"
        make_image(tmp_path / "in/polled.jpg")
        d.wait_event("job_done", timeout=30)
        assert d.stop() == 0
    finally:
        d.kill()


def test_unmounted_share_pauses_and_resumes_without_loss(tmp_path, daemons):
    """The inbox vanishes (share unmounted) and comes back: the folder pauses and resumes;
    nothing is failed and nothing done is processed again."""
    config = write_config(tmp_path, [{"inbox": "share/in", "outbox": "out"}])
    d = daemons(config).ready()
    make_image(tmp_path / "share/in/before.jpg")
    d.wait_event("job_done")
    os.rename(tmp_path / "share", tmp_path / "share.offline")
    d.wait_event("folder_unavailable", timeout=15)
    os.rename(tmp_path / "share.offline", tmp_path / "share")
    make_image(tmp_path / "share/in/after.jpg", (8, 8))
    d.wait_event("folder_available", timeout=15)
    d.wait_event("job_done", 2)
    time.sleep(1.0)
    assert [e["file"] for e in d.named("file_queued")] == ["before.jpg", "after.jpg"]
    assert not d.named("job_failed")
    assert set(images_in(tmp_path / "out")) == {"before_x2.jpg", "after_x2.jpg"}
    assert d.stop() == 0


def test_restart_over_thousands_of_done_files_submits_nothing(tmp_path, daemons):
    """5,000 done files in an inbox (originals kept): a restart scans them all and queues
    none (the journal knows each path, size and mtime)."""
    from crystal_watchd.journal import SqliteJournal

    config = write_config(tmp_path, [{"inbox": "in", "outbox": "out"}])
    inbox = tmp_path / "in"
    inbox.mkdir()
    journal = SqliteJournal(tmp_path / "state" / "journal.sqlite3")
    data = _png((4, 4))
    for i in range(5000):
        path = inbox / f"done{i:05d}.png"
        path.write_bytes(data)
        st = path.stat()
        job = journal.enqueue("in", path, path.name, st.st_size, st.st_mtime_ns, f"h{i}")
        journal.done(journal.claim(job))
    journal.close()
    d = daemons(config).ready()
    scanned = d.wait_event("folder_scanned")[0]
    assert scanned["new"] == 0 and scanned["known"] == 5000
    time.sleep(1.0)
    assert not d.named("file_queued") and images_in(tmp_path / "out") == {}
    assert d.stop() == 0


def test_backlog_is_worked_through_at_concurrency(tmp_path, daemons):
    """500 files dropped at once are all journaled and processed, with at most 3 ×
    ``concurrency`` jobs open at a time: ``concurrency`` at the upscaler and, as
    config.example.yaml documents, up to twice as many preparing or finishing."""
    concurrency = 3
    documented_open = concurrency + 2 * concurrency
    config = write_config(tmp_path, [{"inbox": "in", "outbox": "out", "settle": 0.3}],
                          concurrency=concurrency, log={"format": "json", "level": "info"})
    d = daemons(config).ready()
    for i in range(500):
        image = Image.new("RGB", (6, 4), "white")
        image.putpixel((0, 0), (i % 256, i // 256, 7))
        image.save(tmp_path / f"in/b{i:03d}.png")
    d.wait_event("job_done", 500, timeout=120)
    events = [e for e in d.events() if e.get("event") in ("job_started", "job_done")]
    running = peak = 0
    for e in events:
        running += 1 if e["event"] == "job_started" else -1
        peak = max(peak, running)
    assert concurrency <= peak <= documented_open
    out = images_in(tmp_path / "out")
    assert len(out) == 500 and set(out.values()) == {(12, 8)}
    assert d.stop() == 0


def test_python_ignores_sigxfsz():
    """The full-disk test relies on EFBIG instead of a SIGXFSZ kill (CPython ignores it)."""
    out = subprocess.run([sys.executable, "-c", "import signal; print(signal.getsignal("
                          "signal.SIGXFSZ) == signal.SIG_IGN)"], capture_output=True, text=True)
    assert out.stdout.strip() == "True"
