"""Fetching a result: a bulk transfer, run on a thread with httpx's blocking client.

Streamed through the event loop (httpx's async client over anyio's TLS), every 16 KB TLS
record passes several layers of Python; httpx's blocking client reads the socket directly and
costs about half the CPU for the same bytes (1.8 MB: 21 ms against 11 ms; a 25 MB PNG result
saves over 0.1 s). So each download runs on a thread of its own (at most one per job at fal),
streams to disk in the file's own chunks, never whole in memory, and looks between chunks
whether the job was cancelled, so a shutdown never waits for a transfer to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from ..errors import FalUnreachable, PermanentJobError, RetryableError
from .answers import AWAY_STATUSES, retry_after

#: Timeouts of one download: connecting, and any one read or write.
TIMEOUT = httpx.Timeout(60, connect=15)
#: Answers for a result file that fal deleted for good (its CDN expiry passed): the request
#: is finished and its result JSON may still answer, but the file will never come back.
EXPIRED_STATUSES = (404, 410)
#: What a job whose result file expired fails with, in plain words.
EXPIRED_REASON = ("the result expired on fal before it could be fetched; a retry pays again")

#: Downloads at once; more wait their turn. Their own threads, so that a burst of results
#: never holds up the short jobs other parts of the daemon send to asyncio's default pool.
THREADS = 32


class _Stopped(Exception):
    """The awaiting job was cancelled: the thread stops reading."""


class _Transfer:
    """One download's link between the thread reading it and the job awaiting it."""

    def __init__(self) -> None:
        self.stopped = threading.Event()
        self.response: httpx.Response | None = None

    def stop(self) -> None:
        """The job was cancelled (a shutdown): end the transfer now. Shutting the socket down
        wakes a read waiting on a stalled connection, so the thread never holds up the
        process's exit; otherwise it ends at its next chunk."""
        self.stopped.set()
        response = self.response
        stream = response.extensions.get("network_stream") if response is not None else None
        sock = stream.get_extra_info("socket") if stream is not None else None
        if sock is not None:
            # already closed (OSError): the thread has ended or is ending
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # the blocked read returns at once


class Downloader:
    """Results fetched on threads, sharing one connection pool."""

    def __init__(self) -> None:
        self._client = httpx.Client(timeout=TIMEOUT, follow_redirects=True)
        self._threads = ThreadPoolExecutor(THREADS, thread_name_prefix="download")

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    async def fetch(self, url: str, target: Path) -> tuple[int, str | None]:
        """Stream ``url`` into ``target``; (bytes received, the declared Content-Length).
        Raises PermanentJobError (kind ``result_expired``) when the file is gone for good
        (404/410), RetryableError for another answer than 200 or a transfer that broke off;
        either way, and when cancelled, ``target`` is removed."""
        transfer = _Transfer()
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._threads, self._fetch, url, target, transfer)
        except asyncio.CancelledError:
            transfer.stop()
            target.unlink(missing_ok=True)  # the thread removes it too, once it has stopped
            raise

    def _fetch(self, url: str, target: Path, transfer: _Transfer) -> tuple[int, str | None]:
        received = 0
        try:
            with self._client.stream("GET", url) as response:
                transfer.response = response
                if response.status_code in EXPIRED_STATUSES:
                    raise PermanentJobError(f"{EXPIRED_REASON} (the file answered "
                                            f"{response.status_code})", kind="result_expired")
                if response.status_code in AWAY_STATUSES:
                    raise FalUnreachable(f"download of the result returned "
                                         f"{response.status_code}", kind="download",
                                         delay=retry_after(response.headers))
                if response.status_code != 200:
                    raise RetryableError(f"download of the result returned "
                                         f"{response.status_code}", kind="download",
                                         delay=retry_after(response.headers))
                declared = response.headers.get("content-length")
                with open(target, "wb") as fh:
                    for chunk in response.iter_raw():
                        if transfer.stopped.is_set():
                            raise _Stopped
                        fh.write(chunk)
                        received += len(chunk)
        except (RetryableError, PermanentJobError):
            raise
        except Exception as exc:
            target.unlink(missing_ok=True)
            if not isinstance(exc, (httpx.HTTPError, _Stopped)) and not transfer.stopped.is_set():
                raise  # a bug, not the network: let it be seen
            if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
                raise FalUnreachable(f"download of the result failed: cannot connect "
                                     f"({type(exc).__name__})", kind="download") from None
            raise RetryableError(f"download of the result broke off after {received} bytes "
                                 f"({type(exc).__name__})", kind="download") from None
        return received, declared
