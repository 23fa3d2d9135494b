"""The config described by a schema: `check`'s messages (file, line, key) for the three
usual mistakes, the shipped config.schema.json in step with the code, and the example
config valid under both the schema and the daemon's own loader."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from conftest import ROOT, cli

from crystal_watchd import config as config_mod
from crystal_watchd.config.yamldoc import Doc

SCHEMA = ROOT / "config.schema.json"


def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def as_data(text: str) -> object:
    """YAML as an editor's language server reads it (``on:`` is a key, not true)."""
    doc = Doc("test.yaml")
    data = doc.load(text)
    assert not doc.problems
    return data


def test_check_names_a_typo_a_wrong_type_and_an_out_of_range_value_with_lines(tmp_path):
    """`check` on a config with a misspelt key, values of the wrong type (text and true/false
    for numbers) and a value out of range reports every one at once, each with the file, its
    line and its key path, and the hint for the typo; exit 78 and no traceback."""
    bad = tmp_path / "studio.yaml"
    bad.write_text("backend: local\n"              # 1
                   "concurrency: true\n"           # 2 a switch where a number belongs
                   "fal:\n"                         # 3
                   "  timeout: fast\n"              # 4 text where a number belongs
                   "folders:\n"                     # 5
                   "  - inbox: in\n"                # 6
                   "    outbox: out\n"              # 7
                   "    creativity: 12\n"           # 8 out of range (0 to 10)
                   "    extentions: [jpg]\n")       # 9 typo
    result = cli("check", "--config", str(bad))
    assert result.returncode == 78
    assert "Traceback" not in result.stderr
    assert f"{bad}:2: concurrency: must be a number from 1 to 256, not true/false True" \
        in result.stderr
    assert f"{bad}:4: fal.timeout: must be a number from 10 to 86400, not text 'fast'" \
        in result.stderr
    assert f"{bad}:8: folders[0].creativity: must be from 0 to 10, not 12" in result.stderr
    assert f"{bad}:9: folders[0].extentions: unknown setting; did you mean 'extensions'?" \
        in result.stderr


