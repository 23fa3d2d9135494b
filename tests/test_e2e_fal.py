"""The fal backend end to end: the real CLI in a subprocess, the real fal_client, over TLS to
the fake fal server started by the test."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from conftest import FAKE_KEY, cli, fal_env, images_in, make_image, wait_for, write_config
from fakefal import Faults
from PIL import Image


def fal_config(tmp_path, folders, **top):
    top.setdefault("retry", {"attempts": 6, "backoff": 0.2, "max_backoff": 1})
    top.setdefault("fal", {"timeout": 60})
    return write_config(tmp_path, folders, backend="fal", **top)


def test_folder_settings_reach_the_api_and_outputs_match(tmp_path, fakefal, fal_daemons,
                                                         tls_files):
    """Per-folder scale_factor/creativity are sent to fal's crystal-upscaler app; outputs have
    the right pixel size and the folder's format; each file is billed once; the key and data
    URIs never reach the logs; the spend shown is what fal's ledger bills at fal's price."""
    server = fakefal(latency=0.2)
    config = fal_config(tmp_path, [
        {"name": "soft", "inbox": "in/soft", "outbox": "out/soft", "scale_factor": 2,
         "creativity": 1},
        {"name": "sharp", "inbox": "in/sharp", "outbox": "out/sharp", "scale_factor": 3,
         "creativity": 7, "output_format": "jpeg"},
    ])
    d = fal_daemons(config, fal_env(server, tls_files)).ready()
    make_image(tmp_path / "in/soft/a.png", (30, 20), fmt="PNG")
    make_image(tmp_path / "in/sharp/b.png", (16, 10), fmt="PNG")
    d.wait_event("job_done", 2)
    assert images_in(tmp_path / "out/soft") == {"a_x2.png": (60, 40)}
    assert images_in(tmp_path / "out/sharp") == {"b_x3.jpg": (48, 30)}
    with Image.open(tmp_path / "out/sharp/b_x3.jpg") as im:
        assert im.format == "JPEG"
    sent = sorted((s["scale_factor"], s["creativity"], s["output_format"])
                  for s in server.submissions)
    # a JPEG folder asks fal for JPEG (its bytes become the output); a PNG folder for PNG
    assert sent == [(2, 1, "png"), (3, 7, "jpg")]
    assert {s["app"] for s in server.submissions} == {"clarityai/crystal-upscaler"}
    assert sorted(server.billed_per_input().values()) == [1, 1]
    assert d.stop() == 0
    text = d.text()
    assert FAKE_KEY not in text and FAKE_KEY.split(":")[1] not in text
    assert "base64," not in text
    status = cli("status", "--json", "--config", str(config))
    report = json.loads(status.stdout)
    # fal's price for crystal-upscaler: $0.016 per output megapixel, of what its ledger billed.
    billed_mp = sum(row["output_megapixels"] for row in server.ledger)
    assert [row["outcome"] for row in server.ledger] == ["ok", "ok"]
    assert abs(report["spend"]["total_usd"] - billed_mp * 0.016) < 1e-6
    assert FAKE_KEY not in status.stdout


def test_large_inputs_go_through_storage_upload(tmp_path, fakefal, fal_daemons, tls_files):
    """Above the inline limit (or with upload: cdn) the input is uploaded to fal storage and
    the request refers to it by URL."""
    server = fakefal(latency=0.1)
    config = fal_config(tmp_path, [{"inbox": "in", "outbox": "out"}],
                        fal={"upload": "cdn", "timeout": 60})
    d = fal_daemons(config, fal_env(server, tls_files)).ready()
    make_image(tmp_path / "in/big.jpg", (64, 48))
    d.wait_event("job_done")
    assert server.calls["token"] >= 1 and server.calls["upload"] >= 1
    assert images_in(tmp_path / "out") == {"big_x2.jpg": (128, 96)}
    assert d.stop() == 0


def test_missing_key_exits_78_with_instructions(tmp_path):
    """backend fal without any key: exit 78, saying how to set one and that local works."""
    config = fal_config(tmp_path, [{"inbox": "in", "outbox": "out"}])
    env = {k: "" for k in ("FAL_KEY", "FAL_KEY_ID", "FAL_KEY_SECRET", "CREDENTIALS_DIRECTORY")}
    result = cli("run", "--config", str(config), env=env, timeout=30)
    assert result.returncode == 78
    assert "FAL_KEY" in result.stderr and "--backend local" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_and_oversize_images_are_never_submitted(tmp_path, fakefal, fal_daemons, tls_files):
    """A corrupt file and an output over the cap fail with reasons before any submission;
    the oversize reason names the largest scale that fits."""
    server = fakefal()
    config = fal_config(tmp_path, [{"inbox": "in", "outbox": "out", "scale_factor": 10,
                                    "max_output_megapixels": 0.5, "incomplete_grace": 0.5}])
    d = fal_daemons(config, fal_env(server, tls_files)).ready()
    (tmp_path / "in/broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnope")
    make_image(tmp_path / "in/huge.png", (100, 100), fmt="PNG")
    d.wait_event("job_failed", 2)
    assert server.submissions == []
    report = json.loads((tmp_path / "in/failed/huge.png.error.json").read_text())
    assert report["error"] == "output_too_large" and "×7.07" in report["reason"]
    assert d.stop() == 0


def test_rejected_input_fails_with_fals_message(tmp_path, fakefal, fal_daemons, tls_files):
    """A 422 with a detail list fails the job for good after one submission, and the
    .error.json quotes fal's message in plain words."""
    server = fakefal(faults=Faults(reject_inputs=True))
    config = fal_config(tmp_path, [{"inbox": "in", "outbox": "out"}])
    d = fal_daemons(config, fal_env(server, tls_files)).ready()
    make_image(tmp_path / "in/odd.png", (8, 8), fmt="PNG")
    d.wait_event("job_failed")
    report = json.loads((tmp_path / "in/failed/odd.png.error.json").read_text())
    assert report["error"] == "rejected"
    assert report["reason"] == "fal rejected the input: image_url: Could not load the image"
    assert report["request_id"] == server.submissions[0]["request_id"]
    assert len(server.submissions) == 1
    assert d.stop() == 0


