"""YAML configuration → frozen dataclasses, parsed once and passed down.

Every problem is collected (not just the first) and names the file, the line and the key
path, so a user can fix a config in one go. Unknown keys are errors with a "did you mean"
hint: a misspelt setting that is silently ignored is worse than one that stops the start.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

from .automation_config import (
    DEFAULT_HOOK_ATTEMPTS,
    HookConfig,
    NotifyConfig,
    parse_hooks,
    parse_notify,
)
from .errors import ConfigError, ConfigProblem
from .hosts import host_entry, proxy_entry
from .yamldoc import (
    Doc,
    Section,
    boolean,
    check_placeholders,
    choice,
    each,
    nonempty_text,
    number,
    path_in,
    text_list,
)

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
    cdn_expiry: int | None = 86_400
    #: Delete each request's stored payloads and result files once its output is written.
    cleanup: bool = False
    #: Let fal store each request's input/output JSON (needed to find a lost submission).
    store_payloads: bool = True


@dataclass(frozen=True)
class PixelConfig:
    """The bounded pool that decodes and encodes pixels (see pixels.py)."""

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
    #: together holds them until approved (None: never ask). See spendguard.py.
    confirm_above_usd: float | None = 50.0


@dataclass(frozen=True)
class LogConfig:
    format: str = "auto"
    level: str = "info"


DEFAULT_HTTP_LISTEN = "127.0.0.1:8765"
#: Where systemd's LoadCredential= puts the page's token (like ``fal-key`` for the key).
HTTP_TOKEN_CREDENTIAL = "http-token"


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


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


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
    #: Commands and webhooks after each job (see automation_config.py).
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


def mask_url(url: str) -> str:
    """A journal URL fit to print: any password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


def _journal_url(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith(("postgresql://", "postgres://")):
        raise ValueError("must be a postgresql://user@host/database URL (leave it out for "
                         "the SQLite journal in state_dir)")
    return value


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


def _optional_usd(value: Any) -> float | None:
    return None if value is None else number(0, 1e9)(value)


def _polling(value: Any) -> float | None:
    if value is False or value is None:
        return None
    if value is True:
        return DEFAULT_POLL_SECONDS
    return number(0.5, 3600)(value)


def _dpi(value: Any) -> str | float:
    if isinstance(value, str) and value.lower() in DPI_POLICIES:
        return value.lower()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return number(1, 100_000)(value)
    raise ValueError(f"must be keep, scale or a number of pixels per inch, not {value!r}")


_EXPIRY_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800, "y": 31_536_000}


def _expiry(value: Any) -> int | None:
    """``never`` (fal's default lifetime), seconds, or a number with s/m/h/d/w/y."""
    if value == "never":
        return None
    if isinstance(value, str) and value[:-1].isdigit() and value[-1:] in _EXPIRY_UNITS:
        value = int(value[:-1]) * _EXPIRY_UNITS[value[-1]]
    if isinstance(value, bool) or not isinstance(value, int) or value < 60:
        raise ValueError(f"must be never, a number of seconds (at least 60) or a duration "
                         f"such as 1h, 1d or 7d, not {value!r}")
    return value


def _filename(value: Any) -> str:
    template = nonempty_text(value)
    check_placeholders(template, FILENAME_FIELDS)
    if "/" in template or "\\" in template or template.startswith("."):
        raise ValueError("must be a plain file name (no folders, not hidden)")
    return template


# ---------------------------------------------------------------------------------------

FOLDER_KEYS = tuple(f for f in FolderConfig.__dataclass_fields__)
DEFAULTS_KEYS = tuple(k for k in FOLDER_KEYS if k not in ("name", "inbox", "outbox"))
TOP_KEYS = ("backend", "concurrency", "state_dir", "log", "fal", "retry", "defaults", "folders",
            "rescan_interval", "shutdown_grace", "budget", "pixels", "http", "journal",
            "journal_password_file", "journal_lease", "hooks", "hook_attempts", "notify")


def _folder_values(sec: Section, base: Path, fallback: dict[str, Any]) -> dict[str, Any]:
    """Read every per-folder setting present in ``sec``, falling back to ``fallback``."""
    d = FolderConfig.__dataclass_fields__
    checks: dict[str, Callable[[Any], Any]] = {
        "scale_factor": number(1, 200),
        "creativity": number(0, 10),
        "recursive": boolean,
        "polling": _polling,
        "settle": number(0, 3600),
        "incomplete_grace": number(0, 86_400),
        "extensions": lambda v: tuple(e.lower().lstrip(".") for e in text_list(v)),
        "ignore": text_list,
        "output_format": lambda v: choice(*OUTPUT_FORMATS)("jpeg" if v in ("jpg", "JPG") else v),
        "filename": _filename,
        "overwrite": boolean,
        "originals": choice(*ORIGINALS),
        "done_dir": path_in(base),
        "failed_dir": path_in(base),
        "max_input_megapixels": number(0.001, 10_000),
        "max_output_megapixels": number(0.001, MAX_OUTPUT_MEGAPIXELS),
        "oversize": choice(*OVERSIZE),
        "jpeg_quality": number(1, 100, integer=True),
        "webp_quality": number(1, 100, integer=True),
        "dpi": _dpi,
    }
    out = {}
    for key, check in checks.items():
        default = fallback.get(key, d[key].default)
        out[key] = sec.get(key, check, default)
    return out


