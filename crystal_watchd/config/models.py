"""The config file's keys as pydantic models: what each takes, its default and its help
text (the attribute docs below become the descriptions in config.schema.json).

The models check the raw YAML data only; build.py turns a valid file into the frozen
dataclasses the daemon uses (runtime.py) and checks what no single key can (overlapping
folders, say).
Defaults are read from those dataclasses so the two never disagree.
"""

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, model_validator

from .automation import DEFAULT_HOOK_ATTEMPTS, HookSettings, NotifySettings
from .fields import (
    Flag,
    OptionalPath,
    PathIn,
    Settings,
    Text,
    TextList,
    checked,
    num,
    one_of,
    optional,
    optional_num,
)
from .fit import DEFAULT_PRINT_DPI, PRINT_PATTERN, FitTarget, print_sides
from .hosts import host_entry, proxy_entry
from .runtime import (
    BACKENDS,
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
    FalConfig,
    FolderConfig,
    HttpConfig,
    RetryConfig,
)
from .urls import DEFAULT_HTTP_LISTEN, listen
from .yamldoc import check_placeholders, choice, each, nonempty_text, number, text_list


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


def _output_format(value: Any) -> str:
    return choice(*OUTPUT_FORMATS)("jpeg" if value in ("jpg", "JPG") else value)


def _listen_text(value: Any) -> str:
    listen(value)  # the problem, if any, worded once
    return value.strip()