def test_schema_file_is_up_to_date():
    """config.schema.json is exactly what the models produce now (regenerate it with
    `python -m crystal_watchd.config.schema`); `--check` agrees, and `--output -` prints
    the same text."""
    from crystal_watchd.config import schema as config_schema

    assert SCHEMA.read_text(encoding="utf-8") == config_schema.text(), \
        "config.schema.json is out of date: run python -m crystal_watchd.config.schema"
    run = subprocess.run([sys.executable, "-m", "crystal_watchd.config.schema", "--check",
                          "--output", str(SCHEMA)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    printed = subprocess.run([sys.executable, "-m", "crystal_watchd.config.schema", "--output",
                              "-"], capture_output=True, text=True, timeout=60)
    assert printed.stdout == SCHEMA.read_text(encoding="utf-8")


def test_schema_check_fails_on_a_stale_copy(tmp_path):
    """`python -m crystal_watchd.config.schema --check` exits 1 and says how to fix it when
    the file differs; without --check it rewrites the file, after which the check passes."""
    stale = tmp_path / "config.schema.json"
    stale.write_text(SCHEMA.read_text().replace('"minimum": 1,', '"minimum": 2,', 1))
    command = [sys.executable, "-m", "crystal_watchd.config.schema", "--output", str(stale)]
    run = subprocess.run([*command, "--check"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and "out of date" in run.stderr
    assert subprocess.run(command, capture_output=True, timeout=60).returncode == 0
    assert stale.read_text() == SCHEMA.read_text()
    assert subprocess.run([*command, "--check"], capture_output=True, timeout=60).returncode == 0


def test_example_config_is_valid_under_the_schema_and_loads():
    """config.example.yaml points editors at the schema on its first line, is valid under
    it (JSON Schema 2020-12, checked by the jsonschema package) and loads with Config."""
    text = (ROOT / "config.example.yaml").read_text()
    assert text.splitlines()[0] == "# yaml-language-server: $schema=./config.schema.json"
    errors = [f"{list(e.absolute_path)}: {e.message}"
              for e in validator().iter_errors(as_data(text))]
    assert errors == []
    config = config_mod.load(ROOT / "config.example.yaml")
    assert config.folders and config.path == ROOT / "config.example.yaml"


def test_schema_accepts_every_section_and_rejects_what_check_rejects():
    """A config using hooks, notify, http, journal, budget and a duration for cdn_expiry is
    valid under the schema; a misspelt key, text for a number, a number out of range, a
    hook with neither run nor url and an unknown event are not (the schema is not a
    formality)."""
    good = as_data("""
backend: fal
fal: {cdn_expiry: 7d, upload: cdn}
defaults: {polling: true, dpi: 300, output_format: jpg}
folders:
  - {name: clients, inbox: in, outbox: out, polling: 10, dpi: keep}
http: {listen: "0.0.0.0:8765", token_file: tok, allowed_hosts: [photos.lan]}
journal: postgresql://cw@db/cw
budget: {daily_usd: 20, confirm_above_usd: null}
hooks:
  - {on: [done], run: [upload, "{output}"], folders: [clients]}
  - {on: [done, failed], url: "https://hooks.example.com/x"}
notify: {urls_file: urls, daily_summary: "18:00"}
""")
    check = validator()
    assert list(check.iter_errors(good)) == []
    base = "folders: [{inbox: in, outbox: out}]\n"
    for mistake in ("concurency: 3\n", "concurrency: many\n", "concurrency: true\n",
                    "fal: {timeout: 5}\n", "hooks: [{on: [done]}]\n",
                    "hooks: [{on: [finished], run: [x]}]\n", "notify: {on: [failed]}\n"):
        assert list(check.iter_errors(as_data(base + mistake))), mistake


def test_every_setting_has_help_text_in_the_schema():
    """Each key in the schema, at every level, carries a description an editor can show."""
    schema = json.loads(SCHEMA.read_text())
    missing = []
    for where, node in [("", schema), *schema["$defs"].items()]:
        for key, prop in node.get("properties", {}).items():
            if not prop.get("description"):
                missing.append(f"{where}.{key}")
    assert missing == []


@pytest.mark.parametrize("secret, text", [
    ("s3cret-token", "http: {token: s3cret-token}\n"),
    ("pa55word", "journal: 'postgresql://cw:pa55word@db/cw'\n"),
    ("T0KEN", "hooks: [{on: [done], url: 'https://x.example/T0KEN'}]\n"),
    ("topic-pw", "notify: {urls: ['ntfys://u:topic-pw@ntfy.sh/t']}\n"),
])
def test_secrets_stay_out_of_the_models_reprs(tmp_path, secret, text):
    """The validated file (the models, before they become the config objects) never shows a
    token, a journal password, a webhook URL or a notification URL in its repr."""
    from crystal_watchd.config.models import ConfigFile

    data = as_data("folders: [{inbox: in, outbox: out}]\n" + text)
    model = ConfigFile.model_validate(data, context={"base": Path(tmp_path)})
    assert secret not in repr(model)
    assert secret not in repr(config_mod.parse("folders: [{inbox: in, outbox: out}]\n" + text,
                                               tmp_path / "c.yaml"))


def test_rules_across_keys_show_beside_problems_of_single_keys(tmp_path):
    """A value out of range does not hide the rules that span several keys: overlapping
    folders, a hook naming no folder, notify without URLs and a page off loopback without a
    token are all reported in the same run, each at its own line."""
    file = tmp_path / "c.yaml"
    found = [str(p) for p in _problems(
        "concurrency: 0\n"                                   # 1
        "folders:\n"                                         # 2
        "  - {inbox: a, outbox: b, recursive: true}\n"       # 3
        "  - {name: two, inbox: a/x, outbox: c}\n"           # 4
        "hooks:\n"                                           # 5
        "  - {on: [done], run: [x], folders: [nobody]}\n"    # 6
        "notify: {on: [failed]}\n"                           # 7
        "http: {listen: '0.0.0.0:8765'}\n",                  # 8
        file)]
    assert f"{file}:1: concurrency: must be from 1 to 256, not 0" in found
    assert f"{file}:4: folders[1].inbox: lies inside the recursive inbox of folders[0] " \
           f"({tmp_path / 'a'})" in found
    assert f"{file}:6: hooks[0].folders: no folder is named 'nobody'" in found
    assert f"{file}:7: notify: needs urls: (Apprise URLs) or urls_file: (one a line)" in found
    assert any(p.startswith(f"{file}:8: http.listen: listening on 0.0.0.0 (not a loopback "
                            "address) needs http.token") for p in found)
    assert [int(p.split(":")[1]) for p in found] == sorted(int(p.split(":")[1]) for p in found)


def _problems(text: str, file: Path) -> list:
    from crystal_watchd.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        config_mod.parse(text, file)
    return info.value.problems
