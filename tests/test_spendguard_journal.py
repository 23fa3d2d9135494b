"""The spend guard's journal operations, against both stores (SQLite and PostgreSQL): which
jobs are judged, held and approved, and what a dispatcher may claim meanwhile."""

from __future__ import annotations

import time
from pathlib import Path

import test_journal

from crystal_watchd.jobs import JobState

#: Each test runs against both stores, opened as the journal's own tests open them.
open_store = test_journal.open_store


def _enqueue(j, folder: str, count: int, start: int = 0) -> list[int]:
    return [j.enqueue(folder, Path(f"/{folder}/{i}.png"), f"{i}.png", 1, 1, f"{folder}{i}").id
            for i in range(start, start + count)]


def test_unjudged_jobs_wait_while_held_ones_wait_for_approval(open_store):
    """With the guard on, a job it has not judged is never claimed; a cleared one is; held
    ones are not until approved, and approval releases exactly what was held, cleared, with
    the estimates summed per folder."""
    j = open_store()
    j.spend_guard = True
    a, b, c = _enqueue(j, "f", 3)
    assert [x.id for x in j.unjudged()] == [a, b, c]
    assert j.claim_ready(time.time(), limit=5) == []
    assert j.clear_spend({a: 0.25}) == 1
    assert [x.id for x in j.claim_ready(time.time(), limit=5)] == [a]
    held = j.hold({b: 0.5, c: 0.75})
    assert [x.id for x in held] == [b, c]
    assert all(j.get(i).state is JobState.AWAITING_APPROVAL for i in (b, c))
    assert j.unjudged() == [] and j.claim_ready(time.time(), limit=5) == []
    assert j.held() == {"f": (2, 1.25)}
    assert j.held_pictures(["f"]) == [("f", "1.png", 0.5), ("f", "2.png", 0.75)]
    assert j.unfinished(["f"]) == 1  # only the claimed one: held pictures are not work
    [late] = _enqueue(j, "f", 1, start=3)
    assert j.approve(["f"]) == {"f": (2, 1.25)}
    assert j.held() == {}
    # the approved pair is cleared for good; the later arrival is still to be judged
    assert [x.id for x in j.unjudged()] == [late]
    assert sorted(x.id for x in j.claim_ready(time.time(), limit=5)) == [b, c]


def test_hold_takes_every_waiting_picture_but_not_one_taken_up_or_approved(open_store):
    """A hold takes a folder's pictures waiting to be submitted, judged earlier or not, but
    leaves alone one a worker took up meanwhile and one an approval released; a late clear
    does not let a held picture go; approving one folder leaves another's held set held."""
    j = open_store()
    j.spend_guard = True
    taken, judged, fresh, approved = _enqueue(j, "f", 4)
    j.clear_spend({taken: 0.1})
    j.start(j.claim(j.get(taken)), {"backend": "fal"}, "k")
    j.clear_spend({judged: 0.1})
    j.hold({approved: 0.1})
    j.approve(["f"])
    assert j.pending(["f"]) == {"f": {judged: 0.1, fresh: None}}
    held = j.hold({taken: 1.0, judged: 1.0, fresh: 1.0, approved: 1.0})
    assert [x.id for x in held] == [judged, fresh]
    assert j.get(taken).state is JobState.RUNNING
    assert j.get(approved).state is JobState.QUEUED
    assert j.clear_spend({fresh: 0.0}) == 0  # held already: not let go by a late clear
    [other] = _enqueue(j, "g", 1)
    j.hold({other: 2.0})
    assert j.approve(["f"]) == {"f": (2, 2.0)}
    assert j.held() == {"g": (1, 2.0)}


