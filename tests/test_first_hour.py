"""A new user's first hour: ``init``, ``check`` for a person (and for scripts), ``check
--online`` against the fake fal, and error messages without empty fields. The real CLI in
a subprocess throughout."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import BOOTSTRAP, FAKE_KEY, Daemon, fal_env, images_in, make_image, write_config

#: Variables that would point the CLI somewhere other than the fresh home (or give it a key).
CLEARED = {"CRYSTAL_WATCHD_CONFIG": "", "FAL_KEY": "", "FAL_KEY_ID": "", "FAL_KEY_SECRET": "",
           "CREDENTIALS_DIRECTORY": "", "STATE_DIRECTORY": ""}


def fresh_home(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An empty home directory and the environment of a user living in it. As root the
    default config is /etc/crystal-watchd/config.yaml, which a test must not write, so the
    path the default would be for a user is given through $CRYSTAL_WATCHD_CONFIG then."""
    home = tmp_path / "home"
    home.mkdir()
    env = {**CLEARED, "HOME": str(home), "XDG_CONFIG_HOME": "", "XDG_STATE_HOME": ""}
    config = home / ".config" / "crystal-watchd" / "config.yaml"
    if os.geteuid() == 0:
        env["CRYSTAL_WATCHD_CONFIG"] = str(config)
    return {**os.environ, **env}, config