def parse(text: str, file: str | Path) -> Config:
    """Parse config text; raise ConfigError listing every problem."""
    path = Path(file).absolute()
    doc = Doc(str(file))
    data = doc.load(text)
    if data is None and doc.problems:  # unparseable: nothing more to check
        raise ConfigError(doc.problems)
    base = path.parent
    top = Section(doc, data, (), TOP_KEYS)

    log = Section(doc, top.data.get("log"), ("log",), ("format", "level"))
    fal = Section(doc, top.data.get("fal"), ("fal",), tuple(FalConfig.__dataclass_fields__))
    retry = Section(doc, top.data.get("retry"), ("retry",), ("attempts", "backoff", "max_backoff"))
    budget = Section(doc, top.data.get("budget"), ("budget",),
                     ("daily_usd", "confirm_above_usd"))
    pixels = Section(doc, top.data.get("pixels"), ("pixels",), ("workers", "memory_mb"))
    defaults = Section(doc, top.data.get("defaults"), ("defaults",), DEFAULTS_KEYS)
    default_values = _folder_values(defaults, base, {})

    folders: list[FolderConfig] = []
    raw_folders = top.data.get("folders")
    if not isinstance(raw_folders, list) or not raw_folders:
        doc.problem(("folders",), "must list at least one folder (each with inbox and outbox)")
        raw_folders = []
    for i, raw in enumerate(raw_folders):
        sec = Section(doc, raw, ("folders", i), FOLDER_KEYS)
        inbox = sec.get("inbox", path_in(base))
        outbox = sec.get("outbox", path_in(base))
        values = _folder_values(sec, base, default_values)
        name = sec.get("name", nonempty_text, inbox.name if inbox else f"folder{i + 1}")
        if inbox is None or outbox is None:
            continue
        if values["done_dir"] == Path():
            values["done_dir"] = inbox / "done"
        if values["failed_dir"] == Path():
            values["failed_dir"] = inbox / "failed"
        folders.append(FolderConfig(name=name, inbox=inbox, outbox=outbox, **values))

    config = Config(
        path=path,
        backend=top.get("backend", choice(*BACKENDS), "fal"),
        concurrency=top.get("concurrency", number(1, 256, integer=True), 4),
        state_dir=top.get("state_dir", path_in(base), default_state_dir()),
        log=LogConfig(format=log.get("format", choice(*LOG_FORMATS), "auto"),
                      level=log.get("level", choice(*LOG_LEVELS), "info")),
        fal=FalConfig(
            endpoint=fal.get("endpoint", nonempty_text, FalConfig.endpoint),
            key_file=fal.get("key_file", lambda v: None if v is None else path_in(base)(v), None),
            upload=fal.get("upload", choice(*UPLOAD_MODES), "auto"),
            timeout=fal.get("timeout", number(10, 86_400), 900.0),
            price_per_megapixel=fal.get("price_per_megapixel", number(0, 100), 0.016),
            result_format=fal.get("result_format", choice(*RESULT_FORMATS), "auto"),
            queue_ahead=fal.get("queue_ahead", number(0, 256, integer=True), 0),
            cdn_expiry=fal.get("cdn_expiry", _expiry, 86_400),
            cleanup=fal.get("cleanup", boolean, False),
            store_payloads=fal.get("store_payloads", boolean, True),
        ),
        retry=RetryConfig(attempts=retry.get("attempts", number(1, 1000, integer=True), 5),
                          backoff=retry.get("backoff", number(0, 86_400), 5.0),
                          max_backoff=retry.get("max_backoff", number(0, 86_400), 300.0)),
        folders=tuple(folders),
        rescan_interval=top.get("rescan_interval", number(1, 86_400), 300.0),
        shutdown_grace=top.get("shutdown_grace", number(0, 3600), 20.0),
        budget=BudgetConfig(
            daily_usd=budget.get("daily_usd", _optional_usd, None),
            confirm_above_usd=budget.get("confirm_above_usd", _optional_usd,
                                         BudgetConfig.confirm_above_usd)),
        pixels=PixelConfig(
            workers=pixels.get("workers", number(1, 256, integer=True), PixelConfig.workers),
            memory_mb=pixels.get("memory_mb", number(32, 1_048_576), PixelConfig.memory_mb)),
        http=_http(doc, top, base),
        journal=top.get("journal", _journal_url, None),
        journal_password_file=top.get(
            "journal_password_file", lambda v: None if v is None else path_in(base)(v), None),
        journal_lease=top.get("journal_lease", number(1, 3600), 60.0),
        hooks=parse_hooks(doc, top.data.get("hooks"), base, {f.name for f in folders}),
        hook_attempts=top.get("hook_attempts", number(1, 1000, integer=True),
                              DEFAULT_HOOK_ATTEMPTS),
        notify=parse_notify(doc, top.data.get("notify"), base),
    )
    _check_folders(doc, config)
    if doc.problems:
        raise ConfigError(sorted(doc.problems, key=lambda p: (p.line or 0)))
    return config


