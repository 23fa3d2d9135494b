"""``crystal-watchd init``: a commented starter config, its directory and one folder.

The config is written only if no file is there (never overwritten) and only once it parses:
what ``init`` writes, ``check`` accepts. Paths in it are absolute, so it works from any
directory.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template

from .. import config as config_mod
from ..errors import ConfigError

#: Where the folders live when --inbox/--outbox are not given (under the home directory).
DEFAULT_BASE = Path("crystal-watchd")
#: ... and for a system-wide config (under /etc): site data, beside /var/lib's journal.
SYSTEM_BASE = Path("/srv/crystal-watchd")


def folder_base(target: Path) -> Path:
    """Where the default inbox and outbox go for a config written at ``target``: a config
    in /etc (root's default) keeps every path in system places, never in root's home."""
    if target.is_relative_to("/etc"):
        return SYSTEM_BASE
    return Path.home() / DEFAULT_BASE


class AlreadyThere(Exception):
    """A config file exists at the path: ``init`` never replaces one."""


@dataclass(frozen=True)
class Written:
    config: Path
    inbox: Path
    outbox: Path
    next_commands: tuple[str, ...]


def _absolute(path: Path) -> Path:
    return Path(os.path.abspath(os.path.expanduser(path)))


def render(target: Path, name: str, inbox: Path, outbox: Path, scale: float,
           creativity: float, default_path: Path) -> str:
    template = Template(resources.files("crystal_watchd.commands").joinpath("starter.yaml")
                        .read_text(encoding="utf-8"))
    option = "" if target == default_path else f" --config {target}"
    return template.substitute(
        config_option=option,
        state_dir_default=f"{config_mod.default_state_dir()} (or systemd's StateDirectory=)",
        # JSON strings are YAML strings: any path (spaces, colons, quotes) stays one value
        name=json.dumps(name), inbox=json.dumps(str(inbox)),
        outbox=json.dumps(str(outbox)), scale=f"{scale:g}", creativity=f"{creativity:g}")


def init(target: Path | None, inbox: Path | None, outbox: Path | None, scale: float,
         creativity: float) -> Written:
    """Write the starter config and make its directory and folders. Raises AlreadyThere,
    ConfigError (the result would not be a valid config), OSError."""
    default_path = _absolute(config_mod.default_config_path())
    target = _absolute(target) if target is not None else default_path
    base = folder_base(target)
    given_inbox = inbox
    inbox = _absolute(inbox) if inbox is not None else base / "inbox"
    outbox = _absolute(outbox) if outbox is not None else base / "outbox"
    if target.exists() or target.is_symlink():
        raise AlreadyThere(target)
    if inbox == outbox:
        raise ConfigError(f"the inbox and the outbox must differ, both are {inbox}")
    # the folder's name shows on the page and in the log: the inbox's own name, if given
    name = inbox.name if given_inbox is not None and inbox.name else "photos"
    text = render(target, name, inbox, outbox, scale, creativity, default_path)
    config_mod.parse(text, target)  # ConfigError: nothing is written
    target.parent.mkdir(parents=True, exist_ok=True)
    # "x": fails rather than replace a file that appeared meanwhile; 0600 because a token or
    # a journal password may be added to it later
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise AlreadyThere(target) from None
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    for folder in (inbox, outbox):
        folder.mkdir(parents=True, exist_ok=True)
    option = "" if target == default_path else f" --config {target}"
    return Written(target, inbox, outbox, (f"crystal-watchd check{option}",
                                           f"crystal-watchd run{option}"))