def test_account_locked_pauses_without_failing_files(tmp_path, fakefal, fal_daemons, tls_files):
    """A 403 (exhausted balance) pauses all submission with one error line; no file fails,
    and the files are processed once the account works again and the daemon is told (SIGHUP
    is the service issue's; a restart does it here)."""
    server = fakefal(faults=Faults(locked=True))
    config = fal_config(tmp_path, [{"inbox": "in", "outbox": "out"}], concurrency=2)
    d = fal_daemons(config, fal_env(server, tls_files)).ready()
    for i in range(4):
        make_image(tmp_path / f"in/f{i}.png", (10, 10), color=f"#0{i}0000", fmt="PNG")
    d.wait_event("account_paused")
    time.sleep(1.5)
    assert len(d.named("account_paused")) == 1
    assert not d.named("job_failed")
    assert not (tmp_path / "in/failed").exists() or not any((tmp_path / "in/failed").iterdir())
    assert d.stop() == 0
    server.faults.locked = False
    d2 = fal_daemons(config, fal_env(server, tls_files)).ready()
    d2.wait_event("job_done", 4)
    assert len(images_in(tmp_path / "out")) == 4
    assert d2.stop() == 0


def test_sigkill_in_flight_then_restart_submits_each_file_once(tmp_path, fakefal, fal_daemons,
                                                               tls_files):
    """SIGKILL while requests wait at fal; the restart resumes them by request id, so every
    file completes with exactly one submission."""
    server = fakefal(latency=1.5, runners=2)
    config = fal_config(tmp_path, [{"inbox": "in", "outbox": "out", "settle": 0.2}],
                        concurrency=4)
    for i in range(4):
        make_image(tmp_path / f"in/k{i}.png", (12, 8), color=f"#{i}0{i}0{i}0", fmt="PNG")
    # nothing can be seen finishing before the kill, however slow the machine
    server.faults.slow["status"] = server.faults.slow["stream"] = 30.0
    d = fal_daemons(config, fal_env(server, tls_files)).ready()
    d.wait_event("fal_request_submitted", 4)
    os.kill(d.proc.pid, signal.SIGKILL)
    d.proc.wait()
    server.faults.slow["status"] = server.faults.slow["stream"] = 0.0
    d2 = fal_daemons(config, fal_env(server, tls_files)).ready()
    d2.wait_event("job_done", 4, timeout=30)
    assert len(d2.named("fal_request_resumed")) == 4
    assert len(server.submissions) == 4
    assert sorted(server.billed_per_input().values()) == [1, 1, 1, 1]
    assert len(images_in(tmp_path / "out")) == 4
    assert d2.stop() == 0