def _journal_url(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith(("postgresql://", "postgres://")):
        raise ValueError("must be a postgresql://user@host/database URL (leave it out for "
                         "the SQLite journal in state_dir)")
    return value


_DURATION = r"^[0-9]+[smhdwy]$"
_Seconds = Annotated[int, Field(ge=60)]
_ExpiryText = Literal["never"] | Annotated[str, Field(pattern=_DURATION)]
_PpiNumber = Annotated[float, Field(ge=1, le=100_000)]
_PollSeconds = Annotated[float, Field(ge=0.5, le=3600)]


def _print_size(value: Any) -> str:
    print_sides(value)  # the problem, if any, worded once
    return value.strip()


class FitSettings(Settings):
    """A size to upscale each picture to, instead of a fixed scale_factor: one of long_edge,
    print (with dpi) or megapixels. Each picture gets the factor its own size needs."""

    long_edge: checked(int | None, optional(number(2, MAX_OUTPUT_SIDE, integer=True)),
                       ge=2, le=MAX_OUTPUT_SIDE) = None
    """Pixels on the picture's long edge (portrait or landscape alike)."""
    print: checked(str | None, optional(_print_size), pattern=PRINT_PATTERN) = None
    """A print size such as 40x60cm, 130x180mm or 16x24in: the picture's long edge is fitted
    to the print's long edge at dpi; its short edge keeps the picture's aspect (no crop)."""
    dpi: optional_num(1, 100_000) = None
    """The print's resolution in pixels per inch (with print; default 300), also declared
    in the output."""
    megapixels: optional_num(0.001, MAX_OUTPUT_MEGAPIXELS) = None
    """The output's size in megapixels."""
    enlarge_only: Flag = FitTarget.enlarge_only
    """A picture that already meets the target is copied as it is, without paying; false
    still sends it to the upscaler at a factor of 1."""

    @model_validator(mode="after")
    def _one_target(self) -> "FitSettings":
        given = [k for k in ("long_edge", "print", "megapixels") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("needs exactly one of long_edge, print or megapixels"
                             + (f", not {' and '.join(given)}" if given else ""))
        if self.dpi is not None and self.print is None:
            raise ValueError("dpi goes with print (the print's resolution); for the "
                             "resolution an output declares use the folder's dpi")
        long_edge = self.target().long_edge_px
        if long_edge is not None and long_edge > MAX_OUTPUT_SIDE:
            raise ValueError(f"asks for {long_edge} px on the long edge, over the "
                             f"{MAX_OUTPUT_SIDE} px an output can have")
        return self

    def target(self) -> FitTarget:
        dpi = (self.dpi or DEFAULT_PRINT_DPI) if self.print is not None else None
        return FitTarget(long_edge=self.long_edge, print=self.print, dpi=dpi,
                         megapixels=self.megapixels, enlarge_only=self.enlarge_only)


class FolderSettings(Settings):
    """What to do with the pictures of a folder; under ``defaults:``, for every folder."""

    scale_factor: num(1, 200) = FolderConfig.scale_factor
    """How many times larger (each side) the output is (or fit: a size to fit each picture
    to; not both in one mapping)."""
    fit: FitSettings | None = None
    """A size to fit each picture to instead of a fixed scale_factor: long_edge (px), print
    (40x60cm, 16x24in) at dpi, or megapixels; a folder's own scale_factor or fit replaces
    the other from defaults."""
    creativity: num(0, 10) = FolderConfig.creativity
    """How freely the upscaler may invent detail (0: faithful)."""
    recursive: Flag = FolderConfig.recursive
    """Watch subfolders too (the outbox layout mirrors them)."""
    polling: checked(_PollSeconds | None, _polling,
                     schema=bool | _PollSeconds | None) = FolderConfig.polling
    """false: native file events; true or seconds: scan the inbox this often (network and
    FUSE filesystems send no events)."""
    settle: num(0, 3600) = FolderConfig.settle
    """Seconds a file must stay unchanged before it is taken."""
    incomplete_grace: num(0, 86_400) = FolderConfig.incomplete_grace
    """Seconds a file that does not decode yet may stay unchanged before it is judged
    broken; until then it is taken to be still arriving."""
    extensions: checked(tuple[str, ...],
                        lambda v: tuple(e.lower().lstrip(".") for e in text_list(v))
                        ) = FolderConfig.extensions
    """File name extensions taken (any letter case, with or without the dot)."""
    ignore: TextList = FolderConfig.ignore
    """Glob patterns of file names never taken."""
    output_format: checked(Literal[OUTPUT_FORMATS], _output_format,
                           schema=Literal[OUTPUT_FORMATS + ("jpg",)]) = FolderConfig.output_format
    """same (as the input), png, jpeg (jpg) or webp."""
    filename: checked(str, _filename, min_length=1) = FolderConfig.filename
    """The output's file name; placeholders {stem}, {ext}, {name}, {scale}, {creativity},
    {folder}."""
    overwrite: Flag = FolderConfig.overwrite
    """Replace an existing output of the same name (else a number is added)."""
    originals: one_of(*ORIGINALS) = FolderConfig.originals
    """What happens to an input once its output is written: keep, move (to done_dir) or
    delete."""
    done_dir: PathIn = None
    """Where originals go with originals: move (default: the inbox's done/)."""
    failed_dir: PathIn = None
    """Where inputs that cannot be upscaled go (default: the inbox's failed/)."""
    max_input_megapixels: num(0.001, 10_000) = FolderConfig.max_input_megapixels
    """Larger inputs are refused before anything is paid."""
    max_output_megapixels: num(0.001, MAX_OUTPUT_MEGAPIXELS) = FolderConfig.max_output_megapixels
    """The largest output asked for (the upscaler's own limit is 100)."""
    oversize: one_of(*OVERSIZE) = FolderConfig.oversize
    """An output that would be too large: fail, or reduce the scale to fit."""
    jpeg_quality: num(1, 100, integer=True) = FolderConfig.jpeg_quality
    """Encoder quality when a JPEG output is encoded here."""
    webp_quality: num(1, 100, integer=True) = FolderConfig.webp_quality
    """Encoder quality when a WebP output is encoded here."""
    dpi: checked(Literal[DPI_POLICIES] | _PpiNumber, _dpi) = FolderConfig.dpi
    """The output's print resolution: keep the source's pixels per inch, scale them with the
    picture (same print size), or a fixed number."""


class FolderEntry(FolderSettings):
    """One watched inbox and where its results go."""

    name: Text = None
    """A name for logs, the page and hooks (default: the inbox folder's name)."""
    inbox: PathIn
    """The watched folder."""
    outbox: PathIn
    """Where the upscaled pictures are written."""


class LogSettings(Settings):
    """How the daemon logs."""

    format: one_of(*LOG_FORMATS) = "auto"
    """auto (console on a terminal, else JSON lines), json or console."""
    level: one_of(*LOG_LEVELS) = "info"
    """debug, info, warning or error."""


class FalSettings(Settings):
    """The Crystal Upscaler at fal: key, uploads, timeouts, prices and storage."""

    endpoint: Text = FalConfig.endpoint
    """The fal application called."""
    key_file: OptionalPath = FalConfig.key_file
    """A file holding the fal key (else $FAL_KEY or systemd's fal-key credential)."""
    upload: one_of(*UPLOAD_MODES) = FalConfig.upload
    """How inputs reach fal: auto, data-uri (inline) or cdn (fal's storage)."""
    timeout: num(10, 86_400) = FalConfig.timeout
    """Seconds one request may take at fal before it is given up."""
    price_per_megapixel: num(0, 100) = FalConfig.price_per_megapixel
    """Dollars per output megapixel, for the recorded cost and the budget."""
    result_format: one_of(*RESULT_FORMATS) = FalConfig.result_format
    """auto: ask fal for JPEG when the folder writes JPEG; png: always lossless PNG."""
    queue_ahead: num(0, 256, integer=True) = FalConfig.queue_ahead
    """Requests submitted early, just before a running one is expected to finish, beyond
    concurrency."""
    cdn_expiry: checked(_Seconds | None, _expiry,
                        schema=_Seconds | _ExpiryText) = FalConfig.cdn_expiry
    """How long fal keeps inputs and results on its CDN: never (fal's default), seconds, or
    a duration such as 1h, 1d or 7d."""
    cleanup: Flag = FalConfig.cleanup
    """Delete each request's payloads and result files at fal once its output is written."""
    store_payloads: Flag = FalConfig.store_payloads
    """Let fal store each request's input/output (needed to find a lost submission)."""


class RetrySettings(Settings):
    """How often, and how far apart, a job that failed for a passing reason is tried."""

    attempts: num(1, 1000, integer=True) = RetryConfig.attempts
    """Tries of a job before it fails for good."""
    backoff: num(0, 86_400) = RetryConfig.backoff
    """Seconds before the first retry; doubled each time."""
    max_backoff: num(0, 86_400) = RetryConfig.max_backoff
    """The longest wait between tries, in seconds."""


class BudgetSettings(Settings):
    """Limits on what is spent at fal."""

    daily_usd: optional_num(0, 1e9) = BudgetConfig.daily_usd
    """Stop submitting once today's estimated spend reaches this (left out: no limit)."""
    confirm_above_usd: optional_num(0, 1e9) = BudgetConfig.confirm_above_usd
    """A folder whose waiting pictures are estimated above this many dollars together holds
    them until approved (null: never ask)."""


class PixelSettings(Settings):
    """The pool that decodes and encodes pixels."""

    workers: num(1, 256, integer=True) = None
    """Decoding and encoding threads (default: the number of CPUs)."""
    memory_mb: num(32, 1_048_576) = 512.0
    """Estimated working memory all pixel work together may use; one larger job runs alone."""


class HttpSettings(Settings):
    """The local web page, /metrics and /healthz."""

    listen: checked(str, _listen_text, min_length=1) = DEFAULT_HTTP_LISTEN
    """HOST:PORT of the web page, /metrics and /healthz; off loopback it needs a token."""
    token: checked(str | None, optional(lambda v: nonempty_text(v).strip()),
                   min_length=1) = Field(None, repr=False)
    """The page's access token (secret); or token_file, or systemd's http-token credential."""
    token_file: OptionalPath = None
    """A file holding the page's access token."""
    thumbs_cache_mb: num(1, 1_000_000) = HttpConfig.thumbs_cache_mb
    """Thumbnails kept in state_dir/thumbs; the oldest are dropped beyond this."""
    allowed_hosts: checked(tuple[str, ...], each(host_entry)) = ()
    """Host names the page answers to besides loopback and the listen address."""
    trusted_proxies: checked(tuple[str, ...], each(proxy_entry)) = ()
    """Addresses or networks (CIDR) whose X-Forwarded-Host is believed."""


class ConfigFile(Settings):
    """crystal-watchd's configuration (YAML): the watched folders and how their pictures are
    upscaled. Relative paths are relative to the file."""

    model_config = ConfigDict(title="crystal-watchd configuration")

    backend: one_of(*BACKENDS) = "fal"
    """fal (Crystal Upscaler, needs a key) or local (Pillow, offline, for trying things)."""
    concurrency: num(1, 256, integer=True) = 4
    """Requests at the upscaler at once, all folders together."""
    state_dir: PathIn = None
    """Where the SQLite journal and the lock live (default: systemd's StateDirectory= or
    ~/.local/state/crystal-watchd)."""
    log: LogSettings = Field(default_factory=LogSettings)
    """How the daemon logs: format and level."""
    fal: FalSettings = Field(default_factory=FalSettings)
    """Settings of the fal backend (the Crystal Upscaler)."""
    retry: RetrySettings = Field(default_factory=RetrySettings)
    """Retries of jobs that failed for a passing reason."""
    defaults: FolderSettings = Field(default_factory=FolderSettings)
    """Settings every folder takes unless it sets its own."""
    folders: Annotated[list[FolderEntry], Field(min_length=1)]
    """The watched folders: each with inbox and outbox, and any per-folder setting."""
    rescan_interval: num(1, 86_400) = 300.0
    """Seconds between full safety rescans of every inbox."""
    shutdown_grace: num(0, 3600) = 20.0
    """Seconds in-flight jobs may take to finish on SIGTERM."""
    budget: BudgetSettings = Field(default_factory=BudgetSettings)
    """Limits on what is spent at fal: per day, and per folder before asking."""
    pixels: PixelSettings = Field(default_factory=PixelSettings)
    """The pool that decodes and encodes pixels: threads and memory."""
    http: HttpSettings | None = Field(default_factory=HttpSettings)
    """The local web page; null turns it off."""
    journal: checked(str | None, _journal_url,
                     pattern="^postgres(ql)?://") = Field(None, repr=False)
    """A postgresql:// URL of a journal several daemons share (left out: SQLite in
    state_dir). Never printed with its password."""
    journal_password_file: OptionalPath = None
    """A file holding the journal's password, kept out of the URL."""
    journal_lease: num(1, 3600) = 60.0
    """Seconds a daemon's claim on a job lasts without renewal (shared journal only)."""
    hooks: checked(list[HookSettings], lambda v: [] if v is None else v) = []
    """Commands and webhooks after each job."""
    hook_attempts: num(1, 1000, integer=True) = DEFAULT_HOOK_ATTEMPTS
    """Deliveries of a hook are tried this often before they give up."""
    notify: NotifySettings | None = None
    """Apprise notifications (left out: none)."""
