"""The fal key: where it is read from, and where it was found, in words (never the key)."""

from __future__ import annotations

import os
from pathlib import Path

from ..config import FalConfig
from ..errors import ConfigError


def read_key(cfg: FalConfig, environ: dict[str, str] | None = None) -> str:
    """The fal key: ``fal.key_file``, a systemd credential, FAL_KEY, or FAL_KEY_ID:SECRET."""
    env = os.environ if environ is None else environ
    candidates: list[Path] = []
    if cfg.key_file is not None:
        candidates.append(cfg.key_file)
    elif env.get("CREDENTIALS_DIRECTORY"):
        candidates.append(Path(env["CREDENTIALS_DIRECTORY"]) / "fal-key")
    for path in candidates:
        try:
            key = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            if cfg.key_file is not None:
                raise ConfigError(f"fal.key_file {path} does not exist") from None
            continue
        except OSError as exc:
            raise ConfigError(f"fal.key_file {path} cannot be read: {exc.strerror}") from None
        if key:
            return key
        raise ConfigError(f"fal key file {path} is empty")
    if env.get("FAL_KEY"):
        return env["FAL_KEY"].strip()
    if env.get("FAL_KEY_ID") and env.get("FAL_KEY_SECRET"):
        return f"{env['FAL_KEY_ID'].strip()}:{env['FAL_KEY_SECRET'].strip()}"
    raise ConfigError(
        "backend 'fal' needs a fal API key: set FAL_KEY (or FAL_KEY_ID and FAL_KEY_SECRET) in "
        "the environment, or fal.key_file in the config (under systemd: LoadCredential=fal-key:"
        "…); to try the daemon offline, use --backend local")


def key_source(cfg: FalConfig, environ: dict[str, str] | None = None) -> str:
    """Where ``read_key`` finds the key, in words (never the key itself); raises the same
    ConfigError when there is none or it cannot be read."""
    env = os.environ if environ is None else environ
    read_key(cfg, env)
    if cfg.key_file is not None:
        return f"fal.key_file {cfg.key_file}"
    if env.get("CREDENTIALS_DIRECTORY") and (
            Path(env["CREDENTIALS_DIRECTORY"]) / "fal-key").is_file():
        return "the credential fal-key ($CREDENTIALS_DIRECTORY)"
    if env.get("FAL_KEY"):
        return "FAL_KEY in the environment"
    return "FAL_KEY_ID and FAL_KEY_SECRET in the environment"
