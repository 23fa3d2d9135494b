"""Where the daemon looks for its config and keeps its state when nothing says otherwise:
root's system paths, the XDG base directories for a user, systemd's own directories.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Where systemd's LoadCredential= puts the page's token (like ``fal-key`` for the key).
HTTP_TOKEN_CREDENTIAL = "http-token"


def default_config_path(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get("CRYSTAL_WATCHD_CONFIG"):
        return Path(env["CRYSTAL_WATCHD_CONFIG"])
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/etc/crystal-watchd/config.yaml")
    base = Path(env.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "crystal-watchd" / "config.yaml"


def default_state_dir(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get("STATE_DIRECTORY"):  # systemd's StateDirectory=
        return Path(env["STATE_DIRECTORY"].split(":")[0])
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/crystal-watchd")
    base = Path(env.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return base / "crystal-watchd"
