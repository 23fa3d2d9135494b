"""Crystal Upscaler through fal's queue, with fal-client's AsyncClient.

Money rules this module keeps:
- A submission is sent once, and a lost answer is looked for before anything is sent again
  (submission.py).
- The request id is handed to the journal (``on_submitted``) before any waiting, so a crash
  or a shutdown resumes the same request instead of paying for a second one.
- A poll, result fetch or download that fails is retried on the *same* request; only a
  request that fal says failed, or no longer has (404, expired), is submitted again, and the
  log says that this is a second charge.
- The key never leaves this module except inside the Authorization header.
- An outage (fal or the network away) is waited out behind one breaker (reachability.py):
  the call is made again, on the same request, once the probe is answered; it never costs
  an attempt, and fal-client's own hidden retries are off so that nothing multiplies it.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import io
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from .. import logs
from ..config import FalConfig
from ..errors import AccountError, FalUnreachable, JobError, PermanentJobError, RetryableError
from ..images import containers
from ..images.formats import PHONE_FORMATS
from ..images.preflight import FAL_ACCEPTS
from . import falclient
from .answers import AWAY_STATUSES, plain_detail, retry_after
from .base import ResultImage, Slots, UpscaleRequest
from .download import Downloader
from .key import read_key
from .platform import Platform
from .probe import probe_reachable
from .reachability import ProbeAnswer, Reachability
from .retries import retry_in_place
from .submission import Submitter
from .tidy import Tidy
from .waiting import RunTime, wait_until_done

log = logs.get(__name__)

#: Inputs up to this size go inline as a data URI under ``upload: auto`` when a lost
#: submission could not be looked up anyway; larger ones, and every input whose lost
#: submission is to be found again, go through fal storage (a storage URL is unique per
#: upload, while fal does not document that a data URI is echoed byte for byte).
DATA_URI_LIMIT = 256 * 1024
#: How long fetching a finished request's result may take.
RESULT_TIMEOUT = httpx.Timeout(120.0, connect=30.0)
#: After a cancel, how long to wait for the request to end (a running one may finish
#: anyway, and its result is then used), and how often to look meanwhile.
CANCEL_WAIT = 30.0
CANCEL_POLL = 1.0
#: fal's documented outcomes of a cancel (by name only: the HTTP codes are not documented).
_CANCEL_OUTCOMES = ("OK", "CANCELLATION_REQUESTED", "ALREADY_COMPLETED", "NOT_FOUND")
#: Pause after 401/403 before trying the account again (SIGHUP resumes sooner).
ACCOUNT_PAUSE = 600.0
#: fal's largest accepted input (its crystal-upscaler documentation: up to 100 MB).
MAX_INPUT_BYTES = 100 * 1024 * 1024
#: The extension of an upload's neutral name, by its type.
_EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp",
               "image/gif": ".gif", "image/avif": ".avif"}
#: fal error types that say the input itself is the problem.
_PERMANENT_TYPES = {"image_load_error", "image_too_large", "image_too_small",
                    "file_download_error", "unsupported_image_format", "value_error",
                    "greater_than_equal", "less_than_equal", "content_policy_violation"}


class _BackupDomainNotice(logging.Filter):
    """fal-client's "trying backup domain" warning, once per failed connection and naming no
    file: the breaker's ``fal_unreachable`` says it once per outage instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "trying backup domain" not in record.getMessage()


class _Gone(Exception):
    """fal no longer has this request (404 / expired result)."""


