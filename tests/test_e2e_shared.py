"""Several daemons, one PostgreSQL journal: real daemon processes (the real CLI), one shared
inbox and outbox, the fake fal. Nothing is done twice, nothing is paid twice, the global
limits hold, and a daemon killed with requests at fal is finished by the others from its
journaled request ids."""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path

import yaml
from conftest import cli, fal_env, wait_for
from PIL import Image

LEASE = 3.0


def shared_config(tmp_path: Path, name: str, url: str, **top) -> Path:
    """A daemon's own config (own state_dir) on the shared journal, inbox and outbox."""
    folder = tmp_path / name
    folder.mkdir()
    # The shared inbox is there, as a share is: a daemon creates no inbox outside its
    # config file's folder (a share not yet mounted must not be made on the local disk).
    (tmp_path / "inbox").mkdir(exist_ok=True)
    data = {"backend": "fal", "state_dir": str(folder / "state"), "journal": url,
            "journal_lease": LEASE, "concurrency": 6,
            "log": {"format": "json", "level": "debug"},
            "retry": {"attempts": 6, "backoff": 0.2, "max_backoff": 1},
            "fal": {"timeout": 60}, **top,
            "folders": [{"name": "studio", "inbox": str(tmp_path / "inbox"),
                         "outbox": str(tmp_path / "outbox"), "settle": 0.3}]}
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def distinct_images(inbox: Path, count: int, size: tuple[int, int] = (24, 16)) -> list[str]:
    """``count`` PNGs with different content (so none is a copy of another)."""
    inbox.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(count):
        image = Image.new("RGB", size, (i % 251, (i * 7) % 253, 90))
        image.putpixel((i % size[0], (i // size[0]) % size[1]), (255, 255, 255))
        image.save(inbox / f"img{i:03}.png")
        names.append(f"img{i:03}")
    return names


def kill_at_fal(victim, others, server) -> set[str]:
    """SIGKILL ``victim`` while it has requests at fal, at a moment outside the submit window
    (fal accepted a request, its id not journaled yet: no client can close that window, and
    the README says so). The victim is frozen, the fake given time to take in anything
    already sent, and killed only if every request fal accepted is journaled; otherwise it
    runs on a moment and is tried again. Returns its request ids still at fal."""
    for _ in range(100):
        victim.proc.send_signal(signal.SIGSTOP)
        time.sleep(0.4)
        accepted = {s["request_id"] for s in list(server.submissions)}
        journaled = {e["request_id"] for d in [victim, *others]
                     for e in d.named("fal_request_submitted")}
        in_flight = {e["request_id"] for e in victim.named("fal_request_submitted")} - {
            e["request_id"] for e in victim.named("fal_result_downloaded")}
        if accepted <= journaled and in_flight:
            victim.proc.kill()  # no shutdown, no requeue: its leases simply stop
            victim.proc.wait()
            return in_flight
        victim.proc.send_signal(signal.SIGCONT)
        time.sleep(0.05)
    raise AssertionError("never found the victim with requests at fal outside the submit window")


def outputs(outbox: Path) -> list[str]:
    return sorted(p.name for p in outbox.glob("*") if not p.name.startswith("."))


def test_three_daemons_share_the_work_and_survive_one_killed_at_fal(
        tmp_path, pg_url, fakefal, fal_daemons, tls_files):
    """Three daemons, 200 files, concurrency 6 over all of them, fal with 64 runners: every
    file gets exactly one output and one billed run, never more than 6 requests are at fal,
    and a daemon SIGKILLed with requests at fal has them finished by the others by fetching,
    not resubmitting."""
    server = fakefal(latency=0.25, runners=64)
    names = distinct_images(tmp_path / "inbox", 200)
    (tmp_path / "outbox").mkdir()
    env = fal_env(server, tls_files)
    daemons = [fal_daemons(shared_config(tmp_path, f"d{i}", pg_url), env) for i in range(3)]
    for d in daemons:
        d.ready()
    victim = daemons[0]
    victim.wait_event("fal_request_submitted", 3, timeout=60)
    in_flight = kill_at_fal(victim, daemons[1:], server)

    wait_for(lambda: len(outputs(tmp_path / "outbox")) >= 200, 120, "200 outputs")
    survivors = daemons[1:]
    time.sleep(0.5)
    assert outputs(tmp_path / "outbox") == sorted(f"{n}_x2.png" for n in names)
    # one billed run per file, and one submission per file: nothing was resubmitted
    billed = server.billed_per_input()
    assert len(billed) == 200 and set(billed.values()) == {1}
    submitted = [s["input_sha256"] for s in server.submissions]
    assert len(submitted) == 200 and len(set(submitted)) == 200
    assert server.peak_open <= 6
    # the survivors fetched the killed daemon's requests
    resumed = {e["request_id"] for d in survivors for e in d.named("fal_request_resumed")}
    assert in_flight <= resumed
    assert sum(len(d.named("job_lease_taken_over")) for d in survivors) >= len(in_flight)
    # all three took part
    assert all(d.named("fal_request_submitted") for d in daemons)
    report = json.loads(cli("status", "--json", "--config", str(survivors[0].config)).stdout)
    assert report["totals"]["done"] == 200 and report["totals"]["queued"] == 0
    alive = [d for d in report["daemons"] if d["alive"]]
    assert len(alive) >= 2
    for d in survivors:
        assert d.stop() == 0


def test_two_daemons_never_spend_past_the_daily_budget(tmp_path, pg_url, fakefal, fal_daemons,
                                                       tls_files):
    """Two daemons share a budget that allows exactly 5 files: 5 are done and billed, the
    rest stay queued (not failed), and neither daemon submits beyond it."""
    server = fakefal(latency=0.3, runners=64)
    distinct_images(tmp_path / "inbox", 14, size=(100, 100))  # 200x200 out: $0.04 each
    (tmp_path / "outbox").mkdir()
    top = {"budget": {"daily_usd": 0.2},
           "fal": {"timeout": 60, "price_per_megapixel": 1.0}}
    env = fal_env(server, tls_files)
    daemons = [fal_daemons(shared_config(tmp_path, f"d{i}", pg_url, **top), env)
               for i in range(2)]
    for d in daemons:
        d.ready()
    wait_for(lambda: len(outputs(tmp_path / "outbox")) >= 5, 60, "5 outputs")
    time.sleep(2.5)  # room for a wrong sixth submission to show up
    assert len(outputs(tmp_path / "outbox")) == 5
    assert len(server.submissions) == 5 and len(server.billed_per_input()) == 5
    report = json.loads(cli("status", "--json", "--config", str(daemons[0].config)).stdout)
    assert report["totals"]["done"] == 5 and report["totals"]["queued"] == 9
    assert report["totals"]["failed"] == 0
    assert abs(report["spend"]["today_usd"] - 0.2) < 1e-6
    for d in daemons:
        assert d.stop() == 0


def test_check_reports_an_unreachable_journal_and_disagreeing_daemons(tmp_path, pg_url,
                                                                     daemons):
    """``check`` (and a starting daemon) exits 1 naming a journal it cannot reach, without the
    password; ``check`` warns when a live daemon on the journal gives the same folder
    different settings."""
    bad = shared_config(tmp_path, "bad", "postgresql://cw:hunter2-secret@127.0.0.1:1/cw",
                        backend="local")
    result = cli("check", "--config", str(bad), timeout=60)
    assert result.returncode == 1
    assert "127.0.0.1:1" in result.stderr and "hunter2-secret" not in result.stderr
    assert "hunter2-secret" not in result.stdout
    started = cli("once", "--config", str(bad), timeout=60)  # the daemon refuses to start
    assert started.returncode == 1 and "cannot reach the journal database" in started.stderr
    assert "hunter2-secret" not in started.stdout + started.stderr
    first = shared_config(tmp_path, "a", pg_url, backend="local")
    running = daemons(first).ready()
    other = shared_config(tmp_path, "b", pg_url, backend="local")
    data = yaml.safe_load(other.read_text())
    data["folders"][0]["scale_factor"] = 3
    other.write_text(yaml.safe_dump(data))
    result = cli("check", "--config", str(other))
    assert result.returncode == 0, result.stderr
    # The other daemon runs with the default scale factor, 2 (fal's own default too), and is
    # named by the state_dir its config gives.
    warning = re.search(r"folder 'studio': scale_factor is 3(?:\.0)? here but 2(?:\.0)? on "
                        r"daemon \S+ \([^,]+, (.+)\)", result.stderr)
    assert warning, result.stderr
    assert warning.group(1) == str(tmp_path / "a" / "state")
    assert running.stop() == 0
    assert "warning" not in cli("check", "--config", str(first)).stderr


def test_export_from_sqlite_and_import_into_postgresql(tmp_path, pg_url, daemons):
    """A studio that grows: the jobs of a SQLite journal move to PostgreSQL with
    ``journal export|import``; a file already done is not processed again by the daemon on
    the new journal."""
    from conftest import make_image, write_config

    make_image(tmp_path / "in/a.png", (20, 20), fmt="PNG")
    alone = write_config(tmp_path, [{"name": "studio", "inbox": "in", "outbox": "out"}])
    assert cli("once", "--config", str(alone)).returncode == 0
    assert outputs(tmp_path / "out") == ["a_x2.png"]
    dump = tmp_path / "jobs.jsonl"
    result = cli("journal", "export", str(dump), "--config", str(alone))
    assert result.returncode == 0 and "exported 1 job" in result.stderr
    data = yaml.safe_load(alone.read_text())
    data["journal"] = pg_url
    grown = tmp_path / "grown.yaml"
    grown.write_text(yaml.safe_dump(data))
    result = cli("journal", "import", str(dump), "--config", str(grown))
    assert result.returncode == 0 and "imported 1 job" in result.stderr
    (tmp_path / "out/a_x2.png").unlink()
    assert cli("once", "--config", str(grown)).returncode == 0
    assert outputs(tmp_path / "out") == []  # journaled as done: not redone
    report = json.loads(cli("status", "--json", "--config", str(grown)).stdout)
    assert report["totals"]["done"] == 1
    broken = tmp_path / "broken.jsonl"
    broken.write_text("not an export\n")
    result = cli("journal", "import", str(broken), "--config", str(grown))
    assert result.returncode == 1 and "not a crystal-watchd journal export" in result.stderr


def test_status_lists_daemons_and_their_work(tmp_path, pg_url, daemons):
    """``status`` on a shared journal names every daemon with its host, heartbeat and what
    it works on; a stopped daemon is gone from the list; the journal password appears in
    neither the daemon's log nor ``status``."""
    secret = "pw-never-shown-42"  # trust auth accepts any password
    config = shared_config(tmp_path, "a", pg_url.replace("postgres@", f"postgres:{secret}@"),
                           backend="local")
    d = daemons(config).ready()
    status = cli("status", "--json", "--config", str(config))
    assert secret not in status.stdout + status.stderr
    report = json.loads(status.stdout)
    [entry] = report["daemons"]
    assert entry["alive"] and entry["pid"] == d.proc.pid and entry["working_on"] == []
    assert "postgresql://" in report["journal"]
    text = cli("status", "--config", str(config)).stdout
    assert f"pid {d.proc.pid}" in text and "idle" in text
    assert d.stop() == 0
    assert secret not in d.text() and "postgres:***@" in d.text()
    assert json.loads(cli("status", "--json", "--config", str(config)).stdout)["daemons"] == []
