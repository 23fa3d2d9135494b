"""Files seen but not taken: the reason recorded once per version in the journal by the
running daemon, shown by ``status`` (another process) and on the page."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import yaml
from conftest import cli, make_image, wait_for, write_config

from crystal_watchd.config.runtime import DEFAULT_EXTENSIONS


def not_taken(config: Path) -> list[dict]:
    return json.loads(cli("status", "--json", "--config", str(config)).stdout)["not_taken"]


def test_files_not_taken_say_why_once_each(tmp_path, daemons):
    """A .txt, a hidden name, a temporary name and an empty .jpg never become jobs; each
    is listed by ``status --json`` and ``status`` with its reason, newest first, once
    however often it is touched again unchanged; changed, it is listed again; the page's
    overview lists them escaped; a real picture beside them is processed as always."""
    config = write_config(tmp_path, [{"name": "photos", "inbox": "in", "outbox": "out",
                                      "extensions": ["jpg"]}],
                          http={"listen": "127.0.0.1:0"})
    d = daemons(config).ready()
    url = d.wait_event("http_listening")[0]["url"]
    inbox = tmp_path / "in"
    inbox.mkdir(exist_ok=True)
    (inbox / "notes <b>.txt").write_text("not a picture")
    (inbox / ".hidden.jpg").write_bytes(b"x")
    (inbox / "~lock.jpg").write_bytes(b"x")
    (inbox / "empty.jpg").write_bytes(b"")
    (inbox / "IMG_0001.HEIC").write_bytes(b"x")
    make_image(inbox / "real.jpg", (40, 30))
    d.wait_event("job_done")
    wait_for(lambda: len(not_taken(config)) == 5, 20, "five files not taken")
    rows = {r["file"]: r for r in not_taken(config)}
    assert "extension .txt is not in the folder's extensions (jpg)" in rows["notes <b>.txt"][
        "reason"]
    assert "extension .heic" in rows["IMG_0001.HEIC"]["reason"]
    assert rows[".hidden.jpg"]["reason"].startswith("hidden or temporary name")
    assert rows["~lock.jpg"]["reason"].startswith("hidden or temporary name")
    assert rows["empty.jpg"]["reason"] == "empty file (0 bytes)"
    assert "real.jpg" not in rows
    stamps = [r["seen_at"] for r in not_taken(config)]
    assert stamps == sorted(stamps, reverse=True)
    for _ in range(3):  # opened for writing and closed unchanged: events, no new version
        with open(inbox / "notes <b>.txt", "a"):
            pass
        time.sleep(0.3)
    time.sleep(1)
    assert len(not_taken(config)) == 5
    (inbox / "notes <b>.txt").write_text("now longer, not a picture still")
    wait_for(lambda: len(not_taken(config)) == 6, 20, "the changed .txt listed again")
    assert len(d.named("file_not_taken")) == 6
    text = cli("status", "--config", str(config)).stdout
    assert "seen but not taken" in text and "empty.jpg: empty file (0 bytes)" in text
    page = httpx.get(url).text
    assert "Why didn't my file come out?" in page
    assert "notes &lt;b&gt;.txt" in page and "notes <b>.txt" not in page
    assert d.stop() == 0


def test_example_config_takes_the_default_extensions():
    """config.example.yaml lists every default extension (phones' HEIC/HEIF/AVIF too)."""
    example = yaml.safe_load((Path(__file__).parent.parent / "config.example.yaml").read_text())
    for folder in example["folders"]:
        if "extensions" in folder:
            assert set(folder["extensions"]) == set(DEFAULT_EXTENSIONS), folder["name"]


def test_files_in_the_inbox_before_the_start_say_why_too(tmp_path, daemons):
    """Files that were in the inbox before the daemon started (found by its first scan, not
    by the watcher) are listed with their reason as well; the count is in the scan's log
    line; a restart does not list them twice."""
    config = write_config(tmp_path, [{"name": "photos", "inbox": "in", "outbox": "out",
                                      "extensions": ["jpg"], "ignore": ["*_proof.jpg"]}])
    inbox = tmp_path / "in"
    inbox.mkdir(exist_ok=True)
    (inbox / "IMG_0002.CR2").write_bytes(b"raw")
    (inbox / ".DS_Store").write_bytes(b"x")
    make_image(inbox / "client_proof.jpg", (40, 30))
    make_image(inbox / "real.jpg", (40, 30))
    d = daemons(config).ready()
    d.wait_event("job_done")
    assert d.wait_event("folder_scanned")[0]["not_taken"] == 3
    wait_for(lambda: len(not_taken(config)) == 3, 20, "three files not taken")
    rows = {r["file"]: r["reason"] for r in not_taken(config)}
    assert "extension .cr2" in rows["IMG_0002.CR2"]
    assert rows[".DS_Store"].startswith("hidden or temporary name")
    assert rows["client_proof.jpg"] == "matches the folder's ignore patterns"
    assert d.stop() == 0
    again = daemons(config).ready()
    again.wait_event("folder_scanned")
    time.sleep(0.5)
    assert len(not_taken(config)) == 3 and not again.named("file_not_taken")
    assert again.stop() == 0


def test_a_copy_renamed_into_place_is_not_listed_under_its_temporary_name(tmp_path, daemons):
    """A picture written as ``.name.jpg`` and renamed into place a moment later (rsync, a
    sync client, an atomic save) is processed and never listed as not taken, whether the
    watcher saw it being written or the start's scan found it half-copied; a hidden file
    that stays is listed once its grace has passed."""
    config = write_config(tmp_path, [{"name": "photos", "inbox": "in", "outbox": "out"}])
    inbox = tmp_path / "in"
    inbox.mkdir(exist_ok=True)
    make_image(tmp_path / "src.jpg", (40, 30))
    (inbox / ".early.jpg").write_bytes((tmp_path / "src.jpg").read_bytes())
    d = daemons(config).ready()
    d.wait_event("folder_scanned")
    (inbox / ".early.jpg").rename(inbox / "early.jpg")  # the copy the scan found ends
    (inbox / ".face.jpg").write_bytes((tmp_path / "src.jpg").read_bytes())
    time.sleep(0.5)  # a copy takes a moment before its rename
    (inbox / ".face.jpg").rename(inbox / "face.jpg")
    (inbox / ".stays.jpg").write_bytes(b"x")
    d.wait_event("job_done", 2)
    wait_for(lambda: len(not_taken(config)) == 1, 20, "the hidden file that stayed")
    time.sleep(1)
    assert [r["file"] for r in not_taken(config)] == [".stays.jpg"]
    assert d.stop() == 0
