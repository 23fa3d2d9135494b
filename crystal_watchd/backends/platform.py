"""A small client for fal's platform API: the account's request list and payload deletion.

The request list is how a submission whose answer never arrived is found again (its
``json_input`` names the input), and payload deletion is how a finished request's stored
input/output JSON and result files are removed from fal.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

import httpx

PLATFORM_URL = "https://api.fal.ai/v1"
#: The most the request list returns per page.
PAGE_LIMIT = 100


class PlatformRefused(Exception):
    """The key may not make this call (401/403): fal's answer, in plain words."""


class PlatformError(Exception):
    """A transient failure (network, 429, 5xx): try again later."""


def identity_of(image_url: str) -> str:
    """What identifies a submission at fal: a storage upload's URL is unique per upload; an
    inline (data URI) input is named by the digest of the exact URI string, which is all
    the journal needs to keep of it."""
    if image_url.startswith("data:"):
        return "sha256:" + hashlib.sha256(image_url.encode()).hexdigest()
    return image_url


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat().replace("+00:00", "Z")


def parse_time(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


class Platform:
    def __init__(self, key: str, environ: dict[str, str] | None = None):
        env = os.environ if environ is None else environ
        self.base = (env.get("FAL_PLATFORM_URL") or PLATFORM_URL).rstrip("/")
        # Same TLS and proxy behaviour as fal-client's own httpx client (SSL_CERT_FILE,
        # HTTPS_PROXY); the key only ever travels in this header.
        self._http = httpx.AsyncClient(headers={"Authorization": f"Key {key}"},
                                       timeout=httpx.Timeout(30, connect=15))

    def __repr__(self) -> str:
        return f"Platform(base={self.base!r}, key=***)"

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, self.base + path, **kwargs)
        except httpx.HTTPError as exc:
            raise PlatformError(f"network error ({type(exc).__name__})") from None
        if response.status_code in (401, 403):
            raise PlatformRefused(f"{response.status_code}: {_detail(response)}")
        if response.status_code >= 300:
            raise PlatformError(f"{response.status_code}: {_detail(response)}")
        return response

    async def requests(self, endpoint: str, since: float) -> AsyncIterator[dict[str, Any]]:
        """Every request to ``endpoint`` sent since ``since`` (Unix time), with payloads."""
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"endpoint_id": endpoint, "expand": "payloads",
                                      "start": iso(since), "limit": PAGE_LIMIT}
            if cursor:
                params["cursor"] = cursor
            response = await self._call("GET", "/models/requests/by-endpoint", params=params)
            try:
                page = response.json()
                items = page.get("items") or []
            except (ValueError, AttributeError):
                raise PlatformError("the request list is not JSON") from None
            for item in items:
                if isinstance(item, dict):
                    yield item
            cursor = page.get("next_cursor")
            if not page.get("has_more") or not cursor:
                return

    async def find(self, endpoint: str, identity: str, sent_at: float, skew: float,
                   arguments: dict[str, Any]) -> str | None:
        """The request id of the submission with this input identity, sent within ``skew``
        seconds of ``sent_at`` (clocks differ) with the same scale and creativity."""
        async for item in self.requests(endpoint, sent_at - skew):
            sent = parse_time(item.get("sent_at"))
            if sent is not None and not sent_at - skew <= sent <= sent_at + skew:
                continue
            given = item.get("json_input")
            if not isinstance(given, dict) or not isinstance(given.get("image_url"), str):
                continue
            if identity_of(given["image_url"]) != identity:
                continue
            if any(given.get(k) != arguments.get(k) for k in ("scale_factor", "creativity")):
                continue
            if isinstance(item.get("request_id"), str):
                return item["request_id"]
        return None

    async def delete_payloads(self, request_id: str) -> list[str]:
        """Delete a request's stored payloads and result files; the links fal could not
        delete (an empty list when all went)."""
        response = await self._call("DELETE", f"/models/requests/{request_id}/payloads",
                                    headers={"Idempotency-Key": f"delete-{request_id}"})
        try:
            results = response.json().get("cdn_delete_results") or []
        except (ValueError, AttributeError):
            return []
        return [str(r.get("link")) for r in results if isinstance(r, dict) and r.get("exception")]


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    return str(detail or response.text[:200] or response.reason_phrase)
