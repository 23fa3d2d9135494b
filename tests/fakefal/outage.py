"""The fake's outage mode: fal, or the way to it, away for a while.

``FakeFal.outage.begin("refused")`` resets every new connection before the TLS handshake
(the client sees a connection it cannot make) and closes the connections already open;
``begin("503")`` answers every request on every endpoint 503 (with ``x-fal-request-id``,
so it reaches the caller as fal's own would), optionally with ``Retry-After``. ``end()``
brings fal back. Either way every connection attempt and request is kept in ``log`` as
(what, monotonic time): the load an outage causes is counted from the fake's own side.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
import time
import uuid
from typing import Any


class Outage:
    def __init__(self) -> None:
        self.mode: str | None = None
        self.retry_after: float | None = None
        #: (what, monotonic): "refused" connections, and "METHOD path" of requests seen.
        self.log: list[tuple[str, float]] = []
        self.began: float | None = None
        self.ended: float | None = None
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()

    def begin(self, mode: str, retry_after: float | None = None) -> None:
        assert mode in ("refused", "503")
        self.mode, self.retry_after = mode, retry_after
        self.began, self.ended = time.monotonic(), None
        if mode == "refused":
            with self._lock:
                sockets, self._open = list(self._open), set()
            for sock in sockets:
                _cut(sock)

    def end(self) -> None:
        self.mode, self.ended = None, time.monotonic()

    def during(self, start: float | None = None, end: float | None = None) -> list[str]:
        """What reached the fake between ``start`` and ``end`` (default: the last outage)."""
        start = self.began if start is None else start
        end = (self.ended or time.monotonic()) if end is None else end
        return [what for what, at in list(self.log) if start <= at <= end]

    # -- called by the server ------------------------------------------------------------------

    def accepted(self, sock: socket.socket) -> bool:
        """A new connection: False (and reset) while connections are refused."""
        if self.mode == "refused":
            self.log.append(("refused", time.monotonic()))
            _reset(sock)
            return False
        with self._lock:
            self._open.add(sock)
        return True

    def request(self, handler: Any) -> bool:
        """A request parsed: True when the outage answered it (503) or dropped it."""
        self.log.append((f"{handler.command} {handler.path.split('?')[0]}", time.monotonic()))
        if self.mode == "refused":
            handler.close_connection = True
            _reset(handler.connection)
            return True
        if self.mode != "503":
            return False
        payload = json.dumps({"detail": "Service Unavailable",
                              "error_type": "runner_scheduling_failure"}).encode()
        handler.close_connection = True
        handler.send_response(503)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        handler.send_header("x-fal-request-id", str(uuid.uuid4()))
        handler.send_header("Connection", "close")
        if self.retry_after is not None:
            handler.send_header("Retry-After", f"{self.retry_after:g}")
        handler.end_headers()
        handler.wfile.write(payload)
        return True


def _cut(sock: socket.socket) -> None:
    """End a connection another thread is serving: its reads see the end at once."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _reset(sock: socket.socket) -> None:
    """Close with an RST, as a refused or dropped connection looks to the client."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()
