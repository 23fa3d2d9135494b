"""The settings the daemon runs with: frozen dataclasses, built once from the config file
(load.py) and passed down; with the values their fields may take and the upscaler's limits.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .automation import DEFAULT_HOOK_ATTEMPTS, HookConfig, NotifyConfig
from .fit import FitTarget
from .urls import is_loopback, mask_url

BACKENDS = ("fal", "local")
OUTPUT_FORMATS = ("same", "png", "jpeg", "webp")
ORIGINALS = ("keep", "move", "delete")
OVERSIZE = ("fail", "reduce")
DPI_POLICIES = ("keep", "scale")
UPLOAD_MODES = ("auto", "data-uri", "cdn")
RESULT_FORMATS = ("auto", "png")
LOG_FORMATS = ("auto", "json", "console")
LOG_LEVELS = ("debug", "info", "warning", "error")
FILENAME_FIELDS = ("stem", "ext", "name", "scale", "creativity", "folder")
DEFAULT_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "tif", "tiff", "bmp", "heic", "heif", "avif")
DEFAULT_POLL_SECONDS = 5.0
#: Hard limits of the Crystal Upscaler; per-folder caps may only be lower.
MAX_OUTPUT_MEGAPIXELS = 100.0
MAX_OUTPUT_SIDE = 65535


@dataclass(frozen=True)
class FolderConfig:
    """One watched inbox and what to do with the files that land in it."""

    name: str
    inbox: Path
    outbox: Path
    scale_factor: float = 2.0
    creativity: float = 0.0
    recursive: bool = False
    #: None for native events; otherwise seconds between polling scans.
    polling: float | None = None
    settle: float = 2.0
    #: Seconds a file that does not decode yet may stay unchanged before it is judged
    #: broken; until then it is taken to be still arriving.
    incomplete_grace: float = 300.0
    extensions: tuple[str, ...] = DEFAULT_EXTENSIONS
    ignore: tuple[str, ...] = ()
    output_format: str = "same"
    filename: str = "{stem}_x{scale}.{ext}"
    overwrite: bool = False
    originals: str = "keep"
    done_dir: Path = Path()
    failed_dir: Path = Path()
    max_input_megapixels: float = 100.0
    max_output_megapixels: float = MAX_OUTPUT_MEGAPIXELS
    oversize: str = "fail"
    #: Encoder quality when an output is (re-)encoded; a result passed through keeps fal's.
    jpeg_quality: int = 95
    webp_quality: int = 90
    #: The output's print resolution: "keep" the source's pixels per inch, "scale" them with
    #: the picture (same print size), or a fixed number.
    dpi: str | float = "keep"
    #: A size to fit each picture to (config/fit.py); when set, ``scale_factor`` is unused.
    fit: FitTarget | None = None

    def excluded_dirs(self) -> tuple[Path, ...]:
        """Folders of our own that may sit inside the inbox and must never be watched."""
        return (self.outbox, self.done_dir, self.failed_dir)


@dataclass(frozen=True)
class FalConfig:
    endpoint: str = "clarityai/crystal-upscaler"
    key_file: Path | None = None
    upload: str = "auto"
    timeout: float = 900.0
    #: Dollars per output megapixel, used for the recorded cost and the budget.
    price_per_megapixel: float = 0.016
    #: auto: ask fal for JPEG when the folder writes JPEG (its bytes become the output);
    #: png: always ask for lossless PNG and encode locally.
    result_format: str = "auto"
    #: Requests submitted early, just before a running one is expected to finish, beyond
    #: ``concurrency`` (0: ``concurrency`` is a hard cap on requests at fal).
    queue_ahead: int = 0
    #: Seconds fal keeps uploaded inputs and result files on its CDN (None: fal's default).
    #: Seven days: results of requests still in flight survive a machine switched off over
    #: a long weekend (fal deletes expired files for good); ``cleanup`` removes each
    #: request's files at once after download where the key allows.
    cdn_expiry: int | None = 7 * 86_400
    #: Delete each request's stored payloads and result files once its output is written
    #: (needs an ADMIN-scope key; turned off, with one warning, when fal refuses).
    cleanup: bool = True
    #: Let fal store each request's input/output JSON (needed to find a lost submission).
    store_payloads: bool = True


@dataclass(frozen=True)
class PixelConfig:
    """The bounded pool that decodes and encodes pixels (see images/pixels.py)."""

    workers: int = os.cpu_count() or 1
    #: Estimated working memory all pixel work together may use; one larger job runs alone.
    memory_mb: float = 512.0


@dataclass(frozen=True)
class RetryConfig:
    attempts: int = 5
    backoff: float = 5.0
    max_backoff: float = 300.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt number ``attempt + 1`` (attempt counts from 1)."""
        return min(self.backoff * (2 ** max(attempt - 1, 0)), self.max_backoff)


