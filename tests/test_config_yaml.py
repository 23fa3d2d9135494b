"""YAML as people write it: anchors and merge keys read as ``yaml.safe_load`` reads them, with
file:line messages kept; syntax errors name line and column, and a tab says so."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from crystal_watchd import config as config_mod
from crystal_watchd.config.yamldoc import Doc
from crystal_watchd.errors import ConfigError

SHARED = """\
backend: local
folders:
  - &portrait
    name: portraits
    inbox: in/portraits
    outbox: out/portraits
    scale_factor: 4
    creativity: 1
  - <<: *portrait
    name: weddings
    inbox: in/weddings
    outbox: out/weddings
    creativity: 3
"""


def test_merge_keys_share_folder_settings_as_safe_load_reads_them(tmp_path: Path):
    """A folder built from another with ``<<: *anchor`` gets the anchor's settings, its own
    keys win over merged ones, and the data equals what ``yaml.safe_load`` reads."""
    config = config_mod.parse(SHARED, tmp_path / "c.yaml")
    by_name = {f.name: f for f in config.folders}
    assert by_name["weddings"].scale_factor == 4
    assert by_name["weddings"].creativity == 3
    assert by_name["portraits"].creativity == 1
    assert by_name["weddings"].inbox == tmp_path / "in/weddings"
    doc = Doc("c.yaml")
    assert doc.load(SHARED) == yaml.safe_load(SHARED)
    assert doc.problems == []


def test_a_bad_value_reached_through_a_merge_names_the_anchors_line(tmp_path: Path):
    """A wrong value written once under an anchor and merged into another folder is reported
    at the line where it is written, for the folder that merged it."""
    text = SHARED.replace("scale_factor: 4", "scale_factor: 500")
    with pytest.raises(ConfigError) as info:
        config_mod.parse(text, tmp_path / "c.yaml")
    messages = [str(p) for p in info.value.problems]
    assert f"{tmp_path / 'c.yaml'}:7: folders[1].scale_factor: must be from 1 to 200, " \
        "not 500" in messages


def test_a_key_written_twice_in_one_mapping_is_still_an_error(tmp_path: Path):
    """Merging does not hide a real duplicate: a key twice in the mapping itself is named."""
    text = SHARED + "    creativity: 5\n"
    with pytest.raises(ConfigError) as info:
        config_mod.parse(text, tmp_path / "c.yaml")
    assert any(":14: folders[1].creativity: this key appears twice" in str(p)
               for p in info.value.problems)


def test_a_tab_gives_line_column_and_a_hint(tmp_path: Path):
    """YAML refuses tabs for indentation; the message names line and column and says to use
    spaces."""
    with pytest.raises(ConfigError) as info:
        config_mod.parse("backend: local\nfolders:\n\t- inbox: in\n", tmp_path / "c.yaml")
    (problem,) = info.value.problems
    assert problem.line == 3
    assert "(column 1)" in problem.message
    assert "YAML indents with spaces only" in problem.message
