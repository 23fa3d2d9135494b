"""Config parsing: every problem reported with file, line and key; exit 78; no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ROOT, cli

from crystal_watchd import config as config_mod
from crystal_watchd.errors import ConfigError


def problems(text: str, tmp_path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config_mod.parse(text, tmp_path / "c.yaml")
    return [str(p) for p in info.value.problems]


def test_check_reports_range_typo_and_yaml_errors_with_exit_78(tmp_path):
    """``check`` names file, line and key for a range error and a typo'd key (with a hint),
    and the line of a YAML syntax error; exit 78, never a traceback."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("backend: local\nfolders:\n  - inbox: in\n    outbox: out\n"
                   "    scale_factor: 500\n    creativty: 3\n")
    result = cli("check", "--config", str(bad))
    assert result.returncode == 78
    assert "Traceback" not in result.stderr
    assert f"{bad}:5: folders[0].scale_factor: must be from 1 to 200, not 500" in result.stderr
    assert f"{bad}:6: folders[0].creativty: unknown setting; did you mean 'creativity'?" \
        in result.stderr

    broken = tmp_path / "broken.yaml"
    broken.write_text("folders:\n  - inbox: in\n   outbox: out\n")
    result = cli("check", "--config", str(broken))
    assert result.returncode == 78
    assert "Traceback" not in result.stderr
    assert f"{broken}:3: YAML syntax error" in result.stderr


def test_example_config_passes_check():
    """config.example.yaml, as shipped, is valid."""
    result = cli("check", "--config", str(ROOT / "config.example.yaml"))
    assert result.returncode == 0, result.stderr
    assert '"scale_factor": 4.0' in result.stdout


def test_config_may_come_from_environment_and_after_subcommand(tmp_path):
    """--config works after the subcommand, and $CRYSTAL_WATCHD_CONFIG is the default."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("backend: local\nfolders: [{inbox: in, outbox: out}]\n")
    assert cli("check", "--config", str(cfg)).returncode == 0
    assert cli("--config", str(cfg), "check").returncode == 0
    assert cli("check", env={"CRYSTAL_WATCHD_CONFIG": str(cfg)}).returncode == 0
    missing = cli("check", env={"CRYSTAL_WATCHD_CONFIG": str(tmp_path / "nope.yaml")})
    assert missing.returncode == 78 and "not found" in missing.stderr


def test_usage_errors_exit_2():
    """An unknown subcommand is a usage error."""
    assert cli("frobnicate").returncode == 2


def test_every_problem_is_reported_at_once(tmp_path):
    """Types, choices, unknown keys at several levels and missing keys all show together."""
    found = problems("concurency: 3\nlog: {level: loud}\nretry: {attempts: 0}\n"
                     "folders:\n  - inbox: a\n    polling: -1\n  - outbox: b\n"
                     "    recursive: yes please\n", tmp_path)
    text = "\n".join(found)
    assert "concurency: unknown setting; did you mean 'concurrency'?" in text
    assert "log.level: must be one of debug, info, warning, error" in text
    assert "retry.attempts: must be from 1 to 1000, not 0" in text
    assert "folders[0].outbox: is required" in text
    assert "folders[0].polling: must be from 0.5 to 3600" in text
    assert "folders[1].inbox: is required" in text
    assert "folders[1].recursive: must be true or false" in text


def test_duplicate_keys_and_bad_templates_are_errors(tmp_path):
    """A key given twice and a filename with an unknown placeholder or a folder are refused."""
    text = "\n".join(problems(
        "folders:\n  - inbox: a\n    outbox: b\n    settle: 1\n    settle: 2\n"
        "  - inbox: c\n    outbox: d\n    filename: '{stem}_{size}.{ext}'\n"
        "  - inbox: e\n    outbox: f\n    filename: '../{name}'\n", tmp_path))
    assert "c.yaml:5: folders[0].settle: this key appears twice" in text
    assert "unknown placeholder {size}" in text
    assert "folders[2].filename: must be a plain file name" in text


def test_overlaps_between_folders_are_errors(tmp_path):
    """The same inbox twice, and an outbox inside another folder's recursive inbox, are
    refused; a folder's own done/failed dirs inside its inbox are fine (never watched)."""
    text = "\n".join(problems(
        "folders:\n"
        "  - {name: one, inbox: in, outbox: out, recursive: true}\n"
        "  - {name: two, inbox: in, outbox: out2}\n"
        "  - {name: three, inbox: other, outbox: in/results}\n", tmp_path))
    assert "folders[1].inbox: " in text and "is watched twice" in text
    assert "folders[2].outbox: " in text and "inside the recursive inbox of folders[0]" in text
    ok = config_mod.parse("folders:\n  - {inbox: in, outbox: out, recursive: true}\n",
                          tmp_path / "ok.yaml")
    assert ok.folders[0].done_dir == tmp_path / "in" / "done"


