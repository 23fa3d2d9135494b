"""Submitting to fal's queue so that each input is paid for once.

fal's queue has no idempotency key, so a submission whose answer never arrived (a timeout,
a dropped connection, a crash) may be running and billed at fal. The rule kept here:

- The POST is sent once, by us, with no retry underneath (fal-client's own helper re-sends
  on timeouts and dropped connections).
- Before it is sent, the journal records what identifies it at fal and when it was sent.
- An *answer* from fal itself that says it did not take the request (429, or a 5xx that
  carries fal's ``x-fal-request-id``) is retried as before; a connection that was never
  made is retried too (nothing was sent).
- A 502/503/504 from the gateway in front of fal (no ``x-fal-request-id``) can come after
  the queue took the request: like no answer at all, it is an *uncertain submit*.
- No answer at all is an *uncertain submit*: the account's request list is searched for
  it until it appears (adopt its request id) or ``fal.timeout`` has passed since it was
  sent; only then is it sent again, and the journal counts it as possibly paid twice.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from .. import logs
from ..config import FalConfig
from ..errors import FalUnreachable, JobError, RetryableError
from . import falclient
from .base import UpscaleRequest
from .platform import Platform, PlatformError, PlatformRefused, identity_of
from .retries import RetryNow, retry_in_place

log = logs.get(__name__)

#: Submissions refused with an answer (429/5xx) retried in place before the worker's backoff.
SUBMIT_RETRIES = 6
#: Seconds of clock difference allowed between us and fal when matching a request's time.
CLOCK_SKEW = 300.0
#: Looking for an uncertain submit: first after this many seconds, then less often.
LOOK_FIRST = 1.0
LOOK_MAX = 15.0
#: How long one submit POST may take before it counts as unanswered.
SUBMIT_TIMEOUT = httpx.Timeout(60.0, connect=15.0)


class _Uncertain(Exception):
    """The submission was sent and no answer came back."""


def submit_headers(cfg: FalConfig) -> dict[str, str]:
    """What fal keeps of the request, and for how long its result files live."""
    headers: dict[str, str] = {}
    if cfg.cdn_expiry is not None:
        headers["X-Fal-Object-Lifecycle-Preference"] = json.dumps(
            {"expiration_duration_seconds": cfg.cdn_expiry})
    if not cfg.store_payloads:
        headers["X-Fal-Store-IO"] = "0"
    return headers


class Submitter:
    def __init__(self, cfg: FalConfig, fal: Any, client: Any, platform: Platform,
                 classify: Callable[[str, int, Any, str | None, Any], Exception]):
        self.cfg, self._fal, self._client, self.platform = cfg, fal, client, platform
        self._classify = classify
        #: Why uncertain submits cannot be looked up (said once; cleared by a reload).
        self.lookup_off: str | None = None

    @property
    def can_look_up(self) -> bool:
        """Whether a submission whose answer is lost can be looked for in fal's request
        list (so its input should be one fal can name: a storage upload)."""
        return self.cfg.store_payloads and self.lookup_off is None

    async def submit(self, request: UpscaleRequest, input_url: Callable[[], Awaitable[str]],
                     arguments: dict[str, Any], bound) -> str:
        """The request id of this job's one submission: adopted if an earlier, unanswered
        submission is found at fal, else from a new one."""
        if request.trail.unanswered is not None:
            identity, sent_at = request.trail.unanswered
            bound.info("fal_submit_uncertain", identity=_shown(identity),
                       note="an earlier submission got no answer before the daemon stopped; "
                            "looking for it at fal before sending it again")
            found = await self._look_for(request, identity, sent_at, arguments, bound)
            if found:
                return found
        arguments = {"image_url": await input_url(), **arguments}
        identity = identity_of(arguments["image_url"])

        async def send_once() -> str:
            sent_at = time.time()
            await request.trail.sending(identity, sent_at)
            try:
                request_id = await self._post(arguments)
            except _Uncertain as exc:
                bound.warning("fal_submit_uncertain", reason=str(exc), identity=_shown(identity),
                              note="fal may have taken it; looking for it before sending again")
                found = await self._look_for(request, identity, sent_at, arguments, bound)
                if found:
                    return found
                # looked for until fal.timeout: send again straight away
                raise RetryNow(RetryableError("fal did not take the submission",
                                              kind="submit")) from None
            except JobError:
                # an answer (401/403/422, or 429/5xx retried below) or no connection at all:
                # nothing is pending at fal
                await request.trail.refused()
                raise
            await request.on_submitted(request_id)
            return request_id

        return await retry_in_place("submit", send_once, attempts=SUBMIT_RETRIES)

    async def _post(self, arguments: dict[str, Any]) -> str:
        """Send the submission once. Raises _Uncertain when it went out and no answer came."""
        client = await falclient.http_client(self._client)
        url = falclient.queue_url(self._fal, self.cfg.endpoint)
        try:
            response = await client.post(url, json=arguments, headers=submit_headers(self.cfg),
                                         timeout=SUBMIT_TIMEOUT)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            # The connection was never made: nothing reached fal (and fal is away).
            raise FalUnreachable(f"fal submit failed: cannot connect ({type(exc).__name__})",
                                 kind="network") from None
        except httpx.HTTPError as exc:
            raise _Uncertain(f"no answer ({type(exc).__name__})") from None
        if falclient.from_gateway(response):
            raise _Uncertain(f"the gateway answered {response.status_code} without fal's "
                             "request id") from None
        try:
            falclient.raise_for_status(self._fal, response)
        except self._fal.FalClientHTTPError as exc:
            raise self._classify("submit", exc.status_code, exc.message, exc.error_type,
                                 exc.response_headers) from None
        try:
            request_id = response.json()["request_id"]
        except (ValueError, KeyError, TypeError):
            raise _Uncertain("an answer without a request id") from None
        if not isinstance(request_id, str) or not request_id:
            raise _Uncertain("an answer without a request id")
        return request_id

    async def _look_for(self, request: UpscaleRequest, identity: str, sent_at: float,
                        arguments: dict[str, Any], bound) -> str | None:
        """Find an unanswered submission in the account's request list. A request may show
        only once finished, so look at a gentle rate until ``fal.timeout`` has passed since
        it was sent. Returns its id (journaled), or None once it is to be sent again."""
        reason = self._lookup_off_reason()
        delay = LOOK_FIRST
        while reason is None:
            try:
                found = await self.platform.find(self.cfg.endpoint, identity, sent_at, CLOCK_SKEW,
                                                 arguments)
            except PlatformRefused as exc:
                reason = self._turn_lookup_off(f"the fal key may not list requests ({exc})")
                break
            except PlatformError as exc:
                log.debug("fal_request_list_failed", error=str(exc))
                found = None
            if found:
                await request.on_submitted(found)
                bound.info("fal_request_recovered", request_id=found,
                           seconds_after_submit=round(time.time() - sent_at, 1))
                return found
            left = sent_at + self.cfg.timeout - time.time()
            if left <= 0:
                break
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 1.5, LOOK_MAX)
        await request.trail.given_up()
        bound.warning("fal_resubmitted_after_uncertain",
                      reason=reason or f"not in fal's request list within fal.timeout "
                                       f"({self.cfg.timeout:g}s) of the submission",
                      note="submitting again; if fal did take the first one, this input is "
                           "paid twice")
        return None

    def _lookup_off_reason(self) -> str | None:
        if self.lookup_off is None and not self.cfg.store_payloads:
            self._turn_lookup_off("fal.store_payloads is false, so fal's request list cannot "
                                  "name the input")
        return self.lookup_off

    def _turn_lookup_off(self, reason: str) -> str:
        if self.lookup_off is None:
            log.warning("fal_request_lookup_unavailable", reason=reason,
                        note="a submission whose answer is lost is sent again, and counted "
                             "in `status` as possibly paid twice")
        self.lookup_off = reason
        return reason


def _shown(identity: str) -> str:
    """An identity fit for the log (a data URI's digest, or the upload URL's file name)."""
    return identity if identity.startswith("sha256:") else identity.rsplit("/", 1)[-1]
