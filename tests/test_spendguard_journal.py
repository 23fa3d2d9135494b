"""The spend guard's journal operations, against both stores (SQLite and PostgreSQL): which
jobs are judged, held and approved, and what a dispatcher may claim meanwhile."""

from __future__ import annotations

import time
from pathlib import Path

from test_journal import open_store  # noqa: F401 - the fixture opening each store

from crystal_watchd.jobs import JobState


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


def test_hold_and_clear_leave_jobs_taken_up_or_judged_elsewhere_alone(open_store):
    """A job another daemon took up or judged between the look and the hold is not held
    (nor cleared) again; approving one folder leaves another folder's held set held."""
    j = open_store()
    j.spend_guard = True
    taken, judged, fresh = _enqueue(j, "f", 3)
    j.clear_spend({taken: 0.1})
    j.start(j.claim(j.get(taken)), {"backend": "fal"}, "k")
    j.clear_spend({judged: 0.1})
    assert [x.id for x in j.hold({taken: 1.0, judged: 1.0, fresh: 1.0})] == [fresh]
    assert j.get(taken).state is JobState.RUNNING
    assert j.clear_spend({fresh: 0.0}) == 0  # held already: not let go by a late clear
    [other] = _enqueue(j, "g", 1)
    j.hold({other: 2.0})
    assert j.approve(["f"]) == {"f": (1, 1.0)}
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
