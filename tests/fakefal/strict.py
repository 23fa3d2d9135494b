"""Where the fake is as strict as fal: the one app it serves, fal's documented limits, the
error answers fal and its ingress really give, cancels that are billed and slow, results in
another format than asked, and a gate that holds result downloads.

Every number here comes from fal's documentation of crystal-upscaler and its queue API, not
from crystal_watchd's own constants, so a wrong assumption in the daemon cannot also be the
fake's. Knobs live on ``FakeFal.strict`` (a ``Strict``); the server calls the functions below.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

#: The model's endpoint id, as fal's model page gives it.
FAL_APP = "clarityai/crystal-upscaler"
#: fal's input limits for crystal-upscaler: at least 2×2 pixels and at most 100 MB (the
#: output limits, 100 megapixels and 65535 px a side, are server.py's MAX_OUTPUT_PIXELS
#: and MAX_SIDE).
MIN_INPUT_SIDE = 2
MAX_INPUT_BYTES = 100 * 1024 * 1024

#: An nginx error page, as fal's ingress sends for 502/503/504 (no x-fal-request-id).
NGINX_PAGE = ("<html>\r\n<head><title>{status} {phrase}</title></head>\r\n<body>\r\n"
              "<center><h1>{status} {phrase}</h1></center>\r\n<hr><center>nginx</center>\r\n"
              "</body>\r\n</html>\r\n")
#: A non-JSON error page from something in front of fal that is not nginx (a load
#: balancer, a proxy): fal-client does not retry it, so it reaches the caller as it is.
PROXY_PAGE = ("<!DOCTYPE html><html><head><title>Error {status} ({phrase})</title><style>"
              "body{{font-family:sans-serif}}</style></head><body><h1>{status}. That's an "
              "error.</h1><p>The server encountered a temporary error and could not complete "
              "your request.</p>" + "<!-- padding -->" * 40 + "</body></html>")
_PHRASES = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
            504: "Gateway Time-out"}


@dataclass
class Strict:
    """Knobs for the strict parts, and what the fake saw."""

    #: Only this app is answered; any other ``/owner/app`` gets 404, as on fal.
    app: str = FAL_APP
    #: Retry-After (seconds) on injected 429 answers.
    retry_after: float = 0.0
    #: Injected server errors: the status, and the body. "json" is fal's own
    #: ``{"detail", "error_type"}`` with x-fal-request-id; "text" a plain-text body with
    #: x-fal-request-id; "nginx" fal's ingress page without it (fal-client retries those);
    #: "proxy" an HTML page without it that is not nginx's (reaches the caller).
    error_status: int = 503
    error_body: str = "json"
    #: Results come in the other format (PNG when jpg was asked, and the other way round).
    wrong_format: bool = False
    #: A cancel of a running request takes effect this many seconds later (fal only signals
    #: the runner); the run is billed. A queued request's cancel takes effect at once.
    cancel_delay: float = 2.0
    #: Seconds between the status stream's keep-alive comments while nothing changes.
    keepalive: float = 15.0
    #: A cancel of a running request that loses the race: the run finishes (billed, with
    #: its result) as the cancel arrives, and the cancel is answered with this status
    #: (409: ALREADY_COMPLETED as a 409, which fal-client retries; 500: a failed cancel).
    cancel_loses_race: int | None = None
    #: The HTTP status of ALREADY_COMPLETED (fal documents the outcome, not the code).
    already_completed_status: int = 400
    #: Result files are deleted this many seconds after their request completed, while
    #: the result JSON still answers (fal's CDN expiry).
    files_expire_after: float | None = None
    #: Probability that a submit is accepted (queued, and billed when it runs) and then
    #: answered by the gateway with nginx's 504 page, without x-fal-request-id.
    gateway_504_after_accept: float = 0.0
    #: The request list echoes data URIs re-encoded (not byte-identical: nothing in fal's
    #: docs promises the exact string); True echoes them exactly.
    exact_echo: bool = False
    #: ``x-fal-billable-units`` on a result fetch: the output megapixels times this (1: the
    #: bill matches fal's price list; another value, a bill that differs from it).
    billable_units_factor: float = 1.0
    #: Probability that a storage upload PUT (the GCS-style fallback) fails with a 500.
    put_failure: float = 0.0
    #: (endpoint, monotonic time) of every call to the queue, storage and downloads.
    calls: list[tuple[str, float]] = field(default_factory=list)
    #: Requests cancelled while running (their runs are billed).
    cancelled_running: set[str] = field(default_factory=set)
    downloads: Gate = field(default_factory=lambda: Gate())

    def times(self, endpoint: str) -> list[float]:
        return [at for name, at in self.calls if name == endpoint]


class Gate:
    """Holds calls until released: ``hold()``, then ``release()``; ``held`` counts the calls
    waiting now. A test acts while the client is in a known state."""

    def __init__(self) -> None:
        self._open = threading.Event()
        self._open.set()
        self._lock = threading.Lock()
        self.held = 0

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def wait(self) -> None:
        if self._open.is_set():
            return
        with self._lock:
            self.held += 1
        self._open.wait()
        with self._lock:
            self.held -= 1


def app_of(path: str) -> str:
    """``owner/app`` of a queue path (``/owner/app`` or ``/owner/app/requests/…``)."""
    return "/".join(path.strip("/").split("/")[:2])


def wrong_app(handler: Any, endpoint: str) -> bool:
    """Answer 404 (and return True) for a queue call to another app than the configured
    one, as fal does for an app that does not exist."""
    strict: Strict = handler.server_fake.strict
    if endpoint not in ("submit", "status", "result", "cancel"):
        return False
    app = app_of(handler.path.split("?", 1)[0])
    if app == strict.app:
        return False
    handler._send(404, {"detail": f"Application '{app}' not found"})
    return True


def send_429(handler: Any) -> None:
    strict: Strict = handler.server_fake.strict
    handler._send(429, {"detail": "Rate limit exceeded"},
                  {"Retry-After": f"{strict.retry_after:g}"})


def send_5xx(handler: Any) -> None:
    """One injected server error, in the configured shape."""
    strict: Strict = handler.server_fake.strict
    status, kind = strict.error_status, strict.error_body
    phrase = _PHRASES.get(status, "Error")
    if kind == "json":
        error_type = {503: "runner_scheduling_failure", 504: "request_timeout"}.get(
            status, "internal_server_error")
        handler._send(status, {"detail": phrase, "error_type": error_type},
                      {"X-Fal-Error-Type": error_type})
        return
    if kind == "text":
        handler._send(status, f"{phrase}\n".encode(), {"Content-Type": "text/plain"})
        return
    page = (NGINX_PAGE if kind == "nginx" else PROXY_PAGE).format(status=status, phrase=phrase)
    raw_html(handler, status, page)


def raw_html(handler: Any, status: int, page: str) -> None:
    """An HTML answer without x-fal-request-id (``_send`` always adds one)."""
    payload = page.encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "text/html")
    handler.send_header("Content-Length", str(len(payload)))
    handler.end_headers()
    handler.wfile.write(payload)


def input_problem(data: bytes, width: int, height: int) -> tuple[str, str] | None:
    """(message, error type) when fal refuses this input, else None."""
    if len(data) > MAX_INPUT_BYTES:
        return (f"Image file is {len(data)} bytes; the maximum is {MAX_INPUT_BYTES}",
                "image_too_large")
    if width < MIN_INPUT_SIDE or height < MIN_INPUT_SIDE:
        return (f"Image must be at least {MIN_INPUT_SIDE}x{MIN_INPUT_SIDE} pixels",
                "image_too_small")
    return None


def result_format(strict: Strict, asked: Any) -> str:
    """Pillow's format for a result: what was asked (fal's default: jpg), or the other
    one."""
    fmt = "PNG" if asked == "png" else "JPEG"
    if strict.wrong_format:
        fmt = "PNG" if fmt == "JPEG" else "JPEG"
    return fmt


def cancel(fake: Any, req: Any) -> tuple[int, dict[str, Any]]:
    """fal's answer to a cancel, and its effect. A queued request leaves the queue at once,
    unbilled; a running one is only signalled: it stops ``cancel_delay`` later (or finishes
    normally if that comes first) and is billed either way."""
    state = fake.state(req)
    race = fake.strict.cancel_loses_race
    if race is not None and state == "IN_PROGRESS":
        with fake._lock:
            req.end = time.monotonic()
        fake._finish(req)
        if race == 409:
            return 409, {"status": "ALREADY_COMPLETED"}
        return race, {"detail": "Internal Server Error", "error_type": "internal_server_error"}
    if state == "COMPLETED":
        return fake.strict.already_completed_status, {"status": "ALREADY_COMPLETED"}
    with fake._lock:
        if state == "IN_QUEUE":
            req.cancelled = True
            _move_up(fake, req, time.monotonic())
        else:
            stop = time.monotonic() + fake.strict.cancel_delay
            if stop < req.end:
                req.end = stop
                fake.strict.cancelled_running.add(req.id)
                _move_up(fake, req, stop)
    return 202, {"status": "CANCELLATION_REQUESTED"}


def _move_up(fake: Any, gone: Any, free_at: float) -> None:
    """The runner ``gone`` held is free from ``free_at``: the requests queued behind it on
    that runner start earlier, each keeping its own run time (the fake plans every request's
    start and end at submission)."""
    now = time.monotonic()
    behind = sorted((r for r in fake.requests.values()
                     if r.runner == gone.runner and r is not gone and not r.cancelled
                     and r.start > now and r.start >= gone.start), key=lambda r: r.start)
    free = free_at
    for r in behind:
        run = r.end - r.start
        r.start = max(free, r.submitted)
        r.end = free = r.start + run
    fake._runner_free[gone.runner] = max(free, now) if behind else free_at


def finish_cancelled_run(fake: Any, req: Any) -> bool:
    """At the end of a run cancelled while running: COMPLETED with the cancel as its error,
    and a ledger row, because fal bills the run. False for any other run."""
    if req.id not in fake.strict.cancelled_running:
        return False
    _, result, _ = fake._run_model(req)
    req.outcome = "cancelled"
    req.error = {"error": "Request was cancelled", "error_type": "request_cancelled"}
    fake.ledger.append({"request_id": req.id, "input_sha256": req.input_sha256,
                        "outcome": "cancelled",
                        "output_megapixels": (result or {}).get("_mp", 0)})
    return True


def echoed(strict: Strict, arguments: dict[str, Any]) -> dict[str, Any]:
    """A request's ``json_input`` as the request list shows it: a data URI re-encoded
    (another case for its type, the base64 in lines), unless ``exact_echo``."""
    url = arguments.get("image_url")
    if strict.exact_echo or not isinstance(url, str) or not url.startswith("data:"):
        return arguments
    head, _, b64 = url.partition(",")
    lines = "\n".join(b64[i:i + 76] for i in range(0, len(b64), 76))
    return {**arguments, "image_url": head.upper().replace("DATA:", "data:") + "," + lines}


def file_expired(fake: Any, name: str) -> bool:
    """Whether the result file ``name`` was deleted by its CDN expiry."""
    after = fake.strict.files_expire_after
    if after is None or not name.startswith("out-"):
        return False
    req = fake.requests.get(name[len("out-"):].rsplit(".", 1)[0])
    return (req is not None and req.completed_at is not None
            and time.monotonic() - req.completed_at > after)


def put_fails(handler: Any) -> bool:
    """Fail a storage upload PUT (with the configured chance) the way a storage backend
    does: a 500 with a short XML body and no x-fal-request-id."""
    fake = handler.server_fake
    fake.strict.calls.append(("put", time.monotonic()))
    if not fake.chance(fake.strict.put_failure):
        return False
    body = (f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>InternalError</Code>"
            f"<Message>We encountered an internal error. Please try again.</Message>"
            f"<Details>{uuid.uuid4()}</Details></Error>").encode()
    handler.send_response(500)
    handler.send_header("Content-Type", "application/xml")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)
    return True

