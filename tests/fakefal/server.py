"""A fake of fal's HTTP API on loopback, over TLS, for the real ``fal_client`` to talk to.

It serves the queue (submit, status, result, cancel), the storage token and CDN upload that
``upload_file`` uses (plus the GCS-style fallback), and file downloads, all on one port.
It really resizes the input with Pillow, so pixel sizes can be asserted, answers with
``width``/``height`` null like the real service, and keeps a ledger of billed requests so a
test can assert "submitted exactly once".

Time is modelled, not threaded: a request's start and end are fixed at submit from the
number of runners and the latency, and its status is a function of the clock.

Fault knobs (``Faults``) inject, per endpoint, 429s, 5xx (with ``x-fal-request-id`` so they
reach the caller like fal's own), dropped connections, slow answers; truncated downloads;
failed runs (COMPLETED with ``error``); expired results; and a locked account (403); and
submissions accepted whose reply is lost. ``FakeFal.strict`` (strict.py) adds what fal does
as documented where the docs leave the worst case open: gateway 504s after acceptance,
cancels that lose the race or answer ALREADY_COMPLETED as a 409, keep-alive comments on the
status stream, result files that expire, and data URIs echoed re-encoded. The status
stream and the platform API (request list, payload deletion) are in status_stream.py and
platform_api.py; an outage (refused connections, or 503 everywhere) in outage.py.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import random
import re
import socket
import ssl
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from PIL import Image

from . import outage as _outage
from . import platform_api, status_stream
from . import strict as _strict

ENDPOINTS = ("submit", "status", "result", "cancel", "token", "upload", "download", "stream",
             "list", "delete")
MAX_OUTPUT_PIXELS = 100_000_000
MAX_SIDE = 65535


@dataclass
class Faults:
    """Probabilities (0..1) per endpoint name in ENDPOINTS, and other misbehaviour."""

    http429: dict[str, float] = field(default_factory=dict)
    http5xx: dict[str, float] = field(default_factory=dict)
    drop: dict[str, float] = field(default_factory=dict)
    slow: dict[str, float] = field(default_factory=dict)  # seconds added before answering
    truncate_download: float = 0.0
    #: Each result's first download arrives at full length but damaged inside (a PNG byte
    #: flipped, a JPEG's second half zeroed): only a check of the data itself can tell.
    corrupt_first_download: bool = False
    #: Results this many times wider than asked for (an upscaler that ignores the size).
    stretch_results: float = 1.0
    app_error: float = 0.0  # a run that ends COMPLETED with error (transient type)
    expire_after: float | None = None  # results 404 this many seconds after completion
    plain_urls: bool = False  # images as plain URL strings instead of objects
    locked: bool = False  # every authenticated call answers 403 (exhausted balance)
    reject_inputs: bool = False  # every run ends in a 422 image_load_error
    reject_runs: int = 0  # the next this many submitted runs end in a 422 image_load_error
    #: Submissions fal accepts (and bills) whose reply never reaches the client.
    lose_reply: float = 0.0
    #: Status streams cut after their first event.
    cut_stream: float = 0.0
    #: The first this many status streams opened are cut after their first event (a proxy
    #: that drops a long connection now and then).
    cut_streams_first: int = 0
    silent_stream: bool = False  # streams send nothing at all until the request is done
    #: Seconds after it finished before a request shows in the platform's request list.
    list_delay: float = 0.0
    list_forbidden: bool = False  # the key may not list requests (403)
    delete_forbidden: bool = False  # the key may not delete payloads (403: not admin)

    @classmethod
    def mix(cls, rate: float, **extra: Any) -> Faults:
        """``rate`` of every endpoint's calls fail one way or another."""
        share = rate / 3
        every = {name: share for name in ENDPOINTS}
        # A submit connection dropped before fal accepts it cannot be told from a lost reply
        # (the client waits fal.timeout before sending again); the mix loses replies instead.
        dropped = {**every, "submit": 0.0}
        return cls(http429=dict(every), http5xx=dict(every), drop=dropped,
                   truncate_download=share, app_error=share, lose_reply=share, **extra)


