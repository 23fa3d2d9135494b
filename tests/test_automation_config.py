"""The ``hooks:``, ``hook_attempts`` and ``notify:`` settings: parsed into frozen objects,
every mistake named with file, line and key, secrets never shown by ``check``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import cli

from crystal_watchd import config as config_mod
from crystal_watchd.errors import ConfigError

FOLDERS = "folders:\n  - {name: clients, inbox: in, outbox: out}\n"


def problems(text: str, tmp_path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config_mod.parse(FOLDERS + text, tmp_path / "c.yaml")
    return [str(p) for p in info.value.problems]


def test_hooks_and_notify_parse_with_defaults(tmp_path):
    """A command hook, a webhook and notify parse; ``on:`` is read as the key it looks like
    (YAML 1.1 would make it true); timeout 60 s and hook_attempts 10 by default."""
    config = config_mod.parse(FOLDERS + """
hooks:
  - name: gallery
    on: [done]
    folders: [clients]
    run: [/usr/local/bin/upload, "{output}", "{folder}"]
  - on: [done, failed]
    url: https://hooks.example.com/T0KEN-abc
    secret_file: hook-secret
notify:
  urls: ["ntfys://ntfy.sh/studio-topic"]
  daily_summary: "8:30"
""", tmp_path / "c.yaml")
    gallery, web = config.hooks
    assert (gallery.name, gallery.on, gallery.folders, gallery.timeout) == (
        "gallery", ("done",), ("clients",), 60.0)
    assert gallery.run == ("/usr/local/bin/upload", "{output}", "{folder}")
    assert (web.name, web.on, web.secret_file) == ("hook2", ("done", "failed"),
                                                   tmp_path / "hook-secret")
    assert config.hook_attempts == 10
    assert config.notify.daily_summary == "08:30" and config.notify.batch_seconds == 60
    assert "T0KEN" not in repr(config) and "studio-topic" not in repr(config)


def test_hook_mistakes_are_named_with_line_and_key(tmp_path):
    """A shell string instead of argv, an unknown placeholder, run and url together, a hook
    with neither, an unknown event and folder, and a secret_file on a command are each
    reported at their line."""
    found = problems("""hooks:
  - on: [done]
    run: "upload {output}"
  - on: [done]
    run: [upload, "{outbox}"]
  - on: [done]
    run: [upload]
    url: https://example.com/
  - on: [finished]
  - on: [done]
    folders: [nobody]
    run: [x]
  - on: [failed]
    run: [x]
    secret_file: s
""", tmp_path)
    file = tmp_path / "c.yaml"
    assert f"{file}:5: hooks[0].run: must be a list of arguments (no shell), like " \
           "[\"/usr/local/bin/upload\", \"{output}\"]" in found
    assert any(p.startswith(f"{file}:7: hooks[1].run: unknown placeholder {{outbox}}")
               for p in found)
    assert f"{file}:10: hooks[2].url: give run: or url:, not both (make two hooks)" in found
    assert any(p.startswith(f"{file}:11: hooks[3].on: unknown event 'finished'") for p in found)
    assert f"{file}:11: hooks[3]: needs run: (a command) or url: (a webhook)" in found
    assert f"{file}:13: hooks[4].folders: no folder is named 'nobody'" in found
    assert f"{file}:17: hooks[5].secret_file: signs webhook bodies; it needs url:" in found


def test_notify_mistakes_exit_78_and_check_masks_urls(tmp_path):
    """notify without URLs and a bad daily_summary are errors (exit 78); a valid config's
    ``check`` shows the settings with the URLs cut to scheme and host."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(FOLDERS + "state_dir: s\nnotify:\n  on: [failed]\n  daily_summary: 25:00\n")
    run = cli("check", "--config", str(bad))
    assert run.returncode == 78
    assert f"{bad}:4: notify: needs urls: (Apprise URLs) or urls_file: (one a line)" in run.stderr
    assert f"{bad}:6: notify.daily_summary: must be a local time like \"18:00\"" in run.stderr
    good = tmp_path / "good.yaml"
    good.write_text(FOLDERS + "state_dir: s\nhttp: null\nnotify:\n"
                    "  urls: ['ntfys://ntfy.sh/secret-topic-123']\nhooks:\n"
                    "  - {on: [done], url: 'https://u:pw-456@hooks.example.com/x'}\n")
    shown = cli("check", "--config", str(good))
    assert shown.returncode == 0, shown.stderr
    described = json.loads(shown.stdout)
    assert described["notify"]["urls"] == ["ntfys://ntfy.sh/***"]
    assert described["hooks"][0]["url"] == "https://hooks.example.com/***"
    assert "secret-topic" not in shown.stdout and "pw-456" not in shown.stdout