def test_defaults_apply_and_paths_are_relative_to_the_file(tmp_path):
    """``defaults`` fill every folder; relative paths resolve against the config's folder."""
    cfg = config_mod.parse(
        "defaults: {scale_factor: 3, output_format: jpg, polling: true}\n"
        "folders:\n  - {inbox: a, outbox: b}\n  - {inbox: c, outbox: d, scale_factor: 1.5}\n",
        tmp_path / "sub" / "c.yaml")
    first, second = cfg.folders
    assert (first.scale_factor, second.scale_factor) == (3.0, 1.5)
    assert first.output_format == "jpeg" and first.polling == config_mod.DEFAULT_POLL_SECONDS
    assert first.inbox == tmp_path / "sub" / "a" and first.name == "a"
    assert cfg.backend == "fal" and cfg.concurrency == 4


def test_journal_setting_is_checked_and_its_password_never_shown(tmp_path):
    """``journal`` must be a postgresql:// URL (file, line and key named otherwise); a
    password in it is masked in ``check`` output and kept out of the config's repr."""
    text = ("backend: local\njournal: mysql://x@y/z\nfolders:\n  - inbox: in\n"
            "    outbox: out\n")
    [problem] = problems(text, tmp_path)
    assert problem.startswith(f"{tmp_path / 'c.yaml'}:2: journal: must be a postgresql://")
    good = tmp_path / "good.yaml"
    good.write_text("backend: local\njournal: postgresql://cw:pa55-w0rd@127.0.0.1:1/cw\n"
                    "journal_lease: 5\nfolders:\n  - inbox: in\n    outbox: out\n")
    config = config_mod.load(good)
    assert config.journal_lease == 5 and "pa55-w0rd" not in repr(config)
    assert config.describe()["journal"] == "postgresql://cw:***@127.0.0.1:1/cw"
    result = cli("check", "--config", str(good), timeout=60)
    assert "pa55-w0rd" not in result.stdout + result.stderr
    assert "postgresql://cw:***@127.0.0.1:1/cw" in result.stdout


def test_incomplete_grace_defaults_inherits_and_is_checked(tmp_path):
    """incomplete_grace is 300 s unless set; defaults pass it on; a bad value names the
    line and key."""
    cfg = config_mod.parse("backend: local\ndefaults:\n  incomplete_grace: 30\nfolders:\n"
                           "  - {inbox: a, outbox: oa}\n  - {inbox: b, outbox: ob, "
                           "incomplete_grace: 0}\n", tmp_path / "c.yaml")
    assert [f.incomplete_grace for f in cfg.folders] == [30.0, 0.0]
    plain = config_mod.parse("backend: local\nfolders: [{inbox: a, outbox: o}]\n",
                             tmp_path / "c.yaml")
    assert plain.folders[0].incomplete_grace == 300.0
    found = problems("backend: local\nfolders:\n  - inbox: a\n    outbox: o\n"
                     "    incomplete_grace: -5\n", tmp_path)
    assert found == [f"{tmp_path / 'c.yaml'}:5: folders[0].incomplete_grace: "
                     "must be from 0 to 86400, not -5"]


FOLDER = "folders:\n  - {inbox: in, outbox: out}\n"


def test_http_defaults_on_at_loopback_and_null_turns_it_off(tmp_path):
    """No http key: the page on 127.0.0.1:8765 without a token; `http: null`: no page;
    IPv6 loopback and localhost need no token; the token never shows in repr()."""
    default = config_mod.parse(FOLDER, tmp_path / "c.yaml").http
    assert (default.host, default.port, default.token) == ("127.0.0.1", 8765, None)
    assert config_mod.parse("http: null\n" + FOLDER, tmp_path / "c.yaml").http is None
    for listen, host in (("'[::1]:9000'", "::1"), ("localhost:0", "localhost")):
        http = config_mod.parse(f"http: {{listen: {listen}}}\n" + FOLDER, tmp_path / "c.yaml").http
        assert http.host == host and http.loopback
    guarded = config_mod.parse("http: {listen: '0.0.0.0:80', token: s3cret-token-value}\n"
                               + FOLDER, tmp_path / "c.yaml")
    assert "s3cret-token-value" not in repr(guarded)