def test_expired_result_is_submitted_again_and_says_so(tmp_path, fakefal, fal_daemons,
                                                       tls_files):
    """A request fal no longer has (404 after expiry) is submitted again, with a log line
    saying this is a second charge."""
    server = fakefal(latency=0.3, faults=Faults(expire_after=1.0))
    config = fal_config(tmp_path, [{"inbox": "in", "outbox": "out", "settle": 0.2}])
    make_image(tmp_path / "in/e.png", (12, 8), fmt="PNG")
    # the first daemon never sees the run finish
    server.faults.slow["status"] = server.faults.slow["stream"] = 30.0
    d = fal_daemons(config, fal_env(server, tls_files)).ready()
    d.wait_event("fal_request_submitted")
    os.kill(d.proc.pid, signal.SIGKILL)
    d.proc.wait()
    server.faults.slow["status"] = server.faults.slow["stream"] = 0.0
    time.sleep(1.5)  # the request completes and its result expires while we are down
    d2 = fal_daemons(config, fal_env(server, tls_files)).ready()
    d2.wait_event("job_done", timeout=30)
    gone = d2.named("fal_request_gone")
    assert len(gone) == 1 and "second charge" in gone[0]["note"]
    assert len(server.submissions) == 2
    assert d2.stop() == 0


def test_fault_mix_still_yields_every_output_without_double_billing(tmp_path, fakefal,
                                                                   fal_daemons, tls_files):
    """30 % of calls to every endpoint fail (429, 5xx, dropped connections, truncated
    downloads, failed runs): every file still gets its output and no file is billed for
    more than one successful run."""
    server = fakefal(latency=0.1, runners=4, faults=Faults.mix(0.3), seed=7)
    config = fal_config(tmp_path, [{"inbox": "in", "outbox": "out", "settle": 0.2}],
                        concurrency=4, retry={"attempts": 10, "backoff": 0.1, "max_backoff": 0.5})
    d = fal_daemons(config, fal_env(server, tls_files)).ready()
    for i in range(12):
        make_image(tmp_path / f"in/m{i:02d}.png", (14, 9), color=f"#{i:02x}{i:02x}40", fmt="PNG")
    d.wait_event("job_done", 12, timeout=120)
    assert not d.named("job_failed")
    assert len(images_in(tmp_path / "out")) == 12
    billed = server.billed_per_input()
    assert len(billed) == 12
    successes_used = sum(1 for e in d.named("job_done"))
    assert successes_used == 12
    # a run fal completed but whose result we never saw would show up as >1; a re-run only
    # happens after fal itself reported the run failed, which is not billed as a success
    assert max(billed.values()) == 1, billed
    # concurrency 4 is a hard cap by default: never more requests at fal
    assert server.peak_open <= 4
    assert d.stop() == 0
    wait_for(lambda: d.proc.poll() is not None, 5, "exit")


