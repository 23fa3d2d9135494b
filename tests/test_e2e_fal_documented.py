"""fal as documented, where the docs leave the worst case open: a gateway 504 after fal took
the request, a cancel that loses the race, a data URI echoed re-encoded, result files that
expire, a status stream kept alive by comments, the client's file names. The real CLI in a
subprocess, the real fal_client over TLS, the fake fal whose ledger says what fal bills."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from conftest import cli, fal_env, images_in, make_image, wait_for, write_config
from prometheus_client.parser import text_string_to_metric_families


def fal_config(tmp_path, fal=None, **top):
    top.setdefault("retry", {"attempts": 6, "backoff": 0.2, "max_backoff": 1})
    return write_config(tmp_path, [{"inbox": "in", "outbox": "out", "settle": 0.2}],
                        backend="fal", fal={"timeout": 60, **(fal or {})}, **top)


def drop_images(tmp_path, count, size=(14, 9)):
    for i in range(count):
        make_image(tmp_path / f"in/d{i:02d}.png", size, color=f"#{i:02x}40{i:02x}", fmt="PNG")


def test_a_gateway_504_after_acceptance_is_looked_for_not_sent_again(
        tmp_path, fakefal, fal_daemons, tls_files):
    """Every submit is taken by fal's queue (and billed when it runs), then answered by the
    gateway with nginx's 504 page and no x-fal-request-id. Each is an uncertain submit:
    found in fal's request list and adopted, so each input is billed exactly once and
    nothing is submitted twice."""
    server = fakefal(latency=0.3, runners=3)
    server.strict.gateway_504_after_accept = 1.0
    config = fal_config(tmp_path, concurrency=3)
    d = fal_daemons(config, fal_env(server, tls_files)).ready()
    drop_images(tmp_path, 3)
    d.wait_event("job_done", 3, timeout=90)
    assert len(images_in(tmp_path / "out")) == 3
    billed = server.billed_per_input()
    assert len(billed) == 3 and set(billed.values()) == {1}, billed
    assert len(server.submissions) == 3
    uncertain = d.named("fal_submit_uncertain")
    assert len(uncertain) == 3 and all("504" in e["reason"] for e in uncertain)
    assert len(d.named("fal_request_recovered")) == 3
    assert not d.named("fal_resubmitted_after_uncertain")
    assert d.stop() == 0


@pytest.mark.parametrize("answer", [409, 500])
def test_a_cancel_that_loses_the_race_takes_the_finished_result(
        answer, tmp_path, fakefal, fal_daemons, tls_files):
    """Past fal.timeout the cancel reaches a run that finishes (billed, with its result) as
    the cancel arrives, and the cancel is answered ALREADY_COMPLETED as a 409, or with a
    500. The daemon sends the cancel once, says a failed cancel failed, looks at the
    status, and takes the result: one submission, one billed run."""
    server = fakefal(latency=12)
    server.strict.cancel_loses_race = answer
    config = fal_config(tmp_path, fal={"timeout": 10})
    d = fal_daemons(config, fal_env(server, tls_files)).ready()
    make_image(tmp_path / "in/race.png", (10, 10), fmt="PNG")
    d.wait_event("job_done", timeout=60)
    assert len(server.strict.times("cancel")) == 1
    assert len(server.submissions) == 1
    assert [row["outcome"] for row in server.ledger] == ["ok"]
    assert server.billed_per_input() == {server.submissions[0]["input_sha256"]: 1}
    assert images_in(tmp_path / "out") == {"race_x2.png": (20, 20)}
    assert len(d.named("fal_request_finished_despite_cancel")) == 1
    assert not d.named("fal_request_timed_out")
    if answer == 500:
        assert len(d.named("fal_cancel_failed")) == 1
    else:
        assert [e["outcome"] for e in d.named("fal_cancel_answered")] == ["ALREADY_COMPLETED"]
    assert d.stop() == 0


def test_a_lost_reply_is_found_without_relying_on_a_data_uri_echo(
        tmp_path, fakefal, fal_daemons, tls_files):
    """Under ``upload: auto`` a small input whose submit reply is lost: fal's request list
    echoes data URIs re-encoded, so the daemon sends the input through fal storage (a URL
    unique per upload), finds the request by it and adopts it: billed once. With
    ``upload: data-uri`` (the user's choice) the same loss cannot be matched: it is sent
    again after fal.timeout and counted in `status` as possibly paid twice."""
    for upload, billed_times in (("auto", 1), ("data-uri", 2)):
        work = tmp_path / upload
        work.mkdir()
        server = fakefal(latency=0.2)
        config = fal_config(work, fal={"upload": upload, "timeout": 10})
        server.hold_submits("after")  # fal accepts it, the reply never comes
        d = fal_daemons(config, fal_env(server, tls_files)).ready()
        drop_images(work, 1)
        wait_for(lambda s=server: s.held == 1, 20, "the accepted submission held")
        server.release_submits(drop=True)
        d.wait_event("job_done", timeout=60)
        assert list(server.billed_per_input().values()) == [billed_times]
        assert d.stop() == 0
        report = json.loads(cli("status", "--json", "--config", str(config)).stdout)
        if upload == "auto":
            assert len(server.uploads) == 1 and len(server.submissions) == 1
            assert server.submissions[0]["input_sha256"]
            assert len(d.named("fal_request_recovered")) == 1
            assert report["spend"]["maybe_paid_twice"] == 0
        else:
            assert not server.uploads
            assert len(d.named("fal_resubmitted_after_uncertain")) == 1
            assert report["spend"]["maybe_paid_twice"] == 1


def test_an_expired_result_file_fails_the_job_in_plain_words(
        tmp_path, fakefal, fal_daemons, tls_files):
    """The request completed and its result JSON still answers, but its file expired on
    fal's CDN before it was fetched (404). The dead URL is asked once, the job fails with
    ``result_expired`` and says that a retry pays again; nothing is submitted again."""
    server = fakefal(latency=0.2)
    server.strict.files_expire_after = 0.5
    server.strict.downloads.hold()
    config = fal_config(tmp_path)
    d = fal_daemons(config, fal_env(server, tls_files)).ready()
    make_image(tmp_path / "in/gone.png", (10, 10), fmt="PNG")
    wait_for(lambda: server.strict.downloads.held == 1, 30, "the download held")
    time.sleep(1.0)  # the file expires while the daemon waits (a NAS switched off)
    server.strict.downloads.release()
    failed = d.wait_event("job_failed", timeout=30)[0]
    assert failed["error"] == "result_expired"
    assert "expired on fal before it could be fetched; a retry pays again" in failed["reason"]
    assert len(server.strict.times("download")) == 1
    assert len(server.submissions) == 1
    assert sum(server.billed_per_input().values()) == 1
    assert len(d.named("fal_result_expired")) == 1
    assert d.stop() == 0


def test_a_40_second_run_is_watched_on_one_stream_kept_alive_by_comments(
        tmp_path, fakefal, fal_daemons, tls_files):
    """fal keeps a quiet status stream alive with a comment line every 15 s (no event
    while the state stays the same). A 40 s run is watched on the one stream opened for it,
    the comments counting as signs of life: at most 3 status calls or streams, no fallback
    to polling, billed once."""
    server = fakefal(latency=40)
    assert server.strict.keepalive == 15.0  # fal's documented interval
    config = fal_config(tmp_path, fal={"timeout": 120})
    d = fal_daemons(config, fal_env(server, tls_files)).ready()
    make_image(tmp_path / "in/slow.png", (10, 10), fmt="PNG")
    d.wait_event("job_done", timeout=90)
    assert server.calls["stream"] + server.calls["status"] <= 3, server.calls
    assert not d.named("fal_status_stream_fallback")
    assert sum(server.billed_per_input().values()) == 1
    assert d.stop() == 0


def test_uploads_carry_a_neutral_name(tmp_path, fakefal, fal_daemons, tls_files):
    """Uploads to fal's public CDN are named by a digest and the extension, never by the
    client's file name; a name with a newline in it uploads like any other."""
    server = fakefal(latency=0.1)
    config = fal_config(tmp_path, fal={"upload": "cdn"})
    d = fal_daemons(config, fal_env(server, tls_files)).ready()
    make_image(tmp_path / "in/Smith_wedding_bride_0042.png", (12, 8), fmt="PNG")
    make_image(tmp_path / "in/two\nlines.png", (8, 12), color="blue", fmt="PNG")
    d.wait_event("job_done", 2, timeout=60)
    assert server.calls["token"] >= 1 and len(server.uploads) == 2
    for upload in server.uploads:
        name = upload["name"].split("-", 2)[2]  # the fake's own prefix, then the name sent
        assert "Smith" not in name and "lines" not in name and "\n" not in name
        assert len(name) == 32 + len(".png") and name.endswith(".png")
    assert len(images_in(tmp_path / "out")) == 2
    assert d.stop() == 0


@pytest.mark.parametrize("factor", [1.0, 1.5])
def test_the_bill_fal_reports_is_shown_beside_the_estimate(factor, tmp_path, fakefal,
                                                           fal_daemons, tls_files):
    """fal's ``x-fal-billable-units`` on each result fetch is recorded with the job and
    shown beside the estimate in `status` (text and JSON), on the page and in /metrics;
    when the bill is not what fal's price list gives (factor 1.5), each says they differ."""
    server = fakefal(latency=0.1)
    server.strict.billable_units_factor = factor
    config = fal_config(tmp_path, http={"listen": "127.0.0.1:0", "token": "t0ken-1234"})
    d = fal_daemons(config, fal_env(server, tls_files)).ready()
    make_image(tmp_path / "in/b0.png", (400, 300), fmt="PNG")
    make_image(tmp_path / "in/b1.png", (300, 200), fmt="PNG")
    d.wait_event("job_done", 2, timeout=60)
    megapixels = sum(row["output_megapixels"] for row in server.ledger)
    url = d.wait_event("http_listening")[0]["url"]
    auth = {"Authorization": "Bearer t0ken-1234"}
    page = httpx.get(url, headers={**auth, "Accept": "text/html"}).text
    metrics = httpx.get(url + "metrics", headers=auth).text
    assert d.stop() == 0
    report = json.loads(cli("status", "--json", "--config", str(config)).stdout)["spend"]
    bill = report["billed"]
    assert bill["units"] == pytest.approx(megapixels * factor, rel=1e-4)
    assert bill["usd"] == pytest.approx(megapixels * factor * 0.016, rel=1e-4)
    assert bill["estimated_usd"] == pytest.approx(megapixels * 0.016, rel=1e-4)
    assert bill["differs"] is (factor != 1.0)
    text = cli("status", "--config", str(config)).stdout
    assert f"fal billed: ${bill['usd']:.2f}" in text
    assert ("they differ" in text) is (factor != 1.0)
    assert 'id="bill"' in page and (("they differ" in page) is (factor != 1.0))
    samples = {s.name: s.value for f in text_string_to_metric_families(metrics)
               for s in f.samples}
    assert samples["crystal_watchd_billed_units_total"] == pytest.approx(megapixels * factor,
                                                                         rel=1e-4)
    assert samples["crystal_watchd_bill_differs"] == (1 if factor != 1.0 else 0)
