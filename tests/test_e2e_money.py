"""Paying exactly once, and leaving nothing behind at fal: the real CLI in a subprocess, the
real fal_client over TLS, against the fake fal whose ledger says what fal would bill.

(The daemon killed while fal holds a submit's reply is in test_crash.py, phase
``submit_unanswered``.)"""

from __future__ import annotations

import json

import httpx
import pytest
from conftest import cli, fal_env, images_in, make_image, wait_for, write_config
from fakefal import Faults
from prometheus_client.parser import text_string_to_metric_families


def fal_config(tmp_path, folders, fal=None, **top):
    top.setdefault("retry", {"attempts": 6, "backoff": 0.2, "max_backoff": 1})
    return write_config(tmp_path, folders, backend="fal", fal={"timeout": 60, **(fal or {})},
                        **top)


def drop_images(tmp_path, count, size=(14, 9), prefix="m"):
    for i in range(count):
        make_image(tmp_path / f"in/{prefix}{i:02d}.png", size, color=f"#{i:02x}{i:02x}40",
                   fmt="PNG")


@pytest.mark.parametrize("upload", ["data-uri", "cdn"])
def test_lost_submit_replies_are_found_again_and_billed_once(upload, tmp_path, fakefal,
                                                             fal_daemons, tls_files):
    """30 % of submit replies are lost after fal accepted the request: each lost one is
    found in fal's request list (by its data URI's digest, or its unique upload URL) and
    adopted, so every input is billed exactly once (the fake's ledger), nothing is submitted
    twice, and every file has one output."""
    server = fakefal(latency=0.3, latency_spread=0.5, runners=4, seed=11,
                     faults=Faults(lose_reply=0.3, list_delay=0.3))
    server.strict.exact_echo = True  # data URIs matched only where fal echoes them exactly
    config = fal_config(tmp_path, [{"inbox": "in", "outbox": "out", "settle": 0.2}],
                        fal={"upload": upload}, concurrency=4)
    d = fal_daemons(config, fal_env(server, tls_files)).ready()
    drop_images(tmp_path, 16)
    d.wait_event("job_done", 16, timeout=120)
    assert len(images_in(tmp_path / "out")) == 16
    billed = server.billed_per_input()
    assert len(billed) == 16 and set(billed.values()) == {1}, billed
    assert len(server.submissions) == 16
    uncertain = d.named("fal_submit_uncertain")
    assert uncertain, "no reply was lost: the test proves nothing"
    assert len(d.named("fal_request_recovered")) == len(uncertain)
    assert not d.named("fal_resubmitted_after_uncertain")
    assert d.stop() == 0
    report = json.loads(cli("status", "--json", "--config", str(config)).stdout)
    assert report["spend"]["maybe_paid_twice"] == 0


def test_a_key_that_may_not_list_falls_back_and_counts_possible_double_payment(
        tmp_path, fakefal, fal_daemons, tls_files):
    """When the key may not read fal's request list (403), a lost reply is said once, the
    submission is sent again (the behaviour before reconciliation existed), and `status`
    counts each such input as possibly paid twice; the ledger shows they were."""
    server = fakefal(latency=0.2, faults=Faults(list_forbidden=True))
    config = fal_config(tmp_path, [{"inbox": "in", "outbox": "out", "settle": 0.2}],
                        concurrency=2, http={"listen": "127.0.0.1:0", "token": "t0ken-1234"})
    server.hold_submits("after")  # fal accepts both, the replies never come
    d = fal_daemons(config, fal_env(server, tls_files)).ready()
    drop_images(tmp_path, 2)
    wait_for(lambda: server.held == 2, 20, "two accepted submissions held")
    server.release_submits(drop=True)
    d.wait_event("job_done", 2, timeout=60)
    assert len(d.named("fal_request_lookup_unavailable")) == 1
    assert len(d.named("fal_resubmitted_after_uncertain")) == 2
    twice = sorted(server.billed_per_input().values())
    assert twice == [2, 2]
    metrics = httpx.get(d.wait_event("http_listening")[0]["url"] + "metrics",
                        headers={"Authorization": "Bearer t0ken-1234"}).text
    counted = [s.value for f in text_string_to_metric_families(metrics) for s in f.samples
               if s.name == "crystal_watchd_maybe_paid_twice_total"]
    assert counted == [2]
    assert d.stop() == 0
    status = cli("status", "--config", str(config))
    assert "may have been paid twice: 2" in status.stdout
    report = json.loads(cli("status", "--json", "--config", str(config)).stdout)
    assert report["spend"]["maybe_paid_twice"] == sum(n - 1 for n in twice)


