"""structlog setup: JSON lines off a TTY (journald, files), a readable console on one.

Standard-library loggers (httpx, watchdog, fal_client) go through the same renderer, so one
process writes one format. Event names are stable snake_case; values are key=value pairs.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any, TextIO

import structlog

#: Anything shaped like a data URI or a fal key is cut out of every log line, whatever its
#: source (our own events and third-party loggers alike).
_DATA_URI = re.compile(r"data:[\w.+-]+/[\w.+-]+;base64,[A-Za-z0-9+/=]{16,}")
_SECRETS: list[str] = []


def register_secret(secret: str) -> None:
    """Never print ``secret``: every log line is scrubbed of it from now on."""
    if secret and secret not in _SECRETS:
        _SECRETS.append(secret)
        # the key id and the secret half are sensitive on their own too
        for part in secret.split(":"):
            if len(part) >= 8 and part not in _SECRETS:
                _SECRETS.append(part)


def scrub(text: str) -> str:
    text = _DATA_URI.sub("data:…(redacted)", text)
    for secret in _SECRETS:
        text = text.replace(secret, "***")
    return text


def _scrub_processor(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    for key, value in event_dict.items():
        if isinstance(value, str):
            event_dict[key] = scrub(value)
    return event_dict


def configure(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """Set up structlog and the stdlib root logger. Safe to call again (on reload)."""
    stream = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    renderer: Any = (structlog.processors.JSONRenderer() if use_json
                     else structlog.dev.ConsoleRenderer(colors=stream.isatty()))
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            _scrub_processor,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_crystal_watchd", False):
            root.removeHandler(old)
    handler._crystal_watchd = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    # Chatty libraries: their debug lines carry request URLs, not our business.
    # httpx logs every request (each status poll) at INFO.
    for name in ("httpx", "httpcore", "PIL", "asyncio"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    logging.getLogger("watchdog").setLevel(max(logging.INFO, root.level))


def get(name: str = "crystal_watchd") -> Any:
    return structlog.get_logger(name)
