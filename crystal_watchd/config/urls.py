"""Addresses in the settings: the page's listen address, whether a host is loopback, and a
journal URL fit to print (its password masked).
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .yamldoc import nonempty_text

DEFAULT_HTTP_LISTEN = "127.0.0.1:8765"


def listen(value: Any) -> tuple[str, int]:
    """``HOST:PORT`` (an IPv6 address in brackets) → (host, port)."""
    text = nonempty_text(value).strip()
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"must be HOST:PORT, like {DEFAULT_HTTP_LISTEN} or [::1]:8765, "
                         f"not {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not 0 <= int(port) <= 65535:
        raise ValueError(f"port must be from 0 to 65535, not {port}")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


def mask_url(url: str) -> str:
    """A journal URL fit to print: any password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))
