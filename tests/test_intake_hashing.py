"""Hashing settled files in batches: each file's digest counts only for the version that
settled."""

from __future__ import annotations

import hashlib
import os

from crystal_watchd.intake.hashing import hash_settled


def test_each_file_gets_its_digest_or_the_reason_it_has_none(tmp_path):
    """A whole file gets its SHA-256; one deleted after it settled is gone; one written to
    after it settled is changed (it settles again); an unreadable one names the error."""
    whole, gone, grown, locked = (tmp_path / n for n in ("whole.jpg", "gone.jpg", "grown.jpg",
                                                           "locked.jpg"))
    whole.write_bytes(b"picture" * 1000)
    gone.write_bytes(b"x")
    grown.write_bytes(b"first part")
    locked.mkdir()  # opening a directory for reading fails with an OSError, as root too
    settled = [(p, os.stat(p)) for p in (whole, gone, grown, locked)]
    gone.unlink()
    with open(grown, "ab") as fh:
        fh.write(b" and the rest")
    found = {h.path.name: h for h in hash_settled(settled)}
    assert found["whole.jpg"].digest == hashlib.sha256(b"picture" * 1000).hexdigest()
    assert found["gone.jpg"].gone and found["gone.jpg"].digest is None
    assert found["grown.jpg"].changed and found["grown.jpg"].digest is None
    assert found["locked.jpg"].error and found["locked.jpg"].digest is None
