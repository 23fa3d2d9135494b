"""The local web page, /metrics and /healthz (aiohttp, in the daemon's event loop)."""

from __future__ import annotations

from .. import logs
from .view import LiveState

__all__ = ["LiveState", "start"]


async def start(daemon):
    """Start the page for ``daemon`` if ``http`` is configured; returns the server or None.
    Raises ConfigError when the token file cannot be read."""
    if daemon.config.http is None:
        return None
    from .app import WebServer
    from .auth import read_token

    token = read_token(daemon.config.http)
    if token:
        logs.register_secret(token)
    server = WebServer(daemon, token)
    if not await server.start():
        return None
    return server
