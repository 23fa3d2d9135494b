"""Settling: a file is handed over only after size and mtime held still for ``settle``."""

from __future__ import annotations

import os

from crystal_watchd.intake.settle import Settler


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_growing_file_waits_until_quiet_and_is_handed_over_once(tmp_path):
    """Each change restarts the quiet period; one hand-over when it finally holds still."""
    clock, stable = Clock(), []
    s = Settler(lambda folder, path, st: stable.append((folder, path, st.st_size)), clock)
    path = tmp_path / "a.jpg"
    path.write_bytes(b"x" * 10)
    s.touch("f", path, settle=2)
    s.check()
    clock.now += 1.5
    with open(path, "ab") as fh:
        fh.write(b"y" * 10)
    os.utime(path, ns=(1, 10**9 * 12345))
    s.check()  # changed: the clock restarts
    clock.now += 1.9
    s.check()
    assert stable == []
    clock.now += 0.2
    s.check()
    assert stable == [("f", path, 20)]
    clock.now += 5
    s.check()
    assert len(stable) == 1 and len(s) == 0


def test_empty_and_vanished_files_are_dropped_without_hand_over(tmp_path):
    """A 0-byte placeholder and a file deleted before settling are never handed over."""
    clock, stable = Clock(), []
    s = Settler(lambda *a: stable.append(a), clock)
    empty, gone = tmp_path / "empty.jpg", tmp_path / "gone.jpg"
    empty.touch()
    gone.write_bytes(b"data")
    s.touch("f", empty, 1)
    s.touch("f", gone, 1)
    s.check()
    gone.unlink()
    clock.now += 2
    s.check()
    assert stable == [] and len(s) == 0
