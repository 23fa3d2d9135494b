"""The fake's status stream: ``GET {status_url}/stream``, server-sent events.

One ``data:`` event per state change (the same JSON as a status poll), a comment line
(``: ping``) every ``Strict.keepalive`` seconds (15, as fal's docs say) while nothing
changes, and the stream ends after COMPLETED.
``Faults.cut_stream`` cuts a stream after its first event (``cut_streams_first``: the first
N streams opened); ``Faults.silent_stream`` keeps
it open without a word until the request is done.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

TICK = 0.01


def serve(handler: Any, status_path: str, query: dict[str, list[str]]) -> None:
    fake = handler.server_fake
    match = re.fullmatch(r"/[^/]+/[^/]+/requests/([^/]+)/status", status_path)
    if handler._faulted("stream") or not handler._authorised():
        return
    req = fake.requests.get(match.group(1)) if match else None
    if req is None or fake.expired(req):
        handler._send(404, {"detail": "Request not found"})
        return
    want_logs = query.get("logs", ["0"])[0].lower() in ("1", "true")
    with fake._lock:
        cut = fake.faults.cut_streams_first > 0
        fake.faults.cut_streams_first -= int(cut)
    cut = cut or fake.chance(fake.faults.cut_stream)
    handler.send_response(200)
    handler.send_header("Content-Type", "text/event-stream")
    handler.send_header("Cache-Control", "no-cache")
    handler.send_header("Connection", "close")
    handler.send_header("x-fal-request-id", str(uuid.uuid4()))
    handler.end_headers()
    handler.close_connection = True
    last_status, last_sent = None, time.monotonic()
    try:
        while True:
            body = fake.status_body(req, want_logs, status_path.removesuffix("/status"))
            now = time.monotonic()
            if fake.faults.silent_stream:
                if body["status"] == "COMPLETED":
                    return
            elif body["status"] == last_status:
                if now - last_sent >= fake.strict.keepalive:
                    handler.wfile.write(b": ping\n\n")
                    handler.wfile.flush()
                    last_sent = now
            else:
                handler.wfile.write(f"data: {json.dumps(body)}\n\n".encode())
                handler.wfile.flush()
                last_status, last_sent = body["status"], now
                if body["status"] == "COMPLETED":
                    return
                if cut:
                    handler.connection.close()  # cut mid-stream, no proper end
                    return
            time.sleep(TICK)
    except OSError:
        return  # the client went away
