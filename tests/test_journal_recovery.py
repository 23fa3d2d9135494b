"""A damaged or lost journal: refused at start with exit 78 and the recovery command,
recovered without losing the damaged file, backed up, and rebuilt from what the outputs say
of where they came from (their XMP provenance) without paying again. The real CLI in a
subprocess, real SQLite, the fake fal's ledger."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time

import pytest
from conftest import cli, fal_env, images_in, make_image, write_config

DAMAGE = ["garbage", "truncated"]


def damage(path, how: str) -> None:
    """Garbage over the middle third of the file, or the file cut to half."""
    size = path.stat().st_size
    if how == "garbage":
        with open(path, "r+b") as fh:
            fh.seek(size // 3)
            fh.write(os.urandom(size // 3))
    else:
        os.truncate(path, size // 2)


def processed(tmp_path, count=12):
    """A config on the local backend whose ``count`` distinct pictures were upscaled once."""
    config = write_config(tmp_path, [{"name": "p", "inbox": "in", "outbox": "out"}])
    for i in range(count):
        make_image(tmp_path / f"in/pic{i:02d}.jpg", (30 + i, 20 + i), color=f"#{i * 9:02x}3050")
    done = cli("once", "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert len(images_in(tmp_path / "out")) == count
    return config


def outbox_state(tmp_path):
    return {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()}


def events(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line).get("event"))
        except (json.JSONDecodeError, AttributeError):
            continue
    return out


@pytest.mark.parametrize("how", DAMAGE)
def test_damaged_journal_is_exit_78_naming_the_file_and_the_recovery(how, tmp_path):
    """With garbage over its middle or cut to half, the journal makes ``once``, ``run``,
    ``status`` and ``journal check`` exit 78 (no restart loop under systemd), each naming
    the file, what is wrong and the command that recovers; no traceback."""
    config = processed(tmp_path)
    journal = tmp_path / "state/journal.sqlite3"
    damage(journal, how)
    for command in (["once"], ["run"], ["status"], ["journal", "check"]):
        result = cli(*command, "--config", str(config), timeout=60)
        assert result.returncode == 78, (command, result.stdout, result.stderr)
        assert str(journal) in result.stderr and "damaged" in result.stderr, result.stderr
        assert f"crystal-watchd journal recover --config {config}" in result.stderr
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize("how", DAMAGE)
def test_recovery_keeps_the_damaged_file_and_pays_for_nothing_again(how, tmp_path):
    """``journal recover`` renames the damaged file aside (never deletes it) and brings a
    usable journal back; the next ``once`` writes no output again (no ``-1`` copies, every
    output untouched): what the journal lost, the outputs' provenance says was done."""
    config = processed(tmp_path)
    before = outbox_state(tmp_path)
    journal = tmp_path / "state/journal.sqlite3"
    damage(journal, how)
    damaged_bytes = journal.read_bytes()
    recovered = cli("journal", "recover", "--config", str(config))
    assert recovered.returncode == 0, recovered.stderr
    aside = [p for p in journal.parent.iterdir() if p.name.startswith("journal.sqlite3.damaged-")
             and not p.name.endswith(("-wal", "-shm"))]
    assert len(aside) == 1 and aside[0].read_bytes() == damaged_bytes
    assert cli("journal", "check", "--config", str(config)).returncode == 0
    again = cli("once", "--config", str(config))
    assert again.returncode == 0, again.stderr
    assert outbox_state(tmp_path) == before
    assert "job_started" not in events(again.stderr) or "job_found_in_outbox" in events(
        again.stderr)
    db = sqlite3.connect(journal)
    states = {r[0] for r in db.execute("SELECT state FROM jobs")}
    assert states == {"done"} and db.execute("SELECT count(*) FROM spend").fetchone()[0] == 0


