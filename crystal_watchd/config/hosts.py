"""Which ``Host`` names the web page answers to.

A browser sends the name it was pointed at. A web site that re-points its own name at
127.0.0.1 (DNS rebinding) makes the browser send ``Host: that-site.example:8765`` to the
daemon, and to the browser the answer is then that site's own: its script could read the job
list and the pictures, and the Origin check agrees with the Host. So the page answers only to
its own names: the loopback names, the listen address with the port it listens on, and the
names in ``http.allowed_hosts``. A name without a port is accepted with any port (or none,
as a proxy on port 80/443 sends it); ``name:port`` only with that port.

The loopback names take any port: a rebinding site can only make the browser send *its own*
name, never ``localhost``, and a different port there means a forwarded one (an SSH tunnel,
a container's published port), which is the user's own doing.

``X-Forwarded-Host`` is believed only from a peer in ``http.trusted_proxies``: anyone else
could send it to dress a foreign Host up as one of ours.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
#: A Host header longer than this is not a name of ours (and is cut short in the log).
MAX_HOST = 255


def split(value: str) -> tuple[str, int | None]:
    """``name[:port]`` (an IPv6 address in brackets) → (lower-case name, port or None).
    Raises ValueError for anything that is not a host."""
    text = value.strip().lower()
    if not text or len(text) > MAX_HOST or any(c in text for c in "/@?#\\ \t"):
        raise ValueError(f"is not a host name or HOST:PORT: {value!r}")
    port: str | None = None
    if text.startswith("["):
        name, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"is not a host name or HOST:PORT: {value!r}")
        port = rest[1:] if rest else None
        ipaddress.IPv6Address(name)  # ValueError for junk in brackets
    elif text.count(":") > 1:
        name = text  # a bare IPv6 address
        ipaddress.IPv6Address(name)
    else:
        name, sep, after = text.partition(":")
        port = after if sep else None
    if port is not None and (not port.isdigit() or not 0 < int(port) <= 65535):
        raise ValueError(f"has a bad port: {value!r}")
    name = name.rstrip(".")  # "localhost." is the same name
    if not name:
        raise ValueError(f"is not a host name or HOST:PORT: {value!r}")
    return name, int(port) if port is not None else None


def host_entry(value: Any) -> str:
    """A config entry of ``http.allowed_hosts``, checked and written the one way."""
    if not isinstance(value, str):
        raise ValueError(f"must be a host name or HOST:PORT, not {value!r}")
    if "://" in value:
        raise ValueError(f"must be a host name or HOST:PORT without a scheme, like "
                         f"photos.lan or photos.lan:8765, not {value!r}")
    name, port = split(value)
    shown = f"[{name}]" if ":" in name else name
    return shown if port is None else f"{shown}:{port}"


def proxy_entry(value: Any) -> str:
    """A config entry of ``http.trusted_proxies``: an address or a network (CIDR)."""
    if not isinstance(value, str):
        raise ValueError(f"must be an IP address or network like 10.0.0.0/8, not {value!r}")
    try:
        return str(ipaddress.ip_network(value.strip(), strict=False))
    except ValueError:
        raise ValueError(f"must be an IP address or network like 10.0.0.0/8, "
                         f"not {value!r}") from None


@dataclass(frozen=True)
class HostCheck:
    """The page's own names, once the port it listens on is known."""

    #: (name, port); port None: any port.
    names: frozenset[tuple[str, int | None]]
    proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def build(cls, listen_host: str, port: int, allowed: tuple[str, ...] = (),
              proxies: tuple[str, ...] = ()) -> HostCheck:
        names: set[tuple[str, int | None]] = {(name, None) for name in LOOPBACK_NAMES}
        names.add((listen_host.lower(), port))
        names.update(split(entry) for entry in allowed)
        return cls(frozenset(names), tuple(ipaddress.ip_network(p) for p in proxies))

    def shown(self) -> list[str]:
        """The names, as a person would type them (for ``check`` and the log)."""
        out = []
        for name, port in sorted(self.names, key=lambda np: (np[0], np[1] or 0)):
            if port is not None and (name, None) in self.names:
                continue  # already taken with any port
            host = f"[{name}]" if ":" in name else name
            out.append(host if port is None else f"{host}:{port}")
        return out

    def trusted(self, peer: str | None) -> bool:
        if not peer or not self.proxies:
            return False
        try:
            address = ipaddress.ip_address(peer.split("%", 1)[0])
        except ValueError:
            return False
        return any(address in network for network in self.proxies)

    def effective(self, host: str | None, forwarded: str | None, peer: str | None) -> str | None:
        """The host the browser asked for: the forwarded one from a trusted proxy, else the
        Host header (None when there is none)."""
        if forwarded and self.trusted(peer):
            return forwarded.split(",", 1)[0].strip()
        return host

    def allows(self, host: str | None) -> bool:
        if not host:
            return False
        try:
            name, port = split(host)
        except ValueError:
            return False
        return (name, port) in self.names or (name, None) in self.names