def test_http_problems_name_line_and_key(tmp_path):
    """Non-loopback without a token, a bad port and an unknown http key are each reported
    with their line and key."""
    found = problems("http:\n  listen: '192.168.1.5:8765'\n  tokn: x\n" + FOLDER, tmp_path)
    assert any(p.startswith(f"{tmp_path / 'c.yaml'}:2: http.listen: listening on 192.168.1.5 "
                            "(not a loopback address) needs http.token") for p in found)
    assert any(":3: http.tokn: unknown setting; did you mean 'token'?" in p for p in found)
    found = problems("http: {listen: '127.0.0.1:70000'}\n" + FOLDER, tmp_path)
    assert any("http.listen: port must be from 0 to 65535" in p for p in found)


def test_systemd_credential_counts_as_a_token(tmp_path, monkeypatch):
    """A non-loopback listen is accepted when $CREDENTIALS_DIRECTORY holds http-token, and
    the page reads the token from there."""
    from crystal_watchd.web.auth import read_token

    text = "http: {listen: '0.0.0.0:8765'}\n" + FOLDER
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert problems(text, tmp_path)
    (tmp_path / "http-token").write_text("from-the-credential\n")
    http = config_mod.parse(text, tmp_path / "c.yaml").http
    assert read_token(http) == "from-the-credential"


def test_fal_storage_settings_parse_and_are_checked(tmp_path):
    """``fal.cdn_expiry`` takes never, seconds or a duration (7d is the default); cleanup and
    store_payloads must be booleans; each problem names its line and key."""
    base = "backend: local\nfolders: [{inbox: in, outbox: out}]\n"
    default = config_mod.parse(base, tmp_path / "c.yaml").fal
    assert (default.cdn_expiry, default.cleanup, default.store_payloads) == (7 * 86_400, True, True)
    for given, seconds in (("never", None), ("7d", 604_800), ("90m", 5400), (3600, 3600)):
        fal = config_mod.parse(base + f"fal: {{cdn_expiry: {given}}}\n", tmp_path / "c.yaml").fal
        assert fal.cdn_expiry == seconds
    found = problems(base + "fal:\n  cdn_expiry: 2 weeks\n  cleanup: yes please\n"
                     "  store_payloads: 0\n", tmp_path)
    assert any(":4: fal.cdn_expiry: must be never, a number of seconds" in p for p in found)
    assert any(":5: fal.cleanup: must be true or false" in p for p in found)
    assert any(":6: fal.store_payloads: must be true or false" in p for p in found)


def test_config_modules_import_at_the_top_and_the_package_reexports_them():
    """No module of the config package imports inside a function (an import cycle would be
    worked around that way, not removed), and every name the package exports is the very
    object of the module that defines it, so ``from crystal_watchd.config import X`` and
    the module's own name never differ."""
    import ast
    import importlib

    package = ROOT / "crystal_watchd" / "config"
    late = []
    for source in sorted(package.glob("*.py")):
        tree = ast.parse(source.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                late += [f"{source.name}:{inner.lineno}" for inner in ast.walk(node)
                         if isinstance(inner, (ast.Import, ast.ImportFrom))]
    assert late == []
    homes = {}
    for name in config_mod.__all__:
        value = getattr(config_mod, name)
        home = getattr(value, "__module__", None)
        if home is None:  # a constant: find the one module that defines it
            home = next(f"crystal_watchd.config.{m}" for m in ("runtime", "paths", "urls")
                        if name in vars(importlib.import_module(f"crystal_watchd.config.{m}")))
        assert home.startswith("crystal_watchd.config.") and home != "crystal_watchd.config"
        assert getattr(importlib.import_module(home), name) is value
        homes[name] = home
    assert homes["Config"] == "crystal_watchd.config.runtime"
    assert homes["load"] == homes["parse"] == "crystal_watchd.config.load"
    assert homes["mask_url"] == homes["listen"] == "crystal_watchd.config.urls"
    assert homes["default_state_dir"] == "crystal_watchd.config.paths"