def test_recovery_restores_the_newest_good_backup(tmp_path):
    """With a backup in ``state_dir/backups`` and the journal's catalogue gone (cut to a
    tenth), recovery restores that backup."""
    config = processed(tmp_path, count=3)
    assert cli("once", "--config", str(config)).returncode == 0  # a later start: daily backup
    backups = list((tmp_path / "state/backups").glob("journal-*-daily.sqlite3"))
    assert len(backups) == 1
    journal = tmp_path / "state/journal.sqlite3"
    os.truncate(journal, journal.stat().st_size // 10)
    recovered = cli("journal", "recover", "--config", str(config))
    assert recovered.returncode == 0, recovered.stderr
    assert f"restored the backup {backups[0]}" in recovered.stdout, recovered.stdout
    assert sqlite3.connect(journal).execute("SELECT count(*) FROM jobs").fetchone()[0] == 3


def test_backups_are_made_before_a_migration_and_a_few_kept(tmp_path):
    """A journal of an older schema is backed up before it is migrated (the backup still
    holds the old schema), and no more than KEEP_BACKUPS backups are kept."""
    from crystal_watchd.journal import sqlitecare

    config = processed(tmp_path, count=2)
    journal = tmp_path / "state/journal.sqlite3"
    db = sqlite3.connect(journal)
    db.execute("UPDATE meta SET value='9' WHERE key='schema'")
    db.commit()
    db.close()
    where = tmp_path / "state/backups"
    where.mkdir(exist_ok=True)
    for day in range(10):  # older backups: all but the newest few are removed
        old = where / f"journal-2020010{day}T000000Z-daily.sqlite3"
        shutil.copyfile(journal, old)
        os.utime(old, (time.time() - 86400 * (20 - day),) * 2)
    assert cli("status", "--config", str(config)).returncode in (0, 3)
    assert cli("once", "--config", str(config)).returncode == 0
    kept = sorted(p.name for p in where.iterdir())
    assert len(kept) == sqlitecare.KEEP_BACKUPS
    migration = [p for p in where.iterdir() if p.name.endswith("-before-migration.sqlite3")]
    assert len(migration) == 1
    version = sqlite3.connect(migration[0]).execute(
        "SELECT value FROM meta WHERE key='schema'").fetchone()[0]
    assert version == "9"


def test_lost_state_dir_pays_for_nothing_already_in_the_outbox(tmp_path, fakefal, fal_daemons,
                                                               tls_files):
    """Against the fake fal: pictures upscaled and paid for, then ``state_dir`` deleted (a
    wiped volume). The restart submits nothing (fal's ledger bills each input once), writes
    no ``-1`` copies, and journals each file as done at no cost; every output names its
    source's sha256, the request id, scale, creativity, model and version in its XMP."""
    from crystal_watchd.images import provenance

    server = fakefal(latency=0.1)
    config = write_config(tmp_path, [{"inbox": "in", "outbox": "out", "settle": 0.2,
                                      "creativity": 1}], backend="fal",
                          fal={"timeout": 60})
    for i in range(4):
        make_image(tmp_path / f"in/m{i}.png", (14, 9), color=f"#{i:02x}{i:02x}40", fmt="PNG")
    first = fal_daemons(config, fal_env(server, tls_files))
    first.wait_event("daemon_ready", timeout=60)
    first.wait_event("job_done", 4, timeout=90)
    assert first.stop() == 0
    outputs = sorted((tmp_path / "out").iterdir())
    assert len(outputs) == 4 and len(server.submissions) == 4
    made = provenance.read(outputs[0])
    assert made is not None and made.Backend == "fal" and made.RequestId
    assert made.Model == "clarityai/crystal-upscaler" and made.Creativity == "1"
    assert made.SourceSha256 and made.Software.startswith("crystal-watchd ")
    shutil.rmtree(tmp_path / "state")
    second = fal_daemons(config, fal_env(server, tls_files))
    second.wait_event("daemon_ready", timeout=60)
    second.wait_event("job_found_in_outbox", 4, timeout=90)
    assert second.stop() == 0
    assert len(server.submissions) == 4
    assert set(server.billed_per_input().values()) == {1}
    assert sorted((tmp_path / "out").iterdir()) == outputs
    db = sqlite3.connect(tmp_path / "state/journal.sqlite3")
    assert db.execute("SELECT count(*), sum(cost_usd) FROM jobs WHERE state='done'"
                      ).fetchone() == (4, 0.0)
    assert db.execute("SELECT count(*) FROM spend").fetchone()[0] == 0


def test_missing_inbox_outside_the_config_folder_waits_and_is_not_created(tmp_path):
    """An inbox outside the config file's folder that is missing (a share not mounted yet)
    is not created: ``once`` warns naming it and leaves it; an inbox beside the config (a
    checkout's example) is still made."""
    share = tmp_path / "mnt/share"
    share.mkdir(parents=True)
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    config = write_config(conf_dir, [{"name": "nas", "inbox": str(share / "inbox"),
                                      "outbox": str(share / "outbox")},
                                     {"name": "here", "inbox": "in", "outbox": "out"}])
    result = cli("once", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert not (share / "inbox").exists() and not (share / "outbox").exists()
    warned = [json.loads(line) for line in result.stderr.splitlines()
              if '"inbox_missing"' in line]
    assert warned and warned[0]["inbox"] == str(share / "inbox")
    assert (conf_dir / "in").is_dir()


def test_refused_start_leaves_no_daemon_row(tmp_path):
    """A start refused with exit 78 (the fal backend with no key) leaves no row in the
    daemons table, so ``status`` shows no daemon alive."""
    config = write_config(tmp_path, [{"inbox": "in", "outbox": "out"}], backend="fal")
    refused = cli("once", "--config", str(config), env={"FAL_KEY": "", "FAL_KEY_ID": "",
                                                        "FAL_KEY_SECRET": ""})
    assert refused.returncode == 78, refused.stderr
    db = sqlite3.connect(tmp_path / "state/journal.sqlite3")
    assert db.execute("SELECT count(*) FROM daemons").fetchone()[0] == 0
    status = cli("status", "--json", "--config", str(config))
    assert status.returncode == 3 and json.loads(status.stdout)["daemon_running"] is False


def test_refused_start_leaves_no_daemon_row_on_postgresql(tmp_path, pg_url):
    """The same on a shared PostgreSQL journal: a refused start leaves no daemon row that
    the other daemons' ``status`` would list as alive; ``journal check`` reaches the database
    and points at pg_dump for its backups."""
    import psycopg

    config = write_config(tmp_path, [{"inbox": "in", "outbox": "out"}], backend="fal",
                          journal=pg_url)
    refused = cli("once", "--config", str(config), env={"FAL_KEY": "", "FAL_KEY_ID": "",
                                                        "FAL_KEY_SECRET": ""})
    assert refused.returncode == 78, refused.stderr
    with psycopg.connect(pg_url) as db:
        assert db.execute("SELECT count(*) FROM daemons").fetchone()[0] == 0
    checked = cli("journal", "check", "--config", str(config))
    assert checked.returncode == 0, checked.stderr
    assert "pg_dump" in checked.stdout


def test_lost_postgresql_journal_pays_for_nothing_in_the_outbox(tmp_path, pg_url):
    """A PostgreSQL journal emptied (a database recreated) finds the outputs' provenance
    the same way: the next ``once`` records every file as done and writes no output."""
    import psycopg

    config = write_config(tmp_path, [{"name": "p", "inbox": "in", "outbox": "out"}],
                          journal=pg_url)
    for i in range(3):
        make_image(tmp_path / f"in/pic{i}.jpg", (30 + i, 20), color=f"#{i * 40:02x}3050")
    assert cli("once", "--config", str(config)).returncode == 0
    before = outbox_state(tmp_path)
    assert len(before) == 3
    with psycopg.connect(pg_url) as db:
        db.execute("DELETE FROM jobs")
    again = cli("once", "--config", str(config))
    assert again.returncode == 0, again.stderr
    assert events(again.stderr).count("job_found_in_outbox") == 3
    assert outbox_state(tmp_path) == before


def test_rebuild_journals_what_the_outboxes_hold(tmp_path):
    """``journal rebuild`` with the journal gone journals every file whose output is in
    the outbox as done at no cost, and leaves a file with no output unknown (the next
    ``once`` upscales only that one)."""
    config = processed(tmp_path, count=4)
    shutil.rmtree(tmp_path / "state")
    make_image(tmp_path / "in/new.jpg", (44, 33), color="#102030")
    rebuilt = cli("journal", "rebuild", "--config", str(config))
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "p: 4 file(s)" in rebuilt.stdout
    db = sqlite3.connect(tmp_path / "state/journal.sqlite3")
    assert db.execute("SELECT count(*), sum(cost_usd) FROM jobs WHERE state='done'"
                      ).fetchone() == (4, 0.0)
    db.close()
    again = cli("once", "--config", str(config))
    assert again.returncode == 0, again.stderr
    assert events(again.stderr).count("job_started") == 1
    assert sorted(images_in(tmp_path / "out")) == sorted(
        [f"pic{i:02d}_x2.jpg" for i in range(4)] + ["new_x2.jpg"])
