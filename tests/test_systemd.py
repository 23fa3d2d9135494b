"""sd_notify over a real AF_UNIX datagram socket, path-based and abstract."""

from __future__ import annotations

import os
import socket

from crystal_watchd.daemon.systemd import Notifier


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
