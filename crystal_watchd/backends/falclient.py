"""Every use of fal-client's private parts, in one place.

fal-client's public API has no call that sends a submission exactly once (its ``submit``
re-sends on timeouts), no status stream, and no way to check a raw answer the way it checks
its own. The daemon needs all three, so it reaches into fal-client 1.0.x here and nowhere
else; ``PRIVATE_PARTS`` names each part, and a test fails as soon as one of them moves or
changes its shape, before a release of fal-client can break paying once.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

#: (module, attribute) of every private or undocumented part of fal-client used below.
PRIVATE_PARTS = (
    ("fal_client.client", "_raise_for_status"),
    ("fal_client.client", "QUEUE_URL_FORMAT"),
    ("fal_client.client", "REST_URL"),
    ("fal_client.client", "CDN_URL"),
    ("fal_client.client.AsyncClient", "_client"),
    ("fal_client.client.AsyncRequestHandle", "_parse_status"),
    ("fal_client.client", "MAX_ATTEMPTS"),
)

#: Gateway answers that may come after fal's queue took the request (fal-client's own
#: INGRESS_ERROR_CODES).
GATEWAY_STATUSES = (502, 503, 504)


def load() -> Any:
    """The fal_client package, imported late: it reads FAL_*_HOST when imported."""
    import fal_client

    return fal_client


def one_try_per_call(fal: Any) -> None:
    """fal-client retries transport errors and 408/409/429 up to 10 times inside each call:
    ten requests per call during an outage, hidden from the reachability breaker. One try
    each; the daemon's own retry loop and the breaker decide what is tried again."""
    fal.client.MAX_ATTEMPTS = 1


def client_logger(fal: Any) -> logging.Logger:
    """The logger fal-client's client module warns through (its backup-domain notices)."""
    return logging.getLogger(fal.client.__name__)


async def http_client(client: Any) -> httpx.AsyncClient:
    """fal-client's own httpx client of an AsyncClient: its auth header, TLS and proxies."""
    return await client._client


def queue_url(fal: Any, endpoint: str) -> str:
    """The URL a submission to ``endpoint`` is POSTed to (FAL_QUEUE_RUN_HOST honoured)."""
    return fal.client.QUEUE_URL_FORMAT + endpoint


def rest_url() -> str:
    """fal's REST base (storage tokens), as fal-client will use it."""
    import fal_client.client as fal_http

    return fal_http.REST_URL


def raise_for_status(fal: Any, response: httpx.Response) -> None:
    """Raise fal-client's FalClientHTTPError for an error answer, parsed as it parses it."""
    fal.client._raise_for_status(response)


def parse_status(handle: Any, data: Any) -> Any:
    """A status JSON (a poll's, or a streamed event's) as fal-client's Status object."""
    return handle._parse_status(data)


def from_gateway(response: httpx.Response) -> bool:
    """A 502/503/504 that fal's own servers did not send (no ``x-fal-request-id``): the
    gateway in front of the queue answered, and nothing says whether the queue had
    already taken the request."""
    return (response.status_code in GATEWAY_STATUSES
            and "x-fal-request-id" not in response.headers)
