"""The manual: the configuration page is the schema's, every page is in the site's nav, and
the README stays a page that points into the manual."""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _generator():
    spec = importlib.util.spec_from_file_location("gen_config", DOCS / "gen_config.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _schema() -> dict:
    return json.loads((ROOT / "config.schema.json").read_text(encoding="utf-8"))


def test_configuration_page_is_current():
    """The committed docs/configuration.md is exactly what docs/gen_config.py makes from the
    committed config.schema.json (run the script after a setting changes)."""
    result = subprocess.run([sys.executable, str(DOCS / "gen_config.py"), "--check"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr


def test_configuration_page_lists_every_key():
    """Every key of every section of the schema is a row of the configuration page."""
    schema = _schema()
    page = (DOCS / "configuration.md").read_text(encoding="utf-8")
    sections = [schema, *schema["$defs"].values()]
    keys = {key for section in sections for key in section.get("properties", {})}
    assert len(keys) > 50
    missing = sorted(key for key in keys if f"| `{key}` |" not in page)
    assert missing == []


def test_generator_follows_the_schema():
    """A key added to the schema appears in the rendered page with its range, default and
    help, and the check mode would then see the committed page as out of date."""
    gen = _generator()
    schema = copy.deepcopy(_schema())
    schema["$defs"]["FalSettings"]["properties"]["brand_new_key"] = {
        "type": "integer", "minimum": 3, "maximum": 9, "default": 5,
        "description": "A key nobody has documented."}
    page = gen.render(schema)
    assert "| `brand_new_key` | integer 3–9 | `5` | A key nobody has documented. |" in page
    assert page != (DOCS / "configuration.md").read_text(encoding="utf-8")


def _nav_pages(items) -> list[str]:
    pages = []
    for item in items:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        pages += _nav_pages(value) if isinstance(value, list) else [value]
    return pages


def test_every_page_is_in_the_nav():
    """mkdocs.yml's nav lists every Markdown page in docs/, and every page it lists exists."""
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))["nav"]
    listed = set(_nav_pages(nav))
    present = {str(path.relative_to(DOCS)) for path in DOCS.rglob("*.md")}
    assert present - listed == set()
    assert listed - present == set()


def test_readme_is_a_page_that_links_into_the_manual():
    """README.md stays short, opens with one sentence saying what it is and then the run
    and test commands, and every docs/ page it links to exists."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250
    title, rest = readme.split("\n", 1)
    opening = rest.split("```", 1)[0].strip()
    assert title.startswith("# ") and opening and opening.count(". ") == 0
    assert opening.endswith(".") and "watched-folder" in opening
    blocks = re.findall(r"```sh\n(.*?)```", readme, re.S)
    assert "crystal-watchd run" in blocks[0] and "--backend local" in blocks[0]
    assert "pytest" in blocks[1]
    links = re.findall(r"\]\((docs/[^)#]+)", readme)
    assert links
    assert [link for link in links if not (ROOT / link).exists()] == []