@dataclass
class _Request:
    id: str
    arguments: dict[str, Any]
    input_sha256: str | None
    submitted: float
    start: float
    end: float
    cancelled: bool = False
    outcome: str | None = None  # "ok", "rejected", "app_error", "cancelled"
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    completed_at: float | None = None
    seen_completed_at: float | None = None  # when the client first saw COMPLETED
    runner: int = 0
    rejected: bool = False  # decided at submit (Faults.reject_runs)
    sent_wall: float = 0.0  # wall-clock time of the submission (the request list shows it)
    app: str = ""
    stored: bool = True  # payloads stored (not sent with X-Fal-Store-IO: 0)
    payloads_deleted: bool = False


class FakeFal:
    def __init__(self, *, key: str = "test-key-id:test-key-secret", latency: float = 0.2,
                 runners: int = 2, faults: Faults | None = None, seed: int = 1,
                 certfile: str | None = None, keyfile: str | None = None,
                 latency_spread: float = 0.0):
        self.key, self.latency, self.runners = key, latency, runners
        #: Run times vary by up to this fraction either way (seeded, so repeatable).
        self.latency_spread = latency_spread
        #: Every upload, with the lifecycle header it carried.
        self.uploads: list[dict[str, Any]] = []
        #: Every result file made, by name, kept after a cleanup deletes it from ``files``.
        self.made: dict[str, bytes] = {}
        #: Requests whose payloads were deleted: {request_id, at (monotonic)}.
        self.deleted: list[dict[str, Any]] = []
        #: The query of every request-list call.
        self.list_calls: list[dict[str, str]] = []
        self.faults = faults or Faults()
        self._random = random.Random(seed)
        self._lock = threading.RLock()
        self._runner_free = [0.0] * runners
        self.requests: dict[str, _Request] = {}
        self.files: dict[str, tuple[bytes, str]] = {}
        self.corrupted: set[str] = set()
        #: Bytes of results sent to clients (what a home connection pays for).
        self.bytes_served = 0
        #: Every request fal would bill: one row per run that produced a result or a 422.
        self.ledger: list[dict[str, Any]] = []
        #: Every accepted submission, billed or not.
        self.submissions: list[dict[str, Any]] = []
        self.calls: dict[str, int] = {name: 0 for name in ENDPOINTS}
        #: Requests submitted whose completion the client has not yet seen, and the most
        #: there ever were at once: what the client's concurrency limit bounds.
        self.open: set[str] = set()
        self.peak_open = 0
        # Submissions can be held (hold_submits) so a test can act while one is in a
        # chosen state: "before" fal has accepted it, or "after" (accepted, not answered).
        self._release = threading.Event()
        self._release.set()
        self._hold_stage: str | None = None
        self._hold_skip = 0
        self._gate_count = 0
        self._drop_held = False
        #: Submit calls waiting at the gate now, and submit calls being handled at all.
        self.held = 0
        self.in_submit = 0
        self._certfile, self._keyfile = certfile, keyfile
        self._server: ThreadingHTTPServer | None = None
        #: Where the fake is as strict as fal (strict.py): its knobs and what it saw.
        self.strict = _strict.Strict()
        #: fal away for a while (outage.py): refused connections or 503 everywhere.
        self.outage = _outage.Outage()

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> FakeFal:
        fake = self

        class Handler(_Handler):
            server_fake = fake

        server = _QuietServer(("127.0.0.1", 0), Handler)
        server.outage = self.outage
        server.daemon_threads = True
        if self._certfile:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(self._certfile, self._keyfile)
            server.socket = ctx.wrap_socket(server.socket, server_side=True)
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True, name="fakefal").start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def host(self) -> str:
        assert self._server is not None
        return f"127.0.0.1:{self._server.server_address[1]}"

    @property
    def base_url(self) -> str:
        return f"https://{self.host}"

    # -- ledger helpers for tests ----------------------------------------------------------------

    def hold_submits(self, stage: str = "before", skip: int = 0) -> None:
        """Hold every submit call after the first ``skip``: at ``stage`` "before" fal
        accepts the request, or "after" it accepted it but before the answer is sent."""
        assert stage in ("before", "after")
        with self._lock:
            self._hold_stage, self._hold_skip, self._gate_count = stage, skip, 0
            self._release.clear()

    def release_submits(self, *, drop: bool = False) -> None:
        """Let held submit calls go on, or with ``drop`` close their connections (the
        client is gone): held "before" accepting, such a request never reaches fal."""
        with self._lock:
            self._hold_stage, self._drop_held = None, drop
            self._release.set()

    def gate(self, stage: str) -> bool:
        """Where a submit call may be held; False if it is to be dropped instead."""
        with self._lock:
            if self._hold_stage != stage:
                return True
            self._gate_count += 1
            if self._gate_count <= self._hold_skip:
                return True
            self.held += 1
        self._release.wait()
        with self._lock:
            self.held -= 1
            return not self._drop_held

    def settle_runs(self) -> None:
        """Finish every run whose modelled end has passed, looked at or not: fal bills a run
        nobody asks about (one whose submit answer was lost) like any other."""
        for req in list(self.requests.values()):
            if time.monotonic() >= req.end:
                self._finish(req)

    def billed_per_input(self) -> dict[str, int]:
        self.settle_runs()
        counts: dict[str, int] = {}
        for row in self.ledger:
            if row["outcome"] in ("ok", "cancelled"):  # a run cancelled while running is billed
                counts[row["input_sha256"]] = counts.get(row["input_sha256"], 0) + 1
        return counts

    def chance(self, table: dict[str, float] | float, endpoint: str | None = None) -> bool:
        p = table.get(endpoint, 0.0) if isinstance(table, dict) else table
        with self._lock:
            return p > 0 and self._random.random() < p

    # -- model -------------------------------------------------------------------------------

    def submit(self, app: str, arguments: dict[str, Any],
               headers: dict[str, str] | None = None) -> _Request:
        now = time.monotonic()
        headers = headers or {}
        data = self._load_input(arguments.get("image_url"))
        with self._lock:
            slot = min(range(self.runners), key=lambda i: self._runner_free[i])
            start = max(now, self._runner_free[slot])
            spread = self.latency_spread * self._random.uniform(-1, 1)
            end = start + self.latency * (1 + spread)
            self._runner_free[slot] = end
            req = _Request(id=str(uuid.uuid4()), arguments=arguments, runner=slot, app=app,
                           input_sha256=hashlib.sha256(data).hexdigest() if data else None,
                           submitted=now, start=start, end=end, sent_wall=time.time(),
                           rejected=self.faults.reject_runs > 0,
                           stored=headers.get("store_io") != "0")
            self.faults.reject_runs = max(0, self.faults.reject_runs - 1)
            self.requests[req.id] = req
            self.open.add(req.id)
            self.peak_open = max(self.peak_open, len(self.open))
            self.submissions.append({"request_id": req.id, "app": app,
                                     "input_sha256": req.input_sha256,
                                     "scale_factor": arguments.get("scale_factor"),
                                     "creativity": arguments.get("creativity"),
                                     "output_format": arguments.get("output_format"),
                                     "lifecycle": headers.get("lifecycle"),
                                     "store_io": headers.get("store_io")})
        req._data = data  # type: ignore[attr-defined]
        return req

    def _load_input(self, url: Any) -> bytes | None:
        if not isinstance(url, str):
            return None
        if url.startswith("data:"):
            try:
                return base64.b64decode(url.split(",", 1)[1])
            except (IndexError, ValueError):
                return None
        match = re.search(r"/files/([^/?]+)$", url)
        if match and match.group(1) in self.files:
            return self.files[match.group(1)][0]
        return None

    def state(self, req: _Request) -> str:
        now = time.monotonic()
        if req.cancelled or now >= req.end:
            self._finish(req)
            return "COMPLETED"
        return "IN_PROGRESS" if now >= req.start else "IN_QUEUE"

    def queue_position(self, req: _Request) -> int:
        with self._lock:
            return sum(1 for r in self.requests.values()
                       if r.start < req.start and time.monotonic() < r.start)

    def _finish(self, req: _Request) -> None:
        with self._lock:
            if req.outcome is not None:
                return
            # The modelled end, not when somebody looked: results expire while nobody asks.
            req.completed_at = time.monotonic() if req.cancelled else req.end
            if req.cancelled:
                req.outcome = "cancelled"
                req.error = {"error": "Request was cancelled", "error_type": "request_cancelled"}
                return
            if _strict.finish_cancelled_run(self, req):
                return
            if self.chance(self.faults.app_error):
                req.outcome = "app_error"
                req.error = {"error": "Runner crashed while processing", "error_type":
                             "runner_disconnected"}
                return
            req.outcome, req.result, req.error = self._run_model(req)
            self.ledger.append({"request_id": req.id, "input_sha256": req.input_sha256,
                                "outcome": req.outcome,
                                "output_megapixels": (req.result or {}).get("_mp", 0)})

    def _run_model(self, req: _Request) -> tuple[str, dict | None, dict | None]:
        args, data = req.arguments, getattr(req, "_data", None)

        def rejected(loc: str, msg: str, kind: str) -> tuple[str, None, dict]:
            return "rejected", None, {"detail": [{"loc": ["body", loc], "msg": msg,
                                                  "type": kind}]}

        scale = args.get("scale_factor", 2)
        if not isinstance(scale, (int, float)) or not 1 <= scale <= 200:
            return rejected("scale_factor", "Input should be between 1 and 200",
                            "less_than_equal")
        if self.faults.reject_inputs or req.rejected:
            return rejected("image_url", "Could not load the image", "image_load_error")
        if data is None:
            return rejected("image_url", "Failed to download the file", "file_download_error")
        try:
            image = Image.open(io.BytesIO(data))
            image.load()
        except Exception:  # noqa: BLE001
            return rejected("image_url", "Could not load the image", "image_load_error")
        refused = _strict.input_problem(data, image.width, image.height)
        if refused:
            return rejected("image_url", *refused)
        width = round(image.width * scale * self.faults.stretch_results)
        height = round(image.height * scale)
        if width * height > MAX_OUTPUT_PIXELS or max(width, height) > MAX_SIDE:
            return rejected("image_url", f"Output {width}x{height} exceeds the limit",
                            "image_too_large")
        # Like the real upscaler, results are opaque RGB whatever the input.
        out = image.convert("RGB").resize(
            (width, height), Image.Resampling.BILINEAR)
        buffer = io.BytesIO()
        fmt = _strict.result_format(self.strict, args.get("output_format"))
        out.save(buffer, fmt, compress_level=1) if fmt == "PNG" else out.save(buffer, fmt)
        name = f"out-{req.id}.{'jpg' if fmt == 'JPEG' else 'png'}"
        payload = buffer.getvalue()
        self.files[name] = (payload, f"image/{fmt.lower()}")
        self.made[name] = payload
        url = f"{self.base_url}/files/{name}"
        item: Any = url if self.faults.plain_urls else {
            "url": url, "content_type": f"image/{fmt.lower()}", "file_name": name,
            "file_size": len(payload), "width": None, "height": None}
        return "ok", {"images": [item], "_mp": width * height / 1e6}, None

    def status_body(self, req: _Request, want_logs: bool, response_url: str) -> dict[str, Any]:
        """What a status poll (or a streamed event) says of ``req`` now."""
        state = self.state(req)
        logs = [{"message": "Upscaling image", "level": "INFO", "source": "user",
                 "timestamp": datetime.now(timezone.utc).isoformat()}] if want_logs else None
        if state == "IN_QUEUE":
            return {"status": "IN_QUEUE", "queue_position": self.queue_position(req),
                    "response_url": response_url}
        if state == "IN_PROGRESS":
            return {"status": "IN_PROGRESS", "logs": logs}
        body: dict[str, Any] = {"status": "COMPLETED", "logs": logs,
                                "metrics": {"inference_time": round(req.end - req.start, 3)}}
        if req.outcome in ("app_error", "cancelled"):
            body.update(req.error or {})
        self.open.discard(req.id)
        if req.seen_completed_at is None:
            req.seen_completed_at = time.monotonic()
        return body

    def expired(self, req: _Request) -> bool:
        return (self.faults.expire_after is not None and req.completed_at is not None
                and time.monotonic() - req.completed_at > self.faults.expire_after)