@dataclass(frozen=True)
class BudgetConfig:
    #: Stop submitting once today's estimated spend reaches this (None: no limit).
    daily_usd: float | None = None
    #: A folder whose pictures waiting to be submitted are estimated above this many dollars
    #: together holds them until approved (None: never ask). See daemon/spendguard.py.
    confirm_above_usd: float | None = 50.0


@dataclass(frozen=True)
class LogConfig:
    format: str = "auto"
    level: str = "info"


@dataclass(frozen=True)
class HttpConfig:
    """The local web page, /metrics and /healthz. ``http: null`` in the config turns it off."""

    host: str = "127.0.0.1"
    port: int = 8765
    #: Never printed: kept out of repr() and shown masked by ``check``.
    token: str | None = field(default=None, repr=False)
    token_file: Path | None = None
    #: Thumbnails kept in state_dir/thumbs; the oldest are dropped beyond this.
    thumbs_cache_mb: float = 200.0
    #: Host names the page answers to besides loopback and the listen address (hosts.py).
    allowed_hosts: tuple[str, ...] = ()
    #: Peers (addresses or networks) whose X-Forwarded-Host is believed.
    trusted_proxies: tuple[str, ...] = ()

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"


@dataclass(frozen=True)
class Config:
    path: Path
    backend: str
    concurrency: int
    state_dir: Path
    log: LogConfig
    fal: FalConfig
    retry: RetryConfig
    folders: tuple[FolderConfig, ...]
    rescan_interval: float = 300.0
    shutdown_grace: float = 20.0
    budget: BudgetConfig = BudgetConfig()
    pixels: PixelConfig = PixelConfig()
    #: None: no web page (``http: null``).
    http: HttpConfig | None = HttpConfig()
    #: None: the SQLite journal in state_dir; else a postgresql:// URL several daemons share.
    #: Kept out of repr: the URL may carry a password.
    journal: str | None = field(default=None, repr=False)
    journal_password_file: Path | None = None
    #: Seconds a daemon's claim on a job lasts without renewal (shared journal only).
    journal_lease: float = 60.0
    #: Commands and webhooks after each job (see automation.py).
    hooks: tuple[HookConfig, ...] = ()
    #: Deliveries of a hook are tried this often before they give up.
    hook_attempts: int = DEFAULT_HOOK_ATTEMPTS
    #: None: no notifications.
    notify: NotifyConfig | None = None

    def folder(self, name: str) -> FolderConfig | None:
        return next((f for f in self.folders if f.name == name), None)

    def with_backend(self, backend: str | None) -> Config:
        if backend is None or backend == self.backend:
            return self
        return Config(**{**self.__dict__, "backend": backend})

    def describe(self) -> dict[str, Any]:
        """The effective settings, as plain data (for ``check`` and ``status``)."""

        def plain(value: Any) -> Any:
            if isinstance(value, Path):
                return str(value)
            if isinstance(value, (tuple, list)):
                return [plain(v) for v in value]
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            return value

        data = {
            "config": str(self.path),
            "backend": self.backend,
            "concurrency": self.concurrency,
            "state_dir": self.state_dir,
            "rescan_interval": self.rescan_interval,
            "shutdown_grace": self.shutdown_grace,
            "log": asdict(self.log),
            "retry": asdict(self.retry),
            "fal": asdict(self.fal),
            "budget": asdict(self.budget),
            "pixels": asdict(self.pixels),
            "http": None if self.http is None else {
                **asdict(self.http), "token": "***" if self.http.token else None},
            "journal": mask_url(self.journal) if self.journal else "sqlite (state_dir)",
            "journal_password_file": self.journal_password_file,
            "journal_lease": self.journal_lease,
            "hooks": [h.describe() for h in self.hooks],
            "hook_attempts": self.hook_attempts,
            "notify": self.notify.describe() if self.notify else None,
            "folders": [asdict(f) for f in self.folders],
        }
        return plain(data)
