"""Reading a config file: its text parsed (build.py) into the frozen Config, or a
ConfigError listing every problem, the unreadable file included.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError, ConfigProblem
from .build import parse_config
from .runtime import Config


def parse(text: str, file: str | Path) -> Config:
    """Parse config text; raise ConfigError listing every problem."""
    return parse_config(text, file)


def load(path: str | Path) -> Config:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(ConfigProblem(str(p), None, "", "config file not found; "
                                        "`crystal-watchd init` writes a starter one there, or "
                                        "pass --config")) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(ConfigProblem(str(p), None, "", f"cannot read config: {exc}")) from None
    return parse(text, p)