class _QuietServer(ThreadingHTTPServer):
    outage: _outage.Outage | None = None

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # dropped connections are deliberate here

    def get_request(self) -> tuple[Any, Any]:
        """Accept, letting an outage refuse the connection before the TLS handshake."""
        listener = self.socket
        if self.outage is None:
            return super().get_request()
        raw, address = socket.socket.accept(listener)
        if not self.outage.accepted(raw):
            raise OSError("refused by the outage")
        if isinstance(listener, ssl.SSLSocket):
            raw = listener.context.wrap_socket(
                raw, server_side=True, do_handshake_on_connect=listener.do_handshake_on_connect,
                suppress_ragged_eofs=listener.suppress_ragged_eofs)
        return raw, address


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like fal
    server_fake: FakeFal

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def parse_request(self) -> bool:
        """Every request is logged by the outage mode, which answers it while fal is away."""
        if not super().parse_request():
            return False
        return not self.server_fake.outage.request(self)

    # -- plumbing -----------------------------------------------------------------------------

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if not isinstance(body, bytes)
                         else (headers or {}).pop("Content-Type", "application/octet-stream"))
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("x-fal-request-id", str(uuid.uuid4()))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(payload)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _faulted(self, endpoint: str) -> bool:
        fake = self.server_fake
        fake.calls[endpoint] += 1
        fake.strict.calls.append((endpoint, time.monotonic()))
        if _strict.wrong_app(self, endpoint):
            return True
        delay = fake.faults.slow.get(endpoint, 0.0)
        if delay:
            time.sleep(delay)
        if fake.chance(fake.faults.drop, endpoint):
            self.close_connection = True
            self.connection.close()
            return True
        if fake.chance(fake.faults.http429, endpoint):
            _strict.send_429(self)
            return True
        if fake.chance(fake.faults.http5xx, endpoint):
            _strict.send_5xx(self)
            return True
        return False

    def _authorised(self, scheme: str = "Key") -> bool:
        fake = self.server_fake
        auth = self.headers.get("Authorization", "")
        ok = auth == "Bearer fake-cdn-token" if scheme == "Bearer" else auth == f"Key {fake.key}"
        if not ok:
            self._send(401, {"detail": "No user found for Key ID and Secret"})
            return False
        if fake.faults.locked:
            self._send(403, {"detail": "User is locked. Reason: Exhausted balance. Top up your "
                                       "balance at fal.ai/dashboard/billing."})
            return False
        return True

    # -- routes -------------------------------------------------------------------------

    def do_POST(self) -> None:
        path = urlparse(self.path).path
        body = self._body()
        fake = self.server_fake
        if path.startswith("/storage/auth/token"):
            if self._faulted("token") or not self._authorised():
                return
            expires = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
            self._send(200, {"token": "fake-cdn-token", "token_type": "Bearer",
                             "base_url": fake.base_url, "expires_at": expires})
        elif path == "/files/upload":
            if self._faulted("upload") or not self._authorised("Bearer"):
                return
            name = f"up-{uuid.uuid4().hex[:12]}-{self.headers.get('X-Fal-File-Name', 'file')}"
            fake.uploads.append({"name": name,
                                 "lifecycle": self.headers.get("X-Fal-Object-Lifecycle")})
            fake.files[name] = (body, self.headers.get("Content-Type", "application/octet-stream"))
            self._send(200, {"access_url": f"{fake.base_url}/files/{name}"})
        elif path.startswith("/storage/upload/initiate"):
            if self._faulted("upload") or not self._authorised():
                return
            name = f"up-{uuid.uuid4().hex[:12]}-{json.loads(body or b'{}').get('file_name', 'f')}"
            fake.uploads.append({"name": name, "lifecycle": self.headers.get(
                "X-Fal-Object-Lifecycle-Preference")})
            self._send(200, {"upload_url": f"{fake.base_url}/put/{name}",
                             "file_url": f"{fake.base_url}/files/{name}"})
        elif re.fullmatch(r"/[^/]+/[^/]+", path):
            with fake._lock:
                fake.in_submit += 1
            try:
                self._submit(path, body)
            finally:
                with fake._lock:
                    fake.in_submit -= 1
        else:
            self._send(404, {"detail": "Not found"})

    def _submit(self, path: str, body: bytes) -> None:
        fake = self.server_fake
        if self._faulted("submit") or not self._authorised():
            return
        try:
            arguments = json.loads(body)
        except ValueError:
            self._send(422, {"detail": [{"loc": ["body"], "msg": "Invalid JSON",
                                         "type": "json_invalid"}]})
            return
        if not fake.gate("before"):
            self.close_connection = True
            return
        req = fake.submit(path.strip("/"), arguments, {
            "lifecycle": self.headers.get("X-Fal-Object-Lifecycle-Preference"),
            "store_io": self.headers.get("X-Fal-Store-IO")})
        if not fake.gate("after") or fake.chance(fake.faults.lose_reply):
            self.close_connection = True  # accepted, and the reply is lost
            return
        if fake.chance(fake.strict.gateway_504_after_accept):
            # accepted, and the gateway gives up waiting for the queue's answer
            page = _strict.NGINX_PAGE.format(status=504, phrase="Gateway Time-out")
            _strict.raw_html(self, 504, page)
            return
        base = f"{fake.base_url}{path}/requests/{req.id}"
        self._send(200, {"status": "IN_QUEUE", "request_id": req.id, "response_url": base,
                         "status_url": base + "/status", "cancel_url": base + "/cancel",
                         "queue_position": fake.queue_position(req)})

    def do_PUT(self) -> None:
        path = urlparse(self.path).path
        body = self._body()
        fake = self.server_fake
        if path.startswith("/put/"):
            if _strict.put_fails(self):
                return
            fake.files[path[len("/put/"):]] = (body, self.headers.get("Content-Type", ""))
            self._send(200, {})
            return
        match = re.fullmatch(r"/[^/]+/[^/]+/requests/([^/]+)/cancel", path)
        if not match:
            self._send(404, {"detail": "Not found"})
            return
        if self._faulted("cancel") or not self._authorised():
            return
        req = fake.requests.get(match.group(1))
        if req is None:
            self._send(404, {"status": "NOT_FOUND"})
        else:
            self._send(*_strict.cancel(fake, req))

    def do_DELETE(self) -> None:
        platform_api.route(self, "DELETE", urlparse(self.path).path, {})

    def do_GET(self) -> None:
        url = urlparse(self.path)
        path, query = url.path, parse_qs(url.query)
        fake = self.server_fake
        if path.startswith("/files/"):
            self._download(path[len("/files/"):])
            return
        if path.startswith(platform_api.PREFIX):
            platform_api.route(self, "GET", path, query)
            return
        if path.endswith("/status/stream"):
            status_stream.serve(self, path.removesuffix("/stream"), query)
            return
        match = re.fullmatch(r"/[^/]+/[^/]+/requests/([^/]+)(/status)?", path)
        if not match:
            self._send(404, {"detail": "Not found"})
            return
        endpoint = "status" if match.group(2) else "result"
        if self._faulted(endpoint) or not self._authorised():
            return
        req = fake.requests.get(match.group(1))
        if req is None or fake.expired(req):
            self._send(404, {"detail": "Request not found"})
            return
        if endpoint == "status":
            want_logs = query.get("logs", ["0"])[0].lower() in ("1", "true")
            body = fake.status_body(req, want_logs, path.removesuffix("/status"))
            self._send(200 if body["status"] == "COMPLETED" else 202, body)
            return
        state = fake.state(req)
        if state != "COMPLETED":
            self._send(400, {"detail": "Request is still in progress"})
        elif req.outcome == "ok":
            # What fal bills: for this app, output megapixels.
            units = (req.result or {}).get("_mp", 0) * fake.strict.billable_units_factor
            self._send(200, {k: v for k, v in (req.result or {}).items() if not k.startswith("_")},
                       {"x-fal-billable-units": f"{units:.6g}"})
        elif req.outcome == "rejected":
            self._send(422, req.error)
        else:
            self._send(500, {"detail": (req.error or {}).get("error"),
                             "error_type": (req.error or {}).get("error_type")})

    def _download(self, name: str) -> None:
        fake = self.server_fake
        if self._faulted("download"):
            return
        fake.strict.downloads.wait()
        item = None if _strict.file_expired(fake, name) else fake.files.get(name)
        if item is None:
            self._send(404, {"detail": "File not found"})
            return
        data, content_type = item
        if fake.chance(fake.faults.truncate_download):
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.close()
            return
        if fake.faults.corrupt_first_download and name not in fake.corrupted:
            fake.corrupted.add(name)
            data = bytearray(data)
            if data[:2] == b"\xff\xd8":
                data[len(data) // 2:] = bytes(len(data) - len(data) // 2)
            else:
                data[len(data) // 2] ^= 0xFF
            data = bytes(data)
        with fake._lock:
            fake.bytes_served += len(data)
        self._send(200, data, {"Content-Type": content_type})