class FalBackend:
    name = "fal"

    def __init__(self, cfg: FalConfig, slots: Slots | None = None,
                 environ: dict[str, str] | None = None):
        self.cfg = cfg
        self.slots = slots or Slots(2)
        self._runtime = RunTime()
        key = read_key(cfg, environ)
        logs.register_secret(key)
        fal_client = self._fal = falclient.load()
        falclient.one_try_per_call(fal_client)
        quiet = falclient.client_logger(fal_client)
        if not any(isinstance(f, _BackupDomainNotice) for f in quiet.filters):
            quiet.addFilter(_BackupDomainNotice())
        self._client = fal_client.AsyncClient(key=key, default_timeout=min(cfg.timeout, 120))
        self._downloads = Downloader()
        self.platform = Platform(key, environ)
        self._submitter = Submitter(cfg, fal_client, self._client, self.platform, self._classify)
        self._tidy = Tidy(cfg, self.platform)
        #: The daemon's one view of whether fal can be reached (the service listens to it).
        self.reachability = Reachability(self._probe)

    def __repr__(self) -> str:
        return f"FalBackend(endpoint={self.cfg.endpoint!r}, key=***)"

    async def aclose(self) -> None:
        await self.reachability.aclose()
        self._downloads.close()
        await self.platform.aclose()

    def reconfigure(self, cfg: FalConfig) -> None:
        """A reload: new settings for new submissions, and what a refusal turned off
        (looking up lost submissions, cleanup) is tried again."""
        self.cfg = self._submitter.cfg = cfg
        self._submitter.lookup_off = None
        self._tidy = Tidy(cfg, self.platform)

    async def output_written(self, request_id: str) -> None:
        await self._tidy.request_done(request_id)

    # -- the job -------------------------------------------------------------------------

    async def upscale(self, request: UpscaleRequest) -> list[ResultImage]:
        bound = log.bind(job_id=request.job_id)
        # Upload outside a slot: it is our work, not the upscaler's. A submission that may
        # be at fal already is looked for (in a slot) before any upload.
        image_url = (None if request.request_id or request.trail.unanswered
                     else await self._input_url(request))
        request_id = request.request_id
        for attempt in (1, 2):
            try:
                handle = await self._run(request, request_id, image_url, bound)
                # The slot is free again: download while the next request runs.
                result, units = await self._retrying("result",
                                                     lambda h=handle: self._result(h))
                images = await self._download_all(result, request, handle.request_id, bound)
                if images and units is not None:
                    images[0] = dataclasses.replace(images[0], billed_units=units)
                return images
            except _Gone:
                if attempt == 2:
                    raise RetryableError("fal lost the request twice", kind="gone") from None
                await request.on_forgotten()
                bound.warning("fal_request_gone", request_id=request_id,
                              note="fal no longer has this request; submitting again is a "
                                   "second charge")
                request_id = None
                request = dataclasses.replace(request, trail=dataclasses.replace(
                    request.trail, unanswered=None))
                image_url = image_url or await self._input_url(request)
            except _Failed as exc:
                await request.on_forgotten()  # fal says it failed: the next attempt submits anew
                raise exc.error from None
            except PermanentJobError as exc:
                if exc.kind == "result_expired":
                    # The file is gone for good: asking again would never get it, and a
                    # retry (by the user, knowingly) submits anew.
                    await request.on_forgotten()
                    bound.warning("fal_result_expired", request_id=request_id,
                                  note="the result expired on fal before it could be "
                                       "fetched; a retry pays again")
                raise
        raise AssertionError("unreachable")

    async def _run(self, request: UpscaleRequest, request_id: str | None, image_url: str | None,
                   bound) -> Any:
        """Hold a slot from submit (or resume) until the request has completed.

        By default ``concurrency`` is a hard cap: the slot is freed only once fal reports
        the request finished. With ``fal.queue_ahead`` the slot is handed on HANDOVER_LEAD
        seconds before the request is expected to finish (at most ``queue_ahead`` at once),
        so the next request already waits in fal's queue when a runner frees: useful when
        ``concurrency`` is the account's own limit, where fal queues the extra request
        without running it, and waiting costs nothing (fal bills output megapixels).
        """
        await self.slots.acquire(request.job_id)
        held, lent = True, False

        async def hand_over() -> None:
            nonlocal held, lent
            if held and self.slots.try_lend():
                held, lent = False, True
                await self.slots.release(request.job_id)

        try:
            if request_id:
                bound.info("fal_request_resumed", request_id=request_id)
            else:
                request_id = await self._ride_out(
                    lambda: self._submit(request, image_url, bound))
            handle = await self._client.get_handle(self.cfg.endpoint, request_id)
            lost_before = self.reachability.lost_seconds()
            status = await wait_until_done(
                self._fal, handle, deadline=time.monotonic() + self.cfg.timeout,
                # an outage the request sat through does not count against fal.timeout
                moved=lambda: self.reachability.lost_seconds() - lost_before,
                runtime=self._runtime, bound=bound, nearly_done=hand_over,
                poll=lambda: self._retrying("status", lambda: handle.status(with_logs=True)),
                timed_out=lambda: self._cancel_after_timeout(handle, request, request_id, bound))
            if status.error:
                raise _Failed(self._app_error(status.error, status.error_type))
            return handle
        finally:
            if held:
                await self.slots.release(request.job_id)
            if lent:
                self.slots.returned()

    async def _retrying(self, what: str, make: Callable[[], Awaitable[Any]]) -> Any:
        """One call, retried in place on transient errors. Polls, result fetches and
        downloads keep their request id, so a flaky network costs time, never money."""
        return await self._ride_out(
            lambda: retry_in_place(what, lambda: self._call(what, make())))

    async def _ride_out(self, make: Callable[[], Awaitable[Any]]) -> Any:
        """``await make()`` once fal is reachable; when it finds fal away, open the breaker
        and make it again after the probe is answered, as long as that takes."""
        while True:
            await self.reachability.wait()
            try:
                return await make()
            except FalUnreachable as exc:
                self.reachability.failed(exc.reason, exc.delay)

    async def _probe(self) -> ProbeAnswer:
        return await probe_reachable(await falclient.http_client(self._client))

    async def _call(self, what: str, coro: Awaitable[Any]) -> Any:
        """Run one fal-client call, turning its errors into ours."""
        try:
            return await coro
        except self._fal.FalClientHTTPError as exc:
            raise self._classify(what, exc.status_code, exc.message, exc.error_type,
                                 exc.response_headers) from None
        except httpx.TimeoutException as exc:
            raise FalUnreachable(f"fal {what} timed out ({type(exc).__name__})",
                                 kind="network") from None
        except httpx.TransportError as exc:
            raise FalUnreachable(f"fal {what} failed: network error "
                                 f"({type(exc).__name__})", kind="network") from None
        except (ValueError, KeyError) as exc:  # malformed JSON or an unknown status
            raise RetryableError(f"fal {what} answered something unexpected: {exc}",
                                 kind="protocol") from None

    def _classify(self, what: str, status: int, detail: Any, error_type: str | None,
                  headers: dict[str, str] | None) -> JobError | _Gone:
        text = plain_detail(detail)
        if status in (401, 403):
            return AccountError(f"fal refused the account ({status}): {text}",
                                kind="account", delay=ACCOUNT_PAUSE)
        if status == 404 and what in ("status", "result"):
            return _Gone()
        if status == 404 and what == "submit":
            # No such app: a setting every file shares, so pause like an account problem
            # rather than fail each file (a SIGHUP after fixing fal.endpoint resumes).
            return AccountError(f"fal has no app {self.cfg.endpoint!r} (404: {text}); check "
                                "fal.endpoint", kind="endpoint_not_found", delay=ACCOUNT_PAUSE)
        if status == 422:
            return PermanentJobError(f"fal rejected the input: {text}", kind="rejected")
        if status in AWAY_STATUSES:  # fal or something in front of it is away: not the picture
            return FalUnreachable(f"fal {what} returned {status}: {text}",
                                  kind=error_type or f"http_{status}", delay=retry_after(headers))
        if status in (408, 409) or status >= 500 or (status == 400 and what == "result"):
            return RetryableError(f"fal {what} returned {status}: {text}",
                                  kind=error_type or f"http_{status}", delay=retry_after(headers))
        return PermanentJobError(f"fal {what} returned {status}: {text}",
                                 kind=error_type or f"http_{status}")

    async def _input_url(self, request: UpscaleRequest) -> str:
        source = request.source
        megapixels = source.width * source.height / 1e6
        if source.as_is:
            data, mime = request.data, FAL_ACCEPTS[source.format]
        elif source.format in PHONE_FORMATS and request.result_format == "jpg":
            # HEIC/AVIF whose result is a JPEG anyway: a JPEG upload is a fraction of a PNG.
            assert source.image is not None
            data = await request.pixel_work(_jpeg_bytes, source.image, megapixels=megapixels)
            mime = "image/jpeg"
        else:  # upright pixels fal can read: rotated, TIFF/BMP, CMYK, HEIC/AVIF, animated
            assert source.image is not None
            data = await request.pixel_work(_png_bytes, source.image, megapixels=megapixels)
            mime = "image/png"
        source.drop_pixels()
        if len(data) > MAX_INPUT_BYTES:
            raise PermanentJobError(
                f"the image to send is {len(data) / 2**20:.0f} MB; fal accepts at most "
                f"{MAX_INPUT_BYTES // 2**20} MB", kind="input_too_large")
        mode = self.cfg.upload
        small = len(data) <= DATA_URI_LIMIT and not self._submitter.can_look_up
        if mode == "data-uri" or (mode == "auto" and small):
            return f"data:{mime};base64,{base64.b64encode(data).decode()}"
        # A neutral name: the client's file name would sit on fal's public CDN.
        name = hashlib.sha256(data).hexdigest()[:32] + _EXTENSIONS.get(mime, "")
        lifecycle = (None if self.cfg.cdn_expiry is None
                     else self._fal.StorageSettings(expires_in=self.cfg.cdn_expiry))
        return await self._retrying("upload", lambda: self._client.upload(
            data, mime, file_name=name, lifecycle=lifecycle))

    async def _result(self, handle: Any) -> tuple[Any, float | None]:
        """The finished request's result: one GET (its status is already known), and what
        fal says it billed for it (``x-fal-billable-units``), where it says."""
        response = await handle.client.get(handle.response_url, timeout=RESULT_TIMEOUT)
        falclient.raise_for_status(self._fal, response)
        return response.json(), billable_units(response.headers)

    async def _submit(self, request: UpscaleRequest, image_url: str | None, bound) -> str:
        async def input_url() -> str:
            return image_url or await self._input_url(request)

        arguments = {"scale_factor": request.plan.scale,
                     "creativity": request.creativity,
                     # jpg when its bytes can be the output as they are; png (lossless)
                     # when the output needs a pixel change or another format
                     "output_format": request.result_format}
        request_id = await self._submitter.submit(request, input_url, arguments, bound)
        bound.info("fal_request_submitted", request_id=request_id,
                   scale_factor=request.plan.scale, creativity=request.creativity,
                   output=f"{request.plan.width}x{request.plan.height}")
        return request_id

    def _app_error(self, error: str, error_type: str | None) -> JobError:
        if error_type and (error_type in _PERMANENT_TYPES or "validation" in error_type):
            return PermanentJobError(f"fal could not process the image: {error}", kind=error_type)
        return RetryableError(f"fal reported a failure: {error}", kind=error_type or "app_error")

    async def _cancel_after_timeout(self, handle: Any, request: UpscaleRequest, request_id: str,
                                    bound) -> None:
        """Past fal.timeout: ask fal to cancel. Returns when the result turned out to be
        ready after all (fetch it); raises _Failed when the request ended without one.

        fal only signals a running request and the model decides: the run may stop later
        or finish anyway, and a run cancelled while running is billed. fal documents the
        cancel's outcomes by name only, not by HTTP code, so whatever the cancel answered
        (accepted, ALREADY_COMPLETED as a 400 or a 409, an error) the status is looked at
        before anything is sent again: a run that completed without error is taken. After
        an accepted cancel that look goes on (up to CANCEL_WAIT) until the request ends.
        Only a request that ended without a result (or never ended) is submitted again;
        unless it was still waiting in fal's queue, that run is counted as one that may have
        been paid (``trail.abandoned``), so the day's spend is never under the bill."""
        try:
            waiting = isinstance(await self._retrying("status", lambda: handle.status()),
                                 self._fal.Queued)
        except (JobError, _Gone):
            waiting = False  # unknown: assume it ran
        outcome = await self._cancel(handle)
        cancelled = outcome == "CANCELLATION_REQUESTED"
        if outcome not in _CANCEL_OUTCOMES:
            bound.warning("fal_cancel_failed", request_id=request_id, error=outcome,
                          note="looking at the request's status before anything is sent again")
        else:
            bound.info("fal_cancel_answered", request_id=request_id, outcome=outcome)
        give_up = time.monotonic() + (CANCEL_WAIT if cancelled else 0.0)
        while True:
            status = await self._status_once(handle)
            if isinstance(status, self._fal.Completed):
                if not status.error:
                    bound.info("fal_request_finished_despite_cancel", request_id=request_id,
                               cancel_accepted=cancelled)
                    return
                break
            if status is None or time.monotonic() >= give_up:
                break
            await asyncio.sleep(CANCEL_POLL)
        if not waiting:
            await request.trail.abandoned()
        bound.warning("fal_request_timed_out", request_id=request_id, timeout=self.cfg.timeout,
                      was_running=not waiting, cancel_accepted=cancelled,
                      note="fal may bill a run cancelled while it was running (counted as "
                           "possibly paid twice); submitting again is another charge"
                      if not waiting else "it was still queued at fal: nothing was billed")
        what = "the request was cancelled" if cancelled else "cancelling it failed"
        raise _Failed(RetryableError(f"no result within fal.timeout ({self.cfg.timeout:g}s); "
                                     f"{what}", kind="timeout"))

    async def _cancel(self, handle: Any) -> str:
        """One cancel PUT; fal's outcome name (CANCELLATION_REQUESTED, ALREADY_COMPLETED,
        NOT_FOUND, whatever the HTTP code it came with), else what went wrong. Sent by us,
        once: fal-client's own cancel re-sends a 409 ten times over most of a minute."""
        try:
            response = await handle.client.put(handle.cancel_url, timeout=RESULT_TIMEOUT)
        except httpx.HTTPError as exc:
            return f"fal cancel failed: network error ({type(exc).__name__})"
        try:
            named = response.json().get("status")
        except (ValueError, AttributeError):
            named = None
        if named in _CANCEL_OUTCOMES:
            return "CANCELLATION_REQUESTED" if named == "OK" else named
        if response.is_success:
            return "CANCELLATION_REQUESTED"
        return f"fal cancel returned {response.status_code}: {plain_detail(response.text)}"

    async def _status_once(self, handle: Any) -> Any | None:
        """The request's status, retried in place; None when it cannot be had."""
        try:
            return await self._retrying("status", lambda: handle.status())
        except (JobError, _Gone):
            return None

    # -- results ---------------------------------------------------------------------------

    async def _download_all(self, result: dict[str, Any], request: UpscaleRequest,
                            request_id: str, bound) -> list[ResultImage]:
        images = result.get("images") if isinstance(result, dict) else None
        if not images and isinstance(result, dict) and result.get("image"):
            images = [result["image"]]
        if not images:
            raise RetryableError(f"fal returned no images: {json.dumps(result)[:200]}",
                                 kind="protocol")
        request.work_dir.mkdir(parents=True, exist_ok=True)
        out = []
        for i, item in enumerate(images):
            url = item if isinstance(item, str) else item.get("url")
            size = None if isinstance(item, str) else item.get("file_size")
            if not url:
                raise RetryableError("fal returned an image without a URL", kind="protocol")
            target = request.work_dir / f"{request.job_id}-{i}.download"
            await self._retrying("download",
                                 lambda u=url, t=target, n=size: self._download(u, t, n))
            out.append(ResultImage(path=target))
        bound.info("fal_result_downloaded", request_id=request_id, images=len(out))
        return out

    async def _download(self, url: str, target: Path, expected: int | None) -> None:
        """Stream ``url`` to ``target`` (never whole in memory, on a thread: see download.py)
        and check it is complete: status, length, the format's end marker. The output's
        read-back then proves the rest."""
        received, declared = await self._downloads.fetch(url, target)
        for wanted in (declared, expected):
            if wanted is not None and str(wanted).isdigit() and int(wanted) != received:
                target.unlink(missing_ok=True)
                raise RetryableError(f"download of the result is incomplete ({received} of "
                                     f"{wanted} bytes)", kind="download")
        problem = await asyncio.to_thread(containers.complete, target)
        if problem:
            target.unlink(missing_ok=True)
            raise RetryableError(f"the downloaded result is incomplete or damaged: {problem}",
                                 kind="download")


def billable_units(headers: Any) -> float | None:
    """``x-fal-billable-units`` as a number; None when absent or not a number."""
    try:
        units = float(headers.get("x-fal-billable-units"))
    except (TypeError, ValueError):
        return None
    return units if units >= 0 and units == units else None  # not negative, not NaN


class _Failed(Exception):
    """fal finished the request without a result; ``error`` says what the worker should do."""

    def __init__(self, error: JobError):
        super().__init__(error.reason)
        self.error = error


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")  # zlib level 6: a home uplink is slower than the CPU
    return buffer.getvalue()


def _jpeg_bytes(image: Image.Image) -> bytes:
    """JPEG q95 without chroma subsampling, transparency flattened onto white."""
    if image.mode in ("RGBA", "LA"):
        background = Image.new("RGB", image.size, "white")
        background.paste(image, mask=image.getchannel("A"))
        image = background
    elif image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95, subsampling=0)
    return buffer.getvalue()