def run_cli(*args: str, env: dict[str, str], program: Path | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess:
    command = [sys.executable, *([str(program)] if program else ["-m", "crystal_watchd"])]
    return subprocess.run([*command, *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def on_pty(*args: str, env: dict[str, str], timeout: float = 60) -> tuple[int, str]:
    """Run the CLI with stdin, stdout and stderr on a pseudo-terminal; (exit code, output)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "crystal_watchd", *args], stdin=slave,
                            stdout=slave, stderr=slave, env={**env, "COLUMNS": "200"})
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the other side is closed
                break
            if not data:
                break
            chunks.append(data)
        code = proc.wait(timeout=10)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return code, b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")


def test_init_in_an_empty_home_makes_a_config_check_accepts_and_run_uses(tmp_path):
    """`init` in an empty home writes the config (commented, absolute folder paths), creates
    its directory and both folders, and prints the next two commands; `check` accepts it
    (warning that FAL_KEY is missing), `run --backend local` processes a picture dropped in
    the inbox at the scale given; a second `init` refuses and leaves the file alone."""
    env, config = fresh_home(tmp_path)
    home = Path(env["HOME"])
    made = run_cli("init", "--scale", "3", env=env)
    assert made.returncode == 0, made.stderr
    assert config.is_file() and f"wrote {config}" in made.stdout
    assert [line.strip() for line in made.stdout.splitlines()[-2:]] == [
        "crystal-watchd check", "crystal-watchd run"]
    text = config.read_text()
    assert text.startswith("#") and "# Which upscaler does the work" in text
    data = yaml.safe_load(text)
    inbox, outbox = Path(data["folders"][0]["inbox"]), Path(data["folders"][0]["outbox"])
    assert inbox.is_absolute() and outbox.is_absolute()
    assert inbox.is_dir() and outbox.is_dir() and home in inbox.parents
    assert data["folders"][0]["scale_factor"] == 3

    checked = run_cli("check", env=env)
    assert checked.returncode == 0, checked.stderr
    assert "FAL_KEY" in checked.stderr and "warning" in checked.stderr
    assert json.loads(checked.stdout)["folders"][0]["inbox"] == str(inbox)

    again = run_cli("init", "--scale", "5", env=env)
    assert again.returncode == 1
    assert str(config) in again.stderr and "already exists" in again.stderr
    assert config.read_text() == text

    state = tmp_path / "state"  # a root user's default would be /var/lib
    data["state_dir"] = str(state)
    data["http"] = None  # other tests may hold the default port
    config.write_text(yaml.safe_dump(data))
    daemon = Daemon(config, "--backend", "local", env=env)
    try:
        daemon.ready()
        make_image(inbox / "first.jpg", (40, 30))
        daemon.wait_event("job_done")
        assert images_in(outbox) == {"first_x3.jpg": (120, 90)}
        assert daemon.stop() == 0
    finally:
        daemon.kill()


def test_init_takes_folders_and_settings_and_refuses_nonsense(tmp_path):
    """--inbox/--outbox (relative to where it runs), --scale and --creativity land in the
    config; the same folder for both, or a scale out of range, writes nothing."""
    env, _ = fresh_home(tmp_path)
    target = tmp_path / "elsewhere" / "studio.yaml"
    made = subprocess.run([sys.executable, "-m", "crystal_watchd", "init", "--config",
                           str(target), "--inbox", "in box", "--outbox", "out",
                           "--creativity", "2.5"], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=60)
    assert made.returncode == 0, made.stderr
    folder = yaml.safe_load(target.read_text())["folders"][0]
    assert folder["inbox"] == str(tmp_path / "in box") and folder["name"] == "in box"
    assert folder["creativity"] == 2.5 and (tmp_path / "out").is_dir()
    assert f"crystal-watchd check --config {target}" in made.stdout
    same = run_cli("init", "--config", str(tmp_path / "b.yaml"), "--inbox", str(tmp_path),
                   "--outbox", str(tmp_path), env=env)
    assert same.returncode == 78 and not (tmp_path / "b.yaml").exists()
    wild = run_cli("init", "--config", str(tmp_path / "c.yaml"), "--scale", "500", env=env)
    assert wild.returncode == 2 and "--scale" in wild.stderr
    assert not (tmp_path / "c.yaml").exists()


def test_check_on_a_terminal_is_a_summary_with_warnings(tmp_path):
    """On a pseudo-terminal `check` prints a short summary — config file, backend and where
    the key comes from (never the key), journal, web address and allowed names, one table
    row per folder — not JSON; then warnings: a missing inbox, an outbox that cannot be
    written, no daily budget although an output can cost more than $1. `--json` on the
    same terminal prints the JSON. Exit 0 with warnings."""
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    (tmp_path / "in").mkdir()
    config = write_config(
        tmp_path, [{"name": "photos", "inbox": "in", "outbox": "out", "scale_factor": 4,
                    "creativity": 2, "output_format": "png", "originals": "move"},
                   {"name": "gone", "inbox": "missing", "outbox": "readonly/out"}],
        backend="fal", http={"listen": "127.0.0.1:8765", "allowed_hosts": ["nas.lan"]})
    env = {**os.environ, **CLEARED, "FAL_KEY": FAKE_KEY}
    readonly.chmod(0o500)
    try:
        code, out = on_pty("check", "--config", str(config), env=env)
        as_json_code, as_json = on_pty("check", "--json", "--config", str(config), env=env)
    finally:
        readonly.chmod(0o700)
    assert code == 0, out
    assert not out.lstrip().startswith("{")
    assert f"config:    {config}" in out
    assert "FAL_KEY in the environment" in out and FAKE_KEY not in out
    assert FAKE_KEY.split(":")[1] not in out
    assert "http://127.0.0.1:8765/" in out
    assert "answers to 127.0.0.1, [::1], localhost, nas.lan" in out
    row = next(line for line in out.splitlines() if line.strip().startswith("photos "))
    assert f"{tmp_path / 'in'} → {tmp_path / 'out'}" in row
    assert re.search(r"×4\s+2\s+png\s+native \(\w+\)\s+move to ", row), row
    assert f"the inbox {tmp_path / 'missing'} does not exist" in out
    if os.geteuid() != 0:  # root writes anywhere
        assert f"outbox {tmp_path / 'readonly/out'} cannot be written" in out
    assert "no budget.daily_usd" in out and "$1.60" in out
    assert as_json_code == 0
    assert json.loads(as_json[:as_json.rindex("}") + 1])["folders"][0]["name"] == "photos"


def test_check_without_a_key_warns_and_names_fal_key(tmp_path):
    """`check` with backend fal and no key anywhere still exits 0 but names the problem and
    FAL_KEY, on a terminal and off one; with --backend local in the config there is none."""
    config = write_config(tmp_path, [{"inbox": "in", "outbox": "out"}], backend="fal")
    (tmp_path / "in").mkdir()
    env = {**os.environ, **CLEARED}
    code, out = on_pty("check", "--config", str(config), env=env)
    assert code == 0
    assert "NO KEY" in out and re.search(r"problem: .*set FAL_KEY", out)
    piped = run_cli("check", "--config", str(config), env=env)
    assert piped.returncode == 0 and "FAL_KEY" in piped.stderr
    json.loads(piped.stdout)  # scripts still get JSON
    local = write_config(tmp_path, [{"inbox": "in", "outbox": "out"}], backend="local")
    assert "FAL_KEY" not in run_cli("check", "--config", str(local), env=env).stderr


def test_check_online_with_a_good_and_a_bad_key(tmp_path, fakefal, tls_files):
    """`check --online` makes one call to fal's storage token endpoint and nothing billable:
    the fake's key is "accepted" (exit 0); a wrong key is reported as a 401 in plain words
    (exit 78), a locked account as a 403; neither key is printed."""
    server = fakefal()
    config = write_config(tmp_path, [{"inbox": "in", "outbox": "out"}], backend="fal")
    (tmp_path / "in").mkdir()
    env = {**os.environ, **CLEARED, **fal_env(server, tls_files)}
    good = run_cli("check", "--online", "--config", str(config), env=env, program=BOOTSTRAP)
    assert good.returncode == 0, good.stderr
    assert "key accepted" in good.stderr
    assert server.calls["token"] == 1 and server.submissions == []

    wrong = "wrong-key-id-0000:wrong-key-secret-0000"
    bad = run_cli("check", "--online", "--config", str(config),
                  env={**env, "FAL_KEY": wrong}, program=BOOTSTRAP)
    assert bad.returncode == 78
    assert "401" in bad.stderr and "does not accept this key" in bad.stderr
    server.faults.locked = True
    locked = run_cli("check", "--online", "--config", str(config), env=env, program=BOOTSTRAP)
    assert locked.returncode == 78 and "403" in locked.stderr and "locked" in locked.stderr
    for result in (good, bad, locked):
        text = result.stdout + result.stderr
        assert FAKE_KEY not in text and "wrong-key-secret-0000" not in text
        assert FAKE_KEY.split(":")[1] not in text
    assert server.calls["token"] == 3 and server.submissions == []
    plain = run_cli("check", "--config", str(config), env=env, program=BOOTSTRAP)
    assert plain.returncode == 0 and server.calls["token"] == 3  # never without --online


@pytest.fixture
def error_outputs(tmp_path, daemons):
    """stderr of the CLI's error paths, by name."""
    env = {**os.environ, **CLEARED}
    out: dict[str, str] = {}
    fal = write_config(tmp_path, [{"inbox": "in", "outbox": "out"}], backend="fal")
    out["run without a key"] = run_cli("run", "--config", str(fal), env=env).stderr
    out["online without a key"] = run_cli("check", "--online", "--config", str(fal),
                                          env=env).stderr
    missing_key = tmp_path / "k.yaml"
    missing_key.write_text(fal.read_text().replace("backend: fal",
                                                   "backend: fal\nfal: {key_file: nokey}"))
    out["missing key file"] = run_cli("run", "--config", str(missing_key), env=env).stderr
    token = tmp_path / "t.yaml"
    token.write_text(fal.read_text()
                     .replace("http: null",
                              "http: {listen: '127.0.0.1:0', token_file: no-token-here}")
                     .replace("backend: fal", "backend: local"))
    out["missing token file"] = run_cli("run", "--config", str(token), env=env).stderr
    out["missing config"] = run_cli("check", "--config", str(tmp_path / "none.yaml"),
                                    env=env).stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("folders: [\n")
    out["broken yaml"] = run_cli("check", "--config", str(broken), env=env).stderr
    out["init over a file"] = run_cli("init", "--config", str(broken), env=env).stderr
    local = write_config(tmp_path, [{"inbox": "in", "outbox": "out"}])
    running = daemons(local).ready()
    out["second daemon"] = run_cli("once", "--config", str(local), env=env).stderr
    running.stop()
    return out


def test_error_messages_have_no_empty_fields(error_outputs):
    """Every error path of the CLI says something between its colons: no `: :` and no
    line ending in a bare colon (a "configuration error:" heading is followed by its
    problems); each path says something at all."""
    for name, stderr in error_outputs.items():
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert lines, name
        for line in lines:
            assert not re.search(r":\s+:", line), (name, line)
            assert not line.rstrip().endswith(":") or line.endswith("configuration error:"), \
                (name, line)
    assert error_outputs["run without a key"].startswith(
        "crystal-watchd: backend 'fal' needs a fal API key")


def test_network_inbox_without_polling_is_warned(tmp_path):
    """An inbox on a network or FUSE filesystem (as the mount table reports it) watched
    without polling gets a warning naming the filesystem; with polling it does not, and the
    table shows the mode and the filesystem."""
    from crystal_watchd.commands import check as checkreport
    from crystal_watchd.config import parse

    text = f"backend: local\nfolders:\n  - {{inbox: {tmp_path}/a, outbox: {tmp_path}/o1}}\n" \
           f"  - {{inbox: {tmp_path}/b, outbox: {tmp_path}/o2, polling: 10}}\n"
    config = parse(text, tmp_path / "c.yaml")
    ctx = checkreport.Context(config)
    ctx.fs_types = {tmp_path / "a": "nfs4", tmp_path / "b": "fuse.shfs"}  # as /proc would say
    found = [w for w in checkreport.warnings(ctx) if "network/FUSE" in w]
    assert len(found) == 1 and "folders[0]" in found[0] and "nfs4" in found[0]
    summary = "\n".join(checkreport.summary(ctx))
    assert "native (nfs4)" in summary and "polling 10 s (fuse.shfs)" in summary


def test_init_keeps_a_system_config_in_system_places(tmp_path, monkeypatch):
    """A config written in /etc (``init`` as root) gets its folders under /srv, not in
    root's home; a config anywhere else keeps them under the home directory."""
    from crystal_watchd.commands.starter import folder_base

    monkeypatch.setenv("HOME", str(tmp_path))
    assert folder_base(Path("/etc/crystal-watchd/config.yaml")) == Path("/srv/crystal-watchd")
    assert folder_base(tmp_path / ".config/crystal-watchd/config.yaml") == \
        tmp_path / "crystal-watchd"
    assert folder_base(Path("/etcetera/config.yaml")) == tmp_path / "crystal-watchd"