def test_status_comes_from_the_stream_and_polling_takes_over_when_it_is_cut(
        tmp_path, fakefal, fal_daemons, tls_files):
    """With a working status stream no status is polled at all. A stream cut now and then
    (the first two opened) is opened again and still says when the request is done: no
    polling. When every stream is cut after its first event, each request opens it three
    times (twice again) and then polls; every file still completes."""
    for cut in ("never", "first two", "always"):
        work = tmp_path / cut.replace(" ", "_")
        work.mkdir()
        faults = {"never": Faults(), "first two": Faults(cut_streams_first=2),
                  "always": Faults(cut_stream=1.0)}[cut]
        server = fakefal(latency=1.0, runners=2, faults=faults)
        config = fal_config(work, [{"inbox": "in", "outbox": "out", "settle": 0.2}],
                            concurrency=2)
        d = fal_daemons(config, fal_env(server, tls_files)).ready()
        drop_images(work, 2)
        d.wait_event("job_done", 2, timeout=60)
        fallbacks = d.named("fal_status_stream_fallback")
        if cut == "always":
            assert server.calls["stream"] == 2 * 3
            assert len(fallbacks) == 2 and {f["reason"] for f in fallbacks} == {"ended early"}
            assert server.calls["status"] >= 2
        else:
            assert server.calls["stream"] == 2 + (2 if cut == "first two" else 0)
            assert server.calls["status"] == 0 and not fallbacks
        assert len(images_in(work / "out")) == 2
        assert d.stop() == 0


def test_every_upload_and_submission_carries_the_expiry_and_storage_choice(
        tmp_path, fakefal, fal_daemons, tls_files):
    """``cdn_expiry: 1h`` puts a one-hour lifetime on every upload and on every submission's
    result files; ``store_payloads: false`` sends X-Fal-Store-IO: 0 with every submission."""
    server = fakefal(latency=0.1)
    config = fal_config(tmp_path, [{"inbox": "in", "outbox": "out", "settle": 0.2}],
                        fal={"upload": "cdn", "cdn_expiry": "1h", "store_payloads": False})
    d = fal_daemons(config, fal_env(server, tls_files)).ready()
    drop_images(tmp_path, 3)
    d.wait_event("job_done", 3)
    assert len(server.uploads) == 3 and len(server.submissions) == 3
    for upload in server.uploads:
        assert json.loads(upload["lifecycle"]) == {"expiration_duration_seconds": 3600}
    for submission in server.submissions:
        assert json.loads(submission["lifecycle"]) == {"expiration_duration_seconds": 3600}
        assert submission["store_io"] == "0"
    assert d.stop() == 0
    shown = cli("check", "--config", str(config))
    assert "cdn_expiry" in shown.stdout and "store_payloads" in shown.stdout


def test_cleanup_deletes_each_requests_payloads_after_its_output_is_written(
        tmp_path, fakefal, fal_daemons, tls_files):
    """With ``cleanup: true`` every finished request's payloads are deleted at fal, each only
    after its job's output was written, and the outputs stay intact; a key that may not
    delete (not admin) is one warning and cleanup stops."""
    server = fakefal(latency=0.2)
    config = fal_config(tmp_path, [{"inbox": "in", "outbox": "out", "settle": 0.2}],
                        fal={"cleanup": True})
    d = fal_daemons(config, fal_env(server, tls_files)).ready()
    drop_images(tmp_path, 3)
    d.wait_event("fal_payloads_deleted", 3, timeout=30)
    assert {x["request_id"] for x in server.deleted} == \
        {s["request_id"] for s in server.submissions}
    events = d.events()
    job_of = {e["request_id"]: e["job_id"] for e in events
              if e.get("event") == "fal_request_submitted"}
    for request_id in job_of:
        done_at = next(i for i, e in enumerate(events)
                       if e.get("event") == "job_done" and e.get("job_id") == job_of[request_id])
        deleted_at = next(i for i, e in enumerate(events)
                          if e.get("event") == "fal_payloads_deleted"
                          and e.get("request_id") == request_id)
        assert done_at < deleted_at
    assert set(images_in(tmp_path / "out").values()) == {(28, 18)}

    server.faults.delete_forbidden = True
    drop_images(tmp_path, 2, size=(16, 10), prefix="late")  # new content: not copies
    d.wait_event("job_done", 5)
    wait_for(lambda: d.named("fal_cleanup_disabled"), 10, "the cleanup warning")
    assert len(d.named("fal_cleanup_disabled")) == 1 and len(server.deleted) == 3
    assert len(images_in(tmp_path / "out")) == 5
    assert d.stop() == 0
