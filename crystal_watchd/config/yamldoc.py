"""YAML with a line number for every key path, and the checks each setting's value goes
through. A problem is recorded with file, line and key, never raised at the first one, so a
user sees every mistake in a config at once (build.py turns them into one ConfigError;
problems.py places pydantic's errors on their lines).
"""

from __future__ import annotations

import math
import os
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigProblem

#: The tag of YAML's merge key ``<<``.
MERGE_TAG = "tag:yaml.org,2002:merge"


class Doc:
    """Plain data from a YAML file, plus the line of every key path."""

    def __init__(self, file: str):
        self.file = file
        self.lines: dict[tuple[Any, ...], int] = {}
        self.problems: list[ConfigProblem] = []

    def problem(self, path: tuple[Any, ...], message: str) -> None:
        line = None
        for n in range(len(path), -1, -1):
            if path[:n] in self.lines:
                line = self.lines[path[:n]]
                break
        self.problems.append(ConfigProblem(self.file, line, key_path(path), message))

    def load(self, text: str) -> Any:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            return self._convert(loader, node, ()) if node is not None else None
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark else None
            what = " ".join(p for p in (exc.context, exc.problem) if p)
            if mark is not None:
                what += f" (column {mark.column + 1})"
                lines = text.splitlines()
                if mark.line < len(lines) and "\t" in lines[mark.line]:
                    what += "; this line has a tab: YAML indents with spaces only"
            self.problems.append(ConfigProblem(self.file, line, "", f"YAML syntax error: {what}"))
            return None
        except yaml.YAMLError as exc:
            self.problems.append(ConfigProblem(self.file, None, "", f"YAML error: {exc}"))
            return None
        finally:
            loader.dispose()

    def _convert(self, loader: yaml.SafeLoader, node: yaml.Node, path: tuple[Any, ...]) -> Any:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            # Merge keys (``<<: *base``) are inlined first, as ``yaml.safe_load`` does; a
            # merged key keeps the line where the anchor wrote it, and a key of this mapping
            # overrides a merged one (that is what merging is for, not a duplicate).
            own = sum(1 for key_node, _ in node.value if key_node.tag != MERGE_TAG)
            loader.flatten_mapping(node)
            merged = len(node.value) - own
            from_merge: set[Any] = set()
            for index, (key_node, value_node) in enumerate(node.value):
                key = loader.construct_object(key_node, deep=True)
                if isinstance(key, bool):
                    # YAML 1.1 reads a key "on" (or "yes") as true; as a key it is a name.
                    key = key_node.value
                elif not isinstance(key, str):
                    key = str(key)
                child = path + (key,)
                self.lines[child] = key_node.start_mark.line + 1
                if index < merged:
                    from_merge.add(key)
                elif key in from_merge:
                    from_merge.discard(key)  # this mapping's own key overrides the merged one
                elif key in out:
                    self.problem(child, "this key appears twice")
                out[key] = self._convert(loader, value_node, child)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self._convert(loader, item, path + (i,)) for i, item in enumerate(node.value)]
        return loader.construct_object(node, deep=True)


def key_path(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


# ---------------------------------------------------------------------------------------
# Value checks: each returns the cleaned value or raises ValueError with the message a
# person reads (fields.py runs them before pydantic's own validation).


def kind_of(value: Any) -> str:
    if value is None:
        return "empty"
    return {bool: "true/false", int: "a number", float: "a number", str: "text", list: "a list",
            dict: "a mapping"}.get(type(value), type(value).__name__)


def number(lo: float, hi: float, *, integer: bool = False) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise ValueError(f"must be a number from {lo:g} to {hi:g}, "
                             f"not {kind_of(value)} {value!r}")
        if integer and value != int(value):
            raise ValueError(f"must be a whole number, not {value!r}")
        if not lo <= value <= hi:
            raise ValueError(f"must be from {lo:g} to {hi:g}, not {value:g}")
        return int(value) if integer else float(value)

    return check


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, not {kind_of(value)} {value!r}")
    return value


def choice(*choices: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str) or value.lower() not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, not {value!r}")
        return value.lower()

    return check


def nonempty_text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"must be non-empty text, not {kind_of(value)} {value!r}")
    return value


def text_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError("must be a list of text items")
    return tuple(value)


def check_placeholders(template: str, allowed: tuple[str, ...]) -> None:
    """Every ``{name}`` in ``template`` must be one of ``allowed`` (ValueError otherwise)."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise ValueError(f"is not a valid template: {exc}") from None
    for name in fields:
        if name not in allowed:
            raise ValueError(f"unknown placeholder {{{name}}}; use "
                             + ", ".join("{" + f + "}" for f in allowed))


def each(check: Callable[[Any], Any]) -> Callable[[Any], tuple[Any, ...]]:
    """A list whose every item passes ``check``; the first bad one names its position."""

    def check_list(value: Any) -> tuple[Any, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            raise ValueError(f"must be a list, not {kind_of(value)} {value!r}")
        out = []
        for i, item in enumerate(value):
            try:
                out.append(check(item))
            except ValueError as exc:
                raise ValueError(f"item {i + 1} {exc}") from None
        return tuple(out)

    return check_list


def path_in(base: Path) -> Callable[[Any], Path]:
    def check(value: Any) -> Path:
        path = Path(os.path.expanduser(nonempty_text(value)))
        return Path(os.path.normpath(base / path))

    return check
