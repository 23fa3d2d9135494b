"""The fake's platform API (``FAL_PLATFORM_URL`` = ``{base_url}/v1``).

``GET /v1/models/requests/by-endpoint`` lists finished requests (``Faults.list_delay``
seconds after they finished, the worst case fal's docs leave open), newest first, with
``cursor``/``has_more``/``next_cursor`` paging and, with ``expand=payloads``, ``json_input``
and ``json_output`` unless the request was sent with ``X-Fal-Store-IO: 0`` or its payloads
were deleted. ``DELETE /v1/models/requests/{id}/payloads`` deletes a request's payloads
and result files (an ADMIN-scope key at fal: ``Faults.delete_forbidden`` answers 403).
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone
from typing import Any

from . import strict as _strict

PREFIX = "/v1/"
LIMIT_MAX = 100


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat().replace("+00:00", "Z")


def _since(value: str | None) -> float:
    if not value:
        return time.time() - 86_400
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def route(handler: Any, method: str, path: str, query: dict[str, list[str]]) -> None:
    fake = handler.server_fake
    deleting = re.fullmatch(r"/v1/models/requests/([^/]+)/payloads", path)
    if method == "DELETE" and deleting:
        if handler._faulted("delete") or not handler._authorised():
            return
        if fake.faults.delete_forbidden:
            handler._send(403, {"detail": "This operation requires an ADMIN key scope"})
            return
        _delete(handler, deleting.group(1))
    elif method == "GET" and path == "/v1/models/requests/by-endpoint":
        if handler._faulted("list") or not handler._authorised():
            return
        if fake.faults.list_forbidden:
            handler._send(403, {"detail": "Key does not have access to this resource"})
            return
        _list(handler, query)
    else:
        handler._send(404, {"detail": "Not found"})


def _item(fake: Any, req: Any, payloads: bool) -> dict[str, Any]:
    offset = req.sent_wall - req.submitted  # monotonic → wall clock
    item: dict[str, Any] = {
        "request_id": req.id, "endpoint_id": req.app, "sent_at": _iso(req.sent_wall),
        "started_at": _iso(req.start + offset), "ended_at": _iso(req.completed_at + offset),
        "status_code": {"ok": 200, "rejected": 422}.get(req.outcome, 500),
        "duration": round(req.completed_at - req.start, 3)}
    if payloads and req.stored and not req.payloads_deleted:
        item["json_input"] = _strict.echoed(fake.strict, req.arguments)
        item["json_output"] = {k: v for k, v in (req.result or {}).items()
                               if not k.startswith("_")}
    return item


def _list(handler: Any, query: dict[str, list[str]]) -> None:
    fake = handler.server_fake
    one = {k: v[0] for k, v in query.items()}
    fake.settle_runs()
    now, since = time.monotonic(), _since(one.get("start"))
    with fake._lock:
        fake.list_calls.append(dict(one))
        shown = [r for r in fake.requests.values()
                 if r.completed_at is not None and r.outcome is not None
                 and now - r.completed_at >= fake.faults.list_delay
                 and r.app == one.get("endpoint_id") and r.sent_wall >= since]
    shown.sort(key=lambda r: r.completed_at, reverse=True)  # sort_by=ended_at
    offset = int(one.get("cursor") or 0)
    limit = min(int(one.get("limit") or 50), LIMIT_MAX)
    page = shown[offset:offset + limit]
    more = offset + limit < len(shown)
    handler._send(200, {"items": [_item(fake, r, one.get("expand") == "payloads") for r in page],
                        "has_more": more, "next_cursor": str(offset + limit) if more else None})


def _delete(handler: Any, request_id: str) -> None:
    fake = handler.server_fake
    req = fake.requests.get(request_id)
    if req is None:
        handler._send(404, {"detail": "Request not found"})
        return
    results = []
    with fake._lock:
        req.payloads_deleted = True
        for image in (req.result or {}).get("images", []):
            url = image if isinstance(image, str) else image["url"]
            fake.files.pop(url.rsplit("/", 1)[-1], None)
            results.append({"link": url, "exception": None})
        fake.deleted.append({"request_id": request_id, "at": time.monotonic()})
    handler._send(200, {"cdn_delete_results": results})
