"""Who may look and who may act: the token, the session cookie and cross-site protection.

- With ``http.token`` (or token_file, or the systemd credential ``http-token``) every page
  needs ``Authorization: Bearer TOKEN`` or the session cookie the login form sets; anything
  else gets 401. Without a token the page is only ever on a loopback address
  (config/build.py refuses anything else).
- Every POST needs the session's form token and, when the browser sends one, an Origin (or
  Referer) naming this very host; otherwise 403. The cookie is HttpOnly and SameSite=Strict.
"""

from __future__ import annotations

import hmac
import os
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from ..config import HTTP_TOKEN_CREDENTIAL, HttpConfig
from ..errors import ConfigError

COOKIE = "crystal_watchd_session"
FORM_FIELD = "form_token"
MAX_SESSIONS = 1000
#: Reachable without the token: the health check (containers call it without credentials),
#: the login form and the stylesheet/script it uses.
PUBLIC = ("/healthz", "/login", "/static/")


def read_token(cfg: HttpConfig, environ: dict[str, str] | None = None) -> str | None:
    """``http.token``, else ``http.token_file``, else the credential ``http-token``."""
    env = os.environ if environ is None else environ
    if cfg.token:
        return cfg.token
    path: Path | None = cfg.token_file
    if path is None and env.get("CREDENTIALS_DIRECTORY"):
        path = Path(env["CREDENTIALS_DIRECTORY"]) / HTTP_TOKEN_CREDENTIAL
        if not path.is_file():
            return None
    if path is None:
        return None
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"http.token_file {path} cannot be read: "
                          f"{exc.strerror or exc}") from None
    if not token:
        raise ConfigError(f"http token file {path} is empty")
    return token


@dataclass
class Session:
    form_token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    signed_in: bool = False
    last_seen: float = field(default_factory=time.monotonic)


class Sessions:
    """In memory: a restart signs everyone out, which is fine for a local page."""

    def __init__(self) -> None:
        self._by_id: OrderedDict[str, Session] = OrderedDict()

    def get(self, session_id: str | None) -> Session | None:
        session = self._by_id.get(session_id or "")
        if session is not None:
            self._by_id.move_to_end(session_id)
            session.last_seen = time.monotonic()
        return session

    def new(self, signed_in: bool = False) -> tuple[str, Session]:
        session_id = secrets.token_urlsafe(32)
        self._by_id[session_id] = session = Session(signed_in=signed_in)
        while len(self._by_id) > MAX_SESSIONS:
            self._by_id.popitem(last=False)
        return session_id, session

    def drop(self, session_id: str | None) -> None:
        self._by_id.pop(session_id or "", None)


def token_matches(token: str | None, offered: str | None) -> bool:
    return bool(token and offered) and hmac.compare_digest(token.encode(), offered.encode())


def bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def same_origin(request: web.Request, host: str) -> bool:
    """The Origin (or, lacking it, the Referer) names ``host``, the one the request was sent
    to (already checked to be one of ours, see config/hosts.py).
    Neither header: not a cross-site form post by a current browser; the form token and
    the SameSite cookie still apply."""
    source = request.headers.get("Origin") or request.headers.get("Referer")
    if not source:
        return True
    if source == "null":
        return False
    return urlsplit(source).netloc.lower() == host.lower()


def is_public(path: str) -> bool:
    return any(path == p or (p.endswith("/") and path.startswith(p)) for p in PUBLIC)


def set_cookie(request: web.Request, response: web.StreamResponse, session_id: str) -> None:
    secure = request.secure or request.headers.get("X-Forwarded-Proto", "") == "https"
    response.set_cookie(COOKIE, session_id, httponly=True, samesite="Strict", secure=secure,
                        path="/")


def form_token_ok(session: Session | None, offered: str | None) -> bool:
    return session is not None and token_matches(session.form_token, offered)


def local_target(target: Any) -> str:
    """Only a path on this site is a place to go after signing in."""
    text = str(target or "/")
    # "//host" and "/\host" are other sites to a browser
    return text if text.startswith("/") and not text.startswith("//") and "\\" not in text \
        else "/"
