"""``once`` from cron: a file still arriving is left for the next run, never waited out."""

from __future__ import annotations

import json
import time
from datetime import datetime

from conftest import cli, images_in, make_image, write_config
from test_e2e_arriving import photo

EX_TEMPFAIL = 75  # sysexits.h: "try again later"


def _log(run) -> list[dict]:
    out = []
    for line in (run.stdout + run.stderr).splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def test_once_leaves_a_cut_off_picture_for_the_next_run_and_judges_it_after_the_grace(
        tmp_path):
    """A picture cut off mid-copy does not hold ``once`` for its grace: the run finishes the
    other pictures, names the cut-off one and exits 75. The next run after the grace has run
    out judges it like any broken file: failed_dir and exit 1."""
    grace = 12.0
    config = write_config(tmp_path, [{"inbox": "in", "outbox": "out",
                                      "incomplete_grace": grace}])
    inbox = tmp_path / "in"
    make_image(inbox / "a.jpg", (40, 30))
    make_image(inbox / "b.png", (20, 10))
    (inbox / "cut.jpg").write_bytes(photo(seed=2)[:6000])
    written = time.time()

    first = cli("once", "--config", str(config), timeout=60)
    assert first.returncode == EX_TEMPFAIL, first.stdout + first.stderr
    # 75 here means "still arriving", not "held for approval": no approval advice.
    assert "--approve" not in first.stderr
    assert images_in(tmp_path / "out") == {"a_x2.jpg": (80, 60), "b_x2.png": (40, 20)}
    left = [e for e in _log(first) if e.get("event") == "once_left_arriving"]
    assert left and left[0]["files"] == ["in/cut.jpg"]
    assert (inbox / "cut.jpg").exists() and not (inbox / "failed").exists()

    # ``status`` says when the grace runs out (it counts from when the file was journaled).
    status = json.loads(cli("status", "--json", "--config", str(config)).stdout)
    (arriving,) = status["arriving"]
    assert arriving["file"] == "cut.jpg"
    judged_at = datetime.fromisoformat(arriving["judged_at"]).timestamp()
    assert written + grace <= judged_at + 1  # seconds precision
    time.sleep(max(0.0, judged_at + 1.5 - time.time()))
    second = cli("once", "--config", str(config), timeout=60)
    assert second.returncode == 1, second.stdout + second.stderr
    failed = [e for e in _log(second) if e.get("event") == "job_failed"]
    assert [(e["file"], e["error"]) for e in failed] == [("cut.jpg", "corrupt_image")]
    assert sorted(p.name for p in (inbox / "failed").iterdir()) == [
        "cut.jpg", "cut.jpg.error.json"]


def test_once_with_nothing_arriving_still_exits_0(tmp_path):
    """Complete pictures only: ``once`` exits 0 and names nothing left."""
    config = write_config(tmp_path, [{"inbox": "in", "outbox": "out"}])
    make_image(tmp_path / "in" / "a.jpg", (40, 30))
    run = cli("once", "--config", str(config), timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert not [e for e in _log(run) if e.get("event") == "once_left_arriving"]
    assert images_in(tmp_path / "out") == {"a_x2.jpg": (80, 60)}
