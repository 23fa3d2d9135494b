"""Hooks end to end: the real daemon runs a command and calls a webhook (a real HTTP server
on loopback) after each job, from its journal's outbox."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import sys
import time
from pathlib import Path

from conftest import cli, make_image, wait_for, write_config
from receivers import Receiver

from crystal_watchd.journal import SqliteJournal

SECRET = b"s3cret-for-the-gallery"

RECORDER = """
import json, os, sys
with open(sys.argv[1], "a") as fh:
    fh.write(json.dumps({"argv": sys.argv[2:],
                         "env": {k: v for k, v in os.environ.items()
                                 if k.startswith(("CW_", "FAL_"))}})
             + "\\n")
print("uploaded " + os.environ["CW_INPUT"])
"""


def _jobs(tmp_path: Path) -> dict[str, dict]:
    """file → job row, read straight from the daemon's SQLite journal."""
    journal = SqliteJournal(tmp_path / "state" / "journal.sqlite3", readonly=True)
    try:
        return {j.rel: {"id": j.id, "path": str(j.path), "outputs": j.outputs,
                        "reason": j.reason} for j in journal.jobs()}
    finally:
        journal.close()


def _calls(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_command_and_webhook_receive_done_and_failed_with_the_job_fields(tmp_path, daemons):
    """A done and a failed job each reach a command hook (CW_* variables and {input},
    {output}, {folder} in its arguments; not the fal key) and a signed webhook (JSON body;
    the signature is HMAC-SHA256 of the body with the secret; the delivery id header matches
    the body)."""
    receiver = Receiver()
    (tmp_path / "secret").write_bytes(SECRET + b"\n")
    script = tmp_path / "recorder.py"
    script.write_text(RECORDER)
    calls = tmp_path / "calls.jsonl"
    config = write_config(
        tmp_path, [{"name": "clients", "inbox": "in", "outbox": "out"}],
        hooks=[{"name": "gallery", "on": ["done", "failed"],
                "run": [sys.executable, str(script), str(calls), "{input}", "{output}",
                        "{folder}"]},
               {"name": "dam", "on": ["done", "failed"], "url": receiver.url + "/hook",
                "secret_file": "secret"}])
    d = daemons(config, env={"FAL_KEY": "key-id:key-secret-never-for-hooks"}).ready()
    make_image(tmp_path / "in/good.jpg", (40, 30))
    (tmp_path / "in/bad.jpg").write_bytes(b"this is not a picture at all")
    d.wait_event("hook_delivered", 4)
    jobs = _jobs(tmp_path)
    good, bad = jobs["good.jpg"], jobs["bad.jpg"]
    assert good["outputs"] == [str(tmp_path / "out/good_x2.jpg")]
    assert bad["path"] == str(tmp_path / "in/failed/bad.jpg")
    error_report = json.loads((tmp_path / "in/failed/bad.jpg.error.json").read_text())

    by_event = {c["env"]["CW_EVENT"]: c for c in _calls(calls)}
    assert set(by_event) == {"done", "failed"}
    done, failed = by_event["done"], by_event["failed"]
    assert done["argv"] == [str(tmp_path / "in/good.jpg"), str(tmp_path / "out/good_x2.jpg"),
                            "clients"]
    assert done["env"]["CW_INPUT"] == str(tmp_path / "in/good.jpg")
    assert done["env"]["CW_OUTPUTS"] == str(tmp_path / "out/good_x2.jpg")
    assert done["env"]["CW_FOLDER"] == "clients"
    assert done["env"]["CW_JOB_ID"] == str(good["id"])
    assert float(done["env"]["CW_COST_USD"]) == 0.0  # the local backend costs nothing
    assert done["env"]["CW_REASON"] == "" and done["env"]["CW_REQUEST_ID"] == ""
    assert failed["argv"] == [str(tmp_path / "in/failed/bad.jpg"), "", "clients"]
    assert failed["env"]["CW_OUTPUTS"] == "" and failed["env"]["CW_JOB_ID"] == str(bad["id"])
    assert failed["env"]["CW_REASON"] == error_report["reason"]
    assert "key-secret" not in calls.read_text()  # the fal key stays with the daemon
    output = [e for e in d.named("hook_output") if e["hook"] == "gallery"]
    assert {e["output"] for e in output} == {f"uploaded {tmp_path / 'in/good.jpg'}",
                                             f"uploaded {tmp_path / 'in/failed/bad.jpg'}"}

    posts = wait_for(lambda: len(receiver.all()) >= 2 and receiver.all(), what="2 webhooks")
    assert len(posts) == 2
    for post in posts:
        assert post.path == "/hook"
        expected = "sha256=" + hmac.new(SECRET, post.body, hashlib.sha256).hexdigest()
        assert post.headers["X-Crystal-Watchd-Signature"] == expected
        assert post.headers["X-Crystal-Watchd-Delivery"] == post.json["delivery_id"]
        assert post.headers["Content-Type"] == "application/json"
    bodies = {p.json["event"]: p.json for p in posts}
    assert bodies["done"]["input"] == str(tmp_path / "in/good.jpg")
    assert bodies["done"]["outputs"] == [str(tmp_path / "out/good_x2.jpg")]
    assert (bodies["done"]["folder"], bodies["done"]["job_id"]) == ("clients", good["id"])
    assert bodies["done"]["cost_usd"] == 0 and bodies["done"]["reason"] is None
    assert bodies["failed"]["input"] == str(tmp_path / "in/failed/bad.jpg")
    assert bodies["failed"]["outputs"] == [] and bodies["failed"]["job_id"] == bad["id"]
    assert bodies["failed"]["reason"] == error_report["reason"]
    assert d.stop() == 0
    receiver.down()


def test_webhook_down_then_back_gets_every_delivery_once_even_across_sigkill(
        tmp_path, daemons):
    """With the receiver down, deliveries are retried (same delivery id each time); the
    daemon is SIGKILLed meanwhile; once the receiver is back, the restarted daemon delivers
    each of them, and the receiver accepts each delivery id exactly once."""
    receiver = Receiver()
    receiver.down()
    config = write_config(tmp_path, [{"inbox": "in", "outbox": "out"}],
                          hooks=[{"on": ["done"], "url": receiver.url + "/in", "timeout": 5}],
                          hook_attempts=1000)
    d1 = daemons(config).ready()
    for name in ("a.jpg", "b.jpg", "c.png"):
        make_image(tmp_path / "in" / name)
    d1.wait_event("job_done", 3)
    failures = d1.wait_event("hook_failed", 6)
    ids = {e["delivery_id"] for e in failures}
    assert len(ids) == 3  # one id per delivery, the same at every attempt
    d1.proc.send_signal(signal.SIGKILL)
    d1.proc.wait()
    assert receiver.all() == []

    receiver.up()
    d2 = daemons(config).ready()
    wait_for(lambda: {p.json["delivery_id"] for p in receiver.all()} == ids, timeout=40,
             what="all three deliveries after the restart")
    time.sleep(1.5)  # a duplicate, if any were sent, would have arrived by now
    got = [p.headers["X-Crystal-Watchd-Delivery"] for p in receiver.all()]
    assert sorted(got) == sorted(ids)
    assert {p.json["file"] for p in receiver.all()} == {"a.jpg", "b.jpg", "c.png"}
    status = json.loads(cli("status", "--json", "--config", str(config)).stdout)
    assert status["hooks"]["delivered"] == 3 and status["hooks"]["pending"] == 0
    assert d2.stop() == 0
    receiver.down()


HANGER = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
with open(sys.argv[1], "w") as fh:
    fh.write(f"{os.getpid()} {child.pid}")
time.sleep(300)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie of a killed process is gone as far as work goes
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_hanging_command_is_killed_at_its_timeout_and_the_daemon_keeps_going(
        tmp_path, daemons):
    """A hook command that hangs (and started a child) is killed with its whole process
    group at its timeout; after hook_attempts it gives up (status counts it, retry-hooks
    queues it again), and jobs carry on meanwhile."""
    script, pids = tmp_path / "hang.py", tmp_path / "pids"
    script.write_text(HANGER)
    config = write_config(tmp_path, [{"inbox": "in", "outbox": "out"}],
                          hooks=[{"name": "slow", "on": ["done"], "timeout": 1.5,
                                  "run": [sys.executable, str(script), str(pids)]}],
                          hook_attempts=1)
    d = daemons(config).ready()
    make_image(tmp_path / "in/first.jpg")
    d.wait_event("job_done")
    pid, child = map(int, wait_for(lambda: pids.exists() and pids.read_text().split(),
                                   what="the hook's pids"))
    make_image(tmp_path / "in/second.jpg")  # the hook is still hanging: jobs go on
    d.wait_event("job_done", 2)
    gave_up = d.wait_event("hook_gave_up")[0]
    assert "killed" in gave_up["error"] and gave_up["hook"] == "slow"
    wait_for(lambda: not _alive(pid) and not _alive(child), what="the hook's group killed")
    d.wait_event("hook_gave_up", 2)
    status = json.loads(cli("status", "--json", "--config", str(config)).stdout)
    assert status["hooks"]["gave_up"] == 2
    assert {g["hook"] for g in status["hooks"]["given_up"]} == {"slow"}
    retried = cli("retry-hooks", "--config", str(config))
    assert retried.returncode == 0 and "retrying 2 hook deliveries" in retried.stdout
    d.wait_event("hook_gave_up", 4, timeout=30)
    assert d.stop() == 0


def test_given_up_delivery_shows_on_page_and_metrics_and_retry_there_delivers_it(
        tmp_path, daemons):
    """A webhook whose receiver is down gives up after hook_attempts; the overview says so,
    /metrics counts it as gave_up, the Failures page lists it with Retry; with the receiver
    back, Retry delivers it (same delivery id) and the gauge moves to delivered."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families
    from test_web import form_token, page_url

    receiver = Receiver()
    receiver.down()
    config = write_config(tmp_path, [{"inbox": "in", "outbox": "out"}],
                          hooks=[{"name": "dam", "on": ["done"], "url": receiver.url}],
                          hook_attempts=2, http={"listen": "127.0.0.1:0"})
    d = daemons(config).ready()
    url = page_url(d)
    make_image(tmp_path / "in/a.jpg")
    gave_up = d.wait_event("hook_gave_up")[0]

    def gauge(client) -> dict[str, float]:
        families = text_string_to_metric_families(client.get("/metrics").text)
        family = next(f for f in families if f.name == "crystal_watchd_hook_deliveries")
        return {s.labels["state"]: s.value for s in family.samples}

    with httpx.Client(base_url=url, follow_redirects=False) as client:
        assert "1 hook delivery gave up" in client.get("/").text
        assert gauge(client) == {"pending": 0, "delivered": 0, "gave_up": 1}
        failures = client.get("/failures").text
        assert 'data-delivery="1"' in failures and "dam" in failures
        receiver.up()
        answer = client.post("/deliveries/retry",
                             data={"form_token": form_token(failures), "delivery": "1"})
        assert answer.status_code == 303
        wait_for(lambda: receiver.all(), what="the retried delivery")
        wait_for(lambda: gauge(client) == {"pending": 0, "delivered": 1, "gave_up": 0},
                 what="the gauge to show it delivered")
        assert "hook delivery gave up" not in client.get("/").text
    assert receiver.all()[0].headers["X-Crystal-Watchd-Delivery"] == gave_up["delivery_id"]
    assert d.stop() == 0
    receiver.down()
