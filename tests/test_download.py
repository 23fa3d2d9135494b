"""Result downloads on their own threads: what arrives is streamed to disk, what breaks off or
is refused is a retryable error with the file removed, and a cancelled download (a shutdown)
ends its thread at once, even on a connection that has stalled."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

from crystal_watchd.backends.download import Downloader
from crystal_watchd.errors import RetryableError


class OneShotServer:
    """A loopback HTTP server that answers one request with ``reply`` and then, if
    ``stall``, keeps the connection open without sending more."""

    def __init__(self, reply: bytes, stall: bool = False):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/result.png"
        self.done = threading.Event()
        self.reply, self.stall = reply, stall
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(self.reply)
            if self.stall:
                self.done.wait(30)


def body(status: str, data: bytes, **headers: str) -> bytes:
    head = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
    return f"HTTP/1.1 {status}\r\nContent-Length: {len(data)}\r\n{head}\r\n".encode() + data


def test_a_whole_result_is_streamed_to_disk(tmp_path):
    """The bytes served arrive in the file, with their count and the declared length."""
    data = bytes(range(256)) * 4000
    server = OneShotServer(body("200 OK", data))
    downloads = Downloader()
    try:
        received, declared = asyncio.run(downloads.fetch(server.url, tmp_path / "r"))
    finally:
        downloads.close()
    assert (received, declared) == (len(data), str(len(data)))
    assert (tmp_path / "r").read_bytes() == data


def test_a_refused_or_broken_download_is_retryable_and_leaves_no_file(tmp_path):
    """A 503 with Retry-After is a retryable download error carrying the delay; a body cut
    off before its declared length is one too; neither leaves a file behind."""
    downloads = Downloader()
    try:
        refused = OneShotServer(body("503 Service Unavailable", b"busy", retry_after="7"))
        with pytest.raises(RetryableError) as failed:
            asyncio.run(downloads.fetch(refused.url, tmp_path / "a"))
        assert failed.value.kind == "download" and failed.value.delay == 7
        assert "503" in failed.value.reason
        cut = OneShotServer(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 500)
        with pytest.raises(RetryableError, match="broke off after 500 bytes"):
            asyncio.run(downloads.fetch(cut.url, tmp_path / "b"))
    finally:
        downloads.close()
    assert list(tmp_path.iterdir()) == []


def test_cancelling_a_stalled_download_ends_its_thread_at_once(tmp_path):
    """A download whose server stops sending mid-body is cancelled (as at shutdown): the
    awaiting task ends, the reading thread ends within a second instead of waiting out the
    read timeout (which would hold up the process's exit), and the partial file is gone."""
    server = OneShotServer(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 1000,
                           stall=True)
    downloads = Downloader()
    target = tmp_path / "stalled"

    async def cancel_midway() -> None:
        task = asyncio.create_task(downloads.fetch(server.url, target))
        deadline = time.monotonic() + 10
        while not target.exists() and time.monotonic() < deadline:  # the body has begun
            await asyncio.sleep(0.02)
        assert target.exists(), "the download never started"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    try:
        asyncio.run(cancel_midway())
        readers = [t for t in threading.enumerate() if t.name.startswith("download")]
        downloads.close()  # an idle reader leaves at once; one stuck in a read would not
        for reader in readers:
            reader.join(1.0)
        assert readers and not any(t.is_alive() for t in readers)
        assert not target.exists()
    finally:
        server.done.set()
