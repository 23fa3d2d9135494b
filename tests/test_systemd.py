"""sd_notify over a real AF_UNIX datagram socket, path-based and abstract."""

from __future__ import annotations

import asyncio
import os
import socket

from crystal_watchd.daemon import systemd as systemd_mod
from crystal_watchd.daemon.systemd import Notifier, StatusLine, status_text


def _socket(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(5)
    return sock


def test_messages_reach_a_real_notify_socket(tmp_path):
    """READY=1 with STATUS, STATUS alone and STOPPING=1 arrive as sent."""
    path = str(tmp_path / "notify.sock")
    with _socket(path) as sock:
        n = Notifier({"NOTIFY_SOCKET": path})
        assert n.ready("3 queued")
        assert sock.recv(4096) == b"READY=1\nSTATUS=3 queued"
        assert n.status("idle") and sock.recv(4096) == b"STATUS=idle"
        assert n.stopping() and sock.recv(4096) == b"STOPPING=1"
        assert n.reloading() and sock.recv(4096).startswith(b"RELOADING=1\nMONOTONIC_USEC=")


def test_abstract_socket_and_watchdog_interval():
    """An '@' address is the abstract namespace; WATCHDOG_USEC gives a half-period ping."""
    name = f"@crystal-watchd-test-{os.getpid()}"
    with _socket("\0" + name[1:]) as sock:
        n = Notifier({"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "4000000"})
        assert n.watchdog_interval == 2.0
        assert n.watchdog() and sock.recv(64) == b"WATCHDOG=1"


def test_no_socket_is_a_quiet_no_op():
    """Outside systemd nothing is sent and nothing fails."""
    n = Notifier({})
    assert not n.enabled and n.ready() is False and n.watchdog_interval is None
    other_pid = Notifier({"NOTIFY_SOCKET": "/nonexistent", "WATCHDOG_USEC": "1000000",
                          "WATCHDOG_PID": "1"})
    assert other_pid.watchdog_interval is None and other_pid.status("x") is False


def _drain(sock: socket.socket) -> list[bytes]:
    """Every datagram waiting on ``sock`` now."""
    sock.setblocking(False)
    got = []
    try:
        while True:
            got.append(sock.recv(4096))
    except BlockingIOError:
        return got
    finally:
        sock.setblocking(True)


def test_status_line_sends_the_latest_text_at_most_once_an_interval(tmp_path, monkeypatch):
    """Changes inside STATUS_MIN_INTERVAL are sent once, when it ends, with the text current
    then; after the daemon starts stopping (``muted``) no STATUS= is sent at all."""
    monkeypatch.setattr(systemd_mod, "STATUS_MIN_INTERVAL", 1.0)  # margin on a loaded machine
    path = str(tmp_path / "notify.sock")
    shown = {"text": "1 queued", "stopping": False}

    async def text() -> str:
        return shown["text"]

    async def main(sock: socket.socket) -> list[list[bytes]]:
        line = StatusLine(Notifier({"NOTIFY_SOCKET": path}), text,
                          muted=lambda: shown["stopping"])
        line.changed()  # the first change goes out at once
        await asyncio.sleep(0.05)
        first = _drain(sock)
        shown["text"] = "2 queued"
        line.changed()
        shown["text"] = "3 queued"
        line.changed()  # inside the interval: folded into the one pending
        await asyncio.sleep(0.05)
        inside = _drain(sock)
        await asyncio.sleep(1.2)
        after = _drain(sock)
        shown["stopping"] = True
        await asyncio.sleep(1.1)  # past the interval: the next change would go out at once
        line.changed()
        await asyncio.sleep(0.05)
        return [first, inside, after, _drain(sock)]

    with _socket(path) as sock:
        first, inside, after, stopped = asyncio.run(main(sock))
    assert first == [b"STATUS=1 queued"]
    assert inside == []
    assert after == [b"STATUS=3 queued"]
    assert stopped == []


def test_status_text_counts_every_folder_and_names_arriving_and_held_only_when_there():
    """The STATUS= line sums the journal's counts over folders; ``arriving`` and
    ``awaiting approval`` appear only when there are some."""
    counts = {"a": {"queued": 2, "done": 5, "failed": 1},
              "b": {"queued": 1, "done": 1, "arriving": 2, "awaiting_approval": 3}}
    assert status_text(counts, 4) == ("3 queued, 4 in flight, 6 done, 1 failed, 2 arriving, "
                                      "3 awaiting approval")
    assert status_text({"a": {"done": 1}}, 0) == "0 queued, 0 in flight, 1 done, 0 failed"