def test_timeout_cancels_the_request_and_retries(tmp_path, fakefal, fal_daemons, tls_files):
    """Past fal.timeout the running request is cancelled; fal stops it only later and bills
    it (a cancel is a signal to the runner). The daemon waits for it to end cancelled, then
    retries as transient, saying that the cancelled run may be billed; with the service
    answering in time again, the file completes. The fake's ledger has both runs billed, and
    so does the journal: `status` counts the run as possibly paid twice and the job's cost
    (what the day's budget adds up) is two runs of the result's size."""
    server = fakefal(latency=30)
    server.strict.cancel_delay = 2.0
    config = fal_config(tmp_path, [{"inbox": "in", "outbox": "out", "settle": 0.2}],
                        fal={"timeout": 10})
    d = fal_daemons(config, fal_env(server, tls_files)).ready()
    make_image(tmp_path / "in/t.png", (400, 300), fmt="PNG")  # big enough for cents to show
    d.wait_event("fal_request_submitted")
    server.latency = 0.1  # later submissions are quick
    timed_out = d.wait_event("fal_request_timed_out", timeout=30)[0]
    assert "bill" in timed_out["note"]
    d.wait_event("job_done", timeout=20)
    cancel_times = server.strict.times("cancel")
    assert len(cancel_times) == 1
    assert len(server.submissions) == 2
    outcomes = sorted(row["outcome"] for row in server.ledger)
    assert outcomes == ["cancelled", "ok"]  # the cancelled run was billed too
    # The second submission came only after the first run had really ended.
    first, second = sorted(server.requests.values(), key=lambda r: r.submitted)
    assert second.submitted >= first.end
    assert timed_out["was_running"] is True
    assert d.stop() == 0
    report = json.loads(cli("status", "--json", "--config", str(config)).stdout)
    runs = sum(server.billed_per_input().values())
    result_mp = [row["output_megapixels"] for row in server.ledger if row["outcome"] == "ok"]
    assert runs == 2 and report["spend"]["maybe_paid_twice"] == 1
    # fal's documented price, $0.016 per output megapixel, for each billed run
    assert report["spend"]["total_usd"] == pytest.approx(runs * result_mp[0] * 0.016, rel=1e-3)


def test_a_request_cancelled_while_still_queued_is_not_counted_as_paid(
        tmp_path, fakefal, fal_daemons, tls_files):
    """Two files, one runner at fal: past fal.timeout the running request and the one still
    waiting in fal's queue are both cancelled. Only the run that had started is counted as
    possibly paid twice, as the fake's ledger bills only that one."""
    server = fakefal(latency=40, runners=1)
    server.strict.cancel_delay = 0.5
    config = fal_config(tmp_path, [{"inbox": "in", "outbox": "out", "settle": 0.2}],
                        fal={"timeout": 10}, concurrency=2)
    d = fal_daemons(config, fal_env(server, tls_files)).ready()
    make_image(tmp_path / "in/a.png", (40, 30), fmt="PNG")
    make_image(tmp_path / "in/b.png", (30, 40), fmt="PNG")
    d.wait_event("fal_request_submitted", 2)
    server.latency = 0.1
    timed_out = d.wait_event("fal_request_timed_out", 2, timeout=40)
    d.wait_event("job_done", 2, timeout=30)
    assert sorted(e["was_running"] for e in timed_out) == [False, True]
    cancelled = [row for row in server.ledger if row["outcome"] == "cancelled"]
    billed_cancelled = sum(server.billed_per_input().values()) - 2  # minus the two good runs
    assert d.stop() == 0
    report = json.loads(cli("status", "--json", "--config", str(config)).stdout)
    assert report["spend"]["maybe_paid_twice"] == billed_cancelled == 1, cancelled


def test_a_run_that_finishes_despite_the_cancel_is_used(tmp_path, fakefal, fal_daemons,
                                                       tls_files):
    """A cancel reaches a runner that finishes anyway before the cancel takes effect: the
    daemon uses that (billed) result instead of paying for a second run."""
    server = fakefal(latency=12)
    server.strict.cancel_delay = 20.0  # the run ends long before the cancel would stop it
    config = fal_config(tmp_path, [{"inbox": "in", "outbox": "out", "settle": 0.2}],
                        fal={"timeout": 10})
    d = fal_daemons(config, fal_env(server, tls_files)).ready()
    make_image(tmp_path / "in/late.png", (10, 10), fmt="PNG")
    d.wait_event("fal_request_finished_despite_cancel", timeout=30)
    d.wait_event("job_done", timeout=20)
    assert len(server.strict.times("cancel")) == 1
    assert len(server.submissions) == 1
    assert [row["outcome"] for row in server.ledger] == ["ok"]
    assert images_in(tmp_path / "out") == {"late_x2.png": (20, 20)}
    assert not d.named("fal_request_timed_out")
    assert d.stop() == 0


