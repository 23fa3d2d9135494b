"""What fal (or something in front of it) says when it refuses: its ``detail`` in plain words,
and how long it asks us to wait."""

from __future__ import annotations

import re
from typing import Any

import httpx

#: Statuses that say fal (or something in front of it) is away, not that it judged the call.
AWAY_STATUSES = frozenset({429, 502, 503, 504})
#: How much of an HTML/XML error page's text a reason keeps.
MARKUP_CHARS = 160


def plain_detail(detail: Any) -> str:
    """fal's ``detail`` (text, or a list of {loc, msg, type}) in plain words. An error page
    from something in front of fal (HTML or XML instead of JSON) becomes its title or first
    words, never the whole page."""
    if isinstance(detail, str) and detail.lstrip().startswith("<"):
        title = re.search(r"<title[^>]*>(.*?)</title>", detail, re.I | re.S)
        text = title.group(1) if title else re.sub(r"<[^>]*>", " ", detail)
        text = " ".join(text.split())
        return (text[:MARKUP_CHARS] + "…" if len(text) > MARKUP_CHARS else text) or \
            "an error page without text"
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict):
                loc = ".".join(str(x) for x in item.get("loc", []) if x != "body")
                msg = item.get("msg") or item.get("type") or "invalid"
                parts.append(f"{loc}: {msg}" if loc else str(msg))
            else:
                parts.append(str(item))
        return "; ".join(parts) or "rejected"
    return str(detail)


def retry_after(headers: dict[str, str] | httpx.Headers | None) -> float | None:
    value = (headers or {}).get("retry-after") or (headers or {}).get("Retry-After")
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
