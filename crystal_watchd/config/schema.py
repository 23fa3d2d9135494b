"""The JSON Schema of the config file, for editors (completion, help on hover, checks).

    python -m crystal_watchd.config.schema            # rewrite config.schema.json
    python -m crystal_watchd.config.schema --check    # exit 1 if the file is out of date
    python -m crystal_watchd.config.schema --output - # print it (an installed package)

It is generated from the models in models.py, so it always says what the daemon
accepts; the committed copy is kept in step by a test.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .models import ConfigFile

DIALECT = "https://json-schema.org/draft/2020-12/schema"


def checkout_copy() -> Path | None:
    """The shipped copy, next to config.example.yaml (which points editors at it), when
    this module runs from a source checkout of crystal-watchd; None when installed."""
    for folder in Path(__file__).resolve().parents:
        project = folder / "pyproject.toml"
        if project.is_file():
            named = 'name = "crystal-watchd"' in project.read_text(encoding="utf-8")
            return folder / "config.schema.json" if named else None
    return None


def schema() -> dict[str, Any]:
    return _unwrapped({"$schema": DIALECT, **ConfigFile.model_json_schema(mode="validation")})


def _unwrapped(node: Any) -> Any:
    """Descriptions as one paragraph: the docs they come from are wrapped for the source
    file, and editors wrap help text themselves."""
    if isinstance(node, dict):
        return {k: " ".join(v.split()) if k == "description" and isinstance(v, str)
                else _unwrapped(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_unwrapped(v) for v in node]
    return node


def text() -> str:
    return json.dumps(schema(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crystal_watchd.config.schema",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="only compare with the file; exit 1 when it differs")
    parser.add_argument("--output", help="the file to write or check, - for standard output "
                        "(default: config.schema.json of the source checkout)")
    args = parser.parse_args(argv)
    if args.output == "-":
        sys.stdout.write(text())
        return 0
    output = Path(args.output) if args.output else checkout_copy()
    if output is None:
        parser.error("not run from a source checkout: give --output FILE (or - to print it)")
    current = output.read_text(encoding="utf-8") if output.exists() else None
    if args.check:
        if current != text():
            print(f"{output} is out of date; run python -m crystal_watchd.config.schema",
                  file=sys.stderr)
            return 1
        return 0
    if current != text():
        output.write_text(text(), encoding="utf-8")
        print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