def _listen(value: Any) -> tuple[str, int]:
    text = nonempty_text(value).strip()
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"must be HOST:PORT, like {DEFAULT_HTTP_LISTEN} or [::1]:8765, "
                         f"not {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not 0 <= int(port) <= 65535:
        raise ValueError(f"port must be from 0 to 65535, not {port}")
    return host, int(port)


def _http(doc: Doc, top: Section, base: Path) -> HttpConfig | None:
    """``http:`` absent means the default page on loopback; ``http: null`` turns it off."""
    if "http" in top.data and top.data["http"] is None:
        return None
    sec = Section(doc, top.data.get("http"), ("http",),
                   ("listen", "token", "token_file", "thumbs_cache_mb", "allowed_hosts",
                    "trusted_proxies"))
    host, port = sec.get("listen", _listen, ("127.0.0.1", 8765))
    token = sec.get("token", lambda v: None if v is None else nonempty_text(v).strip(), None)
    token_file = sec.get("token_file", lambda v: None if v is None else path_in(base)(v), None)
    http = HttpConfig(host=host, port=port, token=token, token_file=token_file,
                      thumbs_cache_mb=sec.get("thumbs_cache_mb", number(1, 1_000_000), 200.0),
                      allowed_hosts=sec.get("allowed_hosts", each(host_entry), ()),
                      trusted_proxies=sec.get("trusted_proxies", each(proxy_entry), ()))
    if not http.loopback and token is None and token_file is None and not _token_credential():
        doc.problem(("http", "listen"),
                    f"listening on {host} (not a loopback address) needs http.token or "
                    "http.token_file: the page can retry jobs and lift pauses, and the "
                    "pictures are private")
    return http


def _token_credential() -> bool:
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    return bool(creds) and (Path(creds) / HTTP_TOKEN_CREDENTIAL).is_file()


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def _check_folders(doc: Doc, config: Config) -> None:
    """Names unique, no inbox twice, and nothing we write lands where we watch."""
    seen_names: dict[str, int] = {}
    seen_inboxes: dict[Path, int] = {}
    for i, f in enumerate(config.folders):
        if f.name in seen_names:
            doc.problem(("folders", i, "name"), f"folder name '{f.name}' is used twice "
                        f"(also folders[{seen_names[f.name]}]); set a distinct name")
        seen_names.setdefault(f.name, i)
        if f.inbox in seen_inboxes:
            doc.problem(("folders", i, "inbox"), f"inbox {f.inbox} is watched twice "
                        f"(also folders[{seen_inboxes[f.inbox]}])")
        seen_inboxes.setdefault(f.inbox, i)
        for j, other in enumerate(config.folders):
            if i != j and f.recursive and other.inbox != f.inbox and _inside(other.inbox, f.inbox) \
                    and not _excluded(f, other.inbox):
                doc.problem(("folders", j, "inbox"),
                            f"lies inside the recursive inbox of folders[{i}] ({f.inbox})")
        for key in ("outbox", "done_dir", "failed_dir"):
            target: Path = getattr(f, key)
            for j, other in enumerate(config.folders):
                if target == other.inbox:
                    doc.problem(("folders", i, key), f"{target} is the inbox of folders[{j}]")
                elif other.recursive and _inside(target, other.inbox) and not _excluded(other, target):
                    doc.problem(("folders", i, key), f"{target} lies inside the recursive inbox "
                                f"of folders[{j}] ({other.inbox}); files written there would be "
                                "picked up again")


def _excluded(folder: FolderConfig, path: Path) -> bool:
    """Whether ``path`` inside ``folder``'s inbox is one of its own never-watched dirs."""
    return any(_inside(path, d) for d in folder.excluded_dirs())


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
