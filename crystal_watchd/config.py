"""YAML configuration → frozen dataclasses, parsed once and passed down.

Every problem is collected (not just the first) and names the file, the line and the key
path, so a user can fix a config in one go. Unknown keys are errors with a "did you mean"
hint: a misspelt setting that is silently ignored is worse than one that stops the start.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import string
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

import yaml

from .errors import ConfigError, ConfigProblem

BACKENDS = ("fal", "local")
OUTPUT_FORMATS = ("same", "png", "jpeg", "webp")
ORIGINALS = ("keep", "move", "delete")
OVERSIZE = ("fail", "reduce")
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


# ---------------------------------------------------------------------------------------
# YAML with line numbers


class _Doc:
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
        self.problems.append(ConfigProblem(self.file, line, _key_path(path), message))

    def load(self, text: str) -> Any:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            return self._convert(loader, node, ()) if node is not None else None
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark else None
            what = " ".join(p for p in (exc.context, exc.problem) if p)
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
            for key_node, value_node in node.value:
                key = loader.construct_object(key_node, deep=True)
                if not isinstance(key, str):
                    key = str(key)
                child = path + (key,)
                self.lines[child] = key_node.start_mark.line + 1
                if key in out:
                    self.problem(child, "this key appears twice")
                out[key] = self._convert(loader, value_node, child)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self._convert(loader, item, path + (i,)) for i, item in enumerate(node.value)]
        return loader.construct_object(node, deep=True)


def _key_path(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


# ---------------------------------------------------------------------------------------
# Field checks: each returns the cleaned value or records a problem and returns None.

_MISSING = object()


class _Section:
    """A mapping being read: tracks which keys were used so the rest can be reported."""

    def __init__(self, doc: _Doc, data: Any, path: tuple[Any, ...], allowed: tuple[str, ...]):
        self.doc, self.path, self.allowed = doc, path, allowed
        if data is None:
            data = {}
        if not isinstance(data, dict):
            doc.problem(path, f"must be a mapping of settings, not {_kind(data)}")
            data = {}
        self.data = data
        for key in data:
            if key not in allowed:
                hint = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
                tip = f"; did you mean '{hint[0]}'?" if hint else f"; known keys: {', '.join(allowed)}"
                doc.problem(path + (key,), f"unknown setting{tip}")

    def get(self, key: str, check: Callable[[Any], Any], default: Any = _MISSING) -> Any:
        if key not in self.data:
            if default is _MISSING:
                self.doc.problem(self.path + (key,), "is required")
                return None
            return default
        try:
            return check(self.data[key])
        except ValueError as exc:
            self.doc.problem(self.path + (key,), str(exc))
            return default if default is not _MISSING else None


def _kind(value: Any) -> str:
    if value is None:
        return "empty"
    return {bool: "true/false", int: "a number", float: "a number", str: "text", list: "a list",
            dict: "a mapping"}.get(type(value), type(value).__name__)


def _number(lo: float, hi: float, *, integer: bool = False) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise ValueError(f"must be a number from {lo:g} to {hi:g}, not {_kind(value)} {value!r}")
        if integer and value != int(value):
            raise ValueError(f"must be a whole number, not {value!r}")
        if not lo <= value <= hi:
            raise ValueError(f"must be from {lo:g} to {hi:g}, not {value:g}")
        return int(value) if integer else float(value)

    return check


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, not {_kind(value)} {value!r}")
    return value


def _choice(*choices: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str) or value.lower() not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, not {value!r}")
        return value.lower()

    return check


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"must be non-empty text, not {_kind(value)} {value!r}")
    return value


def _text_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError("must be a list of text items")
    return tuple(value)


def _polling(value: Any) -> float | None:
    if value is False or value is None:
        return None
    if value is True:
        return DEFAULT_POLL_SECONDS
    return _number(0.5, 3600)(value)


def _path(base: Path) -> Callable[[Any], Path]:
    def check(value: Any) -> Path:
        path = Path(os.path.expanduser(_text(value)))
        return Path(os.path.normpath(base / path))

    return check


def _filename(value: Any) -> str:
    template = _text(value)
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise ValueError(f"is not a valid template: {exc}") from None
    for name in fields:
        if name not in FILENAME_FIELDS:
            raise ValueError(
                f"unknown placeholder {{{name}}}; use {', '.join('{' + f + '}' for f in FILENAME_FIELDS)}")
    if "/" in template or "\\" in template or template.startswith("."):
        raise ValueError("must be a plain file name (no folders, not hidden)")
    return template


# ---------------------------------------------------------------------------------------

FOLDER_KEYS = tuple(f for f in FolderConfig.__dataclass_fields__)
DEFAULTS_KEYS = tuple(k for k in FOLDER_KEYS if k not in ("name", "inbox", "outbox"))
TOP_KEYS = ("backend", "concurrency", "state_dir", "log", "fal", "retry", "defaults", "folders",
            "rescan_interval", "shutdown_grace", "budget", "pixels", "http", "journal",
            "journal_password_file", "journal_lease")


def _folder_values(sec: _Section, base: Path, fallback: dict[str, Any]) -> dict[str, Any]:
    """Read every per-folder setting present in ``sec``, falling back to ``fallback``."""
    d = FolderConfig.__dataclass_fields__
    checks: dict[str, Callable[[Any], Any]] = {
        "scale_factor": _number(1, 200),
        "creativity": _number(0, 10),
        "recursive": _bool,
        "polling": _polling,
        "settle": _number(0, 3600),
        "incomplete_grace": _number(0, 86_400),
        "extensions": lambda v: tuple(e.lower().lstrip(".") for e in _text_list(v)),
        "ignore": _text_list,
        "output_format": lambda v: _choice(*OUTPUT_FORMATS)("jpeg" if v in ("jpg", "JPG") else v),
        "filename": _filename,
        "overwrite": _bool,
        "originals": _choice(*ORIGINALS),
        "done_dir": _path(base),
        "failed_dir": _path(base),
        "max_input_megapixels": _number(0.001, 10_000),
        "max_output_megapixels": _number(0.001, MAX_OUTPUT_MEGAPIXELS),
        "oversize": _choice(*OVERSIZE),
        "jpeg_quality": _number(1, 100, integer=True),
        "webp_quality": _number(1, 100, integer=True),
    }
    out = {}
    for key, check in checks.items():
        default = fallback.get(key, d[key].default)
        out[key] = sec.get(key, check, default)
    return out


def parse(text: str, file: str | Path) -> Config:
    """Parse config text; raise ConfigError listing every problem."""
    path = Path(file).absolute()
    doc = _Doc(str(file))
    data = doc.load(text)
    if data is None and doc.problems:  # unparseable: nothing more to check
        raise ConfigError(doc.problems)
    base = path.parent
    top = _Section(doc, data, (), TOP_KEYS)

    log = _Section(doc, top.data.get("log"), ("log",), ("format", "level"))
    fal = _Section(doc, top.data.get("fal"), ("fal",), tuple(FalConfig.__dataclass_fields__))
    retry = _Section(doc, top.data.get("retry"), ("retry",), ("attempts", "backoff", "max_backoff"))
    budget = _Section(doc, top.data.get("budget"), ("budget",), ("daily_usd",))
    pixels = _Section(doc, top.data.get("pixels"), ("pixels",), ("workers", "memory_mb"))
    defaults = _Section(doc, top.data.get("defaults"), ("defaults",), DEFAULTS_KEYS)
    default_values = _folder_values(defaults, base, {})

    folders: list[FolderConfig] = []
    raw_folders = top.data.get("folders")
    if not isinstance(raw_folders, list) or not raw_folders:
        doc.problem(("folders",), "must list at least one folder (each with inbox and outbox)")
        raw_folders = []
    for i, raw in enumerate(raw_folders):
        sec = _Section(doc, raw, ("folders", i), FOLDER_KEYS)
        inbox = sec.get("inbox", _path(base))
        outbox = sec.get("outbox", _path(base))
        values = _folder_values(sec, base, default_values)
        name = sec.get("name", _text, inbox.name if inbox else f"folder{i + 1}")
        if inbox is None or outbox is None:
            continue
        if values["done_dir"] == Path():
            values["done_dir"] = inbox / "done"
        if values["failed_dir"] == Path():
            values["failed_dir"] = inbox / "failed"
        folders.append(FolderConfig(name=name, inbox=inbox, outbox=outbox, **values))

    config = Config(
        path=path,
        backend=top.get("backend", _choice(*BACKENDS), "fal"),
        concurrency=top.get("concurrency", _number(1, 256, integer=True), 4),
        state_dir=top.get("state_dir", _path(base), default_state_dir()),
        log=LogConfig(format=log.get("format", _choice(*LOG_FORMATS), "auto"),
                      level=log.get("level", _choice(*LOG_LEVELS), "info")),
        fal=FalConfig(
            endpoint=fal.get("endpoint", _text, FalConfig.endpoint),
            key_file=fal.get("key_file", lambda v: None if v is None else _path(base)(v), None),
            upload=fal.get("upload", _choice(*UPLOAD_MODES), "auto"),
            timeout=fal.get("timeout", _number(10, 86_400), 900.0),
            price_per_megapixel=fal.get("price_per_megapixel", _number(0, 100), 0.016),
            result_format=fal.get("result_format", _choice(*RESULT_FORMATS), "auto"),
            queue_ahead=fal.get("queue_ahead", _number(0, 256, integer=True), 0),
        ),
        retry=RetryConfig(attempts=retry.get("attempts", _number(1, 1000, integer=True), 5),
                          backoff=retry.get("backoff", _number(0, 86_400), 5.0),
                          max_backoff=retry.get("max_backoff", _number(0, 86_400), 300.0)),
        folders=tuple(folders),
        rescan_interval=top.get("rescan_interval", _number(1, 86_400), 300.0),
        shutdown_grace=top.get("shutdown_grace", _number(0, 3600), 20.0),
        budget=BudgetConfig(daily_usd=budget.get(
            "daily_usd", lambda v: None if v is None else _number(0, 1e9)(v), None)),
        pixels=PixelConfig(
            workers=pixels.get("workers", _number(1, 256, integer=True), PixelConfig.workers),
            memory_mb=pixels.get("memory_mb", _number(32, 1_048_576), PixelConfig.memory_mb)),
        http=_http(doc, top, base),
        journal=top.get("journal", _journal_url, None),
        journal_password_file=top.get(
            "journal_password_file", lambda v: None if v is None else _path(base)(v), None),
        journal_lease=top.get("journal_lease", _number(1, 3600), 60.0),
    )
    _check_folders(doc, config)
    if doc.problems:
        raise ConfigError(sorted(doc.problems, key=lambda p: (p.line or 0)))
    return config


def _listen(value: Any) -> tuple[str, int]:
    text = _text(value).strip()
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"must be HOST:PORT, like {DEFAULT_HTTP_LISTEN} or [::1]:8765, "
                         f"not {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not 0 <= int(port) <= 65535:
        raise ValueError(f"port must be from 0 to 65535, not {port}")
    return host, int(port)


def _http(doc: _Doc, top: _Section, base: Path) -> HttpConfig | None:
    """``http:`` absent means the default page on loopback; ``http: null`` turns it off."""
    if "http" in top.data and top.data["http"] is None:
        return None
    sec = _Section(doc, top.data.get("http"), ("http",),
                   ("listen", "token", "token_file", "thumbs_cache_mb"))
    host, port = sec.get("listen", _listen, ("127.0.0.1", 8765))
    token = sec.get("token", lambda v: None if v is None else _text(v).strip(), None)
    token_file = sec.get("token_file", lambda v: None if v is None else _path(base)(v), None)
    http = HttpConfig(host=host, port=port, token=token, token_file=token_file,
                      thumbs_cache_mb=sec.get("thumbs_cache_mb", _number(1, 1_000_000), 200.0))
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


def _check_folders(doc: _Doc, config: Config) -> None:
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
        raise ConfigError(ConfigProblem(str(p), None, "", "config file not found; copy "
                                        "config.example.yaml there or pass --config")) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(ConfigProblem(str(p), None, "", f"cannot read config: {exc}")) from None
    return parse(text, p)