def test_daemons_sharing_a_journal_share_the_held_set_and_one_approval(open_store):
    """What one daemon holds, another on the same journal sees as held, and one approval
    from either releases it for both."""
    one, two = open_store(), open_store()
    one.spend_guard = two.spend_guard = True
    ids = _enqueue(one, "f", 4)
    one.hold({i: 0.5 for i in ids})
    assert two.held() == {"f": (4, 2.0)}
    assert two.claim_ready(time.time(), limit=5) == []
    assert two.approve(None) == {"f": (4, 2.0)}
    first = one.claim_ready(time.time(), limit=2)
    second = two.claim_ready(time.time(), limit=5)
    assert sorted(x.id for x in first + second) == ids


def test_a_held_picture_that_changes_is_replaced_by_its_new_version(open_store):
    """A new version of a held file supersedes the held one, so the held set counts the
    picture once; the new version is judged (and, while the folder holds, joins it)."""
    j = open_store()
    [old] = _enqueue(j, "f", 1)
    j.hold({old: 0.5})
    new = j.enqueue("f", Path("/f/0.png"), "0.png", 2, 2, "changed")
    assert j.get(old).state is JobState.SUPERSEDED
    assert j.held() == {} and [x.id for x in j.unjudged()] == [new.id]


def test_a_backlog_built_a_picture_at_a_time_is_held_and_an_approved_one_never_counts(
        tmp_path):
    """Pictures judged one by one under the threshold still count while no worker has
    taken them up: the one that brings the folder's waiting pictures above the threshold
    holds them all. After an approval, a single later picture is judged on its own and
    goes (the approved batch does not count)."""

    from conftest import make_image

    from crystal_watchd.config import parse
    from crystal_watchd.daemon.spendguard import SpendGuard
    from crystal_watchd.journal import SqliteJournal

    # 100×100 at ×2: 0.04 output MP, $0.00064 each; the 16th brings 15 × 0.00064 = $0.0096
    # above $0.01.
    config = parse("backend: fal\nbudget: {confirm_above_usd: 0.01}\n"
                   "folders: [{name: f, inbox: in, outbox: out}]\n", tmp_path / "c.yaml")
    j = SqliteJournal(tmp_path / "j.sqlite3")
    guard = SpendGuard(j.store, lambda: config, lambda folder: [])

    def arrive(i: int) -> int:
        path = make_image(tmp_path / "in" / f"{i}.png", (100, 100), color=f"#{i:02x}3030",
                          fmt="PNG")
        st = path.stat()
        return j.enqueue("f", path, path.name, st.st_size, st.st_mtime_ns, f"h{i}").id

    for i in range(15):
        arrive(i)
        assert j.run(guard.review()) is False
    assert j.held() == {} and j.unjudged() == []
    arrive(15)
    assert j.run(guard.review()) is True
    count, usd = j.held()["f"]
    assert count == 16 and abs(usd - 16 * 0.00064) < 1e-9
    assert j.claim_ready(time.time(), limit=20) == []
    assert j.approve(None)["f"][0] == 16
    single = arrive(16)
    assert j.run(guard.review()) is False
    assert j.held() == {}
    claimed = {x.id for x in j.claim_ready(time.time(), limit=20)}
    assert single in claimed and len(claimed) == 17
    j.close()


def test_held_and_approved_pictures_keep_their_state_across_stores(open_store, tmp_path):
    """``journal export``/``import`` carries a held picture (with its estimate) and an
    approved one into the other store as they were."""
    from crystal_watchd.journal import SqliteJournal
    from crystal_watchd.journal.transfer import export_jobs, import_jobs

    source = SqliteJournal(tmp_path / "source.sqlite3")
    first, second = _enqueue(source, "f", 2)
    source.hold({first: 0.5, second: 0.25})
    source.approve(["f"])
    [held] = _enqueue(source, "g", 1)
    source.hold({held: 0.75})
    target = open_store()
    target.spend_guard = True
    assert import_jobs(target, list(export_jobs(source))) == (3, 0)
    assert target.held() == {"g": (1, 0.75)}
    assert target.pending(["f"]) == {}  # the approved pair never counts again
    assert len(target.claim_ready(time.time(), limit=5)) == 2
    source.close()
