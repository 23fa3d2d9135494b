"""Ignore rules: names, extensions, pruned and own directories, globs, symlinks."""

from __future__ import annotations

import os
from pathlib import Path

from crystal_watchd.config import FolderConfig
from crystal_watchd.intake.rules import Rules


def rules(tmp_path: Path, **kw) -> Rules:
    inbox = tmp_path / "in"
    return Rules(FolderConfig(name="f", inbox=inbox, outbox=inbox / "out", done_dir=inbox / "done",
                              failed_dir=inbox / "failed", **kw))


def test_file_rules(tmp_path):
    """Hidden/temp names, wrong extensions and ignore globs are out; case does not matter."""
    r = rules(tmp_path, recursive=True, ignore=("*_draft.*", "private/*"))
    inbox = tmp_path / "in"
    assert r.wants_file(inbox / "Face.JPG")
    assert r.wants_file(inbox / "a/b/c.tiff")
    for name in (".x.jpg", "~x.jpg", "x.jpg.part", "x.txt", "x_draft.jpg", "private/x.jpg",
                 "@eaDir/x.jpg", "out/x.jpg", "done/x.jpg", "failed/x.jpg", ".hidden/x.jpg"):
        assert not r.wants_file(inbox / name), name
    flat = rules(tmp_path)
    assert flat.wants_file(inbox / "x.jpg") and not flat.wants_file(inbox / "sub/x.jpg")


def test_scan_prunes_and_never_follows_links(tmp_path):
    """A scan lists wanted files only, never enters pruned dirs, and skips symlinks."""
    r = rules(tmp_path, recursive=True)
    inbox = tmp_path / "in"
    for rel in ("a.jpg", "sub/b.png", "@eaDir/a.jpg/thumb.jpg", "#recycle/c.jpg", "out/a_x2.jpg"):
        (inbox / rel).parent.mkdir(parents=True, exist_ok=True)
        (inbox / rel).write_bytes(b"x")
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(b"x")
    os.symlink(outside, inbox / "link.jpg")
    os.symlink(tmp_path, inbox / "linkdir")
    found = sorted(p.relative_to(inbox).as_posix() for p, _ in r.scan())
    assert found == ["a.jpg", "sub/b.png"]
    assert sorted(p.relative_to(inbox).as_posix() for p in r.dirs()) == [".", "sub"]