def test_plain_url_results_and_truncated_downloads(tmp_path, fakefal, fal_daemons, tls_files):
    """Images given as plain URL strings are accepted, and a truncated download is fetched
    again from the same request (one submission)."""
    server = fakefal(latency=0.1, faults=Faults(plain_urls=True, truncate_download=0.5), seed=3)
    config = fal_config(tmp_path, [{"inbox": "in", "outbox": "out", "settle": 0.2}])
    d = fal_daemons(config, fal_env(server, tls_files)).ready()
    for i in range(3):
        make_image(tmp_path / f"in/p{i}.png", (10, 6), color=f"#{i}{i}0000", fmt="PNG")
    d.wait_event("job_done", 3)
    assert len(server.submissions) == 3
    assert server.calls["download"] > 3  # some downloads were cut short and fetched again
    assert all(size == (20, 12) for size in images_in(tmp_path / "out").values())
    assert d.stop() == 0


def test_once_with_a_refused_account_stops_with_files_still_queued(tmp_path, fakefal, tls_files):
    """``once`` does not wait out an account pause: it exits 1 promptly, fails no file, and
    the files stay queued for the next run."""
    import subprocess
    import sys

    from conftest import BOOTSTRAP

    server = fakefal(faults=Faults(locked=True))
    config = fal_config(tmp_path, [{"inbox": "in", "outbox": "out", "settle": 0.1}])
    make_image(tmp_path / "in/wait.png", (10, 10), fmt="PNG")
    started = time.monotonic()
    result = subprocess.run([sys.executable, str(BOOTSTRAP), "once", "--config", str(config)],
                            env={**os.environ, **fal_env(server, tls_files)},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    assert time.monotonic() - started < 30
    assert "once_stopped_early" in result.stderr + result.stdout
    report = json.loads(cli("status", "--json", "--config", str(config)).stdout)
    assert report["totals"]["queued"] == 1 and report["totals"]["failed"] == 0


def test_daily_budget_stops_new_submissions_and_keeps_files_queued(tmp_path, fakefal,
                                                                   fal_daemons, tls_files):
    """Once today's spend reaches budget.daily_usd, nothing new is submitted: files wait in
    the queue (not failed), the log says so once, and a reload with a higher budget resumes."""
    server = fakefal(latency=0.1)
    config = fal_config(tmp_path, [{"inbox": "in", "outbox": "out", "settle": 0.2}],
                        concurrency=1, budget={"daily_usd": 0.00001})
    d = fal_daemons(config, fal_env(server, tls_files)).ready()
    make_image(tmp_path / "in/first.png", (20, 20), fmt="PNG")
    d.wait_event("job_done")
    for i in range(2):
        make_image(tmp_path / f"in/later{i}.png", (20, 20), color="blue" if i else "green",
                   fmt="PNG")
    d.wait_event("budget_reached")
    time.sleep(1.5)
    assert len(server.submissions) == 1 and len(d.named("budget_reached")) == 1
    report = json.loads(cli("status", "--json", "--config", str(config)).stdout)
    assert report["totals"]["queued"] == 2 and report["totals"]["failed"] == 0
    config.write_text(config.read_text().replace("1.0e-05", "100").replace("1e-05", "100"))
    os.kill(d.proc.pid, signal.SIGHUP)
    d.wait_event("job_done", 3)
    assert len(server.submissions) == 3
    assert d.stop() == 0


def test_concurrency_is_a_hard_cap_unless_queue_ahead_is_set(tmp_path, fakefal, fal_daemons,
                                                             tls_files):
    """An account that would run 64 requests at once and ``concurrency: 3``: 3 requests are
    submitted and not finished at fal at the busiest, never more; ``fal.queue_ahead: 2``
    really lets more be open (handed on just before running ones finish), but at most 2."""
    for ahead in (0, 2):
        server = fakefal(latency=0.4, runners=64)
        work = tmp_path / f"ahead{ahead}"
        work.mkdir()
        config = fal_config(work, [{"inbox": "in", "outbox": "out", "settle": 0.2}],
                            concurrency=3, fal={"timeout": 60, "queue_ahead": ahead})
        d = fal_daemons(config, fal_env(server, tls_files)).ready()
        for i in range(15):
            make_image(work / f"in/h{i:02d}.png", (12, 8), color=f"#{i:02x}8040", fmt="PNG")
        d.wait_event("job_done", 15, timeout=60)
        assert len(server.submissions) == 15
        # From below too: without queue_ahead the cap is reached; with it, it is exceeded.
        assert 3 + min(ahead, 1) <= server.peak_open <= 3 + ahead, server.peak_open
        assert d.stop() == 0
