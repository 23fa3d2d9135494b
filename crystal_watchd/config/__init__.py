"""YAML configuration → frozen dataclasses, parsed once and passed down.

Every problem is collected (not just the first) and names the file, the line and the key
path, so a user can fix a config in one go. Unknown keys are errors with a "did you mean"
hint: a misspelt setting that is silently ignored is worse than one that stops the start.

Where things are:
- runtime.py: the frozen dataclasses the daemon runs with, the values their fields take
  and the upscaler's limits;
- models.py: the file's keys (pydantic; the JSON Schema comes from there, schema.py);
- build.py: the rules across keys, and the models' result turned into a Config;
- load.py: reading a file (``load``) or text (``parse``);
- paths.py: default config and state paths; urls.py: listen addresses and masked URLs;
- automation.py: hooks and notifications; hosts.py: the page's host names.

The public names are re-exported here: ``from crystal_watchd.config import Config``.
"""

from __future__ import annotations

from .fit import FitTarget
from .load import load, parse
from .paths import HTTP_TOKEN_CREDENTIAL, default_config_path, default_state_dir
from .runtime import (
    BACKENDS,
    DEFAULT_EXTENSIONS,
    DEFAULT_POLL_SECONDS,
    DPI_POLICIES,
    FILENAME_FIELDS,
    LOG_FORMATS,
    LOG_LEVELS,
    MAX_OUTPUT_MEGAPIXELS,
    MAX_OUTPUT_SIDE,
    ORIGINALS,
    OUTPUT_FORMATS,
    OVERSIZE,
    RESULT_FORMATS,
    UPLOAD_MODES,
    BudgetConfig,
    Config,
    FalConfig,
    FolderConfig,
    HttpConfig,
    LogConfig,
    PixelConfig,
    RetryConfig,
)
from .urls import DEFAULT_HTTP_LISTEN, is_loopback, listen, mask_url

__all__ = [
    "BACKENDS", "DEFAULT_EXTENSIONS", "DEFAULT_HTTP_LISTEN", "DEFAULT_POLL_SECONDS",
    "DPI_POLICIES", "FILENAME_FIELDS", "FitTarget", "HTTP_TOKEN_CREDENTIAL", "LOG_FORMATS",
    "LOG_LEVELS",
    "MAX_OUTPUT_MEGAPIXELS", "MAX_OUTPUT_SIDE", "ORIGINALS", "OUTPUT_FORMATS", "OVERSIZE",
    "RESULT_FORMATS", "UPLOAD_MODES", "BudgetConfig", "Config", "FalConfig", "FolderConfig",
    "HttpConfig", "LogConfig", "PixelConfig", "RetryConfig", "default_config_path",
    "default_state_dir", "is_loopback", "listen", "load", "mask_url", "parse",
]
