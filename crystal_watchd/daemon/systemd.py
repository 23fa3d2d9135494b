"""sd_notify without a dependency: a datagram to ``$NOTIFY_SOCKET`` (abstract sockets too).

Outside systemd (no NOTIFY_SOCKET) every call is a no-op that returns False.

``StatusLine`` is the daemon's side: the counts it tells and how often; ``Service`` builds
it with the notifier and a function returning the line to show.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping

from .. import logs

log = logs.get(__name__)
STATUS_MIN_INTERVAL = 2.0  # seconds; STATUS= is sent at most this often


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None):
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            address = "\0" + address[1:]  # abstract namespace
        self._address = address or None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        watchdog_for_us = not pid or pid == str(os.getpid())
        #: Seconds between WATCHDOG=1 pings (half the timeout), or None if not asked for.
        self.watchdog_interval = (int(usec) / 2e6) if usec.isdigit() and watchdog_for_us else None

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, *fields: str) -> bool:
        if self._address is None:
            return False
        message = "\n".join(fields).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self._address)
                sock.sendall(message)
        except OSError:
            return False  # systemd went away; nothing useful to do about it
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def reloading(self) -> bool:
        # systemd ≥ 253 (Type=notify-reload) wants a monotonic timestamp with RELOADING=1.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")


class StatusLine:
    """What the service manager is told of the running daemon: READY=1 after a reload,
    STATUS= as counts change (at most every STATUS_MIN_INTERVAL), watchdog pings.

    Given the notifier, ``text`` (the line to show, read from the journal when it is sent)
    and ``muted`` (true once the daemon stops: no STATUS= after STOPPING=1). Owns only its
    own timing and the tasks telling the service manager.
    """

    def __init__(self, notifier: Notifier, text: Callable[[], Awaitable[str]],
                 muted: Callable[[], bool]):
        self.notifier = notifier
        self._text = text
        self._muted = muted
        self._last_status = 0.0
        self._pending = False
        self._telling: set[asyncio.Task] = set()

    def tell_ready(self) -> None:
        """READY=1 with the current counts, after a reload (read from the journal first)."""
        self._tell(self.notifier.ready)

    def _tell(self, say: Callable[[str], object]) -> None:
        """Give the service manager the status line, once the journal has given the counts
        (from a synchronous caller: a signal handler, a timer)."""
        async def tell() -> None:
            try:
                say(await self._text())
            except Exception as exc:  # noqa: BLE001 - the service manager gets the next one
                log.warning("status_not_sent", error=str(exc))
        task = asyncio.get_running_loop().create_task(tell())
        self._telling.add(task)  # a task nobody holds may be collected before it runs
        task.add_done_callback(self._telling.discard)

    async def watchdog_pings(self) -> None:
        # From the event loop on purpose: if the loop hangs, the pings stop and systemd
        # restarts us.
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(self.notifier.watchdog_interval or 10)

    def changed(self) -> None:
        """STATUS= as counts change, at most every STATUS_MIN_INTERVAL; a change inside the
        interval is sent when it ends, so the last word is always current."""
        if not self.notifier.enabled or self._pending:
            return
        wait = self._last_status + STATUS_MIN_INTERVAL - time.monotonic()
        if wait > 0:
            self._pending = True
            asyncio.get_running_loop().call_later(wait, self._send_status)
            return
        self._send_status()

    def _send_status(self) -> None:
        self._pending = False
        self._last_status = time.monotonic()
        if not self._muted():
            self._tell(self.notifier.status)


def status_text(counts: Mapping[str, Mapping[str, int]], in_flight: int) -> str:
    """The STATUS= line: jobs by state over every folder (``journal.counts()``), and the
    number of jobs this daemon is running."""
    total = {s: sum(c.get(s, 0) for c in counts.values())
             for s in ("queued", "done", "failed", "arriving")}
    held = sum(c.get("awaiting_approval", 0) for c in counts.values())
    return (f"{total['queued']} queued, {in_flight} in flight, "
            f"{total['done']} done, {total['failed']} failed"
            + (f", {total['arriving']} arriving" if total["arriving"] else "")
            + (f", {held} awaiting approval" if held else ""))
